"""Benchmark: matrix-free Jacobian norms vs dense references on an MLP decoder (issue 3).

The decoder maps a latent z ∈ R^n to logits of shape (16, 512) through two hidden
layers of width 512 (tanh). For a batch of latents it compares, in one process:

- the matrix-free spectral norm (`diagnostics.top_singular`: Golub–Kahan–Lanczos, one
  jvp + one vjp per iteration) with the dense reference `jacfwd` + SVD;
- Hutchinson's Frobenius norm (`diagnostics.frobenius_norm_estimate`) with the dense
  Frobenius norm of the same Jacobian;

and prints per-example costs, their ratio, the errors, and peak memory (XLA's temporary
buffers of each compiled program and the process's peak RSS). The dense reference is
run on the first `--dense-batch` latents only (it costs n jvps and an SVD of an
8192 × n matrix per latent) and its cost is reported per example; the same Jacobians
are also reduced by the cheaper dense route eigvalsh(JᵀJ), a stronger baseline than
the SVD that the issue names.

Parameters are passed to the jitted functions as ARGUMENTS: closing over large constant
weights made XLA constant-fold a matmul for 45 s here.

Run by hand (not a test):

    python benchmarks/bench_jacobian.py            # batch 1024, n in {64, 256, 512}
    python benchmarks/bench_jacobian.py --quick    # a smoke run in well under a minute
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from readout_jax import diagnostics

OUT_SHAPE = (16, 512)
HIDDEN = 512


def init_decoder(key, n: int, dtype=jnp.float32):
    """He-like init of an n -> 512 -> 512 -> 16·512 tanh MLP."""
    k1, k2, k3 = jr.split(key, 3)
    out = OUT_SHAPE[0] * OUT_SHAPE[1]

    def dense(k, fan_in, fan_out):
        w = jr.normal(k, (fan_in, fan_out), dtype) / np.sqrt(fan_in)
        return w, jnp.zeros((fan_out,), dtype)

    return {
        "l1": dense(k1, n, HIDDEN),
        "l2": dense(k2, HIDDEN, HIDDEN),
        "l3": dense(k3, HIDDEN, out),
    }


def decode(params, z):
    """One latent (n,) -> logits (16, 512)."""
    h = jnp.tanh(z @ params["l1"][0] + params["l1"][1])
    h = jnp.tanh(h @ params["l2"][0] + params["l2"][1])
    return (h @ params["l3"][0] + params["l3"][1]).reshape(OUT_SHAPE)


def _keys(key, num):
    return jax.vmap(lambda i: jr.fold_in(key, i))(jnp.arange(num, dtype=jnp.uint32))


def matrix_free_spectral(params, z, key, *, num_iters, tol):
    def one(zi, ki):
        top = diagnostics.top_singular(
            lambda x: decode(params, x), zi, key=ki, num_iters=num_iters, tol=tol
        )
        return top.sigma, top.num_iters, top.residual

    return jax.vmap(one)(z, _keys(key, z.shape[0]))


def hutchinson(params, z, key, *, num_probes):
    def one(zi, ki):
        est = diagnostics.frobenius_norm_estimate(
            lambda x: decode(params, x), zi, key=ki, num_probes=num_probes
        )
        return est.norm, est.std_error

    return jax.vmap(one)(z, _keys(key, z.shape[0]))


def dense_reference(params, z, *, chunk):
    """(σ1, σ2, |J|_F) per latent from the dense jacfwd Jacobian (8192, n) and its SVD."""

    def one(zi):
        jac = diagnostics.jacobian_dense(lambda x: decode(params, x), zi)
        s = jnp.linalg.svd(jac, compute_uv=False)
        return s[0], s[1], jnp.sqrt(jnp.sum(jac * jac))

    return jax.lax.map(one, z, batch_size=chunk)


def dense_gram(params, z, *, chunk):
    """σ1 from the dense Jacobian by the cheaper route eigvalsh(JᵀJ) (a stronger baseline)."""

    def one(zi):
        jac = diagnostics.jacobian_dense(lambda x: decode(params, x), zi)
        return jnp.sqrt(jnp.linalg.eigvalsh(jac.T @ jac)[-1])

    return jax.lax.map(one, z, batch_size=chunk)


def _compile(fn, *args, **static):
    jitted = jax.jit(lambda *a: fn(*a, **static))
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    seconds = time.perf_counter() - start
    mem = compiled.memory_analysis()
    temp = getattr(mem, "temp_size_in_bytes", float("nan")) if mem is not None else float("nan")
    return compiled, seconds, temp


def _run(compiled, *args, repeats=1):
    best = float("inf")
    out = None
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - start)
    return out, best


def _peak_rss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


def bench_one(n, args):
    key = jr.key(args.seed)
    k_params, k_z, k_mf, k_h = jr.split(key, 4)
    params = init_decoder(k_params, n)
    z = jr.normal(k_z, (args.batch, n), jnp.float32)
    z_dense = z[: args.dense_batch]

    mf, mf_compile, mf_temp = _compile(
        matrix_free_spectral, params, z, k_mf, num_iters=args.num_iters, tol=args.tol
    )
    (sigma_mf, iters, _), mf_time = _run(mf, params, z, k_mf, repeats=args.repeats)
    rss_mf = _peak_rss_mib()
    hu, hu_compile, hu_temp = _compile(hutchinson, params, z, k_h, num_probes=args.num_probes)
    (fro_h, fro_se), hu_time = _run(hu, params, z, k_h, repeats=args.repeats)
    de, de_compile, de_temp = _compile(dense_reference, params, z_dense, chunk=args.dense_chunk)
    (s1, s2, fro), de_time = _run(de, params, z_dense, repeats=1)
    dg, dg_compile, dg_temp = _compile(dense_gram, params, z_dense, chunk=args.dense_chunk)
    s1_gram, dg_time = _run(dg, params, z_dense, repeats=1)
    rss_all = _peak_rss_mib()

    s1, s2, fro = np.asarray(s1), np.asarray(s2), np.asarray(fro)
    nd = args.dense_batch
    rel_sigma = np.abs(np.asarray(sigma_mf[:nd]) - s1) / s1
    rel_fro = np.abs(np.asarray(fro_h[:nd]) - fro) / fro
    z_fro = np.abs(np.asarray(fro_h[:nd]) - fro) / np.asarray(fro_se[:nd])
    per_mf = mf_time / args.batch
    per_h = hu_time / args.batch
    per_de = de_time / nd
    per_dg = dg_time / nd
    return {
        "n": n,
        "batch": args.batch,
        "dense_batch": nd,
        "sigma2_over_sigma1_median": float(np.median(s2 / s1)),
        "spectral": {
            "matrix_free_ms_per_example": 1e3 * per_mf,
            "dense_ms_per_example": 1e3 * per_de,
            "cost_ratio_dense_over_matrix_free": per_de / per_mf,
            "dense_gram_ms_per_example": 1e3 * per_dg,
            "cost_ratio_dense_gram_over_matrix_free": per_dg / per_mf,
            "dense_gram_rel_error_max": float(np.max(np.abs(np.asarray(s1_gram) - s1) / s1)),
            "rel_error_median": float(np.median(rel_sigma)),
            "rel_error_max": float(np.max(rel_sigma)),
            "lanczos_iters_median": float(np.median(np.asarray(iters))),
            "lanczos_iters_max": int(np.max(np.asarray(iters))),
        },
        "frobenius": {
            "hutchinson_ms_per_example": 1e3 * per_h,
            "cost_ratio_dense_over_hutchinson": per_de / per_h,
            "num_probes": args.num_probes,
            "rel_error_median": float(np.median(rel_fro)),
            "rel_error_max": float(np.max(rel_fro)),
            "frac_within_2_std_errors": float(np.mean(z_fro <= 2.0)),
        },
        "compile_s": {
            "matrix_free": mf_compile,
            "hutchinson": hu_compile,
            "dense": de_compile,
            "dense_gram": dg_compile,
        },
        "xla_temp_mib": {
            "matrix_free": mf_temp / 2**20,
            "hutchinson": hu_temp / 2**20,
            "dense": de_temp / 2**20,
            "dense_gram": dg_temp / 2**20,
        },
        "peak_rss_mib": {"after_matrix_free_and_hutchinson": rss_mf, "after_dense": rss_all},
    }


def _print(result):
    sp, fr = result["spectral"], result["frobenius"]
    print(
        f"n={result['n']:4d}  batch={result['batch']} (dense on {result['dense_batch']})  "
        f"median σ2/σ1={result['sigma2_over_sigma1_median']:.3f}"
    )
    print(
        f"  spectral : matrix-free {sp['matrix_free_ms_per_example']:8.3f} ms/ex "
        f"(Lanczos iters median {sp['lanczos_iters_median']:.0f}, max {sp['lanczos_iters_max']})"
        f" | dense jacfwd+SVD {sp['dense_ms_per_example']:8.3f} ms/ex"
        f" | ratio {sp['cost_ratio_dense_over_matrix_free']:6.1f}x"
        f" | rel err median {sp['rel_error_median']:.2e} max {sp['rel_error_max']:.2e}"
    )
    print(
        f"  dense jacfwd + eigvalsh(JᵀJ) {sp['dense_gram_ms_per_example']:8.3f} ms/ex"
        f" | ratio {sp['cost_ratio_dense_gram_over_matrix_free']:6.1f}x"
        f" | its rel err vs SVD max {sp['dense_gram_rel_error_max']:.2e}"
    )
    print(
        f"  frobenius: Hutchinson({fr['num_probes']}) {fr['hutchinson_ms_per_example']:8.3f} ms/ex"
        f" | ratio {fr['cost_ratio_dense_over_hutchinson']:6.1f}x"
        f" | rel err median {fr['rel_error_median']:.2e} max {fr['rel_error_max']:.2e}"
        f" | within 2 s.e. {fr['frac_within_2_std_errors']:.2f}"
    )
    mem, rss, comp = result["xla_temp_mib"], result["peak_rss_mib"], result["compile_s"]
    print(
        f"  memory   : XLA temp MiB matrix-free {mem['matrix_free']:.0f}, Hutchinson "
        f"{mem['hutchinson']:.0f}, dense SVD {mem['dense']:.0f}, dense Gram "
        f"{mem['dense_gram']:.0f}; peak RSS MiB "
        f"{rss['after_matrix_free_and_hutchinson']:.0f} -> {rss['after_dense']:.0f}"
    )
    print(
        f"  compile s: matrix-free {comp['matrix_free']:.1f}, Hutchinson "
        f"{comp['hutchinson']:.1f}, dense {comp['dense']:.1f}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batch: a < 1 min smoke run")
    parser.add_argument("--ns", type=int, nargs="+", default=None, help="latent sizes n")
    parser.add_argument("--batch", type=int, default=None, help="latents (matrix-free)")
    parser.add_argument("--dense-batch", type=int, default=None, help="latents (dense)")
    parser.add_argument("--dense-chunk", type=int, default=4, help="dense latents per vmap")
    parser.add_argument("--num-iters", type=int, default=24, help="max Lanczos iterations")
    parser.add_argument("--tol", type=float, default=1e-3, help="Lanczos relative residual")
    parser.add_argument("--num-probes", type=int, default=16, help="Hutchinson probes")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs (best of)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=str, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.ns = args.ns or [64]
        args.batch = args.batch or 32
        args.dense_batch = args.dense_batch or 4
    args.ns = args.ns or [64, 256, 512]
    args.batch = args.batch or 1024
    args.dense_batch = min(args.dense_batch or 8, args.batch)
    args.dense_chunk = min(args.dense_chunk, args.dense_batch)
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device); "
        f"float32; decoder n -> {HIDDEN} -> {HIDDEN} -> {OUT_SHAPE}; Lanczos num_iters="
        f"{args.num_iters} tol={args.tol}"
    )
    results = []
    for n in args.ns:
        result = bench_one(n, args)
        _print(result)
        results.append(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
