"""midtrain-train end to end on the tiny model: outputs, DONE, resume, LoRA, mixing, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.errors import ConfigCompositionException
from safetensors.torch import load_file

from midtrain.tracking import RunDir
from midtrain.train import train
from tests.conftest import compose_cfg, smoke_overrides


class CrashAfter(pl.Callback):
    """Simulates a job killed after `step` optimizer steps."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            raise SystemExit(f"killed after step {trainer.global_step}")


def crash_instruct_once(monkeypatch, after: int = 5) -> list[str]:
    """Make the pipeline's first instruct stage die after `after` steps (later calls run whole);
    returns the list of stages `train` was called for."""
    import midtrain.train as train_mod

    real_train = train_mod.train
    calls: list[str] = []

    def crashing_train(c, callbacks=None):
        calls.append(c.stage)
        if c.stage == "instruct" and calls.count("instruct") == 1:
            return real_train(c, callbacks=[CrashAfter(after)])
        return real_train(c, callbacks)

    monkeypatch.setattr(train_mod, "train", crashing_train)
    return calls


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "hf" / "model.safetensors"))


def test_smoke_run_writes_outputs_and_rerun_does_no_work(smoke_cfg, monkeypatch):
    cfg = smoke_cfg()
    metrics = train(cfg)
    run = RunDir.from_cfg(cfg)
    assert run.is_done() and (run.hf / "config.json").exists() and (run.hf / "tokenizer.json").exists()
    on_disk = json.loads(run.metrics_path.read_text())
    assert on_disk == metrics
    for key in ("run_id", "stage", "condition", "corpus", "num_docs", "seed", "model", "train"):
        assert key in on_disk
    assert "instruct_samples" not in on_disk and "eval" not in on_disk  # absent stages are absent keys
    assert on_disk["num_docs"] == 40 and on_disk["train"]["documents"] == 40
    assert on_disk["train"]["global_steps"] == on_disk["train"]["steps"] > 0
    assert 0 < on_disk["train"]["final_loss"] < 8.0
    assert "api_key" not in run.config_path.read_text()

    # The export loads with plain transformers.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(run.hf))
    tok = AutoTokenizer.from_pretrained(str(run.hf))
    assert tok.chat_template and model.config.vocab_size == len(tok)

    # A finished run does nothing: no data loading, no model.
    import midtrain.data.datamodule as dm

    monkeypatch.setattr(dm.PackedDataModule, "prepare", lambda self: pytest.fail("re-ran a DONE run"))
    mtime = run.metrics_path.stat().st_mtime_ns
    assert train(cfg) == metrics
    assert run.metrics_path.stat().st_mtime_ns == mtime


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, docs_jsonl):
    overrides = ["trainer.checkpoint_every_n_steps=3", "corpus.num_docs=48", "data.seq_len=128"]
    ref_cfg = compose_cfg("train", smoke_overrides(tmp_path, docs_jsonl) + overrides + ["sweep_name=ref"])
    ref = train(ref_cfg)
    total = ref["train"]["global_steps"]
    assert total >= 8

    cfg = compose_cfg("train", smoke_overrides(tmp_path, docs_jsonl) + overrides + ["sweep_name=crash"])
    with pytest.raises(SystemExit, match="killed after step 5"):
        train(cfg, callbacks=[CrashAfter(5)])
    run = RunDir.from_cfg(cfg)
    assert not run.is_done() and run.last_checkpoint.exists()
    assert torch.load(run.last_checkpoint, weights_only=False)["global_step"] == 3  # steps 4-5 are redone

    resumed = train(cfg)
    assert resumed["train"]["global_steps"] == total
    # Both attempts' logs are kept.
    assert (run.path / "logs" / "midtrain" / "metrics.csv").exists()
    assert (run.path / "logs" / "midtrain.1" / "metrics.csv").exists()
    assert resumed["train"]["final_loss"] == ref["train"]["final_loss"]
    # Throughput is measured in the resumed attempt too, and says which attempt it is.
    assert ref["throughput"]["attempt"] == 1 and ref["throughput"]["tokens_per_s"] > 0
    assert resumed["throughput"]["attempt"] == 2
    assert resumed["throughput"]["tokens_per_s"] > 0 and resumed["throughput"]["measured_tokens"] > 0
    ref_w, res_w = _weights(RunDir.from_cfg(ref_cfg).path), _weights(run.path)
    assert ref_w.keys() == res_w.keys()
    for k in ref_w:
        torch.testing.assert_close(res_w[k], ref_w[k], rtol=0, atol=0)


