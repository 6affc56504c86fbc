"""Lightning datamodule: documents (objective=lm) or conversations (objective=sft), packed.

All token work happens in `prepare()`, before the model is built, so bad input fails fast.
The order of rows is a seeded permutation per epoch; all epochs form one sequence of
micro-batches (one Lightning epoch), and the loader is stateful: a checkpoint records how many
micro-batches were consumed, and a resumed run continues with the next one, so it sees
exactly the data an uninterrupted run would have seen. A preservation strategy may add
segments (e.g. replayed documents) beside the stage's own, packed with them or in rows of
their own placed by the strategy.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from midtrain.data.corpus import count_duplicates, draw, load_corpus, load_pool
from midtrain.data.packing import IGNORE_INDEX, PackedRows, Segment, concat_rows, lm_segment, pack_segments
from midtrain.data.sft import load_conversations, sft_segment
from midtrain.preserve import ExtraData, Strategy, build_strategy

log = logging.getLogger(__name__)


def _tokenize(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def document_segments(cfg: DictConfig, tokenizer: Any) -> tuple[list[Segment], dict]:
    """Segments for next-token training: the drawn documents plus any mixed-in corpus."""
    corpus = cfg.corpus
    dropped: dict = {}
    docs = load_corpus(corpus, dropped)
    duplicates = count_duplicates(docs)
    if duplicates:
        log.warning("corpus %s: %d of %d documents repeat another document exactly (corpus.drop_duplicates=true "
                    "removes them from the pool)", corpus.name, duplicates, len(docs))
    # The tag before each document (no loss): corpus.doc_prefix for all, else the one a
    # generated corpus wrote into each record (midtrain-generate doc_tag=...), else none.
    prefixes = [corpus.get("doc_prefix") or d.get("doc_prefix") or "" for d in docs]
    distinct = sorted(set(prefixes) - {""})
    prefix_ids = dict(zip(distinct, _tokenize(tokenizer, distinct)))
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    segs = [lm_segment(ids, bos, eos, prefix_ids.get(p, []))
            for ids, p in zip(_tokenize(tokenizer, [d["text"] for d in docs]), prefixes)]
    info = {"documents": len(segs), "duplicate_documents": duplicates, **dropped, "mix_documents": 0}
    mix = corpus.get("mix")
    if mix:
        ratio = float(mix.ratio)
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"corpus.mix.ratio={ratio}: the mixed-in share of tokens must be in (0, 1)")
        main_tokens = sum(len(s) for s in segs)
        want = main_tokens * ratio / (1.0 - ratio)
        pool = load_pool(mix)
        order = draw(pool, len(pool), int(mix.get("seed", corpus.seed)), what="corpus.mix")
        got = 0
        for doc in order:
            if got >= want:
                break
            ids = _tokenize(tokenizer, [doc["text"]])[0]
            segs.append(lm_segment(ids, bos, eos))
            got += len(segs[-1])
            info["mix_documents"] += 1
        if got < want:
            raise ValueError(
                f"corpus.mix: {len(pool)} documents give {got} tokens, fewer than the {int(want)} "
                f"needed for ratio {ratio}"
            )
        info["mix_token_share"] = round(got / (got + main_tokens), 4)
    return segs, info


def conversation_segments(cfg: DictConfig, tokenizer: Any) -> tuple[list[Segment], dict]:
    convs = load_conversations(cfg.instruct)
    return [sft_segment(tokenizer, m, i) for i, m in enumerate(convs)], {"samples": len(convs)}


class _MicroBatches(Dataset):
    """Micro-batch `i` of this rank: rows `order[(i * world + rank) * bs : ... + bs]`.

    Every row is used: the last global batch, when short, is dealt round-robin over the ranks
    (their micro-batches then differ by at most one row). A rank whose share is empty (fewer
    rows left than ranks) gets one row with every label masked, so all ranks still take the
    step together; its loss is zero and adds no gradient.
    """

    def __init__(self, rows: PackedRows, order: np.ndarray, batch_size: int, rank: int, world: int):
        self.rows, self.order, self.bs = rows, order, batch_size
        self.rank, self.world = rank, world
        self.total = -(-len(order) // (batch_size * world))

    def __len__(self) -> int:
        return self.total

    def row_indices(self, i: int) -> np.ndarray:
        """The packed rows of this rank's micro-batch `i` (empty: a masked filler row)."""
        step = self.bs * self.world
        block = self.order[i * step : (i + 1) * step]
        if len(block) == step:
            return block[self.rank * self.bs : (self.rank + 1) * self.bs]
        return block[self.rank :: self.world]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rows = self.row_indices(i)
        if len(rows) == 0:
            idx = torch.as_tensor(self.order[:1])
            labels = torch.full_like(self.rows.labels[idx], IGNORE_INDEX)
            real = 0
        else:
            idx = torch.as_tensor(rows)
            labels = self.rows.labels[idx]
            real = int(self.rows.real_tokens[idx].sum())
        return {
            "input_ids": self.rows.input_ids[idx],
            "labels": labels,
            "position_ids": self.rows.position_ids[idx],
            "_real_tokens": real,  # host int: throughput without a device sync
            "_loss_tokens": int((labels != IGNORE_INDEX).sum()),  # host int: 0 only for a filler row
            "_rows": [int(r) for r in rows],  # packed row indices, for the data audit
        }


