"""Readout geometry shared by samplers and diagnostics: margins, flips, token distributions."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from readout_jax import _checks
from readout_jax._types import Array, ArrayLike, Float

__all__ = ["margin", "top_two", "token_probs"]


def _logits(logits, min_vocab: int):
    """Static checks (tracers too): a floating array with a vocabulary axis of size ≥ V."""
    if not isinstance(logits, jax.core.Tracer):
        logits = _checks.float_array(logits, "logits", allow_int=False)
    else:
        _checks.latent(logits, "logits", check_finite=False)
    if logits.ndim < 1 or logits.shape[-1] < min_vocab:
        raise ValueError(
            f"logits must have shape (..., V) with a vocabulary axis V >= {min_vocab}, "
            f"got shape {logits.shape}"
        )
    return logits


def top_two(logits: ArrayLike) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
    """The largest and second-largest logit along the last axis.

    Args:
        logits: (..., V) floating logits, V ≥ 2.

    Raises:
        ValueError: for a non-floating dtype or a last axis of size < 2.
    """
    logits = _logits(logits, 2)
    top = jax.lax.top_k(logits, 2)[0]
    return top[..., 0], top[..., 1]


def margin(logits: ArrayLike) -> Float[Array, "..."]:
    """m = ℓ_(1) − ℓ_(2) ≥ 0 per position (SPEC §2): top-1 minus top-2 logit.

    Args:
        logits: (..., V) floating logits, V ≥ 2.

    Raises:
        ValueError: for a non-floating dtype or a last axis of size < 2.
    """
    first, second = top_two(logits)
    return first - second


def token_probs(logits: ArrayLike) -> Float[Array, "... V"]:
    """Per-position token distribution softmax(ℓ) over the last axis (V ≥ 1)."""
    return jax.nn.softmax(jnp.asarray(_logits(logits, 1)), axis=-1)
