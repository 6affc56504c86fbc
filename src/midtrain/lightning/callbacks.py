"""Throughput measurement without host synchronisation in the training step."""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch

# Dense bf16 peak of the datasheet (PERFORMANCE.md); MFU is only reported where it is known.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def flops_per_token(n_params: int, n_layers: int, hidden: int, mean_context: float) -> float:
    """6N + 6*L*d*T: the attention term is half of PaLM's 12LdT because the mask is causal."""
    return 6.0 * n_params + 6.0 * n_layers * hidden * mean_context


def device_peak_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


class RealTokenThroughput(pl.Callback):
    """Real (non-padding) tokens per second per device, after `warmup_steps` optimizer steps.

    Beside Lightning's `ThroughputMonitor`: that one synchronises the GPU every batch and counts padding.

    Real tokens are counted from the batch on the host before it moves to the device, and
    clocks are read after a device synchronisation only at the start and end of the window.
    Every attempt of a stage measures its own window, counted from the step it started at
    (a resumed attempt too), and `result` carries the attempt number: `attempt` when given
    (the stage's provenance record counts its attempts), else 1 for the first fit, 2 after
    one resume, ... The latest measured result travels in the checkpoint, so an attempt too
    short to measure reports the previous attempt's figure and number.
    """

    def __init__(self, warmup_steps: int = 2, flops_per_token: float | None = None, log_every_n_steps: int = 10,
                 attempt: int | None = None):
        self.warmup_steps = warmup_steps
        self.fpt = flops_per_token
        self.log_every = max(1, log_every_n_steps)
        self.tokens = 0
        self._window = (0, 0.0)  # (tokens, time) at the last logged step
        self.t0: float | None = None
        self._device = None
        self.attempt = 0  # attempts before this one, until on_train_start counts this one
        self._given_attempt = attempt
        self._start_step: int | None = None
        self.result: dict = {}

    def state_dict(self) -> dict:
        # A checkpoint during a measurement (e.g. at preemption) keeps this attempt's figure so far.
        measured = self._measure() if self.t0 is not None else None
        return {"attempt": self.attempt, "result": dict(measured or self.result)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.attempt = int(state_dict.get("attempt", 0))
        self.result = dict(state_dict.get("result") or {})

    def on_train_start(self, trainer, pl_module):
        self.attempt = self._given_attempt or self.attempt + 1
        remaining = max(0, int(trainer.max_steps) - trainer.global_step) if trainer.max_steps > 0 else None
        # Measure even when fewer steps than the warm-up remain: start after all but the last.
        warmup = self.warmup_steps if remaining is None else min(self.warmup_steps, max(0, remaining - 1))
        self._start_step = trainer.global_step + warmup
        self.tokens, self.t0, self._window = 0, None, (0, 0.0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.t0 is None and self._start_step is not None and trainer.global_step >= self._start_step:
            self._device = pl_module.device
            self._sync(pl_module)
            self.t0 = time.perf_counter()
        if self.t0 is not None:
            # labels are on the device already; position_ids > 0 or a label marks real tokens
            self.tokens += batch.get("_real_tokens", 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # A running figure for the progress bar and loggers; host clock without a sync, so it
        # is approximate step to step but exact over the window in `result`.
        if self.t0 is None or trainer.global_step % self.log_every != 0:
            return
        now = time.perf_counter()
        tokens0, time0 = self._window
        if time0 and now > time0 and self.tokens > tokens0:
            pl_module.log("train/tokens_per_s", (self.tokens - tokens0) / (now - time0), on_step=True, prog_bar=True)
        self._window = (self.tokens, now)

    def on_train_end(self, trainer, pl_module):
        measured = self._measure() if self.t0 is not None else None
        if measured:
            self.result = measured

    def _measure(self) -> dict | None:
        """This attempt's window so far: tokens per second per device (and MFU where known)."""
        if self._device is not None and self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        elapsed = time.perf_counter() - self.t0
        if elapsed <= 0 or self.tokens == 0:
            return None
        tps = self.tokens / elapsed
        result = {"tokens_per_s": round(tps, 1), "measured_tokens": int(self.tokens), "seconds": round(elapsed, 3),
                  "attempt": self.attempt}
        peak = device_peak_flops()
        if peak and self.fpt:
            result["mfu"] = round(tps * self.fpt / peak, 4)
        return result

    @staticmethod
    def _sync(pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
