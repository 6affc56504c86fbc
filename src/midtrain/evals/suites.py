"""Build the Inspect tasks of each evaluation suite from the `eval` config group.

Everything here runs before any model is loaded or called: dataset files are read and
checked, task names are resolved, graders are required where a task is model-graded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

from inspect_ai import Task
from inspect_ai.model import Model
from omegaconf import DictConfig, OmegaConf

from midtrain.evals.anima.task import require_graders

GRADED_SUITES = ("anima", "human_compassion")
TASK_LIST_SUITES = ("capabilities", "safety")
SUITES = (*GRADED_SUITES, *TASK_LIST_SUITES, "probe")


@dataclass
class PlannedTask:
    """One Inspect task to run, and where its result goes in `metrics.json`."""

    suite: str
    key: str  # result key inside the suite ("anima", or a task label in a list suite)
    task: Task
    limit: int | None = None
    graded: bool = False  # summarise with per-dimension grades (ANIMA-style dict scores)
    extra: dict[str, Any] = field(default_factory=dict)  # copied into the result


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def resolve_task(name: str) -> Callable[..., Task]:
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


def _grader_kwargs(grader: DictConfig) -> dict[str, Any]:
    return {
        "grader_temperature": grader.get("temperature"),
        "grader_max_tokens": grader.get("max_tokens"),
        "grader_max_retries": grader.get("max_retries"),
        "grader_max_connections": grader.get("max_connections"),
    }


def _anima(cfg: DictConfig, graders: list[str | Model], limit: int | None) -> PlannedTask:
    from midtrain.evals.anima.task import anima

    a = cfg.eval.anima
    task = anima(
        grader_models=graders,
        data_dir=a.data_dir,
        dataset_repo_id=a.repo_id,
        dataset_revision=a.revision,
        subset=a.subset,
        epochs=int(a.epochs),
        grader_timeout=cfg.grader.get("timeout"),
        temperature=a.get("temperature"),
        dimensions_dir=a.get("dimensions_dir"),
        dimensions_repo_id=a.get("dimensions_repo_id"),
        dimensions_revision=a.get("dimensions_revision"),
        questions_from=a.get("questions_from") or "data_dir",
        tag_renames=_plain(a.get("tag_renames")) or {},
        tag_drops=_plain(a.get("tag_drops")) or [],
        expect_questions=a.get("expect_questions"),
        **_grader_kwargs(cfg.grader),
    )
    meta = task.metadata or {}
    extra = {
        "dataset_revision": meta["dataset_revision"],
        "subset": meta["subset"],
        "questions": meta["questions"],
        "grader_models": meta["grader_models"],
    }
    return PlannedTask("anima", "anima", task, limit=limit, graded=True, extra=extra)


def _human_compassion(cfg: DictConfig, graders: list[str | Model], limit: int | None) -> PlannedTask:
    from midtrain.evals.human_compassion.task import human_compassion

    h = cfg.eval.human_compassion
    task = human_compassion(
        grader_models=graders,
        language=h.language,
        epochs=int(h.epochs),
        data_dir=h.get("data_dir"),
        grader_timeout=cfg.grader.get("timeout"),
        dataset_repo_id=h.repo_id,
        dataset_revision=h.revision,
        dimensions_repo_id=h.dimensions_repo_id,
        dimensions_revision=h.dimensions_revision,
        **_grader_kwargs(cfg.grader),
    )
    meta = task.metadata or {}
    extra = {
        "dataset_revision": meta["dataset_revision"],
        "dimensions_revision": meta["dimensions_revision"],
        "grader_models": meta["grader_models"],
    }
    return PlannedTask("human_compassion", "human_compassion", task, limit=limit, graded=True, extra=extra)


class TaskBuildError(RuntimeError):
    """An Inspect task of a list suite could not be built (its data or a dependency is missing)."""


_UNREACHABLE = re.compile(r"Couldn't reach '([^']+)'")


def _build_task(fn: Callable[..., Task], args: dict[str, Any], where: str, drop: str) -> Task:
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


def _task_list(suite: str, cfg: DictConfig, graders: list[str | Model], limit: int | None) -> list[PlannedTask]:
    spec = cfg.eval[suite]
    tasks = spec.get("tasks") or {}
    if not tasks:
        raise ValueError(f"eval.{suite}.tasks is empty: name at least one Inspect task")
    # Resolve every name first, so a typo fails before any dataset download.
    resolved = {}
    for key, t in tasks.items():
        if t.get("task") in (None, "???"):
            raise ValueError(f"eval.{suite}.tasks.{key}.task is required (e.g. inspect_evals/gsm8k)")
        resolved[key] = resolve_task(str(t.task))
    planned = []
    for key, t in tasks.items():
        args = dict(_plain(t.get("args")) or {})
        grader_arg = t.get("grader_arg")
        if grader_arg:
            g = require_graders(graders, f"eval.{suite}.tasks.{key} ({t.task}, graded through '{grader_arg}')")
            args[grader_arg] = g[0]
        task_limit = t.get("limit")
        if limit is not None:
            task_limit = min(limit, task_limit) if task_limit is not None else limit
        task = _build_task(resolved[key], args, f"eval.{suite}.tasks.{key} ({t.task})", f"~eval.{suite}.tasks.{key}")
        extra: dict[str, Any] = {"task": str(t.task)}
        if grader_arg:
            extra["grader_models"] = [str(args[grader_arg])]
        planned.append(PlannedTask(suite, str(key), task, limit=task_limit, extra=extra))
    return planned


def plan_suites(cfg: DictConfig, grader_models: list[str | Model] | None = None) -> list[PlannedTask]:
    """Check the suites in `cfg.eval` and build their tasks (the probe is not an Inspect task).

    Args:
        cfg: the composed `eval.yaml` config.
        grader_models: graders to use instead of `cfg.grader_models` (e.g. `Model` objects).

    Raises:
        ValueError: an unknown suite, an unknown task name, or a graded suite without a grader.
    """
    suites = list(cfg.eval.keys())
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise ValueError(f"unknown eval suite(s) {unknown} in config group 'eval'; known: {list(SUITES)}")
    if not suites:
        raise ValueError("no eval suite selected: pass eval=<anima|human_compassion|capabilities|safety|probe|paper>")
    graders = list(grader_models) if grader_models else list(_plain(cfg.get("grader_models")) or [])
    # Fail on a missing grader before loading anything.
    for s in suites:
        if s in GRADED_SUITES:
            require_graders(graders, f"eval={s}")
    limit = cfg.inspect.get("limit")
    planned: list[PlannedTask] = []
    for s in suites:
        if s == "anima":
            planned.append(_anima(cfg, graders, limit))
        elif s == "human_compassion":
            planned.append(_human_compassion(cfg, graders, limit))
        elif s in TASK_LIST_SUITES:
            planned.extend(_task_list(s, cfg, graders, limit))
    return planned
