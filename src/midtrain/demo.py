"""The end-to-end demo: a small study on a real pretrained model, offline, on a CPU.

    python -m midtrain.demo                                   # the study on SmolLM2-135M-Instruct
    python -m midtrain.demo --grader-model anthropic/claude-sonnet-4-5   # also ANIMA, graded
    python -m midtrain.demo model=tiny_llama corpus.num_docs=8   # minutes; any grid override

`run_demo(cfg)` does five things, each through the project's own entry points, so the demo
exercises exactly what a real sweep does:

1. writes the template corpora of every universe the grid trains on (`midtrain.generate`);
2. runs the sweep preset (`sweeps/demo.yaml`: treatment, matched control and the
   instruction-tuning baseline, three seeds, instruction tuning at two sizes) as Hydra
   multiruns of `midtrain-pipeline` in subprocesses, as a user would launch them: first a
   reference run scoring the untrained model, then seed by seed one multirun per instruction
   size, the larger sizes reusing the finished midtraining stage of the smallest;
3. runs `midtrain-report` once per scored stage (tables and plots over the sweep);
4. summarizes the probe (`midtrain.study.summarize`): per condition and stage the mean and
   standard error over seeds on the original and the held-out pairs; treatment minus control
   and minus the baseline with 95% intervals paired over seeds and probe pairs
   (`midtrain.stats`); the erosion slope across instruction sizes; the probe's lexical overlap
   with every training corpus; and sentences saying what the intervals support;
5. prints the summary, draws the differences per stage, the erosion and the probe during
   midtraining (`midtrain.figures`), and says where the tables and plots are.

This module composes the configs, plans and writes the corpora, runs the grid and calls the
report, the study and the figures; the statistics and the drawing live in those.

Everything resumes: finished runs (DONE) are skipped, so a second call only re-reports.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from midtrain import figures, study
from midtrain.paths import CONF_DIR, SWEEPS_DIR
from midtrain.report import collect_runs
from midtrain.tracking import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)



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
    """A sweep preset composed as `--config-dir sweeps --config-name <preset>` would (no job overrides).

    Read-only: the result is shared between calls with the same arguments (the demo composes
    every job several times while planning), so copy it before changing it.
    """
    if not (SWEEPS_DIR / f"{preset}.yaml").is_file():
        known = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
        raise ValueError(f"preset={preset!r}: no sweeps/{preset}.yaml; known presets: {known}")
    return _compose_preset(preset, tuple(overrides), hydra_cfg, (SWEEPS_DIR / f"{preset}.yaml").stat().st_mtime_ns)


@functools.lru_cache(maxsize=512)
def _compose_preset(preset: str, overrides: tuple[str, ...], hydra_cfg: bool, _mtime: int) -> DictConfig:
    from hydra import compose

    with _hydra_at(SWEEPS_DIR):
        cfg = compose(preset, overrides=[f"hydra.searchpath=[file://{CONF_DIR}]", *overrides],
                      return_hydra_config=hydra_cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


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
    """The overrides every job of the grid gets: the user's, then the eval suites and settings
    (`pipeline_eval_override` of each), then an absolute `paths.runs_root` (so every step
    agrees on where the runs are).

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
    if grader_models:
        out += ["eval=[probe,anima]", f"stages.evaluate.grader_models=[{','.join(grader_models)}]"]
    out += [pipeline_eval_override(o) for o in eval_overrides]
    runs_root = compose_preset(preset, _fixed(out)).paths.runs_root
    return [*out, f"paths.runs_root={_quote(Path(str(runs_root)).expanduser().resolve())}"]


