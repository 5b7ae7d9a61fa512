"""Matrix-free Jacobian norms (jvp / vjp only) and dense references for small maps.

Every function takes a map `fn` from a pytree to a pytree and ONE point `x`; the map is
flattened with `jax.flatten_util.ravel_pytree`, so J is the (m, n) Jacobian of
ravel(fn(unravel(v))) at v = ravel(x). Batch with `jax.vmap` (keys per example), and
wrap the call in `jax.jit`; the iteration counts are Python ints (static), the
tolerance may be a traced number.

The matrix-free path never materialises J: the spectral norm uses Golub–Kahan–Lanczos
bidiagonalisation with full reorthogonalisation (one `jvp` and one `vjp` per iteration),
which stays fast when the top singular values cluster (σ2/σ1 ≈ 0.97 has been seen on a
random MLP decoder, where power iteration on JᵀJ crawls); the Frobenius norm uses
Hutchinson's estimator with Rademacher probes (one `jvp` per probe).
"""

from __future__ import annotations

import functools as ft
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
from jax.flatten_util import ravel_pytree

from readout_jax import _checks
from readout_jax._types import Array, ArrayLike, Float, Int, Key, PyTree

__all__ = [
    "TopSingular",
    "HutchinsonEstimate",
    "top_singular",
    "spectral_norm",
    "batch_spectral_norm",
    "frobenius_norm",
    "frobenius_norm_estimate",
    "directional_norm",
    "jacobian_dense",
]


class TopSingular(NamedTuple):
    """The top singular triple of J = ∂fn/∂x at one point.

    Attributes:
        sigma: σ1 ≥ 0, the spectral norm |J|₂ (a Ritz value: it converges from below).
        u: the left singular vector, a unit pytree shaped like `fn(x)`.
        v: the right singular vector, a unit pytree shaped like `x` (its sign is
            arbitrary).
        residual: |J v − σ·u|, the a-posteriori error bound (Jᵀu = σ v holds exactly in
            exact arithmetic); some singular value lies within `residual` of `sigma`.
        num_iters: bidiagonalisation steps actually taken (≤ the `num_iters` asked for).
    """

    sigma: Float[Array, ""]
    u: PyTree
    v: PyTree
    residual: Float[Array, ""]
    num_iters: Int[Array, ""]


class HutchinsonEstimate(NamedTuple):
    """Hutchinson's estimate of |J|_F with its Monte Carlo standard error.

    Attributes:
        norm: sqrt(norm_sq), the estimate of |J|_F.
        norm_sq: mean over probes of |J v|², an unbiased estimate of |J|_F².
        std_error: standard error of `norm` (delta method: std_error_sq / (2·norm)).
        std_error_sq: standard error of `norm_sq`, std(|J v|²)/sqrt(num_probes)
            (NaN for num_probes = 1).
    """

    norm: Float[Array, ""]
    norm_sq: Float[Array, ""]
    std_error: Float[Array, ""]
    std_error_sq: Float[Array, ""]


# ---- flattening --------------------------------------------------------------------


def _check_point(x: PyTree, name: str = "x") -> None:
    leaves = jax.tree_util.tree_leaves(x)
    if not leaves:
        raise ValueError(f"{name} must be a non-empty array or pytree of arrays")
    for leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"{name} must hold floating arrays, got a leaf of dtype {dtype}")
    if sum(math.prod(jnp.shape(leaf)) for leaf in leaves) == 0:
        raise ValueError(f"{name} has no elements")
    for leaf in leaves:  # concrete values only: under jit the caller owns the check
        if _checks.is_concrete(leaf) and not bool(jnp.all(jnp.isfinite(leaf))):
            raise ValueError(f"{name} contains NaN or inf")


def _check_fn(fn: Any) -> None:
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {type(fn).__name__}")


def _flat(fn: Callable[[PyTree], PyTree], x: PyTree, has_aux: bool = False):
    """(flat_fn, flat_x, unravel_x, unravel_out-holder) for fn at x.

    With `has_aux`, fn returns (output, aux) and so does flat_fn (aux untouched).
    """
    flat_x, unravel_x = ravel_pytree(x)
    holder: list[Callable[[Array], PyTree]] = []

    def flat_fn(v):
        result = fn(unravel_x(v))
        out, aux = result if has_aux else (result, None)
        out, unravel_out = ravel_pytree(out)
        if not holder:
            holder.append(unravel_out)
        return (out, aux) if has_aux else out

    return flat_fn, flat_x, unravel_x, holder


