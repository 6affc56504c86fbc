"""The data schedule under the settings real runs use: accumulation above 1, several epochs,
several ranks. Each test pins one behaviour a plausible one-line change would break."""

from __future__ import annotations

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
    # Each rank sees half of the rows (the short remainder dropped), in whole optimizer steps.
    rows = len(_prepared(cfg).rows)
    assert two.micro_batches == rows // (4 * 2)
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


def test_two_ranks_get_disjoint_shards_of_equal_length():
    rows = _numbered_rows(23)
    order = np.random.default_rng(0).permutation(23)
    shards = [_MicroBatches(rows, order, batch_size=3, rank=r, world=2) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 23 // 6
    seen = [[i for b in range(len(s)) for i in _row_ids(s[b])] for s in shards]
    assert all(len(ids) == len(set(ids)) for ids in seen)  # no row twice within a rank
    assert not set(seen[0]) & set(seen[1])  # no row on both ranks
    # Together the ranks take the order's first whole global batches, step by step in order:
    # global batch k is rank 0's micro-batch k, then rank 1's.
    interleaved = [i for b in range(len(shards[0])) for s in shards for i in _row_ids(s[b])]
    assert interleaved == order[: len(interleaved)].tolist()
    assert len(interleaved) == 23 // 6 * 6


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
    assert state == {"micro_batches_consumed": 6}
    resumed = ResumableLoader(_MicroBatches(rows, order, 2, 0, 1), accumulate=2, trainer=None)
    resumed.load_state_dict(state)
    assert len(resumed) == 10  # the epoch still reports all of its batches
    batches = [_row_ids(b) for b in resumed]
    assert batches[0] == [12, 13]  # the 7th micro-batch comes next
    assert batches == [[2 * i, 2 * i + 1] for i in range(6, 10)]


def test_one_device_keeps_a_short_micro_batch_several_devices_drop_it(smoke_cfg):
    cfg = smoke_cfg("data.seq_len=1024", "data.batch_size=64")
    one = _prepared(cfg, world_size=1)
    assert len(one.rows) < 64 and one.schedule.micro_batches == 1
    with pytest.raises(ValueError, match=r"fewer than one micro-batch of data.batch_size=64 x 2 device"):
        _prepared(cfg, world_size=2)
