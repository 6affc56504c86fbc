"""`midtrain-train`: continue pretraining (objective=lm) or instruction-tune (objective=sft).

    midtrain-train debug=smoke paths.runs_root=/tmp/runs sweep_name=check seed=0

`train(cfg)` is the whole stage: validate, tokenize and pack, build the model, fit with
Lightning (resuming from the newest checkpoint), export `hf/`, write `metrics.json`, mark
`DONE`. A run directory that already has `DONE` returns its metrics without any work.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from midtrain.entry import hydra_entry
from midtrain.launch import check_devices, release_ranks, wait_for_rank_zero
from midtrain.tracking import RunDir, redact_config
from midtrain.tracking.identity import stage_hash
from midtrain.tracking.nested import flatten
from midtrain.tracking.provenance import portable_config, portable_path, record_attempt, stage_provenance

if TYPE_CHECKING:
    import pytorch_lightning as pl
    import torch

    from midtrain.data.datamodule import PackedDataModule
    from midtrain.preserve import Strategy

# torch, Lightning and transformers are imported inside the functions that need them, so
# that re-running a finished run (DONE) returns in about a second.

log = logging.getLogger(__name__)

# Keys that may differ between the run that wrote a checkpoint and the one resuming it.
_RESUME_IGNORES = ("paths", "logger", "trainer.enable_progress_bar", "trainer.log_every_n_steps", "hydra", "run_dir",
                   "redo", "lock")

LOCK_MODES = ("fail", "wait")


def lock_wait(cfg: DictConfig) -> bool:
    """`lock=fail` (default): a second writer stops at once; `lock=wait`: it queues behind the first."""
    mode = str(cfg.get("lock") or "fail")
    if mode not in LOCK_MODES:
        raise ValueError(f"lock={mode!r}: expected one of {list(LOCK_MODES)}")
    return mode == "wait"


def redo_token() -> str | None:
    """What identifies one launch across requeues: the SLURM job id (kept when SLURM requeues a
    job), None outside SLURM. A requeued job must not redo again what its first attempt redid."""
    return os.environ.get("SLURM_JOB_ID")


def apply_redo(run: RunDir, what: str, clear) -> bool:
    """Run `clear()` for `redo=<what>` unless this same SLURM job already did (before a requeue).

    Returns whether it cleared. `<run>/.redo` records the job that applied it.
    """
    import json

    token = redo_token()
    marker = run.path / ".redo"
    if token is not None and marker.exists():
        try:
            done = json.loads(marker.read_text(encoding="utf-8"))
        except ValueError:
            done = {}
        if done.get("token") == token and done.get("redo") == what:
            log.info("redo=%s was applied by this job before it was requeued; continuing", what)
            return False
    clear()
    if token is not None:
        from midtrain.tracking import atomic_write_text

        atomic_write_text(marker, json.dumps({"token": token, "redo": what}) + "\n")
    return True


def identity(cfg: DictConfig) -> dict:
    """The condition keys every metrics.json carries."""
    out = {
        "run_id": cfg.run_id,
        "stage": cfg.stage,
        "condition": cfg.get("condition"),
        "model": cfg.model.name,
        "seed": int(cfg.seed),
        "preserve": str((cfg.get("preserve") or {}).get("name", "none")),
    }
    if cfg.objective == "lm":
        out.update(corpus=cfg.corpus.name, num_docs=int(cfg.corpus.num_docs))
    else:
        out.update(instruct_samples=int(cfg.instruct.samples))
    return out


def _config_leaves(tree: Any) -> dict:
    """A resolved config's dotted leaves; an empty mapping is none (one that came or went is no change)."""
    return {k: v for k, v in flatten(tree).items() if not (isinstance(v, Mapping) and not v)}


