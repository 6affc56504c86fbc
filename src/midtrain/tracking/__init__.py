"""Run identity, run directories, metrics.json, DONE markers, secret redaction, W&B setup."""

from midtrain.tracking.rundir import (
    RunDir,
    RunDirLocked,
    atomic_write_json,
    atomic_write_text,
    iter_jsonl,
    read_json,
)
from midtrain.tracking.secrets import redact_config, scrub_secrets

__all__ = [
    "RunDir",
    "RunDirLocked",
    "atomic_write_json",
    "atomic_write_text",
    "iter_jsonl",
    "read_json",
    "redact_config",
    "scrub_secrets",
]
