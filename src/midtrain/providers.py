"""The inspect-ai model providers the project knows: their API-key variables and client libraries.

One table, `PROVIDERS`, serves three checks and the secret scrubber:

- `check_model_access`: a `<provider>/<model>` name whose provider needs a key fails before
  the first request when the key's environment variable is not set (naming the variable,
  never a value);
- `check_client`: inspect-ai imports a provider's client only when a model of that provider
  is created, so a missing client would otherwise surface after validation, as inspect-ai's
  own install hint without the project's extra; this fails first, naming the extra:
  `pip install 'alignment-midtraining[anthropic]'`;
- `key_variables`: every variable the table names, which `midtrain.tracking.secrets`
  scrubs from configs, logs and W&B.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

PACKAGE = "alignment-midtraining"


@dataclass(frozen=True)
class Provider:
    """One inspect-ai provider.

    Attributes:
        keys: environment variables inspect-ai reads the provider's key or token from
            (inspect-ai's names); the first is the one a model of this provider needs.
        client: the importable module of its client library, with `extra` the extra in
            pyproject.toml that installs it; None where a core dependency serves it.
        needs_key: whether the provider refuses to run without the first key (a local vLLM
            server or Hugging Face model runs without one).
    """

    keys: tuple[str, ...] = ()
    client: str | None = None
    extra: str | None = None
    needs_key: bool = True


# Providers served through OpenAI-compatible APIs (vLLM's server among them) use the openai client.
_OPENAI = {"client": "openai", "extra": "openai"}
PROVIDERS: dict[str, Provider] = {
    "anthropic": Provider(("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "AZUREAI_ANTHROPIC_API_KEY",
                           "AZURE_ANTHROPIC_API_KEY"), client="anthropic", extra="anthropic"),
    "openai": Provider(("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZUREAI_OPENAI_API_KEY",
                        "BEDROCK_OPENAI_API_KEY"), **_OPENAI),
    "openai-api": Provider(needs_key=False, **_OPENAI),  # its key variable is <SERVICE>_API_KEY, per model
    "vllm": Provider(("VLLM_API_KEY",), needs_key=False, **_OPENAI),
    "together": Provider(("TOGETHER_API_KEY",), **_OPENAI),
    "fireworks": Provider(("FIREWORKS_API_KEY",), **_OPENAI),
    "deepseek": Provider(("DEEPSEEK_API_KEY",), **_OPENAI),
    "openrouter": Provider(("OPENROUTER_API_KEY",), **_OPENAI),
    "perplexity": Provider(("PERPLEXITY_API_KEY",), **_OPENAI),
    "google": Provider(("GOOGLE_API_KEY", "GEMINI_API_KEY", "VERTEX_API_KEY"), client="google.genai", extra="google"),
    "mistral": Provider(("MISTRAL_API_KEY", "AZURE_MISTRAL_API_KEY", "AZUREAI_MISTRAL_API_KEY"),
                        client="mistralai", extra="mistral"),
    "groq": Provider(("GROQ_API_KEY",), client="groq", extra="groq"),
    "grok": Provider(("XAI_API_KEY", "GROK_API_KEY"), client="xai_sdk", extra="grok"),
    "azureai": Provider(("AZUREAI_API_KEY", "AZURE_API_KEY"), needs_key=False),
    "cloudflare": Provider(("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_KEY"), needs_key=False),
    "hf": Provider(("HF_TOKEN",), needs_key=False),
}

def key_variables() -> tuple[str, ...]:
    """Every environment variable the table names as carrying a provider's key or token."""
    return tuple(dict.fromkeys(k for p in PROVIDERS.values() for k in p.keys))


def _provider(model_name: Any) -> str | None:
    return model_name.split("/", 1)[0] if isinstance(model_name, str) and "/" in model_name else None


def check_model_access(model_name: Any, model_args: dict | None = None) -> str:
    """Check a model name's form and its provider's API key; return the provider.

    The error names the missing environment variable, never a key's value. A key given in
    `model_args` (`api_key`) counts as set.
    """
    provider = _provider(model_name)
    if provider is None:
        raise ValueError(f"generator.model must be '<provider>/<model>' (e.g. anthropic/claude-sonnet-4-5), "
                         f"got {model_name!r}")
    spec = PROVIDERS.get(provider)
    if spec and spec.needs_key and not os.environ.get(spec.keys[0]) and not (model_args or {}).get("api_key"):
        raise ValueError(f"generator.model={model_name!r} needs the API key in the environment variable "
                         f"{spec.keys[0]}, which is not set")
    return provider


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
    spec = PROVIDERS.get(_provider(model_name) or "")
    if spec is None or not spec.client:
        return
    if not _importable(spec.client):
        raise ImportError(
            f"{what}={model_name!r} needs the {_provider(model_name)} provider's client "
            f"({spec.client.split('.')[0]}), which is not installed: pip install '{PACKAGE}[{spec.extra}]'"
        )
