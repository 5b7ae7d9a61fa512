"""Diagnostics (SPEC §5): Jacobian norms, stiffness, boundary geometry, flips, DABI, CCI.

Every instrument is pure and either handles ONE example (batch with `jax.vmap`) or takes
a batch on an explicit axis. Stable entry points: `spectral_norm`, `frobenius_norm`,
`step_jacobian_norms`, `dabi`, `cci`.
"""

from readout_jax.diagnostics.boundary import (
    BoundaryGeometry,
    boundary_distance,
    boundary_geometry,
    categorical_logits_fn,
)
from readout_jax.diagnostics.commitment import (
    ARDecodeFn,
    ARIntervention,
    CCIResult,
    ar_intervention,
    cci,
    cci_from_tokens,
    commitment_curve,
)
from readout_jax.diagnostics.dabi import (
    CATEGORICAL_MEASURES,
    MIN_DIRECTIONS,
    SMOOTH_MEASURES,
    DABIPoint,
    DABIResult,
    Quartiles,
    dabi,
    dabi_point,
    dabi_variants,
    quartiles,
)
from readout_jax.diagnostics.flips import RateEstimate, flip_rate, rate_estimate, tube_mass
from readout_jax.diagnostics.jacobian import (
    HutchinsonEstimate,
    TopSingular,
    batch_spectral_norm,
    directional_norm,
    frobenius_norm,
    frobenius_norm_estimate,
    jacobian_dense,
    spectral_norm,
    top_singular,
)
from readout_jax.diagnostics.stiffness import (
    StiffnessSummary,
    step_jacobian_norms,
    stiffness_summary,
    whole_map_norm,
)

__all__ = [
    "ARDecodeFn",
    "ARIntervention",
    "BoundaryGeometry",
    "CATEGORICAL_MEASURES",
    "CCIResult",
    "DABIPoint",
    "DABIResult",
    "HutchinsonEstimate",
    "MIN_DIRECTIONS",
    "Quartiles",
    "RateEstimate",
    "SMOOTH_MEASURES",
    "StiffnessSummary",
    "TopSingular",
    "ar_intervention",
    "batch_spectral_norm",
    "boundary_distance",
    "boundary_geometry",
    "categorical_logits_fn",
    "cci",
    "cci_from_tokens",
    "commitment_curve",
    "dabi",
    "dabi_point",
    "dabi_variants",
    "directional_norm",
    "flip_rate",
    "frobenius_norm",
    "frobenius_norm_estimate",
    "jacobian_dense",
    "quartiles",
    "rate_estimate",
    "spectral_norm",
    "step_jacobian_norms",
    "stiffness_summary",
    "top_singular",
    "tube_mass",
    "whole_map_norm",
]
