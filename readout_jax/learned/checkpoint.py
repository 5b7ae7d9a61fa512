"""Checkpoints of learned models: flax.serialization msgpack of the parameters + JSON metadata.

Why flax.serialization and not orbax. Orbax is the field's standard for large, sharded,
asynchronous checkpoints, but it is not a dependency of this project (and pulls in
tensorstore and an async runtime); our models have ≈10⁵–10⁶ parameters on one CPU.
`flax.serialization.msgpack_serialize` is part of flax, already a dependency, and is the
format flax itself uses for single-host state (`to_bytes`). The parameters are stored as
a flat mapping from the JAX key path of each leaf (`jax.tree_util.keystr`, e.g.
``"['encoder']['embed']['embedding'].value"``) to its numpy array, so loading checks
every leaf's name, shape and dtype against the model the config builds: a checkpoint of
another architecture can never be poured into the wrong model.

Layout: a checkpoint is a DIRECTORY holding

- ``params.msgpack``: the payload (bit-exact float32 / int arrays);
- ``meta.json``: format version, model kind, model-code version, the cache key, the
  full config, the vocabulary (text models), `readout_jax.io.versions()`, the payload's
  size and SHA-256, free-form metadata (training metrics), and a SHA-256 of the
  metadata itself.

Saving is atomic: both files are written (each via `readout_jax.io.atomic_write`,
flushed and fsync-ed) into a temporary directory beside the target, which is then
renamed onto the target (an existing checkpoint is first renamed aside and deleted
afterwards). A reader sees the old checkpoint, the new one, or (for an instant during a
replacement) none, never a half-written one.

Loading raises `CheckpointNotFoundError` if the directory is missing,
`CheckpointError` if anything is corrupt (unparsable or tampered metadata, missing or
truncated payload, SHA-256 mismatch, unparsable msgpack), and
`CheckpointMismatchError` if the checkpoint is intact but is not the model asked for
(another kind, model-code version, config, vocabulary, or leaf names / shapes /
dtypes). Every message names the file and the problem. Both are subclasses of
`CheckpointError`.

The cache key (`cache_key`) is a SHA-256 of the JSON of the model kind, its config,
`MODEL_CODE_VERSION` and whatever the caller adds (the data fingerprint, the key of an
upstream model): change any of them and the key, hence the directory, changes.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import uuid
from typing import Any

import jax
import numpy as np
from flax import serialization

from readout_jax import io

__all__ = [
    "FORMAT_VERSION",
    "MODEL_CODE_VERSION",
    "CACHE_ENV",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CheckpointMismatchError",
    "cache_key",
    "default_cache_dir",
    "save_checkpoint",
    "load_checkpoint",
    "read_metadata",
]

FORMAT_VERSION = 1
"""Version of the on-disk layout (files, metadata fields)."""

MODEL_CODE_VERSION = "learned-4"
"""Bump whenever a model's code changes what a given config computes (architecture,
initialisation, loss, data pipeline): old checkpoints then get new cache keys and are
never loaded into the changed code."""

CACHE_ENV = "READOUT_JAX_CACHE"
META_FILE = "meta.json"
PAYLOAD_FILE = "params.msgpack"


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message names the file and the problem."""


class CheckpointNotFoundError(CheckpointError):
    """There is no checkpoint at the given path."""


class CheckpointMismatchError(CheckpointError):
    """An intact checkpoint of another model (kind, code version, config, vocab, shapes)."""


