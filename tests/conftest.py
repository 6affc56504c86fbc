"""Shared fixtures: composed configs, small corpora, tiny models."""

from __future__ import annotations

import gc
import importlib
import json
import os
import random
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from midtrain.paths import CONF_DIR

# Under `make mutation` (mutmut sets MUTANT_UNDER_TEST in every process it runs tests in), the
# modules the project imports inside its functions are imported once here, in the server that
# collects the tests, so that the worker forked for each mutant inherits them instead of
# importing them again. Nothing here runs torch: a forked worker must start from a process
# that has not (its thread pools do not survive a fork).
_IMPORTED_INSIDE_FUNCTIONS = (
    "torch", "transformers", "pytorch_lightning", "datasets", "tokenizers", "safetensors",
    "scipy.stats", "numpy", "matplotlib.pyplot", "datasketch", "wandb", "hydra", "inspect_ai",
    "inspect_ai.model", "inspect_ai.log", "midtrain.train", "midtrain.generate", "midtrain.report",
    "midtrain.pipeline", "midtrain.evals.anima.task",
)
if "MUTANT_UNDER_TEST" in os.environ:
    import matplotlib

    matplotlib.use("Agg")
    for _name in _IMPORTED_INSIDE_FUNCTIONS:
        importlib.import_module(_name)
    # What is imported now stays out of the collector's reach, so that a worker's garbage
    # collection neither walks nor copies (copy-on-write) the pages it shares with the server.
    gc.freeze()

# The test durations mutmut recorded (mutants/mutmut-stats.json; the tests run from mutants/).
_MUTMUT_STATS = Path("mutmut-stats.json")


def pytest_collection_modifyitems(session, config, items):
    """Under mutmut, a mutant's tests run fastest first, by the durations mutmut recorded.

    mutmut's fork server hands each worker the mutant's tests in the order of a Python set,
    which differs from run to run, so a mutant that a millisecond test kills could first sit
    through a training run, and a verdict could depend on that order. Sorted by recorded
    duration (name breaking ties), `-x` stops at the quickest test that fails, and every run
    uses the same order.
    """
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if not mutant or mutant in ("stats", "list_all_tests", "fail") or not _MUTMUT_STATS.is_file():
        return
    durations = json.loads(_MUTMUT_STATS.read_text(encoding="utf-8")).get("duration_by_test", {})
    items.sort(key=lambda item: (durations.get(item.nodeid, float("inf")), item.nodeid))

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
