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
from midtrain.generation.variety import details_instruction, slot_details

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
# Parsers never raise on what a model writes: each returns the fields stored with the item,
# with `status` "ok" or the reason it could not be used ("no_list_items", "refusal",
# "truncated", ...). An unusable answer is stored like a usable one, so a re-run does not ask
# the same question again (a cached or seeded model would give the same answer forever);
# delete its line from the stage file to ask again. `count_unparseable` sums the reasons.

# One list item: a bullet (- * + •), a number or letter with . ) : (1. 1) (1) a. **1.**
# "Step 1:"), optionally inside a markdown heading (### 1. Title).
_LIST_ITEM = re.compile(
    r"""^\s*(?:\#{1,6}\s*)?(?:[*_]{1,2})?
        (?:[-*+\u2022\u2013]|(?:step|idea|type|option|no\.?)?\s*\(?(?:\d{1,3}|[a-zA-Z])[.):]|\(\d{1,3}\)
           |\d{1,3}\s*[-\u2013]\s)
        (?:[*_]{1,2})?\s+(?P<item>.*\S)\s*$""", re.I | re.X)
_HEADING = re.compile(r"^\s*\#{1,6}\s+(?P<item>.*\S)\s*$")
_EMPHASIS = re.compile(r"(\*\*|__)(.+?)\1")
_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry,|i can(?:'|no)t|i cannot|i'?m (?:not able|unable)|i am (?:not able|unable)"
    r"|as an ai\b|i apologi[sz]e|unfortunately,? i)", re.I)


_GENERIC_LABEL = re.compile(r"^(?:document|doc|type|option|idea|item)\s*(?:type\s*)?#?\d*$", re.I)


def _clean_item(text: str) -> str:
    text = _EMPHASIS.sub(r"\2", text).strip().strip("*_").strip()
    return re.sub(r"\s+", " ", text).rstrip(":").strip().strip('"').strip()


def is_refusal(text: str) -> bool:
    """True when a completion opens by declining ("I'm sorry, but I can't ...")."""
    return bool(_REFUSAL.match(text.strip()))


def parse_list(text: str, truncated: bool = False) -> dict:
    """A brainstormed list -> {"status", "items"}; tolerant of how a reader would read a list.

    Bullets and any numbering style (1. 1) (1) a. **1.** Step 1:), numbered markdown headings,
    bold labels and prose around the list all parse; lines that are not items are ignored. Bare
    markdown headings count as items only when there is no other list. Nothing usable gives
    status "refusal" (the answer declines) or "no_list_items". Indented sub-items under an
    item are its details, not items of their own. When the completion stopped at its token
    budget (`truncated`) and its last line is an item, that item was cut off and is dropped.
    """
    lines = (text or "").expandtabs(4).rstrip().splitlines()
    if truncated and lines and _LIST_ITEM.match(lines[-1]):
        lines = lines[:-1]
    found = [(len(line) - len(line.lstrip()), m.group("item")) for line in lines if (m := _LIST_ITEM.match(line))]
    top = min((indent for indent, _ in found), default=0)  # sub-bullets under an item are its details
    items = [_clean_item(item) for indent, item in found if indent <= top + 1]
    if not items:
        items = [_clean_item(m.group("item")) for line in lines if (m := _HEADING.match(line))]
    items = list(dict.fromkeys(i for i in items if len(i) > 1))
    if items:
        return {"status": "ok", "items": items}
    return {"status": "refusal" if is_refusal(text or "") else "no_list_items", "items": []}


def parse_doc_types(text: str, truncated: bool = False) -> dict:
    """A list of document types: the bold label or the words before a colon/dash when one leads."""
    out = parse_list(text, truncated)
    types = []
    for item in out["items"]:
        parts = re.split(r"\s*(?::|\s[-\u2013\u2014]\s)\s*", item, maxsplit=1)
        label, rest = parts[0].strip(), (parts[1].strip() if len(parts) > 1 else "")
        if _GENERIC_LABEL.match(label) and rest:  # "Document 1: Official reports ..." names the type after the colon
            label = rest
        if len(label) > 80:  # a description, not a name: its first words, cut at a word boundary
            label = label[:80].rsplit(" ", 1)[0].rstrip(",;")
        if len(label) > 1:
            types.append(label)
    out["items"] = list(dict.fromkeys(types))
    if not out["items"] and out["status"] == "ok":
        out["status"] = "no_list_items"
    return out


