"""The SLURM launcher of midtrain's sweeps (Hydra finds launcher plugins only in ``hydra_plugins``).

``RequeueAwareSlurmLauncher`` is hydra-submitit-launcher's ``SlurmLauncher``; a job that fails
after SLURM's SIGTERM exits without a result (see ``midtrain.launcher``).
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from hydra.core.utils import JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

from midtrain.launcher import TerminationWatch

log = logging.getLogger(__name__)


class RequeueAwareSlurmLauncher(SlurmLauncher):
    """``hydra_submitit_launcher``'s ``SlurmLauncher``; a job failing after SIGTERM leaves no result."""

    def __call__(self, *args: Any, **kwargs: Any):
        with TerminationWatch() as watch:
            ret = super().__call__(*args, **kwargs)
            if ret.status == JobStatus.FAILED and watch.received:
                log.warning("this attempt failed after SIGTERM (%s: %s); exiting without a result so that the "
                            "sweep waits for the requeued attempt", type(ret._return_value).__name__,
                            ret._return_value)
                raise SystemExit(128 + signal.SIGTERM)
        return ret
