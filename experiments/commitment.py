"""Claim C3b (SPEC §1): categorical commitment (CCI) along sampling trajectories, on exact
worlds and on the learned text world; the AR decoder with vs without commitment.

For each sampler, world and step count K, the harness records the posterior-mean
estimate x̂0(z_k, t_k) of every step (`readout_jax.sample(..., record=record_info)`),
and the commitment curve (SPEC §5, `readout_jax.diagnostics`)

    c(t_k) = fraction of positions whose readout of x̂0(z_k, t_k) equals the final token,

the final token being the readout of the terminal posterior-mean output. CCI = mean_k
c(t_k) (the area under the curve, 1/K … 1). Also per sampler: the **half-commitment
step**, the median over positions of the step from which the readout of x̂0 never
changes again (as a fraction of K; K/K = only the terminal output agrees), with its
time t; the first step at which c ≥ ½; and the mean number of token changes along a
trajectory.

Worlds (the world is a parameter of `measure_world`):

- ``gmm``: a categorical Gaussian mixture (M modes in R^n, random means with RMS pairwise
  distance `gmm_separation`·τ; Bayes readout, β = 1), variance-preserving cosine
  schedule;
- ``tokens``: the `TokenSequence` world of character bigrams of English text (L
  positions, d dimensions, V tokens), same schedule; built as `few_step`'s ``text``
  world (`few_step.make_token_worlds`: its vocabulary padded with R zero-probability
  tokens, which never occur and are never read out), so that both experiments run the
  same compiled samplers.

Samplers (default hyperparameters of `get_sampler`): ODE ``euler``, ``ddim``, ``heun``,
``dpmpp_2m``; SDE ``ddim_eta`` (η = 1), ``euler_maruyama``; hybrid ``churn`` (γ = 0.4),
``restart``, ``renoise_rf`` (γ = 1.5, on a rectified-flow copy of the world: same data,
`rectified_flow` schedule), ``margin_gated`` (η = 1 where the margin of x̂0 is < 1). With
`rf_reference`, Euler on the rectified-flow copy (``euler_rf``, which is renoise_rf at
γ = 0) is run as renoise_rf's matched ODE baseline; it is reported, not grouped. All
samplers share one time grid kind (uniform in t from `t_max` = 0.995, since
euler_maruyama needs α(t_max) > 0, to `t_min`), the same initial noise ε (x_init =
σ(t_max)·ε on each schedule) and the same sampling key: common random numbers, so
every comparison is paired by trajectory.

**Verdict (stated up front).** The claim "deterministic samplers commit late" predicts
that the ODE samplers have a *lower* CCI than the stochastic (SDE and hybrid) samplers.
Per world and trajectory i, D_i = mean over K of [mean CCI of the SDE/hybrid samplers −
mean CCI of the ODE samplers] (paired: same ε and key). Held iff the lower end of the
95% interval of mean_i D_i (± 1.96 standard errors over trajectories) is > 0.

What to expect: CCI scores agreement with the *final* token. With an exact
posterior-mean denoiser the readout of x̂0(z_k) is a good predictor of where a
deterministic flow from z_k ends, whereas a stochastic sampler keeps injecting noise that
can still change its final token late in the trajectory; by this measure a stochastic
sampler "decides later", so the prediction may well fail on exact worlds. The result
says so with the numbers when it does.

The autoregressive part of C3b (perplexity with committed tokens vs soft expectations
fed back, SPEC §5) needs an AR decoder, which exact worlds do not have: `ar_commitment`
is the hook a learned world fills (two `diagnostics.ARDecodeFn` callables); on exact
worlds the result records it as not measured.

**Learned text world** (`learned_scale`; `few_step.learned_worlds`, built once per
process). Every sampler's CCI on the learned text world (parallel-decoder readout),
from the encoded latents of N validation windows noised to t_max, with the same
paired verdict as above. The AR intervention: the AR decoder decodes (greedy) latents
once feeding back the committed tokens and once the soft expectations Σ_v p(v)·E[v];
both outputs are scored by the evaluator LM. **Verdict (stated up front):** held iff the
lower end of the 95% interval of log(perplexity_soft / perplexity_committed) is > 0, on
two sets of latents, two rows: (1) the N clean validation latents (reconstruction;
paired over latents), (2) generation: the outputs of every sampler at the largest
learned K, pooled (per initial latent, the mean over samplers of the per-sequence NLL
difference; SE over the N initial latents). Each sampler's own pair is reported too.

Trajectories come from `few_step.sample_steps_many(..., record=True)`; the token world is
`few_step`'s ``text`` world; with the quick settings the shapes equal `few_step`'s, so
after `few_step` in one process (``readout-jax reproduce``) nothing is compiled again.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import readout_jax as rj
from experiments import _framework, few_step
from experiments._framework import Claim, Measurement, RunContext
from readout_jax import diagnostics, plotting, schedules
from readout_jax._types import Array, Float, Int, Key, Latent
from readout_jax.manifolds import GaussianMixture

__all__ = [
    "LEARNED_WORLD",
    "measure_learned",
    "NAME",
    "CLAIM",
    "WORLDS",
    "SAMPLER_NAMES",
    "RF_SAMPLERS",
    "Config",
    "TrajectoryCommitment",
    "make_world",
    "make_samplers",
    "sampler_kind",
    "commitment_from_tokens",
    "measure_world",
    "paired_group_difference",
    "ar_commitment",
    "ar_claim",
    "measure",
    "run",
    "main",
]

NAME = "commitment"
CLAIM = "C3b"
WORLDS = ("gmm", "tokens")
SAMPLER_NAMES = (
    "euler",
    "ddim",
    "heun",
    "dpmpp_2m",
    "ddim_eta",
    "euler_maruyama",
    "churn",
    "restart",
    "renoise_rf",
    "margin_gated",
)
#: Samplers defined on the rectified-flow schedule: run on the world's RF copy.
RF_SAMPLERS = ("renoise_rf",)
_RF_REFERENCE = "euler_rf"
#: Label of the learned text world in the metrics and figures.
LEARNED_WORLD = "learned text"


@dataclasses.dataclass(frozen=True)
class Config:
    """Configuration of the commitment experiment.

    Attributes:
        seed: run seed (worlds, initial noise, sampling keys).
        worlds: which exact worlds (subset of ``WORLDS``).
        samplers: sampler names (subset of ``SAMPLER_NAMES``).
        rf_reference: also run Euler on the rectified-flow copy (renoise_rf's baseline).
        num_steps: the step counts K.
        batch_size: trajectories per (world, sampler, K).
        t_max, t_min: ends of the time grid (t_max < 1 for euler_maruyama).
        grid_kind: "uniform", "karras" or "logsnr" (`time_grid`).
        gmm_modes, gmm_dim, gmm_separation, gmm_std: the mixture world (M, n, RMS mean
            distance in units of τ, τ).
        token_length, token_dim, token_vocab, token_std, token_separation: the token
            world (L, d, V, τ, RMS embedding distance in units of τ).
        token_smoothing, token_padding: bigram smoothing, and R zero-probability tokens
            that pad the vocabulary to V + R (see `few_step.pad_vocabulary`): the token
            world is `few_step`'s ``text`` world, so with equal settings the two
            experiments share their compiled samplers in one process.
        max_steps: length − 1 of the padded time grid of the exact worlds (None: the
            largest K); equal to `few_step`'s ``max_steps`` to share its compilations.
        learned_scale: scale of the learned text world (`few_step.LEARNED_SCALES`), or
            None to skip it.
        models_dir: folder of the cached trained models (None: the library default).
        learned_seed: the learned models' training seed.
        learned_num_steps: the K values on the learned text world.
        learned_max_steps: padded grid length − 1 there (None: the largest learned K);
            equal to `few_step`'s ``learned_max_steps`` to share its compilations.
        learned_batch_size: trajectories per sampler and K on the learned world (equal to
            `few_step`'s ``learned_num_samples`` to share its compilations); also the
            number of validation latents of the AR intervention.
        num_se: the verdict's multiple of the standard error (1.96: 95%).
    """

    seed: int = 0
    worlds: tuple[str, ...] = WORLDS
    samplers: tuple[str, ...] = SAMPLER_NAMES
    rf_reference: bool = True
    num_steps: tuple[int, ...] = (16,)
    batch_size: int = 512
    t_max: float = 0.995
    t_min: float = 1e-3
    grid_kind: str = "uniform"
    gmm_modes: int = 8
    gmm_dim: int = 8
    gmm_separation: float = 4.0
    gmm_std: float = 1.0
    token_length: int = 16
    token_dim: int = 8
    token_vocab: int = 32
    token_std: float = 0.5
    token_separation: float = 8.0
    token_smoothing: float = 0.5
    token_padding: int = 96
    max_steps: int | None = None
    learned_scale: str | None = "full"
    models_dir: str | None = None
    learned_seed: int = 0
    learned_num_steps: tuple[int, ...] = (8, 16, 32)
    learned_max_steps: int | None = None
    learned_batch_size: int = 1024
    num_se: float = 1.96

    def __post_init__(self):
        if not self.worlds or any(w not in WORLDS for w in self.worlds):
            raise ValueError(f"worlds must be a non-empty subset of {WORLDS}, got {self.worlds}")
        if not self.samplers or any(s not in SAMPLER_NAMES for s in self.samplers):
            raise ValueError(
                f"samplers must be a non-empty subset of {SAMPLER_NAMES}, got {self.samplers}"
            )
        if not self.num_steps or any(int(k) != k or k < 1 for k in self.num_steps):
            raise ValueError(f"num_steps must be integers >= 1, got {self.num_steps}")
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got {self.t_min}, {self.t_max}")
        if "euler_maruyama" in self.samplers and self.t_max >= 1.0:
            raise ValueError("euler_maruyama needs t_max < 1 (alpha(t_max) > 0), e.g. 0.995")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (standard errors), got {self.batch_size}")
        if self.num_se <= 0:
            raise ValueError(f"num_se must be > 0, got {self.num_se}")
        few_step.check_learned_scale(self.learned_scale)
        if not self.learned_num_steps or any(int(k) != k or k < 1 for k in self.learned_num_steps):
            raise ValueError(
                f"learned_num_steps must be integers >= 1, got {self.learned_num_steps}"
            )
        few_step.check_max_steps(self)
        if self.learned_batch_size < 2:
            raise ValueError(f"learned_batch_size must be >= 2, got {self.learned_batch_size}")
        if self.token_padding < 1:
            raise ValueError(f"token_padding must be >= 1, got {self.token_padding}")

    @classmethod
    def quick(cls) -> Config:
        """The token world only (the mixture world at full scale), K = 16, 128
        trajectories; the learned text world (quick models) at K = 16 with 128. Shapes
        equal to `few_step`'s quick ones, so that after it (as in ``readout-jax
        reproduce``) no sampler is compiled again."""
        return cls(
            worlds=("tokens",),
            batch_size=128,
            max_steps=16,
            learned_scale="quick",
            learned_num_steps=(16,),
            learned_max_steps=16,
            learned_batch_size=128,
        )

    @classmethod
    def full(cls) -> Config:
        """K ∈ {8, 16, 32}, 2048 trajectories (learned: 1024, full models)."""
        return cls(num_steps=(8, 16, 32), batch_size=2048, max_steps=64)


# ---------------------------------------------------------------------------------------
# Worlds and samplers
# ---------------------------------------------------------------------------------------
def make_world(config: Config, name: str, key: Key) -> Any:
    """The exact world `name` ("gmm" or "tokens") of the config (β = 1 Bayes readout)."""
    if name == "gmm":
        scale = config.gmm_separation * config.gmm_std / math.sqrt(2.0 * config.gmm_dim)
        return GaussianMixture.random(
            key, config.gmm_modes, config.gmm_dim, scale=scale, std=config.gmm_std
        )
    if name == "tokens":
        spec = few_step.Config(
            length=config.token_length,
            dim=config.token_dim,
            std=config.token_std,
            vocab_size=config.token_vocab,
            separation=config.token_separation,
            smoothing=config.token_smoothing,
            num_rare_tokens=config.token_padding,
            learned_scale=None,
        )
        return few_step.make_token_worlds(spec, key).text
    raise ValueError(f"unknown world {name!r}; valid worlds are {list(WORLDS)}")


def make_samplers(names: Sequence[str], *, rf_reference: bool = False) -> dict[str, Any]:
    """Built-in samplers by name (default hyperparameters), plus ``euler_rf`` if asked."""
    out = {name: rj.get_sampler(name) for name in names}
    if rf_reference:
        out[_RF_REFERENCE] = rj.get_sampler("euler")
    return out


def sampler_kind(sampler: Any) -> str:
    """ "ode", "sde" or "hybrid" (the sampler's `kind`; "unknown" if it has none)."""
    return str(getattr(sampler, "kind", "unknown"))


# ---------------------------------------------------------------------------------------
# Commitment of recorded trajectories
# ---------------------------------------------------------------------------------------
class TrajectoryCommitment(NamedTuple):
    """Commitment of a batch of trajectories of one sampler at one K.

    Attributes:
        curve: (batch, K) c(t_k) per trajectory.
        index: (batch,) CCI per trajectory.
        commit_step: (batch, positions) the step from which the readout of x̂0 equals the
            final token at every later step (0 … K; K: only the terminal output).
        num_changes: (batch, positions) readout changes along the trajectory, the
            terminal output included.
    """

    curve: Float[Array, " batch K"]
    index: Float[Array, " batch"]
    commit_step: Int[Array, " batch P"]
    num_changes: Int[Array, " batch P"]


def commitment_from_tokens(
    tokens: Int[Array, " batch K *positions"], final_tokens: Int[Array, " batch *positions"]
) -> TrajectoryCommitment:
    """Commitment curve, CCI, commitment step and change count from per-step tokens.

    The curve and CCI are `diagnostics.cci_from_tokens` (SPEC §5); the commitment step of
    a position is 1 + the last step whose token differs from the final one (0 if none).

    Args:
        tokens: (batch, K, *positions) readouts of the recorded x̂0.
        final_tokens: (batch, *positions) readouts of the terminal output.

    Returns:
        A `TrajectoryCommitment`.
    """
    tokens = jnp.asarray(tokens)
    final_tokens = jnp.asarray(final_tokens)
    res = diagnostics.cci_from_tokens(tokens, final_tokens)
    batch, num_steps = tokens.shape[:2]
    flat = tokens.reshape(batch, num_steps, -1)
    final = final_tokens.reshape(batch, 1, -1)
    differs = flat != final  # (batch, K, P)
    steps = jnp.arange(1, num_steps + 1)[None, :, None]
    commit = jnp.max(jnp.where(differs, steps, 0), axis=1)
    path = jnp.concatenate([flat, final], axis=1)
    changes = jnp.sum(path[:, 1:] != path[:, :-1], axis=1)
    return TrajectoryCommitment(res.curve, res.index, commit, changes)


@jax.jit
def _final_tokens(world, x_final):
    return jax.vmap(lambda x: jnp.argmax(world.logits(x), axis=-1))(x_final)


def measure_world(
    world: Any,
    samplers: Mapping[str, Any],
    num_steps: Sequence[int],
    *,
    key: Key,
    num_trajectories: int,
    t_max: float = 0.995,
    t_min: float = 1e-3,
    grid_kind: str = "uniform",
    rf_samplers: Sequence[str] = (*RF_SAMPLERS, _RF_REFERENCE),
    max_steps: int | None = None,
    x_init: Any = None,
    progress: Callable | None = None,
) -> dict[str, dict[int, dict[str, Any]]]:
    """Commitment of every sampler at every K on one categorical world.

    The world is a parameter: any world with `denoise`, `schedule`, `latent_shape` and
    `logits` (the learned text world plugs in here). Samplers named in `rf_samplers` run
    on a rectified-flow copy of the world (`dataclasses.replace(world, schedule=...)`);
    a world already on the rectified-flow schedule is its own copy, and there the
    reference ``euler_rf`` (which would be ``euler``) is left out. Every run starts from
    the same x_init (default σ(t_max)·ε on its schedule) with the same sampling key.

    Trajectories come from `few_step.sample_steps_many(..., record=True)`: the samplers'
    own steps with the harness's keys, the readout of every step's x̂0 recorded, all
    samplers compiled together once for every K ≤ `max_steps` (the program `few_step`
    compiles for the same world, samplers and shapes: shared in one process).

    Args:
        world: a categorical world.
        samplers: name → sampler.
        num_steps: the K values.
        key: split into the initial-noise key and the (shared) sampling key.
        num_trajectories: batch size.
        t_max, t_min, grid_kind: of `readout_jax.time_grid`.
        rf_samplers: names run on the rectified-flow copy.
        max_steps: length − 1 of the padded grid (default max K).
        x_init: (num_trajectories, *latent) initial latents at t_max (default
            `prior_sample` at t_max from the noise key).
        progress: optional `(iterable, total=, desc=) -> iterable` wrapper.

    Returns:
        name → K → dict with the `TrajectoryCommitment` fields as numpy arrays plus
        `ts` (K + 1,), `nfe` (per trajectory, the terminal posterior mean included),
        `num_draws` (per trajectory) and `x0` (the terminal outputs).
    """
    key_prior, key_sample = jr.split(key)
    native_rf = isinstance(world.schedule, schedules.RectifiedFlow)
    max_steps = max(num_steps) if max_steps is None else int(max_steps)
    rf_world = None
    runs: list[tuple[str, Any, Any]] = []  # (name, sampler, world it runs on)
    for name, sampler in samplers.items():
        if native_rf and name == _RF_REFERENCE:
            continue  # the world is its own rectified-flow copy: euler_rf would be euler
        w = world
        if name in rf_samplers and not native_rf:
            rf_world = few_step.rectified_flow_copy(world) if rf_world is None else rf_world
            w = rf_world
        runs.append((name, sampler, w))
    starts = [
        rj.prior_sample(key_prior, w, num_trajectories, t=t_max) if x_init is None else x_init
        for _, _, w in runs
    ]
    out: dict[str, dict[int, dict[str, Any]]] = {name: {} for name, _, _ in runs}
    ks = list(num_steps)
    if progress is not None:
        ks = progress(ks, total=len(ks), desc="K")
    for k in ks:
        grids = [
            few_step.padded_grid(
                w.schedule, int(k), max_steps, kind=grid_kind, t_min=t_min, t_max=t_max
            )
            for _, _, w in runs
        ]
        results = few_step.sample_steps_many(
            [(s, w) for _, s, w in runs],
            key_sample,
            starts,
            [g[0] for g in grids],
            [g[1] for g in grids],
            record=True,
        )
        for (name, _, w), (ts, _), res in zip(runs, grids, results, strict=True):
            final = _final_tokens(w, jnp.asarray(res.x0))
            com = commitment_from_tokens(res.tokens, final)
            out[name][int(k)] = {
                **{f: np.asarray(v) for f, v in com._asdict().items()},
                "ts": np.asarray(ts),
                "nfe": res.nfe + 1,
                "num_draws": res.draws,
                "x0": res.x0,
            }
    return out


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    """Per-(sampler, K) summary: CCI ± SE, mean curve, half-commitment, changes, cost."""
    index = record["index"]
    cci, se = _framework.mean_with_se(index)
    commit = record["commit_step"].reshape(-1)
    num_steps = record["curve"].shape[1]
    half = int(np.quantile(commit, 0.5, method="inverted_cdf"))
    mean_curve = record["curve"].mean(axis=0)
    above = np.nonzero(mean_curve >= 0.5)[0]
    return {
        "cci": cci,
        "cci_se": se,
        "mean_curve": mean_curve,
        "half_commit_step": half,
        "half_commit_fraction": half / num_steps,
        "half_commit_time": float(record["ts"][half]),
        "first_step_half_agree": int(above[0]) if above.size else None,
        "mean_changes": float(record["num_changes"].mean()),
        "fraction_committed_at_terminal_only": float(np.mean(commit == num_steps)),
        "nfe": float(record["nfe"].mean()),
        "num_draws": float(record["num_draws"].mean()),
        "ts": record["ts"],
    }


def paired_group_difference(
    records: Mapping[str, Mapping[int, Mapping[str, Any]]],
    group_a: Sequence[str],
    group_b: Sequence[str],
) -> tuple[float, float, np.ndarray]:
    """mean_i D_i ± SE, D_i = mean over K of [mean CCI over group_a − over group_b].

    Trajectory i of every sampler starts from the same noise (common random numbers), so
    the difference is paired and its standard error is std(D)/sqrt(batch).

    Returns:
        `(mean, std_error, D)` with D of shape (batch,).
    """
    ks = sorted(next(iter(records.values())).keys())
    per_k = []
    for k in ks:
        a = np.mean([records[s][k]["index"] for s in group_a], axis=0)
        b = np.mean([records[s][k]["index"] for s in group_b], axis=0)
        per_k.append(a - b)
    d = np.mean(per_k, axis=0)
    mean, se = _framework.mean_with_se(d)
    return mean, se, d


# ---------------------------------------------------------------------------------------
# The autoregressive hook (learned worlds)
# ---------------------------------------------------------------------------------------
def ar_commitment(
    world: Any,
    latents: Float[Array, " batch *latent"] | None = None,
    *,
    key: Key | None = None,
    decode_committed_fn: Callable[[Latent, Key], Float[Array, " L"]] | None = None,
    decode_soft_fn: Callable[[Latent, Key], Float[Array, " L"]] | None = None,
    per_sequence: bool = False,
) -> dict[str, Any]:
    """The AR part of C3b: perplexity with committed tokens vs soft expectations fed back.

    Hook for the learned-world issue: pass the AR decoder of a learned text world as two
    `diagnostics.ARDecodeFn` callables (decode one latent with a key, feeding back the
    committed tokens / the soft expectations, and return per-token NLLs under the
    evaluator); they run on `latents` through `diagnostics.ar_intervention` with common
    random numbers. Without them (exact worlds have no AR decoder) nothing is measured
    and the result says so; nothing is simulated in its place.

    Args:
        world: the world whose latents are decoded (named in the result).
        latents: (batch, *latent) latents to decode (e.g. sampler outputs).
        key: random key of the decoders.
        decode_committed_fn, decode_soft_fn: the two AR variants, both or neither.
        per_sequence: also return the per-sequence mean NLLs ("nll_committed",
            "nll_soft": numpy arrays of shape (batch,)).

    Returns:
        {"measured": False, "reason": ...} without decoders; else {"measured": True,
        "perplexity_committed", "perplexity_soft", "log_ratio", "std_error_log_ratio",
        "batch"}.

    Raises:
        ValueError: if only one of the two callables is given, or latents / key are
            missing when they are.
    """
    given = (decode_committed_fn is not None, decode_soft_fn is not None)
    world_name = type(world).__name__
    if not any(given):
        return {
            "measured": False,
            "world": world_name,
            "reason": (
                "not measured on exact worlds: they have no autoregressive decoder; the "
                "learned-world issue passes one to ar_commitment"
            ),
        }
    if not all(given):
        raise ValueError("pass both decode_committed_fn and decode_soft_fn, or neither")
    if latents is None or key is None:
        raise ValueError("ar_commitment needs latents and key when decoders are given")
    if _is_pytree_fn(decode_committed_fn) and _is_pytree_fn(decode_soft_fn):
        res = _ar_intervention_jit(decode_committed_fn, decode_soft_fn, latents, key)
    else:
        res = diagnostics.ar_intervention(decode_committed_fn, decode_soft_fn, latents, key=key)
    out = {
        "measured": True,
        "world": world_name,
        "perplexity_committed": float(res.perplexity_committed),
        "perplexity_soft": float(res.perplexity_soft),
        "log_ratio": float(res.log_ratio),
        "std_error_log_ratio": float(res.std_error_log_ratio),
        "batch": int(np.shape(latents)[0]),
    }
    if per_sequence:
        out["nll_committed"] = np.asarray(res.nll_committed, np.float64)
        out["nll_soft"] = np.asarray(res.nll_soft, np.float64)
    return out


def _is_pytree_fn(fn: Any) -> bool:
    """A callable pytree with array leaves (e.g. `learned.ARDecodeScorer`): jittable."""
    leaves = jax.tree_util.tree_leaves(fn)
    return bool(leaves) and all(isinstance(v, (jax.Array, np.ndarray)) for v in leaves)


@jax.jit
def _ar_intervention_jit(decode_committed_fn, decode_soft_fn, latents, key):
    return diagnostics.ar_intervention(decode_committed_fn, decode_soft_fn, latents, key=key)


def ar_claim(result: Mapping[str, Any], *, world_name: str, num_se: float = 1.96) -> Claim:
    """C3b (AR part): removing commitment collapses generation, log(ppl_soft/ppl_committed)
    > 0; held iff the lower end of its num_se interval is > 0.

    Raises:
        ValueError: if `result` was not measured.
    """
    if not result.get("measured"):
        raise ValueError("ar_claim needs a measured ar_commitment result")
    return _framework.claim_from_se(
        CLAIM,
        f"AR decoder on {world_name}: feeding back soft expectations instead of committed "
        "tokens raises perplexity (measured: log(perplexity_soft / perplexity_committed))",
        measured=result["log_ratio"],
        se=result["std_error_log_ratio"],
        predicted=0.0,
        tolerance=0.0,
        num_se=num_se,
        rule="above",
        detail=(
            f"perplexity committed {result['perplexity_committed']:.4g}, soft "
            f"{result['perplexity_soft']:.4g}, {result['batch']} latents"
        ),
    )


# ---------------------------------------------------------------------------------------
# Verdict
# ---------------------------------------------------------------------------------------
def _world_size(world_name: str, world: Any) -> str:
    if world_name == "tokens":
        return f"L = {world.length}, d = {world.dim}, V = {world.vocab_size}"
    if world_name == "gmm":
        return f"M = {world.num_modes}, n = {world.dim}"
    length, width = world.latent_shape
    return f"L = {length}, d = {width}, V = {world.vocab.size}"


def _claim(config, world_name, size, records, summaries, groups, ar_note=None) -> Claim | None:
    ode = [s for s in groups["ode"] if s in records]
    stoch = [s for s in groups["sde"] + groups["hybrid"] if s in records]
    if not ode or not stoch:
        return None
    mean, se, _ = paired_group_difference(records, stoch, ode)
    ks = sorted(next(iter(records.values())).keys())
    per_k = []
    for k in ks:
        m_ode = np.mean([summaries[s][k]["cci"] for s in ode])
        m_st = np.mean([summaries[s][k]["cci"] for s in stoch])
        per_k.append(f"K = {k}: ODE {m_ode:.3f} vs SDE/hybrid {m_st:.3f}")
    per_sampler = "; ".join(
        f"{s} {summaries[s][ks[-1]]['cci']:.3f} ± {summaries[s][ks[-1]]['cci_se']:.3f} "
        f"(half committed at {summaries[s][ks[-1]]['half_commit_fraction']:.2f}·K, "
        f"{summaries[s][ks[-1]]['mean_changes']:.2f} changes)"
        for s in records
    )
    lo, hi = mean - config.num_se * se, mean + config.num_se * se
    why = ""
    if hi < 0:
        why = (
            f" NOT HELD, and the data point the other way: on this world the ODE "
            "samplers' intermediate readouts agree with their final tokens MORE often than "
            "the stochastic samplers' do. CCI scores agreement with the final token. A "
            "deterministic flow's final token is a fixed function of its current state, "
            f"which the readout of the {'learned' if ar_note else 'exact'} posterior mean "
            "x̂0 predicts well; an SDE / "
            "hybrid sampler keeps injecting noise that can still change its final token "
            "late in the trajectory (compare the change counts and half-commitment steps). "
            "By this measure the stochastic samplers decide later."
        )
    elif lo <= 0:
        why = " NOT HELD: the paired difference is not distinguishable from 0 at this sample size."
    if ar_note is None:
        ar_note = "AR intervention: not measured on exact worlds (no AR decoder)."
    return _framework.claim_from_se(
        CLAIM,
        f"deterministic samplers commit late: CCI(SDE/hybrid) − CCI(ODE) > 0, paired over "
        f"trajectories, {world_name} world ({size}), K ∈ {list(ks)}",
        measured=mean,
        se=se,
        predicted=0.0,
        tolerance=0.0,
        num_se=config.num_se,
        rule="above",
        detail=(
            f"ODE = {ode}, SDE/hybrid = {stoch}; {'; '.join(per_k)}. At K = {ks[-1]}: "
            f"{per_sampler}.{why} {ar_note}"
        ),
    )


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------
_STYLE_OF_KIND = {"ode": "-", "sde": "--", "hybrid": ":", "unknown": "-."}


def _color(i: int):
    """Distinct colours for up to 20 samplers (tab10, then black and greys)."""
    extra = ("k", "0.45", "0.7", "C0", "C1", "C2", "C3", "C4", "C5", "C6")
    return f"C{i}" if i < 10 else extra[(i - 10) % len(extra)]


@plotting.styled
def curves_figure(panels: dict[str, dict[str, dict[int, dict[str, Any]]]], kinds: dict[str, str]):
    """c(t_k) vs step fraction k/K per sampler; rows = worlds, columns = K."""
    worlds = list(panels)
    ks_of = {w: sorted(next(iter(panels[w].values())).keys()) for w in worlds}
    ncols = max(len(ks) for ks in ks_of.values())
    fig, axes = plotting.new_figure(
        len(worlds), ncols, panel_size=(3.8, 3.0), sharex=True, sharey=True
    )
    for r, w in enumerate(worlds):
        for c in range(len(ks_of[w]), ncols):
            axes[r, c].set_visible(False)
        for c, k in enumerate(ks_of[w]):
            ax = axes[r, c]
            for i, (name, by_k) in enumerate(panels[w].items()):
                curve = np.asarray(by_k[k]["mean_curve"])
                ax.plot(
                    np.arange(curve.size) / k,
                    curve,
                    linestyle=_STYLE_OF_KIND.get(kinds[name], "-."),
                    color=_color(i),
                    label=f"{name} ({kinds[name]})",
                )
            ax.axhline(0.5, color="0.5", linewidth=0.6)
            ax.set_ylim(0.0, 1.02)
            plotting.label_axes(
                ax,
                "step fraction k/K",
                "c(t_k): fraction agreeing with final token",
                xunit="1",
                yunit="1",
                title=f"{w}, K = {k}",
            )
    axes[0, 0].legend(fontsize=6, loc="lower right")
    return fig


@plotting.styled
def summary_figure(panels: dict[str, dict[str, dict[int, dict[str, Any]]]], kinds: dict[str, str]):
    """Per world: CCI ± 2 SE and the half-commitment step fraction per sampler and K."""
    worlds = list(panels)
    fig, axes = plotting.new_figure(2, len(worlds), panel_size=(4.6, 3.0))
    for c, w in enumerate(worlds):
        names = list(panels[w])
        ks = sorted(next(iter(panels[w].values())).keys())
        x = np.arange(len(names))
        for j, k in enumerate(ks):
            off = (j - (len(ks) - 1) / 2) * 0.18
            cci = np.array([panels[w][s][k]["cci"] for s in names])
            se = np.array([panels[w][s][k]["cci_se"] for s in names])
            half = np.array([panels[w][s][k]["half_commit_fraction"] for s in names])
            axes[0, c].errorbar(x + off, cci, yerr=2 * se, fmt="o", color=f"C{j}", label=f"K = {k}")
            axes[1, c].plot(x + off, half, "s", color=f"C{j}", label=f"K = {k}")
        for r, ylabel in enumerate(("CCI (± 2 SE)", "half-commitment step / K")):
            ax = axes[r, c]
            ax.set_xticks(x, [f"{s}\n({kinds[s]})" for s in names], rotation=70, fontsize=6)
            plotting.label_axes(ax, "sampler", ylabel, yunit="1", title=f"{w} world")
            ax.legend(fontsize=6)
    return fig


# ---------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------
def measure(config: Config, ctx: RunContext) -> Measurement:
    """CCI curves per sampler on the exact worlds; one C3b verdict per world."""
    key_worlds, key_runs = jr.split(ctx.key())
    samplers = make_samplers(config.samplers, rf_reference=config.rf_reference)
    kinds = {name: sampler_kind(s) for name, s in samplers.items()}
    groups = {
        kind: [s for s in config.samplers if kinds[s] == kind] for kind in ("ode", "sde", "hybrid")
    }
    metrics: dict[str, Any] = {
        "num_steps": list(config.num_steps),
        "sampler_kinds": kinds,
        "groups": groups,
        "worlds": {},
    }
    claims: list[Claim] = []
    panels: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for i, world_name in enumerate(config.worlds):
        # the token world from the key `few_step` builds its worlds with: with the same
        # run seed it is few_step's ``text`` world itself (its static vocabulary included),
        # so the compiled samplers are shared in one process
        world_key = key_worlds if world_name == "tokens" else jr.fold_in(key_worlds, i)
        world = make_world(config, world_name, world_key)
        ctx.log(f"{world_name} world: {len(samplers)} samplers × K = {list(config.num_steps)}")
        records = measure_world(
            world,
            samplers,
            config.num_steps,
            key=jr.fold_in(key_runs, i),
            num_trajectories=config.batch_size,
            t_max=config.t_max,
            t_min=config.t_min,
            grid_kind=config.grid_kind,
            progress=lambda it, total, desc, w=world_name: ctx.progress(
                it, total=total, desc=f"{w} {desc}"
            ),
        )
        summaries = {s: {k: _summary(r) for k, r in by_k.items()} for s, by_k in records.items()}
        panels[world_name] = summaries
        for s, by_k in records.items():
            for k, r in by_k.items():
                arrays[f"{world_name}_{s}_K{k}_cci"] = r["index"]
                arrays[f"{world_name}_{s}_K{k}_curve"] = r["curve"].mean(axis=0)
        claim = _claim(
            config, world_name, _world_size(world_name, world), records, summaries, groups
        )
        if claim is not None:
            claims.append(claim)
        diff = None
        if claim is not None:
            diff = {"measured": claim.measured, "interval": claim.interval}
        rf_pair = None
        if "renoise_rf" in records and _RF_REFERENCE in records:
            m, se, _ = paired_group_difference(records, ["renoise_rf"], [_RF_REFERENCE])
            rf_pair = {"renoise_rf_minus_euler_rf": m, "std_error": se}
        metrics["worlds"][world_name] = {
            "samplers": summaries,
            "stochastic_minus_ode_cci": diff,
            "renoise_vs_rf_euler": rf_pair,
            "ar_intervention": ar_commitment(world),
        }
    if config.learned_scale is not None:
        learned = measure_learned(config, ctx, samplers, groups, key=jr.fold_in(key_runs, 99))
        claims += learned["claims"]
        metrics["learned"] = learned["metrics"]
        panels[LEARNED_WORLD] = learned["metrics"]["samplers"]
        for s, by_k in learned["records"].items():
            for k, r in by_k.items():
                arrays[f"learned_{s}_K{k}_cci"] = r["index"]
                arrays[f"learned_{s}_K{k}_curve"] = r["curve"].mean(axis=0)
    ctx.save_figure(curves_figure(panels, kinds), "commitment_curves.png")
    ctx.save_figure(summary_figure(panels, kinds), "cci_by_sampler.png")
    ctx.save_arrays("commitment.npz", **arrays)
    return Measurement(metrics, claims)


def measure_learned(
    config: Config,
    ctx: RunContext,
    samplers: Mapping[str, Any],
    groups: Mapping[str, Sequence[str]],
    *,
    key: Key,
) -> dict[str, Any]:
    """CCI of every sampler on the learned text world, and the AR intervention (C3b).

    The trajectories start from the encoded validation latents noised to t_max
    (`few_step.learned_inputs`, as in `few_step`). The AR intervention decodes (greedy,
    temperature 0) with committed tokens vs soft expectations fed back, scored by the
    evaluator LM, the N clean validation latents and every sampler's terminal outputs at
    the largest learned K (module docstring: the two claim rows).

    Returns:
        {"metrics", "claims": [CCI claim, AR claim (validation), AR claim (generated)],
        "records"}.
    """
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    ctx.log(f"learned worlds ({config.learned_scale}): loading (training what is missing)")
    worlds = few_step.learned_worlds(
        config.learned_scale,
        seed=config.learned_seed,
        models_dir=config.models_dir,
        progress=ctx.show_progress,
    )
    text = worlds.text
    key_inputs, key_runs, key_ar = jr.split(key, 3)
    inputs = few_step.learned_inputs(
        text, text.val_tokens, config.learned_batch_size, key_inputs, config.t_max
    )
    ctx.log(f"learned text: {len(samplers)} samplers × K = {list(config.learned_num_steps)}")
    records = measure_world(
        text.manifold,
        samplers,
        config.learned_num_steps,
        key=key_runs,
        num_trajectories=config.learned_batch_size,
        t_max=config.t_max,
        t_min=config.t_min,
        grid_kind=config.grid_kind,
        max_steps=config.learned_max_steps or max(config.learned_num_steps),
        x_init=inputs.x_init,
        progress=lambda it, total, desc: ctx.progress(it, total=total, desc=f"learned {desc}"),
    )
    summaries = {s: {k: _summary(r) for k, r in by_k.items()} for s, by_k in records.items()}
    committed_fn = text.ar_decode_fn("committed")
    soft_fn = text.ar_decode_fn("soft")
    ctx.log("AR intervention: committed vs soft feedback")
    ar_val = ar_commitment(
        text, inputs.x0, key=key_ar, decode_committed_fn=committed_fn, decode_soft_fn=soft_fn
    )
    k_last = max(config.learned_num_steps)
    ar_generated = {
        s: ar_commitment(
            text,
            jnp.asarray(by_k[k_last]["x0"]),
            key=key_ar,
            decode_committed_fn=committed_fn,
            decode_soft_fn=soft_fn,
            per_sequence=True,
        )
        for s, by_k in records.items()
    }
    # pooled over the samplers: per latent i (the same x_init for every sampler), the
    # mean over samplers of the per-sequence NLL difference soft − committed
    diff = np.stack([r.pop("nll_soft") - r.pop("nll_committed") for r in ar_generated.values()])
    pooled_mean, pooled_se = _framework.mean_with_se(diff.mean(axis=0))
    ar_pooled = {
        "measured": True,
        "log_ratio": pooled_mean,
        "std_error_log_ratio": pooled_se,
        "perplexity_committed": float(
            np.exp(np.mean([np.log(r["perplexity_committed"]) for r in ar_generated.values()]))
        ),
        "perplexity_soft": float(
            np.exp(np.mean([np.log(r["perplexity_soft"]) for r in ar_generated.values()]))
        ),
        "batch": int(diff.shape[1]),
        "num_samplers": int(diff.shape[0]),
        "steps": k_last,
    }
    listing = "; ".join(
        f"{s}: {r['perplexity_committed']:.3g} vs {r['perplexity_soft']:.3g}"
        for s, r in ar_generated.items()
    )
    ar_note = (
        f"AR intervention on the {ar_val['batch']} clean validation latents: perplexity "
        f"committed {ar_val['perplexity_committed']:.3g} vs soft {ar_val['perplexity_soft']:.3g}"
        f"; on each sampler's outputs at K = {k_last} (committed vs soft): {listing}."
    )
    name = f"learned text ({worlds.scale} models)"
    claims = []
    cci_claim = _claim(
        config,
        name,
        _world_size(LEARNED_WORLD, text),
        records,
        summaries,
        groups,
        ar_note=ar_note,
    )
    if cci_claim is not None:
        claims.append(cci_claim)
    ar_row = ar_claim(
        ar_val,
        world_name=f"{name}, {ar_val['batch']} clean validation latents",
        num_se=config.num_se,
    )
    claims.append(
        dataclasses.replace(
            ar_row, detail=f"{ar_row.detail}. Sampled latents, K = {k_last}: {listing}"
        )
    )
    gen_row = ar_claim(
        ar_pooled,
        world_name=(
            f"{name}, the latents generated by every sampler at K = {k_last} ("
            f"{ar_pooled['num_samplers']} samplers × {ar_pooled['batch']}; pooled, paired per "
            "initial latent)"
        ),
        num_se=config.num_se,
    )
    claims.append(
        dataclasses.replace(
            gen_row,
            detail=(
                f"{gen_row.detail} (geometric means over the samplers). Per sampler, "
                f"committed vs soft: {listing}"
            ),
        )
    )
    metrics = {
        "scale": worlds.scale,
        "samplers": summaries,
        "stochastic_minus_ode_cci": None
        if cci_claim is None
        else {"measured": cci_claim.measured, "interval": cci_claim.interval},
        "ar_intervention": ar_val,
        "ar_intervention_generated": ar_generated,
        "ar_intervention_generated_pooled": ar_pooled,
        "ar_generated_steps": k_last,
        "models": few_step.learned_model_summary(worlds),
        "wall_seconds": time.perf_counter() - wall_start,
        "cpu_seconds": time.process_time() - cpu_start,
    }
    return {"metrics": metrics, "claims": claims, "records": records}


def run(config: Config, out_dir: Any = "results", seed: int | None = None) -> dict[str, Any]:
    """Run the experiment and write ``<out_dir>/commitment/result.json`` and figures."""
    return _framework.run_experiment(sys.modules[__name__], config, out_dir, seed)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.commitment [--scale quick|full] [--out DIR] [--seed N]``."""
    return _framework.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
