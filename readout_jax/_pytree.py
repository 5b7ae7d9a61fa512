"""Frozen dataclasses registered as JAX pytrees (value-equal, so `jit` caches on them)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, dataclass_transform

import jax

__all__ = ["pytree_dataclass", "static_field"]

_T = TypeVar("_T")


def static_field(**kwargs: Any) -> Any:
    """A dataclass field that is part of the pytree *structure* (hashed by `jit`).

    Use it for structural choices (integers that set shapes or loop counts, names,
    schedules); leave numbers that you sweep as ordinary (data) fields so that a sweep
    does not recompile.
    """
    metadata = dict(kwargs.pop("metadata", {}) or {})
    metadata["static"] = True
    return dataclasses.field(metadata=metadata, **kwargs)


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, static_field))
def pytree_dataclass(cls: type[_T]) -> type[_T]:
    """Make `cls` a frozen dataclass and register it as a pytree.

    Fields created by :func:`static_field` become metadata (part of the treedef, must be
    hashable); every other field is a child (array or pytree) that `jit` traces.
    Unflattening bypasses `__init__`, so `__post_init__` may validate and convert user
    input (equinox does the same).
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    meta = tuple(f.name for f in fields if f.metadata.get("static", False))
    data = tuple(f.name for f in fields if not f.metadata.get("static", False))
    keys = tuple(jax.tree_util.GetAttrKey(name) for name in data)

    def flatten_with_keys(obj):
        children = [(k, getattr(obj, n)) for k, n in zip(keys, data, strict=True)]
        return children, tuple(getattr(obj, n) for n in meta)

    def flatten(obj):
        return [getattr(obj, n) for n in data], tuple(getattr(obj, n) for n in meta)

    def unflatten(aux, children):
        # Bypass __init__/__post_init__: validation and conversion run only when a user
        # builds the object, never when JAX rebuilds it from tracers or placeholders.
        obj = object.__new__(cls)
        for name, value in zip(data, children, strict=True):
            object.__setattr__(obj, name, value)
        for name, value in zip(meta, aux, strict=True):
            object.__setattr__(obj, name, value)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls
