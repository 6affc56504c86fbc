"""Corpus loading: nested seeded subsets, and clear errors for every kind of bad input."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from midtrain.data.corpus import draw, load_corpus, read_jsonl
from tests.conftest import write_docs


def _corpus_cfg(path, n, seed=0, **kw):
    base = {"name": "c", "source": "jsonl", "path": str(path) if path else None, "universe": None, "hf_id": None, "revision": None,
            "split": "train", "text_field": "text", "num_docs": n, "seed": seed, "pool_size": None,
            "doc_prefix": "", "mix": None}
    base.update(kw)
    return OmegaConf.create(base)


def test_same_seed_same_documents_and_nested_subsets(tmp_path):
    path = write_docs(tmp_path / "d.jsonl", 50)
    a = [d["id"] for d in load_corpus(_corpus_cfg(path, 20, seed=3))]
    b = [d["id"] for d in load_corpus(_corpus_cfg(path, 20, seed=3))]
    bigger = [d["id"] for d in load_corpus(_corpus_cfg(path, 35, seed=3))]
    other = [d["id"] for d in load_corpus(_corpus_cfg(path, 20, seed=4))]
    assert a == b
    assert bigger[:20] == a
    assert other != a
    assert len(set(bigger)) == 35


def test_draw_rejects_more_than_available():
    with pytest.raises(ValueError, match="asked for 6 items but only 5"):
        draw(list(range(5)), 6, seed=0)


def test_num_docs_larger_than_corpus(tmp_path):
    path = write_docs(tmp_path / "d.jsonl", 10)
    with pytest.raises(ValueError, match="num_docs.*asked for 11 items but only 10"):
        load_corpus(_corpus_cfg(path, 11))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_corpus(_corpus_cfg(tmp_path / "nope.jsonl", 1))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.*empty.jsonl"):
        load_corpus(_corpus_cfg(empty, 1))


def test_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "ok"}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        read_jsonl(path)


def test_non_utf8_line_names_file_and_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(json.dumps({"text": "ok"}).encode() + b"\n" + b'{"text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"latin.jsonl:2: not UTF-8"):
        read_jsonl(path)


def test_missing_text_field(tmp_path):
    path = tmp_path / "notext.jsonl"
    path.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match="row 1 has no string field 'text'"):
        load_corpus(_corpus_cfg(path, 1))


def test_local_hf_dataset_directory(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"text": [f"document number {i}" for i in range(12)], "id": list(range(12))})
    ds.save_to_disk(str(tmp_path / "ds"))
    docs = load_corpus(_corpus_cfg(None, 5, source="hf", hf_id=str(tmp_path / "ds")))
    assert len(docs) == 5 and all(d["text"].startswith("document number") for d in docs)


def test_hub_dataset_requires_revision():
    with pytest.raises(ValueError, match="corpus.revision is required"):
        load_corpus(_corpus_cfg(None, 5, source="hf", hf_id="someone/some-dataset"))


def test_unknown_source():
    with pytest.raises(ValueError, match="corpus.source='s3'"):
        load_corpus(_corpus_cfg(None, 5, source="s3"))
