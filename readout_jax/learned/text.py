"""Text models: a character autoencoder with parallel and autoregressive decoders, and the
evaluator causal language model (Flax NNX).

Autoencoder (`TextAutoencoder`), for sequences of L characters over a vocabulary of V:

- encoder: token embedding + learned positions → bidirectional pre-LN transformer →
  linear map to width d per position → RMS normalisation (`layers.rms_normalize`, every
  latent vector has norm √d, unit scale per coordinate). Latents (L, d).
- parallel decoder: linear d → D + positions → bidirectional transformer → per-position
  logits (L, V). Read by argmax: the sharp categorical readout of the paper.
- autoregressive decoder: causal transformer over the previous tokens (BOS first) with
  cross-attention to the projected latents (all L of them); teacher-forced in training.
  Its input at position i is a vector: the embedding of token i−1 (committed feedback)
  or Σ_v p_{i−1}(v)·E[v] (soft feedback, a probability-weighted embedding), so the
  commitment intervention of SPEC §5 (C3b) is a change of input, not of model.
- noise augmentation: in training each decoder reads x + σ·ξ with σ ~ U(0, σ_max) per
  sequence (σ_max = `noise_aug` for the parallel decoder, `ar_noise_aug` for the AR
  decoder). The AR decoder gets the larger range on purpose: an AR decoder whose latents
  already determine every token would never need its own prefix, and then the
  commitment intervention would have nothing to act on.

Loss: cross-entropy of the parallel decoder + `ar_weight` × cross-entropy of the
teacher-forced AR decoder, on training windows.

Evaluator (`CausalLM`): a causal character transformer on the same training windows
(BOS-shifted), giving per-token negative log-likelihoods in nats; `Evaluator` wraps it
with the unigram baseline (add-one-smoothed training character frequencies).
"""

from __future__ import annotations

import dataclasses
import functools as ft
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from flax import nnx

from readout_jax._pytree import pytree_dataclass, static_field
from readout_jax.learned import layers
from readout_jax.learned.layers import DTYPE

__all__ = [
    "TextAEConfig",
    "LMConfig",
    "TextEncoder",
    "ParallelDecoder",
    "ARDecoder",
    "TextAutoencoder",
    "CausalLM",
    "Evaluator",
    "ARDecodeScorer",
    "ARReadout",
    "FEEDBACKS",
    "autoencoder_loss",
    "lm_loss",
    "ar_decode",
]

FEEDBACKS = ("committed", "soft")