def test_resume_refuses_a_changed_config(tmp_path, docs_jsonl):
    base = smoke_overrides(tmp_path, docs_jsonl) + ["trainer.checkpoint_every_n_steps=2"]
    cfg = compose_cfg("train", base)
    with pytest.raises(SystemExit):
        train(cfg, callbacks=[CrashAfter(3)])
    # A changed setting is a different run: it gets its own directory...
    assert RunDir.from_cfg(compose_cfg("train", base + ["optim.lr=0.5"])).path != RunDir.from_cfg(cfg).path
    # ...and pointed at the old one by hand, it is refused rather than mixed with its checkpoints.
    changed = compose_cfg("train", base + ["optim.lr=0.5", f"run_dir={RunDir.from_cfg(cfg).path}"])
    with pytest.raises(ValueError, match=r"different config \(optim.lr"):
        train(changed)


def test_the_resume_check_compares_config_leaves_and_an_empty_mapping_is_none(tmp_path):
    """Both configs are flattened to dotted leaves: an empty mapping is no leaf (one that came or
    went is no change), a list is one leaf, and a changed nested value is named by its key."""
    import copy

    from omegaconf import OmegaConf

    from midtrain.tracking import redact_config
    from midtrain.tracking.provenance import portable_config
    from midtrain.train import _check_resume_config

    cfg = compose_cfg("train", smoke_overrides(tmp_path))
    run = RunDir.from_cfg(cfg)
    saved = redact_config(OmegaConf.to_container(portable_config(cfg, run.path), resolve=True))

    def resume_over(edit) -> None:
        tree = copy.deepcopy(saved)
        edit(tree)
        run.path.mkdir(parents=True, exist_ok=True)
        run.config_path.write_text(OmegaConf.to_yaml(tree))
        _check_resume_config(cfg, run)

    resume_over(lambda t: None)
    resume_over(lambda t: t.update(extra={}))
    resume_over(lambda t: t["optim"].update(unused={}))
    with pytest.raises(ValueError, match=r"different config \(extra\.k: 1 -> None\)"):
        resume_over(lambda t: t.update(extra={"k": 1}))
    with pytest.raises(ValueError, match=r"different config \(optim\.betas: \[0\.9, 0\.99\] -> \[0\.9, 0\.95\]\)"):
        resume_over(lambda t: t["optim"].update(betas=[0.9, 0.99]))
    with pytest.raises(ValueError, match=r"different config \(optim\.lr: 0\.5 -> 0\.001\)"):
        resume_over(lambda t: t["optim"].update(lr=0.5))


def test_long_documents_are_split_and_counted(tmp_path):
    from tests.conftest import write_docs

    path = write_docs(tmp_path / "long.jsonl", 20, min_words=150, max_words=300)
    cfg = compose_cfg("train", smoke_overrides(tmp_path, path) + ["corpus.num_docs=20", "data.seq_len=64"])
    metrics = train(cfg)
    assert metrics["train"]["documents_split"] == 20
    assert metrics["train"]["pieces"] > 20


def test_lora_is_merged_into_the_export(smoke_cfg):
    cfg = smoke_cfg("+model.lora={r:4,alpha:8,dropout:0.0,target_modules:[q_proj,v_proj]}", "sweep_name=lora")
    train(cfg)
    hf = RunDir.from_cfg(cfg).hf
    keys = load_file(str(hf / "model.safetensors")).keys()
    assert not any("lora" in k for k in keys)
    assert not (hf / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(hf))


