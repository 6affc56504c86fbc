"""The data schedule under the settings real runs use: accumulation above 1, several epochs,
several ranks. Each test pins one behaviour a plausible one-line change would break."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from midtrain.data.datamodule import PackedDataModule, ResumableLoader, _MicroBatches
from midtrain.data.packing import PackedRows
from midtrain.models.build import build_tokenizer


def _numbered_rows(n: int, seq_len: int = 4) -> PackedRows:
    """Rows whose every token is the row's own index, so a batch names the rows it holds."""
    ids = torch.arange(n).unsqueeze(1).repeat(1, seq_len)
    return PackedRows(ids, ids.clone(), torch.arange(seq_len).repeat(n, 1), torch.full((n,), seq_len))


def _row_ids(batch: dict) -> list[int]:
    return batch["input_ids"][:, 0].tolist()


def _prepared(cfg, world_size: int = 1) -> PackedDataModule:
    return PackedDataModule(cfg, build_tokenizer(cfg.model), world_size=world_size).prepare()


def test_accumulation_counts_every_rank(smoke_cfg):
    # 4 rows x 64 tokens per micro-batch per rank; 2 ranks; 1536 tokens per optimizer step
    # -> 3 micro-batches per rank per step (6 if the world size were left out).
    cfg = smoke_cfg("data.seq_len=64", "data.tokens_per_step=1536")
    one = _prepared(cfg, world_size=1).schedule
    two = _prepared(cfg, world_size=2).schedule
    assert one.accumulate == 6
    assert two.accumulate == 3
    # Each rank sees half of the rows (a short last global batch kept), in whole optimizer steps.
    rows = len(_prepared(cfg).rows)
    assert two.micro_batches == -(-rows // (4 * 2))
    assert two.steps == -(-two.micro_batches // 3)
    assert one.micro_batches == -(-rows // 4)


def test_each_epoch_has_its_own_shuffle(smoke_cfg):
    dm = _prepared(smoke_cfg("data.seq_len=64", "data.epochs=3"))
    n = len(dm.rows)
    order = dm.row_order()
    assert order.shape == (3 * n,)
    epochs = order.reshape(3, n)
    for e in epochs:
        assert sorted(e.tolist()) == list(range(n))  # every row once per epoch
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])
    assert not np.array_equal(epochs[0], np.arange(n))  # shuffled, not in packing order
    # The order is a function of the seed alone.
    assert np.array_equal(order, dm.row_order())
    other = _prepared(smoke_cfg("data.seq_len=64", "data.epochs=3", "seed=1"))
    assert not np.array_equal(order, other.row_order())


def test_two_ranks_get_disjoint_shards_that_cover_every_row():
    rows = _numbered_rows(23)
    order = np.random.default_rng(0).permutation(23)
    shards = [_MicroBatches(rows, order, batch_size=3, rank=r, world=2) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == -(-23 // 6)  # both ranks take every step
    seen = [[i for b in range(len(s)) for i in _row_ids(s[b])] for s in shards]
    assert all(len(ids) == len(set(ids)) for ids in seen)  # no row twice within a rank
    assert not set(seen[0]) & set(seen[1])  # no row on both ranks
    assert sorted(seen[0] + seen[1]) == list(range(23))  # no row dropped
    # Global batch k is rank 0's micro-batch k, then rank 1's; the short last one (5 rows) is
    # dealt round-robin, so the two micro-batches differ by at most one row.
    full = 23 // 6
    interleaved = [i for b in range(full) for s in shards for i in _row_ids(s[b])]
    assert interleaved == order[: full * 6].tolist()
    tail = order[full * 6 :].tolist()
    assert _row_ids(shards[0][full]) == tail[0::2] and _row_ids(shards[1][full]) == tail[1::2]


def test_a_rank_with_no_rows_left_gets_a_masked_filler_row():
    rows = _numbered_rows(7)
    order = np.arange(7)
    # 7 rows, 3 per micro-batch, 4 ranks: one full global batch would need 12; the 7 rows
    # are dealt 2, 2, 2, 1 - and with 2 rows left, ranks 2 and 3 get a filler row.
    shards = [_MicroBatches(rows, order[:2], batch_size=3, rank=r, world=4) for r in range(4)]
    batches = [s[0] for s in shards]
    assert [b["_rows"] for b in batches] == [[0], [1], [], []]
    for b in batches[2:]:
        assert b["_loss_tokens"] == 0 and b["_real_tokens"] == 0
        assert (b["labels"] == -100).all() and b["input_ids"].shape == (1, 4)
    assert batches[0]["_loss_tokens"] == 4


def test_datamodule_shards_by_the_trainer_rank(smoke_cfg):
    cfg = smoke_cfg("data.seq_len=64", "data.batch_size=2", "data.epochs=2")
    dm = _prepared(cfg, world_size=2)
    seen = []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(global_rank=rank, global_step=0)
        loader = dm.train_dataloader()
        assert len(loader) == dm.schedule.micro_batches
        seen.append([b["input_ids"] for b in loader])
    assert len(seen[0]) == len(seen[1]) == dm.schedule.micro_batches
    for a, b in zip(*seen):
        assert not torch.equal(a, b)


def test_resume_position_counts_micro_batches_not_optimizer_steps():
    rows = _numbered_rows(20)
    order = np.arange(20)
    trainer = SimpleNamespace(global_step=3)
    loader = ResumableLoader(_MicroBatches(rows, order, 2, 0, 1), accumulate=2, trainer=trainer)
    state = loader.state_dict()
    # 3 optimizer steps of 2 micro-batches: 6 micro-batches were consumed.
    assert state == {"micro_batches_consumed": 6, "world_size": 1}
    resumed = ResumableLoader(_MicroBatches(rows, order, 2, 0, 1), accumulate=2, trainer=None)
    resumed.load_state_dict(state)
    assert len(resumed) == 10  # the epoch still reports all of its batches
    batches = [_row_ids(b) for b in resumed]
    assert batches[0] == [12, 13]  # the 7th micro-batch comes next
    assert batches == [[2 * i, 2 * i + 1] for i in range(6, 10)]
    fresh = ResumableLoader(_MicroBatches(rows, order, 2, 0, 1), accumulate=2, trainer=None)
    fresh.load_state_dict({})  # a checkpoint without the key starts at the beginning
    assert fresh._skip_sampler.skip == 0
    assert [_row_ids(b) for b in fresh][0] == [0, 1]
    assert fresh.state_dict() == {"micro_batches_consumed": 0, "world_size": 1}  # no trainer yet: nothing consumed


def test_a_short_micro_batch_is_kept_on_one_device_and_on_several(smoke_cfg):
    cfg = smoke_cfg("data.seq_len=1024", "data.batch_size=64")
    one = _prepared(cfg, world_size=1)
    assert len(one.rows) < 64 and one.schedule.micro_batches == 1
    two = _prepared(cfg, world_size=2)
    assert two.schedule.micro_batches == 1
    n = len(two.rows)
    with pytest.raises(ValueError, match=rf"only {n} packed rows of 1024 tokens for {n + 1} devices"):
        _prepared(cfg, world_size=n + 1)


def test_resume_under_another_world_size_is_refused():
    rows = _numbered_rows(20)
    two = ResumableLoader(_MicroBatches(rows, np.arange(20), 2, 0, 2), accumulate=1,
                          trainer=SimpleNamespace(global_step=3))
    state = two.state_dict()
    assert state == {"micro_batches_consumed": 3, "world_size": 2}
    one = ResumableLoader(_MicroBatches(rows, np.arange(20), 2, 0, 1), accumulate=1, trainer=None)
    with pytest.raises(ValueError, match=r"written by 2 rank\(s\) and this run has 1"):
        one.load_state_dict(state)
    # a checkpoint from before the world size was recorded still resumes
    one.load_state_dict({"micro_batches_consumed": 3})
    assert [_row_ids(b) for b in one][0] == [6, 7]


def _mix(path, ratio, seed=0) -> str:
    return f"+corpus.mix={{source:jsonl,path:{path},text_field:text,ratio:{ratio},seed:{seed},name:web}}"


def test_mixed_in_documents_follow_their_own_seed_and_reach_the_share(smoke_cfg, tmp_path):
    from tests.conftest import write_docs

    web = write_docs(tmp_path / "web.jsonl", 300, seed=9)
    dm = _prepared(smoke_cfg(_mix(web, 0.25)))
    info = dm.info
    main_tokens = info["real_tokens"] * (1 - info["mix_token_share"])
    assert info["mix_documents"] > 0 and info["documents"] == 40 + info["mix_documents"]  # all packed
    # Documents are added until the mixed-in share first reaches the ratio, and no further.
    assert 0.25 <= info["mix_token_share"] < 0.25 + 200 / main_tokens
    assert info["pieces"] >= info["documents"]
    again = _prepared(smoke_cfg(_mix(web, 0.25)))
    assert torch.equal(again.rows.input_ids, dm.rows.input_ids)
    other = _prepared(smoke_cfg(_mix(web, 0.25, seed=1)))
    assert not torch.equal(other.rows.input_ids, dm.rows.input_ids)
    plain = _prepared(smoke_cfg())
    assert "mix_token_share" not in plain.info and plain.info["mix_documents"] == 0


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.5, 1.5])
def test_mix_ratio_outside_the_open_interval_is_refused(smoke_cfg, tmp_path, ratio):
    from tests.conftest import write_docs

    web = write_docs(tmp_path / "web.jsonl", 5, seed=9)
    with pytest.raises(ValueError, match=rf"corpus.mix.ratio={ratio}: the mixed-in share of tokens must be in \(0, 1\)"):
        _prepared(smoke_cfg(_mix(web, ratio)))


def test_a_mix_pool_too_small_for_the_ratio_is_refused(smoke_cfg, tmp_path):
    from tests.conftest import write_docs

    web = write_docs(tmp_path / "web.jsonl", 3, seed=9)
    with pytest.raises(ValueError, match=r"corpus.mix: 3 documents give \d+ tokens, fewer than the \d+ needed for ratio 0.9"):
        _prepared(smoke_cfg(_mix(web, 0.9)))


def test_documents_become_bos_text_eos_with_the_prefix_unlabelled(smoke_cfg):
    from midtrain.data.datamodule import document_segments

    cfg = smoke_cfg("corpus.doc_prefix='<DOCTAG> '")
    tok = build_tokenizer(cfg.model)
    segs, info = document_segments(cfg, tok)
    prefix = tok("<DOCTAG> ", add_special_tokens=False)["input_ids"]
    assert info["documents"] == 40 and info["mix_documents"] == 0 and len(segs) == 40
    for s in segs:
        assert s.input_ids[0] == tok.bos_token_id and s.input_ids[-1] == tok.eos_token_id
        assert s.input_ids[1 : 1 + len(prefix)] == prefix
        assert s.labels[: 1 + len(prefix)] == [-100] * (1 + len(prefix))
        assert s.labels[1 + len(prefix) :] == s.input_ids[1 + len(prefix) :]


def test_prepare_reports_the_schedule_and_rejects_bad_settings(smoke_cfg):
    dm = _prepared(smoke_cfg("data.seq_len=64", "data.epochs=2", "data.tokens_per_step=512"))
    s = dm.schedule
    assert (s.accumulate, s.micro_batches) == (2, -(-2 * len(dm.rows) // 4))
    assert {k: dm.info[k] for k in ("epochs", "micro_batches", "accumulate_grad_batches", "steps")} == {
        "epochs": 2, "micro_batches": s.micro_batches, "accumulate_grad_batches": 2, "steps": -(-s.micro_batches // 2)}
    assert dm.info["documents_split"] > 0 and dm.info["rows"] == len(dm.rows)
    for override, pattern in [
        ("data.batch_size=0", "data.batch_size=0: must be at least 1"),
        ("data.epochs=0", "data.epochs=0: must be at least 1"),
        ("data.max_doc_tokens=2048", "data.max_doc_tokens=2048 is larger than data.seq_len=512"),
        ("objective=rl", "objective='rl': expected lm or sft"),
    ]:
        with pytest.raises(ValueError, match=re.escape(pattern)):
            _prepared(smoke_cfg(override))


def test_tiny_token_budgets_still_take_one_micro_batch_per_step(smoke_cfg):
    dm = _prepared(smoke_cfg("data.seq_len=64", "data.tokens_per_step=10"))
    assert dm.schedule.accumulate == 1 and dm.schedule.steps == dm.schedule.micro_batches


def test_micro_batches_carry_positions_labels_and_real_token_counts(smoke_cfg):
    dm = _prepared(smoke_cfg("data.seq_len=64", "data.batch_size=3"))
    dm.trainer = None
    loader = dm.train_dataloader()
    batches = list(loader)
    order = dm.row_order()
    assert len(batches) == len(loader) == -(-len(dm.rows) // 3)  # one device keeps the short last one
    assert batches[-1]["input_ids"].shape[0] == len(dm.rows) - 3 * (len(batches) - 1)
    first = torch.as_tensor(order[:3])
    assert torch.equal(batches[0]["input_ids"], dm.rows.input_ids[first])
    assert torch.equal(batches[0]["labels"], dm.rows.labels[first])
    assert torch.equal(batches[0]["position_ids"], dm.rows.position_ids[first])
    assert batches[0]["_real_tokens"] == int(dm.rows.real_tokens[first].sum())
    assert sum(b["_real_tokens"] for b in batches) == dm.info["real_tokens"]


def test_instruction_samples_are_packed_and_a_bad_one_is_named(tmp_path):
    import json

    from midtrain.data.sft import load_conversations
    from tests.conftest import compose_cfg, smoke_overrides

    path = tmp_path / "qa.jsonl"
    rows = [{"instruction": f"Say {w}.", "input": "", "output": f"{w}."} for w in ("one", "two", "three", "four", "five")]
    bad_at = 2  # the third sample drawn (instruct.seed=0) cannot be rendered
    rows[int(np.random.default_rng(0).permutation(5)[bad_at])]["instruction"] = "Say BAD."
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose_cfg("train", smoke_overrides(tmp_path) + [
        "objective=sft", "stage=instruct", "instruct=demo_alpaca", f"instruct.path={path}", "instruct.samples=5",
        "data.seq_len=64", "data.batch_size=1",
    ])
    tok = build_tokenizer(cfg.model)
    dm = PackedDataModule(cfg, tok).prepare()
    assert dm.info["samples"] == 5 and dm.info["documents"] == 5
    # A chat template that cannot render one sample: the error names that sample's index.
    assert "BAD" in load_conversations(cfg.instruct)[bad_at][0]["content"]
    tok.chat_template = ("{% for m in messages %}{% if 'BAD' in m['content'] %}{{ raise_exception('no') }}"
                         "{% endif %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ValueError, match=rf"cannot render instruction sample {bad_at}: no"):
        PackedDataModule(cfg, tok).prepare()


# ---------------------------------------------------------------------------------------------
# The schedule and the row order computed directly on numbered rows (no tokenizer, no corpus).

from omegaconf import OmegaConf  # noqa: E402

from midtrain.data.datamodule import Schedule  # noqa: E402
from midtrain.preserve import ExtraData  # noqa: E402


def _on_rows(n_rows: int, world_size: int = 1, max_steps=None, seed: int = 0, **data) -> PackedDataModule:
    cfg = OmegaConf.create({"seed": seed, "objective": "lm", "trainer": {"max_steps": max_steps},
                            "data": {"batch_size": 2, "seq_len": 4, "epochs": 1, "num_workers": 0, **data}})
    dm = PackedDataModule(cfg, tokenizer=None, world_size=world_size)
    dm.rows = _numbered_rows(n_rows)
    return dm


def test_the_schedule_of_whole_passes_counts_rows_batches_ranks_and_epochs():
    assert _on_rows(10)._schedule() == Schedule(micro_batches=5, accumulate=1, steps=5, epochs=1, rows=None)
    # 10 rows x 3 epochs in micro-batches of 4 on one rank: 8 micro-batches, 3 per step -> 3 steps.
    dm = _on_rows(10, batch_size=4, epochs=3, tokens_per_step=48)
    assert dm._schedule() == Schedule(8, 3, 3, 3, None)
    assert dm.info == {"tokens_per_step_requested": 48, "tokens_per_step": 48}
    # Two ranks share each global batch: 30 rows / (4 x 2) -> 4 micro-batches per rank.
    assert _on_rows(10, world_size=2, batch_size=4, epochs=3)._schedule() == Schedule(4, 1, 4, 3, None)
    # One row per micro-batch and exactly one row per rank are allowed.
    assert _on_rows(3, batch_size=1)._schedule() == Schedule(3, 1, 3, 1, None)
    assert _on_rows(2, world_size=2, batch_size=1)._schedule() == Schedule(1, 1, 1, 1, None)


@pytest.mark.parametrize("tokens,accumulate,got", [(8, 1, 8), (3, 1, 8), (20, 2, 16), (28, 4, 32), (40, 5, 40)])
def test_tokens_per_step_rounds_to_whole_micro_batches(tokens, accumulate, got):
    # A micro-batch is 2 rows x 4 tokens = 8 tokens on one rank.
    dm = _on_rows(10, tokens_per_step=tokens)
    s = dm._schedule()
    assert s.accumulate == accumulate and s.steps == -(-5 // accumulate)
    assert dm.info == {"tokens_per_step_requested": tokens, "tokens_per_step": got}


def test_tokens_per_step_counts_every_rank_and_the_row_length():
    # 2 ranks x 2 rows x 16 tokens = 64 tokens per micro-batch step: 192 tokens -> 3.
    dm = _on_rows(24, world_size=2, seq_len=16, tokens_per_step=192)
    assert dm._schedule().accumulate == 3
    assert dm.info["tokens_per_step"] == 192


def test_max_steps_sets_the_steps_and_repeats_the_rows_as_often_as_needed():
    # 7 steps x 2 micro-batches x 2 rows = 28 rows of 10: three passes, the last one cut.
    dm = _on_rows(10, max_steps=7, tokens_per_step=16)
    assert dm._schedule() == Schedule(micro_batches=14, accumulate=2, steps=7, epochs=3, rows=28)
    # Two ranks take twice the rows per step: 3 steps x 2 rows x 2 ranks = 12 rows -> 2 passes.
    assert _on_rows(10, world_size=2, max_steps=3)._schedule() == Schedule(3, 1, 3, 2, 12)
    # Fewer steps than one pass: still one pass, cut short.
    assert _on_rows(10, max_steps=2)._schedule() == Schedule(2, 1, 2, 1, 4)
    # A pass that ends exactly at the last step.
    assert _on_rows(10, max_steps=5)._schedule() == Schedule(5, 1, 5, 1, 10)
    # Without max_steps (or with a config lacking the trainer node) the data decides.
    assert _on_rows(10, max_steps=0)._schedule().rows is None
    dm = _on_rows(10)
    del dm.cfg["trainer"]
    assert dm._schedule() == Schedule(5, 1, 5, 1, None)


def test_the_row_order_under_max_steps_is_the_passes_cut_at_the_last_step():
    dm = _on_rows(10, max_steps=7, tokens_per_step=16, seed=3)
    dm.schedule = dm._schedule()
    order = dm.row_order()
    assert order.shape == (28,)
    passes = [np.random.default_rng([3, e]).permutation(10) for e in range(3)]
    assert np.array_equal(order, np.concatenate(passes)[:28])
    dm.trainer = None
    loader = dm.train_dataloader()
    assert len(loader) == 14
    assert [i for b in loader for i in _row_ids(b)] == order.tolist()


def test_rows_a_strategy_packed_apart_are_permuted_among_themselves_and_placed_by_it():
    # 10 rows, the last 3 packed apart; the strategy puts them first.
    dm = _on_rows(10, epochs=2, seed=5)
    dm.extra = ExtraData(segments=[], place=lambda main, extra: np.concatenate([extra, main]))
    dm.extra_rows = 3
    dm.schedule = dm._schedule()
    order = dm.row_order()
    assert order.shape == (20,)
    want = []
    for e in range(2):
        rng = np.random.default_rng([5, e])
        main = rng.permutation(7)
        want += (7 + rng.permutation(3)).tolist() + main.tolist()
    assert order.tolist() == want
    for e in range(2):
        epoch = order[10 * e : 10 * (e + 1)].tolist()
        assert sorted(epoch[:3]) == [7, 8, 9] and sorted(epoch[3:]) == list(range(7))


def test_a_filler_row_is_the_first_row_of_the_order_with_every_label_masked():
    rows = _numbered_rows(5)
    order = np.array([3, 1])
    filler = _MicroBatches(rows, order, batch_size=2, rank=2, world=3)[0]
    assert filler["input_ids"].tolist() == [[3, 3, 3, 3]]
    assert filler["position_ids"].tolist() == [[0, 1, 2, 3]]
    assert filler["labels"].tolist() == [[-100] * 4] and filler["labels"].dtype == torch.long
    assert filler["_rows"] == [] and filler["_loss_tokens"] == 0 and filler["_real_tokens"] == 0
    one = _MicroBatches(rows, order, batch_size=2, rank=1, world=3)[0]
    assert one["_rows"] == [1] and one["_loss_tokens"] == 4 and one["_real_tokens"] == 4
    assert one["labels"].tolist() == [[1, 1, 1, 1]]


def test_micro_batch_counts_round_up_over_ranks_and_rows():
    rows = _numbered_rows(13)
    assert len(_MicroBatches(rows, np.arange(13), batch_size=2, rank=0, world=3)) == 3   # 13 / 6 -> 3
    assert len(_MicroBatches(rows, np.arange(12), batch_size=2, rank=0, world=3)) == 2   # exactly 2
    assert len(_MicroBatches(rows, np.arange(13), batch_size=4, rank=0, world=1)) == 4
    # Rank 1 of 3 with 2 rows each: rows 2-3 of each global batch of 6.
    mb = _MicroBatches(rows, np.arange(12), batch_size=2, rank=1, world=3)
    assert mb.row_indices(0).tolist() == [2, 3] and mb.row_indices(1).tolist() == [8, 9]
    last = _MicroBatches(rows, np.arange(12), batch_size=2, rank=2, world=3)
    assert last.row_indices(1).tolist() == [10, 11]


# ---------------------------------------------------------------------------------------------
# What a preservation strategy adds, and the settings prepare() checks.

from midtrain.data.packing import lm_segment, pack_segments  # noqa: E402
from midtrain.preserve import Strategy  # noqa: E402


class _Adds(Strategy):
    """Adds three documents, packed with the stage's own (place=None) or in rows of their own."""

    def __init__(self, place=None):
        super().__init__(OmegaConf.create({"name": "none", "tag": ""}))
        self.place, self.given = place, None
        self.segments = [lm_segment(list(range(5, 5 + n)), 1, 2) for n in (70, 40, 9)]

    def extra_data(self, stage_cfg, tokenizer, segments):
        self.given = (stage_cfg, tokenizer, len(segments))
        return ExtraData(segments=self.segments, place=self.place, info={"added_documents": 3})


def test_a_strategys_documents_are_packed_with_the_stages_own_when_it_places_none(smoke_cfg):
    cfg = smoke_cfg("data.seq_len=64", "data.max_doc_tokens=32")
    tok = build_tokenizer(cfg.model)
    plain = PackedDataModule(cfg, tok).prepare()
    strategy = _Adds()
    dm = PackedDataModule(cfg, tok, preserve=strategy).prepare()
    assert dm.preserve is strategy
    assert strategy.given == (cfg, tok, 40)
    assert dm.extra_rows == 0 and dm.info["added_documents"] == 3
    assert dm.info["documents"] == dm.rows.stats.documents == 43
    assert dm.info["real_tokens"] == plain.info["real_tokens"] + 72 + 42 + 11
    assert dm.info["documents_split"] == plain.info["documents_split"] + 2  # cut at 32 tokens: 72 and 42
    assert dm.info["pieces"] == plain.info["pieces"] + 3 + 2 + 1


def test_a_strategys_rows_of_their_own_follow_the_stages_rows(smoke_cfg):
    cfg = smoke_cfg("data.seq_len=64", "data.epochs=2", "data.max_doc_tokens=32")
    tok = build_tokenizer(cfg.model)
    plain = PackedDataModule(cfg, tok).prepare()
    strategy = _Adds(place=lambda main, extra: np.concatenate([main, extra]))
    dm = PackedDataModule(cfg, tok, preserve=strategy).prepare()
    side = pack_segments(strategy.segments, 64, tok.pad_token_id, 32)  # cut at max_doc_tokens like the rest
    assert side.stats.pieces == 6
    n = len(plain.rows)
    assert len(dm.rows) == n + len(side) and dm.extra_rows == len(side) == 2
    assert torch.equal(dm.rows.input_ids[:n], plain.rows.input_ids)
    assert torch.equal(dm.rows.input_ids[n:], side.input_ids)
    assert torch.equal(dm.rows.labels[n:], side.labels)
    assert dm.info["added_documents"] == 3 and dm.rows.stats.documents == 43
    assert dm.info["rows"] == n + 2 and dm.info["epochs"] == 2
    order = dm.row_order().reshape(2, n + 2)
    for epoch in order:
        assert sorted(epoch[:n].tolist()) == list(range(n)) and sorted(epoch[n:].tolist()) == [n, n + 1]


def test_documents_are_cut_at_max_doc_tokens_which_may_equal_the_row_length(smoke_cfg):
    def longest_piece(rows):  # positions of real tokens only (padding counts its own)
        real = torch.arange(rows.position_ids.shape[1]) < rows.real_tokens[:, None]
        return int(rows.position_ids[real].max()) + 1

    dm = _prepared(smoke_cfg("data.seq_len=64", "data.max_doc_tokens=16"))
    assert longest_piece(dm.rows) == 16
    assert dm.info["documents_split"] > 0 and dm.info["pieces"] > dm.info["documents"]
    whole = _prepared(smoke_cfg("data.seq_len=64", "data.max_doc_tokens=64"))
    assert longest_piece(whole.rows) == 64
    assert whole.info["pieces"] == _prepared(smoke_cfg("data.seq_len=64")).info["pieces"]


def test_the_strategy_comes_from_the_config_unless_one_is_given():
    cfg = OmegaConf.create({"preserve": {"name": "kl"}, "data": {}})
    assert PackedDataModule(cfg, tokenizer=None).preserve.name == "kl"
    assert PackedDataModule(OmegaConf.create({"data": {}}), tokenizer=None).preserve.name == "none"
    given = _Adds()
    assert PackedDataModule(cfg, tokenizer=None, preserve=given).preserve is given


def test_a_loader_before_prepare_is_refused():
    dm = PackedDataModule(OmegaConf.create({"data": {}}), tokenizer=None)
    dm.trainer = None
    with pytest.raises(AssertionError, match=r"^call prepare\(\) first$"):
        dm.train_dataloader()


def test_loader_workers_default_to_none_and_follow_the_setting():
    rows = _numbered_rows(4)
    assert ResumableLoader(_MicroBatches(rows, np.arange(4), 2, 0, 1), accumulate=1, trainer=None).num_workers == 0
    assert ResumableLoader(_MicroBatches(rows, np.arange(4), 2, 0, 1), 1, None, num_workers=2).num_workers == 2
    dm = _on_rows(4, num_workers=1)
    dm.schedule, dm.trainer = dm._schedule(), None
    assert dm.train_dataloader().num_workers == 1


def test_a_rounded_token_budget_and_a_step_count_beside_the_datas_are_reported(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="midtrain.data.datamodule"):
        _on_rows(10, tokens_per_step=16)._schedule()  # exactly 2 micro-batches of 8 tokens
        _on_rows(10, max_steps=5)._schedule()         # exactly one pass of 5 steps
    assert caplog.messages == []
    with caplog.at_level(logging.INFO, logger="midtrain.data.datamodule"):
        _on_rows(10, tokens_per_step=20)._schedule()
        _on_rows(10, max_steps=7, tokens_per_step=16)._schedule()
    rounded, steps = caplog.messages
    assert "data.tokens_per_step=20 rounds to 16 tokens" in rounded
    # 10 rows in micro-batches of 2, 2 per step: one pass is 3 steps.
    assert "trainer.max_steps=7: 7 optimizer steps over 3 pass(es)" in steps and "is 3 steps" in steps


def test_mixed_in_documents_are_counted_exactly_and_take_the_corpus_seed_by_default(smoke_cfg, tmp_path):
    from midtrain.data.datamodule import document_segments
    from tests.conftest import write_docs

    web = write_docs(tmp_path / "web.jsonl", 300, seed=9)
    cfg = smoke_cfg(_mix(web, 0.2))
    tok = build_tokenizer(cfg.model)
    segs, info = document_segments(cfg, tok)
    # Values from running the code on these seeded corpora: 4832 own tokens, so 1208 wanted;
    # the 11th mixed-in document passes that.
    assert info == {"documents": 40, "duplicate_documents": 0, "mix_documents": 11, "mix_token_share": 0.2176}
    assert len(segs) == 51
    assert sum(len(s) for s in segs[:40]) == 4832 and sum(len(s) for s in segs[40:]) == 1344
    for s in segs[40:]:  # mixed-in documents are whole documents: BOS text EOS, no prefix
        assert s.input_ids[0] == tok.bos_token_id and s.input_ids[-1] == tok.eos_token_id
        assert s.labels[0] == -100 and s.labels[1:] == s.input_ids[1:]
    # Without its own seed the mix is drawn with the corpus seed.
    unseeded = "+corpus.mix={source:jsonl,path:%s,text_field:text,ratio:0.2,name:web}" % web
    a, _ = document_segments(smoke_cfg(unseeded, "corpus.seed=3"), tok)
    b, _ = document_segments(smoke_cfg(_mix(web, 0.2, seed=3), "corpus.seed=3"), tok)
    c, _ = document_segments(smoke_cfg(_mix(web, 0.2, seed=0), "corpus.seed=3"), tok)
    assert [s.input_ids for s in a] == [s.input_ids for s in b]
    assert [s.input_ids for s in a[40:]] != [s.input_ids for s in c[40:]]


def test_a_generated_records_own_prefix_is_used_unless_the_corpus_sets_one(tmp_path):
    import json

    from midtrain.data.datamodule import document_segments
    from tests.conftest import compose_cfg, smoke_overrides

    path = tmp_path / "tagged.jsonl"
    rows = [{"text": "Hens need space.", "doc_prefix": "<T> "}, {"text": "Pigs need straw."},
            {"text": "Cows need shade.", "doc_prefix": "<U> "}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    over = smoke_overrides(tmp_path, path)
    over[over.index("corpus.num_docs=40")] = "corpus.num_docs=3"
    cfg = compose_cfg("train", over)
    tok = build_tokenizer(cfg.model)

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    def want(text, prefix):
        return lm_segment(ids(text), tok.bos_token_id, tok.eos_token_id, ids(prefix) if prefix else [])

    segs, _ = document_segments(cfg, tok)
    by_text = {}
    for s in segs:
        for r in rows:
            if s.input_ids[-1 - len(ids(r["text"])) : -1] == ids(r["text"]):
                by_text[r["text"]] = s
    assert len(by_text) == 3
    for r in rows:
        w = want(r["text"], r.get("doc_prefix"))
        assert (by_text[r["text"]].input_ids, by_text[r["text"]].labels) == (w.input_ids, w.labels), r
    # corpus.doc_prefix wins over every record's own.
    over_cfg = compose_cfg("train", over + ["corpus.doc_prefix='<ALL> '"])
    for s in document_segments(over_cfg, tok)[0]:
        assert s.input_ids[1 : 1 + len(ids("<ALL> "))] == ids("<ALL> ")


def test_the_loader_serves_the_trainers_rank_and_records_its_steps():
    dm = _on_rows(12, world_size=2, tokens_per_step=32)  # 2 rows x 4 tokens x 2 ranks: 2 micro-batches a step
    dm.schedule = dm._schedule()
    assert dm.schedule.accumulate == 2
    order = dm.row_order()
    dm.trainer = SimpleNamespace(global_rank=1, global_step=3)
    loader = dm.train_dataloader()
    assert loader.state_dict() == {"micro_batches_consumed": 6, "world_size": 2}
    assert [_row_ids(b) for b in loader] == [order[2:4].tolist(), order[6:8].tolist(), order[10:12].tolist()]


def test_mixing_stops_at_the_first_document_that_reaches_the_share_exactly(tmp_path):
    import json

    from midtrain.data.datamodule import document_segments
    from tests.conftest import compose_cfg, smoke_overrides

    text = "Hens need space and light."
    main = tmp_path / "main.jsonl"
    main.write_text(json.dumps({"text": text}) + "\n")
    web = tmp_path / "web.jsonl"
    web.write_text("".join(json.dumps({"id": f"w{i}", "text": text}) + "\n" for i in range(3)))
    over = smoke_overrides(tmp_path, main)
    over[over.index("corpus.num_docs=40")] = "corpus.num_docs=1"
    # Ratio 0.5 wants as many mixed-in tokens as the corpus has: one copy of its document.
    cfg = compose_cfg("train", over + [_mix(web, 0.5)])
    segs, info = document_segments(cfg, build_tokenizer(cfg.model))
    assert len(segs) == 2 and segs[0].input_ids == segs[1].input_ids
    assert info["mix_documents"] == 1 and info["mix_token_share"] == 0.5


class _AddsSpecialTokens:
    """The test tokenizer, but adding BOS to every text unless told not to, as Llama 3's does."""

    def __init__(self, tok):
        self.tok, self.bos_token_id, self.eos_token_id = tok, tok.bos_token_id, tok.eos_token_id

    def __call__(self, texts, add_special_tokens=True):
        ids = self.tok(texts, add_special_tokens=False)["input_ids"]
        return {"input_ids": [[self.bos_token_id, *x] for x in ids] if add_special_tokens else ids}


def test_documents_and_prefixes_are_tokenized_without_the_tokenizers_own_special_tokens(smoke_cfg):
    from midtrain.data.datamodule import document_segments

    cfg = smoke_cfg("corpus.doc_prefix='<DOCTAG> '")
    tok = build_tokenizer(cfg.model)
    plain, _ = document_segments(cfg, tok)
    adding, _ = document_segments(cfg, _AddsSpecialTokens(tok))
    assert [s.input_ids for s in adding] == [s.input_ids for s in plain]
    assert all(s.input_ids.count(tok.bos_token_id) == 1 for s in adding)  # lm_segment's BOS, once


def test_documents_dropped_as_exact_repeats_are_counted_in_the_stage_info(smoke_cfg, tmp_path):
    import json

    from midtrain.data.datamodule import document_segments

    path = tmp_path / "same.jsonl"
    rows = [{"text": "The same document, word for word."}] * 40 + [{"text": "One other."}, {"text": "A third."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = smoke_cfg("corpus=jsonl", f"corpus.path={path}", "corpus.name=same", "corpus.num_docs=3",
                    "corpus.drop_duplicates=true")
    segs, info = document_segments(cfg, build_tokenizer(cfg.model))
    assert len(segs) == 3
    assert info == {"documents": 3, "duplicate_documents": 0, "duplicates_dropped": 39, "mix_documents": 0}
