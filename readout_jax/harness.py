"""The sampling harness: validate outside `jit`, then jit once, vmap the batch, scan the steps."""

from __future__ import annotations

import functools as ft
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from readout_jax._types import Array, ArrayLike, Float, Key, Keys, PyTree
from readout_jax.samplers.base import SamplerState, StepInfo

__all__ = [
    "SampleResult",
    "sample",
    "record_info",
    "record_x0_hat",
    "record_nothing",
    "check_sample_inputs",
    "chain_keys",
    "prior_sample",
]

RecordFn = Callable[[SamplerState, StepInfo], PyTree]


class SampleResult(NamedTuple):
    """What `sample` returns.

    Attributes:
        x: (batch, *latent) state at the last grid time t_K.
        x0: (batch, *latent) posterior-mean terminal output x̂0(x, t_K) (SPEC §4).
        info: what `record` kept of each step, leading axes (batch, K).
    """

    x: Float[Array, " batch *latent"]
    x0: Float[Array, " batch *latent"]
    info: PyTree


def record_info(state: SamplerState, info: StepInfo) -> PyTree:
    """Keep the whole per-step `StepInfo` (x̂0, nfe, num_draws)."""
    del state
    return info


def record_x0_hat(state: SamplerState, info: StepInfo) -> PyTree:
    """Keep only the per-step posterior-mean estimate x̂0."""
    del state
    return info.x0_hat


def record_nothing(state: SamplerState, info: StepInfo) -> PyTree:
    """Keep nothing per step (O(1) memory in K)."""
    del state, info
    return ()


def _as_key(key: Any) -> Key:
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single PRNG key, got shape {key.shape}")
        return key
    arr = np.asarray(key) if not isinstance(key, jax.core.Tracer) else key
    if getattr(arr, "dtype", None) == np.uint32 and arr.shape == (2,):
        return jr.wrap_key_data(jnp.asarray(arr))
    raise ValueError(f"key must be a jax.random key (jr.key(seed)), got {type(key).__name__}")


def check_sample_inputs(sampler, manifold, x_init, ts) -> None:
    """The harness's validation, in plain Python (raises ValueError / TypeError).

    Checks that the sampler has `init`/`step`, the manifold has a denoiser and schedule,
    `ts` is a 1-D strictly decreasing grid in [0, 1] with K = len(ts) − 1 ≥ 1, and
    `x_init` is a finite floating array of shape (batch ≥ 1, *manifold.latent_shape).
    Finally calls `sampler.validate(manifold, ts)` if the sampler defines it.
    """
    for method in ("init", "step"):
        if not callable(getattr(sampler, method, None)):
            raise TypeError(
                f"sampler {type(sampler).__name__} has no {method}() method; a "
                "sampler is any object with init(x, t) and step(key, state, "
                "model, t_next)"
            )
    for attr in ("denoise", "schedule", "latent_shape"):
        if not hasattr(manifold, attr):
            raise TypeError(f"manifold {type(manifold).__name__} has no {attr!r}")
    if isinstance(ts, jax.core.Tracer):
        raise TypeError("ts must be concrete (build it with time_grid outside jit)")
    ts_np = np.asarray(ts)
    if ts_np.ndim != 1:
        raise ValueError(f"ts must be 1-D (num_steps + 1,), got shape {ts_np.shape}")
    if ts_np.shape[0] < 2:
        raise ValueError(f"num_steps = len(ts) - 1 must be >= 1, got len(ts) = {ts_np.shape[0]}")
    if not np.all(np.isfinite(ts_np)):
        raise ValueError("ts contains NaN or inf")
    if not np.all(np.diff(ts_np) < 0):
        raise ValueError(f"ts must be strictly decreasing (noise -> data), got {ts_np}")
    if ts_np[0] > 1.0 or ts_np[-1] < 0.0:
        raise ValueError(
            f"ts must lie in the schedule's range [0, 1], got [{ts_np[-1]}, {ts_np[0]}]"
        )
    if isinstance(x_init, jax.core.Tracer):
        raise TypeError("x_init must be concrete; call sample() outside jit")
    shape = tuple(np.shape(x_init))
    latent = tuple(manifold.latent_shape)
    if shape[1:] != latent or len(shape) != len(latent) + 1:
        raise ValueError(
            f"x_init must have shape (batch, *latent_shape) = (batch, "
            f"{', '.join(map(str, latent))}), got {shape}"
        )
    if shape[0] < 1:
        raise ValueError("x_init has an empty batch (batch size 0)")
    dtype = np.dtype(x_init.dtype) if hasattr(x_init, "dtype") else np.asarray(x_init).dtype
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"x_init must be a floating array, got dtype {dtype}")
    if not bool(np.all(np.isfinite(np.asarray(x_init)))):
        raise ValueError("x_init contains NaN or inf")
    validate = getattr(sampler, "validate", None)
    if callable(validate):
        validate(manifold, ts_np)


