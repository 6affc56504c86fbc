"""Preservation strategies of the instruction stage: each changes what it should and nothing else."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf, open_dict
from safetensors.torch import load_file

from midtrain.data.corpus import load_corpus
from midtrain.data.datamodule import PackedDataModule
from midtrain.data.packing import IGNORE_INDEX, lm_segment
from midtrain.models.build import build_causal_lm, build_tokenizer
from midtrain.preserve import STRATEGIES, build_strategy
from midtrain.preserve.replay import interleave
from midtrain.tracking import RunDir
from midtrain.train import train
from tests.conftest import compose_cfg, smoke_overrides

PRESERVE_OPTIONS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "preserve").glob("*.yaml"))


def _sft_cfg(tmp_path: Path, docs_jsonl: Path, *extra: str):
    """An instruction stage over the demo Alpaca set, on the tiny model."""
    cfg = compose_cfg("train", smoke_overrides(tmp_path, docs_jsonl) + [
        "objective=sft", "stage=instruct", "instruct=demo_alpaca", "instruct.samples=32", "data.seq_len=256",
        "data.batch_size=2", *extra])
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = False
    return cfg


def _fake_midtrain_stage(tmp_path: Path, docs_jsonl: Path) -> Path:
    """A stage directory whose config.yaml says it trained on 40 fixture documents (objective=lm)."""
    stage = tmp_path / "midtrain"
    RunDir(stage).save_config(compose_cfg("train", smoke_overrides(tmp_path, docs_jsonl)))
    return stage


def _segments(input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor, real: int):
    """(ids, labels) of each packed piece of one row (padding excluded)."""
    starts = [int(i) for i in torch.nonzero(position_ids[:real] == 0).flatten()] + [real]
    return [(input_ids[a:b].tolist(), labels[a:b].tolist()) for a, b in zip(starts, starts[1:])]


def _is_document(ids: list[int], labels: list[int]) -> bool:
    """Documents are labelled on every token after the first; SFT samples leave the prompt unlabelled."""
    return labels[0] == IGNORE_INDEX and labels[1:] == ids[1:]


# replay ---------------------------------------------------------------------------------------
def test_replay_batches_hold_document_tokens_with_lm_labels_in_the_stated_share(tmp_path, docs_jsonl):
    stage = _fake_midtrain_stage(tmp_path, docs_jsonl)
    cfg = _sft_cfg(tmp_path, docs_jsonl, "preserve=replay", "preserve.share=0.25", f"init_from={stage}")
    tok = build_tokenizer(cfg.model)
    dm = PackedDataModule(cfg, tok).prepare()
    texts = [d["text"] for d in load_corpus(OmegaConf.load(stage / "config.yaml").corpus)]
    midtrain_docs = {tuple(lm_segment(ids, tok.bos_token_id, tok.eos_token_id).input_ids)
                     for ids in tok(texts, add_special_tokens=False)["input_ids"]}

    doc_tokens = sft_tokens = mixed_batches = 0
    longest_doc = 0
    for batch in dm.train_dataloader():
        kinds = set()
        for r in range(batch["input_ids"].shape[0]):
            width = batch["input_ids"].shape[1]
            for ids, labels in _segments(batch["input_ids"][r], batch["labels"][r], batch["position_ids"][r], width):
                if set(ids) == {tok.pad_token_id} and set(labels) == {IGNORE_INDEX}:
                    continue  # the row's padding
                if _is_document(ids, labels):
                    assert tuple(ids) in midtrain_docs  # a whole midtraining document, LM labels
                    doc_tokens += len(ids)
                    longest_doc = max(longest_doc, len(ids))
                    kinds.add("doc")
                else:
                    assert any(t == IGNORE_INDEX for t in labels[1:]) and any(t != IGNORE_INDEX for t in labels)
                    sft_tokens += len(ids)
                    kinds.add("sft")
        mixed_batches += kinds == {"doc", "sft"}
    share = doc_tokens / (doc_tokens + sft_tokens)
    assert doc_tokens + sft_tokens == dm.info["real_tokens"]
    assert share == pytest.approx(dm.info["replay_token_share"], abs=1e-4)
    # Whole documents: the stated share, plus less than one document.
    assert 0.25 <= share < 0.25 + longest_doc / (doc_tokens + sft_tokens)
    assert mixed_batches > 0  # order=mix: documents sit beside SFT samples in the same batches
    assert dm.info["replay_documents"] > 0 and dm.info["samples"] == 32


def test_replayed_documents_are_nested_and_deterministic(tmp_path, docs_jsonl):
    stage = _fake_midtrain_stage(tmp_path, docs_jsonl)
    tok = build_tokenizer(_sft_cfg(tmp_path, docs_jsonl).model)

    def docs(samples: int):
        cfg = _sft_cfg(tmp_path, docs_jsonl, "preserve=replay", "preserve.share=0.3", f"init_from={stage}",
                       f"instruct.samples={samples}")
        return [s.input_ids for s in PackedDataModule(cfg, tok).prepare().extra.segments]

    few, more = docs(16), docs(48)
    assert len(few) < len(more) and more[: len(few)] == few
    assert docs(16) == few


def test_interleave_spreads_document_rows_and_append_puts_them_last(tmp_path, docs_jsonl):
    stage = _fake_midtrain_stage(tmp_path, docs_jsonl)
    tok = build_tokenizer(_sft_cfg(tmp_path, docs_jsonl).model)
    orders = {}
    for order in ("interleave", "append"):
        cfg = _sft_cfg(tmp_path, docs_jsonl, "preserve=interleave", f"preserve.order={order}", "preserve.share=0.3",
                       f"init_from={stage}", "instruct.samples=64")
        dm = PackedDataModule(cfg, tok).prepare()
        n, k = len(dm.rows), dm.extra_rows
        assert k >= 2
        for r in range(n - k, n):  # rows packed apart hold documents only
            real = int(dm.rows.real_tokens[r])
            assert all(_is_document(i, l) for i, l in _segments(dm.rows.input_ids[r], dm.rows.labels[r],
                                                                dm.rows.position_ids[r], real))
        order_ = dm.row_order()
        assert sorted(order_) == list(range(n))
        orders[order] = [p for p, row in enumerate(order_) if row >= n - k]
    n_total = len(order_)
    spread = orders["interleave"]
    assert spread[0] < n_total / k and spread[-1] >= n_total - n_total / k - 1
    assert max(np.diff(spread)) <= math.ceil(n_total / len(spread)) + 1
    assert orders["append"] == list(range(n_total - len(orders["append"]), n_total))


def test_interleave_keeps_both_orders():
    out = interleave(np.array([10, 11, 12, 13, 14, 15]), np.array([1, 2]))
    assert [x for x in out if x >= 10] == [10, 11, 12, 13, 14, 15] and [x for x in out if x < 10] == [1, 2]
    assert list(out).index(1) in (1, 2) and list(out).index(2) in (5, 6)


def test_replay_without_a_midtrained_start_fails_before_training(tmp_path, docs_jsonl):
    cfg = compose_cfg("pipeline", ["debug=smoke", f"paths.runs_root={tmp_path / 'runs'}", "experiment=base",
                                   "preserve=replay", "instruct.samples=8"])
    from midtrain.pipeline import pipeline

    with pytest.raises(ValueError, match="preserve.source=corpus"):
        pipeline(cfg)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override,pattern", [
    ("preserve.share=1.0", r"preserve.share=1.0"),
    ("preserve.order=sideways", r"preserve.order='sideways'"),
])
def test_bad_replay_settings_fail_before_anything_is_written(tmp_path, docs_jsonl, override, pattern):
    stage = _fake_midtrain_stage(tmp_path, docs_jsonl)
    cfg = _sft_cfg(tmp_path, docs_jsonl, "preserve=replay", override, f"init_from={stage}", "sweep_name=bad")
    with pytest.raises(ValueError, match=pattern):
        train(cfg)
    assert not RunDir.from_cfg(cfg).path.exists()


# kl -------------------------------------------------------------------------------------------
def _fixed_batch(cfg):
    tok = build_tokenizer(cfg.model)
    dm = PackedDataModule(cfg, tok).prepare()
    return tok, next(iter(dm.train_dataloader()))


def _independent_kl(policy, reference, batch, first_tokens=0):
    """KL(policy || reference) per labelled position, with a Python loop over rows and positions, in float64;
    and whether each is among the first `first_tokens` labelled tokens of its answer."""
    with torch.no_grad():
        kw = dict(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
        p_logits, q_logits = policy(**kw).logits.double(), reference(**kw).logits.double()
    kls, first = [], []
    labels = batch["labels"]
    for r in range(labels.shape[0]):
        run = 0
        for t in range(labels.shape[1] - 1):
            if labels[r, t + 1] == IGNORE_INDEX:
                run = 0
                continue
            run += 1
            p, q = torch.softmax(p_logits[r, t], -1), torch.softmax(q_logits[r, t], -1)
            kls.append(float((p * (p.log() - q.log())).sum()))
            first.append(run <= first_tokens)
    return kls, first


@pytest.mark.parametrize("first_tokens,first_beta", [(0, None), (3, 2.5)])
def test_kl_loss_is_sft_loss_plus_beta_times_an_independent_kl(tmp_path, docs_jsonl, first_tokens, first_beta):
    extra = [f"preserve.first_tokens={first_tokens}"] + ([f"preserve.first_beta={first_beta}"] if first_beta else [])
    cfg = _sft_cfg(tmp_path, docs_jsonl, "preserve=kl", "preserve.beta=0.7", *extra)
    tok, batch = _fixed_batch(cfg)
    strategy = build_strategy(cfg.preserve)
    strategy.check(cfg)
    pl.seed_everything(0)
    model = strategy.prepare_model(build_causal_lm(cfg.model, tok), cfg)
    with torch.no_grad():  # move the trained model away from its frozen reference
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"], use_cache=False)
    loss, logged = strategy.loss(batch, out)

    kls, first = _independent_kl(model, strategy.reference, batch, first_tokens)
    assert len(kls) > 0 and min(kls) >= 0 and sum(kls) > 0
    coef = [(first_beta if f else 0.7) for f in first]
    expected = float(out.loss) + sum(c * k for c, k in zip(coef, kls)) / len(kls)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(logged["train/kl"]) == pytest.approx(sum(kls) / len(kls), rel=1e-4)
    if first_tokens:
        assert any(first) and not all(first)
    # The reference is frozen and untouched by the loss's backward pass.
    loss.backward()
    assert all(p.grad is None for p in strategy.reference.parameters())


def test_kl_with_beta_zero_trains_bit_for_bit_like_none_and_beta_above_zero_does_not(tmp_path, docs_jsonl):
    runs = {}
    for name, over in {"none": ["preserve=none"], "kl0": ["preserve=kl", "preserve.beta=0.0"],
                       "kl": ["preserve=kl", "preserve.beta=5.0"]}.items():
        cfg = _sft_cfg(tmp_path, docs_jsonl, *over, f"sweep_name={name}", "optim.lr=1e-2")
        runs[name] = (train(cfg), load_file(str(RunDir.from_cfg(cfg).hf / "model.safetensors")))
    (m_none, w_none), (m_kl0, w_kl0), (m_kl, w_kl) = runs["none"], runs["kl0"], runs["kl"]
    assert m_none["train"]["global_steps"] == m_kl0["train"]["global_steps"] > 1
    assert m_kl0["train"]["final_loss"] == m_none["train"]["final_loss"]
    for k in w_none:
        torch.testing.assert_close(w_kl0[k], w_none[k], rtol=0, atol=0)
    assert any(not torch.equal(w_kl[k], w_none[k]) for k in w_none)
    assert m_kl["preserve"] == "kl" and m_kl["train"]["preserve"]["beta"] == 5.0
    assert m_kl["train"]["preserve"]["final_kl"] > 0


# lora -----------------------------------------------------------------------------------------
class _Snapshot(pl.Callback):
    """The trained model's parameters at the start and at the end of fitting (before the export merges them)."""

    def on_train_start(self, trainer, pl_module):
        self.start = {n: p.detach().clone() for n, p in pl_module.model.named_parameters()}

    def on_train_end(self, trainer, pl_module):
        self.end = {n: p.detach().clone() for n, p in pl_module.model.named_parameters()}


