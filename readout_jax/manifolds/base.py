"""The Manifold protocol: a world is a denoiser, a readout and a schedule.

Time convention (SPEC §2): t = 1 is noise, t = 0 is data; z_t = α(t)·x0 + σ(t)·ε.
A world's one primitive is its denoiser x̂0(z, t) = E[x0 | z_t = z] on ONE example;
samplers use nothing else of it. Score, ε and velocity are derived in
`readout_jax.schedules`. Batch axes are added only by the harness (`jax.vmap`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from readout_jax._types import Array, Float, Latent, Shaped, Time
from readout_jax.schedules import AbstractSchedule

__all__ = ["Manifold", "CategoricalManifold", "has_logits"]


@runtime_checkable
class Manifold(Protocol):
    """What the harness, samplers and diagnostics need of a world.

    Attributes:
        schedule: the noise schedule (static, hashable).
        latent_shape: shape of ONE clean latent (static).
    """

    schedule: AbstractSchedule
    latent_shape: tuple[int, ...]

    def denoise(self, z: Latent, t: Time) -> Latent:
        """Posterior mean E[x0 | z_t = z] for one example, same shape as `z`."""
        ...

    def decode(self, x: Latent) -> Float[Array, "..."]:
        """The smooth part of the readout: logits (categorical) or pixels (smooth)."""
        ...

    def readout(self, x: Latent) -> Shaped[Array, "..."]:
        """The final output: argmax tokens (categorical) or the smooth output itself."""
        ...


@runtime_checkable
class CategoricalManifold(Manifold, Protocol):
    """A world whose readout is an argmax over logits, one categorical choice per position.

    `logits(x)` has shape `(*positions, V)`; the latent has shape `(*positions, d)`, so a
    per-position quantity broadcasts to the latent by adding one trailing axis.
    """

    def logits(self, x: Latent) -> Float[Array, "*positions vocab"]:
        """Readout logits of a clean latent."""
        ...


def has_logits(manifold: object) -> bool:
    """Whether `manifold` has a categorical readout (a `logits` method)."""
    return (
        callable(getattr(manifold, "logits", None))
        and getattr(manifold, "readout_kind", "categorical") == "categorical"
    )
