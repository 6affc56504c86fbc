"""Provenance: code, library versions, hardware and SLURM attempt per stage, accumulating over resumes."""

from __future__ import annotations

import csv
import json
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from midtrain.paths import REPO_ROOT
from midtrain.pipeline import pipeline
from midtrain.tracking import RunDir
from midtrain.tracking import provenance as prov
from tests.conftest import compose_cfg
from tests.test_train import crash_instruct_once

ATTEMPT_KEYS = {"activity", "attempt", "started_at", "code", "versions", "hardware", "slurm"}
NAMED_LIBRARIES = {"python", "torch", "transformers", "pytorch-lightning", "inspect-ai", "inspect-evals", "datasets",
                   "hydra-core", "peft"}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_code_state_names_the_commit_and_hashes_the_diff(tmp_path):
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "src" / "a.py").write_text("x = 1\n")
    (repo / "README.md").write_text("docs\n")
    _git(repo, "add", "src/a.py", "README.md")
    _git(repo, "commit", "-q", "-m", "one")

    def state() -> dict:
        prov.code_state.cache_clear()
        return prov.code_state(str(repo))

    clean = state()
    assert clean["commit"] == _git(repo, "rev-parse", "HEAD") and clean["dirty"] is False
    assert clean["diff_sha256"] is None
    (repo / "README.md").write_text("more docs\n")  # docs and data are not the program
    (repo / "corpora").mkdir()
    (repo / "corpora" / "documents.jsonl").write_text('{"text": "a"}\n')
    assert state()["dirty"] is False
    (repo / "src" / "a.py").write_text("x = 2\n")
    edited = state()
    assert edited["commit"] == clean["commit"] and edited["dirty"] is True and len(edited["diff_sha256"]) == 64
    (repo / "src" / "a.py").write_text("x = 3\n")
    assert state()["diff_sha256"] != edited["diff_sha256"]  # another edit, another hash
    (repo / "src" / "a.py").write_text("x = 1\n")
    (repo / "src" / "new.py").write_text("y = 1\n")  # an untracked source file is part of the code that ran
    untracked = state()
    assert untracked["dirty"] is True and untracked["diff_sha256"] not in (None, edited["diff_sha256"])
    prov.code_state.cache_clear()
    assert prov.code_state(str(tmp_path / "not-a-repo"))["commit"] is None


def test_slurm_state_reads_job_array_task_and_restart_count():
    env = {"SLURM_JOB_ID": "4242", "SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "2",
           "SLURM_RESTART_COUNT": "3", "SLURM_JOB_NODELIST": "node01"}
    state = prov.slurm_state(env)
    assert state["job_id"] == "4242" and state["array_job_id"] == "4240" and state["array_task_id"] == "2"
    assert state["restart_count"] == 3 and state["nodelist"] == "node01"
    assert prov.slurm_state({"SLURM_JOB_ID": "7"})["restart_count"] == 0  # first run: SLURM sets no count
    assert prov.slurm_state({"HOME": "/root"}) is None


def test_portable_path_is_relative_inside_the_runs_root(tmp_path):
    root = tmp_path / "runs"
    stage = root / "sweep" / "run" / "instruct"
    assert prov.portable_path(root / "sweep" / "run" / "midtrain", stage, root) == "../midtrain"
    assert prov.portable_path(tmp_path / "elsewhere", stage, root) == str(tmp_path / "elsewhere")
    assert prov.portable_path(None, stage, root) is None
    assert prov.resolve_portable("../midtrain", stage) == (root / "sweep" / "run" / "midtrain").resolve()


def _overrides(tmp_path, *extra):
    return ["debug=smoke", f"paths.runs_root={tmp_path / 'runs'}", "sweep_name=prov", "corpus.num_docs=16",
            "data.seq_len=256", *extra]


def _check_attempt(a: dict, activity: str, n: int) -> None:
    assert ATTEMPT_KEYS <= set(a), set(a)
    assert (a["activity"], a["attempt"]) == (activity, n)
    assert a["code"]["commit"] == _git(REPO_ROOT, "rev-parse", "HEAD")
    assert isinstance(a["code"]["dirty"], bool) and (a["code"]["diff_sha256"] is not None) == a["code"]["dirty"]
    assert NAMED_LIBRARIES <= set(a["versions"])
    assert a["versions"]["transformers"] == metadata.version("transformers")
    assert a["versions"]["pytorch-lightning"] == metadata.version("pytorch-lightning")
    hw = a["hardware"]
    assert {"host", "cuda", "cudnn", "device_count", "device_name", "cpu_model", "cpu_threads"} <= set(hw)
    assert hw["device_count"] == 0 and hw["cpu_threads"] >= 1  # the tests run on CPU
    assert a["slurm"] == prov.slurm_state()


