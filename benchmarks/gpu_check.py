"""One-shot accelerator check: every GPU figure the project quotes, in one run, one JSON.

    bash benchmarks/gpu_check.sh --device cuda --out DIR    # one CUDA GPU, no network, ~10 minutes
    bash benchmarks/gpu_check.sh --device cpu --out DIR     # the same steps, tiny sizes, seconds

Steps, each under its own share of `--budget-s` (a step that runs out is recorded as timed
out and the check goes on):
1. environment: torch / CUDA / cuDNN versions, device name and count, optional kernels present;
2. attention: the backend `attn_implementation=auto` resolves to, and for every backend
   available on the device the largest |packed - per-document| logit difference;
3. the `gpu` tests (`pytest -m gpu`), counted from pytest's JUnit XML;
4. `benchmarks/throughput.py` on the device: the project's Lightning path against the Hugging
   Face Trainer, same model, documents and device, in one run.

Nothing is installed and nothing is downloaded: the check needs torch, transformers,
pytorch-lightning, omegaconf, numpy and pytest, plus the project's own `src/` (the JSON lists
every third-party module that was imported, so a GPU machine can be prepared with exactly
those wheels).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_TOKENS_PER_S = 60_000  # PERFORMANCE.md: 1B shape on one H100-class GPU
TARGET_RATIO = 3.0            # against the Hugging Face Trainer on the same GPU

# Throughput settings per device: the CUDA preset as the README quotes it (fewer repeats to fit
# the budget); on CPU a model small enough that the whole check takes seconds.
THROUGHPUT_ARGS = {
    "cuda": ["--repeats", "3"],
    "cpu": ["--num-docs", "8", "--repeats", "1", "--warmup-steps", "1", "--num-layers", "1",
            "--hidden-size", "64", "--intermediate-size", "128", "--min-doc-tokens", "16",
            "--max-doc-tokens", "96", "--seq-len", "128", "--batch-rows", "2", "--batch-docs", "2"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="One-shot GPU check: tests, attention numerics, throughput, one JSON.")
    p.add_argument("--device", choices=["cuda", "cpu"], required=True)
    p.add_argument("--out", type=Path, required=True, help="directory for gpu_check.json and the step outputs")
    p.add_argument("--budget-s", type=float, default=600.0, help="wall-clock budget for all steps (seconds)")
    p.add_argument("--skip", action="append", default=[], choices=["tests", "throughput"],
                   help="leave a step out (repeatable)")
    a = p.parse_args(argv)
    if a.budget_s <= 0:
        p.error(f"--budget-s must be positive, got {a.budget_s}")
    if a.out.exists() and not a.out.is_dir():
        p.error(f"--out {a.out} exists and is not a directory")
    return a


def environment(device: str) -> dict:
    import importlib.util

    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "optional": {m: importlib.util.find_spec(m) is not None for m in ("flash_attn", "liger_kernel", "triton")},
    }
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is visible (use --device cpu for the fallback)")
        env.update(device_name=torch.cuda.get_device_name(), device_count=torch.cuda.device_count(),
                   capability=".".join(map(str, torch.cuda.get_device_capability())))
    else:
        env.update(device_name=env["cpu"], device_count=1)
    return env


def attention_check(device: str) -> dict:
    """Packed-vs-per-document logit error for every backend the device offers."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from midtrain.models.attention import flash_attn_available, flex_attention_available, resolve_attn_implementation
    from midtrain.models.build import decoder_layers
    from midtrain.models.checks import packed_vs_per_document

    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0)
    g = torch.Generator().manual_seed(0)
    docs = [torch.randint(3, 128, (n,), generator=g).tolist() for n in (5, 17, 1, 9, 30, 12, 3, 26)]
    cases = [("sdpa", torch.float32, False), ("eager", torch.float32, False)]
    if device == "cuda" and flex_attention_available():
        cases.append(("flex_attention", torch.float32, True))  # the production path: compiled blocks
    if device == "cuda" and flash_attn_available():
        cases.append(("flash_attention_2", torch.bfloat16, False))  # half precision only
    out = {"auto_resolves_to": resolve_attn_implementation("auto", device, compile=True), "max_abs_logit_error": {}}
    for attn, dtype, compiled in cases:
        torch.manual_seed(0)
        model = LlamaForCausalLM._from_config(cfg, attn_implementation=attn, dtype=dtype).to(device).eval()
        if compiled:
            for block in decoder_layers(model):
                block.compile()
        key = f"{attn}/{str(dtype).removeprefix('torch.')}" + ("/compiled" if compiled else "")
        try:
            out["max_abs_logit_error"][key] = packed_vs_per_document(model, docs, 40, device)
        except Exception as e:  # a backend that fails is a finding, not the end of the check
            out["max_abs_logit_error"][key] = None
            out.setdefault("errors", {})[key] = f"{type(e).__name__}: {e}"[:500]
    return out


