"""Which Python client each inspect-ai model provider needs, and the extra that installs it.

inspect-ai imports a provider's client only when a model of that provider is created, so a
missing client would otherwise surface after validation, as inspect-ai's own install hint
without the project's extra. `check_client` fails first, naming the extra:
`pip install 'alignment-midtraining[anthropic]'`.
"""

from __future__ import annotations

import importlib.util
from typing import Any

PACKAGE = "alignment-midtraining"

# provider -> (importable module, extra in pyproject.toml). Providers served through
# OpenAI-compatible APIs (vLLM's server among them) use the openai client.
PROVIDER_CLIENTS: dict[str, tuple[str, str]] = {
    "anthropic": ("anthropic", "anthropic"),
    "openai": ("openai", "openai"),
    "openai-api": ("openai", "openai"),
    "vllm": ("openai", "openai"),
    "together": ("openai", "openai"),
    "fireworks": ("openai", "openai"),
    "deepseek": ("openai", "openai"),
    "openrouter": ("openai", "openai"),
    "perplexity": ("openai", "openai"),
    "google": ("google.genai", "google"),
    "mistral": ("mistralai", "mistral"),
    "groq": ("groq", "groq"),
    "grok": ("xai_sdk", "grok"),
}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module set to None
        return False


def check_client(model_name: Any, what: str) -> None:
    """Raise when the client library of `model_name`'s provider is not installed.

    Args:
        model_name: an inspect-ai model name `<provider>/<model>`; other values are ignored
            (their own validation names them).
        what: the config key that names the model, for the message (e.g. `generator.model`).
    """
    if not isinstance(model_name, str) or "/" not in model_name:
        return
    provider = model_name.split("/", 1)[0]
    if provider not in PROVIDER_CLIENTS:
        return
    module, extra = PROVIDER_CLIENTS[provider]
    if not _importable(module):
        raise ImportError(
            f"{what}={model_name!r} needs the {provider} provider's client ({module.split('.')[0]}), which is "
            f"not installed: pip install '{PACKAGE}[{extra}]'"
        )
