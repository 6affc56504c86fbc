"""Where the project's configs and packaged resources live."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
RESOURCES_DIR = PACKAGE_DIR / "resources"
# Configs sit at the repository root (`conf/`, `sweeps/`); the package is installed editable.
REPO_ROOT = PACKAGE_DIR.parents[1]
CONF_DIR = REPO_ROOT / "conf"
SWEEPS_DIR = REPO_ROOT / "sweeps"

if not CONF_DIR.is_dir():  # pragma: no cover - only hit by a non-editable install
    raise ImportError(
        f"midtrain expects its Hydra configs at {CONF_DIR}; install the repository editable "
        "(`pip install -e .`) so that conf/ and sweeps/ stay next to the code."
    )
