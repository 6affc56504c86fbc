"""What produced a result: code, libraries, hardware, SLURM attempt and inputs, per stage.

Every time a stage does work (a training stage, the pipeline, an evaluation, the base
export) it records one *attempt* in ``<stage_dir>/provenance.json``: the project's git
commit and whether the tree was dirty (with a hash of the diff), the versions of the
libraries that shape a result, the accelerator or CPU, the host and the SLURM job, array
task and restart count. Attempts accumulate, so a run that SLURM requeued or that was
re-launched after a crash shows each attempt and what it ran with. The stage's
``metrics.json`` carries the same record under ``provenance`` together with the inputs:
model and dataset revisions and the hashes of the corpus files and manifest.

Paths written into a run directory point inside the runs root relative to the directory
that holds the file (``init_from: ../midtrain``), so a sweep directory can be moved or
copied to other storage and still resumes and reports (`portable_path`).

``python -m midtrain.tracking.provenance`` prints the current environment's record.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from midtrain.tracking.rundir import atomic_write_json, read_json

PROVENANCE_FILE = "provenance.json"

# Distributions whose versions are recorded (the name under which each is installed).
LIBRARIES: tuple[str, ...] = (
    "torch",
    "transformers",
    "tokenizers",
    "pytorch-lightning",
    "datasets",
    "peft",
    "inspect-ai",
    "inspect-evals",
    "hydra-core",
    "omegaconf",
    "numpy",
)
SLURM_VARS: tuple[tuple[str, str], ...] = (
    ("job_id", "SLURM_JOB_ID"),
    ("array_job_id", "SLURM_ARRAY_JOB_ID"),
    ("array_task_id", "SLURM_ARRAY_TASK_ID"),
    ("restart_count", "SLURM_RESTART_COUNT"),
    ("job_name", "SLURM_JOB_NAME"),
    ("nodelist", "SLURM_JOB_NODELIST"),
    ("procid", "SLURM_PROCID"),
)
_UNTRACKED_LIMIT = 2000  # untracked files hashed into the diff hash at most
# What the program is: code, configs, sweep presets, job environment, dependencies. Docs, tests
# and data written inside the checkout (corpora/, reports/) do not make a tree dirty.
CODE_PATHS: tuple[str, ...] = ("src", "conf", "sweeps", "slurm", "pyproject.toml", "requirements")


# Code ---------------------------------------------------------------------------------------
def _git(repo: Path, *args: str) -> bytes | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _project_version() -> str | None:
    try:
        return metadata.version("alignment-midtraining")
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=8)
def code_state(repo: str | None = None) -> dict[str, Any]:
    """The project's git commit, whether the program's files differ from it, and a hash of the difference.

    Only `CODE_PATHS` count. ``diff_sha256`` hashes ``git diff HEAD`` of them (binary) and the
    paths and contents of their untracked, not ignored files, so two dirty trees with the same
    hash ran the same code. Outside a git
    checkout (an sdist or wheel install) commit and dirty are None and only the package
    version is known. Cached per process: a pipeline's stages share one record.
    """
    if repo is None:
        from midtrain.paths import REPO_ROOT

        repo = str(REPO_ROOT)
    root = Path(repo)
    out: dict[str, Any] = {"commit": None, "dirty": None, "diff_sha256": None, "version": _project_version()}
    head = _git(root, "rev-parse", "HEAD")
    if head is None:
        return out
    out["commit"] = head.decode().strip()
    diff = _git(root, "diff", "HEAD", "--binary", "--no-ext-diff", "--no-color", "--", *CODE_PATHS) or b""
    untracked = (_git(root, "ls-files", "--others", "--exclude-standard", "-z", "--", *CODE_PATHS)
                 or b"").split(b"\0")
    untracked = sorted(p for p in untracked if p)[:_UNTRACKED_LIMIT]
    out["dirty"] = bool(diff) or bool(untracked)
    if out["dirty"]:
        h = hashlib.sha256(diff)
        for rel in untracked:
            h.update(b"\0untracked\0" + rel + b"\0")
            try:
                h.update(hashlib.sha256((root / rel.decode(errors="surrogateescape")).read_bytes()).digest())
            except OSError:
                h.update(b"<unreadable>")
        out["diff_sha256"] = h.hexdigest()
    return out


# Libraries and hardware ---------------------------------------------------------------------
def library_versions() -> dict[str, str | None]:
    """Python's version and each of `LIBRARIES`' installed versions (None when not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in LIBRARIES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def hardware() -> dict[str, Any]:
    """CUDA and cuDNN versions, the visible accelerators, the CPU and the host."""
    out: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return out
    out["cpu_threads"] = torch.get_num_threads()
    out["cuda"] = torch.version.cuda
    out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    out["device_count"] = n
    out["device_name"] = torch.cuda.get_device_name(0) if n else None
    return out


def slurm_state(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The SLURM job this process runs in (job id, array task, restart count, ...), or None outside SLURM."""
    env = os.environ if environ is None else environ
    if "SLURM_JOB_ID" not in env:
        return None
    out: dict[str, Any] = {}
    for key, var in SLURM_VARS:
        value = env.get(var)
        if value is None:
            continue
        out[key] = int(value) if key in ("restart_count", "procid") and value.isdigit() else value
    out.setdefault("restart_count", 0)
    return out


def environment() -> dict[str, Any]:
    """Code, library versions, hardware and SLURM state of this process (no time, no attempt number)."""
    return {"code": dict(code_state()), "versions": library_versions(), "hardware": hardware(),
            "slurm": slurm_state()}


# Inputs -------------------------------------------------------------------------------------
def _sha256_file(path: Path) -> str | None:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def _data_source(node: Any) -> dict[str, Any] | None:
    """Where one corpus or instruction set comes from, with its revision and file hashes."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
    if not isinstance(node, Mapping):
        return None
    get = node.get
    out: dict[str, Any] = {k: get(k) for k in ("name", "source", "path", "hf_id", "revision", "split")
                           if get(k) is not None}
    source = out.get("source")
    if source == "jsonl" and out.get("path"):
        from midtrain.data.corpus import resolve_path

        path = resolve_path(str(out["path"]))
        out["file_sha256"] = _sha256_file(path)
        manifest = path.parent / "manifest.json"
        out["manifest_sha256"] = _sha256_file(manifest) if manifest.is_file() else None
    elif source == "hf" and out.get("hf_id"):
        local = Path(str(out["hf_id"])).expanduser()
        if local.is_dir():
            for meta in ("dataset_dict.json", "state.json", "dataset_info.json"):
                if (local / meta).is_file():
                    out[f"{meta.split('.')[0]}_sha256"] = _sha256_file(local / meta)
    elif source == "template":
        out["universe"] = get("universe")
        out["pool_size"] = get("pool_size")
    mix = get("mix")
    if mix:
        out["mix"] = _data_source(mix)
    return out


def inputs(cfg: DictConfig, run_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Model and dataset revisions and corpus hashes a stage read, from its config."""
    out: dict[str, Any] = {}
    model = cfg.get("model")
    if model is not None:
        out["model"] = {k: OmegaConf.select(model, k, default=None)
                        for k in ("name", "source", "name_or_path", "revision", "gguf_file", "tokenizer")}
    init_from = OmegaConf.select(cfg, "init_from", default=None)
    if init_from:
        out["init_from"] = portable_path(init_from, run_dir, _runs_root(cfg)) if run_dir else str(init_from)
    objective = OmegaConf.select(cfg, "objective", default=None)
    nodes = ("corpus", "instruct", "qa") if objective is None else (("corpus",) if objective == "lm" else ("instruct",))
    for key in nodes:
        node = cfg.get(key)
        if node is not None:
            try:
                out[key] = _data_source(node)
            except (OSError, ValueError, OmegaConfBaseException) as e:  # the stage reports bad input itself
                out[key] = {"error": f"{type(e).__name__}: {e}"}
    return out


# Attempts -----------------------------------------------------------------------------------
def read_attempts(stage_dir: str | os.PathLike) -> list[dict]:
    path = Path(stage_dir) / PROVENANCE_FILE
    if not path.exists():
        return []
    data = read_json(path)
    attempts = data.get("attempts") if isinstance(data, dict) else None
    if not isinstance(attempts, list):
        raise ValueError(f"{path}: expected a JSON object with a list 'attempts'")
    return attempts


def record_attempt(stage_dir: str | os.PathLike, activity: str, **extra: Any) -> dict:
    """Append this process's attempt at `activity` (train, pipeline, eval, export) to the stage's provenance.json.

    Returns the new attempt; its ``attempt`` field counts the attempts at the same activity
    in this directory (1 for the first, 2 after a resume, ...).
    """
    stage_dir = Path(stage_dir)
    attempts = read_attempts(stage_dir)
    n = 1 + sum(1 for a in attempts if a.get("activity") == activity)
    attempt = {"activity": activity, "attempt": n,
               "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               **environment(), **extra}
    from midtrain.tracking.secrets import redact_config

    attempts.append(redact_config(attempt))  # e.g. a SLURM job name that holds a token's value
    atomic_write_json(stage_dir / PROVENANCE_FILE, {"attempts": attempts})
    return attempts[-1]


def stage_provenance(stage_dir: str | os.PathLike, cfg: DictConfig | None = None) -> dict[str, Any]:
    """The ``provenance`` entry of a stage's metrics.json: its attempts so far and (with `cfg`) its inputs."""
    attempts = read_attempts(stage_dir)
    out: dict[str, Any] = {"attempts": attempts,
                           "attempt_count": {a: sum(1 for x in attempts if x.get("activity") == a)
                                             for a in dict.fromkeys(x.get("activity") for x in attempts)}}
    if cfg is not None:
        out["inputs"] = inputs(cfg, stage_dir)
    return out


def wandb_provenance(stage_dir: str | os.PathLike) -> dict[str, Any]:
    """The stage's attempts as W&B config: ``{"attempts": n, "attempt": {"1": {...}, "2": {...}}}``.

    Keyed by attempt number, so a resumed W&B run keeps each earlier attempt's record
    next to the new one (W&B flattens nested config keys, e.g. ``provenance.attempt.2.versions.torch``).
    """
    attempts = read_attempts(stage_dir)
    return {"attempts": len(attempts),
            "attempt": {str(i + 1): {k: v for k, v in a.items() if v is not None} for i, a in enumerate(attempts)}}


def iter_attempts(metrics: Mapping[str, Any]) -> Iterator[dict]:
    """Every attempt recorded in a run's metrics.json, the pipeline's and each stage's."""
    prov = metrics.get("provenance")
    if not isinstance(prov, Mapping):
        return
    stack = [prov]
    while stack:
        node = stack.pop()
        for a in node.get("attempts") or []:
            if isinstance(a, Mapping):
                yield dict(a)
        for sub in (node.get("stages") or {}).values():
            if isinstance(sub, Mapping):
                stack.append(sub)


# Comparing runs (the report) ---------------------------------------------------------------
PROVENANCE_KEYS: tuple[str, ...] = ("code", "python", *LIBRARIES)


def code_id(code: Mapping[str, Any] | None) -> str | None:
    """A short name of the code an attempt ran: the commit, plus the diff hash when the tree was dirty."""
    if not isinstance(code, Mapping) or not code.get("commit"):
        return None
    out = str(code["commit"])[:12]
    if code.get("dirty"):
        out += f"+dirty.{str(code.get('diff_sha256') or '')[:8]}"
    return out


def run_provenance(metrics: Mapping[str, Any]) -> dict[str, list]:
    """Per `PROVENANCE_KEYS`, the distinct values over every attempt of a run ({} when none was recorded)."""
    seen: dict[str, set] = {k: set() for k in PROVENANCE_KEYS}
    any_attempt = False
    for a in iter_attempts(metrics):
        any_attempt = True
        seen["code"].add(code_id(a.get("code")))
        versions = a.get("versions") if isinstance(a.get("versions"), Mapping) else {}
        for k in PROVENANCE_KEYS[1:]:
            seen[k].add(versions.get(k))
    if not any_attempt:
        return {}
    return {k: sorted(v, key=lambda x: (x is None, str(x))) for k, v in seen.items()}


def differing_provenance(runs: list[Mapping[str, Any]]) -> dict[str, list]:
    """The keys whose values differ across (or within) the runs of one report cell, with the values.

    ``runs`` are report rows with a ``provenance`` entry from `run_provenance`. A run that
    recorded nothing counts as value None, so a cell mixing recorded and unrecorded runs is
    flagged too; a cell where no run recorded anything is not.
    """
    values: dict[str, set] = {k: set() for k in PROVENANCE_KEYS}
    recorded = [r for r in runs if r.get("provenance")]
    if not recorded:
        return {}
    for r in runs:
        prov = r.get("provenance") or {}
        for k in PROVENANCE_KEYS:
            values[k].update(prov.get(k) or [None])
    return {k: sorted(v, key=lambda x: (x is None, str(x))) for k, v in values.items() if len(v) > 1}


def format_values(values: list | None) -> str:
    return " | ".join("unrecorded" if v is None else str(v) for v in values or [])


# Portable paths -----------------------------------------------------------------------------
def _runs_root(cfg: DictConfig) -> Path | None:
    root = OmegaConf.select(cfg, "paths.runs_root", default=None)
    return Path(str(root)).expanduser().absolute() if root else None


def portable_path(path: str | os.PathLike | None, base: str | os.PathLike,
                  root: str | os.PathLike | None = None) -> str | None:
    """`path` as it is written into a file under `base`: relative to `base` when inside `root`.

    `root` is the runs root (default: `base`'s grandparent, i.e. the runs root of a
    ``<runs_root>/<sweep>/<run_id>`` run). Paths outside it stay absolute: they are not part
    of what moves with the sweep.
    """
    if path is None or str(path) == "":
        return None
    p = Path(str(path)).expanduser().absolute()
    base_p = Path(base).expanduser().absolute()
    root_p = Path(root).expanduser().absolute() if root is not None else base_p.parent.parent
    try:
        p.relative_to(root_p)
    except ValueError:
        return str(p)
    return os.path.relpath(p, base_p)


def resolve_portable(path: str | None, base: str | os.PathLike) -> Path | None:
    """The inverse of `portable_path`: a path read from a file under `base`."""
    if not path:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else (Path(base) / p).resolve()


def portable_config(cfg: DictConfig, run_dir: str | os.PathLike) -> DictConfig:
    """A copy of a stage config as it is saved in its run directory.

    ``init_from``, ``run_dir`` and ``paths.runs_root`` become relative to the run directory
    when they lie inside the runs root, so the saved config still describes the run after
    the sweep directory moved.
    """
    # Resolved first, so that nothing else interpolating these keys changes meaning.
    c = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    root = _runs_root(cfg)
    with open_dict(c):
        for key in ("init_from", "run_dir", "paths.runs_root"):
            value = OmegaConf.select(cfg, key, default=None)
            if value:
                OmegaConf.update(c, key, portable_path(value, run_dir, root), merge=False)
    return c


def main() -> None:  # pragma: no cover - a CLI printout
    """Print this environment's provenance record (CI logs the resolved versions with it)."""
    print(json.dumps(environment(), indent=2))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
