"""The LLM pipeline: brainstorm document types -> ideas -> write -> critique and revise -> filter.

Every request goes through an inspect-ai `Model` (`get_model("anthropic/...")`, `openai/`,
`vllm/`, `hf/`, `mockllm/` in tests), which owns provider access, concurrency limits
(`max_connections`), retries and the response cache. This module only decides what to ask,
records each answer as it arrives (see `stages`), and assembles the corpus.

Work is planned in *slots*: slot i gets a fact (round-robin), a document type and, for a
matched control, a target length, from an RNG seeded by (seed, i) alone. Slots are therefore
prefix-stable: asking for more documents later reuses every finished slot.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspect_ai.model import ChatMessageSystem, ChatMessageUser

from midtrain.generation.filters import FilterConfig, apply_filters, count_reasons
from midtrain.generation.match import MatchProfile
from midtrain.generation.stages import StageResult, StageStore, WorkItem, run_stage
from midtrain.generation.universe import Universe

log = logging.getLogger(__name__)

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
PROMPT_NAMES = ("system", "brainstorm_doc_types", "brainstorm_ideas", "write_document",
                "revise_document", "qa_system", "qa_questions")


def load_prompts() -> dict[str, str]:
    """The project's prompt files, by name."""
    return {n: (PROMPT_DIR / f"{n}.txt").read_text(encoding="utf-8") for n in PROMPT_NAMES}


def prompt_hashes(prompts: dict[str, str]) -> dict[str, str]:
    """sha256 (first 16 hex) of each prompt: the manifest says exactly which prompts made a corpus."""
    return {n: hashlib.sha256(t.encode()).hexdigest()[:16] for n, t in sorted(prompts.items())}


# Parsing -----------------------------------------------------------------------------
_LIST_ITEM = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.*\S)\s*$")


def parse_list(text: str) -> dict:
    """Bulleted or numbered lines -> {"items": [...]}; raises when there are none."""
    items = [m.group(1).strip() for line in text.splitlines() if (m := _LIST_ITEM.match(line))]
    items = list(dict.fromkeys(i for i in items if i))
    if not items:
        raise ValueError(f"no list items in completion: {text[:200]!r}")
    return {"items": items}


def _tag(text: str, tag: str) -> str | None:
    m = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.S)
    return m.group(1).strip() if m else None


def parse_document(text: str) -> dict:
    """A writing completion -> {"status": ok | unsuitable | malformed, "text", "scratchpad"}.

    A document without its closing tag (cut off by max_tokens) is malformed, not kept.
    """
    scratchpad = _tag(text, "scratchpad")
    doc = _tag(text, "document")
    outside = re.sub(r"<scratchpad>.*?</scratchpad>", "", text, flags=re.S)
    if doc:
        return {"status": "ok", "text": doc, "scratchpad": scratchpad}
    if "UNSUITABLE" in outside:
        return {"status": "unsuitable", "text": None, "scratchpad": scratchpad}
    return {"status": "malformed", "text": None, "scratchpad": scratchpad}


def parse_revision(text: str) -> dict:
    """A critique-and-revise completion -> {"critique", "text"} (text None if no document came back)."""
    return {"critique": _tag(text, "critique"), "text": _tag(text, "document")}


def parse_answer(text: str) -> dict:
    answer = text.strip()
    if not answer:
        raise ValueError("empty answer")
    return {"answer": answer}


# Plumbing ----------------------------------------------------------------------------
@dataclass
class LLMSettings:
    """The `generator` block of conf/generate.yaml that the pipeline reads."""

    num_doc_types: int = 8
    num_ideas: int = 10
    oversample: float = 1.3
    revise: bool = True
    concurrency: int = 32
    questions_per_request: int = 10
    qa_min_words: int = 20
    qa_max_words: int = 600
    generate_kwargs: dict = field(default_factory=dict)


def _key_hash(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:12]


def _facts_block(universe: Universe) -> str:
    return universe.description + "\n\nKey facts of this world:\n" + "\n".join(
        f"- {f.statement}" for f in universe.facts)


class _Pipeline:
    def __init__(self, universe: Universe, model: Any, out_dir: Path, seed: int,
                 settings: LLMSettings, progress: bool):
        self.u, self.model, self.seed, self.s, self.progress = universe, model, seed, settings, progress
        self.stage_dir = Path(out_dir) / "stages"
        self.prompts = load_prompts()
        self.results: dict[str, StageResult] = {}

    def stage(self, name: str, items: list[WorkItem], parse) -> StageStore:
        store = StageStore(self.stage_dir / f"{name}.jsonl")
        self.results[name] = run_stage(name, items, store, self.model, parse,
                                       generate_kwargs=self.s.generate_kwargs,
                                       concurrency=self.s.concurrency, progress=self.progress)
        return store

    def system(self, name: str = "system") -> ChatMessageSystem:
        return ChatMessageSystem(content=self.prompts[name].format(universe_context=_facts_block(self.u)))

    def user(self, name: str, **kw: Any) -> ChatMessageUser:
        return ChatMessageUser(content=self.prompts[name].format(**kw))


