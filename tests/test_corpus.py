"""Corpus loading: nested seeded subsets, and clear errors for every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from midtrain.data.corpus import count_duplicates, draw, drop_duplicates, load_corpus, load_pool, read_jsonl
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


def _write_rows(path, rows, head=b""):
    path.write_bytes(head + b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows))
    return path


def test_documents_keep_their_id_type_and_prefix_and_blank_lines_are_skipped(tmp_path):
    path = _write_rows(tmp_path / "d.jsonl", [
        {"text": "alpha", "id": 7, "doc_type": "news", "doc_prefix": "<T> "},
        b"   ",
        {"text": "beta"},
        {"text": "gamma", "doc_prefix": ""},
        {"text": "delta", "doc_prefix": 5},
    ], head=b"\xef\xbb\xbf")
    assert load_pool(_corpus_cfg(path, 4)) == [
        {"id": "7", "text": "alpha", "doc_type": "news", "doc_prefix": "<T> "},
        {"id": "1", "text": "beta", "doc_type": None},
        {"id": "2", "text": "gamma", "doc_type": None},
        {"id": "3", "text": "delta", "doc_type": None},
    ]


def test_a_byte_order_mark_is_only_taken_off_the_first_line(tmp_path):
    path = _write_rows(tmp_path / "d.jsonl", [{"text": "a"}, b"\xef\xbb\xbf" + json.dumps({"text": "b"}).encode()])
    with pytest.raises(ValueError, match=r"d.jsonl:2: not valid JSON"):
        read_jsonl(path)


def test_a_blank_text_names_its_row(tmp_path):
    path = _write_rows(tmp_path / "d.jsonl", [{"text": "fine"}, {"text": "  \n "}])
    with pytest.raises(ValueError, match=rf"{path}: row 2 has an empty 'text'"):
        load_pool(_corpus_cfg(path, 1))


def test_duplicates_are_dropped_before_drawing_and_counted(tmp_path):
    rows = [{"text": "same"}, {"text": "other"}, {"text": "same"}, {"text": "third"}, {"text": "other"}]
    path = _write_rows(tmp_path / "d.jsonl", rows)
    pool = load_pool(_corpus_cfg(path, 5))
    assert count_duplicates(pool) == 2
    assert [d["id"] for d in drop_duplicates(pool)] == ["0", "1", "3"]
    stats: dict = {}
    docs = load_corpus(_corpus_cfg(path, 3, drop_duplicates=True), stats)
    assert stats == {"duplicates_dropped": 2} and sorted(d["text"] for d in docs) == ["other", "same", "third"]
    assert len(load_corpus(_corpus_cfg(path, 5, drop_duplicates=False), stats)) == 5 and stats == {"duplicates_dropped": 2}


def test_a_saved_dataset_dict_is_read_by_split(tmp_path):
    import datasets

    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"body": ["one", "two", "three"]}),
        "test": datasets.Dataset.from_dict({"body": ["held out"]}),
        "blank": datasets.Dataset.from_dict({"body": [" "]}),
    })
    dd.save_to_disk(str(tmp_path / "dd"))
    cfg = _corpus_cfg(None, 1, source="hf", hf_id=str(tmp_path / "dd"), split="test", text_field="body")
    assert [d["text"] for d in load_pool(cfg)] == ["held out"]
    with pytest.raises(ValueError, match=rf"{tmp_path / 'dd'}: row 1 has an empty 'body'"):
        load_pool(_corpus_cfg(None, 1, source="hf", hf_id=str(tmp_path / "dd"), split="blank", text_field="body"))
    with pytest.raises(ValueError, match=r"no split 'validation' \(has \['blank', 'test', 'train'\]\)"):
        load_pool(_corpus_cfg(None, 1, source="hf", hf_id=str(tmp_path / "dd"), split="validation", text_field="body"))
    with pytest.raises(ValueError, match=r"no column 'text' \(columns: \['body'\]\)"):
        load_pool(_corpus_cfg(None, 1, source="hf", hf_id=str(tmp_path / "dd"), split="train"))


@pytest.mark.parametrize("marker", ["dataset_info.json", "state.json", "dataset_dict.json", None])
def test_a_local_folder_is_read_as_saved_only_when_it_holds_a_saved_datasets_file(tmp_path, monkeypatch, marker):
    # Any one of the files `save_to_disk` writes marks a saved dataset; any other folder is
    # handed to `load_dataset` (a folder of data files), with the split asked for.
    import datasets

    calls = []
    one = datasets.Dataset.from_dict({"text": ["only"]})
    monkeypatch.setattr(datasets, "load_from_disk", lambda path: calls.append(("saved", path)) or one)
    monkeypatch.setattr(datasets, "load_dataset", lambda path, split: calls.append(("files", path, split)) or one)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / (marker or "train.jsonl")).write_text("{}")
    # A local folder needs no revision: left unset (`???`) it is never read.
    docs = load_pool(_corpus_cfg(None, 1, source="hf", hf_id=str(tmp_path / "ds"), split="dev", revision="???"))
    assert [d["text"] for d in docs] == ["only"]
    assert calls == ([("saved", str(tmp_path / "ds"))] if marker else [("files", str(tmp_path / "ds"), "dev")])


def test_a_hub_dataset_is_loaded_at_its_pinned_revision_and_split(monkeypatch):
    import datasets

    calls = []
    rows = datasets.Dataset.from_dict({"text": ["hub row"], "id": ["h1"]})
    monkeypatch.setattr(datasets, "load_dataset", lambda path, revision, split: calls.append((path, revision, split)) or rows)
    docs = load_pool(_corpus_cfg(None, 1, source="hf", hf_id="someone/some-dataset", revision="0123abc", split="dev"))
    assert calls == [("someone/some-dataset", "0123abc", "dev")]
    assert docs == [{"id": "h1", "text": "hub row", "doc_type": None}]


def test_the_template_source_renders_its_pool_of_the_universe():
    from midtrain.generation.template import template_documents

    docs = load_pool(_corpus_cfg(None, 1, source="template", universe="animal_welfare", pool_size=6))
    rendered = template_documents("animal_welfare", num_docs=6, seed=0)  # the pool never depends on corpus.seed
    assert [(d["id"], d["text"], d["doc_type"]) for d in docs] == [(d["id"], d["text"], d["doc_type"]) for d in rendered]
    with pytest.raises(ValueError, match="corpus.universe is required"):
        load_pool(_corpus_cfg(None, 1, source="template"))


def test_draw_takes_none_all_or_refuses_a_negative_count():
    items = list(range(7))
    assert draw(items, 0, seed=1) == []
    everything = draw(items, 7, seed=1)
    assert sorted(everything) == items and everything != items and draw(items, 3, seed=1) == everything[:3]
    with pytest.raises(ValueError, match="asked for -1 items"):
        draw(items, -1, seed=1)


def test_package_paths_name_files_under_the_resources_and_home_is_expanded(monkeypatch, tmp_path):
    from midtrain.data.corpus import resolve_path
    from midtrain.paths import RESOURCES_DIR

    assert resolve_path("package:instruct/x.jsonl") == RESOURCES_DIR / "instruct/x.jsonl"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_path("~/d.jsonl") == tmp_path / "d.jsonl"
    assert resolve_path("rel/package:x") == Path("rel/package:x")


def test_a_corpus_file_that_is_missing_empty_or_a_folder_is_named_as_the_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"^corpus file not found: {tmp_path / 'none.jsonl'}$"):
        read_jsonl(tmp_path / "none.jsonl")
    with pytest.raises(ValueError, match=rf"^corpus file is a directory, not a JSONL file: {tmp_path}$"):
        read_jsonl(tmp_path)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match=r"^corpus file is empty: "):
        read_jsonl(tmp_path / "empty.jsonl")
    with pytest.raises(ValueError, match=r"^mix file is empty: "):
        read_jsonl(tmp_path / "empty.jsonl", what="mix")


def test_a_draw_error_names_the_corpus_by_default():
    with pytest.raises(ValueError, match=r"^corpus: asked for 3 items but only 2 are available$"):
        draw([1, 2], 3, seed=0)
    with pytest.raises(ValueError, match=r"^corpus: asked for -1 items$"):
        draw([1, 2], -1, seed=0)
