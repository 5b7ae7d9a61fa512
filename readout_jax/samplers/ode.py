"""Deterministic samplers of the probability-flow ODE (the deterministic-continuous class)."""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp

from readout_jax import schedules
from readout_jax._pytree import pytree_dataclass
from readout_jax.samplers import base

__all__ = ["EulerODE", "DDIM", "HeunODE", "DPMpp2M"]


def _no_draws():
    return jnp.zeros((), jnp.int32)


def _velocity(model, z, t):
    x0_hat = model.denoise(z, t)
    return schedules.velocity_from_x0(model.schedule, z, x0_hat, t), x0_hat


@pytree_dataclass
class EulerODE:
    """Explicit Euler of the probability-flow ODE in the schedule's time t.

    z' = z + (t' − t)·(α'(t)·x̂0 + σ'(t)·ε̂). First order. Deterministic: `key` is ignored.
    """

    kind: ClassVar[str] = "ode"
    order: ClassVar[int] = 1

    def init(self, x, t):
        return base.SamplerState(x, jnp.asarray(t, x.dtype))

    def step(self, key, state, model, t_next):
        del key
        v, x0_hat = _velocity(model, state.x, state.t)
        x = state.x + (t_next - state.t) * v
        info = base.StepInfo(x0_hat, jnp.ones((), jnp.int32), _no_draws())
        return base.SamplerState(x, t_next), info


@pytree_dataclass
class DDIM:
    """DDIM: y' = x̂0 + s'·ε̂ in s-space (Euler in s; Euler in σ on VE schedules).

    First order; exact for a single Gaussian as τ → 0. Deterministic: `key` is ignored.

    References:
        Song, Meng & Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
    """

    kind: ClassVar[str] = "ode"
    order: ClassVar[int] = 1

    def init(self, x, t):
        return base.SamplerState(x, jnp.asarray(t, x.dtype))

    def step(self, key, state, model, t_next):
        del key
        x0_hat, eps_hat = base.denoise_eps(model, state.x, state.t)
        x = base.ddim_update(model.schedule, x0_hat, eps_hat, t_next)
        info = base.StepInfo(x0_hat, jnp.ones((), jnp.int32), _no_draws())
        return base.SamplerState(x, t_next), info


@pytree_dataclass
class HeunODE:
    """Heun's method (explicit trapezoid) on the probability-flow ODE in t.

    Euler predictor z̃ = z + h·v(z, t), then z' = z + h·(v(z, t) + v(z̃, t'))/2, h = t' − t.
    Second order. A step to σ(t') = 0 (data) falls back to the Euler predictor, since
    the velocity is not defined there. Deterministic: `key` is ignored.

    References:
        Karras et al., "Elucidating the Design Space of Diffusion-Based Generative
        Models", NeurIPS 2022 (Algorithm 1).
    """

    kind: ClassVar[str] = "ode"
    order: ClassVar[int] = 2

    def init(self, x, t):
        return base.SamplerState(x, jnp.asarray(t, x.dtype))

    def step(self, key, state, model, t_next):
        del key
        h = t_next - state.t
        v1, x0_hat = _velocity(model, state.x, state.t)
        x_pred = state.x + h * v1
        final = model.schedule.sigma(t_next) <= 0
        # Evaluate the corrector at a safe point when it is not used (no NaN in any branch).
        t_eval = jnp.where(final, state.t, t_next)
        v2, _ = _velocity(model, jnp.where(final, state.x, x_pred), t_eval)
        x = jnp.where(final, x_pred, state.x + 0.5 * h * (v1 + v2))
        nfe = jnp.where(final, 1, 2).astype(jnp.int32)
        return base.SamplerState(x, t_next), base.StepInfo(x0_hat, nfe, _no_draws())


@pytree_dataclass
class DPMpp2M:
    """DPM-Solver++(2M): the two-step multistep exponential integrator in log-SNR.

    With λ = −log s, h = λ' − λ and r = h_prev/h:
    z' = (σ'/σ)·z + α'·(1 − e^(−h))·D, where D = x̂0 on the first step and on a step to
    s' = 0, else D = (1 + 1/(2r))·x̂0 − (1/(2r))·x̂0_prev. Second order.
    Deterministic: `key` is ignored. `extra` holds (x̂0_prev, h_prev).

    References:
        Lu et al., "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
        Probabilistic Models", 2022.
    """

    kind: ClassVar[str] = "ode"
    order: ClassVar[int] = 2

    def init(self, x, t):
        extra = (jnp.zeros_like(x), jnp.full((), jnp.inf, x.dtype))
        return base.SamplerState(x, jnp.asarray(t, x.dtype), extra)

    def step(self, key, state, model, t_next):
        del key
        sched = model.schedule
        x0_prev, h_prev = state.extra
        x0_hat = model.denoise(state.x, state.t)
        s, s_next = sched.noise_scale(state.t), sched.noise_scale(t_next)
        final = s_next <= 0
        safe_next = jnp.where(final, 1.0, s_next)
        h = jnp.log(s) - jnp.log(safe_next)  # inf when s = inf
        # 1/(2r) = h/(2 h_prev); 0 on the first step (h_prev = inf) and on the last step.
        half_inv_r = jnp.where(jnp.isfinite(h_prev) & ~final, h / (2.0 * h_prev), 0.0)
        half_inv_r = jnp.where(jnp.isfinite(half_inv_r), half_inv_r, 0.0)
        d = (1.0 + half_inv_r) * x0_hat - half_inv_r * x0_prev
        ratio = jnp.where(jnp.isfinite(s), s_next / s, 0.0)  # e^(-h) = s'/s
        sig, sig_next = sched.sigma(state.t), sched.sigma(t_next)
        x = (sig_next / sig) * state.x + sched.alpha(t_next) * (1.0 - ratio) * d
        new_state = base.SamplerState(x, t_next, (x0_hat, h))
        return new_state, base.StepInfo(x0_hat, jnp.ones((), jnp.int32), _no_draws())
