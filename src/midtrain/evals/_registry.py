"""The project's evaluation suites, and its Inspect tasks (`inspect eval midtrain/<task>`).

`SUITES` is the list `eval=<name>` chooses from (`conf/eval/<name>.yaml` configures each);
a new suite is a folder with its task and a `suite.py`, and here the import of each and its
entry in `SUITES`. This module is also the `inspect_ai` entry point: the tasks of the graded
suites are registered as `midtrain/<task>`, which `inspect eval midtrain/<task>` finds.
"""

from inspect_ai._util.registry import registry_add, registry_info

from midtrain.evals.anima import suite as _anima
from midtrain.evals.anima.task import anima
from midtrain.evals.base import GradedSuite, Suite
from midtrain.evals.human_compassion import suite as _human_compassion
from midtrain.evals.human_compassion.task import human_compassion
from midtrain.evals.probe import suite as _probe
from midtrain.evals.task_list import CAPABILITIES, SAFETY

__all__ = ["SUITES", "anima", "human_compassion"]

SUITES: dict[str, Suite] = {s.name: s for s in (
    _anima.SUITE,
    _human_compassion.SUITE,
    CAPABILITIES,
    SAFETY,
    _probe.SUITE,
)}

# Inspect namespaces a task by its package only when the distribution has the package's
# name or sits in site-packages; an editable install of `alignment-midtraining` is neither,
# so register the `midtrain/` names explicitly (Inspect has no public API for this).
for _task in (type(s).task for s in SUITES.values() if isinstance(s, GradedSuite)):
    _info = registry_info(_task)
    if "/" not in _info.name:
        registry_add(_task, _info.model_copy(update={"name": f"midtrain/{_info.name}"}))
