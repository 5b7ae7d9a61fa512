# ruff: noqa: E501  (the case table keeps one case per line)
"""Bad input everywhere public: every error names the argument and its valid range.

One table of (public name, bad input, expected error, message pattern) walks the public
API (`readout_jax.__all__` and the subpackages' `__all__`); `test_every_public_callable
_is_walked` fails when a public callable has neither a case here nor a stated reason.
Each pattern names the argument AND the valid range (or the valid names), so an error
from deep inside JAX, a bare `TypeError` or a silent NaN fails the test.
"""

from __future__ import annotations

import inspect
import os
import pathlib
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import readout_jax as rj
from readout_jax import diagnostics, io, manifolds, readouts, samplers, schedules, sharding, sweep
from readout_jax.manifolds import GaussianMixture, HierarchicalMixture, TokenSequence

KEY = jr.key(0)
NAN = float("nan")

GMM = GaussianMixture(jnp.array([[-1.0, 0.0], [1.0, 0.0]]), jnp.array([0.5, 0.5]), 0.5)
SMOOTH = GaussianMixture(GMM.means, GMM.weights, 0.5, readout_kind="smooth")
SEQ = TokenSequence.synthetic(KEY, 5, 3, 2, std=0.3)  # V = 5, L = 3, d = 2
TREE = HierarchicalMixture.create(KEY, 2, 2, 3)  # M = 4 leaves in R^3
TS = rj.time_grid(GMM.schedule, 3)
X = jnp.zeros((4, 2))
Z = jnp.ones(2)
EMB, LOG_INIT, LOG_TRANS = SEQ.embeddings, SEQ.log_initial, SEQ.log_transition


class _Unhashable:
    """A callable that cannot be a static argument of jit."""

    __hash__ = None  # type: ignore[assignment]

    def __call__(self, x):
        return jnp.tanh(x)


class Case(NamedTuple):
    name: str  # the public callable under test ("Class.method" for methods)
    id: str
    call: Callable[[], object]
    error: type[Exception]
    match: str  # must name the argument and the valid range / valid names


def _gmm(**kw):
    args = {"means": GMM.means, "weights": GMM.weights, "std": 0.5, **kw}
    return lambda: GaussianMixture(**args)


def _seq(**kw):
    args = {
        "embeddings": EMB,
        "log_initial": LOG_INIT,
        "log_transition": LOG_TRANS,
        "std": 0.3,
        "length": 3,
        **kw,
    }
    return lambda: TokenSequence(**args)


E, T = ValueError, TypeError
RANGE_T = r"t must be (finite and )?in \[0\.0, 1\.0\]"
LATENT = r"must be a real floating array"

