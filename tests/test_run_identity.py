"""Run identity, trustworthy DONE markers, redo, and one writer per run directory.

A run directory is `<readable prefix>-<hash>`: configs that can give different numbers never
share one; a `DONE` counts only with the files it vouches for; `redo=<stage>` (or deleting a
stage's `DONE`) runs exactly that stage and what follows it again; a second process on the
same directory is refused, naming the one that holds it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from omegaconf import open_dict

import midtrain.data.datamodule as dm
import midtrain.eval as eval_mod
import midtrain.train as train_mod
from midtrain.pipeline import pipeline
from midtrain.tracking import RunDir
from tests.conftest import compose_cfg, smoke_overrides, write_docs

# New names are imported where they are used, so that this file also runs against older code
# (and fails there for the right reason).

BIN = Path(sys.executable).parent


def _pipe(runs_root: Path, *extra: str) -> list[str]:
    """A small but complete pipeline: midtrain (8 docs), instruct (8 samples), probe on the final model."""
    return ["debug=smoke", f"paths.runs_root={runs_root}", "sweep_name=ident", "experiment=treatment",
            "corpus.num_docs=8", "data.seq_len=128", "instruct.samples=8", *extra]


# Identity ----------------------------------------------------------------------------------
def test_a_different_lr_is_a_different_run_directory(tmp_path):
    """Case 1: the lr=3e-4 run must not answer 'nothing to do' with the lr=1e-3 metrics."""
    over = _pipe(tmp_path, "instruct.samples=0", "stages.evaluate.enabled=false")
    a = pipeline(compose_cfg("pipeline", over))
    cfg_b = compose_cfg("pipeline", [*over, "optim.lr=3e-4"])
    b = pipeline(cfg_b)
    dirs = sorted(p.name for p in (tmp_path / "ident").iterdir() if not p.name.startswith("."))
    assert len(dirs) == 2, dirs
    assert all(re.fullmatch(r"treatment-tiny-llama-n8-i0-s0-[0-9a-f]{8}", d) for d in dirs), dirs
    assert a["run_id"] != b["run_id"] and a["run_hash"] != b["run_hash"]
    assert a["train"]["midtrain"]["final_loss"] != b["train"]["midtrain"]["final_loss"]
    assert b["settings"]["optim.lr"] == 3e-4
    saved = (RunDir.from_cfg(cfg_b).path / "midtrain" / "config.yaml").read_text()
    assert "lr: 0.0003" in saved


def test_the_hash_sees_numbers_and_file_contents_but_not_paths_or_display(tmp_path):
    from midtrain.tracking.identity import cell_hash, config_hash

    docs = write_docs(tmp_path / "docs.jsonl", 48)
    base = smoke_overrides(tmp_path, docs)
    h = config_hash(compose_cfg("train", base))
    same = [f"paths.runs_root={tmp_path / 'elsewhere'}", "sweep_name=other", "logger=wandb",
            "trainer.log_every_n_steps=7", "trainer.enable_progress_bar=true", "resume=never", "redo=all",
            "hydra/launcher=slurm_cpu", "data.num_workers=2"]
    for o in same:
        assert config_hash(compose_cfg("train", [*base, o])) == h, o
    differs = ["optim.lr=3e-4", "seed=1", "data.seq_len=256", "data.tokens_per_step=4096", "trainer.precision=bf16-mixed",
               "model.config.hidden_size=32", "corpus.num_docs=20", "optim.warmup_ratio=0.1", "trainer.devices=2"]
    hashes = {o: config_hash(compose_cfg("train", [*base, o])) for o in differs}
    assert h not in hashes.values() and len(set(hashes.values())) == len(differs), hashes
    # The corpus enters by content: the same file elsewhere is the same run, an edited one is not.
    moved = shutil.copy(docs, tmp_path / "moved.jsonl")
    assert config_hash(compose_cfg("train", [*base, f"corpus.path={moved}"])) == h
    with open(moved, "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "extra", "text": "One more document."}) + "\n")
    assert config_hash(compose_cfg("train", [*base, f"corpus.path={moved}"])) != h
    # The seed is the only difference a report may average over.
    assert cell_hash(compose_cfg("train", [*base, "seed=3"])) == cell_hash(compose_cfg("train", base))


def test_a_config_group_added_later_is_part_of_the_identity(tmp_path):
    from midtrain.tracking.identity import config_hash

    cfg = compose_cfg("pipeline", _pipe(tmp_path))
    before = config_hash(cfg)
    with open_dict(cfg):
        cfg.regularizer = {"name": "ewc", "weight": 0.1}  # a group no code knows about yet
    assert config_hash(cfg) != before
    assert cfg.run_id.endswith(config_hash(cfg))


def test_metrics_name_the_hash_and_the_settings_that_differ_from_the_preset(tmp_path):
    cfg = compose_cfg("pipeline", _pipe(tmp_path, "instruct.samples=0", "stages.evaluate.enabled=false", "seed=4"))
    m = pipeline(cfg)
    assert cfg.run_id.endswith("-" + m["run_hash"]) and m["cell_hash"]
    assert m["settings"]["seed"] == 4 and m["settings"]["optim.lr"] == 1e-3  # debug=smoke's lr
    assert m["settings"]["corpus.num_docs"] == 8
    assert not any(k.startswith(("paths.", "logger", "sweep_name")) for k in m["settings"])
    stage = json.loads((RunDir.from_cfg(cfg).path / "midtrain" / "DONE").read_text())
    assert stage["hash"] == m["stage_hashes"]["midtrain"]


# DONE, redo, resume ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished pipeline run, copied afresh for each test that changes it."""
    root = tmp_path_factory.mktemp("finished")
    cfg = compose_cfg("pipeline", _pipe(root))
    metrics = pipeline(cfg)
    return root, metrics


