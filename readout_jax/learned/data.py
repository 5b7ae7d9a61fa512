"""Real data shipped offline: CPython's pydoc topics (text) and scikit-learn's 8×8 digits.

Text. `pydoc_data.topics.topics` maps ≈80 documentation topics to their English text
(≈417k characters on CPython 3.11). The text is normalised exactly as the exact
`TokenSequence` world does it (`manifolds.sequence.normalize_text`: lowercase, runs of
whitespace → one space, runs of ≥ 3 equal punctuation marks → one). The split is BY
TOPIC and does not depend on any seed: topics are ordered by the SHA-256 of their name
and, in that order, a topic goes to validation if it still fits under
`val_fraction`·(total characters); the rest is training text. So no sentence of a
validation topic is ever seen in training, and the split is stable across runs and
machines (it changes only if CPython ships different topics, which the data
fingerprint, part of every checkpoint key, detects).

Vocabulary: the characters that occur at least `min_char_count` times in the TRAINING
text, most frequent first (ties by code point), plus one catch-all UNK token ('�',
`manifolds.sequence.OTHER_SYMBOL`) for every other character. With the defaults this is
V = 63 (62 characters + UNK) on CPython 3.11: the 26 letters, the space, the ten
digits, the common punctuation of Python documentation and the typographic quotes;
no case (lowercase-folded).

Sequences: each topic's token ids are cut into windows of `length` characters
(training windows every `train_stride` characters, validation windows without
overlap); windows never straddle two topics.

Digits: the 1,797 8×8 handwritten digits of `sklearn.datasets.load_digits`, pixel values
/16 in [0, 1] as 64-vectors, split by a fixed permutation (numpy, `split_seed`) into
train / validation.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from readout_jax.manifolds.sequence import OTHER_SYMBOL, normalize_text

__all__ = [
    "TextDataConfig",
    "Vocab",
    "TextCorpus",
    "DigitData",
    "load_text_corpus",
    "load_digits_split",
    "pydoc_topics",
    "split_topics",
    "words_in",
    "valid_word_fraction",
]

UNK = OTHER_SYMBOL
_WORD = re.compile(r"[a-z]+")


@dataclasses.dataclass(frozen=True)
class TextDataConfig:
    """How the text corpus is cut.

    Attributes:
        length: L, characters per sequence (quick 16, full 64).
        val_fraction: share of the characters (by whole topics) held out, in (0, 1).
        min_char_count: characters seen fewer times in the training text map to UNK.
        train_stride: offset between training windows (default: `length`, no overlap).
    """

    length: int = 16
    val_fraction: float = 0.1
    min_char_count: int = 50
    train_stride: int | None = None

    def __post_init__(self):
        if not isinstance(self.length, int) or self.length < 2:
            raise ValueError(f"length must be an int >= 2, got {self.length!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if not isinstance(self.min_char_count, int) or self.min_char_count < 1:
            raise ValueError(f"min_char_count must be an int >= 1, got {self.min_char_count!r}")
        if self.train_stride is not None and (
            not isinstance(self.train_stride, int) or self.train_stride < 1
        ):
            raise ValueError(f"train_stride must be None or an int >= 1, got {self.train_stride!r}")


@dataclasses.dataclass(frozen=True)
class Vocab:
    """A character vocabulary with one catch-all UNK token (the last id).

    Attributes:
        chars: the V strings, one character each; `chars[-1]` is UNK ('�').
    """

    chars: tuple[str, ...]

    def __post_init__(self):
        chars = tuple(self.chars)
        if not chars or chars[-1] != UNK:
            raise ValueError(f"vocab chars must end with the UNK symbol {UNK!r}")
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("vocab chars must be distinct single characters")
        object.__setattr__(self, "chars", chars)

    @classmethod
    def from_text(cls, text: str, min_count: int) -> Vocab:
        """Characters of `text` seen ≥ `min_count` times, most frequent first, then UNK."""
        counts = collections.Counter(text)
        kept = sorted(
            (c for c, n in counts.items() if n >= min_count and c != UNK),
            key=lambda c: (-counts[c], ord(c)),
        )
        return cls((*kept, UNK))

    @property
    def size(self) -> int:
        """V, the number of tokens (UNK included)."""
        return len(self.chars)

    @property
    def unk_id(self) -> int:
        return len(self.chars) - 1

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    def encode_text(self, text: str, *, normalize: bool = True) -> np.ndarray:
        """Token ids (int32, one per character) of `text`; unknown characters → UNK.

        Args:
            text: any string.
            normalize: apply `normalize_text` first (lowercase, collapse whitespace), as
                the corpus does.
        """
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        if normalize:
            text = normalize_text(text)
        index, unk = self._index, self.unk_id
        return np.fromiter((index.get(c, unk) for c in text), dtype=np.int32, count=len(text))

    def decode_tokens(self, tokens: Any) -> str | list:
        """The string of a token sequence (n,), or a list of strings for (..., n).

        Raises:
            ValueError: for a scalar, or ids outside [0, V).
        """
        arr = np.asarray(tokens)
        if arr.ndim == 0:
            raise ValueError("tokens must have shape (..., n), got a scalar")
        if arr.size and (arr.min() < 0 or arr.max() >= self.size):
            raise ValueError(
                f"token ids must lie in [0, {self.size}), got [{arr.min()}, {arr.max()}]"
            )
        if arr.ndim > 1:
            return [self.decode_tokens(row) for row in arr]
        return "".join(self.chars[int(i)] for i in arr)


class TextCorpus(NamedTuple):
    """The text data of a learned text world.

    Attributes:
        config: the `TextDataConfig`.
        vocab: the character `Vocab`.
        train_topics, val_topics: topic names of each side of the split.
        train_tokens: (N_train, L) int32 windows of training text.
        val_tokens: (N_val, L) int32 windows of validation text.
        train_words: every maximal run of letters [a-z]+ in the training text.
        unigram_counts: (V,) token counts of the training text.
        fingerprint: hex digest of vocab + token arrays (detects changed data).
    """

    config: TextDataConfig
    vocab: Vocab
    train_topics: tuple[str, ...]
    val_topics: tuple[str, ...]
    train_tokens: np.ndarray
    val_tokens: np.ndarray
    train_words: frozenset
    unigram_counts: np.ndarray
    fingerprint: str


class DigitData(NamedTuple):
    """The digits split: images (N, 64) float32 in [0, 1], labels (N,) int32."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray


