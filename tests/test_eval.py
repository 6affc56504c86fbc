"""midtrain-eval: configs compose, bad input fails early and clearly, suites write metrics.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

import midtrain.evals.probe as probe_pkg
from midtrain.eval import evaluate
from midtrain.evals._registry import SUITES
from midtrain.evals.graders import GraderRequiredError
from midtrain.evals.suites import plan_suites
from midtrain.evals.task_list import resolve_task
from midtrain.paths import CONF_DIR
from midtrain.tracking import RunDir
from tests.test_anima import QUESTIONS, expected_scores, scripted_grader, scripted_model, write_dataset, DIMENSIONS
from tests.test_probe import make_tiny_run

EVAL_OPTIONS = sorted(p.stem for p in (CONF_DIR / "eval").glob("*.yaml"))


def compose_eval(overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("eval", overrides=overrides, return_hydra_config=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("eval"))


@pytest.mark.parametrize("option", EVAL_OPTIONS)
def test_every_eval_option_composes(option):
    cfg = compose_eval(["run_dir=/runs/x", f"eval={option}"])
    suites = list(cfg.eval.keys())
    assert suites and set(suites) <= set(SUITES)
    if option == "paper":
        assert suites == ["anima", "human_compassion", "capabilities", "safety", "probe"]
    elif option == "anima_paper":  # the paper's protocol of the anima suite
        assert suites == ["anima"]
    else:
        assert suites == [option]
    assert cfg.hydra.run.dir == "/runs/x/.hydra_logs/eval"
    HydraConfig.instance().set_config(cfg)
    # every interpolation of the job's config resolves (hydra's own sweep keys need a job)
    OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def test_every_suite_is_a_registry_entry_whose_configs_pass_its_schema():
    """The registry and conf/eval/ agree: each suite has its config, and every option checks
    against the schemas of the suites it selects (as the pipeline checks them at launch)."""
    from midtrain.evals.settings import check_eval_config

    assert set(SUITES) <= set(EVAL_OPTIONS) and all(s.name == name for name, s in SUITES.items())
    for option in EVAL_OPTIONS:
        check_eval_config(compose_eval(["run_dir=/runs/x", f"eval={option}", "grader_models=[mockllm/model]"]))
    bad = compose_eval(["run_dir=/runs/x", "eval=anima", "grader_models=[mockllm/model]", "eval.anima.subset=most"])
    with pytest.raises(ValueError, match=r"eval.anima.subset='most': expected one of \['original', 'all'\]"):
        check_eval_config(bad)


def test_run_dir_is_required():
    cfg = compose_eval(["eval=probe"])
    assert OmegaConf.is_missing(cfg, "run_dir")


def test_run_dir_without_hf_fails_clearly(tmp_path):
    cfg = compose_eval([f"run_dir={tmp_path}", "eval=probe"])
    with pytest.raises(FileNotFoundError, match=r"has no Hugging Face model in hf/"):
        evaluate(cfg)


def test_unknown_suite(tiny_run):
    cfg = compose_eval([f"run_dir={tiny_run}", "eval=probe"])
    with open_dict(cfg):
        cfg.eval.anmia = {}
    with pytest.raises(ValueError, match=r"unknown eval suite\(s\) \['anmia'\]"):
        evaluate(cfg)


@pytest.mark.parametrize(
    "name,match",
    [("gsm8k", "must look like '<package>/<task>'"),
     ("nopkg/gsm8k", "no installed Inspect task package 'nopkg'"),
     ("midtrain/gsm8k", "package 'midtrain' has no task 'gsm8k'")],
)
def test_unknown_task_name(name, match, tiny_run):
    with pytest.raises(ValueError, match=match):
        resolve_task(name)
    cfg = compose_eval([f"run_dir={tiny_run}", "eval=capabilities"])
    cfg.eval.capabilities.tasks = {"bad": {"task": name, "limit": 1, "args": {}}}
    with pytest.raises(ValueError, match=match):
        evaluate(cfg, model=scripted_model())


def test_registered_tasks_resolve_by_their_inspect_names():
    from midtrain.evals._registry import anima, human_compassion

    assert resolve_task("midtrain/anima") is anima
    assert resolve_task("midtrain/human_compassion") is human_compassion


def test_graded_safety_task_needs_a_grader(tiny_run, tmp_path):
    data = write_dataset(tmp_path / "anima")
    cfg = compose_eval([f"run_dir={tiny_run}", "eval=safety"])
    cfg.eval.safety.tasks = {"judged": {"task": "midtrain/anima", "limit": 1, "args": {"data_dir": str(data)},
                                        "grader_arg": "grader_models"}}
    with pytest.raises(GraderRequiredError, match=r"eval.safety.tasks.judged .*grader_models"):
        plan_suites(cfg)


def test_every_graded_suite_checks_for_a_grader_first(tiny_run):
    cfg = compose_eval([f"run_dir={tiny_run}", "eval=paper"])
    with pytest.raises(GraderRequiredError, match="eval=anima needs an explicit grader: set grader_models"):
        plan_suites(cfg)  # before any hub download or task-list lookup


def test_task_list_suite_end_to_end(tiny_run, tmp_path):
    """A list suite runs each task and records its headline metrics under its label."""
    data = write_dataset(tmp_path / "anima")
    cfg = compose_eval([f"run_dir={tiny_run}", "eval=capabilities", "force=true"])
    grader = scripted_grader("grader-a")
    cfg.eval.capabilities.tasks = {"anima_as_task": {"task": "midtrain/anima", "limit": 2,
                                                    "args": {"data_dir": str(data), "epochs": 1},
                                                    "grader_arg": "grader_models"}}
    out = evaluate(cfg, model=scripted_model(), grader_models=[grader])["capabilities"]["anima_as_task"]
    per_sample, _, _, _ = expected_scores(QUESTIONS[:2], DIMENSIONS, ["grader-a"])
    assert out["task"] == "midtrain/anima"
    assert out["samples"] == 2 and out["samples_total"] == 2
    assert out["metrics"]["overall_mean"] == pytest.approx(sum(per_sample.values()) / 2)
    assert out["complete"] is True
    assert out["grader_models"] == ["mockllm/model"]


def test_probe_suite_writes_margin_and_is_not_rerun(tiny_run, monkeypatch):
    cfg = compose_eval([f"run_dir={tiny_run}", "eval=probe", "eval.probe.device=cpu"])
    out = evaluate(cfg)["probe"]
    stored = RunDir(tiny_run).read_metrics()["eval"]["probe"]
    assert stored == out
    assert math.isfinite(out["margin"]) and out["pairs"] == len(probe_pkg.load_pairs())
    assert out["unit"] == "nats/token" and out["complete"] is True

    def boom(*a, **k):
        raise AssertionError("probe recomputed for a run that already has it")

    monkeypatch.setattr(probe_pkg, "probe_run_dir", boom)
    assert evaluate(cfg)["probe"] == out


def test_hf_provider_on_the_run_dir(tmp_path):
    """The real model path: inspect's hf/ provider loads run_dir/hf and answers; graders scripted."""
    run = make_tiny_run(tmp_path, "hfrun")
    data = write_dataset(tmp_path / "anima")
    cfg = compose_eval([f"run_dir={run}", "eval=anima", f"eval.anima.data_dir={data}", "eval.anima.epochs=1",
                        "inspect.limit=2", "sampling.max_tokens=4", "model.provider=hf", "model.device=cpu",
                        "max_missing_share=1.0"])
    a = evaluate(cfg, grader_models=[scripted_grader("grader-a")])["anima"]
    assert a["samples_total"] == 2 and a["samples"] == 2
    log_file = run / a["log"]
    from inspect_ai.log import read_eval_log

    log = read_eval_log(str(log_file))
    assert log.eval.model == f"hf/{(run / 'hf').resolve()}"
    # the question reached the model through the chat template
    first = log.samples[0]
    assert first.output.model and first.messages[0].text == QUESTIONS[0]["question"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval"]["anima"]["dataset_revision"] == a["dataset_revision"]


def test_configured_task_lists_name_real_tasks_and_arguments():
    """Every task in eval=capabilities/safety exists in inspect_evals and accepts its args."""
    import inspect

    cfg = compose_eval(["run_dir=/runs/x", "eval=paper"])
    for suite in ("capabilities", "safety"):
        for key, t in cfg.eval[suite].tasks.items():
            params = inspect.signature(resolve_task(t.task)).parameters
            for arg in list(t.args or {}) + ([t.grader_arg] if t.get("grader_arg") else []):
                assert arg in params, f"eval.{suite}.tasks.{key}: {t.task} takes no argument {arg!r}"


def test_eval_results_of_other_settings_are_separate_entries_never_overwritten(tmp_path, monkeypatch):
    """A result is reused only for the settings that produced it; other settings give another
    entry, and asking for the first settings again brings their result back without a rerun."""
    import midtrain.evals.probe as probe_mod

    run_dir = make_tiny_run(tmp_path)
    pairs = [json.loads(line) for line in (Path(probe_mod.__file__).parent / "pairs.jsonl").read_text().splitlines()
             if line.strip()]
    subset = tmp_path / "pairs.jsonl"
    subset.write_text("".join(json.dumps(p) + "\n" for p in pairs[: len(pairs) // 2]))
    calls = []
    real = probe_mod.probe_run_dir
    monkeypatch.setattr(probe_mod, "probe_run_dir", lambda *a, **k: calls.append(1) or real(*a, **k))

    first = evaluate(compose_eval([f"run_dir={run_dir}", "eval=probe"]))["probe"]
    other = evaluate(compose_eval([f"run_dir={run_dir}", "eval=probe", f"eval.probe.pairs_path={subset}"]))["probe"]
    assert len(calls) == 2 and other["settings_key"] != first["settings_key"]
    assert other["pairs"] != first["pairs"]
    metrics = RunDir(run_dir).read_metrics()
    assert metrics["eval_history"][f"probe@{first['settings_key']}"] == first  # kept, not overwritten
    again = evaluate(compose_eval([f"run_dir={run_dir}", "eval=probe"]))["probe"]
    assert len(calls) == 2 and again == first  # back from the history, no rerun
    assert RunDir(run_dir).read_metrics()["eval_history"][f"probe@{other['settings_key']}"] == other
