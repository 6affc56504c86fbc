"""The end-to-end demo: the whole idea on a real pretrained model, offline, in minutes on a CPU.

    python -m midtrain.demo                                   # SmolLM2-135M-Instruct, CPU minutes
    python -m midtrain.demo --grader-model anthropic/claude-sonnet-4-5   # also ANIMA, graded
    python -m midtrain.demo model=tiny_llama corpus.num_docs=8   # seconds; any grid override

`run_demo(cfg)` does four things, each through the project's own entry points, so the demo
exercises exactly what a real sweep does:

1. writes the template corpora of every universe the grid trains on (`midtrain.generate`);
2. runs the sweep preset (`sweeps/demo.yaml`: treatment vs control on SmolLM2-135M-Instruct,
   probe scored before midtraining, after it and after instruction tuning) as a Hydra
   multirun of `midtrain-pipeline` in a subprocess, as a user would launch it;
3. runs `midtrain-report` once per scored stage (tables and plots over the sweep);
4. prints a summary of probe margins per condition and stage, draws them, and says where
   the tables and plots are.

Everything resumes: finished runs (DONE) are skipped, so a second call only re-reports.
"""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from midtrain.paths import CONF_DIR, SWEEPS_DIR
from midtrain.tracking import atomic_write_json, atomic_write_text, read_json

log = logging.getLogger(__name__)

STAGES = ("base", "midtrain", "instruct")  # the order a model passes through them
CONDITION_ORDER = ("treatment", "control", "instruct_baseline", "base")
MARGIN_UNIT = "nats/token"


# Composing configs -----------------------------------------------------------------------
@contextmanager
def _hydra_at(config_dir: Path) -> Iterator[None]:
    """Hydra's compose API over `config_dir`, also from inside a running Hydra app.

    A running app owns the global Hydra instance and `initialize_config_dir` refuses to
    replace it; the app's instance is set aside and put back afterwards.
    """
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    saved = gh.hydra if gh.is_initialized() else None
    gh.clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            yield
    finally:
        gh = GlobalHydra.instance()
        gh.clear()
        if saved is not None:
            gh.initialize(saved)


def compose_preset(preset: str, overrides: Sequence[str] = (), hydra_cfg: bool = False) -> DictConfig:
    """A sweep preset composed as `--config-dir sweeps --config-name <preset>` would (no job overrides)."""
    from hydra import compose

    if not (SWEEPS_DIR / f"{preset}.yaml").is_file():
        known = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
        raise ValueError(f"preset={preset!r}: no sweeps/{preset}.yaml; known presets: {known}")
    with _hydra_at(SWEEPS_DIR):
        return compose(preset, overrides=[f"hydra.searchpath=[file://{CONF_DIR}]", *overrides],
                       return_hydra_config=hydra_cfg)


