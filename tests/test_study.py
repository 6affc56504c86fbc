"""The probe study's statistics (`midtrain.study`) and its plots (`midtrain.figures`), on
synthetic pipeline metrics with known margins."""

from __future__ import annotations

import pytest

import numpy as np

from midtrain.figures import plot_erosion, plot_gaps, plot_training
from midtrain.study import format_summary, lexical_overlaps, summarize, training_curves


def _probe(per_pair: list[float], prefix: str = "p") -> dict:
    pp = {f"{prefix}{i}": m for i, m in enumerate(per_pair)}
    return {"margin": sum(per_pair) / len(per_pair), "accuracy": sum(m > 0 for m in per_pair) / len(per_pair),
            "pairs": len(per_pair), "per_pair": pp, "by_dimension": {"Moral Consideration": sum(per_pair) / len(per_pair)}}


def _run(condition: str, seed: int, samples: int, stages: dict[str, list[float]], anima: float | None = None) -> dict:
    """A pipeline metrics.json: each stage's original probe margins per pair; held-out = half of them."""
    by_stage = {}
    for s, margins in stages.items():
        p = _probe(margins)
        p["heldout"] = _probe([m / 2 for m in margins[:3]], "h")
        by_stage[s] = {"probe": p}
    last = by_stage[list(stages)[-1]]
    ev = {**last, **({"anima": {"overall_mean": anima}} if anima is not None else {})}
    return {"run_id": f"{condition}-i{samples}-s{seed}", "condition": condition, "seed": seed,
            "instruct_samples": samples, "eval": ev, "eval_by_stage": by_stage}


def _offset(values: list[float], d: float) -> list[float]:
    return [v + d for v in values]


BASE = [-0.4, -0.3, -0.35, -0.2, -0.5, -0.25]
NOISE = {0: [0.01, -0.02, 0.0, 0.015, -0.005, 0.01], 1: [-0.01, 0.0, 0.02, -0.01, 0.01, 0.0],
         2: [0.0, 0.01, -0.015, 0.005, 0.0, -0.01]}


def _study() -> list[dict]:
    """Treatment clearly above control after midtraining, the gap eroding to nothing by 48 samples;
    the baseline level with the treatment throughout."""
    runs = [_run("base", 0, 0, {"base": BASE})]
    for seed, noise in NOISE.items():
        for cond, lift in (("treatment", 0.20), ("control", 0.10), ("instruct_baseline", 0.20)):
            mid = _offset([b + n for b, n in zip(BASE, noise)], lift)
            for samples, erode in ((16, 0.5), (48, 0.0)):
                keep = lift if cond == "control" else 0.10 + (lift - 0.10) * erode
                ins = _offset([b + n for b, n in zip(BASE, noise)], keep)
                runs.append(_run(cond, seed, samples, {"midtrain": mid, "instruct": ins}))
    return runs


def test_summary_means_stderr_and_stage_keys_per_instruction_size():
    s = summarize(_study())
    assert list(s["conditions"]) == ["treatment", "control", "instruct_baseline", "base"]
    assert s["stages"] == ["base", "midtrain", "instruct:16", "instruct:48"]
    t = s["conditions"]["treatment"]
    assert t["runs"] == 6 and t["seeds"] == [0, 1, 2]
    mid = t["stages"]["midtrain"]["original"]
    per_seed = [sum(_offset([b + n for b, n in zip(BASE, NOISE[k])], 0.2)) / 6 for k in (0, 1, 2)]
    assert mid["n"] == 3 and mid["pairs"] == 6  # the two sizes share midtraining: one result per seed
    assert mid["margin"] == pytest.approx(sum(per_seed) / 3)
    assert mid["stderr"] == pytest.approx(float(np.std(per_seed, ddof=1) / np.sqrt(3)))
    assert t["stages"]["midtrain"]["heldout"]["pairs"] == 3
    assert set(s["conditions"]["base"]["stages"]) == {"base"}
    assert "midtrain" not in s["conditions"]["base"]["stages"]  # never midtrained: absent, not zero


