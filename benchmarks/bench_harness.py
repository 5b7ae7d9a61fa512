"""Speed of the sampling harness against hand-written JAX, Python loops and diffrax.

Everything runs in ONE process on the Gaussian-mixture toy of issue 2 (n = 64, M = 16,
batch 4096, K in {4, 16, 64}; vp_cosine schedule, uniform grid from t = 0.995 to 0.001,
so that Euler–Maruyama is defined at every step start). Rows of the per-K table:

- `harness/<sampler>`: `readout_jax.sample(..., record=record_nothing)` for ddim, euler,
  heun; `/record_info` is the default record (the whole `StepInfo`, (batch, K, ...)).
- `harness+fix/<sampler>`: the same harness on `FixedLayoutMixture`, which is
  `GaussianMixture` with the one-line change proposed for the library (`z @ means.T` in
  place of `means @ z` in `responsibilities`), to measure that change without editing it.
- `scan/<sampler>`: the same step math written by hand on batch arrays, one `jit`, one
  `lax.scan` (the reference the harness should match); `/record_x0_hat_KB|BK` also stack
  x̂0 per step in (K, batch, n) or the harness's (batch, K, n) layout.
- `pyloop/<sampler>`: a Python loop of K calls of `jit(vmap(sampler.step))` (the library's
  own step, model and per-chain keys).
- `diffrax/*`: diffrax fixed-step `Euler()` / `Heun()` on the library's probability-flow
  ODE (`StepTo` on the same grid, vmapped, jitted, end point only; `heun-fwd` with
  `adjoint=ForwardMode()`, `heun+fix` on `FixedLayoutMixture`) and Euler–Maruyama on the
  reverse SDE, `MultiTerm(ODETerm, ControlTerm)`, with `VirtualBrownianTree` (tol = dt/2)
  or `UnsafeBrownianPath`.
- `*/ddim_eta/<prng>`, `*/euler_maruyama/<prng>`: the stochastic step per PRNG
  implementation: threefry2x32 (the JAX default, partitionable), threefry2x32 with
  `jax_threefry_partitionable=False`, philox2x32, philox4x32 (all of them at K = 16, the
  default and philox4x32 at the other K); `scan/ddim_eta-per-step|bulk/<prng>` draw the
  noise inside the scan (exactly the harness's keys) or once per chain before it.
- A raw table: batch × n bits / uniforms / normals per PRNG (also threefry4x32, rbg,
  unsafe_rbg), and whether chain i gets the numbers of ITS OWN key under `vmap`
  ("vmap-exact"; rbg and unsafe_rbg do not: their vmap rule draws every row from key 0).
  threefry4x32 is left out of the harness: on jax 0.10.2 / CPU, a jitted `vmap` of
  `split` over `fold_in` keys compiles and then never returns.

Parameters (means, weights, std) are always jit ARGUMENTS, never closed-over constants.
Each case is compiled, warmed up, then timed with `block_until_ready`. The cases of one K
are timed round-robin (every round times every case once, in rotated order), so a busy
spell on a shared machine hits all cases alike. Reported per case: the median and the
minimum wall-clock time, and the median process CPU time (all threads), which is the
most robust of the three when other jobs share the cores. Ratios are "speed-up of the
harness" = time(other) / time(harness): > 1 means the harness is faster. The hand-written
scans and diffrax's ODE solves are checked against the harness (max |Δx| is printed).

Run from the repository root, with diffrax installed (`pip install -e .[bench]`):

    python benchmarks/bench_harness.py            # full run: 12 min on 2 shared cores
    python benchmarks/bench_harness.py --quick    # smoke test: 73 s (30 s of CPU)

(both measured while other jobs held the load average at 6-9; an idle machine is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools as ft
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import readout_jax as rj
from readout_jax import harness, manifolds, samplers, schedules

try:  # diffrax is the reference only (extra "bench"), never a library dependency
    import diffrax
    import lineax as lx
except ImportError:  # pragma: no cover
    diffrax = None

# (label, key impl, threefry_partitionable) for the stochastic-step study
HONEST_PRNGS = (
    ("threefry2x32", "threefry2x32", True),  # the JAX default
    ("threefry2x32-nonpart", "threefry2x32", False),
    ("philox2x32", "philox2x32", True),
    ("philox4x32", "philox4x32", True),
)
CORE_PRNGS = (HONEST_PRNGS[0], HONEST_PRNGS[3])  # timed at every K
# threefry4x32 only in the raw table: on jax 0.10.2 / CPU, jit(vmap(split) of fold_in keys)
# compiles and then never returns, so the harness cannot run with it.
RAW_PRNGS = (
    *HONEST_PRNGS[:2],
    ("threefry4x32", "threefry4x32", True),
    *HONEST_PRNGS[2:],
    ("rbg", "rbg", True),
    ("unsafe_rbg", "unsafe_rbg", True),
)


@dataclasses.dataclass(frozen=True)
class Config:
    """What to run; `quick()` is the smoke-test scale."""

    batch: int = 4096
    dim: int = 64  # n
    num_modes: int = 16  # M
    num_steps: tuple[int, ...] = (4, 16, 64)  # K
    rounds: int = 9  # timed repeats per case (median reported)
    raw_rounds: int = 21
    t_max: float = 0.995  # alpha(t_max) > 0, so Euler-Maruyama is defined on the grid
    t_min: float = 1e-3
    eta: float = 1.0
    ode_samplers: tuple[str, ...] = ("ddim", "euler", "heun")
    record_samplers: tuple[str, ...] = ("ddim", "heun")  # also timed with record_info
    pyloop_samplers: tuple[str, ...] = ("ddim", "heun")
    diffrax_cases: tuple[str, ...] = (
        "euler",
        "heun",
        "heun-fwd",
        "heun+fix",
        "em-vbt",
        "em-unsafe",
    )
    prngs: tuple[tuple[str, str, bool], ...] = HONEST_PRNGS  # all of them at K = sweep_steps
    core_prngs: tuple[tuple[str, str, bool], ...] = CORE_PRNGS  # at the other K
    sweep_steps: int = 16
    em_prngs: tuple[str, ...] = ("threefry2x32", "philox4x32")
    raw_prngs: tuple[tuple[str, str, bool], ...] = RAW_PRNGS
    extras: bool = True  # bulk-draw scans, hand-written EM scan, Python loop of ddim_eta
    seed: int = 0

    @classmethod
    def quick(cls) -> Config:
        return cls(
            batch=256,
            dim=16,
            num_modes=4,
            num_steps=(4,),
            rounds=3,
            raw_rounds=5,
            ode_samplers=("ddim", "heun"),
            record_samplers=(),
            pyloop_samplers=("ddim",),
            em_prngs=(),
            extras=False,
            diffrax_cases=("heun", "em-unsafe"),
            prngs=CORE_PRNGS[:1],
            core_prngs=CORE_PRNGS[:1],
            sweep_steps=4,
            raw_prngs=(RAW_PRNGS[0], RAW_PRNGS[4], RAW_PRNGS[-1]),
        )


# --------------------------------------------------------------------------------------
# Hand-written step math (vp_cosine schedule, exact GMM denoiser), written on arrays of
# shape (..., n): batch arrays in the scans, one example inside diffrax's vmap.
# params = (means (M, n), log_weights (M,), std ()) always enter as jit arguments.
# --------------------------------------------------------------------------------------


def _coeffs(t, offset):
    """alpha, sigma and their t-derivatives of the vp_cosine schedule at scalar t."""
    norm = math.cos(offset / (1.0 + offset) * math.pi / 2)
    rate = math.pi / 2 / (1.0 + offset)
    theta = (t + offset) * rate
    a = jnp.cos(theta) / norm
    da = -jnp.sin(theta) * rate / norm
    s = jnp.sqrt(1.0 - a * a)
    ds = -a * da / s
    return a, s, da, ds


def _denoise(params, x, a, s):
    """Exact posterior mean of the mixture: mu_bar + (a tau^2 / v)(x - a mu_bar)."""
    means, log_w, std = params
    v = a * a * std * std + s * s
    quad = a * a * jnp.sum(means * means, axis=-1) - 2.0 * a * (x @ means.T)
    r = jax.nn.softmax(log_w - quad / (2.0 * v), axis=-1)
    mean = r @ means
    return mean + (a * std * std / v) * (x - a * mean)


def _velocity(params, x, t, offset):
    """(probability-flow velocity α'·x̂0 + σ'·ε̂, x̂0)."""
    a, s, da, ds = _coeffs(t, offset)
    x0 = _denoise(params, x, a, s)
    return da * x0 + ds * (x - a * x0) / s, x0


# Each ODE step returns (x_next, x̂0 at the step start).
def _ddim_step(params, x, t, t_next, offset):
    a, s, _, _ = _coeffs(t, offset)
    a1, s1, _, _ = _coeffs(t_next, offset)
    x0 = _denoise(params, x, a, s)
    return a1 * (x0 + (s1 / a1) * (x - a * x0) / s), x0


def _euler_step(params, x, t, t_next, offset):
    v, x0 = _velocity(params, x, t, offset)
    return x + (t_next - t) * v, x0


def _heun_step(params, x, t, t_next, offset):
    h = t_next - t
    v1, x0 = _velocity(params, x, t, offset)
    v2, _ = _velocity(params, x + h * v1, t_next, offset)
    return x + 0.5 * h * (v1 + v2), x0


def _ddim_eta_step(params, x, t, t_next, noise, eta, offset):
    a, s, _, _ = _coeffs(t, offset)
    a1, s1, _, _ = _coeffs(t_next, offset)
    sc, sc1 = s / a, s1 / a1
    s_up = eta * sc1 * jnp.sqrt(jnp.clip(1.0 - (sc1 / sc) ** 2, 0.0))
    s_down = jnp.sqrt(jnp.clip(sc1**2 - s_up**2, 0.0))
    x0 = _denoise(params, x, a, s)
    return a1 * (x0 + s_down * (x - a * x0) / s + s_up * noise)


def _em_step(params, x, t, t_next, noise, offset):
    a, s, da, ds = _coeffs(t, offset)
    x0 = _denoise(params, x, a, s)
    f = da / a
    g2 = 2.0 * s * ds - 2.0 * f * s * s
    score = -(x - a * x0) / (s * s)
    h = t_next - t
    return x + h * (f * x - g2 * score) + jnp.sqrt(jnp.clip(-h * g2, 0.0)) * noise


ODE_STEPS = {"ddim": _ddim_step, "euler": _euler_step, "heun": _heun_step}


@ft.partial(jax.jit, static_argnames=("name", "offset", "record"))
def scan_ode(params, x_init, ts, *, name, offset, record=None):
    """Hand-written ODE sampler: one jit, lax.scan over steps, batch arrays throughout.

    record=None keeps nothing per step; "KB" stacks x̂0 as scan outputs, (K, batch, n);
    "BK" also moves them to the harness's (batch, K, n) layout.
    """
    step = ODE_STEPS[name]

    def body(x, tt):
        x, x0 = step(params, x, tt[0], tt[1], offset)
        return x, (x0 if record else None)

    x, x0s = jax.lax.scan(body, x_init, (ts[:-1], ts[1:]))
    a, s, _, _ = _coeffs(ts[-1], offset)
    out = (x, _denoise(params, x, a, s))
    if record == "BK":
        x0s = jnp.swapaxes(x0s, 0, 1)
    return (*out, x0s) if record else out


@ft.partial(jax.jit, static_argnames=("name", "bulk", "offset"))
def scan_sde(params, key, x_init, ts, eta, *, name, bulk, offset):
    """Hand-written SDE sampler with the harness's keys: chain i uses fold_in(key, i).

    bulk=False: step j of chain i draws normal(split(key_i, K)[j], (n,)) inside the scan,
    exactly as the harness does (so results agree with it bit for bit up to rounding).
    bulk=True: chain i draws all of its (K, n) normals at once before the scan.
    """
    batch, n = x_init.shape
    num_steps = ts.shape[0] - 1
    chain = harness.chain_keys(key, batch)
    if bulk:
        noise = jax.vmap(lambda k: jr.normal(k, (num_steps, n), x_init.dtype))(chain)
        xs_noise = jnp.swapaxes(noise, 0, 1)  # (K, B, n)
    else:
        xs_noise = jnp.swapaxes(jax.vmap(lambda k: jr.split(k, num_steps))(chain), 0, 1)

    def body(x, xs):
        t, t_next, noise = xs
        if not bulk:
            noise = jax.vmap(lambda k: jr.normal(k, (n,), x.dtype))(noise)
        if name == "ddim_eta":
            return _ddim_eta_step(params, x, t, t_next, noise, eta, offset), None
        return _em_step(params, x, t, t_next, noise, offset), None

    x, _ = jax.lax.scan(body, x_init, (ts[:-1], ts[1:], xs_noise))
    a, s, _, _ = _coeffs(ts[-1], offset)
    return x, _denoise(params, x, a, s)


def make_pyloop(sampler, num_steps: int) -> Callable:
    """A Python loop over K calls of the LIBRARY step, jit(vmap(sampler.step)).

    Same model, sampler and per-chain keys as the harness (chain i splits its key once
    per step inside the jitted step), so only the loop mechanics differ.
    """

    @jax.jit
    def step(sampler, manifold, keys, x, t, t_next):
        def one(key, x1):
            key, key_step = jr.split(key)
            state, _ = sampler.step(key_step, sampler.init(x1, t), manifold, t_next)
            return key, state.x

        return jax.vmap(one)(keys, x)

    @jax.jit
    def final(manifold, x, t):
        return jax.vmap(manifold.denoise, in_axes=(0, None))(x, t)

    chain_keys = jax.jit(harness.chain_keys, static_argnums=1)

    def run(sampler, manifold, key, x_init, t_list):
        keys, x = chain_keys(key, x_init.shape[0]), x_init
        for j in range(num_steps):
            keys, x = step(sampler, manifold, keys, x, t_list[j], t_list[j + 1])
        return x, final(manifold, x, t_list[-1])

    return run


# --------------------------------------------------------------------------------------
# diffrax references: one example per solve, vmapped over the batch, one jit.
# --------------------------------------------------------------------------------------


def _lib_velocity(t, y, manifold):
    """The library's probability-flow velocity for ONE example (what EulerODE uses)."""
    x0 = manifold.denoise(y, t)
    return schedules.velocity_from_x0(manifold.schedule, y, x0, t)


