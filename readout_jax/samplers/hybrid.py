"""Hybrid samplers: deterministic steps with stochastic re-injection (SPEC §4)."""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import jax.random as jr

from readout_jax import _checks, readouts, schedules
from readout_jax._pytree import pytree_dataclass, static_field
from readout_jax._types import ArrayLike
from readout_jax.manifolds.base import has_logits
from readout_jax.samplers import base
from readout_jax.samplers.ode import DDIM

__all__ = ["Churn", "Restart", "RenoiseRF", "MarginGated"]


def _check_stateless_inner(inner: Any, owner: str) -> None:
    if not (callable(getattr(inner, "init", None)) and callable(getattr(inner, "step", None))):
        raise TypeError(
            f"{owner}: inner must be a sampler with init and step, got {type(inner).__name__}"
        )
    probe = inner.init(jnp.zeros((1,)), jnp.asarray(1.0))
    if jax.tree_util.tree_leaves(probe.extra):
        raise ValueError(
            f"{owner}: inner sampler {type(inner).__name__} carries state "
            "between steps (multistep); use a one-step sampler (DDIM, EulerODE, "
            "HeunODE)"
        )


@pytree_dataclass
class Churn:
    """EDM stochastic sampler: re-noise to ŝ = s·(1 + γ), then a deterministic step to s'.

    ŷ = y + sqrt(ŝ² − s²)·ξ (y = z/α), then `inner` steps from t(ŝ) to t'. Churn is applied
    where s_churn_min ≤ s ≤ s_churn_max and s is finite; γ = 0 is exactly `inner`.
    `gamma` and the bounds are data: sweeping them does not recompile.

    References:
        Karras et al., "Elucidating the Design Space of Diffusion-Based Generative
        Models", NeurIPS 2022 (Algorithm 2).
    """

    gamma: ArrayLike = 0.4
    inner: Any = DDIM()
    s_churn_min: ArrayLike = 0.0
    s_churn_max: ArrayLike = float("inf")

    kind: ClassVar[str] = "hybrid"

    def __post_init__(self):
        _checks.nonnegative_scalar(self.gamma, "gamma")
        _checks.nonnegative_scalar(self.s_churn_min, "s_churn_min")
        _checks.scalar_at_least(self.s_churn_max, "s_churn_max", 0.0, allow_inf=True)
        if (
            _checks.is_concrete(self.s_churn_min)
            and _checks.is_concrete(self.s_churn_max)
            and not self.s_churn_min <= self.s_churn_max
        ):
            raise ValueError(
                f"need 0 <= s_churn_min <= s_churn_max, got s_churn_min={self.s_churn_min} "
                f"> s_churn_max={self.s_churn_max}"
            )
        _check_stateless_inner(self.inner, "Churn")

    @property
    def order(self) -> int:
        return getattr(self.inner, "order", 1)

    def init(self, x, t):
        return self.inner.init(x, t)

    def step(self, key, state, model, t_next):
        sched = model.schedule
        key_churn, key_inner = jr.split(key)
        s = sched.noise_scale(state.t)
        active = (
            (self.gamma > 0) & jnp.isfinite(s) & (s >= self.s_churn_min) & (s <= self.s_churn_max)
        )
        s_hat = jnp.where(active, s * (1.0 + self.gamma), s)
        t_hat = jnp.where(active, sched.t_from_noise_scale(s_hat), state.t)
        noise = base.normal_like(key_churn, state.x)
        alpha_safe = jnp.where(active, sched.alpha(state.t), 1.0)  # no NaN off-branch
        y_hat = state.x / alpha_safe + jnp.sqrt(jnp.clip(s_hat**2 - s**2, 0.0)) * noise
        x_hat = jnp.where(active, sched.alpha(t_hat) * y_hat, state.x)
        new_state, info = self.inner.step(
            key_inner, state._replace(x=x_hat, t=t_hat), model, t_next
        )
        draws = info.num_draws + jnp.where(active, state.x.size, 0).astype(jnp.int32)
        return new_state, info._replace(num_draws=draws)


