"""Weights & Biases setup shared by every stage: one W&B run per (run directory, stage).

The naming follows the project's contract so that runs of a sweep line up in the W&B UI:
``group`` = sweep name, ``name`` = run id, ``job_type`` = stage, tags for the condition
keys, ``config`` = the resolved config with secrets removed. The W&B run id is derived from
the run directory and stage and remembered in ``<run_dir>/wandb_ids.json``, and runs are
opened with ``resume="allow"``: a job that SLURM requeues after preemption or a time limit
reopens the same W&B run instead of starting a second one.

Preemption. SLURM signals every process of a job, so the SIGTERM of a preemption, a
``scontrol requeue`` or a cancellation also reaches W&B's service process (``wandb-core``),
which exits at once and drops what it has not yet written to the run's ``.wandb`` file (it
writes every ``x_transaction_log_flush_interval`` seconds, 15 by default). Training must not
die with it, and the history up to the preemption checkpoint must survive: ``TrainingWandbLogger``
keeps the rows of the current attempt, stops sending once the service is gone, and when the
stage finishes or is preempted opens the run again (same id, a new service), writes the rows
the lost service dropped, marks the run preempted when it is, and finishes it. Offline, the
dead service's partial file is renamed ``*.wandb.superseded`` so that ``wandb sync`` and
readers see each step once.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from midtrain.tracking.conditions import CONDITION_KEYS
from midtrain.tracking.nested import flatten
from midtrain.tracking.provenance import wandb_provenance
from midtrain.tracking.rundir import atomic_write_json, read_json
from midtrain.tracking.secrets import redact_config

log = logging.getLogger(__name__)

WANDB_IDS_FILE = "wandb_ids.json"
_MODES = ("online", "offline", "disabled")


def wandb_run_id(run_dir: str | os.PathLike, stage: str) -> str:
    """The W&B run id for one stage of one run directory, stable across requeues.

    The first call derives the id from the absolute run directory and the stage and stores
    it in ``<run_dir>/wandb_ids.json``; later calls (a requeued job, a re-run) read it back,
    so the id survives even if the runs root is later mounted at another path.
    """
    run_dir = Path(run_dir).expanduser().resolve()
    ids_path = run_dir / WANDB_IDS_FILE
    ids: dict[str, str] = read_json(ids_path) if ids_path.exists() else {}
    if not isinstance(ids, dict):
        raise ValueError(f"{ids_path}: expected a JSON object of stage -> W&B run id, got {type(ids).__name__}")
    if stage not in ids:
        digest = hashlib.sha256(f"{run_dir}\0{stage}".encode()).hexdigest()
        ids[stage] = digest[:20]
        atomic_write_json(ids_path, ids)
    return ids[stage]


def condition_tags(cfg: DictConfig) -> list[str]:
    """``key=value`` tags for the condition keys present in ``cfg`` (absent or null keys are skipped)."""
    tags = []
    for name, key in CONDITION_KEYS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value != "":
            tags.append(f"{name}={value}"[:64])  # W&B limits tags to 64 characters
    return tags


def wandb_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without secrets and without Hydra's own node, as W&B's run config."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    return redact_config(container)


def wandb_settings():
    """W&B settings that keep the command line, environment and code out of the run.

    W&B records ``sys.argv`` (and the program, git state and code) as run metadata, which a
    ``wandb sync`` would upload; a key given on the command line would go with it. The run's
    config (redacted) is the record of what was run.
    """
    import wandb

    return wandb.Settings(x_disable_meta=True, disable_code=True, save_code=False, disable_git=True,
                          x_save_requirements=False, disable_job_creation=True, program="midtrain")


def _identity_keys(cfg: DictConfig, stage: str) -> dict[str, str]:
    """The hash the run directory is named by, in the W&B config: a training stage's own hash,
    or the whole run's for the pipeline's run (`tracking/identity.py`)."""
    from midtrain.tracking.identity import config_hash, stage_hash

    if stage != "pipeline" and cfg.get("objective") in ("lm", "sft"):
        return {"stage_hash": stage_hash(cfg)}
    return {"run_hash": config_hash(cfg)}


def wandb_init_kwargs(cfg: DictConfig, run_dir: str | os.PathLike, stage: str) -> dict[str, Any]:
    """Keyword arguments for ``wandb.init`` (and Lightning's ``WandbLogger``) for this run and stage.

    Raises:
        ValueError: ``cfg.logger.mode`` is not one of online, offline, disabled, or
            ``cfg.run_id`` / ``cfg.logger.project`` is missing.
    """
    logger_cfg = cfg.get("logger") or {}
    mode = str(logger_cfg.get("mode") or "online")
    if mode not in _MODES:
        raise ValueError(f"logger.mode: expected one of {', '.join(_MODES)}, got {mode!r}")
    project = logger_cfg.get("project")
    if not project:
        raise ValueError("logger.project: a W&B project name is required when logger.kind=wandb")
    run_id = OmegaConf.select(cfg, "run_id", default=None)
    if not run_id:
        raise ValueError("run_id: required to name the W&B run")
    run_dir = Path(run_dir).expanduser()
    run_dir.mkdir(parents=True, exist_ok=True)
    return {
        "project": str(project),
        "entity": logger_cfg.get("entity") or None,
        "mode": mode,
        "group": str(OmegaConf.select(cfg, "sweep_name", default="default")),
        "name": str(run_id),
        "job_type": stage,
        "tags": condition_tags(cfg),
        "config": {**wandb_config(cfg), **_identity_keys(cfg, stage), "provenance": wandb_provenance(run_dir)},
        "id": wandb_run_id(run_dir, stage),
        "resume": "allow",
        "dir": str(run_dir),
        "settings": wandb_settings(),
    }


def build_wandb_logger(cfg: DictConfig, run_dir: str | os.PathLike, stage: str):
    """A Lightning ``WandbLogger`` for one stage of one run, resuming its W&B run after a requeue.

    It is a ``TrainingWandbLogger``: end the stage's run with ``logger.finish(summary=...)``
    (or ``finish(preempted=True, ...)``), which also works after the W&B service was killed.

    Args:
        cfg: the stage's composed config (needs ``logger.project``, ``logger.mode``, ``run_id``,
            ``sweep_name``; condition keys become tags).
        run_dir: the stage's run directory; W&B files go to ``<run_dir>/wandb/``.
        stage: the stage name (``midtrain``, ``instruct``, ``eval``), W&B's ``job_type``.
    """
    kwargs = wandb_init_kwargs(cfg, run_dir, stage)
    save_dir = kwargs.pop("dir")
    from midtrain.tracking.wandb_logger import TrainingWandbLogger

    return TrainingWandbLogger(save_dir=save_dir, log_model=False, **kwargs)


def init_run(cfg: DictConfig, run_dir: str | os.PathLike, stage: str):
    """Open (or resume) the W&B run of one stage outside Lightning, e.g. for evaluation results."""
    import wandb

    return wandb.init(**wandb_init_kwargs(cfg, run_dir, stage))


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """``{"eval": {"anima": {"overall_mean": 0.7}}}`` -> ``{"eval/anima/overall_mean": 0.7}``.

    Only numbers and strings are kept; lists and nulls are dropped (W&B summaries are scalars).
    """
    flat = flatten({prefix: metrics} if prefix else metrics, sep)
    return {k: v for k, v in flat.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def log_summary(run, metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Write a (nested) metrics dict, e.g. a run's ``metrics.json``, into a W&B run's summary.

    Args:
        run: a ``wandb`` run (``init_run(...)`` or ``WandbLogger.experiment``).
        metrics: nested dict; nested keys are joined with ``/``.
        prefix: optional leading key, e.g. ``"eval"``.

    Returns:
        The flat dict that was written.
    """
    flat = flatten_metrics(metrics, prefix)
    if flat:
        run.summary.update(flat)
    return flat
