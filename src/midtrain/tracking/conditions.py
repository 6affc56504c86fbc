"""The experiment's conditions, and the keys that name a run's condition.

`CONDITION_KEYS` are the top-level keys of a run's `metrics.json` that say which cell of the
grid it is (what the report groups by and W&B tags runs with), each with where a pipeline's
config holds it. `CONDITIONS` are the scientific conditions (`conf/experiment/`) in the order
tables list them, and `COMPARISONS` the differences every summary reports.
"""

from __future__ import annotations

from collections.abc import Iterable

# metrics.json key -> its place in the config (in the order W&B tags are written).
CONDITION_KEYS: dict[str, str] = {
    "condition": "condition",
    "corpus": "corpus.name",
    "num_docs": "corpus.num_docs",
    "instruct_samples": "instruct.samples",
    "seed": "seed",
    "model": "model.name",
    "preserve": "preserve.name",
}

CONDITIONS: tuple[str, ...] = ("treatment", "control", "instruct_baseline", "base")
# (minuend, subtrahend): treatment against the matched control and the instruction-tuning baseline.
COMPARISONS: tuple[tuple[str, str], ...] = (("treatment", "control"), ("treatment", "instruct_baseline"))


def condition_order(conditions: Iterable[str]) -> list[str]:
    """The conditions in table order: the known ones as in `CONDITIONS`, then any other by name."""
    return sorted(conditions, key=lambda c: (CONDITIONS.index(c) if c in CONDITIONS else len(CONDITIONS), c))
