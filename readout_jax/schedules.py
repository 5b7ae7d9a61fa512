"""Noise schedules α(t), σ(t), time grids, and the x0 ↔ ε ↔ score ↔ velocity maps.

Convention (SPEC §2): t ∈ [0, 1], t = 0 is data and t = 1 is noise, and the forward
process is z_t = α(t)·x0 + σ(t)·ε with ε ~ N(0, I). The *noise scale* is
s(t) = σ(t)/α(t) (the variance-exploding equivalent); theorems are stated in s.

Every schedule is a frozen, hashable pytree with no array leaves, so it can sit inside a
manifold that enters `jit` without causing retraces.
"""

from __future__ import annotations

import abc
import math

import jax
import jax.numpy as jnp
import numpy as np

from readout_jax._pytree import pytree_dataclass, static_field
from readout_jax._types import Array, ArrayLike, Float, Latent, Times

__all__ = [
    "AbstractSchedule",
    "VPCosine",
    "VPLinear",
    "VE",
    "RectifiedFlow",
    "SCHEDULES",
    "GRID_KINDS",
    "get_schedule",
    "time_grid",
    "add_noise",
    "eps_from_x0",
    "x0_from_eps",
    "score_from_x0",
    "x0_from_score",
    "velocity_from_x0",
    "x0_from_velocity",
]


class AbstractSchedule(abc.ABC):
    """α(t), σ(t) on t ∈ [0, 1] and everything derived from them.

    Subclasses implement `alpha`, `sigma` and the inverse `t_from_noise_scale`; the rest
    (noise scale, log-SNR, time derivatives) is derived here once.
    """

    name: str

    @abc.abstractmethod
    def alpha(self, t: Times) -> Float[Array, "..."]:
        """Signal coefficient α(t) ∈ [0, 1]."""

    @abc.abstractmethod
    def sigma(self, t: Times) -> Float[Array, "..."]:
        """Noise coefficient σ(t) ≥ 0."""

    @abc.abstractmethod
    def t_from_noise_scale(self, s: ArrayLike) -> Float[Array, "..."]:
        """Inverse of s(t) = σ/α; `s = inf` maps to the time where α = 0 (or t = 1)."""

    def noise_scale(self, t: Times) -> Float[Array, "..."]:
        """s(t) = σ(t)/α(t); `inf` where α(t) = 0."""
        a, s = self.alpha(t), self.sigma(t)
        return jnp.where(a > 0, s / jnp.where(a > 0, a, 1.0), jnp.inf)

    def log_snr(self, t: Times) -> Float[Array, "..."]:
        """λ(t) = log(α²/σ²) = −2·log s(t)."""
        return -2.0 * jnp.log(self.noise_scale(t))

    def d_alpha(self, t: Times) -> Float[Array, "..."]:
        """dα/dt (forward-mode autodiff, elementwise)."""
        t = jnp.asarray(t)
        return jax.jvp(self.alpha, (t,), (jnp.ones_like(t),))[1]

    def d_sigma(self, t: Times) -> Float[Array, "..."]:
        """dσ/dt (forward-mode autodiff, elementwise)."""
        t = jnp.asarray(t)
        return jax.jvp(self.sigma, (t,), (jnp.ones_like(t),))[1]


@pytree_dataclass
class VPCosine(AbstractSchedule):
    """Variance-preserving cosine schedule (Nichol & Dhariwal 2021).

    α(t) = cos(((t + c)/(1 + c))·π/2) / cos((c/(1 + c))·π/2), σ = sqrt(1 − α²);
    α(1) = 0, so s(1) = inf.
    """

    offset: float = static_field(default=0.008)
    name: str = static_field(default="vp_cosine", init=False)

    def _angle(self, t):
        return (jnp.asarray(t) + self.offset) / (1.0 + self.offset) * (math.pi / 2)

    def alpha(self, t):
        norm = math.cos(self.offset / (1.0 + self.offset) * math.pi / 2)
        raw = jnp.cos(self._angle(t)) / norm
        # cos(π/2) is not 0 in floating point: return exactly 0 at t = 1 (and clip to
        # [0, 1]) in value, while keeping the derivative of the smooth formula.
        exact = jnp.where(jnp.asarray(t) >= 1.0, 0.0, jnp.clip(raw, 0.0, 1.0))
        return raw + jax.lax.stop_gradient(exact - raw)

    def sigma(self, t):
        return jnp.sqrt(jnp.clip(1.0 - self.alpha(t) ** 2, 0.0, 1.0))

    def t_from_noise_scale(self, s):
        s = jnp.asarray(s)
        norm = math.cos(self.offset / (1.0 + self.offset) * math.pi / 2)
        a = 1.0 / jnp.sqrt(1.0 + s**2)  # inf -> 0
        angle = jnp.arccos(jnp.clip(a * norm, 0.0, 1.0))
        return jnp.clip(angle * 2.0 / math.pi * (1.0 + self.offset) - self.offset, 0.0, 1.0)