@pytree_dataclass
class Restart:
    """Restart sampling: ODE steps, plus repeated re-noising over an interval and ODE back.

    Each grid step is an `inner` ODE step. On the step that first reaches
    s' ≤ s_restart_min, the sampler `num_restarts` times re-noises from s' up to
    s_restart_max (ŷ = y' + sqrt(s_max² − s'²)·ξ) and solves back down to t' with
    `num_inner_steps` uniform-in-t `inner` steps. The restart count and inner step
    count are structural (static); the interval is data.

    References:
        Xu et al., "Restart Sampling for Improving Generative Processes", NeurIPS 2023.
    """

    s_restart_min: ArrayLike = 0.1
    s_restart_max: ArrayLike = 1.0
    num_restarts: Any = static_field(default=2)
    num_inner_steps: Any = static_field(default=2)
    inner: Any = DDIM()

    kind: ClassVar[str] = "hybrid"

    def __post_init__(self):
        _checks.positive_scalar(self.s_restart_min, "s_restart_min")
        _checks.positive_scalar(self.s_restart_max, "s_restart_max")
        if (
            _checks.is_concrete(self.s_restart_min)
            and _checks.is_concrete(self.s_restart_max)
            and not self.s_restart_max > self.s_restart_min
        ):
            raise ValueError(
                f"need s_restart_max > s_restart_min, got {self.s_restart_max}"
                f" <= {self.s_restart_min}"
            )
        num_restarts = _checks.positive_int(self.num_restarts, "num_restarts")
        num_inner_steps = _checks.positive_int(self.num_inner_steps, "num_inner_steps")
        object.__setattr__(self, "num_restarts", num_restarts)
        object.__setattr__(self, "num_inner_steps", num_inner_steps)
        _check_stateless_inner(self.inner, "Restart")

    @property
    def order(self) -> int:
        return getattr(self.inner, "order", 1)

    def init(self, x, t):
        return self.inner.init(x, t)

    def step(self, key, state, model, t_next):
        sched = model.schedule
        key_main, key_restart = jr.split(key)
        new_state, info = self.inner.step(key_main, state, model, t_next)
        s, s_next = sched.noise_scale(state.t), sched.noise_scale(t_next)
        crossed = (
            (s > self.s_restart_min)
            & (s_next <= self.s_restart_min)
            & (s_next < self.s_restart_max)
        )
        t_hi = sched.t_from_noise_scale(jnp.asarray(self.s_restart_max, state.x.dtype))
        frac = jnp.linspace(0.0, 1.0, self.num_inner_steps + 1, dtype=state.x.dtype)
        inner_ts = t_hi + frac * (t_next - t_hi)

        def one_restart(x, key_r):
            key_noise, key_steps = jr.split(key_r)
            noise = base.normal_like(key_noise, x)
            y = (
                x / sched.alpha(t_next)
                + jnp.sqrt(jnp.clip(self.s_restart_max**2 - s_next**2, 0.0)) * noise
            )
            inner_state = self.inner.init(sched.alpha(t_hi) * y, t_hi)

            def inner_step(carry, xs):
                k, t_to = xs
                carry, inner_info = self.inner.step(k, carry, model, t_to)
                return carry, inner_info.nfe

            inner_state, nfes = jax.lax.scan(
                inner_step, inner_state, (jr.split(key_steps, self.num_inner_steps), inner_ts[1:])
            )
            return inner_state.x, jnp.sum(nfes)

        def restart_all(x):
            x, nfes = jax.lax.scan(one_restart, x, jr.split(key_restart, self.num_restarts))
            return x, jnp.sum(nfes).astype(jnp.int32)

        def skip(x):
            return x, jnp.zeros((), jnp.int32)

        x, extra_nfe = jax.lax.cond(crossed, restart_all, skip, new_state.x)
        draws = info.num_draws + jnp.where(crossed, self.num_restarts * state.x.size, 0).astype(
            jnp.int32
        )
        return new_state._replace(x=x), info._replace(nfe=info.nfe + extra_nfe, num_draws=draws)


