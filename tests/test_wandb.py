"""W&B naming, stable ids across requeues, and an offline run read back from its .wandb file."""

from __future__ import annotations

import csv
import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import wandb
from hydra import compose, initialize_config_dir

from midtrain.paths import CONF_DIR
from midtrain.tracking.wandb import (
    build_wandb_logger,
    condition_tags,
    flatten_metrics,
    log_summary,
    wandb_init_kwargs,
    wandb_run_id,
)

SECRET = "sk-test-0123456789abcdef"


def _cfg(tmp_path: Path, *extra: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "logger=wandb",
                "logger.mode=offline",
                "logger.project=midtrain-tests",
                f"paths.runs_root={tmp_path / 'runs'}",
                f"paths.cache_dir={tmp_path / 'cache'}",
                "sweep_name=wb_sweep",
                "seed=3",
                "condition=treatment",
                f"+logger.api_key={SECRET}",
                *extra,
            ],
        )


def read_wandb_records(path: Path, timeout: float = 60.0) -> list:
    """The records of a .wandb file once W&B's service has written the run's exit record
    (it writes after ``finish()`` returns), waiting up to ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        records = _parse_wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def _parse_wandb_records(path: Path) -> list:
    """Parse a .wandb transaction log (LevelDB log framing of protobuf ``Record`` messages)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # trailer too short for a header: skip to the next block
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            pos += block - pos % block if pos % block else 0
            continue
        if kind == 1:  # full record
            pending, payload = b"", chunk
        elif kind == 2:  # first fragment
            pending = chunk
            continue
        elif kind == 3:  # middle fragment
            pending += chunk
            continue
        else:  # last fragment
            payload, pending = pending + chunk, b""
        rec = pb.Record()
        rec.ParseFromString(payload)
        records.append(rec)
    return records


def test_tags_and_config_without_secrets(tmp_path):
    cfg = _cfg(tmp_path)
    tags = condition_tags(cfg)
    assert tags == [
        "condition=treatment",
        f"corpus={cfg.corpus.name}",
        f"num_docs={cfg.corpus.num_docs}",
        "instruct_samples=0",
        "seed=3",
        f"model={cfg.model.name}",
        "preserve=none",
    ]
    kwargs = wandb_init_kwargs(cfg, tmp_path / "run", "midtrain")
    assert kwargs["group"] == "wb_sweep" and kwargs["name"] == cfg.run_id
    assert kwargs["job_type"] == "midtrain" and kwargs["resume"] == "allow"
    assert SECRET not in json.dumps(kwargs["config"])
    assert kwargs["config"]["logger"]["api_key"] == "<redacted>"
    assert kwargs["config"]["optim"]["lr"] == cfg.optim.lr  # resolved values, not interpolations


def test_config_carries_the_hash_the_run_directory_is_named_by(tmp_path):
    from midtrain.tracking.identity import stage_hash

    cfg = _cfg(tmp_path)
    stage = wandb_init_kwargs(cfg, tmp_path / "run", "midtrain")["config"]
    assert stage["stage_hash"] == stage_hash(cfg) and "run_hash" not in stage
    other = wandb_init_kwargs(_cfg(tmp_path, "optim.lr=3e-4"), tmp_path / "run2", "midtrain")["config"]
    assert other["stage_hash"] != stage["stage_hash"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        pipe = compose("pipeline", overrides=["logger=wandb", "logger.project=p", "debug=smoke",
                                              f"paths.runs_root={tmp_path / 'runs'}", "sweep_name=s"])
    config = wandb_init_kwargs(pipe, tmp_path / "run3", "pipeline")["config"]
    assert pipe.run_id.endswith(config["run_hash"])  # the directory's suffix


def test_run_id_is_stable_per_run_dir_and_stage(tmp_path):
    a = wandb_run_id(tmp_path / "r1", "midtrain")
    assert a == wandb_run_id(tmp_path / "r1", "midtrain")  # the requeued job
    assert a != wandb_run_id(tmp_path / "r1", "instruct")
    assert a != wandb_run_id(tmp_path / "r2", "midtrain")
    stored = json.loads((tmp_path / "r1" / "wandb_ids.json").read_text())
    assert stored == {"midtrain": a, "instruct": wandb_run_id(tmp_path / "r1", "instruct")}


def test_bad_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="logger.mode.*'sometimes'"):
        wandb_init_kwargs(_cfg(tmp_path, "logger.mode=sometimes"), tmp_path, "midtrain")


