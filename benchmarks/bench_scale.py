"""How the cost of the harness and of the spectral norm grows with batch, width and K.

Three sweeps, each varying one size around a base case (the others fixed), on the
Gaussian-mixture world (M = 16 modes, float32, DDIM, exact denoiser):

- batch B ∈ {256, 1024, 4096, 16384, 65536}  (n = 64, K = 16),
- latent width n ∈ {16, 64, 256, 512}         (B = 4096, K = 16),
- steps K ∈ {1, 4, 16, 64, 256}               (B = 4096, n = 64),

for two workloads:

- ``harness``: `readout_jax.sample(DDIM(), world, key, x, ts, record=None)`, with its
  default non-finite check (the finite flags per example, read after the run);
- ``spectral``: `diagnostics.step_jacobian_norms` (Lanczos spectral norm of every step
  map, `num_iters` = 8, tol = 0: every iteration runs), on smaller batches.

Reported per case: the compile time (first call), then the best of `rounds` timed calls
in wall-clock and process CPU seconds (all threads; the machine may be shared, so CPU
time is the steadier figure), the time per sample-step (wall / (B·K)), the achieved
FLOP rate from a FLOP model of the world divided by this CPU's matmul roofline (the FLOP
rate of a large float32 matmul measured in the same process), and the XLA buffer memory
of the compiled program (`memory_analysis()`: arguments + outputs + temporaries; for a
chunked or sharded run it is per piece). FLOP model per sample-step (DDIM on an M-mode
mixture of width n): 4·M·n for the two mode products plus ≈ 12·n + 6·M elementwise; a
Lanczos norm with k iterations costs about (1 + 3k) step evaluations plus 8·k²·n for the
reorthogonalisation. The fitted growth exponent is the slope of log(time) against
log(size) over each sweep (1 = linear).

A memory check runs the issue's target in a subprocess (B = 10^6 latents of width 64,
K = 64, float32, `record=None`, chunk_size = 8192; B = 2^16 with --quick) and reports
the process's peak resident memory (the high-water mark, compilation included; target
24 GiB) and its rise over the resident set after compilation, beside the formula in
`readout_jax.sample`'s docstring. (Linux: reads /proc/self/statm.)

Run from the repository root (never in the test suite):

    python benchmarks/bench_scale.py --quick   # ~1-2 min on 2 shared cores
    python benchmarks/bench_scale.py           # the full sweeps
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import subprocess
import sys
import textwrap
import time
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import readout_jax as rj
from readout_jax import diagnostics, harness, samplers
from readout_jax.diagnostics import stiffness
from readout_jax.manifolds import GaussianMixture


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the sweeps; `quick()` is the smoke-test scale."""

    num_modes: int = 16
    base_batch: int = 4096
    base_dim: int = 64
    base_steps: int = 16
    batches: tuple[int, ...] = (256, 1024, 4096, 16384, 65536)
    dims: tuple[int, ...] = (16, 64, 256, 512)
    steps: tuple[int, ...] = (1, 4, 16, 64, 256)
    spectral_base_batch: int = 512
    spectral_batches: tuple[int, ...] = (64, 256, 1024, 4096)
    spectral_dims: tuple[int, ...] = (16, 64, 256, 512)
    spectral_steps: tuple[int, ...] = (1, 4, 16, 64)
    lanczos_iters: int = 8
    rounds: int = 3
    roofline_size: int = 2048
    memory_batch: int = 10**6  # the target: 10^6 latents of width 64, K = 64
    memory_chunk: int = 8192

    @classmethod
    def quick(cls) -> Config:
        return cls(
            batches=(256, 1024, 4096, 16384),
            dims=(16, 64, 256),
            steps=(1, 4, 16, 64),
            spectral_base_batch=256,
            spectral_batches=(64, 256, 1024),
            spectral_dims=(16, 64, 256),
            spectral_steps=(1, 4, 16),
            rounds=2,
            roofline_size=1536,
            memory_batch=2**16,
        )


def matmul_roofline(size: int, rounds: int = 3) -> float:
    """FLOP/s of a (size × size) @ (size × size) float32 matmul (best of `rounds`)."""
    a = jr.normal(jr.key(0), (size, size), jnp.float32)
    b = jr.normal(jr.key(1), (size, size), jnp.float32)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def _world(dim: int, num_modes: int) -> GaussianMixture:
    means = 3.0 * jr.normal(jr.key(2), (num_modes, dim), jnp.float32) / math.sqrt(dim)
    return GaussianMixture(means, jnp.full((num_modes,), 1.0 / num_modes, jnp.float32), 0.3)


def _step_flops(dim: int, num_modes: int) -> float:
    return 4.0 * num_modes * dim + 12.0 * dim + 6.0 * num_modes


