"""The probe study's statistics: what a sweep of treatment, control and baseline runs shows.

From the runs' `metrics.json` (as `midtrain.report.collect_runs` reads them), per condition
and stage (`base`, `midtrain`, `instruct:<samples>`):

- `summarize`: the mean and standard error over seeds of the probe margin on the original
  and the held-out pairs; treatment minus control and minus the baseline with 95% intervals
  paired over seeds and probe pairs (`midtrain.stats`); the erosion slope across instruction
  sizes; and sentences saying what the intervals support;
- `format_summary`: that summary as plain-text tables (also valid Markdown);
- `training_curves`: the original probe along training, seed by seed;
- `lexical_overlaps`: the probe's lexical overlap with every training corpus.

Numbers only; `midtrain.figures` draws them and `midtrain.demo` runs the study.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from midtrain.tracking.conditions import COMPARISONS, condition_order

STAGES = ("base", "midtrain", "instruct")  # the order a model passes through them
MARGIN_UNIT = "nats/token"


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


def lexical_overlaps(corpora: Mapping[str, Sequence[str]], probe_sets: Mapping[str, Sequence] | None = None) -> dict:
    """`{probe set: {corpus: lexical_overlap result without per-pair detail}}`."""
    from midtrain.evals.probe import HELDOUT_PAIRS_PATH, lexical_overlap, load_pairs

    probe_sets = probe_sets or {"original": load_pairs(), "heldout": load_pairs(HELDOUT_PAIRS_PATH)}
    return {ps: {name: {k: v for k, v in lexical_overlap(pairs, docs).items() if k != "nearest"}
                 for name, docs in corpora.items() if docs}
            for ps, pairs in probe_sets.items()}


