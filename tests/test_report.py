"""midtrain-report over a fixture sweep with a corrupt, an unfinished, an empty and a never-started run."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from midtrain.paths import CONF_DIR
from midtrain.report import aggregate, collect_wandb, report
from midtrain.stats import mean_stderr
from midtrain.tracking import RunDir

SCORES = {  # (condition, num_docs, instruct_samples) -> score per seed 0, 1, 2
    ("treatment", 500, 0): [0.50, 0.60, 0.70],
    ("treatment", 3000, 0): [0.75, 0.77, 0.79],
    ("control", 500, 0): [0.40, 0.42, 0.44],
    ("control", 3000, 0): [0.41, 0.40, None],  # seed 2 never started: no directory at all
    ("treatment", 3000, 500): [0.56, 0.55, 0.57],
}


def _write_run(sweep: Path, condition: str, n: int, i: int, seed: int, score: float, done: bool = True) -> Path:
    run_id = f"{condition}-tiny-llama-n{n}-i{i}-s{seed}"
    run = RunDir(sweep / run_id)
    run.write_metrics({
        "run_id": run_id, "stage": "pipeline", "condition": condition, "corpus": f"c-{condition}",
        "num_docs": n, "instruct_samples": i, "seed": seed, "model": "tiny-llama",
        "train": {"loss": 2.0},
        "eval": {"anima": {"overall_mean": score, "stderr": 0.01, "samples": 10, "grades_unparseable": 0,
                           "by_dimension": {"moral_consideration": score + 0.1, "harm_minimization": score - 0.1}}},
    })
    if done:
        run.mark_done()
    return run.path


@pytest.fixture
def sweep(tmp_path) -> Path:
    sweep = tmp_path / "runs" / "fixture_sweep"
    for (cond, n, i), scores in SCORES.items():
        for seed, score in enumerate(scores):
            if score is not None:
                _write_run(sweep, cond, n, i, seed, score)
    (sweep / ".multirun").mkdir()  # Hydra/submitit bookkeeping is not a run
    # A corrupt run, an unfinished run and a run folder with nothing in it yet.
    corrupt = _write_run(sweep, "treatment", 500, 500, 0, 0.5)
    (corrupt / "metrics.json").write_text('{"run_id": "treatment-tiny-llama-n500-i500-s0", "eval": {')
    _write_run(sweep, "treatment", 500, 500, 1, 0.9, done=False)
    (sweep / "treatment-tiny-llama-n500-i500-s2" / "midtrain").mkdir(parents=True)
    return sweep


def _cfg(sweep_dirs, out_dir, *extra):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("report", overrides=[f"sweep_dirs=[{','.join(map(str, sweep_dirs))}]",
                                            f"out_dir={out_dir}", *extra])


def test_mean_stderr_golden():
    out = mean_stderr([0.5, 0.6, 0.7])
    assert out["mean"] == pytest.approx(0.6) and out["stderr"] == pytest.approx(0.1 / math.sqrt(3))
    assert mean_stderr([0.4]) == {"mean": 0.4, "stderr": None, "n": 1}


def test_report_over_fixture_sweep(sweep, tmp_path):
    out = tmp_path / "report"
    result = report(_cfg([sweep], out))

    cells = {(s["condition"], s["num_docs"], s["instruct_samples"]): s for s in result["summary"]}
    assert set(cells) == set(SCORES)
    t = cells[("treatment", 500, 0)]
    assert (t["n"], t["seeds"]) == (3, [0, 1, 2])
    assert t["mean"] == pytest.approx(0.6) and t["stderr"] == pytest.approx(0.1 / math.sqrt(3))
    assert t["dimensions"]["moral_consideration"] == pytest.approx(0.7)
    c = cells[("control", 3000, 0)]
    assert (c["n"], c["mean"], c["stderr"]) == (2, pytest.approx(0.405), pytest.approx(0.005))

    reasons = {p["run_id"]: p["reason"] for p in result["problems"]}
    assert reasons["treatment-tiny-llama-n500-i500-s0"].startswith("corrupt metrics.json")
    assert str(sweep / "treatment-tiny-llama-n500-i500-s0" / "metrics.json") in reasons[
        "treatment-tiny-llama-n500-i500-s0"]
    assert reasons["treatment-tiny-llama-n500-i500-s1"].startswith("not DONE")
    assert reasons["treatment-tiny-llama-n500-i500-s2"].startswith("no metrics.json")
    assert len(result["problems"]) == 3
    assert result["missing"] == [{"model": "tiny-llama", "condition": "control", "num_docs": 3000,
                                  "instruct_samples": 0, "preserve": "none", "seed": 2}]

    with open(out / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(SCORES)
    row = next(r for r in table if (r["condition"], r["num_docs"], r["instruct_samples"]) == ("treatment", "3000", "0"))
    assert float(row["mean"]) == pytest.approx(0.77) and float(row["stderr"]) == pytest.approx(0.02 / math.sqrt(3))
    assert row["seeds"] == "0 1 2"

    md = (out / "summary.md").read_text()
    assert "| tiny-llama | treatment | 3000 | 0 | none | 3 | 0.770 ± 0.012 |" in md
    assert "## Missing or failed runs" in md and "corrupt metrics.json" in md
    assert "condition=control, num_docs=3000, instruct_samples=0, preserve=none: seed 2 has no result" in md
    problems_csv = (out / "problems.csv").read_text()
    assert problems_csv.count("\n") == 1 + 3 + 1

    for name in ("anima_vs_doc_count", "erosion", "by_dimension"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert result["files"][name] == str(png)
    assert json.loads((out / "report.json").read_text())["missing"] == result["missing"]


def test_report_states_treatment_minus_control_paired_by_seed(sweep, tmp_path):
    from scipy import stats as sps

    result = report(_cfg([sweep], tmp_path / "report"))
    gaps = {(g["num_docs"], g["instruct_samples"]): g for g in result["paired_gaps"]}
    assert set(gaps) == {(500, 0), (3000, 0)}  # the 3000/500 cell has no control to compare with
    g = gaps[(500, 0)]
    d = [0.50 - 0.40, 0.60 - 0.42, 0.70 - 0.44]
    assert (g["a"], g["b"], g["n_seeds"]) == ("treatment", "control", 3)
    assert g["mean"] == pytest.approx(sum(d) / 3) and g["stderr"] == pytest.approx(float(sps.sem(d)))
    assert g["interval"] == pytest.approx(list(sps.t.interval(0.95, 2, loc=sum(d) / 3, scale=sps.sem(d))))
    assert g["verdict"] == "none"  # +0.18, but three seeds this spread give an interval across zero
    g3 = gaps[(3000, 0)]
    assert g3["seeds"] == [0, 1]  # control seed 2 never ran: paired on the seeds both have
    assert g3["mean"] == pytest.approx((0.34 + 0.37) / 2) and g3["verdict"] == "above"
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "## Differences between conditions" in md
    row = next(line for line in md.splitlines() if line.startswith("| tiny-llama | 500 | 0 |") and " - control |" in line)
    assert row.endswith("| treatment - control | 3 | +0.180 ± 0.046 | [-0.019, +0.379] | no detectable difference |")


def test_report_bad_input_is_named(tmp_path, sweep):
    with pytest.raises(FileNotFoundError, match="sweep_dirs: .*nope"):
        report(_cfg([tmp_path / "nope"], tmp_path / "o"))
    with pytest.raises(ValueError, match="group_by: 'seed'"):
        report(_cfg([sweep], tmp_path / "o", "group_by=[condition,seed]"))
    with pytest.raises(ValueError, match=r"group_by: unknown key\(s\) \['condtion'\]"):
        report(_cfg([sweep], tmp_path / "o", "group_by=[condtion]"))


def test_report_several_sweeps_expect_their_own_seeds(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for seed in (0, 1):
        _write_run(a, "treatment", 1000, 0, seed, 0.6 + seed / 10)
    _write_run(b, "control", 1000, 0, 5, 0.3)
    result = report(_cfg([a, b], tmp_path / "out", "plots.enabled=false"))
    assert result["missing"] == []  # sweep b only ever had seed 5
    assert [s["n"] for s in result["summary"]] == [1, 2]


def test_wandb_rows_from_run_summaries():
    class Run:
        def __init__(self, name, state, summary):
            self.name, self.state, self.summary, self.id, self.config = name, state, summary, name, {}

    class Api:
        def runs(self, path, filters):
            assert path == "team/proj" and filters == {"group": "g1"}
            return [
                Run("a", "finished", {"condition": "treatment", "num_docs": 10, "instruct_samples": 0, "seed": 0,
                                      "model": "m", "eval/anima/overall_mean": 0.5, "_step": 3}),
                Run("b", "crashed", {"condition": "treatment", "seed": 1, "eval/anima/overall_mean": 0.1}),
                Run("midtrain-only", "finished", {"train/loss": 1.0}),
            ]

    rows, problems = collect_wandb(["g1"], "proj", "team", "eval.anima.overall_mean",
                                   "eval.anima.by_dimension", api=Api())
    assert [(r["run_id"], r["score"]) for r in rows] == [("a", 0.5)]
    assert problems[0]["run_id"] == "b" and "crashed" in problems[0]["reason"]
    summary, missing = aggregate(rows, ["condition", "num_docs"])
    assert summary[0]["mean"] == 0.5 and missing == []


def test_report_shows_unparseable_share_per_dimension_and_flags_incomplete_cells(tmp_path):
    """Each per-dimension cell carries its share of unparseable grades (summed over the cell's
    runs); a cell with a run whose ANIMA result is complete: false is flagged."""
    sweep = tmp_path / "s"
    counts = {  # (condition, seed) -> {dim: (attempted, unparseable)}, complete
        ("treatment", 0): ({"moral_consideration": (40, 2), "harm_minimization": (20, 0)}, True),
        ("treatment", 1): ({"moral_consideration": (40, 6), "harm_minimization": (20, 5)}, False),
        ("control", 0): ({"moral_consideration": (40, 0), "harm_minimization": (20, 0)}, True),
    }
    for (cond, seed), (dims, complete) in counts.items():
        path = _write_run(sweep, cond, 1000, 0, seed, 0.5)
        m = RunDir(path).read_metrics()
        m["eval"]["anima"].update(complete=complete, grades_by_dimension={
            d: {"attempted": a, "unparseable": u} for d, (a, u) in dims.items()})
        RunDir(path).write_metrics(m)
    result = report(_cfg([sweep], tmp_path / "out", "plots.enabled=false"))
    cells = {s["condition"]: s for s in result["summary"]}
    t, c = cells["treatment"], cells["control"]
    assert t["unparseable_share"] == {"harm_minimization": pytest.approx(5 / 40), "moral_consideration": pytest.approx(8 / 80)}
    assert t["incomplete"] == ["treatment-tiny-llama-n1000-i0-s1"] and c["incomplete"] == []
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| tiny-llama | treatment | 1000 | 0 | none | 0.400 (u 12%) | 0.600 (u 10%) | incomplete: 1 of 2 runs |" in md
    assert "| tiny-llama | control | 1000 | 0 | none | 0.400 (u 0%) | 0.600 (u 0%) |  |" in md
    assert "run treatment-tiny-llama-n1000-i0-s1 is aggregated, but its graded result is incomplete" in md
    with open(tmp_path / "out" / "summary.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["condition"] == "treatment")
    assert float(row["unparseable:moral_consideration"]) == pytest.approx(0.1) and row["incomplete_runs"] == "1"


def _write_identity_run(sweep: Path, lr: float | None, seed: int, score: float, cell: str) -> None:
    run_id = f"control-tiny-llama-n32-i16-s{seed}-{cell}{seed}"
    run = RunDir(sweep / run_id)
    settings = {"seed": seed, **({"optim.lr": lr} if lr is not None else {})}
    run.write_metrics({"run_id": run_id, "stage": "pipeline", "condition": "control", "corpus": "c", "num_docs": 32,
                       "instruct_samples": 16, "seed": seed, "model": "tiny-llama", "cell_hash": cell,
                       "settings": settings, "eval": {"probe": {"margin": score}}})
    run.mark_done()


def test_runs_that_differ_in_a_setting_are_separate_cells_with_that_setting_as_a_column(tmp_path):
    """Case 2: an lr grid must not be averaged into one cell (or, worse, shown as n=1 of one)."""
    sweep = tmp_path / "runs" / "lr_grid"
    for seed in (0, 1):
        _write_identity_run(sweep, 3e-4, seed, -0.20 + 0.0001 * seed, "aaaa")
        _write_identity_run(sweep, None, seed, -0.30 - 0.01 * seed, "bbbb")  # the preset's lr
    out = report(_cfg([sweep], tmp_path / "out", "metric=eval.probe.margin", "dimensions=eval.probe.by_dimension",
                      "group_by=[model,condition,num_docs,instruct_samples]"))
    cells = {s["optim.lr"]: s for s in out["summary"]}
    assert set(cells) == {3e-4, "(default)"}
    assert [c["n"] for c in cells.values()] == [2, 2]
    assert cells[3e-4]["mean"] == pytest.approx(-0.19995)
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| model | condition | num_docs | instruct_samples | optim.lr | n |" in md
    # A spread below 0.0005 is printed with its digits, not as "± 0.000".
    assert "± 0.000 " not in md and "± 5e-05" in md
    header = (tmp_path / "out" / "summary.csv").read_text().splitlines()[0]
    assert "optim.lr" in header


def test_runs_whose_hashes_differ_are_never_averaged_even_with_equal_settings(tmp_path):
    sweep = tmp_path / "runs" / "edited_corpus"
    for seed in (0, 1):
        _write_identity_run(sweep, None, seed, -0.2, "aaaa")
        _write_identity_run(sweep, None, seed, -0.3, "cccc")  # e.g. the same config over an edited corpus file
    out = report(_cfg([sweep], tmp_path / "out", "metric=eval.probe.margin", "dimensions=eval.probe.by_dimension",
                      "group_by=[model,condition,num_docs,instruct_samples]"))
    assert sorted((s["config"], s["n"], s["mean"]) for s in out["summary"]) == [("aaaa", 2, -0.2), ("cccc", 2, -0.3)]


def test_condition_order_lists_known_conditions_first_then_others_by_name():
    from midtrain.tracking.conditions import condition_order

    assert condition_order(["zeta", "base", "alpha", "control", "treatment", "instruct_baseline"]) == [
        "treatment", "control", "instruct_baseline", "base", "alpha", "zeta"]
    assert condition_order(["control", "treatment"]) == ["treatment", "control"]
    assert condition_order([]) == []


# Collecting runs, row by row -------------------------------------------------------------------
from midtrain import report as rp  # noqa: E402


def _attempt(commit: str, torch: str) -> dict:
    return {"code": {"commit": commit, "dirty": False}, "versions": {"python": "3.12.1", "torch": torch}}


def test_run_row_holds_identity_score_curve_dimensions_grades_and_provenance():
    metrics = {
        "run_id": "r1", "condition": "treatment", "corpus": "c-t", "num_docs": 100, "instruct_samples": 40,
        "seed": 3, "model": "m", "cell_hash": "abcd", "settings": {"seed": 3, "optim.lr": 0.001},
        "train": {"instruct": {"global_steps": 20, "probe_curve": [{"step": 0, "margin": 0.1},
                                                                    {"step": 10, "margin": 0.3},
                                                                    {"step": 20, "margin": 0.2}]}},
        "eval": {"anima": {"overall_mean": 0.55, "complete": False,
                           "by_dimension": {"harm": 0.4, "care": 0.7, "note": "n/a", "bad": float("nan")},
                           "grades_by_dimension": {"harm": {"attempted": 10.0, "unparseable": 2},
                                                   "care": {"attempted": 10, "unparseable": None},
                                                   "note": "x"}}},
        "provenance": {"attempts": [_attempt("a" * 40, "2.1")]},
    }
    row = rp._run_row(metrics, "src/metrics.json", "sw", "eval.anima.overall_mean", "eval.anima.by_dimension")
    assert row == {
        "condition": "treatment", "corpus": "c-t", "num_docs": 100, "instruct_samples": 40, "seed": 3,
        "model": "m", "preserve": "none", "run_id": "r1", "sweep": "sw", "source": "src/metrics.json",
        "score": 0.55, "cell_hash": "abcd", "settings": {"seed": 3, "optim.lr": 0.001},
        "curve": [(0.0, 0.1), (20.0, 0.3), (40.0, 0.2)],
        "dimensions": {"harm": 0.4, "care": 0.7},
        "provenance": rp.run_provenance(metrics),
        "dimension_grades": {"harm": (10, 2)},
        "complete": False,
    }
    assert row["provenance"]["code"] == ["a" * 12] and row["provenance"]["torch"] == ["2.1"]
    assert isinstance(row["dimension_grades"]["harm"][0], int)
    assert row["settings"] is not metrics["settings"]  # a copy: identity_columns writes into rows, not runs


def test_run_row_of_a_bare_run_has_empty_parts_and_keeps_its_preservation_strategy():
    metrics = {"run_id": "r2", "preserve": "replay", "instruct_samples": 8, "settings": ["not", "a", "mapping"],
               "train": {"instruct": {"global_steps": 0, "probe_curve": [{"step": 1, "margin": 0.5}]}},
               "eval": {"anima": {"overall_mean": 0.5, "by_dimension": ["x"], "grades_by_dimension": ["x"]}}}
    row = rp._run_row(metrics, "s", "sw", "eval.anima.overall_mean", "eval.anima.by_dimension")
    assert row["preserve"] == "replay" and row["seed"] is None and row["cell_hash"] is None
    assert (row["settings"], row["curve"], row["dimensions"], row["dimension_grades"]) == ({}, [], {}, {})
    assert row["provenance"] == {} and row["complete"] is None
    # No steps, or no instruction sample count, to place the curve: no curve rather than a wrong one.
    for instruct in ({"global_steps": "20"}, {"global_steps": 20, "probe_curve": {"step": 1}}):
        m = {**metrics, "train": {"instruct": {"probe_curve": [{"step": 1, "margin": 0.5}], **instruct}}}
        assert rp._run_row(m, "s", "sw", "eval.anima.overall_mean", "eval.anima.by_dimension")["curve"] == []
    m = {**metrics, "instruct_samples": None, "train": {"instruct": {"global_steps": 2, "probe_curve": [
        {"step": 1, "margin": 0.5}]}}}
    assert rp._run_row(m, "s", "sw", "eval.anima.overall_mean", "eval.anima.by_dimension")["curve"] == []
    m = {**m, "instruct_samples": 8}
    assert rp._run_row(m, "s", "sw", "eval.anima.overall_mean", "eval.anima.by_dimension")["curve"] == [(4.0, 0.5)]
    m = {**m, "train": {"instruct": {"global_steps": 1, "probe_curve": [{"step": 1, "margin": 0.5}]}}}
    assert rp._run_row(m, "s", "sw", "eval.anima.overall_mean", "eval.anima.by_dimension")["curve"] == [(8.0, 0.5)]


def test_run_row_with_a_top_level_dimensions_key_reads_no_grades():
    metrics = {"run_id": "r", "dims": {"a": 1.0}, "grades_by_dimension": {"a": {"attempted": 4, "unparseable": 1}},
               "complete": False, "score": 0.2,
               "": {"grades_by_dimension": {"a": {"attempted": 4, "unparseable": 1}}, "complete": False}}
    row = rp._run_row(metrics, "s", "sw", "score", "dims")
    assert row["dimensions"] == {"a": 1.0} and row["dimension_grades"] == {} and row["complete"] is None
    assert row["score"] == 0.2


def test_collect_runs_lists_every_unusable_run_and_keeps_the_rest(tmp_path):
    sweep = tmp_path / "sw"
    (sweep / "a-missing").mkdir(parents=True)
    (sweep / "b-list").mkdir()
    (sweep / "b-list" / "metrics.json").write_text("[1, 2]")
    (sweep / "c-corrupt").mkdir()
    (sweep / "c-corrupt" / "metrics.json").write_text("{")
    RunDir(sweep / "d-running").write_metrics({"run_id": "the-real-id"})
    RunDir(sweep / "e-running-unnamed").write_metrics({"seed": 1})
    good = RunDir(sweep / "f-good")
    good.write_metrics({"run_id": "f", "seed": 0})
    good.mark_done()
    (sweep / ".hidden").mkdir()
    (sweep / "z-file.txt").write_text("not a run")
    problems: list[dict] = []
    runs = rp.collect_runs(sweep, problems=problems)
    assert runs == [{"run_id": "f", "seed": 0, "_dir": str(sweep / "f-good")}]
    assert [(p["sweep"], p["run_id"], p["path"]) for p in problems] == [
        ("sw", name, str(sweep / d / "metrics.json")) for name, d in [
            ("a-missing", "a-missing"), ("b-list", "b-list"), ("c-corrupt", "c-corrupt"),
            ("the-real-id", "d-running"), ("e-running-unnamed", "e-running-unnamed")]]
    reasons = [p["reason"] for p in problems]
    assert reasons[0] == "no metrics.json (never started, still running, or failed)"
    assert reasons[1] == "corrupt metrics.json: expected a JSON object, got list"
    assert reasons[2].startswith("corrupt metrics.json: ") and str(sweep / "c-corrupt" / "metrics.json") in reasons[2]
    assert reasons[3] == reasons[4] == "not DONE (still running, or failed before finishing)"
    # Without require_done the unfinished runs are read too; without a problems list nothing is recorded.
    assert [r["_dir"] for r in rp.collect_runs(sweep, require_done=False)] == [
        str(sweep / d) for d in ("d-running", "e-running-unnamed", "f-good")]


def test_collect_sweep_dir_rows_name_their_metrics_file_and_runs_without_a_score_are_problems(tmp_path):
    sweep = tmp_path / "sw"
    _write_run(sweep, "control", 10, 0, 0, 0.3)
    unfinished = _write_run(sweep, "control", 10, 0, 1, 0.4, done=False)
    no_score = RunDir(sweep / "control-x-s2")
    no_score.write_metrics({"run_id": "no-score", "seed": 2, "eval": {"anima": {"overall_mean": "0.5"}}})
    no_score.mark_done()
    unnamed = RunDir(sweep / "control-y-s3")
    unnamed.write_metrics({"seed": 3})
    unnamed.mark_done()
    rows, problems = rp.collect_sweep_dir(sweep, "eval.anima.overall_mean", "eval.anima.by_dimension")
    assert [(r["run_id"], r["source"], r["sweep"], r["score"]) for r in rows] == [
        ("control-tiny-llama-n10-i0-s0", str(sweep / "control-tiny-llama-n10-i0-s0" / "metrics.json"), "sw", 0.3)]
    assert problems == [
        {"sweep": "sw", "run_id": "control-tiny-llama-n10-i0-s1", "path": str(unfinished / "metrics.json"),
         "reason": "not DONE (still running, or failed before finishing)"},
        {"sweep": "sw", "run_id": "no-score", "path": str(sweep / "control-x-s2" / "metrics.json"),
         "reason": "eval.anima.overall_mean absent or not a finite number ('0.5')"},
        {"sweep": "sw", "run_id": "control-y-s3", "path": str(sweep / "control-y-s3" / "metrics.json"),
         "reason": "eval.anima.overall_mean absent or not a finite number (None)"},
    ]
    rows, problems = rp.collect_sweep_dir(sweep, "eval.anima.overall_mean", "eval.anima.by_dimension",
                                          require_done=False)
    assert [r["seed"] for r in rows] == [0, 1] and len(problems) == 2


class _WandbRun:
    def __init__(self, name, state, summary, config=None):
        self.name, self.state, self.summary, self.id, self.config = name, state, summary, f"id-{name}", config or {}


class _WandbApi:
    def __init__(self, runs_by_group, path):
        self.runs_by_group, self.path, self.calls = runs_by_group, path, []

    def runs(self, path, filters):
        assert path == self.path
        self.calls.append(filters["group"])
        return self.runs_by_group[filters["group"]]


def test_collect_wandb_takes_conditions_from_the_run_config_and_keeps_reading_after_skipped_runs():
    config = {"condition": "control", "corpus": {"name": "c-ctl"}, "instruct": {"samples": 16}, "seed": 1,
              "model": {"name": "tiny"}, "preserve": {"name": "replay"},
              "provenance": {"attempts": 1, "attempt": {"1": _attempt("b" * 40, "2.2")}}}
    api = _WandbApi({
        "g1": [_WandbRun("midtrain", "finished", {"train/loss": 1.0}),
               _WandbRun("crashed", "crashed", {"eval/anima/overall_mean": 0.1}),
               _WandbRun("r1", "finished", {"eval/anima/overall_mean": 0.5, "num_docs": 64, "seed": 7,
                                            "eval/anima/by_dimension/care": 0.25}, config)],
        "g2": [_WandbRun("r2", "finished", {"eval/anima/overall_mean": 0.75})],
    }, "proj")
    rows, problems = collect_wandb(["g1", "g2"], "proj", None, "eval.anima.overall_mean", "eval.anima.by_dimension",
                                   api=api)
    assert api.calls == ["g1", "g2"]
    assert problems == [{"sweep": "g1", "run_id": "crashed", "path": "wandb:proj/id-crashed",
                         "reason": "W&B run state is crashed"}]
    r1, r2 = rows
    assert {k: r1[k] for k in ("condition", "corpus", "num_docs", "instruct_samples", "seed", "model", "preserve",
                               "run_id", "sweep", "source", "score", "dimensions")} == {
        "condition": "control", "corpus": "c-ctl", "num_docs": 64, "instruct_samples": 16, "seed": 7,
        "model": "tiny", "preserve": "replay", "run_id": "r1", "sweep": "g1", "source": "wandb:proj/id-r1",
        "score": 0.5, "dimensions": {"care": 0.25}}  # the summary wins over the config where both have a key
    assert r1["provenance"]["code"] == ["b" * 12] and r1["provenance"]["torch"] == ["2.2"]
    assert (r2["run_id"], r2["sweep"], r2["source"], r2["preserve"], r2["condition"]) == (
        "r2", "g2", "wandb:proj/id-r2", "none", None)
    assert r2["provenance"] == {}


def test_collect_wandb_without_an_api_opens_the_public_api(monkeypatch):
    import sys
    import types

    api = _WandbApi({"g": [_WandbRun("r", "finished", {"eval/anima/overall_mean": 0.5})]}, "team/proj")
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=lambda: api))
    rows, problems = collect_wandb(["g"], "proj", "team", "eval.anima.overall_mean", "eval.anima.by_dimension")
    assert [(r["run_id"], r["source"]) for r in rows] == [("r", "wandb:team/proj/id-r")] and problems == []


# Aggregation -------------------------------------------------------------------------------------
def _row(condition="treatment", num_docs=100, seed=0, score=0.5, sweep="sw", **extra) -> dict:
    row = {"condition": condition, "num_docs": num_docs, "seed": seed, "score": score, "sweep": sweep,
           "run_id": f"{condition}-n{num_docs}-s{seed}", "dimensions": {}, "provenance": {}}
    row.update(extra)
    return row


def test_aggregate_orders_cells_and_seeds_sums_grades_and_lists_missing_seeds():
    rows = [
        _row("treatment", 1000, 1, 0.7, dimensions={"b": 0.2, "a": 0.4}, dimension_grades={"a": (10, 1), "b": (0, 0)},
             complete=False),
        _row("treatment", 1000, 0, 0.5, dimensions={"a": 0.6}, dimension_grades={"a": (30, 3)}, complete=None),
        _row("treatment", 500, 2, 0.9),
        _row("control", 1000, 0, 0.1, sweep="other"),
        _row("control", "all", 0, 0.2),
    ]
    summary, missing = aggregate(rows, ["condition", "num_docs"])
    assert [(s["condition"], s["num_docs"]) for s in summary] == [
        ("control", 1000), ("control", "all"), ("treatment", 500), ("treatment", 1000)]
    t = summary[3]
    assert {k: t[k] for k in ("n", "seeds", "incomplete", "provenance_differs")} == {
        "n": 2, "seeds": [0, 1], "incomplete": ["treatment-n1000-s1"], "provenance_differs": {}}
    assert t["mean"] == pytest.approx(0.6) and t["stderr"] == pytest.approx(0.1)
    assert list(t["dimensions"]) == ["a", "b"]
    assert t["dimensions"]["a"] == pytest.approx(0.5) and t["dimensions"]["b"] == pytest.approx(0.2)
    assert t["unparseable_share"] == {"a": pytest.approx(4 / 40)}  # b had no grades: no share, not 0/0
    assert summary[0] == {"condition": "control", "num_docs": 1000, "n": 1, "seeds": [0], "mean": 0.1,
                          "stderr": None, "dimensions": {}, "provenance_differs": {}, "unparseable_share": {},
                          "incomplete": []}
    # Sweep "sw" ran seeds 0, 1 and 2: every cell of it is expected to have all three.
    assert missing == [
        {"condition": "control", "num_docs": "all", "seed": 1}, {"condition": "control", "num_docs": "all", "seed": 2},
        {"condition": "treatment", "num_docs": 500, "seed": 0}, {"condition": "treatment", "num_docs": 500, "seed": 1},
        {"condition": "treatment", "num_docs": 1000, "seed": 2}]


def test_aggregate_flags_cells_whose_runs_differ_in_code_and_groups_by_list_values():
    rows = [_row(seed=0, provenance={"code": ["aaa"], "torch": ["2.1"]}, tags=["x", "y"]),
            _row(seed=1, provenance={"code": ["bbb"], "torch": ["2.1"]}, tags=["x", "y"]),
            _row(seed=0, tags=["z"])]
    summary, missing = aggregate(rows, ["condition", "tags"])
    assert [(s["tags"], s["n"]) for s in summary] == [("['x', 'y']", 2), ("['z']", 1)]
    assert summary[0]["provenance_differs"] == {"code": ["aaa", "bbb"]}
    assert missing == [{"condition": "treatment", "tags": "['z']", "seed": 1}]


def test_sort_key_puts_numbers_in_numeric_order_before_everything_else():
    assert sorted([10, "b", 2.5, None, "a", 1], key=rp._sort_key) == [1, 2.5, 10, None, "a", "b"]
    assert rp._sort_key(3) == (0, 3, "") and rp._sort_key("x") == (1, 0, "x")
    assert rp._hashable([1]) == "[1]" and rp._hashable({"a": 1}) == "{'a': 1}" and rp._hashable((1,)) == (1,)


def test_identity_columns_adds_settings_that_vary_inside_a_cell_and_config_only_where_hashes_still_differ():
    rows = [_row(seed=0, cell_hash="h1", settings={"seed": 0, "optim.lr": 0.1, "model.size": "s", "tags": [1]}),
            _row(seed=0, cell_hash="h2", settings={"seed": 0, "model.size": "s", "tags": [2]}),
            _row(seed=1, cell_hash="h2", settings={"seed": 1, "model.size": "s", "tags": [2]}),
            # differs from the cell above only in num_docs, a group_by key: not a column
            _row(num_docs=200, seed=0, cell_hash="h3", settings={"seed": 0, "num_docs": 200})]
    cols = rp.identity_columns(rows, ["condition", "num_docs"])
    assert cols == ["optim.lr", "tags"]
    assert [(r["optim.lr"], r["tags"], r["config"]) for r in rows] == [
        (0.1, [1], "h1"), ("(default)", [2], "h2"), ("(default)", [2], "h2"), ("(default)", "(default)", "h3")]
    assert "model.size" not in rows[0] and "seed" not in cols
    # Equal settings, different hashes (e.g. an edited corpus file): the hash becomes a column.
    rows = [_row(seed=0, cell_hash="h1", settings={"seed": 0}), _row(seed=1, cell_hash="h1", settings={"seed": 1}),
            _row(seed=0, cell_hash="h2"), _row(num_docs=9, cell_hash="h9")]
    assert rp.identity_columns(rows, ["condition", "num_docs"]) == ["config"]
    rows = [_row(seed=0, cell_hash="h1"), _row(seed=1, cell_hash="h1"), _row(num_docs=9, cell_hash="h9")]
    assert rp.identity_columns(rows, ["condition", "num_docs"]) == []
    assert [r["config"] for r in rows] == ["h1", "h1", "h9"]


# Tables ------------------------------------------------------------------------------------------
_SUMMARY = [
    {"model": "m", "condition": "control", "n": 2, "seeds": [0, 1], "mean": 0.25, "stderr": 0.0001,
     "dimensions": {"care": 0.5}, "provenance_differs": {"code": ["aaa", None], "torch": ["2.1", "2.2"]},
     "unparseable_share": {"care": 0.125}, "incomplete": []},
    {"model": "m", "condition": "treatment", "n": 1, "seeds": [3], "mean": 0.5, "stderr": None,
     "dimensions": {"care": 0.75, "harm": 0.0}, "provenance_differs": {}, "unparseable_share": {},
     "incomplete": ["t-s3"]},
]


def test_summary_csv_has_one_row_per_cell_with_dimensions_shares_and_differing_versions():
    assert rp.summary_csv(_SUMMARY, ["model", "condition"]) == (
        "model,condition,n,seeds,mean,stderr,incomplete_runs,dim:care,dim:harm,unparseable:care,unparseable:harm,"
        "provenance_differs\n"
        "m,control,2,0 1,0.250000,0.000100,0,0.500000,,0.125000,,code: aaa | unrecorded; torch: 2.1 | 2.2\n"
        "m,treatment,1,3,0.500000,,1,0.750000,0.000000,,,\n")
    assert rp.summary_csv([], ["model"]) == "model,n,seeds,mean,stderr,incomplete_runs,provenance_differs\n"
    # A summary cell from elsewhere without shares, incomplete runs or versions still writes a row.
    bare = {"model": "m", "n": 1, "seeds": [0], "mean": 0.5, "stderr": None, "dimensions": {"care": 0.5}}
    assert rp.summary_csv([bare], ["model"]).splitlines()[1] == "m,1,0,0.500000,,0,0.500000,,"


def test_fmt_stderr_and_fmt():
    assert [rp.fmt_stderr(x) for x in (0, 0.0, 0.0123456, 0.0005, 0.00049, 0.0000123, 1.0)] == [
        "0", "0", "0.012", "0.001", "0.00049", "1.2e-05", "1.000"]
    assert (rp._fmt(None), rp._fmt(0.12345), rp._fmt(0.5, 1), rp._fmt(0.0)) == ("", "0.123", "0.5", "0.000")
    assert rp._csv(["a", "b"], [[1, "x,y"], [None, 2]]) == 'a,b\n1,"x,y"\n,2\n'
    assert rp._differs({"provenance_differs": {"code": ["a", None]}}) == "code: a | unrecorded"
    assert rp._differs({}) == "" and rp._differs({"provenance_differs": None}) == ""


def test_summary_markdown_lists_cells_dimensions_versions_and_every_problem():
    runs = [{"provenance": {"code": ["aaa"], "python": ["3.12"], "torch": ["2.1"]}}, {"provenance": {}}]
    problems = [{"path": "p/metrics.json", "sweep": "sw", "run_id": "r", "reason": "why"}]
    md = rp.summary_markdown(_SUMMARY, ["model", "condition"], "eval.x", problems,
                             [{"model": "m", "condition": "control", "seed": 2}], runs)
    lines = md.splitlines()
    versions = next(i for i, line in enumerate(lines) if line.startswith("|  | code | python | torch |"))
    header, rule, all_runs = lines[versions:versions + 3]
    assert header == "| " + " | ".join(["", *rp.PROVENANCE_KEYS]) + " |"
    assert rule == "|" + "---|" * (len(rp.PROVENANCE_KEYS) + 1)
    assert all_runs.replace("\\|", "|") == "| all runs | aaa | unrecorded | 3.12 | unrecorded | 2.1 | unrecorded | " + \
        " | ".join(["unrecorded"] * (len(rp.PROVENANCE_KEYS) - 3)) + " |"
    assert md == "\n".join([
        "# Sweep report: `eval.x`", "", "Mean ± standard error over seeds (n = seeds aggregated).", "",
        "| model | condition | n | mean ± se | provenance |", "|---|---|---|---|---|",
        "| m | control | 2 | 0.250 ± 0.0001 | **differs: code, torch** |",
        "| m | treatment | 1 | 0.500 |  |", "", "## Per-dimension means", "",
        "Mean over seeds; (u x%) = share of that dimension's grades that were unparseable, over the cell's runs. "
        "A cell with a run whose graded result is incomplete (complete: false) is flagged.", "",
        "| model | condition | care | harm | flag |", "|---|---|---|---|---|",
        "| m | control | 0.500 (u 12%) |  |  |", "| m | treatment | 0.750 | 0.000 | incomplete: 1 of 1 runs |",
        "", "## Code and library versions", "",
        "Cells whose runs were produced by different code or library versions (their means compare different "
        "programs):", "",
        "- model=m, condition=control: code: aaa | unrecorded; torch: 2.1 | 2.2", "",
        header, rule, all_runs, "", "Per-run versions are in `runs.csv`.", "", "## Missing or failed runs", "",
        "- `p/metrics.json` (sw/r): why", "- model=m, condition=control: seed 2 has no result",
        "- model=m, condition=treatment: run t-s3 is aggregated, but its graded result is incomplete "
        "(complete: false)", ""])


def test_summary_markdown_of_nothing_says_so():
    assert rp.summary_markdown([], ["model"], "eval.x", [], [], None) == "\n".join([
        "# Sweep report: `eval.x`", "", "Mean ± standard error over seeds (n = seeds aggregated).", "",
        "| model | n | mean ± se | provenance |", "|---|---|---|---|", "", "## Code and library versions", "",
        "No run recorded its code and library versions.", "", "## Missing or failed runs", "",
        "None: every run of every cell finished and was aggregated.", ""])
    # One problem alone is enough to drop the "None" line; so is one missing seed, or one incomplete run.
    s = {**_SUMMARY[1], "dimensions": {}}
    for args in (([], [{"p": 1, "path": "x", "sweep": "s", "run_id": "r", "reason": "y"}], []),
                 ([], [], [{"model": "m", "condition": "c", "seed": 1}]), ([s], [], [])):
        assert "None: every run" not in rp.summary_markdown(args[0], ["model", "condition"], "e", args[1], args[2])


# Treatment minus control -------------------------------------------------------------------------
def test_gaps_pair_by_seed_per_cell_and_list_unpaired_seeds():
    rows = [_row("treatment", 1000, 0, 0.5), _row("treatment", 1000, 1, 0.75), _row("treatment", 1000, 2, 0.9),
            _row("control", 1000, 0, 0.25), _row("control", 1000, 1, 0.25), _row("control", 1000, 3, 0.1),
            _row("instruct_baseline", 1000, 0, 0.0), _row("treatment", 500, 0, 0.5), _row("control", 500, 0, 0.5),
            _row("treatment", "x", 0, 0.5), _row("control", 10, 0, 0.5)]  # cells with one condition only
    out = rp.gaps(rows, ["condition", "num_docs"])
    assert [g["num_docs"] for g in out] == [500, 1000]
    g5, g = out
    assert g5 == {"num_docs": 500, "n": 1, "seeds": [0], "gap": 0.0, "stderr": None, "treatment": 0.5,
                  "control": 0.5, "unpaired": []}
    assert (g["n"], g["seeds"], g["unpaired"]) == (2, [0, 1], [2, 3])
    assert g["gap"] == pytest.approx(0.375) and g["stderr"] == pytest.approx(0.125)
    assert g["treatment"] == pytest.approx(0.625) and g["control"] == pytest.approx(0.25)
    out = rp.gaps(rows, ["num_docs"], "treatment", "instruct_baseline")
    assert [(g["num_docs"], g["gap"], g["treatment"], g["instruct_baseline"], g["unpaired"]) for g in out] == [
        (1000, 0.5, 0.5, 0.0, [1, 2])]
    assert rp.gaps([r for r in rows if r["condition"] != "control"], ["num_docs"]) == []


def test_gaps_markdown_table():
    rows = [{"num_docs": 500, "n": 2, "seeds": [0, 1], "gap": 0.375, "stderr": 0.125, "treatment": 0.625,
             "control": 0.25, "unpaired": [2]},
            {"num_docs": 1000, "n": 1, "seeds": [0], "gap": -0.1, "stderr": None, "treatment": 0.4,
             "control": 0.5, "unpaired": []}]
    assert rp.gaps_markdown(rows, "eval.x", "treatment", "control") == "\n".join([
        "", "## treatment minus control", "", "`eval.x`, paired by seed: mean ± standard error of the per-seed "
        "differences.", "", "| num_docs | n | treatment | control | gap ± se |", "|---|---|---|---|---|",
        "| 500 | 2 | 0.6250 | 0.2500 | 0.3750 ± 0.1250 |", "| 1000 | 1 | 0.4000 | 0.5000 | -0.1000 |", ""])
    assert rp.gaps_markdown([], "eval.x", "treatment", "control") == ""


def test_curve_gaps_read_both_curves_at_the_first_seeds_points():
    def curve(points):
        return [(x, y) for x, y in points]
    rows = [_row("treatment", 100, 0, 0.5, model="m", instruct_samples=40, preserve="none",
                 curve=curve([(20.0, 0.3), (0.0, 0.1)])),  # unsorted: read in order of samples seen
            _row("treatment", 100, 1, 0.5, model="m", instruct_samples=40, preserve="none",
                 curve=curve([(0.0, 0.2), (40.0, 0.6)])),
            _row("control", 100, 0, 0.5, model="m", instruct_samples=40, preserve="none",
                 curve=curve([(0.0, 0.0), (40.0, 0.4)])),
            _row("control", 100, 1, 0.5, model="m", instruct_samples=40, preserve="none",
                 curve=curve([(0.0, 0.1), (10.0, 0.1)])),
            _row("control", 100, 2, 0.5, model="m", instruct_samples=40, preserve="none", curve=[]),
            _row("treatment", 100, 0, 0.5, model="m", instruct_samples=80, preserve="none", curve=[]),
            _row("control", 100, 0, 0.5, model="m", instruct_samples=80, preserve="none", curve=[(0.0, 0.1)])]
    out = rp.curve_gaps(rows)
    assert len(out) == 1
    c = out[0]
    assert {k: c[k] for k in ("model", "num_docs", "instruct_samples", "preserve", "seeds")} == {
        "model": "m", "num_docs": 100, "instruct_samples": 40, "preserve": "none", "seeds": [0, 1]}
    # seed 0: 0.1-0.0, 0.3-0.2; seed 1 read at 0 and 20: 0.2-0.1, 0.4-0.1
    assert [p["samples_seen"] for p in c["points"]] == [0.0, 20.0]
    assert [p["gap"] for p in c["points"]] == pytest.approx([0.1, 0.2])
    assert [p["stderr"] for p in c["points"]] == pytest.approx([0.0, 0.1])
    assert rp.curve_gaps(rows, "treatment", "instruct_baseline") == []


def test_paired_skips_rows_without_a_value_and_cells_without_a_shared_seed():
    rows = [_row("a", 1, 0, 0.5), _row("b", 1, 0, None), _row("b", 1, 1, 0.2), _row("a", 2, 1, 0.1),
            _row("b", 2, 1, 0.3), _row("c", 2, 1, 9.0)]
    out = list(rp._paired(rows, ["num_docs"], "a", "b", lambda r: r["score"]))
    assert out == [((2,), {1: 0.1}, {1: 0.3}, [1])]


# The whole report, its files and its configuration ------------------------------------------------
def _write_pair_sweep(sweep: Path) -> None:
    """Treatment and control at two seeds, the treatment's seed 1 at another lr, with probe curves."""
    for cond, seed, score, lr in [("treatment", 0, 0.5, None), ("treatment", 1, 0.75, 0.01),
                                  ("control", 0, 0.25, None), ("control", 1, 0.5, None), ("control", 2, 0.0, None)]:
        run_id = f"{cond}-s{seed}"
        run = RunDir(sweep / run_id)
        run.write_metrics({
            "run_id": run_id, "condition": cond, "corpus": f"c-{cond}", "num_docs": 10, "instruct_samples": 4,
            "seed": seed, "model": "m", "cell_hash": f"h-{cond}", "settings": {"seed": seed, **(
                {"optim.lr": lr} if lr else {})},
            "train": {"instruct": {"global_steps": 2, "probe_curve": [{"step": 0, "margin": score},
                                                                      {"step": 2, "margin": 2 * score}]}},
            "eval": {"anima": {"overall_mean": score, "by_dimension": {"care": score}}},
            "provenance": {"attempts": [_attempt("c" * 40, "2.1")]}})
        run.mark_done()


