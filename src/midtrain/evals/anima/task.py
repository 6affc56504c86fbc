"""ANIMA as an Inspect task: inspect_evals' scorer and metrics on the project's loader.

    inspect eval midtrain/anima --model hf/<run_dir>/hf \
        -T grader_models=anthropic/claude-sonnet-4-5 -T data_dir=<dir with questions.jsonl>

Reused from inspect_evals: record conversion, the per-dimension grader prompt, variable
sets, weighting and metric definitions. The scorer is `midtrain.evals.anima.scorer`'s,
which keeps inspect_evals' grading but scores every sample whatever the graders reply
(see there why). Added here: a local data directory, the 26-question "original" subset,
the paper's `ahb-original` questions (tag renames, dimensions from another revision),
epochs, the answer temperature, and a required grader.
"""

from __future__ import annotations

from typing import Any

from inspect_ai import Task, task
from inspect_ai.model import GenerateConfig, Model
from inspect_ai.solver import generate

from midtrain.evals.anima.dataset import DATASET_DEFAULT_REVISION, DATASET_REPO_ID, TagMap, load_anima
from midtrain.evals.anima.scorer import anima_scorer, avg_by_dimension, dimension_normalized_avg, overall_mean
from midtrain.evals.graders import DEFAULT_EPOCHS, grader_config, require_graders


@task
def anima(
    grader_models: list[str | Model] | str | None = None,
    data_dir: str | None = None,
    dataset_repo_id: str = DATASET_REPO_ID,
    dataset_revision: str = DATASET_DEFAULT_REVISION,
    subset: str = "original",
    epochs: int = DEFAULT_EPOCHS,
    grader: dict[str, Any] | None = None,
    shuffle: bool = False,
    temperature: float | None = None,
    dimensions_dir: str | None = None,
    dimensions_repo_id: str | None = None,
    dimensions_revision: str | None = None,
    questions_from: str = "data_dir",
    tag_renames: dict[str, str] | None = None,
    tag_drops: list[str] | None = None,
    expect_questions: int | None = None,
) -> Task:
    """ANIMA (Animal Norms In Moral Assessment) with a required grader.

    Args:
        grader_models: one or more grader models; their grades are averaged.
        data_dir: local directory with `questions.jsonl` and `dimensions.jsonl`; when None
            the hub dataset `dataset_repo_id` at `dataset_revision` is used.
        dataset_repo_id: hub dataset id.
        dataset_revision: hub commit SHA.
        subset: "original" (26 English questions, the paper's set) or "all" (115).
        epochs: answers per question, reduced by mean.
        grader: the graders' Inspect `GenerateConfig` fields (e.g. `{temperature: 0, timeout: 120}`).
        shuffle: shuffle question order.
        temperature: sampling temperature of the model under test (None = provider default;
            an eval-wide `temperature` overrides it).
        dimensions_dir: local directory with `dimensions.jsonl`; None = `data_dir`.
        dimensions_repo_id: hub dataset of the dimensions; None = `dataset_repo_id`.
        dimensions_revision: its commit SHA; None = `dataset_revision`.
        questions_from: how the hub stores questions: "data_dir" (anima) or "config" (ahb-original).
        tag_renames: question tag -> dimension name, for older spellings.
        tag_drops: question tags that name no scored dimension, removed.
        expect_questions: exactly this many questions must load (a guard against silent drops).
    """
    graders = require_graders(grader_models, "anima")
    data = load_anima(
        data_dir, dataset_repo_id, dataset_revision, subset,  # type: ignore[arg-type]
        dimensions_dir=dimensions_dir,
        dimensions_repo_id=dimensions_repo_id,
        dimensions_revision=dimensions_revision,
        tag_map=TagMap(dict(tag_renames or {}), frozenset(tag_drops or ())),
        questions_from=questions_from,
        expect_questions=expect_questions,
    )
    dims = data.dims_by_name
    return Task(
        dataset=data.dataset(shuffle=shuffle),
        solver=generate(),
        scorer=anima_scorer(
            dimensions=dims,
            revision=data.revision,
            grader_models=graders,
            grader_config=grader_config(grader),
        ),
        metrics=[overall_mean(), dimension_normalized_avg(dims), avg_by_dimension()],
        epochs=epochs,
        config=GenerateConfig(temperature=temperature) if temperature is not None else GenerateConfig(),
        name="anima",
        metadata={
            "dataset_revision": data.revision,
            "subset": subset,
            "questions": len(data.samples),
            "grader_models": [str(g) for g in graders],
        },
    )
