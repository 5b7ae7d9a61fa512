"""Latent worlds: exact Gaussian mixtures, hierarchical mixtures, token sequences."""

from readout_jax.manifolds.base import CategoricalManifold, Manifold, has_logits
from readout_jax.manifolds.gaussian import (
    READOUT_KINDS,
    GaussianMixture,
    HierarchicalMixture,
)

__all__ = [
    "CategoricalManifold",
    "GaussianMixture",
    "HierarchicalMixture",
    "Manifold",
    "READOUT_KINDS",
    "has_logits",
]
