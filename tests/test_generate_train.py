"""A generated documents.jsonl trains with midtrain-train unchanged (corpus=jsonl)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from midtrain.generate import generate
from midtrain.paths import CONF_DIR

train_mod = pytest.importorskip("midtrain.train", reason="midtrain.train is not available")


def test_generated_corpus_trains_with_midtrain_train(tmp_path):
    corpus = tmp_path / "corpus"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        gen_cfg = compose("generate", overrides=["generator=template", "universe=animal_welfare",
                                                 "num_docs=24", f"out_dir={corpus}", "progress=false"])
        train_cfg = compose("train", overrides=[
            "debug=smoke", "corpus=jsonl", f"corpus.path={corpus / 'documents.jsonl'}", "corpus.name=gen",
            "corpus.num_docs=20", f"paths.runs_root={tmp_path / 'runs'}", "sweep_name=gen", "seed=0",
            "trainer.enable_progress_bar=false"])
    assert generate(gen_cfg)["num_written"] == 24
    metrics = train_mod.train(train_cfg)
    run_dir = tmp_path / "runs" / "gen" / str(train_cfg.run_id)
    assert (run_dir / "metrics.json").exists() and (run_dir / "DONE").exists()
    assert metrics["num_docs"] == 20 and metrics["train"]["documents"] == 20
    assert metrics["train"]["final_loss"] > 0
