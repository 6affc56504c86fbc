"""midtrain-eval: score a finished run's `hf/` model with the suites of `midtrain.evals`.

    midtrain-eval run_dir=<runs>/<sweep>/<run_id> eval=anima grader_models='[anthropic/claude-sonnet-4-5]'
    midtrain-eval run_dir=<run dir> eval=probe
    midtrain-eval run_dir=<run dir> eval=paper grader_models='[openai/gpt-4o,anthropic/claude-sonnet-4-5]'

Suites come from the registry `midtrain.evals._registry.SUITES` (Inspect tasks, task lists
and the judge-free probe, each behind `midtrain.evals.base.Suite`); this module runs them.
Results merge into `<run_dir>/metrics.json` under `eval.<suite>`; Inspect logs go to
`<run_dir>/eval/<suite>/`. A suite whose complete result is already in metrics.json is
not run again unless `force=true`.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from midtrain.paths import CONF_DIR
from midtrain.tracking import RunDir

log = logging.getLogger(__name__)


def _model_under_test(cfg: DictConfig, run: RunDir):
    """The Inspect model to evaluate: `cfg.model.name`, else the run's `hf/` directory.

    For `hf/`, the tokenizer's chat template is passed explicitly, falling back to the
    project's default (the one instruction tuning formats with) for base models.
    """
    from inspect_ai.model import get_model

    m = cfg.model
    extra = dict(OmegaConf.to_container(m.model_args, resolve=True) or {}) if m.get("model_args") else {}
    if m.get("name"):
        return get_model(str(m.name), **extra)
    from transformers import AutoTokenizer

    from midtrain.data.chat import ensure_chat_template

    tokenizer = AutoTokenizer.from_pretrained(run.hf)
    had_template = bool(getattr(tokenizer, "chat_template", None))
    template = ensure_chat_template(tokenizer).chat_template
    provider = m.provider
    if provider == "auto":
        provider = "vllm" if importlib.util.find_spec("vllm") is not None else "hf"
    if provider == "vllm":
        if not had_template:
            extra.setdefault("chat_template", template)
        return get_model(f"vllm/{run.hf.resolve()}", **extra)
    if provider != "hf":
        raise ValueError(f"model.provider must be hf, vllm or auto, got {provider!r}")
    if m.get("device"):
        extra.setdefault("device", str(m.device))
    # The model name is the local path: anything that resolves the name (weights, tokenizer,
    # adapter and model-info lookups) then finds the directory instead of asking the hub.
    return get_model(f"hf/{run.hf.resolve()}", chat_template=template, **extra)


def _sampling_kwargs(cfg: DictConfig) -> dict[str, Any]:
    gen = OmegaConf.to_container(cfg.sampling, resolve=True) or {}
    kwargs = {k: v for k, v in gen.items() if v is not None}
    # Inspect's hf provider batches up to max_connections prompts per generate call.
    kwargs["max_connections"] = int(cfg.model.batch_size)
    return kwargs


class _Context:
    """What a suite's `run` reads: the config, the run directory, Inspect on the model under test."""

    def __init__(self, cfg: DictConfig, run: RunDir, model: Any):
        self.cfg, self.run, self.run_dir, self._model = cfg, run, run.path, model
        self.log_root = Path(str(cfg.inspect.log_dir)) if cfg.inspect.get("log_dir") else run.eval_dir

    def inspect(self, planned):
        """Run one planned task on the model under test (loaded once, on first use); its log with samples."""
        import inspect_ai
        from inspect_ai.log import read_eval_log

        if self._model is None:
            self._model = _model_under_test(self.cfg, self.run)
        ins = self.cfg.inspect
        logs = inspect_ai.eval(
            planned.task,
            model=self._model,
            log_dir=str(self.log_root / planned.suite),
            limit=planned.limit,
            fail_on_error=ins.fail_on_error,
            retry_on_error=ins.retry_on_error,
            max_samples=ins.get("max_samples"),
            display=ins.display,
            log_level=ins.log_level,
            score_display=False,
            **_sampling_kwargs(self.cfg),
        )
        result = logs[0]
        if result.samples is None and result.location:
            result = read_eval_log(result.location)
        return result


