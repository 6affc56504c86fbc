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
4. summarizes the probe (`summarize`): per condition and stage the mean and standard error
   over seeds on the original and the held-out pairs; treatment minus control and minus the
   baseline with 95% intervals paired over seeds and probe pairs (`midtrain.stats`); the
   erosion slope across instruction sizes; the probe's lexical overlap with every training
   corpus; and sentences saying what the intervals support;
5. prints the summary, draws the differences per stage, the erosion and the probe during
   midtraining, and says where the tables and plots are.

Everything resumes: finished runs (DONE) are skipped, so a second call only re-reports.
"""

from __future__ import annotations

import functools
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

from midtrain import figures
from midtrain.paths import CONF_DIR, SWEEPS_DIR
from midtrain.report import collect_runs
from midtrain.tracking import atomic_write_json, atomic_write_text
from midtrain.tracking.conditions import COMPARISONS, condition_order

log = logging.getLogger(__name__)

STAGES = ("base", "midtrain", "instruct")  # the order a model passes through them
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


# Summary ---------------------------------------------------------------------------------
PROBE_SETS = ("original", "heldout")  # eval.probe itself, and eval.probe.heldout


def stage_key(stage: str, instruct_samples: Any) -> str:
    """`base`, `midtrain`, or `instruct:<samples>` (instruction tuning at each size is its own stage)."""
    return f"instruct:{int(instruct_samples)}" if stage == "instruct" else stage


def _stage_order(key: str) -> tuple:
    name, _, n = key.partition(":")
    return (STAGES.index(name) if name in STAGES else 99, int(n) if n else 0, key)


def stage_label(key: str) -> str:
    name, _, n = key.partition(":")
    return {"base": "before midtraining", "midtrain": "after midtraining"}.get(
        name, f"after {n} instruction samples" if n else key)


def instruct_samples_of(key: str) -> int | None:
    """Instruction samples seen at a stage: 0 after midtraining, N at `instruct:N`, None before."""
    name, _, n = key.partition(":")
    return 0 if name == "midtrain" else int(n) if name == "instruct" and n else None


def _probe_set(stage_eval: Mapping, probe_set: str) -> Mapping | None:
    p = stage_eval.get("probe")
    if isinstance(p, Mapping) and probe_set == "heldout":
        p = p.get("heldout")
    return p if isinstance(p, Mapping) and "margin" in p else None


def probe_table(runs: Sequence[Mapping]) -> dict:
    """`{condition: {stage key: {probe set: {seed: probe result}}}}` from pipeline metrics.

    Runs of several instruction sizes share their midtraining stage: one result per seed is
    kept (the first; shared stages hold the same model and so the same numbers).
    """
    table: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for r in runs:
        cond = str(r.get("condition"))
        for stage, ev in (r.get("eval_by_stage") or {}).items():
            key = stage_key(stage, r.get("instruct_samples"))
            for ps in PROBE_SETS:
                res = _probe_set(ev, ps)
                if res is not None:
                    table[cond][key][ps].setdefault(r.get("seed"), res)
    return table


def _slope_stats(points_by_seed: Mapping[Any, list[tuple[float, float]]]) -> dict | None:
    """Per-seed least-squares slopes (per 100 instruction samples), their mean, stderr, t interval."""
    from midtrain.stats import mean_stderr, slope, t_interval

    slopes = {s: 100.0 * slope([x for x, _ in pts], [y for _, y in pts])
              for s, pts in points_by_seed.items() if len({x for x, _ in pts}) >= 2}
    if not slopes:
        return None
    ms = mean_stderr(list(slopes.values()))
    iv = t_interval(list(slopes.values()))
    return {"per_100_samples": ms["mean"], "stderr": ms["stderr"], "interval": list(iv) if iv else None,
            "n_seeds": ms["n"], "by_seed": {str(k): v for k, v in slopes.items()}}


def summarize(runs: Sequence[Mapping], overlap: Mapping | None = None) -> dict:
    """Probe margins per condition and stage with paired differences and what they support.

    Args:
        runs: pipeline metrics (each with `condition`, `seed`, `instruct_samples` and
            `eval_by_stage.<stage>.probe`, whose `per_pair` margins the paired statistics use).
        overlap: the probe's lexical overlap with each training corpus (`lexical_overlaps`).

    Returns:
        `{"unit", "conditions": {condition: {"runs", "seeds", "stages": {stage key: {probe set:
        {"margin", "stderr", "accuracy", "n", "pairs"}}, "anima"?}}}, "stages", "gaps": [...],
        "erosion": {...}, "statements": [sentences], "overlap"?}`. Stage keys are `base`,
        `midtrain` and `instruct:<samples>`; a stage a condition never scored is absent.
    """
    from midtrain.stats import mean_stderr, paired_gap, verdict, verdict_kind

    table = probe_table(runs)
    by_cond: dict[str, list[Mapping]] = defaultdict(list)
    for r in runs:
        by_cond[str(r.get("condition"))].append(r)
    conditions: dict[str, dict] = {}
    all_keys: set[str] = set()
    for cond in condition_order(by_cond):
        stages: dict[str, dict] = {}
        for key in sorted(table.get(cond, {}), key=_stage_order):
            entry = {}
            for ps, by_seed in table[cond][key].items():
                ms = mean_stderr([v["margin"] for v in by_seed.values()])
                entry[ps] = {"margin": ms["mean"], "stderr": ms["stderr"], "n": ms["n"],
                             "accuracy": mean_stderr([v["accuracy"] for v in by_seed.values()])["mean"],
                             "pairs": min(int(v.get("pairs", 0)) for v in by_seed.values())}
            anima = [r["eval"]["anima"]["overall_mean"] for r in by_cond[cond]
                     if key == stage_key("instruct", r.get("instruct_samples")) and "anima" in r.get("eval", {})]
            if anima:
                ms = mean_stderr(anima)
                entry["anima"] = {"overall_mean": ms["mean"], "stderr": ms["stderr"], "n": ms["n"]}
            stages[key] = entry
        all_keys |= set(stages)
        conditions[cond] = {"runs": len(by_cond[cond]), "seeds": sorted({r.get("seed") for r in by_cond[cond]}, key=str),
                            "stages": stages}
    # Final-model ANIMA of runs without instruction tuning (midtrain or base is then the final stage).
    for cond, rs in by_cond.items():
        anima = [r["eval"]["anima"]["overall_mean"] for r in rs if not r.get("instruct_samples") and "anima" in r.get("eval", {})]
        if anima:
            last = max(conditions[cond]["stages"], key=_stage_order, default=None)
            if last:
                ms = mean_stderr(anima)
                conditions[cond]["stages"][last]["anima"] = {"overall_mean": ms["mean"], "stderr": ms["stderr"], "n": ms["n"]}
    keys = sorted(all_keys, key=_stage_order)

    gaps, statements = [], []
    for a, b in COMPARISONS:
        if a not in table or b not in table:
            continue
        for key in keys:
            for ps in PROBE_SETS:
                sa, sb = table[a].get(key, {}).get(ps), table[b].get(key, {}).get(ps)
                if not sa or not sb:
                    continue
                pa = {s: v["per_pair"] for s, v in sa.items() if "per_pair" in v}
                pb = {s: v["per_pair"] for s, v in sb.items() if "per_pair" in v}
                if not pa or not pb or not set(pa) & set(pb):
                    continue
                g = paired_gap(pa, pb)
                where = f"{stage_label(key)} ({'held-out' if ps == 'heldout' else 'original'} probe)"
                g.update(a=a, b=b, stage=key, probe_set=ps, verdict=verdict_kind(g),
                         statement=verdict(g, a, b, where[0].upper() + where[1:], MARGIN_UNIT))
                gaps.append(g)
                statements.append(g["statement"])

    erosion: dict[str, Any] = {"conditions": {}, "gaps": {}}
    for cond in conditions:
        pts: dict[Any, list] = defaultdict(list)
        for key in keys:
            x = instruct_samples_of(key)
            for seed, v in table.get(cond, {}).get(key, {}).get("original", {}).items():
                if x is not None:
                    pts[seed].append((x, v["margin"]))
        st = _slope_stats(pts)
        if st:
            erosion["conditions"][cond] = st
    for g_list in _group_gaps(gaps).items():
        (a, b), by_key = g_list
        pts = defaultdict(list)
        for key, g in by_key.items():
            x = instruct_samples_of(key)
            if x is not None:
                for seed, v in g["by_seed"].items():
                    pts[seed].append((x, v))
        st = _slope_stats(pts)
        if st:
            erosion["gaps"][f"{a}-{b}"] = st
            statements.append(_erosion_statement(a, b, st))

    out: dict[str, Any] = {"unit": MARGIN_UNIT, "conditions": conditions, "stages": keys, "gaps": gaps,
                           "erosion": erosion, "statements": statements}
    if overlap:
        out["overlap"] = dict(overlap)
    return out


def _group_gaps(gaps: Sequence[Mapping]) -> dict[tuple[str, str], dict[str, Mapping]]:
    """The original-probe gaps by comparison and stage key."""
    out: dict[tuple[str, str], dict[str, Mapping]] = defaultdict(dict)
    for g in gaps:
        if g["probe_set"] == "original":
            out[(g["a"], g["b"])][g["stage"]] = g
    return out


def _erosion_statement(a: str, b: str, st: Mapping) -> str:
    iv = st.get("interval")
    est = f"{st['per_100_samples']:+.3f} {MARGIN_UNIT} per 100 instruction samples"
    if iv is None:
        return f"Erosion of {a} minus {b}: {est} (one seed, no interval)."
    ivs = f"95% interval [{iv[0]:+.3f}, {iv[1]:+.3f}] over {st['n_seeds']} seeds"
    if iv[0] <= 0 <= iv[1]:
        return f"Erosion of {a} minus {b}: no detectable change with instruction tuning ({est}, {ivs})."
    word = "shrinks" if iv[1] < 0 else "grows"
    return f"Erosion of {a} minus {b}: the gap {word} with instruction tuning ({est}, {ivs})."


def _pm(v: Mapping | None, key: str = "margin") -> str:
    if not v:
        return "-"
    se = v.get("stderr")
    return f"{v[key]:+.3f}" + (f" ± {se:.3f}" if se is not None else "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]


def format_summary(summary: Mapping) -> str:
    """The summary as plain-text tables (also valid Markdown) and sentences."""
    from midtrain.stats import N_RESAMPLES

    conds = summary["conditions"]
    unit = summary["unit"]
    has_anima = any("anima" in st for v in conds.values() for st in v["stages"].values())
    header = ["condition", "stage", "seeds", "original probe", "acc", "held-out probe", "acc"] + (
        ["ANIMA"] if has_anima else [])
    rows = []
    for cond, v in conds.items():
        for key, st in v["stages"].items():
            o, h = st.get("original"), st.get("heldout")
            n = (o or h or {}).get("n", 0)
            cells = [cond, stage_label(key), str(n), _pm(o), f"{o['accuracy']:.0%}" if o else "-", _pm(h),
                     f"{h['accuracy']:.0%}" if h else "-"]
            if has_anima:
                a = st.get("anima")
                cells.append(f"{a['overall_mean']:.1%}" + (f" ± {a['stderr']:.1%}" if a.get("stderr") is not None else "")
                             if a else "-")
            rows.append(cells)
    pairs = {ps: max((st[ps]["pairs"] for v in conds.values() for st in v["stages"].values() if ps in st), default=0)
             for ps in PROBE_SETS}
    lines = [f"Compassion probe margin ({unit}, compassionate minus dismissive continuation), mean ± standard "
             "error over seeds; acc = share of pairs preferring the compassionate continuation. Original probe: "
             f"{pairs['original']} pairs; held-out probe: {pairs['heldout']} pairs in another register "
             "(dialogue, first person, species and settings the corpora never mention).", "",
             *_table(header, rows)]
    gaps = summary.get("gaps") or []
    if gaps:
        lines += ["", f"Differences ({unit}), paired over seeds and probe pairs. 95% intervals: over probe pairs, "
                  f"BCa bootstrap of the seed-averaged per-pair difference (scipy.stats.bootstrap, {N_RESAMPLES} "
                  "resamples); over seeds, paired t interval of the per-seed difference (n - 1 df).", ""]
        grows = []
        for g in gaps:
            iv = lambda x: "n/a" if x is None else f"[{x[0]:+.3f}, {x[1]:+.3f}]"  # noqa: E731
            grows.append([f"{g['a']} - {g['b']}", stage_label(g["stage"]), g["probe_set"], f"{g['mean']:+.3f}",
                          iv(g["pairs_interval"]), iv(g["seeds_interval"]), str(g["n_seeds"]), str(g["n_pairs"]),
                          {"above": "above", "below": "below", "none": "no detectable difference",
                           "mixed": "not established", "insufficient": "too few units"}[g["verdict"]]])
        lines += _table(["difference", "stage", "probe", "mean", "95% CI (pairs)", "95% CI (seeds)", "seeds",
                         "pairs", "supports"], grows)
    ero = summary.get("erosion") or {}
    if ero.get("conditions"):
        lines += ["", f"Erosion: least-squares slope of the original probe margin on instruction samples (0 = after "
                  f"midtraining), {unit} per 100 samples, mean ± standard error over seeds.", ""]
        erows = [[c, _pm({"margin": st["per_100_samples"], "stderr": st["stderr"]}), str(st["n_seeds"])]
                 for c, st in ero["conditions"].items()]
        erows += [[f"gap {k.replace('-', ' - ', 1)}", _pm({"margin": st["per_100_samples"], "stderr": st["stderr"]}),
                   str(st["n_seeds"])] for k, st in ero.get("gaps", {}).items()]
        lines += _table(["series", "slope per 100 samples", "seeds"], erows)
    ov = summary.get("overlap")
    if ov:
        corpora = list(next(iter(ov.values())))
        lines += ["", "Lexical overlap of the probe with each training corpus: mean over probe pairs of the Jaccard "
                  "index of word sets between a pair (prompt and both continuations) and its nearest document; "
                  "content words (function words removed), all words in brackets. 1 = a pair copied from a "
                  "document.", ""]
        lines += _table(["probe", *corpora], [[ps, *[f"{ov[ps][c]['content_mean']:.3f} ({ov[ps][c]['mean']:.3f})"
                                                     for c in corpora]] for ps in ov])
    if summary.get("statements"):
        lines += ["", "What the intervals support:", *[f"- {s}" for s in summary["statements"]]]
    return "\n".join(lines) + "\n"


# Plots -------------------------------------------------------------------------------------
def _plt():
    return figures.pyplot()


def _save(fig, path: Path) -> Path:
    return Path(figures.save(fig, path, dpi=120))


def _finish(fig, ax, path: Path, ylabel: str, title: str, xlabel: str | None = None, title_size: int = 9) -> Path:
    """Label, grid, legend and save one demo plot."""
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=title_size)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_gaps(summary: Mapping, path: Path) -> Path | None:
    """The paired differences per stage with their 95% interval over probe pairs (bars: over seeds)."""
    gaps = summary.get("gaps") or []
    if not gaps:
        return None
    plt = _plt()
    keys = [k for k in summary["stages"] if any(g["stage"] == k for g in gaps)]
    series = sorted({(g["a"], g["b"], g["probe_set"]) for g in gaps}, key=lambda t: (t[2] != "original", t))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    width = 0.8 / len(series)
    for i, (a, b, ps) in enumerate(series):
        pts = [(keys.index(g["stage"]), g) for g in gaps if (g["a"], g["b"], g["probe_set"]) == (a, b, ps)]
        xs = [x - 0.4 + width * (i + 0.5) for x, _ in pts]
        ys = [g["mean"] for _, g in pts]
        # BCa may place a skewed interval's end on the mean's side; a bar cannot be negative.
        lo = [max(0.0, g["mean"] - (g["pairs_interval"] or [g["mean"]] * 2)[0]) for _, g in pts]
        hi = [max(0.0, (g["pairs_interval"] or [g["mean"]] * 2)[1] - g["mean"]) for _, g in pts]
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o" if ps == "original" else "s", capsize=4,
                    label=f"{a} - {b} ({'held-out' if ps == 'heldout' else 'original'} probe)")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([stage_label(k) for k in keys], fontsize=8)
    return _finish(fig, ax, path, f"difference in probe margin ({summary['unit']})",
                   "Treatment minus comparison, 95% interval over probe pairs", title_size=10)


def plot_erosion(summary: Mapping, path: Path) -> Path | None:
    """Original-probe margin against instruction samples (0 = after midtraining), mean ± se over seeds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for cond, v in summary["conditions"].items():
        pts = [(instruct_samples_of(k), st["original"]) for k, st in v["stages"].items()
               if instruct_samples_of(k) is not None and "original" in st]
        if len(pts) < 2:
            continue
        pts.sort(key=lambda t: t[0])
        slope = (summary.get("erosion") or {}).get("conditions", {}).get(cond)
        label = cond + (f" (slope {slope['per_100_samples']:+.3f} per 100)" if slope else "")
        ax.errorbar([x for x, _ in pts], [s["margin"] for _, s in pts], yerr=[s["stderr"] or 0.0 for _, s in pts],
                    marker="o", capsize=3, label=label)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    return _finish(fig, ax, path, f"probe margin ({summary['unit']})",
                   "Erosion: probe margin across instruction-tuning sizes (mean ± s.e. over seeds)",
                   xlabel="instruction-tuning samples after midtraining (0 = midtrained model)")