# fmt: off
CASES = [
    # ---- schedules ---------------------------------------------------------------------
    Case("get_schedule", "unknown", lambda: rj.get_schedule("cosine"), E, r"unknown schedule 'cosine'; valid schedules are \['rectified_flow'"),
    Case("get_schedule", "unhashable", lambda: rj.get_schedule(["ve"]), E, r"valid schedules are"),
    Case("get_schedule", "bad-kwarg", lambda: rj.get_schedule("ve", sigma_mn=1.0), E, r"'sigma_mn'.*valid ones are \['sigma_min', 'sigma_max'\]"),
    Case("VPCosine", "offset<0", lambda: schedules.VPCosine(offset=-0.5), E, r"offset must be a finite number >= 0"),
    Case("VPCosine", "offset-nan", lambda: schedules.VPCosine(offset=NAN), E, r"offset must be a finite number >= 0"),
    Case("VPCosine", "offset-complex", lambda: schedules.VPCosine(offset=1j), E, r"offset must be real"),
    Case("VPLinear", "beta_min<0", lambda: schedules.VPLinear(beta_min=-1.0), E, r"beta_min must be a finite number >= 0"),
    Case("VPLinear", "beta_max<beta_min", lambda: schedules.VPLinear(5.0, 1.0), E, r"beta_max must be a finite number >= beta_min = 5\.0"),
    Case("VPLinear", "no-noise", lambda: schedules.VPLinear(0.0, 0.0), E, r"beta_max must be > 0"),
    Case("VE", "sigma_min=0", lambda: schedules.VE(sigma_min=0.0), E, r"sigma_min must be a finite number > 0"),
    Case("VE", "sigma_max<sigma_min", lambda: schedules.VE(10.0, 1.0), E, r"sigma_max must be a finite number > sigma_min = 10\.0"),
    Case("VE", "sigma_max-nan", lambda: schedules.VE(sigma_max=NAN), E, r"sigma_max must be a finite number > sigma_min"),
    Case("VE", "sigma_max-inf", lambda: schedules.VE(sigma_max=float("inf")), E, r"sigma_max must be a finite number"),
    Case("AbstractSchedule.alpha", "t>1", lambda: schedules.RectifiedFlow().alpha(2.0), E, RANGE_T),
    Case("AbstractSchedule.alpha", "t<0", lambda: schedules.VPCosine().alpha(jnp.array([0.5, -0.1])), E, RANGE_T),
    Case("AbstractSchedule.alpha", "t-nan", lambda: schedules.VPLinear().alpha(NAN), E, RANGE_T),
    Case("AbstractSchedule.alpha", "t-bool", lambda: schedules.VE().alpha(True), E, r"t must be real .*got dtype bool"),
    Case("AbstractSchedule.sigma", "t-complex", lambda: schedules.VE().sigma(0.5j), E, r"t must be real .*complex"),
    Case("AbstractSchedule.sigma", "t>1", lambda: schedules.VE().sigma(1.5), E, RANGE_T),
    Case("AbstractSchedule.noise_scale", "t>1", lambda: schedules.VPCosine().noise_scale(1.01), E, RANGE_T),
    Case("AbstractSchedule.log_snr", "t<0", lambda: schedules.VPCosine().log_snr(-0.01), E, RANGE_T),
    Case("AbstractSchedule.d_alpha", "t>1", lambda: schedules.VPCosine().d_alpha(2.0), E, RANGE_T),
    Case("AbstractSchedule.d_sigma", "t-nan", lambda: schedules.RectifiedFlow().d_sigma(NAN), E, RANGE_T),
    Case("AbstractSchedule.t_from_noise_scale", "s<0", lambda: schedules.VPCosine().t_from_noise_scale(-1.0), E, r"s must be a noise scale in \[0, inf\]"),
    Case("AbstractSchedule.t_from_noise_scale", "s-nan", lambda: schedules.VE().t_from_noise_scale(NAN), E, r"s must be a noise scale in \[0, inf\]"),
    Case("time_grid", "K=0", lambda: rj.time_grid(GMM.schedule, 0), E, r"num_steps must be >= 1"),
    Case("time_grid", "K-float", lambda: rj.time_grid(GMM.schedule, 2.0), E, r"num_steps must be an int >= 1"),
    Case("time_grid", "K-bool", lambda: rj.time_grid(GMM.schedule, True), E, r"num_steps must be an int >= 1"),
    Case("time_grid", "unknown-kind", lambda: rj.time_grid(GMM.schedule, 4, "edm"), E, r"unknown grid kind 'edm'; valid kinds are \['uniform', 'karras', 'logsnr'\]"),
    Case("time_grid", "t_min>=t_max", lambda: rj.time_grid(GMM.schedule, 4, t_min=0.5, t_max=0.5), E, r"need 0 <= t_min < t_max <= 1"),
    Case("time_grid", "t_max>1", lambda: rj.time_grid(GMM.schedule, 4, t_max=1.5), E, r"need 0 <= t_min < t_max <= 1"),
    Case("time_grid", "t_min<0", lambda: rj.time_grid(GMM.schedule, 4, t_min=-0.1), E, r"t_min must be a finite number >= 0"),
    Case("time_grid", "t_min-nan", lambda: rj.time_grid(GMM.schedule, 4, t_min=NAN), E, r"t_min must be a finite number >= 0"),
    Case("time_grid", "rho-nan", lambda: rj.time_grid(GMM.schedule, 4, "karras", rho=NAN), E, r"rho must be a finite number > 0"),
    Case("time_grid", "rho<0", lambda: rj.time_grid(GMM.schedule, 4, rho=-1.0), E, r"rho must be a finite number > 0"),
    Case("time_grid", "max_noise_scale<0", lambda: rj.time_grid(GMM.schedule, 4, "logsnr", max_noise_scale=-1.0), E, r"max_noise_scale must be a number > 0"),
    Case("time_grid", "min_noise_scale-nan", lambda: rj.time_grid(GMM.schedule, 4, "logsnr", min_noise_scale=NAN), E, r"min_noise_scale must be a finite number > 0"),
    Case("time_grid", "min>=max-noise-scale", lambda: rj.time_grid(GMM.schedule, 4, min_noise_scale=2.0, max_noise_scale=1.0), E, r"need 0 < min_noise_scale < max_noise_scale"),
    Case("time_grid", "schedule-object", lambda: rj.time_grid(object(), 4, "karras"), T, r"schedule must be a schedule name \['rectified_flow'.*or an AbstractSchedule"),
    Case("time_grid", "schedule-name", lambda: rj.time_grid("cosine", 4), E, r"unknown schedule 'cosine'; valid schedules are"),
    Case("time_grid", "too-many-steps", lambda: rj.time_grid(GMM.schedule, 100, t_min=0.5, t_max=0.5 + 1e-15), E, r"grid with num_steps=100 on \[0\.5, 0\.5.*\] is not strictly decreasing"),
    Case("time_grid", "empty-noise-range", lambda: rj.time_grid(GMM.schedule, 4, "logsnr", t_min=0.999, max_noise_scale=10.0), E, r"noise-scale range .* is empty: need s\(t_min\).*< s\(t_max\) \(at most max_noise_scale = 10\.0\)"),
    Case("add_noise", "shape-mismatch", lambda: schedules.add_noise(GMM.schedule, Z, jnp.ones(3), 0.5), E, r"add_noise: the latents must have the same shape, got x0 \(2,\), eps \(3,\)"),
    Case("add_noise", "int-latent", lambda: schedules.add_noise(GMM.schedule, jnp.ones(2, int), Z, 0.5), E, r"x0 " + LATENT),
    Case("add_noise", "t>1", lambda: schedules.add_noise(GMM.schedule, Z, Z, 1.5), E, RANGE_T),
    Case("add_noise", "bad-schedule", lambda: schedules.add_noise(None, Z, Z, 0.5), T, r"schedule must be a schedule name"),
    Case("eps_from_x0", "sigma=0", lambda: schedules.eps_from_x0(GMM.schedule, Z, Z, 0.0), E, r"eps_from_x0 divides by sigma\(t\), which is 0 at t = 0\.0 .*t in \(0, 1\]"),
    Case("eps_from_x0", "complex-z", lambda: schedules.eps_from_x0(GMM.schedule, Z * 1j, Z, 0.5), E, r"z " + LATENT),
    Case("x0_from_eps", "alpha=0", lambda: schedules.x0_from_eps(GMM.schedule, Z, Z, 1.0), E, r"x0_from_eps divides by alpha\(t\), which is 0 at t = 1\.0 .*t in \[0, 1\)"),
    Case("score_from_x0", "sigma=0", lambda: schedules.score_from_x0(schedules.RectifiedFlow(), Z, Z, 0), E, r"score_from_x0 divides by sigma\(t\).*t in \(0, 1\]"),
    Case("x0_from_score", "alpha=0", lambda: schedules.x0_from_score(schedules.RectifiedFlow(), Z, Z, 1), E, r"x0_from_score divides by alpha\(t\).*t in \[0, 1\)"),
    Case("velocity_from_x0", "sigma=0", lambda: schedules.velocity_from_x0(GMM.schedule, Z, Z, 0.0), E, r"velocity_from_x0 divides by sigma\(t\).*t in \(0, 1\]"),
    Case("velocity_from_x0", "bool-x0", lambda: schedules.velocity_from_x0(GMM.schedule, Z, Z > 0, 0.5), E, r"x0 " + LATENT),
    Case("x0_from_velocity", "sigma=0", lambda: schedules.x0_from_velocity(schedules.VPLinear(), Z, Z, 0.0), E, r"x0_from_velocity divides by sigma\(t\).*t in \(0, 1\]"),
    Case("x0_from_velocity", "shape-mismatch", lambda: schedules.x0_from_velocity(GMM.schedule, Z, jnp.ones(3), 0.5), E, r"the latents must have the same shape, got z \(2,\), v \(3,\)"),
    # ---- samplers ----------------------------------------------------------------------
    Case("get_sampler", "unknown", lambda: rj.get_sampler("eulr"), E, r"unknown sampler 'eulr'; valid samplers are \['churn'"),
    Case("get_sampler", "not-a-name", lambda: rj.get_sampler(3), E, r"unknown sampler 3; valid samplers are"),
    Case("get_sampler", "bad-hyperparameter", lambda: rj.get_sampler("ddim_eta", gamma=1.0), E, r"bad hyperparameters \['gamma'\].*valid ones are \['eta'\]"),
    Case("get_sampler", "unknown-inner", lambda: rj.get_sampler("churn", inner="hune"), E, r"unknown inner sampler 'hune' for 'churn'; valid samplers are"),
    Case("DDIMEta", "eta<0", lambda: samplers.DDIMEta(eta=-0.1), E, r"eta must be in \[0\.0, 1\.0\], got -0\.1"),
    Case("DDIMEta", "eta>1", lambda: samplers.DDIMEta(eta=1.5), E, r"eta must be in \[0\.0, 1\.0\], got 1\.5"),
    Case("DDIMEta", "eta-nan", lambda: samplers.DDIMEta(eta=NAN), E, r"eta must be in \[0\.0, 1\.0\], got nan"),
    Case("DDIMEta", "eta-bool", lambda: samplers.DDIMEta(eta=True), E, r"eta must be real .*got dtype bool"),
    Case("DDIMEta", "eta-vector", lambda: samplers.DDIMEta(eta=jnp.array([0.5, 0.5])), E, r"eta must be a scalar, got shape \(2,\)"),
    Case("Churn", "gamma<0", lambda: samplers.Churn(gamma=-0.1), E, r"gamma must be a finite number >= 0"),
    Case("Churn", "gamma-nan", lambda: samplers.Churn(gamma=NAN), E, r"gamma must be a finite number >= 0"),
    Case("Churn", "gamma-complex", lambda: samplers.Churn(gamma=1j), E, r"gamma must be real .*complex"),
    Case("Churn", "s_churn_min-nan", lambda: samplers.Churn(s_churn_min=NAN), E, r"s_churn_min must be a finite number >= 0"),
    Case("Churn", "s_churn_max<0", lambda: samplers.Churn(s_churn_max=-1.0), E, r"s_churn_max must be a number >= 0"),
    Case("Churn", "min>max", lambda: samplers.Churn(s_churn_min=2.0, s_churn_max=1.0), E, r"need 0 <= s_churn_min <= s_churn_max"),
    Case("Churn", "inner-not-sampler", lambda: samplers.Churn(inner="ddim"), T, r"Churn: inner must be a sampler with init and step, got str"),
    Case("Churn", "inner-multistep", lambda: samplers.Churn(inner=samplers.DPMpp2M()), E, r"Churn: inner sampler DPMpp2M carries state.*use a one-step sampler"),
    Case("Restart", "s_restart_min<=0", lambda: samplers.Restart(s_restart_min=0.0), E, r"s_restart_min must be a finite number > 0"),
    Case("Restart", "max<=min", lambda: samplers.Restart(s_restart_min=1.0, s_restart_max=0.5), E, r"need s_restart_max > s_restart_min"),
    Case("Restart", "num_restarts=0", lambda: samplers.Restart(num_restarts=0), E, r"num_restarts must be >= 1"),
    Case("Restart", "num_inner_steps-float", lambda: samplers.Restart(num_inner_steps=2.0), E, r"num_inner_steps must be an int >= 1"),
    Case("RenoiseRF", "gamma<0", lambda: samplers.RenoiseRF(gamma=-1.0), E, r"gamma must be a finite number >= 0"),
    Case("RenoiseRF", "wrong-schedule", lambda: rj.sample(samplers.RenoiseRF(), GMM, KEY, X, TS), E, r"renoise_rf is defined on the rectified_flow schedule.*'vp_cosine'"),
    Case("MarginGated", "eta>1", lambda: samplers.MarginGated(eta=2.0), E, r"eta must be in \[0\.0, 1\.0\]"),
    Case("MarginGated", "threshold-nan", lambda: samplers.MarginGated(threshold=NAN), E, r"threshold must be a finite number >= 0"),
    Case("MarginGated", "smooth-world", lambda: rj.sample(samplers.MarginGated(), SMOOTH, KEY, X, TS), E, r"margin_gated needs a categorical world"),
    Case("EulerMaruyama", "alpha=0-start", lambda: rj.sample(samplers.EulerMaruyama(), GMM, KEY, X, TS), E, r"euler_maruyama needs alpha\(t\) > 0.*t_max < 1"),
    # ---- the harness (validation as it is today; harness.py belongs to another part) ---
    Case("sample", "K=0", lambda: rj.sample(samplers.DDIM(), GMM, KEY, X, TS[:1]), E, r"num_steps = len\(ts\) - 1 must be >= 1"),
    Case("sample", "ts-increasing", lambda: rj.sample(samplers.DDIM(), GMM, KEY, X, TS[::-1]), E, r"ts must be strictly decreasing"),
    Case("sample", "ts-out-of-range", lambda: rj.sample(samplers.DDIM(), GMM, KEY, X, jnp.array([1.5, 0.5])), E, r"ts must lie in the schedule's range \[0, 1\]"),
    Case("sample", "ts-nan", lambda: rj.sample(samplers.DDIM(), GMM, KEY, X, TS.at[1].set(NAN)), E, r"ts contains NaN or inf"),
    Case("sample", "ts-2d", lambda: rj.sample(samplers.DDIM(), GMM, KEY, X, TS[None]), E, r"ts must be 1-D \(num_steps \+ 1,\)"),
    Case("sample", "x-shape", lambda: rj.sample(samplers.DDIM(), GMM, KEY, jnp.zeros((4, 3)), TS), E, r"x_init must have shape \(batch, \*latent_shape\) = \(batch, 2\)"),
    Case("sample", "empty-batch", lambda: rj.sample(samplers.DDIM(), GMM, KEY, jnp.zeros((0, 2)), TS), E, r"x_init has an empty batch"),
    Case("sample", "x-int", lambda: rj.sample(samplers.DDIM(), GMM, KEY, jnp.zeros((4, 2), int), TS), E, r"x_init must be a floating array"),
    Case("sample", "x-complex", lambda: rj.sample(samplers.DDIM(), GMM, KEY, X.astype(complex), TS), E, r"x_init must be a floating array"),
    Case("sample", "x-bool", lambda: rj.sample(samplers.DDIM(), GMM, KEY, X > 0, TS), E, r"x_init must be a floating array"),
    Case("sample", "x-nan", lambda: rj.sample(samplers.DDIM(), GMM, KEY, X.at[0, 0].set(NAN), TS), E, r"x_init contains NaN or inf"),
    Case("sample", "key-int", lambda: rj.sample(samplers.DDIM(), GMM, 0, X, TS), E, r"key must be a jax.random key"),
    Case("sample", "not-a-sampler", lambda: rj.sample(object(), GMM, KEY, X, TS), T, r"has no init\(\) method"),
    Case("sample", "not-a-manifold", lambda: rj.sample(samplers.DDIM(), None, KEY, X, TS), T, r"has no 'denoise'"),
    Case("sample", "record-not-callable", lambda: rj.sample(samplers.DDIM(), GMM, KEY, X, TS, record=3), E, r"record must be None or a function \(state, info\) -> pytree"),
    Case("sample", "ts-complex", lambda: rj.sample(samplers.DDIM(), GMM, KEY, X, TS.astype(complex)), E, r"ts must be a real \(floating\) array, got dtype complex128"),
    Case("sample", "chunk_size=0", lambda: rj.sample(samplers.DDIM(), GMM, KEY, X, TS, chunk_size=0), E, r"chunk_size must be None or an int >= 1, got 0"),
    Case("sample", "chunk_size-float", lambda: rj.sample(samplers.DDIM(), GMM, KEY, X, TS, chunk_size=2.5), E, r"chunk_size must be None or an int >= 1, got 2\.5"),
    Case("sample", "records-too-large", lambda: rj.sample(samplers.DDIM(), GMM, KEY, X, TS, max_record_bytes=16), E, r"more than max_record_bytes = .*pass record=None"),
    Case("prior_sample", "dtype-int", lambda: rj.prior_sample(KEY, GMM, 3, dtype=jnp.int32), E, r"dtype must be a floating dtype \(e\.g\. float32\), got int32"),
    Case("prior_sample", "mesh-not-a-mesh", lambda: rj.prior_sample(KEY, GMM, 4, mesh="batch"), T, r"mesh must be None or a jax.sharding.Mesh, got str"),
    Case("prior_sample", "num=0", lambda: rj.prior_sample(KEY, GMM, 0), E, r"num must be >= 1"),
    Case("prior_sample", "t>1", lambda: rj.prior_sample(KEY, GMM, 3, t=2.0), E, RANGE_T),
    Case("prior_sample", "t-nan", lambda: rj.prior_sample(KEY, GMM, 3, t=NAN), E, RANGE_T),
    # ---- manifolds ---------------------------------------------------------------------
    Case("GaussianMixture", "means-1d", _gmm(means=jnp.zeros(2)), E, r"means must have shape \(M, n\) with M, n >= 1"),
    Case("GaussianMixture", "no-modes", _gmm(means=jnp.zeros((0, 2)), weights=jnp.zeros(0)), E, r"means must have shape \(M, n\) with M, n >= 1"),
    Case("GaussianMixture", "means-complex", _gmm(means=GMM.means * 1j), E, r"means must be real .*complex"),
    Case("GaussianMixture", "means-bool", _gmm(means=GMM.means > 0), E, r"means must be real .*bool"),
    Case("GaussianMixture", "means-nan", _gmm(means=GMM.means.at[0, 0].set(NAN)), E, r"means contains NaN or inf; every entry must be finite"),
    Case("GaussianMixture", "weights-shape", _gmm(weights=jnp.ones(3) / 3), E, r"weights must have shape \(M,\) = \(2,\)"),
    Case("GaussianMixture", "weights<0", _gmm(weights=jnp.array([1.5, -0.5])), E, r"weights must be finite and non-negative"),
    Case("GaussianMixture", "weights-nan", _gmm(weights=jnp.array([NAN, 0.5])), E, r"weights must be finite and non-negative"),
    Case("GaussianMixture", "weights-sum", _gmm(weights=jnp.array([0.5, 0.6])), E, r"weights must sum to 1"),
    Case("GaussianMixture", "std=0", _gmm(std=0.0), E, r"std must be a finite number > 0, got 0\.0"),
    Case("GaussianMixture", "std<0", _gmm(std=-1.0), E, r"std must be a finite number > 0"),
    Case("GaussianMixture", "std-nan", _gmm(std=NAN), E, r"std must be a finite number > 0, got nan"),
    Case("GaussianMixture", "sharpness=0", _gmm(sharpness=0.0), E, r"sharpness must be a finite number > 0, got 0\.0"),
    Case("GaussianMixture", "sharpness-inf", _gmm(sharpness=float("inf")), E, r"sharpness must be a finite number > 0"),
    Case("GaussianMixture", "resp_scale<1", _gmm(resp_scale=0.5), E, r"resp_scale must be a finite number >= 1"),
    Case("GaussianMixture", "readout_kind", _gmm(readout_kind="argmax"), E, r"unknown readout_kind 'argmax'; valid kinds are \['categorical', 'smooth'\]"),
    Case("GaussianMixture", "schedule", _gmm(schedule="cosine"), E, r"unknown schedule 'cosine'; valid schedules are"),
    Case("GaussianMixture.denoise", "z-shape", lambda: GMM.denoise(jnp.ones(3), 0.5), E, r"z must have the latent shape \(2,\), got \(3,\)"),
    Case("GaussianMixture.denoise", "z-int", lambda: GMM.denoise(jnp.ones(2, int), 0.5), E, r"z " + LATENT),
    Case("GaussianMixture.denoise", "z-nan", lambda: GMM.denoise(jnp.array([NAN, 0.0]), 0.5), E, r"z contains NaN or inf"),
    Case("GaussianMixture.denoise", "t>1", lambda: GMM.denoise(Z, 2.0), E, RANGE_T),
    Case("GaussianMixture.denoise", "t-vector", lambda: GMM.denoise(Z, jnp.array([0.5, 0.5])), E, r"t must be a scalar time in \[0, 1\]"),
    Case("GaussianMixture.responsibilities", "t<0", lambda: GMM.responsibilities(Z, -0.5), E, RANGE_T),
    Case("GaussianMixture.marginal_log_prob", "z-complex", lambda: GMM.marginal_log_prob(Z * 1j, 0.5), E, r"z " + LATENT),
    Case("GaussianMixture.logits", "x-shape", lambda: GMM.logits(jnp.ones(3)), E, r"x must have the latent shape \(2,\)"),
    Case("GaussianMixture.decode", "x-int", lambda: GMM.decode(jnp.ones(2, int)), E, r"x " + LATENT),
    Case("GaussianMixture.readout", "x-shape", lambda: GMM.readout(jnp.ones((2, 2))), E, r"x must have the latent shape \(2,\)"),
    Case("GaussianMixture.sample_data", "num=0", lambda: GMM.sample_data(KEY, 0), E, r"num must be >= 1"),
    Case("GaussianMixture.sample_data", "key-int", lambda: GMM.sample_data(3, 2), E, r"key must be a jax.random key"),
    Case("GaussianMixture.random", "K=0", lambda: GaussianMixture.random(KEY, 0, 2), E, r"num_modes must be >= 1"),
    Case("GaussianMixture.random", "scale-nan", lambda: GaussianMixture.random(KEY, 2, 2, scale=NAN), E, r"scale must be a finite number >= 0"),
    Case("GaussianMixture.two_modes", "distance-nan", lambda: GaussianMixture.two_modes(NAN), E, r"distance must be a finite number >= 0"),
    Case("GaussianMixture.two_modes", "dim=0", lambda: GaussianMixture.two_modes(1.0, 0), E, r"dim must be >= 1"),
    Case("HierarchicalMixture", "directions-2d", lambda: HierarchicalMixture(jnp.ones((2, 3)), jnp.ones(2), 0.1), E, r"directions must have shape \(depth, branching, n\)"),
    Case("HierarchicalMixture", "radii-shape", lambda: HierarchicalMixture(TREE.directions, jnp.ones(3), 0.1), E, r"radii must have shape \(depth,\) = \(2,\)"),
    Case("HierarchicalMixture", "std=0", lambda: HierarchicalMixture(TREE.directions, TREE.radii, 0.0), E, r"std must be a finite number > 0"),
    Case("HierarchicalMixture.create", "branching=1", lambda: HierarchicalMixture.create(KEY, 2, 1, 3), E, r"branching must be >= 2"),
    Case("HierarchicalMixture.create", "depth=0", lambda: HierarchicalMixture.create(KEY, 0, 2, 3), E, r"depth must be >= 1"),
    Case("HierarchicalMixture.create", "decay>1", lambda: HierarchicalMixture.create(KEY, 2, 2, 3, decay=1.5), E, r"decay must be in \(0, 1\]"),
    Case("HierarchicalMixture.create", "radius-nan", lambda: HierarchicalMixture.create(KEY, 2, 2, 3, radius=NAN), E, r"radius must be a finite number > 0"),
    Case("HierarchicalMixture.level_labels", "leaf>=M", lambda: TREE.level_labels(jnp.array([4])), E, r"leaf must be token ids in \[0, 4\)"),
    Case("HierarchicalMixture.level_labels", "leaf-float", lambda: TREE.level_labels(jnp.array([1.0])), E, r"leaf must be integer token ids in \[0, 4\)"),
    Case("HierarchicalMixture.sample_data", "num=0", lambda: TREE.sample_data(KEY, 0), E, r"num must be >= 1"),
    Case("HierarchicalMixture.responsibilities", "t>1", lambda: TREE.responsibilities(jnp.ones(3), 1.5), E, RANGE_T),
    Case("HierarchicalMixture.logits", "x-int", lambda: TREE.logits(jnp.ones(3, int)), E, r"x " + LATENT),
    Case("HierarchicalMixture.decode", "x-shape", lambda: TREE.decode(jnp.ones(2)), E, r"x must have the latent shape \(3,\)"),
    Case("HierarchicalMixture.readout", "x-nan", lambda: TREE.readout(jnp.full(3, NAN)), E, r"x contains NaN or inf"),
    Case("HierarchicalMixture.denoise", "z-shape", lambda: TREE.denoise(jnp.ones(2), 0.5), E, r"z must have the latent shape \(3,\)"),
    Case("TokenSequence", "V=1", _seq(embeddings=EMB[:1], log_initial=jnp.zeros(1), log_transition=jnp.zeros((1, 1))), E, r"embeddings must have shape \(V, d\) with V >= 2"),
    Case("TokenSequence", "embedding/vocab-size", _seq(embeddings=EMB[:4]), E, r"log_initial must have shape \(V,\) = \(4,\), got \(5,\)"),
    Case("TokenSequence", "transition-shape", _seq(log_transition=LOG_TRANS[:4]), E, r"log_transition must have shape \(V, V\) = \(5, 5\)"),
    Case("TokenSequence", "transition-rows", _seq(log_transition=LOG_TRANS + 0.1), E, r"exp\(log_transition\) rows must sum to 1"),
    Case("TokenSequence", "initial-nan", _seq(log_initial=LOG_INIT.at[0].set(NAN)), E, r"exp\(log_initial\) must be finite and non-negative"),
    Case("TokenSequence", "vocab-size", _seq(vocab=("a", "b")), E, r"vocab must have V = 5 strings, got 2"),
    Case("TokenSequence", "vocab-repeated", _seq(vocab=("a", "a", "b", "c", "d")), E, r"vocab strings must be distinct"),
    Case("TokenSequence", "length=0", _seq(length=0), E, r"length must be >= 1"),
    Case("TokenSequence", "std-nan", _seq(std=NAN), E, r"std must be a finite number > 0"),
    Case("TokenSequence", "sharpness=0", _seq(sharpness=0.0), E, r"sharpness must be a finite number > 0"),
    Case("TokenSequence", "resp_floor<0", _seq(resp_floor=-1.0), E, r"resp_floor must be a finite number >= 0"),
    Case("TokenSequence", "embeddings-complex", _seq(embeddings=EMB * 1j), E, r"embeddings must be real .*complex"),
    Case("TokenSequence.synthetic", "V=1", lambda: TokenSequence.synthetic(KEY, 1, 3, 2, std=0.3), E, r"vocab_size must be >= 2"),
    Case("TokenSequence.synthetic", "uniform_mix=0", lambda: TokenSequence.synthetic(KEY, 5, 3, 2, std=0.3, uniform_mix=0.0), E, r"uniform_mix must be > 0"),
    Case("TokenSequence.synthetic", "std=0", lambda: TokenSequence.synthetic(KEY, 5, 3, 2, std=0.0), E, r"std must be a finite number > 0"),
    Case("TokenSequence.from_text", "vocab_size=1", lambda: TokenSequence.from_text("abc", length=2, dim=2, std=0.3, key=KEY, vocab_size=1), E, r"vocab_size must be >= 2"),
    Case("TokenSequence.from_text", "short-text", lambda: TokenSequence.from_text("a", length=2, dim=2, std=0.3, key=KEY), E, r"text must have at least 2 characters"),
    Case("TokenSequence.from_text", "smoothing=0", lambda: TokenSequence.from_text("abc", length=2, dim=2, std=0.3, key=KEY, smoothing=0.0), E, r"smoothing must be a finite number > 0"),
    Case("TokenSequence.with_zipf_vocabulary", "num_rare=0", lambda: SEQ.with_zipf_vocabulary(KEY, 0), E, r"num_rare must be >= 1"),
    Case("TokenSequence.with_zipf_vocabulary", "rare_share=1", lambda: SEQ.with_zipf_vocabulary(KEY, 2, rare_share=1.0), E, r"rare_share must be in \(0, 1\)"),
    Case("TokenSequence.with_zipf_vocabulary", "spread>0.5", lambda: SEQ.with_zipf_vocabulary(KEY, 2, spread=0.7), E, r"spread must be in \[0\.0, 0\.5\]"),
    Case("TokenSequence.log_likelihood", "id>=V", lambda: SEQ.log_likelihood(jnp.array([[0, 7, 1]])), E, r"tokens must be token ids in \[0, 5\) \(vocabulary size V = 5\), got 7"),
    Case("TokenSequence.log_likelihood", "id<0", lambda: SEQ.log_likelihood(jnp.array([0, -1])), E, r"tokens must be token ids in \[0, 5\).*got -1"),
    Case("TokenSequence.log_likelihood", "float-ids", lambda: SEQ.log_likelihood(jnp.array([0.0, 1.0])), E, r"tokens must be integer token ids in \[0, 5\)"),
    Case("TokenSequence.log_likelihood", "empty", lambda: SEQ.log_likelihood(jnp.zeros((2, 0), int)), E, r"tokens must have shape \(\.\.\., n\) with n >= 1"),
    Case("TokenSequence.perplexity", "id>=V", lambda: SEQ.perplexity(jnp.array([[0, 5]])), E, r"tokens must be token ids in \[0, 5\)"),
    Case("TokenSequence.decode_text", "no-vocab", lambda: SEQ.decode_text(jnp.array([0, 1])), E, r"this world has no vocab"),
    Case("TokenSequence.encode_text", "no-vocab", lambda: SEQ.encode_text("ab"), E, r"this world has no vocab"),
    Case("TokenSequence.denoise", "z-shape", lambda: SEQ.denoise(jnp.ones((3, 3)), 0.5), E, r"z must have the latent shape \(3, 2\), got \(3, 3\)"),
    Case("TokenSequence.denoise", "t<0", lambda: SEQ.denoise(jnp.ones((3, 2)), -0.5), E, RANGE_T),
    Case("TokenSequence.denoise", "z-int", lambda: SEQ.denoise(jnp.ones((3, 2), int), 0.5), E, r"z " + LATENT),
    Case("TokenSequence.posterior_marginals", "z-nan", lambda: SEQ.posterior_marginals(jnp.full((3, 2), NAN), 0.5), E, r"z contains NaN or inf"),
    Case("TokenSequence.marginal_log_prob", "t>1", lambda: SEQ.marginal_log_prob(jnp.ones((3, 2)), 1.5), E, RANGE_T),
    Case("TokenSequence.logits", "x-shape", lambda: SEQ.logits(jnp.ones((2, 2))), E, r"x must have the latent shape \(3, 2\)"),
    Case("TokenSequence.decode", "x-shape", lambda: SEQ.decode(jnp.ones((3,))), E, r"x must have the latent shape \(3, 2\)"),
    Case("TokenSequence.readout", "x-bool", lambda: SEQ.readout(jnp.ones((3, 2), bool)), E, r"x " + LATENT),
    Case("TokenSequence.sample_data", "num=0", lambda: SEQ.sample_data(KEY, 0), E, r"num must be >= 1"),
    # ---- readouts ----------------------------------------------------------------------
    Case("margin", "V=1", lambda: readouts.margin(jnp.ones((3, 1))), E, r"logits must have shape \(\.\.\., V\) with a vocabulary axis V >= 2"),
    Case("margin", "int-logits", lambda: readouts.margin(jnp.ones((3, 2), int)), E, r"logits " + LATENT),
    Case("top_two", "scalar", lambda: readouts.top_two(jnp.ones(())), E, r"logits must have shape \(\.\.\., V\) with a vocabulary axis V >= 2"),
    Case("token_probs", "complex", lambda: readouts.token_probs(jnp.ones((3, 2), complex)), E, r"logits " + LATENT),
    # ---- diagnostics (boundary, flips, DABI, commitment) --------------------------------
    Case("boundary_geometry", "smooth-world", lambda: diagnostics.boundary_geometry(SMOOTH, Z), E, r"readout must have a categorical readout"),
    Case("boundary_geometry", "x-shape", lambda: diagnostics.boundary_geometry(GMM, jnp.ones(3)), E, r"x must have the latent shape \(2,\)"),
    Case("boundary_geometry", "x-int", lambda: diagnostics.boundary_geometry(GMM, jnp.ones(2, int)), E, r"x " + LATENT),
    Case("boundary_geometry", "x-nan", lambda: diagnostics.boundary_geometry(GMM, jnp.array([NAN, 0.0])), E, r"x contains NaN or inf"),
    Case("boundary_geometry", "max_expand<0", lambda: diagnostics.boundary_geometry(GMM, Z, max_expand=-1), E, r"max_expand must be an int >= 0"),
    Case("boundary_geometry", "V=1-callable", lambda: diagnostics.boundary_geometry(lambda x: x[:1], Z), E, r"logits must have shape \(\*positions, V\) with V >= 2"),
    Case("boundary_distance", "not-a-readout", lambda: diagnostics.boundary_distance(3, Z), E, r"readout must be a world with a logits/decode method or a callable"),
    Case("categorical_logits_fn", "smooth-world", lambda: diagnostics.categorical_logits_fn(SMOOTH), E, r"must have a categorical readout"),
    Case("flip_rate", "s=0", lambda: diagnostics.flip_rate(GMM, KEY, X, 0.0), E, r"noise_scale must be a finite number > 0, got 0\.0"),
    Case("flip_rate", "s-nan", lambda: diagnostics.flip_rate(GMM, KEY, X, NAN), E, r"noise_scale must be a finite number > 0, got nan"),
    Case("flip_rate", "x0-shape", lambda: diagnostics.flip_rate(GMM, KEY, jnp.ones((3, 3)), 0.1), E, r"x0 must have shape \(num, \*latent_shape\) = \(num, 2\)"),
    Case("flip_rate", "x0-empty", lambda: diagnostics.flip_rate(GMM, KEY, jnp.ones((0, 2)), 0.1), E, r"x0 has an empty batch \(num = 0\); need num >= 1"),
    Case("flip_rate", "x0-int", lambda: diagnostics.flip_rate(GMM, KEY, jnp.ones((3, 2), int), 0.1), E, r"x0 " + LATENT),
    Case("flip_rate", "x0-complex", lambda: diagnostics.flip_rate(GMM, KEY, X * 1j, 0.1), E, r"x0 " + LATENT),
    Case("flip_rate", "x0-nan", lambda: diagnostics.flip_rate(GMM, KEY, X.at[1, 1].set(NAN), 0.1), E, r"x0 contains NaN or inf"),
    Case("flip_rate", "atol-categorical", lambda: diagnostics.flip_rate(GMM, KEY, X, 0.1, atol=0.1), E, r"atol is only for smooth readouts"),
    Case("flip_rate", "atol-missing", lambda: diagnostics.flip_rate(SMOOTH, KEY, X, 0.1), E, r"atol is required for the smooth readout"),
    Case("flip_rate", "atol<0", lambda: diagnostics.flip_rate(SMOOTH, KEY, X, 0.1, atol=-1.0), E, r"atol must be a finite number > 0"),
    Case("flip_rate", "key-int", lambda: diagnostics.flip_rate(GMM, 3, X, 0.1), E, r"key must be a jax.random key"),
    Case("tube_mass", "distance-nan", lambda: diagnostics.tube_mass(jnp.array([NAN, 1.0]), 0.1), E, r"distance must be boundary distances in \[0, inf\] \(no NaN\)"),
    Case("tube_mass", "distance<0", lambda: diagnostics.tube_mass(jnp.array([-1.0, 1.0]), 0.1), E, r"distance must be boundary distances in \[0, inf\]"),
    Case("tube_mass", "distance-complex", lambda: diagnostics.tube_mass(jnp.ones(3) * 1j, 0.1), E, r"distance must be real .*complex"),
    Case("tube_mass", "distance-scalar", lambda: diagnostics.tube_mass(jnp.ones(()), 0.1), E, r"distance must have a sample axis"),
    Case("tube_mass", "no-samples", lambda: diagnostics.tube_mass(jnp.ones((0,)), 0.1), E, r"distance has no samples on sample_axis 0; need >= 1"),
    Case("tube_mass", "c-nan", lambda: diagnostics.tube_mass(jnp.ones(3), 0.1, c=NAN), E, r"c must be a finite number >= 0"),
    Case("tube_mass", "s<0", lambda: diagnostics.tube_mass(jnp.ones(3), -0.1), E, r"noise_scale must be a finite number >= 0"),
    Case("tube_mass", "sample_axis-float", lambda: diagnostics.tube_mass(jnp.ones(3), 0.1, sample_axis=0.5), E, r"sample_axis must be an int"),
    Case("tube_mass", "sample_axis-range", lambda: diagnostics.tube_mass(jnp.ones(3), 0.1, sample_axis=2), E, r"sample_axis 2 is out of range for shape \(3,\)"),
    Case("rate_estimate", "float-events", lambda: diagnostics.rate_estimate(jnp.ones(3) * 0.5), E, r"indicator must be boolean events \(or integers in \{0, 1\}\)"),
    Case("rate_estimate", "int-not-01", lambda: diagnostics.rate_estimate(jnp.array([0, 2])), E, r"indicator must be boolean events"),
    Case("rate_estimate", "empty", lambda: diagnostics.rate_estimate(jnp.ones((0,), bool)), E, r"indicator must have a non-empty sample axis 0"),
    Case("dabi", "x-shape", lambda: diagnostics.dabi(GMM, jnp.ones((3, 3)), key=KEY), E, r"x must have shape \(num, \*latent_shape\) = \(num, 2\)"),
    Case("dabi", "x-empty", lambda: diagnostics.dabi(GMM, jnp.ones((0, 2)), key=KEY), E, r"x has an empty batch"),
    Case("dabi", "x-complex", lambda: diagnostics.dabi(GMM, X * 1j, key=KEY), E, r"x " + LATENT),
    Case("dabi", "x-nan", lambda: diagnostics.dabi(GMM, X.at[0, 0].set(NAN), key=KEY), E, r"x contains NaN or inf"),
    Case("dabi", "unknown-measure", lambda: diagnostics.dabi(GMM, X, key=KEY, measure="tvv"), E, r"measure 'tvv' is not defined for a categorical readout; valid measures are \['tv', 'kl', 'flip', 'linearized'\]"),
    Case("dabi", "smooth-measure", lambda: diagnostics.dabi(SMOOTH, X, key=KEY, measure="tv", delta=0.1), E, r"valid measures are \['euclidean', 'linearized'\]"),
    Case("dabi", "delta-nan", lambda: diagnostics.dabi(GMM, X, key=KEY, delta=NAN), E, r"delta must be finite and > 0"),
    Case("dabi", "delta-missing-smooth", lambda: diagnostics.dabi(SMOOTH, X, key=KEY, measure="euclidean"), E, r"delta is required for a smooth readout"),
    Case("dabi", "directions<64", lambda: diagnostics.dabi(GMM, X, key=KEY, num_directions=8), E, r"num_directions must be >= 64"),
    Case("dabi", "tol-nan", lambda: diagnostics.dabi(GMM, X, key=KEY, tol=NAN), E, r"tol must be a finite number >= 0"),
    Case("dabi", "chunk_size=0", lambda: diagnostics.dabi(GMM, X, key=KEY, chunk_size=0), E, r"chunk_size must be >= 1"),
    Case("dabi", "key-int", lambda: diagnostics.dabi(GMM, X, key=3), E, r"key must be a jax.random key"),
    Case("dabi_point", "x-shape", lambda: diagnostics.dabi_point(GMM, jnp.ones(3), key=KEY), E, r"x must have the latent shape \(2,\)"),
    Case("dabi_point", "x-nan", lambda: diagnostics.dabi_point(GMM, jnp.array([NAN, 0.0]), key=KEY), E, r"x contains NaN or inf"),
    Case("dabi_point", "key-int", lambda: diagnostics.dabi_point(GMM, Z, key=3), E, r"key must be a jax.random key"),
    Case("dabi_variants", "delta_grid-2d", lambda: diagnostics.dabi_variants(GMM, X, key=KEY, delta_grid=jnp.ones((2, 2))), E, r"delta_grid must be 1-D"),
    Case("dabi_variants", "delta_grid<0", lambda: diagnostics.dabi_variants(GMM, X, key=KEY, delta_grid=jnp.array([-1.0])), E, r"delta_grid must be finite and > 0"),
    Case("quartiles", "complex", lambda: diagnostics.quartiles(jnp.ones(3) * 1j), E, r"values must be real"),
    Case("cci", "smooth-world", lambda: diagnostics.cci(SMOOTH, jnp.ones((2, 3, 2)), jnp.ones((2, 2))), E, r"must have a categorical readout"),
    Case("cci", "batch-mismatch", lambda: diagnostics.cci(GMM, jnp.ones((2, 3, 2)), jnp.ones((3, 2))), E, r"x0_hat must have shape \(batch, K, \*latent\) matching x_final"),
    Case("cci", "latent-shape", lambda: diagnostics.cci(GMM, jnp.ones((2, 3, 3)), jnp.ones((2, 3))), E, r"x_final must have shape \(num, \*latent_shape\) = \(num, 2\)"),
    Case("cci", "K=0", lambda: diagnostics.cci(GMM, jnp.ones((2, 0, 2)), jnp.ones((2, 2))), E, r"x0_hat has no steps \(K = 0\); need K >= 1"),
    Case("cci", "complex", lambda: diagnostics.cci(GMM, jnp.ones((2, 3, 2)) * 1j, jnp.ones((2, 2))), E, r"x0_hat " + LATENT),
    Case("cci_from_tokens", "float-tokens", lambda: diagnostics.cci_from_tokens(jnp.ones((2, 3)) * 0.5, jnp.ones(2, int)), E, r"tokens must be integer token ids"),
    Case("cci_from_tokens", "empty", lambda: diagnostics.cci_from_tokens(jnp.ones((0, 3), int), jnp.ones(0, int)), E, r"tokens must have batch >= 1 trajectories and K >= 1 steps"),
    Case("commitment_curve", "axes-equal", lambda: diagnostics.commitment_curve(jnp.ones((2, 3), int), jnp.ones(2, int), step_axis=0), E, r"sample_axis and step_axis must differ"),
    Case("commitment_curve", "axis-range", lambda: diagnostics.commitment_curve(jnp.ones(3, int), jnp.ones(3, int)), E, r"step_axis 1 is out of range for tokens of shape \(3,\)"),
    Case("commitment_curve", "final-shape", lambda: diagnostics.commitment_curve(jnp.ones((2, 3), int), jnp.ones(3, int)), E, r"final_tokens must have shape \(batch, \*positions\) = \(2,\)"),
    Case("ar_intervention", "not-callable", lambda: diagnostics.ar_intervention(3, lambda z, k: z[:, 0], X, key=KEY), E, r"decode_committed_fn must be callable"),
    Case("ar_intervention", "z-int", lambda: diagnostics.ar_intervention(lambda z, k: z, lambda z, k: z, jnp.ones((2, 3), int), key=KEY), E, r"z " + LATENT),
    Case("ar_intervention", "z-empty", lambda: diagnostics.ar_intervention(lambda z, k: z, lambda z, k: z, jnp.ones((0, 3)), key=KEY), E, r"z has an empty batch"),
    Case("ar_intervention", "bad-nll-shape", lambda: diagnostics.ar_intervention(lambda z, k: z, lambda z, k: z[0], X, key=KEY), E, r"decode_soft_fn must return per-token NLLs of shape \(L,\)"),
    # Jacobian / stiffness (owned by the sharding part): the checks they already make.
    Case("spectral_norm", "x-int", lambda: diagnostics.spectral_norm(jnp.tanh, jnp.ones(3, int), key=KEY), E, r"x must hold floating arrays"),
    Case("spectral_norm", "num_iters=0", lambda: diagnostics.spectral_norm(jnp.tanh, jnp.ones(3), key=KEY, num_iters=0), E, r"num_iters must be >= 1"),
    Case("frobenius_norm", "num_probes=0", lambda: diagnostics.frobenius_norm(jnp.tanh, jnp.ones(3), key=KEY, num_probes=0), E, r"num_probes must be >= 1"),
    Case("directional_norm", "u-shape", lambda: diagnostics.directional_norm(jnp.tanh, jnp.ones(3), jnp.ones(4)), E, r"u must have the same pytree structure and shapes as x"),
    Case("jacobian_dense", "x-complex", lambda: diagnostics.jacobian_dense(jnp.tanh, jnp.ones(3) * 1j), E, r"x must hold floating arrays"),
    Case("spectral_norm", "x-nan", lambda: diagnostics.spectral_norm(jnp.tanh, jnp.array([NAN, 1.0]), key=KEY), E, r"x contains NaN or inf"),
    Case("spectral_norm", "key-int", lambda: diagnostics.spectral_norm(jnp.tanh, jnp.ones(3), key=3), E, r"key must be a jax.random key \(jr.key\(seed\)\), got int"),
    Case("top_singular", "key-int", lambda: diagnostics.top_singular(jnp.tanh, jnp.ones(3), key=3), E, r"key must be a jax.random key"),
    Case("frobenius_norm", "x-inf", lambda: diagnostics.frobenius_norm(jnp.tanh, jnp.array([jnp.inf, 1.0]), key=KEY), E, r"x contains NaN or inf"),
    Case("frobenius_norm", "key-int", lambda: diagnostics.frobenius_norm(jnp.tanh, jnp.ones(3), key=3), E, r"key must be a jax.random key"),
    Case("directional_norm", "u-nan", lambda: diagnostics.directional_norm(jnp.tanh, jnp.ones(2), jnp.array([NAN, 0.0])), E, r"u contains NaN or inf"),
    Case("batch_spectral_norm", "xs-nan-in-a-later-example", lambda: diagnostics.batch_spectral_norm(jnp.tanh, jnp.ones((3, 2)).at[2, 1].set(NAN), key=KEY), E, r"xs contains NaN or inf"),
    Case("batch_spectral_norm", "xs-empty-batch", lambda: diagnostics.batch_spectral_norm(jnp.tanh, jnp.ones((0, 2)), key=KEY), E, r"xs must share one non-empty batch axis"),
    Case("batch_spectral_norm", "xs-scalar", lambda: diagnostics.batch_spectral_norm(jnp.tanh, jnp.ones(()), key=KEY), E, r"xs must be arrays with a leading batch axis"),
    Case("batch_spectral_norm", "chunk_size=0", lambda: diagnostics.batch_spectral_norm(jnp.tanh, jnp.ones((3, 2)), key=KEY, chunk_size=0), E, r"chunk_size must be None or an int >= 1"),
    Case("batch_spectral_norm", "fn-unhashable", lambda: diagnostics.batch_spectral_norm(_Unhashable(), jnp.ones((3, 2)), key=KEY), E, r"fn must be hashable \(it is a static argument\), got _Unhashable"),
    Case("step_jacobian_norms", "chunk_size=-1", lambda: diagnostics.step_jacobian_norms(samplers.DDIM(), GMM, KEY, X, TS, chunk_size=-1), E, r"chunk_size must be None or an int >= 1"),
    Case("stiffness_summary", "empty", lambda: diagnostics.stiffness_summary(jnp.ones((0, 3))), E, r"norms must hold at least one sample and one step"),
    Case("stiffness_summary", "complex", lambda: diagnostics.stiffness_summary(jnp.ones((2, 3)) * 1j), E, r"norms must be real numbers, got dtype complex"),
    Case("stiffness_summary", "nan", lambda: diagnostics.stiffness_summary(jnp.ones((2, 3)).at[0, 1].set(NAN)), E, r"norms contains NaN or inf"),
    Case("top_singular", "x-empty", lambda: diagnostics.top_singular(jnp.tanh, jnp.ones(0), key=KEY), E, r"x has no elements"),
    Case("step_jacobian_norms", "x-shape", lambda: diagnostics.step_jacobian_norms(samplers.DDIM(), GMM, KEY, jnp.ones((4, 3)), TS), E, r"x_init must have shape \(batch, \*latent_shape\)"),
    Case("whole_map_norm", "ts-increasing", lambda: diagnostics.whole_map_norm(samplers.DDIM(), GMM, KEY, X, TS[::-1]), E, r"ts must be strictly decreasing"),
    Case("stiffness_summary", "q>1", lambda: diagnostics.stiffness_summary(jnp.ones((4, 3)), q=1.5), E, r"q must be in \[0\.0, 1\.0\]"),
    # ---- sharding / sweep --------------------------------------------------------------------
    Case("batch_mesh", "no-devices", lambda: sharding.batch_mesh([]), E, r"devices must hold at least one device"),
    Case("batch_mesh", "axis-name", lambda: sharding.batch_mesh(axis_name=""), E, r"axis_name must be a non-empty string"),
    Case("shard_batch", "not-a-mesh", lambda: sharding.shard_batch(X, "mesh"), T, r"mesh must be a jax.sharding.Mesh, got str"),
    Case("shard_batch", "scalar", lambda: sharding.shard_batch(jnp.ones(()), sharding.batch_mesh()), E, r"every leaf of x needs a leading batch axis"),
    Case("shard_batch", "unequal-batches", lambda: sharding.shard_batch((X, jnp.ones(3)), sharding.batch_mesh()), E, r"the leaves of x have different batch sizes \[3, 4\]"),
    Case("shard_batch", "unknown-axis", lambda: sharding.shard_batch(X, sharding.batch_mesh(), axis_name="data"), E, r"axis_name 'data' is not an axis of the mesh \(axes: \('batch',\)\)"),
    Case("shard_batch", "empty", lambda: sharding.shard_batch((), sharding.batch_mesh()), E, r"x must hold at least one array"),
    Case("replicate", "not-a-mesh", lambda: sharding.replicate(X, None), T, r"mesh must be a jax.sharding.Mesh, got NoneType"),
    Case("take_rows", "index-not-held", lambda: sharding.take_rows(X, [7]), IndexError, r"index 7 is out of bounds for the batch of 4"),
    Case("run_sweep", "repeated-cell", lambda: sweep.run_sweep(lambda c: c, [1, 1]), E, r"cells must be unique, 1 appears twice"),
    Case("run_sweep", "unhashable-cell", lambda: sweep.run_sweep(lambda c: c, [[1]]), E, r"cells must be hashable"),
    Case("run_sweep", "placement", lambda: sweep.run_sweep(lambda c: c, [1], placement="hosts"), E, r"placement must be one of \('cells', 'batch'\), got 'hosts'"),
    Case("run_sweep", "no-devices", lambda: sweep.run_sweep(lambda c: c, [1], devices=[]), E, r"devices must hold at least one device"),
    Case("iter_sweep", "placement", lambda: list(sweep.iter_sweep(lambda c: c, [1], placement="x")), E, r"placement must be one of \('cells', 'batch'\)"),
    # ---- io ------------------------------------------------------------------------------
    Case("atomic_write", "mode", lambda: io.atomic_write("x.json", "a").__enter__(), E, r"mode must be 'w' or 'wb', got 'a'"),
    Case("to_jsonable", "complex", lambda: io.to_jsonable({"a": 1j}), T, r"complex value 1j has no JSON form"),
    Case("to_jsonable", "object", lambda: io.to_jsonable(object()), T, r"object of type object has no JSON form"),
    Case("write_json", "complex", lambda: io.write_json("x.json", np.ones(2) * 1j), T, r"complex array of shape \(2,\) has no JSON form"),
    Case("write_text", "not-str", lambda: io.write_text("x.txt", 3), T, r"text must be a str, got int"),
    Case("read_json", "missing", lambda: io.read_json("/nonexistent/x.json"), FileNotFoundError, r"/nonexistent/x\.json"),
]
# fmt: on

