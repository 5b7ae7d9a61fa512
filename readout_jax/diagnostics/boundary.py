"""Decision-boundary geometry of a categorical readout: margin, normal, distance (SPEC §2).

For logits ℓ(x) of shape (*positions, V) the margin at a position is m = ℓ_(1) − ℓ_(2),
the normal n̂ = ∇m/|∇m| (a vector over the WHOLE latent, so a decoder that mixes
positions is handled), and the first-order distance d = m/|∇m|. The refined distance
walks from x along −n̂ (down the margin) to the point where that position's argmax
actually changes, by doubling then bisection.

The readout may be given as a categorical world (anything with a `logits` method, e.g.
a `GaussianMixture` with `readout_kind="categorical"`) or as a plain callable
`logits_fn(x) -> (*positions, V)`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from readout_jax import _checks, readouts
from readout_jax._pytree import pytree_dataclass, static_field
from readout_jax._types import Array, ArrayLike, Float, Int, Latent, PyTree
from readout_jax.manifolds.base import has_logits

__all__ = [
    "BoundaryGeometry",
    "boundary_geometry",
    "boundary_distance",
    "categorical_logits_fn",
]


class BoundaryGeometry(NamedTuple):
    """Boundary geometry of a categorical readout at one latent x.

    Attributes:
        token: (*positions,) the readout argmax ℓ(x).
        margin: (*positions,) m = ℓ_(1) − ℓ_(2) ≥ 0.
        grad_norm: (*positions,) |∇m| over the whole latent.
        normal: (*positions, *latent) n̂ = ∇m/|∇m| (zero where ∇m = 0); it points UP the
            margin, away from the boundary.
        distance: (*positions,) first-order distance m/|∇m| (inf where ∇m = 0 < m).
        refined_distance: (*positions,) the step t along −n̂ at which the position's
            argmax first differs from `token`, to the bisection tolerance; inf if no
            change is found within t ≤ distance·2^max_expand; equal to `distance` when
            refinement is off.
    """

    token: Int[Array, "*positions"]
    margin: Float[Array, "*positions"]
    grad_norm: Float[Array, "*positions"]
    normal: Float[Array, "..."]
    distance: Float[Array, "*positions"]
    refined_distance: Float[Array, "*positions"]


class _ById:
    """Hashable by identity, so any callable can be static structure under `jit`."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __hash__(self):
        return id(self.fn)

    def __eq__(self, other):
        return isinstance(other, _ById) and other.fn is self.fn


@pytree_dataclass
class _StaticFn:
    """A plain callable carried through `jit` as static structure (hashed by identity:
    a new function object compiles anew; pass the same object to reuse a compilation)."""

    ref: _ById = static_field()

    def __call__(self, x):
        return self.ref.fn(x)


@pytree_dataclass
class _MethodFn:
    """A bound method of a pytree (e.g. `world.logits`): the object is traced data and
    the method name static, so new parameter values do not recompile."""

    obj: PyTree
    name: str = static_field()

    def __call__(self, x):
        return getattr(self.obj, self.name)(x)


def _wrap_callable(fn: Callable[..., Any]) -> PyTree:
    owner = getattr(fn, "__self__", None)
    if inspect.ismethod(fn) and owner is not None and jax.tree_util.tree_leaves(owner):
        return _MethodFn(owner, fn.__func__.__name__)
    return _StaticFn(_ById(fn))


@pytree_dataclass
class _Readout:
    """A readout source (a world or a callable) behind one interface; a pytree for `jit`."""

    source: PyTree
    kind: str = static_field()

    def logits(self, x):
        src = self.source
        return src(x) if isinstance(src, (_StaticFn, _MethodFn)) else src.logits(x)

    def smooth(self, x):
        src = self.source
        return src(x) if isinstance(src, (_StaticFn, _MethodFn)) else src.decode(x)


