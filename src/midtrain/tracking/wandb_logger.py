"""``TrainingWandbLogger``: Lightning's W&B logger for a training stage that survives preemption.

See ``midtrain.tracking.wandb`` (Preemption) for why the W&B service can die before the
trainer does and what this logger does about it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_fabric.utilities.logger import (
    _add_prefix,
    _convert_json_serializable,
    _convert_params,
    _sanitize_callable_params,
)
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from midtrain.tracking.wandb import log_summary

log = logging.getLogger(__name__)


class TrainingWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger`` that outlives its W&B service and finishes the run itself.

    Every row logged in this attempt is kept (a few numbers per logged step). If the
    service dies (``OSError``: the connection is lost), logging stops sending, training
    goes on, and ``finish`` reopens the run and writes the rows again. ``finish`` is the
    one way this stage's run ends: with the stage's summary when training completes, or
    marked preempted (``preempted=True``) when a signal stopped it at a checkpoint.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rows: list[tuple[dict[str, Any], int | None]] = []
        self._hparams: list[dict[str, Any]] = []
        self._lost: BaseException | None = None
        self._finished = False

    @property
    def service_lost(self) -> bool:
        return self._lost is not None

    def _send(self, fn, *args: Any) -> None:
        if self._finished or self._lost is not None:
            return
        try:
            fn(*args)
        except OSError as e:  # ConnectionResetError / BrokenPipeError: the service is gone
            self._lost = e
            log.warning("W&B service lost (%s: %s); training goes on, the rows of this attempt are kept "
                        "and written when the run is reopened", type(e).__name__, e)

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        # The form Lightning's WandbLogger writes into the run config.
        self._hparams.append(_convert_json_serializable(_sanitize_callable_params(_convert_params(params))))
        self._send(super().log_hyperparams, params)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        prefixed = _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        self._rows.append(({k: _scalar(v) for k, v in prefixed.items()}, step))
        self._send(super().log_metrics, metrics, step)

    @rank_zero_only
    def finish(self, summary: Mapping[str, Any] | None = None, preempted: bool = False,
               exit_code: int = 0) -> None:
        """End this stage's W&B run: write ``summary`` (a nested metrics dict), mark it
        preempted if asked, and finish it with ``exit_code``. Reopens the run first if its
        service was lost. Later calls and later rows are ignored."""
        if self._finished:
            return
        if self._lost is None:
            try:
                self._close(self.experiment, summary, preempted, exit_code)
            except OSError as e:
                self._lost = e
        if self._lost is not None:
            self._reopen_and_close(summary, preempted, exit_code)
        self._finished = True
        if preempted or self._lost is not None:
            # finish() can return before the service has written the run's file; the attempt
            # ends next (and SLURM's SIGTERM may reach the service), so wait for it here.
            import wandb

            try:
                wandb.teardown()
            except OSError as e:
                log.warning("W&B service did not shut down cleanly: %s", e)

    @staticmethod
    def _close(run, summary, preempted: bool, exit_code: int) -> None:
        if summary:
            log_summary(run, summary)
        if preempted:
            run.mark_preempting()
        run.finish(exit_code=exit_code)

    def _reopen_and_close(self, summary, preempted: bool, exit_code: int) -> None:
        import wandb

        dead = self._experiment
        dead_file = _transaction_log(dead)
        try:
            wandb.teardown()  # forget the lost service so that init starts a new one
        except Exception:  # noqa: BLE001 - it fails on the lost connection; nothing to save there
            pass
        run = wandb.init(**{**self._wandb_init, "resume": "allow"})
        run.define_metric("trainer/global_step")
        run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
        # Online, the server already holds what the lost service uploaded: skip those steps.
        last = run.summary.get("trainer/global_step") if run.resumed else None
        for params in self._hparams:
            run.config.update(params, allow_val_change=True)
        rows = [(m, s) for m, s in self._rows if last is None or s is None or s > last]
        for metrics, step in rows:
            run.log(dict(metrics, **{"trainer/global_step": step}) if step is not None else metrics)
        self._close(run, summary, preempted, exit_code)
        self._experiment = run
        if dead_file is not None and dead_file.exists() and dead_file != _transaction_log(run):
            dead_file.rename(dead_file.with_name(dead_file.name + ".superseded"))
        log.warning("W&B run %s reopened after its service was lost: %d rows written again%s", run.id,
                    len(rows), ", marked preempted" if preempted else "")



def _scalar(value: Any) -> Any:
    item = getattr(value, "item", None)  # a tensor or numpy scalar
    return item() if callable(item) else value


def _transaction_log(run) -> Path | None:
    """The ``.wandb`` file a run writes, if it has one."""
    try:
        path = run.settings.sync_file
    except Exception:  # noqa: BLE001 - a disabled run has none
        return None
    return Path(path) if path else None
