"""Checks of how a job is laid out on the machine, run before anything trains or is written.

Lightning maps one SLURM task to one device (rank), so a launcher preset whose
`tasks_per_node` differs from `trainer.devices` would start the wrong number of processes for
the strategy: the job would hang at the process-group rendezvous or train on a silently
smaller world. `check_devices` is called by the stage entry points; `LaunchCheck` runs it once
on the login node when a multirun starts, before any job is submitted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def _launcher_tasks_per_node(cfg: DictConfig | None = None) -> int | None:
    """tasks_per_node of the Hydra launcher in use, or SLURM's for a job already running."""
    launcher = None
    if cfg is not None and cfg.get("hydra") is not None:
        launcher = cfg.hydra.get("launcher")
    else:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            launcher = HydraConfig.get().get("launcher")
    if launcher is not None and launcher.get("tasks_per_node") is not None:
        return int(launcher.tasks_per_node)
    env = os.environ.get("SLURM_NTASKS_PER_NODE")  # "2", or "2(x3)" for several nodes
    return int(env.split("(")[0]) if env else None


def check_devices(cfg: DictConfig, hydra_cfg: DictConfig | None = None) -> None:
    """Raise if the trainer's device layout cannot run as configured.

    Args:
        cfg: a composed `train` or `pipeline` config.
        hydra_cfg: the config with its `hydra` node (at multirun start); None reads the running
            job's Hydra config or SLURM's environment.
    """
    tr = cfg.trainer
    devices = tr.devices
    if str(tr.strategy) == "fsdp" and str(tr.accelerator) == "cpu":
        raise ValueError("trainer.strategy=fsdp needs GPUs (Lightning's FSDP refuses accelerator=cpu); "
                         "use trainer.strategy=ddp on CPU")
    if not isinstance(devices, int):
        return
    if devices < 1:
        raise ValueError(f"trainer.devices={devices}: must be at least 1")
    tasks = _launcher_tasks_per_node(hydra_cfg)
    if tasks is not None and tasks != devices:
        raise ValueError(
            f"trainer.devices={devices} but hydra.launcher.tasks_per_node={tasks}: Lightning runs one "
            f"process per SLURM task, so the two must be equal (pair trainer and launcher presets: "
            f"default/slurm_1gpu, fsdp_8gpu/slurm_8gpu, ddp_cpu2/slurm_cpu2)"
        )


class LaunchCheck(Callback):
    """Hydra callback: check the device layout once, before a multirun submits any job."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("trainer") is not None:
            check_devices(config, hydra_cfg=config)


# Several SLURM tasks of one job -------------------------------------------------------------
# Under SLURM every task (rank) starts the same entry point at the same moment. Rank 0 alone
# holds the run directory's lock, clears what a redo names and writes every file; the other
# ranks must not act on the directory before rank 0 has decided what runs. Rank 0 says so in
# `<dir>/.ranks_go` (this job attempt's token and its decision); the others wait for it.
GO_FILE = ".ranks_go"


def global_rank() -> int:
    """This process's global rank as the launcher set it (RANK, LOCAL_RANK, SLURM_PROCID)."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def slurm_tasks() -> int:
    """Tasks of this SLURM job step (1 outside SLURM)."""
    return int(os.environ.get("SLURM_NTASKS", "1") or 1) if "SLURM_PROCID" in os.environ else 1


def _attempt_token() -> str:
    return f"{os.environ.get('SLURM_JOB_ID', '')}.{os.environ.get('SLURM_RESTART_COUNT', '0')}"


def release_ranks(path: str | os.PathLike, decision: str) -> None:
    """Rank 0: tell the job's other ranks what this directory's stage does (`run` or `done`)."""
    if slurm_tasks() > 1 and global_rank() == 0:
        from midtrain.tracking.rundir import atomic_write_json

        atomic_write_json(Path(path) / GO_FILE, {"token": _attempt_token(), "decision": decision})


def wait_for_rank_zero(path: str | os.PathLike, poll_s: float = 0.5) -> str:
    """Another rank: wait until rank 0 of this job attempt has decided; return its decision."""
    import json
    import logging
    import time

    go, token, since = Path(path) / GO_FILE, _attempt_token(), time.monotonic()
    last_log = since
    while True:
        try:
            info = json.loads(go.read_text(encoding="utf-8"))
            if info.get("token") == token:
                return str(info["decision"])
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() - last_log > 60:
            logging.getLogger(__name__).info("rank %d waits for rank 0 to start %s (%.0fs)", global_rank(), path,
                                             time.monotonic() - since)
            last_log = time.monotonic()
        time.sleep(poll_s)