def pipeline_eval_override(override: str) -> str:
    """A `midtrain-eval` override as the pipeline spells it: suites (`eval=...`, `eval.<suite>.*`)
    as they are, every other setting under `stages.evaluate` (`inspect.limit=2` ->
    `stages.evaluate.inspect.limit=2`).

    Raises:
        ValueError: `run_dir` or `force`, which the pipeline sets for each stage it scores.
    """
    prefix = override[:1] if override[:1] in "+~" else ""
    key = override[len(prefix):].split("=", 1)[0]
    if key.split(".")[0] in ("run_dir", "force"):
        raise ValueError(f"eval override {override!r}: the pipeline sets {key} for each stage it scores")
    if key == "eval" or key.startswith("eval.") or key.startswith("eval@"):
        return override
    return f"{prefix}stages.evaluate.{override[len(prefix):]}"


def _fixed(overrides: Sequence[str]) -> list[str]:
    """The overrides without sweeps (`seed=0,1`): what every job shares, composable in one go."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [o.input_line for o in parsed if not o.is_sweep_override()]


def expand_jobs(preset: str, overrides: Sequence[str]) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper makes them: the preset's sweeper params,
    replaced by command-line overrides of the same key, crossed (`BasicSweeper.split_arguments`)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hcfg = compose_preset(preset, _fixed(overrides), hydra_cfg=True)
    params = OmegaConf.to_container(hcfg.hydra.sweeper.params, resolve=False) or {}
    parsed = OverridesParser.create().parse_overrides([*(f"{k}={v}" for k, v in params.items()), *overrides])
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None) for job in batch]


def plan_corpora(preset: str, overrides: Sequence[str]) -> list[dict]:
    """The generated corpora the grid's jobs read: `[{universe, out_dir, num_docs}]`.

    `num_docs` is the most any job draws, or `corpus.pool_size` when larger (a pool to draw a
    different subset from per seed, with `corpus.seed: ${seed}`).

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
        entry["num_docs"] = max(entry["num_docs"], int(c.corpus.num_docs), int(c.corpus.get("pool_size") or 0))
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


# Study inputs and the report ------------------------------------------------------------
def demo_corpora(preset: str, overrides: Sequence[str]) -> dict[str, list[str]]:
    """The texts each condition's training stages can draw on, for the overlap table: the
    documents of each generated corpus, the baseline's Q&A pool and the instruction set."""
    from midtrain.data.corpus import load_pool
    from midtrain.data.sft import load_instruct_rows, rows_to_conversations

    out: dict[str, list[str]] = {}
    seen: set = set()
    for job in expand_jobs(preset, overrides):
        c = compose_preset(preset, job)
        if not c.stages.midtrain.enabled or int(c.corpus.num_docs) <= 0:
            continue
        if c.stages.midtrain.objective == "lm":
            name, key = f"{c.condition} documents", ("lm", str(c.corpus.path))
            if key not in seen:
                seen.add(key)
                out[name] = [d["text"] for d in load_pool(c.corpus)]
        else:
            name, key = f"{c.condition} Q&A", ("sft", str(c.qa.get("universe")), str(c.qa.get("path")))
            if key not in seen:
                seen.add(key)
                rows, origin = load_instruct_rows(c.qa)
                out[name] = [" ".join(m["content"] for m in conv)
                             for conv in rows_to_conversations(rows, c.qa.get("format", "auto"), origin)]
        if int(c.instruct.samples) > 0 and ("instruct", str(c.instruct.path)) not in seen:
            seen.add(("instruct", str(c.instruct.path)))
            rows, origin = load_instruct_rows(c.instruct)
            out["instruction set"] = [" ".join(m["content"] for m in conv)
                                      for conv in rows_to_conversations(rows, c.instruct.get("format", "auto"), origin)]
    if "instruction set" in out:
        out["instruction set"] = out.pop("instruction set")
    return out


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
def _override_key(o: str) -> str:
    return o.split("=", 1)[0].lstrip("+~")


def _without(overrides: Sequence[str], *keys: str) -> list[str]:
    return [o for o in overrides if _override_key(o) not in keys]


