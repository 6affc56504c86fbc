"""Reusing a finished training stage of another run instead of training it again.

Runs of a sweep often share a stage: every instruction-sample count and every preservation
strategy of one condition and seed starts from the same midtrained model, whose stage hash
(`identity.stage_hash`) is the same in all of them. A stage that is not finished in its own
run directory, whose hash matches a finished stage elsewhere in the sweep (or under the whole
runs root), is linked from there: its files become hard links in this run's stage directory
(copies where the two lie on different file systems), with `reused_from.json` naming the
source, and `DONE` is written last. The numbers are the source's, which come from the same
stage config (the hash covers every setting that can change them).

Files are shared, never modified in place: every later write to a stage (an evaluation
merging into `metrics.json`, a provenance record) replaces the file atomically, which gives
this run its own copy and leaves the source untouched; clearing the stage unlinks only
this run's names. The stage lock, Hydra's logs and checkpoints are not linked.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from midtrain.tracking.rundir import RunDir, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

SCOPES = ("sweep", "runs_root", "off")
_NOT_LINKED = (".lock", ".hydra_logs", "checkpoints", "DONE", "reused_from.json")


def candidates(run_dir: Path, stage: str, scope: str, runs_root: Path | None = None) -> list[Path]:
    """Finished-looking `<stage>/` directories of other runs, in a fixed (sorted) order.

    Args:
        run_dir: this run's directory (`<runs_root>/<sweep_name>/<run_id>`).
        stage: the stage's directory name (`midtrain`, `instruct`).
        scope: `sweep` (runs of this run's sweep folder), `runs_root` (of every sweep under
            `runs_root`) or `off`.
        runs_root: the root of all sweeps, for `scope=runs_root`.
    """
    if scope not in SCOPES:
        raise ValueError(f"reuse_stages={scope!r}: expected one of {', '.join(SCOPES)}")
    if scope == "off":
        return []
    pattern = f"*/{stage}/DONE" if scope == "sweep" else f"*/*/{stage}/DONE"
    root = run_dir.parent if scope == "sweep" else Path(runs_root or run_dir.parent.parent)
    own = (run_dir / stage).resolve()
    return [d.parent for d in sorted(root.glob(pattern)) if d.parent.resolve() != own]


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or no hard links there
        shutil.copy2(src, dst)


def reuse_stage(dst: Path, stage_hash: str, sources: Iterable[Path], needs_hf: bool = True) -> Path | None:
    """Link the first of `sources` that is finished with `stage_hash` into `dst`.

    `dst` must hold no outputs of its own (nothing but a lock or Hydra's logs): a stage with
    outputs or checkpoints is this run's own and is resumed or cleared by the caller instead.

    Returns:
        The source directory, or None when no source is finished with that hash.
    """
    target = RunDir(dst)
    if target.has_outputs() or target.checkpoints.exists():
        return None
    for src in sources:
        rd = RunDir(src)
        if rd.done_hash() != stage_hash or rd.done_problems(needs_hf=needs_hf, expected_hash=stage_hash):
            continue
        done_text = rd.done_path.read_text(encoding="utf-8")
        tmp = dst.parent / f".{dst.name}.reusing"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(*_NOT_LINKED))
        dst.mkdir(parents=True, exist_ok=True)
        for entry in sorted(tmp.iterdir()):
            os.replace(entry, dst / entry.name)
        tmp.rmdir()
        atomic_write_json(dst / "reused_from.json", {"source": str(src.resolve()), "stage_hash": stage_hash,
                                                     "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        atomic_write_text(dst / "DONE", done_text)  # last: until here the stage is not finished
        log.info("stage %s reused from %s (stage hash %s; hard links)", dst, src, stage_hash)
        return src
    return None