def _check_resume_config(cfg: DictConfig, run: RunDir) -> None:
    """Refuse to resume a checkpoint written under a different configuration."""
    if not run.config_path.exists():
        return
    saved = _config_leaves(OmegaConf.to_container(OmegaConf.load(run.config_path), resolve=True))
    now = _config_leaves(redact_config(OmegaConf.to_container(portable_config(cfg, run.path), resolve=True)))
    drift = sorted(
        k for k in set(saved) | set(now)
        if not any(k == i or k.startswith(i + ".") for i in _RESUME_IGNORES) and saved.get(k) != now.get(k)
    )
    if drift:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in drift[:8])
        raise ValueError(
            f"{run.path} holds checkpoints from a different config ({shown}); "
            "use another sweep_name/run_id, or resume=never to start over"
        )


def _rank() -> int:
    """This process's global rank as the launcher set it (before a Trainer exists)."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def resume_path(cfg: DictConfig, run: RunDir) -> Path | None:
    """The checkpoint to resume from: with resume=auto the newest one in the run's
    checkpoints/ that loads (unreadable ones are moved aside with a warning), None to start."""
    from midtrain.lightning.checkpoint_io import check_checkpoint, newest_loadable_checkpoint

    mode = str(cfg.resume)
    if mode == "never":
        return None
    if mode == "auto":
        return newest_loadable_checkpoint(run.checkpoints)
    path = Path(mode).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"resume={mode}: no such checkpoint")
    try:
        check_checkpoint(path)
    except Exception as e:
        raise ValueError(f"resume={mode}: {path} cannot be read as a checkpoint ({type(e).__name__}: {e})") from e
    return path


def _finish_wandb(trainer: "pl.Trainer", metrics: dict) -> None:
    """Write the stage's metrics into its W&B summary and close the run, so the next stage
    of a pipeline (same process) opens its own run instead of reusing this one."""
    from midtrain.tracking.wandb_logger import TrainingWandbLogger

    for lg in trainer.loggers:
        if isinstance(lg, TrainingWandbLogger):
            lg.finish(summary=metrics)  # reopens the run first if its service was lost


def _full_state_dict(trainer: "pl.Trainer", model: "torch.nn.Module") -> dict | None:
    """Gather a full state dict on rank 0 when the model is sharded; None otherwise."""
    if str(type(trainer.strategy).__name__) != "FSDPStrategy":
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _all_rank_loss(trainer: "pl.Trainer", module: Any) -> float | None:
    """The last micro-batch's loss over every rank, weighted by each rank's labelled tokens."""
    import torch

    if module.last_loss is None:
        return None
    if trainer.world_size == 1:
        return round(float(module.last_loss), 6)
    n = float(module.last_loss_tokens)
    total = trainer.strategy.reduce(torch.stack([module.last_loss.float() * n, module.last_loss.new_tensor(n)]),
                                    reduce_op="sum")
    return round(float(total[0] / total[1]), 6) if float(total[1]) > 0 else None


def train(cfg: DictConfig, callbacks: list | None = None) -> dict:
    """Run one training stage; return its metrics (also in `<run_dir>/metrics.json`)."""
    from midtrain.validate import check

    check(cfg, "midtrain-train config")  # ranges and types, before anything loads or is written
    run = RunDir.from_cfg(cfg)
    if "stages" in cfg:
        raise ValueError(
            "this config sets `stages` (experiment=base or experiment=instruct_baseline), which only "
            "midtrain-pipeline reads: run `midtrain-pipeline experiment=...`, or give midtrain-train the "
            "stage directly (e.g. objective=sft instruct=...)"
        )
    redo = cfg.get("redo")
    if redo not in (None, "all", str(cfg.stage)):
        raise ValueError(f"redo={redo!r}: midtrain-train redoes its own stage only (redo=all or redo={cfg.stage})")
    wait = lock_wait(cfg)
    h = stage_hash(cfg)
    what = f"stage {cfg.stage}"
    if redo is None and run.is_complete(needs_hf=True, expected_hash=h, what=what):
        log.info("%s is DONE; nothing to do", run.path)
        return run.read_metrics()
    prepared = prepare_inputs(cfg)  # bad input fails before the run directory exists
    if _rank() > 0:  # another rank of this job: rank 0 holds the lock and clears what it redoes
        if wait_for_rank_zero(run.path) == "done":
            return run.read_metrics()
        return _train(cfg, run, h, callbacks, prepared)
    with run.lock(wait=wait):
        if redo is not None:
            if apply_redo(run, str(redo), run.clear_outputs):
                log.info("redo=%s: cleared %s", redo, run.path)
        elif run.is_complete(needs_hf=True, expected_hash=h, what=what):  # finished while we waited
            log.info("%s is DONE; nothing to do", run.path)
            release_ranks(run.path, "done")
            return run.read_metrics()
        elif run.has_outputs():
            found = [n for n in ("DONE", "metrics.json", "hf") if (run.path / n).exists()]
            log.warning("%s has %s but no valid DONE: redoing %s from scratch", run.path, ", ".join(found), what)
            run.clear_outputs()
        release_ranks(run.path, "run")
        return _train(cfg, run, h, callbacks, prepared)


def prepare_inputs(cfg: DictConfig) -> tuple:
    """Everything that can be wrong with a stage's input fails here, before weights or files:
    the model config, the preservation strategy, the tokenizer, the data (read, tokenized,
    packed, scheduled). Returns (device type, tokenizer, datamodule, strategy)."""
    from midtrain.data.datamodule import PackedDataModule
    from midtrain.lightning.parallelize import device_type, world_size
    from midtrain.lightning.trainer import stage_tokenizer
    from midtrain.models.build import check_model_cfg
    from midtrain.preserve import build_strategy

    check_model_cfg(cfg.model)
    preserve = build_strategy(cfg.get("preserve"))
    preserve.check(cfg)
    check_devices(cfg)
    if cfg.objective == "sft" and int(cfg.instruct.samples) <= 0:
        raise ValueError("objective=sft needs instruct.samples > 0")
    if cfg.objective == "lm" and int(cfg.corpus.num_docs) <= 0:
        raise ValueError("objective=lm needs corpus.num_docs > 0 (0 documents means: skip midtraining)")
    dev = device_type(cfg.trainer)
    tokenizer = stage_tokenizer(cfg)
    dm = PackedDataModule(cfg, tokenizer, world_size=world_size(cfg.trainer, dev), preserve=preserve).prepare()
    return dev, tokenizer, dm, preserve


def _train(cfg: DictConfig, run: RunDir, h: str, callbacks: list | None, prepared: tuple) -> dict:
    """The stage itself, step by step; every rank runs it, rank 0 alone writes."""
    from midtrain.lightning.module import CausalLMModule
    from midtrain.lightning.trainer import training_model

    dev, tokenizer, dm, preserve = prepared
    ckpt = _setup_resume(cfg, run)
    log.info("data: %s", dm.info)
    model = training_model(cfg, tokenizer, dev, preserve)
    module = CausalLMModule(model, cfg.optim, total_steps=dm.schedule.steps, preserve=preserve)
    saved_cfg, attempt = _setup_run_dir(cfg, run, ckpt)
    trainer = _setup_trainer(cfg, run, dev, model, dm, tokenizer, attempt, callbacks)
    trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None)
    state_dict = _full_state_dict(trainer, module.model)  # a collective: every rank calls it
    metrics = _stage_metrics(cfg, run, h, trainer, module, dm, preserve, saved_cfg)
    if trainer.is_global_zero:
        _write_outputs(cfg, run, h, trainer, module, tokenizer, state_dict, metrics)
    trainer.strategy.barrier()
    return metrics


def _setup_resume(cfg: DictConfig, run: RunDir) -> Path | None:
    """The checkpoint this attempt resumes from (checked against the config that wrote it), or None."""
    from midtrain.models.build import remove_export_orphans

    if _rank() == 0:
        remove_export_orphans(run.path)  # temp folders of an export a kill interrupted
    ckpt = resume_path(cfg, run)
    if ckpt is not None:
        _check_resume_config(cfg, run)
        log.info("resuming from %s", ckpt)
    return ckpt


def _setup_run_dir(cfg: DictConfig, run: RunDir, ckpt: Path | None) -> tuple[DictConfig, int | None]:
    """Rank 0 writes the run's config.yaml and records this attempt (before the loggers: the W&B
    config carries it). Returns the saved config (paths inside the runs root relative to the run)
    and the attempt number (None on other ranks)."""
    saved_cfg = portable_config(cfg, run.path)
    attempt = None
    if _rank() == 0:  # one writer
        run.path.mkdir(parents=True, exist_ok=True)
        run.save_config(saved_cfg)
        attempt = record_attempt(run.path, "train", resumed_from=portable_path(ckpt, run.path))["attempt"]
    return saved_cfg, attempt


def _setup_trainer(cfg: DictConfig, run: RunDir, dev: str, model: "torch.nn.Module", dm: "PackedDataModule",
                   tokenizer: Any, attempt: int | None, extra: list | None) -> "pl.Trainer":
    """The Trainer from the one factory, with this run's callbacks (then the caller's) and loggers."""
    from midtrain.lightning.trainer import build_trainer, callbacks, loggers

    cbs = callbacks(cfg, model, dm.schedule, dm.info["real_tokens"] / max(1, dm.info["pieces"]), run=run,
                    tokenizer=tokenizer, row_segments=dm.rows.row_segments, attempt=attempt)
    return build_trainer(cfg, dev, model, dm.schedule, cbs + list(extra or []), loggers=loggers(cfg, run),
                         root_dir=run.path)


def _stage_metrics(cfg: DictConfig, run: RunDir, h: str, trainer: "pl.Trainer", module: Any,
                   dm: "PackedDataModule", preserve: "Strategy", saved_cfg: DictConfig) -> dict:
    """The stage's metrics.json: identity, training record, probe curve, throughput, provenance."""
    from midtrain.lightning.callbacks import RealTokenThroughput
    from midtrain.lightning.probe_callback import ProbeCallback
    from midtrain.models.build import count_parameters

    model = module.model
    throughput = next((c.result for c in trainer.callbacks if isinstance(c, RealTokenThroughput)), {})
    probe = next((c for c in trainer.callbacks if isinstance(c, ProbeCallback)), None)
    train_metrics: dict = {"objective": cfg.objective}
    final_loss = _all_rank_loss(trainer, module)  # a collective: every rank calls it
    if final_loss is not None:  # absent rather than null: a number is never replaced by null
        train_metrics["final_loss"] = final_loss
    else:
        log.warning("%s: no training step ran and no loss was restored; final_loss is left out", run.path)
    metrics = {
        **identity(cfg),
        "stage_hash": h,
        "train": {
            **train_metrics,
            "global_steps": int(trainer.global_step),
            "parameters": count_parameters(model),
            "init_from": saved_cfg.get("init_from"),
            "trainable_parameters": count_parameters(model, trainable_only=True),
            **dm.info,
            "preserve": preserve.record(),
        },
    }
    if probe is not None and probe.history:
        # The probe during this stage (this attempt's steps): the value curve inside one run.
        metrics["train"]["probe_curve"] = [
            {"step": int(p["step"]), "margin": round(float(p["margin"]), 6), "accuracy": round(float(p["accuracy"]), 4)}
            for p in probe.history
        ]
    if throughput:
        metrics["throughput"] = throughput
    metrics["provenance"] = stage_provenance(run.path, cfg)
    return metrics


def _write_outputs(cfg: DictConfig, run: RunDir, h: str, trainer: "pl.Trainer", module: Any, tokenizer: Any,
                   state_dict: dict | None, metrics: dict) -> None:
    """Rank 0: export `hf/`, write metrics.json, close the W&B run, then mark the stage DONE."""
    from midtrain.models.build import export_hf

    export_hf(module.model, tokenizer, run.hf, state_dict=state_dict)
    run.write_metrics(metrics)
    _finish_wandb(trainer, metrics)
    if cfg.trainer.get("cleanup_checkpoints", False):
        shutil.rmtree(run.checkpoints, ignore_errors=True)
    run.mark_done(h)


main = hydra_entry("train", train)

if __name__ == "__main__":
    main()
