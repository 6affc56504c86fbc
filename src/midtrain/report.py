"""midtrain-report: tables and plots of a sweep's results, with or without W&B.

Reads every run's ``metrics.json`` under one or more sweep directories (and optionally the
runs of W&B groups), and writes, under ``out_dir``:

- ``summary.csv`` / ``summary.md``: mean ± standard error over seeds of the headline score
  per ``group_by`` cell (model x condition x doc count x instruction samples), plus the
  per-dimension means;
- ``runs.csv``: one row per run that was aggregated, with the code commit and library
  versions it recorded (``provenance`` in its metrics.json, over every attempt);
- in ``summary.csv`` (``provenance_differs``) and ``summary.md``: every cell whose runs differ
  in code commit or in a library's version;
- a section of ``summary.md`` (and ``paired_gaps`` in ``report.json``): treatment minus control
  and minus the instruction-tuning baseline per cell, paired by seed, with a 95% t interval
  and what it supports (``midtrain.stats.condition_gaps``);
- ``problems.csv`` and a section of ``summary.md``: every run that was not aggregated (no
  ``metrics.json``, corrupt JSON, not DONE, headline metric absent) and every seed missing
  from a cell, so a half-finished sweep cannot pass for a finished one;
- ``gaps.csv`` and a section of ``summary.md``: treatment minus control per cell (paired by
  seed), and ``gap_vs_instruct_samples.png``: that gap against instruction samples, one line
  per preservation strategy, error bars over seeds;
- ``probe_curve_gap.png``: the same gap on the judge-free probe logged during the instruction
  stage (``probe_every_n_steps``), against the instruction samples seen, inside each run;
- ``anima_vs_doc_count.png``, ``erosion.png``, ``by_dimension.png``;
- ``report.json``: all of the above as data (what ``report(cfg)`` returns).
"""

from __future__ import annotations

import csv
import io
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from midtrain import figures, stats
from midtrain.paths import CONF_DIR
from midtrain.stats import is_number, mean_stderr
from midtrain.tracking.conditions import COMPARISONS, CONDITION_KEYS
from midtrain.tracking.nested import select, unflatten
from midtrain.tracking.provenance import PROVENANCE_KEYS, differing_provenance, format_values, run_provenance
from midtrain.tracking.rundir import atomic_write_json, atomic_write_text, read_json

log = logging.getLogger(__name__)

CURVE = "train.instruct.probe_curve"  # where a pipeline's metrics.json holds the instruction stage's probe curve


# Collecting runs ---------------------------------------------------------------------------
def _run_row(metrics: Mapping[str, Any], source: str, sweep: str, metric: str, dimensions: str) -> dict:
    row = {k: metrics.get(k) for k in CONDITION_KEYS}
    row["preserve"] = row["preserve"] or "none"  # runs from before strategies existed trained without one
    row.update(run_id=metrics.get("run_id"), sweep=sweep, source=source, score=select(metrics, metric))
    # The run's identity beyond the condition keys: the hash without the seed, and the settings
    # that differ from its preset (runs from before hashes existed share the value None).
    row["cell_hash"] = metrics.get("cell_hash")
    settings = metrics.get("settings")
    row["settings"] = dict(settings) if isinstance(settings, Mapping) else {}
    curve, steps = select(metrics, CURVE), select(metrics, "train.instruct.global_steps")
    row["curve"] = ([(c["step"] / steps * row["instruct_samples"], c["margin"]) for c in curve]
                    if isinstance(curve, list) and is_number(steps) and steps > 0
                    and is_number(row["instruct_samples"]) else [])
    dims = select(metrics, dimensions)
    row["dimensions"] = {str(k): v for k, v in dims.items() if is_number(v)} if isinstance(dims, Mapping) else {}
    row["provenance"] = run_provenance(metrics)  # code and library versions over all attempts
    # The graded result that holds the dimensions (e.g. eval.anima) also counts its grades.
    result = select(metrics, dimensions.rpartition(".")[0]) if "." in dimensions else None
    result = result if isinstance(result, Mapping) else {}
    counts = result.get("grades_by_dimension")
    row["dimension_grades"] = {
        str(d): (int(c["attempted"]), int(c["unparseable"])) for d, c in counts.items()
        if isinstance(c, Mapping) and is_number(c.get("attempted")) and is_number(c.get("unparseable"))
    } if isinstance(counts, Mapping) else {}
    row["complete"] = result.get("complete")
    return row


