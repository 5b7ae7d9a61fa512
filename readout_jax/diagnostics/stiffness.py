"""Stiffness of a sampler: spectral norms of its step maps and of the whole sampling map.

The trajectories are exactly those of `readout_jax.sample`: example i uses the chain key
`fold_in(key, i)` (`harness.chain_keys`) and step k the k-th key of
`jr.split(chain_key, K)`, so a stochastic step sees the same noise here as in `sample`;
holding that key fixed makes the step a deterministic map z_k ↦ z_(k+1) (SPEC §5).
"""

from __future__ import annotations

import functools as ft
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr

from readout_jax import _checks, harness, sharding
from readout_jax._types import Array, ArrayLike, Float, Int, Key
from readout_jax.diagnostics import jacobian

__all__ = [
    "StiffnessSummary",
    "step_jacobian_norms",
    "whole_map_norm",
    "stiffness_summary",
]

# The Lanczos start vectors come from fold_in(key, _START_DATA): never an example index.
_START_DATA = 0xFFFFFFFF


class StiffnessSummary(NamedTuple):
    """Per-step and peak statistics of step Jacobian norms over samples.

    Attributes:
        median: (K,) median over samples of |∂Φ_k/∂z| at each step k.
        quantile: (K,) the `q`-quantile over samples at each step.
        peak_median: max_k of `median` (the per-step peak, SPEC §5).
        peak_quantile: max_k of `quantile`.
        peak_step_median: the step k (0-based) where `median` peaks.
        peak_step_quantile: the step k where `quantile` peaks.
    """

    median: Float[Array, " K"]
    quantile: Float[Array, " K"]
    peak_median: Float[Array, ""]
    peak_quantile: Float[Array, ""]
    peak_step_median: Int[Array, ""]
    peak_step_quantile: Int[Array, ""]


def _start_key(key: Key, start_key: Key | None) -> Key:
    return jr.fold_in(key, _START_DATA) if start_key is None else harness._as_key(start_key)


def _replace_x(state: Any, z: Array) -> Any:
    if not hasattr(state, "_replace"):
        raise TypeError(
            f"sampler state {type(state).__name__} has no _replace; samplers must return "
            "a SamplerState (NamedTuple) from init/step"
        )
    return state._replace(x=z)


@ft.partial(jax.jit, static_argnames=("num_iters",))
def _step_norms_jit(sampler, manifold, key, start_key, x_init, ts, num_iters, tol, start=0):
    ts = ts.astype(x_init.dtype)
    num_steps = ts.shape[0] - 1
    batch = x_init.shape[0]

    def one_chain(example):
        index, chain_key, x = example

        def body(state, xs):
            step_key, t_next, step = xs

            def step_map(z):
                new_state, _ = sampler.step(step_key, _replace_x(state, z), manifold, t_next)
                return new_state.x, new_state

            salt = index * num_steps + step  # a distinct start vector per (example, step)
            # One step evaluation serves the linearisation and the trajectory (aux).
            top, new_state = jacobian._top_singular(
                step_map, state.x, start_key, salt, num_iters, tol, has_aux=True
            )
            return new_state, top.sigma

        state = sampler.init(x, ts[0])
        steps = jnp.arange(num_steps, dtype=jnp.uint32)
        _, norms = jax.lax.scan(body, state, (jr.split(chain_key, num_steps), ts[1:], steps))
        return norms

    index = jnp.asarray(start, jnp.uint32) + jnp.arange(batch, dtype=jnp.uint32)
    keys = harness.chain_keys(key, batch, start)
    return sharding.vmap_padded(one_chain, (index, keys, x_init))


def _run_pieces(program, replicated, x_init, chunk_size):
    """`program(*replicated, x, start)` over the device shards / chunks of `x_init`."""

    def piece(rep, start, num_real, x):
        del num_real
        return program(*rep[:3], x, *rep[3:], start=start), None

    out, _ = sharding.map_pieces(piece, replicated, jnp.asarray(x_init), chunk_size=chunk_size)
    return out


def _check_common(sampler, manifold, key, x_init, ts, num_iters, tol, chunk_size=None):
    harness.check_sample_inputs(sampler, manifold, x_init, ts)
    key = harness._as_key(key)
    num_iters = _checks.positive_int(num_iters, "num_iters")
    _checks.nonnegative_scalar(tol, "tol")
    chunk_size = harness._check_chunk_size(chunk_size)
    return key, num_iters, chunk_size


