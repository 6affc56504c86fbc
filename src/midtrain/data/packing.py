"""Pack tokenized documents into fixed-length rows with no attention across documents.

Each document becomes (input_ids, labels). Long documents are split into pieces of at most
`max_len` tokens (counted). Pieces are placed whole into rows of `seq_len` by best-fit
decreasing, so almost no row space is padding and no document is cut at a row boundary.
`position_ids` restart at 0 for every piece: transformers derives the block-diagonal causal
mask (sdpa, eager, flex) or the varlen `cu_seqlens` (flash-attn) from them. Padding, the
BOS token, and any document prefix carry label -100, so they never enter the loss.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import torch

IGNORE_INDEX = -100


@dataclass
class Segment:
    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class PackStats:
    documents: int = 0
    pieces: int = 0
    documents_split: int = 0
    rows: int = 0
    real_tokens: int = 0      # tokens that are not padding
    loss_tokens: int = 0      # tokens with a label
    slots: int = 0            # rows * seq_len

    @property
    def efficiency(self) -> float:
        return self.real_tokens / self.slots if self.slots else 0.0

    def as_dict(self) -> dict:
        return {
            "documents": self.documents,
            "pieces": self.pieces,
            "documents_split": self.documents_split,
            "rows": self.rows,
            "real_tokens": self.real_tokens,
            "loss_tokens": self.loss_tokens,
            "packing_efficiency": round(self.efficiency, 4),
        }


@dataclass
class PackedRows:
    input_ids: torch.Tensor       # [rows, seq_len] int64
    labels: torch.Tensor          # [rows, seq_len] int64
    position_ids: torch.Tensor    # [rows, seq_len] int64
    real_tokens: torch.Tensor     # [rows] non-padding tokens per row
    stats: PackStats = field(default_factory=PackStats)
    row_segments: list[list[int]] = field(default_factory=list)  # per row: index of each piece's input segment

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def split_segment(seg: Segment, max_len: int) -> list[Segment]:
    """Cut a too-long document into consecutive pieces of at most `max_len` tokens."""
    return [
        Segment(seg.input_ids[i : i + max_len], seg.labels[i : i + max_len])
        for i in range(0, len(seg), max_len)
    ]


def pack_segments(segments: list[Segment], seq_len: int, pad_id: int, max_len: int | None = None) -> PackedRows:
    """Best-fit-decreasing packing of whole segments into rows of `seq_len` tokens."""
    if seq_len < 2:
        raise ValueError(f"data.seq_len={seq_len}: must be at least 2")
    max_len = min(max_len or seq_len, seq_len)
    stats = PackStats(documents=len(segments))
    pieces: list[Segment] = []
    source: list[int] = []  # piece -> index of the segment it came from
    for j, seg in enumerate(segments):
        if len(seg) == 0:
            continue
        parts = split_segment(seg, max_len) if len(seg) > max_len else [seg]
        stats.documents_split += len(parts) > 1
        kept = [p for p in parts if len(p) > 0]
        pieces.extend(kept)
        source.extend([j] * len(kept))
    stats.pieces = len(pieces)
    # Best fit decreasing: longest first, each into the row with the least room that fits it.
    order = sorted(range(len(pieces)), key=lambda i: (-len(pieces[i]), i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (room, row index)
    for i in order:
        n = len(pieces[i])
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            room, r = free.pop(k)
        else:
            rows.append([])
            room, r = seq_len, len(rows) - 1
        rows[r].append(i)
        if room - n > 0:
            bisect.insort(free, (room - n, r))
    n_rows = len(rows)
    input_ids = torch.full((n_rows, seq_len), pad_id, dtype=torch.long)
    labels = torch.full((n_rows, seq_len), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((n_rows, seq_len), dtype=torch.long)
    real = torch.zeros(n_rows, dtype=torch.long)
    for r, members in enumerate(rows):
        col = 0
        for i in members:
            p = pieces[i]
            n = len(p)
            input_ids[r, col : col + n] = torch.tensor(p.input_ids)
            labels[r, col : col + n] = torch.tensor(p.labels)
            # Nothing inside a segment predicts its first token (the previous token belongs to
            # another document), so the first label of every piece is ignored.
            labels[r, col] = IGNORE_INDEX
            position_ids[r, col : col + n] = torch.arange(n)
            col += n
        if col < seq_len:  # padding is its own segment: positions restart, labels ignored
            position_ids[r, col:] = torch.arange(seq_len - col)
        real[r] = col
        stats.real_tokens += col
    stats.rows = n_rows
    stats.slots = n_rows * seq_len
    stats.loss_tokens = int((labels != IGNORE_INDEX).sum())
    return PackedRows(input_ids, labels, position_ids, real, stats,
                      row_segments=[[source[i] for i in members] for members in rows])


def concat_rows(first: PackedRows, second: PackedRows) -> PackedRows:
    """Rows of `first` followed by rows of `second` (same seq_len), with summed statistics.

    Segment indices of `second` continue after `first`'s segments, as if both lists were one.
    """
    if first.input_ids.shape[1] != second.input_ids.shape[1]:
        raise ValueError("concat_rows: the two packings have different seq_len")
    a, b = first.stats, second.stats
    stats = PackStats(**{f: getattr(a, f) + getattr(b, f) for f in
                         ("documents", "pieces", "documents_split", "rows", "real_tokens", "loss_tokens", "slots")})
    return PackedRows(
        torch.cat([first.input_ids, second.input_ids]),
        torch.cat([first.labels, second.labels]),
        torch.cat([first.position_ids, second.position_ids]),
        torch.cat([first.real_tokens, second.real_tokens]),
        stats,
        row_segments=first.row_segments + [[s + a.documents for s in r] for r in second.row_segments],
    )


def lm_segment(token_ids: list[int], bos_id: int | None, eos_id: int, prefix_ids: list[int] | None = None) -> Segment:
    """A document for next-token training: [BOS] prefix text [EOS]; BOS and prefix get no loss."""
    prefix_ids = prefix_ids or []
    head = ([bos_id] if bos_id is not None else []) + list(prefix_ids)
    ids = head + list(token_ids) + [eos_id]
    labels = [IGNORE_INDEX] * len(head) + list(token_ids) + [eos_id]
    return Segment(ids, labels)
