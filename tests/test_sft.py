"""Instruction tuning: loss only on assistant tokens, in the batch the model actually receives."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from midtrain.data.packing import IGNORE_INDEX
from midtrain.data.sft import alpaca_to_messages, load_conversations, load_instruct_rows, rows_to_conversations, sft_segment
from midtrain.models.build import build_tokenizer
from midtrain.train import train
from tests.conftest import compose_cfg, smoke_overrides

QA = [
    {"instruction": f"Name a colour number {i}.", "input": "" if i % 2 else "Be brief.", "output": f"Blue, answer {i}."}
    for i in range(24)
]


@pytest.fixture
def alpaca_jsonl(tmp_path):
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in QA))
    return path


class RecordModelInputs(pl.Callback):
    """Wraps the HF model's forward to keep exactly what it was called with."""

    def __init__(self):
        self.calls: list[dict] = []

    def on_fit_start(self, trainer, pl_module):
        model = pl_module.model
        original = model.forward

        def forward(*args, **kwargs):
            self.calls.append({k: v.detach().clone() for k, v in kwargs.items() if torch.is_tensor(v)})
            return original(*args, **kwargs)

        model.forward = forward


def test_model_receives_labels_only_on_assistant_tokens(tmp_path, alpaca_jsonl):
    cfg = compose_cfg("train", smoke_overrides(tmp_path) + [
        "objective=sft", "stage=instruct", "instruct=demo_alpaca", f"instruct.path={alpaca_jsonl}",
        "instruct.samples=20", "data.seq_len=128", "data.batch_size=2",
    ])
    rec = RecordModelInputs()
    train(cfg, callbacks=[rec])
    tok = build_tokenizer(cfg.model)
    assert rec.calls, "the model was never called"
    answers_seen = 0
    for call in rec.calls:
        ids, labels, pos = call["input_ids"], call["labels"], call["position_ids"]
        for r in range(ids.shape[0]):
            starts = (pos[r] == 0).nonzero().flatten().tolist() + [ids.shape[1]]
            for a, b in zip(starts, starts[1:]):
                seg_ids, seg_labels = ids[r, a:b], labels[r, a:b]
                if (seg_labels == IGNORE_INDEX).all():
                    continue  # padding
                text = tok.decode(seg_ids, skip_special_tokens=False)
                learned = tok.decode(seg_ids[seg_labels != IGNORE_INDEX], skip_special_tokens=False)
                prompt_part = text.split("### Assistant:\n")[0]
                answer = text.split("### Assistant:\n")[1]
                # Every learned token is the assistant's answer (and its EOS); no prompt token is learned.
                assert learned.strip() == answer.strip(), (learned, answer)
                assert "Name a colour" in prompt_part and "Name a colour" not in learned
                assert "<|eos|>" in learned
                kept = seg_labels != IGNORE_INDEX
                assert torch.equal(seg_labels[kept], seg_ids[kept])  # labels are the tokens themselves
                answers_seen += 1
    assert answers_seen >= 16


def test_sft_segment_masks_system_and_user_turns():
    tok = build_tokenizer(compose_cfg("train").model)
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Again?"},
        {"role": "assistant", "content": "Hello again."},
    ]
    seg = sft_segment(tok, msgs)
    learned = tok.decode([t for t, l in zip(seg.input_ids, seg.labels) if l != IGNORE_INDEX])
    assert "Hello." in learned and "Hello again." in learned
    assert "terse" not in learned and "Hi?" not in learned and "Again?" not in learned
    assert seg.input_ids[0] == tok.bos_token_id and seg.labels[0] == IGNORE_INDEX


def _instruct_cfg(path, n, seed=0):
    return OmegaConf.create({"source": "jsonl", "path": str(path), "hf_id": None, "revision": None,
                             "split": "train", "format": "auto", "samples": n, "seed": seed})


def test_instruction_samples_are_nested_subsets(alpaca_jsonl):
    small = load_conversations(_instruct_cfg(alpaca_jsonl, 5, seed=1))
    large = load_conversations(_instruct_cfg(alpaca_jsonl, 12, seed=1))
    assert large[:5] == small
    assert load_conversations(_instruct_cfg(alpaca_jsonl, 5, seed=2)) != small


