"""Readout geometry shared by samplers and diagnostics: margins, flips, token distributions."""

from __future__ import annotations

import jax

from readout_jax._types import Array, Float

__all__ = ["margin", "top_two", "token_probs"]


def top_two(logits: Float[Array, "... V"]) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
    """The largest and second-largest logit along the last axis (V ≥ 2)."""
    top = jax.lax.top_k(logits, 2)[0]
    return top[..., 0], top[..., 1]


def margin(logits: Float[Array, "... V"]) -> Float[Array, "..."]:
    """m = ℓ_(1) − ℓ_(2) ≥ 0 per position (SPEC §2): top-1 minus top-2 logit."""
    first, second = top_two(logits)
    return first - second


def token_probs(logits: Float[Array, "... V"]) -> Float[Array, "... V"]:
    """Per-position token distribution softmax(ℓ)."""
    return jax.nn.softmax(logits, axis=-1)