def _as_readout(readout: Any, readout_kind: str | None = None, *, name: str = "readout"):
    """Wrap a world or callable; `readout_kind` is required for a callable."""
    if isinstance(readout, _Readout):
        return readout
    if hasattr(readout, "logits") or hasattr(readout, "decode"):
        kind = "categorical" if has_logits(readout) else "smooth"
        if kind == "smooth" and not callable(getattr(readout, "decode", None)):
            raise ValueError(f"{name} has neither a callable logits nor decode method")
        if readout_kind is not None and readout_kind != kind:
            raise ValueError(
                f"{name} is a {kind} world ({type(readout).__name__}) but readout_kind="
                f"{readout_kind!r} was asked for"
            )
        return _Readout(readout, kind)
    if callable(readout):
        kind = "categorical" if readout_kind is None else readout_kind
        if kind not in ("categorical", "smooth"):
            raise ValueError(
                f"readout_kind must be 'categorical' or 'smooth', got {readout_kind!r}"
            )
        return _Readout(_wrap_callable(readout), kind)
    raise ValueError(
        f"{name} must be a world with a logits/decode method or a callable, got "
        f"{type(readout).__name__}"
    )


def _as_categorical(readout: Any, *, name: str = "readout") -> _Readout:
    r = _as_readout(readout, name=name)
    if r.kind != "categorical":
        raise ValueError(
            f"{name} must have a categorical readout (a logits method, readout_kind="
            f"'categorical'), got a smooth one ({type(readout).__name__}); boundary "
            "geometry needs logits"
        )
    return r


def categorical_logits_fn(readout: Any) -> Callable[[Latent], Float[Array, "*positions V"]]:
    """The logits callable of a categorical world, or `readout` itself if it is a callable.

    Raises:
        ValueError: if `readout` is a world with a smooth readout, or neither a world
            nor a callable.
    """
    return _as_categorical(readout).logits


def _latent_shape(readout: Any) -> tuple[int, ...] | None:
    """The latent shape of a world (None for a plain callable)."""
    source = readout.source if isinstance(readout, _Readout) else readout
    shape = getattr(source, "latent_shape", None)
    return tuple(shape) if shape is not None else None


def _check_latent(x: Any, name: str = "x", readout: Any = None, *, batch: bool = False) -> Array:
    """A floating, finite latent of the readout's latent shape (when it is a world)."""
    x = _checks.latent(x, name, _latent_shape(readout), batch=batch)
    if x.ndim < (2 if batch else 1):
        raise ValueError(f"{name} must be a latent with at least one axis, got a scalar")
    return x


def _flat_logits(r: _Readout, x: Array) -> Array:
    logits = r.logits(x)
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(
            f"the readout's logits must have shape (*positions, V) with V >= 2, got {logits.shape}"
        )
    return logits


def _geometry(
    r: _Readout, x: Array, refine: bool, max_expand: int, num_bisect: int
) -> BoundaryGeometry:
    logits = _flat_logits(r, x)
    pos_shape = logits.shape[:-1]
    num_pos = math.prod(pos_shape)
    token = jnp.argmax(logits, axis=-1)

    def margins(z):
        return readouts.margin(_flat_logits(r, z))

    margin = margins(x)
    grad = jax.jacrev(margins)(x)  # (*positions, *latent)
    grad = grad.reshape((num_pos, *x.shape))
    axes = tuple(range(1, grad.ndim))
    grad_norm = jnp.sqrt(jnp.sum(grad * grad, axis=axes))
    ok = grad_norm > 0
    safe = jnp.where(ok, grad_norm, 1.0)
    normal = jnp.where(
        ok.reshape((num_pos,) + (1,) * x.ndim), grad / safe.reshape((num_pos,) + (1,) * x.ndim), 0.0
    )
    flat_margin = margin.reshape(num_pos)
    distance = jnp.where(ok, flat_margin / safe, jnp.where(flat_margin > 0, jnp.inf, 0.0))
    flat_token = token.reshape(num_pos)

    if refine:

        def refine_one(i, n_i, d_i):
            def changed(t):
                return (
                    jnp.argmax(_flat_logits(r, x - t * n_i).reshape(num_pos, -1)[i])
                    != (flat_token[i])
                )

            def expand(_, carry):
                lo, hi, found = carry
                hit = found | changed(hi)
                return (jnp.where(hit, lo, hi), jnp.where(hit, hi, 2.0 * hi), hit)

            start = jnp.where(jnp.isfinite(d_i) & (d_i > 0), d_i, 1.0)
            lo, hi, found = jax.lax.fori_loop(
                0, max_expand + 1, expand, (jnp.zeros_like(start), start, False)
            )

            def bisect(_, carry):
                lo, hi = carry
                mid = 0.5 * (lo + hi)
                hit = changed(mid)
                return jnp.where(hit, lo, mid), jnp.where(hit, mid, hi)

            lo, hi = jax.lax.fori_loop(0, num_bisect, bisect, (lo, hi))
            out = jnp.where(found, hi, jnp.inf)
            out = jnp.where(d_i == 0, 0.0, out)
            return jnp.where(jnp.isfinite(d_i), out, jnp.inf)

        refined = jax.vmap(refine_one)(jnp.arange(num_pos), normal, distance)
    else:
        refined = distance

    return BoundaryGeometry(
        token,
        margin,
        grad_norm.reshape(pos_shape),
        normal.reshape((*pos_shape, *x.shape)),
        distance.reshape(pos_shape),
        refined.reshape(pos_shape),
    )


