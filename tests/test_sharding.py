"""Sharded over 4 CPU devices == one device, bit for bit; the sweep covers every cell once.

JAX fixes its device count when it starts, so the 4-device checks run in ONE subprocess
with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` set before JAX is imported;
the script prints its findings as JSON and the tests below assert on them. Every array
comparison is `np.array_equal` (exact), never a tolerance.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent(
    """
    import json, os, threading
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp, jax.random as jr, numpy as np
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    import readout_jax as rj
    from readout_jax import diagnostics, samplers, sharding, sweep
    from readout_jax.diagnostics import jacobian
    from readout_jax.manifolds import GaussianMixture

    def same(a, b):
        la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
        return len(la) == len(lb) and all(
            np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(la, lb))

    out = {"devices": jax.device_count()}
    # Each device compiles a program once for itself, so the cheaper checks use a mesh
    # over two of the four devices (a sub-mesh is a legitimate mesh too).
    mesh = sharding.batch_mesh()
    mesh2 = sharding.batch_mesh(jax.devices()[2:])
    world = GaussianMixture(jnp.array([[-1.5, 0.0], [1.5, 0.5], [0.0, 2.0]]),
                            jnp.array([0.3, 0.3, 0.4]), 0.6)
    ts = rj.time_grid(world.schedule, 3)
    key = jr.key(0)
    x = rj.prior_sample(jr.key(1), world, 16, float(ts[0]))
    xs = sharding.shard_batch(x, mesh)  # 4 examples per device
    out["input_spec"] = str(xs.sharding.spec)
    for name, sampler, m in (("ddim", samplers.DDIM(), mesh2),
                             ("ddim_eta", samplers.DDIMEta(eta=0.8), mesh)):
        ref = rj.sample(sampler, world, key, x, ts)
        got = rj.sample(sampler, world, key, sharding.shard_batch(x, m), ts)
        out[name] = {
            "equal": same(ref, got),
            "spec": str(got.x.sharding.spec),
            "info_spec": str(got.info.x0_hat.sharding.spec),
            "devices": len(got.x.sharding.device_set),
        }
    xs2 = sharding.shard_batch(x, mesh2)
    ref = diagnostics.step_jacobian_norms(samplers.DDIM(), world, key, x, ts, num_iters=2)
    got = diagnostics.step_jacobian_norms(samplers.DDIM(), world, key, xs2, ts, num_iters=2)
    out["step_norms"] = {"equal": same(ref, got), "spec": str(got.sharding.spec)}
    # Sharded and chunked at once: 8 examples per device in pieces of 3 (3 + 3 + 2).
    ref = jacobian.batch_spectral_norm(jnp.tanh, x, key=key, num_iters=2)
    got = jacobian.batch_spectral_norm(jnp.tanh, xs2, key=key, num_iters=2, chunk_size=3)
    out["batch_spectral_norm"] = {"equal": same(ref, got), "spec": str(got.sharding.spec)}
    out["prior_sample"] = same(rj.prior_sample(key, world, 16),
                               rj.prior_sample(key, world, 16, mesh=mesh))
    # NaN mid-trajectory on a sharded batch: the same report as on one device.
    from readout_jax._pytree import pytree_dataclass

    @pytree_dataclass
    class Breaks:
        inner: GaussianMixture

        @property
        def schedule(self):
            return self.inner.schedule

        @property
        def latent_shape(self):
            return self.inner.latent_shape

        def denoise(self, z, t):
            return jnp.where((t < 0.5) & (z[0] > 0), jnp.nan, self.inner.denoise(z, t))

    reports = []
    for batch in (x, xs2):
        try:
            rj.sample(samplers.DDIM(), Breaks(world), key, batch, ts, record=None)
            reports.append(None)
        except rj.harness.NonFiniteError as err:
            reports.append([err.step, err.num_affected, err.example])
    out["nan"] = reports
    try:
        sharding.shard_batch(jnp.zeros((6, 2)), mesh)
        out["indivisible"] = "no error"
    except ValueError as err:
        out["indivisible"] = str(err)

    # Sweep over 4 devices: the first 4 cells wait for each other, so each worker thread
    # (one per device) must hold one of them: every device takes part.
    barrier = threading.Barrier(4, timeout=60)
    calls = []
    lock = threading.Lock()

    def cell_fn(cell):
        where = sweep.current_placement()
        if where.index < 4:
            barrier.wait()
        value = jnp.asarray(float(cell[0] * 10 + cell[1])) * 2.0
        with lock:
            calls.append(cell)
        return {"value": float(value), "ran_on": str(next(iter(value.devices()))),
                "placed_on": str(where.device), "mesh_size": where.mesh.size}

    cells = [(i, j) for i in range(3) for j in range(4)]
    result = sweep.run_sweep(cell_fn, cells)
    out["sweep"] = {
        "keys_in_order": list(map(list, result)) == list(map(list, cells)),
        "calls": sorted(map(list, calls)),
        "values_ok": all(r["value"] == 2.0 * (c[0] * 10 + c[1]) for c, r in result.items()),
        "on_placed_device": all(r["ran_on"] == r["placed_on"] for r in result.values()),
        "devices_used": len({r["placed_on"] for r in result.values()}),
        "mesh_sizes": sorted({r["mesh_size"] for r in result.values()}),
    }
    batch_mode = sweep.run_sweep(lambda c: sweep.current_mesh().size, cells[:2],
                                 placement="batch")
    out["sweep_batch_mesh"] = sorted(set(batch_mode.values()))
    import time
    out["cpu_seconds"] = time.process_time()
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def four_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env.pop("JAX_PLATFORMS", None)
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT") :])


def test_subprocess_sees_four_devices(four_devices):
    assert four_devices["devices"] == 4
    assert four_devices["input_spec"] == "P('batch',)"


@pytest.mark.parametrize("name,devices", [("ddim", 2), ("ddim_eta", 4)])
def test_sharded_sample_equals_single_device_bit_for_bit(four_devices, name, devices):
    got = four_devices[name]
    assert got["equal"]
    assert got["spec"] == got["info_spec"] == "P('batch',)"
    assert got["devices"] == devices


def test_sharded_and_chunked_diagnostics_equal_unsharded(four_devices):
    for name in ("step_norms", "batch_spectral_norm"):
        assert four_devices[name]["equal"], name
        assert four_devices[name]["spec"] == "P('batch',)"
    assert four_devices["prior_sample"]


def test_nan_report_of_a_sharded_batch_equals_the_single_device_one(four_devices):
    single, sharded = four_devices["nan"]
    assert single is not None and single[1] > 0  # (step, affected, first example)
    assert sharded == single


def test_shard_batch_rejects_an_indivisible_batch(four_devices):
    message = four_devices["indivisible"]
    assert "divisible by the 4 devices" in message and "6" in message


def test_sweep_covers_every_cell_exactly_once_on_all_devices(four_devices):
    got = four_devices["sweep"]
    cells = [[i, j] for i in range(3) for j in range(4)]
    assert got["calls"] == cells  # each cell ran once, none was skipped
    assert got["keys_in_order"] and got["values_ok"]
    assert got["on_placed_device"] and got["devices_used"] == 4
    assert got["mesh_sizes"] == [1]  # "cells" mode: a cell's mesh is its own device
    assert four_devices["sweep_batch_mesh"] == [4]  # "batch" mode: every device