def _linear_maps(fn: Callable[[PyTree], PyTree], x: PyTree, has_aux: bool = False):
    """Linearise once: (y, mv: v ↦ J v, rmv: u ↦ Jᵀ u, flat_x, unravel_x, unravel_out, aux)."""
    flat_fn, flat_x, unravel_x, holder = _flat(fn, x, has_aux)
    if has_aux:
        y, jvp_fn, aux = jax.linearize(flat_fn, flat_x, has_aux=True)
    else:
        (y, jvp_fn), aux = jax.linearize(flat_fn, flat_x), None
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise ValueError(f"fn must return floating arrays, got dtype {y.dtype}")
    transpose = jax.linear_transpose(jvp_fn, flat_x)
    return y, jvp_fn, (lambda u: transpose(u)[0]), flat_x, unravel_x, holder[0], aux


def _safe_normalize(w: Array, norm: Array) -> Array:
    ok = norm > 0
    return jnp.where(ok, w / jnp.where(ok, norm, 1.0), 0.0)


def _reorthogonalize(w: Array, basis: Array) -> Array:
    """Classical Gram–Schmidt twice against the rows of `basis` (zero rows are inert)."""
    w = w - basis.T @ (basis @ w)
    return w - basis.T @ (basis @ w)


def _bidiagonal_plus(alphas: Array, betas: Array, size: Array, k: int) -> Array:
    """B⁺_size = U_sizeᵀ J V_(size+1): rows i < size hold α_i at (i, i) and β_i at (i, i+1).

    Zero-padded to shape (k, k + 1).
    """
    rows = jnp.arange(k) < size
    diag = jnp.where(rows, alphas[:k], 0.0)
    sup = jnp.where(rows, betas[:k], 0.0)
    b = jnp.zeros((k, k + 1), alphas.dtype)
    idx = jnp.arange(k)
    return b.at[idx, idx].set(diag).at[idx, idx + 1].set(sup)


def _top_ritz(bplus: Array) -> tuple[Array, Array, Array]:
    """(σ1, p1, q1) of a small matrix B⁺ from `eigh(B⁺ B⁺ᵀ)`, q1 = B⁺ᵀ p1 / σ1.

    σ1 comes out with relative accuracy ~eps (only the small singular values suffer
    from squaring), and `eigh` compiles several times faster than `svd` on CPU.
    """
    evals, evecs = jnp.linalg.eigh(bplus @ bplus.T)
    sigma = jnp.sqrt(jnp.clip(evals[-1], 0.0, None))
    p = evecs[:, -1]
    return sigma, p, _safe_normalize(bplus.T @ p, sigma)