def _tag(text: str, tag: str) -> tuple[str | None, bool]:
    """(content, opened): the first <tag>...</tag> in any letter case; content None when not closed."""
    m = re.search(rf"<\s*{tag}\s*>(.*?)<\s*/\s*{tag}\s*>", text, re.S | re.I)
    if m:
        return m.group(1).strip(), True
    return None, re.search(rf"<\s*{tag}\s*>", text, re.I) is not None


def parse_document(text: str, truncated: bool = False) -> dict:
    """A writing completion -> {"status", "text", "scratchpad"}.

    Status "ok" needs a complete <document>...</document> (any letter case). A document that
    opens but never closes, or a completion that stopped at its token budget before one was
    complete, was cut off by max_tokens and is "truncated", never kept; no
    document at all is "unsuitable" (the model said UNSUITABLE as asked), "refusal", "empty",
    or "malformed".
    """
    text = text or ""
    scratchpad, _ = _tag(text, "scratchpad")
    doc, opened = _tag(text, "document")
    outside = re.sub(r"<\s*scratchpad\s*>.*?(?:<\s*/\s*scratchpad\s*>|$)", "", text, flags=re.S | re.I)
    if doc:
        return {"status": "ok", "text": doc, "scratchpad": scratchpad}
    if opened or truncated:  # the budget ran out before the document was complete
        status = "truncated"
    elif re.search(r"\bUNSUITABLE\b", outside):
        status = "unsuitable"
    elif not text.strip():
        status = "empty"
    elif is_refusal(outside) or is_refusal(text):
        status = "refusal"
    else:
        status = "malformed"
    return {"status": status, "text": None, "scratchpad": scratchpad}


def parse_revision(text: str, truncated: bool = False) -> dict:
    """A critique-and-revise completion -> {"status", "critique", "text"}; text None keeps the draft."""
    critique, _ = _tag(text or "", "critique")
    doc = parse_document(text)
    return {"status": doc["status"], "critique": critique, "text": doc["text"]}


def parse_answer(text: str, truncated: bool = False) -> dict:
    """A Q&A answer; one cut off at the token budget is "truncated" and not kept."""
    answer = (text or "").strip()
    if not answer:
        return {"status": "empty", "answer": None}
    if truncated:
        return {"status": "truncated", "answer": None}
    return {"status": "ok", "answer": answer}