def test_lora_trains_only_adapter_weights_and_exports_a_plain_model(tmp_path, docs_jsonl):
    cfg = _sft_cfg(tmp_path, docs_jsonl, "preserve=lora", "preserve.r=4", "preserve.alpha=8",
                   "preserve.target_modules=[q_proj,v_proj]", "optim.lr=1e-2")
    snap = _Snapshot()
    metrics = train(cfg, callbacks=[snap])
    adapters = [n for n in snap.start if "lora_" in n]
    assert adapters and metrics["train"]["trainable_parameters"] < metrics["train"]["parameters"]
    for n in snap.start:
        if "lora_" in n:
            continue
        torch.testing.assert_close(snap.end[n], snap.start[n], rtol=0, atol=0)  # base weights frozen
    assert all(not torch.equal(snap.end[n], snap.start[n]) for n in adapters if "lora_B" in n)

    from transformers import AutoModelForCausalLM

    hf = RunDir.from_cfg(cfg).hf
    assert not (hf / "adapter_config.json").exists()
    exported = load_file(str(hf / "model.safetensors"))
    assert not any("lora" in k for k in exported)
    plain = AutoModelForCausalLM.from_pretrained(str(hf))
    assert type(plain).__name__ == "LlamaForCausalLM"
    # The merge moved the adapted projections and nothing else.
    base = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in snap.start.items()
            if "lora_" not in n}
    changed = {k for k, v in exported.items() if k in base and not torch.equal(v, base[k])}
    assert changed and all(("q_proj" in k or "v_proj" in k) for k in changed)


