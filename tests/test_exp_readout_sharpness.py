"""experiments.readout_sharpness (C2): artifacts at a tiny size; references vs independent math."""

import dataclasses
import math

import jax
import jax.random as jr
import numpy as np
import pytest

from experiments import few_step
from experiments import readout_sharpness as rs
from readout_jax import diagnostics
from readout_jax import io as rio

TINY = dataclasses.replace(
    rs.Config.quick(),
    dims=(6,),
    sharpness=(1.0, 16.0),
    num_latents=8,
    delta_grid=(),  # no δ-grid variants: one compile less per readout (as the quick run)
    decoder_hidden=12,
    decoder_pixels=20,
    token_length=3,
    token_dim=3,
    token_vocab=6,
    token_chunk=4,
    token_latents=6,
    include_tokens=False,  # tested on its own below: each test stays under ~20 s
    num_bootstrap=20,
    # learned worlds: untrained tiny networks (the code path, not the science)
    learned_scale="untrained",
    learned_text_latents=3,
    learned_ar_latents=2,
    learned_image_latents=3,
)


def test_tiny_run_writes_result_and_figures(tmp_path):
    result = rs.run(TINY, tmp_path)
    folder = tmp_path / "readout_sharpness"
    loaded = rio.read_json(folder / "result.json")
    assert loaded == result
    for field in ("name", "config", "seed", "versions", "elapsed_seconds", "metrics", "claims"):
        assert field in loaded
    claims = loaded["claims"]
    # one sharp claim per n, the smooth decoder (the token world is off here), and the
    # learned rows: parallel / image, AR / image, image alone
    assert [c["claim"] for c in claims] == ["C2"] * 5
    assert "smooth readout" in claims[1]["statement"]
    assert "(parallel," in claims[2]["statement"] and "(autoregressive" in claims[3]["statement"]
    assert claims[4]["statement"].startswith("learned image decoder")
    learned = loaded["metrics"]["learned"]
    for which in ("parallel", "ar"):
        r = learned["ratios"][which]
        assert r["ratio"] == pytest.approx(r["median_a"] / r["median_b"])
        assert r["median_a"] == pytest.approx(learned["text"][which]["tv"]["median"])
        assert set(learned["text"][which]) == set(diagnostics.CATEGORICAL_MEASURES)
    assert set(learned["image"]["decoder"]) == set(diagnostics.SMOOTH_MEASURES)
    assert learned["text"]["num_ar_latents"] == TINY.learned_ar_latents
    for c in claims:
        assert math.isfinite(c["measured"]) and c["measured"] > 0
        assert isinstance(c["held"], bool) and c["detail"] and c["interval"] is not None
    metrics = loaded["metrics"]
    assert metrics["dtype"] == "float64"
    cells = metrics["categorical"][0]
    assert [c["sharpness"] for c in cells] == [1.0, 16.0]
    for c in cells:
        assert set(c["summary"]) == set(diagnostics.CATEGORICAL_MEASURES)
        tv = c["summary"]["tv"]
        assert tv["q25"] <= tv["median"] <= tv["q75"]
        assert tv["ci_low"] <= tv["median"] <= tv["ci_high"]
    # the isotropic linear readout has DABI exactly 1 (every variant)
    assert metrics["identity"][0]["euclidean"]["median"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["identity"][0]["linearized"]["median"] == pytest.approx(1.0, abs=1e-6)
    # a single n: no slope fit, and the result says why
    assert "note" in metrics["slopes"]["tv"][0]
    assert loaded["figures"] == ["dabi_vs_dimension.png", "dabi_variants.png", "dabi_learned.png"]
    for name in loaded["figures"]:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert loaded["arrays"] == ["dabi_primary.npz"]


def test_token_world_measurement_and_claim():
    rng = np.random.default_rng(0)
    world, cells = rs.measure_token_world(TINY, key=jr.key(3), rng=rng)
    assert world.latent_shape == (TINY.token_length, TINY.token_dim)
    assert [c["sharpness"] for c in cells] == [1.0, 16.0]
    tv = cells[0]["per_latent"]["tv"]
    assert tv.shape == (TINY.token_latents, TINY.token_length)
    # DABI depends on β only through the margin β·m: a sharper readout, a larger margin
    assert cells[1]["median_margin"] == pytest.approx(16.0 * cells[0]["median_margin"])
    claim = rs.token_claim(TINY, world, cells)
    assert claim.claim == "C2" and "β = 1" in claim.statement
    assert claim.measured == pytest.approx(cells[0]["summary"]["tv"]["median"])
    assert claim.held == (claim.interval[0] > TINY.sharp_threshold)


@pytest.mark.parametrize("dim", [2, 3, 8, 20])
def test_sharp_limit_matches_sphere_monte_carlo(dim):
    rng = np.random.default_rng(dim)
    u = rng.normal(size=(400_000, dim))
    c = u[:, 0] / np.linalg.norm(u, axis=1)
    p = np.mean(c < -0.5)
    se = math.sqrt(p * (1 - p) / c.size)
    assert abs(1.0 / rs.sharp_limit_dabi(dim) - p) < 4 * se
    if dim == 2:
        assert rs.sharp_limit_dabi(2) == pytest.approx(3.0, rel=1e-9)


def test_soft_limit_closed_form():
    assert rs.soft_limit_dabi(1) == pytest.approx(1.0)
    assert rs.soft_limit_dabi(2) == pytest.approx(math.pi / 2)
    assert rs.soft_limit_dabi(3) == pytest.approx(2.0)  # E|c| = 1/2 on S²
    assert rs.soft_limit_dabi(10_000) / math.sqrt(math.pi * 10_000 / 2) == pytest.approx(
        1.0, rel=1e-3
    )


def test_summarize_index_handles_inf_and_nan():
    rng = np.random.default_rng(0)
    values = np.concatenate([np.arange(1.0, 9.0), [np.inf, np.inf, np.nan]])
    out = rs.summarize_index(values, rng=rng, num_bootstrap=200)
    assert out["median"] == 5.0  # lower median of 1..8, inf, inf
    assert out["fraction_infinite"] == pytest.approx(2 / 11)
    assert out["fraction_nan"] == pytest.approx(1 / 11)
    assert out["ci_low"] <= out["median"] <= out["ci_high"]
    # rows are resampled whole: positions of one latent stay together
    grouped = rs.summarize_index(np.ones((5, 3)), rng=rng, num_bootstrap=50)
    assert grouped["num"] == 5 and grouped["median"] == 1.0


def test_isometric_and_tanh_decoders(key):
    lin = rs.SmoothDecoder.isometric(3, hidden=4, pixels=5)
    x = np.array([0.3, -1.0, 2.0])
    np.testing.assert_allclose(np.asarray(lin.decode(x)), [0.3, -1.0, 2.0, 0.0, 0.0])
    dec = rs.SmoothDecoder.random_tanh(key, 3, hidden=16, pixels=5)
    assert dec.decode(x).shape == (5,)
    # the dense-Jacobian reference equals the linearised DABI's definition
    ratio = rs.dense_linearized_dabi(lin, np.stack([x, 2 * x]))
    np.testing.assert_allclose(ratio, 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="isometric"):
        rs.SmoothDecoder.isometric(6, hidden=4, pixels=5)


def test_measure_readout_accepts_any_readout(key):
    dec = rs.SmoothDecoder.random_tanh(key, 4, hidden=8, pixels=6)
    x = jr.normal(jr.key(1), (5, 4))
    summary, per_latent = rs.measure_readout(
        dec.decode,
        x,
        key=jr.key(2),
        rng=np.random.default_rng(0),
        delta=0.5,
        delta_grid=(0.25, 0.5),
        readout_kind="smooth",
        num_bootstrap=20,
    )
    assert set(summary) == {*diagnostics.SMOOTH_MEASURES, "euclidean_grid"}
    assert per_latent["euclidean"].shape == (5,)
    assert per_latent["euclidean_grid"].shape == (5, 2)
    assert [g["delta"] for g in summary["euclidean_grid"]] == [0.25, 0.5]
    # the grid point at the primary δ reproduces the primary setting exactly
    assert summary["euclidean_grid"][1]["median"] == pytest.approx(summary["euclidean"]["median"])
    assert summary["euclidean"]["median"] >= 0.9  # ≥ 1 at linear order (Jensen)


def test_median_ratio_interval():
    rng = np.random.default_rng(0)
    out = rs.median_ratio_interval(
        np.full((5, 3), 20.0), np.full(7, 2.0), rng=rng, num_bootstrap=50
    )
    assert (out["ratio"], out["ci_low"], out["ci_high"]) == (10.0, 10.0, 10.0)
    a, b = rng.lognormal(3.0, 1.0, (200, 4)), rng.lognormal(0.0, 0.5, 300)
    out = rs.median_ratio_interval(a, b, rng=rng, num_bootstrap=500)
    assert out["ci_low"] <= out["ratio"] <= out["ci_high"]
    assert out["ratio"] == pytest.approx(
        np.quantile(a, 0.5, method="inverted_cdf") / np.quantile(b, 0.5, method="inverted_cdf")
    )


def test_per_latent_readouts_equal_the_batched_measurement():
    # the mixture, latents and settings of TINY's n = 6 cell (its program is compiled)
    world = rs.make_mixture(TINY, 6, jr.key(0))
    x, _ = world.sample_data(jr.key(1), TINY.num_latents)
    opts = dict(key=jr.key(2), num_bootstrap=20)
    batched, per_b = rs.measure_readout(world, x, rng=np.random.default_rng(0), **opts)
    looped, per_l = rs.measure_readout_per_latent(
        [world] * x.shape[0], x, rng=np.random.default_rng(0), **opts
    )
    for name in diagnostics.CATEGORICAL_MEASURES:
        np.testing.assert_allclose(per_l[name], per_b[name], rtol=1e-9)
    assert looped["tv"]["median"] == pytest.approx(batched["tv"]["median"], rel=1e-12)
    with pytest.raises(ValueError, match="one readout per latent"):
        rs.measure_readout_per_latent([world], x, rng=np.random.default_rng(0), key=jr.key(2))


def test_teacher_forced_ar_reads_the_greedy_decode_at_the_clean_latent():
    from flax import nnx

    text = few_step.learned_worlds("untrained").text
    # two latents, as TINY's AR part: the greedy-decode program is already compiled
    x = text.encode(np.asarray(text.val_tokens[: TINY.learned_ar_latents]))
    prefix, logits = text.ar_decode(x)  # greedy, committed feedback
    graphdef, state = nnx.split(text.autoencoder.ar)
    logits_of = jax.jit(lambda r, z: r.logits(z))  # readouts as arguments, not constants
    for i in range(x.shape[0]):
        readout = rs.TeacherForcedAR(graphdef, state, prefix[i])
        # teacher forcing on the decoder's own committed tokens gives, at every position,
        # the logits the left-to-right greedy decode computed there
        np.testing.assert_allclose(logits_of(readout, x[i]), logits[i], atol=1e-5)
        np.testing.assert_array_equal(readout.readout(x[i]), prefix[i])


def test_config_validation():
    with pytest.raises(ValueError, match="sharpness"):
        rs.Config(sharpness=(4.0, 1.0))
    with pytest.raises(ValueError, match="sharp_min"):
        rs.Config(sharpness=(0.5, 1.0), sharp_min=4.0)
    with pytest.raises(ValueError, match="num_directions"):
        rs.Config(num_directions=16)
    with pytest.raises(ValueError, match="dims"):
        rs.Config(dims=(8, 2))


@pytest.mark.slow
def test_quick_scale_verdicts(tmp_path):
    result = rs.run(rs.Config.quick(), tmp_path)
    claims = result["claims"]
    dims = rs.Config.quick().dims
    sharp = dict(zip(dims, claims[: len(dims)], strict=True))
    token, smooth = claims[len(dims)], claims[len(dims) + 1]
    # sharp categorical readouts are ≫ 1 in the dimensions of text latents ...
    assert all(sharp[n]["held"] for n in dims if n >= 32), [sharp[n]["detail"] for n in dims]
    # ... but not in n = 2, where even a hard readout is bounded by 1/P(u·n̂ < −½) = 3
    assert not sharp[2]["held"]
    assert token["held"], token["detail"]
    assert smooth["held"], smooth["detail"]
    # learned worlds (quick models): both text decoders ≫ the image decoder (measured
    # ratios of medians: parallel 161 [148, 172], AR 97 [62, 129]; with the earlier, larger
    # quick models the AR decoder was the sharper one, ≈ 790 vs 190), and the image
    # decoder's DABI ≈ 1.5, in [0, 2]
    parallel, ar, image = claims[len(dims) + 2 :]
    for c in (parallel, ar, image):
        assert c["held"], c["detail"]
