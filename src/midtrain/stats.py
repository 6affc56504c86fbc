"""Statistics for result tables: means over seeds and paired differences with 95% intervals.

Two sources of noise sit behind a probe score: which documents, instruction samples and data
order a training seed drew (seed noise), and which probe pairs the probe happens to hold
(item noise). A difference between two conditions is therefore reported with two intervals,
both paired (the same seed index and the same probe pair on each side):

- over probe pairs: the per-pair difference averaged over seeds, resampled by
  `scipy.stats.bootstrap` (BCa, 9,999 resamples, fixed seed). It answers "would another set of
  probe pairs like these show the difference?", but treats the seeds as fixed;
- over seeds: the per-seed difference averaged over pairs, with a paired t interval
  (`scipy.stats.t`, n - 1 degrees of freedom). It answers "would other training seeds show
  it?", but has few degrees of freedom with few seeds.

`verdict` turns both into words: a difference is called detectable only when both intervals
exclude zero on the same side; "no detectable difference" when both include zero; anything
else is reported as mixed, naming the interval that includes zero.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from midtrain.tracking.conditions import COMPARISONS

CONFIDENCE = 0.95
N_RESAMPLES = 9999
BOOTSTRAP_SEED = 0


def is_number(x: Any) -> bool:
    """A finite real number (bools, NaN and infinities are not)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def mean_stderr(values: Sequence[float]) -> dict:
    """`{"mean", "stderr", "n"}`: the mean and the standard error of the mean (sample standard
    deviation with n - 1, over sqrt(n)); stderr is None for fewer than two values.

    Raises:
        ValueError: no values, or a value that is not finite.
    """
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        raise ValueError("mean_stderr needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"mean_stderr: non-finite value in {x.tolist()}")
    se = float(np.std(x, ddof=1) / math.sqrt(x.size)) if x.size > 1 else None
    return {"mean": float(x.mean()), "stderr": se, "n": int(x.size)}


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The t interval of the mean (n - 1 degrees of freedom); None for fewer than two values."""
    from scipy import stats

    x = np.asarray(list(values), dtype=float)
    if x.size < 2:
        return None
    m = float(x.mean())
    se = float(np.std(x, ddof=1) / math.sqrt(x.size))
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1)) * se
    return m - half, m + half


def bootstrap_interval(values: Sequence[float], confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float] | None:
    """The BCa bootstrap interval of the mean (`scipy.stats.bootstrap`); None for fewer than two
    values. Identical values give the degenerate interval (v, v)."""
    from scipy import stats

    x = np.asarray(list(values), dtype=float)
    if x.size < 2:
        return None
    if float(np.ptp(x)) == 0.0:
        return float(x[0]), float(x[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns when BCa cannot be computed; the fallback below says so
        res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="BCa",
                              random_state=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if not (math.isfinite(low) and math.isfinite(high)):
            res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                                  method="percentile", random_state=np.random.default_rng(seed))
            low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return low, high


def paired_gap(a: Mapping[Any, Mapping[str, float]], b: Mapping[Any, Mapping[str, float]],
               confidence: float = CONFIDENCE) -> dict:
    """The difference a - b, paired over seeds and probe pairs.

    Args:
        a, b: `{seed: {pair id: margin}}` of two conditions at one stage. Only seeds present
            in both, and pair ids present in every one of those seeds on both sides, are used.

    Returns:
        `{"mean", "pairs_interval", "seeds_interval", "n_seeds", "n_pairs", "seeds",
        "by_seed": {seed: gap}, "seed_stderr", "confidence"}`. `mean` is the mean over seeds
        and pairs of a - b; intervals are `[low, high]` or None where there are too few
        units (fewer than two pairs or seeds).

    Raises:
        ValueError: no seed or no probe pair in common.
    """
    seeds = sorted(set(a) & set(b), key=lambda s: (str(type(s)), s))
    if not seeds:
        raise ValueError(f"paired_gap: no seed in common (a has {sorted(a, key=str)}, b has {sorted(b, key=str)})")
    ids = set.intersection(*[set(a[s]) & set(b[s]) for s in seeds])
    if not ids:
        raise ValueError("paired_gap: no probe pair in common across the seeds of both sides")
    ids_sorted = sorted(ids)
    diff = np.array([[a[s][i] - b[s][i] for i in ids_sorted] for s in seeds], dtype=float)  # seeds x pairs
    per_seed = diff.mean(axis=1)
    per_pair = diff.mean(axis=0)
    pi = bootstrap_interval(per_pair, confidence)
    si = t_interval(per_seed, confidence)
    return {
        "mean": float(diff.mean()),
        "pairs_interval": list(pi) if pi else None,
        "seeds_interval": list(si) if si else None,
        "n_seeds": len(seeds),
        "n_pairs": len(ids_sorted),
        "seeds": list(seeds),
        "by_seed": {str(s): float(g) for s, g in zip(seeds, per_seed)},
        "seed_stderr": mean_stderr(per_seed)["stderr"],
        "confidence": confidence,
    }


def _side(interval: Sequence[float] | None) -> int | None:
    """+1 above zero, -1 below zero, 0 includes zero, None no interval."""
    if interval is None:
        return None
    low, high = interval
    return 1 if low > 0 else -1 if high < 0 else 0


def verdict_kind(gap: Mapping) -> str:
    """`above`, `below`, `none` (no detectable difference), `mixed`, or `insufficient`."""
    sides = [_side(gap.get("pairs_interval")), _side(gap.get("seeds_interval"))]
    known = [s for s in sides if s is not None]
    if len(known) < 2:
        return "insufficient"
    if known[0] == known[1] == 1:
        return "above"
    if known[0] == known[1] == -1:
        return "below"
    if known[0] == known[1] == 0:
        return "none"
    return "mixed"


def _fmt_interval(iv: Sequence[float] | None) -> str:
    return "n/a" if iv is None else f"[{iv[0]:+.3f}, {iv[1]:+.3f}]"


def verdict(gap: Mapping, a: str, b: str, where: str, unit: str = "nats/token") -> str:
    """One sentence saying what the two intervals of `paired_gap` support."""
    kind = verdict_kind(gap)
    pct = f"{gap.get('confidence', CONFIDENCE):.0%}"
    est = (f"{gap['mean']:+.3f} {unit}, {pct} interval {_fmt_interval(gap.get('pairs_interval'))} over "
           f"{gap['n_pairs']} probe pairs and {_fmt_interval(gap.get('seeds_interval'))} over {gap['n_seeds']} seeds")
    if kind == "above":
        return f"{where}: {a} is above {b} ({est}; both intervals exclude zero)."
    if kind == "below":
        return f"{where}: {a} is below {b} ({est}; both intervals exclude zero)."
    if kind == "none":
        return f"{where}: no detectable difference between {a} and {b} ({est}; both intervals include zero)."
    if kind == "mixed":
        inc = "seeds" if _side(gap.get("seeds_interval")) == 0 else "probe pairs"
        return (f"{where}: suggestive only, {a} minus {b} is {est}; the interval over {inc} includes zero, "
                "so the difference is not established.")
    return f"{where}: too few seeds or pairs for an interval ({a} minus {b}: {gap['mean']:+.3f} {unit})."


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of ys on xs (`scipy.stats.linregress`)."""
    from scipy import stats

    if len(set(xs)) < 2:
        raise ValueError(f"slope needs at least two distinct x values, got {list(xs)}")
    return float(stats.linregress(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)).slope)


