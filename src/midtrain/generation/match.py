"""Matched controls: what a control corpus copies from its treatment corpus.

The control is written slot by slot against the treatment: slot i takes the document type and
the word count of treatment document i (mod the treatment's size), so the type mix matches
exactly and the length profile closely; the manifest reports the KS distance of token lengths.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from midtrain.generation.filters import count_tokens, count_words

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


def load_match(path: str | os.PathLike) -> MatchProfile:
    """Read a treatment corpus (its folder or its documents.jsonl), naming the file and line on bad records."""
    p = Path(path).expanduser()
    file = p / DOCUMENTS_FILE if p.is_dir() else p
    if not file.is_file():
        raise FileNotFoundError(f"match_to={path!s}: no {file} (give a corpus folder holding {DOCUMENTS_FILE})")
    types, words, tokens = [], [], []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            text = rec["text"]
            if not isinstance(text, str):
                raise TypeError(f"'text' is {type(text).__name__}, not a string")
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{file}:{n}: not a document record with a 'text' string ({e})") from e
        types.append(rec.get("doc_type") or "unknown")
        words.append(count_words(text))
        tokens.append(count_tokens(text))
    if not words:
        raise ValueError(f"match_to={path!s}: {file} holds no documents")
    return MatchProfile(reference=str(file), doc_types=types, words=words, tokens=tokens)
