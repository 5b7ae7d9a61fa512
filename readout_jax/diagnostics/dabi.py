"""DABI, the boundary-aligned amplification index of a readout, and its variants (SPEC §5).

At a clean latent x and perturbation size δ,

    DABI(x, δ) = Δ(x, δ·n) / E_u Δ(x, δ·u),   u uniform on the unit sphere,

the readout's own output change along the boundary-aligned direction n over its mean
change along norm-matched isotropic directions. [ours, SPEC §5.] Choices made here:

- Categorical readouts (logits (*positions, V)): per position i, n = −n̂_i with
  n̂_i = ∇m_i/|∇m_i| over the whole latent (see `boundary`); n̂ points up the margin, so
  the perturbation steps DOWN it, towards the boundary, and the primary δ_i = 2·d_i
  (d_i = m_i/|∇m_i|, or the refined distance) lands just across the nearest boundary.
  Δ at position i is the total-variation distance between softmax(ℓ_i(x)) and
  softmax(ℓ_i(x + h)) ("tv", primary), KL(p(x) ‖ p(x + h)) ("kl"), or the indicator
  that the argmax at i changes ("flip").
- Smooth readouts (`decode` output of any shape): n is the top right-singular vector of
  the decoder Jacobian (matrix-free Lanczos, sign arbitrary), Δ is the Euclidean
  distance of the outputs ("euclidean"), and δ must be given (there is no boundary).
- The isotropic directions u are drawn in bulk, `num_directions` ≥ 64 of them, uniform
  on the sphere of the WHOLE latent (where the diffusion noise lives), and the same
  directions serve every latent and position of a call (common random numbers: a
  comparison between latents, or across a sweep of β with the same key, is not blurred
  by direction noise; each latent's denominator is still unbiased). Its standard error
  is the sample standard deviation over sqrt(num_directions).
- "linearized": |J n| / sqrt(mean_u |J u|²), with J the Jacobian of the token
  probabilities of position i (categorical) or of the decoder output (smooth); its
  denominator's expectation is |J|_F/sqrt(latent size). It does not depend on δ. For a
  categorical readout the ratio is evaluated with J divided by the second-largest
  probability (a common factor), so it stays finite and accurate however sharp the
  softmax (at β = 1e6, J itself underflows to 0; numerator and denominator are still
  reported unscaled).
- Summaries are the median and quartiles over latents and positions (NaN entries,
  e.g. a latent exactly on a boundary, are ignored).
"""

from __future__ import annotations

import functools as ft
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from readout_jax import _checks, harness
from readout_jax._types import Array, ArrayLike, Float, Key
from readout_jax.diagnostics import boundary, jacobian

__all__ = [
    "CATEGORICAL_MEASURES",
    "SMOOTH_MEASURES",
    "MIN_DIRECTIONS",
    "DABIPoint",
    "DABIResult",
    "Quartiles",
    "dabi",
    "dabi_point",
    "dabi_variants",
    "quartiles",
]

CATEGORICAL_MEASURES = ("tv", "kl", "flip", "linearized")
SMOOTH_MEASURES = ("euclidean", "linearized")
MIN_DIRECTIONS = 64


class DABIPoint(NamedTuple):
    """DABI at ONE latent; shapes (*positions,), or (G, *positions) for a δ grid.

    Attributes:
        index: numerator / denominator.
        numerator: Δ(x, δ·n) (for "linearized": |J n|).
        denominator: mean over directions of Δ(x, δ·u) (for "linearized":
            sqrt(mean |J u|²)).
        denominator_std_error: Monte Carlo standard error of the denominator.
        delta: the δ used (NaN for "linearized").
    """

    index: Float[Array, "..."]
    numerator: Float[Array, "..."]
    denominator: Float[Array, "..."]
    denominator_std_error: Float[Array, "..."]
    delta: Float[Array, "..."]


class Quartiles(NamedTuple):
    """First quartile, median and third quartile."""

    q25: Float[Array, "..."]
    median: Float[Array, "..."]
    q75: Float[Array, "..."]


