"""Claim C7 (SPEC §1): inside the deterministic-continuous class, accuracy, depth (steps) and
stiffness trade off; both escapes (SDE, hybrid re-injection) leave that class.

**World.** A separated Gaussian mixture (`GaussianMixture.random`): M = 16 equal-weight
modes in n = 8 dimensions, means ~ N(0, I), component std τ = 0.25 (nearest modes ≈ 10τ
apart), categorical readout, variance-preserving cosine schedule. The module's
:func:`measure_world` takes any world with `sample_data` (e.g. a `TokenSequence`).

**The deterministic class** is sampled in two directions: the ODE samplers (euler, ddim,
heun, dpmpp_2m, and euler on the rectified-flow copy, "euler_rf") and, for each, the
regularity of the denoiser: responsibilities computed at κ·v (`resp_scale` κ ∈
`kappas`, κ = 1 exact), a smoother, less stiff denoiser for larger κ. **The escapes**
(ddim_eta, euler_maruyama | churn, restart, renoise_rf (on the rectified-flow copy),
margin_gated) use the exact denoiser. All run at each K on one grid (uniform in t from
0.995 to 10⁻³, posterior-mean terminal step), from the same initial latents (exact
marginal at t_max) with the same sampler key (common random numbers).

**Accuracy.** Each output x is labelled with its nearest mode, or "off-mode" when
min_m |x − μ_m|²/τ² > n + 4·sqrt(2n) (as in `few_step`). Accuracy = 1 − TV between the
label distribution of the outputs (with its off-mode cell) and the data's (π, with no
off-mode mass): it penalises both uncommitted (in-between) outputs and wrong mode
proportions, so a constant map (Lipschitz 0) scores max_m π_m, not 1. The accuracy of an
independent data sample of the same size is reported as the ceiling (finite-N TV).

**Stiffness** (SPEC §5), along the sampled trajectories with each stochastic step's noise
held fixed (the step keys of `readout_jax.sample`): the spectral norm of every step map
Φ_k: z_k ↦ z_(k+1) (the rest of the sampler state, e.g. a multistep history, held fixed),
summarised per step by the median and 99th percentile over trajectories and then by the
peak over steps (`diagnostics.stiffness_summary`); and the spectral norm of the whole
map z_init ↦ x̂0 (the terminal output), median and 99th percentile. For latents of at
most `dense_max_dim` coordinates the Jacobians are dense (`jax.jacfwd` + SVD, exact) and
computed by a K-agnostic driver that compiles once per sampler; larger latents use the
library's matrix-free `diagnostics.step_jacobian_norms` / `whole_map_norm` (one
compilation per sampler and K). The tests check the two agree.

**Verdicts (stated up front), bootstrap over trajectories** (B = `num_bootstrap`
resamples of the N trajectories, shared by all points as the trajectories are paired):

1. *Fixed K, deterministic class*: for each K ≥ 2, the Spearman correlation ρ_K over the
   deterministic points (samplers × κ) between accuracy and the per-step peak stiffness
   (99th percentile); ρ̄ = mean of ρ_K. Held iff the 95% percentile interval of ρ̄ lies
   above 0: accuracy is not raised at fixed K without raising stiffness.
2. *Escapes leave the class*: the deterministic frontier at K is F_K(S) = the highest
   accuracy of a deterministic point at K whose whole-map stiffness (99th percentile) is
   ≤ S, and max_m π_m (a constant map) if there is none. An escape point's gap is
   a − F_K(S) at its own whole-map stiffness (noise fixed). Held iff both families (SDE
   and hybrid) have a point whose gap has a bootstrap 2.5% quantile > 0; measured is the
   smaller of the two families' best 2.5% quantiles.

The per-step axis for the escapes, the pooled correlation with whole-map stiffness, and
the per-step peak against K at matched accuracy (depth) are reported beside them.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from experiments import _framework, few_step
from experiments._framework import Claim, Measurement, RunContext
from readout_jax import diagnostics, harness, plotting, samplers
from readout_jax._types import Array, Float, Key
from readout_jax.manifolds import GaussianMixture

__all__ = [
    "NAME",
    "CLAIM",
    "DETERMINISTIC",
    "ESCAPES",
    "Config",
    "Point",
    "make_world",
    "trajectory_stiffness",
    "category_labels",
    "accuracy_from_labels",
    "spearman",
    "frontier",
    "measure_world",
    "bootstrap_verdicts",
    "measure",
    "run",
    "main",
]

NAME = "tradeoff"
CLAIM = "C7"
DETERMINISTIC = ("euler", "ddim", "heun", "dpmpp_2m", "euler_rf")
ESCAPES = {
    "sde": ("ddim_eta", "euler_maruyama"),
    "hybrid": ("churn", "restart", "renoise_rf", "margin_gated"),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """Configuration of the trade-off experiment (module docstring: what is measured).

    Attributes:
        seed: run seed (world, data, initial latents, sampler noise, bootstrap).
        num_modes, dim, scale, std: M, n, the means' scale and τ of the mixture.
        num_steps: the K values.
        kappas: responsibility-variance scales κ of the deterministic family (1 = exact).
        deterministic: deterministic rows (subset of ``DETERMINISTIC``).
        escapes: escape samplers (subset of the ``ESCAPES`` families).
        num_samples: N trajectories per point.
        t_max, t_min, grid: the time grid.
        off_mode_num_std: c of the off-mode rule n + c·sqrt(2n).
        quantile: the high quantile of the stiffness summaries.
        num_bootstrap: bootstrap resamples B.
        dense_max_dim: largest latent size with dense Jacobians (else matrix-free).
    """

    seed: int = 0
    num_modes: int = 16
    dim: int = 8
    scale: float = 1.0
    std: float = 0.25
    num_steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    kappas: tuple[float, ...] = (1.0, 1.5, 2.0, 4.0, 8.0)
    deterministic: tuple[str, ...] = DETERMINISTIC
    escapes: tuple[str, ...] = ESCAPES["sde"] + ESCAPES["hybrid"]
    num_samples: int = 2048
    t_max: float = 0.995
    t_min: float = 1e-3
    grid: str = "uniform"
    off_mode_num_std: float = 4.0
    quantile: float = 0.99
    num_bootstrap: int = 1000
    dense_max_dim: int = 64

    def __post_init__(self):
        if not set(self.deterministic) <= set(DETERMINISTIC) or not self.deterministic:
            raise ValueError(f"deterministic must be a non-empty subset of {DETERMINISTIC}")
        all_escapes = ESCAPES["sde"] + ESCAPES["hybrid"]
        if not set(self.escapes) <= set(all_escapes):
            raise ValueError(f"escapes must be a subset of {all_escapes}")
        steps = np.asarray(self.num_steps)
        if steps.ndim != 1 or steps.size < 1 or np.any(steps < 1) or np.any(np.diff(steps) <= 0):
            raise ValueError(f"num_steps must be increasing integers >= 1, got {self.num_steps}")
        if not self.kappas or any(k < 1 for k in self.kappas):
            raise ValueError(f"kappas must be >= 1, got {self.kappas}")
        if self.num_samples < 2 or self.num_bootstrap < 10:
            raise ValueError("need num_samples >= 2 and num_bootstrap >= 10")
        if not 0.5 <= self.quantile < 1:
            raise ValueError(f"quantile must be in [0.5, 1), got {self.quantile}")

    @classmethod
    def quick(cls) -> Config:
        """≈ 47 CPU-seconds (was 70–74 s with K ≤ 16 and all samplers): K ≤ 8, N = 512.

        Each sampler is one compiled program (for all K and κ), so the quick scale runs
        fewer samplers: the four ODE samplers on the exact schedule (not euler on the
        rectified-flow copy), both SDE samplers, and the hybrids churn, restart and
        margin_gated (not renoise_rf, which needs the rectified-flow copy). The largest K
        is 8 (the per-point cost grows with K).
        """
        return cls(
            num_steps=(1, 2, 4, 8),
            kappas=(1.0, 2.0, 4.0, 8.0),
            deterministic=("euler", "ddim", "heun", "dpmpp_2m"),
            escapes=("ddim_eta", "euler_maruyama", "churn", "restart", "margin_gated"),
            num_samples=512,
            num_bootstrap=500,
        )

    @classmethod
    def full(cls) -> Config:
        """K up to 32, five κ, N = 2048, B = 1000."""
        return cls()


def make_world(config: Config, key: Key) -> GaussianMixture:
    """M equal-weight modes, means ~ N(0, scale²·I_n), std τ, categorical readout."""
    return GaussianMixture.random(
        key, config.num_modes, config.dim, scale=config.scale, std=config.std
    )


# ---------------------------------------------------------------------------------------
# Trajectories and stiffness
# ---------------------------------------------------------------------------------------
@jax.jit
def _dense_stiffness(sampler, manifold, key, x_init, ts, num_steps):
    ts = ts.astype(x_init.dtype)
    max_steps = ts.shape[0] - 1
    keys = harness.chain_keys(key, x_init.shape[0])

    def one_chain(chain_key, x):
        step_keys = jr.split(chain_key, max_steps)  # the harness's keys (few_step.sample_steps)
        size = x.size

        def step(k, state):
            return sampler.step(step_keys[k], state, manifold, ts[k + 1])[0]

        def body(k, carry):
            state, norms, nfe = carry

            def step_map(z):
                return step(k, state._replace(x=z)).x

            jac = jax.jacfwd(step_map)(state.x).reshape(size, size)
            norms = norms.at[k].set(jnp.linalg.norm(jac, 2))
            state, info = sampler.step(step_keys[k], state, manifold, ts[k + 1])
            return state, norms, nfe + jnp.asarray(info.nfe, jnp.int32)

        carry = (
            sampler.init(x, ts[0]),
            jnp.full((max_steps,), jnp.nan, x.dtype),
            jnp.zeros((), jnp.int32),
        )
        state, norms, nfe = jax.lax.fori_loop(0, num_steps, body, carry)
        x0 = manifold.denoise(state.x, ts[num_steps])

        def whole(z):
            final = jax.lax.fori_loop(0, num_steps, step, sampler.init(z, ts[0]))
            return manifold.denoise(final.x, ts[num_steps])

        whole_jac = jax.jacfwd(whole)(x).reshape(size, size)
        return x0, norms, jnp.linalg.norm(whole_jac, 2), nfe

    return jax.vmap(one_chain)(keys, x_init)


def trajectory_stiffness(
    sampler: Any,
    world: Any,
    key: Key,
    x_init: Float[Array, " N *latent"],
    ts: Float[Array, " K_plus_1"],
    ts_padded: Float[Array, " max_steps_plus_1"],
    *,
    dense_max_dim: int = 64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Terminal outputs, per-step norms, whole-map norms and NFE along
    `readout_jax.sample`'s trajectories (same keys, noise held fixed).

    Dense (exact, `jax.jacfwd` + SVD, compiled once for all K) when the latent has at
    most `dense_max_dim` coordinates; else the library's matrix-free
    `diagnostics.step_jacobian_norms` and `diagnostics.whole_map_norm` (output "x0").

    Returns:
        (x0 (N, *latent), step norms (N, K), whole-map norms (N,), NFE (N,)), numpy.
    """
    num_steps = int(np.shape(ts)[0]) - 1
    harness.check_sample_inputs(sampler, world, x_init, ts)
    if int(np.prod(world.latent_shape)) <= dense_max_dim:
        x0, norms, whole, nfe = _dense_stiffness(
            sampler,
            world,
            harness._as_key(key),
            jnp.asarray(x_init),
            jnp.asarray(ts_padded),
            jnp.asarray(num_steps, jnp.int32),
        )
        norms = np.asarray(norms)[:, :num_steps]
        return np.asarray(x0), norms, np.asarray(whole), np.asarray(nfe)
    out = few_step.sample_steps(sampler, world, key, x_init, ts, ts_padded)
    norms = diagnostics.step_jacobian_norms(sampler, world, key, x_init, ts)
    whole = diagnostics.whole_map_norm(sampler, world, key, x_init, ts, output="x0")
    return out.x0, np.asarray(norms), np.asarray(whole), out.nfe


