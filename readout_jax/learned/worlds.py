"""Entry points: the learned text and image worlds, trained once and cached (SPEC §3.5).

`text_world(scale)` returns a `TextWorld`: a character autoencoder (parallel + AR
decoders) on the pydoc topics, a latent denoiser on its encoded training latents, and an
evaluator LM, with the learned `TextManifold`. `image_world(scale)` returns an
`ImageWorld`: a digit autoencoder, its latent denoiser and a digit classifier, with the
learned `ImageManifold`.

Caching. Each model is a separate checkpoint directory ``<cache_dir>/<kind>-<key>``,
the key a hash of its config, the seed, `checkpoint.MODEL_CODE_VERSION`, the data
fingerprint and (for a denoiser) a digest of its encoder's parameters. A call loads every model
whose checkpoint exists and trains (then saves) the others; `world.trained` says which
were trained in this call. A corrupt or mismatched checkpoint is never used: it is
reported (logging, WARNING, naming the file and the problem) and the model is retrained
and saved over it. With ``load_only=True`` nothing is trained: a missing checkpoint
raises `CheckpointNotFoundError` and a bad one `CheckpointError`.

Seeds: model m of a world uses `fold_in(key(seed), m)` for its initialisation and its
minibatches, so the same seed gives bit-identical parameters on the same machine.
"""

from __future__ import annotations

import dataclasses
import functools as ft
import hashlib
import logging
import os
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from flax import nnx

from readout_jax import schedules
from readout_jax.learned import checkpoint as ckpt
from readout_jax.learned import data as data_lib
from readout_jax.learned import denoiser as den
from readout_jax.learned import image as image_lib
from readout_jax.learned import text as text_lib
from readout_jax.learned.layers import DTYPE, float32_mode
from readout_jax.learned.train import TrainConfig, compiler_options, fit

__all__ = [
    "SCALES",
    "TextWorldConfig",
    "ImageWorldConfig",
    "TextWorld",
    "ImageWorld",
    "text_world",
    "image_world",
]

logger = logging.getLogger("readout_jax.learned")

SCALES = ("quick", "full")
EVAL_TIMES = (0.1, 0.3, 0.5, 0.7, 0.9)
"""Rectified-flow times at which the denoisers' x0 errors are reported."""


# ---- configs ---------------------------------------------------------------------------


def _short_training(steps: int) -> TrainConfig:
    """The seconds-long training of every model of the `tiny()` test configurations."""
    return TrainConfig(
        num_steps=steps,
        batch_size=32,
        learning_rate=3e-3,
        warmup_steps=5,
        log_every=steps // 2,
        eval_every=steps // 2,
        fast_compile=True,
    )


