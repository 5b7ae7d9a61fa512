"""experiments.commitment (C3b): artifacts at a tiny size; commitment statistics by hand."""

import dataclasses
import math

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import readout_jax as rj
from experiments import commitment as cm
from readout_jax import diagnostics
from readout_jax import io as rio

TINY = dataclasses.replace(
    cm.Config.quick(),
    worlds=("tokens",),  # the mixture world is exercised by the CCI test below
    samplers=("ddim", "ddim_eta"),
    rf_reference=False,
    num_steps=(3,),
    batch_size=8,
    token_length=3,
    token_dim=3,
    token_vocab=6,
)


def test_tiny_run_writes_result_and_figures(tmp_path):
    result = cm.run(TINY, tmp_path)
    folder = tmp_path / "commitment"
    loaded = rio.read_json(folder / "result.json")
    assert loaded == result
    for field in ("name", "config", "seed", "versions", "elapsed_seconds", "metrics", "claims"):
        assert field in loaded
    claims = loaded["claims"]
    assert [c["claim"] for c in claims] == ["C3b"]  # one per world
    for c in claims:
        assert math.isfinite(c["measured"]) and -1.0 <= c["measured"] <= 1.0
        assert isinstance(c["held"], bool) and c["detail"]
        assert c["held"] == (c["interval"][0] > 0)
    metrics = loaded["metrics"]
    assert metrics["groups"] == {"ode": ["ddim"], "sde": ["ddim_eta"], "hybrid": []}
    for world in TINY.worlds:
        w = metrics["worlds"][world]
        assert w["ar_intervention"]["measured"] is False
        for name in ("ddim", "ddim_eta"):
            s = w["samplers"][name]["3"]
            assert 0.0 <= s["cci"] <= 1.0 and len(s["mean_curve"]) == 3
            assert 0.0 <= s["half_commit_fraction"] <= 1.0
            assert s["nfe"] == 4.0  # 3 steps + the terminal posterior mean
    assert loaded["figures"] == ["commitment_curves.png", "cci_by_sampler.png"]
    for name in loaded["figures"]:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_commitment_from_tokens_by_hand():
    # batch 2, K = 3, 2 positions
    tokens = jnp.array([[[0, 5], [1, 5], [1, 4]], [[2, 2], [2, 2], [2, 2]]])
    final = jnp.array([[1, 5], [2, 3]])
    com = cm.commitment_from_tokens(tokens, final)
    np.testing.assert_allclose(com.curve, [[0.5, 1.0, 0.5], [0.5, 0.5, 0.5]])
    np.testing.assert_allclose(com.index, [2 / 3, 0.5])
    # position (0,0): last disagreement at step 1 -> committed from step 2 (index 1)
    # position (0,1): disagrees at step 3 -> committed only at the terminal output (3)
    np.testing.assert_array_equal(com.commit_step, [[1, 3], [0, 3]])
    # changes along 0,1,1,(1) and 5,5,4,(5); 2,2,2,(2) and 2,2,2,(3)
    np.testing.assert_array_equal(com.num_changes, [[1, 2], [0, 1]])


def test_measure_world_cci_equals_diagnostics_cci(key):
    world = cm.make_world(dataclasses.replace(TINY, gmm_dim=3), "gmm", key)
    samplers = cm.make_samplers(["ddim"])
    records = cm.measure_world(world, samplers, [3], key=jr.key(4), num_trajectories=6)
    rec = records["ddim"][3]
    # rebuild the same run by hand: same noise key split, same grid
    key_prior, key_sample = jr.split(jr.key(4))
    ts = rj.time_grid(world.schedule, 3, t_max=0.995)
    x_init = rj.prior_sample(key_prior, world, 6, t=0.995)
    out = rj.sample(samplers["ddim"], world, key_sample, x_init, ts)
    ref = diagnostics.cci(world, out.info.x0_hat, out.x0)
    np.testing.assert_allclose(rec["index"], ref.index)
    np.testing.assert_allclose(rec["curve"], ref.curve)
    np.testing.assert_allclose(rec["ts"], ts)


def test_paired_group_difference():
    records = {
        "a": {4: {"index": np.array([0.5, 0.7, 0.9])}, 8: {"index": np.array([0.5, 0.5, 0.5])}},
        "b": {4: {"index": np.array([0.4, 0.4, 0.4])}, 8: {"index": np.array([0.3, 0.5, 0.7])}},
    }
    mean, se, d = cm.paired_group_difference(records, ["a"], ["b"])
    np.testing.assert_allclose(d, [0.15, 0.15, 0.15])
    assert mean == pytest.approx(0.15) and se == pytest.approx(0.0, abs=1e-12)


def test_ar_hook_not_measured_without_decoder_and_measured_with_one():
    world = cm.make_world(TINY, "tokens", jr.key(0))
    out = cm.ar_commitment(world)
    assert out["measured"] is False and "not measured" in out["reason"]
    with pytest.raises(ValueError, match="both"):
        cm.ar_commitment(world, decode_committed_fn=lambda z, k: jnp.zeros(3))
    with pytest.raises(ValueError, match="measured"):
        cm.ar_claim(out, world_name="tokens")

    def committed(z, key):
        del key
        return jnp.full((3,), 1.0) + 0.01 * jnp.sum(z)

    def soft(z, key):
        del key
        return jnp.full((3,), 2.0) + 0.01 * jnp.sum(z)

    z = jr.normal(jr.key(1), (5, 3, 3))
    out = cm.ar_commitment(
        world, z, key=jr.key(2), decode_committed_fn=committed, decode_soft_fn=soft
    )
    assert out["measured"] is True
    assert out["log_ratio"] == pytest.approx(1.0, rel=1e-5)  # mean NLL 2 − 1 nats
    claim = cm.ar_claim(out, world_name="tokens")
    assert claim.claim == "C3b" and claim.held


def test_config_validation():
    with pytest.raises(ValueError, match="samplers"):
        cm.Config(samplers=("eulr",))
    with pytest.raises(ValueError, match="worlds"):
        cm.Config(worlds=("images",))
    with pytest.raises(ValueError, match="euler_maruyama"):
        cm.Config(t_max=1.0)
    with pytest.raises(ValueError, match="num_steps"):
        cm.Config(num_steps=(0,))


@pytest.mark.slow
def test_quick_scale_verdicts_are_computed(tmp_path):
    result = cm.run(cm.Config.quick(), tmp_path)
    assert len(result["claims"]) == 2
    for c in result["claims"]:
        assert math.isfinite(c["measured"])
        assert c["held"] == (c["interval"][0] > 0), c["detail"]
