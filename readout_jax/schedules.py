"""Noise schedules α(t), σ(t), time grids, and the x0 ↔ ε ↔ score ↔ velocity maps.

Convention (SPEC §2): t ∈ [0, 1], t = 0 is data and t = 1 is noise, and the forward
process is z_t = α(t)·x0 + σ(t)·ε with ε ~ N(0, I). The *noise scale* is
s(t) = σ(t)/α(t) (the variance-exploding equivalent); theorems are stated in s.

Every schedule is a frozen, hashable pytree with no array leaves, so it can sit inside a
manifold that enters `jit` without causing retraces.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from readout_jax import _checks
from readout_jax._pytree import pytree_dataclass, static_field
from readout_jax._types import Array, ArrayLike, Float

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
    def alpha(self, t: ArrayLike) -> Float[Array, "..."]:
        """Signal coefficient α(t) ∈ [0, 1] for t ∈ [0, 1] (elementwise).

        Raises:
            ValueError: for a concrete t outside [0, 1], NaN, bool or complex.
        """

    @abc.abstractmethod
    def sigma(self, t: ArrayLike) -> Float[Array, "..."]:
        """Noise coefficient σ(t) ≥ 0 for t ∈ [0, 1] (elementwise)."""

    @abc.abstractmethod
    def t_from_noise_scale(self, s: ArrayLike) -> Float[Array, "..."]:
        """Inverse of s(t) = σ/α for s ∈ [0, inf]; `s = inf` maps to the time where α = 0
        (or t = 1). A negative or NaN concrete s raises `ValueError`."""

    def noise_scale(self, t: ArrayLike) -> Float[Array, "..."]:
        """s(t) = σ(t)/α(t); `inf` where α(t) = 0."""
        a, s = self.alpha(t), self.sigma(t)
        return jnp.where(a > 0, s / jnp.where(a > 0, a, 1.0), jnp.inf)

    def log_snr(self, t: ArrayLike) -> Float[Array, "..."]:
        """λ(t) = log(α²/σ²) = −2·log s(t)."""
        return -2.0 * jnp.log(self.noise_scale(t))

    def d_alpha(self, t: ArrayLike) -> Float[Array, "..."]:
        """dα/dt (forward-mode autodiff, elementwise)."""
        t = _time_array(t)
        return jax.jvp(self.alpha, (t,), (jnp.ones_like(t),))[1]

    def d_sigma(self, t: ArrayLike) -> Float[Array, "..."]:
        """dσ/dt (forward-mode autodiff, elementwise)."""
        t = _time_array(t)
        return jax.jvp(self.sigma, (t,), (jnp.ones_like(t),))[1]


def _time_array(t):
    """Validate times t ∈ [0, 1] (concrete values) and return them as a float array."""
    _checks.times(t, "t")
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(jnp.result_type(float))
    return t


@pytree_dataclass
class VPCosine(AbstractSchedule):
    """Variance-preserving cosine schedule (Nichol & Dhariwal 2021).

    α(t) = cos(((t + c)/(1 + c))·π/2) / cos((c/(1 + c))·π/2), σ = sqrt(1 − α²);
    α(1) = 0, so s(1) = inf.

    Args:
        offset: c ≥ 0 (finite), which keeps σ from vanishing too fast near t = 0.
    """

    offset: Any = static_field(default=0.008)
    name: str = static_field(default="vp_cosine", init=False)

    def __post_init__(self):
        object.__setattr__(self, "offset", _checks.static_real(self.offset, "offset", lower=0.0))

    def _angle(self, t):
        return (t + self.offset) / (1.0 + self.offset) * (math.pi / 2)

    def alpha(self, t):
        t = _time_array(t)
        norm = math.cos(self.offset / (1.0 + self.offset) * math.pi / 2)
        raw = jnp.cos(self._angle(t)) / norm
        # cos(π/2) is not 0 in floating point: return exactly 0 at t = 1 (and clip to
        # [0, 1]) in value, while keeping the derivative of the smooth formula.
        exact = jnp.where(t >= 1.0, 0.0, jnp.clip(raw, 0.0, 1.0))
        return raw + jax.lax.stop_gradient(exact - raw)

    def sigma(self, t):
        return jnp.sqrt(jnp.clip(1.0 - self.alpha(t) ** 2, 0.0, 1.0))

    def t_from_noise_scale(self, s):
        _checks.noise_scales(s, "s")
        s = jnp.asarray(s)
        norm = math.cos(self.offset / (1.0 + self.offset) * math.pi / 2)
        a = 1.0 / jnp.sqrt(1.0 + s**2)  # inf -> 0
        angle = jnp.arccos(jnp.clip(a * norm, 0.0, 1.0))
        return jnp.clip(angle * 2.0 / math.pi * (1.0 + self.offset) - self.offset, 0.0, 1.0)


@pytree_dataclass
class VPLinear(AbstractSchedule):
    """Variance-preserving linear-β schedule (DDPM / score-SDE VP).

    log α(t) = −¼·t²·(β_max − β_min) − ½·t·β_min, σ = sqrt(1 − α²).

    Args:
        beta_min: β(0) ≥ 0 (finite).
        beta_max: β(1) ≥ beta_min, > 0 (finite); beta_max = beta_min is a constant β.
    """

    beta_min: Any = static_field(default=0.1)
    beta_max: Any = static_field(default=20.0)
    name: str = static_field(default="vp_linear", init=False)

    def __post_init__(self):
        beta_min = _checks.static_real(self.beta_min, "beta_min", lower=0.0)
        beta_max = _checks.static_real(
            self.beta_max, "beta_max", lower=beta_min, lower_name="beta_min"
        )
        if beta_max <= 0:
            raise ValueError(f"beta_max must be > 0 (some noise), got {beta_max}")
        object.__setattr__(self, "beta_min", beta_min)
        object.__setattr__(self, "beta_max", beta_max)

    def alpha(self, t):
        t = _time_array(t)
        return jnp.exp(-0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min)

    def sigma(self, t):
        return jnp.sqrt(-jnp.expm1(2.0 * jnp.log(self.alpha(t))))

    def t_from_noise_scale(self, s):
        _checks.noise_scales(s, "s")
        s = jnp.asarray(s)
        # Solve a·t² + b·t = c with c = −log α = ½·log(1 + s²) in the cancellation-free
        # form t = 2c / (b + sqrt(b² + 4ac)): no division by a (a = 0 is a constant β).
        c = 0.5 * jnp.log1p(s**2)
        a = 0.25 * (self.beta_max - self.beta_min)
        b = 0.5 * self.beta_min
        den = b + jnp.sqrt(b**2 + 4.0 * a * c)
        t = jnp.where(c > 0, 2.0 * c / jnp.where(den > 0, den, 1.0), 0.0)
        t = jnp.where(jnp.isinf(c), 1.0, t)  # s = inf: beyond t = 1
        return jnp.clip(t, 0.0, 1.0)


@pytree_dataclass
class VE(AbstractSchedule):
    """Variance-exploding schedule with geometric σ: σ(t) = σ_min·(σ_max/σ_min)^t, α = 1.

    `t_from_noise_scale` is the exact inverse log(s/σ_min)/log(σ_max/σ_min); a noise
    scale outside [σ_min, σ_max] maps outside [0, 1] (the geometric σ extrapolated).

    Args:
        sigma_min: σ(0) > 0 (finite).
        sigma_max: σ(1) > sigma_min (finite).
    """

    sigma_min: Any = static_field(default=0.002)
    sigma_max: Any = static_field(default=80.0)
    name: str = static_field(default="ve", init=False)

    def __post_init__(self):
        sigma_min = _checks.static_real(self.sigma_min, "sigma_min", lower=0.0, lower_open=True)
        sigma_max = _checks.static_real(
            self.sigma_max, "sigma_max", lower=sigma_min, lower_open=True, lower_name="sigma_min"
        )
        object.__setattr__(self, "sigma_min", sigma_min)
        object.__setattr__(self, "sigma_max", sigma_max)

    def alpha(self, t):
        return jnp.ones_like(_time_array(t))

    def sigma(self, t):
        t = _time_array(t)
        return self.sigma_min * jnp.exp(t * math.log(self.sigma_max / self.sigma_min))

    def t_from_noise_scale(self, s):
        _checks.noise_scales(s, "s")
        s = jnp.asarray(s)
        return jnp.log(s / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)


@pytree_dataclass
class RectifiedFlow(AbstractSchedule):
    """Rectified flow: α(t) = 1 − t, σ(t) = t (u = 1 − t is the data-side time of ELF)."""

    name: str = static_field(default="rectified_flow", init=False)

    def alpha(self, t):
        return 1.0 - _time_array(t)

    def sigma(self, t):
        return _time_array(t) * 1.0

    def t_from_noise_scale(self, s):
        _checks.noise_scales(s, "s")
        s = jnp.asarray(s)
        return 1.0 / (1.0 + 1.0 / s)  # s = inf -> 1, s = 0 -> 0


SCHEDULES: dict[str, type[AbstractSchedule]] = {
    "vp_cosine": VPCosine,
    "vp_linear": VPLinear,
    "ve": VE,
    "rectified_flow": RectifiedFlow,
}

GRID_KINDS = ("uniform", "karras", "logsnr")


def get_schedule(name: Any, **kwargs) -> AbstractSchedule:
    """The schedule called `name` (one of `SCHEDULES`), built with `kwargs`.

    Raises:
        ValueError: if `name` is unknown (the message lists the valid names), or a
            keyword is not a field of that schedule or has an invalid value.

    Examples:
        >>> get_schedule("rectified_flow").alpha(0.25)
        Array(0.75, dtype=float32, weak_type=True)
    """
    if isinstance(name, AbstractSchedule):
        if kwargs:
            raise ValueError(f"keyword arguments {sorted(kwargs)} need a schedule name")
        return name
    if not isinstance(name, str) or name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid schedules are {sorted(SCHEDULES)}")
    cls = SCHEDULES[name]
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown keyword arguments {unknown} for schedule {name!r}; valid ones are {valid}"
        )
    return cls(**kwargs)


def time_grid(
    schedule: Any,
    num_steps: Any,
    kind: str = "uniform",
    *,
    t_min: Any = 1e-3,
    t_max: Any = 1.0,
    rho: Any = 7.0,
    max_noise_scale: Any = 1e3,
    min_noise_scale: Any = 1e-4,
) -> Float[Array, " num_steps_plus_1"]:
    """A strictly decreasing grid of `num_steps + 1` times from `t_max` to `t_min`.

    Args:
        schedule: the schedule (or its name) that maps t to the noise scale s(t).
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
        ValueError: for num_steps < 1, an unknown kind, an invalid [t_min, t_max], a
            non-positive or NaN rho / noise-scale bound, or a grid that is not strictly
            decreasing after clipping.
        TypeError: if `schedule` is neither a schedule nor a schedule name.
    """
    schedule = _checks.schedule(schedule)
    num_steps = _checks.positive_int(num_steps, "num_steps")
    if not isinstance(kind, str) or kind not in GRID_KINDS:
        raise ValueError(f"unknown grid kind {kind!r}; valid kinds are {list(GRID_KINDS)}")
    t_min = _checks.static_real(t_min, "t_min", lower=0.0)
    t_max = _checks.static_real(t_max, "t_max", lower=0.0)
    if not (0.0 <= t_min < t_max <= 1.0):
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    rho = _checks.static_real(rho, "rho", lower=0.0, lower_open=True)
    max_noise_scale = _checks.static_real(
        max_noise_scale, "max_noise_scale", lower=0.0, lower_open=True, allow_inf=True
    )
    min_noise_scale = _checks.static_real(
        min_noise_scale, "min_noise_scale", lower=0.0, lower_open=True
    )
    if not min_noise_scale < max_noise_scale:
        raise ValueError(
            "need 0 < min_noise_scale < max_noise_scale, got "
            f"min_noise_scale={min_noise_scale}, max_noise_scale={max_noise_scale}"
        )
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
            raise ValueError(
                f"the noise-scale range [{s_lo}, {s_hi}] of the {kind!r} grid is empty: need "
                "s(t_min) (at least min_noise_scale for 'logsnr') < s(t_max) (at most "
                f"max_noise_scale = {max_noise_scale})"
            )
        if kind == "karras":
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


def _conversion_args(fn: str, schedule: Any, pairs, t):
    """Validate a conversion's schedule, latents (static dtype, shapes) and times."""
    schedule = _checks.schedule(schedule)
    shapes = []
    for name, value in pairs:
        _checks.latent(value, name)
        shapes.append((name, tuple(jnp.shape(value))))
    try:
        np.broadcast_shapes(*(shape for _, shape in shapes))
    except ValueError:
        desc = ", ".join(f"{name} {shape}" for name, shape in shapes)
        raise ValueError(f"{fn}: the latents must have the same shape, got {desc}") from None
    _checks.times(t, "t")
    return schedule


