"""experiments.tradeoff (C7): artifacts at a tiny size, stiffness vs the library, statistics."""

import dataclasses
import math

import jax
import jax.random as jr
import numpy as np
import pytest

import readout_jax as rj
from experiments import few_step, tradeoff
from readout_jax import diagnostics
from readout_jax import io as rio
from readout_jax.manifolds import GaussianMixture

TINY = dataclasses.replace(
    tradeoff.Config.quick(),
    num_modes=4,
    dim=2,
    std=0.2,
    num_steps=(1, 2, 4),
    kappas=(1.0, 2.0, 4.0),
    deterministic=("ddim",),
    escapes=("ddim_eta", "churn"),
    num_samples=32,
    num_bootstrap=50,
)


def test_tiny_run_writes_result_and_figure(tmp_path):
    result = tradeoff.run(TINY, tmp_path)
    folder = tmp_path / "tradeoff"
    loaded = rio.read_json(folder / "result.json")
    assert loaded == result
    for field in ("name", "config", "seed", "versions", "elapsed_seconds", "metrics", "claims"):
        assert field in loaded
    claims = loaded["claims"]
    assert [c["claim"] for c in claims] == ["C7", "C7"]
    for c in claims:
        assert math.isfinite(c["measured"]) and isinstance(c["held"], bool) and c["detail"]
    points = loaded["metrics"]["points"]
    # 1 deterministic row x 3 kappas + 2 escapes, at 3 K each.
    assert len(points) == (1 * 3 + 2) * 3
    for p in points:
        for key in ("accuracy", "step_peak_quantile", "whole_quantile", "whole_median"):
            assert math.isfinite(p[key]), (p["sampler"], key)
        assert 0 <= p["accuracy"] <= 1 and len(p["step_median"]) == p["K"]
    assert {p["family"] for p in points} == {"deterministic", "sde", "hybrid"}
    assert loaded["figures"] == ["tradeoff.png"]
    assert (folder / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(
    not jax.config.jax_threefry_partitionable, reason="keys equal the harness's only then"
)
def test_dense_stiffness_equals_the_library_diagnostics():
    world = GaussianMixture.random(jr.key(0), 3, 2, std=0.3)
    sampler = rj.get_sampler("ddim_eta")  # stochastic: its noise must be held fixed alike
    x_init = jr.normal(jr.key(1), (6, 2))
    ts, ts_pad = few_step.padded_grid(world.schedule, 3, 5, kind="uniform", t_min=1e-3, t_max=0.99)
    x0, norms, whole, nfe = tradeoff.trajectory_stiffness(
        sampler, world, jr.key(2), x_init, ts, ts_pad
    )
    ref = rj.sample(sampler, world, jr.key(2), x_init, ts, record=None)
    np.testing.assert_allclose(x0, ref.x0, rtol=1e-10, atol=1e-12)
    lib_steps = diagnostics.step_jacobian_norms(sampler, world, jr.key(2), x_init, ts)
    np.testing.assert_allclose(norms, lib_steps, rtol=1e-6)
    lib_whole = diagnostics.whole_map_norm(sampler, world, jr.key(2), x_init, ts, output="x0")
    np.testing.assert_allclose(whole, lib_whole, rtol=1e-6)
    assert np.all(nfe == 3)


def test_category_labels_and_accuracy():
    centres = np.array([[0.0, 0.0], [10.0, 0.0]])
    x = np.array([[0.1, 0.0], [9.9, 0.2], [5.0, 0.0], [0.0, -0.3]])
    labels = tradeoff.category_labels(x, centres, 1.0, 4.0)
    assert labels.tolist() == [[0], [1], [-1], [0]]
    weights = np.array([0.5, 0.5])
    # histogram (off, 0, 1) = (1/4, 1/2, 1/4) vs (0, 1/2, 1/2): TV = 1/4.
    assert float(tradeoff.accuracy_from_labels(labels, weights)) == pytest.approx(0.75)
    constant = np.zeros((100, 1), int)
    assert float(tradeoff.accuracy_from_labels(constant, np.array([0.7, 0.3]))) == pytest.approx(
        0.7
    )
    batched = tradeoff.accuracy_from_labels(np.stack([labels, labels]), weights)
    assert batched.shape == (2,) and np.allclose(batched, 0.75)


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(3, 40)).astype(float)
    y = x + rng.normal(size=(3, 40))
    ours = tradeoff.spearman(x, y)
    for i in range(3):
        assert ours[i] == pytest.approx(stats.spearmanr(x[i], y[i]).statistic)
    assert np.isnan(tradeoff.spearman(np.ones(5), np.arange(5.0)))


def test_frontier_is_the_best_accuracy_at_no_more_stiffness():
    stiff = np.array([1.0, 2.0, 4.0])
    acc = np.array([0.2, 0.1, 0.9])
    at = np.array([0.5, 1.0, 3.0, 10.0])
    np.testing.assert_allclose(tradeoff.frontier(stiff, acc, at, 0.05), [0.05, 0.2, 0.2, 0.9])


def test_config_validation():
    with pytest.raises(ValueError, match="deterministic"):
        tradeoff.Config(deterministic=("ddim_eta",))
    with pytest.raises(ValueError, match="escapes"):
        tradeoff.Config(escapes=("ddim",))
    with pytest.raises(ValueError, match="kappas"):
        tradeoff.Config(kappas=(0.5,))


@pytest.mark.slow
def test_quick_scale_verdicts_hold(tmp_path):
    result = tradeoff.run(tradeoff.Config.quick(), tmp_path)
    assert all(c["held"] for c in result["claims"]), [c["detail"] for c in result["claims"]]
