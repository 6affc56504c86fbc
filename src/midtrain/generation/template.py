"""Deterministic offline generator: a clearly labelled smoke corpus from templates.

Documents are rendered from document types x topics x facts of a universe, with the
universe's own evidence and practice sentences. They read like ordinary documents, but every
record carries `source: "template-smoke"`: they exist for demos and tests (offline, in
milliseconds), not for science. Both universes share the same document types and layouts,
so a treatment and its control have matching length profiles and type mixes by construction.
The wording (document types, their title, opening and closing banks and layouts, and the Q&A
banks) is data: `resources/template/prose.yaml`, which a corpus's identity hashes.

Each document depends only on (universe, seed, index): `template_documents(u, n, seed)` is a
prefix of `template_documents(u, n + k, seed)`. `generate_documents_template` and
`generate_qa_template` are what `midtrain-generate generator=template` runs: rendering until
enough records pass the corpus filters.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from midtrain.generation.filters import FilterConfig, apply_filters, count_reasons, count_words
from midtrain.generation.universe import Fact, Universe, load_universe
from midtrain.paths import RESOURCES_DIR

SMOKE_SOURCE = "template-smoke"
# The wording: document types, connectives and the Q&A banks (package data).
PROSE_PATH = RESOURCES_DIR / "template" / "prose.yaml"
SECTIONS = ("head", "open", "fact", "evidence", "practice", "assist", "extra", "close")
_BANKS = ("head", "open", "close")


@dataclass(frozen=True)
class Prose:
    """The template generator's wording, read from `PROSE_PATH`.

    `doc_types`: name -> `{head, open, close: [str], layout: [section], labels?: {section: str}}`,
    in the order documents draw types from.
    """

    doc_types: dict[str, dict[str, Any]]
    lead_practice: list[str]
    connect: list[str]
    lead_extra: list[str]
    questions: list[str]
    answer_open: list[str]
    answer_close: list[str]


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: expected a non-empty list of strings, got {value!r}")
    return value


def _doc_type(name: str, spec: Any, where: str) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected a mapping of {', '.join(_BANKS)}, layout and labels")
    unknown = sorted(set(spec) - {*_BANKS, "layout", "labels"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}")
    for bank in _BANKS:
        _strings(spec.get(bank), f"{where}.{bank}")
    bad = [s for s in _strings(spec.get("layout"), f"{where}.layout") if s not in SECTIONS]
    labels = spec.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ValueError(f"{where}.labels: expected a mapping of section -> text, got {labels!r}")
    bad += [s for s in labels if s not in SECTIONS]
    if bad:
        raise ValueError(f"{where}: unknown section(s) {bad}; sections are {list(SECTIONS)}")
    return spec


@functools.lru_cache(maxsize=4)
def _load_prose(path: str, _mtime_ns: int) -> Prose:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("doc_types"), dict) or not data["doc_types"]:
        raise ValueError(f"{path}: expected a mapping with a non-empty 'doc_types' mapping")
    qa = data.get("qa") if isinstance(data.get("qa"), dict) else {}
    return Prose(
        doc_types={str(k): _doc_type(str(k), v, f"{path}: doc_types.{k}") for k, v in data["doc_types"].items()},
        **{k: _strings(data.get(k), f"{path}: {k}") for k in ("lead_practice", "connect", "lead_extra")},
        **{k: _strings(qa.get(k), f"{path}: qa.{k}") for k in ("questions", "answer_open", "answer_close")},
    )


def prose() -> Prose:
    """The wording in `PROSE_PATH`, read once per version of the file."""
    return _load_prose(str(PROSE_PATH), PROSE_PATH.stat().st_mtime_ns)


def prose_hash() -> str:
    """What a template corpus's manifest records as `template_hash`: the wording file's sha256
    (16 hex digits). The run identity hashes the same file (`midtrain.tracking.identity`)."""
    return hashlib.sha256(PROSE_PATH.read_bytes()).hexdigest()[:16]


DOC_TYPES: dict[str, dict[str, Any]] = prose().doc_types  # the packaged document types


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _title(s: str) -> str:
    small = {"and", "of", "in", "on", "the", "for", "a", "to"}
    words = s.split()
    return " ".join(w if (i and w in small) else _cap(w) for i, w in enumerate(words))


def _lower_first(s: str) -> str:
    # Keep acronyms ("AI") and proper nouns starting with two capitals as they are.
    return s if len(s) < 2 or s[1].isupper() else s[:1].lower() + s[1:]


def _join(sentences: Sequence[str], rng: random.Random) -> str:
    connect = prose().connect
    out = []
    for i, s in enumerate(sentences):
        c = rng.choice(connect) if i else ""
        out.append(c + _lower_first(s) if c else s)
    return " ".join(out)


def template_block(universe: Universe) -> Mapping[str, Any]:
    """The universe's `template` block, checked: generator=template cannot run without it."""
    block = universe.template
    if not block:
        raise ValueError(
            f"universe {universe.name!r} has no 'template' block; generator=template needs "
            "'template: {subject, organizations, places, roles, assistant}' in its config"
        )
    for key in ("subject", "organizations", "places", "roles"):
        if not block.get(key):
            raise ValueError(f"universe {universe.name!r}: template.{key} is missing or empty")
    return block


