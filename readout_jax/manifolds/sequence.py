"""Token-sequence world: a Markov chain of tokens with Gaussian embeddings (SPEC §3.3)."""

from __future__ import annotations

import collections
import dataclasses
import functools as ft
import math
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from readout_jax import _checks, schedules
from readout_jax._pytree import pytree_dataclass, static_field
from readout_jax._types import Array, ArrayLike, Float, Int, Key, Time

__all__ = ["TokenSequence", "OTHER_SYMBOL", "normalize_text", "pydoc_text"]

OTHER_SYMBOL = "\ufffd"
"""The catch-all token of `TokenSequence.from_text` ('�'): every character outside the
kept vocabulary is merged into it."""

_DATA_FIELDS = ("log_initial", "log_transition", "std", "sharpness", "resp_scale", "resp_floor")


@pytree_dataclass
class TokenSequence:
    """Token sequences y_1..y_L from a Markov chain, latents x0_i = E[y_i] + τ·ξ_i (SPEC §3.3).

    The latent of one example has shape (L, d). Its exact posterior-mean denoiser runs
    forward–backward over the chain with Gaussian emission likelihoods
    N(z_i; α·E[y], v·I), v = α²τ² + σ². The posterior marginals q_i(y) give

        x̂0_i = Σ_y q_i(y)·(E[y] + (α·τ²/v)·(z_i − α·E[y])).

    Messages are kept in log space; each step contracts the chain as
    m + log(exp(log_p − m) @ T) with m = max(log_p), so the work is matrix products
    (fast up to V ≈ 1000). This equals the exact log-sum-exp up to a relative error of
    about exp(−F)/min T, F = 87 (float32) or 708 (float64): exact for chains with no
    tiny transition probabilities (both constructors build strictly positive chains).
    Products that underflow to 0 are floored at the dtype's `tiny`, so no NaN appears in
    values or derivatives even with exact zeros in the chain.

    Regularity-limited denoiser (SPEC §3.3 option): the emission likelihoods are
    evaluated at the variance κ·v + floor (`resp_scale` κ ≥ 1, `resp_floor` ≥ 0) instead
    of v, which smooths the posterior marginals; the gain α·τ²/v keeps the exact v.
    κ = 1, floor = 0 is the exact posterior mean.

    Readout: per-position Bayes logits ℓ_i(y) = β·(log p̄(y) − |x_i − E[y]|²/(2τ²)) with
    sharpness β, where p̄ is the token's unigram frequency in sequences of length L,
    p̄ = (1/L)·Σ_i P(Y_i = y). When `log_initial` is the chain's stationary distribution
    (as both constructors build it) p̄ is that stationary distribution, P(Y_i = ·) is
    the same at every position, and ℓ_i (at β = 1) is the exact Bayes classifier of y_i
    from x_i alone. The readout is the argmax token per position.

    Args:
        embeddings: (V, d) token embeddings E.
        log_initial: (V,) log P(Y_1 = y); entries may be −inf.
        log_transition: (V, V) log P(Y_{i+1} = col | Y_i = row); rows are distributions.
        std: within-token standard deviation τ > 0.
        length: L, the number of positions (static).
        schedule: noise schedule (name or object); default variance-preserving cosine.
        sharpness: β > 0 of the readout logits.
        resp_scale: κ ≥ 1 of the regularity-limited denoiser (1 is exact).
        resp_floor: variance floor ≥ 0 of the regularity-limited denoiser (0 is exact).
        vocab: optional (static) tuple of V display strings, used by `decode_text` and
            `encode_text`.

    Raises:
        ValueError: on shapes that disagree, probabilities that are negative, NaN or do
            not sum to 1, a non-positive std or sharpness, κ < 1, a negative floor, a
            non-positive length, or a vocab of the wrong size or with repeated strings.

    Examples:
        >>> import jax.random as jr
        >>> world = TokenSequence.synthetic(jr.key(0), 5, 4, 3, std=0.3)
        >>> world.latent_shape
        (4, 3)
        >>> x0, tokens = world.sample_data(jr.key(1), 2)
        >>> x0.shape, tokens.shape, world.denoise(x0[0], 0.5).shape
        ((2, 4, 3), (2, 4), (4, 3))
    """

    # Loose annotations: __post_init__ validates and raises errors naming the argument.
    embeddings: ArrayLike  # (V, d)
    log_initial: ArrayLike  # (V,)
    log_transition: ArrayLike  # (V, V)
    std: ArrayLike  # ()
    length: Any = static_field()
    schedule: Any = static_field(default=schedules.VPCosine())
    sharpness: ArrayLike = 1.0
    resp_scale: ArrayLike = 1.0
    resp_floor: ArrayLike = 0.0
    vocab: Sequence[str] | None = static_field(default=None)
    # Derived in __post_init__ (not an argument): log p̄, the readout's unigram prior.
    log_unigram: Float[Array, " V"] = dataclasses.field(default=None, init=False, repr=False)

    readout_kind: ClassVar[str] = "categorical"

    def __post_init__(self):
        embeddings = _checks.float_array(self.embeddings, "embeddings")
        dtype = embeddings.dtype
        object.__setattr__(self, "embeddings", embeddings)
        for name in _DATA_FIELDS:
            object.__setattr__(self, name, _checks.float_array(getattr(self, name), name, dtype))
        object.__setattr__(self, "schedule", _checks.schedule(self.schedule))
        object.__setattr__(self, "length", _checks.positive_int(self.length, "length"))
        if embeddings.ndim != 2 or embeddings.shape[0] < 2 or embeddings.shape[1] < 1:
            raise ValueError(
                "embeddings must have shape (V, d) with V >= 2 tokens (a categorical "
                f"readout needs two classes) and d >= 1, got {embeddings.shape}"
            )
        num = embeddings.shape[0]
        if self.log_initial.shape != (num,):
            raise ValueError(
                f"log_initial must have shape (V,) = ({num},), got {self.log_initial.shape}"
            )
        if self.log_transition.shape != (num, num):
            raise ValueError(
                f"log_transition must have shape (V, V) = ({num}, {num}), "
                f"got {self.log_transition.shape}"
            )
        _checks.finite(embeddings, "embeddings")
        if _checks.is_concrete(self.log_initial):
            _checks.probability_vector(np.exp(np.asarray(self.log_initial)), "exp(log_initial)")
        if _checks.is_concrete(self.log_transition):
            _checks.probability_vector(
                np.exp(np.asarray(self.log_transition)), "exp(log_transition) rows"
            )
        _checks.positive_scalar(self.std, "std")
        _checks.positive_scalar(self.sharpness, "sharpness")
        _checks.scalar_at_least(self.resp_scale, "resp_scale", 1.0)
        _checks.nonnegative_scalar(self.resp_floor, "resp_floor")
        if self.vocab is not None:
            if isinstance(self.vocab, str) or not all(isinstance(s, str) for s in self.vocab):
                raise ValueError("vocab must be a sequence of strings (one per token)")
            vocab = tuple(self.vocab)
            if len(vocab) != num:
                raise ValueError(f"vocab must have V = {num} strings, got {len(vocab)}")
            if len(set(vocab)) != num:
                raise ValueError("vocab strings must be distinct")
            object.__setattr__(self, "vocab", vocab)
        object.__setattr__(self, "log_unigram", self._log_unigram())

    # ---- structure ---------------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.length, self.embeddings.shape[1])

    @property
    def vocab_size(self) -> int:
        return self.embeddings.shape[0]

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    # ---- the chain -------------------------------------------------------------------
    def position_marginals(self) -> Float[Array, "L V"]:
        """P(Y_i = y) for i = 1..L: p_1 = exp(log_initial), p_{i+1} = p_i @ T."""
        return _position_marginals(self.log_initial, self.log_transition, self.length)

    def _log_unigram(self) -> Float[Array, " V"]:
        """log p̄ = log of the mean over positions of P(Y_i = ·) (numpy when concrete)."""
        if _checks.is_concrete(self.log_initial) and _checks.is_concrete(self.log_transition):
            trans = np.exp(np.asarray(self.log_transition, np.float64))
            p = np.exp(np.asarray(self.log_initial, np.float64))
            total = p.copy()
            for _ in range(self.length - 1):
                p = p @ trans
                total += p
            with np.errstate(divide="ignore"):
                return jnp.asarray(np.log(total / self.length), self.embeddings.dtype)
        marginals = _position_marginals(self.log_initial, self.log_transition, self.length)
        return jnp.log(jnp.mean(marginals, axis=0))

    def sample_data(
        self, key: Any, num: Any
    ) -> tuple[Float[Array, "num L d"], Int[Array, "num L"]]:
        """`num` clean latents x0 (num, L, d) and their token sequences (num, L).

        Tokens are drawn along the chain by inverse-CDF sampling; x0 = E[y] + τ·ξ.
        """
        key = _checks.prng_key(key)
        num = _checks.positive_int(num, "num")
        key_tokens, key_noise = jr.split(key)
        uniforms = jr.uniform(key_tokens, (self.length, num), self.embeddings.dtype)
        tokens = _sample_chain(self.log_initial, self.log_transition, uniforms)
        noise = jr.normal(key_noise, (num, *self.latent_shape), self.embeddings.dtype)
        return self.embeddings[tokens] + self.std * noise, tokens

    def log_likelihood(self, tokens: ArrayLike) -> Float[Array, "*batch"]:
        """Exact log p(y_1..y_n) = log_initial[y_1] + Σ_i log_transition[y_i, y_{i+1}].

        Args:
            tokens: (*batch, n) integer token ids in [0, V).

        Raises:
            ValueError: for non-integer ids, ids outside [0, V), or n < 1.
        """
        tokens = _checks.token_ids(tokens, "tokens", self.vocab_size)
        if tokens.ndim < 1 or tokens.shape[-1] < 1:
            raise ValueError(f"tokens must have shape (..., n) with n >= 1, got {tokens.shape}")
        return _log_likelihood(self.log_initial, self.log_transition, tokens)

    def perplexity(self, tokens: ArrayLike) -> Float[Array, ""]:
        """exp(−mean per-token log-likelihood) of a batch of sequences (exact, no evaluator).

        Averages log p(y)/n over all leading axes; compare it with `data_perplexity()`.
        `tokens` as for `log_likelihood`.
        """
        tokens = _checks.token_ids(tokens, "tokens", self.vocab_size)
        return jnp.exp(-jnp.mean(self.log_likelihood(tokens)) / tokens.shape[-1])

    def entropy_rate(self) -> Float[Array, ""]:
        """The data's own per-token entropy H(Y_1..Y_L)/L in nats (exact, from the chain).

        H(Y_1..Y_L) = H(p_1) + Σ_{i=1}^{L−1} Σ_y p_i(y)·H(T[y, ·]) with p_i the marginal at
        position i. This is what `log(perplexity(...))` of data samples estimates; it is
        the entropy over L positions, not the L → ∞ limit.
        """
        return _entropy_rate(self.log_initial, self.log_transition, self.length)

    def data_perplexity(self) -> Float[Array, ""]:
        """exp(entropy_rate()): the data's own perplexity, to compare samples against."""
        return jnp.exp(self.entropy_rate())

    # ---- exact posterior ---------------------------------------------------------------
    # Each method evaluates the schedule, then calls one module-level jitted kernel of
    # arrays: compiled once per shapes and dtypes (whatever the schedule or t), so eager
    # calls are cheap; inside an outer jit / vmap / grad the kernel simply inlines.
    def _alpha_var(self, t: Time):
        """(α, v = α²τ² + σ²) in the world's dtype (one kernel compile for every schedule)."""
        return _alpha_var(self.schedule, self.std, t, dtype=self.embeddings.dtype)

    def _check_zt(self, z, t):
        _checks.scalar_time(t)
        return _checks.latent(z, "z", self.latent_shape)

    def posterior_marginals(self, z: ArrayLike, t: ArrayLike) -> Float[Array, "L V"]:
        """q_i(y) = P(Y_i = y | z_t = z) by forward–backward (at variance κ·v + floor)."""
        z = self._check_zt(z, t)
        a, v = self._alpha_var(t)
        var = self.resp_scale * v + self.resp_floor
        args = (self.embeddings, self.log_initial, self.log_transition, self.std)
        return _posterior(*args, z, a, v, var)[0]

    def denoise(self, z: ArrayLike, t: ArrayLike) -> Float[Array, "L d"]:
        """Exact E[x0 | z_t = z] (at κ = 1, floor = 0) for one latent z of shape (L, d).

        Raises:
            ValueError: for a z of another shape or a non-floating dtype, a z with NaN /
                inf, or a t that is not a scalar in [0, 1].
        """
        z = self._check_zt(z, t)
        a, v = self._alpha_var(t)
        var = self.resp_scale * v + self.resp_floor
        args = (self.embeddings, self.log_initial, self.log_transition, self.std)
        return _posterior(*args, z, a, v, var)[1]

    def marginal_log_prob(self, z: ArrayLike, t: ArrayLike) -> Float[Array, ""]:
        """log p_t(z) of the noised world, Σ_y p(y)·Π_i N(z_i; α E[y_i], v I) (exact v)."""
        z = self._check_zt(z, t)
        a, v = self._alpha_var(t)
        return _marginal_log_prob(self.embeddings, self.log_initial, self.log_transition, z, a, v)

    # ---- readout -----------------------------------------------------------------------
    def logits(self, x: ArrayLike) -> Float[Array, "L V"]:
        """Bayes logits ℓ_i(y) = β·(log p̄(y) − |x_i − E[y]|²/(2τ²)), p̄ the unigram prior."""
        x = _checks.latent(x, "x", self.latent_shape)
        return _logits(self.embeddings, self.log_unigram, self.std, self.sharpness, x)

    def decode(self, x: ArrayLike) -> Float[Array, "L V"]:
        """The smooth part of the readout: the logits."""
        return self.logits(x)

    def readout(self, x: ArrayLike) -> Int[Array, " L"]:
        """Argmax token per position."""
        x = _checks.latent(x, "x", self.latent_shape)
        return _readout(self.embeddings, self.log_unigram, self.std, self.sharpness, x)

    # ---- text ------------------------------------------------------------------------
    def decode_text(self, tokens: ArrayLike) -> str | list:
        """The vocab strings of a token sequence joined into a str (a list for a batch)."""
        if self.vocab is None:
            raise ValueError("this world has no vocab; build it with from_text or pass vocab=")
        tokens = np.asarray(_checks.token_ids(tokens, "tokens", self.vocab_size))
        if tokens.ndim == 0:
            raise ValueError("tokens must have shape (..., n), got a scalar")
        if tokens.ndim > 1:
            return [self.decode_text(row) for row in tokens]
        if np.any((tokens < 0) | (tokens >= self.vocab_size)):
            raise ValueError(f"tokens must lie in [0, {self.vocab_size}), got {tokens}")
        return "".join(self.vocab[int(i)] for i in tokens)

    def encode_text(self, text: str) -> Int[Array, " n"]:
        """Token ids of `normalize_text(text)`, one per character (single-character vocab).

        Characters outside the vocabulary map to `OTHER_SYMBOL` if the vocabulary has it.

        Raises:
            ValueError: if the world has no vocab, or a character is unknown and there is
                no catch-all token.
        """
        if self.vocab is None:
            raise ValueError("this world has no vocab; build it with from_text or pass vocab=")
        index = {s: i for i, s in enumerate(self.vocab) if len(s) == 1}
        other = index.get(OTHER_SYMBOL)
        ids = []
        for ch in normalize_text(text):
            if ch in index:
                ids.append(index[ch])
            elif other is not None:
                ids.append(other)
            else:
                raise ValueError(f"text character {ch!r} is not in the vocab")
        return jnp.asarray(ids, dtype=jnp.int32)

    # ---- constructors ------------------------------------------------------------------
    @classmethod
    def synthetic(
        cls,
        key: Key,
        vocab_size: int,
        length: int,
        dim: int,
        *,
        std: float,
        separation: float = 6.0,
        branching: int = 3,
        uniform_mix: float = 0.05,
        schedule: str | schedules.AbstractSchedule = "vp_cosine",
        **kwargs,
    ) -> TokenSequence:
        """A random sparse-ish Markov chain with random Gaussian embeddings.

        Each token has `branching` likely successors (distinct, uniform at random, with
        weights w ~ Dirichlet(1, …, 1)), and every transition stays possible:
        T[y, ·] = (1 − u)·w + u/V with u = `uniform_mix`. `log_initial` is the chain's
        stationary distribution. Embeddings are N(0, s²·I_d) with
        s = separation·τ/sqrt(2d), so the RMS distance between two tokens is
        `separation`·τ (nearest neighbours are closer when V ≫ 2^d).

        Args:
            key: a `jax.random` key.
            vocab_size, length, dim: V, L, d.
            std: τ > 0.
            separation: RMS distance between token embeddings in units of τ.
            branching: number of likely successors per token (capped at V).
            uniform_mix: u ∈ (0, 1], the weight of the uniform distribution in each row.
            schedule, **kwargs: passed to the constructor (sharpness, resp_scale, ...).
        """
        key = _checks.prng_key(key)
        vocab_size = _checks.positive_int(vocab_size, "vocab_size")
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
        dim = _checks.positive_int(dim, "dim")
        branching = min(_checks.positive_int(branching, "branching"), vocab_size)
        _checks.positive_scalar(std, "std")
        _checks.positive_scalar(separation, "separation")
        _checks.scalar_in_range(uniform_mix, "uniform_mix", 0.0, 1.0)
        if uniform_mix <= 0:
            raise ValueError(
                f"uniform_mix must be > 0 (a strictly positive chain), got {uniform_mix}"
            )
        rng_chain, rng_embed = _host_rngs(key, 2)
        # `branching` distinct random successors per row: the top-k of uniform noise.
        noise = rng_chain.random((vocab_size, vocab_size))
        successors = np.argsort(-noise, axis=1)[:, :branching]
        weights = rng_chain.exponential(size=(vocab_size, branching))
        rows = np.zeros((vocab_size, vocab_size))
        rows[np.arange(vocab_size)[:, None], successors] = weights
        rows /= rows.sum(axis=1, keepdims=True)
        trans = (1.0 - uniform_mix) * rows + uniform_mix / vocab_size
        trans = trans / trans.sum(axis=1, keepdims=True)
        embeddings = _random_embeddings(rng_embed, vocab_size, dim, separation * std)
        return _from_chain(cls, embeddings, trans, std, length, schedule, **kwargs)

    @classmethod
    def from_text(
        cls,
        text: str | None = None,
        *,
        length: int,
        dim: int,
        std: float,
        key: Key,
        vocab_size: int = 32,
        smoothing: float = 0.5,
        separation: float = 6.0,
        num_rare_tokens: int = 0,
        zipf_exponent: float = 1.0,
        rare_share: float = 0.2,
        schedule: str | schedules.AbstractSchedule = "vp_cosine",
        **kwargs,
    ) -> TokenSequence:
        """A character-bigram chain estimated from English text (default: `pydoc_text()`).

        The text goes through `normalize_text` (lowercase; every whitespace run becomes
        one space; runs of ≥ 3 identical punctuation characters, such as reST underlines
        "-----", become one). The vocabulary is the `vocab_size` − 1 most frequent
        characters (ties broken by character) plus the catch-all `OTHER_SYMBOL`, into
        which every other character is merged (merged, not dropped, so no bigram is
        invented); if the text has at most `vocab_size` − 1 distinct characters there is
        no catch-all. Transitions are bigram counts with additive smoothing,
        T[a, b] ∝ count(a b) + smoothing (strictly positive), and `log_initial` is the
        stationary distribution of T (so the marginal is the same at every position).
        Embeddings are random as in `synthetic`.

        Args:
            text: the training text; `None` uses the CPython documentation topics.
            length, dim, std: L, d, τ.
            key: a `jax.random` key (embeddings, and the rare tokens if any).
            vocab_size: number of character tokens (≥ 2), the catch-all included.
            smoothing: additive (Laplace) smoothing > 0 of the bigram counts.
            separation: RMS distance between embeddings in units of τ.
            num_rare_tokens, zipf_exponent, rare_share: if `num_rare_tokens` > 0, extend
                the vocabulary with `with_zipf_vocabulary` (see there).
            schedule, **kwargs: passed to the constructor (sharpness, resp_scale, ...).
        """
        vocab_size = _checks.positive_int(vocab_size, "vocab_size")
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
        dim = _checks.positive_int(dim, "dim")
        _checks.positive_scalar(std, "std")
        _checks.positive_scalar(smoothing, "smoothing")
        _checks.positive_scalar(separation, "separation")
        text = normalize_text(pydoc_text() if text is None else text)
        if len(text) < 2:
            raise ValueError("text must have at least 2 characters after normalization")
        counts = collections.Counter(text)
        ranked = sorted(counts, key=lambda ch: (-counts[ch], ch))
        if len(ranked) <= vocab_size - 1:
            vocab = tuple(ranked)
        else:
            vocab = (*ranked[: vocab_size - 1], OTHER_SYMBOL)
        index = {ch: i for i, ch in enumerate(vocab)}
        other = index.get(OTHER_SYMBOL, -1)
        ids = np.asarray([index.get(ch, other) for ch in text], dtype=np.int64)
        num = len(vocab)
        bigrams = np.zeros((num, num))
        np.add.at(bigrams, (ids[:-1], ids[1:]), 1.0)
        trans = bigrams + smoothing
        trans = trans / trans.sum(axis=1, keepdims=True)
        key_embed, key_rare = jr.split(key)
        (rng_embed,) = _host_rngs(key_embed, 1)
        embeddings = _random_embeddings(rng_embed, num, dim, separation * std)
        world = _from_chain(cls, embeddings, trans, std, length, schedule, vocab=vocab, **kwargs)
        if num_rare_tokens:
            world = world.with_zipf_vocabulary(
                key_rare, num_rare_tokens, exponent=zipf_exponent, rare_share=rare_share
            )
        return world

    def with_zipf_vocabulary(
        self,
        key: Key,
        num_rare: int,
        *,
        exponent: float = 1.0,
        rare_share: float = 0.2,
        num_neighbours: int = 3,
        spread: float = 0.2,
        jitter: float = 0.05,
    ) -> TokenSequence:
        """This world with R = `num_rare` rare tokens embedded between the frequent ones.

        As in real decoders, a large vocabulary's rare tokens fill the space between the
        frequent ones, so an in-between latent reads as a rare token (SPEC §3.3). Rare
        token r = 1..R is a variant of a parent token a_r (uniform over the V original
        tokens) and sits between a_r and a neighbour b_r (uniform among the
        `num_neighbours` nearest embeddings of a_r):
        E_r = E_a + w·(E_b − E_a) + jitter·|E_b − E_a|·g/sqrt(d), w ~ U(½ − spread,
        ½ + spread), g ~ N(0, I_d).

        The chain over the V + R tokens is the original chain with each token split into
        itself and its variants: P(k' | k) = T[a(k), a(k')]·w(k'), where a(k) is the
        parent (a(k) = k for an original token), a rare token takes the Zipf share
        w(r) = rare_share·r^(−exponent)/Σ_j j^(−exponent) of its parent's probability,
        and an original token keeps w(a) = 1 − Σ_{r: a_r = a} w(r) ≥ 1 − rare_share.
        Rows sum to 1, the parent sequence follows the original chain exactly, and
        perplexities stay exact. `log_initial` is split the same way.

        Whether E_r reads as r is geometry (it does not depend on β): the readout at E_r
        prefers r to its parent a when |E_r − E_a|²/(2τ²) > log(p̄(a)/p̄(r)).

        Args:
            key: a `jax.random` key.
            num_rare: R ≥ 1.
            exponent: Zipf exponent s > 0 of the rare shares.
            rare_share: Σ_r w(r) ∈ (0, 1), the most any parent can lose to its variants.
            num_neighbours: how many nearest tokens of the parent can be the neighbour.
            spread: w is uniform in [½ − spread, ½ + spread], 0 ≤ spread ≤ ½.
            jitter: off-segment noise, relative to |E_b − E_a|.

        Returns:
            A new `TokenSequence` with V + R tokens, the first V the original ones. Rare
            tokens display as "⟨c r⟩" (c the parent's string, r the rank) when the world
            has a vocab.
        """
        num_rare = _checks.positive_int(num_rare, "num_rare")
        num_neighbours = _checks.positive_int(num_neighbours, "num_neighbours")
        _checks.positive_scalar(exponent, "exponent")
        _checks.scalar_in_range(rare_share, "rare_share", 0.0, 1.0)
        if not 0 < rare_share < 1:
            raise ValueError(f"rare_share must be in (0, 1), got {rare_share}")
        _checks.scalar_in_range(spread, "spread", 0.0, 0.5)
        _checks.nonnegative_scalar(jitter, "jitter")
        num = self.vocab_size
        if num < 2:
            raise ValueError("with_zipf_vocabulary needs a world with at least 2 tokens")
        emb = np.asarray(self.embeddings, np.float64)
        (rng,) = _host_rngs(key, 1)
        parents = rng.integers(0, num, size=num_rare)
        dist = np.linalg.norm(emb[:, None, :] - emb[None, :, :], axis=-1)
        np.fill_diagonal(dist, np.inf)
        nearest = np.argsort(dist, axis=1)[:, : min(num_neighbours, num - 1)]
        pick = rng.integers(0, nearest.shape[1], size=num_rare)
        neighbours = nearest[parents, pick]
        w = 0.5 + spread * rng.uniform(-1.0, 1.0, size=(num_rare, 1))
        gap = emb[neighbours] - emb[parents]
        noise = rng.normal(size=(num_rare, self.dim))
        scale = jitter * np.linalg.norm(gap, axis=-1, keepdims=True) / math.sqrt(self.dim)
        rare_emb = emb[parents] + w * gap + scale * noise

        zipf = np.arange(1, num_rare + 1, dtype=np.float64) ** (-exponent)
        share = rare_share * zipf / zipf.sum()
        keep = 1.0 - np.bincount(parents, weights=share, minlength=num)
        weight = np.concatenate([keep, share])  # w(k), k = 0..V+R-1
        parent_of = np.concatenate([np.arange(num), parents])
        log_w = np.log(weight)
        log_trans = np.asarray(self.log_transition, np.float64)
        log_transition = log_trans[parent_of][:, parent_of] + log_w[None, :]
        log_initial = np.asarray(self.log_initial, np.float64)[parent_of] + log_w
        vocab = None
        if self.vocab is not None:
            vocab = (*self.vocab, *(f"⟨{self.vocab[a]}{r}⟩" for r, a in enumerate(parents, 1)))
        dtype = self.embeddings.dtype
        return TokenSequence(
            jnp.asarray(np.concatenate([emb, rare_emb]), dtype),
            jnp.asarray(log_initial, dtype),
            jnp.asarray(log_transition, dtype),
            self.std,
            self.length,
            self.schedule,
            self.sharpness,
            self.resp_scale,
            self.resp_floor,
            vocab,
        )


