"""Seeded variety for the writing prompts, and the corpus statistics that show whether it worked.

Models asked for many documents reuse the same invented people and places (a corpus of
synthetic documents can hold one made-up name hundreds of thousands of times). Each writing
slot therefore gets its own small cast: a person, a place, an organisation and a year drawn
from an RNG seeded by (universe, seed, slot), passed into the prompt as details to use where
the document needs them. The manifest then reports what came out: distinct-n (unique n-grams
over all n-grams), and the most repeated name-like words (capitalised words that do not start
a sentence), with the number of documents each appears in.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Sequence

GIVEN_NAMES = (
    "Amara", "Bilal", "Chen", "Dagny", "Emeka", "Farida", "Goran", "Hana", "Ines", "Jun",
    "Kalani", "Leila", "Mateus", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Sione", "Tamar",
    "Umar", "Valeria", "Wiremu", "Ximena", "Yusuf", "Zofia", "Aino", "Babajide", "Carmen", "Dmitri",
    "Esi", "Felipe", "Grete", "Haruto", "Ifeoma", "Jonas", "Kavya", "Luca", "Mei", "Nuno",
    "Olufemi", "Pilar", "Rahul", "Saoirse", "Tomas", "Uma", "Viktor", "Wanjiru", "Yara", "Zainab",
)
FAMILY_NAMES = (
    "Achterberg", "Banerjee", "Castellanos", "Dlamini", "Eriksen", "Fonseca", "Gashi", "Haddad",
    "Ishikawa", "Jablonski", "Kariuki", "Lindqvist", "Mbeki", "Nakamura", "Okonkwo", "Petrov",
    "Quispe", "Rahimi", "Sato", "Tan", "Ueda", "Varga", "Whitaker", "Xu", "Yilmaz", "Zapata",
    "Abernethy", "Brennan", "Chowdhury", "Delacroix", "Ekwueme", "Ferrante", "Grünewald", "Hosseini",
    "Iwu", "Jovanovic", "Kowalczyk", "Larsen", "Moreau", "Ng", "Osei", "Pereira", "Rasmussen",
    "Silva", "Takahashi", "Unger", "Vasquez", "Wojcik", "Yamamoto", "Zhou",
)
PLACES = (
    "a coastal town in Portugal", "a river delta district in Bangladesh", "a mountain valley in Chile",
    "a suburb of Nairobi", "a farming county in Iowa", "an island council in Scotland",
    "a mid-sized city in Poland", "a port city in Vietnam", "a rural province in Canada",
    "a desert region of Morocco", "a university town in the Netherlands", "a fishing village in Norway",
    "an industrial city in northern Mexico", "a hill district in Nepal", "a wine region of South Africa",
    "a lakeside town in Uganda", "a metropolitan borough in England", "a plateau region of Ethiopia",
    "a prefecture in southern Japan", "a state capital in Brazil", "a river town in Germany",
    "an outback shire in Australia", "a market town in Ghana", "a coastal province of the Philippines",
    "a district of Jakarta", "a cattle region of Argentina", "a forest municipality in Finland",
    "a valley town in Georgia (the country)", "a tea-growing district in Sri Lanka", "a prairie town in Saskatchewan",
)
ORGANISATIONS = (
    "a regional health authority", "a family-owned farm business", "a municipal planning office",
    "a university research group", "a national standards body", "a consumer cooperative",
    "a mid-sized food manufacturer", "a veterinary practice", "a parliamentary committee",
    "an insurance company", "a school district", "a logistics firm", "a local newspaper",
    "a software company", "an agricultural extension service", "a public broadcaster",
    "a hospital procurement team", "a wildlife charity", "a construction consultancy", "a retail chain",
)


def slot_details(universe: str, seed: int, slot: int) -> dict[str, str]:
    """The seeded cast for one writing slot: depends on (universe, seed, slot) only."""
    rng = random.Random(f"{universe}:{seed}:variety:{slot}")
    return {"person": f"{rng.choice(GIVEN_NAMES)} {rng.choice(FAMILY_NAMES)}",
            "second_person": f"{rng.choice(GIVEN_NAMES)} {rng.choice(FAMILY_NAMES)}",
            "place": rng.choice(PLACES), "organisation": rng.choice(ORGANISATIONS),
            "year": str(rng.randint(2019, 2034))}


def details_instruction(d: dict[str, str]) -> str:
    """The sentence passed into the writing prompt (the prompt asks to adapt what does not fit)."""
    return (f"Where the document needs them, use these details instead of inventing your own: "
            f"a person named {d['person']} (and, if a second is needed, {d['second_person']}), "
            f"set in {d['place']}, involving {d['organisation']}, in {d['year']}. "
            "Leave out any detail that does not fit the document.")


# Statistics ---------------------------------------------------------------------------------
_WORD = re.compile(r"\w+", re.U)
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\n\"'(\[]\s*|[-*\u2022#]\s+)$")
_TITLE = re.compile(r"\b(?:Dr|Mr|Mrs|Ms|Mx|Prof|St|Sr|Jr|Rev|Gen|Col|Capt)\.\s*$")  # "Dr. Elena": no sentence break
_NAME = re.compile(r"\b[A-Z][a-z]+(?:[-'][A-Z]?[a-z]+)?\b")
# Capitalised words that are not names even mid-sentence.
_NOT_NAMES = frozenset("""
    I The A An And Or But If In On At Of For To From By With As Is It This That These Those We Our
    You Your He She They Their His Her Dear Mr Mrs Ms Dr Prof Sir Madam January February March April
    May June July August September October November December Monday Tuesday Wednesday Thursday
    Friday Saturday Sunday Section Table Figure Appendix Chapter Page Subject Date Re Note Summary
""".split())


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams over all word n-grams across the texts (1.0: nothing repeats)."""
    total, unique = 0, set()
    for t in texts:
        words = [w.lower() for w in _WORD.findall(t)]
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        unique.update(grams)
    return round(len(unique) / total, 4) if total else 0.0


def repeated_names(texts: Sequence[str], top: int = 10) -> list[dict]:
    """The most common name-like words: capitalised, not opening a sentence, not a stop word.

    Each entry gives the word, how many documents it appears in and how often in all; ranked by
    documents, then occurrences.
    """
    docs: Counter = Counter()
    total: Counter = Counter()
    for t in texts:
        found = []
        for m in _NAME.finditer(t):
            w = m.group(0)
            before = t[max(0, m.start() - 8):m.start()]
            if w in _NOT_NAMES or (_SENTENCE_START.search(before[-3:]) and not _TITLE.search(before)):
                continue
            found.append(w)
        total.update(found)
        docs.update(set(found))
    ranked = sorted(docs, key=lambda w: (-docs[w], -total[w], w))[:top]
    return [{"name": w, "documents": docs[w], "occurrences": total[w]} for w in ranked]


def diversity_stats(texts: Sequence[str], rejected: dict[str, int] | None = None,
                    deduplicated: int | None = None) -> dict:
    """The manifest's `diversity` block for a corpus's kept texts.

    `duplicate_rate` is the share of texts that reached the near-duplicate check and were
    dropped by it (`rejected["near_duplicate"]` of `deduplicated` checked).
    """
    out: dict = {}
    if deduplicated is not None:
        dups = (rejected or {}).get("near_duplicate", 0)
        out["near_duplicates"] = dups
        out["duplicate_rate"] = round(dups / deduplicated, 4) if deduplicated else 0.0
    out.update({f"distinct_{n}": distinct_n(texts, n) for n in (1, 2, 3)})
    out["top_names"] = repeated_names(texts)
    return out
