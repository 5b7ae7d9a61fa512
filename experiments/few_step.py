"""Claim C3a (SPEC §1): at few steps K, deterministic ODE sampling garbles text; SDE and
re-injection do not. Every built-in sampler on exact token-sequence worlds, and on the
learned text and image worlds (`readout_jax.learned`, trained on real data).

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

**Learned worlds** (`learned_scale`; built once per process by :func:`learned_worlds`
and shared with `readout_sharpness` and `commitment`). Text: the character autoencoder
on the pydoc topics (parallel-decoder readout), its learned x0-prediction denoiser, the
rectified-flow schedule (so `renoise_rf` runs on the world itself and there is no
``euler_rf`` row). Samplers start from the encoded latents of N random validation
windows noised to t_max (:func:`learned_inputs`; common random numbers as above); the
read-out tokens are scored by the evaluator LM (perplexity, with the SE of log
perplexity over sequences), beside their bigram entropy estimate Ĥ and the fraction of
their complete words that occur in the training text, and beside the same numbers for
N other validation windows (the text itself, and its encode → decode read-out: what an
exact sampler of the learned latent distribution would give). Image: the digit
autoencoder and its denoiser; decoded samples are scored by the digit classifier's
confidence and label entropy and by the pixel distance to the nearest training image,
beside the validation digits and their reconstructions.

**Learned verdicts (stated up front)**, at K* = `verdict_steps` on the same model:
text, the exact worlds' rule with the evaluator perplexity (R = ppl(best ODE)/ppl(best
admissible escape), admissible iff Ĥ ≥ (1 − entropy_tolerance)·Ĥ of the read-out data;
held iff the 95% lower bound ≥ `ratio_threshold`); image, the contrast: R = mean
nearest-training-image distance of the best ODE over that of the best admissible
escape (label entropy ≥ (1 − entropy_tolerance)·the reconstructions'), held iff its
95% upper bound (delta method, paired) < `ratio_threshold`, i.e. deterministic sampling
is not far worse on images (predicted R = 1, tolerance ratio_threshold − 1).
"""

from __future__ import annotations

import dataclasses
import functools as ft
import math
import pathlib
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
    "LEARNED_SCALES",
    "LearnedWorlds",
    "LearnedInputs",
    "learned_worlds",
    "clear_learned_worlds",
    "check_learned_scale",
    "check_max_steps",
    "untrained_learned_worlds",
    "learned_model_summary",
    "learned_inputs",
    "sampler_runs",
    "sample_steps_many",
    "measure_learned_text",
    "measure_learned_image",
    "measure_learned",
    "learned_text_claim",
    "learned_image_claim",
    "learned_figure",
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
        max_steps: length − 1 of the padded time grid of the exact worlds (None: the
            largest K). Runs with the same value share one compiled program per
            sampler; `commitment` uses the same value to reuse them.
        learned_scale: scale of the learned worlds (`LEARNED_SCALES`: "quick", "full",
            "tiny", "untrained"), or None to skip them.
        models_dir: folder of the cached trained models (None: the learned library's
            default, ``$READOUT_JAX_CACHE`` or ``~/.cache/readout_jax/models``).
        learned_seed: seed of the learned models' training (not the run seed, so every
            run and every experiment shares one set of trained models).
        learned_num_steps: the K grid on the learned worlds.
        learned_max_steps: padded grid length − 1 of the learned worlds (None: the
            largest learned K); `commitment` uses the same value to share compilations.
        learned_num_samples: N samples per learned world, sampler and K.
        learned_samplers: the samplers run on the learned worlds.
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
    max_steps: int | None = None
    learned_scale: str | None = "full"
    models_dir: str | None = None
    learned_seed: int = 0
    learned_num_steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    learned_max_steps: int | None = None
    learned_num_samples: int = 1024
    learned_samplers: tuple[str, ...] = ALL_SAMPLERS

    def __post_init__(self):
        for field in ("samplers", "learned_samplers"):
            names = getattr(self, field)
            unknown = [s for s in names if s not in ALL_SAMPLERS]
            if unknown or not names:
                raise ValueError(
                    f"{field} must be a non-empty subset of {ALL_SAMPLERS}, got {unknown}"
                )
        check_learned_scale(self.learned_scale)
        steps = np.asarray(self.learned_num_steps)
        if steps.ndim != 1 or steps.size < 1 or np.any(steps < 1) or np.any(np.diff(steps) <= 0):
            raise ValueError(
                f"learned_num_steps must be increasing integers >= 1, got {self.learned_num_steps}"
            )
        if self.learned_scale is not None and self.verdict_steps not in self.learned_num_steps:
            raise ValueError(
                f"verdict_steps={self.verdict_steps} must be one of learned_num_steps="
                f"{self.learned_num_steps}"
            )
        check_max_steps(self)
        if self.learned_num_samples < 2:
            raise ValueError(f"learned_num_samples must be >= 2, got {self.learned_num_samples}")
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
        """≈ 1–2 CPU-minutes, mostly compilation (one program per sampler and world).

        Exact worlds: K ≤ 8 (on a grid padded to 16 steps, `commitment`'s K), N = 128,
        no smooth mixture (the learned image world is the smooth contrast). Learned
        worlds (quick models): K ≤ 16, N = 128.
        """
        return cls(
            num_steps=(1, 2, 4, 8),
            max_steps=16,
            num_samples=128,
            regularity_sweep=((0.0, 1.0), (1.0, 1.0), (0.0, 4.0)),
            smooth_world=False,
            learned_scale="quick",
            learned_num_steps=(1, 2, 4, 8, 16),
            learned_num_samples=128,
        )

    @classmethod
    def full(cls) -> Config:
        """K up to 64 (learned: 32), N = 4096 (learned: 1024), full-scale models."""
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


def sampler_runs(world: Any, sampler_names: Sequence[str]) -> list[tuple[str, str, Any]]:
    """(row name, sampler name, world it runs on) for each sampler on `world`.

    Samplers in ``RF_SAMPLERS`` run on :func:`rectified_flow_copy` of the world, with
    ``RF_BASELINE`` on the same copy as row ``euler_rf`` (their matched ODE). A world
    already on the rectified-flow schedule (the learned worlds) is its own copy: the RF
    samplers run on it and there is no ``euler_rf`` row (it would be ``euler``).
    ``margin_gated`` needs a categorical readout and is left out on a smooth world.
    """
    runs: list[tuple[str, str, Any]] = []
    native_rf = isinstance(world.schedule, schedules.RectifiedFlow)
    rf_world = None
    for name in sampler_names:
        if name == "margin_gated" and not has_logits(world):
            continue
        if name in RF_SAMPLERS and not native_rf:
            rf_world = rf_world or rectified_flow_copy(world)
            runs.append((name, name, rf_world))
        else:
            runs.append((name, name, world))
    if rf_world is not None:
        runs.append((RF_BASELINE + _RF_SUFFIX, RF_BASELINE, rf_world))
    return runs


