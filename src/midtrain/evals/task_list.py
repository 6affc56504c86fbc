"""Suites that are lists of installed Inspect tasks (`capabilities`, `safety`).

Each entry of `eval.<suite>.tasks` names a task (`<package>/<task>`, found through the
`inspect_ai` entry points, as `inspect eval` finds it), a sample limit, task args, and
optionally `grader_arg`, the task argument that takes a grader model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, Dict, Optional

from omegaconf import MISSING, DictConfig

from midtrain.evals.base import PlannedTask, Suite, plain


@dataclass
class ListedTask:
    task: str = MISSING
    limit: Optional[int] = None
    args: Dict[str, Any] = MISSING
    grader_arg: Optional[str] = None

    RANGES = {"limit": ("int", 1, None, True, True)}


@dataclass
class TaskListSettings:
    tasks: Dict[str, ListedTask] = MISSING


def resolve_task(name: str) -> Callable[..., Any]:
    """Find an Inspect task function by its registry name `<package>/<task>`.

    Packages are the installed `inspect_ai` entry points (`inspect_evals`, `midtrain`), the
    same lookup `inspect eval <package>/<task>` does.

    Raises:
        ValueError: naming the task when the package or the task is unknown.
    """
    pkg, sep, fn = name.partition("/")
    if not sep or not pkg or not fn:
        raise ValueError(f"task name {name!r} must look like '<package>/<task>', e.g. 'inspect_evals/gsm8k'")
    eps = {ep.name: ep for ep in entry_points(group="inspect_ai")}
    if pkg not in eps:
        raise ValueError(f"unknown task {name!r}: no installed Inspect task package {pkg!r} (installed: {sorted(eps)})")
    obj = getattr(eps[pkg].load(), fn, None)
    if obj is None or not callable(obj):
        raise ValueError(f"unknown task {name!r}: package {pkg!r} has no task {fn!r}")
    return obj


class TaskBuildError(RuntimeError):
    """An Inspect task of a list suite could not be built (its data or a dependency is missing)."""


_UNREACHABLE = re.compile(r"Couldn't reach '([^']+)'")


def _build_task(fn: Callable[..., Any], args: dict[str, Any], where: str, drop: str) -> Any:
    """Build one task; a dataset it cannot download, or anything else it lacks, is named."""
    try:
        return fn(**args)
    except (ConnectionError, OSError) as e:
        found = _UNREACHABLE.search(str(e))
        dataset = found.group(1) if found else (getattr(e, "filename", None) or str(e))
        raise TaskBuildError(
            f"{where} needs the dataset {dataset!r}, which could not be downloaded (no network, or "
            f"HF_HUB_OFFLINE set) and is not in the local cache ({type(e).__name__}: {e}). Run once with "
            f"network access to fill the cache, or leave the task out with '{drop}'."
        ) from e
    except Exception as e:
        raise TaskBuildError(f"{where} could not be built ({type(e).__name__}: {e}); leave it out with '{drop}'") from e


class TaskList(Suite):
    """A suite of installed Inspect tasks, each scored by its own headline metrics."""

    schema = TaskListSettings

    def __init__(self, name: str):
        self.name = name  # type: ignore[misc]

    def check(self, cfg: DictConfig, graders: list) -> None:
        """Every task named resolves and every graded one has a grader (a typo fails before any download)."""
        from midtrain.evals.graders import require_graders

        tasks = self.settings(cfg).tasks
        if not tasks:
            raise ValueError(f"eval.{self.name}.tasks is empty: name at least one Inspect task")
        for key, t in tasks.items():
            resolve_task(str(t.task))
            if t.get("grader_arg"):
                require_graders(graders, f"eval.{self.name}.tasks.{key} ({t.task}, graded through '{t.grader_arg}')")

    def plan(self, cfg: DictConfig, graders: list, limit: int | None) -> list[PlannedTask]:
        self.check(cfg, graders)
        planned = []
        for key, t in self.settings(cfg).tasks.items():
            args = dict(plain(t.get("args")) or {})
            grader_arg = t.get("grader_arg")
            if grader_arg:
                args[grader_arg] = graders[0]
            task_limit = t.get("limit")
            if limit is not None:
                task_limit = min(limit, task_limit) if task_limit is not None else limit
            task = _build_task(resolve_task(str(t.task)), args, f"eval.{self.name}.tasks.{key} ({t.task})",
                               f"~eval.{self.name}.tasks.{key}")
            extra: dict[str, Any] = {"task": str(t.task)}
            if grader_arg:
                extra["grader_models"] = [str(args[grader_arg])]
            planned.append(PlannedTask(self.name, str(key), task, limit=task_limit, extra=extra))
        return planned


CAPABILITIES = TaskList("capabilities")
SAFETY = TaskList("safety")