def _lib_drift(t, y, manifold):
    """Reverse-SDE drift f·z − g²·score of the library's EulerMaruyama, ONE example."""
    sched = manifold.schedule
    a, sig = sched.alpha(t), sched.sigma(t)
    f = sched.d_alpha(t) / a
    g2 = 2.0 * sig * sched.d_sigma(t) - 2.0 * f * sig**2
    score = schedules.score_from_x0(sched, y, manifold.denoise(y, t), t)
    return f * y - g2 * score


def _lib_diffusion(t, y, manifold):
    sched = manifold.schedule
    a, sig = sched.alpha(t), sched.sigma(t)
    g2 = 2.0 * sig * sched.d_sigma(t) - 2.0 * (sched.d_alpha(t) / a) * sig**2
    return lx.DiagonalLinearOperator(jnp.full_like(y, jnp.sqrt(jnp.clip(g2, 0.0))))


def _terminal(manifold, x, t):
    return jax.vmap(manifold.denoise, in_axes=(0, None))(x, t)


@ft.partial(jax.jit, static_argnames=("solver", "forward"))
def diffrax_ode(manifold, x_init, ts, *, solver, forward=False):
    """diffrax fixed-step Euler / Heun on the library's probability-flow ODE, StepTo(ts).

    The manifold (means etc.) enters as `args`, a jit argument. forward=True uses
    `adjoint=ForwardMode()` instead of the default `RecursiveCheckpointAdjoint()`.
    """
    adjoint = diffrax.ForwardMode() if forward else diffrax.RecursiveCheckpointAdjoint()
    term = diffrax.ODETerm(_lib_velocity)
    method = {"euler": diffrax.Euler(), "heun": diffrax.Heun()}[solver]

    def one(y0):
        sol = diffrax.diffeqsolve(
            term,
            method,
            t0=ts[0],
            t1=ts[-1],
            dt0=None,
            y0=y0,
            args=manifold,
            stepsize_controller=diffrax.StepTo(ts=ts),
            saveat=diffrax.SaveAt(t1=True),
            max_steps=ts.shape[0] - 1,
            adjoint=adjoint,
        )
        return sol.ys[-1]

    x = jax.vmap(one)(x_init)
    return x, _terminal(manifold, x, ts[-1])


