"""The one place a training stage's pieces are built: its tokenizer and model as they train, the
Lightning Trainer, and the Trainer's callbacks, loggers and plugins.

`midtrain.train.train`, the pipeline's base export (`midtrain.pipeline.export_base`) and
`benchmarks/throughput.py` all build through here, so the benchmark measures the path that
trains and the base export is the very init the first stage trains from. How the model is laid
out on devices (precision, FSDP, compile, checkpointing) is `midtrain.lightning.parallelize`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from midtrain.lightning import parallelize

if TYPE_CHECKING:
    import pytorch_lightning as pl
    import torch

    from midtrain.data.datamodule import Schedule
    from midtrain.preserve import Strategy
    from midtrain.tracking import RunDir


def cache_dir(cfg: DictConfig) -> str | None:
    """`paths.cache_dir`: where model conversions are cached (GGUF checkpoints)."""
    paths = cfg.get("paths") or {}
    return str(paths.get("cache_dir")) if paths.get("cache_dir") else None


def stage_tokenizer(cfg: DictConfig) -> Any:
    """The stage's tokenizer: the previous stage's (`init_from`), else the model config's."""
    from midtrain.models.build import build_tokenizer

    return build_tokenizer(cfg.model, cfg.get("init_from"), cache_dir=cache_dir(cfg))


def initial_model(cfg: DictConfig, tokenizer: Any, dev: str = "cpu") -> "torch.nn.Module":
    """The weights a stage starts from: seeded by `seed`, then built from `model` (random init,
    pretrained, GGUF) or from the finished stage `init_from`. `dev` only picks the attention kernel."""
    import pytorch_lightning as pl

    from midtrain.models.build import build_causal_lm

    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    return build_causal_lm(cfg.model, tokenizer, cfg.get("init_from"), dev, compile=bool(cfg.trainer.compile),
                           cache_dir=cache_dir(cfg))


def training_model(cfg: DictConfig, tokenizer: Any, dev: str, preserve: "Strategy | None" = None) -> "torch.nn.Module":
    """The model as it trains: the initial weights, the preservation strategy's changes (e.g. LoRA
    adapters, a frozen reference copy), then `parallelize` (kernels, checkpointing, compile)."""
    model = initial_model(cfg, tokenizer, dev)
    if preserve is not None:
        model = preserve.prepare_model(model, cfg)
    return parallelize.parallelize(model, cfg.trainer)


def loggers(cfg: DictConfig, run: "RunDir") -> list:
    """`logger.kind`: csv (`<run>/logs/<stage>/`), wandb (plus csv unless `logger.also_csv=false`) or none."""
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

        out = [build_wandb_logger(cfg, run.path, cfg.stage)]
        if cfg.logger.get("also_csv", True):
            out.append(csv())
        return out
    if kind in ("none", None):
        return []
    raise ValueError(f"logger.kind={kind!r}: expected csv, wandb or none")


def plugins() -> list:
    """Atomic checkpoint writes; under SLURM, Lightning's SLURM environment without its auto-requeue."""
    from midtrain.lightning.checkpoint_io import AtomicCheckpointIO

    out: list = [AtomicCheckpointIO()]  # temp name beside the target, fsync, rename
    if "SLURM_JOB_ID" in os.environ:
        from lightning_fabric.plugins.environments import SLURMEnvironment

        # submitit owns requeueing; Lightning's own SLURM auto-requeue stays off.
        out.append(SLURMEnvironment(auto_requeue=False))
    return out