@pytest.fixture
def run_copy(finished, tmp_path, monkeypatch):
    """(cfg, run, reference metrics, calls): a copy of the finished run, with a record of which
    stages train and which are evaluated when the pipeline runs again."""
    root, metrics = finished
    shutil.copytree(root, tmp_path / "runs")
    cfg = compose_cfg("pipeline", _pipe(tmp_path / "runs"))
    run = RunDir.from_cfg(cfg)
    assert run.path.name == metrics["run_id"]  # paths are not part of the identity
    calls: dict[str, list] = {"trained": [], "evaluated": []}
    real_prepare, real_eval = dm.PackedDataModule.prepare, eval_mod.evaluate

    def spy_prepare(self):
        calls["trained"].append(str(self.cfg.stage))
        return real_prepare(self)

    def spy_eval(c, **kwargs):
        calls["evaluated"].append(Path(str(c.run_dir)).name)
        return real_eval(c, **kwargs)

    monkeypatch.setattr(dm.PackedDataModule, "prepare", spy_prepare)
    monkeypatch.setattr(eval_mod, "evaluate", spy_eval)
    return cfg, run, metrics, calls


def _numbers(m: dict) -> dict:
    """What must come back identical: every number, not the absolute paths of another copy."""
    out = json.loads(json.dumps(m))
    for stage in out.get("train", {}).values():
        stage.pop("init_from", None)
    out.pop("settings", None)
    out.pop("throughput", None)  # a timing, not a result
    out.pop("provenance", None)  # when and where each attempt ran
    return out


def _again(cfg, *extra):
    c = cfg.copy()
    if extra:
        c = compose_cfg("pipeline", _pipe(Path(str(cfg.paths.runs_root)), *extra))
    return pipeline(c)


def test_rerunning_a_finished_run_does_nothing(run_copy):
    cfg, run, ref, calls = run_copy
    assert _again(cfg) == ref
    assert calls == {"trained": [], "evaluated": []}


