"""The judge-free compassion probe: pairs file, margin arithmetic, determinism, run dirs.

`make_tiny_run` (used by the other eval tests too) builds a finished run directory with a
random-init two-layer Llama in `hf/` and writes `DONE`.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from midtrain.evals.probe import load_pairs, probe_margin, probe_run_dir
from midtrain.evals.probe.probe import continuation_scores
from midtrain.tracking import RunDir

ANIMA_DIMENSIONS = (
    "Moral Consideration",
    "Harm Minimization",
    "Sentience Acknowledgement",
    "Prejudice Avoidance",
    "Scope Sensitivity",
    "Evidence-Based Capacity Attribution",
    "Cautious Impact Consideration",
    "Actionability",
    "Contextual Welfare Salience",
    "Epistemic Humility",
    "Trade-off Transparency",
    "Novel Entity Precaution",
    "Control Questions",
)


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
    """The packaged tiny tokenizer when present, else a byte-level BPE trained on the pairs."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from midtrain.data.chat import ensure_chat_template
    from midtrain.paths import RESOURCES_DIR

    packaged = RESOURCES_DIR / "tiny_tokenizer"
    if (packaged / "tokenizer.json").is_file():
        return ensure_chat_template(AutoTokenizer.from_pretrained(packaged))
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|bos|>", "<|eos|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = [p.prompt + " " + p.compassionate + " " + p.dismissive for p in load_pairs()]
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>"
    )
    return ensure_chat_template(fast)


def tiny_model(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(cfg).eval()


def make_tiny_run(root: Path, name: str = "run", seed: int = 0) -> Path:
    """A finished run directory: `hf/` (model + tokenizer with chat template) and `DONE`."""
    run = RunDir(Path(root) / name)
    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed=seed)
    model.save_pretrained(run.hf)
    tok.save_pretrained(run.hf)
    run.update_metrics({"run_id": name, "stage": "midtrain"})
    run.mark_done()
    return run.path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("probe"))


def test_pairs_cover_the_13_dimensions_with_balanced_lengths():
    pairs = load_pairs()
    counts = Counter(p.dimension for p in pairs)
    assert set(counts) == set(ANIMA_DIMENSIONS)
    assert all(4 <= n <= 8 for n in counts.values()), counts
    assert len({p.id for p in pairs}) == len(pairs)
    for p in pairs:
        assert p.compassionate != p.dismissive
        # similar length, so the per-token normalisation is not doing all the work
        ratio = len(p.compassionate) / len(p.dismissive)
        assert 0.75 < ratio < 1.33, (p.id, ratio)


def test_load_pairs_names_file_row_and_field(tmp_path):
    bad = tmp_path / "pairs.jsonl"
    good = {"id": "a", "dimension": "Actionability", "prompt": "p", "compassionate": "c", "dismissive": "d"}
    bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "dismissive": ""}) + "\n")
    with pytest.raises(ValueError, match=r"pairs\.jsonl: row 2: .*dismissive"):
        load_pairs(bad)


def test_margin_is_mean_per_token_logprob_difference():
    """Recompute one pair's margin by hand, token by token, without batching."""
    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    pair = load_pairs()[0]
    result = probe_margin(model, tok, pairs=[pair], batch_size=2)

    def score(cont: str) -> float:
        p_ids = tok(pair.prompt)["input_ids"]
        c_ids = tok(" " + cont, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + c_ids])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)[0]
        total = sum(lp[len(p_ids) + i - 1, t].item() for i, t in enumerate(c_ids))
        return total / len(c_ids)

    expected = score(pair.compassionate) - score(pair.dismissive)
    assert result["margin"] == pytest.approx(expected, abs=1e-4)
    assert result["by_dimension"] == {pair.dimension: pytest.approx(expected, abs=1e-4)}
    assert result["pairs"] == 1
    assert result["accuracy"] == (1.0 if expected > 0 else 0.0)
    assert result["unit"] == "nats/token"


def test_batching_does_not_change_scores():
    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    items = [(p.prompt, p.compassionate) for p in load_pairs()[:6]]
    one = continuation_scores(model, tok, items, batch_size=1)
    many = continuation_scores(model, tok, items, batch_size=6)
    assert one == pytest.approx(many, abs=1e-4)


def test_probe_restores_train_mode_and_is_deterministic():
    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    model.train()
    a = probe_margin(model, tok)
    assert model.training
    b = probe_margin(model, tok)
    assert a == b
    assert a["pairs"] == len(load_pairs())
    assert set(a["by_dimension"]) == set(ANIMA_DIMENSIONS)
    assert 0.0 <= a["accuracy"] <= 1.0 and math.isfinite(a["margin"])


