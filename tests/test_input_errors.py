"""Hand-made inputs: each mistake gets a clear message naming the key or file, before work starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from midtrain.data.corpus import load_pool, read_jsonl
from tests.conftest import compose_cfg, smoke_overrides, write_docs


def _cli(app: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", f"import sys; sys.argv[0] = 'midtrain-{app}'; from midtrain.{app} import main; main()", *args],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_eval_of_a_mistyped_run_dir_says_so_and_creates_nothing(tmp_path):
    typo = tmp_path / "runs" / "sweep" / "no-such-run"
    proc = _cli("eval", f"run_dir={typo}", "eval=probe", cwd=tmp_path)
    assert proc.returncode != 0
    assert f"run_dir={typo} does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not typo.exists() and not (tmp_path / "runs").exists()


def test_evaluate_called_directly_names_the_missing_run_dir(tmp_path):
    from midtrain.eval import evaluate

    cfg = compose_cfg("eval", [f"run_dir={tmp_path / 'nope'}", "eval=probe"])
    with pytest.raises(FileNotFoundError, match=r"run_dir .*nope does not exist"):
        evaluate(cfg)
    assert not (tmp_path / "nope").exists()


def test_jsonl_corpus_without_a_name_gets_a_plain_message(tmp_path):
    docs = write_docs(tmp_path / "docs.jsonl", 8)
    proc = _cli("train", "corpus=jsonl", f"corpus.path={docs}", "debug=smoke", f"paths.runs_root={tmp_path / 'runs'}",
                cwd=tmp_path)
    assert proc.returncode != 0
    assert "An error occurred during Hydra's exception formatting" not in proc.stderr
    assert "corpus.name" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def _jsonl_cfg(path: Path, **extra):
    return OmegaConf.create({"name": "x", "source": "jsonl", "path": str(path), "text_field": "text",
                             "num_docs": 2, "seed": 0, **extra})


def test_a_directory_as_corpus_path_is_named(tmp_path):
    with pytest.raises(ValueError, match=rf"corpus file is a directory, not a JSONL file: {tmp_path}"):
        load_pool(_jsonl_cfg(tmp_path))


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"text": "first"}\n{"text": "second"}\n')
    assert [r["text"] for r in read_jsonl(path)] == ["first", "second"]


def test_a_truncated_export_is_named_before_loading(tmp_path):
    from midtrain.models.build import build_causal_lm, build_tokenizer, export_hf, finished_stage_hf

    cfg = compose_cfg("train", smoke_overrides(tmp_path))
    tok = build_tokenizer(cfg.model)
    stage = tmp_path / "stage"
    stage.mkdir()
    export_hf(build_causal_lm(cfg.model, tok), tok, stage / "hf")
    (stage / "DONE").write_text("done\n")
    weights = stage / "hf" / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with pytest.raises(ValueError, match=rf"{weights}: not a complete safetensors file"):
        finished_stage_hf(stage)

    from midtrain.eval import evaluate

    with pytest.raises(ValueError, match=rf"{weights}: not a complete safetensors file"):
        evaluate(compose_cfg("eval", [f"run_dir={stage}", "eval=probe"]))


def test_exact_duplicate_documents_are_reported_and_optionally_dropped(tmp_path):
    from midtrain.data.datamodule import PackedDataModule
    from midtrain.models.build import build_tokenizer

    path = tmp_path / "same.jsonl"
    rows = [{"text": "The same document, word for word, every time."}] * 40 + [{"text": "One other document."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = smoke_overrides(tmp_path) + ["corpus=jsonl", f"corpus.path={path}", "corpus.name=same", "data.seq_len=64"]
    cfg = compose_cfg("train", base + ["corpus.num_docs=41"])
    tok = build_tokenizer(cfg.model)
    info = PackedDataModule(cfg, tok).prepare().info
    assert info["documents"] == 41 and info["duplicate_documents"] == 39

    cfg = compose_cfg("train", base + ["corpus.num_docs=2", "corpus.drop_duplicates=true"])
    info = PackedDataModule(cfg, tok).prepare().info
    assert info["documents"] == 2 and info["duplicate_documents"] == 0 and info["duplicates_dropped"] == 39
