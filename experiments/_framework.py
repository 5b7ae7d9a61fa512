"""Shared machinery of the experiment modules: claims, verdict statistics, runs, CLI.

The contract of an experiment module ``experiments/<name>.py``::

    NAME = "coarea"                      # as registered in experiments.EXPERIMENTS

    @dataclasses.dataclass(frozen=True)
    class Config:                        # typed, hashable, asdict-able
        num_samples: int = 100_000
        @classmethod
        def quick(cls) -> "Config": ...  # ≈ 1 minute on 2 CPU cores
        @classmethod
        def full(cls) -> "Config": ...   # the paper-scale run

    def measure(config: Config, ctx: RunContext) -> Measurement:
        ...                              # compute; save figures with ctx.save_figure
        return Measurement(metrics={...}, claims=[Claim(...), ...])

    def run(config: Config, out_dir="results", seed=None) -> dict:
        return _framework.run_experiment(sys.modules[__name__], config, out_dir, seed)

    def main(argv=None) -> int:
        return _framework.main(sys.modules[__name__], argv)

:func:`run_experiment` times ``measure`` and writes ``<out_dir>/<name>/result.json``
(atomically, via `readout_jax.io`) with the fields ``name``, ``scale``, ``config``,
``seed``, ``versions``, ``environment``, ``elapsed_seconds``, ``metrics``, ``claims``,
``figures`` and ``arrays``. Overrides use ``dataclasses.replace(Config.quick(), ...)``.
``versions["code_version"]`` is :func:`code_version` of the module (a hash of the
library's and the experiment's source) and ``environment["cpu_seconds"]`` the process
CPU time of ``measure``; ``readout-jax reproduce`` uses the config, the seed and the code
version to decide whether a stored result is still current.

A ``Config`` may carry any further fields (they are recorded and compared like the
others). By convention a field named :data:`MODELS_DIR_FIELD` (``models_dir``) is the
folder of cached trained models: ``readout-jax reproduce --models-dir DIR`` sets it on
every config that has it.

Verdicts are computed from the data against a tolerance fixed before the data are seen
(in the module's ``Config`` or docstring): a fitted exponent with its confidence
interval (:func:`fit_power_law`, :func:`claim_from_interval`), an estimate with its
standard error (:func:`claim_from_se`, :func:`ratio_with_se`,
:func:`proportion_with_se`), or a normalised discrepancy (:func:`claim_from_threshold`).
A claim that fails on our worlds is reported with ``held: false`` and the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import os
import pathlib
import re
import statistics
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from types import ModuleType
from typing import IO, Any, NamedTuple, TypeVar

import numpy as np

from experiments import SCALES, add_run_arguments
from readout_jax import io

__all__ = [
    "Claim",
    "Measurement",
    "RunContext",
    "PowerLawFit",
    "SCALES",
    "fit_power_law",
    "student_t_quantile",
    "normal_quantile",
    "ratio_with_se",
    "proportion_with_se",
    "mean_with_se",
    "claim_from_interval",
    "claim_from_se",
    "claim_from_threshold",
    "progress",
    "config_for_scale",
    "experiment_name",
    "run_experiment",
    "add_run_arguments",
    "run_from_args",
    "format_claims",
    "main",
    "MODELS_DIR_FIELD",
    "code_version",
    "code_files",
    "resolve_seed",
]

#: Config field holding the folder of cached trained models (set by ``reproduce``).
MODELS_DIR_FIELD = "models_dir"

RULES = ("within", "overlaps", "above", "below")
_CLAIM_ID = re.compile(r"^C[1-7][ab]?$")
_T = TypeVar("_T")


# ---------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Claim:
    """A verdict on one claim of SPEC §1, computed from the data.

    Attributes:
        claim: claim id, ``"C1"`` … ``"C7"`` (``"C3a"``, ``"C3b"`` allowed).
        statement: what was tested, in words, with the world it was tested on.
        measured: the measured figure (e.g. a fitted slope, a ratio, a worst z-score).
        predicted: the value the claim predicts for `measured`.
        tolerance: the tolerance stated up front (same units as `measured`).
        held: whether the data support the claim under the stated rule.
        detail: how the verdict was reached (rule, interval, caveats), and why not if
            it did not hold.
        interval: the confidence interval of `measured` used by the rule, if any.
    """

    claim: str
    statement: str
    measured: float
    predicted: float
    tolerance: float
    held: bool
    detail: str = ""
    interval: tuple[float, float] | None = None

    def __post_init__(self):
        if not isinstance(self.claim, str) or not _CLAIM_ID.match(self.claim):
            raise ValueError(f"claim must look like 'C1'…'C7' (or 'C3a'), got {self.claim!r}")
        for name in ("measured", "predicted", "tolerance"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if not isinstance(self.held, (bool, np.bool_)):
            raise TypeError(f"held must be a bool, got {type(self.held).__name__}")
        object.__setattr__(self, "held", bool(self.held))
        if self.interval is not None:
            lo, hi = (float(v) for v in self.interval)
            object.__setattr__(self, "interval", (lo, hi))


class Measurement(NamedTuple):
    """What a module's ``measure`` returns: JSON-able metrics and the claim verdicts."""

    metrics: dict[str, Any]
    claims: list[Claim]