class DABIResult(NamedTuple):
    """DABI over a batch of latents.

    Attributes:
        index, numerator, denominator, denominator_std_error, delta: the `DABIPoint`
            fields with a leading latent axis: (num, *positions) or (num, G, *positions).
        summary: `Quartiles` over latents and positions, shape () or (G,).
    """

    index: Float[Array, "..."]
    numerator: Float[Array, "..."]
    denominator: Float[Array, "..."]
    denominator_std_error: Float[Array, "..."]
    delta: Float[Array, "..."]
    summary: Quartiles


# ---- output-change measures on log-probabilities (last axis V) ---------------------


def _tv(logp0: Array, logp1: Array) -> Array:
    """½ Σ_v |p1 − p0|, with the top class of p0 taken from the others (no cancellation)."""
    p0, p1 = jnp.exp(logp0), jnp.exp(logp1)
    is_top = jax.nn.one_hot(jnp.argmax(logp0, axis=-1), logp0.shape[-1], dtype=bool)
    rest = jnp.where(is_top, 0.0, p1 - p0)
    return 0.5 * (jnp.sum(jnp.abs(rest), axis=-1) + jnp.abs(jnp.sum(rest, axis=-1)))


def _kl(logp0: Array, logp1: Array) -> Array:
    """KL(p0 ‖ p1) = Σ_v p0 (log p0 − log p1) ≥ 0."""
    return jnp.clip(jnp.sum(jnp.exp(logp0) * (logp0 - logp1), axis=-1), 0.0, None)


def _flip(logp0: Array, logp1: Array) -> Array:
    return (jnp.argmax(logp0, axis=-1) != jnp.argmax(logp1, axis=-1)).astype(logp0.dtype)


_MEASURE_FNS = {"tv": _tv, "kl": _kl, "flip": _flip}


def _sphere(key: Key, num: int, shape: tuple[int, ...], dtype) -> Array:
    """`num` directions uniform on the unit sphere of R^shape, drawn in one call."""
    g = jr.normal(key, (num, math.prod(shape)), dtype)
    g = g / jnp.linalg.norm(g, axis=1, keepdims=True)
    return g.reshape((num, *shape))


def _mean_se(values: Array, axis: int = 0) -> tuple[Array, Array]:
    num = values.shape[axis]
    return jnp.mean(values, axis=axis), jnp.std(values, axis=axis, ddof=1) / math.sqrt(num)


def _point(r, x, dirs, key, salt, deltas, specs, refine, num_iters, tol, expand, bisect):
    """{name: DABIPoint} at one latent for every (δ setting, measures) in `specs`.

    `dirs` (U, *latent) are the isotropic directions; `key` and `salt` seed the Lanczos
    start vector (smooth readouts). `deltas[j]` (None for the primary δ, a scalar, or a
    1-D grid) goes with `specs[j] = (suffix, measures)`; results are named measure +
    suffix. The boundary geometry and the readout evaluations at one δ are shared.
    """
    if r.kind == "categorical":
        return _categorical_point(r, x, dirs, deltas, specs, refine, expand, bisect)
    return _smooth_point(r, x, dirs, key, salt, deltas, specs, num_iters, tol)


