"""Settings checked before anything loads or is written, and a grid checked before it is submitted.

`problems(cfg)` lists every numeric setting outside its valid range or of the wrong type,
each naming its key and value; `check(cfg)` raises them all at once. The stage entry points
call it first. `GridCheck` (a Hydra callback) composes every job of a multirun the way the
launcher will and reports the problems of all jobs, and any two jobs that would share a run
directory, in one message before the first job is submitted.
"""

from __future__ import annotations

import math
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# key -> (kind, low, high, low inclusive, null allowed). kind: int | float.
RANGES: dict[str, tuple[str, float | None, float | None, bool, bool]] = {
    "seed": ("int", 0, None, True, False),
    "optim.lr": ("float", 0, None, False, False),
    "optim.weight_decay": ("float", 0, None, True, False),
    "optim.eps": ("float", 0, None, False, False),
    "optim.warmup_ratio": ("float", 0, 1, True, False),
    "optim.min_lr_ratio": ("float", 0, 1, True, False),
    "optim.max_grad_norm": ("float", 0, None, False, True),
    "data.seq_len": ("int", 1, None, True, False),
    "data.batch_size": ("int", 1, None, True, False),
    "data.tokens_per_step": ("int", 1, None, True, True),
    "data.epochs": ("int", 1, None, True, False),
    "data.num_workers": ("int", 0, None, True, False),
    "data.max_doc_tokens": ("int", 1, None, True, True),
    "trainer.max_steps": ("int", 1, None, True, True),
    "trainer.num_nodes": ("int", 1, None, True, False),
    "trainer.checkpoint_every_n_steps": ("int", 1, None, True, False),
    "trainer.log_every_n_steps": ("int", 1, None, True, False),
    "trainer.probe_every_n_steps": ("int", 1, None, True, True),
    "corpus.num_docs": ("int", 0, None, True, False),
    "corpus.pool_size": ("int", 1, None, True, True),
    "corpus.seed": ("int", 0, None, True, False),
    "instruct.samples": ("int", 0, None, True, False),
    "instruct.seed": ("int", 0, None, True, False),
}


def _get(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False, None
        if OmegaConf.is_missing(node, part):
            return True, "???"
        node = node[part]
    return True, node


def number_problem(key: str, value: Any, spec: tuple) -> str | None:
    kind, low, high, low_inclusive, nullable = spec
    if value is None:
        return None if nullable else f"{key}=null: a number is required"
    if value == "???":
        return None  # required values are reported by Hydra's own check
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{key}={value!r}: expected {'an integer' if kind == 'int' else 'a number'}"
    if kind == "int" and not float(value).is_integer():
        return f"{key}={value!r}: expected an integer"
    if not math.isfinite(float(value)):
        return f"{key}={value!r}: must be finite"
    if low is not None and (value < low or (value == low and not low_inclusive)):
        return f"{key}={value!r}: must be {'at least' if low_inclusive else 'greater than'} {low}"
    if high is not None and value > high:
        return f"{key}={value!r}: must be at most {high}"
    return None


def problems(cfg: DictConfig) -> list[str]:
    """Every setting of `cfg` with a value outside its range or of the wrong type."""
    out: list[str] = []
    for key, spec in RANGES.items():
        present, value = _get(cfg, key)
        if not present:
            continue
        try:
            p = number_problem(key, value, spec)
        except Exception as e:  # noqa: BLE001 - an interpolation that cannot resolve
            p = f"{key}: {e}"
        if p:
            out.append(p)
    present, betas = _get(cfg, "optim.betas")
    if present and betas != "???":
        vals = list(betas) if betas is not None and not isinstance(betas, (str, int, float)) else None
        if vals is None or len(vals) != 2 or any(
                isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < 1 for b in vals):
            out.append(f"optim.betas={OmegaConf.to_container(betas) if OmegaConf.is_config(betas) else betas!r}: "
                       "expected two numbers in [0, 1)")
    present, devices = _get(cfg, "trainer.devices")
    if present and devices not in ("auto", -1) and (isinstance(devices, bool) or not isinstance(devices, int)
                                                     or devices < 1):
        out.append(f"trainer.devices={devices!r}: expected a positive integer, -1 or auto")
    present, max_steps = _get(cfg, "trainer.max_steps")
    present_e, epochs = _get(cfg, "data.epochs")
    if present and present_e and max_steps not in (None, "???") and isinstance(epochs, int) and epochs != 1:
        out.append(f"trainer.max_steps={max_steps} with data.epochs={epochs}: give one of them (max_steps sets the "
                   "schedule and repeats the data as often as needed)")
    return out


def check(cfg: DictConfig, what: str = "config") -> None:
    """Raise one ValueError listing every problem of `cfg`."""
    found = problems(cfg)
    if found:
        raise ValueError(f"invalid {what}:\n  - " + "\n  - ".join(found))


def grid_jobs(config: DictConfig) -> list[list[str]]:
    """The per-job overrides a multirun makes of `hydra.sweeper.params` and the command line,
    as Hydra's basic sweeper expands them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    args = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(args)
    batches = BasicSweeper.split_arguments(overrides, max_batch_size=None)
    return [list(job) for batch in batches for job in batch]


def check_grid(config: DictConfig, compose=None) -> None:
    """Compose every job of a multirun and raise one report of all their problems, including
    jobs that would share a run directory."""
    if compose is None:
        from hydra import compose as hydra_compose

        def compose(overrides: list[str]) -> DictConfig:
            return hydra_compose(config_name=str(config.hydra.job.config_name), overrides=overrides)

    jobs = grid_jobs(config)
    common = set.intersection(*(set(j) for j in jobs)) if jobs else set()
    report: list[str] = []
    dirs: dict[str, int] = {}
    for i, job in enumerate(jobs):
        label = f"job {i} ({' '.join(o for o in job if o not in common) or 'no overrides'})"
        try:
            cfg = compose(job)
            found = problems(cfg)
            if "stages" in cfg and not found:
                from midtrain.pipeline import _check

                try:
                    _check(cfg)
                except ValueError as e:
                    found.append(str(e))
            run_dir = str(cfg.run_dir)
        except Exception as e:  # noqa: BLE001 - any composition error is one problem of this job
            report.append(f"{label}: {e}")
            continue
        report += [f"{label}: {p}" for p in found]
        if run_dir in dirs:
            report.append(f"{label}: same run directory as job {dirs[run_dir]} ({run_dir}); the two differ only "
                          "in settings that cannot change the numbers")
        else:
            dirs[run_dir] = i
    if report:
        raise ValueError(f"{len(jobs)} jobs composed, {len(report)} problem(s); nothing was submitted:\n  - "
                         + "\n  - ".join(report))


class GridCheck(Callback):
    """Hydra callback: every job of a multirun composed and checked before any is submitted."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_grid(config)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None  # Hydra turns callback exceptions into warnings
