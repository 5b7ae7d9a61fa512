"""Stochastic samplers: ancestral DDIM(η) and Euler–Maruyama on the reverse SDE."""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from readout_jax import _checks
from readout_jax._pytree import pytree_dataclass
from readout_jax._types import ArrayLike
from readout_jax.samplers import base

__all__ = ["DDIMEta", "EulerMaruyama"]


@pytree_dataclass
class DDIMEta:
    """DDIM with ancestral noise η ∈ [0, 1] (η = 1 is ancestral / DDPM), SPEC §4.

    s_up = η·sqrt(s'²(s² − s'²)/s²), s_down = sqrt(s'² − s_up²),
    y' = x̂0 + s_down·ε̂ + s_up·ξ. η = 0 is exactly `DDIM`. `eta` is data: sweeping it
    does not recompile.

    References:
        Song, Meng & Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
    """

    eta: ArrayLike = 1.0

    kind: ClassVar[str] = "sde"
    order: ClassVar[int] = 1

    def __post_init__(self):
        _checks.scalar_in_range(self.eta, "eta", 0.0, 1.0)

    def init(self, x, t):
        return base.SamplerState(x, jnp.asarray(t, x.dtype))

    def step(self, key, state, model, t_next):
        sched = model.schedule
        x0_hat, eps_hat = base.denoise_eps(model, state.x, state.t)
        s_up, s_down = base.ancestral_scales(
            sched.noise_scale(state.t), sched.noise_scale(t_next), self.eta
        )
        noise = base.normal_like(key, state.x)
        x = base.ddim_update(sched, x0_hat, eps_hat, t_next, s_down, noise, s_up)
        draws = jnp.where(s_up > 0, state.x.size, 0).astype(jnp.int32)
        return base.SamplerState(x, t_next), base.StepInfo(x0_hat, jnp.ones((), jnp.int32), draws)


@pytree_dataclass
class EulerMaruyama:
    """Euler–Maruyama on the reverse-time SDE of the schedule, in t.

    Forward SDE dz = f(t)·z dt + g(t) dW with f = α'/α and g² = dσ²/dt − 2·f·σ²; the
    reverse step from t to t' (h = t' − t < 0) is
    z' = z + h·(f·z − g²·score) + g·sqrt(−h)·ξ, score = −ε̂/σ (Tweedie).
    Needs α(t) > 0 at every step start (`validate` says so otherwise).

    References:
        Song et al., "Score-Based Generative Modeling through Stochastic Differential
        Equations", ICLR 2021.
    """

    kind: ClassVar[str] = "sde"
    order: ClassVar[int] = 1  # weak order on smooth problems (strong order 1/2)

    def validate(self, model, ts) -> None:
        alphas = np.asarray(model.schedule.alpha(np.asarray(ts[:-1])))
        if np.any(alphas <= 0):
            raise ValueError(
                "euler_maruyama needs alpha(t) > 0 at every step start, but the grid "
                f"starts at t={float(ts[0])} where alpha = 0 on schedule "
                f"{model.schedule.name!r}; use time_grid(..., t_max < 1), e.g. 0.995"
            )

    def init(self, x, t):
        return base.SamplerState(x, jnp.asarray(t, x.dtype))

    def step(self, key, state, model, t_next):
        sched, t = model.schedule, state.t
        x0_hat, eps_hat = base.denoise_eps(model, state.x, t)
        a, sig = sched.alpha(t), sched.sigma(t)
        f = sched.d_alpha(t) / a
        g2 = 2.0 * sig * sched.d_sigma(t) - 2.0 * f * sig**2
        score = -eps_hat / sig
        h = t_next - t
        noise = base.normal_like(key, state.x)
        x = state.x + h * (f * state.x - g2 * score) + jnp.sqrt(jnp.clip(-h * g2, 0.0)) * noise
        draws = jnp.full((), state.x.size, jnp.int32)
        return base.SamplerState(x, t_next), base.StepInfo(x0_hat, jnp.ones((), jnp.int32), draws)
