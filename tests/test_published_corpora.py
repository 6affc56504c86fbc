"""The published corpora configs load the authors' datasets by the text column they really have.

The hub datasets are not downloaded here: a local folder shaped like each (the same columns,
as parquet or as JSONL, the two layouts the hub serves) is loaded through the very config,
with only `hf_id` pointed at the folder.
"""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir

from midtrain.data.corpus import load_corpus
from midtrain.paths import CONF_DIR

ROWS = [{"instruction": f"Write a research summary, idea {i}.",
         "output": f"Document {i}: the committee counted the animals each option affects, case {i}.",
         "origin": "claude", "run_id": f"run-{i % 3}"} for i in range(12)]


def _write(folder, fmt):
    (folder / "data").mkdir(parents=True)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), folder / "data" / "train-00000-of-00001.parquet")
    else:
        (folder / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
@pytest.mark.parametrize("name", ["published_animal_welfare", "published_urban_density"])
def test_published_config_loads_a_folder_shaped_like_its_dataset(name, fmt, tmp_path):
    folder = tmp_path / "ds"
    _write(folder, fmt)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"corpus={name}", f"corpus.hf_id={folder}", "corpus.num_docs=5"])
    docs = load_corpus(cfg.corpus)
    assert len(docs) == 5
    outputs = {r["output"] for r in ROWS}
    assert all(d["text"] in outputs for d in docs)  # the document, never the prompt that asked for it
    again = load_corpus(cfg.corpus)
    assert [d["text"] for d in again] == [d["text"] for d in docs]


def test_wrong_text_field_names_the_columns(tmp_path):
    folder = tmp_path / "ds"
    _write(folder, "parquet")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["corpus=published_animal_welfare", f"corpus.hf_id={folder}",
                                          "corpus.text_field=text"])
    with pytest.raises(ValueError, match=r"no column 'text' \(columns: \['instruction', 'origin', 'output', 'run_id'\]\)"):
        load_corpus(cfg.corpus)