def _length_instruction(target_words: int | None) -> str:
    if target_words:
        return f"The document should be about {target_words} words long."
    return "Choose a length that is natural for this type of document (usually 200 to 800 words)."


def generate_documents_llm(universe: Universe, model: Any, out_dir: Path, *, num_docs: int, seed: int,
                           settings: LLMSettings, filters: FilterConfig,
                           match: MatchProfile | None = None, progress: bool = True
                           ) -> tuple[list[dict], dict]:
    """Run the document pipeline; return the kept documents (in slot order) and manifest parts."""
    p = _Pipeline(universe, model, out_dir, seed, settings, progress)
    facts = universe.facts
    system = p.system()

    # 1. Document types per fact (a matched control takes its treatment's mix instead).
    if match is None:
        items = [WorkItem(key=f"types:{f.id}", meta={"fact": f.id},
                          messages=[system, p.user("brainstorm_doc_types", fact=f.statement,
                                                   num_types=settings.num_doc_types)])
                 for f in facts]
        store = p.stage("doc_types", items, parse_list)
        types_by_fact = {f.id: store.get(f"types:{f.id}")["items"][:settings.num_doc_types]
                         for f in facts if f"types:{f.id}" in store}

    # 2. Slots: (fact, doc_type, target length); slot i depends on (seed, i) only.
    num_slots = math.ceil(num_docs * settings.oversample)
    slots, missing_upstream = [], 0
    for i in range(num_slots):
        rng = random.Random(f"{universe.name}:{seed}:slot:{i}")
        fact = facts[i % len(facts)]
        if match is None:
            options = types_by_fact.get(fact.id)
            if not options:
                missing_upstream += 1
                continue
            doc_type = rng.choice(options)
            target = None
        else:  # slot i copies reference document i (mod its size): same type, same length
            doc_type = match.doc_types[i % len(match.doc_types)]
            target = match.words[i % len(match.words)]
        slots.append({"slot": i, "fact": fact.id, "doc_type": doc_type, "target_words": target})

    # 3. Ideas per (fact, doc_type) actually used.
    pairs = list(dict.fromkeys((s["fact"], s["doc_type"]) for s in slots))
    items = [WorkItem(key=f"ideas:{fid}:{_key_hash(dt)}", meta={"fact": fid, "doc_type": dt},
                      messages=[system, p.user("brainstorm_ideas", doc_type=dt,
                                               fact=universe.fact(fid).statement,
                                               num_ideas=settings.num_ideas)])
             for fid, dt in pairs]
    ideas_store = p.stage("ideas", items, parse_list)

    # 4. Write one document per slot, the idea chosen by how often its pair occurred before.
    seen: Counter = Counter()
    write_items = []
    for s in slots:
        rec = ideas_store.get(f"ideas:{s['fact']}:{_key_hash(s['doc_type'])}")
        if rec is None:
            missing_upstream += 1
            continue
        ideas = rec["items"][:settings.num_ideas]
        occ = seen[(s["fact"], s["doc_type"])]
        seen[(s["fact"], s["doc_type"])] += 1
        s["idea"], s["variant"] = ideas[occ % len(ideas)], occ // len(ideas)
        length = _length_instruction(s["target_words"])
        if s["variant"]:
            length += (f" Other documents were already written from this idea; make this one clearly "
                       f"different (version {s['variant'] + 1}).")
        write_items.append(WorkItem(
            key=f"doc:{s['slot']:06d}", meta=dict(s),
            messages=[system, p.user("write_document", doc_type=s["doc_type"], idea=s["idea"],
                                     fact=universe.fact(s["fact"]).statement,
                                     length_instruction=length)]))
    drafts = p.stage("documents", write_items, parse_document)

    # 5. Critique and revise each usable draft.
    revisions = None
    if settings.revise:
        rev_items = []
        for it in write_items:
            d = drafts.get(it.key)
            if d and d["status"] == "ok":
                rev_items.append(WorkItem(
                    key=f"rev:{d['slot']:06d}", meta={"slot": d["slot"]},
                    messages=[system, p.user("revise_document", doc_type=d["doc_type"],
                                             fact=universe.fact(d["fact"]).statement,
                                             document=d["text"])]))
        revisions = p.stage("revisions", rev_items, parse_revision)

    # 6. Assemble candidates in slot order and filter.
    pending = Counter()
    candidates = []
    for it in write_items:
        d = drafts.get(it.key)
        if d is None:
            pending["request_failed"] += 1
            continue
        text, reason = d["text"], None
        if d["status"] != "ok":
            reason = d["status"]
        elif revisions is not None:
            r = revisions.get(f"rev:{d['slot']:06d}")
            if r is None:
                pending["request_failed"] += 1
                continue
            if r["text"]:
                text = r["text"]
            else:
                pending["revision_kept_draft"] += 1
        candidates.append((d, text, reason))
    reasons = [c[2] for c in candidates]
    ok_idx = [i for i, r in enumerate(reasons) if r is None]
    for i, r in zip(ok_idx, apply_filters([candidates[i][1] for i in ok_idx], filters, seed)):
        reasons[i] = r
    kept = []
    for (d, text, _), r in zip(candidates, reasons):
        if r is None and len(kept) < num_docs:
            kept.append({"id": f"{universe.name}-s{seed}-{d['slot']:06d}", "text": text,
                         "doc_type": d["doc_type"], "idea": d["idea"], "fact": d["fact"],
                         "universe": universe.name, "source": "llm"})
    parts = {
        "stages": {n: r.as_dict() for n, r in p.results.items()},
        "slots": num_slots,
        "candidates": len(candidates),
        "rejected": count_reasons(reasons),
        "not_ready": dict(sorted((pending + Counter({"upstream_missing": missing_upstream})).items())),
        "passed_filters": sum(r is None for r in reasons),
        "prompt_hashes": prompt_hashes(p.prompts),
    }
    parts["not_ready"] = {k: v for k, v in parts["not_ready"].items() if v}
    return kept, parts