def test_missing_field_names_field_and_first_bad_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c"}, {"instruction": "d"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"row 2 is missing the Alpaca field 'output'"):
        rows_to_conversations(rows, "auto", str(path))
    with pytest.raises(ValueError, match=r"row 1 has neither 'messages' nor Alpaca fields"):
        rows_to_conversations([{"prompt": "x"}], "auto", "data.jsonl")
    with pytest.raises(ValueError, match=r"row 1 is missing the field 'messages'"):
        rows_to_conversations([{"prompt": "x"}], "messages", "data.jsonl")


def test_chat_template_that_cannot_render_is_a_clear_error():
    tok = build_tokenizer(compose_cfg("train").model)
    tok.chat_template = "{{ raise_exception('no system role') }}"
    with pytest.raises(ValueError, match="chat template cannot render instruction sample 3"):
        sft_segment(tok, [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], 3)


def test_instruction_data_from_a_local_hf_dataset(tmp_path):
    import datasets

    datasets.Dataset.from_list(QA).save_to_disk(str(tmp_path / "alpaca_ds"))
    cfg = OmegaConf.create({"source": "hf", "path": None, "hf_id": str(tmp_path / "alpaca_ds"), "revision": None,
                            "split": "train", "format": "alpaca", "samples": 6, "seed": 0})
    convs = load_conversations(cfg)
    assert len(convs) == 6 and all(c[1]["content"].startswith("Blue, answer") for c in convs)
    hub = OmegaConf.merge(cfg, {"hf_id": "tatsu-lab/alpaca"})
    with pytest.raises(ValueError, match="instruct.revision is required"):
        load_conversations(hub)


def test_demo_instruction_set_is_current_and_sized():
    from midtrain.data.corpus import read_jsonl
    from midtrain.resources.instruct import make_demo_alpaca

    assert make_demo_alpaca.main(["--check"]) == 0
    rows = read_jsonl("package:instruct/demo_alpaca.jsonl")
    assert 150 <= len(rows) <= 200
    rows_to_conversations(rows, "alpaca", "demo_alpaca.jsonl")


def test_an_alpaca_row_is_one_user_turn_and_one_assistant_turn():
    row = {"instruction": "  Add 2 and 3. ", "input": " Show the work. ", "output": " 5 "}
    assert alpaca_to_messages(row) == [{"role": "user", "content": "Add 2 and 3.\n\nShow the work."},
                                       {"role": "assistant", "content": " 5 "}]
    for no_input in ({}, {"input": ""}, {"input": None}):
        assert alpaca_to_messages({"instruction": "Add. ", "output": "5", **no_input})[0] == {"role": "user", "content": "Add."}


def test_the_format_is_taken_from_the_first_row_and_messages_keep_only_role_and_content():
    alpaca = [{"output": "five", "instruction": "Add."}, {"instruction": "Sub.", "output": "one", "input": None}]
    assert rows_to_conversations(alpaca, "auto", "d") == [alpaca_to_messages(r) for r in alpaca]
    assert rows_to_conversations([{"output": "five", "instruction": "Add."}], "alpaca", "d") == rows_to_conversations(alpaca[:1], "auto", "d")
    chat = [{"messages": [{"role": "system", "content": "s", "name": "x"}, {"role": "user", "content": "q"},
                          {"role": "assistant", "content": "a", "weight": 0}]}]
    expected = [[{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]
    assert rows_to_conversations(chat, "auto", "d") == rows_to_conversations(chat, "messages", "d") == expected
    with pytest.raises(ValueError, match=r"instruct.format='xml'"):
        rows_to_conversations(alpaca, "xml", "d")


@pytest.mark.parametrize("rows,fmt,pattern", [
    ([{"instruction": "a", "output": "b"}, {"instruction": 3, "output": "b"}], "alpaca", r"d: row 2 is missing the Alpaca field 'instruction'"),
    ([{"instruction": "a", "output": "b", "input": 4}], "alpaca", r"d: row 1: field 'input' must be a string"),
    ([{"messages": []}], "messages", r"row 1 is missing the field 'messages'"),
    ([{"messages": "hi"}], "messages", r"row 1 is missing the field 'messages'"),
    ([{"messages": [{"role": "assistant", "content": "a"}]}, {"messages": [{"role": "tool", "content": "t"}]}], "auto",
     r"d: row 2, message 0: expected"),
    ([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]}], "auto", r"row 1, message 1: expected"),
    ([{"messages": [{"role": "user", "content": "q"}, "assistant: a"]}], "auto", r"row 1, message 1: expected"),
    ([{"messages": [{"role": "assistant", "content": "a"}]}, {"messages": [{"role": "user", "content": "q"}]}], "auto",
     r"d: row 2 has no assistant message"),
])
def test_bad_instruction_rows_name_the_row_and_the_message(rows, fmt, pattern):
    with pytest.raises(ValueError, match=pattern):
        rows_to_conversations(rows, fmt, "d")


