"""experiments._reproduce: the report, resuming, --force, crashes and interruptions.

Two real experiments run at tiny sizes: coarea (C6, linear margin only) and tradeoff (C7,
the tiny config of test_exp_tradeoff, so that its compiled programs are reused in a full
test run). Whether a stored result is reused is proven by replacing the module's
``measure`` with one that fails the test if it is called, not by timing.
"""

import dataclasses
import io as stdio
import json
import os
import pathlib
import re

import pytest

import experiments
from experiments import _framework as fw
from experiments import _reproduce as rp
from experiments import coarea, tradeoff
from readout_jax import io as rio

NAMES = ("coarea", "tradeoff")  # registry order
CONFIGS = {
    "coarea": dataclasses.replace(
        coarea.Config.quick(),
        margins=("linear",),
        radii=(0.1, 0.3, 1.0),
        num_samples=4096,
        batch_size=4096,
        grid_size=33,
        gauss_nodes=2,
        num_curve_radii=3,
        hidden_width=4,
    ),
    "tradeoff": dataclasses.replace(
        tradeoff.Config.quick(),
        num_modes=4,
        dim=2,
        std=0.2,
        num_steps=(1, 2, 4),
        kappas=(1.0, 2.0, 4.0),
        deterministic=("ddim",),
        escapes=("ddim_eta", "churn"),
        num_samples=32,
        num_bootstrap=50,
    ),
}


def _run(out, **kwargs):
    stream = stdio.StringIO()
    kwargs.setdefault("configs", CONFIGS)
    summary = rp.reproduce(list(NAMES), out=out, stream=stream, **kwargs)
    return summary, stream.getvalue()


def _leftovers(root):
    """Temporary or staging files anywhere under `root`."""
    bad = []
    for path in pathlib.Path(root).rglob("*"):
        if path.name.startswith(".tmp-") or rp.STAGING in path.parts or ".old-" in path.name:
            bad.append(path)
    return bad


def _forbid_measure(monkeypatch, module):
    def measure(config, ctx):
        raise AssertionError(f"{module.NAME}.measure must not run: its result is up to date")

    monkeypatch.setattr(module, "measure", measure)


@pytest.fixture(scope="module", autouse=True)
def frozen_code_versions():
    """Each experiment's code version, computed once for this module's tests.

    The resume tests must not depend on the source tree staying still while they run
    (someone editing the library would make every result stale); detecting a changed
    version is tested on its own below.
    """
    real = fw.code_version
    cache = {}

    def frozen(module):
        name = fw.experiment_name(module)
        if name not in cache:
            cache[name] = real(module)
        return cache[name]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fw, "code_version", frozen)
        yield real


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    summary, log = _run(out)
    return out, summary, log


def test_report_lists_the_claims_of_both_experiments(first_run):
    out, summary, log = first_run
    assert summary.ok and not summary.failed
    assert [summary.status(n) for n in NAMES] == ["ran", "ran"]
    others = [o for o in summary.outcomes if o.name not in NAMES]
    assert {o.status for o in others} <= {"not run", "not implemented"}
    report = (out / "REPORT.md").read_text(encoding="utf-8")
    index = rio.read_json(out / "index.json")
    # Every Claim row of both result files appears in the table, in claim order.
    expected = []
    for name in NAMES:
        result = rio.read_json(out / name / "result.json")
        assert result["scale"] == "custom" and result["versions"]["code_version"]
        assert result["environment"]["cpu_seconds"] >= 0
        for c in result["claims"]:
            expected.append((c["claim"], name, c["held"]))
    table = [
        line for line in report.splitlines() if re.match(r"^\| C\d", line)
    ]  # the claims table rows
    assert len(table) == len(expected) == len(index["claims"])
    assert [row.split("|")[1].strip() for row in table] == sorted(
        (c for c, _, _ in expected), key=lambda c: rp._CLAIM_ORDER.index(c)
    )
    for claim_id, name, held in expected:
        verdict = "held" if held else "**not held**"
        assert any(f"| {claim_id} | {name} |" in row and f"| {verdict} |" in row for row in table)
    # Figure links point at files that exist; the figures section embeds them.
    links = re.findall(r"\]\(([^)]+\.png)\)", report)
    assert links and all((out / link).is_file() for link in links)
    for name in NAMES:
        assert f"### {name} (" in report
    assert "## Environment" in report and "jax " in report
    assert [e["name"] for e in index["experiments"]] == list(experiments.EXPERIMENTS)
    assert index["ok"] is True and index["scale"] == "quick"
    # Overall progress: experiment, i/N.
    assert "[1/2] coarea" in log and "[2/2] tradeoff" in log
    assert not _leftovers(out)


def test_rerun_skips_up_to_date_results(first_run, monkeypatch):
    out, _, _ = first_run
    mtimes = {n: os.stat(out / n / "result.json").st_mtime_ns for n in NAMES}
    for module in (coarea, tradeoff):
        _forbid_measure(monkeypatch, module)
    summary, log = _run(out)
    assert [summary.status(n) for n in NAMES] == ["cached", "cached"]
    assert "up to date, skipped" in log
    assert {n: os.stat(out / n / "result.json").st_mtime_ns for n in NAMES} == mtimes
    assert len(rio.read_json(out / "index.json")["claims"]) > 0