def _run(cmd: list[str], timeout: float, log: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    t0 = time.monotonic()
    try:
        with open(log, "w") as f:
            rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                                timeout=max(1.0, timeout)).returncode
        status = "ok" if rc == 0 else f"exit {rc}"
    except subprocess.TimeoutExpired:
        status = "timed out"
    return {"status": status, "seconds": round(time.monotonic() - t0, 1), "log": log.name}


def gpu_test_files() -> list[str]:
    """The test files that carry the `gpu` marker (collecting the whole suite costs minutes)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if "mark.gpu" in p.read_text(encoding="utf-8"))


def gpu_tests(out: Path, timeout: float) -> dict:
    xml = out / "gpu_tests.xml"
    files = gpu_test_files()
    res = _run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                f"--junitxml={xml}", *files], timeout, out / "gpu_tests.log")
    res["files"] = files
    if res["status"] == "exit 5":  # pytest: nothing collected under the marker
        res["status"] = "ok"
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        res["counts"] = counts
        res["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                         if c.find("failure") is not None or c.find("error") is not None]
    return res


def throughput(device: str, out: Path, timeout: float) -> dict:
    path = out / "throughput.json"
    res = _run([sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--device", device,
                "--out", str(path), *THROUGHPUT_ARGS[device]], timeout, out / "throughput.log")
    if path.exists():
        bench = json.loads(path.read_text())
        project, hf = bench["rows"]
        res.update(
            project_tokens_per_s=project["tokens_per_s"], hf_trainer_tokens_per_s=hf["tokens_per_s"],
            ratio=bench["ratio"], mfu=project["mfu"], hf_trainer_mfu=hf["mfu"],
            peak_mem_gb=project["peak_mem_gb"], hf_trainer_peak_mem_gb=hf["peak_mem_gb"],
            parameters=bench["parameters"], attn=bench["setup"]["attn"],
            bf16_matmul_tflops=bench["env"].get("bf16_matmul_tflops"),
        )
        if device == "cuda":
            res["meets_target"] = bool(project["tokens_per_s"] >= TARGET_TOKENS_PER_S and bench["ratio"] >= TARGET_RATIO)
    return res


def third_party_modules() -> list[str]:
    """Top-level non-stdlib modules imported so far (what a GPU machine must have)."""
    std = set(sys.stdlib_module_names)
    tops = {m.split(".")[0] for m in list(sys.modules)}
    return sorted(t for t in tops if t not in std and not t.startswith("_") and t not in ("midtrain", "gpu_check"))


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    left = lambda: a.budget_s - (time.monotonic() - t0)  # noqa: E731
    result: dict = {"device": a.device, "budget_s": a.budget_s, "environment": environment(a.device),
                    "targets": {"tokens_per_s": TARGET_TOKENS_PER_S, "ratio_vs_hf_trainer": TARGET_RATIO}}
    result["attention"] = attention_check(a.device)
    # The tests get a third of what is left, the benchmark the rest.
    result["gpu_tests"] = gpu_tests(a.out, left() / 3) if "tests" not in a.skip else {"status": "skipped"}
    result["throughput"] = throughput(a.device, a.out, left()) if "throughput" not in a.skip else {"status": "skipped"}
    # The test and benchmark steps (subprocesses) import pytest and pytorch_lightning as well.
    result["third_party_modules_imported"] = third_party_modules()
    result["seconds"] = round(time.monotonic() - t0, 1)
    from midtrain.tracking import atomic_write_json

    atomic_write_json(a.out / "gpu_check.json", result)
    print(json.dumps({k: result[k] for k in ("attention", "gpu_tests", "throughput", "seconds")}, indent=1))
    print(f"wrote {a.out / 'gpu_check.json'}")
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    main(sys.argv[1:])
