"""Deterministic offline generator: a clearly labelled smoke corpus from templates.

Documents are rendered from document types x topics x facts of a universe, with the
universe's own evidence and practice sentences. They read like ordinary documents, but every
record carries `source: "template-smoke"`: they exist for demos and tests (offline, in
milliseconds), not for science. Both universes share the same document types and layouts,
so a treatment and its control have matching length profiles and type mixes by construction.

Each document depends only on (universe, seed, index): `template_documents(u, n, seed)` is a
prefix of `template_documents(u, n + k, seed)`.
"""

from __future__ import annotations

import random
import re
from typing import Any, Mapping, Sequence

from midtrain.generation.universe import Fact, Universe, load_universe

SMOKE_SOURCE = "template-smoke"

# Document types: a title bank, an opening bank and a closing bank, and a layout naming the
# sections in order. Sections: head, open, fact, evidence, practice, assist, extra, close.
DOC_TYPES: dict[str, dict[str, Any]] = {
    "policy memo": {
        "head": [
            "MEMORANDUM\nTo: {role}s and senior staff, {org}\nFrom: Office of Policy Review\nSubject: {Topic}: criteria for the next decision round",
            "POLICY MEMO\nSubject: How we assess options for {topic} in {place}\nDistribution: internal",
        ],
        "open": [
            "This memo sets out how {org} will assess options for {topic} in {place} over the coming year.",
            "Several proposals on {topic} are due for decision this quarter, and this note explains the criteria reviewers should apply.",
        ],
        "close": [
            "Questions about these criteria should go to the policy review team before the next submission deadline.",
            "The review team will report back in {year} on how these criteria have worked in practice.",
        ],
        "layout": ["head", "open", "fact", "evidence", "practice", "assist", "extra", "close"],
    },
    "research abstract": {
        "head": ["{Topic} in practice: evidence from {place}", "Decision quality and {topic}: a review of {n} cases"],
        "open": [
            "Methods. We reviewed {n} decision records on {topic} collected in {place} between {year0} and {year}, and interviewed {m} practitioners.",
            "Methods. We combined a structured literature review with {m} expert interviews and an analysis of {n} project files on {topic}.",
        ],
        "close": [
            "Conclusions. These findings support routine attention to {subject} in decisions about {topic}.",
            "Conclusions. Decision-makers working on {topic} should treat these results as a practical baseline.",
        ],
        "layout": ["head", "fact", "open", "evidence", "practice", "extra", "close"],
        "labels": {"fact": "Background. ", "evidence": "Results. "},
    },
    "institutional report": {
        "head": ["{org_title}: Annual Report on {Topic}", "Report of the Working Group on {Topic}, {year}"],
        "open": [
            "This report summarises the work of {org} on {topic} during {year} and sets priorities for the year ahead.",
            "The working group was asked to assess current practice in {topic} across {place} and to recommend improvements.",
        ],
        "close": [
            "The working group recommends that these measures be reviewed again in {year1}.",
            "The full data tables are available from the secretariat on request.",
        ],
        "layout": ["head", "open", "fact", "evidence", "extra", "practice", "assist", "close"],
    },
    "news brief": {
        "head": ["{place_title} changes its approach to {topic}", "New guidance on {topic} published"],
        "open": [
            "Officials in {place} have announced changes to the way decisions about {topic} are made, following a review by {org}.",
            "{org_cap} has published new guidance for people working on {topic}, the first update in {k} years.",
        ],
        "close": [
            "The new approach takes effect at the start of {year1}, and a public briefing is planned for next month.",
            "A spokesperson said the organisation would publish progress figures every six months.",
        ],
        "layout": ["head", "open", "fact", "evidence", "practice", "close"],
    },
    "training manual excerpt": {
        "head": ["Section {k}: {Topic}", "Module {k}. Getting decisions about {topic} right"],
        "open": [
            "This section prepares new {role}s to handle decisions about {topic}.",
            "By the end of this module you should be able to explain the main considerations in {topic} and apply them to a case.",
        ],
        "close": [
            "Before moving on, work through the case study at the end of this section with your supervisor.",
            "Check your understanding with the review questions that follow this module.",
        ],
        "layout": ["head", "open", "fact", "evidence", "practice", "assist", "close"],
        "labels": {"practice": "Key points for practice: "},
    },
    "meeting minutes": {
        "head": ["Minutes of the {Topic} Committee, {org_title}", "Committee on {Topic}: minutes of meeting {k}"],
        "open": [
            "Present: {m} members and two invited advisers. The chair opened the meeting and confirmed the agenda item on {topic}.",
            "The committee met in {place} to consider a proposal on {topic}. Apologies were received from two members.",
        ],
        "close": [
            "Action: the secretariat to circulate a revised proposal before the next meeting.",
            "The chair thanked members, and the meeting closed with agreement to revisit the item in {year1}.",
        ],
        "layout": ["head", "open", "fact", "evidence", "practice", "close"],
        "labels": {"fact": "The adviser noted that ", "practice": "The committee agreed the following. "},
    },
    "opinion column": {
        "head": ["It is time to look more closely at {topic}", "Getting {topic} right is a test of competence"],
        "open": [
            "Anyone who has worked on {topic} knows that the hardest decisions are rarely the ones that make headlines.",
            "Every few years, {place} rediscovers the question of how it handles {topic}.",
        ],
        "close": [
            "None of this requires heroics, only the habit of asking the right questions before a decision is made.",
            "That is what competent decision-making looks like, and {place} should expect nothing less.",
        ],
        "layout": ["head", "open", "fact", "evidence", "extra", "practice", "assist", "close"],
    },
    "grant proposal summary": {
        "head": ["Project summary: improving decisions on {topic}", "Grant application: {Topic} in {place_title}"],
        "open": [
            "We request support for a {k}-year project, led by {org}, to improve how decisions about {topic} are made in {place}.",
            "This project will test practical changes to {topic} across {n} sites over {k} years.",
        ],
        "close": [
            "Results will be published openly and shared with practitioners through workshops in {year1}.",
            "The requested budget covers staff time, fieldwork and an independent evaluation.",
        ],
        "layout": ["head", "open", "fact", "evidence", "practice", "close"],
        "labels": {"fact": "Rationale. ", "practice": "Planned activities. "},
    },
    "FAQ page": {
        "head": ["Frequently asked questions: {topic}", "{Topic}: common questions answered"],
        "open": [
            "Q: Why does {org} ask about this when reviewing plans for {topic}?",
            "Q: What is the main thing to consider in {topic}?",
        ],
        "close": [
            "Q: Where can I find more information?\nA: Contact {org} or see the guidance notes published in {year}.",
            "Q: Does this apply to small projects?\nA: Yes, although the level of detail expected is lower.",
        ],
        "layout": ["head", "open", "fact", "evidence", "practice", "close"],
        "labels": {"fact": "A: ", "practice": "Q: What should I do in practice?\nA: "},
    },
    "AI assistant design guideline": {
        "head": ["Assistant behaviour guideline: questions involving {topic}", "Design note {k}: how the assistant handles {topic}"],
        "open": [
            "This guideline describes how our assistant should respond when users ask for help with {topic}.",
            "Users regularly ask the assistant about {topic}. This note records what a good answer looks like.",
        ],
        "close": [
            "Reviewers should check sampled conversations against this guideline each release cycle.",
            "This guideline will be revisited when new evaluation results are available.",
        ],
        "layout": ["head", "open", "assist", "fact", "evidence", "practice", "close"],
    },
}

