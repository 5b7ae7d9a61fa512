"""jaxtyping aliases shared by the package (one example; batch axes live in the harness)."""

from __future__ import annotations

from typing import Any

import jaxtyping
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, PyTree, Shaped

Latent = Float[Array, "*latent"]
Time = Float[ArrayLike, ""]
Times = Float[ArrayLike, "..."]  # elementwise schedule functions accept any shape
Tokens = Int[Array, "*seq"]
Key = PRNGKeyArray
Keys = jaxtyping.Key[Array, " batch"]  # a batch of typed keys
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
