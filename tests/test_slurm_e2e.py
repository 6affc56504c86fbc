"""End to end on a real SLURM scheduler (slurm/local_cluster.sh start): the smoke grid as a job
array, the report over it, relaunching a finished and a half-finished sweep, and a job requeued
in the middle of training that ends with the same metrics as an uninterrupted run.

    sudo bash slurm/local_cluster.sh start && pytest -m slurm tests/test_slurm_e2e.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from midtrain.paths import REPO_ROOT

pytestmark = pytest.mark.slurm

BIN = Path(sys.executable).parent
LAUNCHER = "hydra/launcher=slurm_cpu"
SWEEP_TIMEOUT_S = 420


def _cluster_up() -> bool:
    if shutil.which("scontrol") is None:
        return False
    return subprocess.run(["scontrol", "ping"], capture_output=True, text=True).returncode == 0


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if not _cluster_up():
        pytest.skip("no SLURM controller answers; start one with `sudo bash slurm/local_cluster.sh start`")


def _env() -> dict:
    env = dict(os.environ)
    env.pop("MIDTRAIN_RUNS_ROOT", None)
    env.setdefault("WANDB_MODE", "disabled")
    return env


def sweep_cmd(runs_root: Path, *overrides: str) -> list[str]:
    return [str(BIN / "midtrain-pipeline"), "--config-dir", "sweeps", "--config-name", "smoke_local", LAUNCHER,
            f"paths.runs_root={runs_root}", *overrides]


def run_sweep(runs_root: Path, *overrides: str) -> subprocess.CompletedProcess:
    # From the repository root: the launcher's setup line sources slurm/env.sh relative to it.
    proc = subprocess.run(sweep_cmd(runs_root, *overrides), cwd=REPO_ROOT, env=_env(), capture_output=True,
                          text=True, timeout=SWEEP_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def run_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def snapshot(sweep_dir: Path) -> dict[str, int]:
    """mtime of every file of every run directory (not Hydra's/submitit's bookkeeping, not the
    writer's lock file)."""
    return {str(p): p.stat().st_mtime_ns for d in run_dirs(sweep_dir) for p in d.rglob("*")
            if p.is_file() and p.name != ".lock"}


def run_dir_of(sweep_dir: Path, prefix: str) -> Path:
    """The one run directory `<prefix>-<hash>` of a sweep."""
    (found,) = [p for p in run_dirs(sweep_dir) if p.name.rsplit("-", 1)[0] == prefix]
    return found


def job_folders(sweep_dir: Path) -> list[Path]:
    """submitit's per-job folders (`<jobid>` or `<arrayid>_<index>`), oldest first."""
    folders = (p for p in (sweep_dir / ".multirun" / ".submitit").iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name))
    return sorted(folders, key=lambda p: p.stat().st_mtime)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    runs_root = tmp_path_factory.mktemp("slurm_runs")
    t0 = time.monotonic()
    run_sweep(runs_root)
    return runs_root / "smoke_local", time.monotonic() - t0


