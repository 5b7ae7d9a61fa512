"""Time-conditioned x0-prediction latent denoisers, and the learned worlds as Manifolds.

Parameterisation (EDM preconditioning, Karras et al. 2022, written in α, σ so that it
is finite at both ends). The network F_θ is trained in the rectified-flow convention
z = α·x0 + σ·ε with α = 1 − t, σ = t. With σ_d the data's per-coordinate standard
deviation and v = σ² + α²σ_d²,

    x̂0(z, t) = c_skip·z + c_out·F_θ(c_in·z, t),
    c_in = 1/√v,  c_skip = α·σ_d²/v,  c_out = σ·σ_d/√v.

So x̂0 → z as t → 0 and x̂0 → σ_d·F_θ at t = 1, every coefficient finite on [0, 1],
and F_θ's input and target both have unit scale at every t. x̂0 is an x0 prediction:
the harness and samplers use nothing else.

Loss (standard x0-prediction MSE with a documented SNR weighting): t drawn in
[t_min, 1] by `DenoiserConfig.t_sampling` (uniform, or logit-normal shifted towards high
noise: the text denoiser uses sigmoid(1.6 + N(0, 1)), median t ≈ 0.83, because the
choice between characters, where context matters, is made at high noise; with uniform
t the quick-scale text denoiser learned hardly any context), ε ~ N(0, I), and

    L = E |F_θ(c_in z, t) − (x0 − c_skip z)/c_out|² = E w(t)·|x̂0(z, t) − x0|²,
    w(t) = 1/c_out² = (1/σ_d²)·(1 + σ_d²·SNR(t)),  SNR = α²/σ².

For σ_d = 1 this is the "SNR + 1" weighting of the x0 error, i.e. exactly the
v-prediction loss (Salimans & Ho 2022) and EDM's λ(σ); the minimiser at each t is still
the posterior mean E[x0 | z_t = z] whatever the weighting.

Time conditioning: a sinusoidal embedding of 1000·t (t the rectified-flow time) through
a two-layer SiLU MLP; transformer blocks take it by adaLN-Zero (DiT), MLP blocks by
addition.

Schedule. The learned worlds use the `rectified_flow` schedule by default: it is the
flow-matching convention of continuous text flows (ELF), `renoise_rf` is defined only
on it, α(1) = 0 so `prior_sample` at t = 1 is exact, and every other sampler works on
it. `with_schedule` gives the SAME learned posterior mean under any other schedule:
for a latent z = α·x0 + σ·ε of schedule (α, σ), z/(α + σ) is a rectified-flow latent at
t_rf = σ/(α + σ) with the same x0 and ε, so x̂0(z, t) = x̂0_rf(z/(α + σ), σ/(α + σ)).
"""

from __future__ import annotations

import dataclasses
import functools as ft
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import jax.random as jr
from flax import nnx

from readout_jax import schedules
from readout_jax._pytree import pytree_dataclass, static_field
from readout_jax.learned import layers
from readout_jax.learned.layers import DTYPE

__all__ = [
    "ARCHITECTURES",
    "T_SAMPLINGS",
    "DenoiserConfig",
    "Constant",
    "LatentDenoiser",
    "precondition",
    "denoiser_loss",
    "LearnedDenoiser",
    "ParallelReadout",
    "PixelDecoder",
    "TextManifold",
    "ImageManifold",
]

POS_INIT_STD = 1.0
"""Initial scale of the transformer denoiser's learned positions (see `LatentDenoiser`)."""
ARCHITECTURES = ("transformer", "mlp")
T_SAMPLINGS = ("uniform", "logit_normal")