@dataclasses.dataclass(frozen=True)
class TextAEConfig:
    """Text autoencoder sizes and augmentation.

    Attributes:
        latent_dim: d, latent width per position (8–16).
        model_dim: D, transformer width.
        num_heads: attention heads.
        encoder_layers, parallel_layers, ar_layers: transformer blocks of each part.
        mlp_ratio: MLP hidden width / D.
        noise_aug: σ_max of the parallel decoder's latent noise augmentation.
        ar_noise_aug: σ_max of the AR decoder's latent noise augmentation.
        ar_weight: weight of the AR cross-entropy in the loss.
    """

    latent_dim: int = 16
    model_dim: int = 64
    num_heads: int = 4
    encoder_layers: int = 1
    parallel_layers: int = 1
    ar_layers: int = 1
    mlp_ratio: int = 4
    noise_aug: float = 0.2
    ar_noise_aug: float = 1.0
    ar_weight: float = 1.0

    def __post_init__(self):
        for name in ("latent_dim", "model_dim", "num_heads", "mlp_ratio", "parallel_layers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        for name in ("encoder_layers", "ar_layers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if self.model_dim % self.num_heads:
            raise ValueError(
                f"model_dim ({self.model_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        for name in ("noise_aug", "ar_noise_aug", "ar_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """Evaluator language model sizes."""

    model_dim: int = 64
    num_heads: int = 4
    num_layers: int = 2
    mlp_ratio: int = 4

    def __post_init__(self):
        for name in ("model_dim", "num_heads", "num_layers", "mlp_ratio"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if self.model_dim % self.num_heads:
            raise ValueError(
                f"model_dim ({self.model_dim}) must be divisible by num_heads ({self.num_heads})"
            )


def _positions(length: int, dim: int, rngs: nnx.Rngs) -> nnx.Param:
    return nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (length, dim), DTYPE))


def _add(h, table):
    """h (..., T, D) + table[:T] without implicit rank promotion."""
    t = table[: h.shape[-2]]
    return h + t.reshape((1,) * (h.ndim - 2) + t.shape)


class TextEncoder(nnx.Module):
    """Tokens (..., L) → RMS-normalised latents (..., L, d)."""

    def __init__(self, vocab_size: int, length: int, cfg: TextAEConfig, *, rngs: nnx.Rngs):
        dim = cfg.model_dim
        self.embed = nnx.Embed(vocab_size, dim, param_dtype=DTYPE, rngs=rngs)
        self.pos = _positions(length, dim, rngs)
        self.blocks = nnx.List(
            [
                layers.TransformerBlock(dim, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, rngs=rngs)
                for _ in range(cfg.encoder_layers)
            ]
        )
        self.norm = nnx.LayerNorm(dim, param_dtype=DTYPE, rngs=rngs)
        self.proj = nnx.Linear(dim, cfg.latent_dim, param_dtype=DTYPE, rngs=rngs)

    def __call__(self, tokens):
        h = _add(self.embed(tokens), self.pos[...])
        for block in self.blocks:
            h = block(h)
        return layers.rms_normalize(self.proj(self.norm(h)))


class ParallelDecoder(nnx.Module):
    """Latents (..., L, d) → logits (..., L, V), all positions at once."""

    def __init__(self, vocab_size: int, length: int, cfg: TextAEConfig, *, rngs: nnx.Rngs):
        dim = cfg.model_dim
        self.proj = nnx.Linear(cfg.latent_dim, dim, param_dtype=DTYPE, rngs=rngs)
        self.pos = _positions(length, dim, rngs)
        self.blocks = nnx.List(
            [
                layers.TransformerBlock(dim, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, rngs=rngs)
                for _ in range(cfg.parallel_layers)
            ]
        )
        self.norm = nnx.LayerNorm(dim, param_dtype=DTYPE, rngs=rngs)
        self.out = nnx.Linear(dim, vocab_size, param_dtype=DTYPE, rngs=rngs)

    def __call__(self, latents):
        h = _add(self.proj(jnp.asarray(latents, DTYPE)), self.pos[...])
        for block in self.blocks:
            h = block(h)
        return self.out(self.norm(h))


class ARDecoder(nnx.Module):
    """Causal decoder: logits of token i from the inputs at positions ≤ i and all latents.

    The input at position 0 is the BOS embedding (row V of `embed`); at position i it
    is the embedding of token i−1 (committed) or its probability-weighted embedding
    (soft).
    """

    def __init__(self, vocab_size: int, length: int, cfg: TextAEConfig, *, rngs: nnx.Rngs):
        dim = cfg.model_dim
        self.vocab_size = vocab_size
        self.embed = nnx.Embed(vocab_size + 1, dim, param_dtype=DTYPE, rngs=rngs)
        self.pos = _positions(length, dim, rngs)
        self.mem_proj = nnx.Linear(cfg.latent_dim, dim, param_dtype=DTYPE, rngs=rngs)
        self.mem_pos = _positions(length, dim, rngs)
        self.blocks = nnx.List(
            [
                layers.TransformerBlock(
                    dim, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, cross=True, rngs=rngs
                )
                for _ in range(cfg.ar_layers)
            ]
        )
        self.norm = nnx.LayerNorm(dim, param_dtype=DTYPE, rngs=rngs)
        self.out = nnx.Linear(dim, vocab_size, param_dtype=DTYPE, rngs=rngs)

    def bos(self):
        """The BOS input vector (D,)."""
        return self.embed.embedding[...][self.vocab_size]

    def token_inputs(self, tokens):
        """Committed inputs (..., L, D): BOS, then the embeddings of tokens[..., :-1]."""
        bos = jnp.full(tokens.shape[:-1] + (1,), self.vocab_size, tokens.dtype)
        return self.embed(jnp.concatenate([bos, tokens[..., :-1]], axis=-1))

    def soft_vector(self, probs):
        """Σ_v p(v)·E[v]: the probability-weighted embedding (..., D) of probs (..., V)."""
        return jnp.asarray(probs, DTYPE) @ self.embed.embedding[...][: self.vocab_size]

    def logits_from_inputs(self, latents, inputs):
        """Logits (..., L, V) from latents (..., L, d) and input vectors (..., L, D)."""
        memory = _add(self.mem_proj(jnp.asarray(latents, DTYPE)), self.mem_pos[...])
        h = _add(jnp.asarray(inputs, DTYPE), self.pos[...])
        for block in self.blocks:
            h = block(h, memory=memory, causal=True)
        return self.out(self.norm(h))

    def __call__(self, latents, tokens):
        """Teacher-forced logits (..., L, V): position i conditions on tokens[..., :i]."""
        return self.logits_from_inputs(latents, self.token_inputs(tokens))


class TextAutoencoder(nnx.Module):
    """Encoder + parallel decoder + autoregressive decoder on the same latents."""

    def __init__(self, vocab_size: int, length: int, cfg: TextAEConfig, *, rngs: nnx.Rngs):
        self.encoder = TextEncoder(vocab_size, length, cfg, rngs=rngs)
        self.parallel = ParallelDecoder(vocab_size, length, cfg, rngs=rngs)
        self.ar = ARDecoder(vocab_size, length, cfg, rngs=rngs)


def _cross_entropy(logits, tokens):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, tokens))