# Names in the public __all__ lists that take no input to validate (types, constants,
# protocols, pure record hooks, the metadata helpers) or that other tests cover.
NO_INPUT = {
    "SampleResult": "a NamedTuple of results",
    "record_info": "record hooks take the harness's own (state, info)",
    "record_nothing": "record hooks take the harness's own (state, info)",
    "record_x0_hat": "record hooks take the harness's own (state, info)",
    "RectifiedFlow": "no parameters",
    "DDIM": "no parameters",
    "DPMpp2M": "no parameters",
    "EulerODE": "no parameters",
    "HeunODE": "no parameters",
    "Sampler": "a Protocol",
    "SamplerState": "a NamedTuple carry",
    "StepInfo": "a NamedTuple of per-step diagnostics",
    "Manifold": "a Protocol",
    "CategoricalManifold": "a Protocol",
    "has_logits": "a predicate: any object is valid input",
    "ARDecodeFn": "a Protocol",
    "ARIntervention": "a NamedTuple of results",
    "BoundaryGeometry": "a NamedTuple of results",
    "CCIResult": "a NamedTuple of results",
    "DABIPoint": "a NamedTuple of results",
    "DABIResult": "a NamedTuple of results",
    "HutchinsonEstimate": "a NamedTuple of results",
    "Quartiles": "a NamedTuple of results",
    "RateEstimate": "a NamedTuple of results",
    "StiffnessSummary": "a NamedTuple of results",
    "TopSingular": "a NamedTuple of results",
    "frobenius_norm_estimate": "same validation as frobenius_norm (one code path)",
    "NonFiniteError": "the error type itself (raised by sample: tests/test_chunking.py)",
    "Placement": "a dataclass of results (where a sweep cell runs)",
    "current_placement": "no arguments",
    "current_mesh": "no arguments",
    "batch_placement": "a predicate: any object is valid input (None when not sharded)",
    "vmap_padded": "a building block used inside jit by the harness; its callers validate",
    "map_pieces": "a building block of the harness and diagnostics; its callers validate",
    "OutputDirError": "the error type itself",
    "versions": "no arguments",
    "environment": "no arguments",
    "git_sha": "never raises by contract (None when git is unavailable)",
    "ensure_dir": "tested below with an unwritable folder",
    "write_npz": "tested below with an unwritable folder",
    "save_figure": "tested below with an unwritable folder",
    "AbstractSchedule": "abstract; its methods are walked through the subclasses",
}


