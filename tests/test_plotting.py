"""readout_jax.plotting: the fitted and predicted power-law lines, labelled axes."""

import numpy as np
import pytest

from readout_jax import plotting


def _loglog_slope(line):
    x, y = (np.asarray(v, float) for v in line.get_data())
    return np.polyfit(np.log(x), np.log(y), 1)[0]


def test_fit_and_prediction_lines_have_their_slopes_and_meet_mid_range():
    fig, axes = plotting.new_figure()
    ax = axes[0, 0]
    x = np.geomspace(0.01, 1.0, 7)
    fitted, predicted = plotting.plot_fit_and_prediction(
        ax, x, 0.8, np.log(3.0), slope_se=0.05, predicted=1.0
    )
    assert _loglog_slope(fitted) == pytest.approx(0.8)
    assert _loglog_slope(predicted) == pytest.approx(1.0)
    x_mid = np.sqrt(0.01 * 1.0)
    for line in (fitted, predicted):
        xs, ys = (np.asarray(v, float) for v in line.get_data())
        assert np.interp(np.log(x_mid), np.log(xs), np.log(ys)) == pytest.approx(
            np.log(3.0 * x_mid**0.8), rel=1e-6
        )
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["slope 0.8 ± 0.05 (predicted 1)"]
    assert predicted.get_label() == "predicted slope 1"


def test_power_law_figure_is_log_log_with_units_and_both_slopes():
    x = np.geomspace(1.0, 100.0, 5)
    fig = plotting.power_law_figure(
        x,
        2.0 * x**0.5,
        xlabel="M",
        xunit="1",
        ylabel="stiffness",
        yunit="1",
        slope=0.5,
        intercept=np.log(2.0),
        predicted_slope=0.5,
    )
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert ax.get_xlabel() == "M [1]" and ax.get_ylabel() == "stiffness [1]"
    labels = [line.get_label() for line in ax.get_lines()]
    assert "predicted slope 0.5" in labels