def test_report_writes_runs_problems_and_gaps_tables(tmp_path, monkeypatch):
    sweep = tmp_path / "sw"
    _write_pair_sweep(sweep)
    RunDir(sweep / "late").write_metrics({"run_id": "late", "seed": 0})
    calls = []
    monkeypatch.setattr(rp.figures, "report_figures", lambda summary, out, cfg: calls.append(
        ("report", len(summary), out, cfg.plots.dpi)) or {"erosion": "e.png"})
    monkeypatch.setattr(rp.figures, "gap_figures", lambda g, c, out, cfg: calls.append(
        ("gap", len(g), len(c), out, cfg.plots.dpi)) or {"gap_vs_instruct_samples": "g.png"})
    out = tmp_path / "out"
    result = report(_cfg([sweep], out, "group_by=[model,condition]"))
    assert calls == [("report", 3, out, 120), ("gap", 1, 1, out, 120)]
    assert [(s["condition"], s["optim.lr"], s["n"], s["legend_extra"]) for s in result["summary"]] == [
        ("control", "(default)", 3, "optim.lr=(default)"), ("treatment", 0.01, 1, "optim.lr=0.01"),
        ("treatment", "(default)", 1, "optim.lr=(default)")]  # numbers before names
    assert result["files"] == {k: str(out / f) for k, f in [
        ("summary_csv", "summary.csv"), ("summary_md", "summary.md"), ("runs_csv", "runs.csv"),
        ("problems_csv", "problems.csv"), ("report_json", "report.json"), ("gaps_csv", "gaps.csv")]} | {
        "erosion": "e.png", "gap_vs_instruct_samples": "g.png"}
    # The gap pairs treatment and control across their lr column (it is not a condition): seed 0 only has
    # the default lr on both sides, seed 1 pairs the treatment at lr 0.01 with nothing (its cell differs).
    assert [(g["optim.lr"], g["seeds"], g["unpaired"]) for g in result["gaps"]] == [("(default)", [0], [1, 2])]
    assert (out / "gaps.csv").read_text() == (
        "model,optim.lr,n,seeds,treatment,control,gap,stderr\nm,(default),1,0,0.500000,0.250000,0.250000,\n")
    runs_csv = (out / "runs.csv").read_text().splitlines()
    assert runs_csv[0] == ",".join(["sweep", "run_id", "condition", "corpus", "num_docs", "instruct_samples", "seed",
                                    "model", "preserve", "score", "source", *rp.PROVENANCE_KEYS])
    assert runs_csv[1] == ",".join(["sw", "control-s0", "control", "c-control", "10", "4", "0", "m", "none", "0.25",
                                    str(sweep / "control-s0" / "metrics.json"), "c" * 12, "3.12.1", "2.1"]
                                   + ["unrecorded"] * (len(rp.PROVENANCE_KEYS) - 3))
    assert len(runs_csv) == 6
    assert list(csv.reader(io.StringIO((out / "problems.csv").read_text()))) == [
        ["sweep", "run_id", "path", "reason"],
        ["sw", "late", str(sweep / "late" / "metrics.json"), "not DONE (still running, or failed before finishing)"],
        ["", "", "", "missing seed 0 for model=m, condition=treatment, optim.lr=0.01"],
        ["", "", "", "missing seed 2 for model=m, condition=treatment, optim.lr=0.01"],
        ["", "", "", "missing seed 1 for model=m, condition=treatment, optim.lr=(default)"],
        ["", "", "", "missing seed 2 for model=m, condition=treatment, optim.lr=(default)"]]
    assert [p["run_id"] for p in result["problems"]] == ["late"] and len(result["missing"]) == 4
    saved = json.loads((out / "report.json").read_text())
    assert saved["files"] == result["files"] and len(saved["runs"]) == 5 and saved["gaps"][0]["seeds"] == [0]
    assert [c["seeds"] for c in saved["curve_gaps"]] == [[0, 1]]  # curves pair across lr
    md = (out / "summary.md").read_text()
    assert "| model | condition | optim.lr | n | mean ± se | provenance |" in md
    assert "## treatment minus control" in md and "| m | (default) | 1 | 0.5000 | 0.2500 | 0.2500 |" in md
    assert md.startswith("# Sweep report: `eval.anima.overall_mean`\n")
    assert "\n`eval.anima.overall_mean`, paired by seed: mean ± standard error of the per-seed differences.\n" in md
    assert "| all runs | " + "c" * 12 + " | 3.12.1 | 2.1 | unrecorded |" in md  # versions of the runs read
    assert [line for line in md.splitlines() if "has no result" in line] == [
        "- model=m, condition=treatment, optim.lr=0.01: seed 0 has no result",
        "- model=m, condition=treatment, optim.lr=0.01: seed 2 has no result",
        "- model=m, condition=treatment, optim.lr=(default): seed 1 has no result",
        "- model=m, condition=treatment, optim.lr=(default): seed 2 has no result"]
    assert "## Differences between conditions" in md


