"""midtrain.stats against scipy and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from midtrain.stats import (
    bootstrap_interval,
    mean_stderr,
    paired_gap,
    slope,
    t_interval,
    verdict,
    verdict_kind,
)


def test_mean_stderr_by_hand_and_against_scipy():
    v = [0.1, 0.4, 0.25]
    m = (0.1 + 0.4 + 0.25) / 3
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / 2)
    out = mean_stderr(v)
    assert out["mean"] == pytest.approx(m) and out["n"] == 3
    assert out["stderr"] == pytest.approx(sd / math.sqrt(3))
    assert out["stderr"] == pytest.approx(float(sps.sem(v)))
    assert mean_stderr([0.7]) == {"mean": 0.7, "stderr": None, "n": 1}
    with pytest.raises(ValueError, match="at least one"):
        mean_stderr([])
    with pytest.raises(ValueError, match="non-finite"):
        mean_stderr([1.0, float("nan")])


def test_t_interval_matches_scipy():
    v = [0.031, 0.044, 0.036, 0.029]
    lo, hi = t_interval(v)
    ref = sps.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=sps.sem(v))
    assert (lo, hi) == pytest.approx(ref)
    # By hand for n = 3: half-width = t_{0.975, 2} * s / sqrt(3), t_{0.975, 2} = 4.302653
    w = [1.0, 2.0, 4.0]
    half = 4.302653 * float(np.std(w, ddof=1)) / math.sqrt(3)
    assert t_interval(w) == pytest.approx((7 / 3 - half, 7 / 3 + half), rel=1e-6)
    assert t_interval([0.5]) is None


def test_bootstrap_interval_is_scipy_bca_with_a_fixed_seed():
    rng = np.random.default_rng(3)
    x = rng.normal(0.05, 0.1, size=40)
    lo, hi = bootstrap_interval(x)
    ref = sps.bootstrap((x,), np.mean, confidence_level=0.95, n_resamples=9999, method="BCa",
                        random_state=np.random.default_rng(0)).confidence_interval
    assert (lo, hi) == pytest.approx((ref.low, ref.high))
    assert lo < x.mean() < hi
    assert bootstrap_interval(x) == (lo, hi)  # deterministic
    assert bootstrap_interval([0.2, 0.2, 0.2]) == (0.2, 0.2)  # degenerate: no spread, no interval width
    assert bootstrap_interval([0.2]) is None


def _margins(values: dict[int, list[float]]) -> dict[int, dict[str, float]]:
    return {s: {f"p{i}": v for i, v in enumerate(vals)} for s, vals in values.items()}


def test_paired_gap_pairs_seeds_and_probe_pairs():
    a = _margins({0: [0.3, 0.1, 0.5, 0.2], 1: [0.4, 0.0, 0.6, 0.1], 2: [0.2, 0.2, 0.4, 0.3]})
    b = _margins({0: [0.1, 0.1, 0.2, 0.0], 1: [0.2, 0.1, 0.3, 0.0], 2: [0.1, 0.0, 0.2, 0.1]})
    d = np.array([[a[s][k] - b[s][k] for k in sorted(a[s])] for s in (0, 1, 2)])
    g = paired_gap(a, b)
    assert g["n_seeds"] == 3 and g["n_pairs"] == 4 and g["seeds"] == [0, 1, 2]
    assert g["mean"] == pytest.approx(d.mean())
    assert g["by_seed"] == pytest.approx({"0": d[0].mean(), "1": d[1].mean(), "2": d[2].mean()})
    assert g["seed_stderr"] == pytest.approx(float(sps.sem(d.mean(axis=1))))
    assert g["seeds_interval"] == pytest.approx(list(t_interval(d.mean(axis=1))))
    assert g["pairs_interval"] == pytest.approx(list(bootstrap_interval(d.mean(axis=0))))


def test_paired_gap_uses_only_what_both_sides_share():
    a = _margins({0: [1.0, 2.0, 3.0], 1: [1.0, 2.0, 3.0], 5: [9.0, 9.0, 9.0]})
    b = _margins({0: [0.0, 0.0], 1: [0.5, 0.5]})  # pairs p0, p1 only; no seed 5
    g = paired_gap(a, b)
    assert g["seeds"] == [0, 1] and g["n_pairs"] == 2
    assert g["mean"] == pytest.approx(((1 + 2) + (0.5 + 1.5)) / 4)
    with pytest.raises(ValueError, match="no seed in common"):
        paired_gap(a, _margins({7: [0.0]}))
    with pytest.raises(ValueError, match="no probe pair in common"):
        paired_gap({0: {"x": 1.0}}, {0: {"y": 1.0}})


def test_a_single_seed_has_no_seed_interval():
    g = paired_gap(_margins({0: [0.3, 0.2, 0.4]}), _margins({0: [0.1, 0.1, 0.1]}))
    assert g["seeds_interval"] is None and g["pairs_interval"] is not None
    assert verdict_kind(g) == "insufficient"
    assert "too few seeds or pairs" in verdict(g, "treatment", "control", "After midtraining")


@pytest.mark.parametrize("pairs_iv,seeds_iv,kind", [
    ([0.01, 0.05], [0.005, 0.06], "above"),
    ([-0.05, -0.01], [-0.06, -0.002], "below"),
    ([-0.01, 0.03], [-0.02, 0.04], "none"),
    ([0.01, 0.05], [-0.01, 0.07], "mixed"),
    ([-0.01, 0.05], [0.01, 0.04], "mixed"),
])
def test_verdicts_need_both_intervals(pairs_iv, seeds_iv, kind):
    g = {"mean": 0.02, "pairs_interval": pairs_iv, "seeds_interval": seeds_iv, "n_seeds": 3, "n_pairs": 65,
         "confidence": 0.95}
    assert verdict_kind(g) == kind
    text = verdict(g, "treatment", "control", "After midtraining")
    assert "+0.020 nats/token" in text and "65 probe pairs" in text and "3 seeds" in text
    expected = {"above": "treatment is above control", "below": "treatment is below control",
                "none": "no detectable difference between treatment and control",
                "mixed": "not established"}[kind]
    assert expected in text


def test_slope_is_least_squares():
    xs, ys = [0, 16, 48], [0.10, 0.07, 0.01]
    assert slope(xs, ys) == pytest.approx(np.polyfit(xs, ys, 1)[0])
    with pytest.raises(ValueError, match="two distinct"):
        slope([16, 16], [0.1, 0.2])