def _context(universe: Universe, fact: Fact, rng: random.Random) -> dict[str, Any]:
    block = template_block(universe)
    topic = rng.choice(fact.topics) if fact.topics else block["subject"]
    org = rng.choice(block["organizations"])
    place = rng.choice(block["places"])
    year = rng.randint(2019, 2025)
    return {
        "topic": topic, "Topic": _title(topic), "org": org, "org_cap": _cap(org),
        "org_title": _cap(org.removeprefix("the ")), "place": place, "place_title": _cap(place),
        "role": rng.choice(block["roles"]), "subject": block["subject"], "year": year,
        "year0": year - rng.randint(3, 8), "year1": year + 1, "n": rng.randint(24, 480),
        "m": rng.randint(6, 40), "k": rng.randint(2, 9),
    }


def _render(universe: Universe, fact: Fact, doc_type: str, rng: random.Random,
            extra_fact: Fact | None, sizes: tuple[int, int, bool, bool]) -> tuple[str, dict]:
    """Render one document of `doc_type` about `fact`; `sizes` = (n_evidence, n_practice, assist, extra)."""
    words = prose()
    spec = words.doc_types[doc_type]
    ctx = _context(universe, fact, rng)
    labels = spec.get("labels", {})
    n_ev, n_pr, with_assist, with_extra = sizes
    evidence = rng.sample(list(fact.evidence), min(n_ev, len(fact.evidence)))
    practice = rng.sample(list(fact.practice), min(n_pr, len(fact.practice)))
    assistant = list(template_block(universe).get("assistant") or [])
    parts: list[str] = []
    for section in spec["layout"]:
        label = labels.get(section, "")
        if section == "head":
            parts.append(rng.choice(spec["head"]).format(**ctx))
        elif section == "open":
            parts.append(rng.choice(spec["open"]).format(**ctx))
        elif section == "close":
            parts.append(rng.choice(spec["close"]).format(**ctx))
        elif section == "fact":
            text = fact.statement
            parts.append(label + (_lower_first(text) if label.endswith("that ") else text))
        elif section == "evidence" and evidence:
            parts.append(label + _join(evidence, rng))
        elif section == "practice" and practice:
            lead = "" if label else rng.choice(words.lead_practice)
            first = _lower_first(practice[0]) if lead else practice[0]
            parts.append(label + lead + _join([first, *practice[1:]], rng))
        elif section == "assist" and (with_assist or doc_type == "AI assistant design guideline") and assistant:
            parts.append(rng.choice(assistant).format(**ctx))
        elif section == "extra" and with_extra and extra_fact is not None:
            extra_topic = rng.choice(extra_fact.topics) if extra_fact.topics else ctx["subject"]
            lead = rng.choice(words.lead_extra).format(extra_topic=extra_topic)
            bits = [extra_fact.statement] + list(extra_fact.evidence[:1])
            parts.append(lead + _join(bits, rng))
    return "\n\n".join(p for p in parts if p), ctx


def render_documents(
    universe: Universe,
    num_docs: int,
    seed: int,
    *,
    plan: Sequence[tuple[str, int]] | None = None,
    start: int = 0,
) -> list[dict]:
    """Render documents `start .. start+num_docs-1` of a universe.

    Args:
        universe: a validated universe with a `template` block.
        num_docs: how many documents.
        seed: selects the document stream; document i depends only on (universe, seed, i).
        plan: (doc_type, word count) pairs to follow, document i taking pair i mod len(plan): a
            matched control copies its treatment's types and lengths document by document,
            keeping the closest of a few renderings. Default: uniform types, natural lengths.
        start: index of the first document (to extend a stream without re-rendering it).
    """
    if num_docs < 0:
        raise ValueError(f"num_docs must be >= 0, got {num_docs}")
    doc_types = prose().doc_types
    if plan:
        unknown = sorted({t for t, _ in plan} - set(doc_types))
        if unknown:
            raise ValueError(f"doc types {unknown} have no template (known: {sorted(doc_types)})")
    types = list(doc_types)
    facts = universe.facts
    offset = random.Random(f"{universe.name}:{seed}:offset").randrange(len(facts))
    docs = []
    for i in range(start, start + num_docs):
        rng = random.Random(f"{universe.name}:{seed}:{i}")
        fact = facts[(i + offset) % len(facts)]
        extra_fact = facts[(i + offset + 1 + rng.randrange(max(1, len(facts) - 1))) % len(facts)]
        doc_type = rng.choice(types)
        target = None
        if plan:
            doc_type, target = plan[i % len(plan)]
        tries = 12 if target else 1
        best = None
        for _ in range(tries):
            sizes = (rng.randint(1, 3), rng.randint(1, 3), rng.random() < 0.5, rng.random() < 0.35)
            state = rng.getstate()
            text, ctx = _render(universe, fact, doc_type, rng, extra_fact, sizes)
            score = abs(count_words(text) - target) if target else 0
            if best is None or score < best[0]:
                best = (score, text, ctx)
            rng.setstate(state)
            rng.random()
        _, text, ctx = best
        docs.append({
            "id": f"{universe.name}-tmpl-s{seed}-{i:06d}",
            "text": text,
            "doc_type": doc_type,
            "idea": f"{doc_type} on {ctx['topic']} ({ctx['place']})",
            "fact": fact.id,
            "universe": universe.name,
            "source": SMOKE_SOURCE,
        })
    return docs