def test_report_reads_wandb_groups_and_takes_the_gap_from_the_config(tmp_path, monkeypatch):
    seen = []

    def fake_wandb(groups, project, entity, metric, dimensions):
        seen.append((list(groups), project, entity, metric, dimensions))
        base = {"model": "m", "corpus": "c", "num_docs": 1, "instruct_samples": 0, "preserve": "none",
                "dimensions": {}, "provenance": {}, "settings": {}, "cell_hash": None, "curve": [], "source": "w"}
        return ([{**base, "condition": c, "seed": 0, "score": s, "sweep": "g", "run_id": c}
                 for c, s in (("treatment", 0.5), ("control", 0.25))],
                [{"sweep": "g", "run_id": "x", "path": "wandb:p/x", "reason": "W&B run state is failed"}])

    monkeypatch.setattr(rp, "collect_wandb", fake_wandb)
    out = tmp_path / "out"
    result = report(_cfg([], out, "wandb.groups=[g]", "wandb.entity=team", "plots.enabled=false",
                         "gap.minuend=control", "gap.subtrahend=treatment", "metric=eval.m", "dimensions=eval.d"))
    assert seen == [(["g"], "alignment-midtraining", "team", "eval.m", "eval.d")]
    assert [p["run_id"] for p in result["problems"]] == ["x"] and len(result["runs"]) == 2
    assert [(g["gap"], g["control"], g["treatment"]) for g in result["gaps"]] == [(-0.25, 0.25, 0.5)]
    assert "## control minus treatment" in (out / "summary.md").read_text()
    assert (out / "gaps.csv").read_text().splitlines()[0] == "model,num_docs,instruct_samples,preserve,n,seeds," \
                                                              "control,treatment,gap,stderr"
    assert "gap_vs_instruct_samples" not in result["files"]