def _accuracy(logits, tokens):
    return jnp.mean((jnp.argmax(logits, axis=-1) == tokens).astype(DTYPE))


def autoencoder_loss(model: TextAutoencoder, tokens, key, *, cfg: TextAEConfig):
    """CE(parallel(x + σ₁ξ₁)) + ar_weight·CE(ar(x + σ₂ξ₂, teacher forcing)); x = enc(tokens).

    σ₁ ~ U(0, noise_aug), σ₂ ~ U(0, ar_noise_aug) per sequence.
    """
    x = model.encoder(tokens)
    k1, k2, k3, k4 = jr.split(key, 4)
    shape = (tokens.shape[0], 1, 1)
    s_par = cfg.noise_aug * jr.uniform(k1, shape, DTYPE)
    s_ar = cfg.ar_noise_aug * jr.uniform(k2, shape, DTYPE)
    par = model.parallel(x + s_par * jr.normal(k3, x.shape, DTYPE))
    ar = model.ar(x + s_ar * jr.normal(k4, x.shape, DTYPE), tokens)
    ce_par, ce_ar = _cross_entropy(par, tokens), _cross_entropy(ar, tokens)
    aux = {
        "ce_parallel": ce_par,
        "ce_ar": ce_ar,
        "acc_parallel": _accuracy(par, tokens),
        "acc_ar": _accuracy(ar, tokens),
    }
    return ce_par + cfg.ar_weight * ce_ar, aux


class CausalLM(nnx.Module):
    """Character language model: logits (..., n, V) of token i given tokens < i (BOS first)."""

    def __init__(self, vocab_size: int, length: int, cfg: LMConfig, *, rngs: nnx.Rngs):
        dim = cfg.model_dim
        self.vocab_size = vocab_size
        self.embed = nnx.Embed(vocab_size + 1, dim, param_dtype=DTYPE, rngs=rngs)
        self.pos = _positions(length, dim, rngs)
        self.blocks = nnx.List(
            [
                layers.TransformerBlock(dim, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, rngs=rngs)
                for _ in range(cfg.num_layers)
            ]
        )
        self.norm = nnx.LayerNorm(dim, param_dtype=DTYPE, rngs=rngs)
        self.out = nnx.Linear(dim, vocab_size, param_dtype=DTYPE, rngs=rngs)

    def __call__(self, tokens):
        bos = jnp.full(tokens.shape[:-1] + (1,), self.vocab_size, tokens.dtype)
        h = _add(self.embed(jnp.concatenate([bos, tokens[..., :-1]], axis=-1)), self.pos[...])
        for block in self.blocks:
            h = block(h, causal=True)
        return self.out(self.norm(h))


def lm_loss(model: CausalLM, tokens, key):
    """Mean next-character cross-entropy (nats)."""
    del key
    logits = model(tokens)
    return _cross_entropy(logits, tokens), {"accuracy": _accuracy(logits, tokens)}


def _token_nll(lm: CausalLM, tokens):
    return optax.softmax_cross_entropy_with_integer_labels(lm(tokens), tokens)


@ft.partial(jax.jit, static_argnums=0)
def _token_nll_jit(graphdef, state, tokens):
    return _token_nll(nnx.merge(graphdef, state), tokens)


CHUNK = 256
"""Host-side batch methods run their jitted kernels on chunks of exactly this many
examples (the last one padded), so each kernel compiles for one shape only."""


