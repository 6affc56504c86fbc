"""`generator.kind` picks how documents are written (template | llm); `generator.name` is only
the preset's readable label."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir

from midtrain.generate import generate
from midtrain.paths import CONF_DIR

GENERATORS = sorted(p.stem for p in (CONF_DIR / "generator").glob("*.yaml"))


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("generate", overrides=["progress=false", "universe=animal_welfare", *overrides])


@pytest.mark.parametrize("generator", GENERATORS)
def test_every_generator_preset_names_its_kind(generator, tmp_path):
    cfg = _cfg(f"generator={generator}", "num_docs=2", f"out_dir={tmp_path}")
    assert cfg.generator.kind == ("template" if generator == "template" else "llm")


def test_a_renamed_template_preset_still_renders_templates(tmp_path):
    """The label is free: a template generator called anything writes the offline smoke corpus."""
    manifest = generate(_cfg("generator=template", "generator.name=smoke-aw", "num_docs=4", f"out_dir={tmp_path}"))
    assert manifest["smoke"] is True and manifest["source"] == "template-smoke" and manifest["num_written"] == 4
    assert manifest["generator"]["name"] == "smoke-aw"
    assert json.loads((tmp_path / "generation.json").read_text())["generator"] == "smoke-aw"


def test_an_llm_preset_named_template_is_still_an_llm(tmp_path):
    """A name that happens to be `template` does not switch an LLM generator off: it needs its model."""
    with pytest.raises(ValueError, match="generator.model is required for LLM generation"):
        generate(_cfg("generator=llm", "generator.name=template", "num_docs=2", f"out_dir={tmp_path}"))


def test_an_unknown_kind_is_named_before_anything_is_written(tmp_path):
    out = tmp_path / "c"
    with pytest.raises(ValueError, match=r"generator.kind='markov': expected one of \['llm', 'template'\]"):
        generate(_cfg("generator=template", "generator.kind=markov", "num_docs=2", f"out_dir={out}"))
    assert not out.exists()


def test_a_new_kind_is_one_entry_of_the_kind_table(tmp_path, monkeypatch):
    """A kind registered in `GENERATOR_KINDS` alone is checked before anything is written,
    writes the corpus and labels its manifest: nothing else in midtrain-generate names kinds."""
    from midtrain import generate as gen

    checked = []

    def check(cfg, universe):
        checked.append(universe.name)
        if cfg.generator.name == "refused":
            raise ValueError("generator.name='refused': the echo kind refuses it")

    def write(cfg, universe, filters, match, model, out_dir):
        assert model is None and match is None and out_dir == tmp_path / "c"
        docs = [{"text": f"Echo {i}: {f.statement}", "fact": f.id, "doc_type": "echo"}
                for i, f in enumerate(universe.facts[: int(cfg.num_docs)])]
        return docs, {"candidates": len(docs), "rejected": {}, "passed_filters": len(docs)}

    monkeypatch.setitem(gen.GENERATOR_KINDS, "echo", gen.GeneratorKind(check=check, write=write, source="echo"))
    out = tmp_path / "c"
    with pytest.raises(ValueError, match="the echo kind refuses it"):
        generate(_cfg("generator=template", "generator.kind=echo", "generator.name=refused", "num_docs=2",
                      f"out_dir={out}"))
    assert not out.exists()
    manifest = generate(_cfg("generator=template", "generator.kind=echo", "generator.name=echo", "num_docs=2",
                             f"out_dir={out}"))
    assert checked == ["animal_welfare", "animal_welfare"]
    assert manifest["source"] == "echo" and manifest["smoke"] is False and manifest["num_written"] == 2
    assert manifest["doc_types"] == {"echo": 2}
    lines = (out / "documents.jsonl").read_text().splitlines()
    assert [json.loads(line)["text"].split(":")[0] for line in lines] == ["Echo 0", "Echo 1"]
