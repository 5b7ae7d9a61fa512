"""Device meshes for the batch axis: build a mesh, shard a batch, run a program per shard.

The harness (`readout_jax.sample`) and the batched diagnostics
(`diagnostics.step_jacobian_norms`, `diagnostics.whole_map_norm`,
`diagnostics.jacobian.batch_spectral_norm`) look at the sharding of their batch argument.
A batch placed with `shard_batch` (a `NamedSharding` whose spec names a mesh axis on the
leading dimension) is processed shard by shard: the library's single-device program runs
on every device's slice (`map_pieces`, one asynchronous dispatch per device, so the
devices work at the same time) with every other argument (sampler, world, grid, key)
copied to that device, and the results are assembled into global arrays sharded like the
input (`jax.make_array_from_single_device_arrays`). Example i keeps the key
`fold_in(key, i)` of its GLOBAL index i, so a sharded run equals the single-device run
sample for sample, bit for bit (checked on CPU with 4 forced host devices in
`tests/test_sharding.py`). Chunking (`chunk_size`) walks each slice in pieces of that
many examples with the same program, so memory stays bounded.

Why not `jit` sharding propagation or `shard_map`: both were tried and both change the
last bit of some results (on XLA:CPU, float64, DDIM-η on a Gaussian mixture: 3 of 12
examples moved by 1–2 ulp). The SPMD program is fused differently from the
single-device one, and a multiply–add that is contracted into an FMA in one program is
rounded twice in the other. Running the very same compiled program on each shard removes
that freedom; what remains is batch-size invariance of that program, which the harness
tests directly (every vmapped body runs on a multiple of `ROW_MULTIPLE` examples, see below).

Several hosts: call `jax.distributed.initialize(...)` first (see `readout_jax.sweep`);
`batch_mesh()` then spans every process's devices (`jax.devices()`), each process runs
the shards on its own devices (`addressable_shards`), and the outputs are global arrays.
A global batch is assembled from per-process pieces with
`jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from readout_jax._types import Array, PyTree

__all__ = [
    "BATCH_AXIS",
    "ROW_MULTIPLE",
    "batch_mesh",
    "shard_batch",
    "replicate",
    "batch_placement",
    "vmap_padded",
    "map_pieces",
    "take_rows",
]

#: The default name of the mesh axis that carries the batch.
BATCH_AXIS = "batch"

# A (mesh, axis) pair, or None for "not sharded": static arguments of the jitted programs.
Placement = tuple[Mesh, Any] | None


def batch_mesh(devices: Sequence[Any] | None = None, *, axis_name: str = BATCH_AXIS) -> Mesh:
    """A 1-D device mesh whose single axis `axis_name` carries the batch.

    Args:
        devices: the devices, in order (default `jax.devices()`: every device of every
            process, the global mesh under `jax.distributed`).
        axis_name: the mesh axis name used in `PartitionSpec(axis_name)`.

    Returns:
        `jax.sharding.Mesh(devices, (axis_name,))`.

    Raises:
        ValueError: if `devices` is empty or `axis_name` is not a non-empty string.

    Examples:
        >>> mesh = batch_mesh()
        >>> mesh.axis_names
        ('batch',)
    """
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(f"axis_name must be a non-empty string, got {axis_name!r}")
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("devices must hold at least one device, got an empty sequence")
    return Mesh(np.asarray(devs, dtype=object), (axis_name,))


def _axis_size(mesh: Mesh, axis: Any) -> int:
    names = axis if isinstance(axis, tuple) else (axis,)
    return int(np.prod([mesh.shape[name] for name in names]))


def _check_mesh(mesh: Any, axis_name: Any) -> None:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    for name in names:
        if name not in mesh.axis_names:
            raise ValueError(
                f"axis_name {name!r} is not an axis of the mesh (axes: {mesh.axis_names})"
            )


def shard_batch(x: PyTree, mesh: Any, *, axis_name: str | None = None) -> PyTree:
    """Place `x` (an array or pytree of arrays) with its leading axis split over `mesh`.

    Every leaf gets `NamedSharding(mesh, PartitionSpec(axis_name))`: the batch axis is cut
    into equal contiguous slices, one per device along `axis_name`; other axes are
    replicated.

    Args:
        x: arrays whose leading axes are the batch (all of the same length).
        mesh: e.g. `batch_mesh()`.
        axis_name: the mesh axis for the batch (default: the mesh's first axis).

    Returns:
        `x` with every leaf a sharded `jax.Array`.

    Raises:
        ValueError: if a leaf has no leading axis, the leading axes differ, or the batch
            is not divisible by the number of devices along `axis_name`.
        TypeError: if `mesh` is not a `Mesh`.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    axis = mesh.axis_names[0] if axis_name is None else axis_name
    _check_mesh(mesh, axis)
    size = _axis_size(mesh, axis)
    leaves = jax.tree_util.tree_leaves(x)
    if not leaves:
        raise ValueError("x must hold at least one array")
    lengths = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if None in lengths:
        raise ValueError("every leaf of x needs a leading batch axis (got a scalar)")
    if len(lengths) != 1:
        raise ValueError(f"the leaves of x have different batch sizes {sorted(lengths)}")
    (batch,) = lengths
    if batch % size:
        raise ValueError(
            f"the batch size {batch} must be divisible by the {size} devices of mesh axis "
            f"{axis!r}; pad the batch or use a mesh over fewer devices"
        )
    sharding = NamedSharding(mesh, PartitionSpec(axis))
    return jax.tree_util.tree_map(lambda leaf: jax.device_put(leaf, sharding), x)


def replicate(x: PyTree, mesh: Any) -> PyTree:
    """Place every leaf of `x` whole on every device of `mesh` (`PartitionSpec()`)."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda leaf: jax.device_put(leaf, sharding), x)


def batch_placement(x: Any) -> Placement:
    """(mesh, axis) if `x`'s leading axis is split over a mesh axis of size > 1, else None.

    Only a `NamedSharding` counts (what `shard_batch` makes, or what a `jit` with such
    `out_shardings` returns); a single-device array, a NumPy array or a mesh axis of one
    device gives None, and the unsharded program runs.
    """
    sharding = getattr(x, "sharding", None)
    if not isinstance(sharding, NamedSharding):
        return None
    spec = sharding.spec
    if len(spec) == 0 or spec[0] is None:
        return None
    axis = spec[0]
    if isinstance(axis, list):
        axis = tuple(axis)
    if _axis_size(sharding.mesh, axis) <= 1:
        return None
    return sharding.mesh, axis


def _pad_rows(a: jax.Array, pad: int) -> jax.Array:
    if pad == 0:
        return a
    return jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)], axis=0)


# XLA:CPU vectorises the loops over the batch axis; where the batch does not fill whole
# vectors, a remainder loop with different code (e.g. a multiply-add contracted into an
# FMA in one and not in the other) computes the last examples, and a result may move by
# an ulp with the batch size (measured on DDIM-η step norms, float64: batches 9, 10, 12
# differ from 32 in the last bit, 8, 16, 24 do not). Every vmapped body therefore runs on
# a multiple of this many examples (the batch is padded by repeating its last example;
# the copies are dropped), which removes that dependence in every case we measured.
ROW_MULTIPLE = 8


def vmap_padded(fn: Callable[[PyTree], PyTree], batched: PyTree) -> PyTree:
    """`jax.vmap(fn)(batched)` run on a multiple of `ROW_MULTIPLE` examples (inside jit).

    The batch is padded by repeating its last example and the padded outputs are
    dropped, so batches of every size run the same vectorised code and each example's
    result does not depend on the batch size (nor on chunking or sharding, which only
    change the batch size a program sees).
    """
    batch = jax.tree_util.tree_leaves(batched)[0].shape[0]
    pad = -batch % ROW_MULTIPLE
    if pad == 0:
        return jax.vmap(fn)(batched)
    padded = jax.tree_util.tree_map(lambda a: _pad_rows(a, pad), batched)
    return jax.tree_util.tree_map(lambda a: a[:batch], jax.vmap(fn)(padded))


def take_rows(x: Any, index: Any) -> jax.Array:
    """Rows `index` (global indices, an int array) of a batch, sharded or not.

    The rows come back on one device (the first local one for a sharded batch). For an
    array spread over several processes, every index must fall in a shard this process
    holds (e.g. indices it found in its own pieces).
    """
    x = jnp.asarray(x)
    index = np.asarray(index, np.int64)
    if index.ndim != 1:
        raise ValueError(f"index must be a 1-D array of row indices, got shape {index.shape}")
    bad = index[(index < 0) | (index >= x.shape[0])]
    if bad.size:
        raise IndexError(
            f"take_rows: index {int(bad[0])} is out of bounds for the batch of {x.shape[0]}"
        )
    device = jax.local_devices()[0]
    if x.is_fully_addressable:
        if batch_placement(x) is None:
            return x[jnp.asarray(index)]
        return jax.device_put(np.asarray(x)[index], device)
    out: list[Any] = [None] * index.size
    for shard in x.addressable_shards:
        lo = shard.index[0].start or 0
        hi = lo + shard.data.shape[0]
        for k in np.flatnonzero((index >= lo) & (index < hi)):
            if out[k] is None:
                out[k] = jax.device_put(shard.data[int(index[k]) - lo], device)
    if any(row is None for row in out):
        raise ValueError("take_rows: some indices are not held by this process")
    return jnp.stack(out)


def _shards(leaves: list[Any]) -> list[tuple[Any, int, list[Any]]]:
    """[(device, global start, [this device's slice of every leaf])] of a sharded batch."""
    per_leaf = [{shard.device: shard for shard in leaf.addressable_shards} for leaf in leaves]
    out = []
    for device, shard in per_leaf[0].items():
        start = shard.index[0].start or 0
        datas = []
        for shards in per_leaf:
            other = shards.get(device)
            if other is None or (other.index[0].start or 0) != start:
                raise ValueError(
                    "every array of the batch must be sharded the same way over the mesh "
                    "(use shard_batch on all of them)"
                )
            datas.append(other.data)
        out.append((device, start, datas))
    return out


def map_pieces(
    fn: Callable[[PyTree, Array, Array, PyTree], tuple[PyTree, PyTree]],
    replicated: PyTree,
    batched: PyTree,
    *,
    chunk_size: int | None = None,
) -> tuple[PyTree, list[tuple[int, int, PyTree]]]:
    """Run `fn` on every device shard of `batched`, `chunk_size` examples at a time.

    `fn(replicated, start, num_real, piece) -> (outputs, extra)` is typically a jitted
    program: it gets `replicated` copied to the piece's device, the global index `start`
    (uint32) of the piece's first example, the number `num_real` (int32) of real
    examples in the piece, and the piece (a slice of every leaf of `batched`, padded to
    `chunk_size` rows by repeating its last example so that every piece has the same
    shape and one compilation serves them all; rows from `num_real` on are copies).
    `outputs` must have a leading axis of the piece's length; `extra` is any small
    per-piece pytree (e.g. a status summary).

    Unsharded input (`batch_placement` is None) runs on its own device in chunks; input
    split over a mesh runs each device's slice on that device (all dispatched before any
    result is awaited, so the devices work concurrently). Under `jax.distributed`, each
    process runs the pieces of its addressable devices.

    Args:
        fn: the per-piece program.
        replicated: a pytree passed whole to every piece (moved to the piece's device).
        batched: arrays with a common leading batch axis, unsharded or sharded alike.
        chunk_size: the largest piece (None: one piece per device).

    Returns:
        `(outputs, extras)`: the outputs assembled over the batch (sharded like
        `batched` if it was sharded), and `[(start, num_real_rows, extra)]` per piece.
    """
    leaves, treedef = jax.tree_util.tree_flatten(batched)
    leaves = [jnp.asarray(leaf) for leaf in leaves]
    batch = leaves[0].shape[0]
    placement = batch_placement(leaves[0])
    shards = [(None, 0, leaves)] if placement is None else _shards(leaves)
    rep_on: dict[Any, PyTree] = {}
    results: list[tuple[Any, int, int, PyTree, PyTree]] = []
    for device, start, datas in shards:
        if device is None:
            rep = replicated
        else:
            if device not in rep_on:
                rep_on[device] = jax.device_put(replicated, device)
            rep = rep_on[device]
        rows = datas[0].shape[0]
        size = rows if chunk_size is None else min(chunk_size, rows)
        for offset in range(0, rows, size):
            real = min(size, rows - offset)
            if offset == 0 and real == rows:
                piece = datas
            else:
                piece = [_pad_rows(d[offset : offset + real], size - real) for d in datas]
            begin = np.asarray(start + offset, np.uint32)
            count = np.asarray(real, np.int32)
            if device is not None:
                begin, count = jax.device_put((begin, count), device)
            out, extra = fn(rep, begin, count, jax.tree_util.tree_unflatten(treedef, piece))
            results.append((device, start + offset, real, out, extra))
    extras = [(start, real, extra) for _, start, real, _, extra in results]

    def trim(out, real):
        return jax.tree_util.tree_map(lambda a: a if a.shape[0] == real else a[:real], out)

    def concat(outs):
        if len(outs) == 1:
            return outs[0]
        return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a, axis=0), *outs)

    if placement is None:
        return concat([trim(out, real) for _, _, real, out, _ in results]), extras
    per_device: dict[Any, list[PyTree]] = {}
    for device, _, real, out, _ in results:
        per_device.setdefault(device, []).append(trim(out, real))
    local = {device: concat(outs) for device, outs in per_device.items()}
    mesh, axis = placement
    sharding = NamedSharding(mesh, PartitionSpec(axis))
    first = next(iter(local.values()))
    out_leaves, out_tree = jax.tree_util.tree_flatten(first)
    per_leaf = [jax.tree_util.tree_leaves(tree) for tree in local.values()]
    assembled = [
        jax.make_array_from_single_device_arrays(
            (batch, *leaf.shape[1:]), sharding, [pieces[i] for pieces in per_leaf]
        )
        for i, leaf in enumerate(out_leaves)
    ]
    return jax.tree_util.tree_unflatten(out_tree, assembled), extras
