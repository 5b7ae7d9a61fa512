"""Atomic artifact writes (JSON, text, npz, figures) and run metadata.

Every writer goes through :func:`atomic_write`: the bytes go to a temporary file in the
destination's own directory, are flushed and ``fsync``-ed, and the temporary file is then
moved over the destination with ``os.replace`` (atomic on POSIX and Windows). A reader
therefore sees either the old file or the complete new one, never a half-written file;
if writing fails, the temporary file is removed and the old file is left untouched.

JSON is written strictly (no ``NaN``/``Infinity`` tokens): :func:`to_jsonable` converts
numpy and JAX scalars and arrays to Python numbers and lists, dataclasses to dicts,
tuples to lists and paths to strings, and maps every non-finite float to ``null``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import importlib.metadata
import io as _stdio
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from typing import IO, Any

import numpy as np

__all__ = [
    "OutputDirError",
    "atomic_write",
    "ensure_dir",
    "to_jsonable",
    "write_json",
    "read_json",
    "write_text",
    "write_npz",
    "save_figure",
    "versions",
    "environment",
    "git_sha",
]

PathLike = str | os.PathLike

_TMP_PREFIX = ".tmp-"


class OutputDirError(OSError):
    """An output folder cannot be created or written to; the message names the folder."""


def ensure_dir(path: PathLike) -> pathlib.Path:
    """Create folder `path` (and its parents) if needed and check that it is writable.

    Args:
        path: the output folder.

    Returns:
        The folder as a `pathlib.Path`.

    Raises:
        OutputDirError: if the folder cannot be created, is not a folder, or a file
            cannot be created in it. The message names the folder and the reason.
    """
    folder = pathlib.Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputDirError(
            f"output folder {str(folder)!r} cannot be created: a file with that name exists"
        ) from None
    except OSError as err:
        raise OutputDirError(
            f"output folder {str(folder)!r} cannot be created: {err.strerror or err}"
        ) from None
    if not folder.is_dir():
        raise OutputDirError(f"output folder {str(folder)!r} is not a folder")
    # os.access is unreliable (root, ACLs, read-only mounts): probe with a real file.
    try:
        fd, probe = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=folder)
    except OSError as err:
        raise OutputDirError(
            f"output folder {str(folder)!r} is not writable: {err.strerror or err}"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return folder


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success move it over `path` atomically.

    The temporary file lives in the same directory (so ``os.replace`` never crosses a
    file system), is flushed and ``fsync``-ed before the move, and is deleted if the
    body raises, in which case an existing `path` keeps its old content.

    Args:
        path: destination file. Its folder must exist (see :func:`ensure_dir`).
        mode: ``"wb"`` (binary) or ``"w"`` (text).
        **open_kwargs: passed to ``open`` (e.g. ``encoding``, ``newline``).

    Yields:
        The open temporary file.

    Raises:
        OutputDirError: if the destination folder does not exist or is not writable.
        ValueError: for a mode other than ``"w"`` / ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = pathlib.Path(path)
    folder = path.parent
    if not folder.is_dir():
        reason = "is not a folder" if folder.exists() else "does not exist"
        raise OutputDirError(
            f"cannot write {str(path)!r}: output folder {str(folder)!r} {reason} "
            "(create it with readout_jax.io.ensure_dir)"
        )
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{path.name}.", dir=folder)
    except OSError as err:
        raise OutputDirError(
            f"cannot write {str(path)!r}: output folder {str(folder)!r} is not writable "
            f"({err.strerror or err})"
        ) from None
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give the artifact ordinary permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: pathlib.Path) -> None:
    """Persist the rename itself (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def to_jsonable(obj: Any) -> Any:
    """`obj` as plain JSON data: numbers, strings, bools, None, lists and str-keyed dicts.

    numpy / JAX scalars and arrays become Python numbers and (nested) lists; dataclasses
    become dicts (``dataclasses.asdict``); tuples and sets become lists; paths and enums
    become strings; every non-finite float (NaN, ±inf) becomes ``None``.

    Raises:
        TypeError: for an object with no JSON form (the message names its type).
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, int) and not isinstance(obj, bool):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return to_jsonable(float(obj))
    if isinstance(obj, (complex, np.complexfloating)):
        raise TypeError(f"complex value {obj!r} has no JSON form")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {_json_key(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (datetime.datetime, datetime.date)):
        return obj.isoformat()
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [to_jsonable(v) for v in items]
    if hasattr(obj, "__array__") or isinstance(obj, np.ndarray):
        arr = np.asarray(obj)
        if arr.dtype == object:
            return [to_jsonable(v) for v in arr.tolist()]
        if np.issubdtype(arr.dtype, np.complexfloating):
            raise TypeError(f"complex array of shape {arr.shape} has no JSON form")
        if np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float64)
            listed = np.where(np.isfinite(arr), arr, np.nan).tolist()
            return _nan_to_none(listed)
        return arr.tolist()
    raise TypeError(f"object of type {type(obj).__name__} has no JSON form: {obj!r}")


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    value = to_jsonable(key)
    return value if isinstance(value, str) else json.dumps(value)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: PathLike, obj: Any, *, indent: int | None = 2) -> pathlib.Path:
    """Write `obj` (after :func:`to_jsonable`) as strict UTF-8 JSON, atomically.

    Returns:
        The path written.
    """
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, ensure_ascii=False)
    return write_text(path, text + "\n")


def read_json(path: PathLike) -> Any:
    """Read a JSON file written by :func:`write_json` (``null`` stays ``None``)."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_text(path: PathLike, text: Any) -> pathlib.Path:
    """Write `text` as UTF-8, atomically. Returns the path written.

    Raises:
        TypeError: if `text` is not a str.
        OutputDirError: if the destination folder does not exist or is not writable.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    path = pathlib.Path(path)
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
    return path


def write_npz(path: PathLike, /, **arrays: Any) -> pathlib.Path:
    """Write named arrays to a compressed ``.npz`` file, atomically.

    Args:
        path: destination; numpy would append ``.npz`` to a bare name, this function
            writes exactly `path`.
        **arrays: name → array-like (numpy or JAX).

    Returns:
        The path written.
    """
    path = pathlib.Path(path)
    buffer = _stdio.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path


def save_figure(fig: Any, path: PathLike, *, dpi: int = 120, close: bool = True) -> pathlib.Path:
    """Render a matplotlib `Figure` with the Agg renderer and write it atomically.

    The format comes from the suffix (``.png`` unless another is given). The figure is
    rendered to memory first, so a rendering error leaves no file behind.

    Args:
        fig: a `matplotlib.figure.Figure` (e.g. from `readout_jax.plotting`); raster
            formats are rendered by Agg, so no display is needed.
        path: destination file.
        dpi: resolution in dots per inch.
        close: detach the figure from pyplot's registry if it is registered there.

    Returns:
        The path written.
    """
    path = pathlib.Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    # savefig renders raster formats with Agg whatever the figure's interactive canvas.
    buffer = _stdio.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight")
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())
    if close and "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)
    return path


_VERSIONED = ("jax", "jaxlib", "flax", "optax", "numpy", "matplotlib")


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_sha(path: PathLike | None = None) -> str | None:
    """The commit hash of the git checkout containing `path` (default: this package).

    Appends ``-dirty`` when tracked files differ from the commit. Returns ``None`` when
    git or the repository is unavailable; never raises.
    """
    where = pathlib.Path(path) if path is not None else pathlib.Path(__file__).parent
    # Read-only: --no-optional-locks keeps `git status` from refreshing (locking) the
    # index, which could make a concurrent commit fail.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            env=env,
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            env=env,
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha or None


def versions() -> dict[str, str | None]:
    """Versions that identify a run: python, jax, jaxlib, flax, optax, numpy, matplotlib,
    readout_jax, the platform string and the git commit (``None`` where unavailable).

    Reads installed package metadata only, so it imports nothing heavy.
    """
    from readout_jax import __version__

    out: dict[str, str | None] = {"python": platform.python_version()}
    out.update({name: _dist_version(name) for name in _VERSIONED})
    out["readout_jax"] = __version__
    out["platform"] = platform.platform()
    out["git_sha"] = git_sha()
    return out


def environment() -> dict[str, Any]:
    """Where and how a run executed: UTC start time, host, CPU count, command line, and
    the JAX backend, devices and whether float64 is enabled."""
    env: dict[str, Any] = {
        "utc_time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "argv": list(sys.argv),
    }
    try:
        import jax

        env["jax_backend"] = jax.default_backend()
        env["jax_devices"] = [str(d) for d in jax.devices()]
        env["jax_enable_x64"] = bool(jax.config.jax_enable_x64)
    except Exception as err:  # metadata must never break a run
        env["jax_error"] = repr(err)
    return env
