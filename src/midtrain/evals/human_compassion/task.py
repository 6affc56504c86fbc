"""Human compassion through inspect_evals' MORU (Moral Reasoning under Uncertainty) task.

    inspect eval midtrain/human_compassion --model hf/<run_dir>/hf -T grader_models=<provider/model>

MORU's scenarios include human compassion and power seeking next to novel-entity and
digital-mind dilemmas; it is graded per dimension like ANIMA. Reused from inspect_evals:
the record conversion (tags lower-cased, duplicate rows dropped), the dimension mapping,
the grader prompt, the explanation and the metric definitions. Added here: a local data
directory, a required grader, configurable epochs, pinned hub revisions, and the
project's per-dimension scorer (`midtrain.evals.anima.scorer`): MORU's own leaves a
dimension with no parseable grade out of the score dict, so Inspect refuses to reduce
epochs whose dimensions differ, and it reports no grade counts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import GenerateConfig, Model
from inspect_ai.scorer import Score, Scorer, Target, scorer
from inspect_ai.solver import TaskState, generate
from inspect_evals.moru.dataset import (
    DATASET_DEFAULT_REVISION,
    DATASET_REPO_ID,
    DIMENSIONS_DEFAULT_REVISION,
    DIMENSIONS_REPO_ID,
    record_to_sample,
)
from inspect_evals.moru.scorer import PER_DIMENSION_PROMPT, _generate_explanation
from inspect_evals.moru.types import MoruDimension

from midtrain.evals.anima.dataset import _local_revision, _read_rows, _split_files, hub_unreachable
from midtrain.evals.anima.scorer import (
    GradingJob,
    avg_by_dimension,
    dimension_score,
    grade_dimensions,
    overall_mean,
    resolve_graders,
)
from midtrain.evals.graders import DEFAULT_EPOCHS, grader_config, require_graders

QUESTION_FIELDS = ("id", "question", "dimension_tags", "language")
DIMENSION_FIELDS = ("dimension", "guiding_question")
HUB_HINT = "Point data_dir at a local copy (questions.jsonl and dimensions.jsonl), or fill the Hugging Face cache once with network access."


def _rows_to_dimensions(rows: Iterable[tuple[str, dict]]) -> list[MoruDimension]:
    """Dimension rows as inspect_evals' MORU loader maps them (names stripped and lower-cased)."""
    dims = []
    for where, row in rows:
        name = (row.get("dimension") or "").strip()
        if not name or not row.get("guiding_question"):
            raise ValueError(f"{where}: 'dimension' and 'guiding_question' must be non-empty")
        dims.append(MoruDimension(name=name.lower(), guiding_question=row["guiding_question"],
                                  indicators=row.get("observable_indicators") or ""))
    names = [d.name for d in dims]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate MORU dimension names: {sorted({n for n in names if names.count(n) > 1})}")
    return dims


def _rows_to_samples(rows: Iterable[tuple[str, dict]], valid: set[str], language: str | None) -> list[Sample]:
    convert = record_to_sample(valid, language)
    samples = []
    for where, row in rows:
        try:
            out = convert(row)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e
        if isinstance(out, Sample):
            samples.append(out)
    return samples


def load_moru(
    data_dir: str | Path | None = None,
    language: str | None = "en",
    dataset_repo_id: str = DATASET_REPO_ID,
    dataset_revision: str = DATASET_DEFAULT_REVISION,
    dimensions_repo_id: str = DIMENSIONS_REPO_ID,
    dimensions_revision: str = DIMENSIONS_DEFAULT_REVISION,
) -> tuple[list[Sample], dict[str, MoruDimension], str]:
    """MORU samples, dimensions by name and a revision label, from `data_dir` or the hub.

    `data_dir` holds `questions.jsonl` (`id`, `question`, `dimension_tags` as a comma-separated
    string, `language`) and `dimensions.jsonl` (`dimension`, `guiding_question`,
    `observable_indicators`), or `questions/*.jsonl` and `dimensions/*.jsonl`.
    """
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"MORU dataset directory not found: {root}")
        q_files, d_files = _split_files(root, "questions"), _split_files(root, "dimensions")
        dims = _rows_to_dimensions(_read_rows(d_files, DIMENSION_FIELDS))
        samples = _rows_to_samples(_read_rows(q_files, QUESTION_FIELDS), {d.name for d in dims}, language)
        label = _local_revision(q_files + d_files)
    else:
        from inspect_evals.moru.dataset import load_dataset_from_hf, load_dimensions

        try:
            dims = load_dimensions(dimensions_repo_id, dimensions_revision)
        except (ConnectionError, OSError) as e:
            raise hub_unreachable(f"MORU dimensions from the hub dataset {dimensions_repo_id}@{dimensions_revision}", e, HUB_HINT) from e
        try:
            samples = list(load_dataset_from_hf(dataset_repo_id, dataset_revision, {d.name for d in dims}, language))
        except (ConnectionError, OSError) as e:
            raise hub_unreachable(f"MORU questions from the hub dataset {dataset_repo_id}@{dataset_revision}", e, HUB_HINT) from e
        label = f"{dataset_repo_id}@{dataset_revision}"
    if not samples:
        raise ValueError(f"no MORU questions for language={language!r} ({label})")
    return samples, {d.name: d for d in dims}, label


