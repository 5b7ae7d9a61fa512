"""experiments.few_step (C3a): artifacts at a tiny size, the driver, the metrics, the verdict."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import readout_jax as rj
from experiments import few_step
from readout_jax import io as rio
from readout_jax.manifolds import GaussianMixture, TokenSequence

# learned worlds: untrained tiny networks (the code path, not the science); the same
# settings in every test so that the sampler programs compile once in the session
LEARNED_SAMPLERS = ("ddim", "ddim_eta")
LEARNED_STEPS = (1, 2)
LEARNED_N = 8

TINY = dataclasses.replace(
    few_step.Config.quick(),
    samplers=("ddim", "ddim_eta"),
    num_steps=(1, 2),
    verdict_steps=2,
    num_samples=32,
    entropy_tolerance=0.99,  # at N = 32 the entropy estimate is too noisy to gate on
    length=4,
    dim=3,
    vocab_size=6,
    num_rare_tokens=4,
    regularity_sweep=((0.0, 1.0), (1.0, 1.0)),
    smooth_world=True,
    max_steps=None,
    learned_scale="untrained",
    learned_samplers=LEARNED_SAMPLERS,
    learned_num_steps=LEARNED_STEPS,
    learned_num_samples=LEARNED_N,
)


def test_tiny_run_writes_result_and_figures(tmp_path):
    result = few_step.run(TINY, tmp_path)
    folder = tmp_path / "few_step"
    loaded = rio.read_json(folder / "result.json")
    assert loaded == result
    for field in ("name", "config", "seed", "versions", "elapsed_seconds", "metrics", "claims"):
        assert field in loaded
    claims = loaded["claims"]
    labels = ["text/exact", "text/limited", "text_zipf/exact", "text_zipf/limited"]
    assert [c["claim"] for c in claims] == ["C3a"] * 6
    assert claims[4]["statement"].startswith("learned text world")
    assert claims[5]["statement"].startswith("learned image world")
    assert claims[5]["predicted"] == 1.0
    for c, label in zip(claims, labels, strict=False):
        assert c["statement"].startswith(label)
        assert math.isfinite(c["measured"]) and c["measured"] > 0
        assert c["predicted"] == TINY.ratio_threshold and isinstance(c["held"], bool)
        assert c["detail"]
    worlds = loaded["metrics"]["worlds"]
    assert set(worlds) == {*labels, "smooth"}
    rows = worlds["text_zipf/exact"]["table"]
    assert {r["sampler"] for r in rows} == {"ddim", "ddim_eta"}
    assert len(rows) == 2 * len(TINY.num_steps)
    for r in rows:
        for key in ("perplexity", "entropy", "off_mode_fraction", "log_perplexity_se"):
            assert math.isfinite(r[key]), (r["sampler"], key)
        assert isinstance(r["sharpened"], bool) and isinstance(r["below_chain"], bool)
    smooth = worlds["smooth"]["table"]
    assert all(math.isfinite(r["nearest_mode_error"]) for r in smooth)
    assert len(loaded["metrics"]["regularity_sweep"]) == 2
    assert loaded["figures"] == [
        "perplexity_vs_steps.png",
        "entropy_vs_steps.png",
        "off_mode_vs_steps.png",
        "ratio_vs_steps.png",
        "learned_vs_steps.png",
    ]
    learned = loaded["metrics"]["learned"]
    assert learned["scale"] == "untrained"
    assert len(learned["text"]["table"]) == len(LEARNED_SAMPLERS) * len(LEARNED_STEPS)
    assert [r["K"] for r in learned["image"]["ratio_vs_steps"]] == list(LEARNED_STEPS)
    assert learned["models"]["text"]["metrics"]["untrained"] is True
    for name in loaded["figures"]:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _small_world(**kwargs):
    return TokenSequence.synthetic(jr.key(3), 5, 4, 3, std=0.4, **kwargs)


@pytest.mark.skipif(
    not jax.config.jax_threefry_partitionable, reason="keys equal the harness's only then"
)
@pytest.mark.parametrize("name", ["ddim_eta", "dpmpp_2m"])
def test_sample_steps_equals_the_harness(name):
    world = _small_world()
    x_init = jr.normal(jr.key(1), (6, *world.latent_shape))
    sampler = rj.get_sampler(name)
    ts, ts_pad = few_step.padded_grid(world.schedule, 3, 5, kind="uniform", t_min=1e-3, t_max=0.99)
    out = few_step.sample_steps(sampler, world, jr.key(2), x_init, ts, ts_pad, record=True)
    ref = rj.sample(sampler, world, jr.key(2), x_init, ts, record=rj.record_info)
    np.testing.assert_allclose(out.x0, ref.x0, rtol=1e-10, atol=1e-12)
    assert np.all(out.nfe == 3)
    # the recorded tokens are the readout of the harness's per-step x̂0
    read = jax.vmap(jax.vmap(lambda x: jnp.argmax(world.logits(x), axis=-1)))(ref.info.x0_hat)
    assert out.tokens.shape == (6, 3, world.length)
    np.testing.assert_array_equal(out.tokens, read)
    with pytest.raises(ValueError, match="ts_padded"):
        few_step.sample_steps(sampler, world, jr.key(2), x_init, ts, ts_pad[::-1])


def test_sample_steps_record_needs_a_categorical_world():
    world = GaussianMixture(
        jnp.array([[0.0], [3.0]]), jnp.array([0.5, 0.5]), 1.0, readout_kind="smooth"
    )
    ts, ts_pad = few_step.padded_grid(world.schedule, 1, 1, kind="uniform", t_min=1e-3, t_max=0.99)
    x_init = jnp.zeros((2, 1))
    with pytest.raises(ValueError, match="categorical"):
        few_step.sample_steps(
            rj.get_sampler("ddim"), world, jr.key(0), x_init, ts, ts_pad, record=True
        )


# ---- learned worlds ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def worlds():
    return few_step.learned_worlds("untrained")


def test_learned_worlds_are_built_once_per_process(worlds):
    assert few_step.learned_worlds("untrained") is worlds
    assert worlds.text.metrics["untrained"] and worlds.scale == "untrained"
    with pytest.raises(ValueError, match="learned_scale"):
        few_step.learned_worlds("huge")
    with pytest.raises(ValueError, match="learned_scale"):
        few_step.Config(learned_scale="huge")


def test_sampler_runs_on_rectified_flow_and_smooth_worlds(worlds):
    names = ("ddim", "renoise_rf", "margin_gated")
    text, image = worlds.text.manifold, worlds.image.manifold
    # a world on the rectified-flow schedule is its own RF copy: no euler_rf row
    assert few_step.sampler_runs(text, names) == [(n, n, text) for n in names]
    # margin_gated needs logits: left out on a smooth world
    assert few_step.sampler_runs(image, names) == [(n, n, image) for n in names[:2]]
    exact = _small_world()
    runs = few_step.sampler_runs(exact, names)
    assert [r[:2] for r in runs] == [*((n, n) for n in names), ("euler_rf", "euler")]
    assert runs[1][2].schedule.name == "rectified_flow" and runs[0][2] is exact


def test_learned_text_rows_and_references(worlds):
    text = worlds.text
    res = few_step.measure_learned_text(
        text,
        sampler_names=LEARNED_SAMPLERS,
        num_steps=LEARNED_STEPS,
        key=jr.key(0),
        num_samples=LEARNED_N,
    )
    assert {r["sampler"] for r in res.rows} == set(LEARNED_SAMPLERS)
    assert len(res.rows) == len(LEARNED_SAMPLERS) * len(LEARNED_STEPS)
    for r in res.rows:
        assert r["schedule"] == "rectified_flow" and r["nfe"] == r["K"]
        assert 0.0 <= r["valid_word_fraction"] <= 1.0 or math.isnan(r["valid_word_fraction"])
        assert res.scores[(r["sampler"], r["K"])].shape == (LEARNED_N,)
        assert r["perplexity"] == pytest.approx(math.exp(res.scores[(r["sampler"], r["K"])].mean()))
    # the data's own references, recomputed from the evaluator's per-token NLLs
    inputs = few_step.learned_inputs(
        text, text.val_tokens, LEARNED_N, jr.split(jr.key(0))[0], 0.995
    )
    nll = np.asarray(text.evaluator.token_nll(jnp.asarray(inputs.reference)), np.float64)
    assert res.data["text_perplexity"] == pytest.approx(math.exp(nll.mean()), rel=1e-5)
    assert res.data["text_entropy"] == pytest.approx(
        few_step.markov_entropy(inputs.reference, text.vocab.size)
    )
    comp = few_step.ratio_at_steps(res, 2, entropy_tolerance=0.99)
    assert comp["best_ode"] == "ddim" and comp["best_escape"] in LEARNED_SAMPLERS


def test_learned_inputs_are_disjoint_encoded_validation_items(worlds):
    text = worlds.text
    inputs = few_step.learned_inputs(text, text.val_tokens, 6, jr.key(3), 0.9)
    assert not set(inputs.index.tolist()) & set(inputs.reference_index.tolist())
    val = np.asarray(text.val_tokens)
    np.testing.assert_array_equal(inputs.reference, val[inputs.reference_index])
    np.testing.assert_allclose(inputs.x0, text.encode(val[inputs.index]), rtol=1e-5, atol=1e-6)
    # rectified flow at t = 0.9: x_init = 0.1·x0 + 0.9·ε with ε standard normal
    eps = np.asarray((inputs.x_init - 0.1 * inputs.x0) / 0.9)
    assert abs(eps.std() - 1.0) < 4 * math.sqrt(0.5 / eps.size) + 0.05


def test_learned_image_rows_and_claims(worlds):
    image = worlds.image
    res = few_step.measure_learned_image(
        image,
        sampler_names=LEARNED_SAMPLERS,
        num_steps=LEARNED_STEPS,
        key=jr.key(1),
        num_samples=LEARNED_N,
    )
    assert not res.categorical
    assert {r["sampler"] for r in res.rows} == set(LEARNED_SAMPLERS)
    for r in res.rows:
        assert 0.0 < r["confidence"] <= 1.0 and r["nearest_train_distance"] > 0.0
    config = dataclasses.replace(TINY, learned_scale="untrained", learned_num_steps=LEARNED_STEPS)
    claim = few_step.learned_image_claim(res, config)
    assert claim.claim == "C3a" and claim.predicted == 1.0
    assert claim.held == (claim.interval[1] < config.ratio_threshold)


def test_renoise_rf_runs_on_a_rectified_flow_copy_beside_euler_rf():
    world = _small_world()
    res = few_step.measure_world(
        "w", world, sampler_names=("renoise_rf",), num_steps=(1, 2), key=jr.key(0), num_samples=8
    )
    assert res.categorical
    assert {(r["sampler"], r["schedule"], r["kind"]) for r in res.rows} == {
        ("renoise_rf", "rectified_flow", "hybrid"),
        ("euler_rf", "rectified_flow", "ode"),
    }
    for r in res.rows:
        assert math.isfinite(r["perplexity"]) and r["nfe"] == r["K"]
    assert res.scores[("euler_rf", 2)].shape == (8,)


def test_pad_vocabulary_keeps_the_world():
    world = _small_world()
    big = world.with_zipf_vocabulary(jr.key(4), 3)
    padded = few_step.pad_vocabulary(world, big)
    assert padded.vocab_size == 8 and padded.latent_shape == world.latent_shape
    z = jr.normal(jr.key(5), world.latent_shape)
    for t in (0.2, 0.7):
        np.testing.assert_allclose(padded.denoise(z, t), world.denoise(z, t), atol=1e-12)
    np.testing.assert_allclose(padded.readout(z), world.readout(z))
    _, tokens = world.sample_data(jr.key(6), 32)
    np.testing.assert_allclose(padded.log_likelihood(tokens), world.log_likelihood(tokens))
    assert float(padded.entropy_rate()) == pytest.approx(float(world.entropy_rate()))
    _, padded_tokens = padded.sample_data(jr.key(6), 256)
    assert int(jnp.max(padded_tokens)) < world.vocab_size
    with pytest.raises(ValueError, match="extend"):
        few_step.pad_vocabulary(big, world)


def test_markov_entropy_estimates_the_chain_entropy_rate():
    world = _small_world(branching=2)
    _, tokens = world.sample_data(jr.key(7), 20_000)
    est = few_step.markov_entropy(np.asarray(tokens), world.vocab_size)
    assert est == pytest.approx(float(world.entropy_rate()), abs=0.01)
    assert few_step.markov_entropy(np.zeros((50, 4), int), 5) == 0.0
    uniform = np.random.default_rng(0).integers(0, 4, size=(20_000, 3))
    assert few_step.unigram_entropy(uniform, 4) == pytest.approx(math.log(4), abs=2e-3)


def test_off_mode_fraction_of_data_is_the_chi_square_tail():
    d = 8
    world = GaussianMixture(
        jnp.array([[0.0] * d, [40.0] + [0.0] * (d - 1)]), jnp.array([0.5, 0.5]), 1.0
    )
    x, _ = world.sample_data(jr.key(8), 200_000)
    frac, se, ind = few_step.off_mode_fraction(np.asarray(x), np.asarray(world.means), 1.0, 4.0)
    thr = (d + 4 * math.sqrt(2 * d)) / 2  # P(chi2_8 > 2 thr) = e^-thr sum_j<4 thr^j/j!
    tail = math.exp(-thr) * sum(thr**j / math.factorial(j) for j in range(d // 2))
    assert ind.shape == (200_000,)
    assert abs(frac - tail) < 4 * math.sqrt(tail / 200_000)


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100_000, 2))
    y = rng.normal(size=(100_000, 2)) * np.array([2.0, 1.0]) + np.array([1.0, 0.0])
    # |Δm|² + tr(I + C − 2 C^½) with C = diag(4, 1): 1 + (1 + 4 − 4) + (1 + 1 − 2) = 2.
    assert few_step.frechet_distance(x, y) == pytest.approx(2.0, abs=0.05)
    assert few_step.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def _fake_result(entropy_escape):
    rng = np.random.default_rng(2)
    base = rng.normal(2.0, 0.3, size=400)
    scores = {
        ("ddim", 4): base + 0.6,
        ("heun", 4): base + 0.5,
        ("ddim_eta", 4): base + 0.1,
        ("restart", 4): base,
    }
    entropy = {
        ("ddim", 4): 2.0,
        ("heun", 4): 2.0,
        ("ddim_eta", 4): 2.0,
        ("restart", 4): entropy_escape,
    }
    nfe = {"ddim": 4, "heun": 8, "ddim_eta": 4, "restart": 8}
    rows = [{"sampler": n, "K": 4, "nfe": float(nfe[n])} for n, _ in scores]
    return few_step.WorldResult("fake", True, {"readout_entropy": 2.0}, rows, scores, entropy)


def test_ratio_at_steps_pairs_the_best_and_drops_collapsed_escapes():
    res = _fake_result(entropy_escape=2.0)
    comp = few_step.ratio_at_steps(res, 4, entropy_tolerance=0.1)
    assert (comp["best_ode"], comp["best_escape"]) == ("heun", "restart")
    assert comp["ratio"] == pytest.approx(math.exp(0.5)) and comp["log_ratio_se"] < 1e-9
    collapsed = few_step.ratio_at_steps(_fake_result(1.5), 4, entropy_tolerance=0.1)
    assert collapsed["best_escape"] == "ddim_eta" and "restart" not in collapsed["admissible"]
    assert collapsed["ratio"] == pytest.approx(math.exp(0.4))
    equal = few_step.ratio_at_steps(res, 4, entropy_tolerance=0.1, equal_nfe=True)
    assert (equal["best_ode"], equal["best_escape"]) == ("ddim", "ddim_eta")
    pair = few_step.pair_ratio(res, 4)
    assert pair["ratio"] == pytest.approx(math.exp(0.5))


def test_config_validation():
    with pytest.raises(ValueError, match="samplers"):
        few_step.Config(samplers=("eulr",))
    with pytest.raises(ValueError, match="verdict_steps"):
        few_step.Config(num_steps=(1, 2), verdict_steps=4)
    with pytest.raises(ValueError, match="num_steps"):
        few_step.Config(num_steps=(4, 2))
    with pytest.raises(ValueError, match="regularity_sweep"):
        few_step.Config(regularity_sweep=((0.0, 0.5),))


@pytest.mark.slow
def test_quick_scale_verdicts(tmp_path):
    """The quick-scale finding: with the exact posterior-mean denoiser (and with the
    variance-floor limited one) the ODE samplers are NOT far worse than the escapes at
    K = 4 (R ≈ 1, claim not held), while they are at K = 1 (R > 1.5)."""
    result = few_step.run(few_step.Config.quick(), tmp_path)
    claims = {c["statement"].split(":")[0]: c for c in result["claims"]}
    for label in ("text/exact", "text_zipf/exact"):
        assert not claims[label]["held"], claims[label]["detail"]
        assert 0.67 < claims[label]["measured"] < 1.5
    for label, world in result["metrics"]["worlds"].items():
        if label != "smooth":
            assert world["ratio_vs_steps"][0]["ratio"] > 1.5
    # learned worlds (quick models), at K = 4. Text: the "far worse" verdict (lower bound
    # >= 1.5) is not reached. With the smaller quick models that fit the 5-minute training
    # budget the measured R is 1.11 [0.96, 1.29] in the CLI (float32) and its interval
    # includes 1; the earlier, larger quick models gave 1.58 [1.33, 1.88]. Digits: the
    # ODE sampler is not far worse (R ≈ 1.05, held).
    text, image = result["claims"][-2:]
    assert text["statement"].startswith("learned text") and not text["held"], text["detail"]
    assert text["interval"][0] <= text["measured"] <= text["interval"][1]
    assert image["statement"].startswith("learned image") and image["held"], image["detail"]
    # at K = 1 DDIM outputs x̂0 of the (nearly pure) noise, close to one string for all: its
    # character entropy is below the data's and below DDIM's at every K >= 2 (measured in
    # the CLI: 0.84 nats vs 2.40 for the validation text and 2.88-2.92 for K >= 2; the
    # earlier, larger quick models gave < 0.25 x the data's, the current ones 0.35 x)
    learned = result["metrics"]["learned"]
    ddim = {r["K"]: r for r in learned["text"]["table"] if r["sampler"] == "ddim"}
    assert ddim[1]["entropy"] < learned["text"]["data"]["readout_entropy"]
    assert all(ddim[1]["entropy"] < ddim[k]["entropy"] for k in ddim if k >= 2)
