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


# ---------------------------------------------------------------------------------------------
# The schedule's edges, the parameter groups and the LightningModule's own hooks, called
# directly on a tiny model (no Trainer, no training loop).

from types import SimpleNamespace  # noqa: E402

from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: E402

from midtrain.data.packing import lm_segment, pack_segments  # noqa: E402
from midtrain.preserve import Strategy  # noqa: E402

_OPTIM = dict(lr=0.01, weight_decay=0.1, betas=[0.9, 0.95], eps=1e-8, warmup_ratio=0.25,
              min_lr_ratio=0.1, fused="auto")


def test_a_one_step_warmup_starts_at_the_peak_and_short_runs_never_decay():
    assert warmup_cosine(0, total=10, warmup=1, min_ratio=0.1) == 1.0
    assert warmup_cosine(1, total=10, warmup=1, min_ratio=0.1) == 1.0  # the cosine starts at the peak
    # A run no longer than its warmup stays at the peak after it, whatever the floor.
    assert warmup_cosine(4, total=4, warmup=4, min_ratio=0.1) == 1.0
    assert warmup_cosine(6, total=4, warmup=4, min_ratio=0.1) == 1.0
    assert warmup_cosine(5, total=4, warmup=5, min_ratio=0.1) == 1.0


def test_the_cosine_of_a_one_step_decay_and_of_an_uneven_one():
    # One decay step after the warmup: the step right after the warmup is at the peak, the next at the floor.
    assert warmup_cosine(2, total=3, warmup=2, min_ratio=0.2) == 1.0
    assert warmup_cosine(3, total=3, warmup=2, min_ratio=0.2) == pytest.approx(0.2)
    # A quarter of the way through the decay (warmup 2, total 10, step 4).
    expected = 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert warmup_cosine(4, total=10, warmup=2, min_ratio=0.2) == pytest.approx(expected)
    assert warmup_cosine(10, total=10, warmup=2, min_ratio=0.0) == pytest.approx(0.0, abs=1e-12)


def _tiny_lm(seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager")


def _packed_batch(**extra) -> dict:
    g = torch.Generator().manual_seed(3)
    segs = [lm_segment(torch.randint(3, 97, (n,), generator=g).tolist(), bos_id=1, eos_id=2) for n in (9, 5, 12, 6)]
    rows = pack_segments(segs, seq_len=16, pad_id=0)
    return {"input_ids": rows.input_ids, "labels": rows.labels, "position_ids": rows.position_ids, **extra}


def _module(model=None, preserve=None, total_steps=12, **optim):
    cfg = OmegaConf.create({**_OPTIM, **optim})
    return CausalLMModule(model if model is not None else _tiny_lm(), cfg, total_steps=total_steps, preserve=preserve)


class _Recording(Strategy):
    """A strategy that doubles the loss and remembers what its hooks were given."""

    def __init__(self):
        super().__init__(OmegaConf.create({"name": "none", "tag": ""}))
        self.seen: list = []

    def on_fit_start(self, module):
        self.seen.append(("fit_start", module))

    def loss(self, batch, outputs):
        self.seen.append(("loss", batch, outputs))
        return outputs.loss * 2, {"train/extra": outputs.loss.detach()}


def _record_logs(module) -> list:
    calls: list = []
    module.log = lambda *args, **kwargs: calls.append((args, kwargs))
    return calls


def test_the_loss_is_the_cross_entropy_of_the_packed_rows_with_their_positions():
    module = _module()
    batch = _packed_batch()
    assert batch["input_ids"].shape[0] >= 2  # rows holding several documents each
    model = module.model
    with torch.no_grad():
        loss = module(batch)
        want = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"],
                     use_cache=False).loss
        # Without the position restarts the rows would attend across documents: another loss.
        leaky = model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False).loss
        out = module.outputs(batch)
    assert torch.equal(loss, want)
    assert not torch.allclose(leaky, want)
    # Labels shifted inside the model: logits of every row position, and no key/value cache kept.
    assert out.logits.shape == (*batch["input_ids"].shape, 97)
    assert out.past_key_values is None
    assert torch.equal(out.loss, want)


def test_a_filler_micro_batch_takes_every_parameter_and_learns_nothing():
    module = _module()
    filler = _packed_batch(_loss_tokens=0)
    out = module.outputs(filler)
    assert out.past_key_values is None
    with torch.no_grad():  # the outputs are the model's on the packed rows (a strategy may read the logits)
        want = module.model(input_ids=filler["input_ids"], position_ids=filler["position_ids"], use_cache=False)
    torch.testing.assert_close(out.logits, want.logits)
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    out.loss.backward()
    grads = [p.grad for p in module.model.parameters()]
    assert all(g is not None for g in grads)  # every parameter took part (DDP needs it)
    assert all(torch.count_nonzero(g) == 0 for g in grads)
    # A micro-batch with labelled tokens (even one) is a real one.
    with torch.no_grad():
        real = module(_packed_batch(_loss_tokens=1))
        plain = module(_packed_batch())
    assert real.item() > 1.0 and torch.equal(real, plain)