def _mix32(h: Array) -> Array:
    """The murmur3 32-bit finaliser (a bijective avalanche mix of uint32)."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def start_vector(key: Key, n: int, dtype, salt: Any = 0) -> Array:
    """A generic unit vector in R^n from `key` (and an integer `salt`) by integer hashing.

    Lanczos only needs a start vector with a non-negligible component along the top
    singular vector, not an isotropic one: the entries here are hashed uniforms on
    [−½, ½), a few integer operations per entry. This keeps the threefry PRNG (which
    dominates compile time when a norm sits inside `scan`/`vmap`) out of every
    Jacobian-norm program. Same key and salt, same vector.
    """
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        words = jr.key_data(key)
    else:
        words = jnp.asarray(key)
    words = words.reshape(-1).astype(jnp.uint32)
    seed = jnp.uint32(0x811C9DC5) ^ jnp.asarray(salt).astype(jnp.uint32) * jnp.uint32(0x9E3779B9)
    for j in range(words.shape[0]):
        seed = _mix32(seed ^ words[j] + jnp.uint32(j))
    h = _mix32(jnp.arange(n, dtype=jnp.uint32) * jnp.uint32(0x9E3779B9) ^ seed)
    h = _mix32(h + seed)
    v = (h >> 8).astype(dtype) * (1.0 / (1 << 24)) - 0.5
    return v / jnp.linalg.norm(v)


def _gkl(mv, rmv, n: int, m: int, dtype, v0: Array, num_iters: int, tol) -> tuple:
    """Golub–Kahan–Lanczos bidiagonalisation with full reorthogonalisation.

    After j steps, J V_j = U_j B_j and Jᵀ U_j = V_(j+1) B⁺_jᵀ with the (j, j+1) upper
    bidiagonal B⁺_j = U_jᵀ J V_(j+1) (a projection of J, so σ1(B⁺_j) ≤ σ1(J)). With
    B⁺_j = P Σ Qᵀ the Ritz triple (σ1, U_j p1, V_(j+1) q1) satisfies Jᵀu = σ v exactly
    and |J v − σ u| = α_(j+1)·|q1[j]|; iteration stops once that is ≤ tol·σ1, at an
    invariant subspace, or after k = min(num_iters, n, m) steps (exact at k = min(n, m)).
    """
    k = min(num_iters, n, m)
    eps = jnp.finfo(dtype).eps
    v0 = v0.astype(dtype)
    u0 = mv(v0).astype(dtype)
    a0 = jnp.linalg.norm(u0)
    u0 = _safe_normalize(u0, a0)
    V = jnp.zeros((k + 1, n), dtype).at[0].set(v0)
    U = jnp.zeros((k + 1, m), dtype).at[0].set(u0)
    alphas = jnp.zeros((k + 1,), dtype).at[0].set(a0)
    betas = jnp.zeros((k + 1,), dtype)
    init = (
        jnp.zeros((), jnp.int32),  # j: steps completed
        V,
        U,
        alphas,
        betas,
        jnp.zeros((), bool),  # done
        jnp.full((), jnp.inf, dtype),  # residual |J v − σ u| of the current Ritz triple
        (jnp.zeros((), dtype), jnp.zeros((k,), dtype), jnp.zeros((k + 1,), dtype)),  # σ, p, q
    )

    def cond(state):
        j, _, _, _, _, done, _, _ = state
        return (j < k) & ~done

    def body(state):
        j, V, U, alphas, betas, _, _, _ = state
        scale = jnp.max(alphas) + jnp.max(betas)
        w = rmv(U[j]).astype(dtype) - alphas[j] * V[j]
        w = _reorthogonalize(w, V)
        beta = jnp.linalg.norm(w)
        beta = jnp.where(beta <= 16.0 * eps * scale, 0.0, beta)  # invariant subspace
        v_next = _safe_normalize(w, beta)
        r = mv(v_next).astype(dtype) - beta * U[j]
        r = _reorthogonalize(r, U)
        alpha = jnp.linalg.norm(r)
        alpha = jnp.where(alpha <= 16.0 * eps * (scale + beta), 0.0, alpha)
        u_next = _safe_normalize(r, alpha)
        V = V.at[j + 1].set(v_next)
        U = U.at[j + 1].set(u_next)
        betas = betas.at[j].set(beta)
        alphas = alphas.at[j + 1].set(alpha)
        sigma, p, q = _top_ritz(_bidiagonal_plus(alphas, betas, j + 1, k))
        residual = alpha * jnp.abs(q[j + 1])
        done = (residual <= tol * sigma) | (j + 1 >= k)
        return j + 1, V, U, alphas, betas, done, residual, (sigma, p, q)

    # The loop runs at least once (k >= 1), so the carried Ritz triple is always set;
    # carrying it saves a second eigendecomposition in the compiled program.
    j, V, U, _, _, _, residual, (sigma, p, q) = jax.lax.while_loop(cond, body, init)
    p = jnp.where(jnp.arange(k) < j, p, 0.0)
    q = jnp.where(jnp.arange(k + 1) < j + 1, q, 0.0)
    return sigma, p @ U[:k], q @ V, residual, j


def _check_iters(num_iters: Any, name: str = "num_iters") -> int:
    return _checks.positive_int(num_iters, name)


def _check_tol(tol: Any) -> None:
    _checks.nonnegative_scalar(tol, "tol")


# ---- public --------------------------------------------------------------------------


def top_singular(
    fn: Callable[[PyTree], PyTree],
    x: PyTree,
    *,
    key: Any,  # a jax.random key, checked in the body
    num_iters: int = 32,
    tol: float | Float[ArrayLike, ""] = 1e-6,
) -> TopSingular:
    """Top singular value and vectors of J = ∂fn/∂x at `x`, matrix-free.

    Golub–Kahan–Lanczos bidiagonalisation of J with full reorthogonalisation, started
    from a random unit vector: each iteration costs one `jvp` and one `vjp` (through a
    single `jax.linearize`), and J is never formed. It stops after `num_iters` steps,
    at an invariant subspace, or once the residual |J v − σ u| ≤ tol·σ. With
    min(n, m) ≤ num_iters the bidiagonalisation is complete and σ is exact to rounding.
    Unlike power iteration, its convergence depends on the gap only through a square
    root (Chebyshev acceleration), so clustered top singular values are fine.

    Args:
        fn: a map from a pytree like `x` to a pytree of floating arrays, for ONE example.
        x: the point (a floating array or pytree of them).
        key: random key for the starting vector (hashed, see `start_vector`).
        num_iters: maximum number of bidiagonalisation steps k (static); memory is
            O(k·(n + m)).
        tol: relative residual at which to stop (0 runs all `num_iters` steps).

    Returns:
        `TopSingular(sigma, u, v, residual, num_iters)`; `u` is shaped like `fn(x)`, `v`
        like `x`.

    Raises:
        ValueError: if `fn` is not callable, `x` is empty or not floating, `num_iters`
            < 1, or `tol` < 0.

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> a = jnp.diag(jnp.array([3.0, 2.0, 1.0]))
        >>> out = top_singular(lambda x: a @ x, jnp.ones(3), key=jr.key(0))
        >>> round(float(out.sigma), 4)
        3.0

    References:
        Golub & Kahan, "Calculating the singular values and pseudo-inverse of a
        matrix", SIAM J. Numer. Anal. B 2 (1965); Golub & Van Loan, "Matrix
        Computations", 4th ed., §10.4.
    """
    _check_fn(fn)
    _check_point(x)
    num_iters = _check_iters(num_iters)
    _check_tol(tol)
    key = _checks.prng_key(key, "key")
    return _top_singular(fn, x, key, 0, num_iters, tol)


def _top_singular(fn, x, key, salt, num_iters: int, tol, has_aux: bool = False):
    """`top_singular` without the input checks, started from `start_vector(key, n, salt)`.

    With `has_aux`, fn returns (output, aux) and this returns (TopSingular, aux): the
    primal evaluation of the linearisation is reused (one call of fn in all).
    """
    y, mv, rmv, flat_x, unravel_x, unravel_out, aux = _linear_maps(fn, x, has_aux)
    dtype = jnp.result_type(flat_x.dtype, y.dtype)
    n = flat_x.shape[0]
    v0 = start_vector(key, n, dtype, salt)
    sigma, u, v, residual, iters = _gkl(mv, rmv, n, y.shape[0], dtype, v0, num_iters, tol)
    top = TopSingular(
        sigma,
        unravel_out(u.astype(y.dtype)),
        unravel_x(v.astype(flat_x.dtype)),
        residual,
        iters,
    )
    return (top, aux) if has_aux else top


def spectral_norm(
    fn: Callable[[PyTree], PyTree],
    x: PyTree,
    *,
    key: Any,  # a jax.random key, checked in the body
    num_iters: int = 32,
    tol: float | Float[ArrayLike, ""] = 1e-6,
) -> Float[Array, ""]:
    """|∂fn/∂x|₂ at `x` for ONE example, matrix-free: `top_singular(...).sigma`.

    See `top_singular` for the algorithm and arguments; batch with
    `jax.vmap(lambda x, k: spectral_norm(fn, x, key=k))`.

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> round(float(spectral_norm(jnp.sin, jnp.zeros(4), key=jr.key(0))), 4)
        1.0
    """
    return top_singular(fn, x, key=key, num_iters=num_iters, tol=tol).sigma


def batch_spectral_norm(
    fn: Callable[[PyTree], PyTree],
    xs: PyTree,
    *,
    key: Any,  # a jax.random key, checked in the body
    num_iters: int = 32,
    tol: float | Float[ArrayLike, ""] = 1e-6,
    chunk_size: Any = None,
) -> Float[Array, " batch"]:
    """|∂fn/∂x|₂ at every example of a batch `xs`, matrix-free, jitted once per `fn`.

    Example i is `spectral_norm(fn, xs[i], ...)` started from
    `start_vector(key, n, dtype, salt=i)` with its GLOBAL index i, so the result does not
    depend on `chunk_size` or on how `xs` is sharded: with `xs` split over a device mesh
    (`readout_jax.sharding.shard_batch`) each device runs the same program on its slice
    (`sharding.map_pieces`) and the norms come back sharded the same way, equal to the
    single-device ones bit for bit. Memory: O(chunk·num_iters·(n + m)) for the Lanczos
    bases, never an (m, n) Jacobian.

    Args:
        fn: the map for ONE example; it is a static argument of the compiled program,
            so pass the same (hashable) function object to reuse the compilation.
        xs: a pytree of floating arrays with a leading batch axis.
        key: random key for the start vectors (hashed with the example index).
        num_iters: maximum Lanczos steps per example (static).
        tol: relative residual at which Lanczos stops.
        chunk_size: examples processed at once (per device); None: all.

    Returns:
        (batch,) spectral norms.

    Raises:
        ValueError: if `fn` is not callable or not hashable, `xs` has no common leading
            batch axis or is not floating, `num_iters` < 1, `tol` < 0, or `chunk_size`
            < 1.

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> xs = jnp.zeros((3, 4))
        >>> batch_spectral_norm(jnp.sin, xs, key=jr.key(0)).tolist()
        [1.0, 1.0, 1.0]
    """
    from readout_jax import harness, sharding

    _check_fn(fn)
    try:
        hash(fn)
    except TypeError:
        raise ValueError(
            f"fn must be hashable (it is a static argument), got {type(fn).__name__}"
        ) from None
    leaves = jax.tree_util.tree_leaves(xs)
    if not leaves or any(jnp.ndim(leaf) < 1 for leaf in leaves):
        raise ValueError("xs must be arrays with a leading batch axis")
    batch = {jnp.shape(leaf)[0] for leaf in leaves}
    if len(batch) != 1 or 0 in batch:
        raise ValueError(f"xs must share one non-empty batch axis, got sizes {sorted(batch)}")
    _check_point(xs, "xs")
    num_iters = _check_iters(num_iters)
    _check_tol(tol)
    chunk_size = harness._check_chunk_size(chunk_size)

    def piece(replicated, start, num_real, x):
        del num_real
        key, tol = replicated
        return _batch_spectral_jit(fn, x, key, num_iters, tol, start), None

    out, _ = sharding.map_pieces(piece, (harness._as_key(key), tol), xs, chunk_size=chunk_size)
    return out


@ft.partial(jax.jit, static_argnames=("fn", "num_iters"))
def _batch_spectral_jit(fn, xs, key, num_iters, tol, start):
    from readout_jax import sharding

    batch = jax.tree_util.tree_leaves(xs)[0].shape[0]

    def one(example):
        index, x = example
        return _top_singular(fn, x, key, index, num_iters, tol).sigma

    index = jnp.asarray(start, jnp.uint32) + jnp.arange(batch, dtype=jnp.uint32)
    return sharding.vmap_padded(one, (index, xs))


def frobenius_norm_estimate(
    fn: Callable[[PyTree], PyTree],
    x: PyTree,
    *,
    key: Any,  # a jax.random key, checked in the body
    num_probes: int = 16,
    probe_batch_size: int | None = None,
) -> HutchinsonEstimate:
    """Hutchinson's estimate of |∂fn/∂x|_F with its standard error, matrix-free.

    |J|_F² = E_v |J v|² for Rademacher v (independent ±1 entries); the estimate is the
    mean of |J v|² over `num_probes` probes (one `jvp` each, through one
    `jax.linearize`), and its standard error is the sample standard deviation over
    sqrt(num_probes).

    Args:
        fn: a map from a pytree like `x` to a pytree of floating arrays, ONE example.
        x: the point.
        key: random key for the probes.
        num_probes: number of Rademacher probes (static, ≥ 1; the standard error needs
            ≥ 2).
        probe_batch_size: None evaluates all probes at once (one `vmap`, memory
            ∝ num_probes·m); an int evaluates that many at a time (`lax.map`).

    Returns:
        `HutchinsonEstimate(norm, norm_sq, std_error, std_error_sq)`.

    Raises:
        ValueError: if `fn` is not callable, `x` is empty or not floating, or
            `num_probes` / `probe_batch_size` < 1.

    References:
        Hutchinson, "A stochastic estimator of the trace of the influence matrix for
        Laplacian smoothing splines", Comm. Stat. Simul. Comput. 19 (1990).
    """
    _check_fn(fn)
    _check_point(x)
    num_probes = _checks.positive_int(num_probes, "num_probes")
    if probe_batch_size is not None:
        probe_batch_size = _checks.positive_int(probe_batch_size, "probe_batch_size")
    key = _checks.prng_key(key, "key")
    y, mv, _, flat_x, _, _, _ = _linear_maps(fn, x)
    probes = jr.rademacher(key, (num_probes, flat_x.shape[0]), flat_x.dtype)

    def sq_gain(v):
        jv = mv(v)
        return jnp.sum(jv * jv)

    if probe_batch_size is None:
        values = jax.vmap(sq_gain)(probes)
    else:
        values = jax.lax.map(sq_gain, probes, batch_size=probe_batch_size)
    norm_sq = jnp.mean(values)
    if num_probes > 1:
        se_sq = jnp.std(values, ddof=1) / math.sqrt(num_probes)
    else:
        se_sq = jnp.full((), jnp.nan, values.dtype)
    norm = jnp.sqrt(norm_sq)
    se = jnp.where(norm > 0, se_sq / (2.0 * jnp.where(norm > 0, norm, 1.0)), se_sq)
    return HutchinsonEstimate(norm, norm_sq, se, se_sq)


def frobenius_norm(
    fn: Callable[[PyTree], PyTree],
    x: PyTree,
    *,
    key: Any,  # a jax.random key, checked in the body
    num_probes: int = 16,
    probe_batch_size: int | None = None,
) -> Float[Array, ""]:
    """|∂fn/∂x|_F at `x` for ONE example by Hutchinson: `frobenius_norm_estimate(...).norm`.

    The square of the result is unbiased for |J|_F²; see `frobenius_norm_estimate` for
    the arguments and the standard error.

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> float(frobenius_norm(lambda x: 2.0 * x, jnp.zeros(4), key=jr.key(0)))
        4.0
    """
    return frobenius_norm_estimate(
        fn, x, key=key, num_probes=num_probes, probe_batch_size=probe_batch_size
    ).norm


def directional_norm(fn: Callable[[PyTree], PyTree], x: PyTree, u: PyTree) -> Float[Array, ""]:
    """|J u| for J = ∂fn/∂x at `x` (one `jvp`); pass a unit `u` for the gain along it.

    Args:
        fn: a map from a pytree like `x` to a pytree of floating arrays, ONE example.
        x: the point.
        u: the direction, a pytree with the structure and shapes of `x`.

    Returns:
        The Euclidean norm of the (flattened) directional derivative J u.

    Raises:
        ValueError: if `fn` is not callable, `x` is empty or not floating, or `u` does
            not match `x` in structure or shape.
    """
    _check_fn(fn)
    _check_point(x)
    _check_point(u, "u")
    if jax.tree_util.tree_structure(u) != jax.tree_util.tree_structure(x) or any(
        jnp.shape(a) != jnp.shape(b)
        for a, b in zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(x), strict=True)
    ):
        raise ValueError("u must have the same pytree structure and shapes as x")
    flat_fn, flat_x, _, _ = _flat(fn, x)
    flat_u, _ = ravel_pytree(u)
    _, ju = jax.jvp(flat_fn, (flat_x,), (flat_u.astype(flat_x.dtype),))
    return jnp.linalg.norm(ju)


def jacobian_dense(
    fn: Callable[[PyTree], PyTree], x: PyTree, *, mode: str = "fwd"
) -> Float[Array, " m n"]:
    """The dense (m, n) Jacobian of the flattened map, by `jacfwd` or `jacrev`.

    A reference for tests and tiny maps only: it costs n `jvp`s (fwd) or m `vjp`s (rev)
    and O(m·n) memory. Rows follow `ravel_pytree(fn(x))`, columns `ravel_pytree(x)`.

    Raises:
        ValueError: if `fn` is not callable, `x` is empty or not floating, or `mode` is
            not "fwd" or "rev".
    """
    _check_fn(fn)
    _check_point(x)
    if mode not in ("fwd", "rev"):
        raise ValueError(f"mode must be 'fwd' or 'rev', got {mode!r}")
    flat_fn, flat_x, _, _ = _flat(fn, x)
    jac = jax.jacfwd if mode == "fwd" else jax.jacrev
    return jac(flat_fn)(flat_x)
