"""Chat formatting shared by instruction tuning and evaluation.

Base models often ship no chat template. Both the SFT stage and the model under test at
evaluation time then use `DEFAULT_CHAT_TEMPLATE`, so a model is asked questions in the same
format it was instruction-tuned on.
"""

from __future__ import annotations

from typing import Any

# A plain role-header template for tokenizers without one. The assistant turn ends with the
# EOS token, so an instruction-tuned model learns to stop.
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ '### User:\\n' + message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '### Assistant:\\n' + message['content'] + eos_token + '\\n\\n' }}"
    "{%- else -%}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '### Assistant:\\n' }}{%- endif -%}"
)


def ensure_chat_template(tokenizer: Any) -> Any:
    """Give `tokenizer` the project's default chat template if it has none; return it."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer
