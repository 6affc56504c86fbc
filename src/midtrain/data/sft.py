"""Instruction-tuning data: load Alpaca or chat samples, render with the chat template,
and keep the loss on assistant tokens only.

The assistant spans are found by rendering the conversation turn by turn and diffing the
token ids, which works for any chat template (no `{% generation %}` tags needed). The labels
built here are what the model receives: packing copies them unchanged and the collator adds
nothing (`tests/test_sft.py` checks the collated batch).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from midtrain.data.corpus import draw, load_hf_rows, read_jsonl, resolve_path
from midtrain.data.packing import IGNORE_INDEX, Segment

FORMATS = ("auto", "alpaca", "messages")
ROLES = ("system", "user", "assistant")


def alpaca_to_messages(row: dict) -> list[dict]:
    """Alpaca (`instruction`, `input`, `output`) as a user/assistant exchange."""
    prompt = row["instruction"].strip()
    if row.get("input"):
        prompt = f"{prompt}\n\n{row['input'].strip()}"
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]


def _detect_format(row: dict) -> str:
    if "messages" in row:
        return "messages"
    if "instruction" in row or "output" in row:
        return "alpaca"
    return "unknown"


def rows_to_conversations(rows: list[dict], fmt: str, origin: str) -> list[list[dict]]:
    """Validate rows and convert them to chat messages; errors name the field and the first bad row."""
    if fmt not in FORMATS:
        raise ValueError(f"instruct.format={fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = _detect_format(rows[0])
        if fmt == "unknown":
            raise ValueError(
                f"{origin}: row 1 has neither 'messages' nor Alpaca fields "
                f"('instruction', 'output'); fields: {sorted(rows[0])}"
            )
    out = []
    for i, row in enumerate(rows, start=1):
        if fmt == "alpaca":
            for key in ("instruction", "output"):
                if not isinstance(row.get(key), str):
                    raise ValueError(f"{origin}: row {i} is missing the Alpaca field {key!r} (fields: {sorted(row)})")
            if row.get("input") is not None and not isinstance(row["input"], str):
                raise ValueError(f"{origin}: row {i}: field 'input' must be a string")
            out.append(alpaca_to_messages(row))
        else:
            msgs = row.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise ValueError(f"{origin}: row {i} is missing the field 'messages' (a non-empty list)")
            for j, m in enumerate(msgs):
                if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                    raise ValueError(
                        f"{origin}: row {i}, message {j}: expected {{'role': one of {ROLES}, 'content': str}}"
                    )
            if not any(m["role"] == "assistant" for m in msgs):
                raise ValueError(f"{origin}: row {i} has no assistant message to learn from")
            out.append([{"role": m["role"], "content": m["content"]} for m in msgs])
    return out


def load_instruct_rows(cfg: DictConfig) -> tuple[list[dict], str]:
    """All rows of the instruction dataset and a name for error messages."""
    source = cfg.source
    if source == "jsonl":
        if not cfg.path:
            raise ValueError("instruct.path is required when instruct.source=jsonl")
        return read_jsonl(cfg.path, what="instruction data"), str(resolve_path(cfg.path))
    if source == "hf":
        if not cfg.hf_id:
            raise ValueError("instruct.hf_id is required when instruct.source=hf")
        return load_hf_rows(cfg.hf_id, cfg.revision, cfg.split, "instruct"), str(cfg.hf_id)
    if source == "template":
        from midtrain.generation.template import template_qa

        if not cfg.get("universe"):
            raise ValueError("universe is required for template Q&A data")
        return template_qa(str(cfg.universe), num_pairs=int(cfg.pool_size), seed=0), f"template-qa:{cfg.universe}"
    raise ValueError(f"instruct.source={source!r}: expected jsonl, hf or template")


def load_conversations(cfg: DictConfig) -> list[list[dict]]:
    """The `cfg.samples` conversations a run trains on (a seeded nested subset)."""
    rows, origin = load_instruct_rows(cfg)
    chosen = draw(rows, int(cfg.samples), int(cfg.seed), what=f"instruction data {origin} (instruct.samples)")
    return rows_to_conversations(chosen, cfg.get("format", "auto"), origin)


def _render_ids(tokenizer: Any, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def sft_segment(tokenizer: Any, messages: list[dict], sample_index: int = 0) -> Segment:
    """Token ids and labels of one conversation, labels only on assistant turns."""
    try:
        full = _render_ids(tokenizer, messages, add_generation_prompt=False)
    except Exception as e:  # jinja errors: name the sample
        raise ValueError(f"the chat template cannot render instruction sample {sample_index}: {e}") from e
    labels = [IGNORE_INDEX] * len(full)
    for k, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        start = len(_render_ids(tokenizer, messages[:k], add_generation_prompt=True))
        end = len(_render_ids(tokenizer, messages[: k + 1], add_generation_prompt=False))
        if full[:end] != _render_ids(tokenizer, messages[: k + 1], add_generation_prompt=False):
            raise ValueError(
                f"instruction sample {sample_index}: the chat template does not render turns as a prefix "
                "of the whole conversation, so assistant tokens cannot be located"
            )
        labels[start:end] = full[start:end]
    bos = tokenizer.bos_token_id
    if bos is not None and (not full or full[0] != bos):
        full = [bos] + full
        labels = [IGNORE_INDEX] + labels
    return Segment(full, labels)
