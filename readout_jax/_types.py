"""jaxtyping aliases shared by the package (one example; batch axes live in the harness)."""

from __future__ import annotations

from typing import Any

from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, PyTree, Shaped

Latent = Float[Array, "*latent"]
Time = Float[ArrayLike, ""]
Tokens = Int[Array, "*seq"]
Key = PRNGKeyArray
Params = PyTree[Any]

__all__ = [
    "Array",
    "ArrayLike",
    "Float",
    "Int",
    "Key",
    "Latent",
    "Params",
    "PyTree",
    "Shaped",
    "Time",
    "Tokens",
]
