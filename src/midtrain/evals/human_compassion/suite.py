"""The `human_compassion` suite: `conf/eval/human_compassion.yaml` -> the MORU task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from midtrain.evals.base import GradedSuite
from midtrain.evals.human_compassion.task import human_compassion


@dataclass
class HumanCompassionSettings:
    """`eval.human_compassion`: the arguments of the `human_compassion` task (see there)."""

    data_dir: Optional[str] = MISSING
    language: Optional[str] = MISSING
    epochs: int = MISSING
    repo_id: str = MISSING
    revision: str = MISSING
    dimensions_repo_id: str = MISSING
    dimensions_revision: str = MISSING

    RANGES = {"epochs": ("int", 1, None, True, False)}
    CHOICES = {"language": ("en", "ms", "hi", None)}


class HumanCompassion(GradedSuite):
    name = "human_compassion"
    schema = HumanCompassionSettings
    task = human_compassion
    reported = ("dataset_revision", "dimensions_revision", "grader_models")


SUITE = HumanCompassion()
