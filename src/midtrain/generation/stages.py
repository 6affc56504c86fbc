"""Resumable generation stages: one JSONL file per stage, one line per finished request.

A stage is a list of work items, each with a stable key. Finished items are appended to
`<out_dir>/stages/<stage>.jsonl` (flushed and fsynced) the moment their request returns, so a
crash or Ctrl-C loses only the requests in flight; re-running skips every key already on disk.
A request that still fails after inspect-ai's own retries is counted as failed, written to
`<stage>.failed.jsonl` for inspection, and tried again on the next run. An answer that arrives
but cannot be used (a refusal, a truncated document, a list with no items) is not a failure:
the parser records why in its `status`, the record is stored with the raw `completion`, and a
re-run reuses it instead of asking again (delete its line to ask again).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from midtrain.tracking.rundir import iter_jsonl
from midtrain.tracking.secrets import scrub_secrets

log = logging.getLogger(__name__)


class StageStore:
    """Append-only JSONL of finished items keyed by `key`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        self.corrupt_lines = 0
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        def corrupt(lineno: int, reason: str) -> None:
            self.corrupt_lines += 1

        # A line cut short by a crash mid-write is corrupt: its request is simply redone.
        for lineno, rec in iter_jsonl(self.path, on_bad=corrupt):
            try:
                self.records[rec["key"]] = rec
            except (KeyError, TypeError):
                corrupt(lineno, "no key")
        with open(self.path, "rb+") as f:  # so the next append starts on a fresh line
            if f.seek(0, os.SEEK_END):
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.records[record["key"]] = record


@dataclass
class WorkItem:
    """One request: `messages` go to the model; `parse(completion)` gives the fields to store."""

    key: str
    messages: list[Any]
    meta: dict = field(default_factory=dict)


@dataclass
class StageResult:
    """Counts for the manifest (`seconds`: wall time this run spent on the stage's requests)."""

    name: str
    items: int = 0
    reused: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"items": self.items, "reused": self.reused, "completed": self.completed,
                "failed": self.failed, "done": self.reused + self.completed,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "seconds": round(self.seconds, 2)}


async def _run_stage(name: str, items: list[WorkItem], store: StageStore, model: Any,
                     parse: Callable[[str], dict], generate_kwargs: dict, concurrency: int,
                     progress: bool, failed_path: Path) -> StageResult:
    result = StageResult(name=name, items=len(items))
    todo = [it for it in items if it.key not in store]
    result.reused = len(items) - len(todo)
    if not todo:
        return result
    sem = asyncio.Semaphore(max(1, concurrency))
    config = generate_kwargs.get("config")
    limit = getattr(config, "max_tokens", None) or getattr(getattr(model, "config", None), "max_tokens", None)
    bar = tqdm(total=len(items), initial=result.reused, desc=f"generate:{name}", disable=not progress,
               unit="req", dynamic_ncols=True)

    async def one(item: WorkItem) -> None:
        async with sem:
            try:
                output = await model.generate(item.messages, **generate_kwargs)
                if output.error:
                    raise RuntimeError(output.error)
                cut = _hit_token_limit(output, limit)
                fields = parse(output.completion, truncated=True) if cut else parse(output.completion)
            except Exception as e:  # noqa: BLE001 - one failed request must not stop the run
                result.failed += 1
                msg = scrub_secrets(f"{type(e).__name__}: {e}")[:2000]
                log.warning("stage %s: request %s failed after retries: %s", name, item.key, msg)
                _append_failure(failed_path, item.key, msg)
                bar.update(1)
                return
            if output.usage is not None:
                result.input_tokens += output.usage.input_tokens or 0
                result.output_tokens += output.usage.output_tokens or 0
            # The raw completion is kept with its parse: an answer that could not be used can be
            # read, and a fixed parser can be checked against it, without asking again.
            store.append({"key": item.key, **item.meta, **fields, "completion": output.completion,
                          "hit_token_limit": cut})
            result.completed += 1
            bar.update(1)

    start = time.perf_counter()
    try:
        await asyncio.gather(*(one(it) for it in todo))
    finally:
        result.seconds = time.perf_counter() - start  # wall time of this run's requests
        bar.close()
    return result


def _hit_token_limit(output: Any, limit: int | None) -> bool:
    """True when the completion stopped at its token budget (some providers only report usage)."""
    if getattr(output, "stop_reason", None) == "max_tokens":
        return True
    used = output.usage.output_tokens if output.usage is not None else None
    return bool(limit and used and used >= limit)


def _append_failure(path: Path, key: str, msg: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"key": key, "error": msg}) + "\n")


def run_stage(name: str, items: list[WorkItem], store: StageStore, model: Any,
              parse: Callable[[str], dict], *, generate_kwargs: dict | None = None,
              concurrency: int = 8, progress: bool = True) -> StageResult:
    """Run every item of a stage whose key is not yet in `store`; return the stage's counts.

    Args:
        name: stage name, for the progress bar and logs.
        items: all items of the stage, done or not (the done ones are counted as reused).
        store: where finished items go.
        model: an inspect-ai `Model` (`get_model(...)`); its GenerateConfig sets
            max_connections, max_retries and timeouts.
        parse: turns a completion into the fields stored with the item; raising counts the
            request as failed. A completion that stopped at its token budget is parsed with
            `truncated=True` (the parser decides what a cut-off answer is worth).
        generate_kwargs: extra keyword arguments for `Model.generate` (e.g. `cache`).
        concurrency: most requests awaited at once (inspect's max_connections still applies).
        progress: show a progress bar.
    """
    failed_path = store.path.with_name(store.path.stem + ".failed.jsonl")
    return asyncio.run(_run_stage(name, items, store, model, parse, generate_kwargs or {},
                                  concurrency, progress, failed_path))
