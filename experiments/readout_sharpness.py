"""Claim C2 (SPEC §1): sharp categorical readouts have DABI ≫ 1, smooth ones ≈ 1; on toy
readouts and on the learned text (parallel, AR) and image decoders.

DABI (SPEC §5, `readout_jax.diagnostics.dabi_variants`) at a clean latent x is the
readout's own output change along the boundary-aligned direction over its mean change
along `num_directions` (≥ 64) norm-matched isotropic directions of the whole latent.
This module measures it, on the same clean latents, for

- **sharp / soft categorical readouts**: a Gaussian mixture (`GaussianMixture`, M modes
  with random means whose RMS pairwise distance is `separation`·τ, overlapping regime)
  read by its Bayes logits ℓ_m = β·(log π_m − |x − μ_m|²/(2τ²)), over a grid of
  sharpness β × dimension n (a new mixture per n, the same latents and isotropic
  directions for every β). Variants: "tv" (primary: total variation at δ = 2·d(x), just
  across the nearest boundary), "kl", "flip" (token-flip indicator), "linearized"
  (|J n̂| / sqrt(mean |J u|²) of the token probabilities), and the δ-grid variants
  ("<measure>_grid", δ = `delta_grid`·τ);
- **smooth readouts** on the same latents: an isotropic linear readout (the mixture's
  own smooth readout, the identity, measured as the isometric embedding x ↦ (x, 0) into
  the decoder's pixel space so that it shares the compiled program) and a fixed random
  tanh MLP "image decoder" n → `decoder_hidden` → `decoder_pixels` (28×28 by default,
  the shape of the canonical MNIST VAE decoder), both with Euclidean output change at
  δ = `smooth_delta`·τ, plus the δ grid and the linearised variant;
- **the token-sequence world** (`TokenSequence.from_text`, character bigrams of English
  text, L positions of dimension d): its per-position categorical readout, at the same
  β grid; the verdict uses β = `token_sharpness` (1: the world's own Bayes readout).

`measure_readout` takes any world or readout callable and its latents; the learned
decoders are measured with it (`measure_learned`, `learned_scale`; the worlds come from
`few_step.learned_worlds`, built once per process): on encoded validation latents,

- the **parallel text decoder** (the learned text manifold's readout, logits (L, V));
- the **AR text decoder** as `TeacherForcedAR`: its logits with the latent's own greedy
  committed decode fed back as the (fixed) prefix, the readout each step of AR
  decoding applies; one DABI call per latent (`measure_readout_per_latent`);
- the **image decoder** (digits, pixels): Euclidean change at δ = `learned_image_delta`.

DABI of a sharp readout is a ratio of exponentially small probability changes, so the
measurement runs in float64 (`use_float64`): in float32 the isotropic denominator
underflows to 0 (DABI = ∞) for β·margin ≳ 90. The learned models compute in float32
whatever `use_float64` says, so a very sharp position of a learned decoder can show
DABI = ∞ (no isotropic direction changes its probabilities in float32); such positions
are counted in the claim's detail.

**What to expect (stated before the data).** For a smooth map at linear order, DABI =
σ_max(J)/sqrt(mean_i σ_i(J)²) = sqrt(n / stable rank): exactly 1 for an isotropic linear
readout (the identity), ≈ 1 + sqrt(n/width) for a wide random decoder; the module checks
the linearised variant against the dense-Jacobian SVD (`mlp_dense_prediction`). For a
two-class readout with an affine margin, DABI depends on β only through the margin
β·m(x): in the soft limit (β·m → 0) DABI(tv) → 1/E|u·n̂| = √π·Γ((n+1)/2)/Γ(n/2) ≈
sqrt(πn/2) (log–log slope 1/2 in n); in the sharp limit (β·m → ∞) it → 1/P(u·n̂ < −½),
which is 3 in n = 2, ≈ 11.7 in n = 8, ≈ 660 in n = 32 and ≈ 1e9 in n = 128 (both drawn
as references, `sharp_limit_dabi`, `soft_limit_dabi`). So a sharp readout's DABI grows
faster than any power of n, and in n = 2 a two-class readout, however sharp, stays at
DABI(tv) ≤ 3. The linearised variant of a rank-one readout (two classes, or a sharp
readout whose probabilities move only between its top two classes) is exactly √n.
With 64 directions and n ≥ 32 a sharp readout's denominator rarely contains a direction
that crosses the boundary, so the Monte-Carlo denominator is dominated by sub-threshold
changes and the median DABI lies far above the exact-expectation reference: the index is
then biased upwards, which does not affect a "≫ 1" verdict.

**Verdicts (stated up front).** Medians (lower medians) are over latents (and
positions), with a 95% percentile-bootstrap interval over latents (`num_bootstrap`
resamples; the positions of a latent are resampled together).

- C2 sharp, one claim per n: among the sharp cells (β ≥ `sharp_min`, typical β·margin
  ≫ 1, i.e. a one-hot softmax) the smallest median DABI(tv); held iff the lower end of
  its interval is > `sharp_threshold` (10).
- C2 tokens: the median DABI(tv) of the token world at β = `token_sharpness`; held iff the
  lower end of its interval is > `sharp_threshold`.
- C2 smooth: the largest median DABI(euclidean) of the tanh decoder over n; held iff its
  whole interval lies in [0, 2] (predicted 1 ± 1; DABI ≥ 1 at linear order by Jensen).
  The identity readout, which must give exactly 1, is reported beside it as a check.

- C2 learned, text vs image (one row for the parallel decoder, one for the AR decoder):
  R = median DABI(text, TV at δ = 2·d) / median DABI(image, Euclidean); held iff the
  lower end of its 95% bootstrap interval (latents of both resampled) is >
  `sharp_threshold`.
- C2 learned image: the median DABI of the image decoder within the smooth band
  [smooth_predicted ± smooth_tolerance] (the toy decoder's rule).

How DABI grows with n is reported per β and variant as a log–log slope with its 95%
interval (`fit_power_law`; the soft-limit prediction is 1/2, the sharp limit is not a
power law, see r²).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools as ft
import math
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from experiments import _framework, few_step
from experiments._framework import Claim, Measurement, RunContext
from readout_jax import diagnostics, plotting, readouts
from readout_jax._pytree import pytree_dataclass, static_field
from readout_jax._types import Array, Float, Key
from readout_jax.manifolds import GaussianMixture, TokenSequence

__all__ = [
    "TeacherForcedAR",
    "measure_readout_per_latent",
    "median_ratio_interval",
    "measure_learned",
    "learned_figure",
    "NAME",
    "CLAIM",
    "CATEGORICAL_VARIANTS",
    "SMOOTH_VARIANTS",
    "Config",
    "SmoothDecoder",
    "make_mixture",
    "make_token_world",
    "sharp_limit_dabi",
    "soft_limit_dabi",
    "summarize_index",
    "measure_readout",
    "measure_sharpness_sweep",
    "measure_token_world",
    "token_claim",
    "dense_linearized_dabi",
    "measure",
    "run",
    "main",
]

NAME = "readout_sharpness"
CLAIM = "C2"
CATEGORICAL_VARIANTS = diagnostics.CATEGORICAL_MEASURES  # ("tv", "kl", "flip", "linearized")
SMOOTH_VARIANTS = diagnostics.SMOOTH_MEASURES  # ("euclidean", "linearized")


@dataclasses.dataclass(frozen=True)
class Config:
    """Configuration of the readout-sharpness experiment.

    Attributes:
        seed: run seed (worlds, latents, directions, decoder weights, bootstrap).
        dims: latent dimensions n of the mixture worlds (≥ 3 values for the slope fit).
        sharpness: β grid of the categorical readouts (increasing).
        sharp_min: cells with β ≥ sharp_min count as "sharp" in the verdict.
        num_modes: M, mixture components.
        separation: RMS pairwise distance of the mixture means, in units of τ.
        std: component standard deviation τ.
        num_latents: clean latents per world (data draws).
        num_smooth_latents: the first this many of them are used for the smooth readouts
            (their DABI is concentrated; the decoder is the costly part).
        num_directions: isotropic directions per latent (≥ 64, SPEC §5).
        delta_grid: δ grid variant, in units of τ (empty: no grid variants, no δ figure).
        smooth_delta: δ of the smooth readouts' primary setting, in units of τ.
        decoder_hidden, decoder_pixels: widths of the tanh MLP image decoder.
        decoder_gain: scale of its first-layer weights (pre-activations ~ gain).
        token_length, token_dim, token_vocab, token_std, token_separation: the
            token-sequence world (L, d, V, τ, RMS embedding distance in units of τ).
        token_sharpness: β of the token world's verdict (1 = its Bayes readout).
        token_latents: clean latents of the token world.
        token_chunk: latents per DABI evaluation chunk for the token world (memory).
        include_tokens: measure the token world (and its claim).
        sharp_threshold: the verdict's "≫ 1" threshold for the median DABI.
        smooth_predicted, smooth_tolerance: the smooth verdict's band
            [predicted − tol, predicted + tol].
        confidence: level of the bootstrap intervals and slope intervals.
        num_bootstrap: bootstrap resamples of the latents.
        num_dense: latents of the dense-Jacobian check of the linearised smooth DABI.
        use_float64: run the DABI measurement in float64 (see module docstring).
        learned_scale: scale of the learned worlds (`few_step.LEARNED_SCALES`), or None
            to skip them.
        models_dir: folder of the cached trained models (None: the library default).
        learned_seed: the learned models' training seed.
        learned_text_latents: encoded validation windows for the parallel decoder.
        learned_ar_latents: encoded validation windows for the AR decoder (one DABI call
            each: its readout depends on the latent's own committed prefix).
        learned_image_latents: encoded validation digits for the image decoder.
        learned_image_delta: δ of the image decoder's primary setting, in latent units
            (the learned latents are RMS-normalised: unit scale per coordinate).
        learned_chunk: latents per DABI evaluation chunk of the text decoders (memory).
    """

    seed: int = 0
    dims: tuple[int, ...] = (2, 8, 32, 128)
    sharpness: tuple[float, ...] = (0.25, 1.0, 4.0, 16.0, 64.0)
    sharp_min: float = 4.0
    num_modes: int = 8
    separation: float = 3.0
    std: float = 1.0
    num_latents: int = 256
    num_smooth_latents: int = 64
    num_directions: int = 64
    delta_grid: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
    smooth_delta: float = 1.0
    decoder_hidden: int = 512
    decoder_pixels: int = 784
    decoder_gain: float = 1.0
    token_length: int = 16
    token_dim: int = 16
    token_vocab: int = 32
    token_std: float = 1.0
    token_separation: float = 6.0
    token_sharpness: float = 1.0
    token_latents: int = 128
    token_chunk: int = 16
    include_tokens: bool = True
    sharp_threshold: float = 10.0
    smooth_predicted: float = 1.0
    smooth_tolerance: float = 1.0
    confidence: float = 0.95
    num_bootstrap: int = 2000
    num_dense: int = 32
    use_float64: bool = True
    learned_scale: str | None = "quick"
    models_dir: str | None = None
    learned_seed: int = 0
    learned_text_latents: int = 64
    learned_ar_latents: int = 16
    learned_image_latents: int = 64
    learned_image_delta: float = 0.5
    learned_chunk: int = 8

    def __post_init__(self):
        if len(self.dims) < 1 or any(int(n) != n or n < 2 for n in self.dims):
            raise ValueError(f"dims must be integers >= 2, got {self.dims}")
        if list(self.dims) != sorted(set(self.dims)):
            raise ValueError(f"dims must be increasing, got {self.dims}")
        betas = np.asarray(self.sharpness, float)
        if betas.size < 1 or np.any(betas <= 0) or np.any(np.diff(betas) <= 0):
            raise ValueError(f"sharpness must be positive and increasing, got {self.sharpness}")
        if not np.any(betas >= self.sharp_min):
            raise ValueError(f"no sharpness >= sharp_min = {self.sharp_min} in {self.sharpness}")
        if self.num_directions < diagnostics.MIN_DIRECTIONS:
            raise ValueError(
                f"num_directions must be >= {diagnostics.MIN_DIRECTIONS}, got {self.num_directions}"
            )
        grid = np.asarray(self.delta_grid, float)
        if grid.ndim != 1 or np.any(grid <= 0):
            raise ValueError(
                f"delta_grid must be positive (or empty: no grid), got {self.delta_grid}"
            )
        if min(self.num_latents, self.num_smooth_latents, self.token_latents) < 2:
            raise ValueError("num_latents, num_smooth_latents and token_latents must be >= 2")
        if self.num_modes < 2 or self.num_bootstrap < 10 or self.num_dense < 1:
            raise ValueError("need num_modes >= 2, num_bootstrap >= 10, num_dense >= 1")
        if min(self.std, self.separation, self.smooth_delta, self.token_std) <= 0:
            raise ValueError("std, separation, smooth_delta and token_std must be > 0")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        few_step.check_learned_scale(self.learned_scale)
        sizes = (self.learned_text_latents, self.learned_ar_latents, self.learned_image_latents)
        if min(sizes) < 2:
            raise ValueError(
                "learned_text_latents, learned_ar_latents and learned_image_latents must be >= 2"
            )
        if not self.learned_image_delta > 0 or self.learned_chunk < 1:
            raise ValueError("need learned_image_delta > 0 and learned_chunk >= 1")

    @classmethod
    def quick(cls) -> Config:
        """n ∈ {2, 8, 32}, no δ-grid variants (the full scale has them), and the learned
        worlds (quick models): mostly compilation, one DABI program per n and readout."""
        return cls(
            dims=(2, 8, 32),
            delta_grid=(),
            token_latents=64,
            learned_text_latents=32,
            learned_ar_latents=12,
        )

    @classmethod
    def full(cls) -> Config:
        """More latents and directions, a finer δ grid, n up to 256."""
        return cls(
            dims=(2, 4, 8, 16, 32, 64, 128, 256),
            num_latents=1024,
            num_smooth_latents=256,
            token_latents=512,
            num_directions=256,
            delta_grid=(0.03, 0.1, 0.3, 1.0, 3.0),
            token_chunk=8,
            learned_scale="full",
            learned_text_latents=256,
            learned_ar_latents=64,
            learned_image_latents=359,
        )


# ---------------------------------------------------------------------------------------
# Worlds and readouts
# ---------------------------------------------------------------------------------------
@pytree_dataclass
class SmoothDecoder:
    """A fixed smooth "image decoder" x ↦ W2ᵀ·φ_c(W1ᵀx + b1) + b2 (latent n → D pixels).

    φ_c(h) = tanh(c·h)/c for curvature c > 0 and φ_0(h) = h: c = 1 is a random tanh MLP
    (`random_tanh`), c = 0 with orthonormal weights is an isotropic linear readout
    (`isometric`), whose DABI is exactly 1. Both are the same pytree type with data
    fields only, so they share one compiled DABI program. The decoder is a world-like
    pytree with a smooth readout (no `logits`), so every diagnostic treats it as one.

    Attributes:
        w1: (n, H) first-layer weights.
        b1: (H,) first-layer bias.
        w2: (H, D) output weights.
        b2: (D,) output bias.
        curvature: c ≥ 0 of the hidden activation.
    """

    w1: Float[Array, "n H"]
    b1: Float[Array, " H"]
    w2: Float[Array, "H D"]
    b2: Float[Array, " D"]
    curvature: Float[Array, ""]

    readout_kind: ClassVar[str] = "smooth"

    def decode(self, x: Float[Array, " n"]) -> Float[Array, " D"]:
        """The decoded "image" (D pixels) of one latent."""
        h = x @ self.w1 + self.b1
        c = self.curvature
        safe_c = jnp.where(c > 0, c, 1.0)
        act = jnp.where(c > 0, jnp.tanh(safe_c * h) / safe_c, h)
        return act @ self.w2 + self.b2

    def readout(self, x: Float[Array, " n"]) -> Float[Array, " D"]:
        """The smooth readout is the decoded image itself."""
        return self.decode(x)

    @classmethod
    def random_tanh(
        cls,
        key: Key,
        dim: int,
        *,
        hidden: int,
        pixels: int,
        gain: float = 1.0,
        input_scale: float = 1.0,
    ) -> SmoothDecoder:
        """tanh MLP, W1 ~ N(0, gain²/(n·input_scale²)), b1 ~ N(0, 0.1²), W2 ~ N(0, 1/H).

        With inputs of RMS coordinate `input_scale` the pre-activations are ~ N(0, gain²)
        (tanh in its curved range), and the output has O(1) pixels.
        """
        # Host-side draws (numpy, seeded from the key): no XLA compilation per shape.
        data = jr.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        rng = np.random.default_rng(np.asarray(data, np.uint32).ravel().tolist())
        w1 = gain / (math.sqrt(dim) * input_scale) * rng.normal(size=(dim, hidden))
        b1 = 0.1 * rng.normal(size=hidden)
        w2 = rng.normal(size=(hidden, pixels)) / math.sqrt(hidden)
        return cls._from_numpy(w1, b1, w2, np.zeros(pixels), 1.0)

    @classmethod
    def _from_numpy(cls, w1, b1, w2, b2, curvature) -> SmoothDecoder:
        dtype = jnp.result_type(float)
        return cls(*(jnp.asarray(a, dtype) for a in (w1, b1, w2, b2, curvature)))

    @classmethod
    def isometric(cls, dim: int, *, hidden: int, pixels: int) -> SmoothDecoder:
        """The linear isometric embedding x ↦ (x, 0, …, 0) ∈ R^D (needs n ≤ H ≤ D).

        The same readout as the mixture's own smooth readout (the identity, SPEC §3.4)
        up to an isometry of the output, so its DABI is exactly 1.
        """
        if not dim <= hidden <= pixels:
            raise ValueError(f"isometric needs n <= H <= D, got {dim}, {hidden}, {pixels}")
        return cls._from_numpy(
            np.eye(dim, hidden), np.zeros(hidden), np.eye(hidden, pixels), np.zeros(pixels), 0.0
        )


def make_mixture(config: Config, dim: int, key: Key) -> GaussianMixture:
    """M equal-weight modes in R^n with RMS pairwise mean distance `separation`·τ (β = 1).

    Means ~ N(0, s²·I_n) with s = separation·τ/sqrt(2n), so the geometry (distances in
    units of τ) is comparable across n.
    """
    scale = config.separation * config.std / math.sqrt(2.0 * dim)
    return GaussianMixture.random(
        key, config.num_modes, dim, scale=scale, std=config.std, sharpness=1.0
    )


def make_token_world(config: Config, key: Key) -> TokenSequence:
    """The character-bigram `TokenSequence` world of the config (β = 1, Bayes readout)."""
    return TokenSequence.from_text(
        length=config.token_length,
        dim=config.token_dim,
        std=config.token_std,
        key=key,
        vocab_size=config.token_vocab,
        separation=config.token_separation,
    )


# ---------------------------------------------------------------------------------------
# Analytic references (two classes, affine margin)
# ---------------------------------------------------------------------------------------
def _log_sin_power_integral(power: float, lo: float, hi: float, num: int = 200_001) -> float:
    """log ∫_lo^hi sin(θ)^power dθ by the trapezoid rule in log space."""
    theta = np.linspace(lo, hi, num)
    if power == 0:
        return float(math.log(hi - lo))
    with np.errstate(divide="ignore"):
        logf = power * np.log(np.sin(theta))
    m = np.max(logf)
    w = np.exp(logf - m)
    return float(m + np.log(np.trapezoid(w, theta)))


def sharp_limit_dabi(dim: int) -> float:
    """1/P(u·e < −½) for u uniform on S^(n−1): DABI(tv) of a hard two-class readout far
    from its (flat) boundary, where the numerator is 1 and an isotropic step of length
    2·d changes the readout iff its component along the normal is below −d."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if dim == 1:
        return 2.0
    # u·e = cos θ with density ∝ sin^(n−2) θ on [0, π]; u·e < −½ ⇔ θ > 2π/3.
    log_tail = _log_sin_power_integral(dim - 2, 2 * math.pi / 3, math.pi)
    log_all = _log_sin_power_integral(dim - 2, 0.0, math.pi)
    return float(math.exp(log_all - log_tail))


def soft_limit_dabi(dim: int) -> float:
    """1/E|u·e| = √π·Γ((n+1)/2)/Γ(n/2) ≈ sqrt(πn/2): DABI(tv) of a two-class readout in
    its soft (linear) limit, where the TV change is proportional to |Δmargin|."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    return float(
        math.exp(0.5 * math.log(math.pi) + math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2))
    )


# ---------------------------------------------------------------------------------------
# Measurement on any readout
# ---------------------------------------------------------------------------------------
def _lower_median_rows(a: np.ndarray) -> np.ndarray:
    """Per-row lower median ignoring NaN (= `nanquantile(..., 0.5, method="inverted_cdf")`,
    vectorised; NaN for a row with no numbers). +inf sorts above every number."""
    s = np.sort(a, axis=1)  # NaN sorts last
    valid = np.sum(~np.isnan(a), axis=1)
    med = s[np.arange(a.shape[0]), np.maximum((valid - 1) // 2, 0)]
    return np.where(valid > 0, med, np.nan)


def summarize_index(
    index: Any,
    *,
    rng: np.random.Generator,
    num_bootstrap: int = 2000,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Median, quartiles and a percentile-bootstrap interval of the median over latents.

    Args:
        index: (num, *positions) per-latent DABI values (NaN ignored; +inf kept: a
            denominator that underflowed).
        rng: numpy generator for the bootstrap.
        num_bootstrap: resamples of the latents (rows); positions of a latent stay
            together, so correlated positions do not shrink the interval.
        confidence: interval level.

    Returns:
        dict with median, q25, q75, ci_low, ci_high, fraction_infinite, fraction_nan,
        num (latents).
    """
    v = np.asarray(index, np.float64).reshape(np.shape(index)[0], -1)
    num = v.shape[0]
    flat = v.reshape(-1)
    with warnings.catch_warnings():  # an all-NaN input warns; its quantiles are NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        q25, med, q75 = np.nanquantile(flat, [0.25, 0.5, 0.75], method="inverted_cdf")
    boots = []
    for start in range(0, num_bootstrap, 256):
        size = min(256, num_bootstrap - start)
        rows = rng.integers(0, num, size=(size, num))
        boots.append(_lower_median_rows(v[rows].reshape(size, -1)))
    boot = np.concatenate(boots)
    # NaN entries are 0/0 (e.g. the flip variant at a small fixed δ, where no direction
    # changes the readout); a resample holding only NaN has no median and is dropped.
    boot = boot[~np.isnan(boot)]
    if boot.size == 0:
        boot = np.array([np.nan])
    alpha = 0.5 * (1.0 - confidence)
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha], method="inverted_cdf")
    return {
        "median": float(med),
        "q25": float(q25),
        "q75": float(q75),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "fraction_infinite": float(np.mean(np.isposinf(flat))),
        "fraction_nan": float(np.mean(np.isnan(flat))),
        "num": int(num),
    }


