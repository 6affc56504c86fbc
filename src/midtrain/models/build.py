"""Build the tokenizer and the causal LM a stage trains, from the `model` config group."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from midtrain.data.chat import ensure_chat_template
from midtrain.models.attention import resolve_attn_implementation

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"model.dtype={name!r}: expected one of {', '.join(_DTYPES)}")
    return _DTYPES[name]


def _is_local(path: str | None) -> bool:
    return bool(path) and Path(str(path)).expanduser().exists()


def check_hf_weights(hf_dir: str | Path) -> None:
    """Open the header of every `*.safetensors` file of an export; a truncated or corrupt one is
    named (safetensors checks that the header covers the whole file) before any weights load."""
    from safetensors import safe_open

    for path in sorted(Path(hf_dir).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as e:  # SafetensorError, OSError
            raise ValueError(
                f"{path}: not a complete safetensors file ({e}); the export is damaged: remove "
                f"{Path(hf_dir).parent / 'DONE'} and {hf_dir} and re-run that stage"
            ) from e


def finished_stage_hf(init_from: str | Path) -> Path:
    """The `hf/` folder of a finished stage directory, or a clear error."""
    stage = Path(str(init_from)).expanduser()
    if not (stage / "DONE").exists() or not (stage / "hf" / "config.json").exists():
        raise FileNotFoundError(
            f"init_from={stage}: not a finished stage (expected {stage}/DONE and {stage}/hf/config.json)"
        )
    check_hf_weights(stage / "hf")
    return stage / "hf"


def check_model_cfg(model_cfg: DictConfig) -> None:
    """Validate the model config before any weights are loaded."""
    source = model_cfg.source
    if source not in ("config", "pretrained", "gguf"):
        raise ValueError(f"model.source={source!r}: expected config, pretrained or gguf")
    if source == "pretrained":
        name = model_cfg.name_or_path
        if not name:
            raise ValueError("model.name_or_path is required when model.source=pretrained")
        if not _is_local(name) and not model_cfg.revision:
            raise ValueError(
                f"model.revision is required for the hub model {name!r}: pin a commit hash "
                "(model.revision=<sha>) so runs are reproducible"
            )
    if source == "gguf" and not model_cfg.gguf_file:
        raise ValueError("model.gguf_file is required when model.source=gguf")
    _dtype(model_cfg.dtype)


def build_tokenizer(model_cfg: DictConfig, init_from: str | Path | None = None,
                    cache_dir: str | Path | None = None) -> Any:
    """The tokenizer a stage uses: the previous stage's, the builtin tiny one, or the model's own.

    `cache_dir` (`paths.cache_dir`) is where a GGUF model's conversion is cached."""
    from transformers import AutoTokenizer

    if init_from:
        tok = AutoTokenizer.from_pretrained(str(finished_stage_hf(init_from)))
    elif model_cfg.tokenizer == "builtin:tiny":
        from midtrain.models.tiny_tokenizer import TINY_TOKENIZER_DIR

        if not (TINY_TOKENIZER_DIR / "tokenizer.json").exists():
            raise FileNotFoundError(
                f"{TINY_TOKENIZER_DIR}/tokenizer.json is missing: run `python -m midtrain.models.tiny_tokenizer`"
            )
        tok = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER_DIR))
    elif model_cfg.tokenizer:
        tok = AutoTokenizer.from_pretrained(str(model_cfg.tokenizer))
    elif model_cfg.source == "gguf":
        from midtrain.models.gguf import load_gguf_tokenizer

        tok = load_gguf_tokenizer(model_cfg.gguf_file, cache_dir)
    else:
        kwargs = {} if _is_local(model_cfg.name_or_path) else {"revision": model_cfg.revision}
        tok = AutoTokenizer.from_pretrained(str(model_cfg.name_or_path), **kwargs)
    if model_cfg.get("bos_token") and not init_from:
        # The token that starts a document; chat models may report a turn marker as BOS.
        if model_cfg.bos_token not in tok.get_vocab():
            raise ValueError(f"model.bos_token={model_cfg.bos_token!r} is not in the tokenizer's vocabulary")
        tok.bos_token = model_cfg.bos_token
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.eos_token is None:
        raise ValueError("the tokenizer has no EOS token; documents need one to mark their end")
    return ensure_chat_template(tok)


