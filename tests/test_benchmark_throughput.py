"""benchmarks/throughput.py runs both rows on the same model and documents and reports a ratio."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("throughput_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


SMALL = ["--device", "cpu", "--hidden-size", "64", "--intermediate-size", "128", "--num-layers", "1",
         "--num-docs", "24", "--min-doc-tokens", "16", "--max-doc-tokens", "96", "--seq-len", "128",
         "--batch-rows", "2", "--batch-docs", "4", "--warmup-steps", "1", "--repeats", "2", "--threads", "1"]


def test_cpu_run_prints_two_rows_and_writes_json(bench, tmp_path, capsys):
    out = tmp_path / "result.json"
    threads = torch.get_num_threads()
    result = bench.main(SMALL + ["--out", str(out)])
    assert torch.get_num_threads() == threads  # --threads is restored for whoever runs next
    printed = capsys.readouterr().out
    assert "| project: Lightning, packed 2x128, sdpa" in printed
    assert "| HF Trainer: pad to longest, 4 docs/step, sdpa" in printed
    assert "ratio project / HF Trainer:" in printed

    saved = json.loads(out.read_text())
    assert saved["ratio"] == result["ratio"]
    project, hf = saved["rows"]
    # same builder, same seed: both rows started from the same weights
    assert project["init_checksum"] == hf["init_checksum"]
    for row in (project, hf):
        assert row["tokens_per_s"] > 0 and row["median_step_tokens_per_s"] > 0 and row["measured_tokens"] > 0
        assert len(row["tokens_per_s_runs"]) == 2
        assert row["mfu"] is None and row["peak_mem_gb"] is None  # no known peak / no CUDA on CPU
        assert 0 < row["final_loss"] < 20
    # packing wastes far fewer slots than padding to the longest document
    assert project["real_token_share"] > 0.85 > hf["real_token_share"]
    paired = sorted(saved["ratio_runs"])
    assert saved["ratio"] == pytest.approx((paired[0] + paired[1]) / 2, abs=1e-3)
    assert saved["ratio_median_step"] == pytest.approx(
        project["median_step_tokens_per_s"] / hf["median_step_tokens_per_s"], abs=1e-2
    )
    assert saved["documents"]["count"] == 24 and 16 <= saved["documents"]["min_tokens"]
    assert saved["documents"]["max_tokens"] <= 96


def test_pad_to_longest_masks_padding_in_labels(bench):
    collate = bench._PadToLongest(pad_id=2)
    batch = collate([{"input_ids": [0, 5, 6, 1]}, {"input_ids": [0, 7, 1]}])
    assert batch["input_ids"].tolist() == [[0, 5, 6, 1], [0, 7, 1, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["labels"].tolist() == [[0, 5, 6, 1], [0, 7, 1, -100]]
    assert collate.real_tokens == [7]


def test_documents_are_seeded_and_within_bounds(bench):
    setup, _ = bench.parse_args(SMALL)
    docs = bench.make_documents(setup)
    assert docs == bench.make_documents(setup)
    assert all(16 <= len(d) <= 96 and d[0] == 0 and d[-1] == 1 for d in docs)


def test_gpu_preset_matches_the_performance_anchor_shape(bench):
    setup, _ = bench.parse_args(["--device", "cuda"])
    with torch.device("meta"):
        model = bench.build(setup, "sdpa", compile=False)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - 1.236e9) < 1e6  # Llama-3.2-1B with tied embeddings
    fpt = bench.flops_per_token(setup, model, [[0] * 896])
    assert fpt == pytest.approx(6 * n + 6 * 16 * 2048 * 896)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--min-doc-tokens", "600"], "--max-doc-tokens"),
        (["--max-doc-tokens", "2000"], "--seq-len"),
        (["--repeats", "0"], "--repeats"),
        (["--threads", "0"], "--threads"),
    ],
)
def test_bad_arguments_are_rejected(bench, args, message, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu", *args])
    assert message in capsys.readouterr().err


def test_too_few_documents_for_the_warmup_is_a_clear_error(bench):
    setup, _ = bench.parse_args(SMALL[:2] + ["--num-docs", "4", "--warmup-steps", "3"])
    with pytest.raises(ValueError, match="raise --num-docs"):
        bench.run_hf_trainer(setup, bench.make_documents(setup), fpt=1.0)
