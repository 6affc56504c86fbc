"""Corpus filters: unsuitable or malformed outputs, length bounds, leftover placeholders, near-duplicates.

Near-duplicates are found with `datasketch`'s MinHash over word n-gram shingles and its LSH
index, then confirmed with the exact n-gram Jaccard similarity, so the cost stays near-linear in the
number of documents (a pairwise Jaccard pass is quadratic: 4.5M comparisons at 3000 docs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

# Token counts for statistics and length profiles: words and punctuation marks. A proxy that
# needs no tokenizer download; the same function measures treatment and control.
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


def count_words(text: str) -> int:
    return len(text.split())


def length_stats(values: Sequence[int]) -> dict:
    """A length profile: count, mean, std, min, p10, median, p90, max and total (`{"n": 0}` if empty)."""
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=float)
    return {"n": int(a.size), "mean": round(float(a.mean()), 2), "std": round(float(a.std()), 2),
            "min": int(a.min()), "p10": float(np.percentile(a, 10)), "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)), "max": int(a.max()), "total": int(a.sum())}


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds; field names match the `filters` block of conf/generate.yaml."""

    min_words: int = 50
    max_words: int = 1500
    placeholder_patterns: tuple[str, ...] = ()
    dedup_threshold: float | None = 0.8
    shingle_size: int = 5
    num_perm: int = 128
    bands: int = 32

    def __post_init__(self):
        if self.min_words < 0 or self.max_words < self.min_words:
            raise ValueError(f"filters: need 0 <= min_words <= max_words, got {self.min_words}, {self.max_words}")
        if self.dedup_threshold is not None and not 0 < self.dedup_threshold <= 1:
            raise ValueError(f"filters.dedup_threshold must be in (0, 1] or null, got {self.dedup_threshold}")
        if self.num_perm % self.bands:
            raise ValueError(f"filters.num_perm ({self.num_perm}) must be a multiple of filters.bands ({self.bands})")
        for p in self.placeholder_patterns:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"filters.placeholder_patterns: invalid regex {p!r}: {e}") from e


def reject_reason(text: str | None, cfg: FilterConfig) -> str | None:
    """The first filter a single text fails ('too_short', 'too_long', 'placeholder'), or None."""
    if text is None or not text.strip():
        return "empty"
    n = count_words(text)
    if n < cfg.min_words:
        return "too_short"
    if n > cfg.max_words:
        return "too_long"
    for p in cfg.placeholder_patterns:
        if re.search(p, text):
            return "placeholder"
    return None


def _shingles(text: str, k: int) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i:i + k]) for i in range(max(1, len(words) - k + 1))}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def near_duplicates(texts: Sequence[str], threshold: float, shingle_size: int = 5,
                    num_perm: int = 128, bands: int = 32, seed: int = 0) -> dict[int, int]:
    """Indices of texts that nearly duplicate an earlier text, mapped to that earlier index.

    A pair is a near-duplicate when the Jaccard similarity of their word `shingle_size`-gram
    sets is >= `threshold`. Candidates come from `datasketch`'s MinHash LSH (`bands` bands of
    `num_perm / bands` rows); every candidate is checked exactly, so there are no false positives.
    A duplicate is not indexed: later texts are compared with the kept text, never with a dropped one.
    """
    if not texts:
        return {}
    from datasketch import MinHash, MinHashLSH

    sets = [_shingles(t, shingle_size) for t in texts]
    hashes = MinHash.bulk([[g.encode() for g in s] for s in sets], num_perm=num_perm, seed=seed)
    lsh = MinHashLSH(num_perm=num_perm, params=(bands, num_perm // bands))
    dup: dict[int, int] = {}
    for i, (s, mh) in enumerate(zip(sets, hashes)):
        match = next((j for j in sorted(lsh.query(mh)) if jaccard(s, sets[j]) >= threshold), None)
        if match is not None:
            dup[i] = match
            continue
        lsh.insert(i, mh)
    return dup


def apply_filters(texts: Sequence[str | None], cfg: FilterConfig, seed: int = 0) -> list[str | None]:
    """Per text: None if kept, else the rejection reason. Dedup runs on texts that pass the rest."""
    reasons: list[str | None] = [reject_reason(t, cfg) for t in texts]
    if cfg.dedup_threshold is not None:
        keep = [i for i, r in enumerate(reasons) if r is None]
        dup = near_duplicates([texts[i] for i in keep], cfg.dedup_threshold, cfg.shingle_size,
                              cfg.num_perm, cfg.bands, seed)
        for local in dup:
            reasons[keep[local]] = "near_duplicate"
    return reasons


def count_reasons(reasons: Iterable[str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in reasons:
        if r is not None:
            out[r] = out.get(r, 0) + 1
    return dict(sorted(out.items()))
