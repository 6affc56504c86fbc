"""Console scripts: each is `@hydra.main` over `conf/<name>.yaml` around a stage's pure function."""

from __future__ import annotations

from typing import Any, Callable

import hydra
from omegaconf import DictConfig

from midtrain.paths import CONF_DIR


def hydra_entry(config_name: str, task: Callable[[DictConfig], Any]) -> Callable[..., Any]:
    """The entry point that composes `conf/<config_name>.yaml` (with the command line's overrides
    and `-m`) and calls `task(cfg)`; Hydra names the job after `task`'s module."""
    return hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(task)
