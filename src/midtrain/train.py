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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from midtrain.launch import check_devices, release_ranks, wait_for_rank_zero
from midtrain.paths import CONF_DIR
from midtrain.tracking import RunDir, redact_config
from midtrain.tracking.identity import stage_hash
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


def _cache_dir(cfg: DictConfig) -> str | None:
    """`paths.cache_dir`: where model conversions are cached (GGUF checkpoints)."""
    paths = cfg.get("paths") or {}
    return str(paths.get("cache_dir")) if paths.get("cache_dir") else None


def device_type(cfg: DictConfig) -> str:
    import torch

    acc = str(cfg.trainer.accelerator)
    if acc in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda"
    if acc in ("gpu", "cuda"):
        raise RuntimeError(f"trainer.accelerator={acc} but no CUDA device is visible")
    return "cpu"


def _precision(cfg: DictConfig, dev: str) -> str:
    p = str(cfg.trainer.precision)
    if p == "auto":
        return "bf16-mixed" if dev == "cuda" else "32-true"
    return p


def _world_size(cfg: DictConfig, dev: str) -> int:
    import torch

    devices = cfg.trainer.devices
    n = torch.cuda.device_count() if devices in ("auto", -1) and dev == "cuda" else devices
    return int(n if isinstance(n, int) else 1) * int(cfg.trainer.num_nodes)


def _flatten(d: Any, prefix: str = "") -> dict:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def _check_resume_config(cfg: DictConfig, run: RunDir) -> None:
    """Refuse to resume a checkpoint written under a different configuration."""
    if not run.config_path.exists():
        return
    saved = _flatten(OmegaConf.to_container(OmegaConf.load(run.config_path), resolve=True))
    now = _flatten(redact_config(OmegaConf.to_container(portable_config(cfg, run.path), resolve=True)))
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


def _loggers(cfg: DictConfig, run: RunDir) -> list:
    from pytorch_lightning.loggers import CSVLogger

    kind = cfg.logger.kind
    # logs/<stage>/ for the first attempt, logs/<stage>.1/ after a resume, ...: a resumed run
    # keeps the earlier attempts' metrics instead of overwriting them.
    version, k = str(cfg.stage), 0
    while (run.path / "logs" / version / "metrics.csv").exists():
        k += 1
        version = f"{cfg.stage}.{k}"

    def csv() -> CSVLogger:
        return CSVLogger(save_dir=str(run.path), name="logs", version=version)

    if kind == "csv":
        return [csv()]
    if kind == "wandb":
        from midtrain.tracking.wandb import build_wandb_logger

        loggers = [build_wandb_logger(cfg, run.path, cfg.stage)]
        if cfg.logger.get("also_csv", True):
            loggers.append(csv())
        return loggers
    if kind in ("none", None):
        return []
    raise ValueError(f"logger.kind={kind!r}: expected csv, wandb or none")


def _finish_wandb(trainer: "pl.Trainer", metrics: dict) -> None:
    """Write the stage's metrics into its W&B summary and close the run, so the next stage
    of a pipeline (same process) opens its own run instead of reusing this one."""
    from midtrain.tracking.wandb_logger import TrainingWandbLogger

    for lg in trainer.loggers:
        if isinstance(lg, TrainingWandbLogger):
            lg.finish(summary=metrics)  # reopens the run first if its service was lost


def _strategy(cfg: DictConfig, model: "torch.nn.Module"):
    from midtrain.models.build import decoder_layers

    name = str(cfg.trainer.strategy)
    if name != "fsdp":
        return name
    from pytorch_lightning.strategies import FSDPStrategy

    block = {type(b) for b in decoder_layers(model)}
    return FSDPStrategy(
        auto_wrap_policy=block,  # one FSDP unit per decoder block
        activation_checkpointing_policy=block if cfg.trainer.activation_checkpointing else None,
        sharding_strategy="FULL_SHARD",
        state_dict_type="sharded",
        limit_all_gathers=True,
    )


