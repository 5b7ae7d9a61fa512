"""The experiment framework: result.json, atomic writes, verdict statistics, CLI."""

import contextlib
import dataclasses
import io as stdio
import json
import math
import os
import pathlib
import types

import jax.numpy as jnp
import numpy as np
import pytest

import experiments
from experiments import _framework as fw
from readout_jax import cli, plotting
from readout_jax import io as rio

RESULT_FIELDS = {
    "name",
    "scale",
    "config",
    "seed",
    "versions",
    "environment",
    "elapsed_seconds",
    "metrics",
    "claims",
    "figures",
    "arrays",
}
CLAIM_FIELDS = {
    "claim",
    "statement",
    "measured",
    "predicted",
    "tolerance",
    "held",
    "detail",
    "interval",
}


# ---------------------------------------------------------------------------------------
# A tiny experiment module built in the test
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _FakeConfig:
    seed: int = 0
    size: int = 5
    grid: tuple[float, ...] = (0.5, 1.0)

    @classmethod
    def quick(cls):
        return cls()

    @classmethod
    def full(cls):
        return cls(size=50)


def _fake_measure(config, ctx):
    ctx.calls.append(config)
    x = np.geomspace(1.0, 10.0, config.size)
    fit = fw.fit_power_law(x, 2.0 * x**1.0)
    fig = plotting.power_law_figure(
        x, 2.0 * x, xlabel="x", ylabel="y", slope=fit.slope, intercept=fit.intercept
    )
    ctx.save_figure(fig, "fit")
    ctx.save_arrays("arrays", x=x)
    metrics = {
        "np_scalar": np.float32(1.5),
        "np_int": np.int64(3),
        "jax_array": jnp.arange(3.0),
        "nan": float("nan"),
        "inf_array": np.array([1.0, np.inf, np.nan]),
        "nested": {"tuple": (1, 2.5), "bool": np.bool_(True)},
        "seed_seen": ctx.seed,
    }
    claims = [
        fw.claim_from_interval(
            "C1",
            "slope is 1",
            measured=fit.slope,
            interval=(fit.ci_low, fit.ci_high),
            predicted=1.0,
            tolerance=0.1,
        )
    ]
    return fw.Measurement(metrics, claims)


@pytest.fixture
def fake_module():
    module = types.ModuleType("experiments.fake")
    module.NAME = "fake"
    module.Config = _FakeConfig
    module.calls = []

    def measure(config, ctx):
        ctx.calls = module.calls
        return _fake_measure(config, ctx)

    module.measure = measure
    return module


def _no_temp_files(folder):
    return not [p for p in os.listdir(folder) if p.startswith(".tmp-")]


