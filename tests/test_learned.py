"""Learned worlds: data, checkpoints, training, the learned manifolds under every sampler.

The default tests share one tiny text world and one tiny image world (trained for a few
dozen steps into a temporary cache, once per module). Slow tests train the quick scale
for real and check its quality against thresholds fixed in advance.
"""

import dataclasses
import json
import logging
import math
import pathlib

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from flax import nnx

import readout_jax as rj
from readout_jax import diagnostics, samplers, schedules
from readout_jax.learned import checkpoint as ckpt
from readout_jax.learned import data as data_lib
from readout_jax.learned import denoiser as den
from readout_jax.learned import image as image_lib
from readout_jax.learned import text as text_lib
from readout_jax.learned import worlds
from readout_jax.learned.train import TrainConfig, fit

TINY_TEXT = worlds.TextWorldConfig.tiny()
TINY_IMAGE = worlds.ImageWorldConfig.tiny()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("learned_cache")


@pytest.fixture(scope="module")
def text_world(cache):
    return worlds.text_world(TINY_TEXT, cache_dir=cache, progress=False)


@pytest.fixture(scope="module")
def image_world(cache):
    return worlds.image_world(TINY_IMAGE, cache_dir=cache, progress=False)


def _leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(
        x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(la, lb, strict=True)
    )


# ---- data ------------------------------------------------------------------------------


def test_topic_split_is_disjoint_deterministic_and_within_budget():
    texts = {n: data_lib.normalize_text(t) for n, t in data_lib.pydoc_topics().items()}
    train, val = data_lib.split_topics(texts, 0.1)
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(texts)
    assert (train, val) == data_lib.split_topics(dict(reversed(list(texts.items()))), 0.1)
    val_chars = sum(len(texts[n]) for n in val)
    total = sum(len(t) for t in texts.values())
    assert 0 < val_chars <= 0.1 * total
    # every validation window comes from a validation topic: its text occurs there
    corpus = data_lib.load_text_corpus(TINY_TEXT.data)
    val_text = "\x00".join(texts[n] for n in corpus.val_topics)
    for row in corpus.val_tokens[::500]:
        window = corpus.vocab.decode_tokens(row)
        if data_lib.UNK not in window:
            assert window in val_text


def test_vocab_encode_decode_and_unk():
    vocab = data_lib.Vocab.from_text("aab c" * 3 + "z", min_count=2)
    assert vocab.chars[-1] == data_lib.UNK and "z" not in vocab.chars
    ids = vocab.encode_text("Ab z")  # lowercased; z is rare -> UNK
    assert vocab.decode_tokens(ids) == "ab " + data_lib.UNK
    assert vocab.decode_tokens(np.stack([ids, ids])) == [vocab.decode_tokens(ids)] * 2
    with pytest.raises(ValueError, match=r"\[0, "):
        vocab.decode_tokens([vocab.size])
    with pytest.raises(ValueError, match="UNK"):
        data_lib.Vocab(("a", "b"))


def test_valid_word_fraction_counts_only_complete_words():
    words = frozenset({"the", "cat"})
    # "xthe" and "ca" touch the window's ends: not complete, not counted
    assert data_lib.words_in("xthe cat dgo ca") == ["cat", "dgo"]
    assert data_lib.valid_word_fraction("xthe cat dgo ca", words) == 0.5
    assert math.isnan(data_lib.valid_word_fraction("abcdef", words))


def test_digits_split():
    d = data_lib.load_digits_split(0.2, 0)
    assert d.train_images.shape[1] == 64 and d.val_images.shape[0] == round(0.2 * 1797)
    assert d.train_images.min() >= 0 and d.train_images.max() <= 1
    assert d.train_images.shape[0] + d.val_images.shape[0] == 1797


# ---- checkpoints -----------------------------------------------------------------------


_CLF = image_lib.ClassifierConfig(hidden=8, num_layers=1)


def _abstract_classifier(cfg=_CLF):
    """(graphdef, abstract state) of a classifier: shapes only, nothing compiled."""
    return nnx.split(nnx.eval_shape(lambda: image_lib.DigitClassifier(cfg, rngs=nnx.Rngs(0))))


