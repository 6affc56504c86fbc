"""One trainer factory: `train()`, the throughput benchmark and the pipeline's base export build
their model and Trainer through `midtrain.lightning.trainer`; the model's layout on devices is
`midtrain.lightning.parallelize`. Nothing here trains a step or times anything."""

from __future__ import annotations

from collections import Counter

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

import midtrain.lightning.trainer as factory
from midtrain.lightning import parallelize
from midtrain.models.build import build_causal_lm, build_tokenizer, decoder_layers
from midtrain.tracking import RunDir
from midtrain.train import train
from tests.conftest import compose_cfg
from tests.test_benchmark_throughput import SMALL, bench  # noqa: F401 - the benchmark module fixture

# the benchmark's small CPU setup, with two decoder blocks
ARGS = [*SMALL, "--num-layers", "2", "--repeats", "1"]


class _Built(Exception):
    """Raised once the Trainer is set up: the test reads it and no step runs."""


class Capture(pl.Callback):
    """Keeps the Trainer and module `trainer.fit` was given, then stops before any step."""

    def setup(self, trainer, pl_module, stage):
        self.trainer, self.module = trainer, pl_module
        raise _Built


def settings(trainer: pl.Trainer, module) -> dict:
    """What a Trainer and its model were built with (the callbacks apart)."""
    model = module.model
    connector = trainer._accelerator_connector
    return {
        "accelerator": type(trainer.accelerator).__name__,
        "devices": trainer.num_devices,
        "strategy": type(trainer.strategy).__name__,
        "precision": trainer.precision,
        "checkpoint_io": type(trainer.strategy.checkpoint_io).__name__,
        "max_steps": trainer.max_steps,
        "max_epochs": trainer.max_epochs,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
        "log_every_n_steps": trainer.log_every_n_steps,
        "loggers": [type(lg).__name__ for lg in trainer.loggers],
        "use_distributed_sampler": connector.use_distributed_sampler,
        "lr_schedule_steps": module.total_steps,
        "optim": OmegaConf.to_container(module.optim, resolve=True),
        "compiled_blocks": [b._compiled_call_impl is not None for b in decoder_layers(model)],
        "gradient_checkpointing": model.is_gradient_checkpointing,
        "attn_implementation": model.config._attn_implementation,
        "layers": model.config.num_hidden_layers,
        "hidden_size": model.config.hidden_size,
    }


def callback_types(trainer: pl.Trainer) -> Counter:
    return Counter(type(c).__name__ for c in trainer.callbacks if not isinstance(c, Capture))


@pytest.mark.parametrize("compile", [False, True])
def test_benchmark_project_path_and_train_build_the_same_trainer(bench, tmp_path, docs_jsonl, monkeypatch, compile):
    built: list[str] = []
    real_build = factory.build_trainer

    def recording_build(cfg, *args, **kwargs):
        built.append(str(cfg.model.name))
        return real_build(cfg, *args, **kwargs)

    monkeypatch.setattr(factory, "build_trainer", recording_build)
    setup, _ = bench.parse_args(ARGS + (["--compile"] if compile else ["--no-compile"]))
    row = bench.project_row(setup, bench.make_documents(setup))
    # the same config, given a corpus and a runs root so that midtrain-train can run it
    cfg = bench.project_config(setup, row.steps, overrides=[
        "corpus=jsonl", f"corpus.path={docs_jsonl}", "corpus.name=fixture", "corpus.num_docs=40",
        f"paths.runs_root={tmp_path / 'runs'}", "sweep_name=factory"])
    capture = Capture()
    with pytest.raises(_Built):
        train(cfg, callbacks=[capture])
    assert built == ["bench", "bench"]  # both through the one factory

    got, want = settings(capture.trainer, capture.module), settings(row.trainer, row.module)
    assert got == want
    assert want["compiled_blocks"] == [compile] * 2 and want["max_steps"] == row.steps > setup.warmup_steps
    assert want["accumulate_grad_batches"] == 1 and want["precision"] == "32-true" and want["loggers"] == []
    # train() adds what writes into its run directory; the benchmark has none (and times no checkpoint)
    assert callback_types(capture.trainer) == callback_types(row.trainer) + Counter(
        {"ModelCheckpoint": 1, "PreemptionCheckpoint": 1})
    assert callback_types(row.trainer) == Counter({"RealTokenThroughput": 1})
    assert row.trainer.checkpoint_callback is None and capture.trainer.checkpoint_callback is not None