@pytree_dataclass
class RenoiseRF:
    """The re-noising step of continuous text flows (ELF), exactly as SPEC §4 states it.

    Rectified-flow convention u = 1 − t (u = 0 noise, u = 1 data), z = u·x + (1 − u)·ε.
    For a step from u to u' with h = u' − u and a = max(1 − γ·h, 0): go back to
    u_b = a·u with z_b = a·z + (1 − a)·ξ, then Euler from u_b to u' with velocity
    (x̂0(z_b) − z_b)/(1 − u_b). A step to u' = 1 (t' = 0) is a plain ODE step; on grids
    that stop at t_min > 0 the harness's terminal posterior-mean output plays that role.
    γ = 0 is Euler on the rectified-flow schedule. Note z_b carries less noise than the
    level u_b implies, so this sampler also sharpens: measure entropy beside perplexity.
    Needs the `rectified_flow` schedule.
    """

    gamma: ArrayLike = 1.5

    kind: ClassVar[str] = "hybrid"
    order: ClassVar[int] = 1

    def __post_init__(self):
        _checks.nonnegative_scalar(self.gamma, "gamma")

    def validate(self, model, ts) -> None:
        del ts
        if not isinstance(model.schedule, schedules.RectifiedFlow):
            raise ValueError(
                "renoise_rf is defined on the rectified_flow schedule, but the "
                f"manifold uses {model.schedule.name!r}"
            )

    def init(self, x, t):
        return base.SamplerState(x, jnp.asarray(t, x.dtype))

    def step(self, key, state, model, t_next):
        u, u_next = 1.0 - state.t, 1.0 - t_next
        h = u_next - u
        a = jnp.where(t_next > 0, jnp.clip(1.0 - self.gamma * h, 0.0, None), 1.0)
        u_b = a * u
        noise = base.normal_like(key, state.x)
        z_b = jnp.where(a < 1, a * state.x + (1.0 - a) * noise, state.x)
        x0_hat = model.denoise(z_b, 1.0 - u_b)
        velocity = (x0_hat - z_b) / (1.0 - u_b)
        x = z_b + (u_next - u_b) * velocity
        draws = jnp.where(a < 1, state.x.size, 0).astype(jnp.int32)
        return base.SamplerState(x, t_next), base.StepInfo(x0_hat, jnp.ones((), jnp.int32), draws)


@pytree_dataclass
class MarginGated:
    """DDIM with ancestral noise only where a categorical choice is still open [ours].

    Per position, the readout margin m of x̂0 (top-1 minus top-2 logit) gates the
    re-injection: positions with m < `threshold` take the `DDIMEta` step with `eta`,
    the others the plain `DDIM` step. Threshold 0 is exactly `DDIM`. `StepInfo.num_draws`
    counts the normal numbers actually used (gated positions × latent width); with fixed
    shapes the array is drawn whole and the rest discarded. Needs a categorical world
    (a `logits` method whose leading axes are the latent's positions).
    """

    eta: ArrayLike = 1.0
    threshold: ArrayLike = 1.0

    kind: ClassVar[str] = "hybrid"
    order: ClassVar[int] = 1

    def __post_init__(self):
        _checks.scalar_in_range(self.eta, "eta", 0.0, 1.0)
        _checks.nonnegative_scalar(self.threshold, "threshold")

    def validate(self, model, ts) -> None:
        del ts
        if not has_logits(model):
            raise ValueError(
                "margin_gated needs a categorical world with a logits method; "
                f"{type(model).__name__} has none (or a smooth readout)"
            )

    def init(self, x, t):
        return base.SamplerState(x, jnp.asarray(t, x.dtype))

    def step(self, key, state, model, t_next):
        sched = model.schedule
        x0_hat, eps_hat = base.denoise_eps(model, state.x, state.t)
        gate = readouts.margin(model.logits(x0_hat)) < self.threshold  # (*positions,)
        s_up, s_down = base.ancestral_scales(
            sched.noise_scale(state.t), sched.noise_scale(t_next), self.eta
        )
        gate_b = gate[..., None]
        s_up_pos = jnp.where(gate_b, s_up, 0.0)
        s_down_pos = jnp.where(gate_b, s_down, sched.noise_scale(t_next))
        noise = base.normal_like(key, state.x)
        x = base.ddim_update(sched, x0_hat, eps_hat, t_next, s_down_pos, noise, s_up_pos)
        width = state.x.shape[-1] if gate.ndim else state.x.size
        draws = (jnp.sum(gate & (s_up > 0)) * width).astype(jnp.int32)
        return base.SamplerState(x, t_next), base.StepInfo(x0_hat, jnp.ones((), jnp.int32), draws)
