"""Shared fixtures: composed configs, small corpora, tiny models."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from midtrain.paths import CONF_DIR

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"
ANIMA_DIR = SHARED_DIR / "anima-2.1"

_WORDS = (
    "the a of and to in is that for on with as by fish hens pigs cows welfare pain policy "
    "report evidence study farm housing transit zoning density city council budget plan "
    "humane stunning shelter enrichment suffering sentience research survey data analysis"
).split()


def compose_cfg(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose a primary config from conf/ the way the entry point would (without running it)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides or []))


def write_docs(path: Path, n: int, seed: int = 0, min_words: int = 20, max_words: int = 160) -> Path:
    """A deterministic JSONL corpus of `n` documents of varied length."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            words = [rng.choice(_WORDS) for _ in range(rng.randint(min_words, max_words))]
            f.write(json.dumps({"id": f"doc{i}", "text": " ".join(words).capitalize() + ".", "doc_type": "memo"}) + "\n")
    return path


@pytest.fixture
def docs_jsonl(tmp_path: Path) -> Path:
    return write_docs(tmp_path / "docs.jsonl", 48)


def smoke_overrides(tmp_path: Path, corpus_path: Path | None = None, **extra: object) -> list[str]:
    out = ["debug=smoke", f"paths.runs_root={tmp_path / 'runs'}", "sweep_name=test", "seed=0"]
    if corpus_path is not None:
        out += ["corpus=jsonl", f"corpus.path={corpus_path}", "corpus.name=fixture", "corpus.num_docs=40"]
    out += [f"{k}={v}" for k, v in extra.items()]
    return out


@pytest.fixture
def smoke_cfg(tmp_path: Path, docs_jsonl: Path):
    """A factory of composed smoke-train configs over the fixture corpus."""

    def make(*overrides: str) -> DictConfig:
        cfg = compose_cfg("train", smoke_overrides(tmp_path, docs_jsonl) + list(overrides))
        with open_dict(cfg):
            cfg.trainer.enable_progress_bar = False
        return cfg

    return make
