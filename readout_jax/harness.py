"""The sampling harness: validate outside `jit`, then jit once, vmap the batch, scan the steps."""

from __future__ import annotations

import functools as ft
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from readout_jax import sharding
from readout_jax._types import Array, ArrayLike, Float, Key, Keys, PyTree
from readout_jax.samplers.base import SamplerState, StepInfo

__all__ = [
    "SampleResult",
    "sample",
    "record_info",
    "record_x0_hat",
    "record_nothing",
    "check_sample_inputs",
    "chain_keys",
    "prior_sample",
    "NonFiniteError",
    "MAX_RECORD_BYTES",
    "sampler_name",
]

RecordFn = Callable[[SamplerState, StepInfo], PyTree]


class SampleResult(NamedTuple):
    """What `sample` returns.

    Attributes:
        x: (batch, *latent) state at the last grid time t_K.
        x0: (batch, *latent) posterior-mean terminal output x̂0(x, t_K) (SPEC §4).
        info: what `record` kept of each step, leading axes (batch, K).
    """

    x: Float[Array, " batch *latent"]
    x0: Float[Array, " batch *latent"]
    info: PyTree


def record_info(state: SamplerState, info: StepInfo) -> PyTree:
    """Keep the whole per-step `StepInfo` (x̂0, nfe, num_draws)."""
    del state
    return info


def record_x0_hat(state: SamplerState, info: StepInfo) -> PyTree:
    """Keep only the per-step posterior-mean estimate x̂0."""
    del state
    return info.x0_hat


def record_nothing(state: SamplerState, info: StepInfo) -> PyTree:
    """Keep nothing per step (O(1) memory in K)."""
    del state, info
    return ()


def _as_key(key: Any) -> Key:
    from readout_jax import _checks

    return _checks.prng_key(key, "key")


@jax.jit
def _finite_jit(x):
    return jnp.all(jnp.isfinite(x))


def check_sample_inputs(sampler, manifold, x_init, ts) -> None:
    """The harness's validation, in plain Python (raises ValueError / TypeError).

    Checks that the sampler has `init`/`step`, the manifold has a denoiser and schedule,
    `ts` is a 1-D strictly decreasing grid in [0, 1] with K = len(ts) − 1 ≥ 1, and
    `x_init` is a finite floating array of shape (batch ≥ 1, *manifold.latent_shape).
    Finally calls `sampler.validate(manifold, ts)` if the sampler defines it.
    """
    for method in ("init", "step"):
        if not callable(getattr(sampler, method, None)):
            raise TypeError(
                f"sampler {type(sampler).__name__} has no {method}() method; a "
                "sampler is any object with init(x, t) and step(key, state, "
                "model, t_next)"
            )
    for attr in ("denoise", "schedule", "latent_shape"):
        if not hasattr(manifold, attr):
            raise TypeError(f"manifold {type(manifold).__name__} has no {attr!r}")
    if isinstance(ts, jax.core.Tracer):
        raise TypeError("ts must be concrete (build it with time_grid outside jit)")
    ts_np = np.asarray(ts)
    if not (np.issubdtype(ts_np.dtype, np.floating) or np.issubdtype(ts_np.dtype, np.integer)):
        raise ValueError(f"ts must be a real (floating) array, got dtype {ts_np.dtype}")
    if ts_np.ndim != 1:
        raise ValueError(f"ts must be 1-D (num_steps + 1,), got shape {ts_np.shape}")
    if ts_np.shape[0] < 2:
        raise ValueError(f"num_steps = len(ts) - 1 must be >= 1, got len(ts) = {ts_np.shape[0]}")
    if not np.all(np.isfinite(ts_np)):
        raise ValueError("ts contains NaN or inf")
    if not np.all(np.diff(ts_np) < 0):
        raise ValueError(f"ts must be strictly decreasing (noise -> data), got {ts_np}")
    if ts_np[0] > 1.0 or ts_np[-1] < 0.0:
        raise ValueError(
            f"ts must lie in the schedule's range [0, 1], got [{ts_np[-1]}, {ts_np[0]}]"
        )
    if isinstance(x_init, jax.core.Tracer):
        raise TypeError("x_init must be concrete; call sample() outside jit")
    shape = tuple(np.shape(x_init))
    latent = tuple(manifold.latent_shape)
    if shape[1:] != latent or len(shape) != len(latent) + 1:
        raise ValueError(
            f"x_init must have shape (batch, *latent_shape) = (batch, "
            f"{', '.join(map(str, latent))}), got {shape}"
        )
    if shape[0] < 1:
        raise ValueError("x_init has an empty batch (batch size 0)")
    dtype = np.dtype(x_init.dtype) if hasattr(x_init, "dtype") else np.asarray(x_init).dtype
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"x_init must be a floating array, got dtype {dtype}")
    # A JAX array (maybe sharded over devices, maybe over several processes) is reduced
    # where it lives; only a NumPy array is checked on the host.
    finite = _finite_jit(x_init) if isinstance(x_init, jax.Array) else np.isfinite(x_init).all()
    if not bool(finite):
        raise ValueError("x_init contains NaN or inf")
    validate = getattr(sampler, "validate", None)
    if callable(validate):
        validate(manifold, ts_np)