# ---------------------------------------------------------------------------------------
# Accuracy and statistics
# ---------------------------------------------------------------------------------------
def category_labels(x: np.ndarray, centres: np.ndarray, std: float, num_std: float) -> np.ndarray:
    """Nearest-centre label of each position of x (N, *positions, d); −1 when off-mode."""
    x = np.asarray(x, np.float64)
    c = np.asarray(centres, np.float64)
    sq = np.sum(x**2, -1)[..., None] - 2.0 * x @ c.T + np.sum(c**2, -1)
    labels = np.argmin(sq, axis=-1)
    d = x.shape[-1]
    off = np.maximum(sq.min(axis=-1), 0.0) / std**2 > d + num_std * math.sqrt(2.0 * d)
    return np.where(off, -1, labels).reshape(x.shape[0], -1)


def accuracy_from_labels(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """1 − TV between the label histogram (with an off-mode cell) and (weights, 0).

    Args:
        labels: (..., N, P) labels in {−1, 0, …, M − 1}; leading axes are batches
            (e.g. bootstrap resamples).
        weights: (M,) the data's category probabilities.

    Returns:
        (...) accuracies in [0, 1].
    """
    labels = np.asarray(labels)
    num = weights.shape[0]
    flat = labels.reshape(*labels.shape[:-2], -1) + 1  # 0 = off-mode
    lead = flat.shape[:-1]
    flat2 = flat.reshape(-1, flat.shape[-1])
    offsets = (np.arange(flat2.shape[0]) * (num + 1))[:, None]
    counts = np.bincount((flat2 + offsets).ravel(), minlength=flat2.shape[0] * (num + 1))
    freq = counts.reshape(flat2.shape[0], num + 1) / flat2.shape[1]
    target = np.concatenate([[0.0], np.asarray(weights, np.float64)])
    tv = 0.5 * np.abs(freq - target).sum(axis=-1)
    return (1.0 - tv).reshape(lead)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share their mean rank)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, axis=-1, kind="stable")
    ranks = np.empty_like(x)
    np.put_along_axis(ranks, order, np.arange(x.shape[-1], dtype=np.float64), axis=-1)
    out = np.empty_like(ranks)
    for idx in np.ndindex(x.shape[:-1]):
        row = x[idx]
        _, inverse, counts = np.unique(row, return_inverse=True, return_counts=True)
        sums = np.bincount(inverse, weights=ranks[idx])
        out[idx] = (sums / counts)[inverse]
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rank correlation along the last axis (NaN where x or y is constant)."""
    rx, ry = _ranks(x), _ranks(y)
    rx = rx - rx.mean(-1, keepdims=True)
    ry = ry - ry.mean(-1, keepdims=True)
    den = np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def frontier(
    stiffness: np.ndarray, accuracy: np.ndarray, at: np.ndarray, floor: float
) -> np.ndarray:
    """F(S) = max{accuracy_d : stiffness_d ≤ S} over deterministic points, else `floor`.

    Args:
        stiffness, accuracy: (..., D) deterministic points (leading batch axes allowed).
        at: (..., E) stiffness values S.
        floor: the value where no deterministic point is as smooth (a constant map).

    Returns:
        (..., E) frontier accuracies.
    """
    ok = stiffness[..., None, :] <= at[..., :, None]
    vals = np.where(ok, accuracy[..., None, :], -np.inf).max(axis=-1)
    return np.maximum(vals, floor)


# ---------------------------------------------------------------------------------------
# One world
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Point:
    """One (sampler, K, κ) point of the trade-off.

    Attributes:
        sampler: row name ("euler_rf" is euler on the rectified-flow copy).
        family: "deterministic", "sde" or "hybrid".
        K: steps.
        kappa: responsibility-variance scale of the denoiser.
        labels: (N, P) output categories (−1 off-mode).
        step_norms: (N, K) per-step spectral norms.
        whole_norms: (N,) whole-map spectral norms.
        nfe: denoiser evaluations per sample.
    """

    sampler: str
    family: str
    K: int
    kappa: float
    labels: np.ndarray
    step_norms: np.ndarray
    whole_norms: np.ndarray
    nfe: float

    def summary(self, weights: np.ndarray, q: float) -> dict[str, Any]:
        s = diagnostics.stiffness_summary(jnp.asarray(self.step_norms), q=q)
        return {
            "sampler": self.sampler,
            "family": self.family,
            "K": self.K,
            "kappa": self.kappa,
            "accuracy": float(accuracy_from_labels(self.labels, weights)),
            "off_mode_fraction": float(np.mean(self.labels < 0)),
            "step_peak_median": float(s.peak_median),
            "step_peak_quantile": float(s.peak_quantile),
            "step_median": np.asarray(s.median),
            "step_quantile": np.asarray(s.quantile),
            "whole_median": float(np.median(self.whole_norms)),
            "whole_quantile": float(np.quantile(self.whole_norms, q)),
            "nfe": self.nfe,
        }


def _family(name: str) -> str:
    for fam, names in ESCAPES.items():
        if name in names:
            return fam
    return "deterministic"


def measure_world(
    world: Any,
    *,
    deterministic: Sequence[str],
    escapes: Sequence[str],
    kappas: Sequence[float],
    num_steps: Sequence[int],
    key: Key,
    num_samples: int,
    grid: str = "uniform",
    t_min: float = 1e-3,
    t_max: float = 0.995,
    off_mode_num_std: float = 4.0,
    dense_max_dim: int = 64,
    progress: Callable | None = None,
) -> tuple[list[Point], np.ndarray, np.ndarray]:
    """All (sampler, K, κ) points on `world` (module docstring: what is measured).

    The deterministic rows run at every κ in `kappas` (`few_step.limited(world, 0, κ)`),
    the escapes at κ = 1 only. "euler_rf" and "renoise_rf" run on the rectified-flow copy.
    All points share the initial latents' data and noise and the sampler key.

    Returns:
        (points, the data's category weights (M,), an independent data sample's labels
        (N, P)).
    """
    key_data, key_eps, key_sampler, key_ref = jr.split(key, 4)
    x0, _ = world.sample_data(key_data, num_samples)
    eps = jr.normal(key_eps, x0.shape, x0.dtype)
    centres = few_step.mode_centres(world)
    if hasattr(world, "weights"):
        weights = np.asarray(world.weights, np.float64)
    else:
        weights = np.exp(np.asarray(world.log_unigram, np.float64))
        weights = weights[np.isfinite(np.asarray(world.log_unigram))]
    std = float(world.std)
    x_ref, _ = world.sample_data(key_ref, num_samples)
    ref_labels = category_labels(np.asarray(x_ref), centres, std, off_mode_num_std)

    runs: list[tuple[str, str, float]] = [
        (name, _family(name), float(k)) for name in deterministic for k in kappas
    ]
    runs += [(name, _family(name), 1.0) for name in escapes]
    max_steps = max(num_steps)
    rf_world = few_step.rectified_flow_copy(world)
    points: list[Point] = []
    items = runs if progress is None else progress(runs, total=len(runs), desc="points")
    for row, fam, kappa in items:
        base = few_step.RF_BASELINE if row == "euler_rf" else row
        w = rf_world if row in ("euler_rf", "renoise_rf") else world
        w = few_step.limited(w, 0.0, kappa) if kappa != 1.0 else w
        sampler = samplers.get_sampler(base)
        x_init = few_step.initial_latents(w, x0, eps, t_max)
        for k in num_steps:
            ts, ts_pad = few_step.padded_grid(
                w.schedule, k, max_steps, kind=grid, t_min=t_min, t_max=t_max
            )
            x_out, norms, whole, nfe = trajectory_stiffness(
                sampler, w, key_sampler, x_init, ts, ts_pad, dense_max_dim=dense_max_dim
            )
            labels = category_labels(x_out, centres, std, off_mode_num_std)
            points.append(Point(row, fam, int(k), kappa, labels, norms, whole, float(nfe.mean())))
    return points, weights, ref_labels


# ---------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------
def bootstrap_verdicts(
    points: Sequence[Point],
    weights: np.ndarray,
    *,
    quantile: float,
    num_bootstrap: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """The two C7 statistics of the module docstring, with bootstrap distributions.

    Returns:
        dict with, for verdict 1, ``rho_step`` (ρ̄ with accuracy vs per-step peak),
        ``rho_step_by_K``, ``rho_step_boot`` (B,); the same for the whole-map stiffness
        (``rho_whole*``, reported only); ``rho_step_exact_by_K`` (κ = 1 points only, no
        bootstrap); ``rho_whole_pooled`` (all deterministic points);
        for verdict 2, ``gaps`` (one dict per escape point: gap, its 2.5% and 97.5%
        bootstrap quantiles, frontier) and ``family_best_lower``.
    """
    num = points[0].labels.shape[0]
    idx = np.concatenate(
        [np.arange(num)[None, :], rng.integers(0, num, size=(num_bootstrap, num))]
    )  # row 0 = the data themselves
    acc = np.stack([accuracy_from_labels(p.labels[idx], weights) for p in points])  # (P, B+1)
    step = np.stack(
        [np.nanmax(np.quantile(p.step_norms[idx], quantile, axis=1), axis=-1) for p in points]
    )
    whole = np.stack([np.quantile(p.whole_norms[idx], quantile, axis=1) for p in points])
    det = np.asarray([p.family == "deterministic" for p in points])
    ks = np.asarray([p.K for p in points])
    out: dict[str, Any] = {}
    for label, stiff in (("step", step), ("whole", whole)):
        by_k, per_k = {}, []
        for k in sorted(set(ks.tolist())):
            sel = det & (ks == k)
            if k < 2 or sel.sum() < 3:
                continue
            rho = spearman(acc[sel].T, stiff[sel].T)  # (B+1,)
            by_k[int(k)] = float(rho[0])
            per_k.append(rho)
        if per_k:
            with warnings.catch_warnings():  # an all-NaN column ("empty slice") gives NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(np.stack(per_k), axis=0)
            out[f"rho_{label}"] = float(mean[0])
            out[f"rho_{label}_boot"] = mean[1:]
        else:
            out[f"rho_{label}"] = float("nan")
            out[f"rho_{label}_boot"] = np.full(num_bootstrap, np.nan)
        out[f"rho_{label}_by_K"] = by_k
    exact = det & np.asarray([p.kappa == 1.0 for p in points])
    out["rho_step_exact_by_K"] = {
        int(k): float(spearman(acc[exact & (ks == k), 0], step[exact & (ks == k), 0]))
        for k in sorted(set(ks.tolist()))
        if k >= 2 and (exact & (ks == k)).sum() >= 3
    }
    out["rho_whole_pooled"] = (
        float(spearman(acc[det, 0], whole[det, 0])) if det.sum() > 2 else (float("nan"))
    )
    floor = float(np.max(weights))
    gaps, best = [], {}
    for i, p in enumerate(points):
        if p.family == "deterministic":
            continue
        sel = det & (ks == p.K)
        if sel.any():
            front = frontier(whole[sel].T, acc[sel].T, whole[i][:, None], floor)[:, 0]
        else:
            front = np.full(num_bootstrap + 1, floor)
        gap = acc[i] - front
        lower, upper = np.quantile(gap[1:], [0.025, 0.975])
        gaps.append(
            {
                "sampler": p.sampler,
                "family": p.family,
                "K": p.K,
                "gap": float(gap[0]),
                "gap_lower": float(lower),
                "gap_upper": float(upper),
                "frontier": float(front[0]),
                "accuracy": float(acc[i, 0]),
                "whole_quantile": float(whole[i, 0]),
            }
        )
        best[p.family] = max(best.get(p.family, -np.inf), float(lower))
    out["gaps"] = gaps
    out["family_best_lower"] = best
    out["accuracy_floor_constant_map"] = floor
    return out


def _claims(stats: dict[str, Any], config: Config, families: Sequence[str]) -> list[Claim]:
    boot = np.asarray(stats["rho_step_boot"])
    finite = boot[np.isfinite(boot)]
    lo, hi = np.quantile(finite, [0.025, 0.975]) if finite.size else (np.nan, np.nan)
    by_k = ", ".join(f"K={k}: {v:+.2f}" for k, v in stats["rho_step_by_K"].items())
    c1 = _framework.claim_from_interval(
        CLAIM,
        "Inside the deterministic class (ODE samplers × denoiser regularity κ), accuracy at "
        "fixed K rises only with the per-step peak stiffness: mean over K ≥ 2 of the "
        "within-K Spearman correlation of accuracy with the per-step peak Jacobian norm "
        f"({100 * config.quantile:g}th percentile) > 0 (separated Gaussian mixture, "
        f"M = {config.num_modes}, n = {config.dim})",
        measured=stats["rho_step"],
        interval=(float(lo), float(hi)),
        predicted=0.0,
        tolerance=0.0,
        rule="above",
        detail=(
            f"95% bootstrap interval over trajectories (B = {config.num_bootstrap}); per K: "
            f"{by_k}. With the whole-map norm instead: ρ̄ = {stats['rho_whole']:+.2f}; pooled "
            f"over all deterministic points (accuracy vs whole-map norm): "
            f"{stats['rho_whole_pooled']:+.2f}. Samplers alone (κ = 1 only, per K): "
            + ", ".join(f"K={k}: {v:+.2f}" for k, v in stats["rho_step_exact_by_K"].items())
            + "."
        ),
    )
    best = stats["family_best_lower"]
    present = [f for f in families if f in best]
    measured = min((best[f] for f in present), default=float("nan"))
    held = bool(present and len(present) == len(families) and measured > 0)
    lines = []
    for fam in families:
        rows = [g for g in stats["gaps"] if g["family"] == fam]
        if not rows:
            lines.append(f"{fam}: no points")
            continue
        top = max(rows, key=lambda g: g["gap_lower"])
        above = sum(g["gap_lower"] > 0 for g in rows)
        lines.append(
            f"{fam}: {above}/{len(rows)} points above the frontier; best {top['sampler']} "
            f"K={top['K']}: accuracy {top['accuracy']:.3f} vs frontier {top['frontier']:.3f} "
            f"at whole-map norm {top['whole_quantile']:.3g} (gap 95% CI "
            f"[{top['gap_lower']:.3f}, {top['gap_upper']:.3f}])"
        )
    c2 = Claim(
        CLAIM,
        "Both escapes leave the deterministic class: an SDE and a hybrid re-injection "
        "sampler reach accuracy above the deterministic frontier at fixed K at their own "
        "whole-map stiffness (noise held fixed); measured = the smaller family's best "
        "bootstrap 2.5% quantile of accuracy − frontier",
        measured,
        0.0,
        0.0,
        held,
        f"{'held' if held else 'not held'}: rule 'above' (> 0). " + "; ".join(lines) + ".",
    )
    return [c1, c2]


# ---------------------------------------------------------------------------------------
# Figures (pure: arrays in, Figure out)
# ---------------------------------------------------------------------------------------
_MARKERS = {
    "euler": "o",
    "ddim": "s",
    "heun": "^",
    "dpmpp_2m": "D",
    "euler_rf": "v",
    "ddim_eta": "P",
    "euler_maruyama": "X",
    "churn": "*",
    "restart": "h",
    "renoise_rf": "<",
    "margin_gated": ">",
}


@plotting.styled
def tradeoff_figure(rows: list[dict[str, Any]], floor: float, ceiling: float, quantile: float):
    """Accuracy vs stiffness (whole-map and per-step axes), coloured by K; the deterministic
    frontier per K (steps) and the escapes (open markers); per-step peak vs K (depth)."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    ks = sorted({r["K"] for r in rows})
    cmap = colormaps["viridis"]
    colour = {k: cmap(i / max(len(ks) - 1, 1)) for i, k in enumerate(ks)}
    fig, axes = plotting.new_figure(1, 3, panel_size=(4.3, 3.6))
    pct = f"{100 * quantile:g}th pct"
    for ax, field, xlabel in (
        (axes[0, 0], "whole_quantile", f"whole-map Jacobian norm ({pct})"),
        (axes[0, 1], "step_peak_quantile", f"per-step peak Jacobian norm ({pct})"),
    ):
        for r in rows:
            det = r["family"] == "deterministic"
            size = 30 / math.sqrt(r["kappa"]) if det else 55
            ax.scatter(
                max(r[field], 1e-4),
                r["accuracy"],
                s=size,
                marker=_MARKERS.get(r["sampler"], "o"),
                facecolors=colour[r["K"]] if det else "none",
                edgecolors=colour[r["K"]],
                linewidths=0.6 if det else 1.4,
                alpha=0.85,
                zorder=3 if det else 4,
            )
        for k in ks:
            pts = sorted(
                (max(r[field], 1e-4), r["accuracy"])
                for r in rows
                if r["K"] == k and r["family"] == "deterministic"
            )
            if not pts:
                continue
            xs = np.asarray([p[0] for p in pts])
            env = np.maximum.accumulate(np.asarray([p[1] for p in pts]))
            ax.step(
                np.concatenate([[1e-4], xs]),
                np.concatenate([[floor], env]),
                where="post",
                color=colour[k],
                lw=1.0,
                alpha=0.8,
            )
        ax.axhline(ceiling, color="0.3", lw=0.8, ls="--")
        ax.set_xscale("log")
        plotting.label_axes(
            ax,
            xlabel,
            "accuracy 1 − TV(categories)",
            xunit="1",
            yunit="1",
            title="filled: deterministic (size ∝ 1/√κ), open: escapes",
        )
    ax = axes[0, 2]
    for name in _MARKERS:
        sel = sorted(
            (r["K"], r["step_peak_quantile"])
            for r in rows
            if r["sampler"] == name and r["kappa"] == 1.0
        )
        if sel:
            det = name in DETERMINISTIC
            ax.plot(
                *np.asarray(sel).T,
                marker=_MARKERS[name],
                ls="-" if det else ":",
                label=name,
                markersize=4,
            )
    plotting.set_log(ax)
    plotting.set_log_ticks(ax, ks)
    plotting.label_axes(
        ax,
        "steps K",
        f"per-step peak Jacobian norm ({pct})",
        xunit="1",
        yunit="1",
        title="depth: per-step stiffness vs K (κ = 1)",
    )
    ax.legend(fontsize="x-small", ncol=2)
    handles = [Line2D([], [], color=colour[k], lw=2, label=f"K = {k}") for k in ks]
    handles.append(Line2D([], [], color="0.3", ls="--", label="data (same N)"))
    axes[0, 0].legend(handles=handles, fontsize="x-small", loc="lower right")
    return fig