@dataclasses.dataclass
class RunContext:
    """Per-run services handed to ``measure``: seed, output folder, artifacts, progress.

    Attributes:
        name: experiment name.
        out_dir: the run's folder ``<out>/<name>`` (exists and is writable).
        seed: the run's seed; draw all randomness from it (``ctx.key()``).
        scale: ``"quick"``, ``"full"`` or None (a custom config).
        show_progress: whether progress bars may be drawn (they also need a TTY).
        figures: file names of figures saved so far (recorded in result.json).
        arrays: file names of array files saved so far.
    """

    name: str
    out_dir: pathlib.Path
    seed: int
    scale: str | None = None
    show_progress: bool = True
    figures: list[str] = dataclasses.field(default_factory=list)
    arrays: list[str] = dataclasses.field(default_factory=list)

    def key(self):
        """``jax.random.key(seed)``: split it into purpose-named subkeys."""
        import jax.random as jr

        return jr.key(self.seed)

    def save_figure(self, fig: Any, filename: str, *, dpi: int = 120) -> pathlib.Path:
        """Write `fig` atomically as ``out_dir/filename`` (``.png`` added if missing)."""
        if not pathlib.Path(filename).suffix:
            filename = f"{filename}.png"
        path = io.save_figure(fig, self.out_dir / filename, dpi=dpi)
        if filename not in self.figures:
            self.figures.append(filename)
        return path

    def save_arrays(self, filename: str, **arrays: Any) -> pathlib.Path:
        """Write named arrays atomically as ``out_dir/filename`` (``.npz``)."""
        if not filename.endswith(".npz"):
            filename = f"{filename}.npz"
        path = io.write_npz(self.out_dir / filename, **arrays)
        if filename not in self.arrays:
            self.arrays.append(filename)
        return path

    def progress(
        self, iterable: Iterable[_T], *, total: int | None = None, desc: str = ""
    ) -> Iterator[_T]:
        """:func:`progress` over `iterable`, silenced when the run has progress off."""
        return progress(iterable, total=total, desc=desc, enabled=self.show_progress)

    def log(self, message: str) -> None:
        """A status line on stderr (only when progress output is on and stderr is a TTY)."""
        if self.show_progress and _progress_allowed(sys.stderr):
            print(f"[{self.name}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Statistics for verdicts
# ---------------------------------------------------------------------------------------
def normal_quantile(p: float) -> float:
    """Φ⁻¹(p) of the standard normal."""
    return statistics.NormalDist().inv_cdf(p)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _student_t_cdf(t: float, dof: float) -> float:
    tail = 0.5 * _betainc(0.5 * dof, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, dof: float) -> float:
    """Quantile of Student's t with `dof` degrees of freedom (normal for dof = inf).

    Inverts the CDF, written with the regularised incomplete beta function, by
    bisection to ~1e-12; no SciPy needed.

    Raises:
        ValueError: for p outside (0, 1) or dof ≤ 0.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if not dof > 0:
        raise ValueError(f"dof must be > 0, got {dof}")
    if math.isinf(dof):
        return normal_quantile(p)
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_quantile(1.0 - p, dof)
    hi = max(1.0, 2.0 * normal_quantile(p))
    while _student_t_cdf(hi, dof) < p:
        hi *= 2.0
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _student_t_cdf(mid, dof) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


class PowerLawFit(NamedTuple):
    """Least-squares fit of log y = intercept + slope·log x (natural logs).

    Attributes:
        slope: fitted exponent.
        slope_se: its standard error.
        intercept: fitted log-prefactor.
        intercept_se: its standard error.
        ci_low, ci_high: the `confidence` interval of the slope (Student t, dof).
        confidence: the interval's confidence level.
        dof: residual degrees of freedom (points − 2).
        r_squared: coefficient of determination on the logs.
    """

    slope: float
    slope_se: float
    intercept: float
    intercept_se: float
    ci_low: float
    ci_high: float
    confidence: float
    dof: int
    r_squared: float

    def predict(self, x: Any) -> np.ndarray:
        """exp(intercept)·x^slope."""
        return np.exp(self.intercept) * np.asarray(x, float) ** self.slope


def fit_power_law(x: Any, y: Any, *, y_se: Any = None, confidence: float = 0.95) -> PowerLawFit:
    """Fit y ≈ C·x^slope by least squares on (log x, log y), with a slope interval.

    Ordinary least squares by default. With `y_se`, weighted least squares with
    weights 1/var(log y) ≈ (y/y_se)²; the covariance is then rescaled by the residual
    variance (the usual ``absolute_sigma=False`` convention), so a bad model widens the
    interval. The interval is slope ± t_{(1+confidence)/2, n−2}·se.

    Args:
        x: (n,) positive abscissae, n ≥ 3 (at least one residual degree of freedom).
        y: (n,) positive values.
        y_se: (n,) standard errors of y (positive), optional.
        confidence: level of the slope interval.

    Returns:
        A :class:`PowerLawFit`.

    Raises:
        ValueError: on mismatched shapes, fewer than 3 points, non-positive or
            non-finite x or y (filter them out first and say so), or x all equal.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.shape} and {y.shape}")
    if x.size < 3:
        raise ValueError(f"fit_power_law needs >= 3 points, got {x.size}")
    bad = ~(np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0))
    if bad.any():
        raise ValueError(
            f"fit_power_law needs finite positive x and y; {int(bad.sum())} of {x.size} "
            "points are not (filter them out before fitting)"
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    lx, ly = np.log(x), np.log(y)
    if np.ptp(lx) == 0:
        raise ValueError("fit_power_law needs at least two distinct x values")
    if y_se is None:
        w = np.ones_like(lx)
    else:
        y_se = np.asarray(y_se, dtype=np.float64).reshape(-1)
        if y_se.shape != y.shape or not np.all(np.isfinite(y_se) & (y_se > 0)):
            raise ValueError("y_se must have the shape of y and be finite and > 0")
        w = (y / y_se) ** 2
    design = np.stack([np.ones_like(lx), lx], axis=1)
    gram = design.T @ (w[:, None] * design)
    coef = np.linalg.solve(gram, design.T @ (w * ly))
    resid = ly - design @ coef
    dof = x.size - 2
    s2 = float(np.sum(w * resid**2) / dof)
    cov = s2 * np.linalg.inv(gram)
    intercept, slope = float(coef[0]), float(coef[1])
    slope_se, intercept_se = math.sqrt(max(cov[1, 1], 0.0)), math.sqrt(max(cov[0, 0], 0.0))
    t = student_t_quantile(0.5 * (1.0 + confidence), dof)
    ss_tot = float(np.sum(w * (ly - np.average(ly, weights=w)) ** 2))
    r2 = 1.0 - float(np.sum(w * resid**2)) / ss_tot if ss_tot > 0 else 1.0
    return PowerLawFit(
        slope=slope,
        slope_se=slope_se,
        intercept=intercept,
        intercept_se=intercept_se,
        ci_low=slope - t * slope_se,
        ci_high=slope + t * slope_se,
        confidence=confidence,
        dof=dof,
        r_squared=r2,
    )


def ratio_with_se(
    num: float, num_se: float, den: float, den_se: float, *, cov: float = 0.0
) -> tuple[float, float]:
    """R = num/den and its delta-method standard error.

    se(R)² ≈ R²·(se_num²/num² + se_den²/den² − 2·cov/(num·den)); written without
    dividing by `num`, so num = 0 is fine.

    Raises:
        ValueError: if den = 0.
    """
    if den == 0:
        raise ValueError("ratio_with_se: denominator is 0")
    ratio = num / den
    var = (num_se**2 + ratio**2 * den_se**2 - 2.0 * ratio * cov) / den**2
    return float(ratio), float(math.sqrt(max(var, 0.0)))


def proportion_with_se(successes: Any, n: int) -> tuple[Any, Any]:
    """p̂ = k/n and its binomial standard error sqrt(p̂(1 − p̂)/n) (elementwise in k)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    p = np.asarray(successes, dtype=np.float64) / n
    se = np.sqrt(p * (1.0 - p) / n)
    return (float(p), float(se)) if p.ndim == 0 else (p, se)


def mean_with_se(samples: Any, axis: int = 0) -> tuple[Any, Any]:
    """Sample mean and its standard error std(ddof=1)/sqrt(n) along `axis`."""
    a = np.asarray(samples, dtype=np.float64)
    n = a.shape[axis]
    if n < 2:
        raise ValueError(f"mean_with_se needs >= 2 samples along axis {axis}, got {n}")
    mean = a.mean(axis=axis)
    se = a.std(axis=axis, ddof=1) / math.sqrt(n)
    return (float(mean), float(se)) if np.ndim(mean) == 0 else (mean, se)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def claim_from_interval(
    claim: str,
    statement: str,
    *,
    measured: float,
    interval: tuple[float, float],
    predicted: float,
    tolerance: float = 0.0,
    rule: str = "within",
    detail: str = "",
) -> Claim:
    """A verdict from a confidence interval [lo, hi] of `measured`.

    Rules (the band is [predicted − tolerance, predicted + tolerance]):
        ``"within"``: the whole interval lies in the band (an equivalence test: the data
            show the prediction to within the tolerance; a wide interval fails).
        ``"overlaps"``: the interval meets the band (a consistency test: the data
            cannot exclude the prediction).
        ``"above"``: lo ≥ predicted − tolerance (e.g. "index ≫ 1" with predicted = 10).
        ``"below"``: hi ≤ predicted + tolerance.

    A non-finite `measured` or interval gives ``held=False``.

    Returns:
        A :class:`Claim` whose `detail` states the rule, the interval and the band,
        followed by `detail`.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; valid rules are {list(RULES)}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    lo, hi = float(min(interval)), float(max(interval))
    band_lo, band_hi = predicted - tolerance, predicted + tolerance
    finite = all(math.isfinite(v) for v in (measured, lo, hi))
    if not finite:
        held, why = False, "not held: the measurement is not finite"
    else:
        held = {
            "within": band_lo <= lo and hi <= band_hi,
            "overlaps": lo <= band_hi and hi >= band_lo,
            "above": lo >= band_lo,
            "below": hi <= band_hi,
        }[rule]
        interval_text = f"interval [{_fmt(lo)}, {_fmt(hi)}]"
        band_text = f"[{_fmt(band_lo)}, {_fmt(band_hi)}]"
        text = {
            "within": f"{interval_text} {'inside' if held else 'not inside'} {band_text}",
            "overlaps": f"{interval_text} {'meets' if held else 'misses'} {band_text}",
            "above": f"lower end {_fmt(lo)} {'>=' if held else '<'} {_fmt(band_lo)}",
            "below": f"upper end {_fmt(hi)} {'<=' if held else '>'} {_fmt(band_hi)}",
        }[rule]
        why = f"{'held' if held else 'not held'}: rule {rule!r}, {text}"
    full = f"measured {_fmt(measured)}; {why}" + (f". {detail}" if detail else "")
    return Claim(claim, statement, measured, predicted, tolerance, held, full, (lo, hi))


def claim_from_se(
    claim: str,
    statement: str,
    *,
    measured: float,
    se: float,
    predicted: float,
    tolerance: float = 0.0,
    num_se: float = 1.96,
    rule: str = "overlaps",
    detail: str = "",
) -> Claim:
    """:func:`claim_from_interval` with the interval measured ± num_se·se.

    The default (``rule="overlaps"``, ``num_se=1.96``) asks whether the prediction is
    consistent with the estimate at the 95% level, up to `tolerance`.
    """
    half = num_se * se
    extra = f"interval = measured ± {num_se:g}·se, se = {_fmt(se)}"
    detail = f"{extra}. {detail}" if detail else extra
    return claim_from_interval(
        claim,
        statement,
        measured=measured,
        interval=(measured - half, measured + half),
        predicted=predicted,
        tolerance=tolerance,
        rule=rule,
        detail=detail,
    )


def claim_from_threshold(
    claim: str,
    statement: str,
    *,
    measured: float,
    predicted: float,
    tolerance: float,
    detail: str = "",
) -> Claim:
    """held iff |measured − predicted| ≤ tolerance (for a measure that already carries
    its uncertainty, e.g. a worst-case z-score compared with a stated multiple)."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    finite = math.isfinite(measured)
    held = finite and abs(measured - predicted) <= tolerance
    why = (
        f"|{_fmt(measured)} − {_fmt(predicted)}| {'<=' if held else '>'} {_fmt(tolerance)}"
        if finite
        else "the measurement is not finite"
    )
    full = f"{'held' if held else 'not held'}: {why}" + (f". {detail}" if detail else "")
    return Claim(claim, statement, measured, predicted, tolerance, held, full)


# ---------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------
def _progress_allowed(stream: IO) -> bool:
    if os.environ.get("READOUT_JAX_PROGRESS", "1").strip().lower() in ("0", "false", "no"):
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


def progress(
    iterable: Iterable[_T],
    *,
    total: int | None = None,
    desc: str = "",
    enabled: bool = True,
    stream: IO | None = None,
    min_interval: float = 0.2,
) -> Iterator[_T]:
    """Yield from `iterable`, drawing a one-line progress bar on stderr.

    Quiet (a plain pass-through) when `enabled` is False, when the stream is not a TTY
    (logs, CI, pytest), or when the environment sets ``READOUT_JAX_PROGRESS=0``.

    Args:
        iterable: the loop.
        total: number of items (taken from ``len(iterable)`` when available).
        desc: label in front of the bar.
        enabled: switch it off explicitly (``--no-progress``).
        stream: where to draw (default ``sys.stderr``).
        min_interval: seconds between redraws.
    """
    stream = sys.stderr if stream is None else stream
    if not enabled or not _progress_allowed(stream):
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    start = last = time.perf_counter()
    count = 0

    def draw(final: bool = False) -> None:
        elapsed = time.perf_counter() - start
        if total:
            frac = min(count / total, 1.0)
            filled = int(round(24 * frac))
            eta = elapsed / count * (total - count) if count else float("nan")
            bar = f"[{'#' * filled}{'.' * (24 - filled)}] {count}/{total}"
            tail = f"{elapsed:.0f}s" + ("" if final else f" eta {eta:.0f}s")
        else:
            bar, tail = f"{count} it", f"{elapsed:.0f}s"
        stream.write(f"\r{desc} {bar} {tail}\033[K" + ("\n" if final else ""))
        stream.flush()

    draw()
    for item in iterable:
        yield item
        count += 1
        now = time.perf_counter()
        if now - last >= min_interval:
            draw()
            last = now
    draw(final=True)


# ---------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------
def _resolve(module: ModuleType | str) -> ModuleType:
    return importlib.import_module(module) if isinstance(module, str) else module


def experiment_name(module: ModuleType | str) -> str:
    """The module's ``NAME``, else the last part of its import name (even under -m)."""
    module = _resolve(module)
    name = getattr(module, "NAME", None)
    if name:
        return str(name)
    spec = getattr(module, "__spec__", None)
    full = spec.name if spec is not None else module.__name__
    return full.rsplit(".", 1)[-1]


def _check_config(config: Any) -> None:
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
    if not type(config).__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"config {type(config).__name__} must be a frozen dataclass")