@dataclasses.dataclass(frozen=True)
class TextWorldConfig:
    """Everything that defines a learned text world (all parts, their training, the seed).

    `quick()` is the CPU default (L = 16, a few minutes for all models), `full()` the
    larger one (L = 64), `tiny()` a seconds-long configuration for tests.
    """

    seed: int = 0
    data: data_lib.TextDataConfig = data_lib.TextDataConfig(length=16)
    autoencoder: text_lib.TextAEConfig = text_lib.TextAEConfig()
    autoencoder_train: TrainConfig = TrainConfig(
        num_steps=500, batch_size=64, learning_rate=2e-3, warmup_steps=50, eval_every=250
    )
    denoiser: den.DenoiserConfig = den.DenoiserConfig(t_sampling="logit_normal", t_logit_mean=1.6)
    denoiser_train: TrainConfig = TrainConfig(
        num_steps=1200, batch_size=64, learning_rate=2e-3, warmup_steps=100, eval_every=400
    )
    evaluator: text_lib.LMConfig = text_lib.LMConfig()
    evaluator_train: TrainConfig = TrainConfig(
        num_steps=800, batch_size=64, learning_rate=2e-3, warmup_steps=100, eval_every=400
    )
    schedule: str = "rectified_flow"
    num_eval: int = 512
    num_metric: int = 512

    def __post_init__(self):
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if self.schedule not in schedules.SCHEDULES:
            raise ValueError(
                f"schedule must be one of {sorted(schedules.SCHEDULES)}, got {self.schedule!r}"
            )
        if self.denoiser.architecture != "transformer":
            raise ValueError("the text denoiser must use architecture='transformer'")
        for name in ("num_eval", "num_metric"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")

    @classmethod
    def quick(cls) -> TextWorldConfig:
        return cls()

    @classmethod
    def full(cls) -> TextWorldConfig:
        """L = 64; ≈ 55 CPU-minutes in all (estimated from measured per-step costs:
        autoencoder 2000 × 0.28 s, evaluator 3000 × 0.22 s, denoiser 6000 × 0.24 s)."""
        return cls(
            data=data_lib.TextDataConfig(length=64, train_stride=16),
            autoencoder=text_lib.TextAEConfig(model_dim=96, encoder_layers=2, ar_layers=2),
            autoencoder_train=TrainConfig(
                num_steps=2000,
                batch_size=32,
                learning_rate=1e-3,
                warmup_steps=200,
                eval_every=500,
            ),
            denoiser=den.DenoiserConfig(
                model_dim=128, num_layers=4, t_sampling="logit_normal", t_logit_mean=1.6
            ),
            denoiser_train=TrainConfig(
                num_steps=6000,
                batch_size=32,
                learning_rate=1e-3,
                warmup_steps=300,
                eval_every=500,
            ),
            evaluator=text_lib.LMConfig(model_dim=128, num_layers=3),
            evaluator_train=TrainConfig(
                num_steps=3000,
                batch_size=32,
                learning_rate=1e-3,
                warmup_steps=200,
                eval_every=500,
            ),
            num_eval=256,
            num_metric=256,
        )

    @classmethod
    def tiny(cls) -> TextWorldConfig:
        """Seconds-long training for tests (L = 8, one-block models, tens of steps)."""

        return cls(
            data=data_lib.TextDataConfig(length=8),
            autoencoder=text_lib.TextAEConfig(
                latent_dim=8, model_dim=32, num_heads=2, encoder_layers=1, ar_layers=1
            ),
            autoencoder_train=_short_training(40),
            denoiser=den.DenoiserConfig(model_dim=32, num_layers=1, num_heads=2, time_dim=16),
            denoiser_train=_short_training(20),
            evaluator=text_lib.LMConfig(model_dim=32, num_heads=2, num_layers=1),
            evaluator_train=_short_training(20),
            num_eval=64,
            num_metric=64,
        )


@dataclasses.dataclass(frozen=True)
class ImageWorldConfig:
    """Everything that defines a learned digit world."""

    seed: int = 0
    val_fraction: float = 0.2
    split_seed: int = 0
    autoencoder: image_lib.ImageAEConfig = image_lib.ImageAEConfig()
    autoencoder_train: TrainConfig = TrainConfig(
        num_steps=1000, batch_size=128, learning_rate=2e-3, warmup_steps=100, eval_every=500
    )
    denoiser: den.DenoiserConfig = den.DenoiserConfig(
        architecture="mlp", model_dim=128, num_layers=3, mlp_ratio=4
    )
    denoiser_train: TrainConfig = TrainConfig(
        num_steps=1200, batch_size=128, learning_rate=1e-3, warmup_steps=100, eval_every=400
    )
    classifier: image_lib.ClassifierConfig = image_lib.ClassifierConfig()
    classifier_train: TrainConfig = TrainConfig(
        num_steps=600,
        batch_size=128,
        learning_rate=2e-3,
        warmup_steps=100,
        weight_decay=1e-3,
        eval_every=300,
    )
    schedule: str = "rectified_flow"

    def __post_init__(self):
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if self.schedule not in schedules.SCHEDULES:
            raise ValueError(
                f"schedule must be one of {sorted(schedules.SCHEDULES)}, got {self.schedule!r}"
            )
        if self.denoiser.architecture != "mlp":
            raise ValueError("the image denoiser must use architecture='mlp'")

    @classmethod
    def quick(cls) -> ImageWorldConfig:
        return cls()

    @classmethod
    def full(cls) -> ImageWorldConfig:
        """≈ 7 CPU-minutes (the denoiser: 10000 steps × 0.036 s)."""
        return cls(
            autoencoder_train=TrainConfig(
                num_steps=4000,
                batch_size=128,
                learning_rate=1e-3,
                warmup_steps=200,
                eval_every=1000,
            ),
            denoiser=den.DenoiserConfig(
                architecture="mlp", model_dim=256, num_layers=4, mlp_ratio=4
            ),
            denoiser_train=TrainConfig(
                num_steps=10000,
                batch_size=128,
                learning_rate=1e-3,
                warmup_steps=300,
                eval_every=1000,
            ),
            classifier_train=TrainConfig(
                num_steps=2000,
                batch_size=128,
                learning_rate=1e-3,
                warmup_steps=100,
                weight_decay=1e-3,
                eval_every=1000,
            ),
        )

    @classmethod
    def tiny(cls) -> ImageWorldConfig:
        """Seconds-long training for tests."""

        return cls(
            autoencoder=image_lib.ImageAEConfig(latent_dim=8, hidden=32, num_layers=1),
            autoencoder_train=_short_training(40),
            denoiser=den.DenoiserConfig(
                architecture="mlp", model_dim=32, num_layers=1, time_dim=16
            ),
            denoiser_train=_short_training(20),
            classifier=image_lib.ClassifierConfig(hidden=32, num_layers=1),
            classifier_train=_short_training(20),
        )


def _resolve(scale: Any, cls: type, seed: int | None):
    if isinstance(scale, str):
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES} or a {cls.__name__}, got {scale!r}")
        config = getattr(cls, scale)()
    elif isinstance(scale, cls):
        config = scale
    else:
        raise ValueError(f"scale must be one of {SCALES} or a {cls.__name__}, got {scale!r}")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        config = dataclasses.replace(config, seed=seed)
    return config


# ---- load-or-train ---------------------------------------------------------------------


@dataclasses.dataclass
class _Spec:
    kind: str
    key: str
    config: Any
    build: Callable[[nnx.Rngs], nnx.Module]
    train: Callable[[nnx.Module, Any], dict[str, Any]]
    vocab: Any = None


