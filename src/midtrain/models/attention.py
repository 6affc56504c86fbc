"""Choose the attention kernel. Every choice honours document boundaries in packed rows.

transformers derives document boundaries from `position_ids` that restart at 0 for each
document (with `attention_mask=None` and no cache): `flash_attention_2` turns them into
`cu_seqlens` for the varlen kernel; `sdpa`, `eager` and `flex_attention` build an exact
block-diagonal causal mask. `tests/test_attention_backends.py` checks each path against
per-document forward passes.
"""

from __future__ import annotations

import importlib.util

BACKENDS = ("auto", "flash_attention_2", "flex_attention", "sdpa", "eager")


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def flex_attention_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_attn_implementation(requested: str, device_type: str, compile: bool = False) -> str:
    """Map `auto` to the fastest document-masking kernel available on `device_type`.

    Args:
        requested: one of `BACKENDS`.
        device_type: "cuda" or "cpu" (anything else is treated like "cpu").
        compile: whether decoder blocks are compiled; FlexAttention is only fast compiled.

    Returns:
        A value for transformers' `attn_implementation`.
    """
    if requested not in BACKENDS:
        raise ValueError(f"model.attn_implementation={requested!r}: expected one of {', '.join(BACKENDS)}")
    if requested == "flash_attention_2" and not flash_attn_available():
        raise ValueError(
            "model.attn_implementation=flash_attention_2 but flash-attn is not installed "
            "(pip install 'alignment-midtraining[flash]'), or use attn_implementation=auto"
        )
    if requested != "auto":
        return requested
    if device_type == "cuda":
        if flash_attn_available():
            return "flash_attention_2"
        if compile and flex_attention_available():
            return "flex_attention"
    return "sdpa"
