"""What every model-graded suite shares: a required grader list and the graders' settings.

Inspect lets the model under test grade its own answers when no grader is named, so a
graded task refuses to build without one. The graders' settings are Inspect's own
`GenerateConfig` fields (`temperature`, `max_tokens`, `max_retries`, `max_connections`,
`timeout`, ...), passed through unchanged; Inspect rejects an unknown field or a bad value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from inspect_ai.model import GenerateConfig, Model

DEFAULT_EPOCHS = 5  # answers per question of a graded suite: the paper's and inspect_evals' default


class GraderRequiredError(ValueError):
    """Raised when a model-graded task is asked to run without an explicit grader."""


def require_graders(grader_models: Sequence[str | Model] | str | Model | None, task_name: str) -> list[str | Model]:
    """The grader list, or a clear error: Inspect would let the model under test grade itself.

    Args:
        grader_models: model ids (`provider/model`) or `Model` objects; a single string is
            accepted for `-T grader_models=...` on the command line.
        task_name: named in the error.
    """
    if isinstance(grader_models, (str, Model)):
        grader_models = [grader_models]
    graders = [g for g in (grader_models or []) if g]
    if not graders:
        raise GraderRequiredError(
            f"{task_name} needs an explicit grader: set grader_models (e.g. "
            f"`grader_models=[anthropic/claude-sonnet-4-5]`, or `-T grader_models=...` with "
            f"`inspect eval`). Without one, Inspect lets the model under test grade its own answers."
        )
    return graders


def grader_config(settings: Mapping[str, Any] | GenerateConfig | None = None) -> GenerateConfig:
    """The graders' `GenerateConfig` from its fields; a None value leaves Inspect's default.

    Raises:
        ValueError: an unknown field or a value of the wrong type (Inspect's own validation).
    """
    if isinstance(settings, GenerateConfig):
        return settings
    return GenerateConfig(**{str(k): v for k, v in dict(settings or {}).items() if v is not None})
