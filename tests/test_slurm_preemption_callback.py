"""PreemptionCheckpoint defers submitit's requeue signal to a batch boundary and writes last.ckpt first."""

from __future__ import annotations

import csv
import os
import signal

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from midtrain.lightning.preemption import PreemptionCheckpoint


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _SignalAt(pl.Callback):
    """Sends a signal to this process at the start of one batch (mid-step for the training loop)."""

    def __init__(self, sig, batch):
        self.sig, self.batch = sig, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.batch:
            os.kill(os.getpid(), self.sig)


def _fit(tmp_path, callbacks, max_steps=8, logger=False, ckpt_path=None):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                         default_root_dir=str(tmp_path), log_every_n_steps=1)
    trainer.fit(_Tiny(), DataLoader(data, batch_size=4), ckpt_path=ckpt_path)
    return trainer


class _LossLogging(_Tiny):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("loss", loss, on_step=True)
        return loss


def _csv_steps(path):
    with open(path) as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


@pytest.fixture
def restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_requeue_signal_checkpoints_then_hands_over(tmp_path, restore_signals):
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    calls = []

    def submitit_like(signum, frame):  # what submitit's SignalHandler does: requeue, then exit
        calls.append((signum, ckpt.exists()))
        raise SystemExit(-1)

    signal.signal(signal.SIGUSR2, submitit_like)
    with pytest.raises(SystemExit):
        _fit(tmp_path, [PreemptionCheckpoint(ckpt, requeue_signal=signal.SIGUSR2), _SignalAt(signal.SIGUSR2, 3)])
    assert calls == [(signal.SIGUSR2, True)], "handler runs once, after last.ckpt is on disk"
    state = torch.load(ckpt, weights_only=False)
    assert state["global_step"] == 4  # the batch that was running when the signal came finished first
    assert not list(ckpt.parent.glob("*.tmp"))
    assert signal.getsignal(signal.SIGUSR2) is submitit_like  # handlers restored after the fit


def test_sigterm_under_submitit_checkpoints_and_stops_after_logging_the_batch(tmp_path, restore_signals):
    """SIGTERM (scontrol requeue, preemption): checkpoint at the batch end, log that batch, stop
    without a result; the requeued attempt logs the steps after the checkpoint, each once."""
    from pytorch_lightning.loggers import CSVLogger

    ckpt = tmp_path / "last.ckpt"
    signal.signal(signal.SIGUSR2, lambda s, f: None)
    first = CSVLogger(str(tmp_path), name="logs", version="a")
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))

    def fit(logger, callbacks, ckpt_path=None):
        trainer = pl.Trainer(max_steps=8, accelerator="cpu", devices=1, logger=logger, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                             log_every_n_steps=1, default_root_dir=str(tmp_path))
        trainer.fit(_LossLogging(), DataLoader(data, batch_size=4), ckpt_path=ckpt_path)
        return trainer

    with pytest.raises(SystemExit) as stop:
        fit(first, [PreemptionCheckpoint(ckpt, requeue_signal=signal.SIGUSR2, handle_sigterm=True),
                    _SignalAt(signal.SIGTERM, 2)])
    assert stop.value.code == 128 + signal.SIGTERM
    assert torch.load(ckpt, weights_only=False)["global_step"] == 3  # the batch that was running finished
    assert _csv_steps(tmp_path / "logs" / "a" / "metrics.csv") == [0, 1, 2]  # its row too
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored

    second = CSVLogger(str(tmp_path), name="logs", version="b")
    trainer = fit(second, [PreemptionCheckpoint(ckpt, requeue_signal=signal.SIGUSR2, handle_sigterm=True)],
                  ckpt_path=str(ckpt))
    assert trainer.global_step == 8
    assert _csv_steps(tmp_path / "logs" / "b" / "metrics.csv") == [3, 4, 5, 6, 7]


def test_requeue_signal_is_handed_over_after_the_batch_is_logged(tmp_path, restore_signals):
    from pytorch_lightning.loggers import CSVLogger

    ckpt = tmp_path / "last.ckpt"
    rows_at_handover = []

    def submitit_like(signum, frame):
        rows_at_handover.append(_csv_steps(tmp_path / "logs" / "a" / "metrics.csv"))
        raise SystemExit(-1)

    signal.signal(signal.SIGUSR2, submitit_like)
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    trainer = pl.Trainer(max_steps=8, accelerator="cpu", devices=1, logger=CSVLogger(str(tmp_path), name="logs",
                         version="a"), enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, log_every_n_steps=1, default_root_dir=str(tmp_path),
                         callbacks=[PreemptionCheckpoint(ckpt, requeue_signal=signal.SIGUSR2),
                                    _SignalAt(signal.SIGUSR2, 3)])
    with pytest.raises(SystemExit):
        trainer.fit(_LossLogging(), DataLoader(data, batch_size=4))
    assert torch.load(ckpt, weights_only=False)["global_step"] == 4
    assert rows_at_handover == [[0, 1, 2, 3]]  # on disk before submitit requeues and exits


def test_outside_submitit_nothing_is_installed(tmp_path, restore_signals, monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    cb = PreemptionCheckpoint(tmp_path / "last.ckpt")
    _fit(tmp_path, [cb], max_steps=2)
    assert cb._installed == [] and not (tmp_path / "last.ckpt").exists()