def test_probe_run_dir(tiny_run):
    result = probe_run_dir(tiny_run, device="cpu")
    assert result["pairs"] == len(load_pairs())
    assert math.isfinite(result["margin"])


def test_probe_run_dir_without_hf(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no hf/"):
        probe_run_dir(tmp_path)


def test_heldout_pairs_are_another_register_with_new_species_and_settings():
    from midtrain.evals.probe import HELDOUT_PAIRS_PATH

    held, orig = load_pairs(HELDOUT_PAIRS_PATH), load_pairs()
    counts = Counter(p.dimension for p in held)
    assert set(counts) == set(ANIMA_DIMENSIONS) and set(counts.values()) == {2}
    assert not {p.id for p in held} & {p.id for p in orig}
    for p in held:
        assert p.compassionate != p.dismissive
        ratio = len(p.compassionate) / len(p.dismissive)
        assert 0.75 < ratio < 1.33, (p.id, ratio)
        # dialogue or first person: quoted speech, a speaker tag, or the narrator's "I"/"my"
        text = " ".join((p.prompt, p.compassionate, p.dismissive))
        assert '"' in text or ":" in p.prompt or {"I", "my", "My", "me"} & set(p.prompt.split()), p.id


def test_heldout_pairs_share_less_wording_with_the_template_corpora_than_the_original_pairs():
    """Recall check: the held-out set names species and settings the template corpora never use."""
    from midtrain.evals.probe import HELDOUT_PAIRS_PATH, lexical_overlap
    from midtrain.generation.template import template_documents

    def overlap(universe, path=None):
        docs = [d["text"] for d in template_documents(universe, num_docs=72, seed=0)]
        return lexical_overlap(load_pairs(path), docs), docs

    orig_t, docs = overlap("animal_welfare")
    held_t, _ = overlap("animal_welfare", HELDOUT_PAIRS_PATH)
    orig_c, _ = overlap("urban_density")
    held_c, _ = overlap("urban_density", HELDOUT_PAIRS_PATH)
    assert held_t["pairs"] == 26 and held_t["documents"] == 72
    # Content words: the original pairs share more with the treatment corpus than with the
    # control corpus; the held-out pairs share less with the treatment corpus than the
    # original pairs do, and about as much with either corpus.
    assert orig_t["content_mean"] > orig_c["content_mean"]
    assert held_t["content_mean"] < orig_t["content_mean"]
    assert abs(held_t["content_mean"] - held_c["content_mean"]) < orig_t["content_mean"] - orig_c["content_mean"]
    for species in ("donkey", "hedgehog", "camel", "jellyfish", "tortoise"):
        assert not any(species in d.lower() for d in docs), species


def test_lexical_overlap_is_the_jaccard_index_with_the_nearest_document():
    from midtrain.evals.probe import ProbePair, lexical_overlap, word_set

    pair = ProbePair("x", "Actionability", "The hens", "feel pain.", "do not")
    docs = ["hens feel pain", "the hens do not feel pain at all", "zoning"]
    out = lexical_overlap([pair], docs)
    a = {"the", "hens", "feel", "pain", "do", "not"}
    j = [len(a & word_set(d)) / len(a | word_set(d)) for d in docs]
    assert j == [pytest.approx(3 / 6), pytest.approx(6 / 8), 0.0]
    assert out["nearest"]["x"] == [pytest.approx(0.75), 1]
    assert out["mean"] == out["max"] == pytest.approx(0.75)
    # Content words drop the stop words: {hens, feel, pain} against each document's content words.
    assert out["content_mean"] == pytest.approx(1.0)  # "hens feel pain" is exactly the pair's content
    assert word_set("Don't STOP, don't!") == {"don't", "stop"}
    with pytest.raises(ValueError, match="needs pairs and documents"):
        lexical_overlap([pair], [])


def test_probe_reports_every_pairs_margin_and_scores_extra_sets_on_one_load(tiny_run):
    from midtrain.evals.probe import HELDOUT_PAIRS_PATH

    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    pairs = load_pairs()[:4]
    r = probe_margin(model, tok, pairs=pairs)
    assert list(r["per_pair"]) == [p.id for p in pairs]
    assert sum(r["per_pair"].values()) / 4 == pytest.approx(r["margin"])
    both = probe_run_dir(tiny_run, device="cpu", extra_sets={"heldout": load_pairs(HELDOUT_PAIRS_PATH)})
    assert both["heldout"]["pairs"] == 26 and both["pairs"] == len(load_pairs())
    assert set(both["heldout"]["per_pair"]) == {p.id for p in load_pairs(HELDOUT_PAIRS_PATH)}


# ---------------------------------------------------------------------------
# Margin arithmetic over several pairs, the pairs file's checks, tokenisation at the
# prompt/continuation boundary, lexical overlap edge cases and how a run's model is loaded.


def _bos_tokenizer():
    """The tiny tokenizer, changed to put its BOS token before every encoded text."""
    import copy

    from tokenizers.processors import TemplateProcessing

    tok = copy.deepcopy(tiny_tokenizer())
    tok._tokenizer.post_processor = TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, tok.bos_token_id)]
    )
    assert tok("hens")["input_ids"][0] == tok.bos_token_id
    return tok