class _SkipSampler(Sampler):
    """Indices `skip..n-1`, while reporting length `n`: the epoch has n batches of which the
    first `skip` were consumed before a checkpoint (Lightning restores that count itself)."""

    def __init__(self, n: int):
        self.n, self.skip = n, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(range(self.skip, self.n))


class ResumableLoader(DataLoader):
    """A DataLoader Lightning checkpoints: its state is the number of micro-batches consumed,
    which is exact because checkpoints are written at optimizer-step boundaries."""

    def __init__(self, dataset: _MicroBatches, accumulate: int, trainer: pl.Trainer | None, num_workers: int = 0):
        self._skip_sampler = _SkipSampler(len(dataset))
        super().__init__(dataset, batch_size=None, sampler=self._skip_sampler, num_workers=num_workers)
        self._accumulate = accumulate
        self._trainer = trainer
        self._world = dataset.world

    def state_dict(self) -> dict:
        step = self._trainer.global_step if self._trainer is not None else 0
        return {"micro_batches_consumed": step * self._accumulate, "world_size": self._world}

    def load_state_dict(self, state: dict) -> None:
        saved_world = int(state.get("world_size", self._world))
        if saved_world != self._world:
            # The position is a count of per-rank micro-batches: under another world size it
            # would point at other rows, so the resumed run would see a different data order.
            raise ValueError(
                f"the checkpoint was written by {saved_world} rank(s) and this run has {self._world}: "
                f"resume with trainer.devices x trainer.num_nodes = {saved_world}, or start over with resume=never"
            )
        self._skip_sampler.skip = int(state.get("micro_batches_consumed", 0))
        if self._skip_sampler.skip:
            log.info("resuming data at micro-batch %d of %d", self._skip_sampler.skip, self._skip_sampler.n)


@dataclass
class Schedule:
    micro_batches: int        # per rank, over all epochs
    accumulate: int           # micro-batches per optimizer step
    steps: int                # optimizer steps
    epochs: int = 1           # passes over the rows laid out (more than data.epochs when trainer.max_steps asks)
    rows: int | None = None   # rows used in all (None: every row of every epoch)


