"""Checkpoints that are whole or absent, and a resume that survives one that is not.

`AtomicCheckpointIO` is Lightning's `TorchCheckpointIO` with one change: the file is written
under a temporary name in the checkpoint's own directory, flushed and fsynced, then renamed.
Lightning's own atomic save stages the file in the system temp directory and moves it, which
is a copy when the runs root is on another filesystem (cluster storage): a full disk or a kill
during that copy left a truncated checkpoint under its final name, which every later resume
picked up and died on. A rename within one directory is atomic, so a reader sees the previous
checkpoint or the new one, never part of one.

`newest_loadable_checkpoint` is the resume side: it tries the checkpoints of a directory from
the newest, moves any that cannot be read aside (`<name>.broken`, with a warning naming it) and
returns the first that loads, or None to start from the beginning.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems do not fsync directories
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """`torch.save` to `.<name>.<random>.tmp` beside the target, fsync, rename (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        import torch

        from midtrain.tracking.rundir import atomic_open

        path = Path(path)
        with atomic_open(path, "wb", suffix=TMP_SUFFIX) as f:
            torch.save(checkpoint, f)
        _fsync_dir(path.parent)


def remove_partial_saves(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Delete temporary files a killed save left in `ckpt_dir`; return what was removed."""
    removed = []
    for p in Path(ckpt_dir).glob(f".*.ckpt.*{TMP_SUFFIX}"):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def check_checkpoint(path: Path) -> None:
    """Raise when `path` cannot be read as a torch checkpoint (truncated, empty, not a zip archive).

    Reads the archive's directory and unpickles the checkpoint with its tensors memory-mapped,
    so the check costs little even for a large checkpoint.
    """
    import torch

    if path.is_dir():  # a sharded (distributed) checkpoint: torch.distributed.checkpoint owns its format
        if not (path / ".metadata").is_file():
            raise ValueError("sharded checkpoint without .metadata")
        return
    with zipfile.ZipFile(path) as z:  # a truncated file has no central directory
        if not any(n.endswith("data.pkl") for n in z.namelist()):
            raise ValueError("no data.pkl in the archive")
    torch.load(path, map_location="cpu", mmap=True, weights_only=False)


def checkpoint_candidates(ckpt_dir: Path) -> list[Path]:
    """The checkpoints in `ckpt_dir`, newest first (`last.ckpt` before a step file of the same time)."""
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.glob("*.ckpt") if not p.name.startswith(".")]
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name == "last.ckpt"), reverse=True)


def move_aside(path: Path) -> Path:
    """Rename a broken checkpoint to `<name>.broken` (`.broken.1`, ... if taken)."""
    target, k = path.with_name(path.name + ".broken"), 0
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.broken.{k}")
    path.rename(target)
    return target


def newest_loadable_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint in `ckpt_dir` that loads; broken newer ones are moved aside with a warning."""
    ckpt_dir = Path(ckpt_dir)
    for p in remove_partial_saves(ckpt_dir):
        log.warning("removed %s, left by an interrupted checkpoint save", p)
    for path in checkpoint_candidates(ckpt_dir):
        try:
            check_checkpoint(path)
        except Exception as e:  # BadZipFile, RuntimeError from torch, EOFError, pickle errors
            aside = move_aside(path)
            log.warning("checkpoint %s cannot be read (%s: %s); moved aside to %s, trying the one before",
                        path, type(e).__name__, e, aside.name)
            continue
        return path
    return None
