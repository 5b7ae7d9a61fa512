"""experiments.tube_law (C1): artifacts at a tiny size, and the measurement vs closed forms."""

import dataclasses
import math

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import readout_jax
from experiments import tube_law
from readout_jax import diagnostics
from readout_jax import io as rio
from readout_jax.manifolds import GaussianMixture, TokenSequence

TINY = dataclasses.replace(
    tube_law.Config.quick(),
    noise_scales=(0.03, 0.06, 0.1, 0.3),
    mixture_dims=(2,),
    num_modes=3,
    sequence=False,  # the sequence world is measured in its own (smaller) test below
    num_samples=4096,
    num_control_samples=256,
    num_smooth_samples=512,
    ode_steps=4,
    num_refine_check=64,
)


def _normal_cdf(x):
    return 0.5 * (1.0 + np.vectorize(math.erf)(np.asarray(x, float) / math.sqrt(2.0)))


def _two_modes(a=1.5):
    """x0 ~ ½N(−a, 1) + ½N(a, 1) in 1-D: boundary at 0, boundary distance |x|."""
    return GaussianMixture.two_modes(2 * a, dim=1, std=1.0, schedule="rectified_flow")


def test_tiny_run_writes_result_and_figures(tmp_path):
    result = tube_law.run(TINY, tmp_path)
    folder = tmp_path / "tube_law"
    loaded = rio.read_json(folder / "result.json")
    assert loaded == result
    for field in ("name", "config", "seed", "versions", "elapsed_seconds", "metrics", "claims"):
        assert field in loaded
    assert loaded["name"] == "tube_law" and loaded["config"]["num_samples"] == 4096
    claims = loaded["claims"]
    # 4 per categorical world, 1 per smooth world, 1 pooled smooth claim.
    assert len(claims) == 4 + 1 + 1
    for c in claims:
        assert c["claim"] == "C1"
        assert math.isfinite(c["measured"]) and isinstance(c["held"], bool) and c["detail"]
    assert set(loaded["metrics"]["worlds"]) == {"mixture_n2"}
    for w in loaded["metrics"]["worlds"].values():
        assert len(w["flip"]) == len(TINY.noise_scales)
        assert all(0 <= v <= 1 for v in w["flip"] + w["tube"] + w["pm_vs_ode"])
    assert loaded["figures"] == [
        "flip_rate.png",
        "flip_vs_tube.png",
        "smooth_readout.png",
        "transport_control.png",
    ]
    for name in loaded["figures"]:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert loaded["arrays"] == ["tube_law.npz"]


def test_flip_and_tube_match_quadrature_on_two_modes():
    # Independent math: the 1-D posterior mean is odd and increasing, so a flip is exactly
    # sign(x0 + s·ε) ≠ sign(x0): P = ∫ p(x) Φ(−|x|/s) dx. Tube: P(|x0| ≤ c*·s).
    a, s = 1.5, 0.1
    world = _two_modes(a)
    res = tube_law.flip_and_tube(world, jr.key(0), s, 1 << 16)
    xs = np.linspace(-9.0, 9.0, 200_001)
    dens = (
        0.5 * (np.exp(-0.5 * (xs - a) ** 2) + np.exp(-0.5 * (xs + a) ** 2)) / math.sqrt(2 * math.pi)
    )
    flip_exact = np.sum(dens * _normal_cdf(-np.abs(xs) / s)) * (xs[1] - xs[0])
    w = tube_law.C_STAR * s
    tube_exact = float(_normal_cdf(w - a) - _normal_cdf(-w - a))  # both modes, by symmetry
    assert abs(float(res["flip"].rate) - flip_exact) < 4 * float(res["flip"].std_error)
    assert abs(float(res["tube"].rate) - tube_exact) < 4 * float(res["tube"].std_error)
    np.testing.assert_allclose(res["distance"], np.abs(np.asarray(res["x0"][:, 0])), rtol=1e-6)
    assert abs(res["ratio"] - flip_exact / tube_exact) < 4 * res["ratio_se"]


def test_leading_order_constant_by_quadrature():
    # flip/tube(c*·s) → 1 as s → 0 for a density that is smooth across a flat boundary.
    a = 1.5
    xs = np.linspace(-9.0, 9.0, 400_001)
    dx = xs[1] - xs[0]
    dens = (
        0.5 * (np.exp(-0.5 * (xs - a) ** 2) + np.exp(-0.5 * (xs + a) ** 2)) / math.sqrt(2 * math.pi)
    )
    errors = []
    for s in (0.1, 0.01):
        flip = np.sum(dens * _normal_cdf(-np.abs(xs) / s)) * dx
        tube = np.sum(dens[np.abs(xs) <= tube_law.C_STAR * s]) * dx
        errors.append(abs(flip / tube - 1.0))
    assert errors[1] < 2e-3 and errors[1] < errors[0]
    assert tube_law.C_STAR * 2 == pytest.approx(tube_law.FLAT_FLIP_CONSTANT)