def step_jacobian_norms(
    sampler: Any,
    manifold: Any,
    key: Key,
    x_init: Float[Array, " batch *latent"],
    ts: Float[Array, " num_steps_plus_1"],
    *,
    num_iters: int = 32,
    tol: float | Float[ArrayLike, ""] = 1e-6,
    start_key: Key | None = None,
    chunk_size: Any = None,
) -> Float[Array, " batch K"]:
    """|∂Φ_k/∂z_k|₂ of every step map Φ_k: z_k ↦ z_(k+1) along the sampled trajectories.

    Runs the trajectories of `readout_jax.sample(sampler, manifold, key, x_init, ts)`
    (same chain and step keys) and, at each step, the matrix-free spectral norm
    (`jacobian.top_singular`) of the step as a function of the latent z_k alone: the
    step's key (hence its noise), the times and the rest of the sampler state (e.g. the
    multistep history in `extra`) are held fixed, so for a multistep sampler this is the
    partial Jacobian with respect to the current latent.

    Args:
        sampler: any sampler (`init`, `step`) whose state is a `SamplerState`.
        manifold: the world (denoiser, schedule, latent_shape).
        key: the key passed to `sample`.
        x_init: (batch, *latent_shape) initial latents at ts[0].
        ts: (K + 1,) strictly decreasing grid.
        num_iters: maximum Lanczos bidiagonalisation steps per norm (static).
        tol: relative residual at which Lanczos stops.
        start_key: key for the Lanczos start vectors, hashed with the example and step
            index (`jacobian.start_vector`); default `fold_in(key, 2**32 - 1)`.
        chunk_size: trajectories processed at once (per device when `x_init` is
            sharded); None: all. The Lanczos basis of a chunk takes
            O(chunk·num_iters·n) memory. Results do not depend on it.

    Returns:
        (batch, K) spectral norms, step k in column k; sharded like `x_init` when
        `x_init` is split over a device mesh (`readout_jax.sharding.shard_batch`): the
        numbers equal the single-device ones bit for bit (global example indices pick
        the keys and start vectors).

    Raises:
        ValueError / TypeError: as `readout_jax.sample` for the sampler, manifold,
            `x_init` and `ts`; for `num_iters` < 1 or `tol` < 0.

    Examples:
        >>> import jax.random as jr
        >>> from readout_jax import manifolds, samplers, schedules
        >>> world = manifolds.GaussianMixture.two_modes(4.0, dim=2, std=0.5)
        >>> ts = schedules.time_grid(world.schedule, 4)
        >>> norms = step_jacobian_norms(samplers.DDIM(), world, jr.key(1),
        ...                             jr.normal(jr.key(0), (8, 2)), ts)
        >>> norms.shape
        (8, 4)
    """
    key, num_iters, chunk_size = _check_common(
        sampler, manifold, key, x_init, ts, num_iters, tol, chunk_size
    )
    program = ft.partial(_step_norms_jit, num_iters=num_iters)

    def call(sampler, manifold, key, x, start_key, ts, tol, *, start):
        return program(sampler, manifold, key, start_key, x, ts, tol=tol, start=start)

    replicated = (sampler, manifold, key, _start_key(key, start_key), jnp.asarray(ts), tol)
    return _run_pieces(call, replicated, x_init, chunk_size)


@ft.partial(jax.jit, static_argnames=("num_iters", "output"))
def _whole_norm_jit(sampler, manifold, key, start_key, x_init, ts, num_iters, tol, output, start=0):
    ts = ts.astype(x_init.dtype)
    num_steps = ts.shape[0] - 1

    def one_chain(example):
        index, chain_key, x = example
        step_keys = jr.split(chain_key, num_steps)

        def sample_map(z):
            def body(state, xs):
                step_key, t_next = xs
                state, _ = sampler.step(step_key, state, manifold, t_next)
                return state, None

            state, _ = jax.lax.scan(body, sampler.init(z, ts[0]), (step_keys, ts[1:]))
            return manifold.denoise(state.x, ts[-1]) if output == "x0" else state.x

        return jacobian._top_singular(sample_map, x, start_key, index, num_iters, tol).sigma

    batch = x_init.shape[0]
    index = jnp.asarray(start, jnp.uint32) + jnp.arange(batch, dtype=jnp.uint32)
    keys = harness.chain_keys(key, batch, start)
    return sharding.vmap_padded(one_chain, (index, keys, x_init))


