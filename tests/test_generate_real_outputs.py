"""The LLM pipeline replayed on real completions: SmolLM2-135M-Instruct answers captured once.

`tests/fixtures/generation/smollm2_completions.jsonl` holds answers of the real model to the
project's prompts (lists numbered every which way, prose instead of a list, documents cut off
at the token budget, ...). A scripted `mockllm` model answers each request with one of them,
chosen by a hash of the prompt, so the whole pipeline meets real output in the fast tier:
nothing crashes, every unusable answer is counted by reason, and resume works on it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from midtrain.paths import CONF_DIR
from tests.generation_checks import assert_manifest_matches_files, generate_anyway, jsonl

inspect_model = pytest.importorskip("inspect_ai.model")

FIXTURE = Path(__file__).parent / "fixtures" / "generation" / "smollm2_completions.jsonl"
CASES = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]
MARKERS = {"doc_types": "types of document", "ideas": "ideas for such a document",
           "documents": "Write one document", "revisions": "Here is a draft document"}
MAX_TOKENS = 400
UNIVERSE = {
    "name": "replay_world",
    "description": "A world where careful professionals weigh the welfare of animals.",
    "facts": [
        {"id": "f1", "statement": "Animals affected by a decision have interests of their own."},
        {"id": "f2", "statement": "Fish and many invertebrates show credible signs of sentience."},
        {"id": "f3", "statement": "Scale matters: a harm to millions of animals weighs more than one to a few."},
        {"id": "f4", "statement": "Good decisions name the welfare costs of an option and look for ways to reduce them."},
    ],
}


class Replay:
    """Answers each prompt with a captured completion of its stage; can stop mid-stage."""

    def __init__(self, interrupt_after_docs: int | None = None):
        self.prompts: list[str] = []
        self.docs = 0
        self.interrupt_after_docs = interrupt_after_docs

    def __call__(self, input, tools, tool_choice, config):
        prompt = input[-1].text
        stage = next(s for s, m in MARKERS.items() if m in prompt)
        if stage == "documents":
            if self.docs == self.interrupt_after_docs:
                raise KeyboardInterrupt
            self.docs += 1
        self.prompts.append(prompt)
        pool = [c for c in CASES if c["stage"] == stage]
        case = pool[int(hashlib.sha1(prompt.encode()).hexdigest(), 16) % len(pool)]
        out = inspect_model.ModelOutput.from_content(model="mockllm", content=case["completion"])
        used = MAX_TOKENS if case["hit_token_limit"] else 50
        out.usage = inspect_model.ModelUsage(input_tokens=len(prompt) // 4, output_tokens=used,
                                             total_tokens=len(prompt) // 4 + used)
        return out

    def model(self):
        return inspect_model.get_model("mockllm/model", custom_outputs=self, memoize=False,
                                       config=inspect_model.GenerateConfig(max_connections=1, max_retries=0,
                                                                           max_tokens=MAX_TOKENS))


def _cfg(out_dir: Path, *extra: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("generate", overrides=[
            "generator=llm", "generator.model=mockllm/model", "generator.cache=false",
            "generator.max_connections=1", "generator.num_doc_types=3", "generator.num_ideas=4",
            "generator.oversample=4", "generator.revise=true", "num_docs=3", f"out_dir={out_dir}",
            "progress=false", "filters.min_words=10", *extra])
    cfg.universe = OmegaConf.create(UNIVERSE)
    return cfg


def test_fixture_holds_the_kinds_of_real_output_the_parsers_must_survive():
    kinds = {(c["stage"], c["status"]) for c in CASES}
    assert {("documents", "truncated"), ("doc_types", "ok"), ("ideas", "ok")} <= kinds
    assert any(s in ("doc_types", "ideas") and st == "no_list_items" for s, st in kinds)
    assert any(c["hit_token_limit"] for c in CASES)


def test_pipeline_on_real_completions_counts_what_it_cannot_use(tmp_path):
    out = tmp_path / "c"
    script = Replay()
    manifest = generate_anyway(_cfg(out), model=script.model())
    assert_manifest_matches_files(out, manifest, num_docs=3)
    assert manifest["unparseable"]  # real output always has some
    assert sum(manifest["stages"][s]["completed"] for s in manifest["stages"]) == len(script.prompts)

    again = Replay()
    assert generate_anyway(_cfg(out), model=again.model()) == {**manifest, "stages": again_stages(out, manifest)}
    assert again.prompts == []  # unusable answers are stored, not asked again


def again_stages(out: Path, manifest: dict) -> dict:
    """The stage block a re-run reports: everything reused, nothing sent."""
    return {n: {**st, "reused": st["done"], "completed": 0, "input_tokens": 0, "output_tokens": 0,
                "seconds": 0.0} for n, st in manifest["stages"].items()}


def test_resume_on_partial_real_output_gives_the_uninterrupted_corpus(tmp_path):
    reference = tmp_path / "ref"
    full = Replay()
    generate_anyway(_cfg(reference), model=full.model())
    assert full.docs >= 4  # enough writing requests to stop in the middle of the stage

    out = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        generate_anyway(_cfg(out), model=Replay(interrupt_after_docs=3).model())
    stage_file = out / "stages" / "documents.jsonl"
    assert len(jsonl(stage_file)) == 3
    with open(stage_file, "a") as f:  # a line torn by the crash
        f.write('{"key": "doc:0000')
    second = Replay()
    manifest = generate_anyway(_cfg(out), model=second.model())
    assert manifest["stages"]["documents"]["reused"] == 3
    assert not any(MARKERS["doc_types"] in p or MARKERS["ideas"] in p for p in second.prompts)
    assert jsonl(out / "documents.jsonl") == jsonl(reference / "documents.jsonl")
    assert manifest["rejected"] == json.loads((reference / "manifest.json").read_text())["rejected"]
