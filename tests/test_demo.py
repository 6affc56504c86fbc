"""The one-command demo: grid planning, bad input, and (slow) the whole demo on a tiny model.

The study's statistics and plots it prints are tested in test_study.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import numpy as np

from midtrain.demo import (
    compose_preset,
    expand_jobs,
    grid_overrides,
    main,
    plan_corpora,
    reference_overrides,
    run_demo,
)


def test_demo_preset_is_a_small_study_on_smollm2(tmp_path):
    cfg = compose_preset("demo", [f"paths.runs_root={tmp_path}"])
    assert cfg.model.name == "smollm2-135m" and cfg.model.source == "gguf"
    assert cfg.corpus.source == "jsonl" and cfg.sweep_name == "demo"
    assert list(cfg.stages.evaluate.after) == ["midtrain", "instruct"]
    assert list(cfg.eval) == ["probe"]
    assert cfg.instruct.path == "package:instruct/demo_alpaca.jsonl" and cfg.instruct.samples > 0
    # Seeds replicate the draws of documents, Q&A pairs and instruction samples.
    seeded = compose_preset("demo", [f"paths.runs_root={tmp_path}", "seed=2"])
    assert seeded.corpus.seed == seeded.qa.seed == seeded.instruct.seed == 2
    assert cfg.corpus.pool_size > cfg.corpus.num_docs
    axes = list(zip(*expand_jobs("demo", [])))
    values = {v.split("=")[0]: {a.split("=")[1] for a in axis} for axis in axes for v in axis[:1]}
    assert values["experiment"] == {"treatment", "control", "instruct_baseline"}
    assert len(values["seed"]) >= 3 and len(values["instruct.samples"]) >= 2


def test_grid_expands_like_hydra_and_command_line_values_win():
    jobs = expand_jobs("demo", ["seed=0,1", "instruct.samples=4", "model=tiny_llama"])
    assert len(jobs) == 6 and ["seed=1", "experiment=control", "instruct.samples=4", "model=tiny_llama"] in jobs
    assert jobs[0][0] == jobs[2][0] == "seed=0"  # seed outermost: whole seeds finish first
    assert expand_jobs("demo", ["experiment=control", "seed=0", "instruct.samples=4"]) == [
        ["seed=0", "experiment=control", "instruct.samples=4"]]


def test_plan_writes_one_corpus_per_universe_and_none_for_in_process_corpora(tmp_path):
    over = [f"paths.runs_root={tmp_path}", "corpus.num_docs=5,7", "corpus.pool_size=null"]
    plan = plan_corpora("demo", over)
    assert [(e["universe"], e["num_docs"]) for e in plan] == [("animal_welfare", 7), ("urban_density", 7)]
    assert plan[0]["out_dir"] == (tmp_path / "demo-corpora" / "animal_welfare").resolve()
    pooled = plan_corpora("demo", [f"paths.runs_root={tmp_path}", "corpus.num_docs=5", "corpus.pool_size=12"])
    assert [e["num_docs"] for e in pooled] == [12, 12]  # a pool to draw each seed's documents from
    assert plan_corpora("demo", [f"paths.runs_root={tmp_path}", "corpus=template"]) == []


def test_the_reference_run_scores_the_untrained_model_once_for_a_pretrained_model(tmp_path):
    over = [f"paths.runs_root={tmp_path}"]
    ref = reference_overrides("demo", over)
    assert "experiment=base" in ref and "seed=0" in ref and "instruct.samples=0" in ref
    assert "stages.evaluate.after=[base]" in ref
    tiny = reference_overrides("demo", [*over, "model=tiny_llama", "seed=3,4"])
    assert "seed=3,4" in tiny  # random init differs per seed: one reference per seed
    assert reference_overrides("demo", [*over, "experiment=base,treatment"]) is None


def test_grid_overrides_add_anima_and_an_absolute_runs_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-not-a-real-key")
    out = grid_overrides(["seed=3"], grader_models=["anthropic/claude-sonnet-4-5"],
                         eval_overrides=["inspect.limit=2"])
    assert out[0] == "seed=3"
    assert "eval=[probe,anima]" in out
    assert "stages.evaluate.grader_models=[anthropic/claude-sonnet-4-5]" in out
    assert "stages.evaluate.inspect.limit=2" in out
    assert out[-1] == f"paths.runs_root='{(tmp_path / 'runs').resolve()}'"
    assert not any("sk-test" in o for o in out)
    cfg = compose_preset("demo", out)
    assert list(cfg.eval) == ["probe", "anima"]
    assert list(cfg.stages.evaluate.grader_models) == ["anthropic/claude-sonnet-4-5"]
    assert cfg.stages.evaluate.inspect.limit == 2


def test_bad_input_fails_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        grid_overrides([], grader_models=["anthropic/claude-sonnet-4-5"])
    with pytest.raises(ValueError, match="key=value"):
        grid_overrides(["tiny_llama"])
    with pytest.raises(SystemExit, match=r"no sweeps/nope\.yaml"):
        main(["--preset", "nope", f"paths.runs_root={tmp_path}"])
    with pytest.raises(SystemExit, match="probe"):
        main([f"paths.runs_root={tmp_path}", "eval=anima"])
    assert not any(tmp_path.iterdir())  # nothing was generated or trained


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 21 runs, each its own processes: longer than the default on a loaded machine
def test_demo_study_on_the_tiny_model_end_to_end(tmp_path, capsys):
    """The demo's study on the tiny model; its statistics are recomputed here from the run
    directories alone (metrics.json files read directly, numpy and scipy, no demo code)."""
    from scipy import stats as sps

    over = ["model=tiny_llama", f"paths.runs_root={tmp_path / 'runs'}", "corpus.num_docs=8", "corpus.pool_size=16",
            "data.seq_len=128", "instruct.samples=4,8", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]
    result = run_demo(over)
    out = capsys.readouterr().out
    sweep = Path(result["sweep_dir"])

    assert list(result["conditions"]) == ["treatment", "control", "instruct_baseline", "base"]
    for cond in ("treatment", "control", "instruct_baseline"):
        stages = result["conditions"][cond]["stages"]
        assert set(stages) == {"midtrain", "instruct:4", "instruct:8"}
        assert all(st["original"]["n"] == 3 and st["heldout"]["n"] == 3 for st in stages.values())
    assert result["conditions"]["base"]["stages"]["base"]["original"]["n"] == 3  # random init: one per seed

    # Independent computation from the run directories.
    runs = [json.loads((d / "metrics.json").read_text()) for d in sweep.iterdir()
            if d.is_dir() and not d.name.startswith(".") and (d / "DONE").exists()]
    assert len(runs) == 3 * 3 * 2 + 3

    def margins(cond, stage, samples, key):
        got = {}
        for r in runs:
            if r["condition"] == cond and r["instruct_samples"] == samples:
                p = r["eval_by_stage"][stage]["probe"]
                got[r["seed"]] = (p if key == "original" else p["heldout"])["per_pair"]
        return got

    for stage, samples, key in (("midtrain", 4, "midtrain"), ("instruct", 4, "instruct:4"), ("instruct", 8, "instruct:8")):
        for ps in ("original", "heldout"):
            for b in ("control", "instruct_baseline"):
                ta, tb = margins("treatment", stage, samples, ps), margins(b, stage, samples, ps)
                ids = sorted(ta[0])
                d = np.array([[ta[s][i] - tb[s][i] for i in ids] for s in (0, 1, 2)])
                g = next(g for g in result["gaps"] if (g["b"], g["stage"], g["probe_set"]) == (b, key, ps))
                assert g["n_seeds"] == 3 and g["n_pairs"] == len(ids) == (65 if ps == "original" else 26)
                assert g["mean"] == pytest.approx(d.mean())
                per_seed = d.mean(axis=1)
                assert g["seeds_interval"] == pytest.approx(list(sps.t.interval(0.95, 2, loc=per_seed.mean(),
                                                                                 scale=sps.sem(per_seed))))
                ci = sps.bootstrap((d.mean(axis=0),), np.mean, n_resamples=9999, method="BCa",
                                   random_state=np.random.default_rng(0)).confidence_interval
                assert g["pairs_interval"] == pytest.approx([ci.low, ci.high])
            t = margins("treatment", stage, samples, ps)
            means = [np.mean(list(t[s].values())) for s in (0, 1, 2)]
            st = result["conditions"]["treatment"]["stages"][key][ps]
            assert st["margin"] == pytest.approx(np.mean(means))
            assert st["stderr"] == pytest.approx(sps.sem(means))

    # The larger size reused the smaller one's midtraining: the same files, not a retrained copy.
    for cond in ("treatment", "control", "instruct_baseline"):
        small = next(sweep.glob(f"{cond}-*-i4-s1*")) / "midtrain" / "hf" / "model.safetensors"
        large = next(sweep.glob(f"{cond}-*-i8-s1*")) / "midtrain" / "hf" / "model.safetensors"
        assert small.stat().st_ino == large.stat().st_ino

    for corpus in ("animal_welfare", "urban_density"):
        manifest = json.loads((tmp_path / "runs" / "demo-corpora" / corpus / "manifest.json").read_text())
        assert manifest["num_written"] == 16 and manifest["source"] == "template-smoke"
    assert set(result["overlap"]) == {"original", "heldout"}
    assert set(result["overlap"]["original"]) == {"treatment documents", "control documents",
                                                  "instruct_baseline Q&A", "instruction set"}
    report = tmp_path / "runs" / "demo-report"
    for rel in ("demo_summary.md", "demo_summary.json", "gap_by_stage.png", "erosion.png", "probe_during_training.png",
                "base/summary.md",
                "midtrain/summary.csv", "instruct/by_dimension.png"):
        assert (report / rel).is_file(), rel
    assert "| treatment" in out and "What the intervals support:" in out and "95% CI (pairs)" in out
    assert str(report / "gap_by_stage.png") in out
    assert (report / "demo_summary.md").read_text() in out

    # Everything is DONE: a second call trains and scores nothing (no file of any run is
    # written again) and reports the same numbers.
    def snapshot() -> dict:
        skip = (".multirun", ".hydra_logs", ".lock")
        return {str(f): (f.stat().st_ino, f.stat().st_mtime_ns) for f in sweep.rglob("*")
                if f.is_file() and not any(part in skip for part in f.relative_to(sweep).parts)}

    before = snapshot()
    again = run_demo(over)
    assert snapshot() == before
    assert again["conditions"] == result["conditions"] and again["gaps"] == result["gaps"]
    names = sorted(p.name.rsplit("-", 1)[0] for p in sweep.iterdir() if not p.name.startswith("."))
    assert len(names) == 21 and "treatment-tiny-llama-n8-i8-s2" in names and "base-tiny-llama-i0-s1" in names