def _public_callables() -> set[str]:
    names = set()
    modules = (rj, schedules, samplers, manifolds, readouts, diagnostics, io, sharding, sweep)
    for module in modules:
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not callable(obj) or name.startswith("__"):
                continue
            names.add(name)
    return names


def test_every_public_callable_is_walked():
    covered = {c.name.split(".")[0] for c in CASES}
    missing = sorted(_public_callables() - covered - set(NO_INPUT))
    assert not missing, f"public callables with no bad-input case: {missing}"
    # Public methods of the worlds that take inputs are walked too.
    for cls in (GaussianMixture, HierarchicalMixture, TokenSequence):
        methods = {
            name
            for name, fn in vars(cls).items()
            if not name.startswith("_")
            and callable(getattr(cls, name))
            and inspect.signature(getattr(cls, name)).parameters.keys() - {"self", "cls"}
        }
        walked = {c.name.split(".")[1] for c in CASES if c.name.startswith(cls.__name__ + ".")}
        exempt = {"mixture", "leaf_means"}
        assert methods - walked - exempt == set(), (cls.__name__, methods - walked)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.name}:{c.id}" for c in CASES])
def test_bad_input_raises_a_named_error(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # io cases write relative paths here (or nowhere)
    with pytest.raises(case.error, match=case.match):
        case.call()


def test_bad_constructor_of_a_schedule_never_yields_nan_later():
    # VPLinear with a constant β (β_max = β_min) is valid: its inverse used to divide by
    # β_max − β_min = 0 and return NaN; now it is the closed form c/b.
    sched = schedules.VPLinear(beta_min=5.0, beta_max=5.0)
    t = np.linspace(0.0, 1.0, 11)
    back = sched.t_from_noise_scale(sched.noise_scale(t))
    np.testing.assert_allclose(back, t, rtol=1e-12, atol=1e-12)


def _unwritable_dirs(tmp_path: pathlib.Path) -> list[pathlib.Path]:
    """Folders no one can write into: below a regular file, and (when not root) a
    read-only folder."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = [blocker / "sub"]
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        ro = tmp_path / "readonly"
        ro.mkdir()
        ro.chmod(0o500)
        out.append(ro)
    return out


def test_io_writers_name_the_unwritable_output_folder(tmp_path):
    import matplotlib.figure

    fig = matplotlib.figure.Figure()
    fig.add_subplot().plot([0, 1])
    for folder in _unwritable_dirs(tmp_path):
        writers = {
            "write_json": lambda p: io.write_json(p / "a.json", {"a": 1}),
            "write_text": lambda p: io.write_text(p / "a.txt", "a"),
            "write_npz": lambda p: io.write_npz(p / "a.npz", a=np.ones(2)),
            "save_figure": lambda p: io.save_figure(fig, p / "a.png", close=False),
            "ensure_dir": lambda p: io.ensure_dir(p / "deeper"),
        }
        for name, write in writers.items():
            with pytest.raises(io.OutputDirError, match=r"output folder '.*' ") as info:
                write(folder)
            assert str(folder) in str(info.value), name
        # Nothing, not even a temporary file, was left behind.
        if folder.is_dir():
            assert list(folder.iterdir()) == []
