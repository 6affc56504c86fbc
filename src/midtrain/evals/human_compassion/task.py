"""Human compassion through inspect_evals' MORU (Moral Reasoning under Uncertainty) task.

    inspect eval midtrain/human_compassion --model hf/<run_dir>/hf -T grader_models=<provider/model>

MORU's scenarios include human compassion and power seeking next to novel-entity and
digital-mind dilemmas; it is graded per dimension like ANIMA. This wrapper adds the
project's rules: an explicit grader is required, epochs are configurable, and the hub
revisions stay pinned (inspect_evals' own pins by default).
"""

from __future__ import annotations

from inspect_ai import Task, task, task_with
from inspect_ai.model import Model
from inspect_evals.moru import moru
from inspect_evals.moru.dataset import (
    DATASET_DEFAULT_REVISION,
    DATASET_REPO_ID,
    DIMENSIONS_DEFAULT_REVISION,
    DIMENSIONS_REPO_ID,
)

from midtrain.evals.anima.task import DEFAULT_EPOCHS, require_graders


@task
def human_compassion(
    grader_models: list[str | Model] | str | None = None,
    language: str | None = "en",
    epochs: int = DEFAULT_EPOCHS,
    dataset_repo_id: str = DATASET_REPO_ID,
    dataset_revision: str = DATASET_DEFAULT_REVISION,
    dimensions_repo_id: str = DIMENSIONS_REPO_ID,
    dimensions_revision: str = DIMENSIONS_DEFAULT_REVISION,
    grader_temperature: float | None = None,
    grader_max_tokens: int | None = None,
    grader_max_retries: int | None = None,
    grader_max_connections: int | None = None,
    shuffle: bool = False,
) -> Task:
    """MORU with a required grader.

    Args:
        grader_models: one or more grader models; their grades are averaged.
        language: "en", "ms", "hi", or None for all three.
        epochs: answers per question, reduced by mean.
        dataset_repo_id: hub dataset with the questions.
        dataset_revision: its commit SHA.
        dimensions_repo_id: hub dataset with the dimensions.
        dimensions_revision: its commit SHA.
        grader_temperature: grader sampling temperature.
        grader_max_tokens: grader output limit.
        grader_max_retries: retries per grader call before the sample errors.
        grader_max_connections: concurrent grader calls.
        shuffle: shuffle question order.
    """
    graders = require_graders(grader_models, "human_compassion")
    inner = moru(
        dataset_repo_id=dataset_repo_id,
        dimensions_repo_id=dimensions_repo_id,
        dataset_revision=dataset_revision,
        dimensions_revision=dimensions_revision,
        grader_models=graders,
        grader_max_connections=grader_max_connections,
        grader_temperature=grader_temperature,
        grader_max_tokens=grader_max_tokens,
        grader_max_retries=grader_max_retries,
        language=language,
        shuffle=shuffle,
    )
    return task_with(
        inner,
        name="human_compassion",
        epochs=epochs,
        metadata={
            **(inner.metadata or {}),
            "dataset_revision": f"{dataset_repo_id}@{dataset_revision}",
            "dimensions_revision": f"{dimensions_repo_id}@{dimensions_revision}",
            "grader_models": [str(g) for g in graders],
        },
    )
