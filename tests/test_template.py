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


# The wording is package data, and a template corpus's identity hashes it ---------------------
def _edited_prose(tmp_path, old: str, new: str):
    from midtrain.generation import template

    text = template.PROSE_PATH.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "prose.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def test_the_wording_is_package_data():
    """pyproject's package data carries the wording file, so an installed package has it."""
    import tomllib

    from midtrain.generation import template
    from midtrain.paths import PACKAGE_DIR, REPO_ROOT

    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setuptools["package-data"]["midtrain"]
    shipped = {p for pattern in patterns for p in PACKAGE_DIR.glob(pattern)}
    assert template.PROSE_PATH in shipped
    assert template.PROSE_PATH.is_relative_to(PACKAGE_DIR)


def test_editing_the_wording_changes_the_corpus_and_its_identity(tmp_path, monkeypatch):
    """A change to the wording file changes the documents, the manifest's `template_hash` and
    the run identity of a config that trains on a template corpus; the Python source is not
    what is hashed."""
    from hydra import compose, initialize_config_dir

    from midtrain.generate import generate
    from midtrain.generation import template
    from midtrain.paths import CONF_DIR
    from midtrain.tracking.identity import config_hash

    def state(out_dir):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            train = compose("train", overrides=["corpus=template", "run_id=x", "run_dir=x"])
            gen = compose("generate", overrides=["generator=template", "num_docs=30", f"out_dir={out_dir}",
                                                 "progress=false"])
        manifest = generate(gen)
        return config_hash(train), manifest["template_hash"], (out_dir / "documents.jsonl").read_text()

    before = state(tmp_path / "a")
    assert before[1] == template.prose_hash()
    assert state(tmp_path / "b")[:2] == before[:2]  # stable while nothing changes
    edited = _edited_prose(tmp_path, "- 'Moreover, '", "- 'Furthermore, '")
    monkeypatch.setattr(template, "PROSE_PATH", edited)
    after = state(tmp_path / "c")
    assert after[0] != before[0] and after[1] != before[1]
    assert "Moreover, " in before[2] and "Moreover, " not in after[2] and "Furthermore, " in after[2]


@pytest.mark.parametrize("old, new, pattern", [
    ("    layout: [head, open, fact, evidence, practice, assist, extra, close]\n",
     "    layout: [head, open, facts, close]\n", r"doc_types\.policy memo: unknown section\(s\) \['facts'\]"),
    ("answer_open:\n", "answer_opening:\n", r"qa\.answer_open: expected a non-empty list of strings"),
])
def test_a_bad_wording_file_names_the_file_and_key(tmp_path, monkeypatch, old, new, pattern):
    from midtrain.generation import template

    monkeypatch.setattr(template, "PROSE_PATH", _edited_prose(tmp_path, old, new))
    with pytest.raises(ValueError, match=rf"prose\.yaml: {pattern}"):
        template_documents("animal_welfare", 2, seed=0)
