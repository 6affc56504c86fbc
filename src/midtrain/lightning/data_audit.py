"""A record of the data each rank consumed, for audits of sharding, order and resume.

With `data.audit: true` every rank appends one JSON line per micro-batch to
`<run_dir>/logs/data.rank<r>.jsonl`: the index of the micro-batch, the packed rows it trained on and the input segments
(documents, or conversations for SFT, by their index in the stage's draw order) inside them.
A resumed attempt appends to the same file, so the file of a finished run lists exactly what
the run saw, once per consumption.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


class DataAudit(pl.Callback):
    """Append each micro-batch's rows and segments to `logs/data.rank<r>.jsonl`.

    Args:
        logs_dir: the run's `logs/` directory.
        row_segments: per packed row, the segment index of each piece (`PackedRows.row_segments`).
    """

    def __init__(self, logs_dir: str | Path, row_segments: list[list[int]]):
        self.logs_dir = Path(logs_dir)
        self.row_segments = row_segments
        self._file: Any = None
        self._consumed = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loader = trainer.train_dataloader
        # The micro-batch index continues where a resumed attempt's data position starts.
        self._consumed = int(getattr(getattr(loader, "_skip_sampler", None), "skip", 0))
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.logs_dir / f"data.rank{trainer.global_rank}.jsonl", "a", encoding="utf-8")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # After the batch, so a batch that a preempted attempt never trained is not on record.
        rows = list(batch.get("_rows", []))
        segments = sorted({s for r in rows for s in self.row_segments[r]})
        self._file.write(json.dumps({"micro_batch": self._consumed, "rows": rows, "segments": segments}) + "\n")
        self._file.flush()
        self._consumed += 1

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._file = None
