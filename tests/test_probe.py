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
