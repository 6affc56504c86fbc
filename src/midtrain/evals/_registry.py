"""Inspect tasks of this project (`inspect eval midtrain/<task>`), via the `inspect_ai` entry point."""

from midtrain.evals.anima.task import anima
from midtrain.evals.human_compassion.task import human_compassion

__all__ = ["anima", "human_compassion"]