def training_curves(runs: Sequence[Mapping]) -> dict[str, dict[Any, list[tuple[int, float]]]]:
    """The original probe along training, per condition and seed: `{condition: {seed: [(step, margin)]}}`.

    Steps count optimizer steps from the untrained model: 0 is the reference run's score (the
    untrained model of that seed, else of the first seed), then any `probe/margin` logged
    during midtraining (`trainer.probe_every_n_steps` in the stage's CSV logs), the score
    after midtraining, and after each instruction size at midtraining steps plus its own.
    """
    import csv

    base: dict[Any, float] = {}
    for r in runs:
        if r.get("condition") == "base" and "probe" in (r.get("eval_by_stage") or {}).get("base", {}):
            base[r.get("seed")] = r["eval_by_stage"]["base"]["probe"]["margin"]
    out: dict[str, dict[Any, set]] = defaultdict(lambda: defaultdict(set))
    for r in runs:
        cond, seed, ev = str(r.get("condition")), r.get("seed"), r.get("eval_by_stage") or {}
        if cond == "base" or "midtrain" not in ev or "probe" not in ev["midtrain"]:
            continue
        train = r.get("train") or {}
        mid_steps = int((train.get("midtrain") or {}).get("global_steps") or 0)
        pts = out[cond][seed]
        b = base.get(seed, base[min(base, key=str)] if base else None)
        if b is not None:
            pts.add((0, b))
        pts.add((mid_steps, ev["midtrain"]["probe"]["margin"]))
        if r.get("_dir"):
            for f in sorted((Path(r["_dir"]) / "midtrain" / "logs").glob("*/metrics.csv")):
                with open(f, newline="") as fh:
                    for row in csv.DictReader(fh):
                        if row.get("probe/margin"):
                            pts.add((int(float(row["step"])), float(row["probe/margin"])))
        if "probe" in ev.get("instruct", {}):
            steps = mid_steps + int((train.get("instruct") or {}).get("global_steps") or 0)
            pts.add((steps, ev["instruct"]["probe"]["margin"]))
    return {c: {s: sorted(v) for s, v in by_seed.items()} for c, by_seed in out.items() if by_seed}


