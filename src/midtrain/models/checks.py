"""Numerical checks of the attention path, shared by the tests and the GPU check.

Documents packed into rows (position_ids restarting at 0 per document, no attention mask, no
cache) must give the logits each document gives on its own: that is the whole promise of
packing without attention across documents.
"""

from __future__ import annotations

import torch

from midtrain.data.packing import Segment, pack_segments


def packed_vs_per_document(model: torch.nn.Module, docs: list[list[int]], seq_len: int, device: str = "cpu",
                           use_position_ids: bool = True) -> float:
    """Largest |packed logit - per-document logit| over every real token of `docs`.

    Args:
        model: a causal LM in eval mode on `device`.
        docs: token ids per document (each at most `seq_len` long).
        seq_len: packed row length.
        device: where `model` lives.
        use_position_ids: pass the packed rows' position ids (False is the negative control:
            the rows then attend across documents).

    Raises:
        AssertionError: a document is missing from the packed rows.
    """
    rows = pack_segments([Segment(d, d) for d in docs], seq_len, pad_id=0)
    kwargs = {"position_ids": rows.position_ids.to(device)} if use_position_ids else {}
    worst, matched = 0.0, 0
    with torch.no_grad():
        packed = model(input_ids=rows.input_ids.to(device), use_cache=False, **kwargs).logits.float().cpu()
        for d in docs:
            alone = model(input_ids=torch.tensor([d], device=device), use_cache=False).logits.float().cpu()[0]
            hit = _locate(rows, d, seq_len)
            assert hit is not None, f"document of {len(d)} tokens not found in the packed rows"
            r, s = hit
            worst = max(worst, (packed[r, s : s + len(d)] - alone).abs().max().item())
            matched += 1
    assert matched == len(docs)
    return worst


def _locate(rows, doc: list[int], seq_len: int) -> tuple[int, int] | None:
    """(row, start) of `doc` in the packed rows: its positions run 0..n-1 over its own tokens."""
    for r in range(len(rows)):
        ids, pos = rows.input_ids[r].tolist(), rows.position_ids[r].tolist()
        for s in range(seq_len - len(doc) + 1):
            end = s + len(doc)
            if pos[s] == 0 and ids[s:end] == doc and (end == seq_len or pos[end] == 0):
                return r, s
    return None