@dataclasses.dataclass(frozen=True)
class DenoiserConfig:
    """Latent denoiser network.

    Attributes:
        architecture: "transformer" (latents (L, d)) or "mlp" (latents (d,)).
        model_dim: width D.
        num_layers: blocks.
        num_heads: attention heads (transformer).
        mlp_ratio: MLP hidden width / D.
        time_dim: sinusoidal time-embedding width.
        t_min: training times lie in [t_min, 1].
        t_sampling: "uniform" (t ~ U(t_min, 1)) or "logit_normal" (t = sigmoid(m + u),
            u ~ N(0, 1), clipped to [t_min, 1]: concentrated around sigmoid(m), as in
            rectified-flow image models, Esser et al. 2024).
        t_logit_mean: m of "logit_normal"; m > 0 shifts training towards high noise.
    """

    architecture: str = "transformer"
    model_dim: int = 64
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: int = 4
    time_dim: int = 64
    t_min: float = 1e-3
    t_sampling: str = "uniform"
    t_logit_mean: float = 0.0

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}"
            )
        for name in ("model_dim", "num_layers", "num_heads", "mlp_ratio", "time_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if self.time_dim % 2:
            raise ValueError(f"time_dim must be even, got {self.time_dim}")
        if self.architecture == "transformer" and self.model_dim % self.num_heads:
            raise ValueError(
                f"model_dim ({self.model_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if not 0.0 <= self.t_min < 1.0:
            raise ValueError(f"t_min must be in [0, 1), got {self.t_min!r}")
        if self.t_sampling not in T_SAMPLINGS:
            raise ValueError(f"t_sampling must be one of {T_SAMPLINGS}, got {self.t_sampling!r}")


class Constant(nnx.Variable):
    """A non-trainable model constant (e.g. σ_d), checkpointed with the parameters."""


class LatentDenoiser(nnx.Module):
    """F_θ(c_in·z, t) of the preconditioned x0 predictor; output zero at initialisation."""

    def __init__(
        self,
        latent_shape: tuple[int, ...],
        cfg: DenoiserConfig,
        *,
        sigma_data: float = 1.0,
        rngs: nnx.Rngs,
    ):
        dim = cfg.model_dim
        self.architecture = cfg.architecture
        self.time_dim = cfg.time_dim
        self.sigma_data = Constant(jnp.asarray(sigma_data, DTYPE))
        self.time_in = nnx.Linear(cfg.time_dim, dim, param_dtype=DTYPE, rngs=rngs)
        self.time_out = nnx.Linear(dim, dim, param_dtype=DTYPE, rngs=rngs)
        zeros = nnx.initializers.zeros_init()
        if cfg.architecture == "transformer":
            if len(latent_shape) != 2:
                raise ValueError(f"a transformer denoiser needs latents (L, d), got {latent_shape}")
            length, width = latent_shape
            self.proj = nnx.Linear(width, dim, param_dtype=DTYPE, rngs=rngs)
            # Positions at the scale of the projected input (unit variance): with a
            # small (0.02) initialisation, bidirectional attention starts out blind to
            # position and the denoiser learned almost no context.
            self.pos = nnx.Param(
                nnx.initializers.normal(POS_INIT_STD)(rngs.params(), (length, dim), DTYPE)
            )
            self.blocks = nnx.List(
                [
                    layers.TransformerBlock(
                        dim, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, cond_dim=dim, rngs=rngs
                    )
                    for _ in range(cfg.num_layers)
                ]
            )
            self.final_mod = nnx.Linear(
                dim, 2 * dim, kernel_init=zeros, bias_init=zeros, param_dtype=DTYPE, rngs=rngs
            )
        else:
            if len(latent_shape) != 1:
                raise ValueError(f"an mlp denoiser needs latents (d,), got {latent_shape}")
            (width,) = latent_shape
            self.proj = nnx.Linear(width, dim, param_dtype=DTYPE, rngs=rngs)
            self.blocks = nnx.List(
                [
                    layers.MLPBlock(dim, hidden=cfg.mlp_ratio * dim, cond_dim=dim, rngs=rngs)
                    for _ in range(cfg.num_layers)
                ]
            )
        self.norm = nnx.LayerNorm(
            dim, use_scale=False, use_bias=False, param_dtype=DTYPE, rngs=rngs
        )
        self.out = nnx.Linear(
            dim, width, kernel_init=zeros, bias_init=zeros, param_dtype=DTYPE, rngs=rngs
        )

    def __call__(self, z_in, t):
        """z_in: (..., *latent) preconditioned input; t: (...) rectified-flow times."""
        emb = layers.timestep_embedding(t, self.time_dim)
        cond = self.time_out(jax.nn.silu(self.time_in(emb)))
        h = self.proj(jnp.asarray(z_in, DTYPE))
        if self.architecture == "transformer":
            pos = self.pos[...]
            h = h + pos.reshape((1,) * (h.ndim - 2) + pos.shape)
            for block in self.blocks:
                h = block(h, cond=cond)
            shift, scale = jnp.split(self.final_mod(jax.nn.silu(cond))[..., None, :], 2, axis=-1)
            h = self.norm(h) * (1.0 + scale) + shift
        else:
            for block in self.blocks:
                h = block(h, cond)
            h = self.norm(h)
        return self.out(h)


def _coefficients(t, sigma_data):
    """(c_in, c_skip, c_out) at rectified-flow time t (any shape), in t's dtype."""
    a, s = 1.0 - t, t
    v = s * s + a * a * sigma_data * sigma_data
    root = jnp.sqrt(v)
    return 1.0 / root, a * sigma_data * sigma_data / v, s * sigma_data / root


def precondition(net: LatentDenoiser, z, t):
    """x̂0 = c_skip·z + c_out·F(c_in·z, t) for rectified-flow latents.

    Args:
        net: the network.
        z: (*batch, *latent) rectified-flow latents.
        t: (*batch,) times, broadcast over the latent axes.
    """
    t = jnp.asarray(t, z.dtype)
    sd = net.sigma_data[...].astype(z.dtype)
    c_in, c_skip, c_out = _coefficients(t, sd)
    expand = (...,) + (None,) * (z.ndim - t.ndim)
    out = net(c_in[expand] * z, t).astype(z.dtype)
    return c_skip[expand] * z + c_out[expand] * out


def denoiser_loss(
    net: LatentDenoiser,
    x0,
    key,
    *,
    t_min: float,
    t_sampling: str = "uniform",
    t_logit_mean: float = 0.0,
):
    """Mean |F(c_in z, t) − (x0 − c_skip z)/c_out|², z = (1−t)x0 + tε, t drawn per
    `t_sampling` in [t_min, 1] (see `DenoiserConfig`).

    Equals E w(t)|x̂0 − x0|² with w = 1/c_out² (see the module docstring). Also reports
    the plain x0 MSE of the batch.
    """
    key_t, key_eps = jr.split(key)
    x0 = jnp.asarray(x0, DTYPE)
    if t_sampling == "logit_normal":
        u = t_logit_mean + jr.normal(key_t, (x0.shape[0],), DTYPE)
        t = jnp.clip(jax.nn.sigmoid(u), t_min, 1.0)
    else:
        t = jr.uniform(key_t, (x0.shape[0],), DTYPE, minval=t_min, maxval=1.0)
    eps = jr.normal(key_eps, x0.shape, DTYPE)
    expand = (...,) + (None,) * (x0.ndim - 1)
    tt = t[expand]
    z = (1.0 - tt) * x0 + tt * eps
    c_in, c_skip, c_out = _coefficients(tt, net.sigma_data[...])
    out = net(c_in * z, t)
    target = (x0 - c_skip * z) / c_out
    loss = jnp.mean((out - target) ** 2)
    x0_mse = jnp.mean((c_skip * z + c_out * out - x0) ** 2)
    return loss, {"x0_mse": x0_mse}


@ft.partial(jax.jit, static_argnums=(0, 4))
def _denoise_jit(graphdef, state, z, t, schedule):
    if not isinstance(schedule, schedules.RectifiedFlow):
        a = jnp.asarray(schedule.alpha(t), z.dtype)
        s = jnp.asarray(schedule.sigma(t), z.dtype)
        denom = a + s
        expand = (...,) + (None,) * (z.ndim - t.ndim)
        z, t = z / denom[expand], s / denom
    return precondition(nnx.merge(graphdef, state), z, t)


@ft.partial(jax.jit, static_argnums=0)
def _apply_jit(graphdef, state, x):
    return nnx.merge(graphdef, state)(x)


@pytree_dataclass
class LearnedDenoiser:
    """A trained `LatentDenoiser` as a pytree (graphdef static, state = array leaves)."""

    graphdef: Any = static_field()
    state: Any

    def __call__(self, z, t, schedule: schedules.AbstractSchedule):
        """E[x0 | z_t = z] under `schedule` for ONE latent (or a batch with t of shape
        (*batch,)); computed in z's dtype except inside the float32 network."""
        return _denoise_jit(self.graphdef, self.state, z, jnp.asarray(t, z.dtype), schedule)

    @property
    def sigma_data(self) -> float:
        return float(nnx.merge(self.graphdef, self.state).sigma_data[...])


@pytree_dataclass
class ParallelReadout:
    """The parallel text decoder as a categorical readout: logits (L, V) of one latent."""

    graphdef: Any = static_field()
    state: Any

    readout_kind: ClassVar[str] = "categorical"

    def logits(self, x):
        return _apply_jit(self.graphdef, self.state, x).astype(jnp.result_type(x.dtype, DTYPE))

    def decode(self, x):
        return self.logits(x)

    def readout(self, x):
        return jnp.argmax(self.logits(x), axis=-1)


@pytree_dataclass
class PixelDecoder:
    """The image decoder as a smooth readout: pixels (64,) in [0, 1] of one latent."""

    graphdef: Any = static_field()
    state: Any

    readout_kind: ClassVar[str] = "smooth"

    def decode(self, x):
        return _apply_jit(self.graphdef, self.state, x).astype(jnp.result_type(x.dtype, DTYPE))

    def readout(self, x):
        return self.decode(x)


def _check_schedule(schedule) -> schedules.AbstractSchedule:
    if isinstance(schedule, str):
        return schedules.get_schedule(schedule)
    if not isinstance(schedule, schedules.AbstractSchedule):
        raise ValueError(f"schedule must be a schedule name or object, got {schedule!r}")
    return schedule


@pytree_dataclass
class TextManifold:
    """The learned text world as a categorical Manifold (SPEC §3.5).

    One example is a latent (L, d). `denoise` is the learned x0-prediction denoiser;
    `logits` / `decode` the decoder's logits (L, V) (the parallel decoder by default;
    `with_readout(world.ar_readout)` reads with the AR decoder instead); `readout` the
    argmax tokens (L,). All parameters are array leaves, the graphs static, so the
    manifold is a `jit` argument and a second sampling run does not retrace.

    Attributes:
        denoiser: the `LearnedDenoiser`.
        decoder: a categorical readout pytree with `logits(x)` (`ParallelReadout` or
            `text.ARReadout`).
        latent_shape: (L, d).
        schedule: the noise schedule (default rectified flow).
    """

    denoiser: LearnedDenoiser
    decoder: Any
    latent_shape: tuple[int, ...] = static_field()
    schedule: schedules.AbstractSchedule = static_field(default=schedules.RectifiedFlow())

    readout_kind: ClassVar[str] = "categorical"

    def __post_init__(self):
        object.__setattr__(self, "schedule", _check_schedule(self.schedule))
        object.__setattr__(self, "latent_shape", tuple(int(n) for n in self.latent_shape))

    def denoise(self, z, t):
        """E[x0 | z_t = z] for one latent z (L, d)."""
        return self.denoiser(z, t, self.schedule)

    def logits(self, x):
        """Decoder logits (L, V) of one clean latent."""
        return self.decoder.logits(x)

    def decode(self, x):
        """The smooth part of the readout: the logits (L, V)."""
        return self.logits(x)

    def readout(self, x):
        """Argmax token per position (L,)."""
        return jnp.argmax(self.logits(x), axis=-1)

    def with_schedule(self, schedule) -> TextManifold:
        """The same learned posterior mean under another schedule (name or object)."""
        return dataclasses.replace(self, schedule=_check_schedule(schedule))

    def with_readout(self, decoder) -> TextManifold:
        """The same denoiser read by another categorical readout (e.g. the AR decoder)."""
        if not callable(getattr(decoder, "logits", None)):
            raise ValueError("decoder must have a logits(x) method")
        return dataclasses.replace(self, decoder=decoder)


@pytree_dataclass
class ImageManifold:
    """The learned digit world as a smooth Manifold: latents (d,), `decode` → pixels (64,)
    in [0, 1], `readout` = `decode` (SPEC §3.4–3.5)."""

    denoiser: LearnedDenoiser
    decoder: PixelDecoder
    latent_shape: tuple[int, ...] = static_field()
    schedule: schedules.AbstractSchedule = static_field(default=schedules.RectifiedFlow())

    readout_kind: ClassVar[str] = "smooth"

    def __post_init__(self):
        object.__setattr__(self, "schedule", _check_schedule(self.schedule))
        object.__setattr__(self, "latent_shape", tuple(int(n) for n in self.latent_shape))

    def denoise(self, z, t):
        """E[x0 | z_t = z] for one latent z (d,)."""
        return self.denoiser(z, t, self.schedule)

    def decode(self, x):
        """Pixels (64,) in [0, 1] of one clean latent."""
        return self.decoder.decode(x)

    def readout(self, x):
        """The smooth readout: the pixels themselves."""
        return self.decode(x)

    def with_schedule(self, schedule) -> ImageManifold:
        """The same learned posterior mean under another schedule (name or object)."""
        return dataclasses.replace(self, schedule=_check_schedule(schedule))
