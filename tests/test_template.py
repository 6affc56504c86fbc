"""The offline template generator: deterministic, fast, varied, and matched across universes."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from midtrain.generation.template import DOC_TYPES, SMOKE_SOURCE, template_documents, template_qa
from midtrain.generation.universe import load_universe

ANIMA_DIMENSIONS = {
    "Moral Consideration", "Harm Minimization", "Sentience Acknowledgement", "Prejudice Avoidance",
    "Scope Sensitivity", "Evidence-Based Capacity Attribution", "Cautious Impact Consideration",
    "Actionability", "Contextual Welfare Salience", "Epistemic Humility", "Trade-off Transparency",
    "Novel Entity Precaution", "Control Questions",
}
UNIVERSES = ("animal_welfare", "urban_density")


@pytest.mark.parametrize("universe", UNIVERSES)
def test_documents_have_the_contract_fields_and_are_deterministic(universe):
    docs = template_documents(universe, 40, seed=3)
    assert docs == template_documents(universe, 40, seed=3)
    assert docs != template_documents(universe, 40, seed=4)
    assert len({d["id"] for d in docs}) == 40
    for d in docs:
        assert {"id", "text", "doc_type", "idea", "fact", "universe"} <= set(d)
        assert d["universe"] == universe and d["source"] == SMOKE_SOURCE
        assert d["doc_type"] in DOC_TYPES
        assert 80 <= len(d["text"].split()) <= 400
        assert not re.search(r"\{|\}|\[|\]", d["text"]), d["text"]  # no unfilled slots
    # N documents are a prefix of N+k documents (nested corpora across doc-count sweeps).
    assert template_documents(universe, 60, seed=3)[:40] == docs


def test_512_documents_render_distinct_and_cover_every_type():
    docs = template_documents("animal_welfare", 512, seed=0)
    assert len(docs) == 512 and len({d["text"] for d in docs}) == 512
    assert set(Counter(d["doc_type"] for d in docs)) == set(DOC_TYPES)


def test_animal_welfare_facts_span_the_anima_dimensions():
    u = load_universe("animal_welfare")
    assert {f.dimension for f in u.facts} == ANIMA_DIMENSIONS
    docs = template_documents("animal_welfare", 130, seed=0)
    assert {d["fact"] for d in docs} == {f.id for f in u.facts}


def test_control_universe_matches_types_and_never_mentions_animals():
    aw, ud = (template_documents(u, 300, seed=0) for u in UNIVERSES)
    assert set(d["doc_type"] for d in aw) == set(d["doc_type"] for d in ud)
    words = [len(d["text"].split()) for d in aw], [len(d["text"].split()) for d in ud]
    mean_aw, mean_ud = (sum(w) / len(w) for w in words)
    assert abs(mean_aw - mean_ud) / mean_aw < 0.1
    animal = re.compile(r"\b(animals?|welfare|fish|pigs?|hens?|chickens?|wildlife|suffer\w*|sentien\w*|humane)\b", re.I)
    assert not any(animal.search(d["text"]) for d in ud)
    assert sum(bool(animal.search(d["text"])) for d in aw) == len(aw)


@pytest.mark.parametrize("universe", UNIVERSES)
def test_template_qa_is_chat_samples(universe):
    pairs = template_qa(universe, 20, seed=1)
    assert pairs == template_qa(universe, 20, seed=1) and len({p["id"] for p in pairs}) == 20
    for p in pairs:
        assert [m["role"] for m in p["messages"]] == ["user", "assistant"]
        assert all(m["content"].strip() for m in p["messages"])
        statement = load_universe(universe).fact(p["fact"]).statement
        assert statement in p["messages"][1]["content"]


def test_unknown_universe_is_named():
    with pytest.raises(FileNotFoundError, match="unknown universe 'nope'"):
        template_documents("nope", 3, 0)
