"""Inspect tasks of this project (`inspect eval midtrain/<task>`), via the `inspect_ai` entry point."""

from inspect_ai._util.registry import registry_add, registry_info

from midtrain.evals.anima.task import anima
from midtrain.evals.human_compassion.task import human_compassion

__all__ = ["anima", "human_compassion"]

# Inspect namespaces a task by its package only when the distribution has the package's
# name or sits in site-packages; an editable install of `alignment-midtraining` is neither,
# so register the `midtrain/` names explicitly (Inspect has no public API for this).
for _task in (anima, human_compassion):
    _info = registry_info(_task)
    if "/" not in _info.name:
        registry_add(_task, _info.model_copy(update={"name": f"midtrain/{_info.name}"}))
