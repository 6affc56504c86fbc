"""midtrain-pipeline: stages in subdirectories, combined metrics, resume at the interrupted stage."""

from __future__ import annotations

import json
import re

import pytest
import torch

import midtrain.train as train_mod
from midtrain.pipeline import pipeline
from midtrain.tracking import RunDir
from tests.conftest import compose_cfg
from tests.test_train import crash_instruct_once


def _overrides(tmp_path, *extra):
    return ["debug=smoke", f"paths.runs_root={tmp_path / 'runs'}", "sweep_name=pipe", "corpus.num_docs=24",
            "data.seq_len=256", *extra]


def test_treatment_pipeline_runs_both_stages_and_gathers_metrics(tmp_path):
    cfg = compose_cfg("pipeline", _overrides(tmp_path, "experiment=treatment", "instruct.samples=16"))
    metrics = pipeline(cfg)
    run = RunDir.from_cfg(cfg)
    assert re.fullmatch(r"treatment-tiny-llama-n24-i16-s0-[0-9a-f]{8}", run.path.name), run.path.name
    for stage in ("midtrain", "instruct"):
        assert (run.path / stage / "DONE").exists()
        assert (run.path / stage / "hf" / "model.safetensors").exists()
    assert run.is_done() and json.loads(run.metrics_path.read_text()) == metrics
    assert metrics["condition"] == "treatment" and metrics["corpus"] == "tmpl-animal_welfare"
    assert (metrics["num_docs"], metrics["instruct_samples"], metrics["seed"]) == (24, 16, 0)
    assert metrics["train"]["midtrain"]["objective"] == "lm"
    assert metrics["train"]["instruct"]["objective"] == "sft"
    assert metrics["train"]["instruct"]["init_from"] == "../midtrain"  # relative: the run can move
    assert "margin" in metrics["eval"]["probe"]
    # The instruct stage started from the midtrained weights, not from scratch.
    cfg_instruct = json.loads((run.path / "instruct" / "metrics.json").read_text())
    assert cfg_instruct["stage"] == "instruct" and cfg_instruct["instruct_samples"] == 16


def test_interrupted_instruct_stage_resumes_without_redoing_midtraining(tmp_path, monkeypatch):
    over = _overrides(tmp_path, "experiment=control", "instruct.samples=48", "stages.evaluate.enabled=false",
                      "+stages.instruct.data.batch_size=2")
    cfg = compose_cfg("pipeline", over)
    crash_instruct_once(monkeypatch)
    with pytest.raises(SystemExit, match="killed after step 5"):
        pipeline(cfg)
    run = RunDir.from_cfg(cfg)
    mid = RunDir(run.path / "midtrain")
    assert mid.is_done() and not (run.path / "instruct" / "DONE").exists()
    mid_mtime = (mid.hf / "model.safetensors").stat().st_mtime_ns
    ckpt = torch.load(run.path / "instruct" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4

    import midtrain.data.datamodule as dm

    prepared: list[str] = []
    real_prepare = dm.PackedDataModule.prepare

    def spy(self):
        prepared.append(self.cfg.stage)
        return real_prepare(self)

    monkeypatch.setattr(dm.PackedDataModule, "prepare", spy)
    metrics = pipeline(cfg)
    assert prepared == ["instruct"]  # midtraining was not touched again
    assert (mid.hf / "model.safetensors").stat().st_mtime_ns == mid_mtime
    assert metrics["train"]["instruct"]["global_steps"] == metrics["train"]["instruct"]["steps"] > 5
    assert "eval" not in metrics


def test_base_condition_skips_midtraining(tmp_path):
    cfg = compose_cfg("pipeline", _overrides(tmp_path, "experiment=base", "instruct.samples=8"))
    metrics = pipeline(cfg)
    run = RunDir.from_cfg(cfg)
    assert not (run.path / "midtrain").exists()
    assert set(metrics["train"]) == {"instruct"}
    assert metrics["num_docs"] == 0 and metrics["corpus"] is None
    assert re.fullmatch(r"base-tiny-llama-i8-s0-[0-9a-f]{8}", run.path.name), run.path.name
    assert metrics["train"]["instruct"]["init_from"] is None


def test_instruct_baseline_trains_on_value_qa(tmp_path):
    cfg = compose_cfg("pipeline", _overrides(tmp_path, "experiment=instruct_baseline", "instruct.samples=0",
                                             "stages.evaluate.after=[base,final]"))
    metrics = pipeline(cfg)
    assert metrics["train"]["midtrain"]["objective"] == "sft"
    assert metrics["train"]["midtrain"]["samples"] == 24
    assert "instruct" not in metrics["train"]
    assert set(metrics["eval_by_stage"]) == {"base"}
    assert metrics["eval"]["probe"]["margin"] != metrics["eval_by_stage"]["base"]["probe"]["margin"]


def test_init_from_an_unfinished_stage_is_refused(tmp_path):
    (tmp_path / "half").mkdir()
    cfg = compose_cfg("train", ["debug=smoke", f"paths.runs_root={tmp_path}", f"init_from={tmp_path / 'half'}"])
    with pytest.raises(FileNotFoundError, match="not a finished stage"):
        train_mod.train(cfg)


def test_unknown_eval_target_is_refused(tmp_path):
    cfg = compose_cfg("pipeline", _overrides(tmp_path, "stages.evaluate.after=[midtrain,nowhere]"))
    with pytest.raises(ValueError, match="nowhere"):
        pipeline(cfg)


def test_stage_trainer_overrides_reach_only_their_stage(tmp_path):
    from midtrain.pipeline import stage_config

    cfg = compose_cfg("pipeline", ["debug=smoke", f"paths.runs_root={tmp_path}", "experiment=treatment",
                                   "+stages.midtrain.trainer.probe_every_n_steps=2",
                                   "+stages.midtrain.trainer.probe_at_ends=false"])
    mid = stage_config(cfg, "midtrain", "lm", None)
    ins = stage_config(cfg, "instruct", "sft", None)
    assert mid.trainer.probe_every_n_steps == 2 and mid.trainer.probe_at_ends is False
    assert ins.trainer.probe_every_n_steps == cfg.trainer.probe_every_n_steps
    assert ins.trainer.probe_at_ends is True
