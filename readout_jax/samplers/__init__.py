"""Samplers: deterministic ODE, stochastic SDE, and hybrid re-injection (SPEC §4).

A sampler is any pytree with `init(x, t)` and `step(key, state, model, t_next)`; the names
below exist only so that configs and the command line can refer to the built-in ones.
"""

from __future__ import annotations

from typing import Any

from readout_jax.samplers.base import Sampler, SamplerState, StepInfo
from readout_jax.samplers.hybrid import Churn, MarginGated, RenoiseRF, Restart
from readout_jax.samplers.ode import DDIM, DPMpp2M, EulerODE, HeunODE
from readout_jax.samplers.sde import DDIMEta, EulerMaruyama

__all__ = [
    "SAMPLERS",
    "Churn",
    "DDIM",
    "DDIMEta",
    "DPMpp2M",
    "EulerMaruyama",
    "EulerODE",
    "HeunODE",
    "MarginGated",
    "RenoiseRF",
    "Restart",
    "Sampler",
    "SamplerState",
    "StepInfo",
    "get_sampler",
]

SAMPLERS: dict[str, type] = {
    "euler": EulerODE,
    "ddim": DDIM,
    "heun": HeunODE,
    "dpmpp_2m": DPMpp2M,
    "ddim_eta": DDIMEta,
    "euler_maruyama": EulerMaruyama,
    "churn": Churn,
    "restart": Restart,
    "renoise_rf": RenoiseRF,
    "margin_gated": MarginGated,
}


def get_sampler(name: Any, **hyperparameters) -> Sampler:
    """The built-in sampler called `name`, built with `hyperparameters`.

    Args:
        name: one of `SAMPLERS` ("euler", "ddim", "heun", "dpmpp_2m", "ddim_eta",
            "euler_maruyama", "churn", "restart", "renoise_rf", "margin_gated").
        **hyperparameters: the sampler's fields, e.g. `eta=0.5` for "ddim_eta", or
            `inner="heun"` (a name or a sampler) for "churn" / "restart".

    Raises:
        ValueError: for an unknown name (the message lists the valid names) or an
            unknown / invalid hyperparameter.

    Examples:
        >>> get_sampler("ddim_eta", eta=0.5)
        DDIMEta(eta=0.5)
    """
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid samplers are {sorted(SAMPLERS)}")
    cls = SAMPLERS[name]
    inner = hyperparameters.get("inner")
    if isinstance(inner, str):
        if inner not in SAMPLERS:
            raise ValueError(
                f"unknown inner sampler {inner!r} for {name!r}; valid samplers are "
                f"{sorted(SAMPLERS)}"
            )
        hyperparameters["inner"] = get_sampler(inner)
    try:
        return cls(**hyperparameters)
    except TypeError as err:
        import dataclasses

        valid = [f.name for f in dataclasses.fields(cls) if f.init]
        raise ValueError(
            f"bad hyperparameters {sorted(hyperparameters)} for sampler "
            f"{name!r} ({err}); valid ones are {valid}"
        ) from None