def _categorical_point(r, x, dirs, deltas, specs, refine, expand, bisect):
    geo = boundary._geometry(r, x, refine, expand, bisect)
    pos_shape = geo.margin.shape
    num_pos = math.prod(pos_shape)
    normals = geo.normal.reshape((num_pos, *x.shape))
    dist = (geo.refined_distance if refine else geo.distance).reshape(num_pos)
    pos = jnp.arange(num_pos)

    def logp_at(z):
        logits = r.logits(z)
        return jax.nn.log_softmax(logits.reshape(num_pos, logits.shape[-1]), axis=-1)

    logp0 = logp_at(x)

    def changes(logp1, i=None, axis=0):
        ref = logp0 if i is None else logp0[i]
        return jnp.stack([_MEASURE_FNS[m](ref, logp1) for m in finite], axis=axis)

    out = {}
    for delta, (suffix, measures) in zip(deltas, specs, strict=True):
        finite = tuple(m for m in measures if m != "linearized")
        if not finite:
            continue
        grid = delta is not None and delta.ndim == 1
        if delta is None:
            d_all = (2.0 * dist)[None, :]  # (1, P): per-position δ_i = 2·d_i
        else:
            d = jnp.atleast_1d(delta).astype(x.dtype)
            d_all = jnp.broadcast_to(d[:, None], (d.shape[0], num_pos))

        def numerator_one(d_i, i, n_i, changes=changes):
            return changes(logp_at(x - d_i * n_i)[i], i)

        num = jax.vmap(  # over the grid, then positions -> (G, P, measures)
            lambda d_row, f=numerator_one: jax.vmap(f)(d_row, pos, normals)
        )(d_all)
        if delta is None:
            # δ differs per position: position i needs its own evaluations x + δ_i·u.
            def den_position(args, changes=changes):
                d_i, i = args
                return jax.vmap(lambda u: changes(logp_at(x + d_i * u)[i], i))(dirs)

            vals = jax.lax.map(den_position, (d_all[0], pos))  # (P, U, measures)
            vals = jnp.moveaxis(vals, 1, 0)[:, None]  # (U, 1, P, measures)
        else:
            # δ is shared by the positions: one evaluation serves them all.
            def den_delta(d_g, changes=changes):
                return jax.vmap(lambda u: changes(logp_at(x + d_g * u), axis=-1))(dirs)

            vals = jax.lax.map(den_delta, d_all[:, 0])  # (G, U, P, measures)
            vals = jnp.moveaxis(vals, 1, 0)  # (U, G, P, measures)
        den, den_se = _mean_se(vals)  # (G, P, measures)
        shape = (d_all.shape[0], *pos_shape) if grid else pos_shape
        for j, m in enumerate(finite):
            out[m + suffix] = DABIPoint(
                (num[..., j] / den[..., j]).reshape(shape),
                num[..., j].reshape(shape),
                den[..., j].reshape(shape),
                den_se[..., j].reshape(shape),
                d_all.reshape(shape),
            )
    for suffix, measures in specs:
        if "linearized" in measures:

            def flat_logits(z):
                logits = r.logits(z)
                return logits.reshape(num_pos, logits.shape[-1])

            jvp, p_second = _scaled_prob_jvp(flat_logits, x)
            own = jax.vmap(lambda i, n, jvp=jvp: jnp.linalg.norm(jvp(n)[i]))(pos, normals)
            sq = jnp.sum(jax.vmap(jvp)(dirs) ** 2, axis=-1)  # (U, P)
            out["linearized" + suffix] = _linearized(own, sq, pos_shape, p_second)
    return out