def test_instruction_sources_need_their_setting_and_name_their_origin(tmp_path, alpaca_jsonl):
    base = {"source": "jsonl", "path": None, "hf_id": None, "revision": None, "split": "train", "samples": 2, "seed": 0}
    rows, origin = load_instruct_rows(OmegaConf.create({**base, "path": str(alpaca_jsonl)}))
    assert rows == QA and origin == str(alpaca_jsonl)
    with pytest.raises(FileNotFoundError, match="instruction data file not found"):
        load_instruct_rows(OmegaConf.create({**base, "path": str(tmp_path / "none.jsonl")}))
    for cfg, pattern in [({}, "instruct.path is required"), ({"source": "hf"}, "instruct.hf_id is required"),
                         ({"source": "template"}, "universe is required"), ({"source": "s3"}, "instruct.source='s3'")]:
        with pytest.raises(ValueError, match=pattern):
            load_instruct_rows(OmegaConf.create({**base, **cfg}))
    from midtrain.generation.template import template_qa

    rows, origin = load_instruct_rows(OmegaConf.create({**base, "source": "template", "universe": "animal_welfare", "pool_size": 5}))
    assert rows == template_qa("animal_welfare", num_pairs=5, seed=0) and origin == "template-qa:animal_welfare"
    # No `format` key: detected from the rows.
    convs = load_conversations(OmegaConf.create({**base, "path": str(alpaca_jsonl)}))
    assert len(convs) == 2 and all([m["role"] for m in c] == ["user", "assistant"] for c in convs)


def _learned_spans(tok, seg):
    spans, cur = [], []
    for t, label in zip(seg.input_ids + [None], seg.labels + [IGNORE_INDEX]):
        if label != IGNORE_INDEX:
            assert label == t
            cur.append(t)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    return spans


MSGS = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again?"},
        {"role": "assistant", "content": "Bye."}]


def test_exactly_the_assistant_turns_and_their_end_of_turn_are_learned():
    tok = build_tokenizer(compose_cfg("train").model)
    seg = sft_segment(tok, MSGS)
    assert tok.decode(seg.input_ids) == ("<|bos|>Be terse.\n\n### User:\nHi?\n\n### Assistant:\nHello.<|eos|>\n\n"
                                         "### User:\nAgain?\n\n### Assistant:\nBye.<|eos|>\n\n")
    assert _learned_spans(tok, seg) == ["Hello.<|eos|>\n\n", "Bye.<|eos|>\n\n"]
    assert len(seg.labels) == len(seg.input_ids)


def test_bos_is_added_once_and_only_when_the_tokenizer_has_one():
    tok = build_tokenizer(compose_cfg("train").model)
    plain = sft_segment(tok, MSGS)
    tok.chat_template = "{{ bos_token }}" + tok.chat_template  # a template that writes BOS itself
    own = sft_segment(tok, MSGS)
    assert own.input_ids == plain.input_ids and own.labels == plain.labels
    tok = build_tokenizer(compose_cfg("train").model)
    tok.bos_token = None
    none = sft_segment(tok, MSGS)
    assert none.input_ids == plain.input_ids[1:] and none.labels == plain.labels[1:]


def test_a_template_that_does_not_render_turns_as_prefixes_is_refused():
    tok = build_tokenizer(compose_cfg("train").model)
    tok.chat_template = "{{ messages | length }}:{% for m in messages %}{{ m['content'] }} {% endfor %}"
    with pytest.raises(ValueError, match="instruction sample 4: the chat template does not render turns as a prefix"):
        sft_segment(tok, MSGS, 4)


