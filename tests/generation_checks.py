"""Checks that a generated corpus's manifest agrees with its files (shared by the generation tests)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


def generate_anyway(cfg, model=None) -> dict:
    """Run generation and return its manifest, also when it ends in a shortfall (a small model's
    output can yield no document at all; the manifest is written before the error)."""
    from midtrain.generate import GenerationShortfall, generate

    try:
        return generate(cfg, model=model)
    except GenerationShortfall:
        return json.loads((Path(str(cfg.out_dir)) / "manifest.json").read_text())


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def assert_manifest_matches_files(out: Path, manifest: dict, num_docs: int) -> None:
    """Stage counts are the stage files' records; every slot and candidate is accounted for."""
    assert manifest == json.loads((out / "manifest.json").read_text())
    for name, st in manifest["stages"].items():
        records = jsonl(out / "stages" / f"{name}.jsonl")
        keys = {r["key"] for r in records}
        assert st["done"] == len(keys) == st["items"] - st["failed"], name
        assert all(isinstance(r["completion"], str) and isinstance(r["hit_token_limit"], bool) for r in records)
        by_status = Counter(r["status"] for r in records)
        by_status.pop("ok", None)
        assert manifest["unparseable"].get(name, {}) == dict(by_status), name
    assert manifest["slots"] == (manifest["candidates"] + sum(manifest["not_ready"].values())
                                 + manifest["upstream_unparseable"])
    assert manifest["candidates"] == manifest["passed_filters"] + sum(manifest["rejected"].values())
    drafts = jsonl(out / "stages" / "documents.jsonl")
    for status, n in Counter(d["status"] for d in drafts).items():
        if status != "ok":
            assert manifest["rejected"][status] == n, status

    docs = jsonl(out / "documents.jsonl")
    assert len(docs) == manifest["num_written"] == min(num_docs, manifest["passed_filters"])
    assert manifest["shortfall"] == num_docs - len(docs)
    by_slot = {d["slot"]: d for d in drafts}
    revised = {r["slot"]: r for r in jsonl(out / "stages" / "revisions.jsonl")}
    for d in docs:
        slot = int(d["id"].rsplit("-", 1)[1])
        assert by_slot[slot]["status"] == "ok"
        assert d["text"] in (by_slot[slot]["text"], revised.get(slot, {}).get("text"))
    div = manifest["diversity"]
    assert 0.0 <= div["duplicate_rate"] <= 1.0
    assert div["near_duplicates"] == manifest["rejected"].get("near_duplicate", 0)
    assert {"distinct_1", "distinct_2", "distinct_3", "top_names"} <= set(div)