def test_pipeline_records_each_attempt_and_a_resume_adds_one(tmp_path, monkeypatch):
    cfg = compose_cfg("pipeline", _overrides(tmp_path, "experiment=control", "instruct.samples=48",
                                             "+stages.instruct.data.batch_size=2"))
    crash_instruct_once(monkeypatch)
    with pytest.raises(SystemExit, match="killed after step 5"):
        pipeline(cfg)
    run = RunDir.from_cfg(cfg)
    first = prov.read_attempts(run.path / "instruct")
    assert [a["attempt"] for a in first] == [1] and first[0]["resumed_from"] is None

    metrics = pipeline(cfg)  # the resumed run
    p = metrics["provenance"]
    assert p["attempt_count"] == {"pipeline": 2}
    for i, a in enumerate(p["attempts"], start=1):
        _check_attempt(a, "pipeline", i)
    assert set(p["stages"]) == {"midtrain", "instruct"}
    mid, ins = p["stages"]["midtrain"], p["stages"]["instruct"]
    assert mid["attempt_count"] == {"train": 1}  # finished before the crash: not run again
    assert ins["attempt_count"] == {"train": 2, "eval": 1}
    _check_attempt(ins["attempts"][0], "train", 1)
    _check_attempt(ins["attempts"][1], "train", 2)
    assert ins["attempts"][1]["resumed_from"] == "checkpoints/last.ckpt"
    assert ins["attempts"][2]["activity"] == "eval" and ins["attempts"][2]["suites"] == ["probe"]
    # Inputs: model and data sources with their revisions and file hashes.
    assert mid["inputs"]["model"]["name"] == "tiny-llama" and "revision" in mid["inputs"]["model"]
    assert mid["inputs"]["corpus"]["source"] == "template" and mid["inputs"]["corpus"]["universe"] == "urban_density"
    assert ins["inputs"]["init_from"] == "../midtrain"
    demo = Path(prov.__file__).parents[1] / "resources" / "instruct" / "demo_alpaca.jsonl"
    assert ins["inputs"]["instruct"]["file_sha256"] == prov._sha256_file(demo)
    # The stage's own metrics.json holds the same record; provenance.json holds the attempts.
    assert RunDir(run.path / "instruct").read_metrics()["provenance"] == ins
    assert json.loads((run.path / "instruct" / "provenance.json").read_text())["attempts"] == ins["attempts"]
    assert json.loads(run.metrics_path.read_text())["provenance"] == p


def test_jsonl_corpus_inputs_hash_the_file_and_its_manifest(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "documents.jsonl").write_text('{"text": "a"}\n')
    (corpus / "manifest.json").write_text('{"num_written": 1}\n')
    cfg = compose_cfg("train", ["corpus=jsonl", f"corpus.path={corpus / 'documents.jsonl'}", "corpus.name=c",
                                "corpus.revision=abc123"])
    got = prov.inputs(cfg)["corpus"]
    assert got["revision"] == "abc123" and got["path"] == str(corpus / "documents.jsonl")
    assert got["file_sha256"] == prov._sha256_file(corpus / "documents.jsonl")
    assert got["manifest_sha256"] == prov._sha256_file(corpus / "manifest.json")
    (corpus / "manifest.json").write_text('{"num_written": 2}\n')
    assert prov.inputs(cfg)["corpus"]["manifest_sha256"] != got["manifest_sha256"]


def test_wandb_config_carries_every_attempt(tmp_path):
    from midtrain.tracking.wandb import wandb_init_kwargs

    cfg = compose_cfg("train", ["logger=wandb", "logger.mode=offline", f"paths.runs_root={tmp_path}"])
    stage = tmp_path / "stage"
    prov.record_attempt(stage, "train")
    prov.record_attempt(stage, "train")
    config = wandb_init_kwargs(cfg, stage, "midtrain")["config"]
    assert config["provenance"]["attempts"] == 2
    assert set(config["provenance"]["attempt"]) == {"1", "2"}
    second = config["provenance"]["attempt"]["2"]
    assert second["attempt"] == 2 and second["versions"]["inspect-ai"] == metadata.version("inspect-ai")
    assert second["code"]["commit"] == _git(REPO_ROOT, "rev-parse", "HEAD")


