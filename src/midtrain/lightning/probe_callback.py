"""Log the judge-free compassion probe during training, so a run draws a value curve.

The probe (`midtrain.evals.probe`) scores paired compassionate/dismissive continuations by
log-likelihood; its mean margin (nats per token) should rise during midtraining on
animal-welfare documents and may erode during later instruction tuning. It costs one
forward pass over ~130 short sequences, so every few hundred steps is cheap even at 8B.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch

from midtrain.evals.probe import load_pairs, probe_margin

log = logging.getLogger(__name__)


class ProbeCallback(pl.Callback):
    """Compute `probe/margin` (and `probe/accuracy`) on `pl_module.model` every N optimizer steps.

    All ranks run the forward pass (sharded models need every rank); rank zero writes to
    the loggers directly, so the value is recorded at its step whatever the trainer's
    `log_every_n_steps`. The model's train/eval mode and every RNG state are restored, so
    training with the callback follows the same trajectory as without it, and the callback
    holds no state a resumed run would need.

    Args:
        every_n_steps: probe when `trainer.global_step` is a positive multiple of this.
        tokenizer: the model's tokenizer; default `pl_module.tokenizer` or the datamodule's.
        pairs_path: JSONL of probe pairs; default the project's own pairs.
        batch_size: sequences per forward pass.
        at_start: also probe before the first step of a fresh run (the curve's origin).
        at_end: also probe after the last step if it was not a multiple of `every_n_steps`.
        by_dimension: also log `probe/<dimension>` margins.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        tokenizer: Any = None,
        pairs_path: str | None = None,
        batch_size: int = 16,
        at_start: bool = True,
        at_end: bool = True,
        by_dimension: bool = False,
    ):
        if every_n_steps < 1:
            raise ValueError(f"ProbeCallback every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.tokenizer = tokenizer
        self.pairs = load_pairs(pairs_path)
        self.batch_size = batch_size
        self.at_start = at_start
        self.at_end = at_end
        self.by_dimension = by_dimension
        self.history: list[dict] = []  # (step, result) of this process, for tests and summaries
        self._last_step: int | None = None

    def _tokenizer(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
        tok = self.tokenizer or getattr(pl_module, "tokenizer", None)
        if tok is None:
            tok = getattr(getattr(trainer, "datamodule", None), "tokenizer", None)
        if tok is None:
            raise ValueError("ProbeCallback needs a tokenizer: pass tokenizer=, or set pl_module.tokenizer")
        return tok

    def _probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step
        if self._last_step == step:
            return  # gradient accumulation calls the batch hook several times per step
        self._last_step = step
        model = getattr(pl_module, "model", pl_module)
        device = pl_module.device
        cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            result = probe_margin(model, self._tokenizer(trainer, pl_module), self.pairs, self.batch_size)
        self.history.append({"step": step, **result})
        metrics = {"probe/margin": result["margin"], "probe/accuracy": result["accuracy"]}
        if self.by_dimension:
            metrics.update({f"probe/{d}": v for d, v in result["by_dimension"].items()})
        for k, v in metrics.items():
            trainer.callback_metrics[k] = torch.tensor(v)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
            log.info("step %d probe margin %.4f nats/token, accuracy %.3f", step, result["margin"], result["accuracy"])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_start and trainer.global_step == 0:
            self._probe(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0:
            self._probe(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_end:
            self._probe(trainer, pl_module)
