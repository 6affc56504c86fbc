"""Training throughput: the project's Lightning path vs the Hugging Face Trainer, in one run.

Both rows train the same model (same builder, same seed, same initial weights) on the same
documents on the same device, and count only real (non-padding) tokens:

- project: documents packed into rows of `seq_len` by `midtrain.data.packing` (no attention
  across documents: position_ids restart per document), the project's `CausalLMModule`
  (its AdamW and schedule) under a real `pytorch_lightning.Trainer.fit`; model, Trainer and
  callbacks come from `midtrain.lightning.trainer`, the factory `midtrain-train` builds
  through, for the `conf/train.yaml` config of this setup (`project_config`), and the
  project's `RealTokenThroughput` callback times it;
- baseline: `transformers.Trainer` on whole documents, padded to the longest in each batch,
  sdpa attention.

Warm-up steps are excluded, the device is synchronised before each clock read, and each row
runs `--repeats` times alternately (these machines are noisy); the table shows medians.
MFU = tokens/s x (6N + 6*L*d*T) / peak, T = mean document length (benchmarks/README.md); it is
reported only where the device's peak is known (H100/H200/A100).

    python benchmarks/throughput.py --device cpu            # small model, one thread, a few minutes
    python benchmarks/throughput.py --device cuda           # Llama-3.2-1B shape, random init

Writes the table to stdout and everything to `--out` (JSON).
"""

from __future__ import annotations

import argparse
import gc
import logging
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from omegaconf import DictConfig

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Setup:
    """One benchmark configuration. Presets below; every field can be overridden on the CLI."""

    device: str
    model: dict                 # LlamaConfig fields
    vocab_size: int
    num_docs: int               # documents in the run (both rows see all of them once)
    min_doc_tokens: int         # document lengths are uniform in [min, max] (BOS/EOS included)
    max_doc_tokens: int
    seq_len: int                # project: tokens per packed row
    batch_rows: int             # project: packed rows per step
    batch_docs: int             # baseline: documents per step (padded to the longest)
    warmup_steps: int           # steps excluded from the timing window, per row
    repeats: int                # alternating repeats of both rows; medians reported
    precision: str              # Lightning precision; the Trainer gets the matching bf16 flag
    attn: str                   # project attention backend (auto resolves per device)
    compile: bool               # project: torch.compile each decoder block (as trainer.compile)
    threads: int | None         # torch CPU threads (None: torch's default)
    seed: int = 0
    notes: list[str] = field(default_factory=list)


PRESETS: dict[str, dict[str, Any]] = {
    # The GPU setup scaled down by 4 in width and document length, so that attention keeps a
    # similar share of the work (T / (16 d) ~ 12%) and padding stays the main difference.
    "cpu": dict(
        model=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=1024, rope_theta=10000.0,
                   tie_word_embeddings=True),
        vocab_size=2048, num_docs=64, min_doc_tokens=64, max_doc_tokens=384, seq_len=512,
        batch_rows=4, batch_docs=8, warmup_steps=2, repeats=5, precision="32-true", attn="auto",
        # One thread: on a shared machine, OpenMP barrier waits for a descheduled second thread
        # otherwise dominate both rows and the ratio measures the scheduler (1.1x vs 1.4x measured).
        compile=False, threads=1,
    ),
    # The reference setup (benchmarks/README.md): Llama-3.2-1B shape, random init, 256-1536-token documents,
    # bf16 autocast with fp32 master weights, 4x2048 packed rows vs 8 padded documents.
    "cuda": dict(
        model=dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                   num_key_value_heads=8, max_position_embeddings=4096, rope_theta=500000.0,
                   tie_word_embeddings=True),
        vocab_size=128256, num_docs=480, min_doc_tokens=256, max_doc_tokens=1536, seq_len=2048,
        batch_rows=4, batch_docs=8, warmup_steps=5, repeats=1, precision="bf16-mixed", attn="auto",
        compile=True, threads=None,
    ),
}