def _state_digest(module: nnx.Module) -> str:
    """SHA-256 (16 hex digits) of a module's parameter bytes: a denoiser's cache key
    includes the digest of the encoder that produced its training latents, so it is
    never reused with another encoder (even one with the same config)."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(module))[0]:
        arr = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}:{arr.dtype}:{arr.shape}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()[:16]


def _model_key(seed: int, index: int):
    return jr.fold_in(jr.key(seed), index)


def _obtain(
    spec: _Spec, *, cache_dir: pathlib.Path, retrain: bool, load_only: bool, seed: int, index: int
):
    """(model, metadata, path, trained) for one model: load its checkpoint or train it."""
    path = cache_dir / f"{spec.kind}-{spec.key}"
    if not retrain:
        try:
            abstract = nnx.eval_shape(lambda: spec.build(nnx.Rngs(0)))
            graphdef, like = nnx.split(abstract)
            state, meta = ckpt.load_checkpoint(
                path, like, kind=spec.kind, config=spec.config, vocab=spec.vocab
            )
            return nnx.merge(graphdef, state), meta.get("metadata", {}), path, False
        except ckpt.CheckpointNotFoundError:
            if load_only:
                raise
            logger.info("%s: no checkpoint at %s; training", spec.kind, path)
        except ckpt.CheckpointError as err:
            if load_only:
                raise
            logger.warning("%s: cannot use the cached checkpoint (%s); retraining", spec.kind, err)
    with float32_mode():  # the same bits whether or not the process enables x64
        key_init, key_train = jr.split(_model_key(seed, index))
        model = _init_model(spec.build, key_init)
        metadata = spec.train(model, key_train)
    ckpt.save_checkpoint(
        path,
        nnx.state(model),
        kind=spec.kind,
        config=spec.config,
        vocab=spec.vocab,
        key=spec.key,
        metadata=metadata,
    )
    return model, metadata, path, True


def _init_model(build: Callable[[nnx.Rngs], nnx.Module], key) -> nnx.Module:
    """`build(Rngs(params=key))` with every initialiser in ONE jitted program (eager NNX
    initialisation compiles each initialiser call separately), compiled at XLA
    optimisation level 0 since it runs once."""
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))))
    init = jax.jit(
        lambda k: nnx.state(build(nnx.Rngs(params=k))), compiler_options=compiler_options(True)
    )
    state = init(key)
    return nnx.merge(graphdef, state)


def _cache_dir(cache_dir) -> pathlib.Path:
    if cache_dir is None:
        return ckpt.default_cache_dir()
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise ValueError(f"cache_dir must be a path or None, got {type(cache_dir).__name__}")
    return pathlib.Path(cache_dir).expanduser()


def _check_flags(retrain: bool, load_only: bool) -> None:
    if retrain and load_only:
        raise ValueError("retrain=True and load_only=True exclude each other")


# ---- jitted kernels (graphdef static, parameters and data as arguments) ---------------


@ft.partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, *args):
    return nnx.merge(graphdef, state)(*args)


@ft.partial(jax.jit, static_argnums=0)
def _ar_teacher_forced(graphdef, state, latents, tokens):
    return nnx.merge(graphdef, state)(latents, tokens)


@ft.partial(jax.jit, static_argnums=0)
def _ar_decode_batch(graphdef, state, latents, keys, soft, temperature):
    ar = nnx.merge(graphdef, state)

    def one(z, key):
        return text_lib.ar_decode(ar, z, key, feedback=soft, temperature=temperature)

    return jax.vmap(one)(latents, keys)


def _log_softmax_np(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    logits = logits - logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def _text_ae_eval(model: text_lib.TextAutoencoder, tokens) -> dict[str, float]:
    """Clean-latent validation numbers of the autoencoder on `tokens` (N, L): parallel
    cross-entropy and accuracy, teacher-forced AR accuracy (shared fixed-shape kernels)."""
    tokens = np.asarray(tokens, np.int32)
    enc_g, enc_s = nnx.split(model.encoder)
    par_g, par_s = nnx.split(model.parallel)
    ar_g, ar_s = nnx.split(model.ar)
    latents = text_lib.map_batches(lambda t: _apply(enc_g, enc_s, t), tokens)
    par = text_lib.map_batches(lambda x: _apply(par_g, par_s, x), latents)
    tf = text_lib.map_batches(lambda x, t: _ar_teacher_forced(ar_g, ar_s, x, t), latents, tokens)
    logp = np.take_along_axis(_log_softmax_np(par), tokens[..., None], axis=-1)
    return {
        "ce_parallel": float(-logp.mean()),
        "acc_parallel": float(np.mean(par.argmax(-1) == tokens)),
        "acc_ar_teacher_forced": float(np.mean(tf.argmax(-1) == tokens)),
    }


@ft.partial(jax.jit, static_argnums=0)
def _denoiser_x0_mse(graphdef, state, x0, eps, times):
    """Per-time x0 MSE (per coordinate) of the learned predictor, of the data mean, and
    of the best linear (diagonal Gaussian) predictor μ + α·v/(α²v + σ²)·(z − αμ) with μ, v
    the per-coordinate mean and variance of `x0` itself (so both baselines are, if
    anything, favoured); plus the training objective averaged over the given times."""
    net = nnx.merge(graphdef, state)
    sd = net.sigma_data[...]
    mean = jnp.mean(x0, axis=0, keepdims=True)
    var = jnp.var(x0, axis=0, keepdims=True)
    out = {}

    def at(t):
        z = (1.0 - t) * x0 + t * eps
        tt = jnp.full((x0.shape[0],), t, DTYPE)
        pred = den.precondition(net, z, tt)
        a, s = 1.0 - t, t
        lin = mean + (a * var / (a**2 * var + s**2)) * (z - a * mean)
        c_in, c_skip, c_out = den._coefficients(t, sd)
        return (
            jnp.mean((pred - x0) ** 2),
            jnp.mean((mean - x0) ** 2),
            jnp.mean((lin - x0) ** 2),
            jnp.mean((pred - x0) ** 2) / c_out**2,
        )

    learned, trivial, linear, weighted = jax.vmap(at)(times)
    out["x0_mse"], out["mean_mse"], out["linear_mse"] = learned, trivial, linear
    out["weighted_loss"] = jnp.mean(weighted)
    return out


def _denoiser_metrics(net, x0_val, key) -> dict[str, float]:
    graphdef, state = nnx.split(net)
    x0 = jnp.asarray(x0_val, DTYPE)
    eps = jr.normal(key, x0.shape, DTYPE)
    res = _denoiser_x0_mse(graphdef, state, x0, eps, jnp.asarray(EVAL_TIMES, DTYPE))
    out = {"val_weighted_loss": float(res["weighted_loss"])}
    for i, t in enumerate(EVAL_TIMES):
        out[f"val_x0_mse_t{t}"] = float(res["x0_mse"][i])
        out[f"val_mean_mse_t{t}"] = float(res["mean_mse"][i])
        out[f"val_linear_mse_t{t}"] = float(res["linear_mse"][i])
    return out


def _train_denoiser(
    net: den.LatentDenoiser,
    key,
    x0_train,
    x0_val,
    cfg: den.DenoiserConfig,
    train_cfg,
    progress,
    desc,
) -> dict[str, Any]:
    # σ_d of the EDM preconditioning: the RMS of the (uncentred) latents, which the
    # skip connection c_skip·z assumes; = 1 for RMS-normalised latents.
    sigma_data = float(np.sqrt(np.mean(np.square(np.asarray(x0_train, np.float64)))))
    net.sigma_data[...] = jnp.asarray(sigma_data, DTYPE)
    key_fit, key_eval = jr.split(key)
    # early evaluation on (at most) 512 evenly spread validation latents; the final
    # metrics below use all of them
    x0_small = np.asarray(x0_val)[_spread(len(x0_val), 512)]
    eval_fn = ft.partial(_denoiser_eval_small, x0_val=x0_small, key=key_eval)
    result = fit(
        net,
        ft.partial(
            den.denoiser_loss,
            t_min=cfg.t_min,
            t_sampling=cfg.t_sampling,
            t_logit_mean=cfg.t_logit_mean,
        ),
        jnp.asarray(x0_train, DTYPE),
        train_cfg,
        key=key_fit,
        eval_fn=eval_fn,
        progress=progress,
        desc=desc,
    )
    metrics = {"sigma_data": sigma_data, "final_train_loss": result.history[-1]["loss"]}
    metrics.update(_denoiser_metrics(net, x0_val, key_eval))
    return _with_timing(metrics, result)


def _denoiser_eval_small(net, *, x0_val, key):
    m = _denoiser_metrics(net, x0_val, key)
    return {"weighted_loss": m["val_weighted_loss"], "x0_mse_t0.5": m["val_x0_mse_t0.5"]}


def _with_timing(metrics: dict[str, Any], result) -> dict[str, Any]:
    metrics = dict(metrics)
    metrics["train_seconds"] = result.seconds
    metrics["train_cpu_seconds"] = result.cpu_seconds
    metrics["history"] = result.history
    return metrics


def _spread(num: int, count: int) -> np.ndarray:
    """`count` indices spread evenly over range(num) (deterministic subset)."""
    count = min(count, num)
    return np.linspace(0, num - 1, count).round().astype(np.int64)


# ---- the text world --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class TextWorld:
    """A learned text world (see `text_world`).

    Attributes:
        config: the `TextWorldConfig`.
        vocab: the character `Vocab` (`encode_text`, `decode_tokens`; V = vocab.size).
        manifold: the `TextManifold` (parallel-decoder readout, rectified-flow schedule
            unless the config says otherwise).
        autoencoder: the trained `TextAutoencoder` (encoder, parallel, ar).
        evaluator: the `Evaluator` (`log_prob`, `perplexity`, `unigram_perplexity`,
            traceable `token_nll`).
        train_tokens, val_tokens: (N, L) int32 windows of training / validation text.
        train_words: the words of the training text (for `valid_word_fraction`).
        metrics: flat dict of training and validation numbers (see `text_world`).
        trained: model kind → whether it was trained in this call (else loaded).
        checkpoints: model kind → checkpoint directory.
    """

    config: TextWorldConfig
    vocab: data_lib.Vocab
    manifold: den.TextManifold
    autoencoder: text_lib.TextAutoencoder
    evaluator: text_lib.Evaluator
    train_tokens: jax.Array
    val_tokens: jax.Array
    train_words: frozenset
    metrics: dict[str, Any]
    trained: dict[str, bool]
    checkpoints: dict[str, pathlib.Path]

    @property
    def latent_shape(self) -> tuple[int, int]:
        return tuple(self.manifold.latent_shape)

    @property
    def length(self) -> int:
        return self.latent_shape[0]

    def _split(self, part: str):
        return nnx.split(getattr(self.autoencoder, part))

    def _tokens(self, tokens) -> np.ndarray:
        arr = np.asarray(tokens)
        if arr.ndim != 2 or arr.shape[1] != self.length or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"tokens must be an integer array of shape (N, L={self.length}), got "
                f"{arr.dtype}{arr.shape}"
            )
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab.size):
            raise ValueError(
                f"tokens must lie in [0, {self.vocab.size}), got [{arr.min()}, {arr.max()}]"
            )
        return arr.astype(np.int32)

    def _latents(self, latents) -> np.ndarray:
        arr = np.asarray(latents)
        if arr.ndim != 3 or tuple(arr.shape[1:]) != self.latent_shape:
            raise ValueError(
                f"latents must have shape (N, *latent_shape) = (N, {self.latent_shape[0]}, "
                f"{self.latent_shape[1]}), got {arr.shape}"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"latents must be floating point, got {arr.dtype}")
        return arr.astype(np.float32)

    def encode(self, tokens) -> jax.Array:
        """Clean, RMS-normalised latents (N, L, d) of token windows (N, L): the
        denoiser's training data distribution."""
        graphdef, state = self._split("encoder")
        arr = self._tokens(tokens)
        return jnp.asarray(text_lib.map_batches(lambda t: _apply(graphdef, state, t), arr))

    def parallel_logits(self, latents) -> jax.Array:
        """Parallel-decoder logits (N, L, V) of latents (N, L, d)."""
        graphdef, state = self._split("parallel")
        arr = self._latents(latents)
        return jnp.asarray(text_lib.map_batches(lambda x: _apply(graphdef, state, x), arr))

    def parallel_decode(self, latents) -> jax.Array:
        """Argmax tokens (N, L) of the parallel decoder."""
        return jnp.argmax(self.parallel_logits(latents), axis=-1).astype(jnp.int32)

    def ar_logits(self, latents, prefix_tokens) -> jax.Array:
        """Teacher-forced AR logits (N, L, V): position i conditions on the latents and on
        prefix_tokens[:, :i] (committed feedback of the given tokens)."""
        graphdef, state = self._split("ar")
        x, t = self._latents(latents), self._tokens(prefix_tokens)
        if x.shape[0] != t.shape[0]:
            raise ValueError(f"latents ({x.shape[0]}) and prefix_tokens ({t.shape[0]}) differ in N")
        out = text_lib.map_batches(lambda a, b: _ar_teacher_forced(graphdef, state, a, b), x, t)
        return jnp.asarray(out)

    def ar_decode(
        self, latents, *, feedback: str = "committed", temperature: float = 0.0, key=None
    ) -> tuple[jax.Array, jax.Array]:
        """Decode latents (N, L, d) left to right with the AR decoder.

        Args:
            latents: (N, L, d).
            feedback: "committed" (the emitted token's embedding is fed back) or "soft"
                (the probability-weighted embedding Σ_v p(v)·E[v]).
            temperature: 0 for greedy argmax; > 0 samples from softmax(ℓ/temperature).
            key: `jax.random` key, required when temperature > 0 (example i uses
                fold_in(key, i)).

        Returns:
            (tokens (N, L) int32, logits (N, L, V)).
        """
        if feedback not in text_lib.FEEDBACKS:
            raise ValueError(f"feedback must be one of {text_lib.FEEDBACKS}, got {feedback!r}")
        temperature = float(temperature)
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if temperature > 0 and key is None:
            raise ValueError("key is required when temperature > 0")
        key = jr.key(0) if key is None else key
        x = self._latents(latents)
        keys = jax.vmap(lambda i: jr.fold_in(key, i))(jnp.arange(x.shape[0], dtype=jnp.uint32))
        graphdef, state = self._split("ar")
        soft, temp = jnp.asarray(feedback == "soft"), jnp.asarray(temperature, DTYPE)
        tokens, logits = text_lib.map_batches(
            lambda a, k: _ar_decode_batch(graphdef, state, a, k, soft, temp),
            x,
            keys,
        )
        return jnp.asarray(tokens), jnp.asarray(logits)

    def ar_decode_fn(
        self, feedback: str = "committed", temperature: float = 0.0
    ) -> text_lib.ARDecodeScorer:
        """A `diagnostics.commitment.ARDecodeFn` `(z, key) -> NLL (L,)` under the evaluator.

        Use the "committed" and "soft" variants with `diagnostics.ar_intervention`
        (C3b). The callable is a pytree (parameters are leaves), traceable under
        `jit` / `vmap`.
        """
        if feedback not in text_lib.FEEDBACKS:
            raise ValueError(f"feedback must be one of {text_lib.FEEDBACKS}, got {feedback!r}")
        if not float(temperature) >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        graphdef, state = self._split("ar")
        return text_lib.ARDecodeScorer(
            graphdef, state, self.evaluator, feedback, float(temperature)
        )

    @property
    def ar_readout(self) -> text_lib.ARReadout:
        """The AR decoder as a categorical readout of one latent (see `text.ARReadout`);
        pass it to `diagnostics.dabi` or `manifold.with_readout`."""
        graphdef, state = self._split("ar")
        return text_lib.ARReadout(graphdef, state, self.latent_shape)

    @property
    def ar_manifold(self) -> den.TextManifold:
        """The learned manifold read by the AR decoder instead of the parallel one."""
        return self.manifold.with_readout(self.ar_readout)

    def decode_text(self, tokens) -> list[str]:
        """The strings of token windows (N, L)."""
        return self.vocab.decode_tokens(self._tokens(tokens))

    def valid_word_fraction(self, tokens) -> float:
        """Fraction of the complete words in token windows (N, L) that occur in the training
        text (`data.valid_word_fraction`; NaN if there is no complete word)."""
        return data_lib.valid_word_fraction(self.decode_text(tokens), self.train_words)


