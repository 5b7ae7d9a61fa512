"""Experiment modules, one per claim of SPEC §1, listed in SPEC §6 order.

Importing this package is instant: it imports no experiment (and no JAX). A module is
imported only by :func:`load`, so ``readout-jax list`` can show every registered
experiment, and those not written yet are reported as such instead of failing.

Every module follows the contract of :mod:`experiments._framework`: a frozen ``Config``
dataclass with ``quick()`` and ``full()``, ``measure(config, ctx)``, and the two-line
``run(config, out_dir)`` and ``main(argv)``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from types import ModuleType
from typing import NamedTuple

__all__ = [
    "EXPERIMENTS",
    "ExperimentInfo",
    "INFO",
    "UnknownExperimentError",
    "ExperimentNotImplementedError",
    "SCALES",
    "add_run_arguments",
    "is_implemented",
    "load",
]

#: Config presets every experiment module provides (``Config.quick()``, ``Config.full()``).
SCALES = ("quick", "full")


class ExperimentInfo(NamedTuple):
    """Registry entry: the module path, the claim it tests and a one-line description."""

    module: str
    claim: str
    description: str


INFO: dict[str, ExperimentInfo] = {
    "tube_law": ExperimentInfo(
        "experiments.tube_law",
        "C1",
        "flip rate of the posterior-mean terminal step vs noise scale s; slope and tube mass",
    ),
    "readout_sharpness": ExperimentInfo(
        "experiments.readout_sharpness",
        "C2",
        "boundary-aligned amplification (DABI) of sharp vs smooth readouts",
    ),
    "few_step": ExperimentInfo(
        "experiments.few_step",
        "C3a",
        "ODE vs SDE vs re-injection at K steps: exact perplexity and entropy",
    ),
    "commitment": ExperimentInfo(
        "experiments.commitment",
        "C3b",
        "categorical commitment (CCI) curves per sampler",
    ),
    "stiffness_laws": ExperimentInfo(
        "experiments.stiffness_laws",
        "C4",
        "stiffness to reach M separated modes: sqrt(log M) vs M^(1/n) phase diagram",
    ),
    "depth_hierarchy": ExperimentInfo(
        "experiments.depth_hierarchy",
        "C5",
        "per-step peak stiffness vs hierarchy depth B, fitted against 1/sqrt(B)",
    ),
    "coarea": ExperimentInfo(
        "experiments.coarea",
        "C6",
        "tube mass by Monte Carlo vs the coarea surface integral for three margins",
    ),
    "tradeoff": ExperimentInfo(
        "experiments.tradeoff",
        "C7",
        "accuracy vs steps vs stiffness for deterministic samplers; where escapes sit",
    ),
}

#: Experiment name → module path, in SPEC §6 order.
EXPERIMENTS: dict[str, str] = {name: info.module for name, info in INFO.items()}


class UnknownExperimentError(ValueError):
    """An experiment name that is not registered; the message lists the valid names."""


class ExperimentNotImplementedError(NotImplementedError):
    """A registered experiment whose module has not been written yet."""


def _check_name(name: str) -> str:
    if name not in EXPERIMENTS:
        raise UnknownExperimentError(
            f"unknown experiment {name!r}; valid names are: {', '.join(EXPERIMENTS)}"
        )
    return EXPERIMENTS[name]


def is_implemented(name: str) -> bool:
    """Whether the module of registered experiment `name` exists (without importing it).

    Raises:
        UnknownExperimentError: if `name` is not registered.
    """
    return importlib.util.find_spec(_check_name(name)) is not None


def load(name: str) -> ModuleType:
    """Import and return the module of experiment `name`.

    Raises:
        UnknownExperimentError: if `name` is not registered (lists the valid names).
        ExperimentNotImplementedError: if its module does not exist yet.
    """
    path = _check_name(name)
    if importlib.util.find_spec(path) is None:
        raise ExperimentNotImplementedError(
            f"experiment {name!r} ({INFO[name].claim}) is not yet implemented (no module {path})"
        )
    return importlib.import_module(path)


def add_run_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the standard run options: ``--scale quick|full``, ``--out DIR``, ``--seed N``
    and ``--no-progress`` (here, not in the framework, so the CLI stays light)."""
    parser.add_argument(
        "--scale", choices=SCALES, default="quick", help="config preset (default: quick)"
    )
    parser.add_argument(
        "--out", default="results", help="results root; writes OUT/<name>/ (default: results)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="run seed (default: the config's seed, else 0)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    return parser
