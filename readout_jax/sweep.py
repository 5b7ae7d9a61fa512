"""Sweep runner: a grid of cells spread over the available devices, each cell run once.

An experiment that measures a grid of cells (the (n, M) cells of `stiffness_laws`, the
(depth, world) pairs of `depth_hierarchy`) writes one function `fn(cell) -> result` and
calls `run_sweep(fn, cells)`. The runner decides where each cell runs:

- ``placement="cells"`` (default): cells are handed out to the devices, one cell per
  device at a time. Each device gets a worker thread that takes the next cell from the
  grid and runs `fn` under `jax.default_device(device)`, so every array the cell creates
  and every jitted program it calls lives on that device (JAX releases the GIL while a
  program runs, so the devices work at the same time). With one device this is a plain
  loop in the calling thread. Results do not depend on the placement: a program gives the
  same numbers on any device of the same kind.
- ``placement="batch"``: cells run one after another in the calling thread and each cell
  spreads its own batch over all devices: `current_mesh()` is then a mesh over every
  device, for `readout_jax.sharding.shard_batch` (the harness and the batched
  diagnostics accept sharded batches and return the same numbers as on one device).

Inside `fn`, `current_placement()` tells the cell where it runs (its index, its device,
and a mesh: the cell's own device in "cells" mode, every device in "batch" mode), so
`sharding.shard_batch(x, current_mesh())` is right in both modes.

**Several hosts.** Start the same program once per host (process) and, before any other
JAX call, connect the processes::

    import jax
    jax.distributed.initialize(
        coordinator_address="10.0.0.1:1234",  # host:port of process 0, reachable by all
        num_processes=4,                      # how many processes take part
        process_id=int(os.environ["RANK"]),   # this process, 0 .. num_processes - 1
    )
    # on CPU hosts also: jax.config.update("jax_cpu_collectives_implementation", "gloo")

(on Slurm, TPU pods and Cloud GPU clusters `jax.distributed.initialize()` finds these by
itself). Every process then sees its local devices (`jax.local_devices()`) and the
global list (`jax.devices()`). In "cells" mode, process p runs the cells whose index i
has i % num_processes == p on its local devices, and the results are exchanged at the
end (`jax.experimental.multihost_utils.process_allgather` of the pickled results), so
every process returns the full, identical dictionary. In "batch" mode every process runs
every cell and `current_mesh()` is the global mesh over all processes' devices (one
program, each process feeding its own devices); `fn` must then return host values that
are the same on every process (reduce sharded outputs inside JAX first). Run one process
per host, e.g. ``readout-jax run stiffness_laws --scale full`` on every host after the
initialisation above (a small launcher script that calls `jax.distributed.initialize`
and then `experiments.stiffness_laws.main()`).
"""

from __future__ import annotations

import dataclasses
import pickle
import queue
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from readout_jax import sharding

__all__ = [
    "PLACEMENTS",
    "Placement",
    "current_placement",
    "current_mesh",
    "iter_sweep",
    "run_sweep",
]

PLACEMENTS = ("cells", "batch")


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a cell runs.

    Attributes:
        index: the cell's position in the grid.
        device: the device running it ("cells" mode), or None ("batch" mode: all).
        mesh: the mesh the cell may shard its batch over: its own device in "cells"
            mode, every device (of every process) in "batch" mode.
    """

    index: int
    device: Any
    mesh: Mesh


_LOCAL = threading.local()


def current_placement() -> Placement | None:
    """The `Placement` of the cell being run by this thread (None outside a sweep)."""
    return getattr(_LOCAL, "placement", None)


def current_mesh() -> Mesh:
    """The mesh the current cell may shard its batch over (all devices outside a sweep)."""
    placement = current_placement()
    return sharding.batch_mesh() if placement is None else placement.mesh


class _Run:
    """Context: set the thread's placement (and default device) for one cell."""

    def __init__(self, placement: Placement):
        self.placement = placement
        self._device_ctx = None

    def __enter__(self):
        self._previous = current_placement()
        _LOCAL.placement = self.placement
        if self.placement.device is not None:
            self._device_ctx = jax.default_device(self.placement.device)
            self._device_ctx.__enter__()
        return self.placement

    def __exit__(self, *exc):
        if self._device_ctx is not None:
            self._device_ctx.__exit__(*exc)
        _LOCAL.placement = self._previous
        return False


def _check_cells(cells: Iterable[Any]) -> list[Hashable]:
    cells = list(cells)
    seen: set = set()
    for cell in cells:
        try:
            hash(cell)
        except TypeError:
            raise ValueError(f"cells must be hashable (dict keys), got {cell!r}") from None
        if cell in seen:
            raise ValueError(f"cells must be unique, {cell!r} appears twice")
        seen.add(cell)
    return cells


def _annotate(err: BaseException, cell: Hashable) -> BaseException:
    err.add_note(f"raised by sweep cell {cell!r}")
    return err


def _serial(fn, cells, indices, device, mesh) -> Iterator[tuple[int, Any]]:
    for i in indices:
        with _Run(Placement(i, device, mesh)):
            try:
                result = fn(cells[i])
            except BaseException as err:
                raise _annotate(err, cells[i]) from None
        yield i, result