def _text_specs(config: TextWorldConfig, corpus: data_lib.TextCorpus, progress: bool):
    vocab_size, length = corpus.vocab.size, config.data.length
    eval_tokens = corpus.val_tokens[_spread(len(corpus.val_tokens), config.num_eval)]
    ae_cfg = {
        "seed": config.seed,
        "data": config.data,
        "model": config.autoencoder,
        "train": config.autoencoder_train,
        "num_eval": config.num_eval,
    }
    ae_key = ckpt.cache_key("text_autoencoder", ae_cfg, data=corpus.fingerprint)

    def build_ae(rngs):
        return text_lib.TextAutoencoder(vocab_size, length, config.autoencoder, rngs=rngs)

    def train_ae(model, key):
        eval_fn = ft.partial(_text_ae_eval, tokens=eval_tokens)
        result = fit(
            model,
            ft.partial(text_lib.autoencoder_loss, cfg=config.autoencoder),
            jnp.asarray(corpus.train_tokens),
            config.autoencoder_train,
            key=key,
            eval_fn=eval_fn,
            progress=progress,
            desc="text autoencoder",
        )
        return _with_timing(_text_ae_metrics(model, corpus, config.num_metric), result)

    lm_cfg = {
        "seed": config.seed,
        "data": config.data,
        "model": config.evaluator,
        "train": config.evaluator_train,
        "num_eval": config.num_eval,
    }
    lm_key = ckpt.cache_key("text_evaluator", lm_cfg, data=corpus.fingerprint)

    def build_lm(rngs):
        return text_lib.CausalLM(vocab_size, length, config.evaluator, rngs=rngs)

    def train_lm(model, key):
        def eval_fn(m):
            graphdef, state = nnx.split(m)
            ev = text_lib.Evaluator(graphdef, state, _log_unigram(corpus), length)
            return {"perplexity": ev.perplexity(eval_tokens)}

        result = fit(
            model,
            text_lib.lm_loss,
            jnp.asarray(corpus.train_tokens),
            config.evaluator_train,
            key=key,
            eval_fn=eval_fn,
            progress=progress,
            desc="evaluator LM",
        )
        graphdef, state = nnx.split(model)
        ev = text_lib.Evaluator(graphdef, state, _log_unigram(corpus), length)
        train_sub = corpus.train_tokens[_spread(len(corpus.train_tokens), config.num_metric)]
        metrics = {
            "val_perplexity": ev.perplexity(corpus.val_tokens),
            "train_perplexity": ev.perplexity(train_sub),
            "unigram_val_perplexity": ev.unigram_perplexity(corpus.val_tokens),
            "unigram_train_perplexity": ev.unigram_perplexity(corpus.train_tokens),
        }
        return _with_timing(metrics, result)

    specs = {
        "autoencoder": _Spec("text_autoencoder", ae_key, ae_cfg, build_ae, train_ae, corpus.vocab),
        "evaluator": _Spec("text_evaluator", lm_key, lm_cfg, build_lm, train_lm, corpus.vocab),
    }
    return specs, ae_key


