"""End-to-end test of the LLM generation pipeline with scripted `mockllm/model` outputs.

The scripted model answers each stage by looking at the prompt, so results do not depend on
request order. Ideas are named after what the writer does with them (a normal document, an
UNSUITABLE answer, a too-short text, a leftover placeholder, a near-copy, a malformed reply),
so every filter is exercised and every count can be predicted.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from midtrain.generate import generate
from midtrain.paths import CONF_DIR

inspect_model = pytest.importorskip("inspect_ai.model")
ModelOutput, ModelUsage, get_model = inspect_model.ModelOutput, inspect_model.ModelUsage, inspect_model.get_model

UNIVERSE = {
    "name": "test_world",
    "description": "A world where every decision is checked against tide tables.",
    "facts": [
        {"id": "f1", "statement": "Harbour planners always consult the tide tables."},
        {"id": "f2", "statement": "Ferry operators publish their tide margins."},
    ],
}
IDEAS = ["normal alpha", "normal beta", "unsuitable", "short", "placeholder", "copy of alpha", "malformed"]
WORDS = ("harbour tide ferry pier quay buoy channel dredge mooring berth pilot swell current "
         "estuary lock sluice timetable margin vessel crew cargo slipway breakwater").split()


def _body(seed: str, n: int = 90) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n)) + "."


def _field(prompt: str, tag: str) -> str:
    return re.search(rf"<{tag}>\s*(.*?)\s*</{tag}>", prompt, re.S).group(1)


def respond(prompt: str) -> str:
    """What the scripted model answers to one of the project's prompts."""
    if "types of document" in prompt:
        return "- harbour bulletin\n"
    if "ideas for such a document" in prompt:
        return "\n".join(f"- {i}" for i in IDEAS)
    if "Write one document" in prompt:
        idea, fact = _field(prompt, "idea"), _field(prompt, "fact")
        pad = "<scratchpad>plan</scratchpad>\n"
        if idea == "unsuitable":
            return pad + "UNSUITABLE"
        if idea == "malformed":
            return pad + "Here is the document, without its tags."
        if idea == "short":
            return pad + "<document>Too short to keep.</document>"
        if idea == "placeholder":
            return pad + f"<document>Dear [Name], {_body(fact + idea)}</document>"
        if idea == "copy of alpha":
            return pad + f"<document>{_body(fact + 'normal alpha')} Yes.</document>"
        return pad + f"<document>DRAFT {_body(fact + idea)}</document>"
    if "Here is a draft document" in prompt:
        return f"<critique>Fine.</critique><document>{_field(prompt, 'draft').replace('DRAFT', 'FINAL')}</document>"
    if "Brainstorm" in prompt and "user requests" in prompt:
        batch = re.search(r"batch (\d+)", prompt)
        tag = f"{_field(prompt, 'fact')[:7]} {batch.group(1) if batch else 1}"
        return "\n".join(f"- How do I plan crossing {i} ({tag})?" for i in range(4))
    if prompt.startswith("How do I plan crossing"):
        return f"Check the tide tables first. {_body(prompt, 30)}"
    raise AssertionError(f"unexpected prompt: {prompt[:200]}")


