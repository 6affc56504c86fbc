"""Learning-rate schedule: linear warmup that never starts at 0, then cosine to the floor."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from midtrain.lightning.module import CausalLMModule, warmup_cosine


def test_warmup_is_linear_and_its_first_step_trains():
    warm = [warmup_cosine(s, total=20, warmup=4, min_ratio=0.1) for s in range(4)]
    assert warm == [0.25, 0.5, 0.75, 1.0]  # step 0 already at lr / warmup, never at 0


def test_cosine_runs_from_the_peak_to_the_floor():
    total, warmup, floor = 20, 4, 0.1
    assert warmup_cosine(warmup, total, warmup, floor) == 1.0
    mid = warmup + (total - warmup) // 2
    assert warmup_cosine(mid, total, warmup, floor) == pytest.approx(floor + (1 - floor) * 0.5)
    assert warmup_cosine(total, total, warmup, floor) == pytest.approx(floor)
    assert warmup_cosine(total + 5, total, warmup, floor) == pytest.approx(floor)  # clamped after the end
    decay = [warmup_cosine(s, total, warmup, floor) for s in range(warmup, total + 1)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    s = 7
    expected = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
    assert warmup_cosine(s, total, warmup, floor) == pytest.approx(expected)


def test_no_warmup_starts_at_the_peak_and_short_runs_stay_there():
    assert warmup_cosine(0, total=10, warmup=0, min_ratio=0.1) == 1.0
    assert warmup_cosine(3, total=3, warmup=3, min_ratio=0.1) == 1.0  # warmup covers the whole run


def test_optimizer_schedule_from_the_config():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    optim = OmegaConf.create(dict(lr=0.01, weight_decay=0.1, betas=[0.9, 0.95], eps=1e-8,
                                  warmup_ratio=0.25, min_lr_ratio=0.1, fused="auto"))
    module = CausalLMModule(model, optim, total_steps=12)  # warmup = 3 steps
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    decay, no_decay = opt.param_groups
    # Weight matrices decay; biases and norm weights do not.
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight)}
    assert len(no_decay["params"]) == 3
    assert opt.defaults["betas"] == (0.9, 0.95)
    lrs = []
    for _ in range(13):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.01 / 3, 0.02 / 3, 0.01, 0.01])
    assert lrs[12] == pytest.approx(0.001)