def _log_unigram(corpus: data_lib.TextCorpus) -> jax.Array:
    counts = corpus.unigram_counts.astype(np.float64) + 1.0
    return jnp.asarray(np.log(counts / counts.sum()), DTYPE)


def _text_ae_metrics(
    model: text_lib.TextAutoencoder, corpus: data_lib.TextCorpus, num: int
) -> dict[str, Any]:
    """Reconstruction accuracy on (up to `num` evenly spread) validation and training
    windows: parallel argmax, AR greedy with committed and with soft feedback, AR
    teacher-forced."""
    enc_g, enc_s = nnx.split(model.encoder)
    ar_g, ar_s = nnx.split(model.ar)
    out: dict[str, Any] = {}
    val_sub = corpus.val_tokens[_spread(len(corpus.val_tokens), num)]
    train_sub = corpus.train_tokens[_spread(len(corpus.train_tokens), num)]
    for name, tokens in (("val", val_sub), ("train", train_sub)):
        ev = _text_ae_eval(model, tokens)
        out[f"{name}_recon_acc_parallel"] = ev["acc_parallel"]
        out[f"{name}_recon_acc_ar_teacher_forced"] = ev["acc_ar_teacher_forced"]
        out[f"{name}_ce_parallel"] = ev["ce_parallel"]
        latents = text_lib.map_batches(lambda t: _apply(enc_g, enc_s, t), tokens)
        keys = jax.vmap(lambda i: jr.fold_in(jr.key(0), i))(
            jnp.arange(tokens.shape[0], dtype=jnp.uint32)
        )
        for feedback in text_lib.FEEDBACKS:
            soft = jnp.asarray(feedback == "soft")
            dec, _ = text_lib.map_batches(
                lambda x, k, f=soft: _ar_decode_batch(ar_g, ar_s, x, k, f, jnp.float32(0.0)),
                latents,
                keys,
            )
            suffix = "" if feedback == "committed" else "_soft"
            out[f"{name}_recon_acc_ar{suffix}"] = float(np.mean(dec == tokens))
    return out


