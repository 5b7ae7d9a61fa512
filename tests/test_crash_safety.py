"""Crash safety of `reproduce` (issue 8): SIGKILL at random moments never leaves a
half-written file visible, and the run resumes to the same final report.

A subprocess runs `experiments._reproduce.reproduce` on a tiny coarea config. A reference
run goes to completion first (its duration sets the kill window); a second results folder
is then killed several times at seeded random moments inside that window, its visible
files are checked after every kill, and a final run completes it. The final claims and
metrics must equal the reference's, bit for bit (same seed, same config).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from experiments import _reproduce as rp

SCRIPT = textwrap.dedent(
    """
    import dataclasses, sys
    from experiments import _reproduce as rp
    from experiments import coarea

    config = dataclasses.replace(
        coarea.Config.quick(), margins=("linear",), radii=(0.1, 0.3, 1.0),
        num_samples=4096, batch_size=4096, grid_size=33, gauss_nodes=2,
        num_curve_radii=3, hidden_width=4,
    )
    summary = rp.reproduce(["coarea"], out=sys.argv[1], configs={"coarea": config},
                           show_progress=False, stream=sys.stderr)
    sys.exit(0 if summary.ok else 1)
    """
)

_PNG_END = b"IEND\xaeB`\x82"


def _launch(script: pathlib.Path, out: pathlib.Path) -> subprocess.Popen:
    env = dict(os.environ, READOUT_JAX_NO_COMPILATION_CACHE="1", MPLBACKEND="Agg")
    return subprocess.Popen(
        [sys.executable, str(script), str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=pathlib.Path(__file__).resolve().parents[1],
    )


def _visible_files(root: pathlib.Path) -> list[pathlib.Path]:
    """Files a reader would take as results: not staging, not temporary."""
    return [
        p
        for p in root.rglob("*")
        if p.is_file()
        and rp.STAGING not in p.parts
        and not p.name.startswith(".tmp-")
        and ".old-" not in str(p.relative_to(root))
    ]


def _assert_complete(root: pathlib.Path) -> None:
    """Every visible file is whole: JSON parses, PNGs end with IEND, npz loads, the
    report has its last section."""
    for path in _visible_files(root):
        data = path.read_bytes()
        if path.suffix == ".json":
            json.loads(data)
        elif path.suffix == ".png":
            assert data.startswith(b"\x89PNG") and data.endswith(_PNG_END), path
        elif path.suffix == ".npz":
            with np.load(path) as arrays:
                for name in arrays.files:
                    arrays[name]
        elif path.name == "REPORT.md":
            assert "## Environment" in data.decode(), path
    # a result folder is only ever visible whole
    result = root / "coarea" / "result.json"
    if (root / "coarea").exists():
        assert result.exists(), "coarea/ is visible without its result.json"
        for figure in json.loads(result.read_text())["figures"]:
            assert (root / "coarea" / figure).exists(), figure


def _outcome(root: pathlib.Path) -> dict:
    result = json.loads((root / "coarea" / "result.json").read_text())
    return {"metrics": result["metrics"], "claims": result["claims"], "seed": result["seed"]}


def test_killed_reproduce_leaves_no_partial_file_and_resumes(tmp_path):
    script = tmp_path / "run_reproduce.py"
    script.write_text(SCRIPT)

    reference = tmp_path / "reference"
    start = time.monotonic()
    proc = _launch(script, reference)
    _, err = proc.communicate(timeout=600)
    duration = time.monotonic() - start
    assert proc.returncode == 0, err.decode()[-2000:]
    _assert_complete(reference)

    killed = tmp_path / "killed"
    rng = np.random.default_rng(8)
    num_kills = 0
    for fraction in rng.uniform(0.3, 1.0, size=3):
        proc = _launch(script, killed)
        try:
            proc.wait(timeout=fraction * duration)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            num_kills += 1
        proc.stderr.close()
        _assert_complete(killed)
        if (killed / "REPORT.md").exists():
            break  # the run finished before its kill time
    if num_kills == 0:
        pytest.skip("every run finished before its kill time; nothing was interrupted")

    proc = _launch(script, killed)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    _assert_complete(killed)
    assert (killed / "REPORT.md").exists() and (killed / "index.json").exists()
    assert not (killed / rp.STAGING).exists()
    assert _outcome(killed) == _outcome(reference)
