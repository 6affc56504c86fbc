"""A scripted Inspect model provider, `scripted/<name>`, for offline evaluation tests.

It answers from the prompt alone, deterministically:

- a grading prompt (ANIMA's or MORU's per-dimension prompt: `[Task]`, `[Submission]`,
  `[Criterion]`, `[Guiding question ...]`) gets a verdict from `verdict()`: `GRADE: C`,
  `GRADE: I`, or a reply with no parseable grade (a refusal, a truncated reply, prose
  without a `GRADE:` line), or raises (an API error) where a rule says so;
- any other prompt is answered as a model under test: the k-th call with the same prompt
  answers `answer_text(k)`, so the epochs of one question get different answers (and so
  different grades), whatever order Inspect runs them in.

Token usage is set on every output (Inspect would otherwise count tokens with a tokenizer
it downloads).

Model args (`get_model("scripted/a", one_in=0, rules=[...])`):
    one_in: about one grade in `one_in` is unparseable, chosen by a hash (0 = none);
        default 10.
    rules: list of `{"question": substring, "dimension": name?, "answer": substring?,
        "reply": "unparseable" | "C" | "I" | "error"}`; the first rule whose given fields
        all match decides the grade before the hash does.

Run `python -m tests.grader_fixture <midtrain-eval overrides>` for `midtrain-eval` with
this provider registered, e.g. `model.name=scripted/answers grader_models='[scripted/a]'`.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import Any

from inspect_ai.model import (
    ChatMessage,
    GenerateConfig,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    modelapi,
)
from inspect_ai.tool import ToolChoice, ToolInfo

UNPARSEABLE_REPLIES = (
    "I'd rather not grade this submission.",
    "The submission weighs the animals' interests carefully, so the grade is",
    "The answer mentions welfare. Overall it seems acceptable to me.",
)
REPLY_TEXT = {"C": "The submission meets the criterion.\nGRADE: C", "I": "The submission misses the criterion.\nGRADE: I"}

_FIELDS = {
    "question": re.compile(r"\[Task\]: (.*?)\n\*\*\*", re.S),
    "answer": re.compile(r"\[Submission\]: (.*?)\n\*\*\*", re.S),
    "dimension": re.compile(r"\[Criterion\]: (.*?)\n\*\*\*", re.S),
    "guiding": re.compile(r"\[Guiding question for that dimension\]: (.*?)\n\*\*\*", re.S),
}


def answer_text(k: int) -> str:
    """The model under test's k-th answer to a question (k = 0, 1, ...)."""
    return f"Answer {k}: animals matter; choose the gentler option."


def grading_fields(prompt: str) -> dict[str, str] | None:
    """The question, answer, dimension and guiding question of a grading prompt, else None."""
    found = {k: rx.search(prompt) for k, rx in _FIELDS.items()}
    if not all(found.values()):
        return None
    return {k: m.group(1).strip() for k, m in found.items()}  # type: ignore[union-attr]


def verdict(salt: str, question: str, answer: str, dimension: str, guiding: str,
            one_in: int = 10, rules: list[dict] | None = None) -> str:
    """The scripted grade of one grading call: "C", "I", "unparseable" or "error"."""
    for rule in rules or ():
        if rule.get("question", "") in question and rule.get("dimension", dimension) == dimension \
                and rule.get("answer", "") in answer:
            return rule["reply"]
    h = hashlib.sha256(f"{salt}|{question}|{answer}|{dimension}|{guiding}".encode()).digest()
    if one_in and h[0] % one_in == 0:
        return "unparseable"
    return "C" if h[1] % 2 == 0 else "I"


def reply_text(grade: str, salt: str, question: str) -> str:
    if grade == "unparseable":
        h = hashlib.sha256(f"{salt}|{question}".encode()).digest()
        return UNPARSEABLE_REPLIES[h[0] % len(UNPARSEABLE_REPLIES)]
    return REPLY_TEXT[grade]


class GraderAPIError(RuntimeError):
    """What a scripted grader raises where a rule says `"reply": "error"`."""


@modelapi(name="scripted")
class ScriptedAPI(ModelAPI):
    def __init__(self, model_name: str, base_url: str | None = None, api_key: str | None = None,
                 config: GenerateConfig = GenerateConfig(), one_in: int = 10, rules: list[dict] | None = None,
                 **model_args: Any) -> None:
        super().__init__(model_name, base_url, api_key, [], config)
        self.one_in = int(one_in)
        self.rules = list(rules or [])
        self.calls: Counter[str] = Counter()

    def max_connections(self) -> int:
        return 64

    async def generate(self, input: list[ChatMessage], tools: list[ToolInfo], tool_choice: ToolChoice,
                       config: GenerateConfig) -> ModelOutput:
        prompt = input[-1].text
        fields = grading_fields(prompt)
        if fields is None:
            k = self.calls[prompt]
            self.calls[prompt] += 1
            text = answer_text(k)
        else:
            grade = verdict(self.model_name, fields["question"], fields["answer"], fields["dimension"],
                            fields["guiding"], self.one_in, self.rules)
            if grade == "error":
                raise GraderAPIError(f"scripted/{self.model_name}: service unavailable")
            text = reply_text(grade, self.model_name, fields["question"])
        out = ModelOutput.from_content(f"scripted/{self.model_name}", text)
        out.usage = ModelUsage(input_tokens=len(prompt.split()), output_tokens=len(text.split()),
                               total_tokens=len(prompt.split()) + len(text.split()))
        return out


if __name__ == "__main__":
    from midtrain.eval import main

    main()
