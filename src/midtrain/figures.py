"""The figures of the report and of the probe study, drawn with matplotlib.

Only drawing lives here; every number a figure shows is one of the report's tables
(``midtrain.report``) or a value of the study's summary (``midtrain.study``), so those are
what the tests pin and what mutation testing covers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig

from midtrain.stats import is_number
from midtrain.study import instruct_samples_of, stage_label
from midtrain.tracking.conditions import condition_order


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path, dpi: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return str(path)


def line_plot(path: Path, series: Mapping[str, list[tuple]], xlabel: str, ylabel: str, title: str, dpi: int,
              zero_line: bool = False) -> str:
    """One line per series of `(x, mean, stderr or None)` points, with standard-error bars."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in sorted(series.items()):
        pts = sorted(pts, key=lambda p: p[0])
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] or 0.0 for p in pts],
                    marker="o", capsize=3, label=label)
    if zero_line:
        ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path, dpi)


def report_figures(summary: list[dict], out_dir: Path, cfg: DictConfig) -> dict[str, str]:
    """Write the three standard plots; returns {name: path or reason skipped}."""
    done: dict[str, str] = {}

    def lines_plot(name: str, x_key: str, cells: list[dict], series_key, title: str, xlabel: str) -> None:
        series: dict[str, list[tuple]] = defaultdict(list)
        for s in cells:
            series[series_key(s)].append((s[x_key], s["mean"], s["stderr"]))
        if not series:
            done[name] = "skipped: no runs"
            return
        done[name] = line_plot(out_dir / f"{name}.png", series, xlabel, cfg.metric, title, int(cfg.plots.dpi))

    def label(s: dict, *keys: str) -> str:
        return " ".join([str(s.get(k)) for k in keys if s.get(k) is not None]
                        + ([s["legend_extra"]] if s.get("legend_extra") else []))

    numeric = [s for s in summary if is_number(s.get("num_docs")) and is_number(s.get("instruct_samples"))]
    at = cfg.plots.doc_count_at_instruct_samples
    if at is None and numeric:  # the least instruction-tuned setting present
        at = min(s["instruct_samples"] for s in numeric)
    lines_plot("anima_vs_doc_count", "num_docs", [s for s in numeric if s["instruct_samples"] == at],
               lambda s: label(s, "model", "condition"), f"{cfg.metric} vs documents ({at} SFT samples)",
               "midtraining documents")
    erosion = [s for s in numeric if len({t["instruct_samples"] for t in numeric
                                          if (t.get("condition"), t["num_docs"]) == (s.get("condition"), s["num_docs"])}) > 1]
    lines_plot("erosion", "instruct_samples", erosion,
               lambda s: label(s, "model", "condition", "preserve") + f" n={s['num_docs']}",
               f"{cfg.metric} vs instruction-tuning samples", "instruction-tuning samples")

    dims = sorted({d for s in summary for d in s["dimensions"]})
    if not dims:
        done["by_dimension"] = "skipped: no per-dimension scores"
        return done
    fig, ax = pyplot().subplots(figsize=(max(6, len(dims) * 0.9), 4))
    width = 0.8 / max(1, len(summary))
    for i, s in enumerate(summary):
        xs = [j + i * width for j in range(len(dims))]
        ax.bar(xs, [s["dimensions"].get(d, 0.0) for d in dims], width=width,
               label=label(s, "condition") + f" n={s.get('num_docs')} i={s.get('instruct_samples')}")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(dims))])
    ax.set_xticklabels(dims, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("mean score over seeds")
    ax.set_title("Per-dimension scores")
    if len(summary) <= 12:
        ax.legend(fontsize=7)
    done["by_dimension"] = save(fig, out_dir / "by_dimension.png", int(cfg.plots.dpi))
    return done


def gap_figures(gap_rows: list[dict], curves: list[dict], out_dir: Path, cfg: DictConfig) -> dict[str, str]:
    done: dict[str, str] = {}
    title = f"{cfg.gap.minuend} minus {cfg.gap.subtrahend}"

    def draw(name: str, series: dict[str, list[tuple]], ylabel: str, xlabel: str) -> None:
        if not series:
            done[name] = f"skipped: no paired {cfg.gap.minuend}/{cfg.gap.subtrahend} runs"
            return
        done[name] = line_plot(out_dir / f"{name}.png", series, xlabel, ylabel, title, int(cfg.plots.dpi),
                                zero_line=True)

    series: dict[str, list[tuple]] = defaultdict(list)
    for g in gap_rows:
        if is_number(g.get("instruct_samples")):
            extra = " ".join(f"{k}={g[k]}" for k in ("model", "num_docs") if k in g and g[k] is not None)
            series[f"{g.get('preserve')} {extra}".strip()].append((g["instruct_samples"], g["gap"], g["stderr"]))
    draw("gap_vs_instruct_samples", {k: v for k, v in series.items()}, f"{cfg.metric} gap",
         "instruction-tuning samples")
    curve_series = {f"{c['preserve']} i={c['instruct_samples']} n={c['num_docs']}":
                    [(p["samples_seen"], p["gap"], p["stderr"]) for p in c["points"]] for c in curves}
    draw("probe_curve_gap", curve_series, "probe margin gap (nats/token)",
         "instruction samples seen (step share of the stage)")
    return done


# The probe study's plots (`midtrain.study.summarize`, `training_curves`) ------------------
def _finish(fig, ax, path: Path, ylabel: str, title: str, xlabel: str | None = None, title_size: int = 9) -> Path:
    """Label, grid, legend and save one of the study's plots."""
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=title_size)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return Path(save(fig, path, dpi=120))


def plot_gaps(summary: Mapping, path: Path) -> Path | None:
    """The paired differences per stage with their 95% interval over probe pairs (bars: over seeds)."""
    gaps = summary.get("gaps") or []
    if not gaps:
        return None
    plt = pyplot()
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
    plt = pyplot()
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


def plot_training(curves: Mapping, summary: Mapping, path: Path) -> Path | None:
    """The original probe along training, one thin line per seed, one colour per condition."""
    if not curves:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, cond in enumerate(condition_order(curves)):
        for j, (seed, pts) in enumerate(sorted(curves[cond].items(), key=lambda t: str(t[0]))):
            ax.plot([s for s, _ in pts], [m for _, m in pts], marker=".", color=f"C{i}", alpha=0.7, lw=1,
                    label=cond if j == 0 else None)
    ax.axhline(0.0, color="grey", lw=0.8)
    return _finish(fig, ax, path, f"original probe margin ({summary['unit']})",
                   "Probe during training (one line per seed; each instruction size is its own run)",
                   xlabel="optimizer steps from the untrained model (midtraining, then instruction tuning)")