@ft.partial(jax.jit, static_argnames=("brownian", "t_lo", "t_hi", "tol"))
def diffrax_em(manifold, key, x_init, ts, *, brownian, t_lo, t_hi, tol):
    """diffrax Euler(-Maruyama) on the library's reverse SDE, per-chain Brownian path."""
    chain = harness.chain_keys(key, x_init.shape[0])
    n = x_init.shape[1]

    def one(k, y0):
        if brownian == "vbt":
            path = diffrax.VirtualBrownianTree(t0=t_lo, t1=t_hi, tol=tol, shape=(n,), key=k)
        else:
            path = diffrax.UnsafeBrownianPath(shape=(n,), key=k)
        terms = diffrax.MultiTerm(
            diffrax.ODETerm(_lib_drift), diffrax.ControlTerm(_lib_diffusion, path)
        )
        sol = diffrax.diffeqsolve(
            terms,
            diffrax.Euler(),
            t0=ts[0],
            t1=ts[-1],
            dt0=None,
            y0=y0,
            args=manifold,
            stepsize_controller=diffrax.StepTo(ts=ts),
            saveat=diffrax.SaveAt(t1=True),
            max_steps=ts.shape[0] - 1,
            adjoint=diffrax.ForwardMode(),  # UnsafeBrownianPath requires it; same for VBT
        )
        return sol.ys[-1]

    x = jax.vmap(one)(chain, x_init)
    return x, _terminal(manifold, x, ts[-1])


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    name: str
    fn: Callable[..., Any]
    args: tuple
    partitionable: bool = True  # value of jax_threefry_partitionable while it runs
    times: list[float] = dataclasses.field(default_factory=list)  # wall clock, s
    cpu_times: list[float] = dataclasses.field(default_factory=list)  # process CPU, s
    compile_s: float = float("nan")
    out: Any = None

    def context(self):
        if self.partitionable == jax.config.jax_threefry_partitionable:
            return contextlib.nullcontext()
        return jax.threefry_partitionable(self.partitionable)

    def call(self) -> float:
        with self.context():
            c0, t0 = time.process_time(), time.perf_counter()
            jax.block_until_ready(self.fn(*self.args))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return wall, cpu

    def record(self) -> None:
        wall, cpu = self.call()
        self.times.append(wall)
        self.cpu_times.append(cpu)

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.times)

    @property
    def min_ms(self) -> float:
        return 1e3 * min(self.times)

    @property
    def cpu_ms(self) -> float:
        return 1e3 * statistics.median(self.cpu_times)


