"""metrics.json summaries of Inspect logs, on hand-built logs with known answers."""

from __future__ import annotations

import math

import pytest
from inspect_ai.log import EvalConfig, EvalDataset, EvalLog, EvalMetric, EvalResults, EvalSample, EvalScore, EvalSpec
from inspect_ai.scorer import Score

from midtrain.evals.results import summarize_graded, summarize_metrics

NAN = float("nan")


def _sample(qid: str, epoch: int, value, attempted: int = 2, unparseable: int = 0, error=None) -> EvalSample:
    score = Score(value=value, metadata={"grades_attempted": attempted, "grades_unparseable": unparseable})
    return EvalSample(id=qid, epoch=epoch, input="q", target="t", scores={"anima_scorer": score}, error=error)


def _log(samples: list[EvalSample], epochs: int = 2, status: str = "success", results=None) -> EvalLog:
    spec = EvalSpec(created="2026-01-01T00:00:00", task="anima", dataset=EvalDataset(), model="mockllm/model",
                    config=EvalConfig(epochs=epochs))
    return EvalLog(eval=spec, samples=samples, status=status, results=results)


def test_an_epoch_without_any_parseable_grade_is_left_out_not_scored_zero():
    log = _log([
        _sample("q1", 1, {"overall": 1.0, "Moral Consideration": 1.0}),
        _sample("q1", 2, NAN, unparseable=2),  # inspect_evals' Score.unscored(): no grade parsed
        _sample("q2", 1, {"overall": 0.5, "Moral Consideration": 0.5, "Harm Minimization": 0.5}),
        _sample("q2", 2, {"overall": 0.0, "Moral Consideration": 0.0, "Harm Minimization": 0.0}),
    ])
    out = summarize_graded(log, max_missing_share=0.3)
    # q1 = 1.0 (its one graded epoch), q2 = mean(0.5, 0.0) = 0.25.
    assert out["overall_mean"] == pytest.approx(0.625)
    assert out["stderr"] == pytest.approx(math.sqrt(((1 - 0.625) ** 2 + (0.25 - 0.625) ** 2) / 1 / 2))
    assert out["by_dimension"] == pytest.approx({"Harm Minimization": 0.25, "Moral Consideration": 0.625})
    assert list(out["by_dimension"]) == ["Harm Minimization", "Moral Consideration"]
    assert out["samples"] == out["samples_total"] == 2
    assert out["samples_failed"] == out["samples_unscored"] == 0
    assert out["epochs"] == 2
    assert (out["grades_attempted"], out["grades_unparseable"]) == (8, 2)
    assert out["missing_share"] == pytest.approx(0.25)
    assert out["complete"] is True and out["status"] == "success"
    assert summarize_graded(log)["complete"] is False  # 25% of grades missing > the default 10%


def test_questions_never_graded_are_unscored_and_errored_ones_failed():
    log = _log([
        _sample("q1", 1, {"overall": 0.8}),
        _sample("q3", 1, {"overall": 0.2}, error={"message": "boom", "traceback": "", "traceback_ansi": ""}),
        _sample("q2", 1, NAN, unparseable=2),  # after the failed one: every sample is read
    ], epochs=1)
    out = summarize_graded(log, max_missing_share=1.0)
    assert out["overall_mean"] == pytest.approx(0.8)
    assert out["stderr"] is None  # one question: undefined, not 0
    assert out["samples"] == 1 and out["samples_total"] == 3
    assert out["samples_failed"] == 1 and out["samples_unscored"] == 1
    assert out["missing_share"] == pytest.approx(2 / 3)
    assert out["complete"] is True
    assert summarize_graded(log, max_missing_share=0.5)["complete"] is False


def test_nothing_graded_reports_no_mean_at_all():
    log = _log([_sample("q1", 1, NAN, unparseable=2), _sample("q2", 1, NAN, unparseable=2)], epochs=1)
    out = summarize_graded(log, max_missing_share=1.0)
    assert "overall_mean" not in out and "stderr" not in out and "by_dimension" not in out
    assert out["samples"] == 0 and out["samples_unscored"] == 2 and out["samples_failed"] == 0
    assert out["missing_share"] == 1.0 and out["complete"] is False


def test_a_failed_log_is_never_complete():
    out = summarize_graded(_log([_sample("q1", 1, {"overall": 0.5})], epochs=1, status="error"), 1.0)
    assert out["overall_mean"] == 0.5 and out["complete"] is False and out["status"] == "error"


def test_scorers_without_grade_counts_report_none():
    score = Score(value={"overall": 0.4})
    log = _log([EvalSample(id=1, epoch=1, input="q", target="t", scores={"s": score})], epochs=1)
    out = summarize_graded(log, max_missing_share=0.0)
    assert "grades_attempted" not in out and "grades_unparseable" not in out
    assert out["missing_share"] == 0.0 and out["complete"] is True


def test_a_scorer_that_counts_attempts_but_not_failures_has_none_unparseable():
    score = Score(value={"overall": 0.4}, metadata={"grades_attempted": 3})
    log = _log([EvalSample(id=1, epoch=1, input="q", target="t", scores={"s": score})], epochs=1)
    out = summarize_graded(log, max_missing_share=0.0)
    assert (out["grades_attempted"], out["grades_unparseable"]) == (3, 0)
    assert out["missing_share"] == 0.0 and out["complete"] is True


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_missing_share_must_be_a_share(share):
    with pytest.raises(ValueError, match="max_missing_share must be in"):
        summarize_graded(_log([]), share)


