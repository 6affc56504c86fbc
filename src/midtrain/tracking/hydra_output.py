"""A Hydra callback every app uses: checks before Hydra creates a directory, and Hydra's own
output (`.hydra/`) written with secrets removed.

Hydra's own copy of the run (`.hydra/config.yaml`, `hydra.yaml`, `overrides.yaml`) is the
command line and the composed config verbatim, written before any user code runs; a key given
as `+logger.api_key=...` would land there in the clear. So the apps set
`hydra.output_subdir: null` (Hydra writes nothing) and this callback writes the same three
files, redacted, atomically, when the job starts. The record of what was run stays; the
secrets do not. `multirun.yaml` (which the sweeper writes before any callback could act) is
rewritten redacted when the first job starts and when the sweep ends; for sweeps, give keys
through environment variables, which are never written. Hydra's logging (the apps select
`hydra/job_logging=redacted` and `hydra/hydra_logging=redacted`) passes every record through
`SecretFilter`; the callback also attaches it to whatever handlers another logging config set
up, and scrubs the overrides and exception Hydra prints for a failed job.

The checks run before Hydra creates the job's directory, and stop the app with a one-line
message instead of a traceback through Hydra's internals:

- a required value (`???`) that Hydra's output directory depends on, e.g. `corpus=jsonl`
  without `corpus.name`;
- a path key that must already exist (`require_existing`), e.g. `midtrain-eval run_dir=...`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from midtrain.tracking.rundir import atomic_write_text
from midtrain.tracking.secrets import install_log_filter, redact_config, scrub_secrets


def _missing_keys(config: DictConfig) -> list[str]:
    """The task's required values left at `???` (Hydra's own node is not looked at)."""
    found: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{prefix}[{i}]")
        elif node == "???":
            found.append(prefix)

    walk({k: v for k, v in OmegaConf.to_container(config, resolve=False).items() if k != "hydra"}, "")
    return sorted(found)


def _stop(message: str) -> None:
    # Hydra turns exceptions raised in callbacks into warnings; SystemExit stops the app.
    raise SystemExit(f"error: {message}")


def _check_output_dir(config: DictConfig, key: str) -> None:
    try:
        OmegaConf.select(config, key, throw_on_missing=True)
    except (MissingMandatoryValue, InterpolationToMissingValueError):
        missing = _missing_keys(config)
        shown = ", ".join(missing) or "a required value"
        _stop(f"required value(s) not set: {shown} (give them on the command line, "
              f"e.g. {missing[0] if missing else 'key'}=...)")


def _redacted_yaml(node: Any) -> str:
    container = OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else node
    return OmegaConf.to_yaml(redact_config(container))


def redact_file(path: Path) -> None:
    """Rewrite a YAML file Hydra wrote with secrets removed (atomically); a missing file is skipped."""
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        clean = _redacted_yaml(OmegaConf.to_container(OmegaConf.create(text), resolve=False))
        if clean != text:
            atomic_write_text(path, clean)


class RedactedOutput(Callback):
    """Hydra job callback (see the module docstring)."""

    def __init__(self, output_subdir: str = ".hydra", require_existing: list[str] | None = None) -> None:
        self.output_subdir = output_subdir
        self.require_existing = list(require_existing or [])

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_filter()
        _check_output_dir(config, "hydra.run.dir")
        for key in self.require_existing:
            value = OmegaConf.select(config, key, default=None)
            if value in (None, "???"):
                _stop(f"{key} is required: {key}=<path>")
            if not Path(str(value)).expanduser().exists():
                _stop(f"{key}={value} does not exist")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_filter()  # the launcher logs each job's overrides
        _check_output_dir(config, "hydra.sweep.dir")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_filter()
        hc = config.hydra
        out = Path(str(hc.runtime.output_dir)) / self.output_subdir
        task = {k: v for k, v in OmegaConf.to_container(config, resolve=False).items() if k != "hydra"}
        atomic_write_text(out / "config.yaml", _redacted_yaml(task))
        atomic_write_text(out / "hydra.yaml", _redacted_yaml({"hydra": OmegaConf.to_container(hc, resolve=False)}))
        atomic_write_text(out / "overrides.yaml", _redacted_yaml(list(hc.overrides.task)))
        if hc.mode == RunMode.MULTIRUN:
            redact_file(Path(str(hc.sweep.dir)) / "multirun.yaml")

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        """Hydra prints a failed job's overrides and exception to stderr (a log file under SLURM)."""
        if job_return is None:
            return
        job_return.overrides = redact_config(list(job_return.overrides or []))
        error = getattr(job_return, "_return_value", None)
        if isinstance(error, BaseException):
            error.args = tuple(scrub_secrets(a) if isinstance(a, str) else a for a in error.args)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        redact_file(Path(str(config.hydra.sweep.dir)) / "multirun.yaml")