def test_report_without_pairs_writes_no_gaps_table_and_no_plots_when_disabled(tmp_path, monkeypatch):
    sweep = tmp_path / "sw"
    _write_run(sweep, "treatment", 10, 0, 0, 0.5)
    monkeypatch.setattr(rp.figures, "report_figures", lambda *a: pytest.fail("plots are disabled"))
    result = report(_cfg([sweep], tmp_path / "out", "plots.enabled=false"))
    assert "gaps_csv" not in result["files"] and not (tmp_path / "out" / "gaps.csv").exists()
    assert result["gaps"] == [] and result["curve_gaps"] == []
    assert set(result["files"]) == {"summary_csv", "summary_md", "runs_csv", "problems_csv", "report_json"}
    assert result["summary"][0]["legend_extra"] == ""


def test_report_with_nothing_collected_plots_nothing(tmp_path, monkeypatch):
    sweep = tmp_path / "empty"
    sweep.mkdir()
    monkeypatch.setattr(rp.figures, "report_figures", lambda *a: pytest.fail("no summary to plot"))
    monkeypatch.setattr(rp.figures, "gap_figures", lambda *a: pytest.fail("no gap to plot"))
    result = report(_cfg([sweep], tmp_path / "out"))
    assert result["summary"] == [] and result["runs"] == []
    assert (tmp_path / "out" / "problems.csv").read_text() == "sweep,run_id,path,reason\n"