def test_base_export_is_the_init_the_first_stage_trains_from(tmp_path):
    from midtrain.pipeline import export_base, stage_config

    cfg = compose_cfg("pipeline", ["debug=smoke", f"paths.runs_root={tmp_path / 'runs'}", "sweep_name=base",
                                   "experiment=treatment", "instruct.samples=16", "corpus.num_docs=8", "seed=3"])
    run = RunDir.from_cfg(cfg)
    base = export_base(cfg, run)
    exported = load_file(str(base.hf / "model.safetensors"))
    capture = Capture()
    with pytest.raises(_Built):
        train(stage_config(cfg, "midtrain", "lm", None), callbacks=[capture])
    start = capture.module.model.state_dict()
    assert exported and set(exported) <= set(start)
    for name, tensor in exported.items():
        assert torch.equal(tensor, start[name]), name
    # another seed is another init: the comparison can tell them apart
    other = export_base(compose_cfg("pipeline", ["debug=smoke", f"paths.runs_root={tmp_path / 'other'}",
                                                 "sweep_name=base", "experiment=treatment", "instruct.samples=16",
                                                 "corpus.num_docs=8", "seed=4"]),
                        RunDir(tmp_path / "other_run"))
    other_w = load_file(str(other.hf / "model.safetensors"))
    assert any(not torch.equal(other_w[n], exported[n]) for n in exported)


@pytest.fixture(scope="module")
def tiny():
    cfg = compose_cfg("train", ["debug=smoke"])
    tok = build_tokenizer(cfg.model)
    return cfg, tok


def _trainer_cfg(cfg, **keys):
    return OmegaConf.merge(cfg.trainer, keys)


def test_fsdp_wraps_and_checkpoints_one_unit_per_decoder_block(tiny):
    from pytorch_lightning.strategies import FSDPStrategy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    cfg, tok = tiny
    model = build_causal_lm(cfg.model, tok)
    with_ckpt = parallelize.strategy(_trainer_cfg(cfg, strategy="fsdp", activation_checkpointing=True), model)
    assert isinstance(with_ckpt, FSDPStrategy)
    assert with_ckpt.kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}
    assert with_ckpt._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}
    assert str(with_ckpt.sharding_strategy).endswith("FULL_SHARD") and with_ckpt._state_dict_type == "sharded"
    without = parallelize.strategy(_trainer_cfg(cfg, strategy="fsdp", activation_checkpointing=False), model)
    assert without._activation_checkpointing_kwargs == {}
    assert parallelize.strategy(_trainer_cfg(cfg, strategy="ddp"), model) == "ddp"


@pytest.mark.parametrize("strategy, recomputes", [("auto", True), ("fsdp", False)])
def test_parallelize_compiles_each_block_and_leaves_checkpointing_to_fsdp(tiny, strategy, recomputes):
    cfg, tok = tiny
    model = build_causal_lm(cfg.model, tok)
    assert not any(b._compiled_call_impl is not None for b in decoder_layers(model))
    out = parallelize.parallelize(model, _trainer_cfg(cfg, strategy=strategy, compile=True,
                                                      activation_checkpointing=True))
    assert out is model and len(decoder_layers(model)) == 2
    assert all(b._compiled_call_impl is not None for b in decoder_layers(model))
    assert model.is_gradient_checkpointing is recomputes  # FSDP recomputes per unit itself
    plain = parallelize.parallelize(build_causal_lm(cfg.model, tok), _trainer_cfg(cfg))
    assert not plain.is_gradient_checkpointing
    assert not any(b._compiled_call_impl is not None for b in decoder_layers(plain))


def test_precision_auto_is_bf16_mixed_on_gpu_and_full_on_cpu(tiny):
    cfg, _ = tiny
    auto = _trainer_cfg(cfg, precision="auto")
    assert parallelize.precision(auto, "cuda") == "bf16-mixed"
    assert parallelize.precision(auto, "cpu") == "32-true"
    assert parallelize.precision(_trainer_cfg(cfg, precision="16-mixed"), "cuda") == "16-mixed"
