"""Preservation strategies of the instruction stage (`preserve=<name>`).

Instruction tuning after midtraining erodes the instilled value; a strategy tries to keep
it. Each is a module here plus one line in `STRATEGIES` and one `conf/preserve/<name>.yaml`;
the training stage only calls the hooks of `midtrain.preserve.base.Strategy`, so a new
strategy (EWC, steering vectors, ...) touches no trainer, datamodule or LightningModule code.
"""

from __future__ import annotations

import importlib

from omegaconf import DictConfig, OmegaConf

from midtrain.preserve.base import ExtraData, Strategy

# name -> "module:Class"; imported on use, so `none` costs nothing.
STRATEGIES: dict[str, str] = {
    "none": "midtrain.preserve.base:Strategy",
    "replay": "midtrain.preserve.replay:Replay",
    "interleave": "midtrain.preserve.replay:Replay",  # replay with order=interleave
    "kl": "midtrain.preserve.kl:KLToReference",
    "lora": "midtrain.preserve.lora:LoRAOnly",
}

NONE = {"name": "none", "tag": ""}


def build_strategy(cfg: DictConfig | None) -> Strategy:
    """The strategy a `preserve` config node names (a missing node means `none`)."""
    if cfg is None:
        cfg = OmegaConf.create(NONE)
    name = cfg.get("name")
    if name not in STRATEGIES:
        raise ValueError(f"preserve.name={name!r}: expected one of {', '.join(STRATEGIES)}")
    module, cls = STRATEGIES[str(name)].split(":")
    return getattr(importlib.import_module(module), cls)(cfg)


__all__ = ["NONE", "STRATEGIES", "ExtraData", "Strategy", "build_strategy"]