def seed_gap(a: Mapping[Any, float], b: Mapping[Any, float], confidence: float = CONFIDENCE) -> dict | None:
    """The difference a - b of per-seed scores, paired by seed: `{"mean", "stderr", "interval",
    "n_seeds", "seeds", "verdict"}` (t interval over seeds; verdict `above`, `below`, `none`, or
    `insufficient` with fewer than two seeds); None when no seed is shared."""
    seeds = sorted(set(a) & set(b), key=lambda s: (str(type(s)), s))
    if not seeds:
        return None
    d = [float(a[s]) - float(b[s]) for s in seeds]
    ms = mean_stderr(d)
    iv = t_interval(d, confidence)
    side = _side(iv)
    kind = "insufficient" if side is None else {1: "above", -1: "below", 0: "none"}[side]
    return {"mean": ms["mean"], "stderr": ms["stderr"], "interval": list(iv) if iv else None, "n_seeds": len(seeds),
            "seeds": list(seeds), "verdict": kind, "confidence": confidence}


def condition_gaps(rows: Sequence[Mapping], group_by: Sequence[str],
                   comparisons: Sequence[tuple[str, str]] = COMPARISONS,
                   ignore: Sequence[str] = ("condition", "corpus", "universe")) -> list[dict]:
    """Paired-over-seeds differences between conditions for a report's rows.

    Args:
        rows: one per run, with the `group_by` keys, `condition`, `seed` and `score`.
        group_by: the report's cell keys; cells are matched on these minus `ignore` (the keys
            in which a treatment and its comparison differ by design).

    Returns:
        `[{**cell, "a", "b", **seed_gap}]`, one per matched cell and comparison.
    """
    match = [k for k in group_by if k not in ignore]
    by: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        key = tuple(r.get(k) for k in match)
        by.setdefault(key, {}).setdefault(str(r.get("condition")), {})[r.get("seed")] = r["score"]
    out = []
    for key in sorted(by, key=lambda k: tuple(str(v) for v in k)):
        conds = by[key]
        for a, b in comparisons:
            if a in conds and b in conds:
                g = seed_gap(conds[a], conds[b])
                if g is not None:
                    out.append({**dict(zip(match, key)), "a": a, "b": b, **g})
    return out


def gaps_markdown(gaps: Sequence[Mapping]) -> str:
    """A Markdown section for `condition_gaps` (empty when there is nothing to compare)."""
    if not gaps:
        return ""
    cell_keys = [k for k in gaps[0] if k not in ("a", "b", "mean", "stderr", "interval", "n_seeds", "seeds", "verdict",
                                                  "confidence")]
    words = {"above": "above", "below": "below", "none": "no detectable difference", "insufficient": "one seed: no interval"}
    lines = ["", "## Differences between conditions", "",
             "Paired by seed: mean of the per-seed differences ± standard error, 95% t interval over seeds.", "",
             "| " + " | ".join([*cell_keys, "difference", "seeds", "mean ± se", "95% interval", "supports"]) + " |",
             "|" + "---|" * (len(cell_keys) + 5)]
    for g in gaps:
        se = f" ± {g['stderr']:.3f}" if g["stderr"] is not None else ""
        iv = f"[{g['interval'][0]:+.3f}, {g['interval'][1]:+.3f}]" if g["interval"] else "n/a"
        lines.append("| " + " | ".join([*[str(g[k]) for k in cell_keys], f"{g['a']} - {g['b']}", str(g["n_seeds"]),
                                        f"{g['mean']:+.3f}{se}", iv, words[g["verdict"]]]) + " |")
    return "\n".join(lines) + "\n"