def _scaled_prob_jvp(logits_fn, x):
    """v ↦ (J v)/p_(2) per position, J the Jacobian of softmax(logits_fn) at x.

    The index |J n|/sqrt(mean |J u|²) is a ratio at one position, so a common factor
    cancels; dividing by p_(2) (the second-largest probability) keeps it finite at
    any sharpness, where J v itself underflows to 0 (β = 1e6) and the textbook
    p ⊙ (ℓ'v − ⟨p, ℓ'v⟩) leaves only rounding noise at the top class. With
    r_j = p_j/p_(2) = exp(ℓ_j − ℓ_(2)) ≤ 1 off the top class:
    (J v)_j/p_(2) = r_j·(ℓ'_j v − ⟨p, ℓ'v⟩) for j ≠ top, and
    (J v)_top/p_(2) = p_top·Σ_{j≠top} r_j·(ℓ'_top v − ℓ'_j v) (no cancellation).

    Returns:
        (the scaled jvp (latent) -> (P, V), p_(2) of shape (P,)).
    """
    ell = logits_fn(x)
    is_top = jax.nn.one_hot(jnp.argmax(ell, axis=-1), ell.shape[-1], dtype=bool)
    second = jnp.max(jnp.where(is_top, -jnp.inf, ell), axis=-1, keepdims=True)
    ok = jnp.isfinite(second)
    ratio = jnp.where(is_top | ~ok, 0.0, jnp.exp(ell - jnp.where(ok, second, 0.0)))
    log_p = jax.nn.log_softmax(ell, axis=-1)
    p = jnp.exp(log_p)
    p_top = jnp.sum(jnp.where(is_top, p, 0.0), axis=-1, keepdims=True)
    log_norm = jax.nn.logsumexp(ell, axis=-1, keepdims=True)
    p_second = jnp.where(ok, jnp.exp(second - log_norm), 0.0)[..., 0]

    def apply(v):
        dl = jax.jvp(logits_fn, (x,), (v,))[1]  # ℓ'v, (P, V)
        mean = jnp.sum(p * dl, axis=-1, keepdims=True)
        dl_top = jnp.sum(jnp.where(is_top, dl, 0.0), axis=-1, keepdims=True)
        top = p_top * jnp.sum(ratio * (dl_top - dl), axis=-1, keepdims=True)
        return jnp.where(is_top, top, ratio * (dl - mean))

    return apply, p_second


def _linearized(own: Array, sq: Array, shape: tuple[int, ...], scale=None) -> DABIPoint:
    """Index own/sqrt(mean sq); numerator and denominator are reported times `scale`
    (the common factor that `own` and `sq` were divided by, if any)."""
    mean_sq, mean_sq_se = _mean_se(sq)
    den = jnp.sqrt(mean_sq)
    den_se = mean_sq_se / (2.0 * jnp.where(den > 0, den, 1.0))
    index = own / den
    if scale is not None:
        own, den, den_se = own * scale, den * scale, den_se * scale
    return DABIPoint(
        index.reshape(shape),
        own.reshape(shape),
        den.reshape(shape),
        den_se.reshape(shape),
        jnp.full(shape, jnp.nan, own.dtype),
    )


def _smooth_point(r, x, dirs, key, salt, deltas, specs, num_iters, tol):
    def f(z):
        return jnp.ravel(r.smooth(z))

    out = {}
    y0 = f(x)
    top = jacobian._top_singular(f, x, key, salt, num_iters, tol)
    for delta, (suffix, measures) in zip(deltas, specs, strict=True):
        if "euclidean" in measures:
            grid = delta.ndim == 1
            d_all = jnp.atleast_1d(delta).astype(x.dtype)
            num = jax.vmap(lambda d: jnp.linalg.norm(f(x + d * top.v) - y0))(d_all)
            vals = jax.lax.map(
                lambda d: jax.vmap(lambda u: jnp.linalg.norm(f(x + d * u) - y0))(dirs), d_all
            )  # (G, U)
            den, den_se = _mean_se(vals, axis=1)
            shape = d_all.shape if grid else ()
            out["euclidean" + suffix] = DABIPoint(
                (num / den).reshape(shape),
                num.reshape(shape),
                den.reshape(shape),
                den_se.reshape(shape),
                d_all.reshape(shape),
            )
        if "linearized" in measures:
            sq = jax.vmap(lambda u: jnp.sum(jax.jvp(f, (x,), (u,))[1] ** 2))(dirs)
            out["linearized" + suffix] = _linearized(top.sigma, sq, ())
    return out


# ---- validation ----------------------------------------------------------------------


def _check_delta(delta, dtype, kind, measures, name="delta"):
    if delta is None:
        if kind == "smooth" and any(m != "linearized" for m in measures):
            raise ValueError(
                f"{name} is required for a smooth readout: there is no decision boundary "
                "to set the primary δ = 2·distance"
            )
        return None
    delta = _checks.float_array(delta, name, dtype)
    if delta.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a 1-D grid, got shape {delta.shape}")
    if delta.ndim == 1 and delta.shape[0] < 1:
        raise ValueError(f"{name} grid is empty")
    if _checks.is_concrete(delta):
        v = np.asarray(delta)
        if not (np.all(np.isfinite(v)) and np.all(v > 0)):
            raise ValueError(f"{name} must be finite and > 0, got {v}")
    return delta


