"""The `readout-jax` command line: `reproduce`, `run NAME`, `list`, `demo`.

Commands that run JAX (`reproduce`, `run`, `demo`) turn on JAX's persistent compilation
cache (`readout_jax.cache`, in ~/.cache/readout_jax/xla) so that a second run skips most
XLA compilation; `--no-compilation-cache` (or READOUT_JAX_NO_COMPILATION_CACHE=1) keeps
it off.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

__all__ = ["main", "demo", "list_experiments"]

#: Commands that run JAX work, hence enable the persistent compilation cache.
_JAX_COMMANDS = ("reproduce", "run", "demo")


def demo(seed: int = 0, batch: int = 4096, num_steps: int = 4, out=sys.stdout) -> list[dict]:
    """Sample a well-separated Gaussian mixture with `ddim` and `ddim_eta` at K steps.

    Prints a table of mode accuracy: the fraction of samples on a mode (squared distance
    to the nearest mean below n + 4·sqrt(2n) standard deviations², i.e. 4 sd above the
    χ²_n mean), and the total-variation distance between the sampled mode frequencies
    and the mixture weights. Returns the rows.
    """
    import jax.numpy as jnp
    import jax.random as jr
    import numpy as np

    import readout_jax as rj

    key_world, key_prior, key_sample = jr.split(jr.key(seed), 3)
    dim, num_modes, std = 8, 8, 0.25
    world = rj.manifolds.GaussianMixture.random(key_world, num_modes, dim, scale=2.0, std=std)
    ts = rj.time_grid(world.schedule, num_steps, t_max=0.995)
    x_init = rj.prior_sample(key_prior, world, batch, float(ts[0]))
    rows = []
    for name, hp in (("ddim", {}), ("ddim_eta", {"eta": 1.0})):
        start = time.perf_counter()
        result = rj.sample(rj.get_sampler(name, **hp), world, key_sample, x_init, ts, record=None)
        x0 = np.asarray(result.x0)
        elapsed = time.perf_counter() - start
        labels = np.asarray(jnp.argmax(_batch_logits(world, x0), axis=-1))
        sq = np.sum((x0 - np.asarray(world.means)[labels]) ** 2, axis=-1) / std**2
        on_mode = float(np.mean(sq <= dim + 4.0 * np.sqrt(2.0 * dim)))
        freq = np.bincount(labels, minlength=num_modes) / batch
        tv = 0.5 * float(np.abs(freq - np.asarray(world.weights)).sum())
        rows.append(
            {"sampler": name, "K": num_steps, "on_mode": on_mode, "mode_tv": tv, "seconds": elapsed}
        )
    print(
        f"readout-jax demo: {num_modes}-mode Gaussian mixture in R^{dim} (std {std}), "
        f"batch {batch}, K = {num_steps}, schedule {world.schedule.name}",
        file=out,
    )
    print(f"{'sampler':<10} {'K':>3} {'on-mode':>8} {'mode TV':>8} {'time s':>7}", file=out)
    for r in rows:
        print(
            f"{r['sampler']:<10} {r['K']:>3} {r['on_mode']:>8.3f} {r['mode_tv']:>8.3f} "
            f"{r['seconds']:>7.2f}",
            file=out,
        )
    return rows


def _batch_logits(world, x0):
    import jax

    return jax.vmap(world.logits)(x0)


def list_experiments(out=None) -> list[dict]:
    """Print every registered experiment: name, the claim it tests, a one-line description.

    Experiments whose module is not written yet are marked "not yet implemented". Imports
    no experiment module (and no JAX), so it is instant. Returns the rows.
    """
    import experiments

    out = sys.stdout if out is None else out
    rows = []
    for name, info in experiments.INFO.items():
        implemented = experiments.is_implemented(name)
        rows.append(
            {
                "name": name,
                "claim": info.claim,
                "description": info.description,
                "implemented": implemented,
            }
        )
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        note = "" if r["implemented"] else "  [not yet implemented]"
        print(f"{r['name']:<{width}}  {r['claim']:<4} {r['description']}{note}", file=out)
    return rows


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import experiments

    try:
        module = experiments.load(args.name)
    except experiments.UnknownExperimentError as err:
        parser.error(str(err))  # exits with status 2
    except experiments.ExperimentNotImplementedError as err:
        parser.error(str(err))
    from experiments import _framework

    return _framework.run_from_args(module, args)


def _reproduce(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from experiments import _framework, _reproduce

    try:
        names = _reproduce.select_experiments(args.only)
    except ValueError as err:
        parser.error(str(err))
    from readout_jax import io

    try:
        summary = _reproduce.reproduce(
            names,
            scale=args.scale,
            out=args.out,
            force=args.force,
            seed=args.seed,
            overrides={_framework.MODELS_DIR_FIELD: args.models_dir},
            show_progress=not args.no_progress,
        )
    except io.OutputDirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"report: {summary.report_path}  index: {summary.index_path}")
    for row in _reproduce.build_index(summary)["claims_by_id"]:
        print(f"  {row['claim']:<4} {row['held']}/{row['total']} held")
    if summary.failed:
        print(
            f"error: {len(summary.failed)} experiment(s) failed: {', '.join(summary.failed)}; "
            f"the report marks them, and {summary.index_path} holds the tracebacks",
            file=sys.stderr,
        )
        return 1
    return 0


def _add_cache_flag(parser: argparse.ArgumentParser, *, sub: bool) -> None:
    parser.add_argument(
        "--no-compilation-cache",
        action="store_true",
        # On a subcommand, SUPPRESS keeps the flag given before it from being reset.
        default=argparse.SUPPRESS if sub else False,
        help="do not use JAX's persistent compilation cache (~/.cache/readout_jax/xla; "
        "also READOUT_JAX_NO_COMPILATION_CACHE=1)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    import experiments

    parser = argparse.ArgumentParser(
        prog="readout-jax",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_cache_flag(parser, sub=False)
    sub = parser.add_subparsers(dest="command", required=True)
    p_rep = sub.add_parser(
        "reproduce",
        help="run every experiment (resumably) and write OUT/REPORT.md and OUT/index.json",
        description=(
            "Run the registered experiments in order and write OUT/<name>/result.json, "
            "OUT/REPORT.md (the claims table, figures, environment, timings) and "
            "OUT/index.json. An experiment whose result is up to date (same config, seed "
            "and code version) is skipped unless --force. Exit status 1 if an experiment "
            "crashed (claims that do not hold are not errors)."
        ),
    )
    p_rep.add_argument(
        "--scale", choices=experiments.SCALES, default="quick", help="config preset (quick)"
    )
    p_rep.add_argument("--out", default="results", help="results root (default: results)")
    p_rep.add_argument("--force", action="store_true", help="re-run up-to-date experiments too")
    p_rep.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        default=None,
        help=f"run only these (space or comma separated): {', '.join(experiments.EXPERIMENTS)}",
    )
    p_rep.add_argument(
        "--seed", type=int, default=None, help="seed of every experiment (default: each config's)"
    )
    p_rep.add_argument(
        "--models-dir",
        default=None,
        help="folder of cached trained models, for the experiments whose config has one",
    )
    p_rep.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    _add_cache_flag(p_rep, sub=True)
    p_run = sub.add_parser(
        "run",
        help="run one experiment and write OUT/NAME/result.json",
        description="Run one experiment module and write OUT/NAME/result.json and figures.",
    )
    p_run.add_argument(
        "name", metavar="NAME", help=f"experiment name: {', '.join(experiments.EXPERIMENTS)}"
    )
    experiments.add_run_arguments(p_run)
    _add_cache_flag(p_run, sub=True)
    sub.add_parser("list", help="list the experiments and the claim each one tests")
    p_demo = sub.add_parser("demo", help="sample a Gaussian mixture with ddim and ddim_eta")
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument("--batch", type=int, default=4096)
    p_demo.add_argument("--num-steps", type=int, default=4)
    _add_cache_flag(p_demo, sub=True)
    args = parser.parse_args(argv)
    if args.command == "demo" and (args.batch < 1 or args.num_steps < 1):
        parser.error("--batch and --num-steps must be >= 1")
    if args.command in _JAX_COMMANDS and not args.no_compilation_cache:
        from readout_jax import cache

        cache.enable_compilation_cache()
    if args.command == "demo":
        demo(seed=args.seed, batch=args.batch, num_steps=args.num_steps)
    elif args.command == "list":
        list_experiments()
    elif args.command == "run":
        return _run(p_run, args)
    elif args.command == "reproduce":
        return _reproduce(p_rep, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
