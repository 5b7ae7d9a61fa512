"""Gaussian-mixture worlds against Tweedie by autodiff and a Monte-Carlo posterior mean."""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from readout_jax import schedules
from readout_jax.manifolds import GaussianMixture, HierarchicalMixture


def _noised_log_density(means, weights, std, sched, z, t):
    """log Σ_m π_m N(z; α μ_m, (α²τ² + σ²) I), written independently of the library."""
    a, s = sched.alpha(t), sched.sigma(t)
    var = a**2 * std**2 + s**2
    n = z.shape[-1]
    logs = [
        jnp.log(w) - jnp.sum((z - a * m) ** 2) / (2 * var) - 0.5 * n * jnp.log(2 * math.pi * var)
        for m, w in zip(means, weights, strict=True)
    ]
    return jax.nn.logsumexp(jnp.stack(logs))


@pytest.mark.parametrize("name", list(schedules.SCHEDULES))
def test_denoiser_equals_tweedie_by_autodiff(name, key):
    k1, k2 = jr.split(key)
    means = 2.0 * jr.normal(k1, (5, 3))
    weights = jnp.array([0.1, 0.2, 0.3, 0.25, 0.15])
    world = GaussianMixture(means, weights, 0.7, name)
    for t in (0.05, 0.3, 0.8):
        z = jr.normal(jr.fold_in(k2, int(100 * t)), (3,))
        score = jax.grad(_noised_log_density, argnums=4)(means, weights, 0.7, world.schedule, z, t)
        tweedie = schedules.x0_from_score(world.schedule, z, score, t)
        np.testing.assert_allclose(world.denoise(z, t), tweedie, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(
            world.marginal_log_prob(z, t),
            _noised_log_density(means, weights, 0.7, world.schedule, z, t),
            rtol=1e-12,
        )


def test_denoiser_equals_monte_carlo_posterior_mean(key):
    """Self-normalised importance sampling of E[x0 | z] with the prior as proposal."""
    world = GaussianMixture.two_modes(3.0, dim=2, std=0.8, schedule="rectified_flow")
    t, z = 0.6, jnp.array([0.3, -0.2])
    n = 400_000
    x0, _ = world.sample_data(key, n)
    a, s = world.schedule.alpha(t), world.schedule.sigma(t)
    logw = -jnp.sum((z[None, :] - a * x0) ** 2, axis=-1) / (2 * s**2)
    w = jax.nn.softmax(logw)
    mc = w @ x0
    # Standard error of a self-normalised estimate: sqrt(Σ w² (x − mc)²).
    se = jnp.sqrt(jnp.sum(w[:, None] ** 2 * (x0 - mc[None, :]) ** 2, axis=0))
    assert np.all(np.abs(np.asarray(world.denoise(z, t) - mc)) < 4 * np.asarray(se))


def test_sample_data_moments(key):
    world = GaussianMixture(jnp.array([[0.0, 0.0], [4.0, 0.0]]), jnp.array([0.3, 0.7]), 0.5)
    x0, labels = world.sample_data(key, 20_000)
    assert x0.shape == (20_000, 2) and labels.shape == (20_000,)
    frac = float(jnp.mean(labels == 1))
    assert abs(frac - 0.7) < 4 * math.sqrt(0.21 / 20_000)
    resid = x0 - world.means[labels]
    assert abs(float(jnp.std(resid)) - 0.5) < 4 * 0.5 / math.sqrt(2 * 40_000)


def test_logits_and_readouts():
    means = jnp.array([[0.0, 0.0], [2.0, 0.0]])
    world = GaussianMixture(means, jnp.array([0.5, 0.5]), 1.0, sharpness=3.0)
    x = jnp.array([0.4, 1.0])
    expected = 3.0 * (jnp.log(0.5) - jnp.sum((x[None, :] - means) ** 2, axis=-1) / 2.0)
    np.testing.assert_allclose(world.logits(x), expected, rtol=1e-12)
    assert int(world.readout(x)) == 0 and int(world.readout(jnp.array([1.1, 0.0]))) == 1
    smooth = GaussianMixture(means, jnp.array([0.5, 0.5]), 1.0, readout_kind="smooth")
    np.testing.assert_array_equal(smooth.readout(x), x)


def test_regularity_limited_responsibilities_are_smoother():
    world = GaussianMixture.two_modes(4.0, dim=1, std=0.1)
    limited = GaussianMixture(world.means, world.weights, world.std, resp_scale=4.0)
    z, t = jnp.array([0.0]), 0.3
    slope_exact = jax.jacfwd(world.denoise)(z, t)[0, 0]
    slope_limited = jax.jacfwd(limited.denoise)(z, t)[0, 0]
    assert 0 < slope_limited < slope_exact
    np.testing.assert_allclose(
        GaussianMixture(world.means, world.weights, world.std, resp_scale=1.0).denoise(z, t),
        world.denoise(z, t),
    )


def test_hierarchical_mixture_structure(key):
    h = HierarchicalMixture.create(key, depth=3, branching=2, dim=5)
    assert h.num_modes == 8 and h.leaf_means.shape == (8, 5)
    codes = h.level_labels(jnp.arange(8))
    expected = sum(h.radii[l] * h.directions[l, codes[:, l]] for l in range(3))
    np.testing.assert_allclose(h.leaf_means, expected, rtol=1e-12)
    z = jnp.ones(5)
    np.testing.assert_allclose(h.denoise(z, 0.4), h.mixture.denoise(z, 0.4))


def test_float32_works(key):
    means = jr.normal(key, (4, 3), jnp.float32)
    world = GaussianMixture(means, jnp.full((4,), 0.25, jnp.float32), 0.5)
    out = jax.jit(world.denoise)(jnp.ones(3, jnp.float32), jnp.float32(0.5))
    assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))


def test_bad_input():
    means = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="weights must sum to 1"):
        GaussianMixture(means, jnp.array([0.5, 0.6]), 1.0)
    with pytest.raises(ValueError, match="std must be"):
        GaussianMixture(means, jnp.array([0.5, 0.5]), 0.0)
    with pytest.raises(ValueError, match="std must be"):
        GaussianMixture(means, jnp.array([0.5, 0.5]), -1.0)
    with pytest.raises(ValueError, match="weights must have shape"):
        GaussianMixture(means, jnp.array([1.0]), 1.0)
    with pytest.raises(ValueError, match="sharpness"):
        GaussianMixture(means, jnp.array([0.5, 0.5]), 1.0, sharpness=0.0)
    with pytest.raises(ValueError, match="readout_kind"):
        GaussianMixture(means, jnp.array([0.5, 0.5]), 1.0, readout_kind="soft")
    with pytest.raises(ValueError, match="means contains NaN"):
        GaussianMixture(jnp.full((2, 3), jnp.nan), jnp.array([0.5, 0.5]), 1.0)
    with pytest.raises(ValueError, match="valid schedules"):
        GaussianMixture(means, jnp.array([0.5, 0.5]), 1.0, "cosine")
