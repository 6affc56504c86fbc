"""ProbeCallback: logs probe/margin at the right steps, restores train mode, changes nothing."""

from __future__ import annotations

import csv

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from midtrain.evals.probe import PAIRS_PATH
from midtrain.lightning.probe_callback import ProbeCallback
from tests.test_probe import tiny_tokenizer


class TinyLM(pl.LightningModule):
    def __init__(self, vocab_size: int):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        self.model = LlamaForCausalLM(
            LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=vocab_size, attention_dropout=0.2)
        )
        self.modes: list[bool] = []

    def training_step(self, batch, batch_idx):
        self.modes.append(self.model.training)
        (ids,) = batch
        return self.model(input_ids=ids, labels=ids).loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(tmp_path, callbacks, steps=5, accumulate=1):
    tok = tiny_tokenizer()
    pl.seed_everything(0)
    module = TinyLM(len(tok))
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randint(0, len(tok), (16, 24), generator=g))
    trainer = pl.Trainer(
        max_steps=steps, accelerator="cpu", logger=CSVLogger(tmp_path), callbacks=callbacks,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=50, accumulate_grad_batches=accumulate,
    )
    trainer.fit(module, DataLoader(data, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(0)))
    return module, trainer


def small_pairs(tmp_path, n=6):
    """A few of the project's pairs, to keep the test fast."""
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(line + "\n" for line in PAIRS_PATH.read_text().splitlines()[:n]))
    return str(path)


def test_probe_callback_logs_restores_mode_and_keeps_the_trajectory(tmp_path):
    tok = tiny_tokenizer()
    cb = ProbeCallback(every_n_steps=2, tokenizer=tok, pairs_path=small_pairs(tmp_path))
    with_cb, trainer = fit(tmp_path / "a", [cb], steps=5, accumulate=2)
    without, _ = fit(tmp_path / "b", [], steps=5, accumulate=2)

    assert [h["step"] for h in cb.history] == [0, 2, 4, 5]
    assert all(with_cb.modes), "training steps after a probe must run in train mode"
    # Dropout draws from the RNG; identical weights mean the probe consumed none of it.
    for (n, a), (_, b) in zip(with_cb.state_dict().items(), without.state_dict().items()):
        assert torch.equal(a, b), n
    assert cb.history[0]["margin"] != cb.history[-1]["margin"]  # training moved the model

    rows = list(csv.DictReader(open(trainer.logger.log_dir + "/metrics.csv")))
    logged = {int(r["step"]): float(r["probe/margin"]) for r in rows if r.get("probe/margin")}
    assert sorted(logged) == [0, 2, 4, 5]
    assert logged[5] == pytest.approx(cb.history[-1]["margin"])


def test_probe_callback_needs_a_tokenizer(tmp_path):
    with pytest.raises(ValueError, match="needs a tokenizer"):
        fit(tmp_path, [ProbeCallback(every_n_steps=1, pairs_path=small_pairs(tmp_path))], steps=1)


def test_probe_callback_rejects_bad_interval():
    with pytest.raises(ValueError, match="every_n_steps"):
        ProbeCallback(every_n_steps=0)