def test_the_training_step_uses_the_strategys_loss_and_logs_it_per_row():
    strategy = _Recording()
    module = _module(preserve=strategy)
    assert module.preserve is strategy
    module.on_fit_start()
    assert strategy.seen == [("fit_start", module)]
    calls = _record_logs(module)
    batch = _packed_batch(_loss_tokens=37)
    loss = module.training_step(batch, 0)
    kind, seen_batch, outputs = strategy.seen[1]
    assert kind == "loss" and seen_batch is batch
    assert torch.allclose(loss, outputs.loss * 2)
    assert module.last_loss is not None and not module.last_loss.requires_grad
    assert torch.equal(module.last_loss, loss.detach())
    assert module.last_loss_tokens == 37
    rows = batch["input_ids"].shape[0]
    (args, kwargs), (extra_args, extra_kwargs) = calls
    assert args == ("train/loss", loss)
    assert kwargs == dict(on_step=True, prog_bar=True, batch_size=rows, sync_dist=False)  # no Trainer: one process
    assert extra_args[0] == "train/extra" and torch.equal(extra_args[1], outputs.loss.detach())
    assert extra_kwargs == dict(on_step=True, batch_size=rows)


@pytest.mark.parametrize("world_size,sync", [(1, False), (2, True), (3, True)])
def test_the_logged_loss_is_averaged_over_ranks_only_with_several(world_size, sync):
    module = _module()
    module._trainer = SimpleNamespace(world_size=world_size)
    calls = _record_logs(module)
    module.training_step(_packed_batch(), 0)
    assert calls[0][1]["sync_dist"] is sync


def test_without_a_strategy_the_loss_is_the_models_and_a_step_without_a_token_count_counts_one():
    module = _module()
    assert module.last_loss is None and module.last_loss_tokens == 0
    assert module.preserve.name == "none"
    calls = _record_logs(module)
    batch = _packed_batch()
    loss = module.training_step(batch, 0)
    with torch.no_grad():
        assert torch.allclose(loss, module(batch))
    assert module.last_loss_tokens == 1
    assert [c[0][0] for c in calls] == ["train/loss"]  # nothing extra to log


def test_the_last_loss_travels_with_the_checkpoint():
    module = _module()
    ckpt: dict = {}
    module.on_save_checkpoint(ckpt)
    assert ckpt == {}  # nothing trained yet: nothing recorded
    module.last_loss, module.last_loss_tokens = torch.tensor(2.5), 7
    module.on_save_checkpoint(ckpt)
    assert ckpt == {"midtrain_last_loss": 2.5, "midtrain_last_loss_tokens": 7}
    resumed = _module()
    resumed.on_load_checkpoint(dict(ckpt))
    assert float(resumed.last_loss) == 2.5 and resumed.last_loss_tokens == 7
    # A checkpoint written before the token count was recorded counts one token.
    older = _module()
    older.on_load_checkpoint({"midtrain_last_loss": 3.0})
    assert float(older.last_loss) == 3.0 and older.last_loss_tokens == 1
    # A checkpoint without a loss leaves the module as it was.
    fresh = _module()
    fresh.on_load_checkpoint({"state_dict": {}})
    assert fresh.last_loss is None and fresh.last_loss_tokens == 0


def test_the_logged_learning_rate_is_the_first_groups():
    module = _module()
    calls = _record_logs(module)
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [a], "lr": 0.5}, {"params": [b], "lr": 0.25}])
    module.on_before_optimizer_step(opt)
    assert calls == [(("train/lr", 0.5), {"on_step": True})]


class _Named(torch.nn.Module):
    """Parameters whose names, not shapes, say they must not decay."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 4, bias=False)
        self.Norm = torch.nn.Linear(4, 4, bias=False)                    # a 2-D norm weight
        self.rel_bias = torch.nn.Embedding(8, 4)                          # a 2-D bias table
        self.frozen = torch.nn.Linear(4, 4, bias=False).requires_grad_(False)
        self.last = torch.nn.Linear(4, 4, bias=False)


def test_norm_and_bias_parameters_do_not_decay_and_frozen_ones_are_left_out():
    model = _Named()
    conf = _module(model).configure_optimizers()
    decay, no_decay = conf["optimizer"].param_groups
    assert {id(p) for p in decay["params"]} == {id(model.proj.weight), id(model.last.weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model.Norm.weight), id(model.rel_bias.weight)}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


@pytest.mark.parametrize("fused,want", [("auto", False), (False, False), (True, True)])
def test_fused_adamw_follows_the_setting_and_auto_means_on_cuda_only(fused, want):
    conf = _module(torch.nn.Linear(4, 4), fused=fused, eps=1e-6).configure_optimizers()
    opt = conf["optimizer"]
    assert opt.defaults["fused"] is want
    assert opt.defaults["lr"] == 0.01 and opt.defaults["eps"] == 1e-6 and opt.defaults["betas"] == (0.9, 0.95)


def test_the_warmup_is_the_rounded_share_of_the_steps_and_the_floor_is_the_configs():
    # warmup_ratio 0.3 of 5 steps = 1.5, rounded to 2 warmup steps; floor 0.2.
    module = _module(torch.nn.Linear(4, 4), total_steps=5, warmup_ratio=0.3, min_lr_ratio=0.2, lr=1.0)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    want = [warmup_cosine(s, 5, 2, 0.2) for s in range(6)]
    assert lrs == pytest.approx(want)
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0]) and lrs[5] == pytest.approx(0.2)
    assert all(g["lr"] == lrs[-1] for g in opt.param_groups)
