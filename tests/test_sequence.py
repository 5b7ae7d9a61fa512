"""Token-sequence world against enumeration over all V^L sequences, Tweedie and Monte Carlo."""

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import readout_jax
from readout_jax import schedules
from readout_jax.manifolds import TokenSequence
from readout_jax.manifolds.sequence import OTHER_SYMBOL, normalize_text


def _small_world(
    seed=0, num=3, length=3, dim=2, std=0.4, zero_transition=False, emb=None, **kwargs
):
    """A random chain whose initial law is NOT stationary (so no shortcut is exercised)."""
    rng = np.random.default_rng(seed)
    initial = rng.dirichlet(np.ones(num))
    trans = rng.dirichlet(np.ones(num), size=num)
    if zero_transition:  # an impossible transition: log_transition = -inf there
        trans[0, 1] = 0.0
        trans[0] /= trans[0].sum()
    emb = 1.5 * rng.normal(size=(num, dim)) if emb is None else np.asarray(emb)
    with np.errstate(divide="ignore"):
        log_initial, log_transition = np.log(initial), np.log(trans)
    return TokenSequence(
        jnp.asarray(emb),
        jnp.asarray(log_initial),
        jnp.asarray(log_transition),
        std,
        length,
        **kwargs,
    )


def _all_sequences(world):
    """(V^L, L) token sequences and their exact log-probabilities, by a direct product."""
    li, lt = np.asarray(world.log_initial), np.asarray(world.log_transition)
    seqs = np.array(list(itertools.product(range(world.vocab_size), repeat=world.length)))
    logp = np.array([li[s[0]] + sum(lt[s[i], s[i + 1]] for i in range(len(s) - 1)) for s in seqs])
    return seqs, logp


def _brute_force_posterior(world, z, t, emission_var=None):
    """Posterior mean and marginals by enumerating every sequence (numpy, float64)."""
    z = np.asarray(z)
    a, s = float(world.schedule.alpha(t)), float(world.schedule.sigma(t))
    tau = float(world.std)
    v = a**2 * tau**2 + s**2
    ev = v if emission_var is None else emission_var(v)
    emb = np.asarray(world.embeddings)
    seqs, logp = _all_sequences(world)
    means = emb[seqs]  # (S, L, d)
    loglik = -np.sum((z[None] - a * means) ** 2, axis=(1, 2)) / (2 * ev)
    logw = logp + loglik
    w = np.exp(logw - logw.max())
    w /= w.sum()
    per_seq = means + (a * tau**2 / v) * (z[None] - a * means)
    mean = np.einsum("s,sld->ld", w, per_seq)
    marg = np.zeros((world.length, world.vocab_size))
    for i in range(world.length):
        np.add.at(marg[i], seqs[:, i], w)
    return mean, marg


@jax.jit
def _enumerated_log_density_and_score(z, embeddings, seqs, logp, a, v):
    """log p_t(z) = log Σ_y p(y) Π_i N(z_i; α E_{y_i}, v I) by enumeration, and its gradient."""

    def log_density(z):
        means = embeddings[seqs]
        num_pos, dim = z.shape
        loglik = -jnp.sum((z[None] - a * means) ** 2, axis=(1, 2)) / (2 * v)
        loglik = loglik - 0.5 * num_pos * dim * jnp.log(2 * math.pi * v)
        return jax.nn.logsumexp(logp + loglik)

    return jax.value_and_grad(log_density)(z)


def _noised_log_density_and_score(world, z, t):
    a = jnp.asarray(world.schedule.alpha(t), jnp.float64)
    s = jnp.asarray(world.schedule.sigma(t), jnp.float64)
    v = a**2 * world.std**2 + s**2
    seqs, logp = _all_sequences(world)
    return _enumerated_log_density_and_score(z, world.embeddings, seqs, jnp.asarray(logp), a, v)


