"""readout_jax: why deterministic few-step generation works on image latents and fails on text.

Public API: `sample` (the jitted harness), and the subpackages `schedules`, `manifolds`,
`samplers`, `readouts`, `diagnostics`, and for several devices `sharding` (batch meshes)
and `sweep` (grids of cells over devices).
"""

from readout_jax import diagnostics, manifolds, readouts, samplers, schedules, sharding, sweep
from readout_jax.harness import (
    NonFiniteError,
    SampleResult,
    prior_sample,
    record_info,
    record_nothing,
    record_x0_hat,
    sample,
)
from readout_jax.samplers import get_sampler
from readout_jax.schedules import get_schedule, time_grid

__version__ = "0.1.0"

__all__ = [
    "NonFiniteError",
    "SampleResult",
    "__version__",
    "diagnostics",
    "get_sampler",
    "get_schedule",
    "manifolds",
    "prior_sample",
    "readouts",
    "record_info",
    "record_nothing",
    "record_x0_hat",
    "sample",
    "samplers",
    "schedules",
    "sharding",
    "sweep",
    "time_grid",
]
