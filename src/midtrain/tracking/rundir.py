"""Deterministic run directories and the files that hand work between stages.

A run directory is `${paths.runs_root}/${sweep_name}/${run_id}/` and holds `config.yaml`
(resolved, secrets removed), `checkpoints/`, `hf/`, `eval/`, `metrics.json` and `DONE`.
Stages hand over through these files only, so a requeued or re-run job picks up where the
last one stopped.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from midtrain.tracking.nested import merge
from midtrain.tracking.secrets import redact_config

log = logging.getLogger(__name__)

# Locks this process holds: {lock file: (open file, depth)}. flock conflicts between two open
# files even within one process, so nested holders (a pipeline and its stages) share one.
_HELD: dict[str, list] = {}


class RunDirLocked(RuntimeError):
    """Another process is writing into this run directory."""


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", suffix: str = ".tmp"):
    """A file to write `path` through: a temp file in the same folder, fsynced and renamed
    into place when the block ends, removed if it raises (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temp file in the same folder and a rename."""
    with atomic_open(path) as f:
        f.write(text)


def _check_finite(obj: Any, where: str = "") -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"refusing to write a non-finite value ({obj}) at '{where or '<root>'}'")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_finite(v, f"{where}[{i}]")


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically; NaN and infinities are refused rather than written."""
    _check_finite(data)
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the file in the error when it is corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def iter_jsonl(path: str | os.PathLike, on_bad: Callable[[int, str], None] | None = None
               ) -> Iterator[tuple[int, Any]]:
    """`(line number, value)` for every non-blank line of a JSONL file.

    Lines split at newlines only (a JSON string may hold U+2028 and other line separators); a
    UTF-8 byte-order mark is dropped. A line that is not UTF-8 or not JSON raises an error
    naming `file:line`, or, with `on_bad`, is passed to `on_bad(line number, reason)` and
    skipped (a crash-tolerant log whose last line may be cut short).
    """
    path = Path(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark (some editors write one)
            try:
                line = raw.decode("utf-8")
                value = json.loads(line) if line.strip() else _BLANK
            except UnicodeDecodeError as e:
                reason = f"not UTF-8 ({e.reason} at byte {e.start})"
            except json.JSONDecodeError as e:
                reason = f"not valid JSON ({e.msg})"
            else:
                if value is not _BLANK:
                    yield lineno, value
                continue
            if on_bad is None:
                raise ValueError(f"{path}:{lineno}: {reason}")
            on_bad(lineno, reason)


_BLANK = object()


class _Entry:
    """A fixed path inside the run directory, read as an attribute (`run.hf`)."""

    def __init__(self, *parts: str):
        self.parts = parts

    def __get__(self, run: "RunDir | None", owner: type) -> Any:
        return self if run is None else run.path.joinpath(*self.parts)


class RunDir:
    """One run (or one stage of a pipeline run) on disk."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> "RunDir":
        """The run directory named by `cfg.run_dir` (itself `${paths.runs_root}/${sweep_name}/${run_id}`)."""
        return cls(Path(str(cfg.run_dir)).expanduser().absolute())

    # Layout -------------------------------------------------------------------------
    config_path = _Entry("config.yaml")
    checkpoints = _Entry("checkpoints")
    last_checkpoint = _Entry("checkpoints", "last.ckpt")
    hf = _Entry("hf")
    eval_dir = _Entry("eval")
    metrics_path = _Entry("metrics.json")
    done_path = _Entry("DONE")
    lock_path = _Entry(".lock")

    # State --------------------------------------------------------------------------
    def is_done(self) -> bool:
        """`DONE` exists (see `done_problems` for whether it can be trusted)."""
        return self.done_path.exists()

    def done_hash(self) -> str | None:
        """The stage hash recorded in `DONE`, if any."""
        try:
            data = json.loads(self.done_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data.get("hash") if isinstance(data, dict) else None

    def done_problems(self, needs_hf: bool = True, expected_hash: str | None = None) -> list[str]:
        """Why `DONE` cannot be trusted: an empty list means the stage is finished.

        `DONE` counts only with a readable `metrics.json` (and `hf/` with its config and
        weights, where the stage exports a model) and, when given, the same stage hash.
        """
        if not self.done_path.exists():
            return ["DONE"]
        problems = []
        try:
            if not isinstance(read_json(self.metrics_path), dict):
                problems.append("metrics.json (not a JSON object)")
        except FileNotFoundError:
            problems.append("metrics.json")
        except (ValueError, OSError) as e:
            problems.append(f"metrics.json ({e})")
        if needs_hf:
            if not (self.hf / "config.json").is_file():
                problems.append("hf/config.json")
            elif not any(self.hf.glob("*.safetensors")) and not any(self.hf.glob("*.bin")):
                problems.append("hf/ weights")
        recorded = self.done_hash()
        if expected_hash is not None and recorded is not None and recorded != expected_hash:
            problems.append(f"matching hash (DONE has {recorded}, the config gives {expected_hash})")
        return problems

    def is_complete(self, needs_hf: bool = True, expected_hash: str | None = None, what: str | None = None) -> bool:
        """`DONE` with everything it vouches for; a `DONE` that lies is reported and ignored."""
        problems = self.done_problems(needs_hf, expected_hash)
        if problems and problems != ["DONE"]:
            log.warning("%s has DONE but no %s: redoing %s", self.path, ", ".join(problems), what or "it")
        return not problems

    def has_outputs(self) -> bool:
        """Anything a finished stage leaves besides its checkpoints: `hf/`, `metrics.json`, `DONE`."""
        return self.hf.exists() or self.metrics_path.exists() or self.done_path.exists()

    def clear_outputs(self, keep: tuple[str, ...] = (".lock", ".hydra_logs")) -> None:
        """Remove what a stage wrote (checkpoints, hf/, logs, metrics.json, DONE, ...) so that it
        runs again from scratch; the lock and Hydra's logs stay."""
        import shutil

        if not self.path.is_dir():
            return
        for p in self.path.iterdir():
            if p.name in keep:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)

    def mark_done(self, stage_hash: str | None = None) -> None:
        record = {"hash": stage_hash, "host": socket.gethostname(), "pid": os.getpid(),
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_text(self.done_path, json.dumps(record) + "\n")

    def read_metrics(self) -> dict:
        return read_json(self.metrics_path) if self.metrics_path.exists() else {}

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_json(self.metrics_path, metrics)

    def update_metrics(self, update: dict) -> dict:
        """Merge `update` into metrics.json (atomically) and return the result."""
        merged = merge(self.read_metrics(), update)
        self.write_metrics(merged)
        return merged

    def save_config(self, cfg: DictConfig) -> None:
        """Write the resolved config with secrets removed."""
        resolved = OmegaConf.to_container(cfg, resolve=True)
        atomic_write_text(self.config_path, OmegaConf.to_yaml(redact_config(resolved)))

    def latest_checkpoint(self) -> Path | None:
        """`checkpoints/last.ckpt` if present, else the newest step checkpoint, else None."""
        if self.last_checkpoint.exists():
            return self.last_checkpoint
        ckpts = sorted(self.checkpoints.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
        return ckpts[-1] if ckpts else None

    @contextmanager
    def lock(self, wait: bool = False, poll_s: float = 2.0):
        """Hold an exclusive `fcntl.flock` on `<run dir>/.lock` while writing into the directory.

        A second process fails with `RunDirLocked` naming the holder's host and pid, or, with
        `wait=True`, blocks until the holder is gone. Re-entrant within one process.
        """
        key = str(self.lock_path.absolute())
        if key in _HELD:
            _HELD[key][1] += 1
            try:
                yield
            finally:
                _HELD[key][1] -= 1
            return
        self.path.mkdir(parents=True, exist_ok=True)
        f = open(self.lock_path, "a+", encoding="utf-8")
        try:
            while True:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = self._holder()
                    if not wait:
                        raise RunDirLocked(
                            f"{self.path} is being written by {holder}; one process at a time writes into a run "
                            "directory (wait for it, or pass lock=wait to queue behind it)"
                        ) from None
                    log.info("%s is being written by %s; waiting", self.path, holder)
                    time.sleep(poll_s)
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
            f.flush()
            _HELD[key] = [f, 1]
            try:
                yield
            finally:
                del _HELD[key]
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        finally:
            f.close()

    def _holder(self) -> str:
        try:
            info = json.loads(self.lock_path.read_text(encoding="utf-8"))
            return f"pid {info['pid']} on host {info['host']} (since {info['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process (its host and pid are not yet written)"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"
