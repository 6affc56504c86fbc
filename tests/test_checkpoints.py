"""Checkpoints are whole or absent; a broken one never blocks a rerun; export leftovers go.

Includes a disk-full run on a small tmpfs (needs permission to mount; skipped otherwise).
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

from midtrain.lightning.checkpoint_io import AtomicCheckpointIO, newest_loadable_checkpoint
from midtrain.tracking import RunDir
from midtrain.train import train
from tests.conftest import compose_cfg, smoke_overrides
from tests.test_train import CrashAfter

OVERRIDES = ["trainer.checkpoint_every_n_steps=2", "corpus.num_docs=48", "data.seq_len=128"]


def _save(io: AtomicCheckpointIO, path: Path, step: int, mtime: float) -> None:
    io.save_checkpoint({"global_step": step, "w": torch.arange(1000.0)}, path)
    os.utime(path, (mtime, mtime))


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def test_the_newest_readable_checkpoint_is_used_and_broken_ones_are_moved_aside(tmp_path, caplog):
    io, d, now = AtomicCheckpointIO(), tmp_path / "checkpoints", time.time()
    _save(io, d / "step0000002.ckpt", 2, now - 30)
    _save(io, d / "step0000004.ckpt", 4, now - 20)
    _save(io, d / "last.ckpt", 4, now - 10)
    (d / ".step0000006.ckpt.abc123.tmp").write_bytes(b"half a checkpoint")  # a kill during a save
    _truncate(d / "last.ckpt")
    (d / "step0000004.ckpt").write_bytes(b"")

    with caplog.at_level(logging.WARNING, logger="midtrain.lightning.checkpoint_io"):
        assert newest_loadable_checkpoint(d) == d / "step0000002.ckpt"
    assert f"checkpoint {d / 'last.ckpt'} cannot be read" in caplog.text
    assert f"checkpoint {d / 'step0000004.ckpt'} cannot be read" in caplog.text
    assert sorted(p.name for p in d.iterdir()) == ["last.ckpt.broken", "step0000002.ckpt", "step0000004.ckpt.broken"]

    _truncate(d / "step0000002.ckpt")
    assert newest_loadable_checkpoint(d) is None  # nothing readable: start from the beginning
    assert not list(d.glob("*.ckpt"))


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_partial_file(tmp_path, monkeypatch):
    io, d = AtomicCheckpointIO(), tmp_path / "c"
    io.save_checkpoint({"global_step": 2}, d / "last.ckpt")

    def full_disk(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"global_step": 4}, d / "last.ckpt")
    monkeypatch.undo()
    assert [p.name for p in d.iterdir()] == ["last.ckpt"]
    assert torch.load(d / "last.ckpt", weights_only=False)["global_step"] == 2


def test_a_truncated_last_checkpoint_does_not_block_the_rerun(tmp_path, docs_jsonl, caplog):
    cfg = compose_cfg("train", smoke_overrides(tmp_path, docs_jsonl) + OVERRIDES)
    with pytest.raises(SystemExit, match="killed after step 5"):
        train(cfg, callbacks=[CrashAfter(5)])
    run = RunDir.from_cfg(cfg)
    _truncate(run.last_checkpoint)
    with caplog.at_level(logging.WARNING):
        metrics = train(cfg)
    assert run.is_done() and metrics["train"]["global_steps"] == metrics["train"]["steps"]
    assert f"checkpoint {run.last_checkpoint} cannot be read" in caplog.text
    assert (run.checkpoints / "last.ckpt.broken").exists()


def test_export_leftovers_are_removed_on_the_next_run(tmp_path, docs_jsonl, monkeypatch):
    import midtrain.models.build as build

    cfg = compose_cfg("train", smoke_overrides(tmp_path, docs_jsonl) + OVERRIDES)
    run = RunDir.from_cfg(cfg)

    def killed_mid_export(model, tokenizer, out_dir, state_dict=None):
        tmp = Path(out_dir).parent / ".hf-killed"
        tmp.mkdir()
        (tmp / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt  # the kill arrives while the export is being written

    monkeypatch.setattr(build, "export_hf", killed_mid_export)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert (run.path / ".hf-killed").is_dir()
    monkeypatch.undo()
    train(cfg)
    assert run.is_done() and not list(run.path.glob(".hf-*"))


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs (a full disk for checkpoints of the tiny model); skipped where mounting is not allowed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_leaves_no_truncated_checkpoint_and_the_rerun_finishes(tmp_path, docs_jsonl, small_tmpfs):
    cfg = compose_cfg("train", smoke_overrides(tmp_path, docs_jsonl) + OVERRIDES
                      + [f"paths.runs_root={small_tmpfs / 'runs'}", "model.config.hidden_size=128"])
    with pytest.raises((OSError, RuntimeError)):
        train(cfg)  # the first checkpoint does not fit
    run = RunDir.from_cfg(cfg)
    leftovers = [p.name for p in run.checkpoints.iterdir()] if run.checkpoints.exists() else []
    assert leftovers == [], f"partial checkpoint files left: {leftovers}"

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)  # space is freed
    metrics = train(cfg)
    assert run.is_done() and metrics["train"]["global_steps"] == metrics["train"]["steps"]