def test_validate_names_what_is_wrong_before_reading_anything(tmp_path, monkeypatch):
    sweep = tmp_path / "sw"
    sweep.mkdir()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("report", overrides=["sweep_dirs=[]", "out_dir=x"])
    cfg.out_dir = "~/rep"
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ValueError, match=r"^sweep_dirs: give at least one sweep directory \(or wandb.groups\)$"):
        rp._validate(cfg)
    cfg.sweep_dirs = str(sweep)  # a single directory as a string
    assert rp._validate(cfg) == ([sweep], tmp_path / "rep")
    cfg.sweep_dirs = ["~/sw"]
    assert rp._validate(cfg) == ([sweep], tmp_path / "rep")
    cfg.sweep_dirs = [str(sweep), str(tmp_path / "nope")]
    with pytest.raises(FileNotFoundError, match=r"^sweep_dirs: .*nope is not a directory$"):
        rp._validate(cfg)
    cfg.sweep_dirs = []
    cfg.wandb.groups = ["g"]
    assert rp._validate(cfg) == ([], tmp_path / "rep")
    cfg.group_by = ["model", "bogus", "seed"]
    with pytest.raises(ValueError, match=r"^group_by: unknown key\(s\) \['bogus'\]; choose from \['condition', "):
        rp._validate(cfg)
    cfg.group_by = ["model", "seed"]
    with pytest.raises(ValueError, match=r"^group_by: 'seed' cannot be a group key; seeds are what is averaged"):
        rp._validate(cfg)


