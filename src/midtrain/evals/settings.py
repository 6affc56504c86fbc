"""The settings of an evaluation, checked before anything loads.

`conf/eval_settings/default.yaml` (the model under test, its sampling, the graders, Inspect)
sits at the root of `midtrain-eval`'s config and at `stages.evaluate` of
`midtrain-pipeline`'s; the suites sit at `eval` in both. `check_eval_config` checks the
settings against the schemas below and each selected suite against its own (see
`midtrain.evals.base.Suite.check`), so a pipeline refuses a typo'd or ill-typed eval
setting at launch rather than after its training stages. Defaults live in the YAML files;
the schemas give types, ranges and the set of keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from midtrain.validate import number_problem

# A schema's RANGES: key -> (kind, low, high, low inclusive, null allowed), as in
# `midtrain.validate.RANGES` (kind "any" first: a bool is accepted too); CHOICES: key -> the
# values allowed; NESTED: key -> the schema of a nested node.

@dataclass
class ModelUnderTest:
    name: Optional[str] = MISSING
    provider: str = MISSING
    device: Optional[str] = MISSING
    batch_size: int = MISSING
    model_args: Dict[str, Any] = MISSING

    RANGES = {"batch_size": ("int", 1, None, True, False)}
    CHOICES = {"provider": ("hf", "vllm", "auto")}


@dataclass
class InspectSettings:
    log_dir: Optional[str] = MISSING
    limit: Optional[int] = MISSING
    fail_on_error: Any = MISSING  # a share (float below 1), a count (int from 1) or a bool, as Inspect takes it
    retry_on_error: Optional[int] = MISSING
    max_samples: Optional[int] = MISSING
    display: str = MISSING
    log_level: str = MISSING

    RANGES = {"limit": ("int", 1, None, True, True), "retry_on_error": ("int", 0, None, True, True),
              "max_samples": ("int", 1, None, True, True), "fail_on_error": ("any", "float", 0, None, True, True)}
    CHOICES = {"display": ("full", "conversation", "rich", "plain", "log", "none"),
               "log_level": ("debug", "trace", "http", "info", "warning", "error", "critical", "notset")}


@dataclass
class EvalSettings:
    grader_models: List[str] = MISSING
    max_missing_share: float = MISSING
    model: ModelUnderTest = field(default_factory=ModelUnderTest)
    sampling: Dict[str, Any] = MISSING  # Inspect GenerateConfig fields, checked by Inspect
    grader: Dict[str, Any] = MISSING    # likewise
    inspect: InspectSettings = field(default_factory=InspectSettings)

    RANGES = {"max_missing_share": ("float", 0, 1, True, False)}
    NESTED = {"model": ModelUnderTest, "inspect": InspectSettings}


def schema_problems(schema: type, node: Any, prefix: str) -> list[str]:
    """Problems of `node` against a dataclass schema: unknown or missing keys, wrong types,
    values out of the schema's `RANGES` or outside its `CHOICES`, each named `<prefix><key>`."""
    if not isinstance(node, DictConfig):
        return [f"{prefix.rstrip('.')}: expected a mapping of settings, got {node!r}"]
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as e:
        return [f"{prefix}{e.full_key or ''}".rstrip(".") + f": {str(e.msg).splitlines()[0]}"]
    out = [f"{prefix}{k} is required" for k in sorted(OmegaConf.missing_keys(merged))]
    return out or _value_problems(schema, merged, prefix)


def _value_problems(schema: type, node: DictConfig, prefix: str) -> list[str]:
    out: list[str] = []
    for key, spec in getattr(schema, "RANGES", {}).items():
        value = node[key]
        if not isinstance(value, bool) or spec[0] != "any":
            p = number_problem(f"{prefix}{key}", value, spec[1:] if spec[0] == "any" else spec)
            out += [p] if p else []
    for key, allowed in getattr(schema, "CHOICES", {}).items():
        if node[key] not in allowed:
            out.append(f"{prefix}{key}={node[key]!r}: expected one of {list(allowed)}")
    for key, nested in getattr(schema, "NESTED", {}).items():
        out += _value_problems(nested, node[key], f"{prefix}{key}.")
    return out


def resolved(cfg: DictConfig, keys: list[str]) -> DictConfig:
    """The named keys of `cfg`, interpolations resolved, as a config of their own."""
    return OmegaConf.create({k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                             for k in keys if k in cfg})


def generate_config_problems(node: Any, where: str) -> list[str]:
    """Problems of a node of Inspect `GenerateConfig` fields, as Inspect reports them."""
    from pydantic import ValidationError

    from midtrain.evals.graders import grader_config

    if not isinstance(node, DictConfig):
        return [f"{where}: expected a mapping of Inspect GenerateConfig fields, got {node!r}"]
    try:
        grader_config(OmegaConf.to_container(node, resolve=True))
    except ValidationError as e:
        return [".".join([where, *map(str, err["loc"])]) + f": {err['msg']}" for err in e.errors()]
    except (TypeError, ValueError) as e:
        return [f"{where}: {e}"]
    return []


def check_eval_config(cfg: DictConfig, grader_models: list | None = None, where: str = "") -> None:
    """Check the settings and every selected suite of an eval config; nothing is loaded.

    Args:
        cfg: an eval config (`midtrain-eval`'s, or the one a pipeline hands to `evaluate`).
        grader_models: graders used instead of `cfg.grader_models`.
        where: the prefix the settings have in the user's config (`stages.evaluate.` in a
            pipeline), so an error names the key as the user typed it.

    Raises:
        ValueError: every problem of the settings, or of a suite's settings, in one message;
            `GraderRequiredError` when a graded suite has no grader.
    """
    from midtrain.evals.suites import selected_suites

    found = schema_problems(EvalSettings, resolved(cfg, [f.name for f in fields(EvalSettings)]), where)
    if not found:
        found += generate_config_problems(cfg.sampling, f"{where}sampling")
        found += generate_config_problems(cfg.grader, f"{where}grader")
    suites = selected_suites(cfg)  # an unknown suite is an error of its own
    for suite in suites:
        found += schema_problems(suite.schema, resolved(cfg.eval, [suite.name])[suite.name], f"eval.{suite.name}.")
    if found:
        raise ValueError("invalid eval settings:\n  - " + "\n  - ".join(found))
    graders = list(grader_models) if grader_models else list(OmegaConf.to_container(cfg.grader_models) or [])
    from midtrain.evals.graders import GraderRequiredError

    for suite in suites:
        try:
            suite.check(cfg, graders)
        except GraderRequiredError as e:
            if not where:
                raise
            raise GraderRequiredError(f"{e} (here: {where}grader_models)") from None
