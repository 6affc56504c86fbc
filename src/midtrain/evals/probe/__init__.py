"""Judge-free compassion probe: log-likelihood margin on paired continuations."""

from midtrain.evals.probe.probe import (
    HELDOUT_PAIRS_PATH,
    MARGIN_UNIT,
    PAIRS_PATH,
    ProbePair,
    lexical_overlap,
    load_pairs,
    probe_margin,
    probe_run_dir,
    word_set,
)

__all__ = ["HELDOUT_PAIRS_PATH", "MARGIN_UNIT", "PAIRS_PATH", "ProbePair", "lexical_overlap", "load_pairs",
           "probe_margin", "probe_run_dir", "word_set"]