def config_for_scale(module: ModuleType | str, scale: str) -> Any:
    """``module.Config.quick()`` or ``module.Config.full()``.

    Raises:
        ValueError: for a scale other than ``"quick"`` / ``"full"``.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid scales are {list(SCALES)}")
    module = _resolve(module)
    config = getattr(module.Config, scale)()
    _check_config(config)
    return config


def resolve_seed(config: Any, seed: int | None = None) -> tuple[Any, int]:
    """The config and seed a run will record: `seed`, else ``config.seed``, else 0.

    If the config has a ``seed`` field it is set to the run's seed, so the recorded
    config and seed agree (what :func:`run_experiment` does before measuring).

    Raises:
        TypeError: if `config` is not a frozen dataclass instance.
    """
    _check_config(config)
    has_seed = any(f.name == "seed" for f in dataclasses.fields(config))
    if seed is None:
        seed = int(config.seed) if has_seed else 0
    seed = int(seed)
    if has_seed and config.seed != seed:
        config = dataclasses.replace(config, seed=seed)
    return config, seed


def _experiment_imports(path: pathlib.Path) -> set[str]:
    """Modules of the `experiments` package that the source file `path` imports."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("experiments."))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "experiments":
                found.update(f"experiments.{a.name}" for a in node.names)
            elif node.module.startswith("experiments."):
                found.add(node.module)
    return found


