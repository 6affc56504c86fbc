"""Deterministic run directories and the files that hand work between stages.

A run directory is `${paths.runs_root}/${sweep_name}/${run_id}/` and holds `config.yaml`
(resolved, secrets removed), `checkpoints/`, `hf/`, `eval/`, `metrics.json` and `DONE`.
Stages hand over through these files only, so a requeued or re-run job picks up where the
last one stopped.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from midtrain.tracking.secrets import redact_config


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def deep_merge(base: dict, update: dict) -> dict:
    """Recursively merge `update` into a copy of `base` (dicts merge, other values replace)."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class RunDir:
    """One run (or one stage of a pipeline run) on disk."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> "RunDir":
        """The run directory named by `cfg.run_dir` (itself `${paths.runs_root}/${sweep_name}/${run_id}`)."""
        return cls(Path(str(cfg.run_dir)).expanduser().absolute())

    # Layout -------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def hf(self) -> Path:
        return self.path / "hf"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def done_path(self) -> Path:
        return self.path / "DONE"

    # State --------------------------------------------------------------------------
    def is_done(self) -> bool:
        return self.done_path.exists()

    def mark_done(self) -> None:
        atomic_write_text(self.done_path, "done\n")

    def clear_done(self) -> None:
        self.done_path.unlink(missing_ok=True)

    def read_metrics(self) -> dict:
        return read_json(self.metrics_path) if self.metrics_path.exists() else {}

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_json(self.metrics_path, metrics)

    def update_metrics(self, update: dict) -> dict:
        """Merge `update` into metrics.json (atomically) and return the result."""
        merged = deep_merge(self.read_metrics(), update)
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

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"