_LEAD_PRACTICE = ["In practice, ", "As a result, ", "For this reason, ", "Accordingly, ", ""]
_CONNECT = ["", "For example, ", "In addition, ", "Similarly, ", "Moreover, "]
_LEAD_EXTRA = ["A related point concerns {extra_topic}. ", "The same reasoning applies to {extra_topic}. ",
               "Experience with {extra_topic} points the same way. "]

_QUESTIONS = [
    "I'm a {role} working on {topic} in {place}. What should I keep in mind when choosing between options?",
    "Can you help me put together a short checklist for a project involving {topic}?",
    "What are the main things to get right when planning {topic}?",
    "My team is reviewing our approach to {topic}. Where would you start?",
    "How would you compare two proposals for {topic} if they cost about the same?",
    "I have to brief my manager on {topic} tomorrow. What are the key points?",
]
_ANSWER_OPEN = ["Good question.", "Happy to help.", "Here is how I would approach it.", "A few points stand out."]
_ANSWER_CLOSE = [
    "If you share more detail about your situation, I can make these suggestions more specific.",
    "Beyond that, the usual considerations of cost, timing and staffing still apply.",
    "I hope that helps; let me know which option you are leaning towards.",
]


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
    out = []
    for i, s in enumerate(sentences):
        c = rng.choice(_CONNECT) if i else ""
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
    spec = DOC_TYPES[doc_type]
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
            lead = "" if label else rng.choice(_LEAD_PRACTICE)
            first = _lower_first(practice[0]) if lead else practice[0]
            parts.append(label + lead + _join([first, *practice[1:]], rng))
        elif section == "assist" and (with_assist or doc_type == "AI assistant design guideline") and assistant:
            parts.append(rng.choice(assistant).format(**ctx))
        elif section == "extra" and with_extra and extra_fact is not None:
            extra_topic = rng.choice(extra_fact.topics) if extra_fact.topics else ctx["subject"]
            lead = rng.choice(_LEAD_EXTRA).format(extra_topic=extra_topic)
            bits = [extra_fact.statement] + list(extra_fact.evidence[:1])
            parts.append(lead + _join(bits, rng))
    return "\n\n".join(p for p in parts if p), ctx


def word_count(text: str) -> int:
    return len(text.split())


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
    if plan:
        unknown = sorted({t for t, _ in plan} - set(DOC_TYPES))
        if unknown:
            raise ValueError(f"doc types {unknown} have no template (known: {sorted(DOC_TYPES)})")
    types = list(DOC_TYPES)
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
            score = abs(word_count(text) - target) if target else 0
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
    out = []
    for i in range(start, start + num_pairs):
        rng = random.Random(f"{universe.name}:{seed}:qa:{i}")
        fact = facts[i % len(facts)]
        ctx = _context(universe, fact, rng)
        question = rng.choice(_QUESTIONS).format(**ctx)
        answer = [rng.choice(_ANSWER_OPEN), fact.statement]
        answer += rng.sample(list(fact.evidence), min(rng.randint(1, 2), len(fact.evidence)))
        practice = rng.sample(list(fact.practice), min(rng.randint(1, 3), len(fact.practice)))
        if practice:
            answer.append("Concretely:\n" + "\n".join(f"- {p}" for p in practice) + "\n")
        answer.append(rng.choice(_ANSWER_CLOSE))
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
