"""midtrain-generate: configs compose, template corpora, matched controls, filters, bad input, secrets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from midtrain.generate import generate
from midtrain.generation.filters import FilterConfig, apply_filters, near_duplicates, reject_reason
from midtrain.generation.template import template_documents
from midtrain.paths import CONF_DIR

GENERATORS = sorted(p.stem for p in (CONF_DIR / "generator").glob("*.yaml"))
UNIVERSES = sorted(p.stem for p in (CONF_DIR / "universe").glob("*.yaml"))


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("generate", overrides=["progress=false", *overrides], return_hydra_config=False)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# Configs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("generator", GENERATORS)
@pytest.mark.parametrize("universe", UNIVERSES)
def test_every_generator_and_universe_composes(generator, universe, tmp_path):
    cfg = _cfg(f"generator={generator}", f"universe={universe}", "num_docs=5", f"out_dir={tmp_path}")
    assert cfg.universe.name == universe and cfg.generator.name == generator
    if generator != "template":
        assert {"max_connections", "max_retries", "cache", "temperature"} <= set(cfg.generator)


@pytest.mark.parametrize("name", ["published_animal_welfare", "published_urban_density"])
def test_published_corpus_configs_use_the_corpus_keys_and_require_id_and_revision(name):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"corpus={name}"])
        template = compose("train", overrides=["corpus=template"])
    assert set(cfg.corpus) == set(template.corpus)
    assert cfg.corpus.source == "hf" and cfg.corpus.text_field == "output"
    assert cfg.corpus.hf_id.startswith("CompassioninMachineLearning/") and OmegaConf.is_missing(cfg.corpus, "revision")
    from midtrain.data.corpus import load_pool

    with pytest.raises(ValueError, match="corpus.revision is required for the hub dataset 'CompassioninMachineLearning/"):
        load_pool(cfg.corpus)


# Template corpora -------------------------------------------------------------------------
@pytest.mark.parametrize("universe", ["animal_welfare", "urban_density"])
def test_template_generator_writes_50_documents_and_a_manifest(universe, tmp_path):
    manifest = generate(_cfg("generator=template", f"universe={universe}", "num_docs=50", f"out_dir={tmp_path}"))
    docs = _jsonl(tmp_path / "documents.jsonl")
    assert len(docs) == 50 and all(d["universe"] == universe for d in docs)
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert manifest["smoke"] is True and manifest["source"] == "template-smoke"
    assert manifest["num_written"] == 50 and manifest["shortfall"] == 0
    assert sum(manifest["doc_types"].values()) == 50 and len(manifest["doc_types"]) >= 6
    assert manifest["tokens"]["n"] == 50 and 80 < manifest["tokens"]["mean"] < 400
    # Same config, same corpus; the documents are the template stream's first 50.
    assert generate(_cfg("generator=template", f"universe={universe}", "num_docs=50", f"out_dir={tmp_path}")) == manifest
    assert [d["text"] for d in docs] == [d["text"] for d in template_documents(universe, 50, 0)]


def test_console_script_runs_offline(tmp_path):
    exe = Path(sys.executable).with_name("midtrain-generate")
    if not exe.exists():
        pytest.skip("console script not installed")
    out = subprocess.run([str(exe), "generator=template", "universe=urban_density", "num_docs=50",
                          f"out_dir={tmp_path / 'c'}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(_jsonl(tmp_path / "c" / "documents.jsonl")) == 50
    assert (tmp_path / "c" / "manifest.json").exists()


def test_matched_control_copies_type_mix_and_length_profile(tmp_path):
    generate(_cfg("universe=animal_welfare", "num_docs=80", "seed=1", f"out_dir={tmp_path / 'aw'}"))
    unmatched = generate(_cfg("universe=urban_density", "num_docs=80", "seed=1", f"out_dir={tmp_path / 'u'}",
                              f"match_to={tmp_path / 'aw'}"))
    m = unmatched["match"]
    assert m["reference"] == str(tmp_path / "aw" / "documents.jsonl")
    assert m["doc_type_tv_distance"] == 0.0
    assert m["ks_tokens"]["statistic"] < 0.15 and m["ks_tokens"]["pvalue"] > 0.2
    assert m["reference_tokens"]["n"] == 80


def test_template_qa_mode_writes_sft_chat_file(tmp_path):
    manifest = generate(_cfg("mode=qa", "num_docs=12", f"out_dir={tmp_path}"))
    rows = _jsonl(tmp_path / "qa.jsonl")
    assert manifest["file"] == "qa.jsonl" and len(rows) == 12 and not (tmp_path / "documents.jsonl").exists()
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in rows)


# Filters -----------------------------------------------------------------------------------
def test_filters_reject_placeholders_lengths_and_near_duplicates():
    cfg = _cfg()
    patterns = tuple(cfg.filters.placeholder_patterns)
    f = FilterConfig(min_words=5, max_words=40, placeholder_patterns=patterns, dedup_threshold=0.8)
    base = "The harbour board met on Tuesday to review the dredging budget for the north channel and agreed to publish tide margins."
    texts = [base, "Dear [Name], " + base, "Please contact {company} about " + base, "Too short.",
             base + " " + base + " " + base, base.replace("margins.", "margins today."),
             "Figure [1] shows the ferry timetable for the winter months and the changes planned for spring crossings."]
    assert apply_filters(texts, f) == [None, "placeholder", "placeholder", "too_short", "too_long",
                                       "near_duplicate", None]
    assert reject_reason("Budget of XX dollars " + base, f) == "placeholder"


def test_near_duplicates_finds_edited_copies_only():
    docs = [d["text"] for d in template_documents("urban_density", 200, seed=0)]
    assert near_duplicates(docs, 0.8) == {}
    edited = docs[10].replace("the", "a", 1) + " One more closing sentence here."
    assert near_duplicates(docs + [edited], 0.8) == {200: 10}


def test_near_duplicate_candidates_come_from_datasketch_lsh(monkeypatch):
    datasketch = pytest.importorskip("datasketch")
    queried = []
    real_query = datasketch.MinHashLSH.query
    monkeypatch.setattr(datasketch.MinHashLSH, "query", lambda self, mh: queried.append(mh) or real_query(self, mh))
    docs = [d["text"] for d in template_documents("animal_welfare", 30, seed=1)]
    assert near_duplicates(docs + [docs[3] + " And one more line."], 0.8) == {30: 3}
    assert len(queried) == 31 and all(isinstance(m, datasketch.MinHash) for m in queried)


def test_near_duplicates_agree_with_exact_pairwise_jaccard():
    from midtrain.generation.filters import _shingles, jaccard

    base = [d["text"] for d in template_documents("urban_density", 40, seed=3)]
    words = base[5].split()
    variants = [" ".join(words[:-k]) for k in (1, 3, 8, 20, 40)]  # ever weaker copies of doc 5
    texts = base + variants
    sets = [_shingles(t, 5) for t in texts]
    expected, kept = {}, []
    for i, s in enumerate(sets):  # the quadratic reference: first kept text at or above 0.8
        j = next((k for k in kept if jaccard(s, sets[k]) >= 0.8), None)
        if j is None:
            kept.append(i)
        else:
            expected[i] = j
    assert expected  # some variants are near-duplicates, and the weakest ones are not
    assert len(expected) < len(variants)
    assert near_duplicates(texts, 0.8, num_perm=128, bands=32) == expected


# Bad input, before any request -------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "pattern"), [
    (["num_docs=0"], "num_docs must be a positive integer"),
    (["num_docs=-3"], "num_docs must be a positive integer"),
    (["universe.description=' '"], "'description' .*is empty"),
    (["universe.facts=[]"], "'facts' must be a non-empty list"),
    (["mode=poems"], "mode must be one of"),
    (["universe.template=null"], "no 'template' block"),
    (["filters.dedup_threshold=1.5"], "dedup_threshold"),
    (["generator=llm"], "generator.model is required"),
    (["generator=llm", "generator.model=gpt4"], "must be '<provider>/<model>'"),
])
def test_bad_input_is_a_clear_error(overrides, pattern, tmp_path):
    with pytest.raises(ValueError, match=pattern):
        generate(_cfg("num_docs=5", f"out_dir={tmp_path / 'c'}", *overrides))
    assert not (tmp_path / "c").exists()


def test_missing_required_keys_are_named(tmp_path):
    cfg = _cfg()
    assert OmegaConf.is_missing(cfg, "out_dir") and OmegaConf.is_missing(cfg, "num_docs")
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['out_dir', 'num_docs'\]"):
        generate(cfg)


def test_unknown_provider_fails_before_any_request(tmp_path):
    with pytest.raises(ValueError, match="nosuch/model.*not recognized"):
        generate(_cfg("generator=llm", "generator.model=nosuch/model", "num_docs=5", f"out_dir={tmp_path / 'c'}"))
    assert not (tmp_path / "c").exists()


def test_missing_api_key_is_named_not_printed(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY, which is not set"):
        generate(_cfg("generator=claude", "num_docs=5", f"out_dir={tmp_path / 'c'}"))
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("change", ["universe=urban_density", "seed=7", "mode=qa"])
def test_out_dir_holding_another_corpus_is_refused(change, tmp_path):
    generate(_cfg("num_docs=5", f"out_dir={tmp_path}"))
    key = change.split("=")[0]
    with pytest.raises(ValueError, match=f"already holds a corpus.*{key}"):
        generate(_cfg("num_docs=5", f"out_dir={tmp_path}", change))


def test_api_key_never_reaches_disk_or_logs(tmp_path, monkeypatch, caplog):
    inspect_model = pytest.importorskip("inspect_ai.model")
    secret = "sk-ant-test-0123456789abcdef"
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)

    def answer(input, tools, tool_choice, config):
        out = inspect_model.ModelOutput.from_content(model="mockllm", content="- an idea\n- another idea")
        out.usage = inspect_model.ModelUsage(input_tokens=5, output_tokens=5, total_tokens=10)
        return out

    model = inspect_model.get_model("mockllm/model", custom_outputs=answer, memoize=False)
    cfg = _cfg("generator=claude", f"+generator.model_args.api_key={secret}", "num_docs=2",
               "generator.num_doc_types=1", "generator.num_ideas=1", "generator.cache=false",
               "generator.revise=false", f"out_dir={tmp_path}", "max_shortfall_share=1.0")
    manifest = generate(cfg, model=model)
    assert manifest["generator"]["model_args"]["api_key"] == "<redacted>"
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "documents.jsonl" for p in files) and len(files) >= 5
    for p in files:
        assert secret not in p.read_text(), p
    assert secret not in caplog.text


def test_doc_tag_is_written_beside_the_text_and_trained_without_loss(tmp_path):
    from midtrain.data.datamodule import document_segments
    from midtrain.data.packing import IGNORE_INDEX
    from midtrain.models.build import build_tokenizer
    from tests.conftest import compose_cfg, smoke_overrides

    plain_m = generate(_cfg("generator=template", "num_docs=6", f"out_dir={tmp_path / 'plain'}"))
    tagged_m = generate(_cfg("generator=template", "num_docs=6", f"out_dir={tmp_path / 'tagged'}",
                             "doc_tag='<DOCTAG> '"))
    plain, tagged = _jsonl(tmp_path / "plain" / "documents.jsonl"), _jsonl(tmp_path / "tagged" / "documents.jsonl")
    assert plain_m["doc_tag"] == "" and tagged_m["doc_tag"] == "<DOCTAG> "
    assert [d["text"] for d in tagged] == [d["text"] for d in plain]  # the text itself is untouched
    assert all("doc_prefix" not in d for d in plain) and all(d["doc_prefix"] == "<DOCTAG> " for d in tagged)

    def segments(folder, *extra):
        cfg = compose_cfg("train", smoke_overrides(tmp_path, tmp_path / folder / "documents.jsonl")
                          + ["corpus.num_docs=6", *extra])
        segs, _ = document_segments(cfg, build_tokenizer(cfg.model))
        return segs

    tok = build_tokenizer(compose_cfg("train", smoke_overrides(tmp_path)).model)
    tag_ids = tok(["<DOCTAG> "], add_special_tokens=False)["input_ids"][0]
    a, b = segments("plain"), segments("tagged")
    assert [len(s) - len(t) for s, t in zip(b, a)] == [len(tag_ids)] * 6
    for s, t in zip(b, a):
        head = len(s) - len(t) + (1 if tok.bos_token_id is not None else 0)
        assert s.labels[:head] == [IGNORE_INDEX] * head  # BOS and tag: no loss
        assert [x for x in s.labels if x != IGNORE_INDEX] == [x for x in t.labels if x != IGNORE_INDEX]
    # corpus.doc_prefix, when set, overrides the generator's tag
    c = segments("tagged", "corpus.doc_prefix='<T> '")
    t_ids = tok(["<T> "], add_special_tokens=False)["input_ids"][0]
    assert [len(s) - len(t) for s, t in zip(c, a)] == [len(t_ids)] * 6


def test_match_profile_reads_a_file_or_a_folder_and_skips_blank_lines(tmp_path):
    from midtrain.generation.match import load_match

    corpus = tmp_path / "aw"
    corpus.mkdir()
    lines = [json.dumps({"text": "one two three", "doc_type": "memo"}), "",
             json.dumps({"text": "four five"}), json.dumps({"text": "six", "doc_type": ""})]
    (corpus / "documents.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    by_folder, by_file = load_match(corpus), load_match(corpus / "documents.jsonl")
    assert by_folder == by_file
    assert by_file.reference == str(corpus / "documents.jsonl")
    assert by_file.doc_types == ["memo", "unknown", "unknown"]  # after the blank line too
    assert by_file.words == [3, 2, 1]
    assert by_file.doc_type_counts == {"memo": 1, "unknown": 2}


def test_match_profile_names_the_file_and_line_of_a_bad_record(tmp_path):
    from midtrain.generation.match import load_match

    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"text": "ok"}) + "\n\n" + json.dumps({"text": 3}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path}:3: not a document record with a 'text' string"):
        load_match(path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="holds no documents"):
        load_match(empty)
    with pytest.raises(FileNotFoundError, match="no .*documents.jsonl"):
        load_match(tmp_path / "nowhere")


# Filters and matching, called directly on small hand-made inputs -------------------------------
def _pairs_at_04():
    """12 pairs of 60-word texts whose second text keeps the first 36 words: 5-gram Jaccard 0.4,
    close enough to a 0.3 threshold that which pairs the LSH offers depends on seed and banding."""
    import random

    rng = random.Random(0)
    texts = []
    for d in range(12):
        words = [f"w{d}x{rng.randrange(10**6)}" for _ in range(60)]
        texts += [" ".join(words), " ".join(words[:36] + [f"v{d}y{j}" for j in range(24)])]
    return texts


def test_length_stats_profile_values_and_empty():
    from midtrain.generation.filters import length_stats

    stats = length_stats([12, 7, 30, 18, 3, 25, 9, 41, 16, 22, 5])
    assert stats == {"n": 11, "mean": 17.09, "std": 11.14, "min": 3, "p10": 5.0, "median": 16.0,
                     "p90": 30.0, "max": 41, "total": 188}
    assert list(stats) == ["n", "mean", "std", "min", "p10", "median", "p90", "max", "total"]
    assert length_stats([2, 3]) == {"n": 2, "mean": 2.5, "std": 0.5, "min": 2, "p10": 2.1, "median": 2.5,
                                    "p90": 2.9, "max": 3, "total": 5}
    assert length_stats([]) == {"n": 0}


def test_filter_config_accepts_the_bounds_and_rejects_what_is_outside():
    assert FilterConfig(min_words=0, max_words=0).max_words == 0
    assert FilterConfig(min_words=7, max_words=7, dedup_threshold=1.0).dedup_threshold == 1.0
    assert FilterConfig(dedup_threshold=None, placeholder_patterns=(r"\[Name\]",)).dedup_threshold is None
    assert FilterConfig(num_perm=64, bands=16).num_perm == 64
    for kwargs in ({"min_words": -1}, {"min_words": 10, "max_words": 9}):
        with pytest.raises(ValueError, match="need 0 <= min_words <= max_words"):
            FilterConfig(**kwargs)
    for bad in (0, 0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=rf"dedup_threshold must be in \(0, 1\] or null, got {bad}"):
            FilterConfig(dedup_threshold=bad)
    with pytest.raises(ValueError, match=r"num_perm \(100\) must be a multiple of filters.bands \(32\)"):
        FilterConfig(num_perm=100, bands=32)
    with pytest.raises(ValueError, match=r"invalid regex '\['"):
        FilterConfig(placeholder_patterns=(r"\{x\}", "["))


def test_reject_reason_word_bounds_are_inclusive_and_empty_comes_first():
    f = FilterConfig(min_words=3, max_words=5, placeholder_patterns=(r"\[Name\]",))
    assert reject_reason(None, f) == "empty" and reject_reason(" \n\t", f) == "empty"
    assert reject_reason("one two", f) == "too_short"
    assert reject_reason("one two three", f) is None
    assert reject_reason("one two three four five", f) is None
    assert reject_reason("one two three four five six", f) == "too_long"
    assert reject_reason("Dear [Name], thanks", f) == "placeholder"
    assert reject_reason("Dear Name, thanks", f) is None
    assert reject_reason("[Name]", f) == "too_short"  # the length bounds are checked first


def test_shingles_are_lowercased_word_ngrams_and_short_texts_give_one():
    from midtrain.generation.filters import _shingles

    assert _shingles("The Cat, sat on-the MAT!", 3) == {"the cat sat", "cat sat on", "sat on the", "on the mat"}
    assert _shingles("Alpha beta gamma", 3) == {"alpha beta gamma"}
    assert _shingles("Alpha beta", 3) == {"alpha beta"}
    assert _shingles("", 5) == {""}


def test_jaccard_of_sets_and_of_two_empty_sets():
    from midtrain.generation.filters import jaccard

    assert jaccard({"a", "b", "c"}, {"b", "c", "d", "e"}) == 0.4
    assert jaccard(set(), {"a"}) == 0.0 and jaccard({"a"}, set()) == 0.0
    assert jaccard(set(), set()) == 1.0
    assert jaccard({"a"}, {"a"}) == 1.0


def test_near_duplicates_threshold_is_inclusive_and_every_duplicate_is_reported():
    a = "the harbour board met on tuesday to review the dredging budget for the north channel"
    b = "a ferry timetable for the winter months lists the changes planned for spring crossings"
    assert near_duplicates([], 0.8) == {}
    assert near_duplicates([a, b], 0.8) == {}
    # exact copies have Jaccard 1.0, which meets a threshold of 1.0
    assert near_duplicates([a, a.upper(), b, a, b], 1.0) == {1: 0, 3: 0, 4: 2}


def test_near_duplicates_default_shingle_size_is_five():
    from midtrain.generation.filters import _shingles, jaccard

    words = [f"tok{i}" for i in range(100)]
    edited = words[:50] + ["changed"] + words[51:]
    texts = [" ".join(words), " ".join(edited)]
    j5 = jaccard(_shingles(texts[0], 5), _shingles(texts[1], 5))
    j6 = jaccard(_shingles(texts[0], 6), _shingles(texts[1], 6))
    assert j6 < j5
    threshold = (j5 + j6) / 2
    assert near_duplicates(texts, threshold) == {1: 0}
    assert near_duplicates(texts, threshold, shingle_size=6) == {}


def test_near_duplicate_candidates_are_reproducible_with_the_default_sketch():
    texts = _pairs_at_04()
    default = near_duplicates(texts, 0.3)
    # seed 0, 128 permutations in 32 bands: the same LSH candidates as the explicit call
    assert default == near_duplicates(texts, 0.3, shingle_size=5, num_perm=128, bands=32, seed=0)
    assert default == {5: 4, 9: 8, 13: 12, 15: 14, 17: 16, 19: 18, 23: 22}
    # another seed offers other candidates; every pair found is a true pair either way
    other = near_duplicates(texts, 0.3, seed=1)
    assert other == {1: 0, 7: 6, 9: 8, 11: 10}
    assert all(i == j + 1 and j % 2 == 0 for i, j in (default | other).items())


def test_apply_filters_passes_seed_and_sketch_settings_to_dedup():
    texts = _pairs_at_04()
    cfg = FilterConfig(min_words=1, max_words=100, dedup_threshold=0.3)

    def reasons(dup, extra=()):
        return ["near_duplicate" if i in dup else None for i in range(len(texts))] + list(extra)

    assert apply_filters(texts + ["short"], FilterConfig(min_words=2, max_words=100, dedup_threshold=0.3)) == \
        reasons(near_duplicates(texts, 0.3, seed=0), ["too_short"])
    assert apply_filters(texts, cfg) == reasons({5, 9, 13, 15, 17, 19, 23})
    assert apply_filters(texts, cfg, seed=1) == reasons({1, 7, 9, 11})
    other = FilterConfig(min_words=1, max_words=100, dedup_threshold=0.3, shingle_size=6, num_perm=64, bands=16)
    assert apply_filters(texts, other, seed=3) == reasons(near_duplicates(texts, 0.3, 6, 64, 16, seed=3))


def test_apply_filters_without_dedup_keeps_duplicates():
    text = "one two three four five six seven"
    cfg = FilterConfig(min_words=3, max_words=10, dedup_threshold=None)
    assert apply_filters([text, text, "one", None], cfg) == [None, None, "too_short", "empty"]
    assert apply_filters([text, text, "one", None], FilterConfig(min_words=3, max_words=10)) == \
        [None, "near_duplicate", "too_short", "empty"]


def test_count_reasons_counts_rejections_sorted_by_reason():
    from midtrain.generation.filters import count_reasons

    counts = count_reasons([None, "too_short", "near_duplicate", None, "too_short", "empty", "too_short"])
    assert counts == {"empty": 1, "near_duplicate": 1, "too_short": 3}
    assert list(counts) == ["empty", "near_duplicate", "too_short"]
    assert count_reasons([None, None]) == {} and count_reasons(iter(["x"])) == {"x": 1}


def test_match_compare_type_mix_distance_and_ks_statistic():
    from midtrain.generation.match import MatchProfile, ks_distance

    ref = MatchProfile("ref", ["a", "a", "b"], [1, 2, 3], [3, 5, 8])
    # reference a 2/3, b 1/3; control a 1/3, c 2/3 -> TV = (1/3 + 1/3 + 2/3) / 2
    out = ref.compare([2, 5, 9, 11, 4, 6, 7], {"a": 1, "c": 2})
    assert out["doc_type_tv_distance"] == 0.6667
    assert out["ks_tokens"] == {"statistic": 0.2857, "pvalue": pytest.approx(0.9833333333333332)}
    assert out["reference"] == "ref" and out["reference_tokens"] == {
        "n": 3, "mean": 5.33, "std": 2.05, "min": 3, "p10": 3.4, "median": 5.0, "p90": 7.4, "max": 8, "total": 16}
    # a one-document control of a type the reference holds a third of
    one = ref.compare([3], {"a": 1})
    assert one["doc_type_tv_distance"] == 0.3333 and one["ks_tokens"]["statistic"] == 0.6667
    assert ref.compare([3], {"b": 1})["doc_type_tv_distance"] == 0.6667
    assert ref.compare([3, 5, 8], {"b": 1, "a": 2})["doc_type_tv_distance"] == 0.0
    assert MatchProfile("r", ["a"], [1], [3]).compare([3], {"a": 1})["doc_type_tv_distance"] == 0.0
    assert ks_distance([1, 2, 3], [1, 2, 3, 4, 5, 6, 7])["statistic"] == 0.5714