# ---------------------------------------------------------------------------------------
# Learned worlds (shared with readout_sharpness and commitment)
# ---------------------------------------------------------------------------------------
#: Scales of the learned worlds: the learned library's presets "quick" and "full", its
#: test preset "tiny" (trained and cached like the others), and "untrained": the tiny
#: architectures with random parameters, built in a second with no training and no
#: cache, for smoke tests and notebooks only (their numbers mean nothing).
LEARNED_SCALES = ("quick", "full", "tiny", "untrained")


class LearnedWorlds(NamedTuple):
    """The learned text and image worlds of one scale and training seed.

    Attributes:
        text: a `readout_jax.learned.TextWorld`.
        image: a `readout_jax.learned.ImageWorld`.
        scale: the `LEARNED_SCALES` entry they were built at.
        seed: the training seed.
    """

    text: Any
    image: Any
    scale: str
    seed: int


_LEARNED_WORLDS: dict[tuple[str, int, str | None], LearnedWorlds] = {}


def check_max_steps(config: Any) -> None:
    """`config.max_steps` / `learned_max_steps`: None or an integer >= the largest K of
    `num_steps` / `learned_num_steps` (the padded grid must hold every K)."""
    for field, steps in (
        ("max_steps", config.num_steps),
        ("learned_max_steps", config.learned_num_steps),
    ):
        value = getattr(config, field)
        if value is not None and (int(value) != value or value < max(steps)):
            raise ValueError(f"{field} must be None or an integer >= {max(steps)}, got {value}")


def check_learned_scale(scale: Any) -> str | None:
    """`scale` if it is None or one of `LEARNED_SCALES`, else a ValueError naming them."""
    if scale is not None and scale not in LEARNED_SCALES:
        raise ValueError(
            f"learned_scale must be None or one of {list(LEARNED_SCALES)}, got {scale!r}"
        )
    return scale


def _models_dir_key(models_dir: Any) -> str | None:
    if models_dir is None:
        return None
    return str(pathlib.Path(models_dir).expanduser().resolve())


def learned_worlds(
    scale: str = "quick",
    *,
    seed: int = 0,
    models_dir: Any = None,
    progress: bool = True,
) -> LearnedWorlds:
    """The learned text and image worlds, built once per process and scale.

    The first call for a (scale, seed, models_dir) loads the models from the checkpoint
    cache of `readout_jax.learned` (training and caching those that are missing: a few
    CPU minutes at quick scale); later calls, from any experiment of the process, return
    the same objects. So `readout_sharpness`, `few_step` and `commitment` share one
    training and one load.

    Args:
        scale: one of `LEARNED_SCALES`.
        seed: the models' training seed.
        models_dir: checkpoint folder (None: the learned library's default).
        progress: training progress bars (stderr, TTY only).

    Returns:
        A :class:`LearnedWorlds`.

    Raises:
        ValueError: for an unknown scale or a negative seed.
    """
    if scale is None:
        raise ValueError(f"scale must be one of {list(LEARNED_SCALES)}, got None")
    check_learned_scale(scale)
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    memo_key = (scale, int(seed), None if scale == "untrained" else _models_dir_key(models_dir))
    if memo_key in _LEARNED_WORLDS:
        return _LEARNED_WORLDS[memo_key]
    if scale == "untrained":
        worlds = untrained_learned_worlds(seed=int(seed))
    else:
        from readout_jax import learned

        text_scale: Any = scale if scale != "tiny" else learned.TextWorldConfig.tiny()
        image_scale: Any = scale if scale != "tiny" else learned.ImageWorldConfig.tiny()
        kwargs = dict(seed=int(seed), cache_dir=models_dir, progress=progress)
        worlds = LearnedWorlds(
            learned.text_world(text_scale, **kwargs),
            learned.image_world(image_scale, **kwargs),
            scale,
            int(seed),
        )
    _LEARNED_WORLDS[memo_key] = worlds
    return worlds


def clear_learned_worlds() -> None:
    """Forget the worlds memoised by :func:`learned_worlds` (frees their memory)."""
    _LEARNED_WORLDS.clear()


def _random_module(build: Callable[[Any], Any], rng: np.random.Generator) -> Any:
    """An NNX module of `build(rngs)`'s architecture with host-drawn random parameters.

    The module is built abstractly (`nnx.eval_shape`: no initializer runs, so nothing
    is compiled) and filled from `rng`: matrices ~ N(0, 1/fan_in), LayerNorm scales and
    scalars 1, other vectors 0.
    """
    from flax import nnx

    graphdef, state = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))))

    def fill(path, leaf):
        shape, dtype = tuple(leaf.shape), leaf.dtype
        if len(shape) >= 2:
            return jnp.asarray(rng.normal(0.0, 1.0 / math.sqrt(shape[0]), shape), dtype)
        if len(shape) == 0 or "scale" in jax.tree_util.keystr(path):
            return jnp.ones(shape, dtype)
        return jnp.zeros(shape, dtype)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))


