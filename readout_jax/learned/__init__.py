"""Learned worlds on real data (SPEC §3.5): text and digit autoencoders, latent denoisers,
the evaluator LM and the digit classifier, trained with Flax NNX + optax and cached.

Entry points: `text_world(scale)` → `TextWorld`, `image_world(scale)` → `ImageWorld`
(`scale` = "quick", "full", or a config). Their `manifold` works unchanged with
`readout_jax.sample`, every sampler and every diagnostic. Checkpoints:
`save_checkpoint`, `load_checkpoint`, `CheckpointError`.
"""

from readout_jax.learned import checkpoint, data, denoiser, image, layers, text, train, worlds
from readout_jax.learned.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    default_cache_dir,
    load_checkpoint,
    save_checkpoint,
)
from readout_jax.learned.data import TextDataConfig, Vocab
from readout_jax.learned.denoiser import DenoiserConfig, ImageManifold, TextManifold
from readout_jax.learned.image import Classifier, ClassifierConfig, ImageAEConfig
from readout_jax.learned.text import (
    ARDecodeScorer,
    ARReadout,
    Evaluator,
    LMConfig,
    TextAEConfig,
)
from readout_jax.learned.train import TrainConfig, fit
from readout_jax.learned.worlds import (
    EVAL_TIMES,
    SCALES,
    ImageWorld,
    ImageWorldConfig,
    TextWorld,
    TextWorldConfig,
    image_world,
    text_world,
)

__all__ = [
    "ARDecodeScorer",
    "ARReadout",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "Classifier",
    "ClassifierConfig",
    "DenoiserConfig",
    "EVAL_TIMES",
    "Evaluator",
    "ImageAEConfig",
    "ImageManifold",
    "ImageWorld",
    "ImageWorldConfig",
    "LMConfig",
    "SCALES",
    "TextAEConfig",
    "TextDataConfig",
    "TextManifold",
    "TextWorld",
    "TextWorldConfig",
    "TrainConfig",
    "Vocab",
    "checkpoint",
    "data",
    "default_cache_dir",
    "denoiser",
    "fit",
    "image",
    "image_world",
    "layers",
    "load_checkpoint",
    "save_checkpoint",
    "text",
    "text_world",
    "train",
    "worlds",
]
