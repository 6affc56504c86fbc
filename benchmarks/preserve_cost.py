"""Step time of the instruction stage's preservation strategies against `none`, in one run.

Each strategy trains the same model from the same weights on the same fixed SFT batch
(labels on the second half of every 64-token block, as in chat samples): the project's
`CausalLMModule.outputs`, the strategy's `loss` hook, backward and an AdamW step. `kl` adds
a forward pass of the frozen reference (no gradients, same precision); `replay` and
`interleave` change what a batch holds, not what a step costs per token, so they are not
timed here. Strategies run alternately, `--repeats` times, after `--warmup` untimed steps
each, and the table shows medians: the ratio to `none` is the figure to quote.

    python benchmarks/preserve_cost.py                                   # tiny random Llama
    python benchmarks/preserve_cost.py --hf runs/demo/<run>/midtrain/hf --precision bf16-mixed

Writes the table to stdout and everything to `--out` (JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

CONF_PRESERVE = Path(__file__).resolve().parents[1] / "conf" / "preserve"


def _model(hf: str | None, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if hf:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024))


def _batch(vocab: int, rows: int, seq_len: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (rows, seq_len), generator=g)
    labels = ids.clone()
    block = torch.arange(seq_len) % 64
    labels[:, block < 32] = -100  # the prompt half of every block is not trained on
    return {"input_ids": ids, "labels": labels, "position_ids": torch.arange(seq_len).repeat(rows, 1)}


def _strategy(name: str, beta: float):
    from midtrain.preserve import NONE, build_strategy

    cfg = OmegaConf.create(NONE) if name == "none" else OmegaConf.load(CONF_PRESERVE / f"{name}.yaml")
    if name == "kl":
        cfg.beta = beta
    return build_strategy(cfg)


def main(argv: list[str] | None = None) -> dict:
    from midtrain.lightning.module import CausalLMModule

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hf", default=None, help="a Hugging Face model directory (default: a tiny random Llama)")
    ap.add_argument("--strategies", default="none,kl")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per strategy and repeat")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per strategy and repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", choices=("32", "bf16-mixed"), default="32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    base = _model(args.hf, args.seed)
    batch = _batch(int(base.config.vocab_size), args.rows, args.seq_len, args.seed)
    optim = OmegaConf.create({"lr": 1e-5, "weight_decay": 0.0, "betas": [0.9, 0.95], "eps": 1e-8, "fused": False,
                              "warmup_ratio": 0.0, "min_lr_ratio": 0.1})
    names = args.strategies.split(",")
    setups = {}
    for name in names:
        strategy = _strategy(name, args.beta)
        model = strategy.prepare_model(copy.deepcopy(base), OmegaConf.create({"trainer": {"strategy": "auto"}}))
        module = CausalLMModule(model, optim, total_steps=10**6, preserve=strategy)
        strategy.on_fit_start(module)
        opt = module.configure_optimizers()["optimizer"]
        setups[name] = (module, strategy, opt)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if args.precision == "bf16-mixed"
                else contextlib.nullcontext())

    def step(name: str) -> float:
        module, strategy, opt = setups[name]
        t = time.perf_counter()
        with autocast:
            loss, _ = strategy.loss(batch, module.outputs(batch))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.repeats):
        for name in names:  # alternately, so drift in the machine's load reaches every row
            for _ in range(args.warmup):
                step(name)
            times[name].extend(step(name) for _ in range(args.steps))
    med = {n: statistics.median(v) for n, v in times.items()}
    result = {
        "what": "seconds per optimizer step of the instruction stage, by preservation strategy",
        "model": args.hf or "tiny random Llama", "parameters": sum(p.numel() for p in base.parameters()),
        "batch": {"rows": args.rows, "seq_len": args.seq_len}, "precision": args.precision, "beta": args.beta,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "steps_per_strategy": len(next(iter(times.values()))),
        "median_s": med, "ratio_to_none": {n: med[n] / med["none"] for n in names} if "none" in med else None,
        "all_s": times,
    }
    print(f"{'strategy':<10} {'median s/step':>14} {'x none':>8}")
    for n in names:
        ratio = f"{med[n] / med['none']:.2f}" if "none" in med else "-"
        print(f"{n:<10} {med[n]:>14.3f} {ratio:>8}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