def run_cases(
    cases: Sequence[Case],
    rounds: int,
    warmup: int = 2,
    verbose: bool = False,
    budget_s: float = 6.0,
) -> None:
    """Compile + warm up every case, then time them round-robin `rounds` times.

    A case slower than `budget_s / rounds` per call (diffrax's VirtualBrownianTree) is
    timed in fewer rounds (at least 3) and warmed up once, to keep the run short.
    """
    quota = {}
    for case in cases:
        with case.context():
            t0 = time.perf_counter()
            case.out = jax.block_until_ready(case.fn(*case.args))
            case.compile_s = time.perf_counter() - t0
            first = case.call()[0]
            for _ in range(warmup - 1 if first * rounds < budget_s else 0):
                case.call()
        quota[case.name] = max(3, min(rounds, int(budget_s / first)))
        if verbose:
            print(f"  {case.name}: first call {case.compile_s:.1f} s", file=sys.stderr)
    for r in range(rounds):
        shift = r % len(cases)
        for case in list(cases[shift:]) + list(cases[:shift]):
            if len(case.times) < quota[case.name]:
                case.record()


def _x_of(out) -> np.ndarray:
    return np.asarray(out.x if isinstance(out, rj.SampleResult) else out[0])


# --------------------------------------------------------------------------------------
# The proposed library fix, measured without editing the library: a manifold that is
# GaussianMixture with ONE change in `responsibilities`, `z @ means.T` for `means @ z`.
# --------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FixedLayoutMixture:
    """`GaussianMixture.denoise` with `z @ means.T` in place of `means @ z`.

    The value is the same; under the harness's `vmap` the batch axis of the logits
    becomes the leading one, (B, M) instead of (M, B), and XLA:CPU fuses
    dot → softmax → dot into one kernel (measured in the `harness+fix/*` rows).
    """

    world: manifolds.GaussianMixture

    @property
    def schedule(self):
        return self.world.schedule

    @property
    def latent_shape(self):
        return self.world.latent_shape

    def denoise(self, z, t):
        w = self.world
        a, s = w.schedule.alpha(t), w.schedule.sigma(t)
        v = a**2 * w.std**2 + s**2
        quad = a**2 * jnp.sum(w.means**2, axis=-1) - 2.0 * a * (z @ w.means.T)
        r = jax.nn.softmax(jnp.log(w.weights) - quad / (2.0 * w.resp_scale * v))
        mean = r @ w.means
        return mean + (a * w.std**2 / v) * (z - a * mean)


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


