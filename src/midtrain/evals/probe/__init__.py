"""Judge-free compassion probe: log-likelihood margin on paired continuations."""

from midtrain.evals.probe.probe import (
    MARGIN_UNIT,
    PAIRS_PATH,
    ProbePair,
    load_pairs,
    probe_margin,
    probe_run_dir,
)

__all__ = ["MARGIN_UNIT", "PAIRS_PATH", "ProbePair", "load_pairs", "probe_margin", "probe_run_dir"]
