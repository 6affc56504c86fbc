"""Settings checked at launch: ranges and types named by key and value before anything loads
or is written, and a whole grid checked before its first job is submitted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import midtrain.models.build as build
from midtrain.pipeline import pipeline, stage_config
from midtrain.train import train
from tests.conftest import compose_cfg, smoke_overrides

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("override,message", [
    ("optim.lr=0", "optim.lr=0: must be greater than 0"),
    ("optim.lr=-1e-3", "optim.lr=-0.001: must be greater than 0"),
    ("optim.lr=fast", "optim.lr='fast': expected a number"),
    ("seed=abc", "seed='abc': expected an integer"),
    ("trainer.max_steps=-3", "trainer.max_steps=-3: must be at least 1"),
    ("data.batch_size=0", "data.batch_size=0: must be at least 1"),
    ("optim.warmup_ratio=1.5", "optim.warmup_ratio=1.5: must be at most 1"),
    ("data.seq_len=12.5", "data.seq_len=12.5: expected an integer"),
])
@pytest.mark.parametrize("app", ["train", "pipeline"])
def test_a_bad_value_is_named_before_any_model_loads_or_file_is_written(tmp_path, monkeypatch, app, override,
                                                                         message):
    """Case 9: these trained (lr=0 even wrote DONE) or failed late with an error naming no key."""
    monkeypatch.setattr(build, "build_tokenizer", lambda *a, **k: pytest.fail("loaded a tokenizer"))
    cfg = compose_cfg(app, [*smoke_overrides(tmp_path), override])
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        (train if app == "train" else pipeline)(cfg)
    assert not (tmp_path / "runs").exists()


def _refused_grid(tmp_path, *axes: str) -> str:
    """The output of a `midtrain-pipeline -m` grid that must be refused before any job runs."""
    cmd = [str(BIN / "midtrain-pipeline"), "-m", "debug=smoke", f"paths.runs_root={tmp_path}", "sweep_name=bad", *axes]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "nothing was submitted" in out, out[-3000:]
    runs = [p for p in (tmp_path / "bad").glob("*") if not p.name.startswith(".")] if (tmp_path / "bad").exists() else []
    assert not runs, runs  # no run directory was made
    return out


def test_every_problem_of_a_grid_is_reported_before_any_job_is_submitted(tmp_path):
    """One report for the whole grid; no job ran, no run directory was made."""
    out = _refused_grid(tmp_path, "optim.lr=1e-3,0", "seed=1,abc")
    assert "4 jobs composed" in out, out[-3000:]
    assert out.count("optim.lr=0: must be greater than 0") == 2, out[-3000:]
    assert out.count("seed='abc': expected an integer") == 2, out[-3000:]


def test_jobs_that_would_share_a_run_directory_are_refused(tmp_path):
    from midtrain.validate import check_grid
    from omegaconf import OmegaConf

    config = OmegaConf.create({"hydra": {"sweeper": {"params": {}}, "job": {"config_name": "pipeline"},
                                         "overrides": {"task": ["trainer.log_every_n_steps=1,2"]}}})
    over = smoke_overrides(tmp_path)
    with pytest.raises(ValueError, match=r"job 1 .*same run directory as job 0"):
        check_grid(config, compose=lambda job: compose_cfg("pipeline", [*over, *job]))


def _lrs(run_dir: Path) -> list[float]:
    import csv

    rows = list(csv.DictReader(open(next(run_dir.glob("logs/*/metrics.csv")))))
    return [float(r["train/lr"]) for r in rows if r.get("train/lr")]


@pytest.mark.parametrize("max_steps", [2, 9])
def test_max_steps_defines_the_schedule_above_and_below_the_data(tmp_path, max_steps):
    """Case 6: above the data's steps it used to stop at one pass; below, the LR never decayed."""
    from midtrain.lightning.module import warmup_cosine
    from midtrain.tracking import RunDir
    from tests.conftest import write_docs

    docs = write_docs(tmp_path / "docs.jsonl", 48)
    over = [*smoke_overrides(tmp_path, docs), "corpus.num_docs=12", "data.seq_len=128", "optim.warmup_ratio=0"]
    data_steps = train(compose_cfg("train", [*over, "sweep_name=data"]))["train"]["steps"]
    assert data_steps not in (2, 9) and 2 < data_steps < 9
    cfg = compose_cfg("train", [*over, f"trainer.max_steps={max_steps}", "sweep_name=capped"])
    m = train(cfg)
    assert m["train"]["global_steps"] == m["train"]["steps"] == max_steps
    if max_steps > data_steps:
        assert m["train"]["epochs"] > 1  # the data repeated
    lrs = _lrs(RunDir.from_cfg(cfg).path)
    lr = float(cfg.optim.lr)
    expected = [lr * warmup_cosine(s, max_steps, 0, float(cfg.optim.min_lr_ratio)) for s in range(max_steps)]
    assert lrs == pytest.approx(expected, rel=1e-6)  # the LR schedule spans exactly max_steps


def test_a_rounded_tokens_per_step_is_logged_with_both_values(tmp_path, caplog):
    from midtrain.data.datamodule import PackedDataModule
    from midtrain.models.build import build_tokenizer as real_build_tokenizer
    from tests.conftest import write_docs

    docs = write_docs(tmp_path / "docs.jsonl", 48)
    cfg = compose_cfg("train", [*smoke_overrides(tmp_path, docs), "data.seq_len=128", "data.batch_size=2",
                                "data.tokens_per_step=600"])
    dm = PackedDataModule(cfg, real_build_tokenizer(cfg.model)).prepare()
    assert dm.info["tokens_per_step_requested"] == 600 and dm.info["tokens_per_step"] == 512
    assert "data.tokens_per_step=600 rounds to 512 tokens per step" in caplog.text