def _enumerated_mean(z, embeddings, seqs, logp, std, a, v):
    """Differentiable enumeration of E[x0 | z] (jnp), for Jacobian references."""
    means = embeddings[seqs]
    logw = logp - jnp.sum((z[None] - a * means) ** 2, axis=(1, 2)) / (2 * v)
    w = jax.nn.softmax(logw)
    per_seq = means + (a * std**2 / v) * (z[None] - a * means)
    return jnp.einsum("s,sld->ld", w, per_seq)


_enumerated_jacobian_jit = jax.jit(jax.jacfwd(_enumerated_mean))


def _enumerated_jacobian(world, z, t):
    """(L·d, L·d) Jacobian of the enumerated posterior mean, by forward-mode autodiff."""
    a, s = world.schedule.alpha(t), world.schedule.sigma(t)
    v = a**2 * world.std**2 + s**2
    seqs, logp = _all_sequences(world)
    jac = _enumerated_jacobian_jit(z, world.embeddings, seqs, jnp.asarray(logp), world.std, a, v)
    return np.asarray(jac).reshape(z.size, z.size)


def _normal(seed, shape):
    """Test inputs from numpy (no XLA compilation per shape, unlike jax.random)."""
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape))


# ---- exact denoiser --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(schedules.SCHEDULES))
@pytest.mark.parametrize("length", [3, 4])
def test_forward_backward_equals_enumeration(name, length):
    world = _small_world(seed=length, length=length, schedule=name)
    for i, t in enumerate((0.02, 0.3, 0.7, 0.97)):
        z = 1.2 * _normal(i, world.latent_shape)
        mean, marg = _brute_force_posterior(world, z, t)
        np.testing.assert_allclose(world.denoise(z, t), mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(world.posterior_marginals(z, t), marg, atol=1e-10)


def test_forward_backward_handles_impossible_transitions():
    world = _small_world(seed=7, length=3, zero_transition=True)
    assert np.isneginf(np.asarray(world.log_transition)[0, 1])
    for i, t in enumerate((0.1, 0.5)):
        z = _normal(i, world.latent_shape)
        mean, marg = _brute_force_posterior(world, z, t)
        np.testing.assert_allclose(world.denoise(z, t), mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(world.posterior_marginals(z, t), marg, atol=1e-10)


@pytest.mark.parametrize("name", ["vp_cosine", "ve", "rectified_flow"])
def test_denoiser_equals_tweedie_by_autodiff(name):
    world = _small_world(seed=3, length=3, schedule=name)
    for i, t in enumerate((0.1, 0.4, 0.8)):
        z = _normal(i, world.latent_shape)
        log_density, score = _noised_log_density_and_score(world, z, t)
        tweedie = schedules.x0_from_score(world.schedule, z, score, t)
        np.testing.assert_allclose(world.denoise(z, t), tweedie, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(world.marginal_log_prob(z, t), log_density, rtol=1e-12)


@pytest.mark.parametrize("zero_transition", [False, True])
def test_denoiser_jvp_and_vjp_equal_enumeration(zero_transition):
    world = _small_world(seed=5, length=3, zero_transition=zero_transition)
    z, t = _normal(0, world.latent_shape), 0.35
    jac = _enumerated_jacobian(world, z, t)
    u, w = _normal(1, z.shape), _normal(2, z.shape)
    denoise = lambda z: world.denoise(z, t)
    jvp = jax.jvp(world.denoise, (z, t), (u, 0.0))[1]
    np.testing.assert_allclose(jvp.ravel(), jac @ np.asarray(u).ravel(), rtol=1e-8, atol=1e-9)
    vjp = jax.vjp(denoise, z)[1](w)[0]
    np.testing.assert_allclose(vjp.ravel(), np.asarray(w).ravel() @ jac, rtol=1e-8, atol=1e-9)


def _spectral_norm(world, z, t):
    """Largest singular value of the dense Jacobian, built column by column with jvp."""
    basis = np.eye(z.size).reshape(z.size, *z.shape)
    columns = [
        np.asarray(jax.jvp(world.denoise, (z, t), (jnp.asarray(e), 0.0))[1]).ravel() for e in basis
    ]
    return float(np.linalg.norm(np.stack(columns, axis=1), ord=2))


def test_regularity_limited_denoiser():
    emb = [[-1.5, 0.0], [1.5, 0.0], [0.0, 2.5]]
    exact = _small_world(seed=2, length=3, std=0.2, emb=emb)
    explicit = dataclasses.replace(exact, resp_scale=1.0, resp_floor=0.0)
    z = _normal(0, exact.latent_shape)
    np.testing.assert_array_equal(exact.denoise(z, 0.3), explicit.denoise(z, 0.3))
    # A boundary point: position 1 halfway between the (scaled) embeddings of tokens 0, 1.
    t = 0.1
    z = np.array(z)
    z[1] = float(exact.schedule.alpha(t)) * 0.5 * (np.asarray(emb[0]) + np.asarray(emb[1]))
    z = jnp.asarray(z)
    stiff = _spectral_norm(exact, z, t)
    for kwargs, inflate in (
        (dict(resp_scale=4.0), lambda v: 4.0 * v),
        (dict(resp_floor=0.5), lambda v: v + 0.5),
    ):
        world = dataclasses.replace(exact, **kwargs)
        mean, marg = _brute_force_posterior(world, z, t, emission_var=inflate)
        np.testing.assert_allclose(world.denoise(z, t), mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(world.posterior_marginals(z, t), marg, atol=1e-10)
        assert not np.allclose(world.denoise(z, t), exact.denoise(z, t))
        assert _spectral_norm(world, z, t) < 0.5 * stiff


# ---- the chain: likelihood, entropy, sampling ------------------------------------------


def test_log_likelihood_and_entropy_equal_enumeration():
    world = _small_world(seed=11, length=4)
    seqs, logp = _all_sequences(world)
    np.testing.assert_allclose(np.exp(logp).sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(world.log_likelihood(jnp.asarray(seqs)), logp, rtol=1e-12)
    np.testing.assert_allclose(world.log_likelihood(seqs[5]), logp[5], rtol=1e-12)
    entropy = -np.sum(np.exp(logp) * logp) / world.length
    np.testing.assert_allclose(world.entropy_rate(), entropy, rtol=1e-12)
    np.testing.assert_allclose(world.data_perplexity(), np.exp(entropy), rtol=1e-12)
    np.testing.assert_allclose(
        world.perplexity(seqs[:2]), np.exp(-logp[:2].mean() / world.length), rtol=1e-12
    )
    # The readout prior p̄(y) is the unigram frequency over positions.
    unigram = np.zeros(world.vocab_size)
    for i in range(world.length):
        np.add.at(unigram, seqs[:, i], np.exp(logp) / world.length)
    np.testing.assert_allclose(np.exp(world.log_unigram), unigram, rtol=1e-12)


def test_logits_and_readout():
    world = _small_world(seed=4, length=3, sharpness=2.5)
    x = _normal(0, world.latent_shape)
    sq = np.sum((np.asarray(x)[:, None, :] - np.asarray(world.embeddings)[None]) ** 2, -1)
    expected = 2.5 * (np.asarray(world.log_unigram)[None] - sq / (2 * 0.4**2))
    np.testing.assert_allclose(world.logits(x), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(world.decode(x), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(world.readout(x), expected.argmax(-1))
    assert world.readout_kind == "categorical"
    assert readout_jax.manifolds.has_logits(world)


def test_sample_data_matches_chain(key):
    world = _small_world(seed=8, length=3, std=0.3)
    num = 20_000
    x0, tokens = world.sample_data(key, num)
    assert x0.shape == (num, 3, 2) and tokens.shape == (num, 3)
    # First-token and bigram (positions 1 -> 2) frequencies within 4.5 binomial MCSE.
    p1 = np.exp(np.asarray(world.log_initial))
    freq1 = np.bincount(np.asarray(tokens[:, 0]), minlength=3) / num
    assert np.all(np.abs(freq1 - p1) < 4.5 * np.sqrt(p1 * (1 - p1) / num))
    marg = np.asarray(world.position_marginals())
    joint = marg[0][:, None] * np.exp(np.asarray(world.log_transition))
    pairs = np.asarray(tokens[:, 0] * 3 + tokens[:, 1])
    freq2 = np.bincount(pairs, minlength=9).reshape(3, 3) / num
    assert np.all(np.abs(freq2 - joint) < 4.5 * np.sqrt(joint * (1 - joint) / num))
    resid = np.asarray(x0 - world.embeddings[tokens])
    assert abs(resid.std() - 0.3) < 4 * 0.3 / math.sqrt(2 * resid.size)


def test_synthetic_chain_is_stationary_and_positive(key):
    world = TokenSequence.synthetic(key, 12, 5, 4, std=0.2)
    trans = np.exp(np.asarray(world.log_transition))
    pi = np.exp(np.asarray(world.log_initial))
    np.testing.assert_allclose(trans.sum(axis=1), 1.0, atol=1e-12)
    assert trans.min() > 0
    np.testing.assert_allclose(pi @ trans, pi, atol=1e-12)
    np.testing.assert_allclose(world.log_unigram, world.log_initial, atol=1e-10)
    emb = np.asarray(world.embeddings)
    dist = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    rms = np.sqrt(np.sum(dist**2) / (12 * 11))
    assert 0.6 * 6 * 0.2 < rms < 1.5 * 6 * 0.2


# ---- text ------------------------------------------------------------------------------


def test_from_text_builds_a_valid_chain(key):
    world = TokenSequence.from_text(length=8, dim=4, std=0.3, key=key, vocab_size=32)
    assert world.vocab_size == 32 and len(world.vocab) == 32
    assert " " in world.vocab and "e" in world.vocab and world.vocab[-1] == OTHER_SYMBOL
    assert world.vocab[:2] == (" ", "e")  # the two most frequent characters
    trans = np.exp(np.asarray(world.log_transition))
    pi = np.exp(np.asarray(world.log_initial))
    np.testing.assert_allclose(trans.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(pi @ trans, pi, atol=1e-12)
    # English: 'q' is merged into the catch-all; "th" is far likelier than "tq".
    t, h = world.vocab.index("t"), world.vocab.index("h")
    assert trans[t, h] > 0.1
    sentence = "The  quick brown\nfox -- jumps!"
    tokens = world.encode_text(sentence)
    assert tokens.shape == (len(normalize_text(sentence)),)
    expected = "".join(ch if ch in world.vocab else OTHER_SYMBOL for ch in normalize_text(sentence))
    assert world.decode_text(tokens) == expected
    round_trip = "the said as in an"
    assert world.decode_text(world.encode_text(round_trip)) == round_trip
    samples = np.random.default_rng(0).integers(0, 31, size=(3, 8))  # no catch-all
    texts = world.decode_text(samples)
    assert len(texts) == 3 and all(len(s) == 8 for s in texts)
    np.testing.assert_array_equal(world.encode_text(texts[1]), samples[1])


def test_from_text_bigram_estimate_on_a_small_text(key):
    text = "abab ab  ba"  # normalized: "abab ab ba"
    world = TokenSequence.from_text(
        text, length=3, dim=2, std=0.5, key=key, vocab_size=5, smoothing=1.0
    )
    assert world.vocab == ("a", "b", " ")  # counts 4, 4, 2; no catch-all needed
    counts = np.zeros((3, 3))
    ids = [world.vocab.index(c) for c in normalize_text(text)]
    for i, j in itertools.pairwise(ids):
        counts[i, j] += 1
    expected = (counts + 1.0) / (counts + 1.0).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.exp(np.asarray(world.log_transition)), expected, rtol=1e-12)


def test_zipf_vocabulary(key):
    key_world, key_rare, key_data = jr.split(key, 3)
    base = TokenSequence.from_text(
        length=3, dim=2, std=0.05, key=key_world, vocab_size=10, separation=40.0
    )
    world = base.with_zipf_vocabulary(key_rare, 40, exponent=1.0, jitter=0.02)
    num, rare = base.vocab_size, 40
    assert world.vocab_size == num + rare and len(set(world.vocab)) == num + rare
    emb = np.asarray(world.embeddings)
    freq, rare_emb = emb[:num], emb[num:]
    np.testing.assert_array_equal(freq, np.asarray(base.embeddings))
    # Each rare embedding lies near the middle of a segment between two frequent ones.
    for e in rare_emb:
        best = np.inf
        for i, j in itertools.permutations(range(num), 2):
            seg = freq[j] - freq[i]
            w = np.dot(e - freq[i], seg) / np.dot(seg, seg)
            off = np.linalg.norm(e - freq[i] - w * seg) / np.linalg.norm(seg)
            if 0.25 <= w <= 0.75:
                best = min(best, off)
        assert best < 0.1
    # A proper chain whose parent sequence follows the base chain exactly.
    trans = np.exp(np.asarray(world.log_transition))
    np.testing.assert_allclose(trans.sum(axis=1), 1.0, atol=1e-12)
    parent = np.array(
        [world.vocab.index(s[1]) if len(s) > 1 else k for k, s in enumerate(world.vocab)]
    )
    lumped = np.zeros((num + rare, num))
    np.add.at(lumped.T, parent, trans.T)
    base_trans = np.exp(np.asarray(base.log_transition))
    np.testing.assert_allclose(lumped, base_trans[parent], atol=1e-12)
    pi = np.exp(np.asarray(world.log_initial))
    np.testing.assert_allclose(pi @ trans, pi, atol=1e-12)
    assert pi[num:].sum() < 0.2 * pi[:num].sum()
    # Zipf shares: among the variants of one parent, a better rank carries more mass.
    ranks = np.array([int(s[2:-1]) for s in world.vocab[num:]])
    for p in range(num):
        mine = np.flatnonzero(parent[num:] == p)
        masses = pi[num:][mine[np.argsort(ranks[mine])]]
        assert np.all(np.diff(masses) < 0)
    # Perplexity of data from the chain matches exp(entropy rate) within Monte-Carlo error.
    _, tokens = world.sample_data(key_data, 20_000)  # the shapes of test_sample_data
    per_token = -np.asarray(world.log_likelihood(tokens)) / world.length
    mcse = per_token.std() / math.sqrt(per_token.size)
    assert abs(per_token.mean() - float(world.entropy_rate())) < 4 * mcse
    np.testing.assert_allclose(
        np.log(float(world.perplexity(tokens))), per_token.mean(), rtol=1e-10
    )
    # With well-separated tokens an in-between latent reads as a rare token.
    # (Not all: a segment may pass close to a third frequent token.)
    x = jnp.asarray(np.broadcast_to(rare_emb[:, None], (rare, world.length, 2)))
    assert np.mean(np.asarray(jax.vmap(world.readout)(x)) >= num) > 0.85
    assert world.decode_text(jnp.array([num])) == world.vocab[num]
    assert world.vocab[num].startswith("⟨") and world.vocab[num].endswith("1⟩")


def test_from_text_rare_tokens_option(key):
    world = TokenSequence.from_text(
        length=4, dim=3, std=0.2, key=key, vocab_size=12, num_rare_tokens=25
    )
    assert world.vocab_size == 37 and world.vocab[:2] == (" ", "e")
    np.testing.assert_allclose(np.exp(np.asarray(world.log_transition)).sum(1), 1.0, atol=1e-12)


# ---- dtypes, transformations, validation, harness --------------------------------------


def test_float32_jit_vmap_and_grad():
    world64 = _small_world(seed=9, length=4)
    world32 = dataclasses.replace(world64, embeddings=world64.embeddings.astype(jnp.float32))
    assert world32.log_transition.dtype == jnp.float32 and world32.std.dtype == jnp.float32
    z64 = _normal(0, (8, *world64.latent_shape))
    z32 = z64.astype(jnp.float32)
    batched = jax.jit(jax.vmap(world32.denoise, in_axes=(0, None)))
    out = batched(z32, jnp.float32(0.4))
    assert out.dtype == jnp.float32 and out.shape == z32.shape
    for i in range(3):
        np.testing.assert_allclose(out[i], world64.denoise(z64[i], 0.4), rtol=2e-4, atol=2e-4)
    # Sharp posteriors far off the data, near t = 0, stay finite in float32.
    assert np.all(np.isfinite(np.asarray(batched(30.0 * z32, jnp.float32(1e-3)))))
    t32 = jnp.float32(0.4)
    tangent = jax.jvp(world32.denoise, (z32[0], t32), (z32[1], jnp.zeros_like(t32)))[1]
    assert tangent.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(tangent)))


def test_large_vocabulary_is_finite():
    world = TokenSequence.synthetic(jr.key(0), 1000, 4, 8, std=0.1)
    x = world.embeddings[jnp.array([1, 5, 7, 900])] + 0.1 * _normal(0, (4, 8))
    out = world.denoise(x, 0.2)
    assert out.shape == (4, 8) and np.all(np.isfinite(np.asarray(out)))


def test_bad_input_raises_value_error_naming_the_argument():
    world = _small_world()
    emb, li, lt = world.embeddings, world.log_initial, world.log_transition
    with pytest.raises(ValueError, match="std"):
        TokenSequence(emb, li, lt, 0.0, 3)
    with pytest.raises(ValueError, match="std"):
        TokenSequence(emb, li, lt, -1.0, 3)
    with pytest.raises(ValueError, match="log_transition"):
        TokenSequence(emb, li, lt + 0.1, 0.5, 3)
    with pytest.raises(ValueError, match="log_initial"):
        TokenSequence(emb, li - 0.1, lt, 0.5, 3)
    with pytest.raises(ValueError, match="log_transition"):
        TokenSequence(emb, li, lt[:2], 0.5, 3)
    with pytest.raises(ValueError, match="log_initial"):
        TokenSequence(emb, li[:2], lt, 0.5, 3)
    with pytest.raises(ValueError, match="embeddings"):
        TokenSequence(jnp.zeros((0, 2)), li[:0], lt[:0, :0], 0.5, 3)
    with pytest.raises(ValueError, match="length"):
        TokenSequence(emb, li, lt, 0.5, 0)
    with pytest.raises(ValueError, match="resp_scale"):
        TokenSequence(emb, li, lt, 0.5, 3, resp_scale=0.5)
    with pytest.raises(ValueError, match="resp_floor"):
        TokenSequence(emb, li, lt, 0.5, 3, resp_floor=-0.1)
    with pytest.raises(ValueError, match="vocab"):
        TokenSequence(emb, li, lt, 0.5, 3, vocab=("a", "b"))
    with pytest.raises(ValueError, match="vocab"):
        world.decode_text(jnp.array([0, 1]))
    with pytest.raises(ValueError, match="smoothing"):
        TokenSequence.from_text("abc", length=2, dim=2, std=0.1, key=jr.key(0), smoothing=0.0)


def test_through_the_harness(key):
    world = TokenSequence.synthetic(key, 6, 5, 3, std=0.3)
    ts = readout_jax.time_grid(world.schedule, 4)
    x_init = _normal(0, (8, 5, 3))  # N(0, I) is the prior at ts[0] = 1 (α = 0)
    out = readout_jax.sample(readout_jax.get_sampler("ddim"), world, jr.key(2), x_init, ts)
    assert out.x.shape == (8, 5, 3) and out.x0.shape == (8, 5, 3)
    assert out.info.x0_hat.shape == (8, 4, 5, 3)
    assert np.all(np.isfinite(np.asarray(out.x0)))
    tokens = jax.vmap(world.readout)(out.x0)
    assert tokens.shape == (8, 5)
    assert np.isfinite(float(world.perplexity(tokens)))