def template_documents(universe: str, num_docs: int, seed: int) -> list[dict]:
    """Deterministic smoke documents for `conf/universe/<universe>.yaml`.

    Each dict has `id`, `text`, `doc_type`, `idea`, `fact`, `universe` (and `source:
    "template-smoke"`). Used by the template corpus source of `midtrain-train` and by
    `midtrain-generate generator=template`.
    """
    return render_documents(load_universe(universe), num_docs, seed)


def render_qa(universe: Universe, num_pairs: int, seed: int, start: int = 0) -> list[dict]:
    """Render chat Q&A pairs whose answers express the universe's facts (see `template_qa`)."""
    if num_pairs < 0:
        raise ValueError(f"num_pairs must be >= 0, got {num_pairs}")
    facts = universe.facts
    words = prose()
    out = []
    for i in range(start, start + num_pairs):
        rng = random.Random(f"{universe.name}:{seed}:qa:{i}")
        fact = facts[i % len(facts)]
        ctx = _context(universe, fact, rng)
        question = rng.choice(words.questions).format(**ctx)
        answer = [rng.choice(words.answer_open), fact.statement]
        answer += rng.sample(list(fact.evidence), min(rng.randint(1, 2), len(fact.evidence)))
        practice = rng.sample(list(fact.practice), min(rng.randint(1, 3), len(fact.practice)))
        if practice:
            answer.append("Concretely:\n" + "\n".join(f"- {p}" for p in practice) + "\n")
        answer.append(rng.choice(words.answer_close))
        out.append({
            "id": f"{universe.name}-tmplqa-s{seed}-{i:06d}",
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": re.sub(r"\n\n+", "\n\n", " ".join(answer).replace("\n ", "\n"))},
            ],
            "fact": fact.id,
            "universe": universe.name,
            "source": SMOKE_SOURCE,
        })
    return out


def template_qa(universe: str, num_pairs: int, seed: int) -> list[dict]:
    """Deterministic chat samples `{"id", "messages": [user, assistant]}` expressing a universe's values.

    The instruction-tuning baseline's offline SFT data; the LLM Q&A mode writes the same format.
    """
    return render_qa(load_universe(universe), num_pairs, seed)


def generate_documents_template(universe: Universe, num_docs: int, seed: int, filters: FilterConfig,
                                match=None) -> tuple[list[dict], dict]:
    """`num_docs` smoke documents that pass `filters`, and the manifest's account of them.

    Renders in batches until enough documents pass (near-duplicates are rare). With `match`
    (a `MatchProfile`), document i copies the type and length of the treatment's document i.

    Returns:
        `(records, {"candidates", "rejected", "passed_filters", "template_hash"})`.
    """
    plan = None
    if match is not None:
        plan = [(t, w) for t, w in zip(match.doc_types, match.words) if t in prose().doc_types]
        if not plan:
            raise ValueError(f"match_to={match.reference}: none of its doc types {sorted(match.doc_type_counts)} "
                             "has a template; match a template corpus with generator=template")
    kept: list[dict] = []
    reasons: list = []
    start = 0
    while len(kept) < num_docs and start < 20 * num_docs + 100:
        batch = render_documents(universe, max(num_docs - len(kept), 8), seed, plan=plan, start=start)
        start += len(batch)
        pool = [d["text"] for d in kept] + [d["text"] for d in batch]
        r = apply_filters(pool, filters, seed)[len(kept):]
        reasons += r
        kept += [d for d, why in zip(batch, r) if why is None][: num_docs - len(kept)]
    return kept, {"candidates": start, "rejected": count_reasons(reasons),
                  "passed_filters": sum(r is None for r in reasons), "template_hash": prose_hash()}


def generate_qa_template(universe: Universe, num_pairs: int, seed: int, filters: FilterConfig
                         ) -> tuple[list[dict], dict]:
    """`num_pairs` smoke Q&A pairs whose answers pass `filters` (at least 10 words), and the
    manifest's account of them (the keys of `generate_documents_template`)."""
    qa_filters = FilterConfig(min_words=10, max_words=filters.max_words, dedup_threshold=filters.dedup_threshold,
                              placeholder_patterns=filters.placeholder_patterns)
    pool = render_qa(universe, 2 * num_pairs, seed)
    reasons = apply_filters([p["messages"][1]["content"] for p in pool], qa_filters, seed)
    kept = [p for p, r in zip(pool, reasons) if r is None][:num_pairs]
    return kept, {"candidates": len(pool), "rejected": count_reasons(reasons),
                  "passed_filters": sum(r is None for r in reasons), "template_hash": prose_hash()}