def default_cache_dir() -> pathlib.Path:
    """``$READOUT_JAX_CACHE`` if set, else ``~/.cache/readout_jax/models``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return pathlib.Path(explicit).expanduser()
    return pathlib.Path.home() / ".cache" / "readout_jax" / "models"


def _canonical(obj: Any) -> str:
    return json.dumps(io.to_jsonable(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def cache_key(kind: str, config: Any, **extra: Any) -> str:
    """16 hex digits of SHA-256 over (kind, config, MODEL_CODE_VERSION, extra).

    Args:
        kind: the model kind, e.g. "text_autoencoder".
        config: a dataclass / JSON-able config.
        **extra: anything else the model depends on (data fingerprint, upstream keys).
    """
    blob = _canonical({"kind": kind, "config": config, "code": MODEL_CODE_VERSION, "extra": extra})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _flatten(tree: Any) -> tuple[list[str], list[Any], Any]:
    pairs, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = [jax.tree_util.keystr(path) for path, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("the tree has repeated leaf names; cannot checkpoint it")
    return names, [leaf for _, leaf in pairs], treedef


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _meta_checksum(meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return _sha256(_canonical(body).encode("utf-8"))


def save_checkpoint(
    directory: str | os.PathLike,
    tree: Any,
    *,
    kind: str,
    config: Any,
    vocab: Any = None,
    key: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> pathlib.Path:
    """Save the array leaves of `tree` and their metadata atomically to `directory`.

    Args:
        directory: the checkpoint directory (created; replaced if it exists).
        tree: a pytree of arrays, e.g. the `nnx.State` of a model.
        kind: the model kind, checked on load.
        config: the model's config (JSON-able: a dataclass), checked on load.
        vocab: optional vocabulary (a sequence of strings, or an object with `chars`),
            checked on load.
        key: the cache key, recorded for reference.
        metadata: free-form JSON-able data (metrics, training time).

    Returns:
        The checkpoint directory.

    Raises:
        ValueError: if `tree` has no leaves or a leaf is not an array.
        readout_jax.io.OutputDirError: if the parent directory is not writable.
    """
    target = pathlib.Path(directory)
    names, leaves, _ = _flatten(tree)
    if not leaves:
        raise ValueError("cannot checkpoint a tree without array leaves")
    arrays = {}
    for name, leaf in zip(names, leaves, strict=True):
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            raise ValueError(f"leaf {name} is not an array ({type(leaf).__name__})")
        arrays[name] = np.asarray(jax.device_get(leaf))
    payload = serialization.msgpack_serialize(arrays)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "model_code_version": MODEL_CODE_VERSION,
        "cache_key": key,
        "config": io.to_jsonable(config),
        "vocab": _vocab_list(vocab),
        "payload": {
            "file": PAYLOAD_FILE,
            "bytes": len(payload),
            "sha256": _sha256(payload),
            "num_leaves": len(arrays),
            "num_parameters": int(sum(a.size for a in arrays.values())),
        },
        "versions": io.versions(),
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "metadata": io.to_jsonable(metadata or {}),
    }
    meta["meta_sha256"] = _meta_checksum(meta)

    parent = io.ensure_dir(target.parent)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}.", dir=parent))
    old = None
    try:
        with io.atomic_write(tmp / PAYLOAD_FILE, "wb") as handle:
            handle.write(payload)
        io.write_json(tmp / META_FILE, meta)
        umask = os.umask(0)  # mkdtemp makes 0700 folders: give ordinary permissions
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        if target.exists():
            old = parent / f".old-{target.name}.{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
        os.rename(tmp, target)
        io._fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists():
            with contextlib.suppress(OSError):
                os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _vocab_list(vocab: Any) -> list[str] | None:
    if vocab is None:
        return None
    chars = getattr(vocab, "chars", vocab)
    return [str(c) for c in chars]


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """The verified metadata of a checkpoint (its own SHA-256 checked; payload not read).

    Raises:
        CheckpointNotFoundError: no checkpoint directory / metadata file.
        CheckpointError: unparsable or tampered metadata, unknown format version.
    """
    folder = pathlib.Path(directory)
    meta_path = folder / META_FILE
    if not folder.is_dir():
        raise CheckpointNotFoundError(f"no checkpoint at {str(folder)!r} (directory missing)")
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint {str(folder)!r} is corrupt: {META_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint file {str(meta_path)!r} is unparsable: {err}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint file {str(meta_path)!r} is not a JSON object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint file {str(meta_path)!r} has format version "
            f"{meta.get('format_version')!r}; this code reads version {FORMAT_VERSION}"
        )
    if meta.get("meta_sha256") != _meta_checksum(meta):
        raise CheckpointError(
            f"checkpoint file {str(meta_path)!r} is corrupt: its SHA-256 does not match "
            "its content (edited or damaged)"
        )
    return meta


def _diff(saved: Any, expected: Any, path: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(expected, dict):
        out = []
        for k in sorted(set(saved) | set(expected)):
            sub = f"{path}.{k}" if path else str(k)
            if k not in saved:
                out.append(f"{sub}: missing in the checkpoint, expected {expected[k]!r}")
            elif k not in expected:
                out.append(f"{sub}: saved {saved[k]!r}, not in the requested config")
            else:
                out.extend(_diff(saved[k], expected[k], sub))
        return out
    return (
        [] if saved == expected else [f"{path or 'value'}: saved {saved!r}, expected {expected!r}"]
    )


def load_checkpoint(
    directory: str | os.PathLike,
    like: Any,
    *,
    kind: str | None = None,
    config: Any = None,
    vocab: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """Load a checkpoint into the structure of `like`, verifying everything first.

    Args:
        directory: the checkpoint directory.
        like: a pytree with the expected structure (arrays or `jax.ShapeDtypeStruct`
            leaves, e.g. the state of `nnx.eval_shape(model_factory)`).
        kind, config, vocab: if given, must equal what was saved.

    Returns:
        (tree, metadata): `like`'s structure with the saved arrays (bit-exact) as
        `jax.Array` leaves, and the metadata dict.

    Raises:
        CheckpointNotFoundError: the directory is missing.
        CheckpointError: corrupt metadata or payload (the message names the file).
        CheckpointMismatchError: an intact checkpoint of another model.
    """
    folder = pathlib.Path(directory)
    meta = read_metadata(folder)
    meta_path = folder / META_FILE
    problems = []
    if kind is not None and meta.get("kind") != kind:
        problems.append(f"kind: saved {meta.get('kind')!r}, expected {kind!r}")
    if meta.get("model_code_version") != MODEL_CODE_VERSION:
        problems.append(
            f"model_code_version: saved {meta.get('model_code_version')!r}, this code is "
            f"{MODEL_CODE_VERSION!r}"
        )
    if config is not None:
        expected = json.loads(_canonical(config))
        problems.extend(f"config.{d}" for d in _diff(meta.get("config"), expected))
    if vocab is not None and meta.get("vocab") != _vocab_list(vocab):
        problems.append("vocab: the saved vocabulary differs from the current one")
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint {str(meta_path)!r} is not the requested model: " + "; ".join(problems)
        )

    info = meta.get("payload") or {}
    payload_path = folder / PAYLOAD_FILE
    try:
        payload = payload_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {str(folder)!r} is corrupt: {PAYLOAD_FILE} is missing"
        ) from None
    except OSError as err:
        raise CheckpointError(f"checkpoint file {str(payload_path)!r} unreadable: {err}") from None
    if len(payload) != info.get("bytes"):
        raise CheckpointError(
            f"checkpoint file {str(payload_path)!r} is truncated or padded: "
            f"{len(payload)} bytes, expected {info.get('bytes')}"
        )
    if _sha256(payload) != info.get("sha256"):
        raise CheckpointError(f"checkpoint file {str(payload_path)!r} is corrupt: SHA-256 mismatch")
    try:
        arrays = serialization.msgpack_restore(payload)
    except Exception as err:  # msgpack raises several unrelated types
        raise CheckpointError(
            f"checkpoint file {str(payload_path)!r} is unparsable: {type(err).__name__}: {err}"
        ) from None
    if not isinstance(arrays, dict):
        raise CheckpointError(f"checkpoint file {str(payload_path)!r} holds no leaf mapping")

    names, leaves, treedef = _flatten(like)
    missing = [n for n in names if n not in arrays]
    extra = [n for n in arrays if n not in set(names)]
    if missing or extra:
        raise CheckpointMismatchError(
            f"checkpoint file {str(payload_path)!r} has other parameters than the model: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}"
        )
    out = []
    for name, leaf in zip(names, leaves, strict=True):
        arr = np.asarray(arrays[name])
        want_shape, want_dtype = tuple(leaf.shape), np.dtype(leaf.dtype)
        if arr.shape != want_shape or arr.dtype != want_dtype:
            raise CheckpointMismatchError(
                f"checkpoint file {str(payload_path)!r}: leaf {name} is "
                f"{arr.dtype}{list(arr.shape)}, the model expects {want_dtype}{list(want_shape)}"
            )
        out.append(jax.numpy.asarray(arr))
    return jax.tree_util.tree_unflatten(treedef, out), meta
