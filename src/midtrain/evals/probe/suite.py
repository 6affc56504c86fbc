"""The `probe` suite: `conf/eval/probe.yaml` -> log-likelihood margins on `<run_dir>/hf`.

The one suite scored without Inspect: it reads the run's weights with transformers, needs no
grader and no sampling, so only its own settings key its result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING, DictConfig

from midtrain.evals.base import PlannedTask, RunContext, Suite

log = logging.getLogger(__name__)


@dataclass
class ProbeSettings:
    batch_size: int = MISSING
    pairs_path: Optional[str] = MISSING
    heldout: bool = MISSING
    heldout_pairs_path: Optional[str] = MISSING
    device: Optional[str] = MISSING
    dtype: Optional[str] = MISSING

    RANGES = {"batch_size": ("int", 1, None, True, False)}


class Probe(Suite):
    name = "probe"
    schema = ProbeSettings
    through_inspect = False
    reads_hf = True

    def check(self, cfg: DictConfig, graders: list) -> None:
        """The pair files load and the dtype names a torch dtype."""
        from midtrain.evals.probe import load_pairs

        pc = self.settings(cfg)
        for key in ("pairs_path", "heldout_pairs_path"):
            if pc.get(key):
                load_pairs(pc[key])
        if pc.dtype is not None:
            import torch

            if not isinstance(getattr(torch, str(pc.dtype), None), torch.dtype):
                raise ValueError(f"eval.probe.dtype={pc.dtype!r}: not a torch dtype (e.g. float32, bfloat16)")

    def plan(self, cfg: DictConfig, graders: list, limit: int | None) -> list[PlannedTask]:
        return [PlannedTask(self.name, self.name)]

    def run(self, planned: PlannedTask, ctx: RunContext) -> dict:
        from midtrain.evals.probe import HELDOUT_PAIRS_PATH, load_pairs, probe_run_dir

        pc = self.settings(ctx.cfg)
        pairs = load_pairs(pc.pairs_path) if pc.pairs_path else None
        extra = {"heldout": load_pairs(pc.heldout_pairs_path or HELDOUT_PAIRS_PATH)} if pc.heldout else {}
        result = probe_run_dir(ctx.run_dir, pairs=pairs, batch_size=int(pc.batch_size), device=pc.device,
                               dtype=pc.dtype, extra_sets=extra)
        result["complete"] = True
        log.info("probe margin %.4f %s (accuracy %.3f)", result["margin"], result["unit"], result["accuracy"])
        return result


SUITE = Probe()