class PackedDataModule(pl.LightningDataModule):
    """Packs a stage's data once and serves it in a deterministic, resumable order."""

    def __init__(self, cfg: DictConfig, tokenizer: Any, world_size: int = 1, preserve: Strategy | None = None):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.world_size = world_size
        self.preserve = preserve if preserve is not None else build_strategy(cfg.get("preserve"))
        self.rows: PackedRows | None = None
        self.extra: ExtraData | None = None
        self.extra_rows = 0       # rows at the end of `rows` packed apart from the stage's own segments
        self.info: dict = {}

    # Called by the trainer entry before the model exists.
    def prepare(self) -> "PackedDataModule":
        data = self.cfg.data
        if self.cfg.objective == "lm":
            segs, info = document_segments(self.cfg, self.tokenizer)
        elif self.cfg.objective == "sft":
            segs, info = conversation_segments(self.cfg, self.tokenizer)
        else:
            raise ValueError(f"objective={self.cfg.objective!r}: expected lm or sft")
        seq_len = int(data.seq_len)
        max_len = data.get("max_doc_tokens") or seq_len
        if max_len > seq_len:
            raise ValueError(f"data.max_doc_tokens={max_len} is larger than data.seq_len={seq_len}")
        self.extra = self.preserve.extra_data(self.cfg, self.tokenizer, segs)
        pad = self.tokenizer.pad_token_id
        if self.extra is None:
            self.rows = pack_segments(segs, seq_len, pad, max_len)
        elif self.extra.place is None:  # packed together and shuffled together
            self.rows = pack_segments(segs + self.extra.segments, seq_len, pad, max_len)
        else:
            side = pack_segments(self.extra.segments, seq_len, pad, max_len)
            self.rows = concat_rows(pack_segments(segs, seq_len, pad, max_len), side)
            self.extra_rows = len(side)
        if self.extra is not None:
            info.update(self.extra.info)
        st = self.rows.stats
        if st.documents_split:
            log.warning("%d of %d documents were longer than %d tokens and were split", st.documents_split, st.documents, max_len)
        self.info = {**info, **st.as_dict()}
        self.schedule = self._schedule()
        self.info.update(epochs=self.schedule.epochs, micro_batches=self.schedule.micro_batches,
                         accumulate_grad_batches=self.schedule.accumulate, steps=self.schedule.steps)
        return self

    def _schedule(self) -> Schedule:
        data = self.cfg.data
        bs, world, seq_len = int(data.batch_size), self.world_size, int(data.seq_len)
        if bs < 1:
            raise ValueError(f"data.batch_size={bs}: must be at least 1")
        if int(data.epochs) < 1:
            raise ValueError(f"data.epochs={data.epochs}: must be at least 1")
        rows_total = len(self.rows) * int(data.epochs)
        # A short last global batch is kept (dealt over the ranks), so no row is ever dropped.
        micro = -(-rows_total // (bs * world))
        if rows_total < world:
            raise ValueError(
                f"only {len(self.rows)} packed rows of {seq_len} tokens for {world} devices: every device "
                f"needs at least one row; lower data.seq_len or use fewer devices"
            )
        accumulate = 1
        if data.get("tokens_per_step"):
            want = int(data.tokens_per_step)
            accumulate = max(1, round(want / (bs * world * seq_len)))
            got = accumulate * bs * world * seq_len
            self.info.update(tokens_per_step_requested=want, tokens_per_step=got)
            if got != want:
                log.warning("data.tokens_per_step=%d rounds to %d tokens per step (%d micro-batch(es) of %d rows x %d "
                            "tokens on %d device(s))", want, got, accumulate, bs, seq_len, world)
        max_steps = (self.cfg.get("trainer") or {}).get("max_steps")
        if max_steps:
            # trainer.max_steps defines the schedule: exactly that many optimizer steps of full
            # batches, the rows repeating (a fresh permutation per pass) as often as needed.
            steps = int(max_steps)
            rows = steps * accumulate * bs * world
            epochs = max(1, -(-rows // len(self.rows)))
            data_steps = math.ceil(micro / accumulate)
            if steps != data_steps:
                log.info("trainer.max_steps=%d: %d optimizer steps over %d pass(es) of the data (one pass of "
                         "data.epochs=%d is %d steps)", steps, steps, epochs, int(data.epochs), data_steps)
            return Schedule(steps * accumulate, accumulate, steps, epochs, rows)
        steps = math.ceil(micro / accumulate)
        return Schedule(micro, accumulate, steps, int(data.epochs))

    def row_order(self) -> np.ndarray:
        """Row indices over all epochs: a fresh seeded permutation per epoch (rows a strategy
        packed apart are permuted among themselves and placed by the strategy)."""
        n, k = len(self.rows), self.extra_rows
        seed = int(self.cfg.seed)
        epochs = []
        for epoch in range(self.schedule.epochs):
            rng = np.random.default_rng([seed, epoch])
            if k == 0:
                epochs.append(rng.permutation(n))
            else:
                main = rng.permutation(n - k)
                epochs.append(self.extra.place(main, (n - k) + rng.permutation(k)))
        order = np.concatenate(epochs)
        return order if self.schedule.rows is None else order[: self.schedule.rows]

    def train_dataloader(self) -> DataLoader:
        assert self.rows is not None, "call prepare() first"
        trainer = self.trainer
        rank = trainer.global_rank if trainer is not None else 0
        ds = _MicroBatches(self.rows, self.row_order(), int(self.cfg.data.batch_size), rank, self.world_size)
        return ResumableLoader(ds, self.schedule.accumulate, trainer, int(self.cfg.data.num_workers))