def _record_batches(model) -> list[int]:
    """Rows of every forward pass the model runs from now on."""
    rows: list[int] = []
    model.register_forward_pre_hook(lambda m, args, kwargs: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    return rows


def test_each_pairs_margin_is_its_own_compassionate_minus_dismissive_score():
    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    pairs = load_pairs()[:6]  # five "Moral Consideration" pairs and one "Harm Minimization" pair
    result = probe_margin(model, tok, pairs=pairs, batch_size=2)
    alone = {p.id: probe_margin(model, tok, pairs=[p], batch_size=2)["margin"] for p in pairs}
    assert result["per_pair"] == pytest.approx(alone, abs=1e-6)
    margins = list(result["per_pair"].values())
    assert result["margin"] == pytest.approx(sum(margins) / 6)
    mc = margins[:5]
    assert result["by_dimension"] == {
        "Moral Consideration": pytest.approx(sum(mc) / 5),
        "Harm Minimization": pytest.approx(margins[5]),
    }
    # accuracy: the share of pairs whose margin is strictly positive (here small margins, |m| < 1)
    assert result["accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 6)
    assert 0 < result["accuracy"] < 1 and all(abs(m) < 1 for m in margins)


def test_a_tied_pair_does_not_count_as_correct():
    from midtrain.evals.probe import ProbePair

    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    tie = ProbePair("tie", "Actionability", "The hens", "feel pain.", "feel pain.")
    result = probe_margin(model, tok, pairs=[tie], batch_size=1)
    assert result["margin"] == 0.0
    assert result["accuracy"] == 0.0


def test_probe_margin_batches_16_sequences_by_default_and_honours_batch_size():
    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    rows = _record_batches(model)
    pairs = load_pairs()[:9]  # 18 sequences
    probe_margin(model, tok, pairs=pairs)
    assert rows == [16, 2]
    rows.clear()
    probe_margin(model, tok, pairs=pairs, batch_size=5)
    assert rows == [5, 5, 5, 3]


def test_load_pairs_rejects_a_duplicate_id(tmp_path):
    row = {"id": "a", "dimension": "Actionability", "prompt": "p", "compassionate": "c", "dismissive": "d"}
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "prompt": "q"}) + "\n")
    with pytest.raises(ValueError, match=r"pairs\.jsonl: row 2: duplicate pair id 'a'"):
        load_pairs(path)


