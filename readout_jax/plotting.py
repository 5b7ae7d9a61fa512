"""Pure figure builders: arrays in, `matplotlib.figure.Figure` out (Agg, no pyplot state).

Builders never touch pyplot's global figure registry or the display: each creates a
`Figure` with an Agg canvas under the shared :data:`STYLE`, so the experiments, the tests
and the notebooks draw identical figures, and `readout_jax.io.save_figure` writes them
atomically. Conventions (what every experiment and notebook follows):

- every axis is labelled ``"name [unit]"`` (:func:`label_axes`; unit ``"1"`` when
  dimensionless, ``"τ"`` for noise scales in data units, ``"probability"`` for rates);
- a quantity predicted to follow a power law is drawn on log–log axes (:func:`set_log`),
  with the fitted line, its slope ± SE written next to it, and a dotted line of the
  *predicted* slope through the middle of the fit beside it
  (:func:`plot_fit_and_prediction`), so a reader sees both slopes at once;
- Monte-Carlo estimates carry error bars (2 standard errors unless the legend says
  otherwise; :func:`plot_errorbar` keeps them positive on log axes);
- one legend per panel, titles say what is compared.
"""

from __future__ import annotations

import functools as ft
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "STYLE",
    "styled",
    "new_figure",
    "label_axes",
    "set_log",
    "set_log_ticks",
    "plot_errorbar",
    "plot_power_law_fit",
    "plot_reference_slope",
    "plot_fit_and_prediction",
    "curves_figure",
    "power_law_figure",
]

STYLE: dict[str, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
    "errorbar.capsize": 2,
}

_F = TypeVar("_F", bound=Callable[..., Any])

#: A real number as callers pass it (Python or numpy int / float).
Real = float | int | np.integer | np.floating


def styled(fn: _F) -> _F:
    """Decorator: run a figure builder under :data:`STYLE` (rc settings are read when
    artists are created, so the style is baked into the returned figure)."""

    @ft.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@styled
def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    panel_size: tuple[float, float] = (4.2, 3.3),
    sharex: bool = False,
    sharey: bool = False,
) -> tuple[Figure, np.ndarray]:
    """A styled `Figure` on an Agg canvas and its axes as a 2-D array (nrows, ncols).

    Args:
        nrows, ncols: panel grid.
        panel_size: (width, height) of one panel in inches.
        sharex, sharey: share axes between panels.

    Returns:
        `(fig, axes)` with `axes.shape == (nrows, ncols)`.
    """
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=False)
    return fig, axes


def _with_unit(label: str, unit: str | None) -> str:
    return label if not unit else f"{label} [{unit}]"


def label_axes(
    ax: Axes,
    xlabel: str,
    ylabel: str,
    *,
    xunit: str | None = None,
    yunit: str | None = None,
    title: str | None = None,
) -> Axes:
    """Label both axes as ``"name [unit]"`` (use unit ``"1"`` for dimensionless)."""
    ax.set_xlabel(_with_unit(xlabel, xunit))
    ax.set_ylabel(_with_unit(ylabel, yunit))
    if title:
        ax.set_title(title)
    return ax


def set_log(ax: Axes, *, x: bool = True, y: bool = True) -> Axes:
    """Log scale on the chosen axes (power laws are straight lines on log–log axes)."""
    if x:
        ax.set_xscale("log")
    if y:
        ax.set_yscale("log")
    return ax


def set_log_ticks(ax: Axes, values: Any, *, axis: str = "x") -> Axes:
    """Put labelled ticks exactly at `values` (``%g``) on a log axis, minor labels off."""
    from matplotlib.ticker import NullFormatter

    values = np.asarray(values, dtype=float)
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_ticks(values, [f"{v:g}" for v in values])
    target.set_minor_formatter(NullFormatter())
    return ax


