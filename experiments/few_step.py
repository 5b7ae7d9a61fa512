"""Claim C3a (SPEC §1): at few steps K, deterministic ODE sampling garbles text; SDE and
re-injection do not. Exact part: every built-in sampler on exact token-sequence worlds.

**Worlds.** (1) ``text``: the `TokenSequence` world of character bigrams estimated from
real English text (`TokenSequence.from_text`, the CPython documentation topics): V = 32
characters, L = 16 positions, d = 8, within-token spread τ = 0.5, embeddings 8τ apart
(RMS). (2) ``text_zipf``: the same world with R = 96 rare tokens (Zipf shares,
`with_zipf_vocabulary`) whose embeddings lie between the frequent ones, as in real
decoders, so that an in-between latent reads as a rare token. To share one compiled
program, ``text`` is stored over the same V + R vocabulary with the R extra tokens at
probability exactly 0 (:func:`pad_vocabulary`; the same chain, denoiser and readout).
Each is run with the *exact* posterior-mean denoiser and with a *regularity-limited*
one (`resp_floor`: token responsibilities computed at the emission variance v + f·τ²
instead of v, `Config.limited_floor` = f, `limited_scale` = κ: at κ·v + f·τ²). The
limited denoiser cannot be sharper than a token's own spread at the data end, as a
network of bounded Lipschitz constant cannot (SPEC §3.3). (3) ``smooth``: a Gaussian
mixture with the frequent-token embeddings as means, the unigram weights and τ, read by
the identity (``readout_kind="smooth"``): the same latent geometry with an image-like
readout (no `margin_gated`, which needs a categorical readout).

**Sampling.** Every built-in sampler (euler, ddim, heun, dpmpp_2m | ddim_eta,
euler_maruyama | churn, restart, renoise_rf, margin_gated; library default
hyperparameters) at each K on one grid: uniform in t from `t_max` = 0.995 (so that
euler_maruyama has α > 0) to `t_min`, with the posterior-mean terminal step. ``renoise_rf``
needs the rectified-flow schedule: it runs on a rectified-flow *copy* of each world (same
data, same exact denoiser, schedule α = 1 − t, σ = t), next to ``euler_rf``, Euler on that
copy (γ = 0 of renoise_rf), its matched ODE. Initial latents are drawn from the exact
marginal at t_max (z = α·x0 + σ·ε for fresh data x0); all samplers and denoisers of a
world see the same x0, ε and sampler key (common random numbers). A K-agnostic driver
(:func:`sample_steps`) runs the samplers' own `init`/`step` with the same per-example
and per-step keys as `readout_jax.sample`, so that one compilation serves every K
(the harness compiles once per K: ≈ 2.5 s of CPU per sampler and K on this world); the
tests check that the two agree.

**Measured, per world, sampler and K** (N sampled sequences of length L):

- *perplexity* exp(mean per-token NLL) of the read-out tokens (argmax of the Bayes
  logits of the terminal output) under the true chain — exact, no evaluator — with the
  standard error of the mean per-token NLL over sequences;
- *entropy*: the first-order Markov (bigram) plug-in estimate of the per-token entropy
  of the sampled sequences, Ĥ = [H(Y_1) + (L − 1)·H(Y_(i+1) | Y_i)]/L from the counts of
  first tokens and of bigrams pooled over positions, each entropy with the Miller–Madow
  correction (nats/token); also the pooled unigram entropy;
- the data's own references: the chain's exact entropy rate and perplexity
  (`entropy_rate`, `data_perplexity`), and — what an exact sampler would produce — the
  perplexity and Ĥ of the read-out *clean data latents* (an independent draw of N);
- *sharpened*: perplexity below the read-out data's by more than 1.96 combined standard
  errors (lower perplexity from sharpening, not from better samples); *below_chain*:
  perplexity below the chain's own exp(entropy rate);
- *off-mode fraction*: positions whose terminal latent x_i is far from every token
  embedding, min_y |x_i − E_y|²/τ² > d + c·sqrt(2d) (c = `off_mode_num_std` = 4; a
  χ²_d data latent exceeds it with probability ≈ 2·10⁻³ at d = 8);
- NFE per sample and, for margin_gated, the normal draws used per latent coordinate
  and step (relative to ddim_eta's).

On the smooth world: the nearest-mode error min_m |x − μ_m|²/(d·τ²) (≈ 1 for data),
the off-mode fraction, and the Fréchet distance between Gaussian fits of samples and
data (an FID analogue in latent space).

**Verdict (stated up front).** At K* = `verdict_steps` = 4, on each token world and
denoiser: R = ppl(best ODE)/ppl(best admissible escape), the ODE class being euler, ddim,
heun, dpmpp_2m and euler_rf, the escapes ddim_eta, euler_maruyama, churn, restart,
margin_gated and renoise_rf; "best" is the lowest perplexity; an escape is admissible
only if its entropy is not collapsed, Ĥ ≥ (1 − `entropy_tolerance`)·Ĥ_data with
entropy_tolerance = 0.1 (same estimator, same N), so that a perplexity lowered by
sharpening does not count as better. log R is the mean of the paired per-sequence NLL
differences (common random numbers), with its standard error. The claim (ODE *far*
worse) holds iff the 95% lower confidence bound R·exp(−1.96·se) ≥ `ratio_threshold` =
1.5. Both "best" rows are picked on the same samples that score them (a small optimistic
bias on each side); the detail names the pair, and also reports R at equal NFE (rows with
one denoiser evaluation per step) and for the matched pair ddim/ddim_eta. If the claim
fails with the exact denoiser it is reported as not held, and the regularity-limited rows
show what the claim needs; a descriptive sweep at K* over floors f and scales κ
(`regularity_sweep`, Zipf world) traces R against the denoiser's regularity.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from experiments import _framework
from experiments._framework import Claim, Measurement, RunContext
from readout_jax import harness, plotting, samplers, schedules
from readout_jax._types import Array, Float, Int, Key
from readout_jax.manifolds import GaussianMixture, TokenSequence, has_logits

__all__ = [
    "NAME",
    "CLAIM",
    "ODE_SAMPLERS",
    "SDE_SAMPLERS",
    "HYBRID_SAMPLERS",
    "ALL_SAMPLERS",
    "RF_SAMPLERS",
    "RF_BASELINE",
    "Config",
    "TokenWorlds",
    "WorldResult",
    "Samples",
    "make_token_worlds",
    "make_smooth_world",
    "pad_vocabulary",
    "limited",
    "rectified_flow_copy",
    "padded_grid",
    "initial_latents",
    "sample_steps",
    "markov_entropy",
    "unigram_entropy",
    "off_mode_fraction",
    "mode_centres",
    "frechet_distance",
    "measure_world",
    "ratio_at_steps",
    "pair_ratio",
    "measure",
    "run",
    "main",
]

NAME = "few_step"
CLAIM = "C3a"
ODE_SAMPLERS = ("euler", "ddim", "heun", "dpmpp_2m")
SDE_SAMPLERS = ("ddim_eta", "euler_maruyama")
HYBRID_SAMPLERS = ("churn", "restart", "renoise_rf", "margin_gated")
ALL_SAMPLERS = ODE_SAMPLERS + SDE_SAMPLERS + HYBRID_SAMPLERS
#: Samplers that run on the rectified-flow copy of a world.
RF_SAMPLERS = ("renoise_rf",)
#: The ODE run beside them on the same copy (γ = 0 of renoise_rf), as row "euler_rf".
RF_BASELINE = "euler"
_RF_SUFFIX = "_rf"


@dataclasses.dataclass(frozen=True)
class Config:
    """Configuration of the few-step experiment (module docstring: what is measured).

    Attributes:
        seed: run seed (worlds' embeddings, data, initial latents, sampler noise).
        num_steps: the step counts K.
        samplers: built-in sampler names (subset of ``ALL_SAMPLERS``).
        num_samples: N sequences (or smooth samples) per world, sampler and K.
        length, dim, std, vocab_size, separation, smoothing: L, d, τ, V, the RMS
            embedding distance in units of τ, and the bigram smoothing of the text world.
        num_rare_tokens, zipf_exponent, rare_share: the Zipf vocabulary (R rare tokens).
        limited_floor: f of the regularity-limited denoiser (variance floor f·τ²).
        limited_scale: κ of the regularity-limited denoiser.
        regularity_sweep: (f, κ) pairs of the descriptive regularity sweep at K* on the
            Zipf world (not used by the verdict).
        t_max, t_min, grid: the time grid (`readout_jax.time_grid` kind).
        verdict_steps: K* of the verdict.
        ratio_threshold: the verdict's threshold on R = ppl(ODE)/ppl(escape).
        entropy_tolerance: an escape is admissible iff Ĥ ≥ (1 − tol)·Ĥ_data.
        num_se: multiple of the standard error in the confidence bounds.
        off_mode_num_std: c of the off-mode rule d + c·sqrt(2d).
        smooth_world: also run the smooth Gaussian-mixture world.
    """

    seed: int = 0
    num_steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    samplers: tuple[str, ...] = ALL_SAMPLERS
    num_samples: int = 4096
    length: int = 16
    dim: int = 8
    std: float = 0.5
    vocab_size: int = 32
    separation: float = 8.0
    smoothing: float = 0.5
    num_rare_tokens: int = 96
    zipf_exponent: float = 1.0
    rare_share: float = 0.2
    limited_floor: float = 1.0
    limited_scale: float = 1.0
    regularity_sweep: tuple[tuple[float, float], ...] = (
        (0.0, 1.0),
        (0.25, 1.0),
        (0.5, 1.0),
        (1.0, 1.0),
        (2.0, 1.0),
        (4.0, 1.0),
        (0.0, 1.5),
        (0.0, 2.0),
        (0.0, 4.0),
        (0.0, 8.0),
    )
    t_max: float = 0.995
    t_min: float = 1e-3
    grid: str = "uniform"
    verdict_steps: int = 4
    ratio_threshold: float = 1.5
    entropy_tolerance: float = 0.1
    num_se: float = 1.96
    off_mode_num_std: float = 4.0
    smooth_world: bool = True

    def __post_init__(self):
        unknown = [s for s in self.samplers if s not in ALL_SAMPLERS]
        if unknown or not self.samplers:
            raise ValueError(
                f"samplers must be a non-empty subset of {ALL_SAMPLERS}, got {unknown}"
            )
        steps = np.asarray(self.num_steps)
        if steps.ndim != 1 or steps.size < 1 or np.any(steps < 1) or np.any(np.diff(steps) <= 0):
            raise ValueError(f"num_steps must be increasing integers >= 1, got {self.num_steps}")
        if self.verdict_steps not in self.num_steps:
            raise ValueError(
                f"verdict_steps={self.verdict_steps} must be one of num_steps={self.num_steps}"
            )
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {self.num_samples}")
        if self.num_rare_tokens < 1:
            raise ValueError("num_rare_tokens must be >= 1 (the Zipf world)")
        if self.limited_floor < 0 or self.limited_scale < 1:
            raise ValueError("need limited_floor >= 0 and limited_scale >= 1")
        if any(f < 0 or k < 1 for f, k in self.regularity_sweep):
            raise ValueError(
                "regularity_sweep needs (floor >= 0, scale >= 1) pairs, got "
                f"{self.regularity_sweep}"
            )
        if not 0 < self.entropy_tolerance < 1:
            raise ValueError(f"entropy_tolerance must be in (0, 1), got {self.entropy_tolerance}")
        if self.grid not in schedules.GRID_KINDS:
            raise ValueError(f"grid must be one of {schedules.GRID_KINDS}, got {self.grid!r}")

    @classmethod
    def quick(cls) -> Config:
        """≈ 1–2 CPU-minutes: K ≤ 16, N = 512 (compilation is most of it)."""
        return cls(
            num_steps=(1, 2, 4, 8, 16),
            num_samples=256,
            regularity_sweep=((0.0, 1.0), (1.0, 1.0), (4.0, 1.0), (0.0, 2.0), (0.0, 4.0)),
        )

    @classmethod
    def full(cls) -> Config:
        """K up to 64, N = 4096."""
        return cls()


# ---------------------------------------------------------------------------------------
# Worlds
# ---------------------------------------------------------------------------------------
class TokenWorlds(NamedTuple):
    """The two exact token worlds, over one shared vocabulary (so one compilation).

    Attributes:
        text: the bigram world of the V characters, padded with R zero-probability tokens.
        text_zipf: the same chain with R rare Zipf tokens embedded between frequent ones.
        num_frequent: V, the number of character tokens.
    """

    text: TokenSequence
    text_zipf: TokenSequence
    num_frequent: int


def pad_vocabulary(world: TokenSequence, like: TokenSequence) -> TokenSequence:
    """`world` over the larger vocabulary of `like`, the extra tokens at probability 0.

    The first V tokens of `like` must be those of `world` (same embeddings). Extra
    tokens get log-probability −inf in `log_initial` and in every column of
    `log_transition` (their own rows copy row 0, never used), so the chain, the posterior
    marginals and the readout (log p̄ = −inf: never the argmax) are those of `world`.
    In float32 the library floors underflowing message products at `tiny`, so an extra
    token keeps a posterior weight ≤ e^(−87) relative to the others: zero to print
    precision. The point is to share `like`'s shapes and static fields (its vocab), hence
    its compiled samplers.

    Raises:
        ValueError: if the first V embeddings differ or `like` is not larger.
    """
    num, total = world.vocab_size, like.vocab_size
    if total <= num or not np.allclose(
        np.asarray(like.embeddings[:num]), np.asarray(world.embeddings)
    ):
        raise ValueError("like must extend world's vocabulary with world's embeddings first")
    log_t = np.full((total, total), -np.inf)
    log_t[:num, :num] = np.asarray(world.log_transition, np.float64)
    log_t[num:, :num] = log_t[0, :num]
    log_i = np.full((total,), -np.inf)
    log_i[:num] = np.asarray(world.log_initial, np.float64)
    dtype = world.embeddings.dtype
    return dataclasses.replace(
        like,
        log_initial=jnp.asarray(log_i, dtype),
        log_transition=jnp.asarray(log_t, dtype),
        resp_scale=world.resp_scale,
        resp_floor=world.resp_floor,
    )


def make_token_worlds(config: Config, key: Key) -> TokenWorlds:
    """The ``text`` and ``text_zipf`` worlds of the module docstring (exact denoisers)."""
    kwargs = dict(
        length=config.length,
        dim=config.dim,
        std=config.std,
        key=key,
        vocab_size=config.vocab_size,
        smoothing=config.smoothing,
        separation=config.separation,
    )
    plain = TokenSequence.from_text(**kwargs)
    zipf = TokenSequence.from_text(
        **kwargs,
        num_rare_tokens=config.num_rare_tokens,
        zipf_exponent=config.zipf_exponent,
        rare_share=config.rare_share,
    )
    return TokenWorlds(pad_vocabulary(plain, zipf), zipf, plain.vocab_size)


def make_smooth_world(token_world: TokenSequence, num_frequent: int) -> GaussianMixture:
    """A smooth-readout mixture: means = the frequent embeddings, weights = unigram, std τ."""
    weights = np.exp(np.asarray(token_world.log_unigram[:num_frequent], np.float64))
    weights = weights / weights.sum()
    dtype = token_world.embeddings.dtype
    return GaussianMixture(
        token_world.embeddings[:num_frequent],
        jnp.asarray(weights, dtype),
        token_world.std,
        token_world.schedule,
        readout_kind="smooth",
    )


def limited(world: Any, floor: float, scale: float = 1.0) -> Any:
    """The regularity-limited denoiser: responsibilities at variance κ·v + floor·τ².

    Works for `TokenSequence` (resp_scale, resp_floor) and, with floor = 0, for
    `GaussianMixture` (resp_scale).
    """
    changes: dict[str, Any] = {"resp_scale": jnp.asarray(scale, world.std.dtype)}
    if floor:
        if not hasattr(world, "resp_floor"):
            raise ValueError(f"{type(world).__name__} has no resp_floor")
        changes["resp_floor"] = jnp.asarray(floor * float(world.std) ** 2, world.std.dtype)
    elif hasattr(world, "resp_floor"):
        changes["resp_floor"] = jnp.zeros((), world.std.dtype)
    return dataclasses.replace(world, **changes)


def rectified_flow_copy(world: Any) -> Any:
    """The same world (data, exact denoiser, readout) on the rectified-flow schedule."""
    return dataclasses.replace(world, schedule=schedules.RectifiedFlow())


# ---------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------
def padded_grid(
    schedule: Any, num_steps: int, max_steps: int, *, kind: str, t_min: float, t_max: float
) -> tuple[Float[Array, " K_plus_1"], Float[Array, " max_steps_plus_1"]]:
    """`time_grid(schedule, K)` and the same grid padded to `max_steps` + 1 entries.

    The padding repeats t_min; :func:`sample_steps` never reads past entry K.
    """
    ts = schedules.time_grid(schedule, num_steps, kind, t_min=t_min, t_max=t_max)
    pad = jnp.full((max_steps - num_steps,), ts[-1], ts.dtype)
    return ts, jnp.concatenate([ts, pad])


def initial_latents(
    world: Any, x0: Float[Array, " N *latent"], eps: Float[Array, " N *latent"], t: float
) -> Float[Array, " N *latent"]:
    """z = α(t)·x0 + σ(t)·ε: a draw from the exact marginal at time t (x0 from the data)."""
    t_arr = jnp.asarray(t, x0.dtype)
    return world.schedule.alpha(t_arr) * x0 + world.schedule.sigma(t_arr) * eps


@jax.jit
def _sample_padded(sampler, manifold, key, x_init, ts, num_steps):
    ts = ts.astype(x_init.dtype)
    max_steps = ts.shape[0] - 1
    keys = harness.chain_keys(key, x_init.shape[0])

    def one_chain(chain_key, x):
        # Under partitionable threefry (JAX's default), split(k, n)[i] does not depend on
        # n: these are the step keys of `readout_jax.sample` with K = num_steps.
        step_keys = jr.split(chain_key, max_steps)

        def body(k, carry):
            state, nfe, draws = carry
            state, info = sampler.step(step_keys[k], state, manifold, ts[k + 1])
            nfe = nfe + jnp.asarray(info.nfe, jnp.int32)
            draws = draws + jnp.asarray(getattr(info, "num_draws", 0), jnp.int32)
            return state, nfe, draws

        zero = jnp.zeros((), jnp.int32)
        carry = (sampler.init(x, ts[0]), zero, zero)
        state, nfe, draws = jax.lax.fori_loop(0, num_steps, body, carry)
        return manifold.denoise(state.x, ts[num_steps]), nfe, draws

    return jax.vmap(one_chain)(keys, x_init)


class Samples(NamedTuple):
    """Output of :func:`sample_steps` (numpy).

    Attributes:
        x0: (N, *latent) posterior-mean terminal outputs (what `sample(...).x0` returns).
        nfe: (N,) denoiser evaluations per sample.
        draws: (N,) standard-normal numbers used per sample.
    """

    x0: np.ndarray
    nfe: np.ndarray
    draws: np.ndarray


def sample_steps(
    sampler: Any,
    world: Any,
    key: Key,
    x_init: Float[Array, " N *latent"],
    ts: Float[Array, " K_plus_1"],
    ts_padded: Float[Array, " max_steps_plus_1"],
) -> Samples:
    """`readout_jax.sample(sampler, world, key, x_init, ts).x0`, compiled once for every K.

    Validates exactly as the harness (`harness.check_sample_inputs`, including the
    sampler's own `validate`), then runs K = len(ts) − 1 steps of `sampler.step` in a
    `fori_loop` with a traced trip count over `ts_padded` (whose first K + 1 entries are
    `ts`), with the harness's per-example keys (`harness.chain_keys`) and per-step keys
    `jr.split(chain_key, ·)[k]`. Under JAX's default partitionable threefry these equal
    the harness's keys, so the result is that of `readout_jax.sample`.

    Args:
        sampler, world, key, x_init: as for `readout_jax.sample`.
        ts: (K + 1,) the grid.
        ts_padded: (K_max + 1,) the grid padded (e.g. by :func:`padded_grid`).
    """
    num_steps = int(np.shape(ts)[0]) - 1
    harness.check_sample_inputs(sampler, world, x_init, ts)
    if not np.array_equal(np.asarray(ts_padded[: num_steps + 1]), np.asarray(ts)):
        raise ValueError("ts_padded must start with ts")
    x0, nfe, draws = _sample_padded(
        sampler,
        world,
        harness._as_key(key),
        jnp.asarray(x_init),
        jnp.asarray(ts_padded),
        jnp.asarray(num_steps, jnp.int32),
    )
    return Samples(np.asarray(x0), np.asarray(nfe), np.asarray(draws))


# ---------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------
def _entropy_mm(counts: np.ndarray) -> float:
    """Miller–Madow entropy (nats) of a histogram: plug-in + (m − 1)/(2n)."""
    counts = np.asarray(counts, np.float64).ravel()
    n = counts.sum()
    nz = counts[counts > 0]
    if n <= 0:
        return float("nan")
    p = nz / n
    return float(-np.sum(p * np.log(p)) + (nz.size - 1) / (2.0 * n))


def markov_entropy(tokens: Int[np.ndarray, " N L"], vocab_size: int) -> float:
    """First-order Markov estimate of the per-token entropy of token sequences (nats).

    Ĥ = [H(Y_1) + (L − 1)·(H(Y_i, Y_(i+1)) − H(Y_i))]/L, each H a Miller–Madow estimate
    from counts pooled over positions (first tokens; bigrams; their first elements).
    For samples of a stationary first-order chain this estimates its entropy rate; for
    any sampler it is (up to estimation bias) an upper bound of its per-token entropy.
    Compare it with the same estimator on data of the same size.
    """
    tokens = np.asarray(tokens, np.int64)
    num, length = tokens.shape
    first = _entropy_mm(np.bincount(tokens[:, 0], minlength=vocab_size))
    if length == 1:
        return first
    prev, nxt = tokens[:, :-1].ravel(), tokens[:, 1:].ravel()
    joint = _entropy_mm(np.bincount(prev * vocab_size + nxt, minlength=vocab_size**2))
    cond = joint - _entropy_mm(np.bincount(prev, minlength=vocab_size))
    return float((first + (length - 1) * cond) / length)


def unigram_entropy(tokens: Int[np.ndarray, " N L"], vocab_size: int) -> float:
    """Miller–Madow entropy (nats) of the token frequencies pooled over positions."""
    return _entropy_mm(np.bincount(np.asarray(tokens).ravel(), minlength=vocab_size))


def _min_sq_distance(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """min_m |x − c_m|² over the last axis of x (..., d) and centres (M, d)."""
    x = np.asarray(x, np.float64)
    c = np.asarray(centres, np.float64)
    sq = np.sum(x**2, -1)[..., None] - 2.0 * x @ c.T + np.sum(c**2, -1)
    return np.maximum(sq.min(axis=-1), 0.0)


def off_mode_fraction(
    x: Float[np.ndarray, " N *positions d"], centres: np.ndarray, std: float, num_std: float
) -> tuple[float, float, np.ndarray]:
    """Fraction of positions with min_m |x − c_m|²/τ² > d + num_std·sqrt(2d).

    Returns:
        (fraction, its standard error over samples, (N, *positions) indicator).
    """
    d = x.shape[-1]
    sq = _min_sq_distance(x, centres) / std**2
    ind = sq > d + num_std * math.sqrt(2.0 * d)
    per_sample = ind.reshape(ind.shape[0], -1).mean(axis=1)
    return float(per_sample.mean()), float(per_sample.std(ddof=1) / math.sqrt(len(per_sample))), ind


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """|m_x − m_y|² + tr(C_x + C_y − 2(C_x^½ C_y C_x^½)^½) between Gaussian fits (FID form)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = np.linalg.eigh(cx)
    root_x = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = np.linalg.eigvalsh(root_x @ cy @ root_x)
    cross = np.sum(np.sqrt(np.clip(inner, 0.0, None)))
    return float(np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(cx) + np.trace(cy) - 2 * cross)


@jax.jit
def _readout_batch(world, x):
    return jax.vmap(world.readout)(x)


@jax.jit
def _log_likelihood_batch(world, tokens):
    return world.log_likelihood(tokens)


def mode_centres(world: Any) -> np.ndarray:
    """(M, d) centres of the categories: the token embeddings of positive probability
    (`TokenSequence`) or the mixture means (`GaussianMixture`)."""
    if hasattr(world, "embeddings"):
        keep = np.isfinite(np.asarray(world.log_unigram))
        return np.asarray(world.embeddings)[keep]
    return np.asarray(world.means)


# ---------------------------------------------------------------------------------------
# One world
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class WorldResult:
    """Everything measured on one world.

    Attributes:
        name: the world's label.
        categorical: whether scores are per-token NLLs (else smooth nearest-mode errors).
        data: the data's own reference values.
        rows: one dict per (sampler, K): the table.
        scores: (sampler, K) → (N,) per-sample score (per-token NLL, or nearest-mode
            error), paired across samplers by common random numbers.
        entropy: (sampler, K) → Ĥ (categorical worlds).
    """

    name: str
    categorical: bool
    data: dict[str, Any]
    rows: list[dict[str, Any]]
    scores: dict[tuple[str, int], np.ndarray]
    entropy: dict[tuple[str, int], float]


def _kind(name: str) -> str:
    base = name[: -len(_RF_SUFFIX)] if name.endswith(_RF_SUFFIX) and name != "renoise_rf" else name
    return getattr(samplers.SAMPLERS[base], "kind", "?")


def measure_world(
    name: str,
    world: Any,
    *,
    sampler_names: Sequence[str],
    num_steps: Sequence[int],
    key: Key,
    num_samples: int,
    grid: str = "uniform",
    t_min: float = 1e-3,
    t_max: float = 0.995,
    off_mode_num_std: float = 4.0,
    num_se: float = 1.96,
    log_likelihood_fn: Callable[[Any, np.ndarray], np.ndarray] | None = None,
    max_steps: int | None = None,
    centres: np.ndarray | None = None,
    std: float | None = None,
    progress: Callable | None = None,
) -> WorldResult:
    """Run every sampler at every K on `world` and score the outputs (module docstring).

    Any world with `denoise`, `readout`, `schedule`, `latent_shape` and `sample_data`
    works. A categorical world (`has_logits`) is scored by `log_likelihood_fn(world,
    tokens) -> (N,)` log-likelihoods (default: `world.log_likelihood`, exact for
    `TokenSequence`; a learned world passes its evaluator LM here); a smooth world by its
    nearest-mode error against the category centres. Samplers in ``RF_SAMPLERS`` run on
    :func:`rectified_flow_copy` of the world, with ``RF_BASELINE`` beside them as
    ``euler_rf``. All share the data x0, the noise ε and the sampler key.

    Args:
        name: label.
        world: the world.
        sampler_names: built-in sampler names.
        num_steps: the K values.
        key: the world's key (data, noise, sampler, reference data).
        num_samples: N.
        grid, t_min, t_max: the time grid.
        off_mode_num_std: c of the off-mode rule.
        num_se: multiple of the SE for the sharpening flag.
        log_likelihood_fn: scores of categorical outputs.
        max_steps: length − 1 of the padded grid (default max K); runs with the same
            value share one compilation.
        centres, std: the category centres (M, d) and the spread τ of the off-mode rule
            (default :func:`mode_centres` and `world.std`).
        progress: optional `(iterable, total=, desc=) -> iterable`.

    Returns:
        A :class:`WorldResult`.
    """
    categorical = has_logits(world)
    key_data, key_eps, key_sampler, key_ref = jr.split(key, 4)
    x0, _ = world.sample_data(key_data, num_samples)
    eps = jr.normal(key_eps, x0.shape, x0.dtype)
    x_ref, y_ref = world.sample_data(key_ref, num_samples)
    std = float(world.std if std is None else std)
    centres = mode_centres(world) if centres is None else np.asarray(centres)
    length = int(np.prod(world.latent_shape[:-1])) if categorical else 1
    dim = world.latent_shape[-1]

    if categorical:
        ll_fn = log_likelihood_fn or (
            lambda w, tokens: np.asarray(_log_likelihood_batch(w, tokens))
        )
        vocab = int(jax.eval_shape(world.logits, x0[0]).shape[-1])
        read = np.asarray(_readout_batch(world, x_ref))
        ref_nll = -np.asarray(ll_fn(world, read), np.float64) / length
        ref_log_ppl, ref_se = _framework.mean_with_se(ref_nll)
        data: dict[str, Any] = {
            "readout_perplexity": math.exp(ref_log_ppl),
            "readout_log_perplexity": ref_log_ppl,
            "readout_log_perplexity_se": ref_se,
            "readout_entropy": markov_entropy(read, vocab),
            "readout_unigram_entropy": unigram_entropy(read, vocab),
            "token_error_rate": float(np.mean(read != np.asarray(y_ref))),
            "tokens_entropy": markov_entropy(np.asarray(y_ref), vocab),
        }
        if hasattr(world, "entropy_rate"):
            data["chain_entropy_rate"] = float(world.entropy_rate())
            data["chain_perplexity"] = math.exp(data["chain_entropy_rate"])
    else:
        ref_err = _min_sq_distance(np.asarray(x_ref), centres) / (dim * std**2)
        mean_err, se_err = _framework.mean_with_se(ref_err)
        data = {"nearest_mode_error": mean_err, "nearest_mode_error_se": se_err}
    off, off_se, _ = off_mode_fraction(np.asarray(x_ref), centres, std, off_mode_num_std)
    data["off_mode_fraction"], data["off_mode_fraction_se"] = off, off_se

    runs: list[tuple[str, str, Any]] = []  # (row name, sampler name, world)
    rf_world = None
    for sname in sampler_names:
        if sname in RF_SAMPLERS:
            rf_world = rf_world or rectified_flow_copy(world)
            runs.append((sname, sname, rf_world))
        elif sname == "margin_gated" and not categorical:
            continue  # needs a categorical readout
        else:
            runs.append((sname, sname, world))
    if rf_world is not None:
        runs.append((RF_BASELINE + _RF_SUFFIX, RF_BASELINE, rf_world))
    max_steps = max(num_steps) if max_steps is None else int(max_steps)
    if max_steps < max(num_steps):
        raise ValueError(f"max_steps={max_steps} < max(num_steps)={max(num_steps)}")

    rows: list[dict[str, Any]] = []
    scores: dict[tuple[str, int], np.ndarray] = {}
    entropy: dict[tuple[str, int], float] = {}
    items = runs if progress is None else progress(runs, total=len(runs), desc=f"{name}")
    for row_name, sname, w in items:
        sampler = samplers.get_sampler(sname)
        x_init = initial_latents(w, x0, eps, t_max)
        for k in num_steps:
            ts, ts_pad = padded_grid(w.schedule, k, max_steps, kind=grid, t_min=t_min, t_max=t_max)
            out = sample_steps(sampler, w, key_sampler, x_init, ts, ts_pad)
            off, off_se, _ = off_mode_fraction(out.x0, centres, std, off_mode_num_std)
            row: dict[str, Any] = {
                "sampler": row_name,
                "kind": _kind(row_name),
                "schedule": w.schedule.name,
                "K": int(k),
                "off_mode_fraction": off,
                "off_mode_fraction_se": off_se,
                "nfe": float(out.nfe.mean()),
                "draws_per_coordinate_step": float(
                    out.draws.mean() / (np.prod(world.latent_shape) * k)
                ),
            }
            if categorical:
                tokens = np.asarray(_readout_batch(w, jnp.asarray(out.x0)))
                nll = -np.asarray(ll_fn(w, tokens), np.float64) / length
                log_ppl, se = _framework.mean_with_se(nll)
                h = markov_entropy(tokens, vocab)
                gap = data["readout_log_perplexity"] - log_ppl
                gap_se = math.hypot(se, data["readout_log_perplexity_se"])
                row.update(
                    perplexity=math.exp(log_ppl),
                    log_perplexity=log_ppl,
                    log_perplexity_se=se,
                    entropy=h,
                    entropy_ratio=h / data["readout_entropy"],
                    unigram_entropy=unigram_entropy(tokens, vocab),
                    sharpened=bool(gap > num_se * gap_se),
                    below_chain=bool(
                        "chain_entropy_rate" in data and log_ppl < data["chain_entropy_rate"]
                    ),
                )
                scores[(row_name, int(k))] = nll
                entropy[(row_name, int(k))] = h
            else:
                err = _min_sq_distance(out.x0, centres) / (dim * std**2)
                mean_err, se_err = _framework.mean_with_se(err)
                row.update(
                    nearest_mode_error=mean_err,
                    nearest_mode_error_se=se_err,
                    frechet_distance=frechet_distance(out.x0, np.asarray(x_ref)),
                )
                scores[(row_name, int(k))] = err
            rows.append(row)
    if not categorical:
        data["frechet_distance_data_vs_data"] = frechet_distance(np.asarray(x0), np.asarray(x_ref))
    return WorldResult(name, categorical, data, rows, scores, entropy)


# ---------------------------------------------------------------------------------------
# Verdict
# ---------------------------------------------------------------------------------------
def _ode_rows(result: WorldResult) -> list[str]:
    names = {r["sampler"] for r in result.rows}
    return [n for n in (*ODE_SAMPLERS, RF_BASELINE + _RF_SUFFIX) if n in names]


def _escape_rows(result: WorldResult) -> list[str]:
    names = {r["sampler"] for r in result.rows}
    return [n for n in (*SDE_SAMPLERS, *HYBRID_SAMPLERS) if n in names]


def _score_ratio(result: WorldResult, ode: str, escape: str, k: int) -> tuple[float, float]:
    """(log R, se): paired per-sample scores of two rows at K.

    Categorical: log R = mean(nll_ode − nll_escape) (R a perplexity ratio). Smooth: R is
    the ratio of mean nearest-mode errors, se(log R) by the delta method with the paired
    covariance.
    """
    a, b = result.scores[(ode, k)], result.scores[(escape, k)]
    if result.categorical:
        return _framework.mean_with_se(a - b)
    n = len(a)
    ratio, ratio_se = _framework.ratio_with_se(
        a.mean(),
        a.std(ddof=1) / math.sqrt(n),
        b.mean(),
        b.std(ddof=1) / math.sqrt(n),
        cov=float(np.cov(a, b)[0, 1] / n),
    )
    return math.log(ratio), ratio_se / ratio


def ratio_at_steps(
    result: WorldResult,
    num_steps: int,
    *,
    entropy_tolerance: float,
    equal_nfe: bool = False,
) -> dict[str, Any]:
    """R = ppl(best ODE)/ppl(best admissible escape) at K, with its paired SE.

    R = exp(mean(nll_ODE − nll_escape)) over the common-random-number pairs; escapes are
    admissible iff Ĥ ≥ (1 − entropy_tolerance)·Ĥ_data (not collapsed). With `equal_nfe`,
    only rows that use one denoiser evaluation per step (NFE = K) take part (this drops
    heun, restart).

    Returns:
        dict with ratio, log_ratio, log_ratio_se, best_ode, best_escape, admissible,
        and the reason if no comparison is possible (ratio NaN).

    Raises:
        ValueError: for a smooth world (no perplexity; use :func:`pair_ratio`).
    """
    if not result.categorical:
        raise ValueError("ratio_at_steps needs a categorical world; use pair_ratio")
    k = int(num_steps)
    nfe = {r["sampler"]: r["nfe"] for r in result.rows if r["K"] == k}
    keep = [n for n in nfe if not equal_nfe or nfe[n] <= k]
    odes = [n for n in _ode_rows(result) if n in keep]
    escapes = [n for n in _escape_rows(result) if n in keep]
    floor = (1.0 - entropy_tolerance) * result.data["readout_entropy"]
    admissible = [n for n in escapes if result.entropy[(n, k)] >= floor]
    out: dict[str, Any] = {"K": k, "admissible": admissible, "escapes": escapes}
    if not odes or not admissible:
        why = "no ODE sampler" if not odes else "no admissible (non-collapsed) escape"
        nan = float("nan")
        return {
            **out,
            "ratio": nan,
            "log_ratio": nan,
            "log_ratio_se": nan,
            "best_ode": None,
            "best_escape": None,
            "reason": why,
        }
    best_ode = min(odes, key=lambda n: result.scores[(n, k)].mean())
    best_esc = min(admissible, key=lambda n: result.scores[(n, k)].mean())
    log_ratio, se = _score_ratio(result, best_ode, best_esc, k)
    return {
        **out,
        "ratio": math.exp(log_ratio),
        "log_ratio": log_ratio,
        "log_ratio_se": se,
        "best_ode": best_ode,
        "best_escape": best_esc,
    }


def pair_ratio(
    result: WorldResult, num_steps: int, ode: str = "ddim", escape: str = "ddim_eta"
) -> dict[str, Any]:
    """The matched pair: the same DDIM update without and with ancestral noise (η = 1).

    R = ppl ratio (categorical) or nearest-mode-error ratio (smooth), paired SE; NaN if
    either row is missing.
    """
    k = int(num_steps)
    if (ode, k) not in result.scores or (escape, k) not in result.scores:
        nan = float("nan")
        return {
            "K": k,
            "ode": ode,
            "escape": escape,
            "ratio": nan,
            "log_ratio": nan,
            "log_ratio_se": nan,
        }
    log_ratio, se = _score_ratio(result, ode, escape, k)
    return {
        "K": k,
        "ode": ode,
        "escape": escape,
        "ratio": math.exp(log_ratio),
        "log_ratio": log_ratio,
        "log_ratio_se": se,
    }


def _claim(
    result: WorldResult,
    label: str,
    config: Config,
    smooth: dict | None,
    sweep: Sequence[dict[str, Any]] = (),
) -> Claim:
    """The C3a verdict on one token world (module docstring: the rule)."""
    k = config.verdict_steps
    comp = ratio_at_steps(result, k, entropy_tolerance=config.entropy_tolerance)
    statement = (
        f"{label}: at K = {k} the best deterministic ODE sampler has far higher exact "
        f"perplexity than the best non-collapsed SDE / re-injection sampler "
        f"(R = ppl_ODE/ppl_escape, 95% lower bound >= {config.ratio_threshold:g})"
    )
    if comp["best_ode"] is None:
        return Claim(
            CLAIM,
            statement,
            float("nan"),
            config.ratio_threshold,
            0.0,
            False,
            f"not held: {comp['reason']} at K = {k}",
        )
    ratio, se = comp["ratio"], comp["log_ratio_se"]
    lower = ratio * math.exp(-config.num_se * se)
    rows = {(r["sampler"], r["K"]): r for r in result.rows}
    ode, esc = rows[(comp["best_ode"], k)], rows[(comp["best_escape"], k)]
    detail = (
        f"best ODE {comp['best_ode']} ppl {ode['perplexity']:.3g} (entropy {ode['entropy']:.3f}"
        f" nats, off-mode {ode['off_mode_fraction']:.3f}); best admissible escape "
        f"{comp['best_escape']} ppl {esc['perplexity']:.3g} (entropy {esc['entropy']:.3f}, "
        f"off-mode {esc['off_mode_fraction']:.3f}); data: read-out ppl "
        f"{result.data['readout_perplexity']:.3g}, entropy {result.data['readout_entropy']:.3f}"
        f", chain ppl {result.data.get('chain_perplexity', float('nan')):.3g}. Admissible "
        f"escapes (entropy >= {1 - config.entropy_tolerance:g} x data): "
        f"{comp['admissible']} of {comp['escapes']}. 95% bound: R·exp(−{config.num_se:g}·se)"
        f" = {lower:.3g}, se(log R) = {se:.3g} from paired per-sequence NLLs."
    )
    equal = ratio_at_steps(result, k, entropy_tolerance=config.entropy_tolerance, equal_nfe=True)
    pair = pair_ratio(result, k)
    detail += (
        f" Equal NFE (one evaluation per step): R = {equal['ratio']:.3g} ({equal['best_ode']} "
        f"vs {equal['best_escape']}); matched pair ddim/ddim_eta: R = {pair['ratio']:.3g}."
    )
    if smooth is not None and np.isfinite(smooth.get("ratio", np.nan)):
        detail += (
            f" Smooth world at K = {k}: nearest-mode-error ratio ddim/ddim_eta = "
            f"{smooth['ratio']:.3g}."
        )
    valid = [d for d in sweep if np.isfinite(d["ratio"])]
    if valid:
        top = max(valid, key=lambda d: d["ratio"])
        detail += (
            f" Regularity sweep (Zipf world, K = {k}, {len(valid)} denoisers): R from "
            f"{min(d['ratio'] for d in valid):.3g} to {top['ratio']:.3g} (max at floor "
            f"{top['floor']:g}·τ², scale {top['scale']:g}: {top['best_ode']} vs "
            f"{top['best_escape']})."
        )
    held = bool(np.isfinite(lower) and lower >= config.ratio_threshold)
    if not held:
        kind = "exact posterior-mean" if label.endswith("exact") else "regularity-limited"
        detail += (
            f" So C3a does not hold on this world with the {kind} denoiser: at K = {k} the "
            f"deterministic samplers are not far worse than the escapes (R = {ratio:.3g})."
        )
    verdict = "held" if held else "not held"
    detail = (
        f"{verdict}: lower bound {lower:.3g} {'>=' if held else '<'} {config.ratio_threshold:g}. "
        + detail
    )
    return Claim(
        CLAIM,
        statement,
        ratio,
        config.ratio_threshold,
        0.0,
        held,
        detail,
        (lower, ratio * math.exp(config.num_se * se)),
    )


# ---------------------------------------------------------------------------------------
# Figures (pure: arrays in, Figure out)
# ---------------------------------------------------------------------------------------
_ROW_ORDER = (*ALL_SAMPLERS, RF_BASELINE + _RF_SUFFIX)
_LINESTYLES = {"ode": "-", "sde": "--", "hybrid": ":"}


def _style(row_name: str) -> dict[str, Any]:
    idx = _ROW_ORDER.index(row_name) if row_name in _ROW_ORDER else len(_ROW_ORDER)
    ls = "-." if row_name == RF_BASELINE + _RF_SUFFIX else _LINESTYLES.get(_kind(row_name), "-")
    return {"color": f"C{idx % 10}", "linestyle": ls, "marker": "o", "markersize": 3}


def _series(rows: list[dict[str, Any]], field: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out: dict[str, tuple[list, list]] = {}
    for r in rows:
        ks, vs = out.setdefault(r["sampler"], ([], []))
        ks.append(r["K"])
        vs.append(r[field])
    return {n: (np.asarray(k, float), np.asarray(v, float)) for n, (k, v) in out.items()}


@plotting.styled
def perplexity_figure(panels: dict[str, dict[str, Any]]):
    """Exact perplexity vs K per sampler (log–log), the data's perplexities as lines."""
    n = len(panels)
    ncols = min(n, 2)
    fig, axes = plotting.new_figure(math.ceil(n / ncols), ncols, panel_size=(4.6, 3.6))
    for ax, (label, p) in zip(axes.ravel(), panels.items(), strict=False):
        for name, (ks, ppl) in _series(p["table"], "perplexity").items():
            _, se = _series(p["table"], "log_perplexity_se")[name]
            ax.errorbar(ks, ppl, yerr=2 * ppl * se, label=name, **_style(name))
        sharp = [(r["K"], r["perplexity"]) for r in p["table"] if r["sharpened"]]
        if sharp:
            ax.plot(*np.asarray(sharp).T, "kx", markersize=6, label="sharpened")
        ax.axhline(p["data"]["readout_perplexity"], color="0.3", lw=1.0, label="data (read-out)")
        if "chain_perplexity" in p["data"]:
            ax.axhline(
                p["data"]["chain_perplexity"], color="0.3", lw=1.0, ls="--", label="data (chain)"
            )
        plotting.set_log(ax)
        _plain_log_y(ax)
        plotting.set_log_ticks(ax, sorted({r["K"] for r in p["table"]}))
        plotting.label_axes(
            ax, "steps K", "perplexity under the true chain", xunit="1", yunit="1", title=label
        )
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    axes.ravel()[0].legend(ncol=2, fontsize="x-small")
    return fig


@plotting.styled
def entropy_figure(panels: dict[str, dict[str, Any]], entropy_tolerance: float):
    """Markov entropy estimate of the samples vs K, the data's and the admissibility floor."""
    n = len(panels)
    ncols = min(n, 2)
    fig, axes = plotting.new_figure(math.ceil(n / ncols), ncols, panel_size=(4.6, 3.4))
    for ax, (label, p) in zip(axes.ravel(), panels.items(), strict=False):
        for name, (ks, h) in _series(p["table"], "entropy").items():
            ax.plot(ks, h, label=name, **_style(name))
        h_data = p["data"]["readout_entropy"]
        ax.axhline(h_data, color="0.3", lw=1.0, label="data (read-out, same N)")
        ax.axhline(
            (1 - entropy_tolerance) * h_data,
            color="0.3",
            lw=0.8,
            ls=":",
            label=f"admissible ≥ {1 - entropy_tolerance:g}× data",
        )
        if "chain_entropy_rate" in p["data"]:
            ax.axhline(
                p["data"]["chain_entropy_rate"],
                color="0.3",
                lw=1.0,
                ls="--",
                label="chain entropy rate",
            )
        ax.set_xscale("log")
        plotting.set_log_ticks(ax, sorted({r["K"] for r in p["table"]}))
        plotting.label_axes(
            ax, "steps K", "sample entropy Ĥ", xunit="1", yunit="nats/token", title=label
        )
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    axes.ravel()[0].legend(ncol=2, fontsize="x-small")
    return fig


@plotting.styled
def off_mode_figure(panels: dict[str, dict[str, Any]]):
    """Off-mode fraction vs K (token worlds) and the smooth world's nearest-mode error
    (values below 1e-4, e.g. exactly 0, are drawn at 1e-4)."""
    n = len(panels)
    fig, axes = plotting.new_figure(1, n, panel_size=(4.0, 3.4))
    for ax, (label, p) in zip(axes[0], panels.items(), strict=True):
        smooth = "nearest_mode_error" in p["data"]
        field = "nearest_mode_error" if smooth else "off_mode_fraction"
        top = max(p["data"][field], 1e-3)
        for name, (ks, v) in _series(p["table"], field).items():
            ax.plot(ks, np.maximum(v, 1e-4), label=name, **_style(name))
            top = max(top, float(np.nanmax(v)))
        ax.axhline(max(p["data"][field], 1e-4), color="0.3", lw=1.0, label="data")
        if smooth:
            vals = [v for _, (_, v) in _series(p["table"], field).items() for v in v]
            ax.set_ylim(0.5 * min(min(vals), p["data"][field]), 2 * top)
        else:
            ax.set_ylim(5e-5, 2 * top)  # values are floored at 1e-4 for the log axis
        plotting.set_log(ax)
        plotting.set_log_ticks(ax, sorted({r["K"] for r in p["table"]}))
        ylabel = "nearest-mode error |x − μ|²/(dτ²)" if smooth else "off-mode fraction"
        plotting.label_axes(ax, "steps K", ylabel, xunit="1", yunit="1", title=label)
    axes[0, 0].legend(ncol=2, fontsize="x-small")
    return fig


@plotting.styled
def ratio_figure(
    ratios: dict[str, list[dict[str, Any]]],
    pairs: dict[str, list[dict[str, Any]]],
    sweep: list[dict[str, Any]],
    threshold: float,
    num_se: float,
    verdict_steps: int,
):
    """R vs K: best ODE over best admissible escape, and the matched pair ddim/ddim_eta
    (token and smooth worlds); R at K* vs the denoiser's regularity (κ + f at the data end).
    """
    fig, axes = plotting.new_figure(1, 3, panel_size=(4.2, 3.4))

    seen: dict[Any, list[float]] = {}  # axis -> finite values drawn (for the limits)
    seen_x: dict[Any, list[float]] = {}

    def draw(ax, x, items, **kwargs):
        r = np.asarray([d["ratio"] for d in items], float)
        se = np.asarray([d["log_ratio_se"] for d in items], float)
        lo, hi = r * np.exp(-num_se * se), r * np.exp(num_se * se)
        ax.errorbar(np.asarray(x, float), r, yerr=[r - lo, hi - r], marker="o", capsize=2, **kwargs)
        vals = np.concatenate([lo, hi, r])
        seen.setdefault(ax, []).extend(vals[np.isfinite(vals) & (vals > 0)].tolist())
        seen_x.setdefault(ax, []).extend(float(v) for v in x)

    def finish(ax, xlabel, ylabel, xunit, title, ticks=None):
        ax.axhline(threshold, color="0.3", ls="--", lw=1.0, label=f"threshold {threshold:g}")
        ax.axhline(1.0, color="0.3", lw=0.6)
        vals = [*seen.get(ax, []), threshold, 1.0]
        ax.set_ylim(0.8 * min(vals), 1.25 * max(vals))  # also when every ratio is NaN
        xs = seen_x.get(ax) or [1.0]
        ax.set_xlim(0.8 * min(xs), 1.25 * max(xs))
        plotting.set_log(ax)
        if ticks:
            plotting.set_log_ticks(ax, ticks)
        _plain_log_y(ax)
        plotting.label_axes(ax, xlabel, ylabel, xunit=xunit, yunit="1", title=title)
        ax.legend(fontsize="x-small")

    ks_all = sorted({d["K"] for items in ratios.values() for d in items})
    for i, (label, items) in enumerate(ratios.items()):
        draw(axes[0, 0], [d["K"] for d in items], items, label=label, color=f"C{i}")
    finish(
        axes[0, 0],
        "steps K",
        "ppl(best ODE) / ppl(best escape)",
        "1",
        f"best vs best ({100 * (1 - 2 * (1 - _normal_cdf(num_se))):.0f}% CI)",
        ks_all,
    )
    for i, (label, items) in enumerate(pairs.items()):
        draw(axes[0, 1], [d["K"] for d in items], items, label=label, color=f"C{i}")
    finish(
        axes[0, 1],
        "steps K",
        "ddim / ddim_eta (ppl, or nearest-mode error)",
        "1",
        "matched pair: DDIM without / with noise",
        ks_all,
    )
    by_floor = sorted((d for d in sweep if d["scale"] == 1.0), key=lambda d: d["floor"])
    by_scale = sorted((d for d in sweep if d["floor"] == 0.0), key=lambda d: d["scale"])
    for i, (label, items) in enumerate(
        (("variance floor f (κ = 1)", by_floor), ("variance scale κ (f = 0)", by_scale))
    ):
        if items:
            x = [d["variance_multiple"] for d in items]
            draw(axes[0, 2], x, items, label=label, color=f"C{i}")
    finish(
        axes[0, 2],
        "responsibility variance at the data end, κ + f",
        "ppl(best ODE) / ppl(best escape)",
        "τ²",
        f"regularity-limited denoiser, Zipf, K = {verdict_steps}",
    )
    return fig


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _plain_log_y(ax) -> None:
    """Plain numbers (%g) on a log y-axis, no minor labels."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


# ---------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------
def _world_metrics(result: WorldResult, config: Config) -> dict[str, Any]:
    ks = sorted({r["K"] for r in result.rows})
    out = {
        "data": result.data,
        "table": result.rows,
        "pair_ratio_vs_steps": [pair_ratio(result, k) for k in ks],
    }
    if result.categorical:
        tol = config.entropy_tolerance
        out["ratio_vs_steps"] = [ratio_at_steps(result, k, entropy_tolerance=tol) for k in ks]
        out["ratio_vs_steps_equal_nfe"] = [
            ratio_at_steps(result, k, entropy_tolerance=tol, equal_nfe=True) for k in ks
        ]
    return out


def measure(config: Config, ctx: RunContext) -> Measurement:
    """All samplers × K on the token worlds (exact and limited) and the smooth world."""
    cpu_start = time.process_time()
    key_world, key_run = jr.split(ctx.key())
    worlds = make_token_worlds(config, key_world)
    bases = {"text": worlds.text, "text_zipf": worlds.text_zipf}
    variants: dict[str, Any] = {}
    for base, w in bases.items():
        variants[f"{base}/exact"] = w
        variants[f"{base}/limited"] = limited(w, config.limited_floor, config.limited_scale)
    common = dict(
        sampler_names=config.samplers,
        key=key_run,
        num_samples=config.num_samples,
        grid=config.grid,
        t_min=config.t_min,
        t_max=config.t_max,
        off_mode_num_std=config.off_mode_num_std,
        num_se=config.num_se,
        progress=lambda it, total, desc: ctx.progress(it, total=total, desc=desc),
    )
    results: dict[str, WorldResult] = {}
    for label, w in variants.items():
        ctx.log(f"{label}: {len(config.samplers)} samplers x K = {list(config.num_steps)}")
        results[label] = measure_world(label, w, num_steps=config.num_steps, **common)
    smooth_result = None
    if config.smooth_world:
        smooth = make_smooth_world(worlds.text_zipf, worlds.num_frequent)
        smooth_result = measure_world("smooth", smooth, num_steps=config.num_steps, **common)

    # Regularity sweep at K* on the Zipf world: same padded grid (no new compilation).
    k_star = config.verdict_steps
    sweep: list[dict[str, Any]] = []
    for floor, scale in ctx.progress(config.regularity_sweep, desc="regularity sweep"):
        res = measure_world(
            f"text_zipf/floor={floor:g},scale={scale:g}",
            limited(worlds.text_zipf, floor, scale),
            num_steps=(k_star,),
            max_steps=max(config.num_steps),
            **{**common, "progress": None},
        )
        comp = ratio_at_steps(res, k_star, entropy_tolerance=config.entropy_tolerance)
        rows = {r["sampler"]: r for r in res.rows}
        comp.update(
            floor=float(floor),
            scale=float(scale),
            variance_multiple=float(floor + scale),
            perplexity={n: r["perplexity"] for n, r in rows.items()},
            entropy={n: r["entropy"] for n, r in rows.items()},
            off_mode_fraction={n: r["off_mode_fraction"] for n, r in rows.items()},
        )
        sweep.append(comp)

    smooth_comp = None if smooth_result is None else pair_ratio(smooth_result, k_star)
    claims = [_claim(results[label], label, config, smooth_comp, sweep) for label in results]

    panels = {label: _world_metrics(res, config) for label, res in results.items()}
    ctx.save_figure(perplexity_figure(panels), "perplexity_vs_steps.png")
    ctx.save_figure(entropy_figure(panels, config.entropy_tolerance), "entropy_vs_steps.png")
    off_panels = {k: panels[k] for k in ("text_zipf/exact", "text_zipf/limited")}
    metrics: dict[str, Any] = {
        "verdict_rule": (
            f"at K = {k_star}: R = ppl(best of {list(ODE_SAMPLERS) + ['euler_rf']}) / "
            f"ppl(best escape with entropy >= {1 - config.entropy_tolerance:g} x data's); "
            f"held iff R·exp(−{config.num_se:g}·se(log R)) >= {config.ratio_threshold:g}"
        ),
        "worlds": dict(panels),
        "regularity_sweep": sweep,
        "world": {
            "vocab_frequent": worlds.num_frequent,
            "vocab_total": worlds.text_zipf.vocab_size,
            "length": config.length,
            "dim": config.dim,
            "std": config.std,
            "limited_floor_variance": config.limited_floor * config.std**2,
            "samplers": {s: repr(samplers.get_sampler(s)) for s in config.samplers},
        },
    }
    if smooth_result is not None:
        metrics["worlds"]["smooth"] = _world_metrics(smooth_result, config)
        off_panels["smooth (nearest-mode error)"] = metrics["worlds"]["smooth"]
    ctx.save_figure(off_mode_figure(off_panels), "off_mode_vs_steps.png")
    pairs = {k: v["pair_ratio_vs_steps"] for k, v in panels.items()}
    if smooth_result is not None:
        pairs["smooth (nearest-mode error)"] = metrics["worlds"]["smooth"]["pair_ratio_vs_steps"]
    ctx.save_figure(
        ratio_figure(
            {k: v["ratio_vs_steps"] for k, v in panels.items()},
            pairs,
            sweep,
            config.ratio_threshold,
            config.num_se,
            k_star,
        ),
        "ratio_vs_steps.png",
    )
    ctx.save_arrays(
        "per_sequence_scores.npz",
        **{
            f"{label}|{name}|K={k}".replace("/", "__"): v
            for label, res in results.items()
            for (name, k), v in res.scores.items()
        },
    )
    metrics["cpu_seconds"] = time.process_time() - cpu_start
    return Measurement(metrics, claims)


def run(config: Config, out_dir: Any = "results", seed: int | None = None) -> dict[str, Any]:
    """Run the experiment and write ``<out_dir>/few_step/result.json`` and figures."""
    return _framework.run_experiment(sys.modules[__name__], config, out_dir, seed)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.few_step [--scale quick|full] [--out DIR] [--seed N]``."""
    return _framework.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
