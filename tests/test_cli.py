"""The `readout-jax` command line: reproduce, the compilation-cache flag, the README."""

import dataclasses
import pathlib
import re

import pytest

from experiments import _framework as fw
from experiments import coarea
from readout_jax import cache, cli
from readout_jax import io as rio

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = dataclasses.replace(
    coarea.Config.quick(),
    margins=("linear",),
    radii=(0.1, 0.3, 1.0),
    num_samples=4096,
    batch_size=4096,
    grid_size=33,
    gauss_nodes=2,
    num_curve_radii=3,
    hidden_width=4,
)


@pytest.fixture
def cache_calls(monkeypatch):
    """Record enable_compilation_cache calls instead of changing this process's JAX."""
    calls = []
    monkeypatch.setattr(cache, "enable_compilation_cache", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(cli, "demo", lambda **kwargs: [])
    return calls


@pytest.mark.parametrize(
    ("argv", "enabled"),
    [
        (["demo"], True),
        (["--no-compilation-cache", "demo"], False),
        (["demo", "--no-compilation-cache"], False),
        (["list"], False),
    ],
)
def test_compilation_cache_is_on_for_jax_commands_unless_asked(argv, enabled, cache_calls):
    assert cli.main(argv) == 0
    assert len(cache_calls) == int(enabled)


def test_help_documents_the_commands_and_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--no-compilation-cache" in text and "reproduce" in text
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "--help"])
    text = capsys.readouterr().out
    for flag in ("--scale", "--out", "--force", "--only", "--seed", "--models-dir"):
        assert flag in text


def test_reproduce_unknown_name_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--no-compilation-cache", "reproduce", "--only", "coarea,nope"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "valid names are: tube_law" in err


def test_reproduce_command_runs_skips_and_reports_a_crash(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(coarea.Config, "quick", classmethod(lambda cls: TINY))
    version = fw.code_version(coarea)  # fixed: edits elsewhere in the tree do not matter
    monkeypatch.setattr(fw, "code_version", lambda module: version)
    argv = ["--no-compilation-cache", "reproduce", "--only", "coarea", "--out", str(tmp_path)]
    assert cli.main([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "REPORT.md" in out and "C6" in out
    report = (tmp_path / "REPORT.md").read_text(encoding="utf-8")
    assert re.search(r"^\| C6 \| coarea \|", report, flags=re.M)
    assert rio.read_json(tmp_path / "coarea" / "result.json")["scale"] == "quick"

    def broken(config, ctx):
        raise RuntimeError("measure exploded")

    monkeypatch.setattr(coarea, "measure", broken)
    assert cli.main(argv) == 0  # up to date: measure is not called
    assert "up to date, skipped" in capsys.readouterr().err
    assert cli.main([*argv, "--force"]) == 1
    err = capsys.readouterr().err
    assert "[1/1] coarea: FAILED: RuntimeError: measure exploded" in err
    assert "1 experiment(s) failed: coarea" in err
    assert "**FAILED**" in (tmp_path / "REPORT.md").read_text(encoding="utf-8")
    # The failed re-run kept the previous complete result.
    assert rio.read_json(tmp_path / "coarea" / "result.json")["claims"]


def _block(text, marker):
    match = re.search(rf"<!-- {marker} -->\n```\n(.*?)\n```\n<!-- /{marker} -->", text, re.S)
    assert match, f"README has no {marker} block"
    return match.group(1)


def test_readme_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    main = _block(text, "main-command")
    assert "pip install -e ." in main and main.rstrip().endswith("readout-jax reproduce")
    assert "pytest" in _block(text, "test-command")
    assert "--no-compilation-cache" in text
