"""benchmarks/preserve_cost.py times each strategy's step on the same model and batch, alternately."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "preserve_cost.py"


def _load():
    spec = importlib.util.spec_from_file_location("preserve_cost_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_each_strategy_trains_the_same_start_and_the_ratio_is_to_none(tmp_path):
    bench = _load()
    out = tmp_path / "cost.json"
    result = bench.main(["--seq-len", "64", "--steps", "2", "--repeats", "2", "--warmup", "0", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert set(saved["median_s"]) == {"none", "kl"} and saved["ratio_to_none"]["none"] == 1.0
    assert all(len(v) == 4 for v in saved["all_s"].values())  # steps x repeats, every one timed
    assert saved["ratio_to_none"]["kl"] == saved["median_s"]["kl"] / saved["median_s"]["none"]


def test_the_kl_row_penalises_drift_from_a_frozen_copy_of_the_start():
    bench = _load()
    base = bench._model(None, 0)
    strategy = bench._strategy("kl", 0.5)
    from omegaconf import OmegaConf

    model = strategy.prepare_model(base, OmegaConf.create({"trainer": {"strategy": "auto"}}))
    assert strategy.reference is not model and float(strategy.cfg.beta) == 0.5
    assert not any(p.requires_grad for p in strategy.reference.parameters())
    batch = bench._batch(int(base.config.vocab_size), 2, 64, 0)
    assert (batch["labels"] == -100).float().mean() == 0.5
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    penalty, mean_kl = strategy.penalty(batch, model(input_ids=batch["input_ids"]).logits)
    assert float(mean_kl) > 0 and torch.isclose(penalty, 0.5 * mean_kl)
