"""A finished stage with the same stage hash is linked from another run instead of trained again."""

from __future__ import annotations

import json

import pytest

import midtrain.data.datamodule as dm
import midtrain.evals.probe as probe_pkg
from midtrain.pipeline import pipeline
from midtrain.tracking import RunDir
from tests.conftest import compose_cfg


def _overrides(tmp_path, *extra):
    return ["debug=smoke", f"paths.runs_root={tmp_path / 'runs'}", "sweep_name=reuse", "corpus.num_docs=24",
            "data.seq_len=256", "experiment=treatment", "stages.evaluate.after=[midtrain,instruct]", *extra]


@pytest.fixture
def spies(monkeypatch):
    """Which stages prepared data (trained) and which directories the probe scored."""
    seen = {"prepared": [], "probed": []}
    real_prepare, real_probe = dm.PackedDataModule.prepare, probe_pkg.probe_run_dir

    def prepare(self):
        seen["prepared"].append(self.cfg.stage)
        return real_prepare(self)

    def probe(run_dir, *a, **k):
        seen["probed"].append(str(run_dir))
        return real_probe(run_dir, *a, **k)

    monkeypatch.setattr(dm.PackedDataModule, "prepare", prepare)
    monkeypatch.setattr(probe_pkg, "probe_run_dir", probe)
    return seen


def test_second_instruction_size_links_the_finished_midtraining(tmp_path, spies):
    first_cfg = compose_cfg("pipeline", _overrides(tmp_path, "instruct.samples=8"))
    first = pipeline(first_cfg)
    assert spies["prepared"] == ["midtrain", "instruct"] and first["reused_stages"] == {}
    src = RunDir.from_cfg(first_cfg).path / "midtrain"
    src_metrics = (src / "metrics.json").read_text()
    spies["prepared"].clear(), spies["probed"].clear()

    cfg = compose_cfg("pipeline", _overrides(tmp_path, "instruct.samples=16"))
    metrics = pipeline(cfg)
    run = RunDir.from_cfg(cfg)
    mid = run.path / "midtrain"
    assert spies["prepared"] == ["instruct"]  # midtraining did not run again
    assert metrics["reused_stages"] == {"midtrain": str(src)}
    assert json.loads((mid / "reused_from.json").read_text())["source"] == str(src.resolve())
    assert (mid / "hf" / "model.safetensors").stat().st_ino == (src / "hf" / "model.safetensors").stat().st_ino
    assert not (mid / ".lock").exists() or (mid / ".lock").stat().st_ino != (src / ".lock").stat().st_ino
    assert metrics["stage_hashes"]["midtrain"] == first["stage_hashes"]["midtrain"]
    assert metrics["train"]["midtrain"] == first["train"]["midtrain"]
    # The linked stage's probe result was reused too: only the new instruction stage was scored.
    assert spies["probed"] == [str(run.path / "instruct")]
    assert metrics["eval_by_stage"]["midtrain"]["probe"]["margin"] == first["eval_by_stage"]["midtrain"]["probe"]["margin"]
    # The source run is untouched, and both runs are complete on their own.
    assert (src / "metrics.json").read_text() == src_metrics
    assert RunDir.from_cfg(first_cfg).is_done() and run.is_done()

    # Clearing the reused stage (redo) removes this run's links only.
    spies["prepared"].clear()
    pipeline(compose_cfg("pipeline", _overrides(tmp_path, "instruct.samples=16", "redo=midtrain", "reuse_stages=off")))
    assert spies["prepared"] == ["midtrain", "instruct"]
    assert (src / "hf" / "model.safetensors").exists() and (src / "metrics.json").read_text() == src_metrics
    assert not (mid / "reused_from.json").exists()


def test_a_different_stage_config_or_reuse_off_trains_its_own(tmp_path, spies):
    pipeline(compose_cfg("pipeline", _overrides(tmp_path, "instruct.samples=8")))
    spies["prepared"].clear()
    other_seed = pipeline(compose_cfg("pipeline", _overrides(tmp_path, "instruct.samples=16", "seed=1")))
    assert spies["prepared"] == ["midtrain", "instruct"] and other_seed["reused_stages"] == {}
    spies["prepared"].clear()
    off = pipeline(compose_cfg("pipeline", _overrides(tmp_path, "instruct.samples=16", "reuse_stages=off")))
    assert spies["prepared"] == ["midtrain", "instruct"] and off["reused_stages"] == {}


def test_a_source_whose_done_lies_is_not_linked(tmp_path, spies):
    first_cfg = compose_cfg("pipeline", _overrides(tmp_path, "instruct.samples=8"))
    pipeline(first_cfg)
    (RunDir.from_cfg(first_cfg).path / "midtrain" / "hf" / "model.safetensors").unlink()
    spies["prepared"].clear()
    metrics = pipeline(compose_cfg("pipeline", _overrides(tmp_path, "instruct.samples=16")))
    assert spies["prepared"] == ["midtrain", "instruct"] and metrics["reused_stages"] == {}


def test_an_unknown_reuse_scope_is_refused_before_training(tmp_path, spies):
    with pytest.raises(ValueError, match="reuse_stages='everywhere'"):
        pipeline(compose_cfg("pipeline", _overrides(tmp_path, "instruct.samples=8", "reuse_stages=everywhere")))
    assert spies["prepared"] == []
