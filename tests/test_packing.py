"""Packing: rows hold whole documents, no attention across them, no padding in the loss."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from midtrain.data.packing import IGNORE_INDEX, PackStats, Segment, concat_rows, lm_segment, pack_segments


def _segments(lengths, vocab=97, seed=0):
    g = torch.Generator().manual_seed(seed)
    segs = []
    for n in lengths:
        ids = torch.randint(3, vocab, (n,), generator=g).tolist()
        segs.append(lm_segment(ids, bos_id=1, eos_id=2))
    return segs


def test_pack_keeps_documents_whole_and_fills_rows():
    segs = _segments([30, 50, 10, 64, 20, 5, 40])
    rows = pack_segments(segs, seq_len=66, pad_id=0)
    # Every document appears exactly once, contiguously, with positions 0..n-1.
    found = []
    for r in range(len(rows)):
        pos = rows.position_ids[r].tolist()
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        for a, b in zip(starts, starts[1:]):
            found.append(tuple(rows.input_ids[r, a:b].tolist()))
    real = {tuple(s.input_ids) for s in segs}
    assert real <= set(found)
    assert rows.stats.real_tokens == sum(len(s) for s in segs)
    assert rows.stats.documents_split == 0
    # Best-fit decreasing needs no more rows than the token count allows plus one.
    assert len(rows) <= -(-rows.stats.real_tokens // 66) + 1


def test_padding_and_document_starts_have_no_labels():
    segs = _segments([10, 7])
    rows = pack_segments(segs, seq_len=32, pad_id=0)
    assert len(rows) == 1
    labels, ids, pos = rows.labels[0], rows.input_ids[0], rows.position_ids[0]
    real = rows.real_tokens[0].item()
    assert real == 12 + 9
    assert (labels[real:] == IGNORE_INDEX).all() and (ids[real:] == 0).all()
    starts = (pos == 0).nonzero().flatten().tolist()
    assert all(labels[s] == IGNORE_INDEX for s in starts)
    assert rows.stats.loss_tokens == int((labels != IGNORE_INDEX).sum()) == (12 - 1) + (9 - 1)


def test_long_documents_are_split_and_counted():
    segs = _segments([100, 20])
    rows = pack_segments(segs, seq_len=40, pad_id=0)
    assert rows.stats.documents_split == 1
    assert rows.stats.pieces == 3 + 1
    assert rows.stats.real_tokens == 102 + 22


def test_prefix_tokens_get_no_loss():
    seg = lm_segment([10, 11, 12], bos_id=1, eos_id=2, prefix_ids=[7, 8])
    assert seg.input_ids == [1, 7, 8, 10, 11, 12, 2]
    assert seg.labels == [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 10, 11, 12, 2]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_per_document_logits(attn):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()
    segs = _segments([17, 9, 30, 5, 12])
    rows = pack_segments(segs, seq_len=48, pad_id=0)
    with torch.no_grad():
        packed = model(input_ids=rows.input_ids, position_ids=rows.position_ids, use_cache=False).logits
        checked = 0
        for r in range(len(rows)):
            pos = rows.position_ids[r].tolist()
            starts = [i for i, p in enumerate(pos) if p == 0] + [rows.real_tokens[r].item()]
            for a, b in zip(starts, starts[1:]):
                if b <= a:
                    continue
                alone = model(input_ids=rows.input_ids[r : r + 1, a:b], use_cache=False).logits[0]
                torch.testing.assert_close(packed[r, a:b], alone, atol=1e-5, rtol=1e-4)
                checked += 1
    assert checked == len(segs)
    # Without the position restarts the same rows would attend across documents and differ.
    with torch.no_grad():
        leaky = model(input_ids=rows.input_ids, use_cache=False).logits
    assert not torch.allclose(leaky, packed, atol=1e-4)


def test_every_piece_of_a_split_document_starts_without_a_label():
    # A 100-token document in pieces of 40: pieces 2 and 3 start mid-document, with a real
    # token (not BOS) first. Whatever precedes a piece in its row belongs to another piece,
    # so the first label of every piece must be ignored, not only the document's first.
    seg = _segments([98])[0]
    assert len(seg) == 100
    rows = pack_segments([seg], seq_len=40, pad_id=0)
    assert rows.stats.pieces == 3
    starts = 0
    for r in range(len(rows)):
        pos, labels, ids = rows.position_ids[r], rows.labels[r], rows.input_ids[r]
        real = rows.real_tokens[r].item()
        for c in range(real):
            if pos[c] == 0:
                starts += 1
                assert labels[c] == IGNORE_INDEX, f"row {r} col {c}: a piece's first token has a label"
            elif ids[c] != 1:  # every other real token keeps its own id as label
                assert labels[c] == ids[c]
    assert starts == 3
    # 100 tokens, 3 piece starts without a label (the first is BOS anyway).
    assert rows.stats.loss_tokens == 100 - 3


def test_concatenated_packings_keep_both_row_lists_and_sum_their_statistics():
    # The replay strategy packs the replayed data apart and appends its rows to the stage's own.
    own = pack_segments(_segments([30, 20, 12], seed=1), seq_len=40, pad_id=0)
    side = pack_segments(_segments([70, 8], seed=2), seq_len=40, pad_id=0)
    both = concat_rows(own, side)
    n = len(own)
    assert len(both) == n + len(side)
    for name in ("input_ids", "labels", "position_ids", "real_tokens"):
        assert torch.equal(getattr(both, name), torch.cat([getattr(own, name), getattr(side, name)])), name
    assert both.stats == PackStats(
        documents=3 + 2, pieces=3 + 3, documents_split=0 + 1,
        rows=len(both), real_tokens=(32 + 22 + 14) + (72 + 10),
        loss_tokens=(31 + 21 + 13) + (71 - 1 + 9), slots=40 * len(both))
    assert len(both) > len(own) > 1
    # The second packing's segment indices continue after the first's documents.
    assert both.row_segments[:n] == own.row_segments
    assert both.row_segments[n:] == [[s + 3 for s in r] for r in side.row_segments]
    assert sorted(s for r in both.row_segments for s in r) == [0, 1, 2, 3, 3, 4]  # the split document: two pieces


def test_concatenating_packings_of_different_row_lengths_is_refused():
    a = pack_segments(_segments([10]), seq_len=16, pad_id=0)
    b = pack_segments(_segments([10]), seq_len=24, pad_id=0)
    with pytest.raises(ValueError, match="seq_len"):
        concat_rows(a, b)