def pydoc_topics() -> dict[str, str]:
    """`pydoc_data.topics.topics`: topic name → English text (ships with CPython)."""
    from pydoc_data.topics import topics

    return dict(topics)


def _topic_rank(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def split_topics(
    texts: dict[str, str], val_fraction: float
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train topics, validation topics): the seedless split by topic described above.

    Topics are visited in the order of SHA-256(name); a topic joins validation if the
    validation characters stay ≤ val_fraction·total with it. Both tuples are sorted.
    """
    total = sum(len(t) for t in texts.values())
    budget = val_fraction * total
    val, used = [], 0
    for name in sorted(texts, key=_topic_rank):
        if used + len(texts[name]) <= budget:
            val.append(name)
            used += len(texts[name])
    val_set = set(val)
    train = tuple(sorted(n for n in texts if n not in val_set))
    if not val or not train:
        raise ValueError(f"val_fraction={val_fraction} leaves one side of the topic split empty")
    return train, tuple(sorted(val))


def _windows(ids: np.ndarray, length: int, stride: int) -> np.ndarray:
    if ids.shape[0] < length:
        return np.zeros((0, length), np.int32)
    starts = np.arange(0, ids.shape[0] - length + 1, stride)
    return ids[starts[:, None] + np.arange(length)[None, :]].astype(np.int32)


@functools.lru_cache(maxsize=8)
def load_text_corpus(config: TextDataConfig = TextDataConfig()) -> TextCorpus:
    """Load, normalise, split, tokenise and window the pydoc topics (cached per config).

    Returns:
        A `TextCorpus`; its arrays are read-only numpy arrays.
    """
    if not isinstance(config, TextDataConfig):
        raise ValueError(f"config must be a TextDataConfig, got {type(config).__name__}")
    texts = {name: normalize_text(text) for name, text in pydoc_topics().items()}
    train_topics, val_topics = split_topics(texts, config.val_fraction)
    vocab = Vocab.from_text("".join(texts[n] for n in train_topics), config.min_char_count)
    stride = config.train_stride or config.length

    def windows(names: Iterable[str], step: int) -> np.ndarray:
        parts = [
            _windows(vocab.encode_text(texts[n], normalize=False), config.length, step)
            for n in names
        ]
        return np.concatenate(parts, axis=0)

    train_tokens = windows(train_topics, stride)
    val_tokens = windows(val_topics, config.length)
    train_ids = np.concatenate([vocab.encode_text(texts[n], normalize=False) for n in train_topics])
    counts = np.bincount(train_ids, minlength=vocab.size).astype(np.int64)
    words = frozenset(w for n in train_topics for w in _WORD.findall(texts[n]))
    digest = hashlib.sha256()
    digest.update("\x00".join(vocab.chars).encode("utf-8"))
    for arr in (train_tokens, val_tokens):
        digest.update(np.ascontiguousarray(arr).tobytes())
    for arr in (train_tokens, val_tokens, counts):
        arr.setflags(write=False)
    return TextCorpus(
        config,
        vocab,
        train_topics,
        val_topics,
        train_tokens,
        val_tokens,
        words,
        counts,
        digest.hexdigest()[:16],
    )


def words_in(text: str) -> list[str]:
    """The words of `text` that lie fully inside it: maximal runs of letters [a-z]+ with
    a non-letter character on both sides (a run touching either end may be cut by the
    window, so it is not counted)."""
    return [m.group() for m in _WORD.finditer(text) if m.start() > 0 and m.end() < len(text)]


def valid_word_fraction(texts: str | Sequence[str], words: frozenset | set) -> float:
    """Fraction of the complete words (see `words_in`) of `texts` that occur in `words`.

    Pooled over all texts; NaN if they contain no complete word.
    """
    if isinstance(texts, str):
        texts = [texts]
    found = [w for t in texts for w in words_in(t)]
    if not found:
        return float("nan")
    return float(np.mean([w in words for w in found]))


@functools.lru_cache(maxsize=4)
def load_digits_split(val_fraction: float = 0.2, split_seed: int = 0) -> DigitData:
    """The scikit-learn digits as (N, 64) float32 images in [0, 1], split by a fixed
    numpy permutation (`split_seed`), `val_fraction` of them held out."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (np.asarray(digits.data, np.float64) / 16.0).astype(np.float32)
    labels = np.asarray(digits.target, np.int32)
    perm = np.random.default_rng(split_seed).permutation(images.shape[0])
    num_val = int(round(val_fraction * images.shape[0]))
    val, train = perm[:num_val], perm[num_val:]
    out = DigitData(images[train], labels[train], images[val], labels[val])
    for arr in out:
        arr.setflags(write=False)
    return out