@scorer(metrics=[])
def moru_scorer(
    dimensions: dict[str, MoruDimension],
    grader_models: list[str | Model],
    grader_config: GenerateConfig = GenerateConfig(),
) -> Scorer:
    """MORU's per-dimension grading (its prompt, unweighted mean) that never loses a sample."""
    graders = resolve_graders(grader_models, grader_config)
    models = list(grader_models)

    async def score(state: TaskState, target: Target) -> Score:
        tags = [t for t in json.loads(str(target.text))["tags"] if t in dimensions]
        jobs: list[GradingJob] = [
            (t, 0, {}, PER_DIMENSION_PROMPT.format(dimension=dimensions[t].name,
                                                   guiding_question=dimensions[t].guiding_question,
                                                   indicators=dimensions[t].indicators))
            for t in tags
        ]
        grades = await grade_dimensions(state, target, jobs, graders, models)
        return dimension_score(
            state.output.completion, tags, jobs, grades,
            lambda avg: np.mean(list(avg.values())).item(),
            lambda overall, graded, _usable, avg: _generate_explanation(overall, graded, avg),
        )

    return score


@task
def human_compassion(
    grader_models: list[str | Model] | str | None = None,
    language: str | None = "en",
    epochs: int = DEFAULT_EPOCHS,
    data_dir: str | None = None,
    dataset_repo_id: str = DATASET_REPO_ID,
    dataset_revision: str = DATASET_DEFAULT_REVISION,
    dimensions_repo_id: str = DIMENSIONS_REPO_ID,
    dimensions_revision: str = DIMENSIONS_DEFAULT_REVISION,
    grader: dict[str, Any] | None = None,
    shuffle: bool = False,
) -> Task:
    """MORU with a required grader.

    Args:
        grader_models: one or more grader models; their grades are averaged.
        language: "en", "ms", "hi", or None for all three.
        epochs: answers per question, reduced by mean.
        data_dir: local directory with `questions.jsonl` and `dimensions.jsonl`; None = the hub.
        dataset_repo_id: hub dataset with the questions.
        dataset_revision: its commit SHA.
        dimensions_repo_id: hub dataset with the dimensions.
        dimensions_revision: its commit SHA.
        grader: the graders' Inspect `GenerateConfig` fields (e.g. `{temperature: 0, timeout: 120}`).
        shuffle: shuffle question order.
    """
    graders = require_graders(grader_models, "human_compassion")
    samples, dims, label = load_moru(data_dir, language, dataset_repo_id, dataset_revision,
                                     dimensions_repo_id, dimensions_revision)
    dataset = MemoryDataset(samples, name="human_compassion", location=label)
    if shuffle:
        dataset.shuffle()
    return Task(
        dataset=dataset,
        solver=generate(),
        scorer=moru_scorer(
            dimensions=dims,
            grader_models=graders,
            grader_config=grader_config(grader),
        ),
        metrics=[overall_mean(), avg_by_dimension()],
        epochs=epochs,
        name="human_compassion",
        metadata={
            "dataset_revision": label,
            "dimensions_revision": (f"{dimensions_repo_id}@{dimensions_revision}" if data_dir is None else label),
            "language": language,
            "grader_models": [str(g) for g in graders],
        },
    )