@pytest.mark.parametrize("redo,trained,evaluated", [
    ("midtrain", ["midtrain", "instruct"], True),
    ("instruct", ["instruct"], True),
    ("evaluate", [], True),
    ("all", ["midtrain", "instruct"], True),
])
def test_redo_runs_exactly_the_invalidated_stages(run_copy, redo, trained, evaluated):
    cfg, run, ref, calls = run_copy
    untouched = {s: (run.path / s / "hf" / "model.safetensors").stat().st_mtime_ns
                 for s in ("midtrain", "instruct") if s not in trained}
    got = _again(cfg, f"redo={redo}")
    assert calls["trained"] == trained
    assert bool(calls["evaluated"]) == evaluated
    for s, mtime in untouched.items():
        assert (run.path / s / "hf" / "model.safetensors").stat().st_mtime_ns == mtime, s
    # Deterministic on CPU: the same numbers come back, and none became null.
    assert _numbers(got) == _numbers(ref)
    assert run.is_done() and json.loads(run.metrics_path.read_text()) == got


def test_deleting_a_stage_done_redoes_that_stage_and_what_follows(run_copy):
    """Case 3: neither the run's DONE nor a resume from the final checkpoint may hide it."""
    cfg, run, ref, calls = run_copy
    (run.path / "midtrain" / "DONE").unlink()
    got = _again(cfg)
    assert calls["trained"] == ["midtrain", "instruct"] and calls["evaluated"]
    assert got["train"]["midtrain"]["global_steps"] == ref["train"]["midtrain"]["global_steps"] > 0
    assert _numbers(got) == _numbers(ref)


def test_deleting_the_instruct_done_keeps_midtraining(run_copy):
    cfg, run, ref, calls = run_copy
    (run.path / "instruct" / "DONE").unlink()
    got = _again(cfg)
    assert calls["trained"] == ["instruct"] and calls["evaluated"]
    assert _numbers(got) == _numbers(ref)


def test_deleting_the_run_done_only_reassembles_the_metrics(run_copy):
    cfg, run, ref, calls = run_copy
    run.done_path.unlink()
    run.metrics_path.unlink()
    assert _numbers(_again(cfg)) == _numbers(ref)
    assert calls == {"trained": [], "evaluated": []}


@pytest.mark.parametrize("missing", ["hf", "metrics.json"])
def test_a_done_without_its_files_is_redone_with_a_warning(run_copy, missing, caplog):
    """Case 8: a DONE whose hf/ or metrics.json was deleted must not answer 'nothing to do'."""
    cfg, run, ref, calls = run_copy
    target = run.path / "instruct" / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    got = _again(cfg)
    assert calls["trained"] == ["instruct"]
    assert any("has DONE but no" in r.message and missing in r.message for r in caplog.records), caplog.text
    assert _numbers(got) == _numbers(ref)


def test_resume_from_the_final_checkpoint_trains_nothing_and_keeps_every_number(tmp_path, monkeypatch):
    """A stage stopped after its last step but before its export finishes without training."""
    docs = write_docs(tmp_path / "docs.jsonl", 48)
    over = smoke_overrides(tmp_path, docs) + ["data.seq_len=128", "corpus.num_docs=24",
                                              "trainer.checkpoint_every_n_steps=1"]
    ref = train_mod.train(compose_cfg("train", [*over, "sweep_name=ref"]))
    cfg = compose_cfg("train", [*over, "sweep_name=crash"])
    import midtrain.models.build as build

    real_export = build.export_hf
    monkeypatch.setattr(build, "export_hf", lambda *a, **k: (_ for _ in ()).throw(SystemExit("killed in export")))
    with pytest.raises(SystemExit, match="killed in export"):
        train_mod.train(cfg)
    run = RunDir.from_cfg(cfg)
    assert not run.is_done()
    import torch

    assert torch.load(run.last_checkpoint, weights_only=False)["global_step"] == ref["train"]["global_steps"]
    monkeypatch.setattr(build, "export_hf", real_export)
    from midtrain.lightning.module import CausalLMModule

    steps = []
    real_step = CausalLMModule.training_step
    monkeypatch.setattr(CausalLMModule, "training_step", lambda self, *a: steps.append(1) or real_step(self, *a))
    got = train_mod.train(cfg)
    assert steps == []  # finished from the final checkpoint, without training
    assert got["train"]["final_loss"] == ref["train"]["final_loss"] is not None
    assert got["train"]["global_steps"] == ref["train"]["global_steps"]
    on_disk = json.loads(run.metrics_path.read_text())["train"]
    assert {k: v for k, v in on_disk.items() if v is None} == {"init_from": None}  # no number became null
    ref_train = {k: v for k, v in ref["train"].items()}
    assert on_disk == ref_train