def count_unparseable(records) -> dict[str, int]:
    """Stored records by the reason they could not be used (status other than ok)."""
    c = Counter(r.get("status", "ok") for r in records)
    c.pop("ok", None)
    return dict(sorted(c.items()))


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
    variety: bool = True
    doc_type_quota: float | None = None
    list_max_tokens: int | None = None
    generate_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.doc_type_quota is not None and not 0 < self.doc_type_quota <= 1:
            raise ValueError(f"generator.doc_type_quota must be in (0, 1] or null, got {self.doc_type_quota}")
        if self.list_max_tokens is not None and self.list_max_tokens <= 0:
            raise ValueError(f"generator.list_max_tokens must be a positive integer or null, got {self.list_max_tokens}")


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
        self.stores: dict[str, tuple[StageStore, list[str]]] = {}

    def stage(self, name: str, items: list[WorkItem], parse, is_list: bool = False) -> StageStore:
        store = StageStore(self.stage_dir / f"{name}.jsonl")
        kwargs = dict(self.s.generate_kwargs)
        if is_list and self.s.list_max_tokens:  # brainstormed lists are short: a smaller budget
            from inspect_ai.model import GenerateConfig

            kwargs["config"] = GenerateConfig(max_tokens=self.s.list_max_tokens)
        self.results[name] = run_stage(name, items, store, self.model, parse,
                                       generate_kwargs=kwargs,
                                       concurrency=self.s.concurrency, progress=self.progress)
        self.stores[name] = (store, [it.key for it in items])
        return store

    def unparseable(self) -> dict[str, dict[str, int]]:
        """Per stage, this run's stored answers that could not be used, by reason."""
        out = {}
        for name, (store, keys) in self.stores.items():
            counts = count_unparseable(rec for k in keys if (rec := store.get(k)) is not None)
            if counts:
                out[name] = counts
        return out

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

    num_slots = math.ceil(num_docs * settings.oversample)
    # 1. Document types per fact that some slot uses (slot i takes fact i mod the number of
    #    facts); a matched control takes its treatment's mix instead.
    if match is None:
        items = [WorkItem(key=f"types:{f.id}", meta={"fact": f.id},
                          messages=[system, p.user("brainstorm_doc_types", fact=f.statement,
                                                   num_types=settings.num_doc_types)])
                 for f in facts[:num_slots]]
        store = p.stage("doc_types", items, parse_doc_types, is_list=True)
        types_by_fact = {f.id: rec["items"][:settings.num_doc_types]
                         for f in facts if (rec := store.get(f"types:{f.id}")) and rec.get("items")}

    # 2. Slots: (fact, doc_type, target length); slot i depends on (seed, i) only.
    slots, missing_upstream, unusable_upstream = [], 0, 0
    for i in range(num_slots):
        rng = random.Random(f"{universe.name}:{seed}:slot:{i}")
        fact = facts[i % len(facts)]
        if match is None:
            options = types_by_fact.get(fact.id)
            if not options:
                if f"types:{fact.id}" in store:
                    unusable_upstream += 1
                else:
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
    ideas_store = p.stage("ideas", items, parse_list, is_list=True)

    # 4. Write one document per slot, the idea chosen by how often its pair occurred before.
    seen: Counter = Counter()
    write_items = []
    for s in slots:
        rec = ideas_store.get(f"ideas:{s['fact']}:{_key_hash(s['doc_type'])}")
        if rec is None or not rec.get("items"):
            if rec is None:
                missing_upstream += 1
            else:
                unusable_upstream += 1
            continue
        ideas = rec["items"][:settings.num_ideas]
        occ = seen[(s["fact"], s["doc_type"])]
        seen[(s["fact"], s["doc_type"])] += 1
        s["idea"], s["variant"] = ideas[occ % len(ideas)], occ // len(ideas)
        length = _length_instruction(s["target_words"])
        if s["variant"]:
            length += (f" Other documents were already written from this idea; make this one clearly "
                       f"different (version {s['variant'] + 1}).")
        details = ""
        if settings.variety:
            s["details"] = slot_details(universe.name, seed, s["slot"])
            details = details_instruction(s["details"])
        write_items.append(WorkItem(
            key=f"doc:{s['slot']:06d}", meta=dict(s),
            messages=[system, p.user("write_document", doc_type=s["doc_type"], idea=s["idea"],
                                     fact=universe.fact(s["fact"]).statement,
                                     length_instruction=length, details=details)]))
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
    kept_draft = 0
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
                kept_draft += 1
        candidates.append((d, text, reason))
    reasons = [c[2] for c in candidates]
    ok_idx = [i for i, r in enumerate(reasons) if r is None]
    for i, r in zip(ok_idx, apply_filters([candidates[i][1] for i in ok_idx], filters, seed)):
        reasons[i] = r
    # Per-document-type quota: no type may fill more than its share of the corpus (a matched
    # control copies its reference's mix instead). Types are compared case-insensitively.
    dedup_checked = sum(r is None or r == "near_duplicate" for r in reasons)
    cap = math.ceil(settings.doc_type_quota * num_docs) if settings.doc_type_quota and match is None else None
    per_type: Counter = Counter()
    kept = []
    for i, ((d, text, _), r) in enumerate(zip(candidates, reasons)):
        if r is None and cap is not None and len(kept) < num_docs:
            key = d["doc_type"].strip().lower()
            if per_type[key] >= cap:
                reasons[i] = r = "doc_type_quota"
            else:
                per_type[key] += 1
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
        "upstream_unparseable": unusable_upstream,
        "dedup_checked": dedup_checked,
        "unparseable": p.unparseable(),
        "revision_kept_draft": kept_draft,
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
    qstore = p.stage("qa_questions", items, parse_list, is_list=True)
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
    reasons = [r.get("status", "ok") if r.get("status", "ok") != "ok" else why for r, why in zip(recs, reasons)]
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
        "unparseable": p.unparseable(),
        "dedup_checked": sum(r is None or r == "near_duplicate" for r in reasons),
        "passed_filters": sum(r is None for r in reasons),
        "prompt_hashes": prompt_hashes(p.prompts),
    }
    return kept, parts