def plot_training(curves: Mapping, summary: Mapping, path: Path) -> Path | None:
    """The original probe along training, one thin line per seed, one colour per condition."""
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, cond in enumerate(condition_order(curves)):
        for j, (seed, pts) in enumerate(sorted(curves[cond].items(), key=lambda t: str(t[0]))):
            ax.plot([s for s, _ in pts], [m for _, m in pts], marker=".", color=f"C{i}", alpha=0.7, lw=1,
                    label=cond if j == 0 else None)
    ax.axhline(0.0, color="grey", lw=0.8)
    return _finish(fig, ax, path, f"original probe margin ({summary['unit']})",
                   "Probe during training (one line per seed; each instruction size is its own run)",
                   xlabel="optimizer steps from the untrained model (midtraining, then instruction tuning)")


def lexical_overlaps(corpora: Mapping[str, Sequence[str]], probe_sets: Mapping[str, Sequence] | None = None) -> dict:
    """`{probe set: {corpus: lexical_overlap result without per-pair detail}}`."""
    from midtrain.evals.probe import HELDOUT_PAIRS_PATH, lexical_overlap, load_pairs

    probe_sets = probe_sets or {"original": load_pairs(), "heldout": load_pairs(HELDOUT_PAIRS_PATH)}
    return {ps: {name: {k: v for k, v in lexical_overlap(pairs, docs).items() if k != "nearest"}
                 for name, docs in corpora.items() if docs}
            for ps, pairs in probe_sets.items()}


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
    scored = [s for s in STAGES if s in ev.after or (s == "base" and reference is not None)]

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
    overlap = lexical_overlaps(demo_corpora(preset, overrides))
    summary = summarize(runs, overlap)
    if not summary["conditions"]:
        raise RuntimeError(f"no finished runs under {sweep_dir}")
    text = format_summary(summary)
    files = {"summary_md": str(report_dir / "demo_summary.md"), "summary_json": str(report_dir / "demo_summary.json")}
    for name, path in (("gap_by_stage_png", plot_gaps(summary, report_dir / "gap_by_stage.png")),
                       ("erosion_png", plot_erosion(summary, report_dir / "erosion.png")),
                       ("probe_during_training_png",
                        plot_training(training_curves(runs), summary, report_dir / "probe_during_training.png"))):
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
