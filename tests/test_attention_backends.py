"""Every attention backend honours document boundaries in packed rows.

Documents packed by the project's packer into rows (position_ids restarting at 0 per
document, no attention mask, no cache) must give the same logits as each document run on
its own. CPU covers the portable paths (sdpa with transformers' block-diagonal mask, eager);
FlexAttention on CPU compiles with inductor (about a minute), so it is `slow`; the CUDA
kernels (flash_attention_2, flex_attention compiled, sdpa) carry the `gpu` marker.
"""

from __future__ import annotations

import pytest
import torch

from midtrain.data.packing import Segment, pack_segments
from midtrain.models.attention import flash_attn_available, flex_attention_available, resolve_attn_implementation
from midtrain.models.checks import packed_vs_per_document

VOCAB = 128
# Lengths include a 1-token document and rows that end in padding.
DOC_LENGTHS = [5, 17, 1, 9, 30, 12, 3, 26]
SEQ_LEN = 40


def _tiny_config():
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as in Llama 3
        max_position_embeddings=256,
        pad_token_id=0,
    )


def _docs(seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in DOC_LENGTHS]


def _model(attn: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM._from_config(_tiny_config(), attn_implementation=attn, dtype=dtype)
    return model.to(device).eval()


def _packed_vs_per_document(model, device: str = "cpu", use_position_ids: bool = True) -> float:
    """Largest |packed logit - per-document logit| over all real tokens."""
    docs = _docs()
    rows = pack_segments([Segment(d, d) for d in docs], SEQ_LEN, pad_id=0)
    assert rows.stats.rows == 3 and rows.stats.real_tokens == sum(DOC_LENGTHS)
    return packed_vs_per_document(model, docs, SEQ_LEN, device, use_position_ids)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_equals_per_document_cpu(attn):
    assert _packed_vs_per_document(_model(attn)) < 1e-5


def test_without_document_boundaries_the_check_fails():
    """Negative control: the same rows without position_ids attend across documents."""
    assert _packed_vs_per_document(_model("sdpa"), use_position_ids=False) > 1e-2


def test_auto_resolves_to_a_document_masking_backend_on_cpu():
    attn = resolve_attn_implementation("auto", "cpu")
    assert attn in ("sdpa", "eager", "flex_attention")
    assert _packed_vs_per_document(_model(attn)) < 1e-5


@pytest.mark.slow
@pytest.mark.skipif(not flex_attention_available(), reason="torch has no FlexAttention")
def test_packed_equals_per_document_flex_cpu():
    assert _packed_vs_per_document(_model("flex_attention")) < 1e-5


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_equals_per_document_cuda_fp32(attn):
    torch.backends.cuda.matmul.allow_tf32 = False
    assert _packed_vs_per_document(_model(attn, "cuda"), "cuda") < 1e-4


@pytest.mark.gpu
@cuda
@pytest.mark.skipif(not flex_attention_available(), reason="torch has no FlexAttention")
@pytest.mark.parametrize("compiled", [False, True])
def test_packed_equals_per_document_flex_cuda(compiled):
    from midtrain.models.build import decoder_layers

    torch.backends.cuda.matmul.allow_tf32 = False
    model = _model("flex_attention", "cuda")
    if compiled:  # the production path: FlexAttention inside per-block compile
        for block in decoder_layers(model):
            block.compile()
    assert _packed_vs_per_document(model, "cuda") < 1e-4


@pytest.mark.gpu
@cuda
@pytest.mark.skipif(not flash_attn_available(), reason="flash-attn is not installed")
def test_packed_equals_per_document_flash_attention_2():
    # flash-attn runs in half precision only; compare bf16 against bf16 per-document runs
    worst = _packed_vs_per_document(_model("flash_attention_2", "cuda", torch.bfloat16), "cuda")
    assert worst < 3e-2
