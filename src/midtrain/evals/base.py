"""The face every evaluation suite shows: its settings, what it checks, plans, runs and reports.

A suite is one entry of `midtrain.evals._registry.SUITES`, selected by `eval=<name>` and
configured under `eval.<name>` (`conf/eval/<name>.yaml`). `midtrain.eval.evaluate` knows
nothing of any one suite: it checks each (`check`, at launch, nothing loaded), plans each
(`plan`, the Inspect tasks with their data), runs each planned task (`run`) and merges the
result into `metrics.json` under `eval.<suite>` (or `eval.<suite>.<key>` for a suite of
several tasks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

from omegaconf import DictConfig, OmegaConf


@dataclass
class PlannedTask:
    """One task to run, and where its result goes in `metrics.json`."""

    suite: str
    key: str  # result key inside the suite ("anima", or a task label in a list suite)
    task: Any = None  # the Inspect `Task`; None for a suite scored without Inspect (the probe)
    limit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # copied into the result


class RunContext(Protocol):
    """What a suite's `run` gets from `evaluate`."""

    cfg: DictConfig  # the eval config
    run_dir: Path    # the run or stage directory being scored (its model is in hf/)

    def inspect(self, planned: PlannedTask):
        """Run a planned Inspect task on the model under test; its log, with samples."""


def plain(node: Any) -> Any:
    """A config node as plain Python (interpolations resolved)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


class Suite:
    """An Inspect suite scored from its log's headline metrics; subclasses say what they plan.

    Class attributes:
        name: the option of the `eval` group and the key in `metrics.json["eval"]`.
        schema: a dataclass with the keys and types of `eval.<name>` (see
            `midtrain.evals.settings.schema_problems`); a typo or a bad value fails at launch.
        graded: model-graded: `grader_models` is required.
        through_inspect: the model under test answers through Inspect, so the graders, their
            settings, the sampling settings and the model's name are part of the result's
            settings key.
        reads_hf: scores `<run_dir>/hf` itself, whatever model under test is named.
    """

    name: ClassVar[str]
    schema: ClassVar[type]
    graded: ClassVar[bool] = False
    through_inspect: ClassVar[bool] = True
    reads_hf: ClassVar[bool] = False

    def settings(self, cfg: DictConfig) -> DictConfig:
        return cfg.eval[self.name]

    def check(self, cfg: DictConfig, graders: list) -> None:
        """What can be checked before any data or model loads (the schema is checked before)."""
        if self.graded:
            from midtrain.evals.graders import require_graders

            require_graders(graders, f"eval={self.name}")

    def plan(self, cfg: DictConfig, graders: list, limit: int | None) -> list[PlannedTask]:
        """The tasks to run: data read and checked, nothing scored yet."""
        raise NotImplementedError

    def run(self, planned: PlannedTask, ctx: RunContext) -> dict:
        """Score one planned task; what goes into `metrics.json` (with `complete`)."""
        log = ctx.inspect(planned)
        summary = self.summarize(log, ctx.cfg)
        summary.update(planned.extra)
        summary["log"] = _log_ref(log.location, ctx.run_dir)
        return summary

    def summarize(self, log: Any, cfg: DictConfig) -> dict:
        """The result of one Inspect log."""
        from midtrain.evals.results import summarize_metrics

        return summarize_metrics(log)


class GradedSuite(Suite):
    """A model-graded Inspect suite with per-dimension scores (ANIMA-style dict scores).

    Its task is built from its settings: each key of `eval.<name>` is passed as the task
    argument of the same name (`repo_id` and `revision` as `dataset_repo_id` and
    `dataset_revision`), with the graders and their settings; the task's `metadata` keys
    named in `reported` are copied into the result.
    """

    graded = True
    task: ClassVar[Callable[..., Any]]  # the `@task` function
    reported: ClassVar[tuple[str, ...]] = ("dataset_revision", "grader_models")
    renames: ClassVar[dict[str, str]] = {"repo_id": "dataset_repo_id", "revision": "dataset_revision"}

    def plan(self, cfg: DictConfig, graders: list, limit: int | None) -> list[PlannedTask]:
        args = {self.renames.get(str(k), str(k)): v for k, v in (plain(self.settings(cfg)) or {}).items()}
        task = type(self).task(**args, grader_models=graders, grader=plain(cfg.grader))
        meta = task.metadata or {}
        return [PlannedTask(self.name, self.name, task, limit=limit, extra={k: meta[k] for k in self.reported})]

    def summarize(self, log: Any, cfg: DictConfig) -> dict:
        from midtrain.evals.results import summarize_graded

        return summarize_graded(log, float(cfg.max_missing_share))


def _log_ref(location: str | None, root: Path) -> str | None:
    """The Inspect log's path relative to the run dir when inside it (run dirs move)."""
    if not location:
        return None
    try:
        return str(Path(location).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return location
