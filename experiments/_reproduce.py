"""``readout-jax reproduce``: run the registered experiments, resumably; write the report.

:func:`reproduce` runs the experiments of :data:`experiments.EXPERIMENTS` in registry
order (or the subset `names`) at one scale and writes, under the results root `out`:

- ``<out>/<name>/result.json`` and figures, one folder per experiment (as
  ``readout-jax run NAME`` does);
- ``<out>/REPORT.md``: one table of the claims C1–C7 (every `Claim` row of every
  experiment: statement, measured value with its interval, prediction, held / not held,
  a link to the experiment's main figure), then the figures, the environment and the
  per-experiment timings;
- ``<out>/index.json``: the same, machine-readable.

**Resuming.** An experiment whose ``result.json`` exists and records the same name,
config (after the seed is resolved, :func:`experiments._framework.resolve_seed`), seed
and code version (:func:`experiments._framework.code_version`: a hash of the
``readout_jax`` package and of the experiment's own modules) is *up to date* and is not
run again unless ``force``. Any other result is re-run; an unreadable one too.

**No partial files.** An experiment runs in the staging folder ``<out>/.staging/<name>``
(every file written atomically by `readout_jax.io`); only when ``measure`` returned and
``result.json`` was written is the folder swapped into ``<out>/<name>`` by two renames
(old folder aside, new folder in), so ``<out>/<name>`` holds either the previous complete
result or the new one, never a mixture. A crashed experiment's staging folder is removed
(its previous result, if any, is kept) and the other experiments still run. A killed
process leaves at most ``<out>/.staging``, which the next run deletes. REPORT.md and
index.json are written atomically once all selected experiments have finished (or
failed); an interruption (Ctrl-C) writes neither, and a rerun skips what had finished.

**Extra config fields.** A module's ``Config`` may carry any fields; they are compared
like the others. `overrides` (``--models-dir`` on the command line sets
``models_dir``) is applied to every config that has the field, and to no other.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import pathlib
import shutil
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import IO, Any

import experiments
from experiments import _framework
from readout_jax import io

__all__ = [
    "STATUSES",
    "STAGING",
    "ExperimentOutcome",
    "ReproduceSummary",
    "select_experiments",
    "planned_config",
    "check_current",
    "reproduce",
    "claim_rows",
    "render_report",
    "build_index",
]

#: Status of an experiment in a reproduce run: ``ran`` (measured now), ``cached`` (an
#: up-to-date result was reused), ``failed`` (it raised; the message is recorded),
#: ``not run`` (not selected and no up-to-date result), ``not implemented``.
STATUSES = ("ran", "cached", "failed", "not run", "not implemented")
#: Folder under the results root where experiments run before being swapped in.
STAGING = ".staging"

_CLAIM_ORDER = ("C1", "C2", "C3a", "C3", "C3b", "C4", "C5", "C6", "C7")


@dataclasses.dataclass
class ExperimentOutcome:
    """What happened to one registered experiment in a reproduce run.

    Attributes:
        name: experiment name.
        claim: the claim id it is registered for (``"C1"`` …).
        status: one of :data:`STATUSES`.
        selected: whether this run was asked to run it.
        reason: why it was run, reused or not run (human-readable).
        result: the loaded ``result.json`` (None when failed / not run).
        wall_seconds: wall time of ``measure`` (from the result when cached).
        cpu_seconds: process CPU time of ``measure`` (all threads), if recorded.
        error: the exception (type: message) when failed.
        traceback: the formatted traceback when failed.
    """

    name: str
    claim: str
    status: str
    selected: bool
    reason: str = ""
    result: dict[str, Any] | None = None
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    error: str | None = None
    traceback: str | None = None


@dataclasses.dataclass
class ReproduceSummary:
    """The outcome of :func:`reproduce`.

    Attributes:
        out_dir: the results root.
        scale: the scale of the run (``"quick"``, ``"full"``).
        outcomes: one per registered experiment, in registry order.
        report_path, index_path: the files written.
        wall_seconds, cpu_seconds: the whole run (this process).
    """

    out_dir: pathlib.Path
    scale: str
    outcomes: list[ExperimentOutcome]
    report_path: pathlib.Path
    index_path: pathlib.Path
    wall_seconds: float
    cpu_seconds: float

    @property
    def failed(self) -> list[str]:
        """Names of the selected experiments that crashed."""
        return [o.name for o in self.outcomes if o.status == "failed"]

    @property
    def ok(self) -> bool:
        """True when every selected experiment ran or was up to date."""
        return all(o.status in ("ran", "cached") for o in self.outcomes if o.selected)

    def status(self, name: str) -> str:
        """The status of experiment `name`."""
        return next(o.status for o in self.outcomes if o.name == name)


# ---------------------------------------------------------------------------------------
# Selection, configs, up-to-date check
# ---------------------------------------------------------------------------------------
def select_experiments(names: Sequence[str] | str | None = None) -> list[str]:
    """`names` (a sequence, or one comma-separated string) in registry order.

    None or empty means every registered experiment. Duplicates are dropped.

    Raises:
        ValueError: for an unknown name (the message lists the valid names).
    """
    if names is None:
        return list(experiments.EXPERIMENTS)
    if isinstance(names, str):
        names = [names]
    wanted = {part.strip() for n in names for part in str(n).split(",") if part.strip()}
    unknown = sorted(wanted - set(experiments.EXPERIMENTS))
    if unknown:
        raise ValueError(
            f"unknown experiment(s) {', '.join(map(repr, unknown))}; valid names are: "
            f"{', '.join(experiments.EXPERIMENTS)}"
        )
    if not wanted:
        return list(experiments.EXPERIMENTS)
    return [n for n in experiments.EXPERIMENTS if n in wanted]


def _apply_overrides(config: Any, overrides: Mapping[str, Any] | None) -> Any:
    if not overrides:
        return config
    fields = {f.name for f in dataclasses.fields(config)}
    present = {k: v for k, v in overrides.items() if k in fields and v is not None}
    return dataclasses.replace(config, **present) if present else config


def planned_config(
    module: Any,
    scale: str,
    *,
    config: Any = None,
    seed: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Any, int]:
    """The (config, seed) a reproduce run records for `module`.

    `config` (e.g. a tiny test config) replaces ``Config.<scale>()``; `overrides` set the
    fields the config has; the seed is then resolved as `run_experiment` does.
    """
    if config is None:
        config = _framework.config_for_scale(module, scale)
    config = _apply_overrides(config, overrides)
    return _framework.resolve_seed(config, seed)


def check_current(
    result_path: str | os.PathLike, module: Any, config: Any, seed: int
) -> tuple[dict[str, Any] | None, str]:
    """Whether the result at `result_path` is up to date for (config, seed, code).

    Returns:
        ``(result, reason)``: the loaded result if it is up to date (else None) and a
        short reason ("up to date", "no result", "config changed", ...).
    """
    path = pathlib.Path(result_path)
    if not path.is_file():
        return None, "no result yet"
    try:
        result = io.read_json(path)
    except (OSError, ValueError) as err:
        return None, f"unreadable result ({type(err).__name__})"
    if not isinstance(result, dict):
        return None, "unreadable result"
    name = _framework.experiment_name(module)
    if result.get("name") != name:
        return None, f"result is for {result.get('name')!r}"
    if result.get("config") != io.to_jsonable(dataclasses.asdict(config)):
        return None, "config changed"
    if result.get("seed") != seed:
        return None, f"seed changed ({result.get('seed')} -> {seed})"
    stored = (result.get("versions") or {}).get("code_version")
    if stored != _framework.code_version(module):
        return None, "code changed" if stored else "no code version recorded"
    if not isinstance(result.get("claims"), list):
        return None, "result has no claims"
    return result, "up to date"


# ---------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------
def _fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s"


def _swap_in(staged: pathlib.Path, final: pathlib.Path, staging_root: pathlib.Path) -> None:
    """Replace folder `final` by `staged` with two renames; the old one is deleted."""
    old = None
    if final.exists():
        old = staging_root / f".old-{final.name}-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(staged, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _claims_held(result: Mapping[str, Any] | None) -> tuple[int, int]:
    claims = (result or {}).get("claims") or []
    return sum(bool(c.get("held")) for c in claims), len(claims)


def _timings(result: Mapping[str, Any]) -> tuple[float | None, float | None]:
    wall = result.get("elapsed_seconds")
    cpu = (result.get("environment") or {}).get("cpu_seconds")
    return wall, cpu


def reproduce(
    names: Sequence[str] | str | None = None,
    *,
    scale: str = "quick",
    out: str | os.PathLike = "results",
    force: bool = False,
    seed: int | None = None,
    configs: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    show_progress: bool = True,
    stream: IO | None = None,
) -> ReproduceSummary:
    """Run the experiments `names` (default all) in registry order; write the report.

    Args:
        names: experiments to run (None: all registered), as a sequence or a
            comma-separated string.
        scale: ``"quick"`` or ``"full"``: which ``Config`` preset each module uses.
        out: the results root.
        force: re-run even the experiments whose result is up to date.
        seed: run seed for every experiment (None: each config's own seed).
        configs: name → config instance replacing the preset for that experiment (a
            programmatic way to run at a custom size, used by the tests; recorded with
            scale ``"custom"``). For an experiment that is not selected it is the config
            its stored result must match to be reported.
        overrides: field → value set on every config that has that field (e.g.
            ``{"models_dir": "..."}``); None values are ignored.
        show_progress: print the overall progress (experiment, i/N, elapsed) to
            `stream` and allow the experiments' own progress bars (TTY only).
        stream: where the progress goes (default ``sys.stderr``).

    Returns:
        A :class:`ReproduceSummary`; its ``ok`` is False when an experiment crashed
        (claims that do not hold are results, not failures).

    Raises:
        ValueError: for an unknown experiment name or scale (also as a `configs` key).
        readout_jax.io.OutputDirError: if `out` cannot be written.
        KeyboardInterrupt: passed on after the running experiment's staging folder is
            removed (no report is written then).
    """
    if scale not in experiments.SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid scales are {list(experiments.SCALES)}")
    selected = select_experiments(names)
    configs = dict(configs or {})
    stray = sorted(set(configs) - set(experiments.EXPERIMENTS))
    if stray:
        raise ValueError(
            f"configs given for unknown experiment(s) {stray}; valid names are: "
            f"{', '.join(experiments.EXPERIMENTS)}"
        )
    stream = sys.stderr if stream is None else stream
    root = io.ensure_dir(out)
    staging_root = root / STAGING
    if staging_root.exists():  # left by a killed run
        shutil.rmtree(staging_root)
    start_wall, start_cpu = time.perf_counter(), time.process_time()

    def say(message: str) -> None:
        if show_progress:
            print(message, file=stream, flush=True)

    say(
        f"readout-jax reproduce: {len(selected)} experiment(s) at scale {scale} -> {root}/"
        + (" (force)" if force else "")
    )
    outcomes: list[ExperimentOutcome] = []
    try:
        for name in experiments.EXPERIMENTS:
            if name not in selected:
                if experiments.is_implemented(name):
                    outcome = _unselected(name, scale, root, seed, overrides, configs.get(name))
                else:
                    outcome = _not_implemented(name, selected=False)
                outcomes.append(outcome)
                continue
            tag = f"[{selected.index(name) + 1}/{len(selected)}] {name}"
            if not experiments.is_implemented(name):
                outcomes.append(_not_implemented(name, selected=True))
                say(f"{tag}: not implemented")
                continue
            elapsed = _fmt_duration(time.perf_counter() - start_wall)
            outcome = _run_one(
                name,
                scale,
                root,
                staging_root,
                force=force,
                seed=seed,
                config=configs.get(name),
                overrides=overrides,
                show_progress=show_progress,
                say=lambda msg, tag=tag, elapsed=elapsed: say(f"{tag}: {msg} (elapsed {elapsed})"),
            )
            outcomes.append(outcome)
            elapsed = _fmt_duration(time.perf_counter() - start_wall)
            if outcome.status == "ran":
                held, total = _claims_held(outcome.result)
                say(
                    f"{tag}: done in {_fmt_duration(outcome.wall_seconds)} (CPU "
                    f"{_fmt_duration(outcome.cpu_seconds)}), {held}/{total} claims held "
                    f"(elapsed {elapsed})"
                )
            elif outcome.status == "failed":
                say(f"{tag}: FAILED: {outcome.error} (elapsed {elapsed})")
    finally:  # an interruption leaves no staging folder behind
        shutil.rmtree(staging_root, ignore_errors=True)
    wall = time.perf_counter() - start_wall
    cpu = time.process_time() - start_cpu
    summary = ReproduceSummary(
        out_dir=root,
        scale=scale,
        outcomes=outcomes,
        report_path=root / "REPORT.md",
        index_path=root / "index.json",
        wall_seconds=wall,
        cpu_seconds=cpu,
    )
    index = build_index(summary)
    io.write_json(summary.index_path, index)
    io.write_text(summary.report_path, render_report(summary, index=index))
    counts = {s: sum(o.status == s for o in outcomes if o.selected) for s in STATUSES}
    say(
        f"reproduce: {counts['ran']} ran, {counts['cached']} up to date, "
        f"{counts['failed']} failed in {_fmt_duration(wall)} (CPU {_fmt_duration(cpu)}); "
        f"report {summary.report_path}"
    )
    return summary


def _not_implemented(name: str, *, selected: bool) -> ExperimentOutcome:
    info = experiments.INFO[name]
    return ExperimentOutcome(
        name, info.claim, "not implemented", selected, "module not written yet"
    )


def _unselected(
    name: str, scale: str, root: pathlib.Path, seed: int | None, overrides, config: Any
) -> ExperimentOutcome:
    """An experiment not selected: reuse its result if it is up to date, else 'not run'."""
    claim = experiments.INFO[name].claim
    try:
        module = experiments.load(name)
        config, run_seed = planned_config(
            module, scale, config=config, seed=seed, overrides=overrides
        )
        result, reason = check_current(root / name / "result.json", module, config, run_seed)
    except Exception as err:  # a module that does not import is simply not reported
        return ExperimentOutcome(name, claim, "not run", False, f"not checked: {err!r}")
    if result is None:
        return ExperimentOutcome(name, claim, "not run", False, f"not selected; {reason}")
    wall, cpu = _timings(result)
    return ExperimentOutcome(
        name, claim, "cached", False, "not selected; up to date", result, wall, cpu
    )


def _run_one(
    name: str,
    scale: str,
    root: pathlib.Path,
    staging_root: pathlib.Path,
    *,
    force: bool,
    seed: int | None,
    config: Any,
    overrides,
    show_progress: bool,
    say,
) -> ExperimentOutcome:
    claim = experiments.INFO[name].claim
    staged = staging_root / name
    try:
        module = experiments.load(name)
        custom = config is not None
        config, run_seed = planned_config(
            module, scale, config=config, seed=seed, overrides=overrides
        )
        result, reason = check_current(root / name / "result.json", module, config, run_seed)
        if result is not None and not force:
            wall, cpu = _timings(result)
            say(f"{claim}, up to date, skipped")
            return ExperimentOutcome(name, claim, "cached", True, reason, result, wall, cpu)
        why = "forced" if force else reason
        say(f"{claim}, running ({why})")
        io.ensure_dir(staging_root)
        if staged.exists():
            shutil.rmtree(staged)
        result = _framework.run_experiment(
            module,
            config,
            staging_root,
            run_seed,
            scale="custom" if custom else scale,
            show_progress=show_progress,
        )
        _swap_in(staged, root / name, staging_root)
    except Exception as err:
        shutil.rmtree(staged, ignore_errors=True)
        return ExperimentOutcome(
            name,
            claim,
            "failed",
            True,
            "raised",
            error=f"{type(err).__name__}: {err}",
            traceback=traceback.format_exc(),
        )
    except BaseException:  # KeyboardInterrupt, SystemExit: clean up, then stop
        shutil.rmtree(staged, ignore_errors=True)
        raise
    wall, cpu = _timings(result)
    return ExperimentOutcome(name, claim, "ran", True, why, result, wall, cpu)


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
def _num(v: Any) -> str:
    if v is None:
        return "nan"
    v = float(v)
    if not math.isfinite(v):
        return "nan"
    return f"{v:.4g}"


def _cell(text: Any) -> str:
    """Markdown-table-safe text: no pipes, no line breaks."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _claim_key(row: Mapping[str, Any]) -> tuple[int, int]:
    cid = row["claim"]
    order = _CLAIM_ORDER.index(cid) if cid in _CLAIM_ORDER else len(_CLAIM_ORDER)
    return order, row["order"]


def claim_rows(outcomes: Sequence[ExperimentOutcome]) -> list[dict[str, Any]]:
    """One row per Claim of every experiment with a result, plus one per failed
    experiment, sorted by claim id (C1 … C7), then registry order.

    Each row: claim, experiment, status, statement, measured, interval, predicted,
    tolerance, held (None for a failed experiment), detail, figure (relative link or
    None).
    """
    rows: list[dict[str, Any]] = []
    order = 0
    for o in outcomes:
        if o.status == "failed":
            rows.append(
                {
                    "claim": o.claim,
                    "experiment": o.name,
                    "status": "failed",
                    "statement": f"experiment {o.name} failed: {o.error}",
                    "measured": None,
                    "interval": None,
                    "predicted": None,
                    "tolerance": None,
                    "held": None,
                    "detail": o.error or "",
                    "figure": None,
                    "order": order,
                }
            )
            order += 1
            continue
        if o.result is None:
            continue
        figures = o.result.get("figures") or []
        figure = f"{o.name}/{figures[0]}" if figures else None
        for c in o.result.get("claims") or []:
            rows.append(
                {
                    "claim": c.get("claim", o.claim),
                    "experiment": o.name,
                    "status": o.status,
                    "statement": c.get("statement", ""),
                    "measured": c.get("measured"),
                    "interval": c.get("interval"),
                    "predicted": c.get("predicted"),
                    "tolerance": c.get("tolerance"),
                    "held": bool(c.get("held")),
                    "detail": c.get("detail", ""),
                    "figure": figure,
                    "order": order,
                }
            )
            order += 1
    rows.sort(key=_claim_key)
    for r in rows:
        del r["order"]
    return rows


def _measured_text(row: Mapping[str, Any]) -> str:
    if row["held"] is None:
        return "–"
    text = _num(row["measured"])
    interval = row.get("interval")
    if interval:
        text += f" [{_num(interval[0])}, {_num(interval[1])}]"
    return text


def _predicted_text(row: Mapping[str, Any]) -> str:
    if row["predicted"] is None:
        return "–"
    tol = row.get("tolerance") or 0.0
    return _num(row["predicted"]) + (f" ± {_num(tol)}" if tol else "")


def _verdict_text(row: Mapping[str, Any]) -> str:
    if row["held"] is None:
        return "**FAILED**"
    return "held" if row["held"] else "**not held**"


def claims_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown claims table of :func:`claim_rows` (links relative to the report)."""
    lines = [
        "| claim | experiment | statement | measured [interval] | predicted | verdict | figure |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fig = r.get("figure")
        link = f"[{pathlib.PurePosixPath(fig).stem}]({fig})" if fig else "–"
        lines.append(
            f"| {r['claim']} | {r['experiment']} | {_cell(r['statement'])} | "
            f"{_measured_text(r)} | {_predicted_text(r)} | {_verdict_text(r)} | {link} |"
        )
    return "\n".join(lines)


def _tally(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, int]]:
    out: dict[str, list[int]] = {}
    for r in rows:
        if r["held"] is None:
            continue
        held_total = out.setdefault(r["claim"], [0, 0])
        held_total[0] += int(r["held"])
        held_total[1] += 1
    return [(cid, h, t) for cid, (h, t) in out.items()]


def build_index(summary: ReproduceSummary) -> dict[str, Any]:
    """The machine-readable summary written to ``index.json``."""
    any_result = next((o.result for o in summary.outcomes if o.result is not None), None)
    experiments_out = []
    for o in summary.outcomes:
        held, total = _claims_held(o.result)
        result = o.result or {}
        experiments_out.append(
            {
                "name": o.name,
                "claim": o.claim,
                "description": experiments.INFO[o.name].description,
                "status": o.status,
                "selected": o.selected,
                "reason": o.reason,
                "scale": result.get("scale"),
                "seed": result.get("seed"),
                "code_version": (result.get("versions") or {}).get("code_version"),
                "result": f"{o.name}/result.json" if o.result is not None else None,
                "figures": [f"{o.name}/{f}" for f in result.get("figures") or []],
                "claims_held": held,
                "claims_total": total,
                "wall_seconds": o.wall_seconds,
                "cpu_seconds": o.cpu_seconds,
                "finished_utc": (result.get("environment") or {}).get("utc_time"),
                "error": o.error,
                "traceback": o.traceback,
            }
        )
    rows = claim_rows(summary.outcomes)
    return io.to_jsonable(
        {
            "scale": summary.scale,
            "generated_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "ok": summary.ok,
            "failed": summary.failed,
            "run_wall_seconds": summary.wall_seconds,
            "run_cpu_seconds": summary.cpu_seconds,
            "versions": {
                k: v
                for k, v in ((any_result or {}).get("versions") or io.versions()).items()
                if k != "code_version"  # per experiment, in "experiments"
            },
            "environment": {
                k: v
                for k, v in ((any_result or {}).get("environment") or io.environment()).items()
                if k not in ("argv", "cpu_seconds", "utc_time")
            },
            "experiments": experiments_out,
            "claims": rows,
            "claims_by_id": [{"claim": cid, "held": h, "total": t} for cid, h, t in _tally(rows)],
        }
    )


def render_report(summary: ReproduceSummary, *, index: Mapping[str, Any] | None = None) -> str:
    """The text of ``REPORT.md``: claims table, experiments, figures, environment."""
    index = build_index(summary) if index is None else index
    rows = index["claims"]
    selected = [o for o in summary.outcomes if o.selected]
    counts = {s: sum(o.status == s for o in selected) for s in STATUSES}
    versions = index.get("versions") or {}
    env = index.get("environment") or {}
    sha = versions.get("git_sha")
    lines = [
        "# readout_jax: reproduction report",
        "",
        f"`readout-jax reproduce --scale {summary.scale}` · generated "
        f"{index['generated_utc']} · {len(selected)} experiment(s) selected: "
        f"{counts['ran']} ran, {counts['cached']} up to date (reused), {counts['failed']} "
        f"failed · this run {_fmt_duration(summary.wall_seconds)} wall, "
        f"{_fmt_duration(summary.cpu_seconds)} CPU" + (f" · git `{sha}`" if sha else ""),
        "",
        "Each verdict is computed from the data against a prediction and tolerance fixed in "
        "the experiment module before the data are seen (SPEC §1, §6). *not held* is a "
        "result, not an error; the rule, the interval and the caveats of each row are in "
        "`index.json` (field `detail`) and in each `<experiment>/result.json`.",
        "",
    ]
    if summary.failed:
        lines += [
            f"**Failed:** {', '.join(summary.failed)} (see the Experiments table and "
            "`index.json` for the traceback).",
            "",
        ]
    lines += ["## Claims", ""]
    lines.append(claims_table(rows) if rows else "_No results._")
    tally = index.get("claims_by_id") or []
    if tally:
        lines += [
            "",
            "Held per claim: "
            + ", ".join(f"{t['claim']} {t['held']}/{t['total']}" for t in tally)
            + ".",
        ]
    lines += [
        "",
        "## Experiments",
        "",
        "| # | experiment | claim | status | claims held | wall | CPU | finished (UTC) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, e in enumerate(index["experiments"], 1):
        status = e["status"] + (f": {e['error']}" if e["error"] else "")
        held = f"{e['claims_held']}/{e['claims_total']}" if e["result"] else "–"
        lines.append(
            f"| {i} | {e['name']} | {e['claim']} | {_cell(status)} | {held} | "
            f"{_fmt_duration(e['wall_seconds'])} | {_fmt_duration(e['cpu_seconds'])} | "
            f"{e['finished_utc'] or '–'} |"
        )
    walls = [e["wall_seconds"] for e in index["experiments"] if e["wall_seconds"] is not None]
    cpus = [e["cpu_seconds"] for e in index["experiments"] if e["cpu_seconds"] is not None]
    lines += [
        "",
        f"Sum over the experiments with a result: {_fmt_duration(sum(walls))} wall, "
        f"{_fmt_duration(sum(cpus))} CPU (measurement only; imports and start-up excluded). "
        "Wall times on a shared machine are inflated; CPU time counts every thread.",
        "",
        "## Figures",
        "",
    ]
    any_figure = False
    for e in index["experiments"]:
        if not e["figures"]:
            continue
        any_figure = True
        lines += [f"### {e['name']} ({e['claim']}): {e['description']}", ""]
        for fig in e["figures"]:
            lines += [f"![{e['name']}: {pathlib.PurePosixPath(fig).stem}]({fig})", ""]
    if not any_figure:
        lines += ["_No figures._", ""]
    lines += ["## Environment", ""]
    keys = ("python", "jax", "jaxlib", "flax", "optax", "numpy", "matplotlib", "readout_jax")
    lines.append("- versions: " + ", ".join(f"{k} {versions[k]}" for k in keys if versions.get(k)))
    lines.append(f"- platform: {versions.get('platform', '–')}")
    lines.append(
        f"- machine: {env.get('machine', '–')}, {env.get('cpu_count', '–')} CPU core(s), JAX "
        f"backend {env.get('jax_backend', '–')}, float64 "
        f"{'on' if env.get('jax_enable_x64') else 'off'}"
    )
    lines.append(f"- git commit: {sha or 'not a git checkout'}")
    codes = [
        f"{e['name']} `{e['code_version']}`" for e in index["experiments"] if e["code_version"]
    ]
    if codes:
        lines.append("- code versions (hash of readout_jax + the module): " + ", ".join(codes))
    lines.append("")
    return "\n".join(lines)