def _harness_fn(record):
    def fn(sampler, manifold, key, x_init, ts):
        return rj.sample(sampler, manifold, key, x_init, ts, record=record)

    return fn


def _prngs_at(config: Config, num_steps: int):
    return config.prngs if num_steps == config.sweep_steps else config.core_prngs


def build_cases(config: Config, world, x_init, ts, key) -> list[Case]:
    """Every case of one K. Each gets the same x_init, grid and (per PRNG) key."""
    offset = world.schedule.offset
    fixed = FixedLayoutMixture(world)
    params = (world.means, jnp.log(world.weights), world.std)
    num_steps = ts.shape[0] - 1
    t_list = [ts[j] for j in range(num_steps + 1)]
    nothing, default = _harness_fn(rj.record_nothing), _harness_fn(rj.record_info)
    x0_only = _harness_fn(rj.record_x0_hat)
    cases = []
    for name in config.ode_samplers:
        sampler = samplers.get_sampler(name)
        scan_fn = ft.partial(scan_ode, name=name, offset=offset)
        cases += [
            Case(f"harness/{name}", nothing, (sampler, world, key, x_init, ts)),
            Case(f"harness+fix/{name}", nothing, (sampler, fixed, key, x_init, ts)),
            Case(f"scan/{name}", scan_fn, (params, x_init, ts)),
        ]
        if name in config.record_samplers:
            args = (sampler, world, key, x_init, ts)
            cases.append(Case(f"harness/{name}/record_info", default, args))
            args = (sampler, fixed, key, x_init, ts)
            cases.append(Case(f"harness+fix/{name}/record_x0_hat", x0_only, args))
            for layout in ("KB", "BK"):
                fn = ft.partial(scan_ode, name=name, offset=offset, record=layout)
                cases.append(Case(f"scan/{name}/record_x0_hat_{layout}", fn, (params, x_init, ts)))
        if name in config.pyloop_samplers:
            args = (sampler, world, key, x_init, t_list)
            cases.append(Case(f"pyloop/{name}", make_pyloop(sampler, num_steps), args))
    if diffrax is not None:
        for what in config.diffrax_cases:
            if what.startswith("em-"):
                brownian = what.removeprefix("em-")
                fn = ft.partial(
                    diffrax_em,
                    brownian=brownian,
                    t_lo=config.t_min,
                    t_hi=config.t_max,
                    tol=(config.t_max - config.t_min) / num_steps / 2,  # dt/2 (diffrax docs)
                )
                cases.append(Case(f"diffrax/{what}", fn, (world, key, x_init, ts)))
            else:
                solver, _, variant = what.removesuffix("+fix").partition("-")
                fn = ft.partial(diffrax_ode, solver=solver, forward=variant == "fwd")
                manifold = fixed if what.endswith("+fix") else world
                cases.append(Case(f"diffrax/{what}", fn, (manifold, x_init, ts)))
    # The stochastic step, per PRNG implementation (same harness, same sampler objects).
    ddim_eta = samplers.get_sampler("ddim_eta", eta=config.eta)
    em = samplers.get_sampler("euler_maruyama")
    eta = jnp.asarray(config.eta, x_init.dtype)
    for label, impl, partitionable in _prngs_at(config, num_steps):
        key_impl = jr.key(config.seed + 1, impl=impl)
        run = [("harness", ddim_eta, world), ("harness+fix", ddim_eta, fixed)]
        if label in config.em_prngs:
            run.append(("harness", em, world))
        for prefix, sampler, manifold in run:
            cases.append(
                Case(
                    f"{prefix}/{_sampler_name(sampler)}/{label}",
                    nothing,
                    (sampler, manifold, key_impl, x_init, ts),
                    partitionable,
                )
            )
        for bulk in (False, True) if config.extras else (False,):
            fn = ft.partial(scan_sde, name="ddim_eta", bulk=bulk, offset=offset)
            args = (params, key_impl, x_init, ts, eta)
            tag = "bulk" if bulk else "per-step"
            cases.append(Case(f"scan/ddim_eta-{tag}/{label}", fn, args, partitionable))
    if config.extras:
        key_sde = jr.key(config.seed + 1)
        fn = ft.partial(scan_sde, name="em", bulk=False, offset=offset)
        cases.append(Case("scan/em/threefry2x32", fn, (params, key_sde, x_init, ts, eta)))
        args = (ddim_eta, world, key_sde, x_init, t_list)
        pyloop = make_pyloop(ddim_eta, num_steps)
        cases.append(Case("pyloop/ddim_eta/threefry2x32", pyloop, args))
    return cases


