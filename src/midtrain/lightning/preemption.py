"""Checkpoint at a batch boundary when SLURM or submitit signals preemption or a time limit.

submitit owns requeueing: before a job's time limit (``--signal=USR2@<s>``) or on preemption it
calls the launcher's ``checkpoint()`` and ``scontrol requeue``s the job, and the requeued job
resumes from ``<run_dir>/checkpoints/last.ckpt``. Left alone, that signal would interrupt the
training step wherever it is and the requeued job would restart from the last periodic
checkpoint, losing up to ``checkpoint_every_n_steps`` steps. This callback defers the signal:
it notes it, and at the end of the current batch writes ``last.ckpt`` (atomically). Once that
batch's metrics are logged (at the start of the next batch) it ends the attempt: loggers are
flushed, the stage's W&B run is finished and marked preempted (reopened first if the signal
also killed the W&B service), and then the requeue signal goes to submitit's handler, which
requeues and exits. Every logged step thus belongs to exactly one attempt: the first logs the
steps up to its checkpoint, the requeued one those after it.

SIGTERM (what SLURM sends to every process of a job on preemption, ``scontrol requeue``,
cancellation and before a kill) is handled the same way under submitit, except that there is
nothing to hand over: the scheduler has already requeued (or is ending) the job, so the attempt
stops with exit status 143 and no result, and submitit's waiting sweep keeps waiting for the
requeued attempt. Lightning's default reaction to SIGTERM (raise at the next step) would make
submitit record the job as failed instead. A signal in the last batch lets the stage finish
(export, metrics); a requeue signal there is still handed over after training. Lightning's own
SLURM auto-requeue must stay off (``SLURMEnvironment(auto_requeue=False)``).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

log = logging.getLogger(__name__)


def submitit_requeue_signal() -> signal.Signals:
    """The signal submitit asks SLURM to send before a time limit (``SUBMITIT_PREEMPT_SIGNAL``, default USR2)."""
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(f"SUBMITIT_PREEMPT_SIGNAL: unknown signal {name}") from None


def under_submitit() -> bool:
    """True inside a job started by submitit (it exports SUBMITIT_EXECUTOR to the job)."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


class PreemptionCheckpoint(Callback):
    """Save ``last.ckpt`` at the next batch boundary after a requeue or termination signal.

    Args:
        ckpt_path: where to write the checkpoint, normally ``<run_dir>/checkpoints/last.ckpt``
            (the file ``resume: auto`` picks up).
        requeue_signal: the signal that means "checkpoint, then requeue"; defaults to submitit's.
        handle_sigterm: also checkpoint on SIGTERM; None = only under submitit.
    """

    def __init__(self, ckpt_path: str | os.PathLike, requeue_signal: int | None = None,
                 handle_sigterm: bool | None = None) -> None:
        self.ckpt_path = Path(ckpt_path)
        self.requeue_signal = signal.Signals(requeue_signal) if requeue_signal else submitit_requeue_signal()
        self.handle_sigterm = under_submitit() if handle_sigterm is None else handle_sigterm
        self._prior: dict[signal.Signals, Any] = {}
        self._installed: list[signal.Signals] = []
        self._pending: signal.Signals | None = None
        self._stopping: signal.Signals | None = None

    # Signal plumbing ---------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        sig = signal.Signals(signum)
        log.warning("received %s: checkpointing at the end of this batch", sig.name)
        # A requeue signal outranks a SIGTERM that arrived first: it still has to be handed on.
        if self._pending is None or sig == self.requeue_signal:
            self._pending = sig
        prior = self._prior.get(signal.SIGTERM)
        if sig == signal.SIGTERM and callable(prior):
            prior(signum, frame)  # submitit's (it only logs) or the launcher's, which notes the termination

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Runs before Lightning installs its own handlers, so these are submitit's (or the defaults).
        if stage == "fit":
            self._prior = {s: signal.getsignal(s) for s in (self.requeue_signal, signal.SIGTERM)}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._prior:
            self._prior = {s: signal.getsignal(s) for s in (self.requeue_signal, signal.SIGTERM)}
        wanted = []
        if callable(self._prior.get(self.requeue_signal)):  # somebody (submitit) will requeue
            wanted.append(self.requeue_signal)
        if self.handle_sigterm:
            wanted.append(signal.SIGTERM)
        for sig in wanted:
            signal.signal(sig, self._on_signal)
            self._installed.append(sig)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if not self._installed:
            return
        # Every rank must take part in saving; the signal may reach ranks a batch apart.
        pending = trainer.strategy.reduce_boolean_decision(self._pending is not None, all=False)
        if not pending:
            return
        sig, self._pending = self._pending or signal.SIGTERM, None
        self._save(trainer)
        # Lightning logs this batch's metrics after this hook: stop once they are written.
        self._stopping = sig

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._stopping is not None:
            self._stop(trainer, self._stopping)

    def _stop(self, trainer: pl.Trainer, sig: signal.Signals) -> None:
        """End this attempt at the checkpoint just written; never returns."""
        self._stopping = None
        code = 128 + int(sig)
        try:
            self._close_loggers(trainer, code)
        except Exception:  # noqa: BLE001 - the checkpoint is written; a logger must not turn this into a failure
            log.exception("closing the loggers after %s failed; the checkpoint at step %d is written", sig.name,
                          trainer.global_step)
        handler = self._prior.get(self.requeue_signal)
        self._restore()
        if sig == self.requeue_signal and callable(handler):
            log.warning("checkpoint written to %s; handing %s to the requeue handler", self.ckpt_path, sig.name)
            handler(int(sig), None)  # submitit: requeue, then exit (returns on ranks other than 0)
        else:
            log.warning("stopping after %s at step %d (checkpoint %s); the scheduler requeues or ends this job",
                        sig.name, trainer.global_step, self.ckpt_path)
        raise SystemExit(code)

    @staticmethod
    def _close_loggers(trainer: pl.Trainer, exit_code: int) -> None:
        from midtrain.tracking.wandb_logger import TrainingWandbLogger

        for lg in trainer.loggers:
            lg.save()  # CSV rows up to the checkpoint reach the disk
            if isinstance(lg, TrainingWandbLogger):
                lg.finish(preempted=True, exit_code=exit_code)

    def _save(self, trainer: pl.Trainer) -> None:
        tmp = self.ckpt_path.with_name(f".{self.ckpt_path.name}.preempt.tmp")
        if trainer.is_global_zero:
            self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(str(tmp))
        if trainer.is_global_zero:
            os.replace(tmp, self.ckpt_path)  # a kill during the write never leaves a torn last.ckpt
            log.warning("preemption checkpoint at step %d: %s", trainer.global_step, self.ckpt_path)
        trainer.strategy.barrier("preemption_checkpoint")

    def _restore(self) -> None:
        for sig in self._installed:
            prior = self._prior.get(sig)
            signal.signal(sig, prior if prior is not None else signal.SIG_DFL)
        self._installed = []

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A signal during the last batch: training is complete and the stage may finish, but a
        # requeue signal still goes to submitit (the time limit is near).
        sig, self._stopping = self._stopping, None
        if sig is not None and sig == self.requeue_signal:
            self._stop(trainer, sig)
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()
