"""A generic optax training loop for Flax NNX models: scanned steps, AdamW, periodic evaluation.

The loop is the field's standard recipe: AdamW with a linear-warmup cosine-decay learning
rate and global-norm gradient clipping (`optax.chain(clip_by_global_norm, adamw)`),
minibatches drawn uniformly with replacement. For speed on a CPU, `log_every` steps run
inside one jitted `lax.scan` (one dispatch per chunk, minibatch indices drawn in bulk
inside it); the data arrays enter the jitted function as ARGUMENTS, never as closed-over
constants. Every `eval_every` steps the caller's `eval_fn` runs on the current model
("early evaluation": validation numbers are shown in the progress bar and kept in the
history as training goes, not only at the end).

Determinism: the whole run is a function of the model's initial parameters, the data
and `key`; the same inputs give bit-identical parameters on the same machine, with or
without `jax_enable_x64` (training runs in 32-bit mode, `layers.float32_mode`).
"""

from __future__ import annotations

import dataclasses
import functools as ft
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from flax import nnx

from readout_jax.learned import layers

logger = logging.getLogger("readout_jax.learned")

__all__ = [
    "TrainConfig",
    "TrainResult",
    "make_optimizer",
    "fit",
    "ProgressLine",
    "compiler_options",
]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation hyperparameters.

    Attributes:
        num_steps: number of optimiser steps (≥ 1).
        batch_size: examples per step.
        learning_rate: peak learning rate.
        warmup_steps: linear warm-up from 0 to the peak.
        final_lr_fraction: the cosine decays to this fraction of the peak.
        weight_decay: AdamW decoupled weight decay.
        grad_clip: global-norm clipping threshold.
        log_every: steps per jitted chunk (progress granularity).
        eval_every: steps between evaluations (a multiple of `log_every`).
        fast_compile: compile the training step with XLA's backend optimisation level
            0: about half the compile time, about twice the time per step (for tests
            and other runs of a few dozen steps).
        ema_decay: if > 0, keep an exponential moving average of the parameters with
            decay min(ema_decay, (1 + n)/(10 + n)) after n steps (the usual warm-up),
            and evaluate and return the AVERAGED parameters (standard for diffusion
            models); 0 returns the raw parameters.
    """

    num_steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    final_lr_fraction: float = 0.05
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    log_every: int = 25
    eval_every: int = 250
    fast_compile: bool = False
    ema_decay: float = 0.0

    def __post_init__(self):
        for name in ("num_steps", "batch_size", "log_every", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        if self.eval_every % self.log_every:
            raise ValueError(
                f"eval_every ({self.eval_every}) must be a multiple of log_every ({self.log_every})"
            )
        for name in ("learning_rate", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ValueError(f"final_lr_fraction must be in [0, 1], got {self.final_lr_fraction}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")


class TrainResult(NamedTuple):
    """What `fit` returns.

    Attributes:
        model: the trained model (the input model object, updated in place).
        history: one dict per evaluation: step, train loss (mean over the last chunk),
            the training aux metrics and the `eval_fn` numbers (prefixed ``val_``); with
            an `eval_fn`, the first entry is the untrained model at step 0 (eval only).
        seconds: wall-clock training time (compilation included).
        cpu_seconds: process CPU time of training (all threads; on a shared machine
            the fairer cost measure).
    """

    model: Any
    history: list[dict[str, float]]
    seconds: float
    cpu_seconds: float


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """clip_by_global_norm(grad_clip) → AdamW(warmup-cosine schedule, weight_decay), on
    the flattened parameter vector."""
    warmup = min(config.warmup_steps, max(config.num_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(config.num_steps, warmup + 1),
        end_value=config.learning_rate * config.final_lr_fraction,
    )
    # optax.flatten: the optimiser acts on one concatenated vector instead of ~100 small
    # leaves (same arithmetic, much less XLA to compile).
    return optax.flatten(
        optax.chain(
            optax.clip_by_global_norm(config.grad_clip),
            optax.adamw(schedule, weight_decay=config.weight_decay),
        )
    )


class ProgressLine:
    """A one-line progress bar on stderr (only on a TTY; ``READOUT_JAX_PROGRESS=0`` or
    `enabled=False` silences it)."""

    def __init__(self, desc: str, total: int, *, enabled: bool = True, stream: IO | None = None):
        self.stream = sys.stderr if stream is None else stream
        off = os.environ.get("READOUT_JAX_PROGRESS", "1").strip().lower() in ("0", "false", "no")
        isatty = getattr(self.stream, "isatty", None)
        try:
            tty = bool(isatty and isatty())
        except ValueError:  # closed stream
            tty = False
        self.enabled = enabled and tty and not off
        self.desc, self.total, self.start = desc, total, time.perf_counter()

    def update(self, count: int, text: str = "", *, final: bool = False) -> None:
        if not self.enabled:
            return
        frac = min(count / self.total, 1.0) if self.total else 1.0
        filled = int(round(20 * frac))
        elapsed = time.perf_counter() - self.start
        bar = f"[{'#' * filled}{'.' * (20 - filled)}] {count}/{self.total}"
        self.stream.write(
            f"\r{self.desc} {bar} {elapsed:.0f}s {text}\033[K" + ("\n" if final else "")
        )
        self.stream.flush()


def compiler_options(fast: bool) -> dict[str, Any]:
    """XLA options for `jax.jit`: optimisation level 0 when `fast` (programs that run a
    few times, where compile time dominates), else the defaults."""
    return {"xla_backend_optimization_level": 0} if fast else {}


LossFn = Callable[[nnx.Module, Any, Any], tuple[jax.Array, dict[str, jax.Array]]]


def fit(
    model: nnx.Module,
    loss_fn: LossFn,
    data: Any,
    config: TrainConfig,
    *,
    key: Any,
    eval_fn: Callable[[nnx.Module], dict[str, float]] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> TrainResult:
    """Train `model` in place on minibatches of `data` by minimising `loss_fn`.

    Args:
        model: an NNX module; its `nnx.Param` variables are optimised, any other state
            is held fixed.
        loss_fn: `(model, batch, key) -> (loss, aux)` with `batch` a minibatch of `data`
            (the same pytree, leading axis `batch_size`) and `aux` a dict of scalars.
        data: a pytree of arrays sharing the leading (example) axis.
        config: the `TrainConfig`.
        key: a `jax.random` key (minibatches and the loss's own randomness).
        eval_fn: `model -> dict of floats`, run before training, every `eval_every`
            steps and at the end.
        progress: draw the progress bar (stderr, TTY only).
        desc: label of the progress bar.

    Returns:
        `TrainResult(model, history, seconds, cpu_seconds)`.

    Raises:
        ValueError: if the data leaves disagree on their leading axis or are empty, or
            the loss becomes non-finite.
    """
    with layers.float32_mode():
        return _fit(
            model, loss_fn, data, config, key=key, eval_fn=eval_fn, progress=progress, desc=desc
        )


def _fit(model, loss_fn, data, config, *, key, eval_fn, progress, desc) -> TrainResult:
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data has no arrays")
    num = {int(x.shape[0]) for x in leaves}
    if len(num) != 1 or 0 in num:
        raise ValueError(
            f"data arrays must share a non-empty leading axis, got sizes {sorted(num)}"
        )
    (num_examples,) = num
    # via numpy: int64 / float64 inputs become int32 / float32 (32-bit mode)
    data = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a)), data)
    tx = make_optimizer(config)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = tx.init(params)
    batch_size = config.batch_size

    ema_decay = config.ema_decay
    ema = params
    count = jnp.zeros((), jnp.int32)

    @ft.partial(jax.jit, compiler_options=compiler_options(config.fast_compile))
    def chunk(params, opt_state, ema, count, data, keys):
        def one_step(carry, step_key):
            params, opt_state, ema, count = carry
            key_batch, key_loss = jr.split(step_key)
            idx = jr.randint(key_batch, (batch_size,), 0, num_examples, dtype=jnp.int32)
            batch = jax.tree_util.tree_map(lambda a: a[idx], data)

            def objective(p):
                return loss_fn(nnx.merge(graphdef, p, rest), batch, key_loss)

            (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            if ema_decay > 0:
                n = count.astype(jnp.float32)
                decay = jnp.minimum(ema_decay, (1.0 + n) / (10.0 + n))
                ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p, ema, params)
            return (params, opt_state, ema, count + 1), (loss, aux)

        carry = (params, opt_state, ema, count)
        (params, opt_state, ema, count), (losses, aux) = jax.lax.scan(one_step, carry, keys)
        aux = jax.tree_util.tree_map(jnp.mean, aux)
        return params, opt_state, ema, count, jnp.mean(losses), aux

    def used(params, ema):
        return ema if ema_decay > 0 else params

    bar = ProgressLine(desc, config.num_steps, enabled=progress)
    history: list[dict[str, float]] = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    step, last_eval = 0, {}
    if eval_fn is not None:  # the untrained baseline, at step 0
        last_eval = {k: float(v) for k, v in eval_fn(model).items()}
        history.append({"step": 0, **{f"val_{k}": v for k, v in last_eval.items()}})
    num_chunks = math.ceil(config.num_steps / config.log_every)
    chunk_keys = jr.split(key, num_chunks)
    for c in range(num_chunks):
        size = min(config.log_every, config.num_steps - step)
        keys = jr.split(chunk_keys[c], size)
        params, opt_state, ema, count, loss, aux = chunk(params, opt_state, ema, count, data, keys)
        step += size
        loss = float(loss)
        if not math.isfinite(loss):
            raise ValueError(f"{desc}: the training loss became {loss} at step {step}")
        done = step >= config.num_steps
        if step % config.eval_every == 0 or done:
            record = {"step": step, "loss": loss, **{k: float(v) for k, v in aux.items()}}
            if eval_fn is not None:
                nnx.update(model, used(params, ema))
                last_eval = {k: float(v) for k, v in eval_fn(model).items()}
                record.update({f"val_{k}": v for k, v in last_eval.items()})
            history.append(record)
            logger.info("%s: %s", desc, record)
        shown = " ".join(f"val_{k}={v:.4g}" for k, v in list(last_eval.items())[:3])
        bar.update(step, f"loss={loss:.4g} {shown}", final=done)
    nnx.update(model, used(params, ema))
    return TrainResult(model, history, time.perf_counter() - wall0, time.process_time() - cpu0)
