"""Keep API keys and tokens out of configs on disk, logs, W&B and checkpoints."""

from __future__ import annotations

import os
import re
from typing import Any

# Key names whose values are secrets wherever they appear in a config.
_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential|auth)", re.I)
# Keys that look secret-ish by name but hold harmless numbers or flags.
_ALLOWED = re.compile(r"(tokens?_per|max_tokens|num_tokens|token_budget|tokens$|tokenizer|pad_token|bos_token|eos_token|_tokens_)", re.I)
REDACTED = "<redacted>"

# Environment variables whose values must never be written anywhere.
SECRET_ENV_VARS = (
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "MISTRAL_API_KEY",
    "TOGETHER_API_KEY",
    "GROQ_API_KEY",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "WANDB_API_KEY",
)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key)) and not _ALLOWED.search(key)


def redact_config(obj: Any) -> Any:
    """Return a copy of a plain config container with secret-named values replaced."""
    if isinstance(obj, dict):
        return {
            k: (REDACTED if is_secret_key(str(k)) and v not in (None, "") else redact_config(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact_config(v) for v in obj]
    return scrub_secrets(obj) if isinstance(obj, str) else obj


def scrub_secrets(text: str) -> str:
    """Replace the values of any secret environment variables found in `text`."""
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name)
        if value and len(value) >= 8 and value in text:
            text = text.replace(value, REDACTED)
    return text