def test_midtrain_train_refuses_an_experiment_it_cannot_honour(tmp_path):
    """Case 6: experiment=base / instruct_baseline composed, then trained on documents anyway."""
    for exp in ("base", "instruct_baseline"):
        cfg = compose_cfg("train", [*smoke_overrides(tmp_path), f"experiment={exp}"])
        with pytest.raises(ValueError, match="only midtrain-pipeline reads"):
            train(cfg)
    assert not (tmp_path / "runs").exists()


def test_paths_cache_dir_is_where_model_conversions_are_cached(tmp_path, monkeypatch):
    """Case 6: paths.cache_dir (and its environment variable) used to be read by nothing."""
    import midtrain.models.gguf as gguf
    from midtrain.train import prepare_inputs

    seen = []

    def fake(spec, cache_dir=None):
        seen.append(cache_dir)
        raise RuntimeError("stop after the cache lookup")

    monkeypatch.setattr(gguf, "converted_gguf_dir", fake)
    cfg = compose_cfg("train", [*smoke_overrides(tmp_path), "model=smollm2_135m", f"paths.cache_dir={tmp_path / 'c'}"])
    with pytest.raises(RuntimeError, match="stop after the cache lookup"):
        prepare_inputs(cfg)
    assert seen == [str(tmp_path / "c")]
    monkeypatch.setenv("MIDTRAIN_CACHE_DIR", str(tmp_path / "env"))
    assert compose_cfg("train", ["model=smollm2_135m"]).paths.cache_dir == str(tmp_path / "env")


BAD_EVAL = [
    ("eval.probe.batch_size=abc", "eval.probe.batch_size: Value 'abc' of type 'str' could not be converted to Integer"),
    ("+eval.probe.batch_sise=8", "eval.probe.batch_sise: Key 'batch_sise' not in 'ProbeSettings'"),
    ("eval.probe.batch_size=0", "eval.probe.batch_size=0: must be at least 1"),
    ("stages.evaluate.inspect.limit=0", "stages.evaluate.inspect.limit=0: must be at least 1"),
    ("stages.evaluate.model.provider=vlm", "stages.evaluate.model.provider='vlm': expected one of"),
    ("+stages.evaluate.sampling.tempreature=1", "stages.evaluate.sampling: .*Unknown GenerateConfig field.*tempreature"),
    ("stages.evaluate.grader.timeout=soon", "stages.evaluate.grader.timeout: Input should be a valid integer"),
    ("eval=[probe,anima]", "eval=anima needs an explicit grader.*stages.evaluate.grader_models"),
    ("+stages.evaluate.overrides=['inspect.limit=2']", "stages.evaluate.overrides was removed"),
]


@pytest.mark.parametrize("override,message", BAD_EVAL)
def test_a_bad_eval_setting_fails_the_pipeline_before_any_training(tmp_path, monkeypatch, override, message):
    """The evaluate stage's settings are checked at launch: before, they were composed from
    override strings after midtraining and instruction tuning had run."""
    import midtrain.train as train_mod

    monkeypatch.setattr(build, "build_tokenizer", lambda *a, **k: pytest.fail("loaded a tokenizer"))
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: pytest.fail("a training stage started"))
    cfg = compose_cfg("pipeline", [*smoke_overrides(tmp_path), override])
    with pytest.raises(ValueError, match=message):
        pipeline(cfg)
    assert not (tmp_path / "runs").exists()


def test_the_pipeline_hands_its_eval_settings_to_evaluate(tmp_path):
    """What `evaluate` gets for a stage is `midtrain-eval`'s config with the pipeline's values."""
    from midtrain.pipeline import eval_config

    cfg = compose_cfg("pipeline", [*smoke_overrides(tmp_path), "eval=[probe,anima]", "eval.anima.epochs=2",
                                   "stages.evaluate.grader_models=[openai/gpt-4o]", "stages.evaluate.inspect.limit=3",
                                   "eval.probe.batch_size=8"])
    ev = eval_config(cfg, tmp_path / "stage", force=True)
    ref = compose_cfg("eval", [f"run_dir={tmp_path / 'stage'}", "eval=[probe,anima]", "eval.anima.epochs=2",
                               "grader_models=[openai/gpt-4o]", "inspect.limit=3", "eval.probe.batch_size=8",
                               "force=true"])
    expected = {k: v for k, v in OmegaConf.to_container(ref, resolve=True).items() if k != "paths"}
    assert OmegaConf.to_container(ev) == expected
    assert "eval" not in stage_config(cfg, "midtrain", "lm", None)  # the suites are no training setting


def test_a_bad_eval_setting_in_a_sweep_fails_before_any_job_is_submitted(tmp_path):
    out = _refused_grid(tmp_path, "seed=0,1", "eval.probe.batch_size=8,abc")
    assert "4 jobs composed, 2 problem(s)" in out, out[-3000:]
    assert out.count("eval.probe.batch_size: Value 'abc' of type 'str' could not be converted to Integer") == 2, \
        out[-3000:]