def _check_refine_args(max_expand: Any, num_bisect: Any) -> tuple[int, int]:
    if isinstance(max_expand, bool) or not isinstance(max_expand, int) or max_expand < 0:
        raise ValueError(f"max_expand must be an int >= 0, got {max_expand!r}")
    if isinstance(num_bisect, bool) or not isinstance(num_bisect, int) or num_bisect < 0:
        raise ValueError(f"num_bisect must be an int >= 0, got {num_bisect!r}")
    return max_expand, num_bisect


def boundary_geometry(
    readout: Any,
    x: ArrayLike,
    *,
    refine: bool = True,
    max_expand: int = 16,
    num_bisect: int = 30,
) -> BoundaryGeometry:
    """Margin, boundary normal and distance to the decision boundary at ONE latent x.

    For each position (all positions of a sequence latent at once): m = ℓ_(1) − ℓ_(2),
    n̂ = ∇m/|∇m| (by `jax.jacrev` of the margins, over the whole latent), the first-order
    distance d = m/|∇m| (SPEC §2; exact when the two top logits are affine in x), and,
    with `refine`, the distance along −n̂ to the actual readout change: starting at t = d,
    t doubles until the argmax at that position differs (at most `max_expand` times),
    then `num_bisect` bisections shrink the bracket (width ≤ d·2^max_expand /
    2^num_bisect). If the readout changes and changes back inside the bracket, some
    change point is found, not necessarily the first. Batch with `jax.vmap`.

    Args:
        readout: a categorical world (`logits` method) or a callable
            `logits_fn(x) -> (*positions, V)`.
        x: one latent, e.g. (n,) or (L, d).
        refine: whether to refine the distance by the walk along −n̂ (static).
        max_expand: maximum number of doublings of the bracket (static, ≥ 0).
        num_bisect: number of bisection steps (static, ≥ 0).

    Returns:
        `BoundaryGeometry(token, margin, grad_norm, normal, distance, refined_distance)`.

    Raises:
        ValueError: for a smooth world, a `readout` that is neither a world nor a
            callable, logits without a vocabulary axis of size ≥ 2, a non-floating or
            non-finite `x` (or one not of a world's latent shape), or negative
            `max_expand` / `num_bisect`.

    Examples:
        >>> import jax.numpy as jnp
        >>> w = jnp.array([[1.0, 0.0], [-1.0, 0.0]])
        >>> geo = boundary_geometry(lambda x: w @ x, jnp.array([0.5, 3.0]))
        >>> float(geo.distance), float(geo.refined_distance) > 0.5
        (0.5, True)
    """
    r = _as_categorical(readout)
    x = _check_latent(x, "x", r)
    max_expand, num_bisect = _check_refine_args(max_expand, num_bisect)
    return _geometry(r, x, bool(refine), max_expand, num_bisect)


def boundary_distance(
    readout: Any,
    x: ArrayLike,
    *,
    refine: bool = True,
    max_expand: int = 16,
    num_bisect: int = 30,
) -> Float[Array, "*positions"]:
    """Distance to the decision boundary per position at ONE latent (refined by default).

    `boundary_geometry(...).refined_distance`; with `refine=False`, the first-order
    estimate m/|∇m|. See `boundary_geometry` for the arguments.
    """
    return boundary_geometry(
        readout, x, refine=refine, max_expand=max_expand, num_bisect=num_bisect
    ).refined_distance