def _sampler_name(sampler) -> str:
    return next(name for name, cls in samplers.SAMPLERS.items() if type(sampler) is cls)


def raw_rng_table(config: Config) -> list[tuple[str, float, float, float, bool]]:
    """Per PRNG: ms for batch x n bits / uniforms / normals (vmapped per-chain keys)."""
    n, batch = config.dim, config.batch
    rows = []
    for label, impl, partitionable in config.raw_prngs:
        with jax.threefry_partitionable(partitionable):
            keys = harness.chain_keys(jr.key(config.seed, impl=impl), batch)
            cases = [
                Case(what, jax.jit(jax.vmap(fn)), (keys,), partitionable)
                for what, fn in (
                    ("bits", lambda k: jr.bits(k, (n,))),
                    ("uniform", lambda k: jr.uniform(k, (n,))),
                    ("normal", lambda k: jr.normal(k, (n,))),
                )
            ]
            run_cases(cases, config.raw_rounds)
            # vmap-exact: does chain i get normal(key_i) under vmap? (rbg: no, it uses key 0)
            batched = cases[2].out
            exact = all(
                np.array_equal(np.asarray(batched[i]), np.asarray(jr.normal(keys[i], (n,))))
                for i in (0, 1, batch - 1)
            )
        rows.append((label, *(c.median_ms for c in cases), exact))
    return rows


STATS = ("median", "min", "cpu")  # wall-clock median, wall-clock min, median CPU time


def _ratio(t: dict[str, float], num: str, den: str) -> str:
    return f"{t[num] / t[den]:.2f}" if num in t and den in t else "-"