def untrained_learned_worlds(
    text_config: Any = None, image_config: Any = None, *, seed: int = 0
) -> LearnedWorlds:
    """The learned worlds' architectures with random (untrained) parameters.

    The same classes, data and manifolds as `readout_jax.learned.text_world` /
    `image_world` build, with every network's parameters drawn at random on the host
    (:func:`_random_module`): nothing is trained, loaded, saved or compiled, so it takes
    about a second. For smoke tests of code that consumes learned worlds, and for
    notebooks without cached models: no number computed on these worlds says anything
    about the claims. ``metrics["untrained"]`` is True.

    Args:
        text_config: a `learned.TextWorldConfig` (default: its ``tiny()``).
        image_config: a `learned.ImageWorldConfig` (default: its ``tiny()``).
        seed: seed of the random parameters.
    """
    from flax import nnx

    from readout_jax import learned
    from readout_jax.learned import data as data_lib
    from readout_jax.learned import denoiser as den_lib
    from readout_jax.learned import image as image_lib
    from readout_jax.learned import text as text_lib

    text_config = text_config or learned.TextWorldConfig.tiny()
    image_config = image_config or learned.ImageWorldConfig.tiny()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 5]))
    corpus = data_lib.load_text_corpus(text_config.data)
    vocab_size, length = corpus.vocab.size, text_config.data.length
    width = text_config.autoencoder.latent_dim
    autoencoder = _random_module(
        lambda r: text_lib.TextAutoencoder(vocab_size, length, text_config.autoencoder, rngs=r),
        rng,
    )
    net = _random_module(
        lambda r: den_lib.LatentDenoiser((length, width), text_config.denoiser, rngs=r), rng
    )
    lm = _random_module(
        lambda r: text_lib.CausalLM(vocab_size, length, text_config.evaluator, rngs=r), rng
    )
    counts = corpus.unigram_counts.astype(np.float64) + 1.0
    log_unigram = jnp.asarray(np.log(counts / counts.sum()), jnp.float32)
    text = learned.TextWorld(
        config=text_config,
        vocab=corpus.vocab,
        manifold=den_lib.TextManifold(
            den_lib.LearnedDenoiser(*nnx.split(net)),
            den_lib.ParallelReadout(*nnx.split(autoencoder.parallel)),
            (length, width),
            schedules.get_schedule(text_config.schedule),
        ),
        autoencoder=autoencoder,
        evaluator=text_lib.Evaluator(*nnx.split(lm), log_unigram, length),
        train_tokens=jnp.asarray(corpus.train_tokens),
        val_tokens=jnp.asarray(corpus.val_tokens),
        train_words=corpus.train_words,
        metrics={"untrained": True},
        trained={},
        checkpoints={},
    )
    digits = data_lib.load_digits_split(image_config.val_fraction, image_config.split_seed)
    image_width = image_config.autoencoder.latent_dim
    image_ae = _random_module(
        lambda r: image_lib.ImageAutoencoder(image_config.autoencoder, rngs=r), rng
    )
    image_net = _random_module(
        lambda r: den_lib.LatentDenoiser((image_width,), image_config.denoiser, rngs=r), rng
    )
    classifier = _random_module(
        lambda r: image_lib.DigitClassifier(image_config.classifier, rngs=r), rng
    )
    image = learned.ImageWorld(
        config=image_config,
        manifold=den_lib.ImageManifold(
            den_lib.LearnedDenoiser(*nnx.split(image_net)),
            den_lib.PixelDecoder(*nnx.split(image_ae.decoder)),
            (image_width,),
            schedules.get_schedule(image_config.schedule),
        ),
        autoencoder=image_ae,
        classifier=image_lib.Classifier(*nnx.split(classifier)),
        train_images=jnp.asarray(digits.train_images),
        train_labels=jnp.asarray(digits.train_labels),
        val_images=jnp.asarray(digits.val_images),
        val_labels=jnp.asarray(digits.val_labels),
        metrics={"untrained": True},
        trained={},
        checkpoints={},
    )
    return LearnedWorlds(text, image, "untrained", int(seed))


def learned_model_summary(worlds: LearnedWorlds) -> dict[str, Any]:
    """The scalar training / validation metrics of the learned models (no histories),
    which were trained in this process, and their checkpoint folders."""

    def scalars(metrics: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in metrics.items() if isinstance(v, (bool, int, float, str))}

    out: dict[str, Any] = {"scale": worlds.scale, "seed": worlds.seed}
    for name, world in (("text", worlds.text), ("image", worlds.image)):
        out[name] = {
            "metrics": scalars(dict(world.metrics)),
            "trained_now": dict(world.trained),
            "checkpoints": {k: str(v) for k, v in dict(world.checkpoints).items()},
        }
    return out


class LearnedInputs(NamedTuple):
    """Paired inputs of the samplers on a learned world (numpy / jax arrays).

    Attributes:
        x0: (N, *latent) clean latents: the encoded validation items `data[index]`.
        x_init: (N, *latent) α(t_max)·x0 + σ(t_max)·ε, a draw from the data marginal at
            t_max (the same for every sampler: common random numbers).
        eps: (N, *latent) the noise ε (for a copy of the world on another schedule).
        t_max: the time of x_init.
        index: (N,) the validation items encoded as x0.
        reference: (N, ...) N other validation items (disjoint from `index` when there
            are 2N): the data's own references.
        reference_index: (N,) their indices.
        reference_latents: (N, *latent) their encodings.
    """

    x0: Any
    x_init: Any
    eps: Any
    t_max: float
    index: np.ndarray
    reference: np.ndarray
    reference_index: np.ndarray
    reference_latents: Any


def learned_inputs(world: Any, data: Any, num: int, key: Key, t_max: float) -> LearnedInputs:
    """Encode N random validation items of a learned world and noise them to t_max.

    Args:
        world: a learned `TextWorld` or `ImageWorld` (its `encode` and `manifold`).
        data: (num_items, ...) its validation tokens or images.
        num: N.
        key: split into the choice of items and the noise ε.
        t_max: the first time of the grid.
    """
    key_pick, key_eps = jr.split(key)
    data = np.asarray(data)
    total = data.shape[0]
    if total >= 2 * num:
        perm = np.asarray(jr.permutation(key_pick, total))
        index, ref = perm[:num], perm[num : 2 * num]
    else:  # too few items for two disjoint sets: draw both with replacement
        index, ref = (np.asarray(jr.choice(k, total, (num,))) for k in jr.split(key_pick))
    dtype = jnp.result_type(float)
    x0 = jnp.asarray(world.encode(data[index]), dtype)
    eps = jr.normal(key_eps, x0.shape, dtype)
    x_init = initial_latents(world.manifold, x0, eps, t_max)
    reference = data[ref]
    return LearnedInputs(
        x0,
        x_init,
        eps,
        float(t_max),
        index,
        reference,
        ref,
        jnp.asarray(world.encode(reference), dtype),
    )


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


