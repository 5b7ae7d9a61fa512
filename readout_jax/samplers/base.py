"""The Sampler protocol, its state and per-step info, and the s-space helpers.

A sampler is a small pytree with two pure methods (blackjax / optax style):

- ``init(x, t) -> SamplerState``
- ``step(key, state, model, t_next) -> (SamplerState, StepInfo)``

on ONE example; the harness adds the batch (`vmap`) and the steps (`lax.scan`). Any
object with these two methods plugs in, with no subclassing and no registration. An
optional ``validate(model, ts)`` method, called by the harness outside `jit`, lets a
sampler reject a world or grid it cannot run on with a clear error.

In s-space (y = z/α, s = σ/α) one deterministic step from s to s' is
y' = x̂0 + s'·ε̂ with ε̂ = (y − x̂0)/s (SPEC §4); the helpers below evaluate such steps in
z-space so that a grid may start at α = 0 (s = inf).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import jax.numpy as jnp
import jax.random as jr

from readout_jax import schedules
from readout_jax._types import Array, Int, Key, Latent, PyTree, Time

__all__ = [
    "SamplerState",
    "StepInfo",
    "Sampler",
    "denoise_eps",
    "ddim_update",
    "ancestral_scales",
    "normal_like",
]


class SamplerState(NamedTuple):
    """Carry of a sampler for one example."""

    x: Latent  # current latent z at time t, shape latent_shape
    t: Time  # current time, shape ()
    extra: PyTree = ()  # sampler-specific carry (multistep history); () if none


class StepInfo(NamedTuple):
    """Per-step diagnostics recorded by the harness (leading axes (batch, K) there)."""

    x0_hat: Latent  # the posterior-mean estimate the step used (what the readout would commit to)
    nfe: Int[Array, ""]  # denoiser (network) evaluations used by the step
    num_draws: Int[Array, ""]  # standard-normal numbers the step actually used


@runtime_checkable
class Sampler(Protocol):
    """Anything with `init` and `step` of these signatures is a sampler."""

    def init(self, x: Latent, t: Time) -> SamplerState: ...

    def step(
        self, key: Key, state: SamplerState, model, t_next: Time
    ) -> tuple[SamplerState, StepInfo]: ...


def denoise_eps(model, z: Latent, t: Time) -> tuple[Latent, Latent]:
    """(x̂0, ε̂) at (z, t): one denoiser evaluation, ε̂ = (z − α·x̂0)/σ."""
    x0_hat = model.denoise(z, t)
    return x0_hat, schedules.eps_from_x0(model.schedule, z, x0_hat, t)


def ddim_update(
    schedule,
    x0_hat: Latent,
    eps_hat: Latent,
    t_next: Time,
    eps_scale=None,
    noise=None,
    noise_scale=None,
) -> Latent:
    """z' = α(t')·(x̂0 + c·ε̂ + d·ξ), with c = s(t') by default (DDIM) and d = 0.

    This is y' = x̂0 + s_down·ε̂ + s_up·ξ of SPEC §4 in z-space; `eps_scale` is s_down
    and `noise_scale` is s_up (both may be per-position arrays broadcasting to z).
    """
    a_next = schedule.alpha(t_next)
    if eps_scale is None:
        y = x0_hat + schedule.noise_scale(t_next) * eps_hat
    else:
        y = x0_hat + eps_scale * eps_hat
    if noise is not None:
        y = y + noise_scale * noise
    return a_next * y


def ancestral_scales(s: Array, s_next: Array, eta) -> tuple[Array, Array]:
    """(s_up, s_down) of SPEC §4: s_up = η·sqrt(s'²(s² − s'²)/s²), s_down = sqrt(s'² − s_up²).

    Written as s_up = η·s'·sqrt(1 − (s'/s)²) so that s = inf (a grid starting at α = 0)
    gives s_up = η·s'. Where η = 0 the result is exactly (0, s').
    """
    ratio = jnp.where(jnp.isfinite(s), s_next / s, 0.0)
    s_up = eta * s_next * jnp.sqrt(jnp.clip(1.0 - ratio**2, 0.0, None))
    s_down = jnp.sqrt(jnp.clip(s_next**2 - s_up**2, 0.0, None))
    s_down = jnp.where(s_up > 0, s_down, s_next)
    return s_up, s_down


def normal_like(key: Key, x: Latent) -> Latent:
    """A standard normal array of x's shape and dtype."""
    return jr.normal(key, jnp.shape(x), jnp.result_type(x))