def test_flatten_metrics_keeps_scalars():
    flat = flatten_metrics({"eval": {"anima": {"overall_mean": 0.7, "by_dimension": {"a": 0.5}}}, "n": 3,
                            "x": None, "l": [1, 2], "ok": True})
    assert flat == {"eval/anima/overall_mean": 0.7, "eval/anima/by_dimension/a": 0.5, "n": 3}


@pytest.mark.wandb
def test_offline_run_reads_back(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    cfg = _cfg(tmp_path)
    run_dir = tmp_path / "run"
    logger = build_wandb_logger(cfg, run_dir, "midtrain")
    logger.log_metrics({"train/loss": 2.5}, step=0)
    logger.log_metrics({"train/loss": 1.25}, step=1)
    log_summary(logger.experiment, {"eval": {"anima": {"overall_mean": 0.625}}})
    logger.experiment.finish()
    # finish() may return before the W&B service has written the offline file (wandb 0.31);
    # teardown waits for the service to flush and exit.
    wandb.teardown()

    run_id = wandb_run_id(run_dir, "midtrain")
    files = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1, sorted(p.name for p in (run_dir / "wandb").iterdir())
    records = read_wandb_records(files[0])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_id == run_id
    assert run.run_group == "wb_sweep" and run.job_type == "midtrain" and run.display_name == cfg.run_id
    assert run.project == "midtrain-tests"
    assert set(run.tags) >= {"condition=treatment", "seed=3", f"num_docs={cfg.corpus.num_docs}"}
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["seed"] == 3 and config["sweep_name"] == "wb_sweep"
    assert config["optim"]["lr"] == cfg.optim.lr
    assert config["logger"]["api_key"] == "<redacted>"
    assert SECRET.encode() not in files[0].read_bytes()

    history = [
        {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    assert [h["train/loss"] for h in history if "train/loss" in h] == [2.5, 1.25]
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({"/".join(u.nested_key) or u.key: json.loads(u.value_json) for u in r.summary.update})
    assert summary["eval/anima/overall_mean"] == 0.625


@pytest.mark.wandb
def test_training_stage_logs_to_an_offline_wandb_run(tmp_path, monkeypatch):
    """The trainer's own wiring: loss and lr reach the stage's W&B run, named by the contract."""
    from midtrain.train import train
    from tests.conftest import compose_cfg, smoke_overrides

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_cfg("train", smoke_overrides(tmp_path) + ["logger=wandb", "sweep_name=wb", "condition=treatment"])
    train(cfg)
    run_dir = Path(cfg.run_dir)
    run_id = wandb_run_id(run_dir, "midtrain")
    files = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1
    records = read_wandb_records(files[0])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (run.run_group, run.job_type, run.display_name) == ("wb", "midtrain", cfg.run_id)
    assert "condition=treatment" in set(run.tags)
    keys = {"/".join(i.nested_key) or i.key for r in records if r.WhichOneof("record_type") == "history"
            for i in r.history.item}
    assert {"train/loss", "train/lr"} <= keys
    summary = {"/".join(u.nested_key) or u.key: json.loads(u.value_json)
               for r in records if r.WhichOneof("record_type") == "summary" for u in r.summary.update}
    assert summary["train/final_loss"] == json.loads((run_dir / "metrics.json").read_text())["train"]["final_loss"]
    assert (run_dir / "logs" / "midtrain" / "metrics.csv").exists()  # also_csv
    config = {u.key: json.loads(u.value_json) for r in records if r.WhichOneof("record_type") == "run"
              for u in r.run.config.update}
    attempt = json.loads((run_dir / "provenance.json").read_text())["attempts"][0]
    assert config["provenance"]["attempts"] == 1
    assert config["provenance"]["attempt"]["1"]["versions"] == attempt["versions"]
    assert config["provenance"]["attempt"]["1"]["code"] == attempt["code"]


def read_wandb_file(path: Path) -> list[dict]:
    """The records of a ``.wandb`` transaction log, read by wandb's own reader (``wandb leet inspect``)."""
    proc = subprocess.run([str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--json", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{path}: {proc.stderr[-2000:]}"
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def wandb_segments(run_dir: Path) -> list[list[dict]]:
    """Every ``.wandb`` file under ``<run_dir>/wandb/`` (one per attempt of each W&B run), oldest first."""
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    return [read_wandb_file(f) for f in files]


def history_steps(records: list[dict]) -> list[int]:
    return [r["history"]["item"]["trainer/global_step"] for r in records
            if r["type"] == "history" and "trainer/global_step" in r["history"]["item"]]


class _TerminateJob(pl.Callback):
    """What SLURM does on preemption or `scontrol requeue`: SIGTERM to every process of the job,
    the W&B service included, in the middle of a training step."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step != self.at_step:
            return
        import psutil

        service = [p for p in psutil.Process().children(recursive=True) if "wandb-core" in p.name()]
        assert service, "no W&B service process to terminate"
        for p in service:
            p.send_signal(signal.SIGTERM)
        psutil.wait_procs(service, timeout=30)
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.wandb
def test_sigterm_to_the_whole_job_keeps_every_step_once_under_one_run(tmp_path, monkeypatch):
    """The W&B service dies with the job's SIGTERM: the attempt still ends at its checkpoint with
    the W&B run finished as preempted, and the resumed attempt continues the same run."""
    from midtrain.train import train
    from tests.conftest import compose_cfg, smoke_overrides

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")  # SIGTERM is handled as in a submitit job
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR2)}
    cfg = compose_cfg("train", smoke_overrides(tmp_path) + ["logger=wandb", "sweep_name=wb", "condition=treatment",
                                                            "corpus.num_docs=48"])
    try:
        with pytest.raises(SystemExit) as stop:
            train(cfg, callbacks=[_TerminateJob(at_step=2)])
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    assert stop.value.code == 128 + signal.SIGTERM
    run_dir = Path(cfg.run_dir)
    first = wandb_segments(run_dir)
    assert len(first) == 1 and history_steps(first[0]) == [0, 1, 2]  # up to the checkpoint at step 3
    assert any(r["type"] == "preempting" for r in first[0])
    assert [r["exit"]["exit_code"] for r in first[0] if r["type"] == "exit"] == [128 + signal.SIGTERM]
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb.superseded")), "the dead service's file"

    metrics = train(cfg)
    total = metrics["train"]["global_steps"]
    assert total > 5
    segments = wandb_segments(run_dir)
    assert len(segments) == 2
    steps = [s for seg in segments for s in history_steps(seg)]
    assert steps == list(range(total))  # every logged step exactly once
    run_ids = {r["run"]["run_id"] for seg in segments for r in seg if r["type"] == "run"}
    assert run_ids == {wandb_run_id(run_dir, "midtrain")}
    csv_steps = [int(row["step"]) for v in ("midtrain", "midtrain.1")
                 for row in csv.DictReader((run_dir / "logs" / v / "metrics.csv").open())]
    assert csv_steps == list(range(total))
    assert metrics["throughput"]["attempt"] == 2


def test_init_kwargs_name_the_run_by_the_contract(tmp_path):
    cfg = _cfg(tmp_path, "+logger.entity=lab")
    run_dir = tmp_path / "new" / "run"
    kwargs = wandb_init_kwargs(cfg, run_dir, "instruct")
    assert run_dir.is_dir()  # W&B's files go inside the run directory, created if needed
    assert kwargs["project"] == "midtrain-tests" and kwargs["entity"] == "lab" and kwargs["mode"] == "offline"
    assert kwargs["id"] == wandb_run_id(run_dir, "instruct") and kwargs["dir"] == str(run_dir)
    assert kwargs["tags"] == condition_tags(cfg)
    assert "hydra" not in kwargs["config"]
    assert set(kwargs) == {"project", "entity", "mode", "group", "name", "job_type", "tags", "config", "id",
                           "resume", "dir", "settings"}
    assert wandb_init_kwargs(_cfg(tmp_path), run_dir, "instruct")["entity"] is None


@pytest.mark.parametrize("override,pattern", [
    ("logger.project=null", "logger.project: a W&B project name is required"),
    ("run_id=''", "run_id: required to name the W&B run"),
])
def test_init_kwargs_need_a_project_and_a_run_id(tmp_path, override, pattern):
    with pytest.raises(ValueError, match=pattern):
        wandb_init_kwargs(_cfg(tmp_path, override), tmp_path, "midtrain")


def test_mode_defaults_to_online(tmp_path):
    assert wandb_init_kwargs(_cfg(tmp_path, "logger.mode=null"), tmp_path, "midtrain")["mode"] == "online"


def test_init_run_opens_wandb_with_those_kwargs(tmp_path, monkeypatch):
    from midtrain.tracking.wandb import init_run

    seen = {}
    monkeypatch.setattr(wandb, "init", lambda **kw: seen.update(kw) or "run")
    cfg = _cfg(tmp_path)
    assert init_run(cfg, tmp_path / "r", "eval") == "run"
    assert seen == wandb_init_kwargs(cfg, tmp_path / "r", "eval")


def test_tags_skip_absent_keys_and_fit_the_length_limit(tmp_path):
    cfg = _cfg(tmp_path, "condition=null", f"corpus.name={'c' * 80}")
    tags = condition_tags(cfg)
    assert not any(t.startswith("condition=") for t in tags)
    corpus = next(t for t in tags if t.startswith("corpus="))
    assert corpus == ("corpus=" + "c" * 80)[:64]
    assert condition_tags(_cfg(tmp_path, "condition=''"))[0].startswith("corpus=")


def test_a_corrupt_ids_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "wandb_ids.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"wandb_ids.json: expected a JSON object of stage -> W&B run id, got list"):
        wandb_run_id(tmp_path, "midtrain")


def test_run_ids_are_short_hashes_kept_on_disk(tmp_path):
    run_id = wandb_run_id(tmp_path / "r", "midtrain")
    assert len(run_id) == 20 and int(run_id, 16) >= 0
    (tmp_path / "r" / "wandb_ids.json").write_text(json.dumps({"midtrain": "kept-id"}))
    assert wandb_run_id(tmp_path / "r", "midtrain") == "kept-id"  # read back, not derived again


def test_summaries_are_flat_and_prefixed():
    class Run:
        def __init__(self):
            self.summary = {}

    run = Run()
    flat = log_summary(run, {"anima": {"overall_mean": 0.5, "n": None}, "label": "x", "ok": False}, prefix="eval")
    assert flat == run.summary == {"eval/anima/overall_mean": 0.5, "eval/label": "x"}
    assert flatten_metrics({"a": {"b": 1}}, sep=".") == {"a.b": 1}
    empty = Run()
    empty.summary = None  # nothing to write: the summary is not touched
    assert log_summary(empty, {"x": None}) == {}


def test_the_lightning_logger_writes_inside_the_run_dir_and_uploads_no_checkpoints(tmp_path):
    logger = build_wandb_logger(_cfg(tmp_path), tmp_path / "run", "midtrain")
    assert logger.save_dir == str(tmp_path / "run")
    assert logger._log_model is False  # checkpoints stay on the cluster's disk
    assert logger._wandb_init["id"] == wandb_run_id(tmp_path / "run", "midtrain")


# TrainingWandbLogger against stand-in W&B runs: what it keeps, resends and renames ----------
class _Summary(dict):
    pass


class _Config:
    def __init__(self):
        self.updates = []

    def update(self, params, allow_val_change=False):
        self.updates.append((params, allow_val_change))


class _FakeRun:
    """The parts of a wandb run the logger uses; `fail_at` makes the n-th `log` call (0-based)
    and every later call raise as a lost service does."""

    def __init__(self, sync_file=None, resumed=False, summary=None, fail_at=None):
        self.logged, self.defined, self.config = [], [], _Config()
        self.summary = _Summary(summary or {})
        self.resumed, self.preempting, self.exit_codes = resumed, False, []
        self.fail_at, self.id = fail_at, "fake"
        self.settings = type("S", (), {"sync_file": None if sync_file is None else str(sync_file)})()

    def log(self, row):
        if self.fail_at is not None and len(self.logged) >= self.fail_at:
            raise ConnectionResetError("connection to the W&B service lost")
        self.logged.append(row)

    def define_metric(self, name, **kw):
        self.defined.append((name, kw))

    def mark_preempting(self):
        self.preempting = True

    def finish(self, exit_code=None):
        self.exit_codes.append(exit_code)


def _logger(tmp_path, run):
    from midtrain.tracking.wandb_logger import TrainingWandbLogger

    logger = TrainingWandbLogger(project="p", save_dir=str(tmp_path), id="abc", mode="offline", log_model=False)
    logger._experiment = run
    return logger


def _patch_wandb(monkeypatch, new_run):
    import inspect

    calls = {"init": [], "teardown": 0}
    signature = inspect.signature(wandb.init)

    def init(**kw):
        signature.bind(**kw)  # an unknown keyword fails as in wandb
        calls["init"].append(kw)
        return new_run

    def teardown():
        calls["teardown"] += 1

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(wandb, "teardown", teardown)
    return calls


def test_a_lost_service_stops_sending_and_finish_writes_every_row_to_the_reopened_run(tmp_path, monkeypatch):
    import torch

    dead_file = tmp_path / "old" / "run-abc.wandb"
    dead_file.parent.mkdir()
    dead_file.write_bytes(b":W&B")
    dead = _FakeRun(sync_file=dead_file, fail_at=1)
    new = _FakeRun(sync_file=tmp_path / "new" / "run-abc.wandb")
    calls = _patch_wandb(monkeypatch, new)
    logger = _logger(tmp_path, dead)
    assert not logger.service_lost
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"train/loss": torch.tensor(2.5)}, step=0)
    logger.log_metrics({"train/loss": 1.5}, step=1)  # the service is gone here
    assert logger.service_lost
    logger.log_metrics({"train/loss": 1.0}, step=2)
    logger.log_metrics({"eval/n": 4})
    assert dead.logged == [{"train/loss": torch.tensor(2.5), "trainer/global_step": 0}]
    logger.finish(summary={"eval": {"acc": 0.5}}, preempted=True, exit_code=143)

    assert len(calls["init"]) == 1 and calls["init"][0]["resume"] == "allow" and calls["init"][0]["id"] == "abc"
    assert calls["teardown"] == 2  # the lost service is forgotten, and the new one waited for
    assert new.defined == [("trainer/global_step", {}),
                           ("*", {"step_metric": "trainer/global_step", "step_sync": True})]
    assert new.config.updates == [({"lr": 0.1}, True)]
    assert new.logged == [{"train/loss": 2.5, "trainer/global_step": 0}, {"train/loss": 1.5, "trainer/global_step": 1},
                          {"train/loss": 1.0, "trainer/global_step": 2}, {"eval/n": 4}]
    assert type(new.logged[0]["train/loss"]) is float  # a tensor is kept as its number
    assert dict(new.summary) == {"eval/acc": 0.5} and new.preempting and new.exit_codes == [143]
    assert dead.exit_codes == [] and logger.experiment is new
    assert not dead_file.exists() and (tmp_path / "old" / "run-abc.wandb.superseded").read_bytes() == b":W&B"
    logger.finish(summary={"eval": {"acc": 0.9}})  # a second finish and later rows are ignored
    logger.log_metrics({"train/loss": 0.5}, step=3)
    assert len(calls["init"]) == 1 and new.exit_codes == [143] and len(new.logged) == 4


def test_a_resumed_run_gets_only_the_steps_its_server_does_not_hold(tmp_path, monkeypatch):
    dead = _FakeRun(fail_at=0)  # no transaction log (e.g. online without a sync file)
    new = _FakeRun(resumed=True, summary={"trainer/global_step": 1})
    calls = _patch_wandb(monkeypatch, new)
    logger = _logger(tmp_path, dead)
    logger.log_metrics({"a": 1.0})
    for step in range(3):
        logger.log_metrics({"loss": float(step)}, step=step)
    logger.finish(exit_code=1)
    assert new.logged == [{"a": 1.0}, {"loss": 2.0, "trainer/global_step": 2}]
    assert new.exit_codes == [1] and not new.preempting and calls["teardown"] == 2
    assert list(tmp_path.rglob("*.superseded")) == []


def test_a_reopened_run_writing_the_same_file_keeps_it(tmp_path, monkeypatch):
    same = tmp_path / "run-abc.wandb"
    same.write_bytes(b":W&B")
    new = _FakeRun(sync_file=same)
    _patch_wandb(monkeypatch, new)
    logger = _logger(tmp_path, _FakeRun(sync_file=same, fail_at=0))
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finish()
    assert same.exists() and list(tmp_path.rglob("*.superseded")) == []
    assert new.logged == [{"loss": 1.0, "trainer/global_step": 0}] and new.exit_codes == [0]


def test_a_dead_run_without_settings_is_reopened_all_the_same(tmp_path, monkeypatch):
    class Broken(_FakeRun):
        @property
        def settings(self):
            raise RuntimeError("a disabled run has no settings")

        @settings.setter
        def settings(self, value):
            pass

    new = _FakeRun(sync_file=tmp_path / "run-abc.wandb")
    _patch_wandb(monkeypatch, new)
    logger = _logger(tmp_path, Broken(fail_at=0))
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finish()
    assert new.logged == [{"loss": 1.0, "trainer/global_step": 0}] and new.exit_codes == [0]


def test_a_healthy_run_is_finished_in_place_and_takes_no_rows_after(tmp_path, monkeypatch):
    run = _FakeRun()
    calls = _patch_wandb(monkeypatch, _FakeRun())
    logger = _logger(tmp_path, run)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finish(summary={"train": {"final_loss": 1.0}})
    logger.log_metrics({"loss": 0.5}, step=1)
    assert run.logged == [{"loss": 1.0, "trainer/global_step": 0}]
    assert dict(run.summary) == {"train/final_loss": 1.0} and run.exit_codes == [0] and not run.preempting
    assert calls == {"init": [], "teardown": 0}  # nothing to reopen or wait for


def test_the_training_logger_takes_lightnings_arguments(tmp_path):
    from midtrain.tracking.wandb_logger import TrainingWandbLogger

    logger = TrainingWandbLogger("run-name", str(tmp_path), project="p", mode="offline")
    assert logger._wandb_init["name"] == "run-name" and logger.save_dir == str(tmp_path)
    assert logger._wandb_init["project"] == "p" and logger._wandb_init["mode"] == "offline"


def test_the_transaction_log_of_a_run_without_one_is_none(tmp_path):
    from types import SimpleNamespace

    from midtrain.tracking.wandb_logger import _transaction_log

    assert _transaction_log(SimpleNamespace(settings=SimpleNamespace(sync_file=None))) is None
    assert _transaction_log(SimpleNamespace(settings=SimpleNamespace(sync_file=""))) is None
    assert _transaction_log(SimpleNamespace()) is None
    assert _transaction_log(SimpleNamespace(settings=SimpleNamespace(sync_file=str(tmp_path / "r.wandb")))) == \
        tmp_path / "r.wandb"


# W&B naming and config, edge cases ---------------------------------------------------------
def test_the_wandb_config_keeps_missing_values_resolves_the_rest_and_drops_only_hydra():
    from omegaconf import OmegaConf

    from midtrain.tracking.wandb import wandb_config

    cfg = OmegaConf.create({"a": "???", "b": "${c}", "c": 2, "logger": {"api_key": SECRET}})
    assert wandb_config(cfg) == {"a": "???", "b": 2, "c": 2, "logger": {"api_key": "<redacted>"}}
    assert wandb_config(OmegaConf.create({"c": 1, "hydra": {"run": {"dir": "x"}}})) == {"c": 1}


def test_wandb_settings_keep_code_requirements_and_the_command_out():
    from midtrain.tracking.wandb import wandb_settings

    s = wandb_settings()
    # argv, the environment, the code and git state stay out of the run's metadata
    assert s.x_disable_meta is True and s.disable_code is True and s.disable_git is True
    assert s.save_code is False  # not left to the W&B account's default
    assert s.x_save_requirements is False and s.disable_job_creation is True
    assert s.program == "midtrain"  # not the script path W&B would detect


def test_the_pipelines_run_carries_the_whole_runs_hash_whatever_its_objective(tmp_path):
    from midtrain.tracking.identity import config_hash

    cfg = _cfg(tmp_path)  # objective=lm
    config = wandb_init_kwargs(cfg, tmp_path / "run", "pipeline")["config"]
    assert config["run_hash"] == config_hash(cfg) and "stage_hash" not in config


def test_an_sft_stage_carries_its_own_stage_hash(tmp_path):
    from midtrain.tracking.identity import stage_hash
    from midtrain.tracking.wandb import _identity_keys

    cfg = _cfg(tmp_path, "objective=sft")
    assert _identity_keys(cfg, "instruct") == {"stage_hash": stage_hash(cfg)}


def test_a_config_without_a_sweep_name_is_grouped_as_default(tmp_path):
    from omegaconf import OmegaConf

    from midtrain.tracking.provenance import wandb_provenance

    cfg = OmegaConf.create({"logger": {"project": "p", "mode": "offline"}, "run_id": "r1"})
    kwargs = wandb_init_kwargs(cfg, tmp_path / "run", "eval")
    assert kwargs["group"] == "default" and kwargs["name"] == "r1" and kwargs["tags"] == []
    assert kwargs["config"]["provenance"] == wandb_provenance(tmp_path / "run") == {"attempts": 0, "attempt": {}}