def test_seeds_of_mixed_types_sort_numbers_first_in_missing_gaps_and_pairs():
    """A run without a seed (None, e.g. an old W&B run) sits after the numbered seeds, not a crash."""
    rows = [_row("treatment", 1, 2, 0.5), _row("treatment", 1, None, 0.6), _row("treatment", 1, 10, 0.4),
            _row("control", 1, 2, 0.1), _row("control", 1, None, 0.2), _row("control", 1, 3, 0.3),
            _row("control", 2, 1, 0.3), _row("treatment", 1, "extra", 0.9)]
    summary, missing = aggregate(rows, ["condition", "num_docs"])
    assert [s["seeds"] for s in summary] == [[2, 3, None], [1], [2, 10, None, "extra"]]
    assert [m["seed"] for m in missing] == [1, 10, "extra", 2, 3, 10, None, "extra", 1, 3]
    (g,) = rp.gaps(rows, ["condition", "num_docs"])
    assert (g["seeds"], g["unpaired"]) == ([2, None], [3, 10, "extra"])
    assert g["gap"] == pytest.approx(0.4)


def test_identity_columns_treat_a_run_without_settings_as_using_the_preset():
    rows = [_row(seed=0, cell_hash="h", settings={"optim.lr": 0.1}), _row(seed=1, cell_hash="h")]
    assert rp.identity_columns(rows, ["condition"]) == ["optim.lr"]
    assert [r["optim.lr"] for r in rows] == [0.1, "(default)"]