class _Vocab:
    """What the model builder reads from a tokenizer: the vocabulary size and special ids."""

    bos_token_id, eos_token_id, pad_token_id = 0, 1, 2

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


def make_documents(setup: Setup) -> list[list[int]]:
    """Random-token documents with BOS/EOS, lengths uniform in [min, max], in a seeded order."""
    g = torch.Generator().manual_seed(setup.seed)
    lens = torch.randint(setup.min_doc_tokens - 2, setup.max_doc_tokens - 1, (setup.num_docs,), generator=g)
    docs = []
    for n in lens.tolist():
        body = torch.randint(3, setup.vocab_size, (n,), generator=g).tolist()
        docs.append([_Vocab.bos_token_id, *body, _Vocab.eos_token_id])
    return docs


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mem_gb(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def project_config(setup: Setup, steps: int | None = None, attn: str | None = None, compile: bool | None = None,
                   overrides: list[str] | None = None) -> DictConfig:
    """The `midtrain-train` config of the project row: `conf/train.yaml` with this setup's model,
    rows (one micro-batch of `batch_rows` x `seq_len` per optimizer step), precision, compile,
    `trainer.max_steps=steps` and no logger; `overrides` go last (Hydra override strings)."""
    from omegaconf import OmegaConf, open_dict

    from midtrain.pipeline import compose_preset

    compile = setup.compile if compile is None else compile
    cfg = compose_preset("train", [
        f"seed={setup.seed}",
        "model.name=bench",
        "model.dtype=float32",
        f"model.attn_implementation={attn or setup.attn}",
        f"data.seq_len={setup.seq_len}",
        f"data.batch_size={setup.batch_rows}",
        f"data.tokens_per_step={setup.batch_rows * setup.seq_len}",
        f"trainer.accelerator={'gpu' if setup.device == 'cuda' else 'cpu'}",
        "trainer.devices=1",
        f"trainer.precision={setup.precision}",
        f"trainer.compile={str(compile).lower()}",
        "trainer.enable_progress_bar=false",
        f"trainer.max_steps={steps if steps is not None else 'null'}",
        "logger.kind=none",
        *(overrides or []),
    ])
    with open_dict(cfg):
        cfg.model.config = OmegaConf.create(dict(setup.model))
    return cfg


def build(setup: Setup, attn: str, compile: bool) -> torch.nn.Module:
    """The initial model through the project's builder, seeded so every call gives the same weights."""
    from midtrain.lightning.trainer import initial_model

    return initial_model(project_config(setup, attn=attn, compile=compile), _Vocab(setup.vocab_size), setup.device)


def weights_checksum(model: torch.nn.Module) -> float:
    with torch.no_grad():
        return float(sum(p.double().sum() for p in model.parameters()))


def flops_per_token(setup: Setup, model: torch.nn.Module, docs: list[list[int]]) -> float:
    from midtrain.lightning.callbacks import flops_per_token as fpt
    from midtrain.models.build import count_parameters

    mean_len = sum(map(len, docs)) / len(docs)
    return fpt(count_parameters(model), setup.model["num_hidden_layers"], setup.model["hidden_size"], mean_len)


@dataclass
class ProjectRow:
    """The project row built and ready to fit."""

    trainer: Any                # pytorch_lightning.Trainer from midtrain.lightning.trainer.build_trainer
    module: Any                 # CausalLMModule
    loader: Any                 # the datamodule's micro-batches of the packed rows
    steps: int
    attn: str                   # the attention kernel `auto` resolved to
    real_token_share: float     # of the packed rows' slots
    init_checksum: float


def project_row(setup: Setup, docs: list[list[int]], extra_callbacks: list | None = None) -> ProjectRow:
    """The project's path for `project_config(setup, steps)`: packed rows, the model as
    `midtrain-train` lays it out, CausalLMModule, and the Trainer with its callbacks from the same
    factory (no run directory, so no checkpoints; the throughput window skips `warmup_steps`)."""
    import numpy as np
    from torch.utils.data import DataLoader

    # the datamodule's own micro-batch view of packed rows: the batches midtrain-train feeds
    from midtrain.data.datamodule import Schedule, _MicroBatches
    from midtrain.data.packing import lm_segment, pack_segments
    from midtrain.lightning.module import CausalLMModule
    from midtrain.lightning.parallelize import device_type
    from midtrain.lightning.trainer import build_trainer, callbacks, training_model

    # lm_segment(body) re-adds BOS/EOS and masks BOS: the same tokens the baseline sees
    segs = [lm_segment(d[1:-1], _Vocab.bos_token_id, _Vocab.eos_token_id) for d in docs]
    rows = pack_segments(segs, setup.seq_len, _Vocab.pad_token_id)
    order = np.random.default_rng([setup.seed, 0]).permutation(len(rows))
    batches = _MicroBatches(rows, order, setup.batch_rows, rank=0, world=1)
    steps = len(batches)
    if steps <= setup.warmup_steps:
        raise ValueError(f"{setup.num_docs} documents give {steps} project steps, not more than "
                         f"warmup_steps={setup.warmup_steps}; raise --num-docs")
    cfg = project_config(setup, steps)
    dev = device_type(cfg.trainer)
    model = training_model(cfg, _Vocab(setup.vocab_size), dev)
    checksum = weights_checksum(model)
    module = CausalLMModule(model, cfg.optim, total_steps=steps)
    schedule = Schedule(micro_batches=steps, accumulate=1, steps=steps)  # data.tokens_per_step: one micro-batch
    cbs = callbacks(cfg, model, schedule, mean_context=sum(map(len, docs)) / len(docs),
                    throughput_warmup=setup.warmup_steps)
    trainer = build_trainer(cfg, dev, model, schedule, cbs + list(extra_callbacks or []))
    return ProjectRow(trainer=trainer, module=module, loader=DataLoader(batches, batch_size=None, shuffle=False),
                      steps=steps, attn=model.config._attn_implementation,
                      real_token_share=round(rows.stats.efficiency, 4), init_checksum=checksum)


def run_project(setup: Setup, docs: list[list[int]]) -> dict:
    """Fit the project row (`project_row`) and read its RealTokenThroughput window."""
    import pytorch_lightning as pl

    from midtrain.lightning.callbacks import RealTokenThroughput

    _free(setup.device)
    step_rates: list[float] = []

    class StepClock(pl.Callback):
        """Per-step real tokens/s after warm-up, on CPU only (a per-step sync would slow a GPU)."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.t, self.n = time.perf_counter(), batch["_real_tokens"]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if setup.device == "cpu" and trainer.global_step > setup.warmup_steps:
                step_rates.append(self.n / (time.perf_counter() - self.t))

    row = project_row(setup, docs, [StepClock()])
    row.trainer.fit(row.module, train_dataloaders=row.loader)
    res = next(c for c in row.trainer.callbacks if isinstance(c, RealTokenThroughput)).result
    out = {
        "name": f"project: Lightning, packed {setup.batch_rows}x{setup.seq_len}, {row.attn}"
                + (", compiled blocks" if setup.compile else ""),
        "tokens_per_s": res["tokens_per_s"],
        "mfu": res.get("mfu"),
        "peak_mem_gb": _peak_mem_gb(setup.device),
        "measured_steps": row.steps - setup.warmup_steps,
        "measured_tokens": res["measured_tokens"],
        "seconds": res["seconds"],
        "step_tokens_per_s": step_rates,
        "real_token_share": row.real_token_share,
        "final_loss": round(float(row.module.last_loss), 4),
        "init_checksum": row.init_checksum,
    }
    del row
    return out


class _PadToLongest:
    """Pads a batch of whole documents to its longest one (what a Trainer user does by default);
    records the real tokens of every batch it builds."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id
        self.real_tokens: list[int] = []

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(x["input_ids"]) for x in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for i, x in enumerate(items):
            ids[i, : len(x["input_ids"])] = torch.tensor(x["input_ids"])
            mask[i, : len(x["input_ids"])] = 1
        self.real_tokens.append(int(mask.sum()))
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def run_hf_trainer(setup: Setup, docs: list[list[int]], fpt: float) -> dict:
    """The baseline: transformers.Trainer, whole documents padded to the longest, sdpa."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    _free(setup.device)
    steps = len(docs) // setup.batch_docs
    if steps <= setup.warmup_steps:
        raise ValueError(f"{setup.num_docs} documents give {steps} Trainer steps, not more than "
                         f"warmup_steps={setup.warmup_steps}; raise --num-docs")
    model = build(setup, "sdpa", compile=False)
    checksum = weights_checksum(model)
    optim = project_config(setup).optim  # the project row's optimizer settings
    collator = _PadToLongest(_Vocab.pad_token_id)
    clock: dict[str, float] = {}
    step_seconds: list[float] = []

    class Timer(TrainerCallback):
        """The window after warm-up (synchronised), plus per-step times on CPU."""

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == setup.warmup_steps and "t0" not in clock:
                _sync(setup.device)
                clock["t0"] = time.perf_counter()
            clock["step"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if setup.device == "cpu" and state.global_step > setup.warmup_steps:
                step_seconds.append(time.perf_counter() - clock["step"])

        def on_train_end(self, args, state, control, **kwargs):
            _sync(setup.device)
            clock["t1"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=setup.batch_docs,
            max_steps=steps,
            learning_rate=float(optim.lr),
            weight_decay=float(optim.weight_decay),
            adam_beta1=float(optim.betas[0]),
            adam_beta2=float(optim.betas[1]),
            adam_epsilon=float(optim.eps),
            max_grad_norm=float(optim.max_grad_norm),
            lr_scheduler_type="cosine",
            warmup_steps=max(1, round(float(optim.warmup_ratio) * steps)),
            optim="adamw_torch_fused" if setup.device == "cuda" else "adamw_torch",
            bf16=setup.precision.startswith("bf16"),
            use_cpu=setup.device == "cpu",
            train_sampling_strategy="sequential",  # documents are already in a seeded order
            dataloader_num_workers=0,
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            remove_unused_columns=False,
            seed=setup.seed,
        )
        dataset = [{"input_ids": d} for d in docs]
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                          callbacks=[Timer()])
        out_train = trainer.train()
    # Sequential batches of `batch_docs`: the timed steps are batches warmup..steps-1.
    expected = [sum(len(d) for d in docs[i * setup.batch_docs:(i + 1) * setup.batch_docs]) for i in range(steps)]
    if collator.real_tokens[:steps] != expected:
        raise RuntimeError("the Trainer did not consume the documents in the expected order")
    tokens = sum(expected[setup.warmup_steps:])
    padded = sum(setup.batch_docs * max(len(d) for d in docs[i * setup.batch_docs:(i + 1) * setup.batch_docs])
                 for i in range(steps))
    seconds = clock["t1"] - clock["t0"]
    tps = tokens / seconds
    from midtrain.lightning.callbacks import device_peak_flops

    peak = device_peak_flops()
    out = {
        "name": f"HF Trainer: pad to longest, {setup.batch_docs} docs/step, sdpa",
        "tokens_per_s": round(tps, 1),
        "mfu": round(tps * fpt / peak, 4) if peak else None,
        "peak_mem_gb": _peak_mem_gb(setup.device),
        "measured_steps": steps - setup.warmup_steps,
        "measured_tokens": tokens,
        "seconds": round(seconds, 3),
        "step_tokens_per_s": [n / t for n, t in zip(expected[setup.warmup_steps:], step_seconds)],
        "real_token_share": round(sum(expected) / padded, 4),
        "final_loss": round(float(out_train.training_loss), 4),
        "init_checksum": checksum,
    }
    del trainer, model
    return out


def matmul_ceiling_tflops(device: str) -> float | None:
    """Measured bf16 8192^3 matmul rate: the practical ceiling beside the datasheet peak."""
    if device != "cuda":
        return None
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    t = time.perf_counter()
    n = 20
    for _ in range(n):
        a @ b
    _sync(device)
    return round(2 * 8192**3 * n / (time.perf_counter() - t) / 1e12, 1)


def _median_row(runs: list[dict]) -> dict:
    best = dict(runs[0])
    for key in ("tokens_per_s", "mfu", "seconds", "peak_mem_gb"):
        vals = [r[key] for r in runs if r.get(key) is not None]
        best[key] = statistics.median(vals) if vals else None
    best["tokens_per_s_runs"] = [r["tokens_per_s"] for r in runs]
    # Median over every timed step of every repeat: steps slowed by other load on a shared
    # machine fall in the tail instead of moving the figure.
    steps = [x for r in runs for x in r.pop("step_tokens_per_s")]
    best.pop("step_tokens_per_s", None)
    best["median_step_tokens_per_s"] = round(statistics.median(steps), 1) if steps else None
    return best


def benchmark(setup: Setup) -> dict:
    """Run both rows `setup.repeats` times, alternating; return the result record."""
    import pytorch_lightning as pl
    import transformers

    if setup.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is visible")
    docs = make_documents(setup)
    with torch.device("meta"):  # shapes only: parameter count for the FLOP formula
        probe = build(setup, "sdpa", compile=False)
    fpt = flops_per_token(setup, probe, docs)
    n_params = sum(p.numel() for p in probe.parameters())
    del probe
    project_runs, hf_runs = [], []
    for _ in range(setup.repeats):
        project_runs.append(run_project(setup, docs))
        hf_runs.append(run_hf_trainer(setup, docs, fpt))
    project, hf = _median_row(project_runs), _median_row(hf_runs)
    # paired ratios of back-to-back runs cancel slow drifts in machine load
    paired = [p["tokens_per_s"] / h["tokens_per_s"] for p, h in zip(project_runs, hf_runs)]
    if project["init_checksum"] != hf["init_checksum"]:
        raise RuntimeError("the two rows did not start from the same weights")
    lengths = [len(d) for d in docs]
    return {
        "setup": asdict(setup),
        "documents": {"count": len(docs), "mean_tokens": round(sum(lengths) / len(docs), 1),
                      "min_tokens": min(lengths), "max_tokens": max(lengths)},
        "parameters": n_params,
        "flops_per_token": fpt,
        "env": {
            "device": torch.cuda.get_device_name() if setup.device == "cuda" else platform.processor() or "cpu",
            "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "pytorch_lightning": pl.__version__,
            "bf16_matmul_tflops": matmul_ceiling_tflops(setup.device),
        },
        "rows": [project, hf],
        "ratio": round(statistics.median(paired), 3),
        "ratio_runs": [round(r, 3) for r in paired],
        "ratio_median_step": (round(project["median_step_tokens_per_s"] / hf["median_step_tokens_per_s"], 3)
                              if hf["median_step_tokens_per_s"] else None),
    }


def format_table(result: dict) -> str:
    """The result as a Markdown table plus a ratio line (what the README quotes)."""

    def cell(v, spec, suffix=""):
        return "-" if v is None else format(v, spec) + suffix

    head = (f"| {'path':<58} | {'real tokens/s':>13} | {'median step':>11} | {'MFU':>6} "
            f"| {'real share':>10} | {'peak GiB':>8} |")
    lines = [head, "|" + "|".join(":" .rjust(len(c), "-") if i else "-" * len(c)
                                  for i, c in enumerate(head.split("|")[1:-1])) + "|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['name']:<58} | {cell(r['tokens_per_s'], ',.0f'):>13} | {cell(r['median_step_tokens_per_s'], ',.0f'):>11} "
            f"| {cell(None if r['mfu'] is None else 100 * r['mfu'], '.1f', '%'):>6} "
            f"| {cell(100 * r['real_token_share'], '.1f', '%'):>10} | {cell(r['peak_mem_gb'], '.1f'):>8} |"
        )
    env, docs = result["env"], result["documents"]
    runs = ", ".join(f"{r:.2f}" for r in result["ratio_runs"])
    lines.append(
        f"ratio project / HF Trainer: {result['ratio']:.2f}x real tokens/s (paired runs: {runs})"
        + (f"; {result['ratio_median_step']:.2f}x by median step" if result["ratio_median_step"] else "")
    )
    lines.append(
        f"{env['device']}, {env['cpu_threads']} thread{'s' if env['cpu_threads'] != 1 else ''}, {result['parameters'] / 1e6:.1f}M params, "
        f"{docs['count']} docs of {docs['min_tokens']}-{docs['max_tokens']} tokens (mean {docs['mean_tokens']:.0f}), "
        f"median of {result['setup']['repeats']}; torch {env['torch']}, transformers {env['transformers']}, "
        f"lightning {env['pytorch_lightning']}"
    )
    if env.get("bf16_matmul_tflops"):
        lines.append(f"measured bf16 matmul ceiling: {env['bf16_matmul_tflops']} TFLOP/s (datasheet 989)")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[Setup, Path]:
    p = argparse.ArgumentParser(description="Project training path vs Hugging Face Trainer throughput.")
    p.add_argument("--device", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--hidden-size", type=int, help="model width (the preset's heads must divide it)")
    p.add_argument("--intermediate-size", type=int)
    p.add_argument("--num-layers", type=int)
    p.add_argument("--num-docs", type=int)
    p.add_argument("--min-doc-tokens", type=int)
    p.add_argument("--max-doc-tokens", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--batch-rows", type=int)
    p.add_argument("--batch-docs", type=int)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--repeats", type=int)
    p.add_argument("--attn", choices=["auto", "flash_attention_2", "flex_attention", "sdpa", "eager"])
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--precision")
    p.add_argument("--threads", type=int, help="torch CPU threads (cpu preset: 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/throughput_<device>.json)")
    a = p.parse_args(argv)
    fields = dict(PRESETS[a.device])
    for key in ("num_docs", "min_doc_tokens", "max_doc_tokens", "seq_len", "batch_rows", "batch_docs",
                "warmup_steps", "repeats", "attn", "compile", "precision", "threads"):
        if getattr(a, key) is not None:
            fields[key] = getattr(a, key)
    fields["model"] = dict(fields["model"])
    for arg, key in (("hidden_size", "hidden_size"), ("intermediate_size", "intermediate_size"),
                     ("num_layers", "num_hidden_layers")):
        if getattr(a, arg) is not None:
            fields["model"][key] = getattr(a, arg)
    setup = Setup(device=a.device, seed=a.seed, **fields)
    if not 2 < setup.min_doc_tokens <= setup.max_doc_tokens <= setup.seq_len:
        p.error(f"need 2 < --min-doc-tokens ({setup.min_doc_tokens}) <= --max-doc-tokens "
                f"({setup.max_doc_tokens}) <= --seq-len ({setup.seq_len})")
    if setup.repeats < 1:
        p.error("--repeats must be at least 1")
    if setup.threads is not None and setup.threads < 1:
        p.error("--threads must be at least 1")
    return setup, a.out or RESULTS_DIR / f"throughput_{a.device}.json"


def main(argv: list[str] | None = None) -> dict:
    setup, out = parse_args(argv)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    before = torch.get_num_threads()
    if setup.threads:
        torch.set_num_threads(setup.threads)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*srun.*")
            result = benchmark(setup)
    finally:
        torch.set_num_threads(before)
    print(format_table(result))
    from midtrain.tracking import atomic_write_json

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
