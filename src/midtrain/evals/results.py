"""Turn Inspect eval logs into the `metrics.json` entries of the run-directory contract.

Model-graded suites (ANIMA, human compassion) are summarised from the per-sample scores in
the log rather than from the task's headline metrics, because the contract needs what
those metrics do not give: a standard error over questions, counts of unparseable grades
and failed samples, and no silent 0.0 when nothing could be graded (inspect_evals'
`overall_mean` returns 0.0 for an empty list). Values match inspect_evals' metrics when
every grade parses: per-sample epochs reduced by mean, then means over questions.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from inspect_ai.log import EvalLog

from midtrain.stats import is_number, mean_stderr

OVERALL = "overall"


def summarize_graded(log: EvalLog, max_missing_share: float = 0.1) -> dict:
    """Summarise a dict-valued, model-graded task (`{"overall": x, <dimension>: y, ...}`).

    Every epoch of every sample counts: an epoch's grades are totalled whether or not any
    of them parsed; a dimension that is NaN in an epoch (no parseable grade) is left out of
    that epoch only; an epoch with no parseable grade at all is unscored. Epochs are reduced
    per key over the union of the sample's dimensions, by mean, like Inspect's reducer.

    Args:
        log: an Inspect log with samples (one entry per sample and epoch).
        max_missing_share: the result is `complete` only if at most this share of grades
            is unparseable and at most this share of samples failed or went unscored.

    Returns:
        `overall_mean`, `stderr` (over questions), `by_dimension` (each over the questions
        that graded it), `samples` (questions with a score), `samples_total`,
        `samples_failed` (an epoch errored: a grader API error after retries, or the model
        under test), `samples_unscored` (no error, but no parseable grade in any epoch),
        `epochs`, `grades_attempted` and `grades_unparseable` (when the scorer reports
        them), `grades_by_dimension` (`{dim: {attempted, unparseable}}`, when reported),
        `missing_share`, `complete`, `status`. Keys with nothing to report are absent, never NaN.
    """
    if not 0.0 <= max_missing_share <= 1.0:
        raise ValueError(f"max_missing_share must be in [0, 1], got {max_missing_share}")
    samples = log.samples or []
    overall_by_id: dict[Any, list[float]] = defaultdict(list)
    dims_by_id: dict[Any, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    all_ids: set = set()
    failed_ids: set = set()
    attempted = unparseable = 0
    have_counts = False
    by_dim_counts: dict[str, dict[str, int]] = defaultdict(lambda: {"attempted": 0, "unparseable": 0})
    for s in samples:
        all_ids.add(s.id)
        score = next(iter((s.scores or {}).values()), None)
        if s.error is not None or score is None:
            failed_ids.add(s.id)
            continue
        meta = score.metadata or {}
        if "grades_attempted" in meta:
            have_counts = True
            attempted += int(meta["grades_attempted"])
            unparseable += int(meta.get("grades_unparseable", 0))
        for dim, c in (meta.get("grades_by_dimension") or {}).items():
            by_dim_counts[dim]["attempted"] += int(c.get("attempted", 0))
            by_dim_counts[dim]["unparseable"] += int(c.get("unparseable", 0))
        value = score.value
        if not isinstance(value, dict) or not is_number(value.get(OVERALL)):
            continue  # unscored: every grade for this epoch unparseable
        overall_by_id[s.id].append(float(value[OVERALL]))
        for dim, v in value.items():
            if dim != OVERALL and is_number(v):
                dims_by_id[s.id][dim].append(float(v))
    unscored_ids = all_ids - set(overall_by_id) - failed_ids

    per_sample = [mean_stderr(v)["mean"] for v in overall_by_id.values()]
    per_dim: dict[str, list[float]] = defaultdict(list)
    for dims in dims_by_id.values():
        for dim, vals in dims.items():
            per_dim[dim].append(mean_stderr(vals)["mean"])

    total = len(all_ids)
    out: dict[str, Any] = {}
    if per_sample:
        overall = mean_stderr(per_sample)
        out["overall_mean"] = overall["mean"]
        out["stderr"] = overall["stderr"]  # over questions; None for one question
        out["by_dimension"] = {d: mean_stderr(v)["mean"] for d, v in sorted(per_dim.items())}
    out["samples"] = len(per_sample)
    out["samples_total"] = total
    out["samples_failed"] = len(failed_ids)
    out["samples_unscored"] = len(unscored_ids)
    out["epochs"] = log.eval.config.epochs or 1
    shares = [len(failed_ids | unscored_ids) / total] if total else [1.0]
    if have_counts:
        out["grades_attempted"] = attempted
        out["grades_unparseable"] = unparseable
        shares.append(unparseable / attempted if attempted else 1.0)
    if by_dim_counts:
        out["grades_by_dimension"] = {d: dict(c) for d, c in sorted(by_dim_counts.items())}
    out["missing_share"] = max(shares)
    out["complete"] = bool(per_sample) and log.status == "success" and out["missing_share"] <= max_missing_share
    out["status"] = log.status
    return out


def summarize_metrics(log: EvalLog) -> dict:
    """Headline metrics of any Inspect task (capability and safety lists).

    Returns:
        `{"metrics": {<scorer>/<metric> or <metric>: value}, "samples", "samples_total",
        "status", "complete"}` with non-finite values left out.
    """
    metrics: dict[str, float] = {}
    results = log.results
    scores = results.scores if results else []
    for es in scores:
        for name, m in es.metrics.items():
            key = name if len(scores) == 1 else f"{es.name}/{name}"
            if is_number(m.value):
                metrics[key] = float(m.value)
    out: dict[str, Any] = {
        "metrics": metrics,
        "samples": results.completed_samples if results else 0,
        "samples_total": results.total_samples if results else 0,
        "status": log.status,
    }
    out["complete"] = log.status == "success" and bool(metrics)
    return out
