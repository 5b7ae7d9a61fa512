"""Latent worlds: exact Gaussian mixtures, hierarchical mixtures, token sequences."""

from readout_jax.manifolds.base import CategoricalManifold, Manifold, has_logits
from readout_jax.manifolds.gaussian import (
    READOUT_KINDS,
    GaussianMixture,
    HierarchicalMixture,
)
from readout_jax.manifolds.sequence import TokenSequence

__all__ = [
    "CategoricalManifold",
    "GaussianMixture",
    "HierarchicalMixture",
    "Manifold",
    "READOUT_KINDS",
    "TokenSequence",
    "has_logits",
]
