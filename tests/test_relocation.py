"""A sweep directory moved to other storage still resumes its unfinished runs and reports its finished ones."""

from __future__ import annotations

import shutil

import pytest

from midtrain.pipeline import pipeline
from midtrain.tracking import RunDir
from tests.conftest import compose_cfg
from tests.test_train import crash_instruct_once


def _cfg(root, *extra):
    return compose_cfg("pipeline", ["debug=smoke", f"paths.runs_root={root}", "sweep_name=grid", "corpus.num_docs=16",
                                    "data.seq_len=256", *extra])


FINISHED = ("experiment=base", "instruct.samples=0")  # the base model, exported and probed
UNFINISHED = ("experiment=control", "instruct.samples=48", "+stages.instruct.data.batch_size=2")


def test_moved_sweep_resumes_an_unfinished_run_and_reports_a_finished_one(tmp_path, monkeypatch):
    old_root, new_root = tmp_path / "scratch" / "runs", tmp_path / "archive" / "runs"
    finished = pipeline(_cfg(old_root, *FINISHED))
    crash_instruct_once(monkeypatch)
    with pytest.raises(SystemExit, match="killed after step 5"):
        pipeline(_cfg(old_root, *UNFINISHED))

    new_root.mkdir(parents=True)
    shutil.move(str(old_root / "grid"), str(new_root / "grid"))
    assert not (old_root / "grid").exists()

    import midtrain.data.datamodule as dm

    prepared: list[str] = []
    real_prepare = dm.PackedDataModule.prepare

    def spy(self):
        prepared.append(self.cfg.stage)
        return real_prepare(self)

    monkeypatch.setattr(dm.PackedDataModule, "prepare", spy)
    cfg = _cfg(new_root, *UNFINISHED)
    resumed = pipeline(cfg)
    assert prepared == ["instruct"]  # midtraining is not redone at the new place
    run = RunDir.from_cfg(cfg)
    assert run.path.parent == new_root / "grid" and run.is_done()
    log = "\n".join(p.read_text() for p in (run.path / "instruct" / "logs").glob("*/metrics.csv"))
    assert len(list((run.path / "instruct" / "logs").glob("*/metrics.csv"))) == 2, log  # two attempts, one run
    assert resumed["train"]["instruct"]["global_steps"] == resumed["train"]["instruct"]["steps"] > 5
    assert resumed["train"]["instruct"]["init_from"] == "../midtrain"
    assert pipeline(_cfg(new_root, *FINISHED)) == finished  # DONE at the new place: nothing to do

    # Nothing the runs wrote points back at the old location.
    for path in (new_root / "grid").rglob("*"):
        if path.suffix in (".json", ".yaml", ".csv") and ".hydra_logs" not in path.parts and path.is_file():
            assert str(tmp_path / "scratch") not in path.read_text(), path

    from midtrain.report import report

    out = tmp_path / "report"
    result = report(compose_cfg("report", [f"sweep_dirs=[{new_root / 'grid'}]", f"out_dir={out}",
                                           "metric=eval.probe.margin", "plots.enabled=false"]))
    assert result["problems"] == [] and result["missing"] == []
    scores = {r["condition"]: r["score"] for r in result["runs"]}
    assert scores == {"base": finished["eval"]["probe"]["margin"], "control": resumed["eval"]["probe"]["margin"]}
    assert all(r["source"].startswith(str(new_root)) for r in result["runs"])
