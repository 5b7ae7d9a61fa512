"""Terminal flips and tube mass at noise scale s, with Monte Carlo standard errors (SPEC §5).

Flip rate: P(R(x̂0(α·x0 + σ·ε, t)) ≠ R(x0)) per position, with t = t(s) the time at
noise scale s = σ/α and x̂0 the world's posterior-mean denoiser: the readout change made
by a posterior-mean terminal step from level s. Tube mass: P(d(x0) ≤ c·s) for the
boundary distance d. Claim C1 says that, to leading order, the two agree up to a
constant set by the geometry (q0·s·sqrt(2/π) for a flat boundary).
"""

from __future__ import annotations

import functools as ft
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Bool

from readout_jax import _checks, harness
from readout_jax._types import Array, ArrayLike, Float
from readout_jax.manifolds.base import has_logits

__all__ = ["RateEstimate", "flip_rate", "tube_mass", "rate_estimate"]


class RateEstimate(NamedTuple):
    """A Monte Carlo probability with its standard error, pooled and per position.

    Attributes:
        rate: the event's frequency pooled over samples and positions.
        std_error: its standard error, from the spread of the per-sample fractions
            over positions (so correlated positions of one sample are not counted as
            independent): std(fraction)/sqrt(num_samples).
        per_position_rate: (*positions,) the frequency at each position.
        per_position_std_error: (*positions,) sqrt(p(1 − p)/num_samples).
        indicator: (num_samples, *positions) the events themselves (bool).
    """

    rate: Float[Array, ""]
    std_error: Float[Array, ""]
    per_position_rate: Float[Array, "*positions"]
    per_position_std_error: Float[Array, "*positions"]
    indicator: Bool[Array, " num *positions"]


def _check_indicator(indicator: Any) -> Array:
    """Boolean events (integers 0 / 1 are accepted when concrete)."""
    if not isinstance(indicator, jax.core.Tracer):
        try:
            indicator = jnp.asarray(indicator)
        except (TypeError, ValueError) as err:
            raise ValueError(f"indicator could not be converted to an array: {err}") from None
    dtype = indicator.dtype
    if dtype == jnp.bool_:
        return indicator
    if jnp.issubdtype(dtype, jnp.integer) and _checks.is_concrete(indicator):
        v = np.asarray(indicator)
        if np.all((v == 0) | (v == 1)):
            return indicator.astype(bool)
    raise ValueError(
        f"indicator must be boolean events (or integers in {{0, 1}}), got dtype {dtype}"
    )


def rate_estimate(indicator: ArrayLike) -> RateEstimate:
    """Frequencies and standard errors of boolean events with samples on axis 0.

    Args:
        indicator: (num, *positions) boolean events (integers 0 / 1 are accepted).

    Raises:
        ValueError: if `indicator` is not boolean, has no sample axis or no samples.
    """
    indicator = _check_indicator(indicator)
    if indicator.ndim < 1 or indicator.shape[0] < 1:
        raise ValueError(f"indicator must have a non-empty sample axis 0, got {indicator.shape}")
    num = indicator.shape[0]
    ind = indicator.astype(jnp.result_type(float))
    per_pos = jnp.mean(ind, axis=0)
    per_pos_se = jnp.sqrt(per_pos * (1.0 - per_pos) / num)
    per_sample = jnp.mean(ind.reshape(num, -1), axis=1)
    rate = jnp.mean(per_sample)
    if num > 1:
        se = jnp.std(per_sample, ddof=1) / math.sqrt(num)
    else:
        se = jnp.full((), jnp.nan, ind.dtype)
    return RateEstimate(rate, se, per_pos, per_pos_se, indicator.astype(bool))


@jax.jit
def _flips_jit(manifold, key, x0, noise_scale, atol):
    sched = manifold.schedule
    s = jnp.asarray(noise_scale, x0.dtype)
    t = sched.t_from_noise_scale(s)
    alpha, sigma = sched.alpha(t), sched.sigma(t)
    keys = harness.chain_keys(key, x0.shape[0])
    categorical = atol is None

    def one(k, x):
        eps = jr.normal(k, x.shape, x.dtype)
        x0_hat = manifold.denoise(alpha * x + sigma * eps, t)
        if categorical:
            return manifold.readout(x0_hat) != manifold.readout(x)
        diff = jnp.abs(manifold.readout(x0_hat) - manifold.readout(x))
        return jnp.max(diff) > atol

    return jax.vmap(one)(keys, x0)