def measure_readout(
    readout: Any,
    latents: Float[Array, " num *latent"],
    *,
    key: Key,
    rng: np.random.Generator,
    delta: float | None = None,
    delta_grid: Sequence[float] | None = None,
    readout_kind: str | None = None,
    num_directions: int = diagnostics.MIN_DIRECTIONS,
    chunk_size: int | None = None,
    num_bootstrap: int = 2000,
    confidence: float = 0.95,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every DABI variant of one readout on given clean latents, summarised.

    The world is a parameter: `readout` is any world with `logits` (categorical) or
    `decode` (smooth), or a callable with `readout_kind`, e.g. a learned decoder.

    Args:
        readout: world or callable (see `diagnostics.dabi_variants`).
        latents: (num, *latent) clean latents.
        key: key of the isotropic directions (shared by everything measured with it).
        rng: numpy generator for the bootstrap intervals.
        delta: None for the primary δ = 2·d (categorical); required for smooth.
        delta_grid: optional δ grid (adds "<measure>_grid" variants).
        readout_kind: for a callable readout.
        num_directions: isotropic directions per latent (≥ 64).
        chunk_size: latents per evaluation chunk (None: all at once).
        num_bootstrap, confidence: of the median's interval.

    Returns:
        `(summary, per_latent)`: summary maps each variant to `summarize_index` output
        (for grid variants, a list over δ with the δ value added); per_latent maps each
        variant to its per-latent index array (num, *positions) or (num, G, *positions).
    """
    grid = None if delta_grid is None else jnp.asarray(delta_grid, latents.dtype)
    out = diagnostics.dabi_variants(
        readout,
        latents,
        key=key,
        delta=delta,
        delta_grid=grid,
        readout_kind=readout_kind,
        num_directions=num_directions,
        chunk_size=chunk_size,
    )
    summary: dict[str, Any] = {}
    per_latent: dict[str, np.ndarray] = {}
    for name, res in out.items():
        idx = np.asarray(res.index, np.float64)
        per_latent[name] = idx
        stats = ft.partial(
            summarize_index, rng=rng, num_bootstrap=num_bootstrap, confidence=confidence
        )
        if name.endswith("_grid"):
            summary[name] = [
                {"delta": float(d), **stats(idx[:, g])} for g, d in enumerate(np.asarray(grid))
            ]
        else:
            summary[name] = stats(idx)
    return summary, per_latent


def measure_sharpness_sweep(
    world: Any,
    latents: Float[Array, " num *latent"],
    sharpness: Sequence[float],
    *,
    key: Key,
    rng: np.random.Generator,
    delta_grid: Sequence[float] | None = None,
    num_directions: int = diagnostics.MIN_DIRECTIONS,
    chunk_size: int | None = None,
    num_bootstrap: int = 2000,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """`measure_readout` of a categorical world at each sharpness β (one compile).

    The same latents and directions (`key`) at every β, so the cells differ only by β.
    Also reports the median readout margin β·m(x) (nats), which says how one-hot the
    softmax is at the latents.

    Args:
        world: a categorical world with a data field `sharpness` (replaced per β).
        latents: (num, *latent) clean latents.
        sharpness: β values.
        key, rng, delta_grid, num_directions, chunk_size, num_bootstrap, confidence: as
            for `measure_readout`.

    Returns:
        One dict per β: {"sharpness", "median_margin", "summary", "per_latent"}.
    """
    cells = []
    for beta in sharpness:
        w = dataclasses.replace(world, sharpness=float(beta))
        summary, per_latent = measure_readout(
            w,
            latents,
            key=key,
            rng=rng,
            delta_grid=delta_grid,
            num_directions=num_directions,
            chunk_size=chunk_size,
            num_bootstrap=num_bootstrap,
            confidence=confidence,
        )
        margins = _margins(w, latents)
        cells.append(
            {
                "sharpness": float(beta),
                "median_margin": float(np.median(np.asarray(margins))),
                "summary": summary,
                "per_latent": per_latent,
            }
        )
    return cells


@jax.jit
def _margins(world, latents):
    return jax.vmap(lambda x: readouts.margin(world.logits(x)))(latents)


def dense_linearized_dabi(decoder: SmoothDecoder, latents: Float[Array, " num n"]) -> np.ndarray:
    """σ_max(J)/sqrt(mean_i σ_i(J)²) per latent from the dense decoder Jacobian.

    The exact value of the "linearized" DABI variant of a smooth readout (its expectation
    over isotropic u), computed independently of the diagnostics: the Jacobian of
    x ↦ W2ᵀφ_c(W1ᵀx + b1) in closed form (φ_c' = sech²(c·h), 1 at c = 0), in numpy
    float64, and the singular values from the eigenvalues of J·Jᵀ (n × n).
    """
    w1, b1, w2 = (np.asarray(a, np.float64) for a in (decoder.w1, decoder.b1, decoder.w2))
    c = float(decoder.curvature)
    x = np.asarray(latents, np.float64)
    h = x @ w1 + b1  # (num, H)
    slope = 1.0 / np.cosh(c * h) ** 2 if c > 0 else np.ones_like(h)
    jac = (w1[None, :, :] * slope[:, None, :]) @ w2  # (num, n, D), J transposed
    eig = np.linalg.eigvalsh(jac @ np.swapaxes(jac, 1, 2))  # σ², ascending
    eig = np.clip(eig, 0.0, None)
    return np.sqrt(eig[:, -1] / np.mean(eig, axis=1))


def _mixture_input_scale(world: GaussianMixture) -> float:
    """RMS coordinate of the mixture's data: sqrt(τ² + Σ π_m |μ_m|²/n)."""
    w = np.asarray(world.weights, np.float64)
    mu = np.asarray(world.means, np.float64)
    return float(math.sqrt(float(world.std) ** 2 + float(w @ np.sum(mu**2, axis=1)) / world.dim))


# ---------------------------------------------------------------------------------------
# Fits and verdicts
# ---------------------------------------------------------------------------------------
def _slope_fits(dims, cells_by_n, variant, confidence):
    """Log–log slope in n of the median of `variant`, one fit per β."""
    fits = []
    num_beta = len(cells_by_n[0])
    for b in range(num_beta):
        med = np.array([cells_by_n[i][b]["summary"][variant]["median"] for i in range(len(dims))])
        beta = cells_by_n[0][b]["sharpness"]
        ok = np.isfinite(med) & (med > 0)
        entry: dict[str, Any] = {"sharpness": beta, "num_points": int(ok.sum())}
        if ok.sum() >= 3:
            fit = _framework.fit_power_law(np.asarray(dims)[ok], med[ok], confidence=confidence)
            entry.update(
                slope=fit.slope,
                slope_se=fit.slope_se,
                ci_low=fit.ci_low,
                ci_high=fit.ci_high,
                intercept=fit.intercept,
                r_squared=fit.r_squared,
            )
        else:
            entry["note"] = "fewer than 3 finite medians: no fit"
        fits.append(entry)
    return fits


def _fmt_cell(s: dict[str, Any]) -> str:
    return (
        f"median {s['median']:.3g} (quartiles {s['q25']:.3g}–{s['q75']:.3g}; 95% CI "
        f"{s['ci_low']:.3g}–{s['ci_high']:.3g})"
    )


def _sharp_claim(config, dim, cells) -> Claim:
    sharp = [c for c in cells if c["sharpness"] >= config.sharp_min]
    worst = min(sharp, key=lambda c: c["summary"]["tv"]["median"])
    s = worst["summary"]["tv"]
    listing = "; ".join(
        f"β = {c['sharpness']:g}: {_fmt_cell(c['summary']['tv'])}, median β·margin "
        f"{c['median_margin']:.3g} nats"
        + (
            f", {100 * c['summary']['tv']['fraction_infinite']:.0f}% of latents with an "
            "underflowed denominator (DABI = ∞)"
            if c["summary"]["tv"]["fraction_infinite"] > 0
            else ""
        )
        for c in sharp
    )
    limit = sharp_limit_dabi(dim)
    why = ""
    held_now = s["ci_low"] > config.sharp_threshold
    if not held_now and limit > config.sharp_threshold:
        why = (
            f" The two-class sharp limit {limit:.3g} is the value for a hard readout with ONE "
            f"boundary; with M = {config.num_modes} classes an isotropic step can also "
            "cross the other classes' boundaries, which lowers DABI below it."
        )
    if limit <= config.sharp_threshold:
        why = (
            f" In n = {dim} even a hard two-class readout has DABI(tv) → "
            f"1/P(u·n̂ < −½) = {limit:.3g} ≤ {config.sharp_threshold:g}: an isotropic step "
            "of length 2·d crosses the boundary too often for the boundary-aligned step to "
            "stand out; DABI ≫ 1 is a high-dimensional effect."
        )
    return _framework.claim_from_interval(
        CLAIM,
        f"sharp categorical readout (Gaussian mixture, M = {config.num_modes}, n = {dim}, "
        f"β ≥ {config.sharp_min:g}): median DABI (TV at δ = 2·d) > {config.sharp_threshold:g} "
        "(measured: the smallest median over the sharp β)",
        measured=s["median"],
        interval=(s["ci_low"], s["ci_high"]),
        predicted=config.sharp_threshold,
        tolerance=0.0,
        rule="above",
        detail=f"{listing}. Two-class sharp-limit reference 1/P(u·n̂ < −½) = {limit:.3g}.{why}",
    )


def _token_verdict_index(config: Config, cells: Sequence[dict[str, Any]]) -> int:
    return int(np.argmin([abs(c["sharpness"] - config.token_sharpness) for c in cells]))


def measure_token_world(
    config: Config, *, key: Key, rng: np.random.Generator
) -> tuple[TokenSequence, list[dict[str, Any]]]:
    """DABI of the token-sequence world's categorical readout over the β grid.

    Args:
        config: experiment configuration (token_* fields, sharpness grid, directions).
        key: split into the world, latent and direction keys.
        rng: numpy generator of the bootstrap.

    Returns:
        `(world, cells)`, cells as from `measure_sharpness_sweep` over the sharpness grid
        with `token_sharpness` added.
    """
    key_world, key_data, key_dirs = jr.split(key, 3)
    world = make_token_world(config, key_world)
    latents, _ = world.sample_data(key_data, config.token_latents)
    cells = measure_sharpness_sweep(
        world,
        latents,
        tuple(sorted({*config.sharpness, config.token_sharpness})),
        key=key_dirs,
        rng=rng,
        num_directions=config.num_directions,
        chunk_size=config.token_chunk,
        num_bootstrap=config.num_bootstrap,
        confidence=config.confidence,
    )
    return world, cells


def token_claim(config: Config, world: TokenSequence, cells: Sequence[dict[str, Any]]) -> Claim:
    """C2 on the token world: median DABI(tv) at β = token_sharpness above the threshold."""
    cell = cells[_token_verdict_index(config, cells)]
    s = cell["summary"]["tv"]
    others = "; ".join(f"β = {c['sharpness']:g}: {c['summary']['tv']['median']:.3g}" for c in cells)
    return _framework.claim_from_interval(
        CLAIM,
        f"token-sequence world (character bigrams of English text, V = {world.vocab_size}, "
        f"L = {world.length}, d = {world.dim}), categorical readout at β = "
        f"{cell['sharpness']:g}: median DABI (TV at δ = 2·d) over latents and positions > "
        f"{config.sharp_threshold:g}",
        measured=s["median"],
        interval=(s["ci_low"], s["ci_high"]),
        predicted=config.sharp_threshold,
        tolerance=0.0,
        rule="above",
        detail=(
            f"{_fmt_cell(s)}; median β·margin {cell['median_margin']:.3g} nats. The boundary "
            f"normal of position i lives in its own d = {world.dim} coordinates, the "
            f"isotropic directions in all L·d = {world.length * world.dim}. Other β: "
            f"{others}."
        ),
    )


def _smooth_claim(config, dims, mlp_by_n, identity_by_n, dense_by_n) -> Claim:
    meds = [m["euclidean"]["median"] for m in mlp_by_n]
    worst = int(np.nanargmax(meds))
    s = mlp_by_n[worst]["euclidean"]
    id_dev = max(abs(m["euclidean"]["median"] - 1.0) for m in identity_by_n)
    listing = "; ".join(
        f"n = {n}: {m['euclidean']['median']:.3g} (linearised {m['linearized']['median']:.3g}; "
        f"on {d['num']} latents linearised {d['linearized_median']:.3g} vs dense-Jacobian "
        f"σ_max/σ_rms {d['dense_median']:.3g})"
        for n, m, d in zip(dims, mlp_by_n, dense_by_n, strict=True)
    )
    return _framework.claim_from_interval(
        CLAIM,
        f"smooth readout (random tanh MLP image decoder n → {config.decoder_hidden} → "
        f"{config.decoder_pixels} on the same latents): median DABI (Euclidean at δ = "
        f"{config.smooth_delta:g}·τ) ≈ 1 for every n (measured: the largest median over n)",
        measured=s["median"],
        interval=(s["ci_low"], s["ci_high"]),
        predicted=config.smooth_predicted,
        tolerance=config.smooth_tolerance,
        rule="within",
        detail=(
            f"worst n = {dims[worst]}: {_fmt_cell(s)}. Per n: {listing}. At linear order "
            "DABI = σ_max/σ_rms of the decoder Jacobian = sqrt(n / stable rank), ≥ 1, growing "
            "with n/width. Identity readout (isotropic linear, must be exactly 1): max "
            f"|median − 1| over n = {id_dev:.1e}."
        ),
    )


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------
def _quartile_bars(ax, x, cells, variant, *, y_max=None, **kwargs):
    """Medians with quartile bars; medians above `y_max` are drawn as ▲ at y_max."""
    med = np.array([c[variant]["median"] for c in cells], float)
    lo = np.array([c[variant]["q25"] for c in cells], float)
    hi = np.array([c[variant]["q75"] for c in cells], float)
    ok = np.isfinite(med) & np.isfinite(lo) & (med > 0)
    hi = np.where(np.isfinite(hi), hi, med)
    x = np.asarray(x, float)
    if not ok.any():
        return None
    if y_max is not None:
        clipped = ok & (med > y_max)
        med = np.minimum(med, y_max)
        lo, hi = np.minimum(lo, y_max), np.minimum(hi, y_max)
        if clipped.any():
            ax.plot(x[clipped], med[clipped], "^", color=kwargs.get("color"), markersize=8)
    err = np.stack([med[ok] - lo[ok], hi[ok] - med[ok]])
    return ax.errorbar(x[ok], med[ok], yerr=np.clip(err, 0, None), **kwargs)


def _beta_colors(num):
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [cmap(0.1 + 0.8 * i / max(num - 1, 1)) for i in range(num)]


@plotting.styled
def dimension_figure(data: dict[str, Any]):
    """Left: median DABI (quartile bars) vs n per β, smooth readouts, token world, the
    two-class references. Right: fitted log–log slope in n vs β with its interval."""
    dims = np.asarray(data["dims"], float)
    fig, axes = plotting.new_figure(1, 2, panel_size=(4.8, 3.8))
    ax = axes[0, 0]
    colors = _beta_colors(len(data["sharpness"]))
    y_max = 1e12
    for b, beta in enumerate(data["sharpness"]):
        cells = [data["categorical"][i][b]["summary"] for i in range(len(dims))]
        _quartile_bars(
            ax,
            dims,
            cells,
            "tv",
            y_max=y_max,
            fmt="o-",
            color=colors[b],
            label=f"categorical β = {beta:g}",
        )
    _quartile_bars(
        ax, dims, data["mlp"], "euclidean", fmt="s-", color="k", label="smooth: tanh MLP decoder"
    )
    _quartile_bars(
        ax, dims, data["identity"], "euclidean", fmt="D--", color="0.55", label="smooth: identity"
    )
    tok = data["token"]
    cell = None if tok is None else tok["cells"][tok["verdict_index"]]["summary"]["tv"]
    if cell is not None and np.isfinite(cell["median"]):
        ax.errorbar(
            [tok["latent_size"]],
            [cell["median"]],
            yerr=[[cell["median"] - cell["q25"]], [cell["q75"] - cell["median"]]],
            fmt="*",
            markersize=10,
            color="C3",
            label=f"token world β = {tok['cells'][tok['verdict_index']]['sharpness']:g} (x = L·d)",
        )
    x_hi = dims.max() if tok is None else max(dims.max(), tok["latent_size"])
    fine = np.geomspace(dims.min(), x_hi, 64)
    ax.plot(
        fine,
        [soft_limit_dabi(int(round(n))) for n in fine],
        ":",
        color="0.3",
        label="soft limit 1/E|u·n̂| (slope ½)",
    )
    sharp = np.array([sharp_limit_dabi(int(round(n))) for n in dims])
    ax.plot(dims, sharp, "-.", color="0.3", label="sharp limit 1/P(u·n̂ < −½)")
    ax.axhline(data["threshold"], color="C3", linewidth=0.8, linestyle="--")
    ax.axhline(1.0, color="0.3", linewidth=0.8)
    ax.plot([], [], "^", color="0.3", label=f"median > {y_max:.0e}, drawn at the edge")
    plotting.set_log(ax)
    ax.set_ylim(0.3, 3 * y_max)
    plotting.set_log_ticks(ax, dims)
    plotting.label_axes(
        ax,
        "latent dimension n",
        "DABI (median, quartile bars)",
        xunit="1",
        yunit="1",
        title="boundary-aligned amplification: sharp vs smooth",
    )
    ax.legend(fontsize=6, loc="upper left")

    ax = axes[0, 1]
    fits = [f for f in data["slopes"]["tv"] if "slope" in f]
    if fits:
        betas = np.array([f["sharpness"] for f in fits])
        slope = np.array([f["slope"] for f in fits])
        err = np.stack([slope - [f["ci_low"] for f in fits], [f["ci_high"] for f in fits] - slope])
        ax.errorbar(betas, slope, yerr=err, fmt="o-", color="C0", label="fitted slope, 95% CI")
    ax.axhline(0.5, color="0.3", linestyle=":", label="soft-limit prediction ½")
    ax.set_xscale("log")
    plotting.set_log_ticks(ax, data["sharpness"])
    plotting.label_axes(
        ax,
        "sharpness β",
        "d log DABI / d log n",
        xunit="1",
        yunit="1",
        title="growth of median DABI(tv) with n",
    )
    ax.legend()
    return fig


def _cells_at(data, i):
    return [c["summary"] for c in data["categorical"][i]]


@plotting.styled
def variants_figure(data: dict[str, Any]):
    """Median DABI vs n per β for each categorical variant (tv, kl, flip, linearised),
    with the smooth decoder's matching variant; infinite medians are left out."""
    dims = np.asarray(data["dims"], float)
    fig, axes = plotting.new_figure(1, 4, panel_size=(3.3, 3.1), sharey=False)
    colors = _beta_colors(len(data["sharpness"]))
    smooth_of = {"tv": "euclidean", "kl": None, "flip": None, "linearized": "linearized"}
    for ax, variant in zip(axes[0], CATEGORICAL_VARIANTS, strict=True):
        for b, beta in enumerate(data["sharpness"]):
            cells = [data["categorical"][i][b]["summary"] for i in range(len(dims))]
            _quartile_bars(
                ax, dims, cells, variant, fmt="o-", color=colors[b], label=f"β = {beta:g}"
            )
        if smooth_of[variant]:
            _quartile_bars(
                ax, dims, data["mlp"], smooth_of[variant], fmt="s-", color="k", label="tanh MLP"
            )
        ax.axhline(1.0, color="0.3", linewidth=0.8)
        infinite = [
            int(n)
            for i, n in enumerate(dims)
            if any(np.isposinf(c[variant]["median"]) for c in _cells_at(data, i))
        ]
        if infinite:
            ax.text(
                0.03,
                0.97,
                f"median = ∞ (not drawn) at n = {infinite}:\nno isotropic direction changes it",
                transform=ax.transAxes,
                va="top",
                fontsize=6,
            )
        plotting.set_log(ax)
        plotting.set_log_ticks(ax, dims)
        plotting.label_axes(ax, "latent dimension n", "DABI", xunit="1", yunit="1", title=variant)
    axes[0, 0].legend(fontsize=6)
    return fig


@plotting.styled
def delta_grid_figure(data: dict[str, Any]):
    """Median DABI(tv) vs fixed δ per β, one panel per n, with the smooth decoder."""
    dims = data["dims"]
    fig, axes = plotting.new_figure(1, len(dims), panel_size=(3.0, 3.0), sharey=True)
    colors = _beta_colors(len(data["sharpness"]))
    for i, (ax, n) in enumerate(zip(axes[0], dims, strict=True)):
        for b, beta in enumerate(data["sharpness"]):
            grid = data["categorical"][i][b]["summary"]["tv_grid"]
            deltas = np.array([g["delta"] for g in grid])
            med = np.array([g["median"] for g in grid])
            ok = np.isfinite(med) & (med > 0)
            ax.plot(deltas[ok], med[ok], "o-", color=colors[b], label=f"β = {beta:g}")
        grid = data["mlp"][i]["euclidean_grid"]
        deltas = np.array([g["delta"] for g in grid])
        ax.plot(deltas, [g["median"] for g in grid], "s-", color="k", label="tanh MLP")
        ax.axhline(1.0, color="0.3", linewidth=0.8)
        plotting.set_log(ax)
        plotting.label_axes(
            ax,
            "perturbation size δ",
            "median DABI",
            xunit="latent units",
            yunit="1",
            title=f"n = {n}",
        )
    axes[0, 0].legend(fontsize=6)
    return fig


# ---------------------------------------------------------------------------------------
# Learned worlds
# ---------------------------------------------------------------------------------------
@pytree_dataclass
class TeacherForcedAR:
    """The learned AR text decoder as a categorical readout of ONE latent, its prefix
    held fixed: logits(x) = AR(x, prefix) (L, V), position i conditioned on x and on the
    committed tokens prefix[:i].

    This is the readout the AR decoder applies at every step of decoding: at step i the
    earlier tokens are already committed, and the latent alone moves the distribution of
    token i. With `prefix` = the decoder's own greedy decode of the clean latent (as
    `measure_learned` does) the logits at the clean latent are exactly those of
    `learned.TextWorld.ar_readout`, which re-decodes the prefix at every perturbed
    latent (L sequential passes per evaluation instead of one).

    Attributes:
        graphdef: the AR decoder's static graph (`nnx.split(world.autoencoder.ar)`).
        state: its parameters.
        prefix: (L,) int32 the committed tokens fed back.
    """

    graphdef: Any = static_field()
    state: Any
    prefix: Any

    readout_kind: ClassVar[str] = "categorical"

    def logits(self, x: Float[Array, "L d"]) -> Float[Array, "L V"]:
        """Teacher-forced logits (L, V) of one latent."""
        from flax import nnx

        ar = nnx.merge(self.graphdef, self.state)
        return ar(x, self.prefix).astype(x.dtype)

    def decode(self, x):
        """The smooth part of the readout: the logits."""
        return self.logits(x)

    def readout(self, x):
        """Argmax token per position (L,)."""
        return jnp.argmax(self.logits(x), axis=-1)


def measure_readout_per_latent(
    readouts: Sequence[Any],
    latents: Float[Array, " num *latent"],
    *,
    key: Key,
    rng: np.random.Generator,
    delta: float | None = None,
    delta_grid: Sequence[float] | None = None,
    num_directions: int = diagnostics.MIN_DIRECTIONS,
    num_bootstrap: int = 2000,
    confidence: float = 0.95,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """`measure_readout` for a readout that differs per latent (readouts[i] reads
    latents[i]), e.g. `TeacherForcedAR` with each latent's own prefix.

    One `dabi_variants` call per latent, all with the same `key` (the same isotropic
    directions, as for a batch) and readouts of one pytree type and shape (one
    compilation). Returns the same `(summary, per_latent)` as `measure_readout`.
    """
    if len(readouts) != np.shape(latents)[0]:
        raise ValueError(
            f"need one readout per latent, got {len(readouts)} readouts for "
            f"{np.shape(latents)[0]} latents"
        )
    grid = None if delta_grid is None else jnp.asarray(delta_grid, latents.dtype)
    parts: dict[str, list[np.ndarray]] = {}
    for i, readout in enumerate(readouts):
        out = diagnostics.dabi_variants(
            readout,
            latents[i : i + 1],
            key=key,
            delta=delta,
            delta_grid=grid,
            num_directions=num_directions,
        )
        for name, res in out.items():
            parts.setdefault(name, []).append(np.asarray(res.index, np.float64))
    stats = ft.partial(summarize_index, rng=rng, num_bootstrap=num_bootstrap, confidence=confidence)
    summary: dict[str, Any] = {}
    per_latent = {name: np.concatenate(v, axis=0) for name, v in parts.items()}
    for name, idx in per_latent.items():
        if name.endswith("_grid"):
            summary[name] = [
                {"delta": float(d), **stats(idx[:, g])} for g, d in enumerate(np.asarray(grid))
            ]
        else:
            summary[name] = stats(idx)
    return summary, per_latent


def _pick(key: Key, total: int, num: int) -> np.ndarray:
    """`num` distinct indices in range(total) (all of them, shuffled, if num ≥ total)."""
    return np.asarray(jr.permutation(key, total))[: min(num, total)]


def median_ratio_interval(
    a: Any,
    b: Any,
    *,
    rng: np.random.Generator,
    num_bootstrap: int = 2000,
    confidence: float = 0.95,
) -> dict[str, float]:
    """median(a)/median(b) with a percentile-bootstrap interval.

    a: (num_a, *positions) and b: (num_b, *positions) per-latent indices of two
    independent sets of latents; each resample draws the latents (rows, positions kept
    together) of both sets independently and takes the ratio of their lower medians
    (NaN ignored, +inf kept).

    Returns:
        dict with ratio, ci_low, ci_high, median_a, median_b.
    """
    va = np.asarray(a, np.float64).reshape(np.shape(a)[0], -1)
    vb = np.asarray(b, np.float64).reshape(np.shape(b)[0], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med_a = float(np.nanquantile(va.reshape(-1), 0.5, method="inverted_cdf"))
        med_b = float(np.nanquantile(vb.reshape(-1), 0.5, method="inverted_cdf"))
    ratios = []
    for start in range(0, num_bootstrap, 256):
        size = min(256, num_bootstrap - start)
        ra = rng.integers(0, va.shape[0], size=(size, va.shape[0]))
        rb = rng.integers(0, vb.shape[0], size=(size, vb.shape[0]))
        ma = _lower_median_rows(va[ra].reshape(size, -1))
        mb = _lower_median_rows(vb[rb].reshape(size, -1))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios.append(ma / mb)
    boot = np.concatenate(ratios)
    boot = boot[~np.isnan(boot)]
    alpha = 0.5 * (1.0 - confidence)
    lo, hi = (
        np.quantile(boot, [alpha, 1.0 - alpha], method="inverted_cdf")
        if boot.size
        else (np.nan, np.nan)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = med_a / med_b if med_b else float("inf")
    return {
        "ratio": float(ratio),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "median_a": med_a,
        "median_b": med_b,
    }


def measure_learned(config: Config, ctx: RunContext, *, key: Key, rng: np.random.Generator):
    """DABI (every variant) of the learned parallel and AR text decoders and of the
    learned image decoder, on encoded validation latents; the learned C2 claims.

    Text: `learned_text_latents` random validation windows, encoded (RMS-normalised
    latents (L, d)); the parallel decoder is the text manifold's own readout; the AR
    decoder is `TeacherForcedAR` with each latent's greedy committed decode as prefix
    (on the first `learned_ar_latents` of them). Primary δ = 2·d(x) per position, the δ
    grid in latent units. Image: `learned_image_latents` random validation digits,
    encoded (latents (d,)); Euclidean pixel change at δ = `learned_image_delta` and the
    grid. The same isotropic-direction key for all three.

    Returns:
        {"metrics": ..., "claims": [...], "per_latent": {readout: primary index}}.
    """
    from flax import nnx

    cpu_start, wall_start = time.process_time(), time.perf_counter()
    ctx.log(f"learned worlds ({config.learned_scale}): loading (training what is missing)")
    worlds = few_step.learned_worlds(
        config.learned_scale,
        seed=config.learned_seed,
        models_dir=config.models_dir,
        progress=ctx.show_progress,
    )
    text, image = worlds.text, worlds.image
    key_text, key_image, key_dirs = jr.split(key, 3)
    dtype = jnp.result_type(float)
    grid = tuple(config.delta_grid) or None
    stats = {"num_bootstrap": config.num_bootstrap, "confidence": config.confidence}
    tokens = np.asarray(text.val_tokens)[
        _pick(key_text, text.val_tokens.shape[0], config.learned_text_latents)
    ]
    latents = jnp.asarray(text.encode(tokens), dtype)
    ctx.log(f"learned parallel decoder: {latents.shape[0]} latents")
    parallel, parallel_per = measure_readout(
        text.manifold,
        latents,
        key=key_dirs,
        rng=rng,
        delta_grid=grid,
        num_directions=config.num_directions,
        chunk_size=config.learned_chunk,
        **stats,
    )
    num_ar = min(config.learned_ar_latents, latents.shape[0])
    ar_latents = latents[:num_ar]
    prefix, _ = text.ar_decode(ar_latents)  # greedy, committed feedback
    graphdef, state = nnx.split(text.autoencoder.ar)
    ar_readouts = [TeacherForcedAR(graphdef, state, jnp.asarray(p)) for p in np.asarray(prefix)]
    ctx.log(f"learned AR decoder: {num_ar} latents")
    ar, ar_per = measure_readout_per_latent(
        ar_readouts,
        ar_latents,
        key=key_dirs,
        rng=rng,
        delta_grid=grid,
        num_directions=config.num_directions,
        **stats,
    )
    images = np.asarray(image.val_images)[
        _pick(key_image, image.val_images.shape[0], config.learned_image_latents)
    ]
    image_latents = jnp.asarray(image.encode(images), dtype)
    ctx.log(f"learned image decoder: {image_latents.shape[0]} latents")
    img, img_per = measure_readout(
        image.manifold,
        image_latents,
        key=key_dirs,
        rng=rng,
        delta=config.learned_image_delta,
        delta_grid=grid,
        num_directions=config.num_directions,
        **stats,
    )
    margins = np.asarray(_margins(text.manifold, latents))
    ratios = {
        name: median_ratio_interval(per["tv"], img_per["euclidean"], rng=rng, **stats)
        for name, per in (("parallel", parallel_per), ("ar", ar_per))
    }
    metrics = {
        "scale": worlds.scale,
        "text": {
            "parallel": parallel,
            "ar": ar,
            "num_latents": int(latents.shape[0]),
            "num_ar_latents": int(num_ar),
            "latent_shape": list(text.latent_shape),
            "vocab_size": int(text.vocab.size),
            "median_margin_parallel": float(np.median(margins)),
            "ar_prefix_accuracy": float(np.mean(np.asarray(prefix) == tokens[:num_ar])),
        },
        "image": {
            "decoder": img,
            "num_latents": int(image_latents.shape[0]),
            "latent_shape": list(image.latent_shape),
            "delta": config.learned_image_delta,
        },
        "ratios": ratios,
        "models": few_step.learned_model_summary(worlds),
        "wall_seconds": time.perf_counter() - wall_start,
        "cpu_seconds": time.process_time() - cpu_start,
    }
    claims = [
        _learned_ratio_claim(config, "parallel", metrics, worlds.scale),
        _learned_ratio_claim(config, "ar", metrics, worlds.scale),
        _learned_image_claim(config, metrics, worlds.scale),
    ]
    per_latent = {
        "parallel": parallel_per["tv"],
        "ar": ar_per["tv"],
        "image": img_per["euclidean"],
    }
    return {"metrics": metrics, "claims": claims, "per_latent": per_latent}


_DECODER_NAMES = {
    "parallel": "parallel",
    "ar": "autoregressive (teacher-forced on its own greedy decode)",
}


def _learned_ratio_claim(config: Config, which: str, metrics: dict[str, Any], scale: str) -> Claim:
    r = metrics["ratios"][which]
    t = metrics["text"][which]["tv"]
    i = metrics["image"]["decoder"]["euclidean"]
    length, width = metrics["text"]["latent_shape"]
    return _framework.claim_from_interval(
        CLAIM,
        f"learned text decoder ({_DECODER_NAMES[which]}, {scale} models, L = {length}, "
        f"d = {width}) vs learned image decoder (digits, d = "
        f"{metrics['image']['latent_shape'][0]}), encoded validation latents: median "
        f"DABI(text, TV at δ = 2·d) / median DABI(image, Euclidean at δ = "
        f"{config.learned_image_delta:g}) > {config.sharp_threshold:g}",
        measured=r["ratio"],
        interval=(r["ci_low"], r["ci_high"]),
        predicted=config.sharp_threshold,
        tolerance=0.0,
        rule="above",
        detail=(
            f"95% bootstrap interval over both sets of latents. Text: {_fmt_cell(t)}, "
            f"{100 * t['fraction_infinite']:.0f}% of positions with DABI = ∞ (no isotropic "
            f"direction changed the float32 decoder's output), {t['num']} latents × "
            f"{length} positions"
            + (
                f"; median margin {metrics['text']['median_margin_parallel']:.3g} nats"
                if which == "parallel"
                else f"; greedy decode = the encoded text at "
                f"{100 * metrics['text']['ar_prefix_accuracy']:.0f}% of positions"
            )
            + f". Image: {_fmt_cell(i)}, {i['num']} latents."
        ),
    )


def _learned_image_claim(config: Config, metrics: dict[str, Any], scale: str) -> Claim:
    s = metrics["image"]["decoder"]["euclidean"]
    lin = metrics["image"]["decoder"]["linearized"]
    return _framework.claim_from_interval(
        CLAIM,
        f"learned image decoder (digits, {scale} models, d = "
        f"{metrics['image']['latent_shape'][0]}), encoded validation latents: median DABI "
        f"(Euclidean at δ = {config.learned_image_delta:g}) ≈ 1, within "
        f"{config.smooth_predicted:g} ± {config.smooth_tolerance:g}",
        measured=s["median"],
        interval=(s["ci_low"], s["ci_high"]),
        predicted=config.smooth_predicted,
        tolerance=config.smooth_tolerance,
        rule="within",
        detail=(
            f"{_fmt_cell(s)}; linearised |J n̂|/sqrt(mean |J u|²): {_fmt_cell(lin)} (at "
            "linear order sqrt(d / stable rank of the decoder Jacobian))."
        ),
    )


@plotting.styled
def learned_figure(data: dict[str, Any], per_latent: dict[str, np.ndarray], threshold: float):
    """Left: per-latent primary DABI of the learned decoders (text: every position; log
    scale; ∞ drawn at the top edge). Right: median of every variant per decoder."""
    fig, axes = plotting.new_figure(1, 2, panel_size=(4.8, 3.6))
    ax = axes[0, 0]
    labels = ["text: parallel", "text: AR", "image"]
    finite_all = np.concatenate(
        [v[np.isfinite(v) & (v > 0)].ravel() for v in per_latent.values()] + [np.ones(1)]
    )
    top = 10 ** np.ceil(np.log10(finite_all.max() * 3))
    for i, name in enumerate(("parallel", "ar", "image")):
        v = np.asarray(per_latent[name], float).ravel()
        v = v[~np.isnan(v)]
        shown = np.where(np.isinf(v), top, v)
        shown = shown[shown > 0]
        jitter = np.random.default_rng(i).uniform(-0.25, 0.25, shown.size)
        ax.plot(i + jitter, shown, ".", alpha=0.3, color=f"C{i}", markersize=3)
        med = np.nanquantile(v, 0.5, method="inverted_cdf") if v.size else np.nan
        if np.isfinite(med) and med > 0:
            ax.plot([i - 0.35, i + 0.35], [med, med], "k-", linewidth=2)
    ax.axhline(
        threshold, color="C3", linestyle="--", linewidth=0.8, label=f"threshold {threshold:g}"
    )
    ax.axhline(1.0, color="0.3", linewidth=0.8, label="isotropic (1)")
    ax.set_yscale("log")
    ax.set_xticks(range(3), labels)
    plotting.label_axes(
        ax,
        "decoder",
        "DABI per latent (position)",
        yunit="1",
        title="learned decoders, primary setting (— median)",
    )
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    rows = (
        ("text: parallel", data["text"]["parallel"], CATEGORICAL_VARIANTS),
        ("text: AR", data["text"]["ar"], CATEGORICAL_VARIANTS),
        ("image", data["image"]["decoder"], SMOOTH_VARIANTS),
    )
    xticks, xlabels, missing = [], [], []
    x = 0
    for i, (label, summary, variants) in enumerate(rows):
        for v in variants:
            cell = summary[v]
            med = cell["median"]
            if np.isfinite(med) and med > 0:
                lo, hi = cell["q25"], cell["q75"] if np.isfinite(cell["q75"]) else med
                ax.errorbar(
                    [x], [med], yerr=[[med - lo], [max(hi - med, 0)]], fmt="o", color=f"C{i}"
                )
            else:
                missing.append(f"{label} {v}: median {med:.3g}")
            xticks.append(x)
            xlabels.append(v)
            x += 1
        x += 1
    if missing:
        ax.text(
            0.02,
            0.98,
            "not drawn (∞: no isotropic direction changed it):\n" + "\n".join(missing),
            transform=ax.transAxes,
            va="top",
            fontsize=6,
        )
    ax.axhline(threshold, color="C3", linestyle="--", linewidth=0.8)
    ax.axhline(1.0, color="0.3", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(xticks, xlabels, rotation=60, fontsize=7)
    plotting.label_axes(
        ax,
        "variant (parallel | AR | image)",
        "median DABI (quartile bars)",
        yunit="1",
        title="every DABI variant",
    )
    return fig


# ---------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------
def _strip(cells):
    return [{k: v for k, v in c.items() if k != "per_latent"} for c in cells]


def measure(config: Config, ctx: RunContext) -> Measurement:
    """DABI of categorical (β × n), smooth and token-world readouts; C2 verdicts."""
    precision = jax.enable_x64(True) if config.use_float64 else contextlib.nullcontext()
    with precision:
        return _measure(config, ctx)


def _measure(config: Config, ctx: RunContext) -> Measurement:
    key_world, key_data, key_dirs, key_decoder, key_token = jr.split(ctx.key(), 5)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 2]))
    stats = {"num_bootstrap": config.num_bootstrap, "confidence": config.confidence}
    grid = tuple(g * config.std for g in config.delta_grid) or None
    dims = list(config.dims)
    categorical, mlp, identity, dense = [], [], [], []
    arrays: dict[str, np.ndarray] = {}
    for n in ctx.progress(dims, desc="dimensions"):
        world = make_mixture(config, n, jr.fold_in(key_world, n))
        latents, _ = world.sample_data(jr.fold_in(key_data, n), config.num_latents)
        key_n = jr.fold_in(key_dirs, n)
        ctx.log(f"n = {n}: categorical sweep over β")
        cells = measure_sharpness_sweep(
            world,
            latents,
            config.sharpness,
            key=key_n,
            rng=rng,
            delta_grid=grid,
            num_directions=config.num_directions,
            **stats,
        )
        categorical.append(cells)
        arrays[f"tv_n{n}"] = np.stack([c["per_latent"]["tv"] for c in cells])
        decoder = SmoothDecoder.random_tanh(
            jr.fold_in(key_decoder, n),
            n,
            hidden=config.decoder_hidden,
            pixels=config.decoder_pixels,
            gain=config.decoder_gain,
            input_scale=_mixture_input_scale(world),
        )
        smooth_delta = config.smooth_delta * config.std
        smooth_latents = latents[: config.num_smooth_latents]
        summary, per_latent = measure_readout(
            decoder,
            smooth_latents,
            key=key_n,
            rng=rng,
            delta=smooth_delta,
            delta_grid=grid,
            num_directions=config.num_directions,
            **stats,
        )
        mlp.append(summary)
        arrays[f"mlp_n{n}"] = per_latent["euclidean"]
        sub = smooth_latents[: config.num_dense]
        dense.append(
            {
                "dense_median": float(np.median(dense_linearized_dabi(decoder, sub))),
                "linearized_median": float(np.median(per_latent["linearized"][: sub.shape[0]])),
                "num": int(sub.shape[0]),
            }
        )
        linear = SmoothDecoder.isometric(
            n, hidden=config.decoder_hidden, pixels=config.decoder_pixels
        )
        summary, _ = measure_readout(  # same static settings as above: one compile
            linear,
            smooth_latents,
            key=key_n,
            rng=rng,
            delta=smooth_delta,
            delta_grid=grid,
            num_directions=config.num_directions,
            **stats,
        )
        identity.append(summary)

    token = None
    if config.include_tokens:
        ctx.log("token-sequence world")
        token_world, token_cells = measure_token_world(config, key=key_token, rng=rng)
        arrays["token_tv"] = np.stack([c["per_latent"]["tv"] for c in token_cells])
        token = {
            "cells": _strip(token_cells),
            "verdict_index": _token_verdict_index(config, token_cells),
            "latent_size": token_world.length * token_world.dim,
            "vocab_size": token_world.vocab_size,
        }

    slopes = {
        v: _slope_fits(dims, categorical, v, config.confidence)
        for v in ("tv", "kl", "flip", "linearized")
    }
    slopes_smooth = {}
    for name, cells in (("mlp", mlp), ("identity", identity)):
        med = np.array([c["euclidean"]["median"] for c in cells])
        if len(dims) >= 3 and np.all(np.isfinite(med) & (med > 0)):
            fit = _framework.fit_power_law(dims, med, confidence=config.confidence)
            slopes_smooth[name] = {
                "slope": fit.slope,
                "ci_low": fit.ci_low,
                "ci_high": fit.ci_high,
                "r_squared": fit.r_squared,
            }
    data = {
        "dims": dims,
        "sharpness": list(config.sharpness),
        "threshold": config.sharp_threshold,
        "categorical": [_strip(c) for c in categorical],
        "mlp": mlp,
        "identity": identity,
        "mlp_dense_prediction": dense,
        "token": token,
        "slopes": slopes,
        "slopes_smooth": slopes_smooth,
        "references": {
            "sharp_limit": [sharp_limit_dabi(n) for n in dims],
            "soft_limit": [soft_limit_dabi(n) for n in dims],
            "predicted_soft_slope": 0.5,
        },
        "dtype": str(latents.dtype),
    }
    claims = [_sharp_claim(config, n, cells) for n, cells in zip(dims, categorical, strict=True)]
    if token is not None:
        claims.append(token_claim(config, token_world, token_cells))
    claims.append(_smooth_claim(config, dims, mlp, identity, dense))
    learned = None
    if config.learned_scale is not None:
        learned = measure_learned(config, ctx, key=jr.fold_in(key_world, 7), rng=rng)
        claims += learned["claims"]
        data["learned"] = learned["metrics"]
        arrays.update({f"learned_{k}": v for k, v in learned["per_latent"].items()})

    ctx.save_figure(dimension_figure(data), "dabi_vs_dimension.png")
    ctx.save_figure(variants_figure(data), "dabi_variants.png")
    if grid is not None:
        ctx.save_figure(delta_grid_figure(data), "dabi_delta_grid.png")
    if learned is not None:
        ctx.save_figure(
            learned_figure(learned["metrics"], learned["per_latent"], config.sharp_threshold),
            "dabi_learned.png",
        )
    ctx.save_arrays("dabi_primary.npz", sharpness=np.asarray(config.sharpness), **arrays)
    return Measurement(data, claims)


def run(config: Config, out_dir: Any = "results", seed: int | None = None) -> dict[str, Any]:
    """Run the experiment and write ``<out_dir>/readout_sharpness/result.json`` and figures."""
    return _framework.run_experiment(sys.modules[__name__], config, out_dir, seed)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.readout_sharpness [--scale quick|full] [--out DIR] [--seed N]``."""
    return _framework.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