# ---------------------------------------------------------------------------------------
# run_experiment / result.json
# ---------------------------------------------------------------------------------------
def test_result_json_has_every_field_and_round_trips(fake_module, tmp_path):
    result = fw.run_experiment(fake_module, _FakeConfig(), tmp_path, seed=7, scale="quick")
    path = tmp_path / "fake" / "result.json"
    assert path.exists()
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    loaded = rio.read_json(path)
    assert loaded == result
    assert set(loaded) == RESULT_FIELDS
    assert loaded["name"] == "fake" and loaded["scale"] == "quick"
    assert loaded["seed"] == 7 and loaded["config"]["seed"] == 7  # seed and config agree
    assert loaded["metrics"]["seed_seen"] == 7
    assert loaded["config"] == {"seed": 7, "size": 5, "grid": [0.5, 1.0]}
    assert loaded["elapsed_seconds"] >= 0
    for key in ("python", "jax", "jaxlib", "flax", "optax", "numpy", "platform", "git_sha"):
        assert key in loaded["versions"]
    assert loaded["versions"]["jax"] is not None
    m = loaded["metrics"]
    assert m["np_scalar"] == 1.5 and m["np_int"] == 3
    assert m["jax_array"] == [0.0, 1.0, 2.0]
    assert m["nan"] is None and m["inf_array"] == [1.0, None, None]
    assert m["nested"] == {"tuple": [1, 2.5], "bool": True}
    (claim,) = loaded["claims"]
    assert set(claim) == CLAIM_FIELDS
    assert claim["claim"] == "C1" and claim["held"] is True
    assert math.isfinite(claim["measured"])
    assert loaded["figures"] == ["fit.png"] and loaded["arrays"] == ["arrays.npz"]
    assert (tmp_path / "fake" / "fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_allclose(np.load(tmp_path / "fake" / "arrays.npz")["x"][0], 1.0)
    assert _no_temp_files(tmp_path / "fake")


def test_seed_defaults_to_config_seed(fake_module, tmp_path):
    result = fw.run_experiment(fake_module, _FakeConfig(seed=3), tmp_path)
    assert result["seed"] == 3 and result["scale"] is None


def test_run_experiment_rejects_mutable_config(fake_module, tmp_path):
    @dataclasses.dataclass
    class Mutable:
        seed: int = 0

    with pytest.raises(TypeError, match="frozen"):
        fw.run_experiment(fake_module, Mutable(), tmp_path)
    with pytest.raises(TypeError, match="dataclass"):
        fw.run_experiment(fake_module, {"seed": 0}, tmp_path)


def test_failed_measure_keeps_old_result(fake_module, tmp_path):
    fw.run_experiment(fake_module, _FakeConfig(), tmp_path)
    path = tmp_path / "fake" / "result.json"
    before = path.read_bytes()

    def boom(config, ctx):
        raise RuntimeError("measurement failed")

    fake_module.measure = boom
    with pytest.raises(RuntimeError, match="measurement failed"):
        fw.run_experiment(fake_module, _FakeConfig(size=9), tmp_path)
    assert path.read_bytes() == before


def test_config_for_scale(fake_module):
    assert fw.config_for_scale(fake_module, "full").size == 50
    with pytest.raises(ValueError, match="quick"):
        fw.config_for_scale(fake_module, "huge")


def test_module_main_builder(fake_module, tmp_path, capsys):
    code = fw.main(fake_module, ["--scale", "full", "--out", str(tmp_path), "--seed", "4"])
    assert code == 0
    out = capsys.readouterr().out
    assert "fake (full, seed 4)" in out and "C1" in out
    loaded = rio.read_json(tmp_path / "fake" / "result.json")
    assert loaded["config"]["size"] == 50 and loaded["seed"] == 4


# ---------------------------------------------------------------------------------------
# Unwritable output folder
# ---------------------------------------------------------------------------------------
def test_unwritable_output_folder_is_a_clear_error(fake_module, tmp_path, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    out = blocker / "results"
    with pytest.raises(rio.OutputDirError, match="not_a_folder"):
        fw.run_experiment(fake_module, _FakeConfig(), out)
    assert fake_module.calls == []  # failed before the (possibly long) measurement
    with pytest.raises(rio.OutputDirError, match="a file with that name exists"):
        rio.ensure_dir(blocker)
    code = fw.main(fake_module, ["--out", str(out)])
    assert code == 1
    assert "not_a_folder" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder_is_a_clear_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(rio.OutputDirError, match="not writable"):
            rio.ensure_dir(folder)
        with pytest.raises(rio.OutputDirError, match="ro"):
            rio.write_json(folder / "a.json", {})
    finally:
        folder.chmod(0o700)


# ---------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------
def test_atomic_writes_leave_no_temp_files(tmp_path):
    rio.write_json(tmp_path / "a.json", {"x": [1.0, float("nan")]})
    rio.write_text(tmp_path / "b.txt", "hello\n")
    rio.write_npz(tmp_path / "c.npz", a=np.arange(3), b=jnp.ones(2))
    fig = plotting.curves_figure([1, 2, 3], {"y": [1, 4, 9]}, xlabel="x", ylabel="y")
    rio.save_figure(fig, tmp_path / "d.png")
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.txt", "c.npz", "d.png"]
    assert rio.read_json(tmp_path / "a.json") == {"x": [1.0, None]}
    assert (tmp_path / "b.txt").read_text() == "hello\n"
    np.testing.assert_array_equal(np.load(tmp_path / "c.npz")["a"], np.arange(3))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_failed_write_keeps_old_file(tmp_path):
    path = tmp_path / "a.json"
    rio.write_json(path, {"version": 1})
    with pytest.raises(RuntimeError, match="disk on fire"):
        with rio.atomic_write(path, "w") as handle:
            handle.write('{"version": 2, "trunc')
            raise RuntimeError("disk on fire")
    assert rio.read_json(path) == {"version": 1}
    assert _no_temp_files(tmp_path)
    with pytest.raises(TypeError, match="JSON"):
        rio.write_json(path, {"bad": object()})
    assert rio.read_json(path) == {"version": 1}
    assert _no_temp_files(tmp_path)


def test_failed_replace_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "fig.png"
    path.write_bytes(b"old")

    def failing_replace(src, dst):
        raise OSError("replace failed")

    monkeypatch.setattr(rio.os, "replace", failing_replace)
    fig = plotting.curves_figure([1, 2], {"y": [1, 2]}, xlabel="x", ylabel="y")
    with pytest.raises(OSError, match="replace failed"):
        rio.save_figure(fig, path)
    assert path.read_bytes() == b"old"
    assert _no_temp_files(tmp_path)


def test_to_jsonable_rejects_unknown_objects():
    assert rio.to_jsonable({1: np.float64(2.0), "p": pathlib.Path("a/b")}) == {
        "1": 2.0,
        "p": "a/b",
    }
    with pytest.raises(TypeError, match="complex"):
        rio.to_jsonable(1j)


def test_versions_and_environment():
    v = rio.versions()
    assert {"python", "jax", "jaxlib", "flax", "optax", "numpy", "platform", "git_sha"} <= set(v)
    env = rio.environment()
    assert env["jax_backend"] == "cpu" and env["cpu_count"] >= 1
    json.dumps(rio.to_jsonable(env), allow_nan=False)


# ---------------------------------------------------------------------------------------
# Verdict statistics
# ---------------------------------------------------------------------------------------
def test_fit_power_law_recovers_known_slope():
    rng = np.random.default_rng(0)
    x = np.geomspace(0.01, 1.0, 12)
    y = 3.0 * x**1.5 * np.exp(0.05 * rng.standard_normal(x.size))
    fit = fw.fit_power_law(x, y)
    assert fit.ci_low < 1.5 < fit.ci_high
    assert abs(fit.slope - 1.5) < 4 * fit.slope_se
    assert abs(fit.slope - 1.5) < 0.05
    assert abs(math.exp(fit.intercept) - 3.0) < 0.3
    assert fit.dof == 10 and 0.99 < fit.r_squared <= 1.0
    np.testing.assert_allclose(fit.predict(x), np.exp(fit.intercept) * x**fit.slope)


def test_fit_power_law_interval_has_its_coverage():
    # 400 synthetic data sets: the 95% interval must contain the true slope ~95% of the
    # time; with n = 400 the binomial standard deviation is 1.1%, so [0.91, 0.99] is
    # > 3.5 standard deviations wide on each side.
    rng = np.random.default_rng(1)
    x = np.geomspace(1.0, 100.0, 6)
    hits = 0
    for _ in range(400):
        y = x**-0.5 * np.exp(0.2 * rng.standard_normal(x.size))
        fit = fw.fit_power_law(x, y)
        hits += fit.ci_low <= -0.5 <= fit.ci_high
    assert 0.91 <= hits / 400 <= 0.99


def test_fit_power_law_weighted_and_bad_input():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    y = 5.0 * x**2
    fit = fw.fit_power_law(x, y, y_se=0.01 * y)
    assert abs(fit.slope - 2.0) < 1e-10
    with pytest.raises(ValueError, match="positive"):
        fw.fit_power_law([1.0, 2.0, 3.0], [1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match=">= 3 points"):
        fw.fit_power_law([1.0, 2.0], [1.0, 2.0])


@pytest.mark.parametrize(
    ("p", "dof", "expected"),
    [(0.975, 1, 12.7062047), (0.975, 2, 4.3026527), (0.975, 10, 2.2281389), (0.95, 5, 2.0150484)],
)
def test_student_t_quantile_matches_tables(p, dof, expected):
    assert fw.student_t_quantile(p, dof) == pytest.approx(expected, rel=1e-6)
    assert fw.student_t_quantile(1 - p, dof) == pytest.approx(-expected, rel=1e-6)


def test_student_t_quantile_limits():
    assert fw.student_t_quantile(0.975, math.inf) == pytest.approx(1.959964, rel=1e-6)
    assert fw.student_t_quantile(0.975, 1e6) == pytest.approx(1.959964, rel=1e-4)
    with pytest.raises(ValueError):
        fw.student_t_quantile(1.0, 3)


def test_ratio_proportion_and_mean_standard_errors():
    r, se = fw.ratio_with_se(2.0, 0.2, 4.0, 0.4)
    assert r == 0.5 and se == pytest.approx(0.5 * math.sqrt(0.1**2 + 0.1**2))
    assert fw.ratio_with_se(0.0, 0.1, 2.0, 0.3) == (0.0, pytest.approx(0.05))
    p, se = fw.proportion_with_se(25, 100)
    assert p == 0.25 and se == pytest.approx(math.sqrt(0.25 * 0.75 / 100))
    ps, ses = fw.proportion_with_se(np.array([0, 50]), 100)
    np.testing.assert_allclose(ps, [0.0, 0.5])
    np.testing.assert_allclose(ses, [0.0, 0.05])
    mean, se = fw.mean_with_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    with pytest.raises(ValueError, match="denominator"):
        fw.ratio_with_se(1.0, 0.1, 0.0, 0.1)


def test_claim_rules():
    def c(rule, interval, predicted=1.0, tolerance=0.1):
        return fw.claim_from_interval(
            "C1",
            "s",
            measured=sum(interval) / 2,
            interval=interval,
            predicted=predicted,
            tolerance=tolerance,
            rule=rule,
        )

    assert c("within", (0.95, 1.05)).held
    assert not c("within", (0.5, 1.5)).held  # too wide: equivalence not shown
    assert c("overlaps", (0.5, 1.5)).held
    assert not c("overlaps", (1.2, 1.4)).held
    assert c("above", (20.0, 30.0), predicted=10.0, tolerance=0.0).held
    assert not c("above", (5.0, 30.0), predicted=10.0, tolerance=0.0).held
    assert c("below", (0.1, 0.2), predicted=0.5, tolerance=0.0).held
    failed = c("within", (float("nan"), 1.0))
    assert not failed.held and "not finite" in failed.detail
    assert "not held" in c("within", (0.5, 1.5)).detail
    with pytest.raises(ValueError, match="rule"):
        c("maybe", (0.9, 1.1))
    se_claim = fw.claim_from_se("C6", "s", measured=1.01, se=0.01, predicted=1.0)
    assert se_claim.held and se_claim.interval == pytest.approx((1.01 - 0.0196, 1.01 + 0.0196))
    assert not fw.claim_from_se("C6", "s", measured=1.1, se=0.01, predicted=1.0).held
    t = fw.claim_from_threshold("C6", "s", measured=2.5, predicted=0.0, tolerance=3.0)
    assert t.held and t.interval is None
    assert not fw.claim_from_threshold("C6", "s", measured=3.5, predicted=0.0, tolerance=3).held


def test_claim_validation():
    with pytest.raises(ValueError, match="C1"):
        fw.Claim("C9", "s", 1.0, 1.0, 0.1, True)
    with pytest.raises(TypeError, match="held"):
        fw.Claim("C1", "s", 1.0, 1.0, 0.1, "yes")
    claim = fw.Claim("C3a", "s", np.float32(1.0), 1, 0, np.bool_(False))
    assert claim.held is False and isinstance(claim.measured, float)


# ---------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------
class _TTY(stdio.StringIO):
    def isatty(self):
        return True


def test_progress_is_quiet_off_a_tty_and_when_disabled(monkeypatch):
    monkeypatch.delenv("READOUT_JAX_PROGRESS", raising=False)
    quiet = stdio.StringIO()
    assert list(fw.progress(range(5), stream=quiet, desc="x")) == list(range(5))
    assert quiet.getvalue() == ""
    tty = _TTY()
    assert list(fw.progress(range(5), stream=tty, enabled=False)) == list(range(5))
    assert tty.getvalue() == ""
    monkeypatch.setenv("READOUT_JAX_PROGRESS", "0")
    assert list(fw.progress(range(3), stream=tty)) == [0, 1, 2]
    assert tty.getvalue() == ""


def test_progress_draws_on_a_tty(monkeypatch):
    monkeypatch.delenv("READOUT_JAX_PROGRESS", raising=False)
    tty = _TTY()
    assert list(fw.progress(range(4), stream=tty, desc="loop")) == [0, 1, 2, 3]
    text = tty.getvalue()
    assert "loop" in text and "4/4" in text and text.endswith("\n")


# ---------------------------------------------------------------------------------------
# Registry and command line
# ---------------------------------------------------------------------------------------
def test_registry_is_in_spec_order():
    assert list(experiments.EXPERIMENTS) == [
        "tube_law",
        "readout_sharpness",
        "few_step",
        "commitment",
        "stiffness_laws",
        "depth_hierarchy",
        "coarea",
        "tradeoff",
    ]
    assert all(v == f"experiments.{k}" for k, v in experiments.EXPERIMENTS.items())
    assert experiments.INFO["coarea"].claim == "C6"


def test_unknown_experiment_errors(capsys):
    with pytest.raises(experiments.UnknownExperimentError, match="valid names are: tube_law"):
        experiments.load("nope")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "nope"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'nope'" in err and "coarea" in err


def test_cli_list_marks_missing_modules(monkeypatch, capsys):
    missing = experiments.ExperimentInfo("experiments._not_written_yet", "C7", "placeholder")
    monkeypatch.setitem(experiments.INFO, "zz_missing", missing)
    monkeypatch.setitem(experiments.EXPERIMENTS, "zz_missing", missing.module)
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_name = {line.split()[0]: line for line in lines}
    assert set(by_name) == set(experiments.EXPERIMENTS)
    assert "not yet implemented" in by_name["zz_missing"]
    assert "not yet implemented" not in by_name["coarea"] and "C6" in by_name["coarea"]
    for name in experiments.EXPERIMENTS:
        assert ("not yet implemented" in by_name[name]) == (not experiments.is_implemented(name))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "zz_missing"])
    assert exit_info.value.code == 2
    assert "not yet implemented" in capsys.readouterr().err


def test_cli_run_parses_and_runs(fake_module, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(experiments, "load", lambda name: fake_module)
    code = cli.main(
        ["run", "coarea", "--scale", "full", "--out", str(tmp_path), "--seed", "5", "--no-progress"]
    )
    assert code == 0
    assert "fake (full, seed 5)" in capsys.readouterr().out
    assert rio.read_json(tmp_path / "fake" / "result.json")["config"]["size"] == 50
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "coarea", "--scale", "huge"])
    assert exit_info.value.code == 2


def test_cli_demo_still_works():
    out = stdio.StringIO()
    with contextlib.redirect_stdout(out):
        rows = cli.demo(batch=64, num_steps=2, out=out)
    assert [r["sampler"] for r in rows] == ["ddim", "ddim_eta"]
    assert "on-mode" in out.getvalue()