def _hashed_library_files(root: pathlib.Path) -> list[pathlib.Path]:
    return [
        p
        for p in root.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.suffix not in (".pyc", ".pyo")
    ]


def code_files(module: ModuleType | str) -> list[pathlib.Path]:
    """The source files whose content defines an experiment's code version.

    Every file of the installed ``readout_jax`` package (``__pycache__`` and hidden
    files excepted), ``experiments/__init__.py``, the experiment module's own file and,
    transitively, every ``experiments.*`` module its source imports (for instance
    ``experiments._framework``, or ``experiments.few_step`` imported by ``tradeoff``).
    Imports are read from the source (``ast``), not from ``sys.modules``, so the list
    does not depend on what happens to be imported. A module without a source file
    (built in a test) contributes only the library.

    Returns:
        Sorted absolute paths.
    """
    import readout_jax

    module = _resolve(module)
    files = set(_hashed_library_files(pathlib.Path(readout_jax.__file__).resolve().parent))
    pending = []
    own = getattr(module, "__file__", None)
    if own:
        pending.append(pathlib.Path(own).resolve())
    package = pathlib.Path(__file__).resolve().parent
    pending.append(package / "__init__.py")
    seen: set[pathlib.Path] = set()
    while pending:
        path = pending.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        for name in _experiment_imports(path):
            parts = name.split(".")[1:]
            candidate = package.joinpath(*parts)
            for p in (candidate.with_suffix(".py"), candidate / "__init__.py"):
                if p.is_file():
                    pending.append(p)
    files |= seen
    return sorted(files)


