"""An option file that extends another (`defaults: [<parent>, _self_]`) states only what differs.

A sweep preset's grid (`hydra.sweeper.params`) is the exception: it lists every axis of its
grid, so that the preset reads as the grid it runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from midtrain.paths import CONF_DIR, REPO_ROOT, SWEEPS_DIR


def _extending_files() -> list[tuple[Path, Path]]:
    pairs = []
    for path in sorted([*CONF_DIR.rglob("*.yaml"), *SWEEPS_DIR.glob("*.yaml")]):
        data = yaml.safe_load(path.read_text()) or {}
        for item in data.get("defaults") or [] if isinstance(data, dict) else []:
            if isinstance(item, str) and (path.parent / f"{item}.yaml").is_file():
                pairs.append((path, path.parent / f"{item}.yaml"))
    return pairs


def _restated(child: dict, parent: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in child.items():
        if key == "defaults" or key not in parent or f"{prefix}{key}" == "hydra.sweeper.params":
            continue
        if isinstance(value, dict) and isinstance(parent[key], dict):
            out += _restated(value, parent[key], f"{prefix}{key}.")
        elif value == parent[key]:
            out.append(f"{prefix}{key}={value!r}")
    return out


def test_some_option_files_extend_another():
    assert {p.relative_to(REPO_ROOT).as_posix() for p, _ in _extending_files()} >= {
        "conf/generator/claude.yaml", "conf/generator/vllm.yaml", "conf/hydra/launcher/slurm_cpu2.yaml"}


@pytest.mark.parametrize("path, parent", _extending_files(), ids=lambda p: p.name)
def test_no_option_file_restates_its_parent(path, parent):
    child, base = yaml.safe_load(path.read_text()), yaml.safe_load(parent.read_text())
    assert _restated(child, base) == [], f"{path} restates {parent.name}"