# ---- kernels (pure functions of arrays, jitted once per shapes) -----------------------


@ft.partial(jax.jit, static_argnames=("length",))
def _position_marginals(log_initial, log_transition, length):
    """(length, V) marginals P(Y_i = ·): p_1 = exp(log_initial), p_{i+1} = p_i @ T."""
    trans = jnp.exp(log_transition)

    def step(p, _):
        nxt = p @ trans
        return nxt, nxt

    first = jnp.exp(log_initial)
    _, rest = jax.lax.scan(step, first, None, length=length - 1)
    return jnp.concatenate([first[None, :], rest], axis=0)


@jax.jit
def _sample_chain(log_initial, log_transition, uniforms):
    """(num, L) tokens by inverse-CDF sampling along the chain from (L, num) uniforms."""
    num_tokens = log_initial.shape[0]

    def draw(cdf, u):  # cdf (num, V) or (V,), u (num,): the first index with cdf > u
        return jnp.minimum(jnp.sum(cdf <= u[:, None], axis=-1), num_tokens - 1)

    cdf_initial = jnp.cumsum(jnp.exp(log_initial))
    cdf_transition = jnp.cumsum(jnp.exp(log_transition), axis=-1)
    first = draw(jnp.broadcast_to(cdf_initial, (uniforms.shape[1], num_tokens)), uniforms[0])

    def step(prev, u):
        nxt = draw(cdf_transition[prev], u)
        return nxt, nxt

    _, rest = jax.lax.scan(step, first, uniforms[1:])
    return jnp.concatenate([first[None, :], rest], axis=0).T


