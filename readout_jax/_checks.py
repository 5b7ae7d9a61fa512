"""Input validation in plain Python (outside `jit`), with errors that name the argument.

Every check is skipped for abstract values (tracers), so the same constructors work
when JAX rebuilds objects inside transformations.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "is_concrete",
    "float_array",
    "finite",
    "positive_scalar",
    "nonnegative_scalar",
    "scalar_at_least",
    "scalar_in_range",
    "probability_vector",
    "positive_int",
    "schedule",
]


def is_concrete(x) -> bool:
    """True for values we can inspect now (numbers, numpy / committed JAX arrays)."""
    if isinstance(x, jax.core.Tracer):
        return False
    return isinstance(x, (numbers.Number, np.ndarray, np.generic, jax.Array))


def float_array(x, name: str, dtype=None):
    """`x` as a floating JAX array (default float dtype for ints); tracers pass through."""
    if isinstance(x, jax.core.Tracer):
        return x if dtype is None else x.astype(dtype)
    if not is_concrete(x) and not isinstance(x, (list, tuple)):
        raise TypeError(f"{name} must be an array or a number, got {type(x).__name__}")
    try:
        arr = jnp.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} could not be converted to an array: {err}") from None
    if dtype is not None:
        arr = arr.astype(dtype)
    elif not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    return arr


def _values(x):
    return np.asarray(x) if is_concrete(x) else None


def finite(x, name: str) -> None:
    v = _values(x)
    if v is not None and not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or inf")


def positive_scalar(x, name: str) -> None:
    v = _values(x)
    if v is None:
        return
    if v.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {v.shape}")
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {v}")


def nonnegative_scalar(x, name: str) -> None:
    scalar_at_least(x, name, 0.0)


def scalar_at_least(x, name: str, lower: float) -> None:
    v = _values(x)
    if v is None:
        return
    if v.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {v.shape}")
    if not (np.isfinite(v) and v >= lower):
        raise ValueError(f"{name} must be a finite number >= {lower}, got {v}")


def scalar_in_range(x, name: str, lower: float, upper: float) -> None:
    v = _values(x)
    if v is None:
        return
    if v.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {v.shape}")
    if not (np.isfinite(v) and lower <= v <= upper):
        raise ValueError(f"{name} must be in [{lower}, {upper}], got {v}")


def probability_vector(x, name: str, axis: int = -1) -> None:
    v = _values(x)
    if v is None:
        return
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise ValueError(f"{name} must be finite and non-negative")
    total = v.sum(axis=axis)
    tol = 1e-4 if v.dtype == np.float32 else 1e-8
    if not np.allclose(total, 1.0, atol=tol, rtol=0):
        raise ValueError(f"{name} must sum to 1 along axis {axis}, got sums {total}")


def positive_int(x, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (numbers.Integral,)):
        raise ValueError(f"{name} must be an int >= 1, got {x!r}")
    if x < 1:
        raise ValueError(f"{name} must be >= 1, got {x}")
    return int(x)


def schedule(x):
    from readout_jax import schedules

    if isinstance(x, str):
        return schedules.get_schedule(x)
    if not isinstance(x, schedules.AbstractSchedule):
        raise TypeError(f"schedule must be a schedule name or object, got {type(x).__name__}")
    return x
