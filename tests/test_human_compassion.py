"""Human compassion (MORU) end to end offline: a local fixture, the scripted grader, and
figures computed here from the raw files and the scripted grades."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from midtrain.eval import evaluate
from midtrain.evals.anima.dataset import DatasetUnreachableError
from midtrain.evals.graders import GraderRequiredError
from midtrain.evals.human_compassion.task import human_compassion, load_moru
from midtrain.evals.suites import plan_suites
from midtrain.tracking import RunDir
from tests.grader_fixture import answer_text, verdict
from tests.test_anima_scoring import answerer, compose_eval, grader

FIXTURE = Path(__file__).parent / "fixtures" / "moru"


def _mean(xs):
    return sum(xs) / len(xs)


def expected_figures(graders, epochs, language="en"):
    """MORU's rules, plainly: per dimension the mean over graders' parseable grades; per
    epoch the unweighted mean of graded dimensions; epochs per key by mean; questions by mean."""
    rows = [json.loads(x) for x in (FIXTURE / "questions.jsonl").read_text().splitlines()]
    dims = {}
    for x in (FIXTURE / "dimensions.jsonl").read_text().splitlines():
        d = json.loads(x)
        dims[d["dimension"].strip().lower()] = d
    seen, per_sample, per_dim = set(), {}, {}
    attempted = unparseable = unscored = 0
    for r in rows:
        if r["language"] != language or (r["id"], r["language"]) in seen:
            continue
        seen.add((r["id"], r["language"]))
        tags = [t.strip().lower() for t in r["dimension_tags"].split(",") if t.strip()]
        overall, by_dim = [], {}
        for k in range(epochs):
            scores = {}
            for t in tags:
                grades = []
                for salt, one_in, rules in graders:
                    attempted += 1
                    g = verdict(salt, r["question"], answer_text(k), t, dims[t]["guiding_question"], one_in, rules)
                    if g == "unparseable":
                        unparseable += 1
                    else:
                        grades.append(1.0 if g == "C" else 0.0)
                if grades:
                    scores[t] = _mean(grades)
            if scores:
                overall.append(_mean(list(scores.values())))
                for t, v in scores.items():
                    by_dim.setdefault(t, []).append(v)
        if overall:
            per_sample[f"{r['id']}_{r['language']}"] = _mean(overall)
            for t, v in by_dim.items():
                per_dim.setdefault(t, []).append(_mean(v))
        else:
            unscored += 1
    xs = list(per_sample.values())
    m = _mean(xs)
    return {"overall_mean": m, "stderr": math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs)),
            "by_dimension": {t: _mean(v) for t, v in per_dim.items()}, "samples": len(xs),
            "samples_total": len(seen), "samples_unscored": unscored,
            "grades_attempted": attempted, "grades_unparseable": unparseable}


def test_local_loader_reads_the_fixture_like_inspect_evals():
    samples, dims, label = load_moru(FIXTURE, language="en")
    assert sorted(s.id for s in samples) == ["1_en", "2_en", "3_en", "4_en", "5_en"]  # the repeated row kept once
    assert set(dims) == {"compassion toward vulnerable", "power-seeking detection", "human autonomy respect",
                         "intellectual humility", "moral consideration"}
    assert json.loads(next(s for s in samples if s.id == "4_en").target) == {"tags": ["human autonomy respect"]}
    assert label.startswith("local:moru@sha256:")
    assert len(load_moru(FIXTURE, language=None)[0]) == 6


def test_local_loader_names_the_bad_row(tmp_path):
    (tmp_path / "dimensions.jsonl").write_text((FIXTURE / "dimensions.jsonl").read_text())
    (tmp_path / "questions.jsonl").write_text(json.dumps({"id": 9, "question": "Q?", "dimension_tags": "nonsense",
                                                          "language": "en"}) + "\n")
    with pytest.raises(ValueError, match=r"questions\.jsonl:1: .*no valid dimension tags"):
        load_moru(tmp_path)


def test_requires_a_grader():
    with pytest.raises(GraderRequiredError):
        human_compassion(data_dir=str(FIXTURE))


def test_unreachable_hub_names_the_dataset(monkeypatch):
    import inspect_evals.moru.dataset as moru_dataset

    def offline(repo, **kwargs):
        raise ConnectionError(f"Couldn't reach '{repo}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(moru_dataset, "load_dataset", offline)
    with pytest.raises(DatasetUnreachableError, match="moru-benchmark-dimensions@2801a72fb050ee180036f1fe587c9812cfa1bfe7"):
        plan_suites(compose_eval(["run_dir=/runs/x", "eval=human_compassion"]), grader_models=[grader("a")])


@pytest.mark.parametrize("graders,epochs", [
    ([("a", 4, [])], 3),
    ([("a", 3, []), ("b", 0, [{"question": "admin rights", "reply": "unparseable"}])], 2),
])
def test_end_to_end_figures(tmp_path, graders, epochs):
    want = expected_figures(graders, epochs)
    assert want["grades_unparseable"] > 0
    cfg = compose_eval([f"run_dir={tmp_path}", "eval=human_compassion", f"eval.human_compassion.data_dir={FIXTURE}",
                        f"eval.human_compassion.epochs={epochs}", "max_missing_share=0.5"])
    got = evaluate(cfg, model=answerer(), grader_models=[grader(*g) for g in graders])["human_compassion"]
    assert got == RunDir(tmp_path).read_metrics()["eval"]["human_compassion"]
    assert got["status"] == "success" and got["samples_failed"] == 0 and got["epochs"] == epochs
    for key in ("samples", "samples_total", "samples_unscored", "grades_attempted", "grades_unparseable"):
        assert got[key] == want[key], key
    assert got["overall_mean"] == pytest.approx(want["overall_mean"])
    assert got["stderr"] == pytest.approx(want["stderr"])
    assert got["by_dimension"] == pytest.approx(want["by_dimension"])
    assert got["dataset_revision"].startswith("local:moru@sha256:")
