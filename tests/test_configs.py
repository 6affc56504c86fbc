"""Every option of every config group composes with the primary configs that use it."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from midtrain.paths import CONF_DIR
from tests.conftest import compose_cfg

TRAIN_GROUPS = ("model", "corpus", "data", "instruct", "preserve", "optim", "trainer", "logger", "debug", "experiment")
PIPELINE_GROUPS = ("experiment", "qa", "corpus", "instruct", "preserve")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _resolvable(cfg) -> dict:
    """Resolve everything except Hydra's own node and mandatory (???) values."""
    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra", None)
    plain = OmegaConf.create(container)
    out = {}
    for key in plain:
        try:
            out[key] = OmegaConf.to_container(plain[key], resolve=True) if OmegaConf.is_config(plain[key]) else plain[key]
        except Exception as e:  # noqa: BLE001 - only ??? values may stay unresolved
            assert "Missing mandatory value" in str(e), f"{key}: {e}"
    return out


@pytest.mark.parametrize("group,option", [(g, o) for g in TRAIN_GROUPS for o in _options(g)])
def test_train_group_option_composes(tmp_path, group, option):
    cfg = compose_cfg("train", [f"{group}={option}", f"paths.runs_root={tmp_path}"])
    resolved = _resolvable(cfg)
    assert resolved["paths"]["runs_root"] == str(tmp_path)


@pytest.mark.parametrize("group,option", [(g, o) for g in PIPELINE_GROUPS for o in _options(g)])
def test_pipeline_group_option_composes(tmp_path, group, option):
    cfg = compose_cfg("pipeline", [f"{group}={option}", f"paths.runs_root={tmp_path}"])
    _resolvable(cfg)


@pytest.mark.parametrize("experiment,condition,universe", [
    ("treatment", "treatment", "animal_welfare"),
    ("control", "control", "urban_density"),
    ("instruct_baseline", "instruct_baseline", "animal_welfare"),
    ("base", "base", "animal_welfare"),
])
def test_experiments_set_condition_universe_and_run_id(tmp_path, experiment, condition, universe):
    cfg = compose_cfg("pipeline", [f"experiment={experiment}", "debug=smoke", f"paths.runs_root={tmp_path}",
                                   "instruct.samples=16", "sweep_name=s"])
    assert cfg.condition == condition and cfg.universe == universe
    assert cfg.corpus.universe == universe
    expected = "base-tiny-llama-i16-s0" if experiment == "base" else f"{condition}-tiny-llama-n32-i16-s0"
    assert re.fullmatch(re.escape(expected) + r"-[0-9a-f]{8}", cfg.run_id), cfg.run_id
    assert cfg.run_dir == f"{tmp_path}/s/{cfg.run_id}"


def test_experiment_files_carry_their_command():
    for path in (CONF_DIR / "experiment").glob("*.yaml"):
        text = path.read_text()
        assert text.startswith("# @package _global_"), path
        assert "midtrain-pipeline experiment=" in text or "midtrain-" in text, f"{path} has no command comment"


@pytest.mark.parametrize("model", ["llama3_2_1b", "llama3_1_8b"])
def test_hub_models_demand_a_revision(tmp_path, model):
    cfg = compose_cfg("train", [f"model={model}", f"paths.runs_root={tmp_path}"])
    assert OmegaConf.is_missing(cfg.model, "revision")