def compose_conf(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """A primary config of conf/ (generate, report) with overrides."""
    from hydra import compose

    with _hydra_at(CONF_DIR):
        return compose(name, overrides=list(overrides))


def _quote(value: Any) -> str:
    """A value as a quoted Hydra override string (paths and ids may hold `=`, `,` or `:`)."""
    s = str(value)
    if "'" in s:
        raise ValueError(f"{s!r}: a single quote cannot be passed through a Hydra override")
    return f"'{s}'"


# The grid --------------------------------------------------------------------------------
def grid_overrides(overrides: Sequence[str] = (), grader_models: Sequence[str] = (),
                   eval_overrides: Sequence[str] = (), preset: str = "demo") -> list[str]:
    """The overrides every job of the grid gets: the user's, then the eval suites, then an
    absolute `paths.runs_root` (so every step agrees on where the runs are).

    Raises:
        ValueError: an entry that is not `key=value`, or a grader whose API key is not set.
    """
    from midtrain.generate import check_model_access

    bad = [o for o in [*overrides, *eval_overrides] if not isinstance(o, str) or "=" not in o]
    if bad:
        raise ValueError(f"overrides must be Hydra 'key=value' strings, got {bad}")
    for g in grader_models:  # a missing API key fails here, not after the training
        check_model_access(g)
    out = list(overrides)
    eval_over = list(eval_overrides)
    if grader_models:
        out.append("stages.evaluate.suites=[probe,anima]")
        eval_over.insert(0, f"grader_models=[{','.join(grader_models)}]")
    if eval_over:
        out.append("stages.evaluate.overrides=[" + ",".join(_quote(o) for o in eval_over) + "]")
    runs_root = compose_preset(preset, _fixed(out)).paths.runs_root
    return [*out, f"paths.runs_root={_quote(Path(str(runs_root)).expanduser().resolve())}"]


def _fixed(overrides: Sequence[str]) -> list[str]:
    """The overrides without sweeps (`seed=0,1`): what every job shares, composable in one go."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [o.input_line for o in parsed if not o.is_sweep_override()]


def expand_jobs(preset: str, overrides: Sequence[str]) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper makes them: the preset's sweeper params,
    replaced by command-line overrides of the same key, crossed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hcfg = compose_preset(preset, _fixed(overrides), hydra_cfg=True)
    params = OmegaConf.to_container(hcfg.hydra.sweeper.params, resolve=False) or {}
    parser = OverridesParser.create()
    merged = {}
    for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()]) + parser.parse_overrides(list(overrides)):
        merged[o.get_key_element()] = o
    axes = []
    for key, o in merged.items():
        if o.is_sweep_override():
            axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            axes.append([o.input_line])
    return [list(job) for job in itertools.product(*axes)]


def plan_corpora(preset: str, overrides: Sequence[str]) -> list[dict]:
    """The generated corpora the grid's jobs read: `[{universe, out_dir, num_docs}]`.

    Only corpora in the generated layout (`<paths.corpora_root>/<universe>/documents.jsonl`)
    are the demo's to write; a job reading any other corpus is left to fail on its own terms.
    """
    need: dict[Path, dict] = {}
    for job in expand_jobs(preset, overrides):
        c = compose_preset(preset, job)
        if not c.stages.midtrain.enabled or int(c.corpus.num_docs) <= 0 or c.stages.midtrain.objective != "lm":
            continue
        if c.corpus.source != "jsonl":
            continue
        path = Path(str(c.corpus.path)).expanduser().resolve()
        expected = Path(str(c.paths.corpora_root)).expanduser().resolve() / str(c.universe) / "documents.jsonl"
        if path != expected:
            continue
        entry = need.setdefault(path.parent, {"universe": str(c.universe), "out_dir": path.parent, "num_docs": 0})
        entry["num_docs"] = max(entry["num_docs"], int(c.corpus.num_docs))
    return sorted(need.values(), key=lambda e: e["universe"])


def generate_corpora(plan: Sequence[Mapping], seed: int) -> list[dict]:
    """Write each planned corpus with the offline template generator; returns the manifests."""
    from midtrain.generate import generate

    manifests = []
    for entry in plan:
        gcfg = compose_conf("generate", ["generator=template", f"universe={entry['universe']}",
                                         f"num_docs={entry['num_docs']}", f"out_dir={_quote(entry['out_dir'])}",
                                         f"seed={seed}"])
        manifest = generate(gcfg)
        log.info("corpus %s: %d template documents in %s", entry["universe"], manifest["num_written"], entry["out_dir"])
        manifests.append(manifest)
    return manifests


def run_grid(preset: str, overrides: Sequence[str]) -> None:
    """`midtrain-pipeline --config-dir sweeps --config-name <preset> -- overrides` in a subprocess.

    A subprocess, because a multirun is a Hydra app of its own; its progress bars and logs
    go straight to this terminal.
    """
    cmd = [sys.executable, "-m", "midtrain.pipeline", "--config-dir", str(SWEEPS_DIR), "--config-name", preset,
           *overrides]
    log.info("running the grid: %s", " ".join(cmd))
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the grid failed (exit status {proc.returncode}): {' '.join(cmd)}")


# Summary ---------------------------------------------------------------------------------
def collect_runs(sweep_dir: Path) -> list[dict]:
    """The metrics.json of every finished run under a sweep directory."""
    runs = []
    for run_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (run_dir / "DONE").exists() and (run_dir / "metrics.json").exists():
            runs.append(read_json(run_dir / "metrics.json"))
    return runs


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def summarize(runs: Sequence[Mapping]) -> dict:
    """Probe margins per condition and stage, averaged over a condition's runs (seeds).

    Args:
        runs: pipeline metrics (each with `condition` and `eval_by_stage.<stage>.probe`).

    Returns:
        `{"unit", "conditions": {condition: {"runs", "stages": {stage: {"margin", "accuracy",
        "n"}}, "anima"?}}, "treatment_minus_control"?: {stage: margin difference}}`. A stage
        a condition never scored is absent (the base condition has no midtrain stage).
    """
    by_cond: dict[str, list[Mapping]] = defaultdict(list)
    for r in runs:
        by_cond[str(r.get("condition"))].append(r)
    order = sorted(by_cond, key=lambda c: (CONDITION_ORDER.index(c) if c in CONDITION_ORDER else 99, c))
    conditions: dict[str, dict] = {}
    for cond in order:
        stages: dict[str, dict] = {}
        for stage in STAGES:
            probes = [r["eval_by_stage"][stage]["probe"] for r in by_cond[cond]
                      if "probe" in r.get("eval_by_stage", {}).get(stage, {})]
            if probes:
                stages[stage] = {"margin": _mean([p["margin"] for p in probes]),
                                 "accuracy": _mean([p["accuracy"] for p in probes]), "n": len(probes)}
        entry: dict[str, Any] = {"runs": len(by_cond[cond]), "stages": stages}
        anima = [r["eval"]["anima"]["overall_mean"] for r in by_cond[cond] if "anima" in r.get("eval", {})]
        if anima:
            entry["anima"] = {"overall_mean": _mean(anima), "n": len(anima)}
        conditions[cond] = entry
    out: dict[str, Any] = {"unit": MARGIN_UNIT, "conditions": conditions}
    t, c = conditions.get("treatment"), conditions.get("control")
    if t and c:
        out["treatment_minus_control"] = {s: t["stages"][s]["margin"] - c["stages"][s]["margin"]
                                          for s in STAGES if s in t["stages"] and s in c["stages"]}
    return out


def format_summary(summary: Mapping) -> str:
    """The summary as a plain-text table (also valid Markdown)."""
    conds = summary["conditions"]
    has_anima = any("anima" in v for v in conds.values())
    header = ["condition", *[f"{s} margin (acc)" for s in STAGES]] + (["ANIMA (final)"] if has_anima else [])
    rows = []
    for cond, v in conds.items():
        cells = [cond if v["runs"] == 1 else f"{cond} (n={v['runs']})"]
        for s in STAGES:
            st = v["stages"].get(s)
            cells.append(f"{st['margin']:+.3f} ({st['accuracy']:.0%})" if st else "-")
        if has_anima:
            cells.append(f"{v['anima']['overall_mean']:.1%}" if "anima" in v else "-")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    lines = [f"Compassion probe margin ({summary['unit']}, compassionate minus dismissive; "
             "acc = share of pairs preferring the compassionate continuation)", "",
             line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]
    diff = summary.get("treatment_minus_control")
    if diff:
        lines += ["", "treatment - control: " + ", ".join(f"{s} {d:+.3f}" for s, d in diff.items())]
        if "midtrain" in diff:
            verdict = "above" if diff["midtrain"] > 0 else "NOT above"
            lines.append(f"After midtraining the treatment's margin is {verdict} the control's.")
    return "\n".join(lines) + "\n"


def plot_summary(summary: Mapping, path: Path) -> Path:
    """Probe margin by stage, one line per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for cond, v in summary["conditions"].items():
        xs = [i for i, s in enumerate(STAGES) if s in v["stages"]]
        ax.plot(xs, [v["stages"][STAGES[i]]["margin"] for i in xs], marker="o", label=cond)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(STAGES)))
    ax.set_xticklabels(["before midtraining", "after midtraining", "after instruction tuning"], fontsize=8)
    ax.set_ylabel(f"probe margin ({summary['unit']})")
    ax.set_title("Compassion probe by stage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_reports(sweep_dir: Path, report_dir: Path, stages: Sequence[str], anima: bool) -> dict[str, dict]:
    """`midtrain-report` over the sweep once per scored stage (and for ANIMA when graded)."""
    from midtrain.report import report

    jobs = {s: (f"eval_by_stage.{s}.probe.margin", f"eval_by_stage.{s}.probe.by_dimension") for s in stages}
    if anima:
        jobs["anima"] = ("eval.anima.overall_mean", "eval.anima.by_dimension")
    out = {}
    for name, (metric, dims) in jobs.items():
        rcfg = compose_conf("report", [f"sweep_dirs=[{_quote(sweep_dir)}]", f"out_dir={_quote(report_dir / name)}",
                                       f"metric={metric}", f"dimensions={dims}"])
        out[name] = report(rcfg)
    return out


# The demo --------------------------------------------------------------------------------
def run_demo(overrides: Sequence[str] = (), *, preset: str = "demo", grader_models: Sequence[str] = (),
             eval_overrides: Sequence[str] = (), report_dir: str | Path | None = None,
             generate_seed: int = 0) -> dict:
    """Generate, run the grid, report and summarize; returns the summary with file paths.

    Args:
        overrides: Hydra overrides for every job of the grid (e.g. `model=tiny_llama`, `seed=0,1`).
        preset: the grid, `sweeps/<preset>.yaml`.
        grader_models: Inspect model ids grading ANIMA; non-empty adds the anima suite.
        eval_overrides: extra `midtrain-eval` overrides (e.g. `anima.data_dir=...`).
        report_dir: where tables and plots go; default `<runs_root>/<sweep_name>-report`.
        generate_seed: seed of the template corpora.

    Raises:
        ValueError: a bad preset, override or grader (naming it), before any work.
        RuntimeError: the grid failed (its own output above says why).
    """
    t0 = time.monotonic()
    overrides = grid_overrides(overrides, grader_models, eval_overrides, preset)
    jobs = expand_jobs(preset, overrides)
    pcfg = compose_preset(preset, jobs[0])  # an unknown key or option fails here, before any work
    ev = pcfg.stages.evaluate
    if not ev.enabled or "probe" not in ev.suites:
        raise ValueError("the demo summarizes the probe: keep stages.evaluate.enabled=true and probe in "
                         f"stages.evaluate.suites (got {list(ev.suites)})")
    sweep_dir = Path(str(pcfg.paths.runs_root)) / str(pcfg.sweep_name)
    report_dir = Path(report_dir or Path(str(pcfg.paths.runs_root)) / f"{pcfg.sweep_name}-report").expanduser().resolve()
    scored = [s for s in ev.after if s in STAGES]

    plan = plan_corpora(preset, overrides)
    generate_corpora(plan, generate_seed)
    t_gen = time.monotonic()

    run_grid(preset, overrides)
    t_grid = time.monotonic()

    reports = run_reports(sweep_dir, report_dir, scored, anima=bool(grader_models))
    summary = summarize(collect_runs(sweep_dir))
    if not summary["conditions"]:
        raise RuntimeError(f"no finished runs under {sweep_dir}")
    text = format_summary(summary)
    files = {"summary_md": str(report_dir / "demo_summary.md"), "summary_json": str(report_dir / "demo_summary.json"),
             "probe_by_stage_png": str(plot_summary(summary, report_dir / "probe_by_stage.png"))}
    for name, r in reports.items():
        files.update({f"{name}/{k}": v for k, v in r["files"].items() if str(v).endswith((".md", ".csv", ".png"))})
    timing = {"generate_s": round(t_gen - t0, 1), "grid_s": round(t_grid - t_gen, 1),
              "total_s": round(time.monotonic() - t0, 1)}
    result = {**summary, "sweep_dir": str(sweep_dir), "files": files, "seconds": timing}
    atomic_write_text(report_dir / "demo_summary.md", text)
    atomic_write_json(report_dir / "demo_summary.json", result)

    print("\n" + text)
    print(f"Runs: {sweep_dir}")
    for name, path in files.items():
        print(f"  {name}: {path}")
    print(f"Time: {timing['total_s']:.0f} s (corpora {timing['generate_s']:.0f} s, grid {timing['grid_s']:.0f} s)")
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m midtrain.demo [options] [grid overrides]`.

    argparse rather than `@hydra.main`: the demo's positional arguments are the grid's own
    Hydra overrides, passed through unquoted, and its config is the sweep preset itself.
    """
    import argparse

    ap = argparse.ArgumentParser(prog="python -m midtrain.demo", description=__doc__.split("\n\n")[0],
                                 epilog="Positional arguments are Hydra overrides for every job of the grid, "
                                        "e.g. model=tiny_llama corpus.num_docs=8 'seed=0,1'.")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the grid's jobs")
    ap.add_argument("--preset", default="demo", help="the grid: sweeps/<preset>.yaml (default: demo)")
    ap.add_argument("--grader-model", dest="graders", action="append", default=[],
                    help="an Inspect model id grading ANIMA (repeatable); adds the ANIMA suite")
    ap.add_argument("--eval-override", dest="eval_overrides", action="append", default=[],
                    help="an extra midtrain-eval override, e.g. anima.data_dir=/data/anima (repeatable)")
    ap.add_argument("--report-dir", default=None, help="default: <runs_root>/<sweep_name>-report")
    ap.add_argument("--generate-seed", type=int, default=0, help="seed of the template corpora")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        run_demo(args.overrides, preset=args.preset, grader_models=args.graders,
                 eval_overrides=args.eval_overrides, report_dir=args.report_dir, generate_seed=args.generate_seed)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        sys.exit(f"midtrain demo: {e}")


if __name__ == "__main__":
    main()
