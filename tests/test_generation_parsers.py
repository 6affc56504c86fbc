"""Parsers of the LLM generation stages: tolerant where a reader would be, strict where they must be.

The hand-written cases pin each list style and tag rule; the cases from
`tests/fixtures/generation/` are completions of SmolLM2-135M-Instruct captured from a real
run of `generator=local_hf`, each stored with the status and items its parse must give.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from midtrain.generation.llm import count_unparseable, parse_doc_types, parse_document, parse_list, parse_revision

FIXTURES = Path(__file__).parent / "fixtures" / "generation"


@pytest.mark.parametrize("text", [
    "1. Policy memo\n2. Field report\n3. Court ruling",
    "1) Policy memo\n2) Field report\n3) Court ruling",
    "(1) Policy memo\n(2) Field report\n(3) Court ruling",
    "a. Policy memo\nb. Field report\nc. Court ruling",
    "**1.** Policy memo\n**2.** Field report\n**3.** Court ruling",
    "Step 1: Policy memo\nStep 2: Field report\nStep 3: Court ruling",
    "### 1. Policy memo\n### 2. Field report\n### 3. Court ruling",
    "* Policy memo\n+ Field report\n\u2022 Court ruling",
    "1. Policy memo\n2) Field report\n- Court ruling",  # numbered one way and then another
    "Sure! Here are some document types:\n\n1. Policy memo\n2. Field report\n\n3. Court ruling\n\nI hope this helps.",
    "## Policy memo\nA memo.\n## Field report\nA report.\n## Court ruling\nA ruling.",  # headings only
])
def test_list_styles_a_reader_would_accept(text):
    assert parse_list(text) == {"status": "ok", "items": ["Policy memo", "Field report", "Court ruling"]}


def test_list_sub_items_are_details_and_bold_labels_name_document_types():
    text = ("1. **Policy memo**: a memo from a ministry\n   - author: analyst\n   - audience: minister\n"
            "2. **Field report** - notes from an inspection\n3. Court ruling")
    assert parse_list(text)["items"] == ["Policy memo: a memo from a ministry",
                                         "Field report - notes from an inspection", "Court ruling"]
    assert parse_doc_types(text)["items"] == ["Policy memo", "Field report", "Court ruling"]


@pytest.mark.parametrize(("text", "status"), [
    ("I'm sorry, but I can't help with that request.", "refusal"),
    ("As an AI language model, I cannot write these.", "refusal"),
    ("Policy memos and field reports are both common in this world.", "no_list_items"),
    ("", "no_list_items"),
])
def test_list_without_items_is_a_status_not_an_exception(text, status):
    assert parse_list(text) == {"status": status, "items": []}


def test_document_tags_in_any_case_and_truncation_is_rejected():
    ok = parse_document("<Scratchpad>plan</SCRATCHPAD>\n<Document>\nThe memo.\n</Document>")
    assert ok == {"status": "ok", "text": "The memo.", "scratchpad": "plan"}
    cut = parse_document("<scratchpad>plan</scratchpad>\n<document>The memo stops mid-sen")
    assert cut["status"] == "truncated" and cut["text"] is None
    assert parse_document("<scratchpad>plan</scratchpad> UNSUITABLE")["status"] == "unsuitable"
    # UNSUITABLE inside the scratchpad is thinking, not the answer
    assert parse_document("<scratchpad>is it UNSUITABLE? no</scratchpad> A memo without tags.")["status"] == "malformed"
    assert parse_document("I'm sorry, I cannot write that document.")["status"] == "refusal"
    assert parse_document("   ")["status"] == "empty"
    assert parse_document("<scratchpad>plan that never ends")["status"] == "malformed"


def test_revision_without_a_complete_document_keeps_the_draft():
    r = parse_revision("<critique>Too short.</critique>\n<document>Better but cut o")
    assert r == {"status": "truncated", "critique": "Too short.", "text": None}
    assert parse_revision("<CRITIQUE>Fine.</CRITIQUE><document>Final.</document>")["text"] == "Final."


def test_count_unparseable_sums_reasons_and_ignores_ok():
    recs = [{"status": "ok"}, {"status": "truncated"}, {"status": "truncated"}, {"status": "refusal"}, {}]
    assert count_unparseable(recs) == {"refusal": 1, "truncated": 2}


# Real completions ---------------------------------------------------------------------------
def _fixture_cases():
    path = FIXTURES / "smollm2_completions.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


PARSERS = {"doc_types": parse_doc_types, "ideas": parse_list, "documents": parse_document,
           "revisions": parse_revision}


@pytest.mark.parametrize("case", _fixture_cases(), ids=lambda c: c["name"])
def test_real_completion_parses_as_recorded(case):
    got = PARSERS[case["stage"]](case["completion"], truncated=case["hit_token_limit"])
    assert got["status"] == case["status"]
    for k, v in case.get("expect", {}).items():
        assert got[k] == v, k


def test_fixtures_cover_the_failure_kinds():
    kinds = {(c["stage"], c["status"]) for c in _fixture_cases()}
    assert ("documents", "truncated") in kinds
    assert any(stage in ("doc_types", "ideas") and status == "ok" for stage, status in kinds)
    assert len(kinds) >= 4


def test_cut_off_completion_loses_its_last_item_and_its_document():
    text = "Here are ideas:\n1. A vet's memo on fish stunning\n2. The fact that the ability to"
    assert parse_list(text)["items"][-1] == "The fact that the ability to"
    assert parse_list(text, truncated=True)["items"] == ["A vet's memo on fish stunning"]
    assert parse_list("1. Policy memo\n2. Field report\n\nSome closing words that ran", truncated=True)["items"] == [
        "Policy memo", "Field report"]  # the cut line is prose: every item stays
    assert parse_document("<scratchpad>I will plan the memo and then", truncated=True)["status"] == "truncated"
    assert parse_document("<scratchpad>p</scratchpad><document>Done.</document>", truncated=True)["status"] == "ok"
