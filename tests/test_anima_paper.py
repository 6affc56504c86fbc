"""eval=anima_paper: the paper's 26 ahb-original questions, 30 epochs at temperature 1, and a
required grader; loaded offline from a project-written fixture shaped like ahb-original."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from midtrain.evals.anima.dataset import DatasetUnreachableError, TagMap, load_anima
from midtrain.evals.graders import GraderRequiredError
from midtrain.evals.suites import plan_suites
from midtrain.tracking import RunDir
from tests.test_anima_scoring import answerer, assert_figures, compose_eval, expected_figures, grader

FIXTURE = Path(__file__).parent / "fixtures" / "ahb_original"
REPO_ROOT = Path(__file__).resolve().parents[1]


def paper_cfg(*overrides):
    return compose_eval(["run_dir=/runs/x", "eval=anima_paper", f"eval.anima.data_dir={FIXTURE}", *overrides])


def test_preset_is_the_papers_protocol():
    a = compose_eval(["run_dir=/runs/x", "eval=anima_paper"]).eval.anima
    assert a.repo_id == "CompassioninMachineLearning/ahb-original"
    assert a.revision == "1f74bed03b3214e5ad4fbddf28f763d3ea7dc373"
    assert a.dimensions_repo_id == "CompassioninMachineLearning/anima"
    assert a.dimensions_revision == "c658f00e80529c8b2d81bb89d95df6af4d4b5bf6"
    assert a.epochs == 30 and a.temperature == 1.0 and a.expect_questions == 26
    current = compose_eval(["run_dir=/runs/x", "eval=anima"]).eval.anima
    assert current.epochs == 5 and current.repo_id == "CompassioninMachineLearning/anima"
    assert current.temperature is None


def test_preset_never_defaults_the_grader():
    cfg = paper_cfg()
    assert list(cfg.grader_models) == []
    with pytest.raises(GraderRequiredError, match="eval=anima needs an explicit grader"):
        plan_suites(cfg)


def test_fixture_loads_all_26_questions_with_the_tag_fixes():
    [p] = plan_suites(paper_cfg(), grader_models=[grader("a")])
    samples = list(p.task.dataset)
    assert len(samples) == 26 and p.extra["questions"] == 26
    tags = [t for s in samples for t in json.loads(s.target)["tags"]]
    assert tags.count("Trade-Off Transparency") == 17
    assert "Trade-off Transparency" not in tags and "Perspective-Taking" not in tags
    assert p.task.epochs == 30
    assert p.task.config.temperature == 1.0
    assert "dimensions=" not in p.extra["dataset_revision"]  # both files from the one local dir


def test_without_the_tag_fixes_loading_fails_loudly_instead_of_dropping_questions():
    with pytest.raises(ValueError, match=r"questions\.jsonl:1: unknown dimension tag\(s\) \['Trade-off Transparency'\]"):
        load_anima(FIXTURE, subset="all")
    with pytest.raises(ValueError, match=r"Perspective-Taking"):
        load_anima(FIXTURE, tag_map=TagMap({"Trade-off Transparency": "Trade-Off Transparency"}))
    with pytest.raises(ValueError, match="expected 25 ANIMA questions .* loaded 26"):
        load_anima(FIXTURE, tag_map=TagMap({"Trade-off Transparency": "Trade-Off Transparency"},
                                           frozenset({"Perspective-Taking"})), expect_questions=25)


def test_hub_path_reads_questions_and_dimensions_at_their_own_pins(monkeypatch):
    import inspect_evals.utils.huggingface as hf

    questions = [json.loads(x) for x in (FIXTURE / "questions.jsonl").read_text().splitlines()]
    dimensions = [json.loads(x) for x in (FIXTURE / "dimensions.jsonl").read_text().splitlines()]
    calls = []

    def fake_load_dataset(repo, name=None, **kwargs):
        calls.append((repo, name, kwargs))
        return list(dimensions) if name == "dimensions" else list(questions)

    monkeypatch.setattr(hf, "load_dataset", fake_load_dataset)
    cfg = compose_eval(["run_dir=/runs/x", "eval=anima_paper"])
    [p] = plan_suites(cfg, grader_models=[grader("a")])
    assert len(p.task.dataset) == 26
    assert ("CompassioninMachineLearning/ahb-original", "questions",
            {"split": "train", "revision": "1f74bed03b3214e5ad4fbddf28f763d3ea7dc373"}) in calls
    assert ("CompassioninMachineLearning/anima", "dimensions",
            {"split": "train", "revision": "c658f00e80529c8b2d81bb89d95df6af4d4b5bf6"}) in calls
    assert p.extra["dataset_revision"] == (
        "CompassioninMachineLearning/ahb-original@1f74bed03b3214e5ad4fbddf28f763d3ea7dc373 "
        "dimensions=CompassioninMachineLearning/anima@c658f00e80529c8b2d81bb89d95df6af4d4b5bf6")


def test_unreachable_hub_names_the_dataset(monkeypatch):
    import inspect_evals.utils.huggingface as hf

    def offline(repo, name=None, **kwargs):
        raise ConnectionError(f"Couldn't reach '{repo}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(hf, "load_dataset", offline)
    with pytest.raises(DatasetUnreachableError,
                       match=r"CompassioninMachineLearning/anima@c658f00e80529c8b2d81bb89d95df6af4d4b5bf6.*data_dir"):
        plan_suites(compose_eval(["run_dir=/runs/x", "eval=anima_paper"]), grader_models=[grader("a")])


def test_paper_preset_scores_the_fixture_offline(tmp_path):
    """In process, two epochs: figures equal the independent computation."""
    from midtrain.eval import evaluate

    graders = [("a", 10, [])]
    want = expected_figures(FIXTURE, graders, epochs=1, renames={"Trade-off Transparency": "Trade-Off Transparency"},
                            drops={"Perspective-Taking"})
    cfg = compose_eval([f"run_dir={tmp_path}", "eval=anima_paper", f"eval.anima.data_dir={FIXTURE}",
                        "eval.anima.epochs=1", "max_missing_share=0.5"])
    got = evaluate(cfg, model=answerer(), grader_models=[grader(*g) for g in graders])["anima"]
    assert got == RunDir(tmp_path).read_metrics()["eval"]["anima"]
    assert got["samples_total"] == 26 and got["epochs"] == 1
    assert_figures(got, want)


@pytest.mark.slow  # a fresh interpreter and Hydra entry point: about a minute on 2 shared cores
def test_midtrain_eval_command_line_with_the_fixture_grader(tmp_path):
    """`midtrain-eval eval=anima_paper ... eval.anima.data_dir=<fixture>` through Hydra's
    entry point, in a fresh process with the scripted provider registered."""
    cmd = [sys.executable, "-m", "tests.grader_fixture", f"run_dir={tmp_path}", "eval=anima_paper",
           f"eval.anima.data_dir={FIXTURE}", "eval.anima.epochs=1", "model.name=scripted/answers",
           "grader_models=[scripted/a]", "max_missing_share=0.5"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT),
                                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = RunDir(tmp_path).read_metrics()["eval"]["anima"]
    want = expected_figures(FIXTURE, [("a", 10, [])], epochs=1,
                            renames={"Trade-off Transparency": "Trade-Off Transparency"}, drops={"Perspective-Taking"})
    assert got["samples_total"] == 26 and got["grader_models"] == ["scripted/a"]
    assert_figures(got, want)