def _require_positive(fn: str, schedule, t, coef: str) -> None:
    """For a concrete t: raise unless α(t) > 0 (coef "alpha") or σ(t) > 0 ("sigma")."""
    if not _checks.is_concrete(t):
        return
    with jax.ensure_compile_time_eval():
        values = np.asarray(getattr(schedule, coef)(t))
    if np.any(values <= 0):
        where = "(0, 1]" if coef == "sigma" else "[0, 1)"
        raise ValueError(
            f"{fn} divides by {coef}(t), which is 0 at t = {np.asarray(t)} on schedule "
            f"{schedule.name!r}: t must have {coef}(t) > 0, i.e. t in {where}"
        )


def add_noise(schedule: Any, x0: ArrayLike, eps: ArrayLike, t: ArrayLike) -> Array:
    """z_t = α(t)·x0 + σ(t)·ε."""
    schedule = _conversion_args("add_noise", schedule, (("x0", x0), ("eps", eps)), t)
    return schedule.alpha(t) * x0 + schedule.sigma(t) * eps


def eps_from_x0(schedule: Any, z: ArrayLike, x0: ArrayLike, t: ArrayLike) -> Array:
    """ε̂ = (z − α·x̂0)/σ (requires σ(t) > 0: t > 0 on VP and rectified flow)."""
    schedule = _conversion_args("eps_from_x0", schedule, (("z", z), ("x0", x0)), t)
    _require_positive("eps_from_x0", schedule, t, "sigma")
    return (z - schedule.alpha(t) * x0) / schedule.sigma(t)


