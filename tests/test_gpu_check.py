"""The one-shot GPU check: argument handling and its CPU fallback, so the script cannot rot."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("argv, message", [
    ([], "--device"),
    (["--device", "tpu", "--out", "x"], "invalid choice"),
    (["--device", "cpu"], "--out"),
    (["--device", "cpu", "--out", "x", "--budget-s", "0"], "--budget-s must be positive"),
])
def test_bad_arguments_are_refused_by_name(check, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        check.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_out_must_be_a_directory(check, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SystemExit):
        check.parse_args(["--device", "cpu", "--out", str(f)])
    assert "is not a directory" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_cuda_without_a_gpu_says_so(check):
    with pytest.raises(SystemExit, match="no CUDA device is visible"):
        check.environment("cuda")


def test_gpu_test_files_are_the_marked_ones(check):
    files = check.gpu_test_files()
    assert "tests/test_attention_backends.py" in files
    assert "tests/test_gpu_check.py" not in files  # this file only names the marker in strings


def test_cpu_fallback_writes_every_figure(tmp_path):
    out = tmp_path / "check"
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["device"] == "cpu"
    env_ = result["environment"]
    assert env_["torch"] == torch.__version__ and env_["device_count"] == 1
    att = result["attention"]
    assert att["auto_resolves_to"] in ("sdpa", "eager", "flex_attention")
    assert set(att["max_abs_logit_error"]) == {"sdpa/float32", "eager/float32"}
    assert all(err < 1e-5 for err in att["max_abs_logit_error"].values())
    tests = result["gpu_tests"]
    assert tests["status"] == "ok", tests
    # without a GPU every gpu test is collected and skipped, none fails
    assert tests["counts"]["tests"] >= 1 and tests["counts"]["skipped"] == tests["counts"]["tests"]
    tp = result["throughput"]
    assert tp["status"] == "ok", (out / "throughput.log").read_text()[-2000:]
    assert tp["project_tokens_per_s"] > 0 and tp["hf_trainer_tokens_per_s"] > 0
    assert tp["ratio"] > 0 and "meets_target" not in tp  # the target is a GPU figure
    assert (out / "throughput.json").exists() and (out / "gpu_tests.xml").exists()
    assert {"torch", "transformers"} <= set(result["third_party_modules_imported"])