def text_world(
    scale: Any = "quick",
    *,
    seed: Any = None,
    cache_dir: Any = None,
    retrain: bool = False,
    load_only: bool = False,
    progress: bool = True,
) -> TextWorld:
    """The learned text world: load its models from the cache, training what is missing.

    Models (each its own checkpoint): the text autoencoder (encoder, parallel and AR
    decoders), the latent denoiser (on the clean encoded training latents), the
    evaluator LM. Quick scale: L = 16, d = 16, V = 63 characters; a few CPU minutes.

    Args:
        scale: "quick", "full", or a `TextWorldConfig` (e.g. `TextWorldConfig.tiny()`).
        seed: overrides the config's seed (default: keep it; 0 for the named scales).
        cache_dir: checkpoint folder (default `checkpoint.default_cache_dir()`:
            ``$READOUT_JAX_CACHE`` or ``~/.cache/readout_jax/models``).
        retrain: train every model anew and overwrite its checkpoint.
        load_only: never train; raise if a checkpoint is missing or unusable.
        progress: show training progress bars (stderr, TTY only).

    Returns:
        A `TextWorld`. Its flat `metrics` dict holds

        - data: ``vocab_size``, ``length``, ``latent_dim``, ``num_train``, ``num_val``,
          ``val_topics``, ``data_fingerprint``, ``val_valid_word_fraction``;
        - ``autoencoder_{val,train}_recon_acc_parallel`` / ``_recon_acc_ar`` (greedy,
          committed feedback) / ``_recon_acc_ar_soft`` (soft feedback) /
          ``_recon_acc_ar_teacher_forced`` / ``_ce_parallel``, on `num_metric` windows;
        - ``denoiser_val_{x0,mean,linear}_mse_t{t}`` for t in `EVAL_TIMES` (learned,
          data-mean and diagonal-Gaussian predictors, per coordinate),
          ``denoiser_val_weighted_loss``, ``denoiser_final_train_loss``,
          ``denoiser_sigma_data``;
        - ``evaluator_{val,train}_perplexity``, ``evaluator_unigram_{val,train}_perplexity``;
        - per model ``<model>_train_seconds`` (wall), ``<model>_train_cpu_seconds`` and
          ``<model>_history`` (the evaluations during training, step 0 first). Loaded
          models report the numbers of the run that trained them.

    Raises:
        ValueError: bad arguments.
        CheckpointNotFoundError / CheckpointError: with `load_only`, a missing / bad
            checkpoint.
    """
    _check_flags(retrain, load_only)
    config = _resolve(scale, TextWorldConfig, seed)
    folder = _cache_dir(cache_dir)
    corpus = data_lib.load_text_corpus(config.data)
    specs, ae_key = _text_specs(config, corpus, progress)
    opts = dict(cache_dir=folder, retrain=retrain, load_only=load_only, seed=config.seed)
    ae, ae_meta, ae_path, ae_trained = _obtain(specs["autoencoder"], index=1, **opts)

    length, width = config.data.length, config.autoencoder.latent_dim
    enc_g, enc_s = nnx.split(ae.encoder)
    den_cfg = {
        "seed": config.seed,
        "model": config.denoiser,
        "train": config.denoiser_train,
    }
    den_key = ckpt.cache_key("text_denoiser", den_cfg, encoder=_state_digest(ae.encoder))

    def train_den(net, key):
        encode = lambda t: _apply(enc_g, enc_s, t)  # noqa: E731
        x_train = text_lib.map_batches(encode, np.asarray(corpus.train_tokens))
        x_val = text_lib.map_batches(encode, np.asarray(corpus.val_tokens))
        return _train_denoiser(
            net,
            key,
            x_train,
            x_val,
            config.denoiser,
            config.denoiser_train,
            progress,
            "text denoiser",
        )

    den_spec = _Spec(
        "text_denoiser",
        den_key,
        den_cfg,
        lambda rngs: den.LatentDenoiser((length, width), config.denoiser, rngs=rngs),
        train_den,
    )
    net, den_meta, den_path, den_trained = _obtain(den_spec, index=2, **opts)
    lm, lm_meta, lm_path, lm_trained = _obtain(specs["evaluator"], index=3, **opts)

    lm_g, lm_s = nnx.split(lm)
    evaluator = text_lib.Evaluator(lm_g, lm_s, _log_unigram(corpus), length)
    den_g, den_s = nnx.split(net)
    par_g, par_s = nnx.split(ae.parallel)
    manifold = den.TextManifold(
        den.LearnedDenoiser(den_g, den_s),
        den.ParallelReadout(par_g, par_s),
        (length, width),
        schedules.get_schedule(config.schedule),
    )
    metrics: dict[str, Any] = {
        "vocab_size": corpus.vocab.size,
        "length": length,
        "latent_dim": width,
        "num_train": int(corpus.train_tokens.shape[0]),
        "num_val": int(corpus.val_tokens.shape[0]),
        "val_topics": list(corpus.val_topics),
        "data_fingerprint": corpus.fingerprint,
        "val_valid_word_fraction": data_lib.valid_word_fraction(
            corpus.vocab.decode_tokens(corpus.val_tokens), corpus.train_words
        ),
    }
    for prefix, meta in (("autoencoder", ae_meta), ("denoiser", den_meta), ("evaluator", lm_meta)):
        metrics.update({f"{prefix}_{k}": v for k, v in meta.items()})
    return TextWorld(
        config=config,
        vocab=corpus.vocab,
        manifold=manifold,
        autoencoder=ae,
        evaluator=evaluator,
        train_tokens=jnp.asarray(corpus.train_tokens),
        val_tokens=jnp.asarray(corpus.val_tokens),
        train_words=corpus.train_words,
        metrics=metrics,
        trained={"autoencoder": ae_trained, "denoiser": den_trained, "evaluator": lm_trained},
        checkpoints={"autoencoder": ae_path, "denoiser": den_path, "evaluator": lm_path},
    )


