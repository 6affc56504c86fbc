"""Universe contexts: the world a corpus is set in and the facts its documents are built on.

A universe is a config (`conf/universe/<name>.yaml`): a `description` of the world, a list of
`facts` (each with an `id` and a `statement`; optionally `dimension`, `evidence`, `practice`,
`topics`) and, for the offline template generator only, a `template` block. Validation happens
here, before any request is made, so a typo in a user's universe fails with the file and key.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from midtrain.paths import CONF_DIR

UNIVERSE_DIR = CONF_DIR / "universe"


@dataclass(frozen=True)
class Fact:
    """One key fact or value that documents in a universe express."""

    id: str
    statement: str
    dimension: str | None = None
    evidence: tuple[str, ...] = ()
    practice: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()


@dataclass(frozen=True)
class Universe:
    """A validated universe context."""

    name: str
    description: str
    facts: tuple[Fact, ...]
    template: Mapping[str, Any] | None = field(default=None, compare=False)

    def fact(self, fact_id: str) -> Fact:
        for f in self.facts:
            if f.id == fact_id:
                return f
        raise KeyError(f"universe {self.name!r} has no fact {fact_id!r}")

    def digest(self) -> str:
        """Hash of the description and facts: a corpus records which universe it came from."""
        payload = {"name": self.name, "description": self.description,
                   "facts": [asdict(f) for f in self.facts]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: expected a list of strings, got {value!r}")
    out = []
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"{where}[{i}]: expected a non-empty string, got {v!r}")
        out.append(v.strip())
    return tuple(out)


def universe_from_mapping(data: Mapping[str, Any] | DictConfig, source: str) -> Universe:
    """Validate a universe given as a mapping; `source` names it in errors (a file or config key).

    Raises:
        ValueError: an empty description, no facts, a fact without id or statement, or a
            duplicate fact id.
    """
    if isinstance(data, DictConfig):
        data = OmegaConf.to_container(data, resolve=True)
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: a universe must be a mapping, got {type(data).__name__}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{source}: key 'name' must be a non-empty string, got {name!r}")
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        raise ValueError(
            f"{source}: key 'description' (the universe context) is empty; describe the world "
            "the documents live in"
        )
    raw_facts = data.get("facts")
    if not isinstance(raw_facts, (list, tuple)) or not raw_facts:
        raise ValueError(f"{source}: key 'facts' must be a non-empty list of facts, got {raw_facts!r}")
    facts, seen = [], set()
    for i, rf in enumerate(raw_facts):
        where = f"{source}: facts[{i}]"
        if isinstance(rf, str):
            rf = {"id": f"fact{i}", "statement": rf}
        if not isinstance(rf, Mapping):
            raise ValueError(f"{where}: expected a mapping with 'id' and 'statement', got {rf!r}")
        fid, statement = rf.get("id"), rf.get("statement")
        if not isinstance(fid, str) or not fid.strip():
            raise ValueError(f"{where}: key 'id' must be a non-empty string, got {fid!r}")
        if fid in seen:
            raise ValueError(f"{where}: duplicate fact id {fid!r}")
        seen.add(fid)
        if not isinstance(statement, str) or not statement.strip():
            raise ValueError(f"{where} ({fid}): key 'statement' is empty")
        facts.append(Fact(
            id=fid.strip(),
            statement=" ".join(statement.split()),
            dimension=rf.get("dimension"),
            evidence=_str_list(rf.get("evidence"), f"{where}.evidence"),
            practice=_str_list(rf.get("practice"), f"{where}.practice"),
            topics=_str_list(rf.get("topics"), f"{where}.topics"),
        ))
    return Universe(name=name.strip(), description=" ".join(description.split()),
                    facts=tuple(facts), template=data.get("template"))


@functools.lru_cache(maxsize=32)
def load_universe(name: str) -> Universe:
    """Load and validate `conf/universe/<name>.yaml`."""
    path = UNIVERSE_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in UNIVERSE_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"unknown universe {name!r}: no {path} (known: {known})")
    return universe_from_mapping(OmegaConf.load(path), str(path))
