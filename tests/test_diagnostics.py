"""Diagnostics against independent mathematics: dense SVD, closed forms, MC standard errors."""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy import integrate, special, stats

from readout_jax import diagnostics, manifolds, sample, samplers, schedules
from readout_jax._pytree import pytree_dataclass, static_field
from readout_jax.samplers import base

Z4 = 4.0  # tolerance in Monte Carlo standard errors


def _normal(seed, shape):
    """Test data from numpy (eager jax.random calls would each compile a PRNG kernel)."""
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape))


def _two_mode_samples(seed, num, dim):
    """Samples of ½N(−e1, I) + ½N(e1, I), i.e. of `GaussianMixture.two_modes(2.0, dim)`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num, dim))
    x[:, 0] += rng.choice([-1.0, 1.0], size=num)
    return jnp.asarray(x)


# ---- Jacobian norms ------------------------------------------------------------------


def _mlp(params, x):
    """A pytree -> pytree map: x = {"a": (3,), "b": (2, 2)} -> ((4,), (5,))."""
    flat = jnp.concatenate([x["a"], x["b"].ravel()])
    h = jnp.tanh(params["w1"] @ flat + 0.3)
    return jnp.sin(params["w2"] @ h), params["w3"] @ h**2


def _clustered_matrix(m, n, seed=0):
    """U diag(s) Vᵀ with top singular values 1, 0.999, 0.998, 0.97, then a slow decay."""
    rng = np.random.default_rng(seed)
    r = min(m, n)
    u, _ = np.linalg.qr(rng.normal(size=(m, r)))
    v, _ = np.linalg.qr(rng.normal(size=(n, r)))
    s = np.concatenate([[1.0, 0.999, 0.998, 0.97], 0.96 * np.exp(-np.arange(r - 4) / 40.0)])
    return jnp.asarray(u * s @ v.T), s


@jax.jit
def _top_mlp(params, x, key):
    fn = lambda z: _mlp(params, z)  # noqa: E731
    top = diagnostics.top_singular(fn, x, key=key, num_iters=16)
    return top, (diagnostics.jacobian_dense(fn, x), diagnostics.jacobian_dense(fn, x, mode="rev"))


@jax.jit
def _top_linear(a, x, key):
    return diagnostics.top_singular(lambda z: a @ z, x, key=key, num_iters=48, tol=1e-10)


def test_spectral_norm_matches_dense_svd_on_pytree_map(key):
    rng = np.random.default_rng(0)
    params = {
        "w1": jnp.asarray(rng.normal(size=(6, 7))),
        "w2": jnp.asarray(rng.normal(size=(4, 6))),
        "w3": jnp.asarray(rng.normal(size=(5, 6))),
    }
    x = {"a": jnp.array([0.1, -0.4, 0.7]), "b": jnp.array([[0.2, 0.5], [-0.3, 0.9]])}
    out, (dense, dense_rev) = _top_mlp(params, x, key)
    dense = np.asarray(dense)  # (9, 7)
    assert dense.shape == (9, 7)
    np.testing.assert_allclose(dense, dense_rev, atol=1e-12)
    svals = np.linalg.svd(dense, compute_uv=False)
    assert abs(float(out.sigma) - svals[0]) <= 1e-4 * svals[0]
    # The returned vectors are a singular pair of the dense Jacobian.
    u = np.asarray(jax.flatten_util.ravel_pytree(out.u)[0])
    v = np.asarray(jax.flatten_util.ravel_pytree(out.v)[0])
    assert jax.tree_util.tree_structure(out.v) == jax.tree_util.tree_structure(x)
    np.testing.assert_allclose(np.linalg.norm(u), 1.0, atol=1e-10)
    np.testing.assert_allclose(dense @ v, out.sigma * u, atol=1e-6)
    np.testing.assert_allclose(dense.T @ u, out.sigma * v, atol=1e-6)


@pytest.mark.parametrize("shape", [(150, 200), (200, 150)], ids=["wide", "tall"])
def test_spectral_norm_with_clustered_top_singular_values(shape, key):
    a, s = _clustered_matrix(*shape)
    out = _top_linear(a, jnp.ones(shape[1]), key)
    # 48 < min(m, n) steps: not a complete bidiagonalisation, yet exact to 1e-4.
    assert int(out.num_iters) <= 48 < min(shape)
    assert abs(float(out.sigma) - s[0]) <= 1e-4 * s[0]
    # The a-posteriori residual is what it claims to be.
    resid = np.linalg.norm(a @ out.v - out.sigma * out.u)
    np.testing.assert_allclose(resid, out.residual, rtol=1e-3, atol=1e-12)
    np.testing.assert_allclose(a.T @ out.u, out.sigma * out.v, atol=1e-8)


def test_spectral_norm_exact_for_low_rank_and_zero_maps(key):
    @jax.jit
    def norms(x, key):
        # One output (rank 1): the bidiagonalisation is complete after one step.
        one = diagnostics.top_singular(lambda z: 2.0 * z[:1], x, key=key)
        return one, diagnostics.spectral_norm(lambda z: 0.0 * z, x, key=key)

    one, zero = norms(jnp.ones(5), key)
    np.testing.assert_allclose(one.sigma, 2.0, rtol=1e-12)
    assert int(one.num_iters) == 1
    np.testing.assert_allclose(jnp.abs(one.v), jnp.array([1.0, 0, 0, 0, 0]), atol=1e-12)
    assert float(zero) == 0.0


def test_hutchinson_within_four_standard_errors(key):
    a, s = _clustered_matrix(60, 40, seed=1)
    exact_sq = float(np.sum(s**2))
    est = jax.jit(
        lambda a, k: diagnostics.frobenius_norm_estimate(
            lambda x: a @ x, jnp.zeros(40), key=k, num_probes=2000, probe_batch_size=500
        )
    )(a, key)
    assert abs(float(est.norm_sq) - exact_sq) <= Z4 * float(est.std_error_sq)
    assert abs(float(est.norm) - math.sqrt(exact_sq)) <= Z4 * float(est.std_error)
    # The Rademacher variance is 2(|AᵀA|_F² − Σ_i (AᵀA)_ii²): the reported error agrees.
    gram = np.asarray(a.T @ a)
    exact_se = math.sqrt(2 * (np.sum(gram**2) - np.sum(np.diag(gram) ** 2)) / 2000)
    assert 0.8 < float(est.std_error_sq) / exact_se < 1.25

    @jax.jit
    def both(a, key):
        fn = lambda x: a @ x  # noqa: E731
        scalar = diagnostics.frobenius_norm(fn, jnp.zeros(40), key=key, num_probes=64)
        return scalar, diagnostics.frobenius_norm_estimate(
            fn, jnp.zeros(40), key=key, num_probes=64
        )

    scalar, est64 = both(a, key)
    np.testing.assert_allclose(scalar, est64.norm, rtol=1e-12)


def test_directional_norm_matches_finite_differences(key):
    w = _normal(1, (5, 4))
    fn = lambda x: {"y": jnp.tanh(w @ x) ** 2}  # noqa: E731
    x = jnp.array([0.3, -0.2, 0.5, 0.1])
    u = jnp.array([0.5, -0.5, 0.5, 0.5])
    h = 1e-5  # central differences: truncation ~h²|f'''| ~ 1e-10, rounding ~eps/h ~ 1e-11
    fd = np.linalg.norm((fn(x + h * u)["y"] - fn(x - h * u)["y"]) / (2 * h))
    np.testing.assert_allclose(diagnostics.directional_norm(fn, x, u), fd, rtol=1e-7)


def test_jacobian_functions_reject_bad_input(key):
    f = lambda x: 2.0 * x  # noqa: E731
    x = jnp.ones(3)
    with pytest.raises(ValueError, match="num_iters"):
        diagnostics.spectral_norm(f, x, key=key, num_iters=0)
    with pytest.raises(ValueError, match="tol"):
        diagnostics.spectral_norm(f, x, key=key, tol=-1.0)
    with pytest.raises(ValueError, match="num_probes"):
        diagnostics.frobenius_norm(f, x, key=key, num_probes=0)
    with pytest.raises(ValueError, match="x must hold floating"):
        diagnostics.spectral_norm(f, jnp.ones(3, jnp.int32), key=key)
    with pytest.raises(ValueError, match="u must have the same"):
        diagnostics.directional_norm(f, x, jnp.ones(4))
    with pytest.raises(ValueError, match="mode"):
        diagnostics.jacobian_dense(f, x, mode="central")


# ---- stiffness -------------------------------------------------------------------------


def _ddim_coefficient(sched, t, t_next, tau, eta):
    """∂z'/∂z of DDIM(η) on N(μ, τ²I) with the noise held fixed: α'(ατ² + s_down·σ)/v."""
    a, sig = float(sched.alpha(t)), float(sched.sigma(t))
    a1, sig1 = float(sched.alpha(t_next)), float(sched.sigma(t_next))
    s1 = sig1 / a1
    ratio = 0.0 if a == 0 else s1 / (sig / a)
    s_up = eta * s1 * math.sqrt(max(1.0 - ratio**2, 0.0))
    s_down = math.sqrt(max(s1**2 - s_up**2, 0.0)) if s_up > 0 else s1
    return a1 * (a * tau**2 + s_down * sig) / (a**2 * tau**2 + sig**2)


# One grid, batch and latent size for the stiffness tests, so compilations are shared.
_TS_KW = {"num_steps": 3, "t_max": 0.95}


@pytest.mark.parametrize("eta", [0.0, 1.0], ids=["ddim", "ddim_eta1"])
def test_ddim_step_map_on_single_gaussian_is_affine_with_closed_form(eta, key):
    tau, mean = 0.5, jnp.array([[1.0, -2.0]])
    if eta == 0.0:
        world = manifolds.GaussianMixture(mean, jnp.array([1.0]), tau)
        sampler = samplers.DDIM()
    else:
        # The same single Gaussian written as two identical components: its shapes
        # match the world of `test_step_norms_follow_the_harness_keys` (one compile).
        world = manifolds.GaussianMixture(jnp.concatenate([mean, mean]), jnp.full(2, 0.5), tau)
        sampler = samplers.DDIMEta(eta=eta)
    ts = schedules.time_grid(world.schedule, **_TS_KW)
    x_init = _normal(3, (3, 2))
    norms = diagnostics.step_jacobian_norms(sampler, world, key, x_init, ts)
    assert norms.shape == (3, 3)
    coef = [abs(_ddim_coefficient(world.schedule, ts[k], ts[k + 1], tau, eta)) for k in range(3)]
    np.testing.assert_allclose(norms, np.broadcast_to(coef, (3, 3)), rtol=1e-10)
    if eta == 1.0:
        # Whole map z_init -> x̂0(z_K, t_K), noise fixed: the steps times the denoiser.
        a_k, s_k = float(world.schedule.alpha(ts[-1])), float(world.schedule.sigma(ts[-1]))
        final = a_k * tau**2 / (a_k**2 * tau**2 + s_k**2)
        whole = diagnostics.whole_map_norm(sampler, world, key, x_init, ts)
        np.testing.assert_allclose(whole, np.full(3, np.prod(coef) * final), rtol=1e-10)


def test_step_norms_follow_the_harness_keys(key):
    """Reimplement the chain (fold_in per example, split per step) with dense Jacobians."""
    world = manifolds.GaussianMixture.two_modes(2.0, dim=2, std=0.6)
    ts = schedules.time_grid(world.schedule, **_TS_KW)
    x_init = _normal(5, (3, 2))
    sampler = samplers.DDIMEta(eta=0.7)

    @jax.jit
    def reference(x_init, key):  # dense step Jacobians along the reimplemented chain
        def one(i, x):
            step_keys = jr.split(jr.fold_in(key, i), 3)
            state = sampler.init(x, ts[0])
            jacs = []
            for k in range(3):

                def step_map(z, state=state, k=k):
                    new, _ = sampler.step(step_keys[k], state._replace(x=z), world, ts[k + 1])
                    return new.x, new

                jac, state = jax.jacfwd(step_map, has_aux=True)(state.x)
                jacs.append(jac)
            final = jax.jacfwd(lambda z: world.denoise(z, ts[-1]))(state.x)
            return jnp.stack(jacs), final, state.x

        return jax.vmap(one)(jnp.arange(3, dtype=jnp.uint32), x_init)

    jacs, final_jac, ref_final = (np.asarray(a) for a in reference(x_init, key))
    # The reference really is the harness's trajectory.
    np.testing.assert_allclose(ref_final, sample(sampler, world, key, x_init, ts).x, rtol=1e-12)
    norms = diagnostics.step_jacobian_norms(sampler, world, key, x_init, ts)
    np.testing.assert_allclose(norms, np.linalg.norm(jacs, 2, axis=(-2, -1)), rtol=1e-8)
    whole = diagnostics.whole_map_norm(sampler, world, key, x_init, ts)
    total = final_jac @ jacs[:, 2] @ jacs[:, 1] @ jacs[:, 0]
    np.testing.assert_allclose(whole, np.linalg.norm(total, 2, axis=(-2, -1)), rtol=1e-8)


def test_stiffness_summary_matches_numpy():
    norms = np.random.default_rng(0).lognormal(size=(101, 5))
    out = diagnostics.stiffness_summary(jnp.asarray(norms.T), sample_axis=1, step_axis=0)
    np.testing.assert_allclose(out.median, np.median(norms, axis=0), rtol=1e-12)
    np.testing.assert_allclose(out.quantile, np.quantile(norms, 0.99, axis=0), rtol=1e-12)
    assert float(out.peak_median) == np.max(np.median(norms, axis=0))
    assert int(out.peak_step_quantile) == int(np.argmax(np.quantile(norms, 0.99, axis=0)))
    with pytest.raises(ValueError, match="norms must be 2-D"):
        diagnostics.stiffness_summary(jnp.ones(3))
    with pytest.raises(ValueError, match="q must be"):
        diagnostics.stiffness_summary(jnp.ones((3, 2)), q=1.5)


def test_stiffness_rejects_bad_input(key):
    world = manifolds.GaussianMixture.two_modes(2.0, dim=2)
    ts = schedules.time_grid(world.schedule, 2)
    with pytest.raises(ValueError, match="num_iters"):
        diagnostics.step_jacobian_norms(
            samplers.DDIM(), world, key, jnp.ones((2, 2)), ts, num_iters=0
        )
    with pytest.raises(ValueError, match="x_init"):
        diagnostics.step_jacobian_norms(samplers.DDIM(), world, key, jnp.ones((2, 3)), ts)
    with pytest.raises(ValueError, match="output"):
        diagnostics.whole_map_norm(samplers.DDIM(), world, key, jnp.ones((2, 2)), ts, output="z")


# ---- boundary geometry ---------------------------------------------------------------


def test_distance_to_hyperplane_is_exact(key):
    w = _normal(6, (2, 5))
    b = jnp.array([0.3, -0.1])
    a, c = np.asarray(w[1] - w[0]), float(b[1] - b[0])
    xs = _normal(7, (6, 5))
    geo = jax.jit(jax.vmap(lambda x: diagnostics.boundary_geometry(lambda z: w @ z + b, x)))(xs)
    exact = np.abs(np.asarray(xs) @ a + c) / np.linalg.norm(a)
    np.testing.assert_allclose(geo.distance, exact, rtol=1e-12)
    # The refined walk finds the same crossing, to the bisection bracket (≤ d·2^-30).
    assert np.all(geo.refined_distance >= exact * (1 - 1e-12))
    assert np.all(geo.refined_distance <= exact * (1 + 2.0**-29))
    side = np.sign(np.asarray(xs) @ a + c)
    np.testing.assert_allclose(geo.normal, side[:, None] * a / np.linalg.norm(a), atol=1e-12)


def test_refined_distance_to_a_sphere(key):
    radius, beta = 1.5, 3.0
    logits_fn = lambda x: jnp.stack([jnp.zeros(()), beta * (radius**2 - x @ x)])  # noqa: E731
    dirs = _normal(8, (6, 3))
    dirs = dirs / jnp.linalg.norm(dirs, axis=1, keepdims=True)
    r = jnp.array([0.4, 0.9, 1.3, 1.7, 2.5, 4.0])
    xs = r[:, None] * dirs
    geo = jax.jit(jax.vmap(lambda x: diagnostics.boundary_geometry(logits_fn, x)))(xs)
    r = np.asarray(r)
    # First order: m/|∇m| = |R² − r²|/(2r), not the distance; the walk finds |r − R|.
    np.testing.assert_allclose(geo.distance, np.abs(radius**2 - r**2) / (2 * r), rtol=1e-12)
    exact = np.abs(r - radius)
    bracket = np.maximum(np.asarray(geo.distance), 2 * exact) * 2.0**-30
    assert np.all(np.abs(np.asarray(geo.refined_distance) - exact) <= bracket + 1e-14)


def test_per_position_distances_of_a_sequence_latent(key):
    """Logits (L, V) whose position i reads x_i and x_(i-1): boundaries are hyperplanes."""
    length, dim = 4, 3
    w = _normal(9, (2, dim))
    mix = 0.5

    def logits_fn(x):  # (L, d) -> (L, 2)
        prev = jnp.concatenate([jnp.zeros((1, dim)), x[:-1]])
        return (x + mix * prev) @ w.T

    x = _normal(10, (length, dim))
    geo = jax.jit(lambda x: diagnostics.boundary_geometry(logits_fn, x))(x)
    assert geo.normal.shape == (length, length, dim) and geo.distance.shape == (length,)
    dw = np.asarray(w[1] - w[0])
    for i in range(length):
        a = np.zeros((length, dim))
        a[i] = dw
        if i > 0:
            a[i - 1] = mix * dw
        value = float(np.sum(a * np.asarray(x)))
        exact = abs(value) / np.linalg.norm(a)
        np.testing.assert_allclose(geo.distance[i], exact, rtol=1e-12)
        np.testing.assert_allclose(geo.refined_distance[i], exact, rtol=1e-8)


def test_boundary_geometry_rejects_smooth_and_bad_readouts():
    smooth = manifolds.GaussianMixture.two_modes(2.0, dim=2, readout_kind="smooth")
    with pytest.raises(ValueError, match="categorical"):
        diagnostics.boundary_geometry(smooth, jnp.ones(2))
    with pytest.raises(ValueError, match="readout must be"):
        diagnostics.boundary_geometry(3, jnp.ones(2))
    with pytest.raises(ValueError, match="num_bisect"):
        diagnostics.boundary_geometry(lambda x: x, jnp.ones(2), num_bisect=-1)


# ---- flips and tube mass ---------------------------------------------------------------


def test_flip_rate_follows_the_tube_law_and_vanishes_for_a_smooth_readout(key):
    """Two unit Gaussians at ±1: flip rate ≈ q0·s·sqrt(2/π), q0 = N(0; 1, 1).

    By symmetry the density slope and the Tweedie drift vanish at the boundary, so the
    correction to the law is O(s²) relative: 1e-4 at s = 0.01, far below the MC error.
    """
    world = manifolds.GaussianMixture.two_modes(2.0, dim=2, std=1.0)
    x0 = _two_mode_samples(11, 200_000, 2)
    s = 0.01
    sharp = diagnostics.flip_rate(world, key, x0, s)
    law = stats.norm.pdf(1.0) * s * math.sqrt(2 / math.pi)
    assert abs(float(sharp.rate) - law) <= Z4 * math.sqrt(law * (1 - law) / x0.shape[0])
    assert abs(float(sharp.rate) - law) <= Z4 * float(sharp.std_error)

    # Smooth readout (identity): a flip is an output change > atol; at s ≪ atol it
    # vanishes faster than linearly: halving s more than halves the rate.
    smooth = manifolds.GaussianMixture.two_modes(2.0, dim=2, std=1.0, readout_kind="smooth")
    rates = [diagnostics.flip_rate(smooth, key, x0, s, atol=0.05) for s in (0.04, 0.02, 0.01)]
    for big, little in zip(rates, rates[1:], strict=False):
        margin = Z4 * (float(little.std_error) + 0.5 * float(big.std_error))
        assert float(little.rate) + margin < 0.5 * float(big.rate)
    assert float(rates[-1].rate) + Z4 * float(sharp.std_error) < float(sharp.rate)


def test_tube_mass_matches_the_exact_probability(key):
    world = manifolds.GaussianMixture.two_modes(2.0, dim=2, std=1.0)
    x0 = _two_mode_samples(12, 20_000, 2)
    dist = jax.jit(jax.vmap(lambda x: diagnostics.boundary_distance(world, x, refine=False)))(x0)
    np.testing.assert_allclose(dist, np.abs(x0[:, 0]), rtol=1e-10)  # boundary x_1 = 0
    s, c = 0.05, 2.0
    est = diagnostics.tube_mass(dist, s, c=c)
    w = c * s
    exact = stats.norm.cdf(w - 1) - stats.norm.cdf(-w - 1)  # P(|x1| ≤ w), same for ±1
    assert abs(float(est.rate) - exact) <= Z4 * math.sqrt(exact * (1 - exact) / x0.shape[0])
    with pytest.raises(ValueError, match="noise_scale"):
        diagnostics.tube_mass(dist, -1.0)


def test_flip_rate_rejects_bad_input(key):
    world = manifolds.GaussianMixture.two_modes(2.0, dim=2)
    smooth = manifolds.GaussianMixture.two_modes(2.0, dim=2, readout_kind="smooth")
    with pytest.raises(ValueError, match="noise_scale"):
        diagnostics.flip_rate(world, key, jnp.ones((4, 2)), 0.0)
    with pytest.raises(ValueError, match="x0 must have shape"):
        diagnostics.flip_rate(world, key, jnp.ones((4, 3)), 0.1)
    with pytest.raises(ValueError, match="atol is required"):
        diagnostics.flip_rate(smooth, key, jnp.ones((4, 2)), 0.1)
    with pytest.raises(ValueError, match="atol is only"):
        diagnostics.flip_rate(world, key, jnp.ones((4, 2)), 0.1, atol=0.1)


# ---- DABI ------------------------------------------------------------------------------


def test_dabi_of_an_isotropic_linear_smooth_readout_is_one(key):
    x = _normal(13, (5, 6))
    out = diagnostics.dabi_variants(
        lambda z: 3.0 * z,
        x,
        key=key,
        readout_kind="smooth",
        delta=0.4,
        delta_grid=jnp.array([0.01, 1.0]),
    )
    assert set(out) == {"euclidean", "linearized", "euclidean_grid"}
    for name, result in out.items():
        np.testing.assert_allclose(result.index, 1.0, rtol=1e-10, err_msg=name)
        np.testing.assert_allclose(result.summary.median, 1.0, rtol=1e-10, err_msg=name)
    assert out["euclidean_grid"].index.shape == (5, 2)


def _sphere_projection_mean(fn, n):
    """E fn(t) for t = u_1, u uniform on S^(n-1): density ∝ (1 − t²)^((n−3)/2)."""
    norm = special.beta(0.5, (n - 1) / 2)
    val, _ = integrate.quad(lambda t: fn(t) * (1 - t * t) ** ((n - 3) / 2), -1, 1, limit=200)
    return val / norm


def test_dabi_of_a_linear_softmax_readout_matches_its_analytic_value(key):
    """Two classes, ℓ = (0, w·x + b): δ = 2d maps a = w·x + b to −a exactly."""
    n = 8
    w = _normal(14, (n,))
    b = 0.2
    logits_fn = lambda x: jnp.stack([jnp.zeros(()), w @ x + b])  # noqa: E731
    xs = 0.4 * _normal(15, (6, n))
    out = diagnostics.dabi_variants(logits_fn, xs, key=key, num_directions=4096)
    sig = special.expit
    for i, a in enumerate(np.asarray(xs @ w + b)):
        tv = out["tv"]
        np.testing.assert_allclose(tv.numerator[i], abs(np.tanh(a / 2)), rtol=1e-10)
        np.testing.assert_allclose(tv.delta[i], 2 * abs(a) / np.linalg.norm(w), rtol=1e-10)
        den = _sphere_projection_mean(lambda t, a=a: abs(sig(a) - sig(a + 2 * abs(a) * t)), n)
        assert abs(float(tv.denominator[i]) - den) <= Z4 * float(tv.denominator_std_error[i])
        assert float(out["flip"].numerator[i]) == 1.0  # just across the boundary
        # Linearised: J_p = σ'(a)·(−1, 1)ᵀ wᵀ, so |J n̂| = σ'·sqrt2·|w|, E|J u|² = that²/n.
        lin = out["linearized"]
        gain = sig(a) * (1 - sig(a)) * math.sqrt(2) * np.linalg.norm(w)
        np.testing.assert_allclose(lin.numerator[i], gain, rtol=1e-10)
        assert abs(float(lin.denominator[i]) - gain / math.sqrt(n)) <= Z4 * float(
            lin.denominator_std_error[i]
        )


def test_dabi_per_position_on_a_sequence_latent(key):
    """A parallel two-class linear decoder on (L, d) latents: per-position closed forms."""
    length, dim = 4, 3
    w = _normal(18, (2, dim))
    xs = _normal(19, (4, length, dim))  # 2 chunks of 2: no remainder
    out = diagnostics.dabi_variants(
        lambda x: x @ w.T, xs, key=key, delta_grid=jnp.array([0.1, 1.0]), chunk_size=2
    )
    a = np.asarray(xs @ (w[1] - w[0]))  # (4, L) logit gaps
    np.testing.assert_allclose(out["tv"].numerator, np.abs(np.tanh(a / 2)), rtol=1e-10)
    np.testing.assert_allclose(out["tv"].delta, 2 * np.abs(a) / np.linalg.norm(w[1] - w[0]))
    np.testing.assert_allclose(out["flip"].numerator, 1.0)
    assert out["tv_grid"].index.shape == (4, 2, length)
    assert out["tv_grid"].summary.median.shape == (2,)
    # One latent alone gives the same numbers (the directions are shared by all latents).
    point = jax.jit(lambda x, k: diagnostics.dabi_point(lambda z: z @ w.T, x, key=k))(xs[0], key)
    np.testing.assert_allclose(point.index, out["tv"].index[0], rtol=1e-12)


def test_dabi_grows_with_sharpness_and_dimension(key):
    """Two unit Gaussians at ±1 in R^n, Bayes logits with sharpness β (a GMM readout)."""

    def median_dabi(dim, beta):
        world = manifolds.GaussianMixture.two_modes(2.0, dim=dim, std=1.0, sharpness=beta)
        x0 = _two_mode_samples(16, 64, dim)
        return float(diagnostics.dabi(world, x0, key=key).summary.median)

    by_beta = [median_dabi(8, beta) for beta in (0.5, 2.0, 8.0)]  # β is data: one compile
    assert by_beta[0] < by_beta[1] < by_beta[2]
    by_dim = [median_dabi(2, 2.0), by_beta[1], median_dabi(32, 2.0)]
    assert by_dim[0] < by_dim[1] < by_dim[2]


def test_dabi_rejects_bad_input(key):
    world = manifolds.GaussianMixture.two_modes(2.0, dim=2)
    smooth = manifolds.GaussianMixture.two_modes(2.0, dim=2, readout_kind="smooth")
    x = jnp.ones((3, 2))
    with pytest.raises(ValueError, match="measure 'euclidean'"):
        diagnostics.dabi(world, x, key=key, measure="euclidean")
    with pytest.raises(ValueError, match="delta is required"):
        diagnostics.dabi(smooth, x, key=key, measure="euclidean")
    with pytest.raises(ValueError, match="num_directions"):
        diagnostics.dabi(world, x, key=key, num_directions=8)
    with pytest.raises(ValueError, match="delta must be finite"):
        diagnostics.dabi(world, x, key=key, delta=-1.0)
    with pytest.raises(ValueError, match="readout_kind"):
        diagnostics.dabi(world, x, key=key, readout_kind="smooth")


# ---- CCI ---------------------------------------------------------------------------------


@pytree_dataclass
class _SignWorld:
    """Latent (3, 2); each position reads token 0 if x[i, 0] > 0 else 1; denoise = identity."""

    scale: jax.Array = 1.0  # a data leaf: `world.logits` is a method of a real pytree
    schedule: schedules.AbstractSchedule = static_field(default=schedules.RectifiedFlow())
    latent_shape: tuple = static_field(default=(3, 2))

    def denoise(self, z, t):
        del t
        return z

    def logits(self, x):
        return self.scale * jnp.stack([x[..., 0], -x[..., 0]], axis=-1)

    def decode(self, x):
        return self.logits(x)

    def readout(self, x):
        return jnp.argmax(self.logits(x), axis=-1)


_TARGET = jnp.array([[1.0, 0.0], [2.0, 1.0], [0.5, -1.0]])  # reads as tokens (0, 0, 0)


@pytree_dataclass
class _CommitFirst:
    """Jumps to the target at its first step; its estimates read as the final tokens."""

    def init(self, x, t):
        return base.SamplerState(x, t)

    def step(self, key, state, model, t_next):
        del key, model
        info = base.StepInfo(_TARGET, jnp.ones((), jnp.int32), jnp.zeros((), jnp.int32))
        return base.SamplerState(_TARGET, t_next), info


@pytree_dataclass
class _CommitLast:
    """Estimates read as the opposite tokens until the last of `num_steps` steps."""

    num_steps: int = static_field()

    def init(self, x, t):
        return base.SamplerState(x, t, jnp.zeros((), jnp.int32))

    def step(self, key, state, model, t_next):
        del key, model
        last = state.extra == self.num_steps - 1
        x0_hat = jnp.where(last, _TARGET, -_TARGET)
        info = base.StepInfo(x0_hat, jnp.ones((), jnp.int32), jnp.zeros((), jnp.int32))
        return base.SamplerState(x0_hat, t_next, state.extra + 1), info


@pytest.mark.parametrize("sampler_cls", [_CommitFirst, _CommitLast], ids=["first", "last"])
def test_cci_of_samplers_that_commit_first_and_last(sampler_cls, key):
    num_steps = 5
    world = _SignWorld()
    sampler = _CommitFirst() if sampler_cls is _CommitFirst else _CommitLast(num_steps)
    ts = schedules.time_grid(world.schedule, num_steps)
    out = sample(sampler, world, key, _normal(17, (4, 3, 2)), ts)
    res = diagnostics.cci(world, out.info.x0_hat, out.x0)
    expected = 1.0 if sampler_cls is _CommitFirst else 1.0 / num_steps
    np.testing.assert_allclose(res.index, np.full(4, expected), rtol=1e-12)
    np.testing.assert_allclose(res.mean_index, expected, rtol=1e-12)
    curve = np.ones(num_steps) if expected == 1.0 else np.eye(num_steps)[-1]
    np.testing.assert_allclose(res.mean_curve, curve, atol=0)
    # The same through a bound logits method and through a plain callable.
    res2 = diagnostics.cci(world.logits, out.info.x0_hat, out.x0)
    np.testing.assert_allclose(res2.curve, res.curve)
    res3 = diagnostics.cci(lambda x: world.logits(x), out.info.x0_hat, out.x0)
    np.testing.assert_allclose(res3.curve, res.curve)


def test_cci_rejects_smooth_worlds_and_bad_shapes():
    smooth = manifolds.GaussianMixture.two_modes(2.0, dim=2, readout_kind="smooth")
    with pytest.raises(ValueError, match="categorical"):
        diagnostics.cci(smooth, jnp.ones((2, 3, 2)), jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="x0_hat must have shape"):
        diagnostics.cci(_SignWorld(), jnp.ones((2, 3)), jnp.ones((2,)))
    with pytest.raises(ValueError, match="final_tokens"):
        diagnostics.commitment_curve(jnp.ones((2, 3, 4), int), jnp.ones((2, 5), int))


def test_ar_intervention_hook(key):
    length = 7

    def committed(z, k):
        del k
        return jnp.full((length,), 1.0) + 0.0 * z.sum()

    def soft(z, k):
        del k
        return jnp.full((length,), 2.0) + 0.0 * z.sum()

    def noisy(z, k):  # both variants get the same key: common random numbers
        return jr.uniform(k, (length,)) + 0.0 * z.sum()

    @jax.jit
    def run(z, key):
        return (
            diagnostics.ar_intervention(committed, soft, z, key=key),
            diagnostics.ar_intervention(noisy, noisy, z, key=key),
        )

    out, same = run(jnp.ones((5, 3)), key)
    np.testing.assert_allclose(out.perplexity_committed, math.e, rtol=1e-12)
    np.testing.assert_allclose(out.perplexity_soft, math.e**2, rtol=1e-12)
    np.testing.assert_allclose(out.log_ratio, 1.0, rtol=1e-12)
    assert float(same.log_ratio) == 0.0 and float(same.std_error_log_ratio) == 0.0
    assert float(jnp.std(same.nll_committed)) > 0  # the key does vary across latents
    with pytest.raises(ValueError, match="z must have shape"):
        diagnostics.ar_intervention(noisy, noisy, jnp.ones(5), key=key)


def test_public_names_are_exported():
    for name in ("spectral_norm", "frobenius_norm", "step_jacobian_norms", "dabi", "cci"):
        assert name in diagnostics.__all__
    assert all(hasattr(diagnostics, name) for name in diagnostics.__all__)