@jax.jit
def _log_likelihood(log_initial, log_transition, tokens):
    steps = log_transition[tokens[..., :-1], tokens[..., 1:]]
    return log_initial[tokens[..., 0]] + jnp.sum(steps, axis=-1)


@ft.partial(jax.jit, static_argnames=("length",))
def _entropy_rate(log_initial, log_transition, length):
    marginals = _position_marginals(log_initial, log_transition, length)
    row_entropy = jnp.sum(jax.scipy.special.entr(jnp.exp(log_transition)), axis=-1)
    first = jnp.sum(jax.scipy.special.entr(marginals[0]))
    rest = jnp.sum(marginals[:-1] @ row_entropy)
    return (first + rest) / length


@ft.partial(jax.jit, static_argnames=("schedule", "dtype"))
def _alpha_var(schedule, std, t, dtype):
    a = jnp.asarray(schedule.alpha(t), dtype)
    s = jnp.asarray(schedule.sigma(t), dtype)
    return a, a**2 * std**2 + s**2


def _emission(embeddings, z, a, var):
    """−|z_i − α E_y|²/(2·var) without the |z_i|² term (common to all y): (L, V)."""
    sq = jnp.sum(embeddings**2, axis=-1)
    # (E @ zᵀ)ᵀ, not z @ Eᵀ: with the shared matrix on the left, XLA's batched (vmap)
    # product rounds the same for every batch size; z @ Eᵀ changed the last bits of
    # float32 results with the batch size (tests/test_determinism.py).
    return (a * (embeddings @ z.T).T - 0.5 * a**2 * sq[None, :]) / var