def x0_from_eps(schedule: Any, z: ArrayLike, eps: ArrayLike, t: ArrayLike) -> Array:
    """x̂0 = (z − σ·ε̂)/α (requires α(t) > 0: t < 1 on VP cosine and rectified flow)."""
    schedule = _conversion_args("x0_from_eps", schedule, (("z", z), ("eps", eps)), t)
    _require_positive("x0_from_eps", schedule, t, "alpha")
    return (z - schedule.sigma(t) * eps) / schedule.alpha(t)


def score_from_x0(schedule: Any, z: ArrayLike, x0: ArrayLike, t: ArrayLike) -> Array:
    """Tweedie: ∇ log p_t(z) = −ε̂/σ = (α·x̂0 − z)/σ² (requires σ(t) > 0)."""
    schedule = _conversion_args("score_from_x0", schedule, (("z", z), ("x0", x0)), t)
    _require_positive("score_from_x0", schedule, t, "sigma")
    return -eps_from_x0(schedule, z, x0, t) / schedule.sigma(t)


def x0_from_score(schedule: Any, z: ArrayLike, score: ArrayLike, t: ArrayLike) -> Array:
    """Tweedie inverted: x̂0 = (z + σ²·score)/α (requires α(t) > 0)."""
    schedule = _conversion_args("x0_from_score", schedule, (("z", z), ("score", score)), t)
    _require_positive("x0_from_score", schedule, t, "alpha")
    return (z + schedule.sigma(t) ** 2 * score) / schedule.alpha(t)


def velocity_from_x0(schedule: Any, z: ArrayLike, x0: ArrayLike, t: ArrayLike) -> Array:
    """Probability-flow velocity dz/dt = α'(t)·x̂0 + σ'(t)·ε̂ (requires σ(t) > 0)."""
    schedule = _conversion_args("velocity_from_x0", schedule, (("z", z), ("x0", x0)), t)
    _require_positive("velocity_from_x0", schedule, t, "sigma")
    eps = eps_from_x0(schedule, z, x0, t)
    return schedule.d_alpha(t) * x0 + schedule.d_sigma(t) * eps


def x0_from_velocity(schedule: Any, z: ArrayLike, v: ArrayLike, t: ArrayLike) -> Array:
    """Inverse of `velocity_from_x0`: x̂0 = (σ·v − σ'·z)/(α'·σ − σ'·α) (requires σ(t) > 0)."""
    schedule = _conversion_args("x0_from_velocity", schedule, (("z", z), ("v", v)), t)
    _require_positive("x0_from_velocity", schedule, t, "sigma")
    a, s = schedule.alpha(t), schedule.sigma(t)
    da, ds = schedule.d_alpha(t), schedule.d_sigma(t)
    return (s * v - ds * z) / (da * s - ds * a)