def test_mixed_corpus_reaches_the_token_ratio(tmp_path, docs_jsonl):
    from tests.conftest import write_docs

    generic = write_docs(tmp_path / "web.jsonl", 200, seed=9)
    mix = f"+corpus.mix={{source:jsonl,path:{generic},text_field:text,ratio:0.5,seed:0,name:web}}"
    cfg = compose_cfg("train", smoke_overrides(tmp_path, docs_jsonl) + [mix, "trainer.max_steps=1"])
    from midtrain.data.datamodule import PackedDataModule
    from midtrain.models.build import build_tokenizer

    dm = PackedDataModule(cfg, build_tokenizer(cfg.model)).prepare()
    assert dm.info["mix_documents"] > 0
    assert 0.5 <= dm.info["mix_token_share"] < 0.6


def test_doc_prefix_tokens_get_no_loss(smoke_cfg):
    from midtrain.data.datamodule import PackedDataModule
    from midtrain.models.build import build_tokenizer

    plain = PackedDataModule(smoke_cfg("data.seq_len=1024"), build_tokenizer(smoke_cfg().model)).prepare()
    tagged_cfg = smoke_cfg("corpus.doc_prefix='<DOCTAG> '", "data.seq_len=1024")
    tagged = PackedDataModule(tagged_cfg, build_tokenizer(tagged_cfg.model)).prepare()
    assert plain.info["documents_split"] == tagged.info["documents_split"] == 0
    assert tagged.info["real_tokens"] > plain.info["real_tokens"]
    assert tagged.info["loss_tokens"] == plain.info["loss_tokens"]


@pytest.mark.parametrize(
    "override,pattern",
    [
        ("corpus.num_docs=500", "asked for 500 items but only 48"),
        ("corpus.path=/nonexistent/docs.jsonl", "not found"),
        ("objective=rl", "objective='rl'"),
    ],
)
def test_bad_input_fails_before_anything_is_written(smoke_cfg, override, pattern):
    cfg = smoke_cfg(override)
    with pytest.raises((ValueError, FileNotFoundError), match=pattern):
        train(cfg)
    assert not RunDir.from_cfg(cfg).path.exists()


def test_unknown_config_key_is_rejected(tmp_path, docs_jsonl):
    with pytest.raises(ConfigCompositionException, match="optim.learning_rate"):
        compose_cfg("train", smoke_overrides(tmp_path, docs_jsonl) + ["optim.learning_rate=3"])


def test_hub_model_requires_a_pinned_revision(tmp_path, docs_jsonl):
    cfg = compose_cfg("train", smoke_overrides(tmp_path, docs_jsonl) + ["model=llama3_2_1b", "model.revision=null"])
    with pytest.raises(ValueError, match="model.revision is required"):
        train(cfg)


@pytest.mark.slow
def test_compiled_blocks_train_to_the_same_loss(smoke_cfg):
    eager = train(smoke_cfg("sweep_name=eager"))
    compiled = train(smoke_cfg("sweep_name=compiled", "trainer.compile=true"))
    assert compiled["train"]["global_steps"] == eager["train"]["global_steps"]
    assert compiled["train"]["final_loss"] == pytest.approx(eager["train"]["final_loss"], rel=1e-3)


def test_model_bos_token_sets_the_document_start(tmp_path):
    from midtrain.models.build import build_tokenizer

    cfg = compose_cfg("train", ["model.bos_token='<|pad|>'", f"paths.runs_root={tmp_path}"])
    assert build_tokenizer(cfg.model).bos_token == "<|pad|>"
    bad = compose_cfg("train", ["model.bos_token='<|nope|>'", f"paths.runs_root={tmp_path}"])
    with pytest.raises(ValueError, match=r"model.bos_token='<\|nope\|>' is not in the tokenizer"):
        build_tokenizer(bad.model)
