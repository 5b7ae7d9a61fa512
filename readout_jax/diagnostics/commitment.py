"""Categorical commitment: the commitment curve and its area, CCI (SPEC §5) [ours].

Along a trajectory with recorded posterior-mean estimates x̂0(z_k, t_k) (the harness's
`info.x0_hat`, axes (batch, K, *latent)), c(t_k) is the fraction of positions whose
readout of x̂0(z_k, t_k) already equals the final token (the readout of the terminal
output `SampleResult.x0`), and CCI = mean_k c(t_k), the area under the curve: 1 for a
sampler that commits at its first step, 1/K for one whose estimates read as the final
tokens only at its last step.

The autoregressive intervention variant compares perplexities with committed tokens
fed back vs soft expectations fed back; `ar_intervention` is the hook that a learned
AR decoder plugs into (`ARDecodeFn`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from readout_jax import _checks, harness
from readout_jax._types import Array, ArrayLike, Float, Key, Latent
from readout_jax.diagnostics import boundary

__all__ = [
    "CCIResult",
    "ARDecodeFn",
    "ARIntervention",
    "commitment_curve",
    "cci",
    "cci_from_tokens",
    "ar_intervention",
]


class CCIResult(NamedTuple):
    """Commitment curves and indices.

    Attributes:
        curve: (batch, K) c(t_k) per trajectory.
        index: (batch,) CCI per trajectory (mean of its curve over the K steps).
        mean_curve: (K,) the curve averaged over trajectories.
        mean_index: the CCI averaged over trajectories.
        std_error: Monte Carlo standard error of `mean_index` (NaN for batch = 1).
    """

    curve: Float[Array, " batch K"]
    index: Float[Array, " batch"]
    mean_curve: Float[Array, " K"]
    mean_index: Float[Array, ""]
    std_error: Float[Array, ""]


def _check_tokens(tokens: Any, name: str) -> Array:
    """Integer token ids (any range: only equality is used); dtype checked statically."""
    if not isinstance(tokens, jax.core.Tracer):
        try:
            tokens = jnp.asarray(tokens)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} could not be converted to an array: {err}") from None
    if tokens.dtype == jnp.bool_ or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"{name} must be integer token ids, got dtype {tokens.dtype}")
    return tokens


def commitment_curve(
    tokens: ArrayLike,
    final_tokens: ArrayLike,
    *,
    sample_axis: int = 0,
    step_axis: int = 1,
) -> Float[Array, " batch K"]:
    """c(t_k): the fraction of positions whose token at step k equals the final token.

    Args:
        tokens: per-step tokens, (batch, K, *positions) in the default layout.
        final_tokens: (batch, *positions) final tokens.
        sample_axis, step_axis: the axes of `tokens` over trajectories and steps.

    Returns:
        (batch, K) fractions in [0, 1].

    Raises:
        ValueError: if the tokens are not integers, the axes are equal or out of range,
            the shapes disagree, or there is no trajectory or no step.
    """
    tokens = _check_tokens(tokens, "tokens")
    final_tokens = _check_tokens(final_tokens, "final_tokens")
    nd = tokens.ndim
    for name, axis in (("sample_axis", sample_axis), ("step_axis", step_axis)):
        if not -nd <= axis < nd:
            raise ValueError(f"{name} {axis} is out of range for tokens of shape {tokens.shape}")
    if sample_axis % nd == step_axis % nd:
        raise ValueError("sample_axis and step_axis must differ")
    tokens = jnp.moveaxis(tokens, (sample_axis % nd, step_axis % nd), (0, 1))
    expected = (tokens.shape[0], *tokens.shape[2:])
    if tuple(final_tokens.shape) != expected:
        raise ValueError(
            f"final_tokens must have shape (batch, *positions) = {expected}, got "
            f"{final_tokens.shape}"
        )
    batch, num_steps = tokens.shape[:2]
    if batch < 1 or num_steps < 1:
        raise ValueError(
            f"tokens must have batch >= 1 trajectories and K >= 1 steps, got batch = "
            f"{batch}, K = {num_steps}"
        )
    same = tokens == final_tokens[:, None]
    return jnp.mean(same.reshape(batch, num_steps, -1), axis=-1).astype(jnp.result_type(float))


def cci_from_tokens(
    tokens: ArrayLike,
    final_tokens: ArrayLike,
    *,
    sample_axis: int = 0,
    step_axis: int = 1,
) -> CCIResult:
    """CCI from per-step and final tokens (see `commitment_curve` for the arguments)."""
    curve = commitment_curve(tokens, final_tokens, sample_axis=sample_axis, step_axis=step_axis)
    index = jnp.mean(curve, axis=1)
    batch = curve.shape[0]
    if batch > 1:
        se = jnp.std(index, ddof=1) / math.sqrt(batch)
    else:
        se = jnp.full((), jnp.nan, index.dtype)
    return CCIResult(curve, index, jnp.mean(curve, axis=0), jnp.mean(index), se)


def cci(
    readout: Any,
    x0_hat: ArrayLike,
    x_final: ArrayLike,
) -> CCIResult:
    """Commitment curve and CCI of sampled trajectories.

    Args:
        readout: a categorical world (its `logits` are read by argmax) or a callable
            `logits_fn(x) -> (*positions, V)`.
        x0_hat: (batch, K, *latent) the recorded x̂0 of each step
            (`sample(...).info.x0_hat`).
        x_final: (batch, *latent) the terminal outputs (`sample(...).x0`) whose readout
            defines the final tokens.

    Returns:
        `CCIResult(curve, index, mean_curve, mean_index, std_error)`.

    Raises:
        ValueError: for a smooth world (no tokens to commit to), non-floating or
            non-finite latents, shapes that disagree, or K = 0.

    Examples:
        >>> import jax.random as jr
        >>> from readout_jax import manifolds, sample, samplers, schedules
        >>> world = manifolds.GaussianMixture.two_modes(4.0, dim=2, std=0.5)
        >>> ts = schedules.time_grid(world.schedule, 4)
        >>> out = sample(samplers.DDIM(), world, jr.key(1), jr.normal(jr.key(0), (8, 2)), ts)
        >>> cci(world, out.info.x0_hat, out.x0).curve.shape
        (8, 4)
    """
    r = boundary._as_categorical(readout)
    x0_hat = _checks.latent(x0_hat, "x0_hat")
    x_final = _checks.latent(x_final, "x_final")
    if x0_hat.ndim < 3 or x0_hat.shape[:1] + x0_hat.shape[2:] != x_final.shape:
        raise ValueError(
            f"x0_hat must have shape (batch, K, *latent) matching x_final (batch, *latent) "
            f"= {x_final.shape}, got {x0_hat.shape}"
        )
    if x0_hat.shape[1] < 1:
        raise ValueError("x0_hat has no steps (K = 0); need K >= 1")
    x_final = boundary._check_latent(x_final, "x_final", r, batch=True)
    return _cci_jit(r, x0_hat, x_final)


@jax.jit
def _cci_jit(r, x0_hat, x_final):
    def tokens_of(x):
        return jnp.argmax(r.logits(x), axis=-1)

    tokens = jax.vmap(jax.vmap(tokens_of))(x0_hat)
    final = jax.vmap(tokens_of)(x_final)
    return cci_from_tokens(tokens, final)


# ---- autoregressive intervention hook ------------------------------------------------


class ARDecodeFn(Protocol):
    """Decode ONE latent and score the result: per-token negative log-likelihoods.

    The callable runs the autoregressive decoder on `z` (feeding back either the
    committed tokens or the soft expectations, depending on which variant it is) and
    returns the NLL in nats of each generated token under the evaluator, shape (L,).
    `key` drives any sampling inside; both variants receive the same key.
    """

    def __call__(self, z: Latent, key: Key) -> Float[Array, " L"]: ...


class ARIntervention(NamedTuple):
    """Perplexities with committed vs soft feedback (the commitment intervention).

    Attributes:
        perplexity_committed: exp(mean NLL per token), committed tokens fed back.
        perplexity_soft: exp(mean NLL per token), soft expectations fed back.
        log_ratio: log(perplexity_soft / perplexity_committed), paired over latents.
        std_error_log_ratio: its Monte Carlo standard error (paired differences of the
            per-sequence mean NLLs; NaN for batch = 1).
        nll_committed: (batch,) mean NLL per token of each sequence, committed.
        nll_soft: (batch,) the same, soft.
    """

    perplexity_committed: Float[Array, ""]
    perplexity_soft: Float[Array, ""]
    log_ratio: Float[Array, ""]
    std_error_log_ratio: Float[Array, ""]
    nll_committed: Float[Array, " batch"]
    nll_soft: Float[Array, " batch"]


def ar_intervention(
    decode_committed_fn: Any,
    decode_soft_fn: Any,
    z: ArrayLike,
    *,
    key: Any,
) -> ARIntervention:
    """The AR intervention variant of CCI: perplexity with vs without commitment.

    Both callables decode the same latents with the same per-latent keys
    (`fold_in(key, i)`, common random numbers); perplexity is exp of the mean
    per-token NLL pooled over all sequences. Wrap the call in `jax.jit` if the
    callables are traceable.

    Args:
        decode_committed_fn: `ARDecodeFn` that feeds back committed (argmax or sampled)
            tokens.
        decode_soft_fn: `ARDecodeFn` that feeds back soft expectations instead.
        z: (batch, *latent) latents to decode.
        key: random key.

    Returns:
        `ARIntervention(perplexity_committed, perplexity_soft, log_ratio,
        std_error_log_ratio, nll_committed, nll_soft)`.

    Raises:
        ValueError: if a callable is not callable, `z` has no batch axis, or the
            callables return arrays that are not 1-D.
    """
    named = (("decode_committed_fn", decode_committed_fn), ("decode_soft_fn", decode_soft_fn))
    for name, fn in named:
        if not callable(fn):
            raise ValueError(f"{name} must be callable, got {type(fn).__name__}")
    z = _checks.latent(z, "z", batch=True)
    keys = harness.chain_keys(harness._as_key(key), z.shape[0])

    def run(fn, name):
        nll = jax.vmap(fn)(z, keys)
        if nll.ndim != 2:
            raise ValueError(
                f"{name} must return per-token NLLs of shape (L,), got {nll.shape[1:]}"
            )
        return nll

    committed = run(decode_committed_fn, "decode_committed_fn")
    soft = run(decode_soft_fn, "decode_soft_fn")
    nll_c, nll_s = jnp.mean(committed, axis=1), jnp.mean(soft, axis=1)
    ppl_c, ppl_s = jnp.exp(jnp.mean(committed)), jnp.exp(jnp.mean(soft))
    diff = nll_s - nll_c
    batch = z.shape[0]
    se = jnp.std(diff, ddof=1) / math.sqrt(batch) if batch > 1 else jnp.full((), jnp.nan)
    return ARIntervention(ppl_c, ppl_s, jnp.log(ppl_s) - jnp.log(ppl_c), se, nll_c, nll_s)