def _threaded(fn, cells, indices, devices) -> Iterator[tuple[int, Any]]:
    """One worker thread per device; each takes the next cell index from a shared queue."""
    todo: queue.Queue = queue.Queue()
    for i in indices:
        todo.put(i)
    done: queue.Queue = queue.Queue()
    stop = threading.Event()

    def work(device):
        mesh = sharding.batch_mesh([device])
        while not stop.is_set():
            try:
                i = todo.get_nowait()
            except queue.Empty:
                break
            try:
                with _Run(Placement(i, device, mesh)):
                    result = fn(cells[i])
            except BaseException as err:  # handed to the caller's thread
                stop.set()
                done.put((i, None, err))
                break
            done.put((i, result, None))
        done.put(None)  # this worker is finished

    threads = [
        threading.Thread(target=work, args=(d,), name=f"sweep-{d}", daemon=True) for d in devices
    ]
    for thread in threads:
        thread.start()
    running = len(threads)
    error = None
    try:
        while running:
            item = done.get()
            if item is None:
                running -= 1
                continue
            i, result, err = item
            if err is not None:
                error = error or _annotate(err, cells[i])
                continue
            if error is None:
                yield i, result
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    if error is not None:
        raise error


def _allgather_objects(obj: Any) -> list[Any]:
    """Every process's `obj` (pickled, exchanged with `process_allgather`), in process order."""
    from jax.experimental import multihost_utils

    data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([data.size], np.int64)))
    sizes = sizes.reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    gathered = np.asarray(multihost_utils.process_allgather(padded)).reshape(sizes.size, -1)
    return [pickle.loads(gathered[p, : sizes[p]].tobytes()) for p in range(sizes.size)]


def _bar(items: Iterator, total: int, desc: str) -> Iterator:
    stream = sys.stderr
    interactive = bool(getattr(stream, "isatty", lambda: False)())
    start = time.perf_counter()
    count = 0
    for item in items:
        count += 1
        if interactive:
            elapsed = time.perf_counter() - start
            stream.write(f"\r{desc} {count}/{total} {elapsed:.0f}s\033[K")
            stream.flush()
        yield item
    if interactive:
        stream.write("\n")


def iter_sweep(
    fn: Callable[[Any], Any],
    cells: Iterable[Any],
    *,
    devices: Sequence[Any] | None = None,
    placement: str = "cells",
) -> Iterator[tuple[Hashable, Any]]:
    """Yield `(cell, fn(cell))` as cells finish (see `run_sweep`; order may vary).

    Under `jax.distributed` in "cells" mode this yields only the cells of this process.
    """
    cells = _check_cells(cells)
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    local = list(jax.local_devices() if devices is None else devices)
    if not local:
        raise ValueError("devices must hold at least one device")
    if placement == "batch":
        mesh = sharding.batch_mesh(jax.devices() if devices is None else local)
        for i, result in _serial(fn, cells, range(len(cells)), None, mesh):
            yield cells[i], result
        return
    nproc, rank = jax.process_count(), jax.process_index()
    mine = [i for i in range(len(cells)) if i % nproc == rank]
    if len(local) == 1:
        pieces = _serial(fn, cells, mine, local[0], sharding.batch_mesh(local))
    else:
        pieces = _threaded(fn, cells, mine, local)
    for i, result in pieces:
        yield cells[i], result


def run_sweep(
    fn: Callable[[Any], Any],
    cells: Iterable[Any],
    *,
    devices: Sequence[Any] | None = None,
    placement: str = "cells",
    progress: bool | Callable[..., Iterable] | None = None,
    desc: str = "cells",
) -> dict[Hashable, Any]:
    """Run `fn(cell)` for every cell of the grid, each exactly once, over the devices.

    Args:
        fn: the measurement of one cell; it must not depend on where it runs (take
            randomness from keys derived from the cell, e.g. `fold_in(key, index)`).
            `current_placement()` / `current_mesh()` tell it where it runs.
        cells: hashable, distinct cell labels, e.g. `[(n, M) for n in dims for M in
            modes]`.
        devices: the devices to use (default: this process's `jax.local_devices()`;
            in "batch" mode the default mesh spans `jax.devices()` of all processes).
        placement: "cells" (cells spread over devices, one device per cell) or "batch"
            (cells in turn, each sharding its batch over all devices).
        progress: None/False for silence, True for a one-line bar on stderr (TTY
            only), or a wrapper `progress(iterable, total=...)` that yields the items
            (e.g. `functools.partial(ctx.progress, desc=...)` in an experiment).
        desc: the label of the built-in bar.

    Returns:
        `{cell: fn(cell)}` in the order of `cells`.

    Raises:
        ValueError: for unhashable or repeated cells, an unknown placement or no device.
        Whatever `fn` raises, with a note naming the cell (the other devices finish
        their current cell and take no new one).

    Examples:
        >>> run_sweep(lambda cell: cell[0] * cell[1], [(1, 2), (3, 4)])
        {(1, 2): 2, (3, 4): 12}
    """
    cells = _check_cells(cells)
    stream = iter_sweep(fn, cells, devices=devices, placement=placement)
    nproc = jax.process_count() if placement == "cells" else 1
    total = len(range(jax.process_index(), len(cells), nproc))
    if progress is True:
        stream = _bar(stream, total, desc)
    elif callable(progress):
        stream = progress(stream, total=total)
    got: dict[Hashable, Any] = {}
    for cell, result in stream:
        if cell in got:
            raise RuntimeError(f"sweep cell {cell!r} ran twice")
        got[cell] = result
    if nproc > 1:
        merged: dict[Hashable, Any] = {}
        for part in _allgather_objects(got):
            for cell, result in part.items():
                if cell in merged:
                    raise RuntimeError(f"sweep cell {cell!r} ran on two processes")
                merged[cell] = result
        got = merged
    missing = [cell for cell in cells if cell not in got]
    if missing:
        raise RuntimeError(f"sweep cells never ran: {missing}")
    return {cell: got[cell] for cell in cells}
