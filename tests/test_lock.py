"""requirements/constraints.txt: exact pins for every dependency, and nothing that is a torch build."""

from __future__ import annotations

import re

import pytest
from packaging.requirements import Requirement

from midtrain.paths import REPO_ROOT

CONSTRAINTS = REPO_ROOT / "requirements" / "constraints.txt"
TORCH_BUILD = re.compile(r"^(torch|torchvision|torchaudio|triton|pytorch-triton.*|nvidia-.*|cuda-.*)$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for lineno, line in enumerate(CONSTRAINTS.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.!]*)", line.strip())
        assert m, f"{CONSTRAINTS}:{lineno}: expected name==version (no URL, no local build), got {line!r}"
        pins[_norm(m.group(1))] = m.group(2)
    return pins


def test_constraints_pin_exact_releases_and_no_torch_build():
    pins = _pins()
    assert len(pins) > 50
    builds = sorted(n for n in pins if TORCH_BUILD.match(n))
    assert builds == [], f"{CONSTRAINTS}: torch and its CUDA packages come with the torch install, not the lock"
    assert "alignment-midtraining" not in pins


def test_every_direct_dependency_is_locked():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    names = {_norm(Requirement(r).name) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    missing = sorted(names - set(_pins()) - {"torch"})
    assert missing == [], f"not in {CONSTRAINTS.name}: {missing}; refresh it: make install && make lock"
