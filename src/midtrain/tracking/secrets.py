"""Keep API keys and tokens out of configs on disk, logs, W&B and checkpoints.

One table says which environment variables carry secrets: the provider table
(`midtrain.providers.PROVIDERS`, every key and token variable of each model provider, the
same table `midtrain-generate` checks keys against before the first request) plus
`OTHER_SECRET_ENV_VARS`. Redaction then works three ways, on every string of a
config wherever it sits (mapping values, list items, `key=value` override strings such as
those in Hydra's `overrides.yaml`):

- by key name: the value of a key like `api_key`, `token`, `password` (also inside a
  `key=value` override string such as `'+model.model_args.api_key=...'`);
- by value: the value of every secret environment variable, wherever it appears;
- by shape: strings that look like tokens (`sk-...`, `hf_...`, `xai-...`, `gsk_...`,
  `pplx-...`, `AIza...`, `ghp_...`, `Bearer ...`, and 40 hex digits, the shape of a W&B key;
  a 40-hex value named as a git revision or commit is left alone).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from midtrain.providers import key_variables

REDACTED = "<redacted>"

# Environment variables whose values are secrets besides the model providers' keys and tokens
# (`midtrain.providers.PROVIDERS`).
OTHER_SECRET_ENV_VARS: tuple[str, ...] = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_BEARER_TOKEN_BEDROCK",
    "HUGGING_FACE_HUB_TOKEN",
    "WANDB_API_KEY",
)


def secret_env_vars() -> tuple[str, ...]:
    """Environment variables whose values must never be written anywhere: every key variable
    of the provider table, then `OTHER_SECRET_ENV_VARS`."""
    return tuple(dict.fromkeys((*key_variables(), *OTHER_SECRET_ENV_VARS)))


SECRET_ENV_VARS: tuple[str, ...] = secret_env_vars()

# Key names whose values are secrets wherever they appear in a config.
_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential|auth(?!or))", re.I)
# Keys that look secret-ish by name but hold harmless numbers or flags.
_ALLOWED = re.compile(r"(tokens?_per|max_tokens|num_tokens|token_budget|tokens$|tokenizer|pad_token|bos_token|"
                      r"eos_token|_tokens_)", re.I)
# Token shapes, redacted wherever they appear.
_TOKEN_SHAPES = re.compile(
    r"(?:\bsk-[A-Za-z0-9_-]{16,}"            # OpenAI, Anthropic (sk-ant-...), DeepSeek, OpenRouter (sk-or-...)
    r"|\bhf_[A-Za-z0-9]{16,}"                # Hugging Face
    r"|\bxai-[A-Za-z0-9]{16,}"               # xAI
    r"|\bgsk_[A-Za-z0-9]{16,}"               # Groq
    r"|\bpplx-[A-Za-z0-9]{16,}"              # Perplexity
    r"|\bAIza[0-9A-Za-z_-]{30,}"             # Google
    r"|\b(?:ghp|gho|ghs|github_pat)_[A-Za-z0-9_]{20,}"  # GitHub
    r"|(?<=Bearer )[A-Za-z0-9._~+/=-]{8,})"
)
_HEX40 = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{40}(?![0-9A-Fa-f])")  # a W&B API key's shape
# Names under which a 40-hex value is a git revision, not a key.
_REVISION_KEY = re.compile(r"(revision|commit|sha|git)", re.I)
_REVISION_BEFORE = re.compile(r"(revision|commit|sha|git)[\w.]*\W{0,3}$", re.I)
# `key=value` / `key: value` inside a string (override lists, command lines, log lines).
_ASSIGNMENT = re.compile(r"([A-Za-z_][\w.-]*)(\s*[=:]\s*)([\"']?)([^\s\"',\]}]+)")


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key)) and not _ALLOWED.search(key)


def _secret_env_values() -> list[str]:
    """Values of the listed secret variables and of any variable with a secret-looking name."""
    names = set(secret_env_vars()) | {k for k in os.environ if is_secret_key(k)}
    values = {os.environ.get(n) or "" for n in names}
    return sorted((v for v in values if len(v) >= 8), key=len, reverse=True)


def _hex_outside_revisions(text: str) -> str:
    def sub(m: re.Match) -> str:
        return m.group(0) if _REVISION_BEFORE.search(text[max(0, m.start() - 40):m.start()]) else REDACTED

    return _HEX40.sub(sub, text)


def scrub_secrets(text: str, *, hex_keys: bool = True) -> str:
    """`text` with secret values, secret-named assignments and token shapes replaced."""
    for value in _secret_env_values():
        if value in text:
            text = text.replace(value, REDACTED)

    def assignment(m: re.Match) -> str:
        if is_secret_key(m.group(1).rsplit(".", 1)[-1]) and m.group(4) != REDACTED:
            return f"{m.group(1)}{m.group(2)}{m.group(3)}{REDACTED}"
        return m.group(0)

    text = _ASSIGNMENT.sub(assignment, text)
    text = _TOKEN_SHAPES.sub(REDACTED, text)
    return _hex_outside_revisions(text) if hex_keys else text


def redact_config(obj: Any, _key: str = "") -> Any:
    """A copy of a plain config container with secrets replaced, in mappings, lists and strings."""
    if isinstance(obj, dict):
        return {
            k: (REDACTED if is_secret_key(str(k)) and v not in (None, "") else redact_config(v, str(k)))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [redact_config(v, _key) for v in obj]
    if isinstance(obj, str):
        return scrub_secrets(obj, hex_keys=not _REVISION_KEY.search(_key))
    return obj


def contains_secret(text: str) -> bool:
    return scrub_secrets(text) != text


class SecretFilter(logging.Filter):
    """A logging filter that scrubs secrets from every record a handler writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return True
        clean = scrub_secrets(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            import traceback

            record.exc_text = scrub_secrets("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        elif record.exc_text:
            record.exc_text = scrub_secrets(record.exc_text)
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Attach a `SecretFilter` to every handler of `logger` (default: the root logger)."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(SecretFilter())
