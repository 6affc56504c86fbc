"""Golden losses: the tiny seeded model on a fixed corpus, trained on CPU with the settings
real runs use (gradient accumulation 2, two epochs, a warmup of several steps), must give
exactly the losses and learning rates recorded below.

Any change that moves these numbers changes what training computes: the packing, the
labels, the data order, the schedule, the optimizer or the model. Such a change must be
explained in its commit message. After an intended, explained change regenerate the values
with

    python -m tests.test_golden_loss

and paste its output over GOLDEN below. The tolerance only absorbs floating-point noise
between CPUs; a real change of numerics is orders of magnitude larger.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from tests.conftest import compose_cfg, smoke_overrides, write_docs
from tests.test_train import CrashAfter

# 16 documents in rows of 128 tokens, micro-batches of 2 rows, 512 tokens per optimizer step
# (accumulation 2), two epochs, warmup_ratio 0.25 of the optimizer steps.
SETTINGS = [
    "corpus.num_docs=16",
    "data.seq_len=128",
    "data.batch_size=2",
    "data.tokens_per_step=512",
    "data.epochs=2",
    "optim.warmup_ratio=0.25",
    "optim.lr=3e-3",
    "trainer.checkpoint_every_n_steps=2",
    "trainer.enable_progress_bar=false",
]

# Measured on CPU (torch 2.13.0, one thread) by `python -m tests.test_golden_loss`.
GOLDEN: dict = {
    "rows": 15,
    "micro_batches": 15,
    "accumulate": 2,
    "steps": 8,
    "losses": [
        7.603394, 7.62662, 7.493296, 7.496358, 7.212523, 7.233623, 6.954436, 6.949836,
        6.693981, 6.710604, 6.506991, 6.496455, 6.337192, 6.321679, 6.222961,
    ],
    # warmup = round(0.25 * 8) = 2 steps: lr/2, then the peak, then cosine to lr/10.
    "lrs": [0.0015, 0.003, 0.003, 0.002819134, 0.002325, 0.00165, 0.000975, 0.000480866],
}


class Recorder(pl.Callback):
    """The loss of every micro-batch and the learning rate of every optimizer step."""

    def __init__(self):
        self.losses: list[float] = []
        self.lrs: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(pl_module.last_loss))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append(optimizer.param_groups[0]["lr"])


@pytest.fixture
def one_thread():
    """One intra-op thread: the sums inside matmuls then run in one order on any machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(root: Path, sweep: str):
    corpus = root / "golden.jsonl"
    if not corpus.exists():
        write_docs(corpus, 16, seed=0)
    return compose_cfg("train", smoke_overrides(root, corpus) + SETTINGS + [f"sweep_name={sweep}"])


def golden_run(root: Path, sweep: str = "golden", callbacks: list | None = None) -> tuple[dict, Recorder]:
    from midtrain.train import train

    rec = Recorder()
    metrics = train(_cfg(root, sweep), callbacks=[rec] + list(callbacks or []))
    return metrics, rec


def measured(metrics: dict, rec: Recorder) -> dict:
    t = metrics["train"]
    return {
        "rows": t["rows"],
        "micro_batches": t["micro_batches"],
        "accumulate": t["accumulate_grad_batches"],
        "steps": t["global_steps"],
        "losses": [round(x, 6) for x in rec.losses],
        "lrs": [round(x, 9) for x in rec.lrs],
    }


def test_golden_losses(tmp_path, one_thread):
    got = measured(*golden_run(tmp_path))
    assert {k: got[k] for k in ("rows", "micro_batches", "accumulate", "steps")} == {
        k: GOLDEN[k] for k in ("rows", "micro_batches", "accumulate", "steps")
    }
    assert got["accumulate"] == 2 and got["micro_batches"] == -(-2 * got["rows"] // 2)  # two epochs ran
    assert got["lrs"] == pytest.approx(GOLDEN["lrs"], rel=1e-9)
    assert got["losses"] == pytest.approx(GOLDEN["losses"], rel=1e-5, abs=1e-6)


def test_resume_with_accumulation_continues_the_golden_run(tmp_path, one_thread):
    # Killed after step 3; the last checkpoint is at step 2 = micro-batch 4. The resumed
    # attempt must see micro-batches 4, 5, ... and reproduce the golden losses from there.
    with pytest.raises(SystemExit, match="killed after step 3"):
        golden_run(tmp_path, "resume", [CrashAfter(3)])
    metrics, rec = golden_run(tmp_path, "resume")
    got = measured(metrics, rec)
    assert got["steps"] == GOLDEN["steps"]
    skipped = 2 * GOLDEN["accumulate"]
    assert got["losses"] == pytest.approx(GOLDEN["losses"][skipped:], rel=1e-5, abs=1e-6)
    assert got["lrs"] == pytest.approx(GOLDEN["lrs"][2:], rel=1e-9)


if __name__ == "__main__":
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        out = measured(*golden_run(Path(d)))
    json.dump(out, sys.stdout, indent=4)
    print()
