"""JAX's persistent compilation cache for the command line (and for users who want it).

Most of a quick experiment's time on a CPU is XLA compilation. JAX can store compiled
executables on disk (``jax_compilation_cache_dir``) and reuse them when the same program
is compiled again in a later process. The ``readout-jax`` command enables it by default in
a per-user cache folder; ``--no-compilation-cache`` or the environment variable
``READOUT_JAX_NO_COMPILATION_CACHE=1`` turn it off. The library itself never enables it
on import: it is a process-wide setting, so the caller decides.

Cached entries are keyed by JAX on the program, the jax/jaxlib versions, the backend and
the compile options, so a stale entry is never reused for a different program.
"""

from __future__ import annotations

import os
import pathlib

__all__ = ["default_cache_dir", "enable_compilation_cache", "compilation_cache_disabled"]

#: Set to 1/true/yes to keep the command line from enabling the persistent cache.
DISABLE_ENV = "READOUT_JAX_NO_COMPILATION_CACHE"
#: Overrides the cache folder.
DIR_ENV = "READOUT_JAX_COMPILATION_CACHE_DIR"


def default_cache_dir() -> pathlib.Path:
    """``$READOUT_JAX_COMPILATION_CACHE_DIR``, else ``$XDG_CACHE_HOME/readout_jax/xla``
    (``~/.cache/readout_jax/xla`` when ``XDG_CACHE_HOME`` is unset)."""
    explicit = os.environ.get(DIR_ENV)
    if explicit:
        return pathlib.Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base).expanduser() / "readout_jax" / "xla"


def compilation_cache_disabled() -> bool:
    """Whether ``READOUT_JAX_NO_COMPILATION_CACHE`` asks to keep the cache off."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def enable_compilation_cache(
    cache_dir: str | os.PathLike | None = None, *, min_compile_time_secs: float = 0.2
) -> pathlib.Path | None:
    """Turn on JAX's persistent compilation cache in `cache_dir` for this process.

    Args:
        cache_dir: the folder (created if needed); default :func:`default_cache_dir`.
        min_compile_time_secs: only programs that took at least this long to compile are
            written (JAX's ``jax_persistent_cache_min_compile_time_secs``); must be ≥ 0.

    Returns:
        The cache folder, or None if the cache stays off because
        ``READOUT_JAX_NO_COMPILATION_CACHE`` is set or the folder cannot be created (the
        run then simply compiles as usual).

    Raises:
        ValueError: if `min_compile_time_secs` is negative or not finite.
    """
    if not min_compile_time_secs >= 0 or min_compile_time_secs == float("inf"):
        raise ValueError(
            f"min_compile_time_secs must be a finite number >= 0, got {min_compile_time_secs}"
        )
    if compilation_cache_disabled():
        return None
    folder = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
