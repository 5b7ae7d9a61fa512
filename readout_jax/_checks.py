"""Input validation in plain Python (outside `jit`), with errors that name the argument.

Value checks (finite, in range, token ids < V) run only on concrete values and are
skipped for abstract values (tracers), so the same constructors and methods work when
JAX rebuilds objects or traces functions. Shape and dtype checks use static information
only and run on tracers too.

Dtype policy: *latents* (x, z, x0, ...) must be floating arrays, so integer, bool and
complex latents raise. *Parameters* (means, std, weights, ...) may be given as integers,
which are converted to the default float dtype; bool and complex parameters raise.
Every error is a `ValueError` (a `TypeError` for an object that is not an array at all)
whose message names the argument and states the valid range.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "is_concrete",
    "float_array",
    "latent",
    "finite",
    "positive_scalar",
    "nonnegative_scalar",
    "scalar_at_least",
    "scalar_in_range",
    "static_real",
    "times",
    "scalar_time",
    "noise_scales",
    "token_ids",
    "probability_vector",
    "positive_int",
    "prng_key",
    "schedule",
]


def is_concrete(x) -> bool:
    """True for values we can inspect now (numbers, numpy / committed JAX arrays)."""
    if isinstance(x, jax.core.Tracer):
        return False
    return isinstance(x, (numbers.Number, np.ndarray, np.generic, jax.Array))


def _dtype(x) -> np.dtype | None:
    """The dtype `x` would have as an array (static: works on tracers), or None."""
    if isinstance(x, bool):
        return np.dtype(bool)
    if isinstance(x, numbers.Integral):
        return np.dtype(np.int64)
    if isinstance(x, numbers.Real):
        return np.dtype(np.float64)
    if isinstance(x, numbers.Complex):
        return np.dtype(np.complex128)
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return None
    try:
        return np.dtype(dtype)
    except TypeError:  # extended dtypes (PRNG keys)
        return None


def _check_dtype(x, name: str, *, allow_int: bool) -> None:
    dtype = _dtype(x)
    if dtype is None:
        return
    wanted = "a real floating array" if not allow_int else "real (integer or floating)"
    if dtype == np.bool_:
        raise ValueError(f"{name} must be {wanted}, got dtype bool")
    if np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"{name} must be {wanted}, got complex dtype {dtype}")
    if np.issubdtype(dtype, np.floating):
        return
    if allow_int and np.issubdtype(dtype, np.integer):
        return
    raise ValueError(f"{name} must be {wanted}, got dtype {dtype}")


def float_array(x, name: str, dtype=None, *, allow_int: bool = True):
    """`x` as a floating JAX array; tracers pass through (cast to `dtype` if given).

    Integers become the default float dtype when `allow_int` (parameters); bool,
    complex and non-numeric values raise `ValueError`, an object that is no array at all
    raises `TypeError`.
    """
    if isinstance(x, jax.core.Tracer):
        _check_dtype(x, name, allow_int=allow_int)
        return x if dtype is None else x.astype(dtype)
    if not is_concrete(x) and not isinstance(x, (list, tuple)):
        raise TypeError(f"{name} must be an array or a number, got {type(x).__name__}")
    try:
        arr = jnp.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} could not be converted to an array: {err}") from None
    _check_dtype(arr, name, allow_int=allow_int)
    if dtype is not None:
        arr = arr.astype(dtype)
    elif not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    return arr


def latent(
    x,
    name: str,
    shape: Sequence[int] | None = None,
    *,
    batch: bool = False,
    check_finite: bool = True,
):
    """A latent: a floating array of `shape` (or (num ≥ 1, *shape) with `batch`).

    Dtype and shape are checked on tracers too; finiteness only on concrete values.
    Lists are converted; an integer, bool or complex latent raises `ValueError`.

    Returns:
        `x` as a JAX array (tracers unchanged).
    """
    if not isinstance(x, jax.core.Tracer):
        x = float_array(x, name, allow_int=False)
    else:
        _check_dtype(x, name, allow_int=False)
    got = tuple(jnp.shape(x))
    if shape is not None:
        want = tuple(int(n) for n in shape)
        dims = ", ".join(map(str, want))
        if batch:
            if len(got) != len(want) + 1 or got[1:] != want:
                raise ValueError(
                    f"{name} must have shape (num, *latent_shape) = (num, {dims}), got {got}"
                )
        elif got != want:
            raise ValueError(f"{name} must have the latent shape {want}, got {got}")
    elif batch and len(got) < 2:
        raise ValueError(f"{name} must have shape (num, *latent), got {got}")
    if batch and got[0] < 1:
        raise ValueError(f"{name} has an empty batch (num = 0); need num >= 1")
    if check_finite:
        finite(x, name)
    return x


def _values(x, name: str = "value", *, allow_int: bool = True):
    """The numpy value of a concrete `x` (lists too), dtype-checked; None for tracers."""
    if isinstance(x, jax.core.Tracer):
        _check_dtype(x, name, allow_int=allow_int)
        return None
    try:
        v = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} could not be converted to an array: {err}") from None
    if v.dtype == object or v.dtype.kind in "USV":
        raise ValueError(f"{name} must be a real number, got {x!r}")
    _check_dtype(v, name, allow_int=allow_int)
    return v


def finite(x, name: str) -> None:
    """Raise if a concrete `x` contains NaN or ±inf."""
    if isinstance(x, jax.core.Tracer):
        return
    v = np.asarray(x) if is_concrete(x) or isinstance(x, (list, tuple)) else None
    if v is not None and v.dtype.kind in "fc" and not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or inf; every entry must be finite")


def _scalar(x, name: str):
    v = _values(x, name)
    if v is None:
        return None
    if v.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {v.shape}")
    return v


def positive_scalar(x, name: str) -> None:
    """A finite real number > 0 (skipped for tracers)."""
    v = _scalar(x, name)
    if v is not None and not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {v}")


def nonnegative_scalar(x, name: str) -> None:
    """A finite real number ≥ 0 (skipped for tracers)."""
    scalar_at_least(x, name, 0.0)


def scalar_at_least(x, name: str, lower: float, *, allow_inf: bool = False) -> None:
    """A real number ≥ `lower`, finite unless `allow_inf` (+inf only); skipped for tracers."""
    v = _scalar(x, name)
    if v is None:
        return
    ok = (np.isfinite(v) or (allow_inf and v == np.inf)) and v >= lower
    if not ok:
        what = "a number" if allow_inf else "a finite number"
        raise ValueError(f"{name} must be {what} >= {lower}, got {v}")


def scalar_in_range(x, name: str, lower: float, upper: float) -> None:
    """A finite real number in [lower, upper] (skipped for tracers)."""
    v = _scalar(x, name)
    if v is not None and not (np.isfinite(v) and lower <= v <= upper):
        raise ValueError(f"{name} must be in [{lower}, {upper}], got {v}")


def static_real(
    x,
    name: str,
    *,
    lower: float = -math.inf,
    lower_open: bool = False,
    allow_inf: bool = False,
    lower_name: str | None = None,
) -> float:
    """A Python float for a static (hashed) field: real, finite (or +inf if allowed) and
    ≥ `lower` (> `lower` if `lower_open`); `lower_name` names the bound in the message
    when it is another argument. Tracers are not allowed here."""
    if isinstance(x, jax.core.Tracer):
        raise ValueError(f"{name} is a static setting and must be a Python number, not traced")
    v = _scalar(x, name)
    value = float(v)
    ok = math.isfinite(value) or (allow_inf and value == math.inf)
    ok = ok and (value > lower if lower_open else value >= lower)
    if not ok:
        shown = f"{lower_name} = {lower}" if lower_name else f"{lower}"
        bound = f"> {shown}" if lower_open else f">= {shown}"
        what = "a number" if allow_inf else "a finite number"
        raise ValueError(f"{name} must be {what} {bound}, got {value}")
    return value


def times(t, name: str = "t", lower: float = 0.0, upper: float = 1.0) -> None:
    """Times in [lower, upper] (default the schedule range [0, 1]): real, finite.

    Integers are accepted (t = 0, t = 1); bool and complex raise. Values are checked
    only when concrete.
    """
    v = _values(t, name)
    if v is None or v.size == 0:
        return
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be finite and in [{lower}, {upper}], got {v}")
    lo, hi = float(np.min(v)), float(np.max(v))
    if lo < lower or hi > upper:
        bad = lo if lo < lower else hi
        raise ValueError(f"{name} must be in [{lower}, {upper}], got {bad}")


def scalar_time(t, name: str = "t") -> None:
    """One time t ∈ [0, 1]: a scalar (static check), in range when concrete."""
    if jnp.ndim(t) != 0:
        raise ValueError(f"{name} must be a scalar time in [0, 1], got shape {jnp.shape(t)}")
    times(t, name)


def noise_scales(s, name: str = "s") -> None:
    """Noise scales s = σ/α ∈ [0, inf] (inf is the pure-noise end); NaN raises."""
    v = _values(s, name)
    if v is None:
        return
    if np.any(np.isnan(v)) or np.any(v < 0):
        raise ValueError(f"{name} must be a noise scale in [0, inf], got {v}")


def token_ids(tokens, name: str, vocab_size: int):
    """Integer token ids in [0, vocab_size); the dtype is checked on tracers too.

    Returns:
        `tokens` as a JAX array (tracers unchanged).
    """
    if not isinstance(tokens, jax.core.Tracer):
        try:
            tokens = jnp.asarray(tokens)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} could not be converted to an array: {err}") from None
    dtype = _dtype(tokens)
    if dtype is None or dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
        raise ValueError(
            f"{name} must be integer token ids in [0, {vocab_size}), got dtype {dtype}"
        )
    if is_concrete(tokens):
        v = np.asarray(tokens)
        if v.size and (v.min() < 0 or v.max() >= vocab_size):
            bad = int(v.min()) if v.min() < 0 else int(v.max())
            raise ValueError(
                f"{name} must be token ids in [0, {vocab_size}) (vocabulary size V = "
                f"{vocab_size}), got {bad}"
            )
    return tokens


def probability_vector(x, name: str, axis: int = -1) -> None:
    """Finite, non-negative entries summing to 1 along `axis` (skipped for tracers)."""
    v = _values(x, name)
    if v is None:
        return
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise ValueError(f"{name} must be finite and non-negative (probabilities in [0, 1])")
    total = v.sum(axis=axis)
    tol = 1e-4 if v.dtype == np.float32 else 1e-8
    if not np.allclose(total, 1.0, atol=tol, rtol=0):
        raise ValueError(f"{name} must sum to 1 along axis {axis}, got sums {total}")


def positive_int(x: Any, name: str) -> int:
    """A Python or numpy integer ≥ 1 (not a bool, not a float)."""
    if isinstance(x, bool) or not isinstance(x, (numbers.Integral,)):
        raise ValueError(f"{name} must be an int >= 1, got {x!r}")
    if x < 1:
        raise ValueError(f"{name} must be >= 1, got {x}")
    return int(x)


def prng_key(key: Any, name: str = "key"):
    """A single `jax.random` key (typed `jr.key(seed)`, or a raw uint32 key of shape (2,))."""
    import jax.random as jr

    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{name} must be a single PRNG key, got shape {key.shape}")
        return key
    arr = key if isinstance(key, jax.core.Tracer) else np.asarray(key)
    if getattr(arr, "dtype", None) == np.uint32 and arr.shape == (2,):
        return jr.wrap_key_data(jnp.asarray(arr))
    raise ValueError(f"{name} must be a jax.random key (jr.key(seed)), got {type(key).__name__}")


def schedule(x):
    """A schedule object, or the schedule called `x` (see `schedules.get_schedule`)."""
    from readout_jax import schedules

    if isinstance(x, str):
        return schedules.get_schedule(x)
    if not isinstance(x, schedules.AbstractSchedule):
        raise TypeError(
            f"schedule must be a schedule name {sorted(schedules.SCHEDULES)} or an "
            f"AbstractSchedule, got {type(x).__name__}"
        )
    return x