def collect_runs(sweep_dir: Path, require_done: bool = True, problems: list[dict] | None = None) -> list[dict]:
    """The `metrics.json` of every usable run under one sweep directory, each with `_dir` (its path).

    Every immediate subdirectory not starting with ``.`` is a run (``.multirun`` holds Hydra's
    and submitit's bookkeeping). A run without ``metrics.json``, with a corrupt one, or (with
    ``require_done``) without ``DONE`` is left out, and described in ``problems`` when given:
    ``{"sweep", "run_id", "path", "reason"}``.
    """
    runs = []
    for run_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        path = run_dir / "metrics.json"

        def problem(reason: str, run_id: str | None = None) -> None:
            if problems is not None:
                problems.append({"sweep": sweep_dir.name, "run_id": run_id or run_dir.name, "path": str(path),
                                 "reason": reason})

        if not path.exists():
            problem("no metrics.json (never started, still running, or failed)")
            continue
        try:
            metrics = read_json(path)
        except (ValueError, OSError) as e:
            problem(f"corrupt metrics.json: {e}")
            continue
        if not isinstance(metrics, dict):
            problem(f"corrupt metrics.json: expected a JSON object, got {type(metrics).__name__}")
            continue
        if require_done and not (run_dir / "DONE").exists():
            problem("not DONE (still running, or failed before finishing)", metrics.get("run_id"))
            continue
        runs.append({**metrics, "_dir": str(run_dir)})
    return runs


def collect_sweep_dir(sweep_dir: Path, metric: str, dimensions: str, require_done: bool = True
                      ) -> tuple[list[dict], list[dict]]:
    """Rows for the runs under one sweep directory, and the runs that could not be used
    (`collect_runs`, and runs whose headline metric is absent). A corrupt ``metrics.json`` is
    reported by path; the other runs still aggregate."""
    rows: list[dict] = []
    problems: list[dict] = []
    for metrics in collect_runs(sweep_dir, require_done, problems):
        path = str(Path(metrics["_dir"]) / "metrics.json")
        row = _run_row(metrics, path, sweep_dir.name, metric, dimensions)
        if not is_number(row["score"]):
            problems.append({"sweep": sweep_dir.name, "run_id": metrics.get("run_id") or Path(metrics["_dir"]).name,
                             "path": path, "reason": f"{metric} absent or not a finite number ({row['score']!r})"})
            continue
        rows.append(row)
    return rows, problems


def collect_wandb(groups: Iterable[str], project: str, entity: str | None, metric: str, dimensions: str,
                  api: Any = None) -> tuple[list[dict], list[dict]]:
    """Rows from W&B runs of the given groups, read from run summaries written by ``log_summary``.

    Runs of a group whose summary lacks the headline metric (e.g. the midtrain stage's run)
    are not results and are skipped; runs that are not finished are listed as problems.
    """
    if api is None:
        import wandb

        api = wandb.Api()
    path = f"{entity}/{project}" if entity else project
    rows, problems = [], []
    for group in groups:
        for run in api.runs(path, filters={"group": group}):
            metrics = unflatten(dict(run.summary))
            score = select(metrics, metric)
            if score is None:
                continue
            for k, where in CONDITION_KEYS.items():  # the run config holds the resolved config
                metrics.setdefault(k, select(run.config, where))
            metrics.setdefault("run_id", run.name)
            attempts = ((run.config.get("provenance") or {}).get("attempt") or {}).values()
            metrics.setdefault("provenance", {"attempts": list(attempts)})
            source = f"wandb:{path}/{run.id}"
            if run.state != "finished":
                problems.append({"sweep": group, "run_id": run.name, "path": source,
                                 "reason": f"W&B run state is {run.state}"})
                continue
            rows.append(_run_row(metrics, source, group, metric, dimensions))
    return rows, problems