# ---------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------
def measure(config: Config, ctx: RunContext) -> Measurement:
    """All points on the mixture world, the two C7 verdicts, the figure."""
    cpu_start = time.process_time()
    key_world, key_run, key_boot = jr.split(ctx.key(), 3)
    world = make_world(config, key_world)
    points, weights, ref_labels = measure_world(
        world,
        deterministic=config.deterministic,
        escapes=config.escapes,
        kappas=config.kappas,
        num_steps=config.num_steps,
        key=key_run,
        num_samples=config.num_samples,
        grid=config.grid,
        t_min=config.t_min,
        t_max=config.t_max,
        off_mode_num_std=config.off_mode_num_std,
        dense_max_dim=config.dense_max_dim,
        progress=lambda it, total, desc: ctx.progress(it, total=total, desc=desc),
    )
    stats = bootstrap_verdicts(
        points,
        weights,
        quantile=config.quantile,
        num_bootstrap=config.num_bootstrap,
        rng=np.random.default_rng(np.asarray(jr.key_data(key_boot), np.uint32)),
    )
    families = [f for f, names in ESCAPES.items() if set(names) & set(config.escapes)]
    claims = _claims(stats, config, families)
    rows = [p.summary(weights, config.quantile) for p in points]
    ceiling = float(accuracy_from_labels(ref_labels, weights))
    floor = stats["accuracy_floor_constant_map"]
    ctx.save_figure(tradeoff_figure(rows, floor, ceiling, config.quantile), "tradeoff.png")
    ctx.save_arrays(
        "stiffness.npz",
        **{f"{p.sampler}|K={p.K}|kappa={p.kappa:g}|step": p.step_norms for p in points},
        **{f"{p.sampler}|K={p.K}|kappa={p.kappa:g}|whole": p.whole_norms for p in points},
    )
    metrics = {
        "verdict_rules": [
            "1: mean over K >= 2 of within-K Spearman(accuracy, per-step peak norm q) over "
            "deterministic points (samplers x kappa); held iff bootstrap 95% interval > 0",
            "2: both escape families have a point with bootstrap 2.5% quantile of "
            "accuracy - F_K(whole-map norm q) > 0",
        ],
        "points": rows,
        "data_accuracy_same_n": ceiling,
        "constant_map_accuracy": floor,
        "rho_step": stats["rho_step"],
        "rho_step_by_K": stats["rho_step_by_K"],
        "rho_step_exact_by_K": stats["rho_step_exact_by_K"],
        "rho_whole": stats["rho_whole"],
        "rho_whole_by_K": stats["rho_whole_by_K"],
        "rho_whole_pooled": stats["rho_whole_pooled"],
        "escape_gaps": stats["gaps"],
        "family_best_lower": stats["family_best_lower"],
        "world": {
            "means": np.asarray(world.means),
            "weights": weights,
            "std": float(world.std),
            "samplers": {
                s: repr(samplers.get_sampler(s))
                for s in (
                    *[few_step.RF_BASELINE if d == "euler_rf" else d for d in config.deterministic],
                    *config.escapes,
                )
            },
        },
    }
    metrics["cpu_seconds"] = time.process_time() - cpu_start
    return Measurement(metrics, claims)


def run(config: Config, out_dir: Any = "results", seed: int | None = None) -> dict[str, Any]:
    """Run the experiment and write ``<out_dir>/tradeoff/result.json`` and figures."""
    return _framework.run_experiment(sys.modules[__name__], config, out_dir, seed)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.tradeoff [--scale quick|full] [--out DIR] [--seed N]``."""
    return _framework.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
