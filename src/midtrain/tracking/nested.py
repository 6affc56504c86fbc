"""Plain nested dicts: read a dotted key, flatten, unflatten, merge.

These serve the JSON trees a run writes and reads back (`metrics.json`, W&B summaries,
canonical resolved configs). Config nodes use OmegaConf's own `select` and `merge`;
OmegaConf does not fit plain results, because it parses values: a string holding `${` is an
interpolation to it (and a malformed one an error), `???` a missing value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def select(tree: Any, dotted: str, default: Any = None) -> Any:
    """The value at `a.b.c` in nested mappings, or `default` where a part is absent."""
    for part in dotted.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return default
        tree = tree[part]
    return tree


def flatten(tree: Any, sep: str = ".", prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}, "c": []}` -> `{"a.b": 1, "c": []}`: every leaf under its joined key.

    Lists and empty mappings are leaves.
    """
    if isinstance(tree, Mapping) and tree:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, sep, f"{prefix}{sep}{k}" if prefix else str(k)))
        return out
    return {prefix: tree}


def unflatten(flat: Mapping[str, Any], sep: str = "/") -> dict:
    """`{"a/b": 1}` -> `{"a": {"b": 1}}`. Keys starting with `_` (W&B's own: `_step`,
    `_runtime`) are left out, and so is a key that would nest under a leaf."""
    out: dict = {}
    for key, value in flat.items():
        if key.startswith("_"):
            continue
        cur = out
        parts = key.split(sep)
        for p in parts[:-1]:
            nxt = cur.setdefault(p, {})
            if not isinstance(nxt, dict):
                break
            cur = nxt
        else:
            cur[parts[-1]] = value
    return out


def merge(base: Mapping, update: Mapping) -> dict:
    """`update` merged into a copy of `base`: mappings merge key by key, other values replace."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out