def map_batches(fn, *arrays, batch_size: int = CHUNK):
    """Apply `fn` to chunks of `batch_size` examples along the leading axis (the last
    chunk padded by repetition, so a jitted `fn` compiles once) and concatenate the
    results as numpy arrays."""
    num = arrays[0].shape[0]
    if num == 0:
        raise ValueError("empty batch")
    size = batch_size
    outs = []
    for start in range(0, num, size):
        stop = min(start + size, num)
        idx = np.minimum(np.arange(start, start + size), num - 1)
        out = fn(*(a[idx] for a in arrays))
        outs.append(jax.tree_util.tree_map(lambda o, n=stop - start: np.asarray(o)[:n], out))
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=0), *outs)


def _check_tokens(tokens, vocab_size: int, length: int) -> np.ndarray:
    arr = np.asarray(tokens)
    if arr.ndim < 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"tokens must be an integer array of shape (..., n), got {arr.dtype}{arr.shape}"
        )
    if not 1 <= arr.shape[-1] <= length:
        raise ValueError(f"tokens must have 1 <= n <= {length} positions, got n = {arr.shape[-1]}")
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        raise ValueError(f"tokens must lie in [0, {vocab_size}), got [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int32)


@pytree_dataclass
class Evaluator:
    """The perplexity evaluator: a trained `CausalLM` and the unigram baseline.

    A pytree (parameters are array leaves), so it can enter `jit` as an argument.
    `token_nll` is traceable (use it inside `jit` / `vmap`); `log_prob`, `perplexity`
    and `unigram_perplexity` take host arrays of any batch size (processed in chunks).

    Attributes:
        graphdef: the LM's static graph.
        state: its parameters.
        log_unigram: (V,) log of the add-one-smoothed training character frequencies.
        length: the longest sequence the LM scores (its position table).
    """

    graphdef: Any = static_field()
    state: Any
    log_unigram: Any
    length: int = static_field()

    @property
    def vocab_size(self) -> int:
        return int(self.log_unigram.shape[0])

    def token_nll(self, tokens):
        """Per-token NLL (nats) of tokens (..., n), n ≤ length: −log p(y_i | y_<i)."""
        return _token_nll_jit(self.graphdef, self.state, tokens)

    def _nll_host(self, tokens) -> np.ndarray:
        arr = _check_tokens(tokens, self.vocab_size, self.length)
        flat = arr.reshape(-1, arr.shape[-1])
        nll = map_batches(lambda t: _token_nll_jit(self.graphdef, self.state, t), flat)
        return nll.reshape(arr.shape)

    def log_prob(self, tokens) -> np.ndarray:
        """log p(y_1..y_n) in nats under the LM, shape (...,) for tokens (..., n)."""
        return -self._nll_host(tokens).sum(axis=-1)

    def perplexity(self, tokens) -> float:
        """exp(mean per-token NLL) pooled over all tokens of the batch."""
        return float(np.exp(self._nll_host(tokens).mean()))

    def unigram_perplexity(self, tokens) -> float:
        """exp(−mean log p_unigram(y)): the context-free baseline the LM must beat."""
        arr = _check_tokens(tokens, self.vocab_size, max(self.length, np.shape(tokens)[-1]))
        return float(np.exp(-np.asarray(self.log_unigram)[arr].mean()))


def ar_decode(ar: ARDecoder, latents, key, *, feedback: Any = "committed", temperature: Any = 0.0):
    """Decode ONE latent (L, d) with the AR decoder, left to right.

    At step i the decoder's logits ℓ_i come from the inputs at positions ≤ i; the
    emitted token is argmax ℓ_i (temperature 0) or a draw from softmax(ℓ_i/temperature)
    (key `fold_in(key, i)`); the input fed to position i + 1 is the emitted token's
    embedding ("committed") or Σ_v softmax(ℓ_i)_v·E[v] ("soft"). Each step reruns the
    causal decoder on the whole buffer (no KV cache; L passes). `temperature` may be a
    traced scalar; `feedback` may also be given as a (traced) bool, True = soft.

    Returns:
        (tokens (L,) int32, logits (L, V)).
    """
    if isinstance(feedback, str):
        if feedback not in FEEDBACKS:
            raise ValueError(f"feedback must be one of {FEEDBACKS}, got {feedback!r}")
        soft = feedback == "soft"
    else:
        soft = feedback
    soft = jnp.asarray(soft, bool)
    temperature = jnp.asarray(temperature, DTYPE)
    length = latents.shape[0]
    table = ar.embed.embedding[...]
    dim = table.shape[-1]
    inputs = jnp.zeros((length + 1, dim), DTYPE).at[0].set(ar.bos())
    tokens = jnp.zeros((length,), jnp.int32)
    all_logits = jnp.zeros((length, ar.vocab_size), DTYPE)
    safe_temperature = jnp.where(temperature > 0, temperature, 1.0)

    def body(i, carry):
        inputs, tokens, all_logits = carry
        logits = ar.logits_from_inputs(latents, inputs[:length])[i]
        sampled = jr.categorical(jr.fold_in(key, i), logits / safe_temperature)
        tok = jnp.where(temperature > 0, sampled, jnp.argmax(logits)).astype(jnp.int32)
        nxt = jnp.where(soft, ar.soft_vector(jax.nn.softmax(logits)), table[tok])
        inputs = inputs.at[i + 1].set(nxt)
        return inputs, tokens.at[i].set(tok), all_logits.at[i].set(logits)

    _, tokens, all_logits = jax.lax.fori_loop(0, length, body, (inputs, tokens, all_logits))
    return tokens, all_logits


@ft.partial(jax.jit, static_argnums=0)
def _ar_decode_jit(graphdef, state, latents, key, soft, temperature):
    ar = nnx.merge(graphdef, state)
    return ar_decode(ar, latents, key, feedback=soft, temperature=temperature)


@ft.partial(jax.jit, static_argnums=(0, 2))
def _score_jit(ar_graphdef, ar_state, lm_graphdef, lm_state, z, key, soft, temperature):
    ar = nnx.merge(ar_graphdef, ar_state)
    tokens, _ = ar_decode(ar, z, key, feedback=soft, temperature=temperature)
    return _token_nll(nnx.merge(lm_graphdef, lm_state), tokens)


@ft.partial(jax.jit, static_argnums=0)
def _ar_self_logits_jit(graphdef, state, x):
    ar = nnx.merge(graphdef, state)
    tokens, _ = ar_decode(ar, jax.lax.stop_gradient(x), jr.key(0))
    return ar(x, jax.lax.stop_gradient(tokens))


@pytree_dataclass
class ARDecodeScorer:
    """An `diagnostics.commitment.ARDecodeFn`: decode one latent with the AR decoder
    (committed or soft feedback) and return the evaluator NLL (L,) of the emitted tokens.

    Both variants built by `TextWorld.ar_decode_fn` share parameters; `key` drives
    sampling when `temperature` > 0 and is ignored at temperature 0 (greedy). A pytree
    (parameters and temperature are leaves): traceable under `jit` / `vmap`, and the
    committed and soft variants share one compiled kernel.
    """

    ar_graphdef: Any = static_field()
    ar_state: Any
    evaluator: Evaluator
    feedback: str = static_field(default="committed")
    temperature: Any = 0.0

    def __post_init__(self):
        if self.feedback not in FEEDBACKS:
            raise ValueError(f"feedback must be one of {FEEDBACKS}, got {self.feedback!r}")

    def decode(self, z, key):
        """(tokens (L,), logits (L, V)) of one latent z (L, d)."""
        soft = self.feedback == "soft"
        return _ar_decode_jit(self.ar_graphdef, self.ar_state, z, key, soft, self.temperature)

    def __call__(self, z, key):
        ev = self.evaluator
        soft = self.feedback == "soft"
        return _score_jit(
            self.ar_graphdef, self.ar_state, ev.graphdef, ev.state, z, key, soft, self.temperature
        )


@pytree_dataclass
class ARReadout:
    """The AR decoder as a categorical readout of ONE latent: logits (L, V) of its own
    greedy committed decoding.

    logits(x) = AR(x, y*(x)) teacher-forced on y*(x) = greedy committed decode of x, with
    y* held fixed under differentiation (`stop_gradient`; argmax has no gradient).
    Near x this is exactly the AR decoder's logits as long as no earlier token flips;
    when one flips, the fed-back prefix changes, as it does in real AR decoding.
    """

    graphdef: Any = static_field()
    state: Any
    latent_shape: tuple[int, ...] = static_field()

    readout_kind: ClassVar[str] = "categorical"

    def logits(self, x):
        out = _ar_self_logits_jit(self.graphdef, self.state, x)
        return out.astype(jnp.result_type(x.dtype, DTYPE))

    def decode(self, x):
        return self.logits(x)

    def readout(self, x):
        return jnp.argmax(self.logits(x), axis=-1)
