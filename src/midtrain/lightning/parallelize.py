"""How a built model runs on its devices: precision, strategy (FSDP per decoder block), kernels,
activation checkpointing and per-block compile.

The model arrives built (`midtrain.models.build`, which knows nothing of devices or Lightning);
everything here reads the `trainer` config node only, so the training stage and the
throughput benchmark lay a model out the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

if TYPE_CHECKING:
    import torch


def device_type(trainer_cfg: DictConfig) -> str:
    """`cuda` or `cpu` for `trainer.accelerator` (auto: CUDA when a device is visible)."""
    import torch

    acc = str(trainer_cfg.accelerator)
    if acc in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda"
    if acc in ("gpu", "cuda"):
        raise RuntimeError(f"trainer.accelerator={acc} but no CUDA device is visible")
    return "cpu"


def world_size(trainer_cfg: DictConfig, dev: str) -> int:
    """Ranks of the job: `trainer.devices` (auto or -1: every visible GPU) x `trainer.num_nodes`."""
    import torch

    devices = trainer_cfg.devices
    n = torch.cuda.device_count() if devices in ("auto", -1) and dev == "cuda" else devices
    return int(n if isinstance(n, int) else 1) * int(trainer_cfg.num_nodes)


def precision(trainer_cfg: DictConfig, dev: str) -> str:
    """Lightning's precision: `trainer.precision`, where auto is bf16-mixed on GPU and 32-true on CPU."""
    p = str(trainer_cfg.precision)
    if p == "auto":
        return "bf16-mixed" if dev == "cuda" else "32-true"
    return p


def strategy(trainer_cfg: DictConfig, model: "torch.nn.Module"):
    """Lightning's strategy: `trainer.strategy` as named, or FSDP with one unit per decoder block
    (full shard, sharded checkpoints), recomputing each block in backward with
    `trainer.activation_checkpointing`."""
    from midtrain.models.build import decoder_layers

    name = str(trainer_cfg.strategy)
    if name != "fsdp":
        return name
    from pytorch_lightning.strategies import FSDPStrategy

    block = {type(b) for b in decoder_layers(model)}
    return FSDPStrategy(
        auto_wrap_policy=block,  # one FSDP unit per decoder block
        activation_checkpointing_policy=block if trainer_cfg.activation_checkpointing else None,
        sharding_strategy="FULL_SHARD",
        state_dict_type="sharded",
        limit_all_gathers=True,
    )


def parallelize(model: "torch.nn.Module", trainer_cfg: DictConfig) -> "torch.nn.Module":
    """Apply what `trainer` asks of the model itself, in place: Liger kernels, activation
    checkpointing (FSDP does its own, per unit), and `torch.compile` of each decoder block."""
    from midtrain.models.build import apply_liger_kernels, decoder_layers

    if trainer_cfg.get("liger_kernels"):
        apply_liger_kernels(model)
    if trainer_cfg.activation_checkpointing and str(trainer_cfg.strategy) != "fsdp":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if trainer_cfg.compile:
        for block in decoder_layers(model):
            block.compile()
    return model