def test_version_table_keeps_the_values_of_one_library_in_its_column():
    """Two torch versions in one sweep: both under torch, not the second under the next library."""
    runs = [{"provenance": {"code": ["aaa"], "torch": ["2.1"]}}, {"provenance": {"code": ["aaa"], "torch": ["2.2"]}}]
    lines = rp.summary_markdown([], ["model"], "eval.x", [], [], runs).splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("|  | code |"))
    header, _, all_runs = lines[i:i + 3]
    assert header.count(" | ") == all_runs.replace("\\|", "").count(" | ")
    assert all_runs.startswith("| all runs | aaa | unrecorded | 2.1 \\| 2.2 | unrecorded | ")
    # values are listed in order (as text), whatever order the runs came in
    runs = [{"provenance": {"code": ["aaa"], "python": [9]}}, {"provenance": {"code": ["aaa"], "python": [2]}}]
    assert "| all runs | aaa | 2 \\| 9 | unrecorded |" in rp.summary_markdown([], ["model"], "e", [], [], runs)


def test_summary_markdown_of_runs_that_recorded_no_versions_and_of_bare_cells():
    bare = {"model": "m", "n": 1, "seeds": [0], "mean": 0.5, "stderr": None, "dimensions": {"care": 0.5}}
    md = rp.summary_markdown([bare], ["model"], "eval.x", [], [], [{"provenance": {}}, {}])
    assert "No run recorded its code and library versions." in md and "| all runs |" not in md
    assert "| m | 0.500 |  |" in md  # no share, no incomplete flag
    assert md.endswith("## Missing or failed runs\n\nNone: every run of every cell finished and was aggregated.\n")
    md = rp.summary_markdown([bare], ["model"], "eval.x", [], [], [{"provenance": {"code": ["aaa"]}}])
    assert "No run recorded" not in md and "| all runs | aaa | unrecorded |" in md