# One writer per run directory -------------------------------------------------------------
_HOLD = textwrap.dedent("""
    import sys, time
    from midtrain.tracking import RunDir
    with RunDir(sys.argv[1]).lock():
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _hold(path: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    from midtrain.tracking import RunDirLocked

    cfg = compose_cfg("pipeline", _pipe(tmp_path))
    run = RunDir.from_cfg(cfg)
    holder = _hold(run.path, 30)
    try:
        with pytest.raises(RunDirLocked, match=rf"pid {holder.pid} on host \S+"):
            pipeline(cfg)
        assert sorted(p.name for p in run.path.iterdir()) == [".lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_lock_wait_queues_behind_the_holder(tmp_path):
    run = RunDir(tmp_path / "run")
    holder = _hold(run.path, 2)
    t0 = time.monotonic()
    with run.lock(wait=True, poll_s=0.2):
        waited = time.monotonic() - t0
    holder.wait()
    assert waited > 0.5
    with run.lock(), run.lock():  # re-entrant within one process
        pass


def test_two_identical_commands_at_once_leave_one_complete_run(tmp_path):
    """Case 8: two identical smoke commands into one runs root at the same moment."""
    docs = write_docs(tmp_path / "docs.jsonl", 48)
    cmd = [str(BIN / "midtrain-train"), *smoke_overrides(tmp_path, docs), "data.seq_len=128", "corpus.num_docs=24",
           "hydra.job_logging.root.level=INFO"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0, outs
    runs = [p for p in (tmp_path / "runs" / "test").iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1
    run = RunDir(runs[0])
    assert run.is_complete(needs_hf=True)
    steps = json.loads(run.metrics_path.read_text())["train"]["global_steps"]
    csvs = list(run.path.glob("logs/*/metrics.csv"))
    assert len(csvs) == 1, csvs  # one attempt trained
    assert not list(run.checkpoints.glob("*-v1.ckpt"))
    rows = [r for r in csvs[0].read_text().splitlines()[1:] if r.strip()]
    assert len(rows) <= 2 * steps  # one writer's rows (loss and lr lines), not two
    if codes[1] != 0:  # the loser stopped at once, naming who holds the directory
        loser = outs[[p.returncode for p in procs].index(codes[1])]
        assert re.search(r"is being written by pid \d+ on host \S+", loser), loser[-2000:]
    else:  # it came second and found the run finished
        assert "nothing to do" in "".join(outs)


def test_an_evaluation_into_a_held_run_directory_is_refused(tmp_path):
    from hydra import compose, initialize_config_dir

    from midtrain.eval import evaluate
    from midtrain.paths import CONF_DIR
    from midtrain.tracking import RunDirLocked
    from tests.test_probe import make_tiny_run

    run_dir = make_tiny_run(tmp_path)
    before = (run_dir / "metrics.json").read_text() if (run_dir / "metrics.json").exists() else None
    holder = _hold(run_dir, 30)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("eval", overrides=[f"run_dir={run_dir}", "eval=probe"])
        with pytest.raises(RunDirLocked, match=rf"pid {holder.pid} on host"):
            evaluate(cfg)
        after = (run_dir / "metrics.json").read_text() if (run_dir / "metrics.json").exists() else None
        assert after == before
    finally:
        holder.kill()
        holder.wait()