def test_transport_control_on_two_modes_is_exact_and_paired():
    # In 1-D the posterior mean and the probability-flow map are increasing and odd, so
    # both keep sign(z): the terminal step and the exact transport never disagree.
    world = _two_modes()
    x0, _ = world.sample_data(jr.key(1), 160)
    key_noise = jr.key(2)
    ctrl = tube_law.transport_control(
        world,
        key_noise,
        x0,
        0.2,
        sampler=readout_jax.get_sampler("dpmpp_2m"),
        num_steps=8,
        end_ratio=1e-3,
        max_block_values=8 * 64,  # three blocks of 64, the last one padded
    )
    assert not ctrl["pm_vs_ode"].any() and not ctrl["ode_vs_grid"].any()
    np.testing.assert_array_equal(ctrl["pm_vs_x0"], ctrl["ode_vs_x0"])
    # Same key, same noise as diagnostics.flip_rate: the PM flips are its indicator.
    est = diagnostics.flip_rate(world, key_noise, x0, 0.2)
    np.testing.assert_array_equal(ctrl["pm_vs_x0"], np.asarray(est.indicator))
    assert ctrl["pm_vs_x0"].sum() > 0


def test_smooth_errors_are_s_times_noise_at_small_s():
    world = tube_law.smooth_version(_two_modes())
    assert world.readout_kind == "smooth"
    x0, _ = world.sample_data(jr.key(3), 4096)
    err, eps = tube_law.smooth_errors(world, jr.key(4), x0, 1e-3)
    # x̂0 − x0 = s·ε + O(s²): the remainder is below 10·s² here.
    np.testing.assert_allclose(err, 1e-3 * eps, rtol=1e-2, atol=1e-5)


def test_extrapolate_ratio_recovers_a_line():
    s = np.array([0.01, 0.02, 0.05, 0.1])
    r0, se, r1 = tube_law.extrapolate_ratio(s, 0.98 + 0.3 * s, np.full(4, 0.01))
    assert r0 == pytest.approx(0.98) and r1 == pytest.approx(0.3)
    assert 0 < se < 0.05
    r0, se, _ = tube_law.extrapolate_ratio(s[:2], s[:2], np.ones(2))
    assert math.isnan(r0) and math.isnan(se)


def test_measure_world_on_a_small_sequence_world():
    world = TokenSequence.synthetic(
        jr.key(0), 4, 3, 2, std=1.0, separation=3.0, schedule="rectified_flow"
    )
    r = tube_law.measure_world(
        world,
        jr.key(1),
        noise_scales=(0.1, 0.3, 1.0),
        num_samples=1024,
        fit_max=1.0,
        num_control=64,
        ode_sampler=readout_jax.get_sampler("dpmpp_2m"),
        ode_steps=4,
        ode_end_ratio=1e-3,
    )
    assert r["flip"].shape == (3,) and np.all(np.diff(r["flip"]) > 0)
    assert np.isfinite(r["flip_fit"]["slope"]) and np.isfinite(r["ratio_at_zero"])
    assert r["refine_check"] == {}
    assert r["control"]["num_latents"] == 64


def test_make_worlds_are_overlapping_and_use_the_config():
    config = dataclasses.replace(TINY, sequence=True, sequence_vocab=4, sequence_length=3)
    worlds = tube_law.make_worlds(jr.key(0), config)
    assert set(worlds) == {"mixture_n2", "sequence"}
    mix, _ = worlds["mixture_n2"]
    assert mix.num_modes == config.num_modes and mix.schedule.name == "rectified_flow"
    dist = np.linalg.norm(np.asarray(mix.means)[:, None] - np.asarray(mix.means)[None], axis=-1)
    rms = math.sqrt(np.sum(dist**2) / (config.num_modes * (config.num_modes - 1)))
    assert 0.3 * config.separation < rms < 3 * config.separation  # RMS distance ≈ separation·τ
    seq, _ = worlds["sequence"]
    assert seq.latent_shape == (config.sequence_length, config.sequence_dim)
    assert seq.vocab_size == config.sequence_vocab


def test_config_validation():
    with pytest.raises(ValueError, match="noise_scales"):
        tube_law.Config(noise_scales=(0.1, 0.05, 0.2))
    with pytest.raises(ValueError, match="fit_max"):
        tube_law.Config(noise_scales=(0.01, 0.2, 0.5), fit_max=0.1)
    with pytest.raises(ValueError, match="ode_steps"):
        tube_law.Config(ode_steps=1)
    with pytest.raises(ValueError, match="no world"):
        tube_law.Config(mixture_dims=(), sequence=False)
    with pytest.raises(ValueError, match="confidence"):
        tube_law.Config(confidence=1.0)
    assert tube_law.Config.quick().fit_mask.sum() >= 3
    assert jnp.asarray(tube_law.Config.full().noise_scales).shape == (16,)


@pytest.mark.slow
def test_quick_scale_verdicts_hold(tmp_path):
    result = tube_law.run(tube_law.Config.quick(), tmp_path)
    assert all(c["held"] for c in result["claims"]), [
        c["detail"] for c in result["claims"] if not c["held"]
    ]
