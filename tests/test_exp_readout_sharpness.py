"""experiments.readout_sharpness (C2): artifacts at a tiny size; references vs independent math."""

import dataclasses
import math

import jax.random as jr
import numpy as np
import pytest

from experiments import readout_sharpness as rs
from readout_jax import diagnostics
from readout_jax import io as rio

TINY = dataclasses.replace(
    rs.Config.quick(),
    dims=(6,),
    sharpness=(1.0, 16.0),
    num_latents=8,
    delta_grid=(),  # no δ-grid variants: one compile less per readout (the quick run has them)
    decoder_hidden=12,
    decoder_pixels=20,
    token_length=3,
    token_dim=3,
    token_vocab=6,
    token_chunk=4,
    token_latents=6,
    include_tokens=False,  # tested on its own below: each test stays under ~20 s
    num_bootstrap=20,
)


def test_tiny_run_writes_result_and_figures(tmp_path):
    result = rs.run(TINY, tmp_path)
    folder = tmp_path / "readout_sharpness"
    loaded = rio.read_json(folder / "result.json")
    assert loaded == result
    for field in ("name", "config", "seed", "versions", "elapsed_seconds", "metrics", "claims"):
        assert field in loaded
    claims = loaded["claims"]
    # one sharp claim per n and the smooth decoder (the token world is off here)
    assert [c["claim"] for c in claims] == ["C2"] * 2
    assert "smooth readout" in claims[-1]["statement"]
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
    assert loaded["figures"] == ["dabi_vs_dimension.png", "dabi_variants.png"]
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
