"""`lora`: the instruction stage trains LoRA adapters only; the base weights stay frozen.

After "LoRA learns less and forgets less" (Biderman et al., 2024). The adapters come from
peft through the same builder as `model.lora`, and the stage's `hf/` export merges them
into the weights, so the next stage and every evaluation load a plain model.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from midtrain.preserve.base import Strategy

KEYS = ("r", "alpha", "dropout", "target_modules")


class LoRAOnly(Strategy):
    """Instruction tuning through LoRA adapters (rank, alpha, targets in `preserve`)."""

    def _lora_cfg(self) -> dict:
        return {k: self.cfg.get(k) for k in KEYS if self.cfg.get(k) is not None}

    def check(self, stage_cfg: DictConfig) -> None:
        if stage_cfg.model.get("lora"):
            raise ValueError("preserve=lora and model.lora are both set: choose one (model.lora applies to every stage)")
        if int(self.cfg.r) < 1:
            raise ValueError(f"preserve.r={self.cfg.r}: the LoRA rank must be at least 1")
        if not self.cfg.target_modules:
            raise ValueError("preserve.target_modules: name at least one module to adapt")

    def prepare_model(self, model: torch.nn.Module, stage_cfg: DictConfig) -> torch.nn.Module:
        from omegaconf import OmegaConf

        from midtrain.models.build import apply_lora

        return apply_lora(model, OmegaConf.create(self._lora_cfg()))
