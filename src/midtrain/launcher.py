"""What the sweeps' SLURM launcher adds to hydra-submitit-launcher's: one rule for terminated jobs.

SLURM ends a job's attempt with SIGTERM to every process of the job (preemption,
``scontrol requeue``, cancellation, a kill at the time limit) and may requeue it. An attempt
that fails after such a SIGTERM (the W&B service it talks to was terminated too, a file
was half written, ...) must not report that failure: submitit's waiting sweep would take the
result file as the task's final outcome ("Error executing job") while SLURM runs the task
again. So a job that received SIGTERM and then fails exits with status 143 and no result
instead; the waiting sweep then keeps waiting while the task is requeued or running, and
returns the final attempt's result (a cancelled task ends the sweep with submitit's "has not
produced any output" error). A job that completes after a SIGTERM still reports its result.

The launcher class itself, ``RequeueAwareSlurmLauncher``, lives in
``hydra_plugins.midtrain_launcher`` because Hydra only instantiates launchers from there.
"""

from __future__ import annotations

import signal
from typing import Any


class TerminationWatch:
    """Notes a SIGTERM while passing it on to the handler that was installed before."""

    def __init__(self) -> None:
        self.received = False
        self._prior: Any = None

    def __enter__(self) -> "TerminationWatch":
        self._prior = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.received = True
        if callable(self._prior):
            self._prior(signum, frame)  # submitit only logs it ("Bypassing signal SIGTERM")
        elif self._prior in (signal.SIG_DFL, None):
            raise SystemExit(128 + signum)

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGTERM, self._prior if self._prior is not None else signal.SIG_DFL)