def _padded_chains(sampler, manifold, key, x_init, ts, num_steps, record):
    ts = ts.astype(x_init.dtype)
    max_steps = ts.shape[0] - 1
    keys = harness.chain_keys(key, x_init.shape[0])

    def read(x):
        return jnp.argmax(manifold.logits(x), axis=-1).astype(jnp.int32)

    def one_chain(chain_key, x):
        # Under partitionable threefry (JAX's default), split(k, n)[i] does not depend on
        # n: these are the step keys of `readout_jax.sample` with K = num_steps.
        step_keys = jr.split(chain_key, max_steps)

        def body(k, carry):
            state, nfe, draws, tokens = carry
            state, info = sampler.step(step_keys[k], state, manifold, ts[k + 1])
            nfe = nfe + jnp.asarray(info.nfe, jnp.int32)
            draws = draws + jnp.asarray(getattr(info, "num_draws", 0), jnp.int32)
            if record:
                tokens = jax.lax.dynamic_update_index_in_dim(tokens, read(info.x0_hat), k, 0)
            return state, nfe, draws, tokens

        zero = jnp.zeros((), jnp.int32)
        if record:
            positions = jax.eval_shape(read, x).shape
            tokens = jnp.full((max_steps, *positions), -1, jnp.int32)
        else:
            tokens = jnp.zeros((0,), jnp.int32)
        carry = (sampler.init(x, ts[0]), zero, zero, tokens)
        state, nfe, draws, tokens = jax.lax.fori_loop(0, num_steps, body, carry)
        return manifold.denoise(state.x, ts[num_steps]), nfe, draws, tokens

    return jax.vmap(one_chain)(keys, x_init)


@ft.partial(jax.jit, static_argnames=("record",))
def _sample_padded(sampler, manifold, key, x_init, ts, num_steps, record=False):
    return _padded_chains(sampler, manifold, key, x_init, ts, num_steps, record)


@ft.partial(jax.jit, static_argnames=("record",))
def _sample_padded_many(samplers_, manifolds, key, x_inits, ts_list, num_steps, record=False):
    return tuple(
        _padded_chains(s, m, key, x, ts, num_steps, record)
        for s, m, x, ts in zip(samplers_, manifolds, x_inits, ts_list, strict=True)
    )


class Samples(NamedTuple):
    """Output of :func:`sample_steps` (numpy).

    Attributes:
        x0: (N, *latent) posterior-mean terminal outputs (what `sample(...).x0` returns).
        nfe: (N,) denoiser evaluations per sample.
        draws: (N,) standard-normal numbers used per sample.
        tokens: with ``record=True``, (N, K, *positions) the readout (argmax of the
            logits) of the posterior-mean estimate x̂0 of every step (what
            `sample(..., record=record_info).info.x0_hat` reads as); else None.
    """

    x0: np.ndarray
    nfe: np.ndarray
    draws: np.ndarray
    tokens: np.ndarray | None = None


def sample_steps(
    sampler: Any,
    world: Any,
    key: Key,
    x_init: Float[Array, " N *latent"],
    ts: Float[Array, " K_plus_1"],
    ts_padded: Float[Array, " max_steps_plus_1"],
    *,
    record: bool = False,
) -> Samples:
    """`readout_jax.sample(sampler, world, key, x_init, ts).x0`, compiled once for every K.

    Validates exactly as the harness (`harness.check_sample_inputs`, including the
    sampler's own `validate`), then runs K = len(ts) − 1 steps of `sampler.step` in a
    `fori_loop` with a traced trip count over `ts_padded` (whose first K + 1 entries are
    `ts`), with the harness's per-example keys (`harness.chain_keys`) and per-step keys
    `jr.split(chain_key, ·)[k]`. Under JAX's default partitionable threefry these equal
    the harness's keys, so the result is that of `readout_jax.sample`.

    The compiled program depends on the shapes (batch, latent, len(ts_padded)), the
    types of the sampler and the world, and `record`, not on K nor on parameter values:
    two experiments that call it with the same ones share one compilation in a process
    (`commitment` reuses the programs of this module this way).

    Args:
        sampler, world, key, x_init: as for `readout_jax.sample`.
        ts: (K + 1,) the grid.
        ts_padded: (K_max + 1,) the grid padded (e.g. by :func:`padded_grid`).
        record: also return the per-step readout tokens of x̂0 (categorical worlds).

    Raises:
        ValueError: as the harness; if `ts_padded` does not start with `ts`; if `record`
            is asked of a world without logits.
    """
    num_steps = int(np.shape(ts)[0]) - 1
    harness.check_sample_inputs(sampler, world, x_init, ts)
    if not np.array_equal(np.asarray(ts_padded[: num_steps + 1]), np.asarray(ts)):
        raise ValueError("ts_padded must start with ts")
    if record and not has_logits(world):
        raise ValueError("record=True needs a categorical world (with logits)")
    x0, nfe, draws, tokens = _sample_padded(
        sampler,
        world,
        harness._as_key(key),
        jnp.asarray(x_init),
        jnp.asarray(ts_padded),
        jnp.asarray(num_steps, jnp.int32),
        record=bool(record),
    )
    tokens = np.asarray(tokens)[:, :num_steps] if record else None
    return Samples(np.asarray(x0), np.asarray(nfe), np.asarray(draws), tokens)


