"""Diversity guards of the LLM pipeline: seeded details per slot, per-type quotas, corpus statistics."""

from __future__ import annotations

import pytest

from midtrain.generation.variety import distinct_n, diversity_stats, repeated_names, slot_details
from tests.generation_checks import generate_anyway, jsonl
from tests.test_generate_llm import Scripted, _cfg, _field


def test_slot_details_depend_on_universe_seed_and_slot_only():
    assert slot_details("aw", 0, 3) == slot_details("aw", 0, 3)
    cast = [slot_details("aw", 0, i)["person"] for i in range(40)]
    assert len(set(cast)) >= 35  # forty slots, (almost) forty different people
    assert slot_details("aw", 1, 3) != slot_details("aw", 0, 3) != slot_details("ud", 0, 3)


def test_writing_prompts_carry_each_slots_details_and_can_go_without(tmp_path):
    script = Scripted()
    generate_anyway(_cfg(tmp_path / "v"), model=script.model())
    writes = [p for p in script.prompts if "Write one document" in p]
    drafts = {d["slot"]: d for d in jsonl(tmp_path / "v" / "stages" / "documents.jsonl")}
    assert len(writes) == len(drafts) == 14
    for slot, d in drafts.items():
        assert d["details"] == slot_details("test_world", 0, slot)
        assert sum(d["details"]["person"] in p for p in writes) >= 1
    plain = Scripted()
    generate_anyway(_cfg(tmp_path / "p", "generator.variety=false"), model=plain.model())
    assert not any("use these details" in p for p in plain.prompts)
    assert {_field(p, "idea") for p in plain.prompts if "Write one document" in p} == {
        _field(p, "idea") for p in writes}


def test_doc_type_quota_caps_one_type_and_counts_the_rest(tmp_path):
    # Every slot of the scripted model has the same type: a 0.5 quota keeps 2 of 4.
    manifest = generate_anyway(_cfg(tmp_path / "q", "generator.doc_type_quota=0.5"), model=Scripted().model())
    docs = jsonl(tmp_path / "q" / "documents.jsonl")
    assert len(docs) == 2 and manifest["shortfall"] == 2
    assert manifest["rejected"]["doc_type_quota"] == 2  # the two later good drafts
    assert manifest["candidates"] == manifest["passed_filters"] + sum(manifest["rejected"].values())


@pytest.mark.parametrize("quota", [0, 1.5, -0.1])
def test_doc_type_quota_out_of_range_is_refused(tmp_path, quota):
    with pytest.raises(ValueError, match="doc_type_quota"):
        generate_anyway(_cfg(tmp_path / "x", f"generator.doc_type_quota={quota}"), model=Scripted().model())


def test_manifest_reports_duplicate_rate_over_the_texts_checked(tmp_path):
    manifest = generate_anyway(_cfg(tmp_path / "d"), model=Scripted().model())
    div = manifest["diversity"]
    # 14 drafts: 4 unsuitable or malformed, 4 too short or with a placeholder; 6 reach the check, 2 are copies.
    assert div["near_duplicates"] == manifest["rejected"]["near_duplicate"] == 2
    assert div["duplicate_rate"] == round(2 / 6, 4)


def test_distinct_n_and_repeated_names():
    assert distinct_n(["a b c d"], 1) == 1.0 and distinct_n(["a a a a"], 1) == 0.25
    assert distinct_n(["a b a b"], 2) == round(2 / 3, 4)
    texts = ["Then Dr. Elena Kresch met the board. The Board of Kresch agreed.",
             "A report by Elena Kresch on fish, with Tomas Lind.", "Nothing here. Monday was quiet."]
    top = repeated_names(texts)
    assert top[0] == {"name": "Kresch", "documents": 2, "occurrences": 3}
    assert {"name": "Elena", "documents": 2, "occurrences": 2} in top
    names = {t["name"] for t in top}
    assert not names & {"Then", "The", "A", "Nothing", "Monday"}  # sentence openers and stop words
    stats = diversity_stats(texts, {"near_duplicate": 1}, deduplicated=4)
    assert stats["duplicate_rate"] == 0.25 and stats["top_names"] == top