def _forward_backward(log_initial, log_transition, emission):
    """Log filtered and backward messages (L, V) and log Σ_y p(y)·exp(Σ_i emission_i)."""
    trans = jnp.exp(log_transition)
    first = log_initial + emission[0]
    c_first = jax.nn.logsumexp(first)

    def forward(carry, e):
        log_f, log_z = carry
        u = _log_vecmat(log_f, trans) + e
        c = jax.nn.logsumexp(u)
        return (u - c, log_z + c), u - c

    (_, log_z), log_f_rest = jax.lax.scan(forward, (first - c_first, c_first), emission[1:])
    log_f = jnp.concatenate([(first - c_first)[None, :], log_f_rest], axis=0)

    def backward(log_b_next, e_next):
        log_b = _log_matvec(trans, e_next + log_b_next)
        log_b = log_b - jax.nn.logsumexp(log_b)
        return log_b, log_b

    zeros = jnp.zeros_like(emission[0])
    _, log_b_head = jax.lax.scan(backward, zeros, emission[1:], reverse=True)
    log_b = jnp.concatenate([log_b_head, zeros[None, :]], axis=0)
    return log_f, log_b, log_z


@jax.jit
def _posterior(embeddings, log_initial, log_transition, std, z, a, v, var):
    """Posterior marginals q (L, V) at emission variance `var`, and the posterior mean.

    One kernel for both, so that eager calls of either compile once; inside an outer
    jit the unused output is dropped.
    """
    emission = _emission(embeddings, z, a, var)
    log_f, log_b, _ = _forward_backward(log_initial, log_transition, emission)
    marginals = jax.nn.softmax(log_f + log_b, axis=-1)
    mean = (embeddings.T @ marginals.T).T  # Σ_y q_i(y) E[y] (batch-size invariant form)
    return marginals, (mean + (a * std**2 / v) * (z - a * mean)).astype(z.dtype)