def test_lora_and_model_lora_together_are_refused(tmp_path, docs_jsonl):
    cfg = _sft_cfg(tmp_path, docs_jsonl, "preserve=lora", "+model.lora={r:4,alpha:8}", "sweep_name=both")
    with pytest.raises(ValueError, match="preserve=lora and model.lora"):
        train(cfg)


# identity -------------------------------------------------------------------------------------
def test_every_option_is_registered_and_two_strategies_never_share_a_run_directory(tmp_path):
    assert set(PRESERVE_OPTIONS) <= set(STRATEGIES)
    dirs = {}
    for option in PRESERVE_OPTIONS:
        for experiment in ("treatment", "base"):
            cfg = compose_cfg("pipeline", [f"preserve={option}", f"experiment={experiment}",
                                           f"paths.runs_root={tmp_path}", "sweep_name=s"])
            dirs[(option, experiment)] = cfg.run_dir
            assert (option == "none") == (cfg.preserve.tag == "")
    assert len(set(dirs.values())) == len(dirs)
    kl = [compose_cfg("pipeline", ["preserve=kl", f"preserve.beta={b}", f"paths.runs_root={tmp_path}"]).run_dir
          for b in (0.1, 0.5)]
    assert kl[0] != kl[1]


def test_only_the_instruction_stage_carries_the_strategy(tmp_path):
    from midtrain.pipeline import stage_config

    cfg = compose_cfg("pipeline", ["preserve=kl", "experiment=treatment", f"paths.runs_root={tmp_path}",
                                   "+stages.instruct.trainer.probe_every_n_steps=3"])
    mid = stage_config(cfg, "midtrain", "lm", None)
    ins = stage_config(cfg, "instruct", "sft", tmp_path / "midtrain")
    assert mid.preserve.name == "none" and ins.preserve.name == "kl"
    assert mid.run_id == ins.run_id == cfg.run_id  # the pipeline's id, tag included
    assert ins.trainer.probe_every_n_steps == 3 and mid.trainer.probe_every_n_steps is None