def whole_map_norm(
    sampler: Any,
    manifold: Any,
    key: Key,
    x_init: Float[Array, " batch *latent"],
    ts: Float[Array, " num_steps_plus_1"],
    *,
    output: str = "x0",
    num_iters: int = 32,
    tol: float | Float[ArrayLike, ""] = 1e-6,
    start_key: Key | None = None,
    chunk_size: Any = None,
) -> Float[Array, " batch"]:
    """|∂x0/∂z_init|₂: the spectral norm of the whole sampling map, per trajectory.

    The map z_init ↦ output runs all K steps with the keys of `sample` held fixed
    (noise fixed) and returns the posterior-mean terminal output x̂0(z_K, t_K) of
    `sample` (`output="x0"`, SPEC §4) or the last state z_K (`output="x"`). Its
    Jacobian is applied by differentiating through the `lax.scan` (memory O(K·latent)
    per example).

    Args:
        sampler, manifold, key, x_init, ts: as for `step_jacobian_norms`.
        output: "x0" (the terminal posterior mean) or "x" (the last state).
        num_iters, tol, start_key, chunk_size: as for `step_jacobian_norms`.

    Returns:
        (batch,) spectral norms (sharded like a sharded `x_init`).

    Raises:
        ValueError / TypeError: as `step_jacobian_norms`, or for an unknown `output`.
    """
    if output not in ("x0", "x"):
        raise ValueError(f"output must be 'x0' or 'x', got {output!r}")
    key, num_iters, chunk_size = _check_common(
        sampler, manifold, key, x_init, ts, num_iters, tol, chunk_size
    )

    def call(sampler, manifold, key, x, start_key, ts, tol, *, start):
        return _whole_norm_jit(
            sampler, manifold, key, start_key, x, ts, num_iters, tol, output, start=start
        )

    replicated = (sampler, manifold, key, _start_key(key, start_key), jnp.asarray(ts), tol)
    return _run_pieces(call, replicated, x_init, chunk_size)


def stiffness_summary(
    norms: Any,  # (samples, steps) real array, checked in the body
    *,
    q: float = 0.99,
    sample_axis: int = 0,
    step_axis: int = 1,
) -> StiffnessSummary:
    """Per-step median and q-quantile over samples, and their peaks over steps (SPEC §5).

    Args:
        norms: a 2-D array of step norms, e.g. the (batch, K) output of
            `step_jacobian_norms`.
        q: the high quantile (default the 99th percentile), in [0, 1].
        sample_axis: the axis of `norms` over samples.
        step_axis: the axis of `norms` over steps.

    Returns:
        `StiffnessSummary(median, quantile, peak_median, peak_quantile,
        peak_step_median, peak_step_quantile)`.

    Raises:
        ValueError: if `norms` is not a real 2-D array with at least one sample and one
            step, holds NaN/inf, the axes are equal or out of range, or `q` is outside
            [0, 1].
    """
    norms = jnp.asarray(norms)
    if norms.ndim != 2:
        raise ValueError(f"norms must be 2-D (samples, steps), got shape {norms.shape}")
    if not jnp.issubdtype(norms.dtype, jnp.floating) and not jnp.issubdtype(
        norms.dtype, jnp.integer
    ):
        raise ValueError(f"norms must be real numbers, got dtype {norms.dtype}")
    if 0 in norms.shape:
        raise ValueError(f"norms must hold at least one sample and one step, got {norms.shape}")
    if _checks.is_concrete(norms) and not bool(jnp.all(jnp.isfinite(norms))):
        raise ValueError("norms contains NaN or inf (a diverged chain?)")
    for name, axis in (("sample_axis", sample_axis), ("step_axis", step_axis)):
        if not -2 <= axis < 2:
            raise ValueError(f"{name} must be 0 or 1 (or -1, -2), got {axis}")
    if sample_axis % 2 == step_axis % 2:
        raise ValueError(f"sample_axis and step_axis must differ, got {sample_axis}")
    _checks.scalar_in_range(q, "q", 0.0, 1.0)
    norms = jnp.moveaxis(norms, (sample_axis % 2, step_axis % 2), (0, 1))
    median = jnp.median(norms, axis=0)
    quantile = jnp.quantile(norms, q, axis=0)
    return StiffnessSummary(
        median,
        quantile,
        jnp.max(median),
        jnp.max(quantile),
        jnp.argmax(median),
        jnp.argmax(quantile),
    )