@jax.jit
def _marginal_log_prob(embeddings, log_initial, log_transition, z, a, v):
    _, _, log_z = _forward_backward(log_initial, log_transition, _emission(embeddings, z, a, v))
    num_pos, dim = z.shape
    const = -jnp.sum(z**2) / (2.0 * v) - 0.5 * num_pos * dim * jnp.log(2.0 * math.pi * v)
    return log_z + const


@jax.jit
def _logits(embeddings, log_unigram, std, sharpness, x):
    sq = (
        jnp.sum(x**2, axis=-1, keepdims=True)
        - 2.0 * (embeddings @ x.T).T  # batch-size invariant form, as in _emission
        + jnp.sum(embeddings**2, axis=-1)[None, :]
    )
    return sharpness * (log_unigram[None, :] - sq / (2.0 * std**2))


@jax.jit
def _readout(embeddings, log_unigram, std, sharpness, x):
    return jnp.argmax(_logits(embeddings, log_unigram, std, sharpness, x), axis=-1)


# ---- helpers ---------------------------------------------------------------------------


def _log_vecmat(log_p, trans):
    """log Σ_y exp(log_p[y])·trans[y, y'] as m + log(exp(log_p − m) @ trans).

    m = max(log_p) is held out of the derivative (the result does not depend on it), and
    products that underflow to 0 are floored at `tiny` (finite values and derivatives).
    """
    m = jax.lax.stop_gradient(jnp.max(log_p))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    prod = jnp.exp(log_p - m) @ trans
    return m + jnp.log(jnp.maximum(prod, jnp.finfo(prod.dtype).tiny))