def _timed(fn, rounds: int) -> tuple[float, float, float]:
    """(compile wall, best wall, best CPU) of `fn()` (which must block)."""
    start = time.perf_counter()
    fn()
    compile_wall = time.perf_counter() - start
    wall = cpu = math.inf
    for _ in range(rounds):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return compile_wall, wall, cpu


def _buffer_bytes(lowered) -> int:
    m = lowered.compile().memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)


def harness_case(batch: int, dim: int, num_steps: int, cfg: Config) -> dict[str, Any]:
    world = _world(dim, cfg.num_modes)
    ts = rj.time_grid(world.schedule, num_steps).astype(jnp.float32)
    x = rj.prior_sample(jr.key(3), world, batch, dtype=jnp.float32)
    sampler, key = samplers.DDIM(), jr.key(4)

    def run():
        out = rj.sample(sampler, world, key, x, ts, record=None)
        out.x0.block_until_ready()

    compile_wall, wall, cpu = _timed(run, cfg.rounds)
    lowered = harness._sample_jit.lower(
        sampler, world, key, x, ts, harness.record_nothing, np.uint32(0)
    )
    flops = batch * num_steps * _step_flops(dim, cfg.num_modes)
    return dict(
        batch=batch,
        dim=dim,
        steps=num_steps,
        compile_s=compile_wall,
        wall_s=wall,
        cpu_s=cpu,
        per_sample_step_ns=1e9 * wall / (batch * num_steps),
        gflops=flops / wall / 1e9,
        memory_bytes=_buffer_bytes(lowered),
    )


def spectral_case(batch: int, dim: int, num_steps: int, cfg: Config) -> dict[str, Any]:
    world = _world(dim, cfg.num_modes)
    ts = rj.time_grid(world.schedule, num_steps).astype(jnp.float32)
    x = rj.prior_sample(jr.key(3), world, batch, dtype=jnp.float32)
    sampler, key, iters = samplers.DDIM(), jr.key(4), cfg.lanczos_iters

    def run():
        diagnostics.step_jacobian_norms(
            sampler, world, key, x, ts, num_iters=iters, tol=0.0
        ).block_until_ready()

    compile_wall, wall, cpu = _timed(run, cfg.rounds)
    lowered = stiffness._step_norms_jit.lower(
        sampler, world, key, key, x, ts, iters, 0.0, np.uint32(0)
    )
    k = min(iters, dim)
    per_step = (1 + 3 * k) * _step_flops(dim, cfg.num_modes) + 8.0 * k * k * dim
    flops = batch * num_steps * per_step
    return dict(
        batch=batch,
        dim=dim,
        steps=num_steps,
        compile_s=compile_wall,
        wall_s=wall,
        cpu_s=cpu,
        per_sample_step_ns=1e9 * wall / (batch * num_steps),
        gflops=flops / wall / 1e9,
        memory_bytes=_buffer_bytes(lowered),
    )