def evaluate(cfg: DictConfig, *, model: Any = None, grader_models: list | None = None) -> dict:
    """Run the suites selected in `cfg.eval` on `cfg.run_dir` and merge results into metrics.json.

    Args:
        cfg: the composed `eval.yaml` config, or the one a pipeline hands over (the same keys).
        model: an Inspect `Model` (or model id) to evaluate instead of the run's `hf/`
            (tests use `mockllm/model`); the probe always reads `hf/`.
        grader_models: graders to use instead of `cfg.grader_models` (e.g. `Model` objects).

    Returns:
        The `eval` section of metrics.json after this run: `{suite: result, ...}`.

    Raises:
        FileNotFoundError: the run directory has no `hf/` model.
        ValueError: an unknown suite, setting or task, a graded suite without a grader, bad data.
    """
    from midtrain.evals.settings import check_eval_config
    from midtrain.evals.suites import plan_suites, selected_suites

    if cfg.run_dir in (None, "???"):
        raise ValueError("run_dir is required: run_dir=<a finished run or stage directory with hf/>")
    check_eval_config(cfg, grader_models)  # settings and suites, before the run directory is read
    suites = {s.name: s for s in selected_suites(cfg)}
    run = RunDir(Path(str(cfg.run_dir)).expanduser())
    if not run.path.is_dir():
        raise FileNotFoundError(f"run_dir {run.path} does not exist" if not run.path.exists()
                                else f"run_dir {run.path} is a file, not a run directory")
    needs_hf = any(s.reads_hf for s in suites.values()) or (model is None and not cfg.model.get("name"))
    if needs_hf and not (run.hf / "config.json").is_file():
        raise FileNotFoundError(
            f"run_dir {run.path} has no Hugging Face model in hf/ (expected {run.hf / 'config.json'}); "
            "point run_dir at a finished midtrain or instruct stage"
        )
    if needs_hf:
        from midtrain.models.build import check_hf_weights

        check_hf_weights(run.hf)
    force = bool(cfg.get("force", False))
    keys = {name: eval_settings_key(cfg, name, grader_models) for name in suites}
    _restore_from_history(run, keys)
    existing = run.read_metrics().get("eval", {})

    def done(suite: str, key: str | None = None) -> bool:
        entry = existing.get(suite, {})
        if key is not None:
            entry = entry.get(key, {}) if isinstance(entry, dict) else {}
        return (not force and isinstance(entry, dict) and entry.get("complete") is True
                and entry.get("settings_key") == keys[suite])

    # Everything that can fail on bad input happens here, before any model is loaded.
    planned = [p for p in plan_suites(cfg, grader_models) if not done(p.suite, None if p.suite == p.key else p.key)]

    import contextlib

    # One writer per run directory: the process that evaluates into it holds its lock.
    with run.lock() if planned else contextlib.nullcontext():
        if planned:
            from midtrain.tracking.provenance import record_attempt, stage_provenance

            record_attempt(run.path, "eval", suites=sorted({p.suite for p in planned}))
            run.update_metrics({"provenance": stage_provenance(run.path)})
        ctx = _Context(cfg, run, model)
        for p in planned:
            log.info("eval %s/%s on %s", p.suite, p.key, run.path)
            summary = suites[p.suite].run(p, ctx)
            summary["settings_key"] = keys[p.suite]
            if not summary["complete"]:
                log.warning("eval %s/%s incomplete: %s", p.suite, p.key, {k: summary.get(k) for k in ("status", "missing_share", "samples_failed", "samples_unscored")})
            update = {p.suite: summary} if p.suite == p.key else {p.suite: {p.key: summary}}
            _keep_other_settings(run, p.suite, keys[p.suite])
            run.update_metrics({"eval": update})  # after each task, so a crash keeps finished ones
    return run.read_metrics().get("eval", {})


def eval_settings_key(cfg: DictConfig, suite: str, grader_models: list | None = None) -> str:
    """A short hash of everything that decides a suite's result: its own settings (data
    revision, subset, epochs, tasks, probe pairs), the graders and their settings, the model
    under test and its generation settings, the sample limit."""
    from midtrain.tracking.identity import digest

    from midtrain.evals._registry import SUITES

    inspected = SUITES[suite].through_inspect
    graders = [str(g) for g in grader_models] if grader_models else OmegaConf.to_container(cfg.grader_models)
    return digest({
        "suite": suite,
        "settings": OmegaConf.to_container(cfg.eval[suite], resolve=True),
        "graders": graders if inspected else None,
        "grader": OmegaConf.to_container(cfg.grader, resolve=True) if inspected else None,
        # `generate` was the sampling node's first name: kept here, results scored before keep their key
        "generate": OmegaConf.to_container(cfg.sampling, resolve=True) if inspected else None,
        "model": cfg.model.get("name"),
        "limit": cfg.inspect.get("limit"),
        "max_missing_share": cfg.get("max_missing_share"),
    })


def _entry_key(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return None
    if "settings_key" in entry:
        return entry["settings_key"]
    keys = {v.get("settings_key") for v in entry.values() if isinstance(v, dict)}  # a task-list suite
    return keys.pop() if len(keys) == 1 else None


def _keep_other_settings(run: RunDir, suite: str, key: str) -> None:
    """Before `eval.<suite>` takes a result of other settings, the one there moves to
    `eval_history["<suite>@<its key>"]`: a different grader, epochs or data revision is a
    different entry, never an overwrite."""
    metrics = run.read_metrics()
    entry = metrics.get("eval", {}).get(suite)
    if entry is None:
        return
    old = _entry_key(entry)
    if old == key:
        return
    history = metrics.setdefault("eval_history", {})
    history[f"{suite}@{old or 'unkeyed'}"] = entry
    del metrics["eval"][suite]
    run.write_metrics(metrics)


def _restore_from_history(run: RunDir, keys: dict[str, str]) -> None:
    """A suite asked for again with settings already scored comes back from `eval_history`."""
    metrics = run.read_metrics()
    history = metrics.get("eval_history") or {}
    changed = False
    for suite, key in keys.items():
        saved = history.get(f"{suite}@{key}")
        current = metrics.get("eval", {}).get(suite)
        if saved is None or _entry_key(current) == key:
            continue
        if current is not None:
            history[f"{suite}@{_entry_key(current) or 'unkeyed'}"] = current
        metrics.setdefault("eval", {})[suite] = history.pop(f"{suite}@{key}")
        changed = True
    if changed:
        with run.lock():
            run.write_metrics(metrics)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    """Entry point of `midtrain-eval`."""
    evaluate(cfg)


if __name__ == "__main__":
    main()