def report_k(config: Config, num_steps: int, cases: list[Case]) -> dict[str, dict[str, float]]:
    """Print the table, the correctness checks and the ratios of one K."""
    by = {c.name: c for c in cases}
    stats = {
        "median": {c.name: c.median_ms for c in cases},
        "min": {c.name: c.min_ms for c in cases},
        "cpu": {c.name: c.cpu_ms for c in cases},
    }
    med = stats["median"]
    print(
        f"{'case':<40}{'median ms':>10}{'min ms':>9}{'cpu ms':>9}{'med/step':>9}"
        f"{'n':>3}{'1st call s':>11}"
    )
    for c in cases:
        print(
            f"{c.name:<40}{c.median_ms:10.2f}{c.min_ms:9.2f}{c.cpu_ms:9.2f}"
            f"{c.median_ms / num_steps:9.3f}{len(c.times):3d}{c.compile_s:11.2f}"
        )

    # correctness: same math and grid (and, for ddim_eta / em per-step, the same noise)
    pairs = [(f"scan/{n}", f"harness/{n}") for n in config.ode_samplers]
    pairs += [(f"harness+fix/{n}", f"harness/{n}") for n in config.ode_samplers]
    pairs += [(f"pyloop/{n}", f"harness/{n}") for n in config.ode_samplers]
    pairs += [("diffrax/euler", "harness/euler"), ("diffrax/heun", "harness/heun")]
    pairs += [
        ("scan/ddim_eta-per-step/threefry2x32", "harness/ddim_eta/threefry2x32"),
        ("scan/em/threefry2x32", "harness/euler_maruyama/threefry2x32"),
    ]
    diffs = [
        f"{a} {np.max(np.abs(_x_of(by[a].out) - _x_of(by[b].out))):.0e}"
        for a, b in pairs
        if a in by and b in by
    ]
    scale = np.max(np.abs(_x_of(by[f"harness/{config.ode_samplers[0]}"].out)))
    print(f"max |x - x_harness| (max |x| = {scale:.1f}; float32 rounding, amplified where")
    print("  the posterior is sharp, gives ~1e-4..1e-2 at K = 4): " + ", ".join(diffs))
    em_stats = [
        f"{name} {np.mean(_x_of(by[name].out)):+.3f}/{np.std(_x_of(by[name].out)):.3f}"
        for name in ("harness/euler_maruyama/threefry2x32", "diffrax/em-vbt", "diffrax/em-unsafe")
        if name in by
    ]
    print("EM end point mean/sd (same law, other noise): " + ", ".join(em_stats))

    print("speed-up of the harness = time(other) / time(harness), wall-clock medians:")
    for name in config.ode_samplers:
        h, fix = f"harness/{name}", f"harness+fix/{name}"
        parts = [f"scan {_ratio(med, f'scan/{name}', h)}"]
        if name in config.pyloop_samplers:
            parts.append(f"pyloop {_ratio(med, f'pyloop/{name}', h)}")
        if f"diffrax/{name}" in med:
            parts.append(f"diffrax {_ratio(med, f'diffrax/{name}', h)}")
        if name == "heun" and "diffrax/heun-fwd" in med:
            parts.append(f"diffrax(ForwardMode) {_ratio(med, 'diffrax/heun-fwd', h)}")
        parts.append(f"| with the fix: scan {_ratio(med, f'scan/{name}', fix)}")
        if name == "heun" and "diffrax/heun+fix" in med:
            parts.append(f"diffrax {_ratio(med, 'diffrax/heun+fix', fix)}")
        print(f"  {name:<15}" + ", ".join(parts))
    h = "harness/euler_maruyama/threefry2x32"
    parts = [f"scan {_ratio(med, 'scan/em/threefry2x32', h)}"]
    parts += [
        f"diffrax-{b} {_ratio(med, f'diffrax/em-{b}', h)}"
        for b in ("vbt", "unsafe")
        if f"diffrax/em-{b}" in med
    ]
    print(f"  {'euler_maruyama':<15}" + ", ".join(parts))
    h = "harness/ddim_eta/threefry2x32"
    print(
        f"  {'ddim_eta':<15}scan {_ratio(med, 'scan/ddim_eta-per-step/threefry2x32', h)}, "
        f"pyloop {_ratio(med, 'pyloop/ddim_eta/threefry2x32', h)}"
    )
    for name in config.record_samplers:
        h, fix, scan = f"harness/{name}", f"harness+fix/{name}", f"scan/{name}"
        print(
            f"  recording x̂0 ({name}): time(record) / time(no record) = harness record_info "
            f"{_ratio(med, f'{h}/record_info', h)}, harness+fix record_x0_hat "
            f"{_ratio(med, f'{fix}/record_x0_hat', fix)}, scan (K,B,n) "
            f"{_ratio(med, f'{scan}/record_x0_hat_KB', scan)}, scan (B,K,n) "
            f"{_ratio(med, f'{scan}/record_x0_hat_BK', scan)}"
        )

    print("stochastic step: time(ddim_eta or EM) / time(ddim) at this K, wall-clock medians;")
    print("  'extra' = (time(ddim_eta) - time(ddim)) / K in ms per step, harness with the fix")
    print(
        f"  {'prng':<22}{'harness':>8}{'+fix':>7}{'EM':>7}{'scan/step':>10}{'scan/bulk':>10}"
        f"{'extra ms':>10}{'extra cpu':>10}"
    )
    for label, _, _ in _prngs_at(config, num_steps):
        eta, fix_eta = f"harness/ddim_eta/{label}", f"harness+fix/ddim_eta/{label}"
        extra = (med[fix_eta] - med["harness+fix/ddim"]) / num_steps
        extra_cpu = (stats["cpu"][fix_eta] - stats["cpu"]["harness+fix/ddim"]) / num_steps
        print(
            f"  {label:<22}{_ratio(med, eta, 'harness/ddim'):>8}"
            f"{_ratio(med, fix_eta, 'harness+fix/ddim'):>7}"
            f"{_ratio(med, f'harness/euler_maruyama/{label}', 'harness/ddim'):>7}"
            f"{_ratio(med, f'scan/ddim_eta-per-step/{label}', 'scan/ddim'):>10}"
            f"{_ratio(med, f'scan/ddim_eta-bulk/{label}', 'scan/ddim'):>10}"
            f"{extra:10.3f}{extra_cpu:10.3f}"
        )
    return stats