def growth_exponent(sizes, times) -> float:
    """Least-squares slope of log(time) against log(size)."""
    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    import jax, jax.numpy as jnp, jax.random as jr
    import readout_jax as rj
    from readout_jax import samplers
    from readout_jax.manifolds import GaussianMixture
    batch, chunk, dim, steps, modes = map(int, sys.argv[1:6])
    means = 3.0 * jr.normal(jr.key(2), (modes, dim), jnp.float32) / dim**0.5
    world = GaussianMixture(means, jnp.full((modes,), 1.0 / modes, jnp.float32), 0.3)
    ts = rj.time_grid(world.schedule, steps).astype(jnp.float32)
    x = rj.prior_sample(jr.key(3), world, batch, dtype=jnp.float32).block_until_ready()
    # Compile on one chunk first, so the resident baseline includes the compiled code.
    rj.sample(samplers.DDIM(), world, jr.key(4), x[:chunk], ts, record=None)
    def resident():  # the current resident set (not the high-water mark)
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    base = resident()
    start = time.perf_counter()
    out = rj.sample(samplers.DDIM(), world, jr.key(4), x, ts, record=None, chunk_size=chunk)
    out.x0.block_until_ready()
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("RESULT" + json.dumps({"base": base, "peak": peak, "wall": wall}))
    """
)


def memory_check(cfg: Config, dim: int = 64, num_steps: int = 64) -> dict[str, Any]:
    """Peak resident memory of a chunked run vs the documented formula (subprocess)."""
    batch, chunk = cfg.memory_batch, cfg.memory_chunk
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEMORY_SCRIPT,
            str(batch),
            str(chunk),
            str(dim),
            str(num_steps),
            str(cfg.num_modes),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    got = json.loads(line[len("RESULT") :])
    # The chunk program's own buffers (arguments, outputs, temporaries).
    world = _world(dim, cfg.num_modes)
    ts = rj.time_grid(world.schedule, num_steps).astype(jnp.float32)
    probe = jax.ShapeDtypeStruct((chunk, dim), jnp.float32)
    per_chunk = _buffer_bytes(
        harness._sample_jit.lower(
            samplers.DDIM(), world, jr.key(4), probe, ts, harness.record_nothing, np.uint32(0)
        )
    )

    def formula(b):  # input + slices + chunk outputs (x, x0) + their concatenation
        return b * dim * 4 * (1 + 1 + 2 + 2) + per_chunk

    return dict(
        batch=batch,
        chunk=chunk,
        added_rss=max(got["peak"] - got["base"], 0),
        peak_rss=got["peak"],
        formula=formula(batch),
        formula_1e6=formula(10**6),
        wall_s=got["wall"],
        per_sample_step_ns=1e9 * got["wall"] / (batch * num_steps),
    )


def _table(title: str, rows: list[dict[str, Any]], roofline: float) -> None:
    print(f"\n{title}")
    print(
        f"{'B':>7} {'n':>4} {'K':>4} {'compile s':>9} {'wall s':>9} {'cpu s':>9} "
        f"{'ns/samp-step':>12} {'GFLOP/s':>8} {'% roofline':>10} {'XLA MiB':>8}"
    )
    for r in rows:
        print(
            f"{r['batch']:>7} {r['dim']:>4} {r['steps']:>4} {r['compile_s']:>9.2f} "
            f"{r['wall_s']:>9.4f} {r['cpu_s']:>9.4f} {r['per_sample_step_ns']:>12.1f} "
            f"{r['gflops']:>8.2f} {100 * r['gflops'] * 1e9 / roofline:>9.2f}% "
            f"{r['memory_bytes'] / 2**20:>8.2f}"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sweeps (smoke test)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory check")
    args = parser.parse_args(argv)
    cfg = Config.quick() if args.quick else Config()
    print(
        f"jax {jax.__version__} on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
        "(a shared machine inflates wall times; CPU time is steadier)"
    )
    roofline = matmul_roofline(cfg.roofline_size)
    print(f"matmul roofline ({cfg.roofline_size}^2 float32): {roofline / 1e9:.1f} GFLOP/s")

    sweeps: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    b0, n0, k0 = cfg.base_batch, cfg.base_dim, cfg.base_steps
    sweeps["harness/batch"] = ("batch", [harness_case(b, n0, k0, cfg) for b in cfg.batches])
    sweeps["harness/width"] = ("dim", [harness_case(b0, n, k0, cfg) for n in cfg.dims])
    sweeps["harness/steps"] = ("steps", [harness_case(b0, n0, k, cfg) for k in cfg.steps])
    sb = cfg.spectral_base_batch
    sweeps["spectral/batch"] = (
        "batch",
        [spectral_case(b, n0, 4, cfg) for b in cfg.spectral_batches],
    )
    sweeps["spectral/width"] = ("dim", [spectral_case(sb, n, 4, cfg) for n in cfg.spectral_dims])
    sweeps["spectral/steps"] = (
        "steps",
        [spectral_case(sb, n0, k, cfg) for k in cfg.spectral_steps],
    )
    for name, (_, rows) in sweeps.items():
        _table(name, rows, roofline)

    print("\ngrowth exponents (slope of log time vs log size; 1 = linear):")
    for name, (axis, rows) in sweeps.items():
        sizes = [r[axis] for r in rows]
        wall = growth_exponent(sizes, [r["wall_s"] for r in rows])
        cpu = growth_exponent(sizes, [r["cpu_s"] for r in rows])
        mem = growth_exponent(sizes, [r["memory_bytes"] for r in rows])
        print(f"  {name:<16} time ∝ {axis}^{wall:.2f} (CPU: ^{cpu:.2f}), memory ∝ ^{mem:.2f}")

    if not args.no_memory:
        mem = memory_check(cfg)
        print(
            f"\nmemory check: B = {mem['batch']} x n = 64, K = 64, float32, record=None, "
            f"chunk_size = {mem['chunk']}: peak resident memory of the process "
            f"{mem['peak_rss'] / 2**30:.2f} GiB (target at B = 10^6: 24 GiB), "
            f"{mem['added_rss'] / 2**20:.0f} MiB above the resident set after compiling; "
            f"formula {mem['formula'] / 2**20:.0f} MiB; {mem['wall_s']:.1f} s, "
            f"{mem['per_sample_step_ns']:.1f} ns per sample-step. Formula at B = 10^6: "
            f"{mem['formula_1e6'] / 2**30:.2f} GiB."
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"this process's peak resident memory: {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