def _log_matvec(trans, log_p):
    """log Σ_y' trans[y, y']·exp(log_p[y']) as m + log(trans @ exp(log_p − m))."""
    m = jax.lax.stop_gradient(jnp.max(log_p))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    prod = trans @ jnp.exp(log_p - m)
    return m + jnp.log(jnp.maximum(prod, jnp.finfo(prod.dtype).tiny))


def _stationary(trans: np.ndarray) -> np.ndarray:
    """The stationary distribution π of a (V, V) stochastic matrix: π (I − T + 𝟙𝟙ᵀ) = 𝟙ᵀ."""
    num = trans.shape[0]
    system = np.eye(num) - trans + np.ones((num, num))
    pi = np.linalg.solve(system.T, np.ones(num))
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


def _host_rngs(key: Key, num: int) -> list[np.random.Generator]:
    """`num` independent numpy generators seeded from a `jax.random` key.

    Constructors build their (one-off, host-side) random structure with numpy: same key,
    same world, and no XLA compilation per vocabulary size.
    """
    key = jr.key_data(_checks.prng_key(key))
    seed = np.asarray(key, dtype=np.uint32).ravel()
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed.tolist()).spawn(num)]


def _random_embeddings(rng: np.random.Generator, num: int, dim: int, rms_distance: float) -> Array:
    """(num, dim) N(0, s² I) embeddings with RMS pairwise distance `rms_distance`."""
    emb = rng.normal(size=(num, dim)) * (rms_distance / math.sqrt(2.0 * dim))
    return jnp.asarray(emb, jnp.result_type(float))


def _from_chain(cls, embeddings, trans, std, length, schedule, **kwargs):
    """Build a world from a float64 stochastic matrix, starting at its stationary law."""
    dtype = embeddings.dtype
    pi = _stationary(trans)
    with np.errstate(divide="ignore"):
        log_initial, log_transition = np.log(pi), np.log(trans)
    return cls(
        embeddings,
        jnp.asarray(log_initial, dtype),
        jnp.asarray(log_transition, dtype),
        std,
        length,
        schedule,
        **kwargs,
    )


def normalize_text(text: str) -> str:
    """Lowercase; whitespace runs → one space; runs of ≥ 3 equal punctuation marks → one."""
    text = re.sub(r"\s+", " ", text.lower())
    return re.sub(r"([^\w\s])\1{2,}", r"\1", text)


def pydoc_text() -> str:
    """The English text of CPython's documentation topics (`pydoc_data.topics`), joined."""
    from pydoc_data.topics import topics

    return "\n".join(topics[name] for name in sorted(topics))