def sample_steps_many(
    runs: Sequence[tuple[Any, Any]],
    key: Key,
    x_inits: Sequence[Any],
    ts_list: Sequence[Any],
    ts_padded_list: Sequence[Any],
    *,
    record: bool = False,
) -> list[Samples]:
    """:func:`sample_steps` of several (sampler, world) runs at one K, in ONE program.

    Run i is `sample_steps(*runs[i], key, x_inits[i], ts_list[i], ts_padded_list[i])`
    (same key, same K; each its own grid and initial latents), but all runs are compiled
    together: one XLA compilation instead of one per sampler, which on a CPU costs
    about half as much (measured: 6 samplers on the learned digit world, 6.1–7.5 s of
    CPU merged vs 11.5–12.9 s separately), since much of a compilation is a fixed cost.
    The program depends on the runs' sampler and world types (and their order), the
    shapes and `record`; not on K or parameter values.

    Raises:
        ValueError: as :func:`sample_steps` (for any run), or if the lengths differ or
            the grids do not all have the same K.
    """
    num = len(runs)
    if not num or not (len(x_inits) == len(ts_list) == len(ts_padded_list) == num):
        raise ValueError("runs, x_inits, ts_list and ts_padded_list must have one entry per run")
    steps = {int(np.shape(ts)[0]) - 1 for ts in ts_list}
    if len(steps) != 1:
        raise ValueError(f"every run must have the same number of steps K, got {sorted(steps)}")
    (num_steps,) = steps
    for (sampler, world), x_init, ts, ts_pad in zip(
        runs, x_inits, ts_list, ts_padded_list, strict=True
    ):
        harness.check_sample_inputs(sampler, world, x_init, ts)
        if not np.array_equal(np.asarray(ts_pad[: num_steps + 1]), np.asarray(ts)):
            raise ValueError("ts_padded must start with ts")
        if record and not has_logits(world):
            raise ValueError("record=True needs a categorical world (with logits)")
    outs = _sample_padded_many(
        tuple(s for s, _ in runs),
        tuple(w for _, w in runs),
        harness._as_key(key),
        tuple(jnp.asarray(x) for x in x_inits),
        tuple(jnp.asarray(t) for t in ts_padded_list),
        jnp.asarray(num_steps, jnp.int32),
        record=bool(record),
    )
    return [
        Samples(
            np.asarray(x0),
            np.asarray(nfe),
            np.asarray(draws),
            np.asarray(tokens)[:, :num_steps] if record else None,
        )
        for x0, nfe, draws, tokens in outs
    ]


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

    runs = sampler_runs(world, sampler_names)
    max_steps = max(num_steps) if max_steps is None else int(max_steps)
    if max_steps < max(num_steps):
        raise ValueError(f"max_steps={max_steps} < max(num_steps)={max(num_steps)}")

    rows_at: dict[tuple[str, int], dict[str, Any]] = {}
    scores: dict[tuple[str, int], np.ndarray] = {}
    entropy: dict[tuple[str, int], float] = {}
    pairs = [(samplers.get_sampler(sname), w) for _, sname, w in runs]
    x_inits = [initial_latents(w, x0, eps, t_max) for _, _, w in runs]
    ks = num_steps if progress is None else progress(num_steps, total=len(num_steps), desc=name)
    for k in ks:
        grids = [
            padded_grid(w.schedule, k, max_steps, kind=grid, t_min=t_min, t_max=t_max)
            for _, _, w in runs
        ]
        # all samplers in one program; record=True on categorical worlds: the program
        # `commitment` reuses
        outs = sample_steps_many(
            pairs,
            key_sampler,
            x_inits,
            [g[0] for g in grids],
            [g[1] for g in grids],
            record=categorical,
        )
        for (row_name, _, w), out in zip(runs, outs, strict=True):
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
                    entropy_ratio=_safe_ratio(h, data["readout_entropy"]),
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
            rows_at[(row_name, int(k))] = row
    rows = [rows_at[(r[0], int(k))] for r in runs for k in num_steps]
    if not categorical:
        data["frechet_distance_data_vs_data"] = frechet_distance(np.asarray(x0), np.asarray(x_ref))
    return WorldResult(name, categorical, data, rows, scores, entropy)


# ---------------------------------------------------------------------------------------
# Learned worlds
# ---------------------------------------------------------------------------------------
def _grid_for(world: Any, k: int, max_steps: int, grid: str, t_min: float, t_max: float):
    return padded_grid(world.schedule, k, max_steps, kind=grid, t_min=t_min, t_max=t_max)


def _sample_rows(
    manifold: Any,
    inputs: LearnedInputs,
    *,
    sampler_names: Sequence[str],
    num_steps: Sequence[int],
    max_steps: int,
    key: Key,
    grid: str,
    t_min: float,
    t_max: float,
    progress: Callable | None,
    desc: str,
):
    """Yield (row name, K, Samples, row fields) for every sampler and K, sampler-major
    (all samplers of one K run in one compiled program, :func:`sample_steps_many`)."""
    runs = sampler_runs(manifold, sampler_names)
    record = has_logits(manifold)
    pairs = [(samplers.get_sampler(sname), w) for _, sname, w in runs]
    x_inits = [
        inputs.x_init if w is manifold else initial_latents(w, inputs.x0, inputs.eps, inputs.t_max)
        for _, _, w in runs
    ]
    found: dict[tuple[str, int], tuple[Samples, dict[str, Any]]] = {}
    ks = num_steps if progress is None else progress(num_steps, total=len(num_steps), desc=desc)
    for k in ks:
        grids = [_grid_for(w, int(k), max_steps, grid, t_min, t_max) for _, _, w in runs]
        outs = sample_steps_many(
            pairs,
            key,
            x_inits,
            [g[0] for g in grids],
            [g[1] for g in grids],
            record=record,
        )
        for (row_name, _, w), out in zip(runs, outs, strict=True):
            found[(row_name, int(k))] = (
                out,
                {
                    "sampler": row_name,
                    "kind": _kind(row_name),
                    "schedule": w.schedule.name,
                    "K": int(k),
                    "nfe": float(out.nfe.mean()),
                    "draws_per_coordinate_step": float(
                        out.draws.mean() / (np.prod(manifold.latent_shape) * k)
                    ),
                },
            )
    for row_name, _, _ in runs:
        for k in num_steps:
            out, base = found[(row_name, int(k))]
            yield row_name, int(k), out, base


def _safe_ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _text_scores(world: Any, tokens: np.ndarray) -> dict[str, Any]:
    """Evaluator NLL per sequence (nats/token) and the sample statistics of token windows."""
    tokens = np.asarray(tokens, np.int32)
    nll = -np.asarray(world.evaluator.log_prob(tokens), np.float64) / tokens.shape[1]
    log_ppl, se = _framework.mean_with_se(nll)
    vocab = world.vocab.size
    return {
        "nll": nll,
        "perplexity": math.exp(log_ppl),
        "log_perplexity": log_ppl,
        "log_perplexity_se": se,
        "entropy": markov_entropy(tokens, vocab),
        "unigram_entropy": unigram_entropy(tokens, vocab),
        "valid_word_fraction": float(world.valid_word_fraction(tokens)),
    }


