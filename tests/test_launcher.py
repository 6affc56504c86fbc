"""Launcher presets compose on the typed submitit nodes, pair with trainer presets, and reject typos."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from midtrain.paths import CONF_DIR, REPO_ROOT

LAUNCHER_DIR = CONF_DIR / "hydra" / "launcher"
# Each launcher preset and the trainer preset it runs with: tasks per node must equal devices.
PAIRED_TRAINER = {
    "slurm_1gpu": "default",
    "slurm_8gpu": "fsdp_8gpu",
    "slurm_cpu": "default",
    "slurm_cpu2": "ddp_cpu2",
    "local": "default",
}


def _compose(launcher: str, *overrides: str, config_dir: Path = CONF_DIR, name: str = "train"):
    # HydraConfig is deliberately not set: Hydra instantiates the launcher before it sets it,
    # so launcher values must not use the ${hydra:...} resolver.
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(name, overrides=[f"hydra/launcher={launcher}", "paths.runs_root=/shared/runs", *overrides],
                       return_hydra_config=True)


def test_every_preset_has_a_paired_trainer():
    assert sorted(p.stem for p in LAUNCHER_DIR.glob("*.yaml")) == sorted(PAIRED_TRAINER)


@pytest.mark.parametrize("launcher", sorted(PAIRED_TRAINER))
def test_preset_composes_and_matches_trainer_devices(launcher):
    cfg = _compose(launcher, f"trainer={PAIRED_TRAINER[launcher]}")
    hl = cfg.hydra.launcher
    assert hl.tasks_per_node == cfg.trainer.devices
    assert hl.nodes == cfg.trainer.num_nodes
    if launcher.startswith("slurm"):
        assert hl._target_.endswith("SlurmLauncher")
        assert hl.max_num_timeout > 0, "submitit must be allowed to requeue after a time limit"
        assert hl.additional_parameters.requeue is True
        gpus = hl.gpus_per_node or 0
        assert gpus in (0, cfg.trainer.devices), "one task per GPU"
        setup = OmegaConf.to_container(hl, resolve=True)["setup"]
        # Absolute, resolved when the sweep is launched: found whatever directory it starts from.
        assert setup == [f"source {REPO_ROOT / 'slurm' / 'env.sh'}"]
    else:
        assert hl._target_.endswith("LocalLauncher")
    launcher_obj = instantiate(hl)
    assert launcher_obj.params["tasks_per_node"] == cfg.trainer.devices


def test_default_paths_resolve_when_the_launcher_is_built():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm_cpu"], return_hydra_config=True)
    assert OmegaConf.to_container(cfg.hydra.launcher, resolve=True)["submitit_folder"].endswith("/.submitit/%j")


def test_fsdp_trainer_has_the_default_trainer_keys():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        default = compose("train").trainer
        fsdp = compose("train", overrides=["trainer=fsdp_8gpu"]).trainer
        ddp = compose("train", overrides=["trainer=ddp_cpu2"]).trainer
    assert sorted(fsdp.keys()) == sorted(default.keys()) == sorted(ddp.keys())
    assert fsdp.strategy == "fsdp" and fsdp.devices == 8
    assert ddp.strategy == "ddp" and ddp.devices == 2 and ddp.accelerator == "cpu"


@pytest.mark.parametrize("name", ["train", "pipeline"])
@pytest.mark.parametrize("trainer, launcher, ok", [
    ("ddp_cpu2", "slurm_cpu2", True),
    ("default", "slurm_1gpu", True),
    ("ddp_cpu2", "slurm_cpu", False),    # 2 devices, 1 task per node
    ("fsdp_8gpu", "slurm_1gpu", False),  # 8 devices, 1 task per node
    ("default", "slurm_8gpu", False),    # 1 device, 8 tasks per node
])
def test_devices_and_tasks_per_node_must_agree_at_launch(name, trainer, launcher, ok):
    from midtrain.launch import LaunchCheck

    cfg = _compose(launcher, f"trainer={trainer}", name=name)
    if ok:
        LaunchCheck().on_multirun_start(cfg)
    else:
        with pytest.raises(ValueError, match=r"trainer.devices=\d+ but hydra.launcher.tasks_per_node=\d+"):
            LaunchCheck().on_multirun_start(cfg)


def test_launch_check_is_registered_with_hydra():
    for name in ("train", "pipeline"):
        cfg = _compose("local", name=name)
        assert cfg.hydra.callbacks.launch_check._target_ == "midtrain.launch.LaunchCheck"


def test_a_running_job_checks_slurms_task_count(monkeypatch):
    from midtrain.launch import check_devices

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=ddp_cpu2"])
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    check_devices(cfg)
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "1(x2)")
    with pytest.raises(ValueError, match="trainer.devices=2 but hydra.launcher.tasks_per_node=1"):
        check_devices(cfg)


def test_fsdp_on_cpu_is_refused_by_name():
    from midtrain.launch import check_devices

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=fsdp_8gpu", "trainer.accelerator=cpu", "trainer.devices=2"])
    with pytest.raises(ValueError, match="trainer.strategy=fsdp needs GPUs"):
        check_devices(cfg)


def test_site_settings_reach_sbatch(tmp_path, monkeypatch):
    """Account and partition from the `slurm:` block of conf/local land in the sbatch header."""
    import submitit
    from submitit.slurm import slurm

    # Only the sbatch text is built, so no cluster is needed: submitit's executor refuses to exist
    # where `srun` is not on PATH, which is every machine without the SLURM client.
    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))

    cfg = _compose("slurm_8gpu", "trainer=fsdp_8gpu", "+slurm.account=lab", "+slurm.partition=h100",
                   "+slurm.env_script=/opt/site/env.sh")
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params["account"] == "lab" and params["partition"] == "h100"
    # The same translation hydra-submitit-launcher does in `launch()`, then submitit's sbatch text.
    base = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "name",
            "stderr_to_stdout"}
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    executor.update_parameters(**{
        k if k in base else f"slurm_{k}": v
        for k, v in params.items()
        if k not in {"_target_", "submitit_folder", "max_num_timeout"}
    })
    sbatch = executor._executor._make_submission_file_text("python -m x", "uid")
    for line in ("#SBATCH --account=lab", "#SBATCH --partition=h100", "#SBATCH --requeue",
                 "#SBATCH --signal=USR2@180", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "source /opt/site/env.sh"):
        assert line in sbatch, line


def test_unknown_key_in_a_preset_fails_at_composition(tmp_path):
    """A typo in a preset fails on the login node, when Hydra composes, before anything is submitted."""
    (tmp_path / "hydra" / "launcher").mkdir(parents=True)
    text = (LAUNCHER_DIR / "slurm_1gpu.yaml").read_text().replace("gpus_per_node: 1", "gpus_per_nod: 1")
    (tmp_path / "hydra" / "launcher" / "typo.yaml").write_text(text)
    (tmp_path / "primary.yaml").write_text(
        f"defaults:\n  - train\n  - _self_\nhydra:\n  searchpath:\n    - file://{CONF_DIR}\n"
    )
    with pytest.raises(ConfigCompositionException) as err:
        with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
            compose("primary", overrides=["hydra/launcher=typo"], return_hydra_config=True)
    assert "gpus_per_nod" in str(err.value.__cause__ or err.value)


def test_unknown_key_on_the_command_line_fails():
    with pytest.raises(ConfigCompositionException, match="gpus_per_nod"):
        _compose("slurm_1gpu", "hydra.launcher.gpus_per_nod=2")


def test_env_script_exists_and_is_sourceable():
    env = REPO_ROOT / "slurm" / "env.sh"
    assert env.is_file()
    import subprocess

    out = subprocess.run(["bash", "-c", f"set -eu; source {env}; echo OMP=$OMP_NUM_THREADS"],
                         capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert "OMP=1" in out.stdout


def _failed(error: BaseException):
    from hydra.core.utils import JobReturn, JobStatus

    ret = JobReturn()
    ret.status, ret._return_value = JobStatus.FAILED, error
    return ret


def test_a_job_that_fails_after_sigterm_leaves_no_result(monkeypatch):
    """SLURM's SIGTERM (preemption, scontrol requeue) killed something the job needed: the job must
    exit without a result, or the waiting sweep reports the failure while SLURM runs the task again."""
    import os
    import signal

    from hydra_plugins.midtrain_launcher import RequeueAwareSlurmLauncher

    # hydra-submitit's SlurmLauncher (Hydra's plugin scan may have loaded it as another module object).
    (SlurmLauncher,) = RequeueAwareSlurmLauncher.__bases__
    assert SlurmLauncher.__name__ == "SlurmLauncher"

    bypassed = []
    saved = signal.signal(signal.SIGTERM, lambda s, f: bypassed.append(s))  # what submitit installs
    try:
        def terminated_then_failed(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            return _failed(ConnectionResetError("Connection lost"))

        monkeypatch.setattr(SlurmLauncher, "__call__", terminated_then_failed)
        with pytest.raises(SystemExit) as stop:
            RequeueAwareSlurmLauncher()([], "hydra.sweep.dir", 0, "job_id_for_0", {})
        assert stop.value.code == 128 + signal.SIGTERM
        assert bypassed == [signal.SIGTERM]  # submitit's handler still saw it

        # Without a SIGTERM a failure is reported as usual.
        monkeypatch.setattr(SlurmLauncher, "__call__", lambda self, *a, **k: _failed(ValueError("bad")))
        ret = RequeueAwareSlurmLauncher()([], "hydra.sweep.dir", 0, "job_id_for_0", {})
        assert isinstance(ret._return_value, ValueError)
        assert signal.getsignal(signal.SIGTERM) is not None and not bypassed[1:]
    finally:
        signal.signal(signal.SIGTERM, saved)
