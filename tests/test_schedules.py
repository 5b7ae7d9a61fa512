"""Schedules, grids and conversions against closed forms and finite differences."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from readout_jax import schedules

ALL = [schedules.get_schedule(name) for name in schedules.SCHEDULES]
IDS = list(schedules.SCHEDULES)


@pytest.mark.parametrize("sched", ALL, ids=IDS)
def test_noise_scale_inverse_and_derivatives(sched):
    t = jnp.linspace(0.02, 0.98, 25)
    s = sched.noise_scale(t)
    np.testing.assert_allclose(sched.t_from_noise_scale(s), t, rtol=1e-9, atol=1e-9)
    # dα/dt and dσ/dt against central finite differences.
    h = 1e-6
    fd_a = (sched.alpha(t + h) - sched.alpha(t - h)) / (2 * h)
    fd_s = (sched.sigma(t + h) - sched.sigma(t - h)) / (2 * h)
    np.testing.assert_allclose(sched.d_alpha(t), fd_a, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sched.d_sigma(t), fd_s, rtol=1e-5, atol=1e-7)
    assert np.all(np.diff(np.asarray(s)) > 0), "s(t) must increase with t"


@pytest.mark.parametrize("name", ["vp_cosine", "vp_linear"])
def test_variance_preserving(name):
    sched = schedules.get_schedule(name)
    t = jnp.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(sched.alpha(t) ** 2 + sched.sigma(t) ** 2, 1.0, atol=1e-12)


def test_closed_forms():
    rf = schedules.get_schedule("rectified_flow")
    assert float(rf.alpha(0.25)) == 0.75 and float(rf.sigma(0.25)) == 0.25
    assert float(rf.noise_scale(1.0)) == np.inf and float(rf.t_from_noise_scale(np.inf)) == 1.0
    ve = schedules.VE(sigma_min=0.01, sigma_max=100.0)
    np.testing.assert_allclose(ve.sigma(0.5), 1.0, rtol=1e-12)
    lin = schedules.VPLinear()
    # log α(1) = −(β_max − β_min)/4 − β_min/2
    np.testing.assert_allclose(np.log(lin.alpha(1.0)), -(19.9 / 4 + 0.05), rtol=1e-12)
    cos = schedules.VPCosine()
    np.testing.assert_allclose(cos.alpha(0.0), 1.0, atol=1e-12)
    assert float(cos.alpha(1.0)) < 1e-12


@pytest.mark.parametrize("sched", ALL, ids=IDS)
@pytest.mark.parametrize("kind", schedules.GRID_KINDS)
def test_time_grid_shape_and_order(sched, kind):
    ts = schedules.time_grid(sched, 7, kind, t_min=0.01, t_max=1.0)
    assert ts.shape == (8,)
    assert np.all(np.diff(np.asarray(ts)) < 0)
    assert float(ts[0]) == 1.0 and float(ts[-1]) == pytest.approx(0.01)


def test_karras_and_logsnr_spacing():
    sched = schedules.VE(sigma_min=0.002, sigma_max=80.0)
    ts = schedules.time_grid(sched, 10, "karras", t_min=0.0, t_max=1.0)
    s = np.asarray(sched.noise_scale(ts))
    root = s ** (1 / 7)
    np.testing.assert_allclose(np.diff(root), np.diff(root)[0], rtol=1e-8)
    ts = schedules.time_grid(sched, 10, "logsnr", t_min=0.0, t_max=1.0)
    lam = np.asarray(sched.log_snr(ts))
    np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-8)


def test_conversions_round_trip(key):
    k1, k2 = jr.split(key)
    z, x0 = jr.normal(k1, (5,)), jr.normal(k2, (5,))
    for sched in ALL:
        t = 0.37
        eps = schedules.eps_from_x0(sched, z, x0, t)
        np.testing.assert_allclose(schedules.x0_from_eps(sched, z, eps, t), x0, atol=1e-10)
        score = schedules.score_from_x0(sched, z, x0, t)
        np.testing.assert_allclose(schedules.x0_from_score(sched, z, score, t), x0, atol=1e-10)
        v = schedules.velocity_from_x0(sched, z, x0, t)
        np.testing.assert_allclose(schedules.x0_from_velocity(sched, z, v, t), x0, atol=1e-8)
        # z = α x0 + σ ε holds by construction.
        np.testing.assert_allclose(schedules.add_noise(sched, x0, eps, t), z, atol=1e-12)


def test_velocity_is_time_derivative_of_the_conditional_path(key):
    """d/dt (α x0 + σ ε) = α' x0 + σ' ε for the conditional path."""
    k1, k2 = jr.split(key)
    x0, eps = jr.normal(k1, (3,)), jr.normal(k2, (3,))
    for sched in ALL:
        t, h = 0.5, 1e-6
        z = schedules.add_noise(sched, x0, eps, t)
        fd = (
            schedules.add_noise(sched, x0, eps, t + h) - schedules.add_noise(sched, x0, eps, t - h)
        ) / (2 * h)
        np.testing.assert_allclose(schedules.velocity_from_x0(sched, z, x0, t), fd, rtol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="valid schedules"):
        schedules.get_schedule("cosine")
    sched = schedules.VPCosine()
    with pytest.raises(ValueError, match="num_steps"):
        schedules.time_grid(sched, 0)
    with pytest.raises(ValueError, match="t_min"):
        schedules.time_grid(sched, 4, t_min=0.5, t_max=0.4)
    with pytest.raises(ValueError, match="t_min"):
        schedules.time_grid(sched, 4, t_max=1.5)
    with pytest.raises(ValueError, match="grid kind"):
        schedules.time_grid(sched, 4, "geometric")