def test_force_reruns(first_run, monkeypatch):
    out, _, _ = first_run
    calls = []
    original = coarea.measure

    def counting(config, ctx):
        calls.append(config)
        return original(config, ctx)

    monkeypatch.setattr(coarea, "measure", counting)
    _forbid_measure(monkeypatch, tradeoff)
    stream = stdio.StringIO()
    summary = rp.reproduce(["coarea"], out=out, force=True, configs=CONFIGS, stream=stream)
    assert calls == [CONFIGS["coarea"]]
    assert summary.status("coarea") == "ran"
    # Not selected, still up to date: reported from its stored result, not re-run.
    assert summary.status("tradeoff") == "cached"
    report = summary.report_path.read_text(encoding="utf-8")
    assert "| C6 | coarea |" in report and "| C7 | tradeoff |" in report


def test_check_current_notices_config_seed_and_code_changes(first_run, monkeypatch):
    out, _, _ = first_run
    path = out / "coarea" / "result.json"
    config, seed = rp.planned_config(coarea, "quick", config=CONFIGS["coarea"])
    assert rp.check_current(path, coarea, config, seed)[1] == "up to date"
    changed = dataclasses.replace(config, num_samples=8192)
    assert rp.check_current(path, coarea, changed, seed) == (None, "config changed")
    config_7, seed_7 = rp.planned_config(coarea, "quick", config=CONFIGS["coarea"], seed=7)
    assert config_7.seed == seed_7 == 7
    assert rp.check_current(path, coarea, config_7, seed_7) == (None, "config changed")
    monkeypatch.setattr(fw, "code_version", lambda module: "0" * 16)
    assert rp.check_current(path, coarea, config, seed) == (None, "code changed")
    assert rp.check_current(out / "nothing.json", coarea, config, seed)[1] == "no result yet"


def test_interrupted_run_leaves_no_partial_file_and_resumes(tmp_path, monkeypatch):
    original = tradeoff.measure

    def interrupted(config, ctx):
        original(config, ctx)  # figures are written, then the user presses Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(tradeoff, "measure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path)
    assert (tmp_path / "coarea" / "result.json").is_file()
    assert not (tmp_path / "tradeoff").exists()  # neither result.json nor its figures
    assert not (tmp_path / "REPORT.md").exists() and not (tmp_path / "index.json").exists()
    assert not _leftovers(tmp_path)
    # A process killed in the middle leaves its staging folder: the next run removes it.
    junk = tmp_path / rp.STAGING / "tradeoff"
    junk.mkdir(parents=True)
    (junk / ".tmp-result.json.x").write_text("{")
    monkeypatch.setattr(tradeoff, "measure", original)
    _forbid_measure(monkeypatch, coarea)
    summary, _ = _run(tmp_path)
    assert summary.status("coarea") == "cached" and summary.status("tradeoff") == "ran"
    assert not _leftovers(tmp_path)
    index = rio.read_json(tmp_path / "index.json")
    assert {r["experiment"] for r in index["claims"]} == set(NAMES)


def test_crash_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    def broken(config, ctx):
        raise RuntimeError("boom in measure")

    monkeypatch.setattr(coarea, "measure", broken)
    summary, log = _run(tmp_path)
    assert not summary.ok and summary.failed == ["coarea"]
    assert summary.status("tradeoff") == "ran"
    assert "FAILED: RuntimeError: boom in measure" in log
    report = summary.report_path.read_text(encoding="utf-8")
    assert "**Failed:** coarea" in report
    assert re.search(r"\| C6 \| coarea \| .*boom in measure.* \| \*\*FAILED\*\* \|", report)
    index = json.loads(summary.index_path.read_text(encoding="utf-8"))
    failed = next(e for e in index["experiments"] if e["name"] == "coarea")
    assert failed["status"] == "failed" and "RuntimeError" in failed["traceback"]
    assert not (tmp_path / "coarea").exists() and not _leftovers(tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="valid names are: tube_law"):
        rp.select_experiments(["coarea", "nope"])
    assert rp.select_experiments("tradeoff,coarea") == ["coarea", "tradeoff"]
    assert rp.select_experiments(None) == list(experiments.EXPERIMENTS)
    with pytest.raises(ValueError, match="scale"):
        rp.reproduce(["coarea"], scale="huge")
    with pytest.raises(ValueError, match="unknown experiment"):
        rp.reproduce(["coarea"], configs={"tube_lw": None})


def test_overrides_reach_only_configs_with_the_field():
    @dataclasses.dataclass(frozen=True)
    class WithModels:
        seed: int = 0
        models_dir: str | None = None

    config, _ = rp.planned_config(None, "quick", config=WithModels(), overrides={"models_dir": "m"})
    assert config.models_dir == "m"
    plain, _ = rp.planned_config(
        None, "quick", config=CONFIGS["coarea"], overrides={"models_dir": "m"}
    )
    assert plain == CONFIGS["coarea"]
    assert fw.MODELS_DIR_FIELD == "models_dir"


def test_code_version_covers_the_library_and_imported_experiment_modules(
    frozen_code_versions,
):
    from experiments import tradeoff

    code_version = frozen_code_versions  # the real function
    names = {p.name for p in fw.code_files(tradeoff)}
    assert {"tradeoff.py", "few_step.py", "_framework.py", "harness.py", "__init__.py"} <= names
    assert "coarea.py" not in names
    assert re.fullmatch(r"[0-9a-f]{16}", code_version(tradeoff))
    assert code_version(tradeoff) != code_version(coarea)
