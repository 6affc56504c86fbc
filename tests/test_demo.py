"""The one-command demo: grid planning, summary of probe margins, and (slow) the whole demo on a tiny model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from midtrain.demo import (
    compose_preset,
    expand_jobs,
    format_summary,
    grid_overrides,
    main,
    plan_corpora,
    plot_summary,
    run_demo,
    summarize,
)


def _run(condition: str, seed: int, margins: dict[str, float], anima: float | None = None) -> dict:
    by_stage = {s: {"probe": {"margin": m, "accuracy": 0.5 + m, "pairs": 65}} for s, m in margins.items()}
    last = by_stage[list(margins)[-1]]
    ev = {**last, **({"anima": {"overall_mean": anima}} if anima is not None else {})}
    return {"run_id": f"{condition}-s{seed}", "condition": condition, "seed": seed, "eval": ev,
            "eval_by_stage": by_stage}


RUNS = [
    _run("control", 0, {"base": -0.30, "midtrain": -0.20, "instruct": -0.22}),
    _run("treatment", 0, {"base": -0.30, "midtrain": 0.10, "instruct": 0.02}),
    _run("treatment", 1, {"base": -0.30, "midtrain": 0.20, "instruct": 0.06}),
    _run("base", 0, {"base": -0.30, "instruct": -0.25}),
]


def test_summary_averages_seeds_and_compares_treatment_with_control():
    s = summarize(RUNS)
    assert list(s["conditions"]) == ["treatment", "control", "base"]  # treatment first, whatever the run order
    t = s["conditions"]["treatment"]
    assert t["runs"] == 2 and t["stages"]["midtrain"]["n"] == 2
    assert t["stages"]["midtrain"]["margin"] == pytest.approx(0.15)
    assert t["stages"]["instruct"]["accuracy"] == pytest.approx(0.54)
    assert "midtrain" not in s["conditions"]["base"]["stages"]  # never midtrained: absent, not zero
    assert s["treatment_minus_control"] == pytest.approx({"base": 0.0, "midtrain": 0.35, "instruct": 0.26})
    assert "anima" not in t

    text = format_summary(s)
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith("| treatment"))
    assert "(n=2)" in row and "+0.150 (65%)" in row and "+0.040 (54%)" in row
    assert next(line for line in lines if line.startswith("| base")).count(" - ") == 1
    assert "treatment - control: base +0.000, midtrain +0.350, instruct +0.260" in text
    assert "After midtraining the treatment's margin is above the control's." in text
    assert "ANIMA" not in text


def test_summary_says_so_when_the_treatment_is_not_ahead_and_shows_anima():
    runs = [_run("treatment", 0, {"base": -0.3, "midtrain": -0.25}, anima=0.61),
            _run("control", 0, {"base": -0.3, "midtrain": -0.1}, anima=0.42)]
    s = summarize(runs)
    assert s["conditions"]["treatment"]["anima"] == {"overall_mean": 0.61, "n": 1}
    text = format_summary(s)
    assert "NOT above" in text
    assert "ANIMA (final)" in text and "61.0%" in text and "42.0%" in text


def test_summary_plot_is_written(tmp_path):
    path = plot_summary(summarize(RUNS), tmp_path / "plots" / "probe_by_stage.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_preset_is_smollm2_on_generated_corpora_scored_at_every_stage(tmp_path):
    cfg = compose_preset("demo", [f"paths.runs_root={tmp_path}"])
    assert cfg.model.name == "smollm2-135m" and cfg.model.source == "gguf"
    assert cfg.corpus.source == "jsonl" and cfg.sweep_name == "demo"
    assert list(cfg.stages.evaluate.after) == ["base", "midtrain", "instruct"]
    assert list(cfg.stages.evaluate.suites) == ["probe"]
    assert cfg.instruct.path == "package:instruct/demo_alpaca.jsonl" and cfg.instruct.samples > 0


def test_grid_expands_like_hydra_and_command_line_values_win():
    assert expand_jobs("demo", []) == [["experiment=treatment"], ["experiment=control"]]
    jobs = expand_jobs("demo", ["seed=0,1", "model=tiny_llama"])
    assert len(jobs) == 4 and ["experiment=control", "seed=1", "model=tiny_llama"] in jobs
    assert expand_jobs("demo", ["experiment=control"]) == [["experiment=control"]]


def test_plan_writes_one_corpus_per_universe_and_none_for_in_process_corpora(tmp_path):
    over = [f"paths.runs_root={tmp_path}", "corpus.num_docs=5,7"]
    plan = plan_corpora("demo", over)
    assert [(e["universe"], e["num_docs"]) for e in plan] == [("animal_welfare", 7), ("urban_density", 7)]
    assert plan[0]["out_dir"] == (tmp_path / "demo-corpora" / "animal_welfare").resolve()
    assert plan_corpora("demo", [f"paths.runs_root={tmp_path}", "corpus=template"]) == []


def test_grid_overrides_add_anima_and_an_absolute_runs_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-not-a-real-key")
    out = grid_overrides(["seed=3"], grader_models=["anthropic/claude-sonnet-4-5"],
                         eval_overrides=["inspect.limit=2"])
    assert out[0] == "seed=3"
    assert "stages.evaluate.suites=[probe,anima]" in out
    assert "stages.evaluate.overrides=['grader_models=[anthropic/claude-sonnet-4-5]','inspect.limit=2']" in out
    assert out[-1] == f"paths.runs_root='{(tmp_path / 'runs').resolve()}'"
    assert not any("sk-test" in o for o in out)
    cfg = compose_preset("demo", out)
    assert list(cfg.stages.evaluate.overrides) == ["grader_models=[anthropic/claude-sonnet-4-5]", "inspect.limit=2"]


def test_bad_input_fails_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        grid_overrides([], grader_models=["anthropic/claude-sonnet-4-5"])
    with pytest.raises(ValueError, match="key=value"):
        grid_overrides(["tiny_llama"])
    with pytest.raises(SystemExit, match=r"no sweeps/nope\.yaml"):
        main(["--preset", "nope", f"paths.runs_root={tmp_path}"])
    with pytest.raises(SystemExit, match="probe"):
        main([f"paths.runs_root={tmp_path}", "stages.evaluate.suites=[anima]"])
    assert not any(tmp_path.iterdir())  # nothing was generated or trained


@pytest.mark.slow
def test_demo_grid_on_the_tiny_model_end_to_end(tmp_path, capsys):
    over = ["model=tiny_llama", f"paths.runs_root={tmp_path / 'runs'}", "corpus.num_docs=8", "data.seq_len=128",
            "instruct.samples=4", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]
    result = run_demo(over)
    out = capsys.readouterr().out

    assert list(result["conditions"]) == ["treatment", "control"]
    for cond in ("treatment", "control"):
        stages = result["conditions"][cond]["stages"]
        assert set(stages) == {"base", "midtrain", "instruct"}
        assert all(st["n"] == 1 for st in stages.values())
    # Same seed, same untrained model: both conditions start from the same base margin.
    assert result["treatment_minus_control"]["base"] == pytest.approx(0.0, abs=1e-6)
    for corpus in ("animal_welfare", "urban_density"):
        manifest = json.loads((tmp_path / "runs" / "demo-corpora" / corpus / "manifest.json").read_text())
        assert manifest["num_written"] == 8 and manifest["source"] == "template-smoke"
    report = tmp_path / "runs" / "demo-report"
    for rel in ("demo_summary.md", "demo_summary.json", "probe_by_stage.png", "base/summary.md",
                "midtrain/summary.csv", "instruct/by_dimension.png"):
        assert (report / rel).is_file(), rel
    assert "| treatment" in out and "| control" in out and "treatment - control:" in out
    assert str(report / "probe_by_stage.png") in out
    assert (report / "demo_summary.md").read_text() in out

    # Everything is DONE: a second call trains nothing and reports the same numbers.
    t0 = time.monotonic()
    again = run_demo(over)
    assert time.monotonic() - t0 < 60
    assert again["conditions"] == result["conditions"]
    sweep = Path(result["sweep_dir"])
    assert sorted(p.name.rsplit("-", 1)[0] for p in sweep.iterdir() if not p.name.startswith(".")) == [
        "control-tiny-llama-n8-i4-s0", "treatment-tiny-llama-n8-i4-s0"]