def test_report_without_require_done_aggregates_unfinished_runs(tmp_path):
    sweep = tmp_path / "sw"
    _write_run(sweep, "treatment", 10, 0, 0, 0.5)
    _write_run(sweep, "treatment", 10, 0, 1, 0.7, done=False)
    result = report(_cfg([sweep], tmp_path / "out", "plots.enabled=false", "require_done=false"))
    assert [s["n"] for s in result["summary"]] == [2] and result["problems"] == []


def test_report_combines_every_sweep_and_wandb_and_rewrites_an_existing_out_dir(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    for sweep, seed, lr, wd in ((a, 0, 0.1, 0.0), (b, 1, 0.2, 0.5)):
        run = RunDir(sweep / f"t-s{seed}")
        run.write_metrics({"run_id": f"t-s{seed}", "condition": "treatment", "seed": seed, "model": "m",
                           "settings": {"optim.lr": lr, "optim.wd": wd}, "eval": {"anima": {"overall_mean": 0.5}}})
        run.mark_done()
        RunDir(sweep / "u").write_metrics({"run_id": f"u-{sweep.name}"})
    wandb_row = {"model": "m", "condition": "treatment", "corpus": None, "num_docs": None, "instruct_samples": None,
                 "preserve": "none", "seed": 2, "score": 0.25, "sweep": "g", "run_id": "w", "source": "wandb:w",
                 "dimensions": {}, "provenance": {}, "settings": {"optim.lr": 0.3}, "cell_hash": None, "curve": []}
    monkeypatch.setattr(rp, "collect_wandb", lambda *args: ([wandb_row], [
        {"sweep": "g", "run_id": "x", "path": "wandb:x", "reason": "W&B run state is failed"}]))
    out = tmp_path / "deep" / "er" / "out"
    for _ in range(2):  # the second run writes over the first's files
        result = report(_cfg([a, b], out, "plots.enabled=false", "wandb.groups=[g]", "group_by=[model,condition]"))
    assert sorted(r["run_id"] for r in result["runs"]) == ["t-s0", "t-s1", "w"]
    assert sorted(p["run_id"] for p in result["problems"]) == ["u-a", "u-b", "x"]
    assert [s["legend_extra"] for s in result["summary"]] == [
        "optim.lr=0.1 optim.wd=0.0", "optim.lr=0.2 optim.wd=0.5", "optim.lr=0.3 optim.wd=(default)"]
    assert (out / "report.json").exists()


def test_report_pairs_conditions_across_the_config_column_and_reads_curves_with_the_configured_gap(tmp_path):
    """Treatment and control always differ in hash; the config column separates cells, never pairs."""
    sweep = tmp_path / "sw"
    for cond, seed, score, cell in [("treatment", 0, 0.5, "t0"), ("treatment", 1, 0.75, "t1"),
                                    ("control", 0, 0.25, "c"), ("control", 1, 0.5, "c")]:
        run = RunDir(sweep / f"{cond}-s{seed}")
        run.write_metrics({
            "run_id": f"{cond}-s{seed}", "condition": cond, "num_docs": 10, "instruct_samples": 4, "seed": seed,
            "model": "m", "cell_hash": cell, "settings": {"seed": seed},
            "train": {"instruct": {"global_steps": 2, "probe_curve": [{"step": 0, "margin": score},
                                                                      {"step": 2, "margin": 2 * score}]}},
            "eval": {"anima": {"overall_mean": score}}})
        run.mark_done()
    result = report(_cfg([sweep], tmp_path / "out", "plots.enabled=false", "gap.minuend=control",
                         "gap.subtrahend=treatment"))
    assert sorted(s["config"] for s in result["summary"]) == ["c", "t0", "t1"]
    assert [(g["seeds"], g["gap"]) for g in result["gaps"]] == [([0, 1], pytest.approx(-0.25))]
    assert (tmp_path / "out" / "gaps.csv").read_text().splitlines()[1] == \
        "m,10,4,none,2,0 1,0.375000,0.625000,-0.250000,0.000000"
    assert {(g["a"], g["b"]) for g in result["paired_gaps"]} >= {("treatment", "control")}
    (curve,) = result["curve_gaps"]
    assert [p["samples_seen"] for p in curve["points"]] == [0.0, 4.0]
    assert [p["gap"] for p in curve["points"]] == pytest.approx([-0.25, -0.5])


def test_report_plots_the_gap_even_without_probe_curves(tmp_path, monkeypatch):
    sweep = tmp_path / "sw"
    _write_run(sweep, "treatment", 10, 0, 0, 0.5)
    _write_run(sweep, "control", 10, 0, 0, 0.25)
    calls = []
    monkeypatch.setattr(rp.figures, "report_figures", lambda summary, out, cfg: {})
    monkeypatch.setattr(rp.figures, "gap_figures", lambda g, c, out, cfg: calls.append((len(g), c)) or {})
    report(_cfg([sweep], tmp_path / "out"))
    assert calls == [(1, [])]