def reference_overrides(preset: str, overrides: Sequence[str]) -> list[str] | None:
    """The grid of the reference run: the untrained model (`experiment=base`, no instruction
    tuning), scored before any training; None when the grid has base runs of its own. A
    pretrained model is the same for every seed, so it is scored once (the first seed); a
    randomly initialised one once per seed."""
    cfgs = [compose_preset(preset, j) for j in expand_jobs(preset, overrides)]
    if any(c.condition == "base" for c in cfgs):
        return None  # the grid scores the untrained model itself
    seeds = sorted({int(c.seed) for c in cfgs})
    if cfgs[0].model.source != "config":
        seeds = seeds[:1]
    return [*_without(overrides, "experiment", "seed", "instruct.samples", "stages.evaluate.after"), "experiment=base",
            "seed=" + ",".join(map(str, seeds)), "instruct.samples=0", "stages.evaluate.after=[base]"]


def run_demo(overrides: Sequence[str] = (), *, preset: str = "demo", grader_models: Sequence[str] = (),
             eval_overrides: Sequence[str] = (), report_dir: str | Path | None = None,
             generate_seed: int = 0) -> dict:
    """Generate, run the grid, report and summarize; returns the summary with file paths.

    The grid runs in phases: the reference run (the untrained model), then one multirun per
    seed. Inside a seed's multirun the instruction sizes of each condition follow each other,
    and the pipeline links the finished midtraining stage (and its probe result) of the first
    into the others (`reuse_stages`), since midtraining does not depend on what follows. A demo
    stopped part-way thus leaves complete seeds behind, and the next call carries on where it
    stopped.

    Args:
        overrides: Hydra overrides for every job of the grid (e.g. `model=tiny_llama`, `seed=0,1`).
        preset: the grid, `sweeps/<preset>.yaml`.
        grader_models: Inspect model ids grading ANIMA; non-empty adds the anima suite.
        eval_overrides: extra `midtrain-eval` overrides (e.g. `eval.anima.data_dir=...`,
            `inspect.limit=2`), placed where the pipeline holds them.
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
    if not ev.enabled or "probe" not in pcfg.eval:
        raise ValueError("the demo summarizes the probe: keep stages.evaluate.enabled=true and probe among the "
                         f"eval suites (e.g. eval=[probe,anima]; got eval={list(pcfg.eval)})")
    sweep_dir = Path(str(pcfg.paths.runs_root)) / str(pcfg.sweep_name)
    report_dir = Path(report_dir or Path(str(pcfg.paths.runs_root)) / f"{pcfg.sweep_name}-report").expanduser().resolve()
    reference = reference_overrides(preset, overrides)
    scored = [s for s in study.STAGES if s in ev.after or (s == "base" and reference is not None)]

    plan = plan_corpora(preset, overrides)
    generate_corpora(plan, generate_seed)
    t_gen = time.monotonic()

    if reference is not None:
        run_grid(preset, reference)
    for seed in sorted({int(compose_preset(preset, j).seed) for j in jobs}):  # a stopped demo leaves whole seeds
        run_grid(preset, [*_without(overrides, "seed"), f"seed={seed}"])
    t_grid = time.monotonic()

    reports = run_reports(sweep_dir, report_dir, scored, anima=bool(grader_models))
    runs = collect_runs(sweep_dir)
    overlap = study.lexical_overlaps(demo_corpora(preset, overrides))
    summary = study.summarize(runs, overlap)
    if not summary["conditions"]:
        raise RuntimeError(f"no finished runs under {sweep_dir}")
    text = study.format_summary(summary)
    files = {"summary_md": str(report_dir / "demo_summary.md"), "summary_json": str(report_dir / "demo_summary.json")}
    curves = study.training_curves(runs)
    for name, path in (("gap_by_stage_png", figures.plot_gaps(summary, report_dir / "gap_by_stage.png")),
                       ("erosion_png", figures.plot_erosion(summary, report_dir / "erosion.png")),
                       ("probe_during_training_png",
                        figures.plot_training(curves, summary, report_dir / "probe_during_training.png"))):
        if path is not None:
            files[name] = str(path)
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
                    help="an extra midtrain-eval override, e.g. eval.anima.data_dir=/data/anima (repeatable)")
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
