"""Numerical edge cases: s → 0, t = 0 and t = 1 exactly, β = 1e6, extreme mixtures, f32 vs f64.

Every tolerance is derived, not tuned: a float computation with at most `ROUNDINGS`
roundings of relative size eps/2 (eps the dtype's machine epsilon) has a backward
error of at most ROUNDINGS·eps/2 relative in each input and output, so its forward
error is bounded by that times the magnitudes involved and the operation's condition
(its derivative times the size of the perturbed quantity). Each test states the
magnitudes it uses.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import readout_jax as rj
from readout_jax import diagnostics, readouts, samplers, schedules
from readout_jax.manifolds import GaussianMixture, TokenSequence

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)
ROUNDINGS = 16  # an upper bound on the roundings in any formula checked here

SCHEDULES = {
    "vp_cosine": schedules.VPCosine(),
    "vp_linear": schedules.VPLinear(),
    # σ_min tiny so that s(0) = σ_min approaches 0 as on the other schedules.
    "ve": schedules.VE(sigma_min=1e-9, sigma_max=80.0),
    "rectified_flow": schedules.RectifiedFlow(),
}
SAMPLER_NAMES = tuple(samplers.SAMPLERS)


def _world(schedule, dtype=jnp.float64):
    """The 3-mode mixture of tests/test_determinism.py (same structure: shared compiles)."""
    means = jnp.array([[-1.5, 0.0], [1.5, 0.5], [0.0, 2.0]], dtype)
    return GaussianMixture(means, jnp.array([0.3, 0.3, 0.4], dtype), 0.6, schedule)


# ---- the last step at s → 0 --------------------------------------------------------


def _run_to_zero(name: str, sched_name: str, key):
    """Run `name` (batch 8, K = 4) down to t_min = 0 and to t_min = 1e-12 (one compile)."""
    if name == "renoise_rf":  # defined on rectified flow only
        sched_name = "rectified_flow"
    world = _world(SCHEDULES[sched_name])
    t_max = 0.995 if name == "euler_maruyama" else 1.0  # EM needs α(t_max) > 0
    x_init = rj.prior_sample(jr.key(1), world, 8, t_max)
    outs = []
    for t_min in (0.0, 1e-12):
        ts = jnp.linspace(t_max, t_min, 5)
        outs.append((t_min, rj.sample(rj.get_sampler(name), world, key, x_init, ts)))
    return world, outs


def _check_last_step(world, outs):
    for t_min, out in outs:
        for leaf in jax.tree_util.tree_leaves(out):
            assert np.all(np.isfinite(np.asarray(leaf))), t_min
        s_min = float(world.schedule.noise_scale(t_min))
        # x0 = x̂0(x, t_min) is within the posterior spread of x: at s(t_min) → 0 the
        # exact posterior mean tends to x itself, |x̂0 − x| ≤ (s²/τ²)·|x − mean| + rounding.
        bound = 10.0 * s_min * (1.0 + np.abs(np.asarray(out.x))) + 64 * EPS64
        assert np.all(np.abs(np.asarray(out.x0 - out.x)) <= bound), (t_min, s_min)


# Default: every sampler to s = 0 exactly on vp_cosine (renoise_rf on rectified flow;
# the programs are shared with tests/test_determinism.py), and the other schedules'
# s → 0 under samplers with their own last-step branch (Heun's Euler fallback on
# vp_linear, DPM++'s s' = 0 step on VE). The full cross product is marked slow.
_DEFAULT = [(n, "vp_cosine") for n in SAMPLER_NAMES] + [("heun", "vp_linear"), ("dpmpp_2m", "ve")]
_REST = [p for p in itertools.product(SAMPLER_NAMES, SCHEDULES) if p not in _DEFAULT]


@pytest.mark.parametrize(("name", "sched_name"), _DEFAULT, ids=[f"{n}-{s}" for n, s in _DEFAULT])
def test_last_step_to_zero_noise_is_finite(name, sched_name, key):
    _check_last_step(*_run_to_zero(name, sched_name, key))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "sched_name"), _REST, ids=[f"{n}-{s}" for n, s in _REST])
def test_last_step_to_zero_noise_is_finite_all_pairs(name, sched_name, key):
    _check_last_step(*_run_to_zero(name, sched_name, key))


# ---- t = 0 and t = 1 exactly -------------------------------------------------------


def test_schedules_at_the_end_points():
    vp, lin, ve, rf = (SCHEDULES[n] for n in ("vp_cosine", "vp_linear", "ve", "rectified_flow"))
    for sched in (vp, lin, rf):
        assert float(sched.alpha(0.0)) == 1.0 and float(sched.sigma(0.0)) == 0.0
        assert float(sched.noise_scale(0.0)) == 0.0 and float(sched.log_snr(0.0)) == np.inf
        assert float(sched.t_from_noise_scale(0.0)) == 0.0
    for sched in (vp, rf):  # α(1) = 0 exactly: pure noise, s = inf, log-SNR = −inf
        assert float(sched.alpha(1.0)) == 0.0 and float(sched.sigma(1.0)) == 1.0
        assert float(sched.noise_scale(1.0)) == np.inf and float(sched.log_snr(1.0)) == -np.inf
        assert float(sched.t_from_noise_scale(np.inf)) == 1.0
    # VP-linear: log α(1) = −(β_max − β_min)/4 − β_min/2 in closed form.
    a1 = np.exp(-(lin.beta_max - lin.beta_min) / 4 - lin.beta_min / 2)
    np.testing.assert_allclose(float(lin.alpha(1.0)), a1, rtol=4 * EPS64)
    np.testing.assert_allclose(float(lin.sigma(1.0)), np.sqrt(1 - a1**2), rtol=4 * EPS64)
    assert float(lin.t_from_noise_scale(np.inf)) == 1.0
    # VE: α ≡ 1, σ(0) = σ_min, σ(1) = σ_max, and the exact inverse at both ends.
    assert float(ve.alpha(0.0)) == 1.0 == float(ve.alpha(1.0))
    # σ(1) = σ_min·exp(L), L = log(σ_max/σ_min): exp's condition L turns the rounding of
    # L into a relative error L·eps/2, plus two roundings.
    log_ratio = np.log(80.0 / 1e-9)
    rtol = (2 + log_ratio) * EPS64
    np.testing.assert_allclose([ve.sigma(0.0), ve.sigma(1.0)], [1e-9, 80.0], rtol=rtol)
    np.testing.assert_allclose(
        [ve.t_from_noise_scale(1e-9), ve.t_from_noise_scale(80.0)], [0, 1], atol=4 * EPS64
    )
    # Integer times are times: alpha(0) and alpha(1) equal alpha(0.0) and alpha(1.0).
    for sched in SCHEDULES.values():
        assert float(sched.alpha(1)) == float(sched.alpha(1.0))
        assert float(sched.sigma(0)) == float(sched.sigma(0.0))
        for t in (0.0, 1.0):
            assert np.isfinite(float(sched.d_alpha(t)))


def test_conversions_at_the_end_points(key):
    z, x0 = jr.normal(key, (2, 3))
    for name in ("vp_cosine", "rectified_flow"):
        sched = SCHEDULES[name]
        # t = 1 (α = 0, σ = 1): ε̂ = z, score = −z, velocity = α'·x̂0 + σ'·z, all finite.
        np.testing.assert_array_equal(schedules.eps_from_x0(sched, z, x0, 1.0), z)
        np.testing.assert_array_equal(schedules.score_from_x0(sched, z, x0, 1.0), -z)
        v = schedules.velocity_from_x0(sched, z, x0, 1.0)
        np.testing.assert_allclose(
            v, sched.d_alpha(1.0) * x0 + sched.d_sigma(1.0) * z, rtol=4 * EPS64, atol=0
        )
        np.testing.assert_allclose(schedules.x0_from_velocity(sched, z, v, 1.0), x0, rtol=1e-12)
        # t = 0 (α = 1, σ = 0): x̂0 = z exactly; z_0 = x0.
        np.testing.assert_array_equal(schedules.x0_from_eps(sched, z, x0, 0.0), z)
        np.testing.assert_array_equal(schedules.x0_from_score(sched, z, x0, 0.0), z)
        np.testing.assert_array_equal(schedules.add_noise(sched, x0, z, 0.0), x0)
        np.testing.assert_array_equal(schedules.add_noise(sched, x0, z, 1.0), z)


def test_denoisers_at_the_end_points(key):
    """t = 0: x̂0(z) = z (no noise); t = 1 with α = 0: x̂0 = the prior mean."""
    gmm = GaussianMixture(
        jnp.array([[-1.0, 0.5], [2.0, -0.5], [0.0, 3.0]]), jnp.array([0.2, 0.3, 0.5]), 0.4
    )
    seq = TokenSequence.synthetic(key, 6, 4, 2, std=0.3)
    for world, z in ((gmm, jr.normal(key, (2,))), (seq, jr.normal(key, (4, 2)))):
        at0 = world.denoise(z, 0.0)
        # x̂0 = mean + 1·(z − mean): 3 roundings on magnitudes ≤ |z| + |mean|.
        scale = np.abs(np.asarray(z)) + np.max(np.abs(np.asarray(at0)))
        assert np.all(np.abs(np.asarray(at0 - z)) <= ROUNDINGS * EPS64 * scale)
    prior_gmm = np.asarray(gmm.weights) @ np.asarray(gmm.means)
    np.testing.assert_allclose(
        gmm.denoise(jnp.ones(2), 1.0), prior_gmm, rtol=0, atol=ROUNDINGS * EPS64 * 3
    )
    # Forward–backward over L positions, V terms per product: ≤ 2·L·V roundings per
    # marginal (a probability ≤ 1), times the largest embedding entry.
    prior_seq = np.asarray(seq.position_marginals()) @ np.asarray(seq.embeddings)
    length, vocab = seq.length, seq.vocab_size
    atol = 2 * length * vocab * EPS64 * np.abs(np.asarray(seq.embeddings)).max() * vocab
    np.testing.assert_allclose(seq.denoise(jnp.ones((4, 2)), 1.0), prior_seq, rtol=0, atol=atol)


# ---- extremely sharp readouts (β = 1e6) -------------------------------------------------


@jax.jit
def _distances(world, x):
    """First-order boundary distances of a batch (one compile for every β: β is data)."""
    return jax.vmap(lambda xi: diagnostics.boundary_distance(world, xi, refine=False))(x)


def test_sharp_readout_logits_margins_distances_and_flips(key):
    beta = 1e6
    world_1 = GaussianMixture(
        jnp.array([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]),
        jnp.array([0.3, 0.3, 0.4]),
        0.7,
    )
    world_b = GaussianMixture(world_1.means, world_1.weights, 0.7, sharpness=beta)
    x0, _ = world_1.sample_data(jr.key(3), 64)
    logits_1 = jax.vmap(world_1.logits)(x0)
    logits_b = jax.vmap(world_b.logits)(x0)
    assert np.all(np.isfinite(np.asarray(logits_b)))
    # ℓ_β = β·ℓ_1 up to one rounding of each product.
    np.testing.assert_allclose(logits_b, beta * logits_1, rtol=2 * EPS64, atol=0)
    # Margins: m_β = β·m_1; each of the two β-scaled logits carries a rounding error
    # ≤ eps·|β·ℓ|, and so does m_1's own subtraction: bound 4·eps·β·(|ℓ_(1)| + |ℓ_(2)|).
    m1 = jax.vmap(readouts.margin)(logits_1)
    mb = jax.vmap(readouts.margin)(logits_b)
    top1, top2 = jax.vmap(readouts.top_two)(logits_1)
    bound = 4 * EPS64 * beta * (np.abs(top1) + np.abs(top2))
    assert np.all(np.abs(np.asarray(mb - beta * m1)) <= bound)
    # The argmax readout does not depend on β.
    np.testing.assert_array_equal(jax.vmap(world_b.readout)(x0), jax.vmap(world_1.readout)(x0))
    # Boundary distance d = m/|∇m|: β cancels; relative error ≤ c·eps·(|ℓ_(1)| + |ℓ_(2)|)/m.
    d1, db = (_distances(w, x0) for w in (world_1, world_b))
    rel = ROUNDINGS * EPS64 * (np.abs(top1) + np.abs(top2)) / np.asarray(m1)
    assert np.all(np.abs(np.asarray(db - d1)) <= rel * np.asarray(d1))
    # Flip rate: the denoiser does not depend on β, so the flips are identical events.
    f1 = diagnostics.flip_rate(world_1, key, x0, 0.3)
    fb = diagnostics.flip_rate(world_b, key, x0, 0.3)
    np.testing.assert_array_equal(fb.indicator, f1.indicator)
    assert np.isfinite(float(fb.rate)) and np.isfinite(float(fb.std_error))


@pytest.mark.slow
def test_sharp_readout_dabi_is_finite_and_correct(key):
    """Two classes: J of the softmax is rank one along ∇m at every β, so the linearized
    index |J n̂|/sqrt(mean |J u|²) = |∇m|/sqrt(mean (∇m·u)²) does not depend on β. At
    β = 1e6 J itself underflows to 0; the index must still equal its β = 1 value."""
    means = jnp.array([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    world_1 = GaussianMixture(means, jnp.array([0.5, 0.5]), 0.7)
    world_b = GaussianMixture(means, jnp.array([0.5, 0.5]), 0.7, sharpness=1e6)
    x0, _ = world_1.sample_data(jr.key(4), 16)
    r1 = diagnostics.dabi_variants(world_1, x0, key=key)
    rb = diagnostics.dabi_variants(world_b, x0, key=key)
    for name, res in rb.items():
        assert np.all(np.isfinite(np.asarray(res.index))), name
    # Ratio of two norms of the same rank-one map: β cancels up to rounding.
    # Each index sums U squared jvps: ≤ ROUNDINGS·U roundings relative.
    num_dirs = diagnostics.MIN_DIRECTIONS
    np.testing.assert_allclose(
        rb["linearized"].index, r1["linearized"].index, rtol=ROUNDINGS * num_dirs * EPS64
    )
    # The argmax-flip variant is a function of the argmax only: identical.
    np.testing.assert_array_equal(rb["flip"].index, r1["flip"].index)
    # At β = 1e6 the token distributions are one-hot except within ~50/β of a boundary,
    # so TV(p(x), p(x + h)) is the flip indicator; one direction in U may land that
    # close, hence the tolerance of one direction, 1/U.
    np.testing.assert_allclose(rb["tv"].denominator, rb["flip"].denominator, atol=1.0 / num_dirs)
    np.testing.assert_allclose(rb["tv"].numerator, rb["flip"].numerator, atol=1e-12)


# ---- very separated and fully overlapping mixtures ------------------------------------


def _single_gaussian_posterior_mean(mu, tau, a, sig, z):
    """E[x0 | z] for x0 ~ N(μ, τ²I), z = a·x0 + σ·ε (numpy, float64)."""
    v = a**2 * tau**2 + sig**2
    return mu + (a * tau**2 / v) * (z - a * mu)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
def test_very_separated_mixture_equals_its_nearest_component(dtype, key):
    """Means 1e3 apart, τ = 1e-3: a latent drawn from component k has responsibility 1
    for k to within exp(−a²·1e6/(2v)) ≤ exp(−120) at t ≤ 0.99, so x̂0 is the
    single-Gaussian posterior mean of component k. Error: ≤ ROUNDINGS roundings on
    magnitudes |μ| + |z|."""
    eps = float(np.finfo(dtype).eps)
    means = np.array([[-500.0, 0.0], [500.0, 0.0]])
    tau = 1e-3
    world = GaussianMixture(jnp.asarray(means, dtype), jnp.asarray([0.5, 0.5], dtype), tau)
    sched = world.schedule
    ts = np.array([1e-6, 0.01, 0.3, 0.7, 0.99])
    key_label, key_x, key_eps = jr.split(key, 3)
    labels = np.asarray(jr.bernoulli(key_label, 0.5, (len(ts),))).astype(int)
    x0 = means[labels] + tau * np.asarray(jr.normal(key_x, (len(ts), 2)))
    eps_noise = np.asarray(jr.normal(key_eps, (len(ts), 2)))
    for i, t in enumerate(ts):
        t = float(jnp.asarray(t, dtype))  # the time the world sees, exactly
        a, sig = float(sched.alpha(t)), float(sched.sigma(t))
        z = np.asarray(jnp.asarray(a * x0[i] + sig * eps_noise[i], dtype), np.float64)
        got = np.asarray(world.denoise(jnp.asarray(z, dtype), jnp.asarray(t, dtype)), np.float64)
        want = _single_gaussian_posterior_mean(means[labels[i]], tau, a, sig, z)
        bound = ROUNDINGS * eps * (np.abs(means).max() + np.abs(z).max())
        assert np.all(np.isfinite(got))
        assert np.all(np.abs(got - want) <= bound), (t, got, want, bound)
        r = np.asarray(world.responsibilities(jnp.asarray(z, dtype), jnp.asarray(t, dtype)))
        assert r[labels[i]] == 1.0


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
def test_fully_overlapping_mixture_is_one_gaussian(dtype, key):
    """Identical means: whatever the weights, x̂0 is the posterior mean of N(μ, τ²I).
    The responsibilities sum to 1 up to M roundings, so x̂0 = μ·(1 ± M·eps) + gain·(…)."""
    eps = float(np.finfo(dtype).eps)
    mu = np.array([0.7, -1.3, 2.0])
    world = GaussianMixture(
        jnp.asarray(np.tile(mu, (3, 1)), dtype), jnp.asarray([0.2, 0.3, 0.5], dtype), 0.6
    )
    sched = world.schedule
    for i, t in enumerate((1e-6, 0.2, 0.5, 0.9, 1.0)):
        t = float(jnp.asarray(t, dtype))  # the time the world sees, exactly
        a, sig = float(sched.alpha(t)), float(sched.sigma(t))
        z = np.asarray(jnp.asarray(jr.normal(jr.fold_in(key, i), (3,)), dtype), np.float64)
        got = np.asarray(world.denoise(jnp.asarray(z, dtype), jnp.asarray(t, dtype)), np.float64)
        want = _single_gaussian_posterior_mean(mu, 0.6, a, sig, z)
        bound = ROUNDINGS * eps * (np.abs(mu).max() + np.abs(z).max())
        assert np.all(np.abs(got - want) <= bound), (t, got, want)


# ---- float32 vs float64 -------------------------------------------------------------


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedules_float32_match_float64(name):
    """α, σ, s, log-SNR at the same float32 times, against float64.

    A quantity computed directly from t (α; σ on VE and rectified flow) has a backward
    error ≤ ROUNDINGS·eps32/2 in t, its constants and its result, so
    |Δf| ≤ ROUNDINGS·eps32·(|f| + (|t| + 1)·|f'|), f' the float64 derivative. On VP
    schedules σ = sqrt(1 − α²) is computed from α, so its error is α's propagated by
    dσ/dα = −α/σ (ill-conditioned near t = 0); then s = σ/α and λ = −2·log s propagate
    those errors by their partial derivatives, plus their own roundings.
    """
    sched = SCHEDULES[name]
    t32 = jnp.linspace(0.01, 0.99, 33, dtype=jnp.float32)
    t64 = np.asarray(t32, np.float64)
    k = ROUNDINGS * EPS32

    def direct(fn):
        f, df = jax.jvp(fn, (jnp.asarray(t64),), (jnp.ones_like(t64),))
        return np.asarray(f), k * (np.abs(f) + (np.abs(t64) + 1.0) * np.abs(df))

    alpha, d_alpha = direct(sched.alpha)
    if name in ("vp_cosine", "vp_linear"):
        sigma = np.asarray(sched.sigma(t64))
        d_sigma = alpha / sigma * d_alpha + k * sigma
    else:
        sigma, d_sigma = direct(sched.sigma)
    s = sigma / alpha
    d_s = d_sigma / alpha + sigma * d_alpha / alpha**2 + k * s
    lam = -2.0 * np.log(s)
    d_lam = 2.0 * d_s / s + k * np.abs(lam)
    expected = {
        "alpha": (alpha, d_alpha),
        "sigma": (sigma, d_sigma),
        "noise_scale": (s, d_s),
        "log_snr": (lam, d_lam),
    }
    for fn_name, (want, bound) in expected.items():
        got = getattr(sched, fn_name)(t32)
        assert got.dtype == jnp.float32, fn_name
        np.testing.assert_allclose(np.asarray(getattr(sched, fn_name)(t64)), want, rtol=1e-14)
        err = np.abs(np.asarray(got, np.float64) - want)
        assert np.all(err <= bound), (fn_name, float(np.max(err / bound)))


def _gmm_error_bound(world, z, t, eps):
    """First-order rounding bound of the mixture denoiser at (z, t); z of shape (B, n).

    logits L_m = log π_m − (a²|μ_m|² − 2a·μ_m·z)/(2v) carry absolute errors
    δL ≤ ROUNDINGS·eps·(|log π|max + (a²|μ|²max + 2a|μ|max|z|)/(2v)); softmax maps them
    to |δr| ≤ 2·δL (in ℓ1), hence |δ mean| ≤ 2·δL·|μ|max, amplified by (1 + g·a) through
    x̂0 = mean + g·(z − a·mean), g = a·τ²/v; the final combination adds ROUNDINGS·eps
    times its terms |mean| + g·(|z| + a·|mean|).
    """
    sched = world.schedule
    a, sig = float(sched.alpha(t)), float(sched.sigma(t))
    tau = float(world.std)
    mu = np.asarray(world.means, np.float64)
    v = a**2 * tau**2 + sig**2
    g = a * tau**2 / v
    mu_max = np.max(np.linalg.norm(mu, axis=1))
    z_norm = np.linalg.norm(np.asarray(z, np.float64), axis=-1)
    d_logit = (
        ROUNDINGS
        * eps
        * (
            np.max(np.abs(np.log(np.asarray(world.weights, np.float64))))
            + (a**2 * mu_max**2 + 2 * a * mu_max * z_norm) / (2 * v)
        )
    )
    return 2 * d_logit * mu_max * (1 + g * a) + ROUNDINGS * eps * (
        mu_max + g * (z_norm + a * mu_max)
    )


@jax.jit
def _denoise_batch(world, z, t):
    return jax.vmap(world.denoise, in_axes=(0, None))(z, t)


def test_mixture_denoiser_float32_matches_float64(key):
    means32 = np.asarray(jr.normal(key, (4, 3)) * 2.0, np.float32)
    weights32 = np.asarray([0.1, 0.2, 0.3, 0.4], np.float32)
    w32 = GaussianMixture(jnp.asarray(means32), jnp.asarray(weights32), jnp.float32(0.5))
    w64 = GaussianMixture(  # the same numbers; weights renormalised in float64
        jnp.asarray(means32, jnp.float64),
        jnp.asarray(weights32, jnp.float64) / np.sum(weights32, dtype=np.float64),
        0.5,
    )
    z32 = np.asarray(jr.normal(jr.fold_in(key, 1), (16, 3)) * 2.0, np.float32)
    for t in (0.05, 0.3, 0.6, 0.95):
        t32 = np.float32(t)
        got = _denoise_batch(w32, jnp.asarray(z32), jnp.asarray(t32))
        assert got.dtype == jnp.float32
        want = _denoise_batch(w64, jnp.asarray(z32, jnp.float64), jnp.float64(t32))
        bound = _gmm_error_bound(w64, z32, float(t32), EPS32)
        err = np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want)), axis=-1)
        assert np.all(err <= bound), (t, float(np.max(err / bound)))


def _ddim_step(world, z, t, t_next):
    return samplers.DDIM().step(None, samplers.SamplerState(z, t), world, t_next)[0].x


@jax.jit
def _ddim_step_and_jacobian(world, z, t, t_next):
    """Batched DDIM step z → z' and its Jacobian ∂z'/∂z (float64 references)."""
    step = jax.vmap(_ddim_step, in_axes=(None, 0, None, None))
    jac = jax.vmap(jax.jacfwd(_ddim_step, argnums=1), in_axes=(None, 0, None, None))
    return step(world, z, t, t_next), jac(world, z, t, t_next), _denoise_batch(world, z, t)


@jax.jit
def _denoise_jacobian(world, z, t):
    return jax.vmap(jax.jacfwd(world.denoise), in_axes=(0, None))(z, t)


def ddim_rounding_bound(world, x_init, ts, eps):
    """Per-example bounds on the rounding error of a DDIM run (x_K and x̂0(x_K, t_K)).

    Step k injects a local rounding error δ_k ≤ |∂z'/∂x̂0|·(denoiser bound) +
    ROUNDINGS·eps·|terms|, with z' = α'(1 − s'/s)·x̂0 + (α's'/σ)·z; it reaches the output
    through the later step Jacobians (float64, `jax.jacfwd` of `DDIM.step`), so
    |Δz_K| ≤ Σ_k ‖J_{K−1}⋯J_{k+1}‖₂·δ_k; the terminal x̂0 adds ‖∂x̂0/∂z‖₂·|Δz_K| plus
    its own rounding. `world` is float64; eps is that of the arithmetic being bounded.

    Returns:
        (bound on max |Δx|, bound on max |Δx0|, the float64 final x) per example.
    """
    sched = world.schedule
    ts = np.asarray(ts, np.float64)
    z = jnp.asarray(x_init, jnp.float64)
    jacobians, local = [], []
    for t, t_next in zip(ts[:-1], ts[1:], strict=True):
        z_next, jac, x0_hat = _ddim_step_and_jacobian(world, z, t, t_next)
        a_next = float(sched.alpha(t_next))
        s, s_next = float(sched.noise_scale(t)), float(sched.noise_scale(t_next))
        sigma = float(sched.sigma(t))
        gain = abs(a_next * (1 - s_next / s))
        terms = (
            np.abs(np.asarray(z_next)).max(-1)
            + a_next * np.abs(np.asarray(x0_hat)).max(-1)
            + a_next * s_next / sigma * np.abs(np.asarray(z)).max(-1)
        )
        local.append(gain * _gmm_error_bound(world, z, t, eps) + ROUNDINGS * eps * terms)
        jacobians.append(np.asarray(jac))
        z = z_next
    batch, dim, steps = z.shape[0], z.shape[1], len(local)
    total = np.zeros(batch)
    for k in range(steps):
        prop = np.broadcast_to(np.eye(dim), (batch, dim, dim))
        for j in range(k + 1, steps):
            prop = jacobians[j] @ prop
        total += np.linalg.norm(prop, 2, axis=(1, 2)) * local[k]
    j_final = np.asarray(_denoise_jacobian(world, z, ts[-1]))
    bound0 = np.linalg.norm(j_final, 2, axis=(1, 2)) * total + _gmm_error_bound(
        world, z, ts[-1], eps
    )
    return total, bound0, z


def test_ddim_float32_matches_float64_within_propagated_rounding(key):
    """A K-step DDIM run in f32 vs f64 from the same f32 start, within
    `ddim_rounding_bound` at eps32 (the f64 run's own error is 2^29 times smaller)."""
    w32 = _world("rectified_flow", jnp.float32)
    w64 = _world("rectified_flow")
    ts32 = jnp.linspace(0.98, 0.02, 5, dtype=jnp.float32)
    ts64 = jnp.asarray(ts32, jnp.float64)
    x32 = jnp.asarray(jr.normal(key, (8, 2)), jnp.float32)
    out32 = rj.sample(samplers.DDIM(), w32, key, x32, ts32, record=None)
    out64 = rj.sample(samplers.DDIM(), w64, key, x32.astype(jnp.float64), ts64, record=None)
    assert out32.x0.dtype == jnp.float32
    bound_x, bound_x0, z_ref = ddim_rounding_bound(w64, x32, ts64, EPS32)
    np.testing.assert_allclose(out64.x, z_ref, rtol=1e-13)  # the reference trajectory
    err_x = np.max(np.abs(np.asarray(out32.x, np.float64) - np.asarray(out64.x)), axis=-1)
    assert np.all(err_x <= bound_x), (err_x, bound_x)
    err_x0 = np.max(np.abs(np.asarray(out32.x0, np.float64) - np.asarray(out64.x0)), axis=-1)
    assert np.all(err_x0 <= bound_x0), (err_x0, bound_x0)