def callbacks(cfg: DictConfig, model: "torch.nn.Module", schedule: "Schedule", mean_context: float, *,
              run: "RunDir | None" = None, tokenizer: Any = None, row_segments: list | None = None,
              attempt: int | None = None, throughput_warmup: int | None = None) -> list:
    """The Trainer's callbacks for a config.

    Args:
        cfg: the stage's config (`trainer`, `data.audit`).
        model: the model as it trains (its size sets the FLOPs per token).
        schedule: the data's schedule (its steps bound the throughput warm-up).
        mean_context: mean tokens per packed document piece (the attention term of the FLOPs).
        run: the run directory; None (the benchmark) leaves out what writes into one:
            step checkpoints, the preemption checkpoint and the data audit.
        tokenizer: for the probe (`trainer.probe_every_n_steps`).
        row_segments: per packed row, its segments (`data.audit`).
        attempt: the stage's attempt number, carried by the throughput result.
        throughput_warmup: optimizer steps left out of the throughput window (default 2).
    """
    from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

    from midtrain.lightning.callbacks import RealTokenThroughput, flops_per_token
    from midtrain.models.build import count_parameters

    tr = cfg.trainer
    out: list = []
    if run is not None:
        out.append(ModelCheckpoint(
            dirpath=str(run.checkpoints),
            filename="step{step:07d}",
            auto_insert_metric_name=False,
            every_n_train_steps=int(tr.checkpoint_every_n_steps),
            save_last=True,
            save_top_k=1,
        ))
    if tr.enable_progress_bar:
        # At most every log_every_n_steps, but often enough that a short run's bar moves too; the
        # bar reads metrics from the device only every `refresh` batches (no per-step sync).
        refresh = max(1, min(int(tr.log_every_n_steps), schedule.micro_batches // 20))
        out.append(TQDMProgressBar(refresh_rate=refresh))
    mc = model.config
    fpt = flops_per_token(count_parameters(model), mc.num_hidden_layers, mc.hidden_size, mean_context)
    warmup = min(2, schedule.steps - 1) if throughput_warmup is None else throughput_warmup
    out.append(RealTokenThroughput(warmup_steps=warmup, flops_per_token=fpt,
                                   log_every_n_steps=int(tr.log_every_n_steps), attempt=attempt))
    if tr.get("probe_every_n_steps"):
        from midtrain.lightning.probe_callback import ProbeCallback

        ends = bool(tr.get("probe_at_ends", True))
        out.append(ProbeCallback(every_n_steps=int(tr.probe_every_n_steps), tokenizer=tokenizer, at_start=ends,
                                 at_end=ends))
    if run is not None and cfg.data.get("audit"):
        from midtrain.lightning.data_audit import DataAudit

        out.append(DataAudit(run.path / "logs", row_segments))
    if run is not None:
        from midtrain.lightning.preemption import PreemptionCheckpoint

        out.append(PreemptionCheckpoint(run.last_checkpoint))
    return out


def build_trainer(cfg: DictConfig, dev: str, model: "torch.nn.Module", schedule: "Schedule", callbacks: list,
                  loggers: list | None = None, root_dir: str | Path | None = None) -> "pl.Trainer":
    """The Lightning Trainer of a stage: devices, strategy and precision from `trainer`
    (`parallelize`), clipping from `optim`, steps and accumulation from the data's schedule.

    Checkpointing is on exactly when `callbacks` hold a `ModelCheckpoint`."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    tr = cfg.trainer
    return pl.Trainer(
        accelerator="gpu" if dev == "cuda" else "cpu",
        devices=tr.devices,
        num_nodes=int(tr.num_nodes),
        strategy=parallelize.strategy(tr, model),
        precision=parallelize.precision(tr, dev),
        max_steps=schedule.steps,  # trainer.max_steps, when set, is already the schedule's length
        max_epochs=1,  # the datamodule lays all data epochs out as one pass
        accumulate_grad_batches=schedule.accumulate,
        gradient_clip_val=cfg.optim.max_grad_norm,
        log_every_n_steps=int(tr.log_every_n_steps),
        logger=list(loggers or []),
        callbacks=callbacks,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        plugins=plugins(),
        enable_progress_bar=bool(tr.enable_progress_bar),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        use_distributed_sampler=False,  # the datamodule shards micro-batches by rank itself
        deterministic=bool(tr.deterministic),
        default_root_dir=None if root_dir is None else str(root_dir),
    )
