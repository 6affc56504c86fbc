"""Per-dimension grading that scores every sample whatever the graders reply.

Built on inspect_evals' ANIMA scorer: the same variable-set expansion
(`get_variable_sets`), grader prompt (`PER_DIMENSION_PROMPT`), one `model_graded_qa` call per
(dimension x variable set x grader), grader labels, weighted average
(`get_dimension_weighted_avg`), explanation (`_generate_explanation`) and score metadata.

What differs, and why:

- inspect_evals builds the explanation from every tagged dimension and raises
  `KeyError('<dimension>')` when one dimension got no parseable grade at all (a grader
  that answers without a `GRADE:` line, refuses, or is cut off). The sample then errors:
  its grades are lost from the counts and the crash, not the data, decides which
  questions are scored. Here the explanation is built from the graded dimensions only and
  names the ungraded ones.
- A dimension with no parseable grade is NaN in the score value instead of absent, so
  every epoch of a sample carries the same keys (the union of its tagged dimensions):
  Inspect refuses to reduce dict scores with mismatched keys, and its reducers skip NaN
  per key, so a dimension's epoch mean uses exactly the epochs that graded it.
- A sample with no parseable grade at all is unscored (NaN, left out of every metric and
  reducer), as upstream; it is never 0.0 and never an error.
- Per-dimension counts (`grades_by_dimension`) join upstream's `grades_attempted` and
  `grades_unparseable`, so a report can show where grades went missing.
- A grader call that raises (API error after the model's own retries) is not caught:
  the sample errors, Inspect's `retry_on_error` and `fail_on_error` apply, and the result
  counts it under `samples_failed`, apart from unparseable replies.

The metrics are inspect_evals' own, applied to the graded entries only (their
`np.mean` would turn one NaN dimension into a NaN metric).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from inspect_ai.model import GenerateConfig, Model, get_model
from inspect_ai.scorer import (
    Metric,
    SampleScore,
    Score,
    Scorer,
    Target,
    metric,
    model_graded_qa,
    scorer,
    value_to_float,
)
from inspect_ai.solver import TaskState
from inspect_evals.anima import metrics as _anima_metrics
from inspect_evals.anima.scorer import (
    PER_DIMENSION_PROMPT,
    _generate_explanation,
    _grader_label,
    get_variable_sets,
)
from inspect_evals.anima.types import AnimaDimension
from inspect_evals.anima.utils import get_dimension_weighted_avg
from inspect_evals.utils.scorers import GRADER_FAILED, GRADER_PARSE_FAILURE

from midtrain.stats import is_number

logger = logging.getLogger(__name__)

OVERALL = "overall"

# One grading call: (dimension, variable-set index, variable set, prompt template).
GradingJob = tuple[str, int, dict[str, str], str]


def resolve_graders(grader_models: Sequence[str | Model], grader_config: GenerateConfig) -> list[Model]:
    if not grader_models:
        raise ValueError("a per-dimension scorer needs at least one grader model")
    return [get_model(model=m, role="grader", config=grader_config) for m in grader_models]


async def grade_dimensions(
    state: TaskState,
    target: Target,
    jobs: list[GradingJob],
    graders: list[Model],
    grader_models: Sequence[str | Model],
) -> dict[tuple[str, int], dict[str, float | None]]:
    """Run every grading job with every grader; `{(dim, vset): {grader label: grade or None}}`.

    None marks a reply with no parseable grade. Exceptions from a grader propagate.
    """
    calls = []
    keys = []
    for dim, vset_idx, _vset, template in jobs:
        for grader_idx, grader in enumerate(graders):
            calls.append(model_graded_qa(model=grader, template=template)(state, target))
            keys.append((dim, vset_idx, _grader_label(grader_idx, list(grader_models))))
    results = await asyncio.gather(*calls)
    grades: dict[tuple[str, int], dict[str, float | None]] = {}
    for (dim, vset_idx, label), result in zip(keys, results):
        grade = value_to_float()(result.value) if result is not None else float("nan")
        if math.isnan(grade):
            logger.warning(
                "unparseable grade from %s for dimension %r variable set %d (grader failure, not the answer's)",
                label, dim, vset_idx,
            )
            grades.setdefault((dim, vset_idx), {})[label] = None
        else:
            grades.setdefault((dim, vset_idx), {})[label] = grade
    return grades


def dimension_score(
    answer: str,
    tags: list[str],
    jobs: list[GradingJob],
    grades: dict[tuple[str, int], dict[str, float | None]],
    overall_of: Callable[[dict[str, float]], float],
    explain: Callable[[float, list[str], dict[tuple[str, int], list[float]], dict[str, float]], str],
) -> Score:
    """The sample's Score from its grades: per variable set mean over graders, per dimension
    mean over variable sets, `overall` from `overall_of`; NaN for ungraded dimensions."""
    usable: dict[tuple[str, int], list[float]] = {}
    by_dim_counts: dict[str, dict[str, int]] = {d: {"attempted": 0, "unparseable": 0} for d in tags}
    for key, by_grader in grades.items():
        for g in by_grader.values():
            by_dim_counts[key[0]]["attempted"] += 1
            if g is None:
                by_dim_counts[key[0]]["unparseable"] += 1
            else:
                usable.setdefault(key, []).append(g)
    vsets_by_dim: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for dim, vset_idx, vset, _ in jobs:
        vsets_by_dim.setdefault(dim, []).append((vset_idx, vset))
    metadata: dict[str, Any] = {
        "dimension_grades": {
            dim: [
                {"variables": vset, "by_grader": dict(sorted(grades.get((dim, vi), {}).items()))}
                for vi, vset in vsets_by_dim.get(dim, [])
            ]
            for dim in tags
        },
        "grades_attempted": sum(c["attempted"] for c in by_dim_counts.values()),
        "grades_unparseable": sum(c["unparseable"] for c in by_dim_counts.values()),
        "grades_by_dimension": by_dim_counts,
    }
    per_vset: dict[str, list[float]] = {}
    for (dim, _), gs in usable.items():
        per_vset.setdefault(dim, []).append(np.mean(gs).item())
    avg_by_dim = {dim: np.mean(v).item() for dim, v in per_vset.items()}
    ungraded = [d for d in tags if d not in avg_by_dim]
    if ungraded:
        metadata["dimensions_ungraded"] = ungraded
    if not avg_by_dim:
        # Nothing graded: unscored, so the sample is neither 0.0 nor an error.
        return Score.unscored(
            reason=GRADER_FAILED,
            answer=answer,
            explanation="No grader produced a parseable grade for any dimension.",
            metadata={"grader_failure_mode": GRADER_PARSE_FAILURE, **metadata},
        )
    overall = overall_of(avg_by_dim)
    graded = [d for d in tags if d in avg_by_dim]
    explanation = explain(overall, graded, usable, avg_by_dim)
    if ungraded:
        explanation += "\n\nNo parseable grade (left out of the mean): " + ", ".join(ungraded)
    value: dict[str, float] = {OVERALL: overall}
    value.update({d: avg_by_dim.get(d, float("nan")) for d in tags})
    return Score(value=value, answer=answer, explanation=explanation, metadata=metadata)


@scorer(metrics=[])
def anima_scorer(
    dimensions: dict[str, AnimaDimension],
    revision: str = "N/A",
    grader_models: Sequence[str | Model] = (),
    grader_config: GenerateConfig = GenerateConfig(),
) -> Scorer:
    """ANIMA's per-dimension scorer (inspect_evals' grading) that never loses a sample.

    Args:
        dimensions: dimension name -> `AnimaDimension`.
        revision: dataset label shown to the grader ("ANIMA Revision: ...").
        grader_models: one or more graders (required); their grades are averaged.
        grader_config: generation settings of the graders.
    """
    graders = resolve_graders(grader_models, grader_config)
    models = list(grader_models)

    async def score(state: TaskState, target: Target) -> Score:
        parsed = json.loads(str(target.text))
        tags: list[str] = parsed["tags"]
        dim_vsets = get_variable_sets(dimensions, tags, parsed["variables"])
        jobs: list[GradingJob] = []
        for dim in tags:
            d = dimensions[dim]
            for vset_idx, vset in enumerate(dim_vsets[dim]):
                guiding = d.guiding_question
                for k, v in vset.items():
                    guiding = guiding.replace("{{" + k + "}}", v)
                template = PER_DIMENSION_PROMPT.format(
                    revision=revision, dimension=d.name, guiding_question=guiding, indicators=d.indicators
                )
                jobs.append((dim, vset_idx, vset, template))
        grades = await grade_dimensions(state, target, jobs, graders, models)

        def explain(overall, graded, usable, avg_by_dim):
            return _generate_explanation(
                overall_score=overall,
                target_dimensions=graded,
                dimensions=dimensions,
                dim_vsets=dim_vsets,
                results_by_dim_var_set=usable,
                avg_by_dim=avg_by_dim,
                grader_models=models,
            )

        return dimension_score(
            state.output.completion, tags, jobs, grades,
            lambda avg: get_dimension_weighted_avg(avg, dimensions), explain,
        )

    return score


# Metrics: inspect_evals' definitions on the graded entries only --------------------------
def graded_only(scores: list[SampleScore]) -> list[SampleScore]:
    """Sample scores with NaN dimensions dropped and unscored samples left out."""
    out = []
    for s in scores:
        v = s.score.value
        if not isinstance(v, Mapping) or not is_number(v.get(OVERALL)):
            continue
        kept = {k: x for k, x in v.items() if is_number(x)}
        out.append(s.model_copy(update={"score": s.score.model_copy(update={"value": kept})}))
    return out


def _nan_if_empty(fn: Callable[[list[SampleScore]], Any], empty: Any) -> Callable[[list[SampleScore]], Any]:
    def compute(scores: list[SampleScore]) -> Any:
        kept = graded_only(scores)
        return fn(kept) if kept else empty

    return compute


@metric
def overall_mean() -> Metric:
    """inspect_evals' `overall_mean` over graded samples (NaN, not 0.0, when there are none)."""
    return _nan_if_empty(_anima_metrics.overall_mean(), float("nan"))


@metric
def avg_by_dimension() -> Metric:
    """inspect_evals' `avg_by_dimension` over the samples that graded each dimension."""
    return _nan_if_empty(_anima_metrics.avg_by_dimension(), {})


@metric
def dimension_normalized_avg(dims_by_name: dict[str, AnimaDimension]) -> Metric:
    """inspect_evals' weighted mean of the per-dimension averages, on graded entries only."""
    return _nan_if_empty(_anima_metrics.dimension_normalized_avg(dims_by_name), float("nan"))