def print_targets(config: Config, summary: dict[int, dict[str, dict[str, float]]]) -> None:
    """The three targets of issue 2, per K, for the library as is and with the fix."""
    print("\n## Targets (issue 2): ratios from wall median / wall min / median CPU time")
    print(f"{'K':<4}{'metric (target)':<46}{'library as is':>30}{'with the fix':>30}")
    for num_steps, stats in summary.items():

        def three(num, den, stats=stats):
            return " / ".join(_ratio(stats[s], num, den) for s in STATS)

        def worst(prefix, med=stats["median"]):
            return min(config.ode_samplers, key=lambda n: med[f"scan/{n}"] / med[f"{prefix}/{n}"])

        w, wf = worst("harness"), worst("harness+fix")
        rows = [
            (
                "speed vs hand-written scan, worst (>= 1.0)",
                three(f"scan/{w}", f"harness/{w}") + f" ({w})",
                three(f"scan/{wf}", f"harness+fix/{wf}") + f" ({wf})",
            ),
        ]
        if "diffrax/heun" in stats["median"]:
            rows.append(
                (
                    "speed vs diffrax Heun (>= 1.5)",
                    three("diffrax/heun", "harness/heun"),
                    three("diffrax/heun+fix", "harness+fix/heun"),
                )
            )
        for label, _, _ in _prngs_at(config, num_steps):
            if label in (*config.em_prngs, "threefry2x32"):
                rows.append(
                    (
                        f"time ddim_eta / ddim, {label} (<= 1.5)",
                        three(f"harness/ddim_eta/{label}", "harness/ddim"),
                        three(f"harness+fix/ddim_eta/{label}", "harness+fix/ddim"),
                    )
                )
        for metric, as_is, fixed in rows:
            print(f"{num_steps:<4}{metric:<46}{as_is:>30}{fixed:>30}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke test (< 1 min)")
    args = parser.parse_args(argv)
    config = Config.quick() if args.quick else Config()
    start = time.perf_counter()

    print(f"# bench_harness ({'quick' if args.quick else 'full'})")
    print(
        f"jax {jax.__version__}, diffrax {getattr(diffrax, '__version__', 'missing')}, "
        f"{platform.machine()}, {jax.devices()}, default prng "
        f"{jax.config.jax_default_prng_impl}, threefry_partitionable "
        f"{jax.config.jax_threefry_partitionable}"
    )
    print(
        f"GMM n={config.dim} M={config.num_modes} batch={config.batch} K={config.num_steps}, "
        f"grid {config.t_max} -> {config.t_min}; median of {config.rounds} round-robin rounds"
    )

    key_world, key_prior, key_sample = jr.split(jr.key(config.seed), 3)
    world = manifolds.GaussianMixture.random(
        key_world, config.num_modes, config.dim, scale=2.0, std=0.5, schedule="vp_cosine"
    )
    assert isinstance(world.schedule, schedules.VPCosine)
    x_init = rj.prior_sample(key_prior, world, config.batch)

    print(f"\n## Raw draws: {config.batch} x {config.dim} numbers, vmapped per-chain keys")
    print(f"{'prng':<22}{'bits ms':>9}{'uniform':>9}{'normal':>9}  vmap-exact")
    for label, bits, uni, nor, exact in raw_rng_table(config):
        print(f"{label:<22}{bits:9.3f}{uni:9.3f}{nor:9.3f}  {'yes' if exact else 'NO'}")

    summary = {}
    for num_steps in config.num_steps:
        ts = schedules.time_grid(world.schedule, num_steps, t_max=config.t_max, t_min=config.t_min)
        cases = build_cases(config, world, x_init, ts, key_sample)
        t0 = time.perf_counter()
        run_cases(cases, config.rounds, verbose=True)
        print(f"\n## K = {num_steps}  ({time.perf_counter() - t0:.0f} s incl. compiles)")
        summary[num_steps] = report_k(config, num_steps, cases)

    ts = schedules.time_grid(world.schedule, config.num_steps[0], t_max=config.t_max)
    check = Case(
        "check", lambda: harness.check_sample_inputs(samplers.DDIM(), world, x_init, ts), ()
    )
    run_cases([check], config.raw_rounds)
    print(f"\nvalidation outside jit (check_sample_inputs): {check.median_ms:.3f} ms per call")

    print_targets(config, summary)
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