# The report ----------------------------------------------------------------------------------
def _run_with_versions(sweep: Path, condition: str, seed: int, score: float, **versions: str) -> None:
    run_id = f"{condition}-tiny-llama-n100-i0-s{seed}"
    attempt = {"activity": "pipeline", "attempt": 1, **prov.environment()}
    attempt["versions"] = {**attempt["versions"], **{k.replace("_", "-"): v for k, v in versions.items()}}
    if "commit" in versions:
        attempt["code"] = {"commit": versions["commit"], "dirty": False, "diff_sha256": None}
    run = RunDir(sweep / run_id)
    run.write_metrics({"run_id": run_id, "stage": "pipeline", "condition": condition, "corpus": "c", "num_docs": 100,
                       "instruct_samples": 0, "seed": seed, "model": "tiny-llama",
                       "eval": {"probe": {"margin": score}},
                       "provenance": {"attempts": [attempt], "stages": {}}})
    run.mark_done()


def test_report_flags_a_cell_whose_runs_ran_different_versions(tmp_path):
    from midtrain.report import report

    sweep = tmp_path / "runs" / "grid"
    _run_with_versions(sweep, "treatment", 0, 0.10, transformers="5.23.0")
    _run_with_versions(sweep, "treatment", 1, 0.12, transformers="5.24.0")
    _run_with_versions(sweep, "control", 0, 0.01, transformers="5.24.0")
    _run_with_versions(sweep, "control", 1, 0.02, transformers="5.24.0")
    _run_with_versions(sweep, "base", 0, 0.00, transformers="5.24.0", commit="a" * 40)
    _run_with_versions(sweep, "base", 1, 0.00, transformers="5.24.0", commit="b" * 40)
    out = tmp_path / "report"
    cfg = compose_cfg("report", [f"sweep_dirs=[{sweep}]", f"out_dir={out}", "metric=eval.probe.margin",
                                 "dimensions=eval.none", "plots.enabled=false"])
    result = report(cfg)
    cells = {s["condition"]: s for s in result["summary"]}
    assert cells["treatment"]["provenance_differs"] == {"transformers": ["5.23.0", "5.24.0"]}
    assert cells["control"]["provenance_differs"] == {}
    assert cells["base"]["provenance_differs"] == {"code": ["a" * 12, "b" * 12]}
    md = (out / "summary.md").read_text()
    treatment_row = next(line for line in md.splitlines() if line.startswith("| tiny-llama | treatment"))
    control_row = next(line for line in md.splitlines() if line.startswith("| tiny-llama | control"))
    assert "differs: transformers" in treatment_row and "differs" not in control_row
    assert "transformers: 5.23.0 | 5.24.0" in md
    with open(out / "summary.csv") as f:
        flags = {r["condition"]: r["provenance_differs"] for r in csv.DictReader(f)}
    assert flags == {"base": f"code: {'a' * 12} | {'b' * 12}", "control": "", "treatment": "transformers: 5.23.0 | 5.24.0"}
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert {r["transformers"] for r in runs if r["condition"] == "treatment"} == {"5.23.0", "5.24.0"}
    assert {r["torch"] for r in runs} == {metadata.version("torch")}
    assert {"code", "python", "inspect-ai", "inspect-evals", "datasets", "hydra-core", "peft",
            "pytorch-lightning"} <= set(runs[0])


def test_report_flags_a_cell_mixing_recorded_and_unrecorded_runs(tmp_path):
    from midtrain.report import report

    sweep = tmp_path / "runs" / "grid"
    _run_with_versions(sweep, "treatment", 0, 0.10)
    _run_with_versions(sweep, "treatment", 1, 0.12)
    old = RunDir(sweep / "treatment-tiny-llama-n100-i0-s1")
    m = old.read_metrics()
    del m["provenance"]  # written before provenance was recorded
    old.write_metrics(m)
    cfg = compose_cfg("report", [f"sweep_dirs=[{sweep}]", f"out_dir={tmp_path / 'r'}", "metric=eval.probe.margin",
                                 "plots.enabled=false"])
    differs = report(cfg)["summary"][0]["provenance_differs"]
    assert differs["transformers"] == [metadata.version("transformers"), None]
