"""One LightningModule for both objectives: documents (lm) and chat samples (sft).

The model arrives built (models/build.py); this module only owns the optimisation: AdamW
(fused on CUDA) with decay/no-decay groups, linear warmup then cosine decay, and logging.
Both objectives share one loss: next-token cross-entropy over labelled tokens, because the
objective lives entirely in the labels the datamodule built. A preservation strategy
(`midtrain.preserve`) may add a term to it through its `loss` hook.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from midtrain.preserve import Strategy, build_strategy


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup to 1, then cosine down to `min_ratio` at `total`.

    Beside transformers' `get_cosine_with_min_lr_schedule_with_warmup`: that one trains its first step at LR 0.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class CausalLMModule(pl.LightningModule):
    """Trains a Hugging Face causal LM on packed batches `{input_ids, labels, position_ids}`."""

    def __init__(self, model: torch.nn.Module, optim: DictConfig, total_steps: int, preserve: Strategy | None = None):
        super().__init__()
        self.model = model
        self.optim = optim
        self.total_steps = int(total_steps)
        self.preserve = preserve if preserve is not None else build_strategy(None)
        self.last_loss: torch.Tensor | None = None
        self.last_loss_tokens = 0  # labelled tokens behind last_loss (weights the all-rank mean)

    def outputs(self, batch: dict[str, torch.Tensor]):
        """The model's outputs on a packed batch, with the cross-entropy over labelled tokens as `.loss`."""
        if batch.get("_loss_tokens") == 0:
            # A filler micro-batch (a rank with no rows left in the last global batch): every
            # parameter takes part, as DDP requires, and nothing is learned from it.
            out = self.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
            out.loss = out.logits.sum() * 0.0
            return out
        return self.model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            labels=batch["labels"],
            use_cache=False,
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.outputs(batch).loss

    def on_fit_start(self) -> None:
        self.preserve.on_fit_start(self)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, extra = self.preserve.loss(batch, self.outputs(batch))
        self.last_loss = loss.detach()
        self.last_loss_tokens = int(batch.get("_loss_tokens", 1))
        bs = batch["input_ids"].shape[0]
        # Several ranks: the logged loss is the mean over ranks (each rank sees other rows).
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=bs,
                 sync_dist=self._trainer is not None and self.trainer.world_size > 1)
        for name, value in extra.items():
            self.log(name, value, on_step=True, batch_size=bs)
        return loss

    # The last loss travels with the checkpoint: a run resumed from its final checkpoint trains
    # no step and must still report the loss it ended with.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.last_loss is not None:
            checkpoint["midtrain_last_loss"] = float(self.last_loss)
            checkpoint["midtrain_last_loss_tokens"] = int(self.last_loss_tokens)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("midtrain_last_loss") is not None:
            self.last_loss = torch.tensor(float(checkpoint["midtrain_last_loss"]))
            self.last_loss_tokens = int(checkpoint.get("midtrain_last_loss_tokens", 1))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True)

    def configure_optimizers(self):
        o = self.optim
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "norm" in name.lower() or "bias" in name else decay).append(p)
        on_cuda = next(self.model.parameters()).is_cuda
        fused = on_cuda if o.fused == "auto" else bool(o.fused)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": float(o.weight_decay)}, {"params": no_decay, "weight_decay": 0.0}],
            lr=float(o.lr),
            betas=tuple(float(b) for b in o.betas),
            eps=float(o.eps),
            fused=fused,
        )
        warmup = int(round(float(o.warmup_ratio) * self.total_steps))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, self.total_steps, warmup, float(o.min_lr_ratio))
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