def _results(*scores: tuple[str, dict[str, float]], done: int = 5, total: int = 6) -> EvalResults:
    return EvalResults(
        total_samples=total, completed_samples=done,
        scores=[EvalScore(name=n, scorer=n, metrics={k: EvalMetric(name=k, value=v) for k, v in m.items()})
                for n, m in scores],
    )


def test_headline_metrics_of_one_scorer_keep_their_names_and_drop_nan():
    log = _log([], epochs=1, results=_results(("choice", {"accuracy": 0.75, "stderr": NAN})))
    out = summarize_metrics(log)
    assert out == {"metrics": {"accuracy": 0.75}, "samples": 5, "samples_total": 6,
                   "status": "success", "complete": True}


def test_headline_metrics_of_several_scorers_are_prefixed():
    log = _log([], epochs=1, results=_results(("a", {"accuracy": 0.5}), ("b", {"accuracy": 0.25})))
    assert summarize_metrics(log)["metrics"] == {"a/accuracy": 0.5, "b/accuracy": 0.25}


def test_headline_metrics_without_results_are_incomplete():
    out = summarize_metrics(_log([], epochs=1, status="error"))
    assert out == {"metrics": {}, "samples": 0, "samples_total": 0, "status": "error", "complete": False}
    only_nan = _log([], epochs=1, results=_results(("a", {"accuracy": NAN})))
    assert summarize_metrics(only_nan)["complete"] is False


def test_grade_counts_per_dimension_are_totalled_over_samples_and_epochs():
    def sample(qid, epoch, by_dim):
        score = Score(value={"overall": 0.5}, metadata={"grades_attempted": 4, "grades_unparseable": 1,
                                                        "grades_by_dimension": by_dim})
        return EvalSample(id=qid, epoch=epoch, input="q", target="t", scores={"anima_scorer": score})

    log = _log([
        sample("q1", 1, {"B": {"attempted": 2, "unparseable": 1}, "A": {"attempted": 2}}),
        sample("q1", 2, {"B": {"attempted": 2, "unparseable": 0}, "A": {"attempted": 2, "unparseable": 0}}),
        sample("q2", 1, {"A": {"attempted": 3, "unparseable": 2}}),
    ])
    out = summarize_graded(log, max_missing_share=1.0)
    assert out["grades_by_dimension"] == {"A": {"attempted": 7, "unparseable": 2}, "B": {"attempted": 4, "unparseable": 1}}
    assert list(out["grades_by_dimension"]) == ["A", "B"]
    assert "grades_by_dimension" not in summarize_graded(_log([_sample("q", 1, {"overall": 1.0})]), 1.0)


# ---------------------------------------------------------------------------
# Edge cases of the graded summary: samples without scores, partial per-dimension counts,
# an unset epoch count, an empty log and a scorer that attempted no grades.


def test_a_sample_without_any_score_counts_as_failed():
    log = _log([
        _sample("q1", 1, {"overall": 0.6}),
        EvalSample(id="q2", epoch=1, input="q", target="t", scores=None),
        EvalSample(id="q3", epoch=1, input="q", target="t", scores={}),
    ], epochs=1)
    out = summarize_graded(log, max_missing_share=1.0)
    assert out["overall_mean"] == pytest.approx(0.6)
    assert (out["samples"], out["samples_total"], out["samples_failed"], out["samples_unscored"]) == (1, 3, 2, 0)
    assert out["missing_share"] == pytest.approx(2 / 3)


def test_a_dimension_count_without_attempts_adds_none():
    score = Score(value={"overall": 0.5}, metadata={"grades_attempted": 2, "grades_unparseable": 1,
                                                    "grades_by_dimension": {"A": {"unparseable": 1}, "B": {"attempted": 2}}})
    log = _log([EvalSample(id="q", epoch=1, input="q", target="t", scores={"anima_scorer": score})], epochs=1)
    out = summarize_graded(log, max_missing_share=1.0)
    assert out["grades_by_dimension"] == {"A": {"attempted": 0, "unparseable": 1}, "B": {"attempted": 2, "unparseable": 0}}


def test_an_unset_epoch_count_means_one_epoch():
    out = summarize_graded(_log([_sample("q1", 1, {"overall": 0.5})], epochs=None), max_missing_share=1.0)
    assert out["epochs"] == 1


def test_an_empty_log_is_all_missing_and_incomplete():
    out = summarize_graded(_log([], epochs=1), max_missing_share=1.0)
    assert out == {"samples": 0, "samples_total": 0, "samples_failed": 0, "samples_unscored": 0, "epochs": 1,
                   "missing_share": 1.0, "complete": False, "status": "success"}


def test_a_scorer_that_attempted_no_grades_is_all_missing():
    log = _log([_sample("q1", 1, {"overall": 0.5}, attempted=0)], epochs=1)
    out = summarize_graded(log, max_missing_share=0.5)
    assert (out["grades_attempted"], out["grades_unparseable"]) == (0, 0)
    assert out["missing_share"] == 1.0
    assert out["complete"] is False