def test_a_tokenizer_keeps_its_own_chat_template_and_gets_the_default_only_without_one():
    from types import SimpleNamespace

    from midtrain.data.chat import DEFAULT_CHAT_TEMPLATE, ensure_chat_template

    own = SimpleNamespace(chat_template="{{ messages }}")
    assert ensure_chat_template(own) is own and own.chat_template == "{{ messages }}"
    for tok in (SimpleNamespace(chat_template=None), SimpleNamespace(chat_template=""), SimpleNamespace()):
        assert ensure_chat_template(tok).chat_template == DEFAULT_CHAT_TEMPLATE


@pytest.mark.parametrize("row,missing", [({"instruction": "a"}, "output"), ({"output": "b"}, "instruction"),
                                         ({"instruction": "a", "input": "x"}, "output")])
def test_one_alpaca_field_is_enough_to_detect_the_format_and_the_other_is_named(row, missing):
    with pytest.raises(ValueError, match=rf"d: row 1 is missing the Alpaca field '{missing}'"):
        rows_to_conversations([row], "auto", "d")


def test_loading_names_the_file_in_its_errors_and_keeps_the_configured_format(tmp_path, alpaca_jsonl):
    with pytest.raises(ValueError, match=rf"instruction data {alpaca_jsonl} \(instruct.samples\): asked for 30 items "
                                         r"but only 24 are available"):
        load_conversations(_instruct_cfg(alpaca_jsonl, 30))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n" + json.dumps({"instruction": "c"}) + "\n")
    with pytest.raises(ValueError, match=rf"^{bad}: row \d is missing the Alpaca field 'output'"):
        load_conversations(_instruct_cfg(bad, 2))
    # The configured format is used, not detected: Alpaca rows are not chat messages.
    cfg = _instruct_cfg(alpaca_jsonl, 3)
    cfg.format = "messages"
    with pytest.raises(ValueError, match=rf"^{alpaca_jsonl}: row 1 is missing the field 'messages'"):
        load_conversations(cfg)


def test_a_hub_instruction_set_is_loaded_at_its_pinned_revision_and_split(monkeypatch):
    calls = []

    def fake_rows(hf_id, revision, split, what):
        calls.append((hf_id, revision, split, what))
        return [{"instruction": "a", "output": "b"}]

    monkeypatch.setattr("midtrain.data.sft.load_hf_rows", fake_rows)
    cfg = OmegaConf.create({"source": "hf", "path": None, "hf_id": "org/instruct-set", "revision": "0123abcd",
                            "split": "validation", "samples": 1, "seed": 0})
    rows, origin = load_instruct_rows(cfg)
    assert calls == [("org/instruct-set", "0123abcd", "validation", "instruct")]
    assert rows == [{"instruction": "a", "output": "b"}] and origin == "org/instruct-set"


def test_a_sample_without_an_index_is_named_sample_0():
    tok = build_tokenizer(compose_cfg("train").model)
    tok.chat_template = "{{ raise_exception('no') }}"
    with pytest.raises(ValueError, match=r"cannot render instruction sample 0: no"):
        sft_segment(tok, [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])


class _CharTokenizer:
    """Characters as ids; like many tokenizers it adds BOS and EOS when asked for special tokens."""

    bos_token_id, eos_token_id = 1, 2

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False):
        text = "".join(f"[{m['role']}]{m['content']}" for m in messages)
        return text + ("[assistant]" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=True):
        ids = [ord(c) for c in text]
        return {"input_ids": [1] + ids + [2] if add_special_tokens else ids}


def test_the_rendered_text_is_tokenized_without_the_tokenizers_own_special_tokens():
    seg = sft_segment(_CharTokenizer(), [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    text = "[user]hi[assistant]yo"
    assert seg.input_ids == [1] + [ord(c) for c in text]  # one BOS, added once, and no EOS of the tokenizer's
    assert seg.labels == [IGNORE_INDEX] * (1 + len("[user]hi[assistant]")) + [ord("y"), ord("o")]
