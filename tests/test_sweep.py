"""The sweep runner on this process's devices (the 4-device run is in test_sharding.py)."""

import collections
import functools as ft

import jax
import jax.numpy as jnp
import pytest

from readout_jax import sweep


def test_every_cell_runs_exactly_once_and_results_are_keyed_by_cell():
    calls = collections.Counter()

    def fn(cell):
        calls[cell] += 1
        where = sweep.current_placement()
        return cell[0] * 100 + cell[1], where.index, where.device, where.mesh.size

    cells = [(n, m) for n in (1, 2, 4) for m in (2, 8)]
    result = sweep.run_sweep(fn, cells, devices=jax.devices()[:1])
    assert list(result) == cells
    assert calls == collections.Counter(cells)  # once each
    for i, cell in enumerate(cells):
        value, index, device, mesh_size = result[cell]
        assert value == cell[0] * 100 + cell[1] and index == i
        assert device == jax.devices()[0] and mesh_size == 1
    assert sweep.current_placement() is None  # restored after the sweep


def test_cells_run_on_their_device_and_batch_mode_gives_the_full_mesh():
    where = sweep.run_sweep(lambda c: str(next(iter(jnp.zeros(()).devices()))), ["a"])
    assert where["a"] == str(jax.devices()[0])
    sizes = sweep.run_sweep(lambda c: sweep.current_mesh().size, [1, 2], placement="batch")
    assert sizes == {1: jax.device_count(), 2: jax.device_count()}
    assert sweep.current_mesh().size == jax.device_count()


def test_progress_wrapper_sees_every_cell():
    seen = []

    def wrap(items, total):
        seen.append(total)
        for item in items:
            seen.append(item[0])
            yield item

    result = sweep.run_sweep(lambda c: -c, [3, 1, 2], progress=wrap)
    assert result == {3: -3, 1: -1, 2: -2} and seen == [3, 3, 1, 2]
    assert sweep.run_sweep(lambda c: c, [5], progress=True) == {5: 5}


def test_errors_name_the_cell_and_bad_grids_are_rejected():
    def fn(cell):
        if cell == "bad":
            raise ZeroDivisionError("boom")
        return cell

    with pytest.raises(ZeroDivisionError, match="boom") as info:
        sweep.run_sweep(fn, ["ok", "bad", "later"])
    assert any("'bad'" in note for note in info.value.__notes__)
    with pytest.raises(ValueError, match="unique"):
        sweep.run_sweep(fn, ["a", "a"])
    with pytest.raises(ValueError, match="hashable"):
        sweep.run_sweep(fn, [["a"]])
    with pytest.raises(ValueError, match="placement"):
        sweep.run_sweep(fn, ["a"], placement="hosts")
    with pytest.raises(ValueError, match="device"):
        sweep.run_sweep(fn, ["a"], devices=[])


def test_threaded_path_covers_every_cell_once_on_one_device_list():
    # The multi-device path (one worker thread per device) with the same device listed
    # twice: both workers share the queue; every cell still runs exactly once.
    calls = collections.Counter()
    devices = [jax.devices()[0]] * 2
    result = sweep.run_sweep(
        ft.partial(lambda c, calls: calls.update([c]) or c * 2, calls=calls),
        range(10),
        devices=devices,
    )
    assert result == {c: 2 * c for c in range(10)}
    assert calls == collections.Counter(range(10))
