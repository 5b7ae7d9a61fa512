"""Shared test set-up: float64 by default, strict rank promotion, a `key` fixture."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
# The CLI enables the persistent compilation cache; tests must not write to ~/.cache.
os.environ.setdefault("READOUT_JAX_NO_COMPILATION_CACHE", "1")

import jax  # noqa: E402
import jax.random as jr  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    return jr.key(0)