def generate_qa_llm(universe: Universe, model: Any, out_dir: Path, *, num_pairs: int, seed: int,
                    settings: LLMSettings, filters: FilterConfig, progress: bool = True
                    ) -> tuple[list[dict], dict]:
    """Q&A mode: brainstorm user questions per fact, answer each with the values in the system prompt."""
    p = _Pipeline(universe, model, out_dir, seed, settings, progress)
    facts = universe.facts
    num_slots = math.ceil(num_pairs * settings.oversample)
    per_fact = math.ceil(num_slots / len(facts))
    batches = math.ceil(per_fact / settings.questions_per_request)
    system = p.system()
    items = []
    for f in facts:
        for b in range(batches):
            ask = p.prompts["qa_questions"].format(fact=f.statement,
                                                   num_questions=settings.questions_per_request)
            if b:  # later batches of the same fact must not repeat the first
                ask += f"\n\nThis is batch {b + 1}: give questions different from the usual first ideas."
            items.append(WorkItem(key=f"questions:{f.id}:{b}", meta={"fact": f.id, "batch": b},
                                  messages=[system, ChatMessageUser(content=ask)]))
    qstore = p.stage("qa_questions", items, parse_list)
    questions: dict[str, list[str]] = {}
    for f in facts:
        qs: list[str] = []
        for b in range(batches):
            rec = qstore.get(f"questions:{f.id}:{b}")
            qs.extend(rec["items"][:settings.questions_per_request] if rec else [])
        questions[f.id] = list(dict.fromkeys(qs))
    qa_system = p.system("qa_system")
    answer_items, missing = [], 0
    for i in range(num_slots):
        f = facts[i % len(facts)]
        j = i // len(facts)
        if j >= len(questions[f.id]):
            missing += 1
            continue
        q = questions[f.id][j]
        answer_items.append(WorkItem(key=f"answer:{i:06d}", meta={"slot": i, "fact": f.id, "question": q},
                                     messages=[qa_system, ChatMessageUser(content=q)]))
    astore = p.stage("qa_answers", answer_items, parse_answer)
    qa_filters = FilterConfig(min_words=settings.qa_min_words, max_words=settings.qa_max_words,
                              placeholder_patterns=filters.placeholder_patterns,
                              dedup_threshold=filters.dedup_threshold, shingle_size=filters.shingle_size,
                              num_perm=filters.num_perm, bands=filters.bands)
    recs = [astore.get(it.key) for it in answer_items]
    failed = sum(r is None for r in recs)
    recs = [r for r in recs if r is not None]
    reasons = apply_filters([r["answer"] for r in recs], qa_filters, seed)
    kept = []
    for r, reason in zip(recs, reasons):
        if reason is None and len(kept) < num_pairs:
            kept.append({"id": f"{universe.name}-qa-s{seed}-{r['slot']:06d}",
                         "messages": [{"role": "user", "content": r["question"]},
                                      {"role": "assistant", "content": r["answer"]}],
                         "fact": r["fact"], "universe": universe.name, "source": "llm"})
    parts = {
        "stages": {n: r.as_dict() for n, r in p.results.items()},
        "slots": num_slots,
        "candidates": len(recs),
        "rejected": count_reasons(reasons),
        "not_ready": {k: v for k, v in {"request_failed": failed, "upstream_missing": missing}.items() if v},
        "passed_filters": sum(r is None for r in reasons),
        "prompt_hashes": prompt_hashes(p.prompts),
    }
    return kept, parts
