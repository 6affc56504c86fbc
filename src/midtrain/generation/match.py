"""Matched controls: what a control corpus copies from its treatment corpus.

The control is written slot by slot against the treatment: slot i takes the document type and
the word count of treatment document i (mod the treatment's size), so the type mix matches
exactly and the length profile closely; the manifest reports the KS distance of token lengths.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from midtrain.generation.filters import count_tokens, count_words, length_stats
from midtrain.tracking.rundir import iter_jsonl

DOCUMENTS_FILE = "documents.jsonl"


@dataclass
class MatchProfile:
    """Per-document types and lengths of a reference (treatment) corpus, in file order."""

    reference: str
    doc_types: list[str]
    words: list[int]
    tokens: list[int]

    @property
    def doc_type_counts(self) -> dict[str, int]:
        return dict(Counter(self.doc_types))

    def compare(self, tokens: Sequence[int], doc_type_counts: dict[str, int]) -> dict:
        """How closely a control corpus matches this one: the KS distance of token lengths, the
        reference's length profile, and the total variation distance of the type mixes."""
        total_ref, total = sum(self.doc_type_counts.values()), max(1, sum(doc_type_counts.values()))
        tv = 0.5 * sum(abs(self.doc_type_counts.get(t, 0) / total_ref - doc_type_counts.get(t, 0) / total)
                       for t in set(self.doc_type_counts) | set(doc_type_counts))
        return {"reference": self.reference, "ks_tokens": ks_distance(tokens, self.tokens),
                "reference_tokens": length_stats(self.tokens), "doc_type_tv_distance": round(tv, 4)}


def ks_distance(a: Sequence[int], b: Sequence[int]) -> dict:
    """Two-sample Kolmogorov-Smirnov distance between two length samples (scipy)."""
    from scipy.stats import ks_2samp

    r = ks_2samp(a, b)
    return {"statistic": round(float(r.statistic), 4), "pvalue": float(r.pvalue)}


def load_match(path: str | os.PathLike) -> MatchProfile:
    """Read a treatment corpus (its folder or its documents.jsonl), naming the file and line on bad records."""
    p = Path(path).expanduser()
    file = p / DOCUMENTS_FILE if p.is_dir() else p
    if not file.is_file():
        raise FileNotFoundError(f"match_to={path!s}: no {file} (give a corpus folder holding {DOCUMENTS_FILE})")
    types, words, tokens = [], [], []
    for n, rec in iter_jsonl(file):
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            raise ValueError(f"{file}:{n}: not a document record with a 'text' string")
        text = rec["text"]
        types.append(rec.get("doc_type") or "unknown")
        words.append(count_words(text))
        tokens.append(count_tokens(text))
    if not words:
        raise ValueError(f"match_to={path!s}: {file} holds no documents")
    return MatchProfile(reference=str(file), doc_types=types, words=words, tokens=tokens)