def test_pipeline_records_the_strategy_and_the_probe_curve_of_the_instruction_stage(tmp_path):
    from midtrain.pipeline import pipeline

    cfg = compose_cfg("pipeline", ["debug=smoke", f"paths.runs_root={tmp_path / 'runs'}", "sweep_name=p",
                                   "corpus.num_docs=16", "data.seq_len=256", "experiment=treatment",
                                   "preserve=replay", "preserve.share=0.2", "instruct.samples=24",
                                   "+stages.instruct.trainer.probe_every_n_steps=2"])
    metrics = pipeline(cfg)
    run = RunDir.from_cfg(cfg)
    assert re.fullmatch(r"treatment-tiny-llama-n16-i24-replay0\.2-mix-s0-[0-9a-f]{8}", run.path.name), run.path.name
    assert metrics["preserve"] == "replay"
    ins = metrics["train"]["instruct"]
    assert ins["preserve"]["name"] == "replay" and ins["preserve"]["share"] == 0.2
    assert 0.2 <= ins["replay_token_share"] < 0.5
    assert RunDir(run.path / "midtrain").read_metrics()["preserve"] == "none"
    assert "replay_token_share" not in metrics["train"]["midtrain"]
    curve = ins["probe_curve"]
    assert [c["step"] for c in curve][:2] == [0, 2] and curve[-1]["step"] == ins["global_steps"]
    assert curve[-1]["margin"] == pytest.approx(metrics["eval"]["probe"]["margin"], abs=1e-5)