def _random_state(key, cfg=_CLF):
    """A classifier state with random leaves of the right shapes (no NNX initialisation)."""
    _, like = _abstract_classifier(cfg)
    leaves, treedef = jax.tree_util.tree_flatten(like)
    keys = jr.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef,
        [jr.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves, strict=True)],
    )


def test_checkpoint_round_trip_is_bit_exact(tmp_path, image_world):
    clf = image_world.classifier  # a trained model
    cfg = TINY_IMAGE.classifier
    path = ckpt.save_checkpoint(tmp_path / "clf", clf.state, kind="c", config=cfg, vocab=["a"])
    graphdef, like = _abstract_classifier(cfg)
    state, meta = ckpt.load_checkpoint(path, like, kind="c", config=cfg, vocab=["a"])
    assert _leaves_equal(state, clf.state)
    images = np.asarray(image_world.val_images[:5])
    np.testing.assert_array_equal(
        image_lib.Classifier(graphdef, state).logits(images), clf.logits(images)
    )
    hidden = cfg.hidden
    assert meta["payload"]["num_parameters"] == 64 * hidden + hidden + hidden * 10 + 10
    assert meta["versions"]["flax"] and meta["model_code_version"] == ckpt.MODEL_CODE_VERSION
    # saving again replaces the checkpoint atomically (no temporary folders left behind)
    other = _random_state(jr.key(1), cfg)
    ckpt.save_checkpoint(path, other, kind="c", config=cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf"]
    assert _leaves_equal(ckpt.load_checkpoint(path, like)[0], other)


@pytest.mark.parametrize("damage", ["flip", "truncate", "meta_garbage", "meta_edit", "no_payload"])
def test_corrupt_checkpoint_raises_checkpoint_error(tmp_path, damage):
    path = ckpt.save_checkpoint(tmp_path / "m", _random_state(jr.key(0)), kind="c", config={})
    payload, meta = path / ckpt.PAYLOAD_FILE, path / ckpt.META_FILE
    if damage == "flip":
        raw = bytearray(payload.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        payload.write_bytes(bytes(raw))
        match = "SHA-256 mismatch"
    elif damage == "truncate":
        payload.write_bytes(payload.read_bytes()[:-10])
        match = "truncated"
    elif damage == "meta_garbage":
        meta.write_bytes(b"{not json")
        match = "unparsable"
    elif damage == "meta_edit":  # valid JSON, edited value
        obj = json.loads(meta.read_text())
        obj["metadata"] = {"val_accuracy": 1.0}
        meta.write_text(json.dumps(obj))
        match = "SHA-256"
    else:
        payload.unlink()
        match = "missing"
    with pytest.raises(ckpt.CheckpointError, match=match) as info:
        ckpt.load_checkpoint(path, _abstract_classifier()[1])
    assert str(path) in str(info.value)


def test_missing_and_mismatched_checkpoints(tmp_path):
    with pytest.raises(ckpt.CheckpointNotFoundError, match="no checkpoint"):
        ckpt.load_checkpoint(tmp_path / "nothing", {})
    path = ckpt.save_checkpoint(tmp_path / "m", _random_state(jr.key(0)), kind="c", config=_CLF)
    like = _abstract_classifier()[1]
    other = dataclasses.replace(_CLF, hidden=9)
    with pytest.raises(ckpt.CheckpointMismatchError, match=r"config\.hidden: saved 8, expected 9"):
        ckpt.load_checkpoint(path, like, config=other)
    with pytest.raises(ckpt.CheckpointMismatchError, match="kind"):
        ckpt.load_checkpoint(path, like, kind="other")
    with pytest.raises(ckpt.CheckpointMismatchError, match="vocab"):
        ckpt.load_checkpoint(path, like, vocab=["x"])
    with pytest.raises(ckpt.CheckpointMismatchError, match="expects"):
        ckpt.load_checkpoint(path, _abstract_classifier(other)[1])


def test_cache_key_depends_on_config_and_extras():
    a = ckpt.cache_key("k", {"x": 1}, data="f")
    assert a == ckpt.cache_key("k", {"x": 1}, data="f")
    assert (
        len(
            {
                a,
                ckpt.cache_key("k", {"x": 2}, data="f"),
                ckpt.cache_key("k", {"x": 1}, data="g"),
                ckpt.cache_key("j", {"x": 1}, data="f"),
            }
        )
        == 4
    )


def test_default_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv(ckpt.CACHE_ENV, str(tmp_path))
    assert ckpt.default_cache_dir() == tmp_path
    monkeypatch.delenv(ckpt.CACHE_ENV)
    assert ckpt.default_cache_dir() == pathlib.Path.home() / ".cache" / "readout_jax" / "models"


# ---- training ----------------------------------------------------------------------------


@pytest.mark.slow
def test_fit_lowers_the_full_data_loss():
    digits = data_lib.load_digits_split()
    batch = (jnp.asarray(digits.train_images), jnp.asarray(digits.train_labels))
    cfg = TrainConfig(
        num_steps=30,
        batch_size=32,
        learning_rate=1e-2,
        warmup_steps=3,
        log_every=15,
        eval_every=15,
        fast_compile=True,
    )

    def full_loss(model):
        return float(image_lib.classifier_loss(model, batch, None)[0])

    model = image_lib.DigitClassifier(_CLF, rngs=nnx.Rngs(0))
    before = full_loss(model)
    result = fit(model, image_lib.classifier_loss, batch, cfg, key=jr.key(3), progress=False)
    assert full_loss(model) < 0.8 * before
    assert [h["step"] for h in result.history] == [15, 30]
    assert result.cpu_seconds > 0


def test_text_world_training_lowered_every_loss(text_world):
    m = text_world.metrics
    vocab_size = text_world.vocab.size
    # history[0] is the untrained model (step 0), history[-1] the trained one
    ae, lm, dn = (m[f"{p}_history"] for p in ("autoencoder", "evaluator", "denoiser"))
    assert ae[0]["step"] == 0 and ae[-1]["step"] == TINY_TEXT.autoencoder_train.num_steps
    assert ae[0]["val_ce_parallel"] > math.log(vocab_size) - 0.5
    assert ae[-1]["val_ce_parallel"] < ae[0]["val_ce_parallel"] - 0.5
    assert lm[-1]["val_perplexity"] < 0.7 * lm[0]["val_perplexity"]
    assert dn[-1]["val_weighted_loss"] < dn[0]["val_weighted_loss"]
    # the evaluator beats a uniform guess, the denoiser beats the data mean at t = 0.1
    assert m["evaluator_val_perplexity"] < vocab_size
    assert m["denoiser_val_x0_mse_t0.1"] < m["denoiser_val_mean_mse_t0.1"]


def test_world_metrics_and_shapes(text_world, image_world):
    tw, iw = text_world, image_world
    L, d = TINY_TEXT.data.length, TINY_TEXT.autoencoder.latent_dim
    assert tw.latent_shape == (L, d) and tw.metrics["vocab_size"] == tw.vocab.size
    for key in (
        "autoencoder_val_recon_acc_parallel",
        "autoencoder_val_recon_acc_ar",
        "evaluator_unigram_val_perplexity",
        "denoiser_val_x0_mse_t0.5",
        "autoencoder_train_cpu_seconds",
    ):
        assert np.isfinite(tw.metrics[key]), key
    x = tw.encode(tw.val_tokens[:3])
    assert x.shape == (3, L, d)
    np.testing.assert_allclose(jnp.mean(x**2, axis=-1), 1.0, atol=1e-4)  # RMS-normalised
    assert tw.parallel_logits(x).shape == (3, L, tw.vocab.size)
    assert iw.encode(iw.val_images[:4]).shape == (4, TINY_IMAGE.autoencoder.latent_dim)
    pixels = iw.decode(iw.encode(iw.val_images[:4]))
    assert pixels.shape == (4, 64) and float(pixels.min()) >= 0 and float(pixels.max()) <= 1
    probs = iw.classifier.probs(iw.val_images[:4])
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert 0 <= iw.metrics["classifier_val_accuracy"] <= 1


def test_second_call_reloads_instead_of_retraining(text_world, cache, key):
    again = worlds.text_world(TINY_TEXT, cache_dir=cache, progress=False)
    assert text_world.trained == {"autoencoder": True, "denoiser": True, "evaluator": True}
    assert again.trained == {"autoencoder": False, "denoiser": False, "evaluator": False}
    assert _leaves_equal(again.manifold, text_world.manifold)
    assert (
        again.metrics["evaluator_val_perplexity"] == text_world.metrics["evaluator_val_perplexity"]
    )
    # the reloaded world computes the same bits as the freshly trained one: samples,
    # readouts, CCI, AR decodes and the evaluator's log-likelihoods (float64 latents here)
    x = text_world.encode(text_world.val_tokens[:3]).astype(jnp.float64)
    for name in ("denoise", "logits"):
        args = (x, jnp.full((3,), 0.4)) if name == "denoise" else (x,)
        np.testing.assert_array_equal(
            jax.vmap(getattr(again.manifold, name))(*args),
            jax.vmap(getattr(text_world.manifold, name))(*args),
        )
    runs = [_run("margin_gated", w.manifold, key) for w in (text_world, again)]
    np.testing.assert_array_equal(runs[0].x0, runs[1].x0)
    ccis = [
        diagnostics.cci(w.manifold, r.info.x0_hat, r.x0)
        for w, r in zip((text_world, again), runs, strict=True)
    ]
    np.testing.assert_array_equal(ccis[0].curve, ccis[1].curve)
    for feedback in ("committed", "soft"):
        decoded = [w.ar_decode(x, feedback=feedback) for w in (text_world, again)]
        np.testing.assert_array_equal(decoded[0][1], decoded[1][1])
        tokens = np.asarray(decoded[0][0])
        assert (
            text_world.evaluator.log_prob(tokens).tolist()
            == again.evaluator.log_prob(tokens).tolist()
        )
    # another seed is another model: not found in the cache, never seed 0's checkpoint
    with pytest.raises(ckpt.CheckpointNotFoundError):
        worlds.text_world(TINY_TEXT, seed=1, cache_dir=cache, load_only=True, progress=False)


def test_bad_checkpoint_is_reported_and_retrained_bit_identically(image_world, cache, caplog):
    payload = image_world.checkpoints["classifier"] / ckpt.PAYLOAD_FILE
    payload.write_bytes(payload.read_bytes()[:100])
    with pytest.raises(ckpt.CheckpointError, match="truncated"):
        worlds.image_world(TINY_IMAGE, cache_dir=cache, load_only=True, progress=False)
    # retrain in a process state WITHOUT x64 (the command line's): training runs in
    # 32-bit mode either way, so the model must come out bit-identical to the one the
    # x64 test session trained (before the fix, 1e-5 differences under one cache key)
    with caplog.at_level(logging.WARNING, logger="readout_jax.learned"), jax.enable_x64(False):
        again = worlds.image_world(TINY_IMAGE, cache_dir=cache, progress=False)
    assert again.trained == {"autoencoder": False, "denoiser": False, "classifier": True}
    assert "truncated" in caplog.text and "retraining" in caplog.text
    # same seed -> bit-identical parameters and metrics
    assert _leaves_equal(again.classifier, image_world.classifier)
    assert (
        again.metrics["classifier_val_accuracy"] == image_world.metrics["classifier_val_accuracy"]
    )
    assert again.metrics["classifier_history"] == image_world.metrics["classifier_history"]


def test_load_only_and_bad_arguments(tmp_path):
    with pytest.raises(ckpt.CheckpointNotFoundError):
        worlds.text_world(TINY_TEXT, cache_dir=tmp_path, load_only=True)
    with pytest.raises(ValueError, match="scale"):
        worlds.text_world("medium", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="scale"):
        worlds.image_world(TINY_TEXT, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="seed"):
        worlds.image_world(TINY_IMAGE, seed=-1, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="exclude"):
        worlds.text_world(TINY_TEXT, cache_dir=tmp_path, retrain=True, load_only=True)
    with pytest.raises(ValueError, match="eval_every"):
        TrainConfig(log_every=10, eval_every=15)
    with pytest.raises(ValueError, match="latent_dim"):
        text_lib.TextAEConfig(latent_dim=0)
    with pytest.raises(ValueError, match="architecture"):
        den.DenoiserConfig(architecture="unet")


def test_world_methods_reject_bad_input(text_world, image_world):
    with pytest.raises(ValueError, match=r"shape \(N, L=8\)"):
        text_world.encode(text_world.val_tokens[:2, :5])
    with pytest.raises(ValueError, match=r"\[0, "):
        text_world.encode(np.full((1, 8), 999))
    with pytest.raises(ValueError, match="feedback"):
        text_world.ar_decode_fn("hard")
    with pytest.raises(ValueError, match="key is required"):
        text_world.ar_decode(np.zeros((1, *text_world.latent_shape)), temperature=1.0)
    with pytest.raises(ValueError, match=r"\(N, 64\)"):
        image_world.nearest_train_distance(np.zeros((2, 63)))


# ---- the learned manifolds ---------------------------------------------------------------


def _run(name, manifold, key, *, batch=3, num_steps=3, prior_key=None):
    sampler = rj.get_sampler(name)
    t_max = 0.995 if name == "euler_maruyama" else 1.0
    ts = rj.time_grid(manifold.schedule, num_steps, t_max=t_max)
    prior_key = jr.fold_in(key, 1) if prior_key is None else prior_key
    x_init = rj.prior_sample(prior_key, manifold, batch, float(ts[0]))
    return rj.sample(sampler, manifold, key, x_init, ts)


# One sampler of each kind runs in the default suite (each compiles the harness anew);
# the rest of the sweep is slow-marked.
_DEFAULT_IMAGE = ("ddim", "ddim_eta", "renoise_rf")
_DEFAULT_TEXT = ("margin_gated",)


def _sweep(names, default):
    return [n if n in default else pytest.param(n, marks=pytest.mark.slow) for n in names]


@pytest.mark.parametrize(
    "name", _sweep([n for n in samplers.SAMPLERS if n != "margin_gated"], _DEFAULT_IMAGE)
)
def test_every_sampler_runs_on_the_learned_image_manifold(name, image_world, key):
    m = image_world.manifold
    out = _run(name, m, key)
    assert out.x.shape == (3, *m.latent_shape) and out.info.x0_hat.shape == (3, 3, *m.latent_shape)
    assert bool(jnp.all(jnp.isfinite(out.x))) and bool(jnp.all(jnp.isfinite(out.info.x0_hat)))
    np.testing.assert_array_equal(out.x, _run(name, m, key).x)
    if getattr(rj.get_sampler(name), "kind", "") == "ode":
        np.testing.assert_array_equal(
            out.x, _run(name, m, jr.key(9), prior_key=jr.fold_in(key, 1)).x
        )


@pytest.mark.parametrize("name", _sweep(list(samplers.SAMPLERS), _DEFAULT_TEXT))
def test_every_sampler_runs_on_the_learned_text_manifold(name, text_world, key):
    m = text_world.manifold
    out = _run(name, m, key)
    assert out.x0.shape == (3, *m.latent_shape)
    assert bool(jnp.all(jnp.isfinite(out.x0)))
    np.testing.assert_array_equal(out.x0, _run(name, m, key).x0)
    tokens = jax.vmap(m.readout)(out.x0)
    assert tokens.shape == (3, m.latent_shape[0]) and tokens.dtype.kind == "i"


def test_learned_manifold_is_batch_size_invariant_and_does_not_retrace(image_world, key):
    m = image_world.manifold
    ts = rj.time_grid(m.schedule, 3)
    x3 = rj.prior_sample(jr.fold_in(key, 1), m, 3)
    sampler = samplers.DDIMEta(eta=1.0)
    big = rj.sample(sampler, m, key, x3, ts)
    small = rj.sample(sampler, m, key, x3[:2], ts)
    np.testing.assert_allclose(big.x0[:2], small.x0, rtol=1e-5, atol=1e-5)
    # new parameter values, same architecture: the harness does not compile again
    other = dataclasses.replace(m, denoiser=jax.tree_util.tree_map(lambda a: a * 1.01, m.denoiser))
    before = rj.harness._sample_jit._cache_size()
    moved = rj.sample(sampler, other, key, x3, ts)
    assert rj.harness._sample_jit._cache_size() == before
    assert not np.array_equal(moved.x0, big.x0)


def test_preconditioning_boundaries_and_schedule_change(text_world, key):
    m = text_world.manifold
    x0 = text_world.encode(text_world.val_tokens[:1])[0].astype(jnp.float64)
    eps = jr.normal(key, x0.shape, jnp.float64)
    np.testing.assert_allclose(m.denoise(x0, 0.0), x0, atol=1e-6)  # c_out(0) = 0
    vp = m.with_schedule("vp_cosine")
    assert isinstance(vp.schedule, schedules.VPCosine)
    for t in (0.2, 0.6):
        a, s = vp.schedule.alpha(t), vp.schedule.sigma(t)
        t_rf = s / (a + s)  # the RF latent with the SAME x0 and ε
        z_vp, z_rf = a * x0 + s * eps, (1 - t_rf) * x0 + t_rf * eps
        np.testing.assert_allclose(vp.denoise(z_vp, t), m.denoise(z_rf, t_rf), rtol=1e-4, atol=1e-4)


def test_cci_on_the_learned_text_manifold(text_world, key):
    tm = text_world.manifold
    out = _run("margin_gated", tm, key)
    cci = diagnostics.cci(tm, out.info.x0_hat, out.x0)
    assert cci.curve.shape == (3, 3) and 0 <= float(cci.mean_index) <= 1
    steps = jax.vmap(jax.vmap(tm.readout))(out.info.x0_hat)  # (batch, K, L) tokens
    final = jax.vmap(tm.readout)(out.x0)
    np.testing.assert_allclose(cci.curve, np.mean(np.asarray(steps == final[:, None]), axis=-1))


@pytest.mark.slow
def test_dabi_and_stiffness_on_the_learned_manifolds(text_world, image_world, key):
    tm, im = text_world.manifold, image_world.manifold
    x = text_world.encode(text_world.val_tokens[:2])
    res = diagnostics.dabi(tm, x, key=key, num_directions=64)
    assert res.index.shape == (2, tm.latent_shape[0])
    assert np.isfinite(float(res.summary.median))
    res_ar = diagnostics.dabi(text_world.ar_readout, x, key=key, num_directions=64)
    assert np.isfinite(float(res_ar.summary.median))
    z = image_world.encode(image_world.val_images[:2])
    res_img = diagnostics.dabi(im, z, key=key, measure="euclidean", delta=0.1, num_directions=64)
    assert np.isfinite(float(res_img.summary.median))
    ts = rj.time_grid(im.schedule, 3)
    norms = diagnostics.step_jacobian_norms(
        samplers.DDIM(), im, key, rj.prior_sample(key, im, 2), ts
    )
    assert norms.shape == (2, 3) and np.all(np.isfinite(np.asarray(norms)))
    # the AR decoder as the manifold's readout reads its own greedy decoding
    tokens, _ = text_world.ar_decode(x)
    np.testing.assert_array_equal(jax.vmap(text_world.ar_manifold.readout)(x), tokens)


# ---- the AR decoder and the evaluator ----------------------------------------------------


def test_ar_decoder_is_causal_and_greedy_decode_is_self_consistent(text_world, key):
    tw = text_world
    x = tw.encode(tw.val_tokens[:4])
    tokens, logits = tw.ar_decode(x)
    # greedy committed decoding emits the argmax of the teacher-forced logits on itself
    tf = tw.ar_logits(x, tokens)
    np.testing.assert_array_equal(jnp.argmax(tf, -1), tokens)
    np.testing.assert_allclose(tf, logits, atol=1e-4)
    # causality: changing tokens at positions >= i leaves the logits at positions <= i
    i = 3
    changed = np.asarray(tokens).copy()
    changed[:, i:] = (changed[:, i:] + 1) % tw.vocab.size
    np.testing.assert_allclose(tw.ar_logits(x, changed)[:, : i + 1], tf[:, : i + 1], atol=1e-5)
    ar = tw.autoencoder.ar
    np.testing.assert_allclose(
        ar.soft_vector(jax.nn.one_hot(5, tw.vocab.size)), ar.embed(jnp.asarray(5)), atol=1e-6
    )
    soft_tokens, _ = tw.ar_decode(x, feedback="soft")
    assert soft_tokens.shape == tokens.shape


def test_ar_decode_fn_plugs_into_ar_intervention(text_world, key):
    tw = text_world
    x = tw.encode(tw.val_tokens[:3])
    res = diagnostics.ar_intervention(
        tw.ar_decode_fn("committed"), tw.ar_decode_fn("soft"), x, key=key
    )
    assert res.nll_committed.shape == (3,)
    assert np.isfinite(float(res.perplexity_committed)) and np.isfinite(float(res.perplexity_soft))
    # the scorer's NLL is the evaluator's NLL of the decoded tokens
    tokens, _ = tw.ar_decode(x)
    np.testing.assert_allclose(
        -np.asarray(res.nll_committed) * tw.length, tw.evaluator.log_prob(tokens), rtol=1e-5
    )


def test_evaluator_is_causal_and_normalised(text_world):
    ev = text_world.evaluator
    tokens = np.asarray(text_world.val_tokens[:5])
    nll = np.asarray(ev.token_nll(jnp.asarray(tokens)))
    np.testing.assert_allclose(ev.log_prob(tokens), -nll.sum(-1), rtol=1e-5)
    np.testing.assert_allclose(ev.perplexity(tokens), np.exp(nll.mean()), rtol=1e-5)
    changed = tokens.copy()
    changed[:, 4:] = (changed[:, 4:] + 7) % text_world.vocab.size
    np.testing.assert_allclose(
        np.asarray(ev.token_nll(jnp.asarray(changed)))[:, :4], nll[:, :4], atol=1e-5
    )
    # p(· | prefix) sums to one over the vocabulary at position 2
    grid = np.repeat(tokens[:1], text_world.vocab.size, axis=0)
    grid[:, 2] = np.arange(text_world.vocab.size)
    probs = np.exp(-np.asarray(ev.token_nll(jnp.asarray(grid)))[:, 2])
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-4)
    counts = np.bincount(tokens.ravel(), minlength=text_world.vocab.size)
    expected = np.exp(-(counts * np.asarray(ev.log_unigram)).sum() / tokens.size)
    np.testing.assert_allclose(ev.unigram_perplexity(tokens), expected, rtol=1e-5)


def test_nearest_train_distance_matches_brute_force(image_world):
    iw = image_world
    queries = np.concatenate([np.asarray(iw.train_images[:2]), np.asarray(iw.val_images[:3])])
    got = iw.nearest_train_distance(queries)
    brute = np.min(
        np.linalg.norm(queries[:, None, :] - np.asarray(iw.train_images)[None, :, :], axis=-1),
        axis=1,
    )
    np.testing.assert_allclose(got, brute, atol=1e-5)
    assert got[0] == pytest.approx(0.0, abs=1e-5)


# ---- quick scale, real training (slow) ----------------------------------------------------
# Thresholds fixed before the first quick-scale run: parallel and AR validation
# reconstruction accuracy >= 0.9; evaluator validation perplexity below the unigram one;
# denoiser x0 MSE at t = 0.5 below the data-mean predictor's; digit classifier accuracy
# >= 0.9; image reconstruction MSE below the pixel variance.


# The slow checks use the user's model cache (`READOUT_JAX_CACHE` or
# ~/.cache/readout_jax/models): the quick models are trained there once (a few CPU
# minutes) and reloaded afterwards; the cache key pins config, code version and data.
@pytest.fixture(scope="module")
def quick_text():
    return worlds.text_world("quick", progress=False)


@pytest.fixture(scope="module")
def quick_image():
    return worlds.image_world("quick", progress=False)


@pytest.mark.slow
def test_quick_text_world_quality(quick_text):
    m = quick_text.metrics
    assert m["vocab_size"] == quick_text.vocab.size and m["length"] == 16
    assert m["autoencoder_val_recon_acc_parallel"] >= 0.9
    assert m["autoencoder_val_recon_acc_ar"] >= 0.9
    assert m["evaluator_val_perplexity"] < m["evaluator_unigram_val_perplexity"]
    assert m["denoiser_val_x0_mse_t0.5"] < m["denoiser_val_mean_mse_t0.5"]


@pytest.mark.slow
def test_quick_image_world_quality(quick_image):
    m = quick_image.metrics
    pixel_var = float(np.var(np.asarray(quick_image.val_images), axis=0).mean())
    assert m["autoencoder_val_recon_mse"] < pixel_var
    assert m["classifier_val_accuracy"] >= 0.9
    assert m["denoiser_val_x0_mse_t0.5"] < m["denoiser_val_mean_mse_t0.5"]
