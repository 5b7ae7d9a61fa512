"""Shared Flax NNX building blocks: a pre-LN transformer block, a time embedding, RMS latents."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "DTYPE",
    "float32_mode",
    "TransformerBlock",
    "MLPBlock",
    "rms_normalize",
    "timestep_embedding",
]

DTYPE = jnp.float32
"""Every learned model computes and stores its parameters in float32, whatever
`jax_enable_x64` says, so a checkpoint is the same in every process."""


def float32_mode():
    """Context manager: trace and run in JAX's 32-bit mode, whatever `jax_enable_x64` says.

    Model initialisation, training and the training-time evaluations run inside it, so
    the trained parameters (and the metrics saved with them) are the same bits whether
    the process enables x64 (the test suite) or not (the command line). Without it,
    integer data become int64 and the optimiser's schedule arithmetic float64 under
    x64, and the same config and seed trained different parameters in the two modes
    (measured: 1e-5 differences), while sharing one cache key.
    """
    return jax.enable_x64(False)


def rms_normalize(h: Any, eps: float = 1e-6) -> Any:
    """h / rms(h) over the last axis: each latent vector gets norm √d (unit scale per
    coordinate, the scale of the schedule's unit-variance noise at t = 1)."""
    return h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + eps)


def timestep_embedding(t: Any, dim: int, *, max_period: float = 10_000.0) -> Any:
    """Sinusoidal embedding of 1000·t (DDPM / transformer positional style), shape (*t, dim).

    Args:
        t: times in [0, 1], any shape.
        dim: embedding width (even).
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=DTYPE) / half)
    t = 1000.0 * jnp.asarray(t, DTYPE)
    args = t[..., None] * freqs.reshape((1,) * t.ndim + (half,))
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def _attention(num_heads: int, dim: int, rngs: nnx.Rngs) -> nnx.MultiHeadAttention:
    return nnx.MultiHeadAttention(
        num_heads, dim, decode=False, keep_rngs=False, param_dtype=DTYPE, rngs=rngs
    )


class TransformerBlock(nnx.Module):
    """Pre-LayerNorm transformer block: self-attention (optionally causal), optional
    cross-attention to a memory, GELU MLP; optional adaLN-Zero conditioning (DiT).

    With `cond_dim > 0` the block's LayerNorms have no affine parameters and a zero-
    initialised linear map of the conditioning vector gives per-block shift, scale and
    gate of the attention and MLP branches (Peebles & Xie 2023), so every block starts
    as the identity.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: int = 4,
        cross: bool = False,
        cond_dim: int = 0,
        rngs: nnx.Rngs,
    ):
        affine = cond_dim == 0
        kw = dict(use_scale=affine, use_bias=affine, param_dtype=DTYPE, rngs=rngs)
        self.norm_attn = nnx.LayerNorm(dim, **kw)
        self.attn = _attention(num_heads, dim, rngs)
        self.cross = cross
        if cross:
            self.norm_cross = nnx.LayerNorm(dim, param_dtype=DTYPE, rngs=rngs)
            self.cross_attn = _attention(num_heads, dim, rngs)
        self.norm_mlp = nnx.LayerNorm(dim, **kw)
        self.mlp_in = nnx.Linear(dim, mlp_ratio * dim, param_dtype=DTYPE, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_ratio * dim, dim, param_dtype=DTYPE, rngs=rngs)
        self.conditioned = cond_dim > 0
        if self.conditioned:
            zeros = nnx.initializers.zeros_init()
            self.modulation = nnx.Linear(
                cond_dim, 6 * dim, kernel_init=zeros, bias_init=zeros, param_dtype=DTYPE, rngs=rngs
            )

    def __call__(self, h, *, memory=None, causal: bool = False, cond=None):
        """h: (..., T, dim); memory: (..., S, dim) for cross-attention; cond: (..., cond_dim)."""
        if self.conditioned:
            mod = self.modulation(jax.nn.silu(cond))[..., None, :]
            shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = jnp.split(mod, 6, axis=-1)
        else:
            shift_a = shift_m = gate_a = gate_m = None
            scale_a = scale_m = None

        def modulate(x, shift, scale):
            return x if shift is None else x * (1.0 + scale) + shift

        def gated(x, gate):
            return x if gate is None else gate * x

        a = modulate(self.norm_attn(h), shift_a, scale_a)
        h = h + gated(self.attn(a, is_causal=causal), gate_a)
        if self.cross:
            h = h + self.cross_attn(self.norm_cross(h), memory)
        m = modulate(self.norm_mlp(h), shift_m, scale_m)
        h = h + gated(self.mlp_out(jax.nn.gelu(self.mlp_in(m))), gate_m)
        return h


class MLPBlock(nnx.Module):
    """Pre-LN residual MLP block with additive conditioning: h + W2·gelu(W1·(LN(h)) + c)."""

    def __init__(self, dim: int, *, hidden: int, cond_dim: int = 0, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(dim, param_dtype=DTYPE, rngs=rngs)
        self.fc_in = nnx.Linear(dim, hidden, param_dtype=DTYPE, rngs=rngs)
        self.fc_out = nnx.Linear(hidden, dim, param_dtype=DTYPE, rngs=rngs)
        self.conditioned = cond_dim > 0
        if self.conditioned:
            self.cond = nnx.Linear(cond_dim, hidden, param_dtype=DTYPE, rngs=rngs)

    def __call__(self, h, cond=None):
        u = self.fc_in(self.norm(h))
        if self.conditioned:
            u = u + self.cond(jax.nn.silu(cond))
        return h + self.fc_out(jax.nn.gelu(u))