# Aggregation ------------------------------------------------------------------------------
def _sort_key(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


DEFAULT = "(default)"


def identity_columns(rows: list[dict], group_by: list[str]) -> list[str]:
    """The columns a table needs beyond ``group_by`` so that no cell mixes configurations.

    Every setting (from each run's ``settings``) that takes more than one value among runs of
    one ``group_by`` cell becomes a column (e.g. ``optim.lr``), and its value is copied into
    each row (``(default)`` where the run used the preset's). If runs of one cell still differ
    in ``cell_hash`` (a difference no setting shows, e.g. an edited corpus file), a ``config``
    column with that hash separates them. Runs whose hashes differ are never averaged.
    """
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        cells[tuple(r.get(k) for k in group_by)].append(r)
    keys = sorted({k for r in rows for k in r.get("settings", {}) if k != "seed" and k not in group_by})
    varying = [k for k in keys if any(len({_hashable(r.get("settings", {}).get(k, DEFAULT)) for r in c}) > 1
                                      for c in cells.values())]
    for r in rows:
        for k in varying:
            r[k] = r.get("settings", {}).get(k, DEFAULT)
        r["config"] = r.get("cell_hash")
    cols = list(varying)
    sub: dict[tuple, set] = defaultdict(set)
    for r in rows:
        sub[tuple(_hashable(r.get(k)) for k in group_by + cols)].add(r.get("cell_hash"))
    if any(len(v) > 1 for v in sub.values()):
        cols.append("config")
    return cols


def _hashable(v: Any) -> Any:
    return repr(v) if isinstance(v, (list, dict)) else v


def aggregate(rows: list[dict], group_by: list[str]) -> tuple[list[dict], list[dict]]:
    """Summary rows (one per ``group_by`` cell) and the seeds each cell is missing.

    A cell's expected seeds are all the seeds that appear in its sweep, so a run that never
    wrote anything still shows up as missing.
    """
    seeds_per_sweep: dict[str, set] = defaultdict(set)
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        seeds_per_sweep[r["sweep"]].add(r["seed"])
        cells[tuple(_hashable(r.get(k)) for k in group_by)].append(r)

    summary, missing = [], []
    for key in sorted(cells, key=lambda k: tuple(_sort_key(v) for v in k)):
        runs = sorted(cells[key], key=lambda r: _sort_key(r["seed"]))
        score = mean_stderr([r["score"] for r in runs])
        dims: dict[str, list[float]] = defaultdict(list)
        for r in runs:
            for d, v in r["dimensions"].items():
                dims[d].append(v)
        seeds = [r["seed"] for r in runs]
        cell = dict(zip(group_by, key))
        graded: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in runs:
            for d, (attempted, unparseable) in r.get("dimension_grades", {}).items():
                graded[d][0] += attempted
                graded[d][1] += unparseable
        summary.append({**cell, "n": len(runs), "seeds": seeds, "mean": score["mean"], "stderr": score["stderr"],
                        "dimensions": {d: mean_stderr(v)["mean"] for d, v in sorted(dims.items())},
                        # code commit or library versions that differ between the cell's runs
                        "provenance_differs": differing_provenance(runs),
                        # unparseable grades / grades, summed over the cell's runs
                        "unparseable_share": {d: u / a for d, (a, u) in sorted(graded.items()) if a},
                        "incomplete": [r["run_id"] for r in runs if r.get("complete") is False]})
        expected = set().union(*(seeds_per_sweep[r["sweep"]] for r in runs))
        for s in sorted(expected - set(seeds), key=_sort_key):
            missing.append({**cell, "seed": s})
    return summary, missing


# Output -----------------------------------------------------------------------------------
def fmt_stderr(se: float) -> str:
    """A standard error as the table prints it: three decimals, or two significant digits when
    it is below 0.0005 (never ``0.000`` for a spread that is there)."""
    if se == 0:
        return "0"
    return f"{se:.3f}" if abs(se) >= 0.0005 else f"{se:.2g}"


def _fmt(x: float | None, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _csv(header: list[str], rows: Iterable[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def summary_csv(summary: list[dict], group_by: list[str]) -> str:
    dims = sorted({d for s in summary for d in s["dimensions"]})
    return _csv(group_by + ["n", "seeds", "mean", "stderr", "incomplete_runs"] + [f"dim:{d}" for d in dims]
                + [f"unparseable:{d}" for d in dims] + ["provenance_differs"],
                ([s[k] for k in group_by] + [s["n"], " ".join(map(str, s["seeds"])), _fmt(s["mean"], 6),
                  _fmt(s["stderr"], 6), len(s.get("incomplete", []))] + [_fmt(s["dimensions"].get(d), 6) for d in dims]
                 + [_fmt(s.get("unparseable_share", {}).get(d), 6) for d in dims]
                 + [_differs(s)] for s in summary))


def _differs(cell: dict) -> str:
    """``transformers: 5.23.0 | 5.24.0; code: ...`` for a cell whose runs differ, else empty."""
    return "; ".join(f"{k}: {format_values(v)}" for k, v in (cell.get("provenance_differs") or {}).items())


def _provenance_markdown(summary: list[dict], group_by: list[str], runs: list[dict]) -> list[str]:
    """The code and library versions the runs were produced with, and the cells that mix them."""
    lines = ["", "## Code and library versions", ""]
    flagged = [s for s in summary if s.get("provenance_differs")]
    if flagged:
        lines.append("Cells whose runs were produced by different code or library versions "
                     "(their means compare different programs):")
        lines.append("")
        for s in flagged:
            cell = ", ".join(f"{k}={s[k]}" for k in group_by)
            lines.append(f"- {cell}: {_differs(s)}")
        lines.append("")
    values: dict[str, set] = defaultdict(set)
    for r in runs:
        for k in PROVENANCE_KEYS:
            values[k].update((r.get("provenance") or {}).get(k) or [None])
    if not any(v != {None} for v in values.values()):
        lines.append("No run recorded its code and library versions.")
        return lines
    lines += ["| " + " | ".join(["", *PROVENANCE_KEYS]) + " |", "|" + "---|" * (len(PROVENANCE_KEYS) + 1),
              "| all runs | " + " | ".join(format_values(sorted(values[k], key=lambda x: (x is None, str(x))))
                                         .replace("|", "\\|") for k in PROVENANCE_KEYS) + " |",  # one cell each
              "", "Per-run versions are in `runs.csv`."]
    return lines


def summary_markdown(summary: list[dict], group_by: list[str], metric: str, problems: list[dict],
                     missing: list[dict], runs: list[dict] | None = None) -> str:
    lines = [f"# Sweep report: `{metric}`", "",
             "Mean ± standard error over seeds (n = seeds aggregated).", "",
             "| " + " | ".join(group_by + ["n", "mean ± se", "provenance"]) + " |",
             "|" + "---|" * (len(group_by) + 3)]
    for s in summary:
        se = f" ± {fmt_stderr(s['stderr'])}" if s["stderr"] is not None else ""
        flag = "**differs: " + ", ".join(s["provenance_differs"]) + "**" if s.get("provenance_differs") else ""
        lines.append("| " + " | ".join([str(s[k]) for k in group_by] + [str(s["n"]), f"{s['mean']:.3f}{se}", flag])
                     + " |")
    dims = sorted({d for s in summary for d in s["dimensions"]})
    if dims:
        lines += ["", "## Per-dimension means", "",
                  "Mean over seeds; (u x%) = share of that dimension's grades that were unparseable, over the "
                  "cell's runs. A cell with a run whose graded result is incomplete (complete: false) is flagged.", "",
                  "| " + " | ".join(group_by + dims + ["flag"]) + " |", "|" + "---|" * (len(group_by) + len(dims) + 1)]

        def cell(s: dict, d: str) -> str:
            share = s.get("unparseable_share", {}).get(d)
            return _fmt(s["dimensions"].get(d)) + ("" if share is None else f" (u {share:.0%})")

        for s in summary:
            bad = s.get("incomplete", [])
            flag = f"incomplete: {len(bad)} of {s['n']} runs" if bad else ""
            lines.append("| " + " | ".join([str(s[k]) for k in group_by] + [cell(s, d) for d in dims] + [flag]) + " |")
    lines += _provenance_markdown(summary, group_by, runs or [])
    lines += ["", "## Missing or failed runs", ""]
    incomplete = [(s, r) for s in summary for r in s.get("incomplete", [])]
    if not problems and not missing and not incomplete:
        lines.append("None: every run of every cell finished and was aggregated.")
    for p in problems:
        lines.append(f"- `{p['path']}` ({p['sweep']}/{p['run_id']}): {p['reason']}")
    for m in missing:
        cell = ", ".join(f"{k}={m[k]}" for k in group_by)
        lines.append(f"- {cell}: seed {m['seed']} has no result")
    for s, run_id in incomplete:
        cell = ", ".join(f"{k}={s[k]}" for k in group_by)
        lines.append(f"- {cell}: run {run_id} is aggregated, but its graded result is incomplete (complete: false)")
    return "\n".join(lines) + "\n"


# Treatment minus control ----------------------------------------------------------------------
def _paired(rows: list[dict], keys: Sequence[str], minuend: str, subtrahend: str,
            value: Callable[[dict], Any]) -> Iterator[tuple[tuple, dict, dict, list]]:
    """`(cell, {seed: minuend's value}, {seed: subtrahend's value}, shared seeds)` per cell of
    `keys` in which both conditions have a seed, in cell order; rows whose value is None are skipped."""
    by: dict[tuple, dict[str, dict]] = defaultdict(lambda: {minuend: {}, subtrahend: {}})
    for r in rows:
        if r.get("condition") in (minuend, subtrahend) and (v := value(r)) is not None:
            by[tuple(r.get(k) for k in keys)][r["condition"]][r["seed"]] = v
    for key in sorted(by, key=lambda k: tuple(_sort_key(v) for v in k)):
        a, b = by[key][minuend], by[key][subtrahend]
        seeds = sorted(set(a) & set(b), key=_sort_key)
        if seeds:
            yield key, a, b, seeds


def gaps(rows: list[dict], group_by: list[str], minuend: str = COMPARISONS[0][0], subtrahend: str = COMPARISONS[0][1]
         ) -> list[dict]:
    """``minuend - subtrahend`` per cell of ``group_by`` without ``condition``, paired by seed.

    Each seed present in both conditions gives one difference; the gap is their mean and its
    standard error is that of the differences (so seed-to-seed noise shared by both
    conditions, e.g. the instruction-data draw, cancels). Seeds present in only one condition
    are listed under ``unpaired``.
    """
    keys = [k for k in group_by if k != "condition"]
    out = []
    for key, a, b, seeds in _paired(rows, keys, minuend, subtrahend, lambda r: r["score"]):
        gap = mean_stderr([a[s] - b[s] for s in seeds])
        out.append({**dict(zip(keys, key)), "n": len(seeds), "seeds": seeds, "gap": gap["mean"],
                    "stderr": gap["stderr"],
                    minuend: mean_stderr([a[s] for s in seeds])["mean"],
                    subtrahend: mean_stderr([b[s] for s in seeds])["mean"],
                    "unpaired": sorted(set(a) ^ set(b), key=_sort_key)})
    return out


def curve_gaps(rows: list[dict], minuend: str = COMPARISONS[0][0], subtrahend: str = COMPARISONS[0][1]) -> list[dict]:
    """The in-run probe curve's ``minuend - subtrahend`` gap, per (model, num_docs, instruct_samples,
    preserve), mean ± stderr over the seeds both conditions have.

    The two conditions' curves can sit at different steps (replayed corpora differ in length),
    so every curve is read, by linear interpolation, at the points of the first seed's
    ``minuend`` curve.
    """
    import numpy as np

    keys = ("model", "num_docs", "instruct_samples", "preserve")
    out = []
    curve = lambda r: sorted(r.get("curve") or []) or None  # noqa: E731
    for key, a, b, seeds in _paired(rows, keys, minuend, subtrahend, curve):
        xs = [x for x, _ in a[seeds[0]]]

        def at(curve: list) -> np.ndarray:
            return np.interp(xs, [x for x, _ in curve], [y for _, y in curve])

        diffs = np.array([at(a[s]) - at(b[s]) for s in seeds])
        points = []
        for j, x in enumerate(xs):
            gap = mean_stderr([float(d) for d in diffs[:, j]])
            points.append({"samples_seen": x, "gap": gap["mean"], "stderr": gap["stderr"]})
        out.append({**dict(zip(keys, key)), "seeds": seeds, "points": points})
    return out


def gaps_markdown(rows: list[dict], metric: str, minuend: str, subtrahend: str) -> str:
    if not rows:
        return ""
    keys = [k for k in rows[0] if k not in ("n", "seeds", "gap", "stderr", minuend, subtrahend, "unpaired")]
    lines = ["", f"## {minuend} minus {subtrahend}", "",
             f"`{metric}`, paired by seed: mean ± standard error of the per-seed differences.", "",
             "| " + " | ".join(keys + ["n", minuend, subtrahend, "gap ± se"]) + " |", "|" + "---|" * (len(keys) + 4)]
    for g in rows:
        se = f" ± {g['stderr']:.4f}" if g["stderr"] is not None else ""
        lines.append("| " + " | ".join([str(g[k]) for k in keys] + [str(g["n"]), f"{g[minuend]:.4f}",
                                                                      f"{g[subtrahend]:.4f}", f"{g['gap']:.4f}{se}"]) + " |")
    return "\n".join(lines) + "\n"


def _validate(cfg: DictConfig) -> tuple[list[Path], Path]:
    sweep_dirs = cfg.sweep_dirs
    if isinstance(sweep_dirs, str):
        sweep_dirs = [sweep_dirs]
    wandb_groups = list(cfg.wandb.get("groups") or [])
    if not sweep_dirs and not wandb_groups:
        raise ValueError("sweep_dirs: give at least one sweep directory (or wandb.groups)")
    dirs = [Path(str(d)).expanduser() for d in sweep_dirs]
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"sweep_dirs: {d} is not a directory")
    group_by = list(cfg.group_by)
    bad = [k for k in group_by if k not in CONDITION_KEYS]
    if bad:
        raise ValueError(f"group_by: unknown key(s) {bad}; choose from {list(CONDITION_KEYS)}")
    if "seed" in group_by:
        raise ValueError("group_by: 'seed' cannot be a group key; seeds are what is averaged over")
    return dirs, Path(str(cfg.out_dir)).expanduser()


def report(cfg: DictConfig) -> dict:
    """Aggregate the runs of one or more sweeps and write tables and plots to ``cfg.out_dir``.

    Returns:
        ``{"summary": [...], "runs": [...], "problems": [...], "missing": [...], "files": {...}}``.
    """
    dirs, out_dir = _validate(cfg)
    group_by = list(cfg.group_by)
    rows, problems = [], []
    for d in dirs:
        r, p = collect_sweep_dir(d, cfg.metric, cfg.dimensions, bool(cfg.require_done))
        rows += r
        problems += p
    if cfg.wandb.get("groups"):
        r, p = collect_wandb(cfg.wandb.groups, cfg.wandb.project, cfg.wandb.entity, cfg.metric, cfg.dimensions)
        rows += r
        problems += p
    for p in problems:
        log.warning("not aggregated: %s (%s)", p["path"], p["reason"])
    extra = identity_columns(rows, group_by)
    if extra:
        log.info("settings that vary within a cell become columns: %s", extra)
    group_by = group_by + extra
    summary, missing = aggregate(rows, group_by)
    for cell in summary:  # plot legends name them too
        cell["legend_extra"] = " ".join(f"{k}={cell[k]}" for k in extra)

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"summary_csv": out_dir / "summary.csv", "summary_md": out_dir / "summary.md",
             "runs_csv": out_dir / "runs.csv", "problems_csv": out_dir / "problems.csv",
             "report_json": out_dir / "report.json"}
    atomic_write_text(files["summary_csv"], summary_csv(summary, group_by))
    minuend, subtrahend = str(cfg.gap.minuend), str(cfg.gap.subtrahend)
    pair_by = [k for k in group_by if k != "config"]  # conditions always differ in hash: pair without it
    paired = stats.condition_gaps(rows, pair_by)  # with 95% t intervals, also vs the baseline
    gap_rows = gaps(rows, pair_by, minuend, subtrahend)
    curves = curve_gaps(rows, minuend, subtrahend)
    atomic_write_text(files["summary_md"], summary_markdown(summary, group_by, cfg.metric, problems, missing, rows)
                      + gaps_markdown(gap_rows, cfg.metric, minuend, subtrahend)
                      + stats.gaps_markdown(paired))
    atomic_write_text(files["runs_csv"], _csv(
        ["sweep", "run_id", *CONDITION_KEYS, "score", "source", *PROVENANCE_KEYS],
        ([r["sweep"], r["run_id"], *[r[k] for k in CONDITION_KEYS], r["score"], r["source"],
          *[format_values(r["provenance"].get(k)) for k in PROVENANCE_KEYS]] for r in rows)))
    atomic_write_text(files["problems_csv"], _csv(
        ["sweep", "run_id", "path", "reason"],
        [[p["sweep"], p["run_id"], p["path"], p["reason"]] for p in problems]
        + [["", "", "", f"missing seed {m['seed']} for " + ", ".join(f"{k}={m[k]}" for k in group_by)]
           for m in missing]))
    if gap_rows:
        files["gaps_csv"] = out_dir / "gaps.csv"
        keys = [k for k in gap_rows[0] if k not in ("n", "seeds", "gap", "stderr", minuend, subtrahend, "unpaired")]
        atomic_write_text(files["gaps_csv"], _csv(
            keys + ["n", "seeds", minuend, subtrahend, "gap", "stderr"],
            ([g[k] for k in keys] + [g["n"], " ".join(map(str, g["seeds"])), _fmt(g[minuend], 6),
              _fmt(g[subtrahend], 6), _fmt(g["gap"], 6), _fmt(g["stderr"], 6)] for g in gap_rows)))
    plots = figures.report_figures(summary, out_dir, cfg) if cfg.plots.enabled and summary else {}
    if cfg.plots.enabled and (gap_rows or curves):
        plots.update(figures.gap_figures(gap_rows, curves, out_dir, cfg))
    result = {"summary": summary, "runs": rows, "problems": problems, "missing": missing,
              "gaps": gap_rows, "curve_gaps": curves, "paired_gaps": paired,
              "files": {**{k: str(v) for k, v in files.items()}, **plots}}
    atomic_write_json(files["report_json"], result)
    log.info("%d runs in %d cells, %d problems, %d missing seeds -> %s", len(rows), len(summary), len(problems),
             len(missing), out_dir)
    return result


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="report")
def main(cfg: DictConfig) -> None:
    report(cfg)


if __name__ == "__main__":  # pragma: no cover
    main()