def chain_keys(key: Key, batch: int, start: Any = 0) -> Keys:
    """Per-example keys fold_in(key, start + i): example i's key does not depend on the
    batch size, the chunking or the sharding of the batch."""
    index = jnp.asarray(start, jnp.uint32) + jnp.arange(batch, dtype=jnp.uint32)
    return jax.vmap(lambda i: jr.fold_in(key, i))(index)


def _all_finite(tree: PyTree) -> Array:
    leaves = [
        leaf
        for leaf in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    ok = jnp.array(True)
    for leaf in leaves:
        ok = ok & jnp.all(jnp.isfinite(leaf))
    return ok


def _chain(sampler, manifold, record_fn, ts, chain_key, x):
    """One chain: (x_K, x̂0(x_K, t_K), records)."""

    def body(state, xs):
        step_key, t_next = xs
        state, info = sampler.step(step_key, state, manifold, t_next)
        return state, record_fn(state, info)

    state = sampler.init(x, ts[0])
    num_steps = ts.shape[0] - 1
    state, records = jax.lax.scan(body, state, (jr.split(chain_key, num_steps), ts[1:]))
    x0 = manifold.denoise(state.x, ts[-1])
    return state.x, x0, records


#: One chain of `sample` (the name the tests and benchmarks call).
_one_chain = _chain


def _first_bad_step(sampler, manifold, ts, chain_key, x):
    """The first step k (0-based) whose new latent holds NaN/inf; K if only the terminal
    posterior mean does; −1 if the chain stays finite (int32). The debug twin of
    `_chain`: same keys and steps, so it replays a chain exactly."""
    num_steps = ts.shape[0] - 1

    def body(carry, xs):
        state, first_bad = carry
        step_key, t_next, k = xs
        state, _ = sampler.step(step_key, state, manifold, t_next)
        first_bad = jnp.where((first_bad < 0) & ~_all_finite(state.x), k, first_bad)
        return (state, first_bad), None

    init = (sampler.init(x, ts[0]), jnp.array(-1, jnp.int32))
    xs = (jr.split(chain_key, num_steps), ts[1:], jnp.arange(num_steps, dtype=jnp.int32))
    (state, first_bad), _ = jax.lax.scan(body, init, xs)
    x0 = manifold.denoise(state.x, ts[-1])
    return jnp.where((first_bad < 0) & ~_all_finite(x0), num_steps, first_bad)


@ft.partial(jax.jit, static_argnames=("record_fn",))
def _sample_jit(sampler, manifold, key, x_init, ts, record_fn, start=0):
    """The compiled harness for one piece of the batch: ((x, x0, info), finite).

    Example j of `x_init` is global example start + j (its key is fold_in(key, start+j));
    `finite` (batch,) says whether x and x0 of each example are free of NaN/inf.
    """
    ts = ts.astype(x_init.dtype)
    keys = chain_keys(key, x_init.shape[0], start)

    def one(example):
        chain_key, x = example
        x, x0, records = _chain(sampler, manifold, record_fn, ts, chain_key, x)
        return x, x0, records, _all_finite(x) & _all_finite(x0)

    x, x0, info, finite = sharding.vmap_padded(one, (keys, x_init))
    return (x, x0, info), finite


@jax.jit
def _first_bad_jit(sampler, manifold, key, x_init, ts, index):
    """`_first_bad_step` of the examples with global indices `index` (rows of x_init)."""
    ts = ts.astype(x_init.dtype)
    keys = jax.vmap(lambda i: jr.fold_in(key, i))(index.astype(jnp.uint32))

    def one(example):
        chain_key, x = example
        return _first_bad_step(sampler, manifold, ts, chain_key, x)

    return sharding.vmap_padded(one, (keys, x_init))


def _locate_nonfinite(sampler, manifold, key, x_init, ts, finite_pieces) -> tuple:
    """(num_affected, step, example): replays the affected chains step by step.

    Only runs when some output is not finite, so the fast path carries no per-step check.
    Under jax.distributed each process replays its own examples and the counts and
    positions are exchanged.
    """
    bad_index = []
    for start, real, finite in finite_pieces:
        flags = np.asarray(finite)[:real]
        bad_index.extend((start + np.flatnonzero(~flags)).tolist())
    rows = np.zeros((0, 3), np.int64)
    if bad_index:
        index = np.asarray(bad_index, np.int64)
        x_rows = sharding.take_rows(x_init, index)
        steps = np.asarray(
            _first_bad_jit(sampler, manifold, key, x_rows, ts, jnp.asarray(index, jnp.uint32))
        )
        rows = np.stack([np.ones_like(index), steps.astype(np.int64), index], axis=1)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        sizes = np.asarray(multihost_utils.process_allgather(np.asarray([len(rows)])))
        padded = np.full((int(sizes.max()), 3), -1, np.int64)
        padded[: len(rows)] = rows
        gathered = np.asarray(multihost_utils.process_allgather(padded)).reshape(-1, 3)
        rows = gathered[gathered[:, 0] == 1]
    if len(rows) == 0:
        return 0, -1, -1
    located = rows[rows[:, 1] >= 0]
    if len(located) == 0:  # not reproducible: report the first affected example only
        return len(rows), -1, int(rows[:, 2].min())
    step = int(located[:, 1].min())
    return len(rows), step, int(located[located[:, 1] == step, 2].min())


class NonFiniteError(FloatingPointError):
    """A sampler produced NaN or inf from finite inputs.

    Attributes:
        sampler: the sampler's name (its class, and its `get_sampler` name if it has one).
        step: the earliest step k (0-based; the step from ts[k] to ts[k+1]) whose output
            holds NaN/inf, or K for the terminal posterior mean x̂0(x_K, t_K).
        num_steps: K.
        num_affected: how many examples hold NaN/inf.
        batch: the batch size.
        example: the lowest index of an example that went non-finite at `step`.
    """

    def __init__(
        self,
        message: str,
        *,
        sampler: str | None = None,
        step: int | None = None,
        num_steps: int | None = None,
        num_affected: int | None = None,
        batch: int | None = None,
        example: int | None = None,
    ):
        super().__init__(message)
        self.sampler = sampler
        self.step = step
        self.num_steps = num_steps
        self.num_affected = num_affected
        self.batch = batch
        self.example = example


def sampler_name(sampler: Any) -> str:
    """`ClassName` of a sampler, with its `get_sampler` name when it is a built-in one."""
    from readout_jax import samplers

    cls = type(sampler)
    names = [name for name, c in samplers.SAMPLERS.items() if c is cls]
    return f"{cls.__name__} ({names[0]!r})" if names else cls.__name__


def raise_if_nonfinite(summary: Any, sampler: Any, ts: Any, batch: int) -> None:
    """Raise `NonFiniteError` if a run's `(num_affected, step, example)` summary says so."""
    num_affected, step, example = (int(v) for v in summary)
    if num_affected == 0:
        return
    ts_np = np.asarray(ts)
    num_steps = ts_np.shape[0] - 1
    name = sampler_name(sampler)
    if step < num_steps:
        where = (
            f"at step {step} of K = {num_steps} (t = {ts_np[step]:.6g} -> {ts_np[step + 1]:.6g})"
        )
    else:
        where = f"in the terminal posterior mean x0_hat(x_K, t_K = {ts_np[-1]:.6g}) (step {step})"
    raise NonFiniteError(
        f"sampler {name} produced NaN/inf {where} in {num_affected} of {batch} examples "
        f"(first: example {example}); the inputs were finite. Check the sampler's "
        "hyperparameters, the grid's ends and the denoiser, or pass check_finite=False "
        "to get the raw result.",
        sampler=name,
        step=step,
        num_steps=num_steps,
        num_affected=num_affected,
        batch=batch,
        example=example,
    )


def _check_chunk_size(chunk_size: Any) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise ValueError(f"chunk_size must be None or an int >= 1, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be None or an int >= 1, got {chunk_size}")
    return int(chunk_size)


def _tree_bytes(tree: PyTree) -> int:
    return sum(
        int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
        for leaf in jax.tree_util.tree_leaves(tree)
    )


#: Default cap on the per-step records `sample` keeps (bytes): 8 GiB.
MAX_RECORD_BYTES = 8 * 2**30


def sample(
    sampler,
    manifold,
    key: Any,
    x_init: ArrayLike,
    ts: ArrayLike,
    *,
    record: Any = record_info,  # RecordFn | None, checked in the body
    chunk_size: Any = None,
    check_finite: bool = True,
    max_record_bytes: int | None = MAX_RECORD_BYTES,
) -> SampleResult:
    """Run `sampler` on `manifold` from `x_init` along the descending grid `ts`.

    One `jit` per (sampler type, K, piece shape, record function, device): new
    parameter values of the same shapes (a new manifold, a new η) reuse the compiled
    harness. The batch is `vmap`ped and the K steps are a `lax.scan`.

    **Chunks and shards.** The batch is run in pieces by one compiled program
    (`readout_jax.sharding.map_pieces`): `chunk_size` examples at a time, and, if
    `x_init` is split over a device mesh along its batch axis
    (`readout_jax.sharding.shard_batch`), each device runs the pieces of its own slice
    (sampler, world, key and grid copied to it); the result comes back sharded the same
    way. Example i always uses `fold_in(key, i)` with its global index i and every piece
    runs the same program, so the result equals the one-device, one-piece run bit for
    bit. (Each device compiles the program once for itself; with the persistent
    compilation cache, GPUs share one entry.)

    **Memory.** Peak bytes ≈ B·n·b·(1 + 2 + s) + [chunked: B·n·b·(1 + 2)] + P·w +
    R for B examples of n numbers of b bytes: the input, the outputs x and x0, s extra
    latents the sampler carries (0 for one-step samplers, 1 for DPM++ 2M); when chunked,
    the per-piece input slices and outputs that are concatenated at the end; P·w the
    step temporaries of one piece of P = min(chunk_size, B) chains (measured with
    `memory_analysis()`: a few hundred bytes per chain for a 16-mode mixture of width
    64, about what its responsibilities need); R = 2·B·K·r for r bytes recorded per
    chain and step (the scan stacks (K, B, ...) and the result is (B, K, ...); 0 with
    `record=None`, which keeps memory flat in K), capped by `max_record_bytes`. E.g.
    B = 10^6, n = 64, float32, K = 64, `record=None`, chunk_size = 8192: ≈ 1.5 GB.

    **Non-finite values.** Each piece also returns whether each example's x and x0 are
    finite (one reduction at the end, nothing per step). With `check_finite` the harness
    waits for that flag and, if an example went NaN/inf, replays just those chains
    step by step (same keys: the same trajectory) to find the first step whose new
    latent is non-finite, then raises `NonFiniteError` naming the sampler, the step and
    the number of affected examples. NaN and inf propagate through every built-in step,
    so a value that broke mid-trajectory reaches x or x0 unless a sampler masks it.
    Inputs with NaN/inf are rejected up front.

    Args:
        sampler: any object with `init(x, t)` and `step(key, state, model, t_next)`.
        manifold: a world with `denoise(z, t)`, `schedule` and `latent_shape`.
        key: a `jax.random.key` (a raw uint32 key is accepted); example i uses
            `fold_in(key, i)`, so its result does not change with the batch size, the
            chunk size or the sharding.
        x_init: (batch, *latent_shape) initial latents at time ts[0], a NumPy or JAX
            array, possibly sharded over a mesh along the batch axis.
        ts: (K + 1,) strictly decreasing times in [0, 1], e.g. from `time_grid`.
        record: `(state, info) -> pytree` kept per step (default: the whole `StepInfo`);
            `None` or `record_nothing` keeps nothing. Use a module-level function:
            each new function object compiles once more.
        chunk_size: run at most this many chains at once (per device when sharded);
            None runs the whole (local) batch at once. Results do not depend on it.
        check_finite: raise `NonFiniteError` if NaN/inf appears during the run (this
            waits for the result); False returns it as is.
        max_record_bytes: refuse (ValueError) to keep more than this many bytes of
            per-step records; None for no limit.

    Returns:
        `SampleResult(x, x0, info)`: x and x0 of shape (batch, *latent_shape), info with
        leading axes (batch, K).

    Raises:
        ValueError / TypeError: see `check_sample_inputs`; for a bad `chunk_size`, or
            records larger than `max_record_bytes`.
        NonFiniteError: (a `FloatingPointError`) if `check_finite` and the run produced
            NaN/inf.

    Examples:
        >>> import jax.random as jr
        >>> from readout_jax import manifolds, samplers, schedules, sample
        >>> world = manifolds.GaussianMixture.two_modes(4.0, dim=2, std=0.5)
        >>> ts = schedules.time_grid(world.schedule, 4)
        >>> x_init = jr.normal(jr.key(0), (8, 2))
        >>> out = sample(samplers.get_sampler("ddim"), world, jr.key(1), x_init, ts)
        >>> out.x0.shape, out.info.x0_hat.shape
        ((8, 2), (8, 4, 2))
    """
    check_sample_inputs(sampler, manifold, x_init, ts)
    key = _as_key(key)
    if record is not None and not callable(record):
        raise ValueError(
            "record must be None or a function (state, info) -> pytree, e.g. record_info "
            f"or record_nothing; got {type(record).__name__}"
        )
    record_fn = record_nothing if record is None else record
    chunk_size = _check_chunk_size(chunk_size)
    ts = jnp.asarray(ts)
    x_init = jnp.asarray(x_init)  # keeps a sharded array as it is
    batch = int(x_init.shape[0])
    if record_fn is not record_nothing and max_record_bytes is not None:
        rows = min(batch, chunk_size or batch)
        probe = jax.ShapeDtypeStruct((rows, *x_init.shape[1:]), x_init.dtype)
        (_, _, info), _ = _sample_jit.eval_shape(
            sampler, manifold, key, probe, ts, record_fn, np.uint32(0)
        )
        size = _tree_bytes(info) // rows * batch
        if size > max_record_bytes:
            raise ValueError(
                f"record would keep {size / 2**30:.3g} GiB of per-step records (batch "
                f"{batch} x K = {ts.shape[0] - 1} steps), more than max_record_bytes = "
                f"{max_record_bytes / 2**30:.3g} GiB; pass record=None or a smaller "
                "record function, or raise max_record_bytes"
            )

    def piece(replicated, start, num_real, x):
        del num_real
        sampler, manifold, key, ts = replicated
        return _sample_jit(sampler, manifold, key, x, ts, record_fn, start)

    (x, x0, info), finite = sharding.map_pieces(
        piece, (sampler, manifold, key, ts), x_init, chunk_size=chunk_size
    )
    if check_finite and not all(np.asarray(f)[:real].all() for _, real, f in finite):
        summary = _locate_nonfinite(sampler, manifold, key, x_init, ts, finite)
        raise_if_nonfinite(summary, sampler, ts, batch)
    return SampleResult(x, x0, info)


def prior_sample(
    key: Key,
    manifold,
    num: int,
    t: float = 1.0,
    dtype=None,
    *,
    mesh: Any = None,  # jax.sharding.Mesh | None
) -> Float[Array, " num *latent"]:
    """`num` draws from the Gaussian prior N(0, σ(t)²·I) at time t (exact at α(t) = 0).

    Args:
        key: a `jax.random.key`.
        manifold: the world (its `schedule` and `latent_shape`).
        num: the batch size.
        t: the time of the prior.
        dtype: the floating dtype (default: JAX's default float).
        mesh: if given, the draws come out split over the mesh's first axis (the batch
            axis), generated in place on each device; they equal the unsharded draws bit
            for bit (JAX's partitionable threefry). `num` must be divisible by the
            number of devices along that axis.

    Raises:
        ValueError: if `num` < 1, or not divisible over `mesh`.
    """
    from readout_jax import _checks

    num = _checks.positive_int(num, "num")
    dtype = jnp.dtype(dtype or jnp.result_type(float))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype (e.g. float32), got {dtype}")
    shape = (num, *manifold.latent_shape)
    scale = manifold.schedule.sigma(jnp.asarray(t, dtype))
    if mesh is None:
        return scale * jr.normal(_as_key(key), shape, dtype)
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"mesh must be None or a jax.sharding.Mesh, got {type(mesh).__name__}")
    axis = mesh.axis_names[0]
    size = mesh.shape[axis]
    if num % size:
        raise ValueError(
            f"num = {num} must be divisible by the {size} devices of mesh axis {axis!r}"
        )
    out = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
    return _prior_jit(_as_key(key), scale, shape, dtype, out)


@ft.partial(jax.jit, static_argnames=("shape", "dtype", "out"))
def _prior_jit(key, scale, shape, dtype, out):
    eps = jax.lax.with_sharding_constraint(jr.normal(key, shape, dtype), out)
    return scale * eps