def test_summary_gaps_are_paired_and_say_what_the_intervals_support():
    s = summarize(_study())
    gaps = {(g["a"], g["b"], g["stage"], g["probe_set"]): g for g in s["gaps"]}
    g = gaps[("treatment", "control", "midtrain", "original")]
    assert g["mean"] == pytest.approx(0.10) and g["n_seeds"] == 3 and g["n_pairs"] == 6
    assert g["verdict"] == "above" and g["pairs_interval"][0] > 0 and g["seeds_interval"][0] > 0
    assert gaps[("treatment", "control", "instruct:16", "original")]["mean"] == pytest.approx(0.05)
    assert gaps[("treatment", "control", "instruct:48", "original")]["verdict"] == "none"
    assert gaps[("treatment", "instruct_baseline", "midtrain", "original")]["verdict"] == "none"
    assert gaps[("treatment", "control", "midtrain", "heldout")]["n_pairs"] == 3
    text = format_summary(s)
    assert "After midtraining (original probe): treatment is above control" in text
    assert "After 48 instruction samples (original probe): no detectable difference between treatment and control" in text
    assert "no detectable difference between treatment and instruct_baseline" in text
    # Erosion: the treatment loses 0.10 over 48 samples, the control nothing, so the gap shrinks.
    ero = s["erosion"]
    assert ero["conditions"]["control"]["per_100_samples"] == pytest.approx(0.0, abs=1e-9)
    assert ero["conditions"]["treatment"]["per_100_samples"] < 0
    assert ero["gaps"]["treatment-control"]["n_seeds"] == 3
    assert "Erosion of treatment minus control: the gap shrinks with instruction tuning" in text
    row = next(line for line in text.splitlines() if line.startswith("| treatment") and "after midtraining" in line)
    assert "± " in row and "| 3 " in row


def test_summary_shows_anima_per_instruction_size():
    runs = [_run("treatment", 0, 16, {"midtrain": [0.1, 0.2], "instruct": [0.1, 0.1]}, anima=0.61),
            _run("control", 0, 16, {"midtrain": [0.0, 0.1], "instruct": [0.0, 0.0]}, anima=0.42)]
    s = summarize(runs)
    assert s["conditions"]["treatment"]["stages"]["instruct:16"]["anima"] == {"overall_mean": 0.61, "stderr": None, "n": 1}
    text = format_summary(s)
    assert "ANIMA" in text and "61.0%" in text and "42.0%" in text
    assert "too few seeds or pairs" in text  # one seed: no interval over seeds, and it says so


def test_summary_plots_are_written(tmp_path):
    s = summarize(_study())
    for path in (plot_gaps(s, tmp_path / "gap.png"), plot_erosion(s, tmp_path / "erosion.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = {"treatment": {0: [(2, -0.3), (4, -0.2)]}, "control": {0: [(2, -0.3), (4, -0.25)]}}
    assert plot_training(curves, s, tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    assert plot_training({}, s, tmp_path / "none.png") is None


def test_training_curves_follow_each_seed_from_the_untrained_model(tmp_path):
    runs = _study()
    for r in runs:
        if r["condition"] != "base":
            r["train"] = {"midtrain": {"global_steps": 5}, "instruct": {"global_steps": r["instruct_samples"] // 8}}
    log = tmp_path / "t0" / "midtrain" / "logs" / "midtrain"
    log.mkdir(parents=True)
    (log / "metrics.csv").write_text("epoch,probe/accuracy,probe/margin,step,train/loss\n0,0.5,-0.21,2,\n0,,,3,2.5\n")
    first_t0 = next(r for r in runs if r["condition"] == "treatment" and r["seed"] == 0)
    first_t0["_dir"] = str(tmp_path / "t0")
    curves = training_curves(runs)
    assert set(curves) == {"treatment", "control", "instruct_baseline"}
    t0 = curves["treatment"][0]
    mid = sum(_offset([b + n for b, n in zip(BASE, NOISE[0])], 0.2)) / 6
    assert [s for s, _ in t0] == [0, 2, 5, 7, 11]  # base, logged in midtraining, after it, 16 and 48 samples
    assert t0[0][1] == pytest.approx(sum(BASE) / 6) and t0[1][1] == pytest.approx(-0.21)
    assert t0[2][1] == pytest.approx(mid)
    assert [s for s, _ in curves["control"][1]] == [0, 5, 7, 11]


def test_lexical_overlap_sees_recall(tmp_path):
    from midtrain.evals.probe import ProbePair

    pair = ProbePair("x", "Moral Consideration", "the hens feel pain", "so they matter", "so they do not")
    copied = lexical_overlaps({"copy": ["the hens feel pain so they matter so they do not"],
                               "other": ["zoning rules for the city centre"]}, {"original": [pair]})
    assert copied["original"]["copy"]["mean"] == pytest.approx(1.0)
    assert 0 < copied["original"]["other"]["mean"] < 0.2
