"""Image models on the 8×8 digits: an MLP autoencoder with a smooth pixel decoder, and an
MLP digit classifier (Flax NNX).

Autoencoder (`ImageAutoencoder`): encoder 64 → [Linear, GELU, LayerNorm]×k → d, then RMS
normalisation (every latent has norm √d, as for text); decoder d → [Linear, GELU]×k →
64 → sigmoid, so pixels lie in [0, 1] and the readout is smooth. Trained with the
pixel MSE, the decoder reading x + σ·ξ with σ ~ U(0, `noise_aug`) per image (the same
noise augmentation as the text decoders).

Classifier (`DigitClassifier`): 64 → [Linear, GELU]×2 → 10 logits, cross-entropy.
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
from readout_jax.learned.text import map_batches

__all__ = [
    "NUM_PIXELS",
    "NUM_CLASSES",
    "ImageAEConfig",
    "ClassifierConfig",
    "ImageEncoder",
    "ImageDecoder",
    "ImageAutoencoder",
    "DigitClassifier",
    "Classifier",
    "autoencoder_loss",
    "classifier_loss",
]

NUM_PIXELS = 64
NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class ImageAEConfig:
    """Digit autoencoder sizes.

    Attributes:
        latent_dim: d (8–16).
        hidden: width of the hidden layers.
        num_layers: hidden layers of the encoder and of the decoder.
        noise_aug: σ_max of the decoder's latent noise augmentation.
    """

    latent_dim: int = 12
    hidden: int = 256
    num_layers: int = 2
    noise_aug: float = 0.2

    def __post_init__(self):
        for name in ("latent_dim", "hidden", "num_layers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if not self.noise_aug >= 0:
            raise ValueError(f"noise_aug must be >= 0, got {self.noise_aug!r}")


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """Digit classifier sizes."""

    hidden: int = 256
    num_layers: int = 2

    def __post_init__(self):
        for name in ("hidden", "num_layers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")


def _linear(n_in, n_out, rngs):
    return nnx.Linear(n_in, n_out, param_dtype=DTYPE, rngs=rngs)


def _mlp_layers(widths, rngs):
    return [_linear(a, b, rngs) for a, b in zip(widths[:-1], widths[1:], strict=True)]


class ImageEncoder(nnx.Module):
    """Images (..., 64) in [0, 1] → RMS-normalised latents (..., d)."""

    def __init__(self, cfg: ImageAEConfig, *, rngs: nnx.Rngs):
        widths = [NUM_PIXELS] + [cfg.hidden] * cfg.num_layers
        self.hidden = nnx.List(
            [_linear(a, b, rngs) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        )
        self.norms = nnx.List(
            [nnx.LayerNorm(cfg.hidden, param_dtype=DTYPE, rngs=rngs) for _ in range(cfg.num_layers)]
        )
        self.out = _linear(cfg.hidden, cfg.latent_dim, rngs)

    def __call__(self, images):
        h = 2.0 * jnp.asarray(images, DTYPE) - 1.0
        for lin, norm in zip(self.hidden, self.norms, strict=True):
            h = norm(jax.nn.gelu(lin(h)))
        return layers.rms_normalize(self.out(h))


class ImageDecoder(nnx.Module):
    """Latents (..., d) → pixels (..., 64) in [0, 1] (sigmoid output)."""

    def __init__(self, cfg: ImageAEConfig, *, rngs: nnx.Rngs):
        widths = [cfg.latent_dim] + [cfg.hidden] * cfg.num_layers
        self.hidden = nnx.List(
            [_linear(a, b, rngs) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        )
        self.out = _linear(cfg.hidden, NUM_PIXELS, rngs)

    def __call__(self, latents):
        h = jnp.asarray(latents, DTYPE)
        for lin in self.hidden:
            h = jax.nn.gelu(lin(h))
        return jax.nn.sigmoid(self.out(h))


class ImageAutoencoder(nnx.Module):
    """Encoder + smooth decoder."""

    def __init__(self, cfg: ImageAEConfig, *, rngs: nnx.Rngs):
        self.encoder = ImageEncoder(cfg, rngs=rngs)
        self.decoder = ImageDecoder(cfg, rngs=rngs)


def autoencoder_loss(model: ImageAutoencoder, images, key, *, cfg: ImageAEConfig):
    """Pixel MSE of decoder(encoder(images) + σ·ξ), σ ~ U(0, noise_aug) per image."""
    x = model.encoder(images)
    k1, k2 = jr.split(key)
    sig = cfg.noise_aug * jr.uniform(k1, (x.shape[0], 1), DTYPE)
    recon = model.decoder(x + sig * jr.normal(k2, x.shape, DTYPE))
    mse = jnp.mean((recon - images) ** 2)
    return mse, {"mse": mse}


class DigitClassifier(nnx.Module):
    """Images (..., 64) → class logits (..., 10)."""

    def __init__(self, cfg: ClassifierConfig, *, rngs: nnx.Rngs):
        widths = [NUM_PIXELS] + [cfg.hidden] * cfg.num_layers
        self.hidden = nnx.List(
            [_linear(a, b, rngs) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        )
        self.out = _linear(cfg.hidden, NUM_CLASSES, rngs)

    def __call__(self, images):
        h = 2.0 * jnp.asarray(images, DTYPE) - 1.0
        for lin in self.hidden:
            h = jax.nn.gelu(lin(h))
        return self.out(h)


def classifier_loss(model: DigitClassifier, batch, key):
    """Cross-entropy of the class logits; batch = (images, labels)."""
    del key
    images, labels = batch
    logits = model(images)
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    acc = jnp.mean((jnp.argmax(logits, -1) == labels).astype(DTYPE))
    return loss, {"accuracy": acc}


@ft.partial(jax.jit, static_argnums=0)
def _classifier_logits(graphdef, state, images):
    return nnx.merge(graphdef, state)(images)


def _check_images(images) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim < 1 or arr.shape[-1] != NUM_PIXELS:
        raise ValueError(f"images must have shape (..., {NUM_PIXELS}), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"images must be floating point in [0, 1], got dtype {arr.dtype}")
    return arr


@pytree_dataclass
class Classifier:
    """The trained digit classifier (a pytree: parameters are array leaves).

    `logits_fn` is traceable; `logits`, `probs`, `predict`, `accuracy` take host arrays
    (..., 64) of any batch size.
    """

    graphdef: Any = static_field()
    state: Any

    num_classes: ClassVar[int] = NUM_CLASSES

    def logits_fn(self, images):
        """Class logits (..., 10), traceable."""
        return nnx.merge(self.graphdef, self.state)(images)

    def logits(self, images) -> np.ndarray:
        """Class logits (..., 10) of images (..., 64)."""
        arr = _check_images(images)
        flat = arr.reshape(-1, NUM_PIXELS).astype(np.float32)
        out = map_batches(lambda x: _classifier_logits(self.graphdef, self.state, x), flat)
        return out.reshape(arr.shape[:-1] + (NUM_CLASSES,))

    def probs(self, images) -> np.ndarray:
        """Class probabilities (..., 10)."""
        logits = self.logits(images)
        logits = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=-1, keepdims=True)

    def predict(self, images) -> np.ndarray:
        """Predicted class (...,)."""
        return np.argmax(self.logits(images), axis=-1)

    def accuracy(self, images, labels) -> float:
        """Fraction of images whose predicted class equals `labels`."""
        return float(np.mean(self.predict(images) == np.asarray(labels)))
