"""The `anima` suite: `conf/eval/anima.yaml` (or `anima_paper.yaml`) -> the `anima` task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from omegaconf import MISSING

from midtrain.evals.anima.task import anima
from midtrain.evals.base import GradedSuite


@dataclass
class AnimaSettings:
    """`eval.anima`: the arguments of the `anima` task (see there)."""

    data_dir: Optional[str] = MISSING
    repo_id: str = MISSING
    revision: str = MISSING
    questions_from: str = MISSING
    dimensions_dir: Optional[str] = MISSING
    dimensions_repo_id: Optional[str] = MISSING
    dimensions_revision: Optional[str] = MISSING
    tag_renames: Dict[str, str] = MISSING
    tag_drops: List[str] = MISSING
    subset: str = MISSING
    expect_questions: Optional[int] = MISSING
    epochs: int = MISSING
    temperature: Optional[float] = MISSING

    RANGES = {"epochs": ("int", 1, None, True, False), "expect_questions": ("int", 1, None, True, True),
              "temperature": ("float", 0, None, True, True)}
    CHOICES = {"questions_from": ("data_dir", "config"), "subset": ("original", "all")}


class Anima(GradedSuite):
    name = "anima"
    schema = AnimaSettings
    task = anima
    reported = ("dataset_revision", "subset", "questions", "grader_models")


SUITE = Anima()
