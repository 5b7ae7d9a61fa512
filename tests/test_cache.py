"""readout_jax.cache: the second compilation of a program is read from the disk cache."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from readout_jax import cache

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp
    from readout_jax import cache

    folder = cache.enable_compilation_cache(sys.argv[1], min_compile_time_secs=0.0)
    events = []
    jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))

    @jax.jit
    def program(x):
        return jnp.sin(x) @ jnp.cos(x).T + 1.0

    x = jnp.ones((8, 8))
    first = program(x).block_until_ready()
    entries = sorted(p.name for p in __import__("pathlib").Path(folder).iterdir())
    jax.clear_caches()  # forget the in-memory executable: the next call compiles again
    second = program(x).block_until_ready()
    print("RESULT" + json.dumps({
        "folder": str(folder),
        "entries_after_first": len(entries),
        "hits": events.count("/jax/compilation_cache/cache_hits"),
        "misses": events.count("/jax/compilation_cache/cache_misses"),
        "same": bool((first == second).all()),
    }))
    """
)


def test_second_compilation_hits_the_disk_cache(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != cache.DISABLE_ENV}
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "xla")],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    got = json.loads(lines[-1][len("RESULT") :])
    assert got["folder"] == str(tmp_path / "xla")
    assert got["entries_after_first"] >= 1  # the first compilation wrote an entry
    assert got["misses"] >= 1 and got["hits"] >= 1  # ... which the second one read
    assert got["same"]


def test_cache_can_be_switched_off(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.DISABLE_ENV, "1")
    assert cache.compilation_cache_disabled()
    assert cache.enable_compilation_cache(tmp_path / "never") is None
    assert not (tmp_path / "never").exists()
    with pytest.raises(ValueError, match="min_compile_time_secs"):
        cache.enable_compilation_cache(tmp_path, min_compile_time_secs=-1.0)