def code_version(module: ModuleType | str) -> str:
    """A 16-hex-digit SHA-256 of the files of :func:`code_files` (paths and contents).

    Paths enter relative to their root (``readout_jax/...``, ``experiments/...``), so
    the hash does not depend on where the checkout lives. Any edit to the library or to
    the experiment's modules changes it; edits to another experiment module do not.
    """
    import hashlib

    import readout_jax

    roots = (
        pathlib.Path(readout_jax.__file__).resolve().parent.parent,
        pathlib.Path(__file__).resolve().parent.parent,
    )
    digest = hashlib.sha256()
    for path in code_files(module):
        rel = next((path.relative_to(r) for r in roots if path.is_relative_to(r)), path)
        digest.update(rel.as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def run_experiment(
    module: ModuleType | str,
    config: Any,
    out_dir: str | os.PathLike = "results",
    seed: int | None = None,
    *,
    scale: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run ``module.measure(config, ctx)`` and write ``<out_dir>/<name>/result.json``.

    The output folder is created and checked before the (possibly long) measurement
    starts. If ``measure`` raises, no result.json is written (an older one stays).

    Args:
        module: the experiment module (or its import path).
        config: a frozen dataclass instance (``Config.quick()``, ``replace(...)``).
        out_dir: the results root; the run writes into ``out_dir/<name>/``.
        seed: the run's seed. If None, ``config.seed`` when the config has that field,
            else 0. If the config has a ``seed`` field it is set to the run's seed, so
            the recorded config and seed agree.
        scale: ``"quick"`` / ``"full"`` when the config came from a preset (recorded).
        show_progress: allow progress bars (they also need stderr to be a TTY).

    Returns:
        The JSON-safe result, equal to what ``io.read_json`` reads back from the file;
        ``versions["code_version"]`` is :func:`code_version` of the module and
        ``environment["cpu_seconds"]`` the CPU time of ``measure`` (all threads).

    Raises:
        readout_jax.io.OutputDirError: if the output folder is not writable (the
            message names it).
        TypeError: if `config` is not a frozen dataclass instance or ``measure`` does not
            return a :class:`Measurement` of :class:`Claim` objects.
    """
    module = _resolve(module)
    config, seed = resolve_seed(config, seed)
    name = experiment_name(module)
    version = code_version(module)
    folder = io.ensure_dir(pathlib.Path(out_dir) / name)
    ctx = RunContext(name=name, out_dir=folder, seed=seed, scale=scale, show_progress=show_progress)
    start, cpu_start = time.perf_counter(), time.process_time()
    measurement = module.measure(config, ctx)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if not isinstance(measurement, tuple) or len(measurement) != 2:
        raise TypeError(f"{name}.measure must return Measurement(metrics, claims)")
    metrics, claims = measurement
    if not isinstance(metrics, dict):
        raise TypeError(f"{name}.measure: metrics must be a dict, got {type(metrics).__name__}")
    for c in claims:
        if not isinstance(c, Claim):
            raise TypeError(f"{name}.measure: claims must be Claim objects, got {type(c)}")
    result = io.to_jsonable(
        {
            "name": name,
            "scale": scale,
            "config": dataclasses.asdict(config),
            "seed": seed,
            "versions": {**io.versions(), "code_version": version},
            "environment": {**io.environment(), "cpu_seconds": cpu},
            "elapsed_seconds": elapsed,
            "metrics": metrics,
            "claims": [dataclasses.asdict(c) for c in claims],
            "figures": list(ctx.figures),
            "arrays": list(ctx.arrays),
        }
    )
    io.write_json(folder / "result.json", result)
    return result


def format_claims(result: dict[str, Any]) -> str:
    """A short text table of a result's claims (for the terminal)."""
    lines = []
    for c in result.get("claims", []):
        status = "held" if c["held"] else "NOT HELD"
        measured = "nan" if c["measured"] is None else _fmt(c["measured"])
        lines.append(
            f"  {c['claim']:<4} {status:<8} measured {measured}, predicted "
            f"{_fmt(c['predicted'])} ± {_fmt(c['tolerance'])}: {c['statement']}"
        )
    return "\n".join(lines) if lines else "  (no claims)"


def run_from_args(
    module: ModuleType | str, args: argparse.Namespace, *, out: IO | None = None
) -> int:
    """Run `module` with parsed :func:`add_run_arguments` options; print a summary.

    Returns:
        0 when the run completed (whatever its verdicts), 1 when the output folder is
        not writable (the error names it).
    """
    out = sys.stdout if out is None else out
    module = _resolve(module)
    config = config_for_scale(module, args.scale)
    try:
        result = run_experiment(
            module,
            config,
            args.out,
            args.seed,
            scale=args.scale,
            show_progress=not args.no_progress,
        )
    except io.OutputDirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    path = pathlib.Path(args.out) / result["name"] / "result.json"
    print(
        f"{result['name']} ({args.scale}, seed {result['seed']}): "
        f"{result['elapsed_seconds']:.1f} s -> {path}",
        file=out,
    )
    print(format_claims(result), file=out)
    return 0


def main(module: ModuleType | str, argv: Sequence[str] | None = None) -> int:
    """The standard ``python -m experiments.<name>`` entry point for `module`."""
    module = _resolve(module)
    name = experiment_name(module)
    doc = (module.__doc__ or "").strip().splitlines()
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments.{name}", description=doc[0] if doc else None
    )
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(module, args)
