"""Analytic Gaussian-mixture worlds (flat and hierarchical) with closed-form denoisers."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from readout_jax import _checks, schedules
from readout_jax._pytree import pytree_dataclass, static_field
from readout_jax._types import Array, ArrayLike, Float, Int, Key, Latent, Time

__all__ = ["GaussianMixture", "HierarchicalMixture", "READOUT_KINDS"]

READOUT_KINDS = ("categorical", "smooth")


@pytree_dataclass
class GaussianMixture:
    """x0 ~ Σ_m π_m·N(μ_m, τ²·I) in R^n, with its exact posterior-mean denoiser (SPEC §3.1).

    For any (α, σ), with v = α²τ² + σ², the responsibilities are
    r_m(z) ∝ π_m·N(z; α·μ_m, v·I) and
    x̂0(z) = Σ_m r_m·(μ_m + (α·τ²/v)·(z − α·μ_m)) = μ̄ + (α·τ²/v)·(z − α·μ̄), μ̄ = Σ_m r_m μ_m.

    The categorical readout is the Bayes classifier with sharpness β:
    ℓ_m(x) = β·(log π_m − |x − μ_m|²/(2τ²)), read by argmax (β → ∞ is a hard argmax;
    the argmax itself does not depend on β, the logits' scale does). The smooth readout
    is the identity (an "image" whose pixels are the latent coordinates).

    Args:
        means: (M, n) component means μ_m.
        weights: (M,) mixture weights π_m, non-negative, summing to 1.
        std: component standard deviation τ > 0.
        schedule: noise schedule (name or object); default variance-preserving cosine.
        sharpness: β > 0 of the categorical logits.
        readout_kind: "categorical" (argmax of the logits) or "smooth" (identity).
        resp_scale: κ ≥ 1 (SPEC §3 regularity-limited denoiser): responsibilities are
            computed at the inflated variance κ·v, which smooths the denoiser; κ = 1 is
            exact.

    Raises:
        ValueError: on shapes that disagree, weights that are negative or do not sum to 1,
            a non-positive std or sharpness, an unknown readout kind, or κ < 1.
    """

    # Loose annotations: __post_init__ validates and raises errors naming the argument.
    means: ArrayLike  # (M, n)
    weights: ArrayLike  # (M,)
    std: ArrayLike  # ()
    schedule: Any = static_field(default=schedules.VPCosine())
    sharpness: ArrayLike = 1.0
    readout_kind: Any = static_field(default="categorical")
    resp_scale: ArrayLike = 1.0

    def __post_init__(self):
        means = _checks.float_array(self.means, "means")
        dtype = means.dtype
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "weights", _checks.float_array(self.weights, "weights", dtype))
        object.__setattr__(self, "std", _checks.float_array(self.std, "std", dtype))
        object.__setattr__(
            self, "sharpness", _checks.float_array(self.sharpness, "sharpness", dtype)
        )
        object.__setattr__(
            self, "resp_scale", _checks.float_array(self.resp_scale, "resp_scale", dtype)
        )
        object.__setattr__(self, "schedule", _checks.schedule(self.schedule))
        if self.means.ndim != 2 or min(self.means.shape) < 1:
            raise ValueError(f"means must have shape (M, n) with M, n >= 1, got {self.means.shape}")
        if self.weights.shape != self.means.shape[:1]:
            raise ValueError(
                f"weights must have shape (M,) = {self.means.shape[:1]}, got {self.weights.shape}"
            )
        if not isinstance(self.readout_kind, str) or self.readout_kind not in READOUT_KINDS:
            raise ValueError(
                f"unknown readout_kind {self.readout_kind!r}; valid kinds are {list(READOUT_KINDS)}"
            )
        _checks.finite(self.means, "means")
        _checks.probability_vector(self.weights, "weights")
        _checks.positive_scalar(self.std, "std")
        _checks.positive_scalar(self.sharpness, "sharpness")
        _checks.scalar_at_least(self.resp_scale, "resp_scale", 1.0)

    # ---- structure ---------------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.means.shape[1],)

    @property
    def num_modes(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    # ---- data ----------------------------------------------------------------------
    def sample_data(self, key: Any, num: Any) -> tuple[Float[Array, "num n"], Int[Array, " num"]]:
        """`num` clean latents x0 and their component labels."""
        key = _checks.prng_key(key)
        num = _checks.positive_int(num, "num")
        key_label, key_noise = jr.split(key)
        labels = jr.categorical(key_label, jnp.log(self.weights), shape=(num,))
        noise = jr.normal(key_noise, (num, self.dim), self.means.dtype)
        return self.means[labels] + self.std * noise, labels

    # ---- exact posterior -------------------------------------------------------------
    def _variance(self, t: Time):
        a, s = self.schedule.alpha(t), self.schedule.sigma(t)
        return a, a**2 * self.std**2 + s**2

    def _check_zt(self, z, t):
        _checks.scalar_time(t)
        return _checks.latent(z, "z", self.latent_shape)

    def responsibilities(self, z: ArrayLike, t: ArrayLike) -> Float[Array, " M"]:
        """Posterior component probabilities r_m(z) at time t (at variance κ·v)."""
        z = self._check_zt(z, t)
        a, v = self._variance(t)
        # |z - a μ|² = |z|² - 2a z·μ + a²|μ|²; |z|² is common to all m and cancels.
        # means @ z keeps results bit-identical across batch sizes; z @ means.T is 1.4-1.8x
        # faster under vmap (benchmarks/bench_harness.py) but its last bits depend on B.
        quad = a**2 * jnp.sum(self.means**2, axis=-1) - 2.0 * a * (self.means @ z)
        logits = jnp.log(self.weights) - quad / (2.0 * self.resp_scale * v)
        return jax.nn.softmax(logits)

    def denoise(self, z: ArrayLike, t: ArrayLike) -> Latent:
        """Exact E[x0 | z_t = z] (at κ = 1) for one latent z of shape (n,), t ∈ [0, 1].

        Raises:
            ValueError: for a z of another shape or a non-floating dtype, a z with NaN /
                inf, or a t that is not a scalar in [0, 1].
        """
        z = self._check_zt(z, t)
        a, v = self._variance(t)
        mean = self.responsibilities(z, t) @ self.means
        return mean + (a * self.std**2 / v) * (z - a * mean)

    def marginal_log_prob(self, z: ArrayLike, t: ArrayLike) -> Float[Array, ""]:
        """log p_t(z) of the noised mixture Σ_m π_m N(z; α μ_m, v I)."""
        z = self._check_zt(z, t)
        a, v = self._variance(t)
        sq = jnp.sum((z[None, :] - a * self.means) ** 2, axis=-1)
        n = self.dim
        log_comp = -sq / (2.0 * v) - 0.5 * n * jnp.log(2.0 * math.pi * v)
        return jax.nn.logsumexp(jnp.log(self.weights) + log_comp)

    # ---- readout -------------------------------------------------------------------
    def logits(self, x: ArrayLike) -> Float[Array, " M"]:
        """Bayes logits ℓ_m(x) = β·(log π_m − |x − μ_m|²/(2τ²))."""
        x = _checks.latent(x, "x", self.latent_shape)
        sq = jnp.sum((x[None, :] - self.means) ** 2, axis=-1)
        return self.sharpness * (jnp.log(self.weights) - sq / (2.0 * self.std**2))

    def decode(self, x: ArrayLike) -> Float[Array, "..."]:
        """Logits (categorical readout) or the identity image (smooth readout)."""
        x = _checks.latent(x, "x", self.latent_shape)
        return self.logits(x) if self.readout_kind == "categorical" else x

    def readout(self, x: ArrayLike) -> Array:
        """Argmax label (categorical) or the smooth output itself."""
        x = _checks.latent(x, "x", self.latent_shape)
        if self.readout_kind == "categorical":
            return jnp.argmax(self.logits(x), axis=-1)
        return x

    # ---- constructors ----------------------------------------------------------------
    @classmethod
    def random(
        cls,
        key: Key,
        num_modes: int,
        dim: int,
        *,
        scale: float = 1.0,
        std: float = 0.5,
        schedule: str | schedules.AbstractSchedule = "vp_cosine",
        **kwargs,
    ) -> GaussianMixture:
        """M equal-weight modes with means ~ N(0, scale²·I_n)."""
        key = _checks.prng_key(key)
        num_modes = _checks.positive_int(num_modes, "num_modes")
        dim = _checks.positive_int(dim, "dim")
        _checks.nonnegative_scalar(scale, "scale")
        means = scale * jr.normal(key, (num_modes, dim))
        weights = jnp.full((num_modes,), 1.0 / num_modes)
        return cls(means, weights, std, schedule, **kwargs)

    @classmethod
    def two_modes(
        cls,
        distance: float,
        dim: int = 1,
        *,
        std: float = 1.0,
        schedule: str | schedules.AbstractSchedule = "vp_cosine",
        **kwargs,
    ) -> GaussianMixture:
        """Two equal-weight modes at ±distance/2 along the first axis (distance ≥ 0)."""
        dim = _checks.positive_int(dim, "dim")
        _checks.nonnegative_scalar(distance, "distance")
        means = np.zeros((2, dim))
        means[:, 0] = [-distance / 2, distance / 2]
        return cls(
            jnp.asarray(means, jnp.result_type(float)), jnp.full((2,), 0.5), std, schedule, **kwargs
        )


@pytree_dataclass
class HierarchicalMixture:
    """A depth-B, branching-b tree of choices: M = b^B equal-weight Gaussian leaves (SPEC §3.2).

    Leaf (c_1, …, c_B) has mean Σ_l r_l·u_{l, c_l}: one direction u_{l,c} per level and
    branch, scaled by a per-level radius r_l (coarse levels far apart, fine levels
    close). The denoiser and readout are those of the flat mixture over the leaves, which
    `mixture` builds; leaf labels are base-b numbers with the coarsest level first.

    Args:
        directions: (B, b, n) level directions u_{l,c}.
        radii: (B,) per-level radii r_l.
        std: leaf standard deviation τ > 0.
        schedule, sharpness, readout_kind, resp_scale: as for `GaussianMixture`.
    """

    directions: ArrayLike  # (B, b, n)
    radii: ArrayLike  # (B,)
    std: ArrayLike  # ()
    schedule: Any = static_field(default=schedules.VPCosine())
    sharpness: ArrayLike = 1.0
    readout_kind: Any = static_field(default="categorical")
    resp_scale: ArrayLike = 1.0

    def __post_init__(self):
        directions = _checks.float_array(self.directions, "directions")
        object.__setattr__(self, "directions", directions)
        object.__setattr__(
            self, "radii", _checks.float_array(self.radii, "radii", directions.dtype)
        )
        object.__setattr__(self, "schedule", _checks.schedule(self.schedule))
        if directions.ndim != 3 or min(directions.shape) < 1:
            raise ValueError(
                f"directions must have shape (depth, branching, n), got {directions.shape}"
            )
        if self.radii.shape != directions.shape[:1]:
            raise ValueError(
                f"radii must have shape (depth,) = {directions.shape[:1]}, got {self.radii.shape}"
            )
        _checks.finite(directions, "directions")
        _checks.finite(self.radii, "radii")
        self.mixture  # noqa: B018  (validates std, sharpness, readout_kind, resp_scale)

    @property
    def depth(self) -> int:
        return self.directions.shape[0]

    @property
    def branching(self) -> int:
        return self.directions.shape[1]

    @property
    def num_modes(self) -> int:
        return self.branching**self.depth

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.directions.shape[2],)

    def level_labels(self, leaf: ArrayLike) -> Int[Array, "... B"]:
        """The choice c_l at each level (coarsest first) of leaf labels `leaf` ∈ [0, b^B)."""
        leaf = _checks.token_ids(leaf, "leaf", self.num_modes)
        powers = self.branching ** jnp.arange(self.depth - 1, -1, -1)
        powers = powers.reshape((1,) * leaf.ndim + (self.depth,))
        return (leaf[..., None] // powers) % self.branching

    @property
    def leaf_means(self) -> Float[Array, "M n"]:
        """(b^B, n) leaf means, leaf index = Σ_l c_l·b^(B−1−l)."""
        codes = self.level_labels(jnp.arange(self.num_modes))  # (M, B)
        picked = self.directions[jnp.arange(self.depth)[None, :], codes]  # (M, B, n)
        return jnp.einsum("l,mln->mn", self.radii, picked)

    @property
    def mixture(self) -> GaussianMixture:
        """The equivalent flat `GaussianMixture` over the b^B leaves."""
        m = self.num_modes
        return GaussianMixture(
            self.leaf_means,
            jnp.full((m,), 1.0 / m, self.radii.dtype),
            self.std,
            self.schedule,
            self.sharpness,
            self.readout_kind,
            self.resp_scale,
        )

    def sample_data(self, key: Any, num: Any):
        """`num` clean latents and their leaf labels."""
        return self.mixture.sample_data(key, num)

    def denoise(self, z: ArrayLike, t: ArrayLike) -> Latent:
        """Exact E[x0 | z_t = z] of the flat mixture over the leaves."""
        return self.mixture.denoise(z, t)

    def responsibilities(self, z: ArrayLike, t: ArrayLike):
        """Posterior leaf probabilities at time t."""
        return self.mixture.responsibilities(z, t)

    def logits(self, x: ArrayLike):
        """Bayes logits over the leaves."""
        return self.mixture.logits(x)

    def decode(self, x: ArrayLike):
        """Logits (categorical) or the identity (smooth)."""
        return self.mixture.decode(x)

    def readout(self, x: ArrayLike):
        """Argmax leaf (categorical) or the smooth output itself."""
        return self.mixture.readout(x)

    @classmethod
    def create(
        cls,
        key: Key,
        depth: int,
        branching: int,
        dim: int,
        *,
        radius: float = 8.0,
        decay: float = 0.3,
        std: float = 0.05,
        schedule: str | schedules.AbstractSchedule = "vp_cosine",
        **kwargs,
    ) -> HierarchicalMixture:
        """Random unit level directions and radii r_l = radius·decay^l."""
        key = _checks.prng_key(key)
        _checks.positive_scalar(radius, "radius")
        _checks.positive_scalar(decay, "decay")
        depth = _checks.positive_int(depth, "depth")
        branching = _checks.positive_int(branching, "branching")
        if branching < 2:
            raise ValueError(f"branching must be >= 2, got {branching}")
        dim = _checks.positive_int(dim, "dim")
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        u = jr.normal(key, (depth, branching, dim))
        u = u / jnp.linalg.norm(u, axis=-1, keepdims=True)
        radii = radius * decay ** jnp.arange(depth, dtype=u.dtype)
        return cls(u, radii, std, schedule, **kwargs)