# ---- the image world -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class ImageWorld:
    """A learned digit world (see `image_world`).

    Attributes:
        config: the `ImageWorldConfig`.
        manifold: the `ImageManifold` (smooth readout: pixels).
        autoencoder: the trained `ImageAutoencoder`.
        classifier: the `image.Classifier` (`probs`, `predict`, `accuracy`).
        train_images, val_images: (N, 64) float32 in [0, 1]; train_labels, val_labels.
        metrics, trained, checkpoints: as for `TextWorld`.
    """

    config: ImageWorldConfig
    manifold: den.ImageManifold
    autoencoder: image_lib.ImageAutoencoder
    classifier: image_lib.Classifier
    train_images: jax.Array
    train_labels: jax.Array
    val_images: jax.Array
    val_labels: jax.Array
    metrics: dict[str, Any]
    trained: dict[str, bool]
    checkpoints: dict[str, pathlib.Path]

    @property
    def latent_shape(self) -> tuple[int]:
        return tuple(self.manifold.latent_shape)

    def _images(self, images) -> np.ndarray:
        arr = np.asarray(images)
        if arr.ndim != 2 or arr.shape[1] != image_lib.NUM_PIXELS:
            raise ValueError(f"images must have shape (N, 64), got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"images must be floating point in [0, 1], got {arr.dtype}")
        return arr.astype(np.float32)

    def encode(self, images) -> jax.Array:
        """Clean RMS-normalised latents (N, d) of images (N, 64)."""
        graphdef, state = nnx.split(self.autoencoder.encoder)
        arr = self._images(images)
        return jnp.asarray(text_lib.map_batches(lambda x: _apply(graphdef, state, x), arr))

    def decode(self, latents) -> jax.Array:
        """Pixels (N, 64) in [0, 1] of latents (N, d)."""
        arr = np.asarray(latents)
        if arr.ndim != 2 or tuple(arr.shape[1:]) != self.latent_shape:
            raise ValueError(
                f"latents must have shape (N, {self.latent_shape[0]}), got {arr.shape}"
            )
        graphdef, state = nnx.split(self.autoencoder.decoder)
        return jnp.asarray(
            text_lib.map_batches(lambda x: _apply(graphdef, state, x), arr.astype(np.float32))
        )

    def nearest_train_distance(self, images) -> np.ndarray:
        """Euclidean pixel distance (N,) from each image to its nearest training image."""
        arr = self._images(images).astype(np.float64)
        train = np.asarray(self.train_images, np.float64)
        sq_train = np.sum(train**2, axis=1)
        out = []
        for start in range(0, arr.shape[0], 1024):
            chunk = arr[start : start + 1024]
            d2 = np.sum(chunk**2, axis=1)[:, None] - 2.0 * chunk @ train.T + sq_train[None, :]
            out.append(np.sqrt(np.maximum(d2.min(axis=1), 0.0)))
        return np.concatenate(out)


def _digits_fingerprint(digits: data_lib.DigitData) -> str:
    digest = hashlib.sha256()
    for arr in digits:
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()[:16]


def image_world(
    scale: Any = "quick",
    *,
    seed: Any = None,
    cache_dir: Any = None,
    retrain: bool = False,
    load_only: bool = False,
    progress: bool = True,
) -> ImageWorld:
    """The learned digit world: load its models from the cache, training what is missing.

    Models: the digit autoencoder (latent width d = 12 at quick scale), the MLP latent
    denoiser, the digit classifier. Arguments as for `text_world`.

    Returns:
        An `ImageWorld`. Its flat `metrics` dict holds ``latent_dim``, ``num_train``,
        ``num_val``, ``data_fingerprint``; ``autoencoder_{val,train}_recon_mse`` (per
        pixel) and ``autoencoder_val_recon_classifier_accuracy``;
        ``classifier_{val,train}_accuracy``; the ``denoiser_*`` numbers as for
        `text_world`; per model the training time (wall, CPU) and history.
    """
    _check_flags(retrain, load_only)
    config = _resolve(scale, ImageWorldConfig, seed)
    folder = _cache_dir(cache_dir)
    digits = data_lib.load_digits_split(config.val_fraction, config.split_seed)
    fingerprint = _digits_fingerprint(digits)
    opts = dict(cache_dir=folder, retrain=retrain, load_only=load_only, seed=config.seed)
    train_x, val_x = jnp.asarray(digits.train_images), jnp.asarray(digits.val_images)

    clf_cfg = {
        "seed": config.seed,
        "split": [config.val_fraction, config.split_seed],
        "model": config.classifier,
        "train": config.classifier_train,
    }
    clf_key = ckpt.cache_key("digit_classifier", clf_cfg, data=fingerprint)

    def train_clf(model, key):
        def eval_fn(m):
            g, s = nnx.split(m)
            return {"accuracy": image_lib.Classifier(g, s).accuracy(val_x, digits.val_labels)}

        result = fit(
            model,
            image_lib.classifier_loss,
            (train_x, jnp.asarray(digits.train_labels)),
            config.classifier_train,
            key=key,
            eval_fn=eval_fn,
            progress=progress,
            desc="digit classifier",
        )
        g, s = nnx.split(model)
        clf = image_lib.Classifier(g, s)
        metrics = {
            "val_accuracy": clf.accuracy(digits.val_images, digits.val_labels),
            "train_accuracy": clf.accuracy(digits.train_images, digits.train_labels),
        }
        return _with_timing(metrics, result)

    clf_spec = _Spec(
        "digit_classifier",
        clf_key,
        clf_cfg,
        lambda rngs: image_lib.DigitClassifier(config.classifier, rngs=rngs),
        train_clf,
    )
    clf_model, clf_meta, clf_path, clf_trained = _obtain(clf_spec, index=13, **opts)
    cg, cs = nnx.split(clf_model)
    classifier = image_lib.Classifier(cg, cs)

    ae_cfg = {
        "seed": config.seed,
        "split": [config.val_fraction, config.split_seed],
        "model": config.autoencoder,
        "train": config.autoencoder_train,
    }
    ae_key = ckpt.cache_key("image_autoencoder", ae_cfg, data=fingerprint)

    def recon(model, images):
        eg, es = nnx.split(model.encoder)
        dg, ds = nnx.split(model.decoder)
        latents = text_lib.map_batches(lambda x: _apply(eg, es, x), np.asarray(images))
        return text_lib.map_batches(lambda z: _apply(dg, ds, z), latents)

    def train_ae(model, key):
        def eval_fn(m):
            return {"mse": float(np.mean((recon(m, val_x) - digits.val_images) ** 2))}

        result = fit(
            model,
            ft.partial(image_lib.autoencoder_loss, cfg=config.autoencoder),
            train_x,
            config.autoencoder_train,
            key=key,
            eval_fn=eval_fn,
            progress=progress,
            desc="image autoencoder",
        )
        val_rec = np.asarray(recon(model, val_x))
        metrics = {
            "val_recon_mse": float(np.mean((val_rec - digits.val_images) ** 2)),
            "train_recon_mse": float(
                np.mean((np.asarray(recon(model, train_x)) - digits.train_images) ** 2)
            ),
            "val_recon_classifier_accuracy": classifier.accuracy(val_rec, digits.val_labels),
        }
        return _with_timing(metrics, result)

    ae_spec = _Spec(
        "image_autoencoder",
        ae_key,
        ae_cfg,
        lambda rngs: image_lib.ImageAutoencoder(config.autoencoder, rngs=rngs),
        train_ae,
    )
    ae, ae_meta, ae_path, ae_trained = _obtain(ae_spec, index=11, **opts)

    width = config.autoencoder.latent_dim
    den_cfg = {"seed": config.seed, "model": config.denoiser, "train": config.denoiser_train}
    den_key = ckpt.cache_key("image_denoiser", den_cfg, encoder=_state_digest(ae.encoder))
    eg, es = nnx.split(ae.encoder)

    def train_den(net, key):
        x_train = text_lib.map_batches(lambda x: _apply(eg, es, x), digits.train_images)
        x_val = text_lib.map_batches(lambda x: _apply(eg, es, x), digits.val_images)
        return _train_denoiser(
            net,
            key,
            x_train,
            x_val,
            config.denoiser,
            config.denoiser_train,
            progress,
            "image denoiser",
        )

    den_spec = _Spec(
        "image_denoiser",
        den_key,
        den_cfg,
        lambda rngs: den.LatentDenoiser((width,), config.denoiser, rngs=rngs),
        train_den,
    )
    net, den_meta, den_path, den_trained = _obtain(den_spec, index=12, **opts)

    dg, ds = nnx.split(net)
    pg, ps = nnx.split(ae.decoder)
    manifold = den.ImageManifold(
        den.LearnedDenoiser(dg, ds),
        den.PixelDecoder(pg, ps),
        (width,),
        schedules.get_schedule(config.schedule),
    )
    metrics: dict[str, Any] = {
        "latent_dim": width,
        "num_train": int(digits.train_images.shape[0]),
        "num_val": int(digits.val_images.shape[0]),
        "data_fingerprint": fingerprint,
    }
    for prefix, meta in (
        ("autoencoder", ae_meta),
        ("denoiser", den_meta),
        ("classifier", clf_meta),
    ):
        metrics.update({f"{prefix}_{k}": v for k, v in meta.items()})
    return ImageWorld(
        config=config,
        manifold=manifold,
        autoencoder=ae,
        classifier=classifier,
        train_images=train_x,
        train_labels=jnp.asarray(digits.train_labels),
        val_images=val_x,
        val_labels=jnp.asarray(digits.val_labels),
        metrics=metrics,
        trained={"autoencoder": ae_trained, "denoiser": den_trained, "classifier": clf_trained},
        checkpoints={"autoencoder": ae_path, "denoiser": den_path, "classifier": clf_path},
    )
