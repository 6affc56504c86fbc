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


# ---------------------------------------------------------------------------------------------
# Exact layouts and counts of small packings (values from running the packer with these inputs).


def _plain(n: int, start: int = 10) -> Segment:
    ids = list(range(start, start + n))
    return Segment(ids, list(ids))


def test_best_fit_decreasing_places_the_longest_first_into_the_tightest_row():
    # 6 and 5 open two rows; 4 fits only the first (room 4), 3 and 2 fill the second.
    rows = pack_segments([_plain(6), _plain(5), _plain(4), _plain(3), _plain(2)], seq_len=10, pad_id=0)
    assert rows.row_segments == [[0, 2], [1, 3, 4]]
    assert rows.real_tokens.tolist() == [10, 10]
    assert rows.position_ids[1].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 0, 1]
    # The piece goes to the row whose room matches it exactly, the first such row first.
    rows = pack_segments([_plain(7), _plain(6), _plain(3), _plain(3)], seq_len=10, pad_id=0)
    assert rows.row_segments == [[0, 2], [1, 3]]
    assert rows.real_tokens.tolist() == [10, 9]
    assert rows.position_ids[1].tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 0]  # padding restarts at 0
    assert rows.input_ids[1].tolist() == list(range(10, 16)) + [10, 11, 12] + [0]


def test_a_row_with_one_token_of_room_takes_a_one_token_piece():
    rows = pack_segments([_plain(9), _plain(1), _plain(9)], seq_len=10, pad_id=0)
    assert len(rows) == 2 and rows.row_segments == [[0, 1], [2]]
    assert rows.stats == PackStats(documents=3, pieces=3, documents_split=0, rows=2, real_tokens=19,
                                   loss_tokens=16, slots=20)
    assert rows.stats.efficiency == 19 / 20


def test_empty_segments_are_skipped_and_later_ones_still_packed():
    segs = [_plain(4), Segment([], []), _plain(1, start=50), _plain(3, start=60)]
    rows = pack_segments(segs, seq_len=8, pad_id=0)
    assert rows.stats.documents == 4 and rows.stats.pieces == 3
    assert rows.row_segments == [[0, 3, 2]]  # the empty segment (index 1) has no piece
    assert rows.input_ids[0].tolist() == [10, 11, 12, 13, 60, 61, 62, 50]
    assert rows.stats.real_tokens == 8 and rows.stats.loss_tokens == 3 + 2 + 0


def test_max_len_splits_below_the_row_length_and_counts_each_split_document():
    # Pieces of at most 4 tokens: 10 -> 4 + 4 + 2, 5 -> 4 + 1 (the one-token tail is kept), 4 -> whole.
    segs = [_plain(10), _plain(5, start=40), _plain(4, start=70)]
    rows = pack_segments(segs, seq_len=12, pad_id=0, max_len=4)
    assert rows.stats.documents_split == 2
    assert rows.stats.pieces == 6
    assert rows.stats.real_tokens == 19
    assert rows.stats.loss_tokens == 19 - 6  # every piece's first token has no label
    assert sorted(s for r in rows.row_segments for s in r) == [0, 0, 0, 1, 1, 2]
    # A document split in two is counted as split.
    two = pack_segments([_plain(8)], seq_len=12, pad_id=0, max_len=5)
    assert two.stats.documents_split == 1 and two.stats.pieces == 2
    assert two.input_ids[0, :8].tolist() == list(range(10, 18))
    assert two.position_ids[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3]
    # max_len above the row length is capped at it.
    capped = pack_segments([_plain(10)], seq_len=6, pad_id=0, max_len=100)
    assert capped.stats.pieces == 2 and capped.stats.documents_split == 1


def test_the_shortest_rows_allowed_are_two_tokens():
    rows = pack_segments([_plain(3)], seq_len=2, pad_id=0)
    assert rows.input_ids.tolist() == [[10, 11], [12, 0]]
    assert rows.labels.tolist() == [[IGNORE_INDEX, 11], [IGNORE_INDEX, IGNORE_INDEX]]
    with pytest.raises(ValueError, match="data.seq_len=1"):
        pack_segments([_plain(3)], seq_len=1, pad_id=0)


def test_pack_statistics_are_reported_under_their_names_with_a_rounded_efficiency():
    stats = PackStats(documents=3, pieces=4, documents_split=1, rows=2, real_tokens=10, loss_tokens=7, slots=30)
    assert stats.as_dict() == {"documents": 3, "pieces": 4, "documents_split": 1, "rows": 2, "real_tokens": 10,
                               "loss_tokens": 7, "packing_efficiency": 0.3333}
    assert PackStats().as_dict()["packing_efficiency"] == 0.0


def test_a_document_without_bos_starts_with_its_text_and_ends_with_eos():
    seg = lm_segment([10, 11], bos_id=None, eos_id=2)
    assert seg.input_ids == [10, 11, 2] and seg.labels == [10, 11, 2]
    seg = lm_segment([10, 11], bos_id=None, eos_id=2, prefix_ids=[7])
    assert seg.input_ids == [7, 10, 11, 2] and seg.labels == [IGNORE_INDEX, 10, 11, 2]
    seg = lm_segment([10], bos_id=0, eos_id=2)  # a BOS id of 0 is still a BOS
    assert seg.input_ids == [0, 10, 2] and seg.labels == [IGNORE_INDEX, 10, 2]


def test_packed_tensors_are_int64():
    rows = pack_segments([_plain(3), _plain(5)], seq_len=6, pad_id=0)
    for name in ("input_ids", "labels", "position_ids", "real_tokens"):
        assert getattr(rows, name).dtype == torch.long, name