def flip_rate(
    manifold: Any,
    key: Any,
    x0: ArrayLike,
    noise_scale: ArrayLike,
    *,
    atol: float | None = None,
) -> RateEstimate:
    """Flip rate of the posterior-mean terminal step at noise scale s, over clean x0.

    For each clean latent x0_i: t = t(s), z = α(t)·x0_i + σ(t)·ε_i with
    ε_i ~ N(0, I) drawn from `fold_in(key, i)` (so a sample's noise does not depend on
    the batch size), x̂0 = manifold.denoise(z, t), and a flip is R(x̂0) ≠ R(x0) per
    position for a categorical readout. For a smooth readout there is no category to
    flip: a "flip" is then max |R(x̂0) − R(x0)| > atol (one event per sample), which
    vanishes faster than any power of s when s ≪ atol. New s or new world parameters do
    not recompile.

    Args:
        manifold: a world with `denoise`, `readout` and `schedule`.
        key: random key for the noise ε.
        x0: (num, *latent_shape) clean latents, e.g. from `manifold.sample_data`.
        noise_scale: s > 0, the noise scale σ/α of the terminal step.
        atol: the output change counted as a flip, required for a smooth readout and
            not allowed for a categorical one.

    Returns:
        `RateEstimate` over the samples (positions of a sequence world separately in
        `per_position_rate`).

    Raises:
        ValueError: if `x0` does not have shape (num ≥ 1, *manifold.latent_shape) or is
            not finite, `noise_scale` is not a finite number > 0, or `atol` is missing
            (smooth) / given (categorical) / not > 0.

    Examples:
        >>> import jax.random as jr
        >>> from readout_jax import manifolds
        >>> world = manifolds.GaussianMixture.two_modes(2.0, dim=1, std=1.0)
        >>> x0, _ = world.sample_data(jr.key(0), 1000)
        >>> est = flip_rate(world, jr.key(1), x0, 0.1)
        >>> est.per_position_rate.shape
        ()
    """
    for attr in ("denoise", "readout", "schedule", "latent_shape"):
        if not hasattr(manifold, attr):
            raise ValueError(f"manifold {type(manifold).__name__} has no {attr!r}")
    x0 = _check_samples(x0, tuple(manifold.latent_shape), "x0")
    _checks.positive_scalar(noise_scale, "noise_scale")
    categorical = has_logits(manifold)
    if categorical and atol is not None:
        raise ValueError("atol is only for smooth readouts; a categorical flip is exact")
    if not categorical:
        if atol is None:
            raise ValueError(
                f"atol is required for the smooth readout of {type(manifold).__name__}: a "
                "flip is then max |R(x0_hat) - R(x0)| > atol"
            )
        _checks.positive_scalar(atol, "atol")
    indicator = _flips_jit(manifold, harness._as_key(key), x0, noise_scale, atol)
    return rate_estimate(indicator)


def _check_samples(x: Any, latent_shape: tuple[int, ...], name: str) -> Array:
    return _checks.latent(x, name, latent_shape, batch=True)


@ft.partial(jax.jit, static_argnames=("sample_axis",))
def _tube_jit(distance, width, sample_axis):
    return jnp.moveaxis(distance, sample_axis, 0) <= width


def tube_mass(
    distance: ArrayLike,
    noise_scale: ArrayLike,
    *,
    c: ArrayLike = 1.0,
    sample_axis: Any = 0,
) -> RateEstimate:
    """Tube mass P(d(x0) ≤ c·s): the data mass within c·s of the decision boundary.

    Args:
        distance: boundary distances of clean samples, e.g.
            `jax.vmap(lambda x: boundary_distance(world, x))(x0)`, shape
            (num, *positions) with samples on `sample_axis`.
        noise_scale: s ≥ 0.
        c: the tube's width in units of s, ≥ 0.
        sample_axis: the axis of `distance` over samples.

    Returns:
        `RateEstimate` of the event d ≤ c·s.

    Raises:
        ValueError: if `distance` is a scalar, not real, contains NaN or negative
            values, `sample_axis` is not an int in range, or `s` or `c` is negative
            or not finite.
    """
    distance = _checks.float_array(distance, "distance")
    if distance.ndim < 1:
        raise ValueError("distance must have a sample axis, got a scalar")
    if _checks.is_concrete(distance):
        d = np.asarray(distance)
        if np.any(np.isnan(d)) or np.any(d < 0):
            raise ValueError("distance must be boundary distances in [0, inf] (no NaN)")
    if isinstance(sample_axis, bool) or not isinstance(sample_axis, (int, np.integer)):
        raise ValueError(f"sample_axis must be an int, got {sample_axis!r}")
    if not -distance.ndim <= sample_axis < distance.ndim:
        raise ValueError(f"sample_axis {sample_axis} is out of range for shape {distance.shape}")
    if distance.shape[sample_axis] < 1:
        raise ValueError(f"distance has no samples on sample_axis {sample_axis}; need >= 1")
    _checks.nonnegative_scalar(noise_scale, "noise_scale")
    _checks.nonnegative_scalar(c, "c")
    width = jnp.asarray(c, distance.dtype) * jnp.asarray(noise_scale, distance.dtype)
    indicator = _tube_jit(distance, width, int(np.int64(sample_axis) % distance.ndim))
    return rate_estimate(indicator)