def measure_learned_text(
    world: Any,
    *,
    sampler_names: Sequence[str],
    num_steps: Sequence[int],
    key: Key,
    num_samples: int,
    grid: str = "uniform",
    t_min: float = 1e-3,
    t_max: float = 0.995,
    num_se: float = 1.96,
    max_steps: int | None = None,
    progress: Callable | None = None,
) -> WorldResult:
    """Every sampler at every K on the learned text world, scored by the evaluator LM.

    The samplers start from x_init = α(t_max)·x0 + σ(t_max)·ε with x0 the encoded
    latents of N random validation windows (:func:`learned_inputs`), share ε and the
    sampler key, and read out the terminal posterior mean with the parallel decoder
    (argmax). Per row: the evaluator perplexity exp(mean NLL) of the read-out windows
    with the SE of log perplexity over sequences, the bigram entropy estimate Ĥ
    (:func:`markov_entropy`, V characters), the unigram entropy, and the fraction of
    complete words that occur in the training text. The data's own references, on N
    other validation windows with the same estimators: the text itself ("text_*") and
    its encode → parallel-decode read-out ("readout_*", what an exact sampler of the
    learned latent distribution would give; the admissibility floor of the verdict uses
    its entropy). *sharpened*: perplexity below the read-out's by more than num_se
    combined SEs; *below_text*: below the validation text's own perplexity.

    Args:
        world: a `readout_jax.learned.TextWorld`.
        sampler_names, num_steps, key, num_samples, grid, t_min, t_max, num_se: as for
            :func:`measure_world`.
        max_steps: length − 1 of the padded grid (default max K); `commitment` uses the
            same value to share the compiled programs.
        progress: optional `(iterable, total=, desc=) -> iterable`.

    Returns:
        A categorical :class:`WorldResult` (scores: per-sequence evaluator NLL).
    """
    key_inputs, key_sampler = jr.split(key)
    inputs = learned_inputs(world, world.val_tokens, num_samples, key_inputs, t_max)
    manifold = world.manifold
    text = _text_scores(world, inputs.reference)
    read = np.asarray(_readout_batch(manifold, inputs.reference_latents))
    readout = _text_scores(world, read)
    data: dict[str, Any] = {
        **{f"text_{k}": v for k, v in text.items() if k != "nll"},
        **{f"readout_{k}": v for k, v in readout.items() if k != "nll"},
        "unigram_perplexity": float(world.evaluator.unigram_perplexity(inputs.reference)),
        "token_error_rate": float(np.mean(read != inputs.reference)),
        "vocab_size": int(world.vocab.size),
        "latent_shape": list(manifold.latent_shape),
    }
    max_steps = max(num_steps) if max_steps is None else int(max_steps)
    rows: list[dict[str, Any]] = []
    scores: dict[tuple[str, int], np.ndarray] = {}
    entropy: dict[tuple[str, int], float] = {}
    for row_name, k, out, row in _sample_rows(
        manifold,
        inputs,
        sampler_names=sampler_names,
        num_steps=num_steps,
        max_steps=max_steps,
        key=key_sampler,
        grid=grid,
        t_min=t_min,
        t_max=t_max,
        progress=progress,
        desc="learned text",
    ):
        tokens = np.asarray(_readout_batch(manifold, jnp.asarray(out.x0)))
        sc = _text_scores(world, tokens)
        gap = readout["log_perplexity"] - sc["log_perplexity"]
        gap_se = math.hypot(sc["log_perplexity_se"], readout["log_perplexity_se"])
        row.update({k2: v for k2, v in sc.items() if k2 != "nll"})
        row.update(
            entropy_ratio=_safe_ratio(sc["entropy"], readout["entropy"]),
            sharpened=bool(gap > num_se * gap_se),
            below_text=bool(sc["log_perplexity"] < text["log_perplexity"]),
        )
        rows.append(row)
        scores[(row_name, k)] = sc["nll"]
        entropy[(row_name, k)] = sc["entropy"]
    return WorldResult("learned_text", True, data, rows, scores, entropy)


def _image_scores(world: Any, images: np.ndarray) -> dict[str, Any]:
    """Classifier confidence, label entropy and nearest-training-image distance."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    probs = np.asarray(world.classifier.probs(images), np.float64)
    confidence = probs.max(axis=1)
    labels = probs.argmax(axis=1)
    dist = np.asarray(world.nearest_train_distance(images), np.float64)
    conf, conf_se = _framework.mean_with_se(confidence)
    mean_dist, dist_se = _framework.mean_with_se(dist)
    return {
        "distance": dist,
        "nearest_train_distance": mean_dist,
        "nearest_train_distance_se": dist_se,
        "confidence": conf,
        "confidence_se": conf_se,
        "class_entropy": _entropy_mm(np.bincount(labels, minlength=probs.shape[1])),
    }


@jax.jit
def _decode_batch(world, x):
    return jax.vmap(world.decode)(x)


def measure_learned_image(
    world: Any,
    *,
    sampler_names: Sequence[str],
    num_steps: Sequence[int],
    key: Key,
    num_samples: int,
    grid: str = "uniform",
    t_min: float = 1e-3,
    t_max: float = 0.995,
    max_steps: int | None = None,
    progress: Callable | None = None,
) -> WorldResult:
    """Every sampler at every K on the learned digit world (smooth readout: pixels).

    Inputs as for :func:`measure_learned_text` (encoded validation digits). The
    terminal posterior mean is decoded to 64 pixels; per row: the digit classifier's
    confidence (mean max probability), the entropy of its predicted labels
    (Miller–Madow, nats; a collapse to few classes lowers it) and the Euclidean pixel
    distance to the nearest training image (the per-sample score, lower is better).
    References on N other validation digits: the images themselves ("val_*") and their
    encode → decode reconstructions ("readout_*"; ``readout_entropy`` is their label
    entropy, the admissibility floor of the verdict).

    Returns:
        A smooth :class:`WorldResult` (scores: per-sample nearest-training distance;
        entropy: label entropy).
    """
    key_inputs, key_sampler = jr.split(key)
    inputs = learned_inputs(world, world.val_images, num_samples, key_inputs, t_max)
    manifold = world.manifold
    val = _image_scores(world, inputs.reference)
    recon = _image_scores(world, np.asarray(_decode_batch(manifold, inputs.reference_latents)))
    data: dict[str, Any] = {
        **{f"val_{k}": v for k, v in val.items() if k != "distance"},
        **{f"readout_{k}": v for k, v in recon.items() if k != "distance"},
        "readout_entropy": recon["class_entropy"],
        "latent_shape": list(manifold.latent_shape),
    }
    max_steps = max(num_steps) if max_steps is None else int(max_steps)
    rows: list[dict[str, Any]] = []
    scores: dict[tuple[str, int], np.ndarray] = {}
    entropy: dict[tuple[str, int], float] = {}
    for row_name, k, out, row in _sample_rows(
        manifold,
        inputs,
        sampler_names=sampler_names,
        num_steps=num_steps,
        max_steps=max_steps,
        key=key_sampler,
        grid=grid,
        t_min=t_min,
        t_max=t_max,
        progress=progress,
        desc="learned image",
    ):
        sc = _image_scores(world, np.asarray(_decode_batch(manifold, jnp.asarray(out.x0))))
        row.update({k2: v for k2, v in sc.items() if k2 != "distance"})
        row["entropy"] = sc["class_entropy"]
        row["entropy_ratio"] = _safe_ratio(sc["class_entropy"], recon["class_entropy"])
        rows.append(row)
        scores[(row_name, k)] = sc["distance"]
        entropy[(row_name, k)] = sc["class_entropy"]
    return WorldResult("learned_image", False, data, rows, scores, entropy)


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
    admissible iff Ĥ ≥ (1 − entropy_tolerance)·Ĥ_data (not collapsed), Ĥ_data being
    ``result.data["readout_entropy"]``. With `equal_nfe`, only rows that use one
    denoiser evaluation per step (NFE = K) take part (this drops heun, restart).

    A smooth world with entropies (the learned image world: the entropy of the
    classifier's labels) is compared the same way on its per-sample scores (R a ratio
    of mean nearest-training-image distances, see :func:`measure_learned_image`).

    Returns:
        dict with ratio, log_ratio, log_ratio_se, best_ode, best_escape, admissible,
        and the reason if no comparison is possible (ratio NaN).

    Raises:
        ValueError: for a world without entropies (the smooth mixture; use
            :func:`pair_ratio`).
    """
    if not result.entropy:
        raise ValueError("ratio_at_steps needs a world with sample entropies; use pair_ratio")
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