def chain_keys(key: Key, batch: int) -> Keys:
    """Per-example keys fold_in(key, i): example i's key does not depend on the batch size."""
    return jax.vmap(lambda i: jr.fold_in(key, i))(jnp.arange(batch, dtype=jnp.uint32))


def _one_chain(sampler, manifold, record_fn, ts, chain_key, x):
    def body(state, xs):
        step_key, t_next = xs
        state, info = sampler.step(step_key, state, manifold, t_next)
        return state, record_fn(state, info)

    state = sampler.init(x, ts[0])
    num_steps = ts.shape[0] - 1
    state, records = jax.lax.scan(body, state, (jr.split(chain_key, num_steps), ts[1:]))
    x0 = manifold.denoise(state.x, ts[-1])
    return state.x, x0, records


@ft.partial(jax.jit, static_argnames=("record_fn",))
def _sample_jit(sampler, manifold, key, x_init, ts, record_fn):
    ts = ts.astype(x_init.dtype)
    keys = chain_keys(key, x_init.shape[0])
    run = jax.vmap(_one_chain, in_axes=(None, None, None, None, 0, 0))
    return run(sampler, manifold, record_fn, ts, keys, x_init)


def sample(
    sampler,
    manifold,
    key: Any,
    x_init: ArrayLike,
    ts: ArrayLike,
    *,
    record: RecordFn | None = record_info,
) -> SampleResult:
    """Run `sampler` on `manifold` from `x_init` along the descending grid `ts`.

    One `jit` per (sampler type, K, shapes, record function): new parameter values of the
    same shapes (a new manifold, a new η) reuse the compiled harness. The batch is
    `vmap`ped and the K steps are a `lax.scan`.

    Args:
        sampler: any object with `init(x, t)` and `step(key, state, model, t_next)`.
        manifold: a world with `denoise(z, t)`, `schedule` and `latent_shape`.
        key: a `jax.random.key` (a raw uint32 key is accepted); example i uses
            `fold_in(key, i)`, so its result does not change with the batch size.
        x_init: (batch, *latent_shape) initial latents at time ts[0].
        ts: (K + 1,) strictly decreasing times in [0, 1], e.g. from `time_grid`.
        record: `(state, info) -> pytree` kept per step (default: the whole `StepInfo`);
            `None` or `record_nothing` keeps nothing. Use a module-level function:
            each new function object compiles once more.

    Returns:
        `SampleResult(x, x0, info)`: x and x0 of shape (batch, *latent_shape), info with
        leading axes (batch, K).

    Raises:
        ValueError / TypeError: see `check_sample_inputs`.

    Examples:
        >>> import jax.random as jr
        >>> from readout_jax import manifolds, samplers, schedules, sample
        >>> world = manifolds.GaussianMixture.two_modes(4.0, dim=2, std=0.5)
        >>> ts = schedules.time_grid(world.schedule, 4)
        >>> x_init = jr.normal(jr.key(0), (8, 2))
        >>> out = sample(samplers.get_sampler("ddim"), world, jr.key(1), x_init, ts)
        >>> out.x0.shape, out.info.x0_hat.shape
        ((8, 2), (8, 4, 2))
    """
    check_sample_inputs(sampler, manifold, x_init, ts)
    key = _as_key(key)
    record_fn = record_nothing if record is None else record
    x, x0, info = _sample_jit(
        sampler, manifold, key, jnp.asarray(x_init), jnp.asarray(ts), record_fn
    )
    return SampleResult(x, x0, info)


def prior_sample(
    key: Key, manifold, num: int, t: float = 1.0, dtype=None
) -> Float[Array, " num *latent"]:
    """`num` draws from the Gaussian prior N(0, σ(t)²·I) at time t (exact at α(t) = 0)."""
    from readout_jax import _checks

    num = _checks.positive_int(num, "num")
    dtype = dtype or jnp.result_type(float)
    eps = jr.normal(_as_key(key), (num, *manifold.latent_shape), dtype)
    return manifold.schedule.sigma(jnp.asarray(t, dtype)) * eps
