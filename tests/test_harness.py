"""The harness: jit ≡ no-jit, vmap ≡ loop, batch-size invariance, one trace, bad input."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import readout_jax as rj
from readout_jax import harness, samplers
from readout_jax._pytree import pytree_dataclass
from readout_jax.manifolds import GaussianMixture


def _world(scale=1.0):
    means = scale * jnp.array([[-1.5, 0.0], [1.5, 0.5], [0.0, 2.0]])
    return GaussianMixture(means, jnp.array([0.3, 0.3, 0.4]), 0.6)


def _inputs(world, key, batch=6, num_steps=4):
    ts = rj.time_grid(world.schedule, num_steps)
    return rj.prior_sample(jr.fold_in(key, 1), world, batch, float(ts[0])), ts


@pytest.mark.parametrize(
    "sampler",
    [
        samplers.DDIMEta(eta=0.8),
        # ~10 s each under disable_jit; the default suite keeps one stochastic sampler.
        pytest.param(samplers.DPMpp2M(), marks=pytest.mark.slow),
        pytest.param(samplers.Churn(gamma=0.3), marks=pytest.mark.slow),
    ],
    ids=lambda s: type(s).__name__,
)
def test_jit_equals_no_jit_and_vmap_equals_loop(sampler, key):
    world = _world()
    x_init, ts = _inputs(world, key)
    out = rj.sample(sampler, world, key, x_init, ts)
    with jax.disable_jit():
        slow = rj.sample(sampler, world, key, x_init, ts)
    np.testing.assert_allclose(out.x, slow.x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.x0, slow.x0, rtol=1e-12, atol=1e-12)
    # A Python loop over examples, each with its documented key fold_in(key, i).
    for i in range(x_init.shape[0]):
        x, x0, rec = harness._one_chain(
            sampler, world, harness.record_info, ts, jr.fold_in(key, i), x_init[i]
        )
        np.testing.assert_allclose(out.x[i], x, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out.info.x0_hat[i], rec.x0_hat, rtol=1e-12, atol=1e-12)


def test_batch_size_invariance(key):
    world = _world()
    x_init, ts = _inputs(world, key, batch=9)
    big = rj.sample(samplers.DDIMEta(eta=1.0), world, key, x_init, ts)
    small = rj.sample(samplers.DDIMEta(eta=1.0), world, key, x_init[:4], ts)
    np.testing.assert_array_equal(big.x[:4], small.x)


def test_terminal_output_is_posterior_mean_at_last_time(key):
    world = _world()
    x_init, ts = _inputs(world, key)
    out = rj.sample(samplers.DDIM(), world, key, x_init, ts)
    expected = jax.vmap(world.denoise, in_axes=(0, None))(out.x, ts[-1])
    np.testing.assert_allclose(out.x0, expected, rtol=1e-12)


_TRACES = []


@pytree_dataclass
class _CountingWorld:
    """A user-defined world that counts how often its denoiser is traced."""

    inner: GaussianMixture

    @property
    def schedule(self):
        return self.inner.schedule

    @property
    def latent_shape(self):
        return self.inner.latent_shape

    def denoise(self, z, t):
        _TRACES.append(1)
        return self.inner.denoise(z, t)


def test_harness_traces_once_across_parameter_sets(key):
    _TRACES.clear()
    x_init, ts = _inputs(_world(), key, num_steps=3)
    rj.sample(samplers.DDIM(), _CountingWorld(_world(1.0)), key, x_init, ts)
    first = len(_TRACES)
    assert first > 0
    # New parameters of the same shapes and a fresh sampler object: no new trace.
    rj.sample(samplers.DDIM(), _CountingWorld(_world(2.0)), key, x_init, ts)
    rj.sample(samplers.DDIM(), _CountingWorld(_world(3.0)), jr.key(5), x_init + 1.0, ts)
    assert len(_TRACES) == first


def test_record_options(key):
    world = _world()
    x_init, ts = _inputs(world, key)
    full = rj.sample(samplers.DDIM(), world, key, x_init, ts)
    only = rj.sample(samplers.DDIM(), world, key, x_init, ts, record=rj.record_x0_hat)
    none = rj.sample(samplers.DDIM(), world, key, x_init, ts, record=None)
    np.testing.assert_array_equal(only.info, full.info.x0_hat)
    assert none.info == ()
    np.testing.assert_array_equal(none.x, full.x)
    assert full.info.nfe.shape == (6, 4) and int(full.info.nfe.sum()) == 24


def test_raw_uint32_key_is_accepted(key):
    world = _world()
    x_init, ts = _inputs(world, key)
    typed = rj.sample(samplers.DDIMEta(), world, jr.key(3), x_init, ts)
    raw = rj.sample(samplers.DDIMEta(), world, jr.PRNGKey(3), x_init, ts)
    np.testing.assert_array_equal(typed.x, raw.x)


def test_bad_input(key):
    world = _world()
    x_init, ts = _inputs(world, key)
    ddim = samplers.DDIM()
    with pytest.raises(ValueError, match="num_steps"):
        rj.sample(ddim, world, key, x_init, ts[:1])
    with pytest.raises(ValueError, match="strictly decreasing"):
        rj.sample(ddim, world, key, x_init, ts[::-1])
    with pytest.raises(ValueError, match="strictly decreasing"):
        rj.sample(ddim, world, key, x_init, jnp.array([1.0, 0.5, 0.5, 0.1]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rj.sample(ddim, world, key, x_init, jnp.array([1.5, 0.5, 0.1]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rj.sample(ddim, world, key, x_init, jnp.array([0.5, -0.1]))
    with pytest.raises(ValueError, match="latent_shape"):
        rj.sample(ddim, world, key, jnp.zeros((4, 3)), ts)
    with pytest.raises(ValueError, match="latent_shape"):
        rj.sample(ddim, world, key, jnp.zeros((2,)), ts)
    with pytest.raises(ValueError, match="empty batch"):
        rj.sample(ddim, world, key, jnp.zeros((0, 2)), ts)
    with pytest.raises(ValueError, match="NaN or inf"):
        rj.sample(ddim, world, key, x_init.at[0, 0].set(jnp.nan), ts)
    with pytest.raises(ValueError, match="NaN or inf"):
        rj.sample(ddim, world, key, x_init.at[1, 1].set(jnp.inf), ts)
    with pytest.raises(ValueError, match="floating"):
        rj.sample(ddim, world, key, jnp.zeros((4, 2), jnp.int32), ts)
    with pytest.raises(TypeError, match="init"):
        rj.sample(object(), world, key, x_init, ts)
    with pytest.raises(ValueError, match="key"):
        rj.sample(ddim, world, 3, x_init, ts)


def test_float32_path(key):
    world = GaussianMixture(
        jnp.array([[-1.0, 0.0], [1.0, 0.0]], jnp.float32), jnp.array([0.5, 0.5], jnp.float32), 0.5
    )
    ts = rj.time_grid(world.schedule, 4)
    x_init = rj.prior_sample(key, world, 5, dtype=jnp.float32)
    out = rj.sample(samplers.HeunODE(), world, key, x_init, ts)
    assert out.x.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out.x0)))
    ref = rj.sample(
        samplers.HeunODE(),
        GaussianMixture(world.means.astype(jnp.float64), world.weights.astype(jnp.float64), 0.5),
        key,
        x_init.astype(jnp.float64),
        ts,
    )
    np.testing.assert_allclose(out.x0, ref.x0, rtol=1e-4, atol=1e-4)