# report ---------------------------------------------------------------------------------------
def _fixture_run(sweep: Path, condition: str, i: int, preserve: str, seed: int, score: float,
                 curve: list[tuple[int, float]], steps: int) -> None:
    tag = "" if preserve == "none" else f"-{preserve}"
    run = RunDir(sweep / f"{condition}-tiny-llama-n8-i{i}{tag}-s{seed}")
    run.write_metrics({
        "run_id": run.path.name, "stage": "pipeline", "condition": condition, "corpus": f"c-{condition}",
        "num_docs": 8, "instruct_samples": i, "preserve": preserve, "seed": seed, "model": "tiny-llama",
        "train": {"instruct": {"global_steps": steps, "probe_curve": [{"step": s, "margin": m, "accuracy": 0.5}
                                                                      for s, m in curve]}},
        "eval": {"probe": {"margin": score}},
    })
    run.mark_done()


def test_report_gives_treatment_minus_control_per_strategy_paired_by_seed(tmp_path):
    from hydra import compose, initialize_config_dir

    from midtrain.paths import CONF_DIR
    from midtrain.report import report

    sweep = tmp_path / "preservation"
    gaps = {"none": [0.10, 0.20, 0.30], "kl": [0.40, 0.50, 0.90]}  # per seed, at 16 samples
    for preserve, per_seed in gaps.items():
        for seed, g in enumerate(per_seed):
            base = 0.01 * seed  # shared by both conditions of a seed: cancels in the paired gap
            # Treatment's probe at steps 0, 2, 4 of 4; control's at 0, 3, 6 of 6 (another step count).
            _fixture_run(sweep, "treatment", 16, preserve, seed, base + g, [(0, 1.0), (2, 1.0), (4, 1.0 + g)], 4)
            _fixture_run(sweep, "control", 16, preserve, seed, base, [(0, 0.0), (3, 0.0), (6, 0.0)], 6)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("report", overrides=[f"sweep_dirs=[{sweep}]", f"out_dir={tmp_path / 'out'}",
                                           "metric=eval.probe.margin", "dimensions=eval.probe.by_dimension"])
    result = report(cfg)
    got = {g["preserve"]: g for g in result["gaps"]}
    assert set(got) == {"none", "kl"}
    for preserve, per_seed in gaps.items():
        g = got[preserve]
        assert g["instruct_samples"] == 16 and g["n"] == 3 and g["seeds"] == [0, 1, 2]
        assert g["gap"] == pytest.approx(sum(per_seed) / 3)
        mean = sum(per_seed) / 3
        assert g["stderr"] == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in per_seed) / 2 / 3))
    curves = {c["preserve"]: c for c in result["curve_gaps"]}
    kl = [p["gap"] for p in curves["kl"]["points"]]
    assert [p["samples_seen"] for p in curves["kl"]["points"]] == [0.0, 8.0, 16.0]
    assert kl == pytest.approx([1.0, 1.0, 1.0 + sum(gaps["kl"]) / 3])
    for name in ("gap_vs_instruct_samples", "probe_curve_gap"):
        assert Path(result["files"][name]).is_file()
    assert "## treatment minus control" in (tmp_path / "out" / "summary.md").read_text()
    assert (tmp_path / "out" / "gaps.csv").read_text().count("\n") == 3
