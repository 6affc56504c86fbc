"""Load a corpus of documents and draw `num_docs` of them as nested subsets.

Sources: a JSONL file (one object a line with `text`; optional `id`, `doc_type`), a Hugging
Face dataset (hub id with a pinned revision, or a local directory), or the offline template
generator. Documents are drawn by a seeded permutation, so the same seed gives the same
documents and N documents are a prefix of N+k documents: doc-count sweeps compare like with like.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from midtrain.paths import RESOURCES_DIR
from midtrain.tracking.rundir import iter_jsonl

SOURCES = ("jsonl", "hf", "template")


def resolve_path(path: str) -> Path:
    """A filesystem path; `package:<rel>` names a file under the package's resources/."""
    if str(path).startswith("package:"):
        return RESOURCES_DIR / str(path)[len("package:") :]
    return Path(str(path)).expanduser()


def read_jsonl(path: str | Path, what: str = "corpus") -> list[dict]:
    """Read JSON objects, one a line; errors name the file and line."""
    path = resolve_path(str(path))
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{what} file is a directory, not a JSONL file: {path}")
    rows: list[dict] = []
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        rows.append(obj)
    if not rows:
        raise ValueError(f"{what} file is empty: {path}")
    return rows


def _documents_from_rows(rows: list[dict], text_field: str, origin: str) -> list[dict]:
    docs = []
    for i, row in enumerate(rows):
        text = row.get(text_field)
        if not isinstance(text, str):
            raise ValueError(f"{origin}: row {i + 1} has no string field {text_field!r}")
        if not text.strip():
            raise ValueError(f"{origin}: row {i + 1} has an empty {text_field!r}")
        doc = {"id": str(row.get("id", i)), "text": text, "doc_type": row.get("doc_type")}
        if isinstance(row.get("doc_prefix"), str) and row["doc_prefix"]:
            doc["doc_prefix"] = row["doc_prefix"]  # a tag the generator asked for (trained without loss)
        docs.append(doc)
    return docs


def load_hf_rows(hf_id: str, revision: str | None, split: str, what: str) -> list[dict]:
    """Rows of a Hugging Face dataset: a local directory (saved or loadable), or a hub id at a pinned revision.

    Args:
        what: the config node naming the dataset (e.g. "corpus", "instruct"), for error messages.
    """
    import datasets

    local = Path(str(hf_id)).expanduser()
    if local.exists():
        saved = any((local / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))
        ds = datasets.load_from_disk(str(local)) if saved else datasets.load_dataset(str(local), split=split)
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"{local}: no split {split!r} (has {sorted(ds)})")
            ds = ds[split]
    else:
        if not revision:
            raise ValueError(f"{what}.revision is required for the hub dataset {hf_id!r}: pin a commit hash")
        ds = datasets.load_dataset(str(hf_id), revision=str(revision), split=split)
    return [dict(r) for r in ds]


def load_pool(cfg: DictConfig) -> list[dict]:
    """All documents of a corpus, in their stored order."""
    source = cfg.source
    if source not in SOURCES:
        raise ValueError(f"corpus.source={source!r}: expected one of {', '.join(SOURCES)}")
    if source == "jsonl":
        if not cfg.path:
            raise ValueError("corpus.path is required when corpus.source=jsonl")
        return _documents_from_rows(read_jsonl(cfg.path), cfg.text_field, str(resolve_path(cfg.path)))
    if source == "hf":
        if not cfg.hf_id:
            raise ValueError("corpus.hf_id is required when corpus.source=hf")
        # A local folder needs no revision; a hub id without one fails in load_hf_rows, by name.
        revision = None if OmegaConf.is_missing(cfg, "revision") else cfg.revision
        rows = load_hf_rows(cfg.hf_id, revision, cfg.split, "corpus")
        if rows and cfg.text_field not in rows[0]:
            raise ValueError(f"{cfg.hf_id}: no column {cfg.text_field!r} (columns: {sorted(rows[0])})")
        return _documents_from_rows(rows, cfg.text_field, str(cfg.hf_id))
    from midtrain.generation.template import template_documents

    if not cfg.universe:
        raise ValueError("corpus.universe is required when corpus.source=template")
    pool = template_documents(str(cfg.universe), num_docs=int(cfg.pool_size), seed=0)
    return _documents_from_rows(pool, "text", f"template:{cfg.universe}")


def draw(items: list[Any], n: int, seed: int, what: str = "corpus") -> list[Any]:
    """The first `n` items of a seeded permutation: same seed, same items; n is a prefix of n+k."""
    if n < 0:
        raise ValueError(f"{what}: asked for {n} items")
    if n > len(items):
        raise ValueError(f"{what}: asked for {n} items but only {len(items)} are available")
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in order[:n]]


def drop_duplicates(docs: list[dict]) -> list[dict]:
    """The documents without exact repeats of an earlier document's text (first one kept)."""
    seen: set[str] = set()
    out = []
    for d in docs:
        if d["text"] not in seen:
            seen.add(d["text"])
            out.append(d)
    return out


def count_duplicates(docs: list[dict]) -> int:
    """How many documents repeat an earlier document's text exactly."""
    return len(docs) - len({d["text"] for d in docs})


def load_corpus(cfg: DictConfig, stats: dict | None = None) -> list[dict]:
    """The `cfg.num_docs` documents a run trains on (from the pool without exact repeats when
    `cfg.drop_duplicates`; `stats["duplicates_dropped"]` then says how many went)."""
    pool = load_pool(cfg)
    if cfg.get("drop_duplicates"):
        unique = drop_duplicates(pool)
        if stats is not None:
            stats["duplicates_dropped"] = len(pool) - len(unique)
        pool = unique
    return draw(pool, int(cfg.num_docs), int(cfg.seed), what=f"corpus {cfg.name} (num_docs)")