def _check_args(readout, readout_kind, x, measures, num_directions, num_iters, tol, batch):
    r = boundary._as_readout(readout, readout_kind)
    valid = CATEGORICAL_MEASURES if r.kind == "categorical" else SMOOTH_MEASURES
    for m in measures:
        if m not in valid:
            raise ValueError(
                f"measure {m!r} is not defined for a {r.kind} readout; valid measures are "
                f"{list(valid)}"
            )
    x = boundary._check_latent(x, "x", r, batch=batch)
    if isinstance(num_directions, bool) or not isinstance(num_directions, int):
        raise ValueError(
            f"num_directions must be an int >= {MIN_DIRECTIONS}, got {num_directions!r}"
        )
    if num_directions < MIN_DIRECTIONS:
        raise ValueError(
            f"num_directions must be >= {MIN_DIRECTIONS} (SPEC §5), got {num_directions}"
        )
    num_iters = _checks.positive_int(num_iters, "num_iters")
    _checks.nonnegative_scalar(tol, "tol")
    return r, x, num_iters


# ---- public --------------------------------------------------------------------------


def dabi_point(
    readout: Any,
    x: ArrayLike,
    *,
    key: Any,
    measure: str = "tv",
    delta: ArrayLike | None = None,
    readout_kind: str | None = None,
    num_directions: int = MIN_DIRECTIONS,
    refine: bool = False,
    num_iters: int = 32,
    tol: float = 1e-6,
    max_expand: int = 16,
    num_bisect: int = 30,
) -> DABIPoint:
    """DABI at ONE latent x (see the module docstring for the definition).

    Args:
        readout: a world (categorical if it has logits, else smooth via `decode`) or a
            callable: `logits_fn(x) -> (*positions, V)` or a smooth decoder.
        x: one clean latent.
        key: random key for the isotropic directions (and the Lanczos start vector).
        measure: "tv" (primary), "kl", "flip" or "linearized" for a categorical readout;
            "euclidean" (primary) or "linearized" for a smooth one.
        delta: None for the primary δ = 2·distance (categorical only); a number for a
            fixed δ; a 1-D array for a grid (adds a leading grid axis).
        readout_kind: "categorical" or "smooth" for a callable `readout` (default
            categorical); must agree with a world's own kind.
        num_directions: isotropic directions per latent (static, ≥ 64).
        refine: use the refined distance (walk along −n̂) instead of m/|∇m|.
        num_iters, tol: Lanczos settings for the smooth top singular vector.
        max_expand, num_bisect: settings of the distance refinement.

    Returns:
        `DABIPoint(index, numerator, denominator, denominator_std_error, delta)`.

    Raises:
        ValueError: for an unknown measure, a measure of the other readout kind, a
            missing `delta` for a smooth readout, a non-positive or 2-D `delta`,
            num_directions < 64, or invalid Lanczos / refinement settings.
    """
    r, x, num_iters = _check_args(
        readout, readout_kind, x, (measure,), num_directions, num_iters, tol, False
    )
    delta = _check_delta(delta, x.dtype, r.kind, (measure,))
    expand, bisect = boundary._check_refine_args(max_expand, num_bisect)
    key = harness._as_key(key)
    dirs = _sphere(key, num_directions, x.shape, x.dtype)
    return _point(
        r,
        x,
        dirs,
        key,
        0,
        (delta,),
        (("", (measure,)),),
        bool(refine),
        num_iters,
        tol,
        expand,
        bisect,
    )[measure]