def plot_errorbar(
    ax: Axes,
    x: Any,
    y: Any,
    yerr: Any = None,
    *,
    label: str | None = None,
    log_safe: bool = True,
    **kwargs: Any,
) -> Any:
    """Points with symmetric error bars; on a log y-axis the lower bar is clipped above 0.

    Args:
        ax: target axes.
        x, y: (n,) coordinates.
        yerr: (n,) half-widths (e.g. 2 standard errors) or None.
        label: legend label.
        log_safe: clip lower bars to keep them positive (for log axes).
        **kwargs: passed to `Axes.errorbar` (color, marker, ...).

    Returns:
        The errorbar container.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    kwargs.setdefault("fmt", "o")
    if yerr is None:
        return ax.errorbar(x, y, label=label, **kwargs)
    yerr = np.asarray(yerr, dtype=float)
    lower = yerr
    if log_safe:
        lower = np.where(y - yerr > 0, yerr, y * (1.0 - 1e-3))
    return ax.errorbar(x, y, yerr=np.stack([lower, yerr]), label=label, **kwargs)


def _slope_text(slope: Real, slope_se: Real | None, predicted: Real | None) -> str:
    text = f"slope {slope:.3g}"
    if slope_se is not None and np.isfinite(slope_se):
        text += f" ± {slope_se:.2g}"
    if predicted is not None:
        text += f" (predicted {predicted:.3g})"
    return text


def plot_power_law_fit(
    ax: Axes,
    x_range: Any,
    slope: Real,
    intercept: Real,
    *,
    slope_se: Real | None = None,
    predicted: Real | None = None,
    label: str | None = None,
    annotate: bool = True,
    **kwargs: Any,
) -> Any:
    """Draw the fitted line y = exp(intercept)·x^slope and write its slope beside it.

    Args:
        ax: target axes (usually log–log).
        x_range: (lo, hi) or any x values; the line spans their min to max.
        slope, intercept: fit of log y = intercept + slope·log x (natural logs).
        slope_se: standard error of the slope, shown as ``± se``.
        predicted: the predicted slope, shown beside the fitted one.
        label: legend label (default: the slope text).
        annotate: also write the slope text at the line's right end.
        **kwargs: passed to `Axes.plot`.

    Returns:
        The line artist.
    """
    xs = np.asarray(x_range, dtype=float)
    xs = np.geomspace(np.min(xs), np.max(xs), 64)
    ys = np.exp(intercept) * xs**slope
    text = _slope_text(float(slope), slope_se, predicted)
    kwargs.setdefault("linestyle", "--")
    (line,) = ax.plot(xs, ys, label=label if label is not None else text, **kwargs)
    if annotate:
        ax.annotate(
            text,
            xy=(xs[-1], ys[-1]),
            xytext=(-4, 6),
            textcoords="offset points",
            ha="right",
            fontsize="small",
            color=line.get_color(),
        )
    return line


def plot_reference_slope(
    ax: Axes,
    x_range: Any,
    slope: Real,
    *,
    through: tuple[Any, Any],
    label: str | None = None,
    **kwargs: Any,
) -> Any:
    """A reference power law of the given slope through the point `through` = (x, y)."""
    xs = np.geomspace(np.min(x_range), np.max(x_range), 64)
    x0, y0 = through
    kwargs.setdefault("linestyle", ":")
    kwargs.setdefault("color", "0.4")
    (line,) = ax.plot(xs, y0 * (xs / x0) ** slope, label=label or f"slope {slope:g}", **kwargs)
    return line


def plot_fit_and_prediction(
    ax: Axes,
    x_range: Any,
    slope: Real,
    intercept: Real,
    *,
    predicted: Real,
    slope_se: Real | None = None,
    annotate: bool = True,
    predicted_label: str | None = None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """The fitted power law (dashed, slope written beside it) and the predicted slope
    (dotted, grey) through the fitted line's value at the geometric middle of `x_range`.

    Args:
        ax: target axes (log–log).
        x_range: x values the fit covers.
        slope, intercept: fit of log y = intercept + slope·log x (natural logs).
        predicted: the slope the claim predicts.
        slope_se: standard error of the fitted slope.
        annotate: write the slope text at the fitted line's right end.
        predicted_label: legend label of the predicted line (default
            ``"predicted slope <p>"``; pass ``"_nolegend_"`` to repeat it unlabelled).
        **kwargs: passed to the fitted line (`Axes.plot`), e.g. ``color``.

    Returns:
        `(fitted_line, predicted_line)`.
    """
    fitted = plot_power_law_fit(
        ax,
        x_range,
        slope,
        intercept,
        slope_se=slope_se,
        predicted=predicted,
        annotate=annotate,
        **kwargs,
    )
    xs = np.asarray(x_range, dtype=float)
    x_mid = float(np.sqrt(np.min(xs) * np.max(xs)))
    y_mid = float(np.exp(intercept) * x_mid**slope)
    reference = plot_reference_slope(
        ax,
        xs,
        float(predicted),
        through=(x_mid, y_mid),
        label=predicted_label or f"predicted slope {float(predicted):g}",
    )
    return fitted, reference


@styled
def curves_figure(
    x: Any,
    curves: Mapping[str, Any],
    *,
    xlabel: str,
    ylabel: str,
    xunit: str | None = None,
    yunit: str | None = None,
    errors: Mapping[str, Any] | None = None,
    logx: bool = False,
    logy: bool = False,
    title: str | None = None,
    hline: Real | None = None,
) -> Figure:
    """One panel of labelled curves over a shared x; curves with `errors` get error bars.

    Args:
        x: (n,) shared abscissa.
        curves: label → (n,) values.
        xlabel, ylabel, xunit, yunit: axis names and units.
        errors: label → (n,) error-bar half-widths, for the curves that have them.
        logx, logy: log scales.
        title: panel title.
        hline: draw a horizontal reference line at this y.

    Returns:
        The figure.
    """
    fig, axes = new_figure()
    ax = axes[0, 0]
    errors = errors or {}
    for name, y in curves.items():
        if name in errors:
            plot_errorbar(ax, x, y, errors[name], label=name, log_safe=logy, linestyle="-")
        else:
            ax.plot(np.asarray(x, float), np.asarray(y, float), label=name, marker="o")
    if hline is not None:
        ax.axhline(hline, color="0.3", linewidth=0.8)
    set_log(ax, x=logx, y=logy)
    label_axes(ax, xlabel, ylabel, xunit=xunit, yunit=yunit, title=title)
    ax.legend()
    return fig


@styled
def power_law_figure(
    x: Any,
    y: Any,
    *,
    xlabel: str,
    ylabel: str,
    xunit: str | None = None,
    yunit: str | None = None,
    yerr: Any = None,
    slope: Real | None = None,
    intercept: Real | None = None,
    slope_se: Real | None = None,
    predicted_slope: Real | None = None,
    label: str = "measured",
    title: str | None = None,
) -> Figure:
    """Log–log points (with error bars) and, if given, the fitted power law with its slope.

    Args:
        x, y: (n,) positive data.
        xlabel, ylabel, xunit, yunit: axis names and units.
        yerr: (n,) error-bar half-widths.
        slope, intercept, slope_se: a fit log y = intercept + slope·log x to draw.
        predicted_slope: the predicted slope: written beside the fitted one and drawn
            as a dotted line (through the middle of the fit, or of the data if no fit).
        label: legend label of the points.
        title: panel title.

    Returns:
        The figure.
    """
    fig, axes = new_figure()
    ax = axes[0, 0]
    plot_errorbar(ax, x, y, yerr, label=label)
    if slope is not None and intercept is not None:
        if predicted_slope is None:
            plot_power_law_fit(ax, x, slope, intercept, slope_se=slope_se)
        else:
            plot_fit_and_prediction(
                ax, x, slope, intercept, slope_se=slope_se, predicted=predicted_slope
            )
    elif predicted_slope is not None:
        xs, ys = np.asarray(x, float), np.asarray(y, float)
        mid = len(xs) // 2
        plot_reference_slope(
            ax,
            xs,
            float(predicted_slope),
            through=(xs[mid], ys[mid]),
            label=f"predicted slope {float(predicted_slope):g}",
        )
    set_log(ax)
    label_axes(ax, xlabel, ylabel, xunit=xunit, yunit=yunit, title=title)
    ax.legend()
    return fig