def learned_text_claim(result: WorldResult, config: Config) -> Claim:
    """C3a on the learned text world: the exact worlds' rule (module docstring) with the
    evaluator perplexity, at K* = `verdict_steps`."""
    k = config.verdict_steps
    comp = ratio_at_steps(result, k, entropy_tolerance=config.entropy_tolerance)
    statement = (
        f"learned text world (character autoencoder on the pydoc topics, learned denoiser): "
        f"at K = {k} the best deterministic ODE sampler has far higher evaluator perplexity "
        f"than the best non-collapsed SDE / re-injection sampler (R = ppl_ODE/ppl_escape, "
        f"95% lower bound >= {config.ratio_threshold:g})"
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
    lower, upper = ratio * math.exp(-config.num_se * se), ratio * math.exp(config.num_se * se)
    rows = {(r["sampler"], r["K"]): r for r in result.rows}
    ode, esc = rows[(comp["best_ode"], k)], rows[(comp["best_escape"], k)]
    d = result.data
    held = bool(np.isfinite(lower) and lower >= config.ratio_threshold)
    pair = pair_ratio(result, k)
    detail = (
        f"{'held' if held else 'not held'}: lower bound {lower:.3g} "
        f"{'>=' if held else '<'} {config.ratio_threshold:g}. Best ODE {comp['best_ode']} "
        f"ppl {ode['perplexity']:.3g} (entropy {ode['entropy']:.3f} nats, valid words "
        f"{ode['valid_word_fraction']:.2f}); best admissible escape {comp['best_escape']} "
        f"ppl {esc['perplexity']:.3g} (entropy {esc['entropy']:.3f}, valid words "
        f"{esc['valid_word_fraction']:.2f}). Validation text under the same evaluator: ppl "
        f"{d['text_perplexity']:.3g}, entropy {d['text_entropy']:.3f}, valid words "
        f"{d['text_valid_word_fraction']:.2f}; its encode → decode read-out: ppl "
        f"{d['readout_perplexity']:.3g}, entropy {d['readout_entropy']:.3f} (unigram ppl "
        f"{d['unigram_perplexity']:.3g}). Admissible escapes (entropy >= "
        f"{1 - config.entropy_tolerance:g} x read-out's): {comp['admissible']} of "
        f"{comp['escapes']}. se(log R) = {se:.3g} from paired per-sequence NLLs; matched "
        f"pair ddim/ddim_eta: R = {pair['ratio']:.3g}."
    )
    return Claim(CLAIM, statement, ratio, config.ratio_threshold, 0.0, held, detail, (lower, upper))


def learned_image_claim(result: WorldResult, config: Config) -> Claim:
    """The image side of C3a: on the learned digit world the ODE samplers are NOT far
    worse at K*: R = mean nearest-training distance of the best ODE over that of the
    best admissible escape (label entropy ≥ (1 − entropy_tolerance)·the reconstructions'),
    held iff the upper 95% bound R·exp(num_se·se) < `ratio_threshold` (predicted R = 1,
    tolerance ratio_threshold − 1)."""
    k = config.verdict_steps
    comp = ratio_at_steps(result, k, entropy_tolerance=config.entropy_tolerance)
    tol = config.ratio_threshold - 1.0
    statement = (
        f"learned image world (digit autoencoder, learned denoiser): at K = {k} the best "
        "deterministic ODE sampler is NOT far worse than the best SDE / re-injection "
        "sampler (R = mean nearest-training-image distance ODE / escape, 95% upper bound "
        f"< {config.ratio_threshold:g})"
    )
    if comp["best_ode"] is None:
        return Claim(CLAIM, statement, float("nan"), 1.0, tol, False, f"not held: {comp['reason']}")
    ratio, se = comp["ratio"], comp["log_ratio_se"]
    lower, upper = ratio * math.exp(-config.num_se * se), ratio * math.exp(config.num_se * se)
    held = bool(np.isfinite(upper) and upper < config.ratio_threshold)
    rows = {(r["sampler"], r["K"]): r for r in result.rows}
    ode, esc = rows[(comp["best_ode"], k)], rows[(comp["best_escape"], k)]
    d = result.data
    detail = (
        f"{'held' if held else 'not held'}: upper bound {upper:.3g} "
        f"{'<' if held else '>='} {config.ratio_threshold:g}. Best ODE {comp['best_ode']}: "
        f"distance {ode['nearest_train_distance']:.3g}, classifier confidence "
        f"{ode['confidence']:.3f}, label entropy {ode['class_entropy']:.3f}; best escape "
        f"{comp['best_escape']}: distance {esc['nearest_train_distance']:.3g}, confidence "
        f"{esc['confidence']:.3f}, label entropy {esc['class_entropy']:.3f}. Validation "
        f"digits: distance {d['val_nearest_train_distance']:.3g}, confidence "
        f"{d['val_confidence']:.3f}; their reconstructions: distance "
        f"{d['readout_nearest_train_distance']:.3g}, confidence {d['readout_confidence']:.3f}"
        f", label entropy {d['readout_class_entropy']:.3f}. Admissible escapes: "
        f"{comp['admissible']} of {comp['escapes']}. se(log R) = {se:.3g} (delta method, "
        "paired)."
    )
    return Claim(CLAIM, statement, ratio, 1.0, tol, held, detail, (lower, upper))


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


@plotting.styled
def learned_figure(
    text: dict[str, Any] | None, image: dict[str, Any] | None, entropy_tolerance: float
):
    """Learned worlds vs K per sampler. Top: text (evaluator perplexity, bigram entropy,
    valid-word fraction) with the validation text's and its read-out's values as lines.
    Bottom: digits (nearest-training-image distance, classifier confidence, label
    entropy) with the validation digits' and their reconstructions' values."""
    fig, axes = plotting.new_figure(2, 3, panel_size=(4.2, 3.3))
    panels = (
        (
            0,
            text,
            (
                ("perplexity", "evaluator perplexity", "1", True, "text_perplexity"),
                ("entropy", "sample entropy Ĥ", "nats/token", False, "text_entropy"),
                (
                    "valid_word_fraction",
                    "valid-word fraction",
                    "1",
                    False,
                    "text_valid_word_fraction",
                ),
            ),
            "learned text",
        ),
        (
            1,
            image,
            (
                (
                    "nearest_train_distance",
                    "nearest-training-image distance",
                    "pixel units",
                    True,
                    "val_nearest_train_distance",
                ),
                ("confidence", "classifier confidence", "1", False, "val_confidence"),
                ("class_entropy", "label entropy", "nats", False, "val_class_entropy"),
            ),
            "learned digits",
        ),
    )
    for r, panel, fields, title in panels:
        for c, (field, label, unit, log_y, data_key) in enumerate(fields):
            ax = axes[r, c]
            if panel is None:
                ax.set_visible(False)
                continue
            for name, (ks, v) in _series(panel["table"], field).items():
                ax.plot(ks, v, label=name, **_style(name))
            data = panel["data"]
            ax.axhline(data[data_key], color="0.3", lw=1.0, label="validation data")
            read_key = "readout_" + data_key.split("_", 1)[1]
            if read_key in data:
                ax.axhline(data[read_key], color="0.3", lw=1.0, ls="--", label="data read-out")
            if field in ("entropy", "class_entropy"):
                floor = (1 - entropy_tolerance) * data["readout_entropy"]
                ax.axhline(floor, color="0.3", lw=0.8, ls=":", label="admissibility floor")
            if field == "perplexity" and "unigram_perplexity" in data:
                ax.axhline(
                    data["unigram_perplexity"], color="0.6", lw=1.0, ls="-.", label="unigram"
                )
            ax.set_xscale("log")
            if log_y:
                ax.set_yscale("log")
                _plain_log_y(ax)
            plotting.set_log_ticks(ax, sorted({row["K"] for row in panel["table"]}))
            plotting.label_axes(ax, "steps K", label, xunit="1", yunit=unit, title=title)
        if panel is not None:
            axes[r, 0].legend(ncol=2, fontsize="xx-small")
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
    max_steps = config.max_steps or max(config.num_steps)
    results: dict[str, WorldResult] = {}
    for label, w in variants.items():
        ctx.log(f"{label}: {len(config.samplers)} samplers x K = {list(config.num_steps)}")
        results[label] = measure_world(
            label, w, num_steps=config.num_steps, max_steps=max_steps, **common
        )
    smooth_result = None
    if config.smooth_world:
        smooth = make_smooth_world(worlds.text_zipf, worlds.num_frequent)
        smooth_result = measure_world(
            "smooth", smooth, num_steps=config.num_steps, max_steps=max_steps, **common
        )

    # Regularity sweep at K* on the Zipf world: same padded grid (no new compilation).
    k_star = config.verdict_steps
    sweep: list[dict[str, Any]] = []
    for floor, scale in ctx.progress(config.regularity_sweep, desc="regularity sweep"):
        res = measure_world(
            f"text_zipf/floor={floor:g},scale={scale:g}",
            limited(worlds.text_zipf, floor, scale),
            num_steps=(k_star,),
            max_steps=max_steps,
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
    learned = None
    if config.learned_scale is not None:
        learned = measure_learned(config, ctx, key=jr.fold_in(key_run, 1))
        claims += learned["claims"]

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
    if learned is not None:
        metrics["learned"] = learned["metrics"]
        ctx.save_figure(
            learned_figure(
                learned["metrics"]["text"], learned["metrics"]["image"], config.entropy_tolerance
            ),
            "learned_vs_steps.png",
        )
    metrics["cpu_seconds"] = time.process_time() - cpu_start
    return Measurement(metrics, claims)


def measure_learned(config: Config, ctx: RunContext, *, key: Key) -> dict[str, Any]:
    """The learned part: every learned sampler × K on the learned text and image worlds.

    Returns:
        {"metrics": {"scale", "text", "image", "models", "seconds"}, "claims": [text
        claim, image claim]}.
    """
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    ctx.log(f"learned worlds ({config.learned_scale}): loading (training what is missing)")
    worlds = learned_worlds(
        config.learned_scale,
        seed=config.learned_seed,
        models_dir=config.models_dir,
        progress=ctx.show_progress,
    )
    load_seconds = time.perf_counter() - wall_start
    common = dict(
        sampler_names=config.learned_samplers,
        num_steps=config.learned_num_steps,
        num_samples=config.learned_num_samples,
        grid=config.grid,
        t_min=config.t_min,
        t_max=config.t_max,
        max_steps=config.learned_max_steps or max(config.learned_num_steps),
        progress=lambda it, total, desc: ctx.progress(it, total=total, desc=desc),
    )
    key_text, key_image = jr.split(key)
    ctx.log(
        f"learned text: {len(config.learned_samplers)} samplers x K = "
        f"{list(config.learned_num_steps)}"
    )
    text = measure_learned_text(worlds.text, key=key_text, num_se=config.num_se, **common)
    ctx.log("learned image")
    image = measure_learned_image(worlds.image, key=key_image, **common)
    tol = config.entropy_tolerance
    metrics = {
        "scale": worlds.scale,
        "text": {
            "data": text.data,
            "table": text.rows,
            "ratio_vs_steps": [
                ratio_at_steps(text, k, entropy_tolerance=tol) for k in config.learned_num_steps
            ],
            "pair_ratio_vs_steps": [pair_ratio(text, k) for k in config.learned_num_steps],
        },
        "image": {
            "data": image.data,
            "table": image.rows,
            "ratio_vs_steps": [
                ratio_at_steps(image, k, entropy_tolerance=tol) for k in config.learned_num_steps
            ],
            "pair_ratio_vs_steps": [pair_ratio(image, k) for k in config.learned_num_steps],
        },
        "models": learned_model_summary(worlds),
        "load_seconds": load_seconds,
        "wall_seconds": time.perf_counter() - wall_start,
        "cpu_seconds": time.process_time() - cpu_start,
    }
    claims = [learned_text_claim(text, config), learned_image_claim(image, config)]
    return {"metrics": metrics, "claims": claims}


def run(config: Config, out_dir: Any = "results", seed: int | None = None) -> dict[str, Any]:
    """Run the experiment and write ``<out_dir>/few_step/result.json`` and figures."""
    return _framework.run_experiment(sys.modules[__name__], config, out_dir, seed)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.few_step [--scale quick|full] [--out DIR] [--seed N]``."""
    return _framework.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
