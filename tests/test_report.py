"""midtrain-report over a fixture sweep with a corrupt, an unfinished, an empty and a never-started run."""

from __future__ import annotations

import csv
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