def test_smoke_grid_runs_as_a_job_array_and_reports(grid, tmp_path):
    sweep_dir, seconds = grid
    runs = run_dirs(sweep_dir)
    assert len(runs) == 4, runs
    for r in runs:
        assert (r / "DONE").exists(), r
        m = json.loads((r / "metrics.json").read_text())
        assert m["condition"] in ("treatment", "control") and m["seed"] in (0, 1)
        assert isinstance(m["eval"]["probe"]["margin"], float)
    # One array of four tasks: <jobid>_0 .. <jobid>_3, submitted by one sbatch script.
    folders = [p.name for p in job_folders(sweep_dir)]
    array_ids = {f.split("_")[0] for f in folders if "_" in f}
    assert len(array_ids) == 1, folders
    (array_id,) = array_ids
    assert sorted(f for f in folders if "_" in f) == [f"{array_id}_{i}" for i in range(4)]
    script = next((sweep_dir / ".multirun" / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-3" in script and "#SBATCH --requeue" in script and f"source {REPO_ROOT / 'slurm' / 'env.sh'}" in script
    print(f"smoke grid on SLURM: 4 jobs in {seconds:.0f}s")

    out = tmp_path / "report"
    proc = subprocess.run([str(BIN / "midtrain-report"), f"sweep_dirs=[{sweep_dir}]", f"out_dir={out}",
                           "metric=eval.probe.margin", "dimensions=eval.probe.by_dimension"],
                          cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert [(s["condition"], s["n"]) for s in report["summary"]] == [("control", 2), ("treatment", 2)]
    assert report["problems"] == [] and report["missing"] == []
    # model, condition, documents, instruction samples, strategy, ..., then n
    assert re.search(r"^\| tiny-llama \| treatment \| 32 \| 64 \| none \|(?: [^|]+ \|)*? 2 \|",
                     (out / "summary.md").read_text(), re.M), (out / "summary.md").read_text()
    for png in ("anima_vs_doc_count.png", "by_dimension.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png


def test_relaunching_the_finished_grid_trains_nothing(grid):
    sweep_dir, _ = grid
    before = snapshot(sweep_dir)
    n_folders = len(job_folders(sweep_dir))
    run_sweep(sweep_dir.parent)
    assert snapshot(sweep_dir) == before, "a finished run wrote files when relaunched"
    new = [f for f in job_folders(sweep_dir)[n_folders:] if "_" in f.name]
    assert len(new) == 4  # the jobs did run, and each returned at once
    for f in new:
        assert "is DONE; nothing to do" in "".join(p.read_text() for p in f.glob("*_log.*")), f


def test_relaunching_a_half_finished_grid_finishes_only_what_is_missing(grid):
    sweep_dir, _ = grid
    victim = run_dir_of(sweep_dir, "control-tiny-llama-n32-i64-s1")
    expected = json.loads((victim / "metrics.json").read_text())
    # As if the job died during evaluation: trained stages are DONE, the rest is missing.
    shutil.rmtree(victim / "evaluate")
    (victim / "metrics.json").unlink()
    (victim / "DONE").unlink()
    before = snapshot(sweep_dir)
    run_sweep(sweep_dir.parent)
    after = snapshot(sweep_dir)
    changed = sorted({Path(p).relative_to(sweep_dir).parts[0:2] for p in after if before.get(p) != after[p]})
    print("changed on relaunch:", changed)
    assert all(c[0] == victim.name for c in changed), changed  # no other run was touched
    assert {(victim.name, "DONE"), (victim.name, "evaluate"), (victim.name, "metrics.json")} <= set(changed)
    # the trained stages were not retrained: their weights and DONE markers are untouched
    for stage in ("midtrain", "instruct"):
        for name in ("DONE", "hf/model.safetensors"):
            f = str(victim / stage / name)
            assert before[f] == after[f], f
    again = json.loads((victim / "metrics.json").read_text())
    assert again["eval"] == expected["eval"] and again["train"] == expected["train"]


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"sweep ended before {what}: {proc.stdout.read()[-3000:] if proc.stdout else ''}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# A bigger corpus than the grid's, so that training lasts long enough to be interrupted.
REQUEUE_COND = ("experiment=treatment", "seed=0", "corpus.num_docs=256", "corpus.pool_size=512")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run the requeue tests compare with, started once in the background."""
    root = tmp_path_factory.mktemp("reference")
    proc = subprocess.Popen(sweep_cmd(root, *REQUEUE_COND, "sweep_name=reference"), cwd=REPO_ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done: dict = {}

    def metrics() -> dict:
        if not done:
            out = proc.communicate(timeout=2 * SWEEP_TIMEOUT_S)[0]
            assert proc.returncode == 0, f"reference: {out[-3000:]}"
            done.update(json.loads(next((root / "reference").glob("*/metrics.json")).read_text()))
        return json.loads(json.dumps(done))

    yield metrics
    _stop(proc, root / "reference")


def _stop(proc: subprocess.Popen, sweep_dir: Path) -> None:
    """After a failed test: end the sweep process and cancel its jobs (the cluster is shared)."""
    if proc.poll() is None:
        proc.kill()
        folders = job_folders(sweep_dir) if (sweep_dir / ".multirun" / ".submitit").is_dir() else []
        for f in folders:
            subprocess.run(["scancel", f.name], capture_output=True)


def _wait_for_checkpoint(sweep_dir: Path, proc: subprocess.Popen, step: int = 4) -> Path:
    """The midtrain stage directory, once its periodic checkpoint of `step` exists."""
    name = f"step{step:07d}.ckpt"
    stage = _wait_for(lambda: next(iter(sweep_dir.glob(f"*/midtrain/checkpoints/{name}")), None), 300,
                      "the first step checkpoint", proc).parent.parent
    assert not (stage / "DONE").exists(), "training finished before it could be interrupted"
    return stage


def _same_numbers(got: dict, ref: dict) -> None:
    assert got["train"]["instruct"]["init_from"] == "../midtrain"  # relative: the same in both sweeps
    assert got["train"] == ref["train"]  # same steps, same final losses, bit for bit
    assert got["eval"] == ref["eval"]


def test_job_requeued_mid_training_ends_like_an_uninterrupted_run(tmp_path, reference):
    """SIGUSR2 (SLURM's pre-timeout signal, and what submitit treats as preemption) mid-training:
    checkpoint, `scontrol requeue`, the restarted job resumes from last.ckpt."""
    proc = subprocess.Popen(sweep_cmd(tmp_path, *REQUEUE_COND, "sweep_name=requeued"), cwd=REPO_ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stage = _wait_for_checkpoint(tmp_path / "requeued", proc)
        job_id = job_folders(tmp_path / "requeued")[0].name
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        out = proc.communicate(timeout=SWEEP_TIMEOUT_S)[0]
    finally:
        _stop(proc, tmp_path / "requeued")
    assert proc.returncode == 0, f"requeued: {out[-3000:]}"

    log = "".join(f.read_text() for f in (tmp_path / "requeued" / ".multirun" / ".submitit" / job_id).glob("*_log.*"))
    step = int(re.search(r"preemption checkpoint at step (\d+)", log).group(1))
    assert "Requeued job" in log and "resuming from" in log
    total = json.loads((stage / "metrics.json").read_text())["train"]["global_steps"]
    assert 4 <= step < total, (step, total)
    restarts = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert re.search(r"Restarts=[1-9]", restarts), restarts

    got = json.loads(next((tmp_path / "requeued").glob("*/metrics.json")).read_text())
    ref = reference()
    _same_numbers(got, ref)
    assert got["train"]["midtrain"]["final_loss"] == ref["train"]["midtrain"]["final_loss"]
    # Both attempts of the interrupted stage are on record, the second with SLURM's restart count.
    attempts = got["provenance"]["stages"]["midtrain"]["attempts"]
    train_attempts = [a for a in attempts if a["activity"] == "train"]
    assert [a["attempt"] for a in train_attempts] == [1, 2]
    assert [a["slurm"]["restart_count"] for a in train_attempts] == [0, 1]
    jobs = {(a["slurm"]["job_id"], a["slurm"].get("array_job_id"), a["slurm"].get("array_task_id"))
            for a in train_attempts}
    assert len(jobs) == 1 and job_id.split("_")[0] in next(iter(jobs)), jobs  # one job, requeued
    assert train_attempts[1]["resumed_from"] == "checkpoints/last.ckpt"
    ref_attempts = ref["provenance"]["stages"]["midtrain"]["attempts"]
    assert [a["attempt"] for a in ref_attempts if a["activity"] == "train"] == [1]


def test_scontrol_requeue_with_wandb_keeps_every_step_once_under_one_run(tmp_path, reference):
    """`scontrol requeue <job>` mid-training with logger=wandb (offline): SLURM sends SIGTERM
    to every process of the job, W&B's service included. The sweep still returns the requeued
    attempt's result with exit 0, the numbers are those of an uninterrupted run, and the two
    attempts' W&B files together hold every logged step once, under one run id."""
    from tests.test_wandb import history_steps, read_wandb_file

    env = {**_env(), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    t0 = time.monotonic()
    proc = subprocess.Popen(sweep_cmd(tmp_path, *REQUEUE_COND, "logger=wandb", "sweep_name=wb_requeued"),
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stage = _wait_for_checkpoint(tmp_path / "wb_requeued", proc)
        job_id = job_folders(tmp_path / "wb_requeued")[0].name  # <jobid> (one job) or <array>_<task>
        subprocess.run(["scontrol", "requeue", job_id], check=True)
        out = proc.communicate(timeout=SWEEP_TIMEOUT_S)[0]
    finally:
        _stop(proc, tmp_path / "wb_requeued")
    assert proc.returncode == 0, f"sweep: {out[-4000:]}"
    seconds = time.monotonic() - t0

    folder = tmp_path / "wb_requeued" / ".multirun" / ".submitit" / job_id
    log = "".join(f.read_text() for f in folder.glob("*_log.*"))
    assert "stopping after SIGTERM" in log and "resuming from" in log, log[-3000:]
    restarts = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert re.search(r"Restarts=[1-9]", restarts), restarts

    run = stage.parent
    got = json.loads((run / "metrics.json").read_text())
    assert got["throughput"]["attempt"] == 2 and got["throughput"]["tokens_per_s"] > 0
    _same_numbers(got, reference())

    for name in ("midtrain", "instruct"):
        stage_dir = run / name
        run_id = json.loads((stage_dir / "wandb_ids.json").read_text())[name]
        segments = [read_wandb_file(f) for f in sorted((stage_dir / "wandb").glob("offline-run-*/run-*.wandb"))]
        steps = [s for seg in segments for s in history_steps(seg)]
        total = got["train"][name]["global_steps"]
        assert steps == list(range(total)), (name, steps)  # every logged step, each exactly once
        assert {r["run"]["run_id"] for seg in segments for r in seg if r["type"] == "run"} == {run_id}
    first = read_wandb_file(sorted((run / "midtrain" / "wandb").glob("offline-run-*/run-*.wandb"))[0])
    assert any(r["type"] == "preempting" for r in first)  # the first attempt finished as preempted
    print(f"scontrol requeue with W&B: sweep done in {seconds:.0f}s")


def test_an_lr_grid_gives_one_run_directory_per_job(tmp_path):
    """Case 2: two array tasks that differ only in optim.lr never share a directory."""
    run_sweep(tmp_path, "experiment=control", "seed=7", "optim.lr=1e-3,3e-4", "instruct.samples=16")
    runs = run_dirs(tmp_path / "smoke_local")
    assert len(runs) == 2, runs
    assert {r.name.rsplit("-", 1)[0] for r in runs} == {"control-tiny-llama-n32-i16-s7"}
    lrs = {}
    for r in runs:
        m = json.loads((r / "metrics.json").read_text())
        assert (r / "DONE").exists() and m["run_id"] == r.name
        lr = m["settings"].get("optim.lr", 1e-3)  # settings differ from the preset's (debug=smoke: 1e-3)
        for stage in ("midtrain", "instruct"):
            saved = (r / stage / "config.yaml").read_text()
            assert f"run_id: {r.name}" in saved
        assert f"lr: {lr}" in (r / "midtrain" / "config.yaml").read_text()
        assert not list((r / "midtrain" / "checkpoints").glob("*-v1.ckpt"))
        lrs[lr] = m
    assert sorted(lrs) == [3e-4, 1e-3]
    assert "optim.lr" not in lrs[1e-3]["settings"] and lrs[3e-4]["settings"]["optim.lr"] == 3e-4
    assert lrs[3e-4]["train"]["midtrain"]["final_loss"] != lrs[1e-3]["train"]["midtrain"]["final_loss"]
    assert lrs[3e-4]["eval"]["probe"]["margin"] != lrs[1e-3]["eval"]["probe"]["margin"]


def test_a_sweep_launched_outside_the_repository_sources_env_sh(tmp_path):
    """Case 7: the job's setup line names slurm/env.sh by its absolute path."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cmd = [str(BIN / "midtrain-pipeline"), "--config-dir", str(REPO_ROOT / "sweeps"), "--config-name", "smoke_local",
           LAUNCHER, f"paths.runs_root={tmp_path}", "experiment=treatment", "seed=0", "instruct.samples=0",
           "corpus.num_docs=8", "stages.evaluate.enabled=false"]
    env = {**_env(), "MIDTRAIN_VENV": ""}
    proc = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sub = tmp_path / "smoke_local" / ".multirun" / ".submitit"
    script = next(sub.glob("*/*_submission.sh")).read_text()
    assert f"source {REPO_ROOT / 'slurm' / 'env.sh'}" in script
    errs = "".join(p.read_text() for p in sub.glob("*/*_log.err"))
    assert "env.sh" not in errs, errs[-2000:]  # "No such file or directory" when it is not found
    (run,) = run_dirs(tmp_path / "smoke_local")
    assert (run / "DONE").exists()
