"""The suites an eval config selects (`cfg.eval`), checked and planned from the registry.

Everything here runs before any model is loaded or called: settings are checked against
each suite's schema, dataset files are read and checked, task names are resolved, graders
are required where a task is model-graded.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from midtrain.evals.base import PlannedTask, Suite


def selected_suites(cfg: DictConfig) -> list[Suite]:
    """The registry's suites named in `cfg.eval`, in their order.

    Raises:
        ValueError: an unknown suite, or none at all.
    """
    from midtrain.evals._registry import SUITES

    names = [str(s) for s in cfg.eval.keys()]
    unknown = [s for s in names if s not in SUITES]
    if unknown:
        raise ValueError(f"unknown eval suite(s) {unknown} in config group 'eval'; known: {list(SUITES)}")
    if not names:
        raise ValueError(f"no eval suite selected: pass eval=<{'|'.join(SUITES)}|paper>")
    return [SUITES[s] for s in names]


def plan_suites(cfg: DictConfig, grader_models: list | None = None) -> list[PlannedTask]:
    """Check the suites in `cfg.eval` and plan their tasks.

    Args:
        cfg: an eval config (`midtrain-eval`'s, or the one a pipeline stage hands over).
        grader_models: graders to use instead of `cfg.grader_models` (e.g. `Model` objects).

    Raises:
        ValueError: an unknown suite, a bad setting, an unknown task name, or a graded suite
            without a grader (all of them before any data loads).
    """
    from midtrain.evals.settings import check_eval_config

    check_eval_config(cfg, grader_models)
    graders = list(grader_models) if grader_models else list(OmegaConf.to_container(cfg.grader_models, resolve=True))
    limit = cfg.inspect.get("limit")
    return [p for suite in selected_suites(cfg) for p in suite.plan(cfg, graders, limit)]