def test_load_pairs_errors_say_the_file_is_the_probe_pairs(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^probe pairs file not found: .*nope\.jsonl"):
        load_pairs(tmp_path / "nope.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"^probe pairs file is empty: .*empty\.jsonl"):
        load_pairs(empty)


def test_encode_gives_the_prompt_its_bos_and_the_continuation_none():
    from midtrain.evals.probe.probe import _encode

    tok = _bos_tokenizer()
    ids, n_cont = _encode(tok, "The hens", "feel pain.")
    prompt = tok("The hens", add_special_tokens=False)["input_ids"]
    cont = tok(" feel pain.", add_special_tokens=False)["input_ids"]
    assert ids == [tok.bos_token_id] + prompt + cont
    assert n_cont == len(cont)


def test_lexical_overlap_means_and_maxima_over_several_pairs():
    from midtrain.evals.probe import ProbePair, lexical_overlap

    p1 = ProbePair("a", "Actionability", "The hens", "feel pain.", "do not")  # {the hens feel pain do not}
    p2 = ProbePair("b", "Actionability", "Zoning", "rules", "apply")  # {zoning rules apply}
    docs = ["the hens do not feel pain at all", "zoning rules"]
    out = lexical_overlap([p1, p2], docs)
    assert out["nearest"] == {"a": [pytest.approx(6 / 8), 0], "b": [pytest.approx(2 / 3), 1]}
    assert out["mean"] == pytest.approx((6 / 8 + 2 / 3) / 2)
    assert out["max"] == pytest.approx(6 / 8)
    # content words: a {hens feel pain} vs {hens feel pain} = 1; b {zoning rules apply} vs {zoning rules} = 2/3
    assert out["content_mean"] == pytest.approx((1 + 2 / 3) / 2)
    assert out["content_max"] == pytest.approx(1.0)
    assert (out["pairs"], out["documents"]) == (2, 2)


def test_lexical_overlap_of_a_pair_without_content_words_is_zero():
    """Two empty word sets share nothing: Jaccard 0, not a perfect match (nor a division by zero)."""
    from midtrain.evals.probe import ProbePair, lexical_overlap

    pair = ProbePair("x", "Actionability", "It is", "what it is.", "not so")  # stop words only
    out = lexical_overlap([pair], ["and so it was", "1 2 3"])  # the second has no words at all
    assert out["content_mean"] == out["content_max"] == 0.0
    assert out["nearest"]["x"] == [pytest.approx(2 / 7), 0]  # {it so} of {it is what not so and was}
    assert lexical_overlap([ProbePair("n", "Actionability", "1", "2", "3")], ["4"])["nearest"]["n"] == [0.0, 0]


def test_load_hf_for_probe_defaults_to_float32_on_cpu_and_honours_dtype(tiny_run):
    from midtrain.evals.probe.probe import load_hf_for_probe

    hf = RunDir(tiny_run).hf
    model, tok = load_hf_for_probe(hf)  # no CUDA on the test machine: CPU, float32
    if not torch.cuda.is_available():
        assert next(model.parameters()).device.type == "cpu"
        assert model.dtype == torch.float32
    assert not model.training
    assert len(tok) == len(tiny_tokenizer())
    model, _ = load_hf_for_probe(hf, device="cpu", dtype="float64")
    assert model.dtype == torch.float64 and next(model.parameters()).device.type == "cpu"
    model, _ = load_hf_for_probe(hf, device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    with pytest.raises(FileNotFoundError, match="config.json missing"):
        load_hf_for_probe(tiny_run)


def test_load_hf_for_probe_defaults_to_cuda_in_bfloat16_when_cuda_is_available(tiny_run, monkeypatch):
    """Where CUDA is available the default is the GPU in bfloat16 (the move is recorded, not made)."""
    from transformers import PreTrainedModel

    from midtrain.evals.probe.probe import load_hf_for_probe

    moved: list = []

    def record_to(self, *args, **kwargs):
        moved.append(args[0] if args else kwargs.get("device"))
        return self

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(PreTrainedModel, "to", record_to)
    model, _ = load_hf_for_probe(RunDir(tiny_run).hf)
    assert moved[-1] == "cuda"
    assert model.dtype == torch.bfloat16
    moved.clear()
    model, _ = load_hf_for_probe(RunDir(tiny_run).hf, device="cpu")  # an explicit device wins
    assert moved[-1] == "cpu"
    assert model.dtype == torch.float32


def test_probe_run_dir_passes_pairs_batch_size_device_and_dtype_on(tiny_run, monkeypatch):
    import midtrain.evals.probe.probe as probe_module

    real = probe_module.load_hf_for_probe
    loaded: list = []

    def load_and_record(hf_dir, device=None, dtype=None):
        model, tok = real(hf_dir, device=device, dtype=dtype)
        loaded.append((model, _record_batches(model)))
        return model, tok

    monkeypatch.setattr(probe_module, "load_hf_for_probe", load_and_record)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the explicit device="cpu" must win
    pairs = load_pairs()
    r = probe_run_dir(tiny_run, pairs=pairs[:3], batch_size=4, device="cpu", dtype="float64",
                      extra_sets={"more": pairs[3:6]})
    (model, rows), = loaded
    assert (r["pairs"], r["more"]["pairs"]) == (3, 3)
    assert list(r["per_pair"]) == [p.id for p in pairs[:3]]
    assert rows == [4, 2, 4, 2]  # 6 sequences per set, 4 per pass
    assert model.dtype == torch.float64 and next(model.parameters()).device.type == "cpu"
    loaded.clear()
    probe_run_dir(tiny_run, pairs=pairs[:9], device="cpu")  # default: 16 sequences per pass
    assert loaded[0][1] == [16, 2]