def build_causal_lm(
    model_cfg: DictConfig,
    tokenizer: Any,
    init_from: str | Path | None = None,
    device_type: str = "cpu",
    compile: bool = False,
    cache_dir: str | Path | None = None,
) -> torch.nn.Module:
    """Build the causal LM: random init from a config, a pretrained checkpoint, a GGUF file, or a finished stage."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    attn = resolve_attn_implementation(model_cfg.attn_implementation, device_type, compile)
    dtype = _dtype(model_cfg.dtype)
    if init_from:
        model = AutoModelForCausalLM.from_pretrained(
            str(finished_stage_hf(init_from)), dtype=dtype, attn_implementation=attn
        )
    elif model_cfg.source == "config":
        fields = OmegaConf.to_container(model_cfg.config, resolve=True)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **fields,
        )
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=dtype)
    elif model_cfg.source == "gguf":
        from midtrain.models.gguf import load_gguf_model

        model = load_gguf_model(model_cfg.gguf_file, dtype=dtype, cache_dir=cache_dir)
        model.set_attn_implementation(attn)
    else:
        kwargs = {} if _is_local(model_cfg.name_or_path) else {"revision": model_cfg.revision}
        model = AutoModelForCausalLM.from_pretrained(
            str(model_cfg.name_or_path), dtype=dtype, attn_implementation=attn, **kwargs
        )
    model.config.use_cache = False  # training: packed masks only apply without a cache
    model.train()  # from_pretrained returns eval mode; gradient checkpointing keys off .training
    if model_cfg.get("lora"):
        model = apply_lora(model, model_cfg.lora)
    log.info("model %s: %.1fM parameters, attention %s", model_cfg.name, count_parameters(model) / 1e6, attn)
    return model


def apply_liger_kernels(model: torch.nn.Module) -> None:
    """Swap in Liger's Triton kernels (fused linear cross-entropy, RMSNorm, SwiGLU, RoPE).

    Off by default: in the measurements in PERFORMANCE.md, compiled PyTorch was faster.
    """
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
    except ImportError as e:
        raise ImportError(
            "trainer.liger_kernels=true needs liger-kernel: pip install 'alignment-midtraining[liger]'"
        ) from e
    _apply_liger_kernel_to_instance(model=_unwrap(model))


def apply_lora(model: torch.nn.Module, lora_cfg: DictConfig) -> torch.nn.Module:
    """Wrap `model` in peft LoRA adapters (`r`, `alpha`, `dropout`, `target_modules`); base weights frozen."""
    from peft import LoraConfig, get_peft_model

    cfg = OmegaConf.to_container(lora_cfg, resolve=True)
    unknown = set(cfg) - {"r", "alpha", "dropout", "target_modules"}
    if unknown:
        raise ValueError(f"model.lora: unknown keys {sorted(unknown)} (expected r, alpha, dropout, target_modules)")
    peft_cfg = LoraConfig(
        r=int(cfg.get("r", 16)),
        lora_alpha=int(cfg.get("alpha", 32)),
        lora_dropout=float(cfg.get("dropout", 0.0)),
        target_modules=list(cfg.get("target_modules") or ["q_proj", "k_proj", "v_proj", "o_proj"]),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks (for per-block compile, checkpointing and FSDP wrapping)."""
    names = set(getattr(_unwrap(model), "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"cannot find decoder blocks in {type(model).__name__} (no _no_split_modules)")
    return layers


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


EXPORT_TMP_PREFIX = ".hf-"


def remove_export_orphans(stage_dir: str | Path) -> list[Path]:
    """Delete the temporary export folders (`.hf-*`) an interrupted `export_hf` left in a stage
    directory; the next export writes a fresh one. Returns what was removed."""
    import shutil

    removed = []
    for p in sorted(Path(stage_dir).glob(f"{EXPORT_TMP_PREFIX}*")):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
            log.warning("removed %s, left by an interrupted export", p)
    return removed


def export_hf(model: torch.nn.Module, tokenizer: Any, out_dir: Path, state_dict: dict | None = None) -> None:
    """Save model and tokenizer in Hugging Face format (LoRA merged), via a temp dir and a rename."""
    import shutil
    import tempfile

    out_dir = Path(out_dir)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    tmp = Path(tempfile.mkdtemp(prefix=EXPORT_TMP_PREFIX, dir=out_dir.parent))
    try:
        model.config.use_cache = True  # inference default for whoever loads the export
        model.save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
        model.config.use_cache = False
        tokenizer.save_pretrained(str(tmp))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