def _plugins() -> list:
    from midtrain.lightning.checkpoint_io import AtomicCheckpointIO

    plugins: list = [AtomicCheckpointIO()]  # temp name beside the target, fsync, rename
    if "SLURM_JOB_ID" in os.environ:
        from lightning_fabric.plugins.environments import SLURMEnvironment

        # submitit owns requeueing; Lightning's own SLURM auto-requeue stays off.
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


def _callbacks(cfg: DictConfig, run: RunDir, model: "torch.nn.Module", dm: "PackedDataModule", tokenizer: Any,
               attempt: int | None = None) -> list:
    from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

    from midtrain.lightning.callbacks import ThroughputMonitor, flops_per_token
    from midtrain.models.build import count_parameters

    # At most every log_every_n_steps, but often enough that a short run's bar moves too.
    refresh = max(1, min(int(cfg.trainer.log_every_n_steps), dm.schedule.micro_batches // 20))
    callbacks: list = [
        ModelCheckpoint(
            dirpath=str(run.checkpoints),
            filename="step{step:07d}",
            auto_insert_metric_name=False,
            every_n_train_steps=int(cfg.trainer.checkpoint_every_n_steps),
            save_last=True,
            save_top_k=1,
        )
    ]
    if cfg.trainer.enable_progress_bar:
        # The bar reads metrics from the device only every `refresh` batches (no per-step sync).
        callbacks.append(TQDMProgressBar(refresh_rate=refresh))
    mc = model.config
    mean_ctx = dm.info["real_tokens"] / max(1, dm.info["pieces"])
    fpt = flops_per_token(count_parameters(model), mc.num_hidden_layers, mc.hidden_size, mean_ctx)
    callbacks.append(ThroughputMonitor(warmup_steps=min(2, dm.schedule.steps - 1), flops_per_token=fpt,
                                       log_every_n_steps=int(cfg.trainer.log_every_n_steps), attempt=attempt))
    probe_every = cfg.trainer.get("probe_every_n_steps")
    if probe_every:
        from midtrain.lightning.probe_callback import ProbeCallback

        ends = bool(cfg.trainer.get("probe_at_ends", True))
        callbacks.append(ProbeCallback(every_n_steps=int(probe_every), tokenizer=tokenizer, at_start=ends, at_end=ends))
    if cfg.data.get("audit"):
        from midtrain.lightning.data_audit import DataAudit

        callbacks.append(DataAudit(run.path / "logs", dm.rows.row_segments))
    try:
        from midtrain.lightning.preemption import PreemptionCheckpoint
    except ImportError:
        pass
    else:
        callbacks.append(PreemptionCheckpoint(run.last_checkpoint))
    return callbacks


def _prepare_model(cfg: DictConfig, tokenizer: Any, dev: str, preserve: "Strategy") -> "torch.nn.Module":
    import pytorch_lightning as pl

    from midtrain.models.build import apply_liger_kernels, build_model, decoder_layers

    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    model = build_model(cfg.model, tokenizer, cfg.get("init_from"), dev, compile=bool(cfg.trainer.compile),
                        cache_dir=_cache_dir(cfg))
    model = preserve.prepare_model(model, cfg)  # e.g. LoRA adapters, a frozen reference copy
    if cfg.trainer.get("liger_kernels"):
        apply_liger_kernels(model)
    if cfg.trainer.activation_checkpointing and str(cfg.trainer.strategy) != "fsdp":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.trainer.compile:
        for block in decoder_layers(model):
            block.compile()
    return model


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
    from midtrain.models.build import build_tokenizer, check_model_cfg
    from midtrain.preserve import build_strategy

    check_model_cfg(cfg.model)
    preserve = build_strategy(cfg.get("preserve"))
    preserve.check(cfg)
    check_devices(cfg)
    if cfg.objective == "sft" and int(cfg.instruct.samples) <= 0:
        raise ValueError("objective=sft needs instruct.samples > 0")
    if cfg.objective == "lm" and int(cfg.corpus.num_docs) <= 0:
        raise ValueError("objective=lm needs corpus.num_docs > 0 (0 documents means: skip midtraining)")
    dev = device_type(cfg)
    tokenizer = build_tokenizer(cfg.model, cfg.get("init_from"), cache_dir=_cache_dir(cfg))
    dm = PackedDataModule(cfg, tokenizer, world_size=_world_size(cfg, dev), preserve=preserve).prepare()
    return dev, tokenizer, dm, preserve


def _train(cfg: DictConfig, run: RunDir, h: str, callbacks: list | None, prepared: tuple) -> dict:
    import pytorch_lightning as pl

    from midtrain.lightning.callbacks import ThroughputMonitor
    from midtrain.lightning.module import CausalLMModule
    from midtrain.lightning.probe_callback import ProbeCallback
    from midtrain.models.build import count_parameters, export_hf, remove_export_orphans

    dev, tokenizer, dm, preserve = prepared
    if _rank() == 0:
        remove_export_orphans(run.path)  # temp folders of an export a kill interrupted
    ckpt = resume_path(cfg, run)
    if ckpt is not None:
        _check_resume_config(cfg, run)
        log.info("resuming from %s", ckpt)
    log.info("data: %s", dm.info)

    model = _prepare_model(cfg, tokenizer, dev, preserve)
    module = CausalLMModule(model, cfg.optim, total_steps=dm.schedule.steps, preserve=preserve)
    saved_cfg = portable_config(cfg, run.path)  # paths inside the runs root relative to the run
    attempt = None
    if _rank() == 0:  # one writer; before the loggers: the W&B config carries this attempt
        run.path.mkdir(parents=True, exist_ok=True)
        run.save_config(saved_cfg)
        attempt = record_attempt(run.path, "train", resumed_from=portable_path(ckpt, run.path))["attempt"]

    cbs = _callbacks(cfg, run, model, dm, tokenizer, attempt) + list(callbacks or [])
    max_steps = dm.schedule.steps  # trainer.max_steps, when set, is already the schedule's length
    trainer = pl.Trainer(
        accelerator="gpu" if dev == "cuda" else "cpu",
        devices=cfg.trainer.devices,
        num_nodes=int(cfg.trainer.num_nodes),
        strategy=_strategy(cfg, model),
        precision=_precision(cfg, dev),
        max_steps=max_steps,
        max_epochs=1,  # the datamodule lays all data epochs out as one pass
        accumulate_grad_batches=dm.schedule.accumulate,
        gradient_clip_val=cfg.optim.max_grad_norm,
        log_every_n_steps=int(cfg.trainer.log_every_n_steps),
        logger=_loggers(cfg, run),
        callbacks=cbs,
        plugins=_plugins(),
        enable_progress_bar=bool(cfg.trainer.enable_progress_bar),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        use_distributed_sampler=False,  # the datamodule shards micro-batches by rank itself
        deterministic=bool(cfg.trainer.deterministic),
        default_root_dir=str(run.path),
    )
    trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None)

    state_dict = _full_state_dict(trainer, module.model)
    throughput = next((c.result for c in cbs if isinstance(c, ThroughputMonitor)), {})
    probe = next((c for c in cbs if isinstance(c, ProbeCallback)), None)
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
            {"step": int(h["step"]), "margin": round(float(h["margin"]), 6), "accuracy": round(float(h["accuracy"]), 4)}
            for h in probe.history
        ]
    if throughput:
        metrics["throughput"] = throughput
    metrics["provenance"] = stage_provenance(run.path, cfg)
    if trainer.is_global_zero:
        export_hf(module.model, tokenizer, run.hf, state_dict=state_dict)
        run.write_metrics(metrics)
        _finish_wandb(trainer, metrics)
        if cfg.trainer.get("cleanup_checkpoints", False):
            shutil.rmtree(run.checkpoints, ignore_errors=True)
        run.mark_done(h)
    trainer.strategy.barrier()
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