def quartiles(values: ArrayLike, axis: int | tuple[int, ...] | None = None) -> Quartiles:
    """NaN-ignoring first quartile, median and third quartile over `axis`.

    Raises:
        ValueError: for non-real (bool, complex) values.
    """
    values = _checks.float_array(values, "values")
    q = jnp.nanquantile(values, jnp.array([0.25, 0.5, 0.75], values.dtype), axis=axis)
    return Quartiles(q[0], q[1], q[2])


@ft.partial(
    jax.jit,
    static_argnames=(
        "specs",
        "num_directions",
        "refine",
        "num_iters",
        "max_expand",
        "num_bisect",
        "chunk_size",
    ),
)
def _dabi_jit(
    r,
    key,
    x,
    deltas,
    tol,
    specs,
    num_directions,
    refine,
    num_iters,
    max_expand,
    num_bisect,
    chunk_size,
):
    # One bulk draw of directions serves every latent (common random numbers).
    dirs = _sphere(key, num_directions, x.shape[1:], x.dtype)
    indices = jnp.arange(x.shape[0], dtype=jnp.uint32)

    def one(args):
        i, xi = args
        return _point(
            r,
            xi,
            dirs,
            key,
            i,
            deltas,
            specs,
            refine,
            num_iters,
            tol,
            max_expand,
            num_bisect,
        )

    if chunk_size is None:
        points = jax.vmap(lambda i, xi: one((i, xi)))(indices, x)
    else:
        points = jax.lax.map(one, (indices, x), batch_size=chunk_size)
    grid_names = {
        m + suffix
        for delta, (suffix, measures) in zip(deltas, specs, strict=True)
        if delta is not None and delta.ndim == 1
        for m in measures
        if m != "linearized"
    }
    out = {}
    for name, p in points.items():
        idx = p.index
        if name in grid_names:  # (num, G, *positions): quartiles per grid value
            summary = quartiles(jnp.moveaxis(idx, 1, 0).reshape(idx.shape[1], -1), axis=1)
        else:
            summary = quartiles(idx.reshape(-1), axis=0)
        out[name] = DABIResult(*p, summary)
    return out


def _run(
    readout,
    x,
    key,
    settings,
    readout_kind,
    num_directions,
    refine,
    num_iters,
    tol,
    max_expand,
    num_bisect,
    chunk_size,
):
    """`settings`: tuple of (suffix, measures, delta, delta's argument name)."""
    all_measures = tuple(m for _, measures, _, _ in settings for m in measures)
    r, x, num_iters = _check_args(
        readout, readout_kind, x, all_measures, num_directions, num_iters, tol, True
    )
    deltas = tuple(
        _check_delta(delta, x.dtype, r.kind, measures, name)
        for _, measures, delta, name in settings
    )
    specs = tuple((suffix, tuple(measures)) for suffix, measures, _, _ in settings)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (num >= 1, *latent), got {x.shape}")
    _checks.finite(x, "x")
    expand, bisect = boundary._check_refine_args(max_expand, num_bisect)
    if chunk_size is not None:
        chunk_size = _checks.positive_int(chunk_size, "chunk_size")
    return _dabi_jit(
        r,
        harness._as_key(key),
        x,
        deltas,
        tol,
        specs,
        num_directions,
        bool(refine),
        num_iters,
        expand,
        bisect,
        chunk_size,
    )