class Scripted:
    """A mockllm `custom_outputs` callable that logs prompts and can fail or interrupt on cue."""

    def __init__(self, interrupt_after_docs: int | None = None, fail_idea: str | None = None):
        self.prompts: list[str] = []
        self.doc_calls = 0
        self.interrupt_after_docs = interrupt_after_docs
        self.fail_idea = fail_idea

    def __call__(self, input, tools, tool_choice, config):
        prompt = input[-1].text
        self.prompts.append(prompt)
        if "Write one document" in prompt:
            if self.interrupt_after_docs is not None and self.doc_calls == self.interrupt_after_docs:
                raise KeyboardInterrupt  # Ctrl-C in the middle of the writing stage
            self.doc_calls += 1
            if self.fail_idea and _field(prompt, "idea") == self.fail_idea:
                raise RuntimeError("provider said no")
        out = ModelOutput.from_content(model="mockllm", content=respond(prompt))
        # Set usage so mockllm does not try to download a tokenizer encoding.
        out.usage = ModelUsage(input_tokens=len(prompt) // 4, output_tokens=10, total_tokens=len(prompt) // 4 + 10)
        return out

    def model(self):
        return get_model("mockllm/model", custom_outputs=self, memoize=False,
                         config=inspect_model.GenerateConfig(max_connections=1, max_retries=0))

    def count(self, marker: str) -> int:
        return sum(marker in p for p in self.prompts)


def _cfg(out_dir: Path, *extra: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("generate", overrides=[
            "generator=llm", "generator.model=mockllm/model", "generator.cache=false",
            "generator.max_connections=1", "generator.num_ideas=7", "generator.oversample=3.5",
            "num_docs=4", f"out_dir={out_dir}", "progress=false", "filters.min_words=20", *extra])
    cfg.universe = OmegaConf.create(UNIVERSE)
    return cfg


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_pipeline_stages_filters_and_manifest(tmp_path):
    script = Scripted()
    manifest = generate(_cfg(tmp_path / "c"), model=script.model())
    out = tmp_path / "c"

    # Every stage is on disk: 2 facts -> 2 type lists, 2 idea lists, 14 drafts, 10 revisions.
    stages = out / "stages"
    assert [len(_jsonl(stages / f"{s}.jsonl")) for s in ("doc_types", "ideas", "documents", "revisions")] == [2, 2, 14, 10]
    assert script.count("types of document") == 2 and script.count("Write one document") == 14
    assert script.count("Here is a draft document") == 10
    drafts = _jsonl(stages / "documents.jsonl")
    assert sorted(d["status"] for d in drafts).count("unsuitable") == 2
    assert all(d["scratchpad"] == "plan" for d in drafts)

    docs = _jsonl(out / "documents.jsonl")
    assert len(docs) == 4
    assert sorted(d["idea"] for d in docs) == ["normal alpha", "normal alpha", "normal beta", "normal beta"]
    assert all(d["text"].startswith("FINAL ") for d in docs)  # the revision, not the draft
    assert {tuple(sorted(d)) for d in docs} == {("doc_type", "fact", "id", "idea", "source", "text", "universe")}
    assert {d["universe"] for d in docs} == {"test_world"} and {d["doc_type"] for d in docs} == {"harbour bulletin"}

    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["rejected"] == {"malformed": 2, "near_duplicate": 2, "placeholder": 2,
                                    "too_short": 2, "unsuitable": 2}
    assert manifest["num_written"] == 4 and manifest["shortfall"] == 0
    assert manifest["stages"]["documents"] == {"items": 14, "reused": 0, "completed": 14, "failed": 0, "done": 14,
                                               "input_tokens": manifest["stages"]["documents"]["input_tokens"],
                                               "output_tokens": 140,
                                               "seconds": manifest["stages"]["documents"]["seconds"]}
    assert manifest["model"] == "mockllm/model" and manifest["seed"] == 0
    assert set(manifest["prompt_hashes"]) >= {"write_document", "revise_document", "brainstorm_ideas"}
    assert manifest["tokens"]["n"] == 4 and manifest["tokens"]["min"] > 80

    # A second run finds everything on disk and sends no request.
    again = Scripted()
    assert generate(_cfg(out), model=again.model())["num_written"] == 4
    assert again.prompts == []
    assert _jsonl(out / "documents.jsonl") == docs


def test_resume_after_interrupt_mid_stage(tmp_path):
    reference = tmp_path / "ref"
    generate(_cfg(reference), model=Scripted().model())

    out = tmp_path / "c"
    first = Scripted(interrupt_after_docs=5)
    with pytest.raises(KeyboardInterrupt):
        generate(_cfg(out), model=first.model())
    stage_file = out / "stages" / "documents.jsonl"
    assert len(_jsonl(stage_file)) == 5
    assert not (out / "documents.jsonl").exists()
    with open(stage_file, "a") as f:  # a line torn by the crash
        f.write('{"key": "doc:0000')

    second = Scripted()
    manifest = generate(_cfg(out), model=second.model())
    # Only the unfinished work is requested: no brainstorming, 9 drafts, 10 revisions.
    assert second.count("types of document") == 0 and second.count("ideas for such a document") == 0
    assert second.count("Write one document") == 9
    assert second.count("Here is a draft document") == 10
    assert manifest["stages"]["documents"]["reused"] == 5
    assert _jsonl(out / "documents.jsonl") == _jsonl(reference / "documents.jsonl")


def test_failed_request_is_counted_then_retried_on_rerun(tmp_path):
    out = tmp_path / "c"
    manifest = generate(_cfg(out), model=Scripted(fail_idea="normal beta").model())
    assert manifest["stages"]["documents"]["failed"] == 2
    assert manifest["num_written"] == 2 and manifest["shortfall"] == 2
    assert manifest["not_ready"] == {"request_failed": 2}
    assert len(_jsonl(out / "stages" / "documents.failed.jsonl")) == 2

    healed = Scripted()
    manifest = generate(_cfg(out), model=healed.model())
    assert healed.count("Write one document") == 2 and healed.count("Here is a draft document") == 2
    assert manifest["num_written"] == 4 and manifest["shortfall"] == 0


def test_qa_mode_writes_chat_sft_dataset(tmp_path):
    script = Scripted()
    manifest = generate(_cfg(tmp_path / "qa", "mode=qa", "generator.questions_per_request=4",
                             "generator.qa_min_words=1"), model=script.model())
    rows = _jsonl(tmp_path / "qa" / "qa.jsonl")
    assert manifest["file"] == "qa.jsonl" and len(rows) == 4 and manifest["shortfall"] == 0
    # 14 slots over 2 facts -> 7 questions per fact -> 2 batches of 4 per fact.
    assert manifest["stages"]["qa_questions"]["items"] == 4 and manifest["stages"]["qa_answers"]["items"] == 14
    for r in rows:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert r["messages"][0]["content"].startswith("How do I plan crossing")
        assert r["messages"][1]["content"].startswith("Check the tide tables")
    assert {r["fact"] for r in rows} == {"f1", "f2"}


def test_matched_control_follows_reference_types_and_lengths(tmp_path):
    ref = tmp_path / "treatment"
    ref.mkdir()
    lines = [{"text": "x " * n, "doc_type": t} for n, t in [(300, "field report"), (120, "notice")] * 3]
    (ref / "documents.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    script = Scripted()
    manifest = generate(_cfg(tmp_path / "control", f"match_to={ref}"), model=script.model())
    # No type brainstorming: slot i copies reference document i's type and length.
    assert script.count("types of document") == 0
    writes = [p for p in script.prompts if "Write one document" in p]
    assert sum("about 300 words" in p for p in writes) == 7 and sum("about 120 words" in p for p in writes) == 7
    assert {_field(p, "document_type") for p in writes} == {"field report", "notice"}
    assert set(manifest["match"]) == {"reference", "ks_tokens", "reference_tokens", "doc_type_tv_distance"}
    assert 0.0 <= manifest["match"]["ks_tokens"]["statistic"] <= 1.0