@pytree_dataclass
class VPLinear(AbstractSchedule):
    """Variance-preserving linear-β schedule (DDPM / score-SDE VP).

    log α(t) = −¼·t²·(β_max − β_min) − ½·t·β_min, σ = sqrt(1 − α²).
    """

    beta_min: float = static_field(default=0.1)
    beta_max: float = static_field(default=20.0)
    name: str = static_field(default="vp_linear", init=False)

    def alpha(self, t):
        t = jnp.asarray(t)
        return jnp.exp(-0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min)

    def sigma(self, t):
        return jnp.sqrt(-jnp.expm1(2.0 * jnp.log(self.alpha(t))))

    def t_from_noise_scale(self, s):
        s = jnp.asarray(s)
        minus_log_alpha = 0.5 * jnp.log1p(s**2)
        a = 0.25 * (self.beta_max - self.beta_min)
        b = 0.5 * self.beta_min
        t = (-b + jnp.sqrt(b**2 + 4.0 * a * minus_log_alpha)) / (2.0 * a)
        return jnp.clip(t, 0.0, 1.0)


@pytree_dataclass
class VE(AbstractSchedule):
    """Variance-exploding schedule with geometric σ: σ(t) = σ_min·(σ_max/σ_min)^t, α = 1."""

    sigma_min: float = static_field(default=0.002)
    sigma_max: float = static_field(default=80.0)
    name: str = static_field(default="ve", init=False)

    def alpha(self, t):
        return jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(float)))

    def sigma(self, t):
        t = jnp.asarray(t)
        return self.sigma_min * jnp.exp(t * math.log(self.sigma_max / self.sigma_min))

    def t_from_noise_scale(self, s):
        s = jnp.asarray(s)
        return jnp.log(s / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)


@pytree_dataclass
class RectifiedFlow(AbstractSchedule):
    """Rectified flow: α(t) = 1 − t, σ(t) = t (u = 1 − t is the data-side time of ELF)."""

    name: str = static_field(default="rectified_flow", init=False)

    def alpha(self, t):
        return 1.0 - jnp.asarray(t)

    def sigma(self, t):
        return jnp.asarray(t) * 1.0

    def t_from_noise_scale(self, s):
        s = jnp.asarray(s)
        return 1.0 / (1.0 + 1.0 / s)  # s = inf -> 1, s = 0 -> 0


SCHEDULES: dict[str, type[AbstractSchedule]] = {
    "vp_cosine": VPCosine,
    "vp_linear": VPLinear,
    "ve": VE,
    "rectified_flow": RectifiedFlow,
}

GRID_KINDS = ("uniform", "karras", "logsnr")


def get_schedule(name: str | AbstractSchedule, **kwargs) -> AbstractSchedule:
    """The schedule called `name` (one of `SCHEDULES`), built with `kwargs`.

    Raises:
        ValueError: if `name` is unknown (the message lists the valid names).

    Examples:
        >>> get_schedule("rectified_flow").alpha(0.25)
        Array(0.75, dtype=float32, weak_type=True)
    """
    if isinstance(name, AbstractSchedule):
        return name
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid schedules are {sorted(SCHEDULES)}")
    return SCHEDULES[name](**kwargs)