def dabi(
    readout: Any,
    x: ArrayLike,
    *,
    key: Any,
    measure: str = "tv",
    delta: ArrayLike | None = None,
    readout_kind: str | None = None,
    num_directions: int = MIN_DIRECTIONS,
    refine: bool = False,
    num_iters: int = 32,
    tol: float = 1e-6,
    max_expand: int = 16,
    num_bisect: int = 30,
    chunk_size: int | None = None,
) -> DABIResult:
    """DABI over a batch of clean latents, with median and quartiles (SPEC §5).

    The directions are drawn once from `key` and shared by all latents (a smooth
    readout's Lanczos start vector is hashed from `key` and the latent's index);
    compiled once per (readout type, measure,
    shapes, static settings), so new world parameters (e.g. a sharpness sweep) do not
    recompile. The default is the primary setting: total variation at δ = 2·d(x) for a
    categorical readout.

    Args:
        readout: a world or a callable, as for `dabi_point`.
        x: (num, *latent) clean latents (samples on axis 0).
        key: random key.
        measure, delta, readout_kind, num_directions, refine, num_iters, tol, max_expand,
            num_bisect: as for `dabi_point`.
        chunk_size: None evaluates all latents in one `vmap`; an int evaluates that many
            at a time (bounded memory: a latent of P positions costs
            P·num_directions readout evaluations at the primary δ).

    Returns:
        `DABIResult(index, numerator, denominator, denominator_std_error, delta,
        summary)`, per-latent fields with a leading axis of size num.

    Raises:
        ValueError: as for `dabi_point`; if `x` has no sample axis or is not finite, or
            `chunk_size` < 1.

    Examples:
        >>> import jax.random as jr
        >>> from readout_jax import manifolds
        >>> world = manifolds.GaussianMixture.two_modes(2.0, dim=8, std=1.0, sharpness=4.0)
        >>> x0, _ = world.sample_data(jr.key(0), 32)
        >>> out = dabi(world, x0, key=jr.key(1))
        >>> out.index.shape, bool(out.summary.median > 1.0)
        ((32,), True)
    """
    settings = (("", (measure,), delta, "delta"),)
    return _run(
        readout,
        x,
        key,
        settings,
        readout_kind,
        num_directions,
        refine,
        num_iters,
        tol,
        max_expand,
        num_bisect,
        chunk_size,
    )[measure]


def dabi_variants(
    readout: Any,
    x: ArrayLike,
    *,
    key: Any,
    delta: ArrayLike | None = None,
    delta_grid: ArrayLike | None = None,
    readout_kind: str | None = None,
    num_directions: int = MIN_DIRECTIONS,
    refine: bool = False,
    num_iters: int = 32,
    tol: float = 1e-6,
    max_expand: int = 16,
    num_bisect: int = 30,
    chunk_size: int | None = None,
) -> dict[str, DABIResult]:
    """Every DABI variant of SPEC §5 on the same latents and directions, in one call.

    Categorical readouts give "tv" (primary), "kl", "flip" at δ = 2·d (or at `delta`)
    and "linearized"; smooth ones give "euclidean" at `delta` (required) and
    "linearized". With `delta_grid`, the δ-grid variants are added as "<measure>_grid"
    (grid axis G after the latent axis). All variants share the boundary geometry, the
    directions and the readout evaluations at each δ, and compile once together.

    Args:
        readout, x, key, readout_kind, num_directions, refine, num_iters, tol,
            max_expand, num_bisect, chunk_size: as for `dabi`.
        delta: None for the primary δ = 2·d (categorical), else a fixed δ (a scalar).
        delta_grid: optional 1-D grid of δ values.

    Returns:
        A dict from variant name to `DABIResult`.

    Raises:
        ValueError: as for `dabi`, or if `delta` is not a scalar or `delta_grid` not
            1-D.
    """
    probe = boundary._as_readout(readout, readout_kind)
    measures = CATEGORICAL_MEASURES if probe.kind == "categorical" else SMOOTH_MEASURES
    if delta is not None and jnp.ndim(delta) != 0:
        raise ValueError(f"delta must be a scalar here (use delta_grid for a grid), got {delta}")
    settings = [("", measures, delta, "delta")]
    if delta_grid is not None:
        if jnp.ndim(delta_grid) != 1:
            raise ValueError(f"delta_grid must be 1-D, got shape {jnp.shape(delta_grid)}")
        grid_measures = tuple(m for m in measures if m != "linearized")
        settings.append(("_grid", grid_measures, delta_grid, "delta_grid"))
    return dict(
        _run(
            readout,
            x,
            key,
            tuple(settings),
            readout_kind,
            num_directions,
            refine,
            num_iters,
            tol,
            max_expand,
            num_bisect,
            chunk_size,
        )
    )
