"""Every sweep preset composes, expands to the grid it promises, and gives every job its own run dir."""

from __future__ import annotations

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from midtrain.paths import CONF_DIR, SWEEPS_DIR

GROUP_KEYS = {"experiment", "debug", "model", "corpus", "instruct", "trainer", "data", "optim", "logger", "qa",
              "preserve"}

EXPECTED_JOBS = {"doc_count": 18, "control": 12, "erosion": 45, "paper": 225, "smoke_local": 4, "demo": 18,
                 "preservation": 150, "preservation_cpu": 54}
REQUIRED = {"doc_count", "control", "erosion", "paper", "smoke_local", "preservation"}
PRESETS = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
SEARCHPATH = f"hydra.searchpath=[file://{CONF_DIR}]"  # what `--config-dir sweeps` adds next to conf/


def _compose(preset: str, *overrides: str, hydra_cfg: bool = False):
    with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3"):
        return compose(preset, overrides=[SEARCHPATH, "paths.runs_root=/shared/runs", *overrides],
                       return_hydra_config=hydra_cfg)


def expand(preset: str, *cli: str) -> list[list[str]]:
    """The per-job overrides Hydra's basic sweeper makes of a preset plus command-line values."""
    cfg = _compose(preset, hydra_cfg=True)
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    overrides = OverridesParser.create().parse_overrides([*params, *cli])
    batches = BasicSweeper.split_arguments(overrides, max_batch_size=None)
    return [job for batch in batches for job in batch]


def test_every_preset_is_listed():
    assert REQUIRED <= set(PRESETS)
    assert set(PRESETS) <= set(EXPECTED_JOBS), "add a new preset's grid size to EXPECTED_JOBS"


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_expands_to_its_grid_with_distinct_run_dirs(preset):
    cfg = _compose(preset, hydra_cfg=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.sweep_name == preset
    jobs = expand(preset)
    assert len(jobs) == EXPECTED_JOBS[preset]
    # Compose once per config-group choice, then apply each job's value overrides as Hydra
    # would (composing all 304 jobs in full takes minutes); run directories must never collide.
    by_groups: dict[tuple, object] = {}
    run_dirs = set()
    for job in jobs:
        groups = tuple(o for o in job if o.split("=")[0] in GROUP_KEYS)
        if groups not in by_groups:
            by_groups[groups] = _compose(preset, *groups)
        job_cfg = by_groups[groups]  # every job of a grid sets the same keys, so reuse is safe
        for o in job:
            key, value = o.split("=", 1)
            if key not in GROUP_KEYS:
                OmegaConf.update(job_cfg, key, yaml.safe_load(value), merge=False)
        assert job_cfg.condition in ("treatment", "control", "instruct_baseline", "base"), job
        run_dirs.add(job_cfg.run_dir)
    assert len(run_dirs) == len(jobs)
    assert all(d.startswith(f"/shared/runs/{preset}/") for d in run_dirs)
    # One job of each grid composed in full, exactly as the launcher does.
    assert _compose(preset, *jobs[-1]).run_dir in run_dirs


def test_command_line_values_override_a_preset_list():
    jobs = expand("doc_count", "seed=7", "corpus.num_docs=100,200")
    assert len(jobs) == 2
    assert all("seed=7" in job for job in jobs)
    assert sorted(j for job in jobs for j in job if j.startswith("corpus.num_docs")) == [
        "corpus.num_docs=100", "corpus.num_docs=200"]


def test_smoke_preset_is_tiny_and_cpu():
    cfg = _compose("smoke_local", hydra_cfg=True)
    assert cfg.model.name == "tiny-llama" and cfg.trainer.accelerator == "cpu"
    assert cfg.hydra.runtime.choices["debug"] == "smoke"