def time_grid(
    schedule: AbstractSchedule,
    num_steps: int,
    kind: str = "uniform",
    *,
    t_min: float = 1e-3,
    t_max: float = 1.0,
    rho: float = 7.0,
    max_noise_scale: float = 1e3,
    min_noise_scale: float = 1e-4,
) -> Float[Array, " num_steps_plus_1"]:
    """A strictly decreasing grid of `num_steps + 1` times from `t_max` to `t_min`.

    Args:
        schedule: the schedule that maps t to the noise scale s(t).
        num_steps: K in SPEC, the number of sampler steps (≥ 1).
        kind: "uniform" in t; "karras" (EDM, ρ = `rho`) uniform in s^(1/ρ);
            "logsnr" uniform in log-SNR λ = −2·log s.
        t_min, t_max: end points, 0 ≤ t_min < t_max ≤ 1. They are always the first and
            last grid points exactly.
        rho: the Karras exponent ρ.
        max_noise_scale, min_noise_scale: for "karras" and "logsnr", s(t) is clipped to
            this range when placing the *interior* points (s(1) = inf on VP / RF, s(0) = 0).

    Returns:
        Array of shape (num_steps + 1,), strictly decreasing, in the default float dtype.

    Raises:
        ValueError: for num_steps < 1, an unknown kind, an invalid [t_min, t_max], or a
            grid that is not strictly decreasing after clipping.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if kind not in GRID_KINDS:
        raise ValueError(f"unknown grid kind {kind!r}; valid kinds are {list(GRID_KINDS)}")
    if not (0.0 <= t_min < t_max <= 1.0) or not (np.isfinite(t_min) and np.isfinite(t_max)):
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    frac = np.linspace(0.0, 1.0, num_steps + 1)
    if kind == "uniform":
        ts = t_max + frac * (t_min - t_max)
    else:
        with jax.ensure_compile_time_eval():
            s_hi = float(schedule.noise_scale(t_max))
            s_lo = float(schedule.noise_scale(t_min))
        s_hi = min(s_hi, max_noise_scale)
        s_lo = max(s_lo, min_noise_scale) if kind == "logsnr" else s_lo
        if not s_hi > s_lo:
            raise ValueError(f"noise-scale range [{s_lo}, {s_hi}] is empty for grid kind {kind!r}")
        if kind == "karras":
            if rho <= 0:
                raise ValueError(f"rho must be > 0, got {rho}")
            s = (s_hi ** (1 / rho) + frac * (s_lo ** (1 / rho) - s_hi ** (1 / rho))) ** rho
        else:
            log_s = np.log(s_hi) + frac * (np.log(s_lo) - np.log(s_hi))
            s = np.exp(log_s)
        with jax.ensure_compile_time_eval():
            ts = np.asarray(schedule.t_from_noise_scale(s), dtype=np.float64)
        ts = np.clip(ts, t_min, t_max)
        ts[0], ts[-1] = t_max, t_min
    if not np.all(np.diff(ts) < 0):
        raise ValueError(
            f"the {kind!r} grid with num_steps={num_steps} on [{t_min}, {t_max}] is not "
            "strictly decreasing (too many steps for the clipped noise-scale range?)"
        )
    return jnp.asarray(ts, dtype=jnp.result_type(float))


# --- the conversions, written once ----------------------------------------------------


def add_noise(schedule: AbstractSchedule, x0: Latent, eps: Latent, t: Times) -> Latent:
    """z_t = α(t)·x0 + σ(t)·ε."""
    return schedule.alpha(t) * x0 + schedule.sigma(t) * eps


def eps_from_x0(schedule: AbstractSchedule, z: Latent, x0: Latent, t: Times) -> Latent:
    """ε̂ = (z − α·x̂0)/σ (requires σ(t) > 0)."""
    return (z - schedule.alpha(t) * x0) / schedule.sigma(t)


def x0_from_eps(schedule: AbstractSchedule, z: Latent, eps: Latent, t: Times) -> Latent:
    """x̂0 = (z − σ·ε̂)/α (requires α(t) > 0)."""
    return (z - schedule.sigma(t) * eps) / schedule.alpha(t)


def score_from_x0(schedule: AbstractSchedule, z: Latent, x0: Latent, t: Times) -> Latent:
    """Tweedie: ∇ log p_t(z) = −ε̂/σ = (α·x̂0 − z)/σ²."""
    return -eps_from_x0(schedule, z, x0, t) / schedule.sigma(t)


def x0_from_score(schedule: AbstractSchedule, z: Latent, score: Latent, t: Times) -> Latent:
    """Tweedie inverted: x̂0 = (z + σ²·score)/α."""
    return (z + schedule.sigma(t) ** 2 * score) / schedule.alpha(t)


def velocity_from_x0(schedule: AbstractSchedule, z: Latent, x0: Latent, t: Times) -> Latent:
    """Probability-flow velocity dz/dt = α'(t)·x̂0 + σ'(t)·ε̂."""
    eps = eps_from_x0(schedule, z, x0, t)
    return schedule.d_alpha(t) * x0 + schedule.d_sigma(t) * eps


def x0_from_velocity(schedule: AbstractSchedule, z: Latent, v: Latent, t: Times) -> Latent:
    """Inverse of `velocity_from_x0`: x̂0 = (σ·v − σ'·z)/(α'·σ − σ'·α)."""
    a, s = schedule.alpha(t), schedule.sigma(t)
    da, ds = schedule.d_alpha(t), schedule.d_sigma(t)
    return (s * v - ds * z) / (da * s - ds * a)
