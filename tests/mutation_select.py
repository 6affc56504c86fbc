"""Per-module test selection for `make mutation`: each core module's mutants are judged by that
module's own test files.

    python -m tests.mutation_select

mutmut records, in `mutants/mutmut-stats.json`, which tests reached each function while it ran
the selected test files once. A helper that every training test reaches deep inside `train()`
(an atomic write, a config flatten, a redaction) is reached by nearly every test, and a mutant
of it that survives runs all of them: most of the run's time went to such mutants. This
narrows each function's recorded tests to the files listed for its module in `OWN_TESTS`,
and leaves a function alone where none of its tests is in those files (so no mutant loses
every test). mutmut reads the narrowed record on its next `mutmut run`; `make mutation` runs
this between mutmut's stats pass and its mutants. Verdicts already recorded are kept.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATS = ROOT / "mutants" / "mutmut-stats.json"

# Module (dotted, as in mutant names) -> the test files that judge its mutants. The longest
# matching prefix wins.
OWN_TESTS: dict[str, tuple[str, ...]] = {
    "midtrain.data.packing": ("test_packing.py", "test_datamodule.py", "test_golden_loss.py", "test_preserve.py"),
    "midtrain.data.datamodule": ("test_datamodule.py", "test_golden_loss.py", "test_preserve.py"),
    "midtrain.data.corpus": ("test_corpus.py", "test_datamodule.py"),
    "midtrain.data.sft": ("test_sft.py",),
    "midtrain.data.chat": ("test_sft.py",),
    "midtrain.lightning.module": ("test_lr_schedule.py", "test_golden_loss.py", "test_datamodule.py"),
    "midtrain.evals.results": ("test_eval_summaries.py",),
    "midtrain.evals.probe": ("test_probe.py",),
    "midtrain.evals.anima": ("test_anima_scoring.py", "test_eval_summaries.py"),
    "midtrain.tracking.wandb": ("test_wandb.py",),
    "midtrain.tracking.wandb_logger": ("test_wandb.py",),
    "midtrain.tracking.secrets": ("test_secrets.py", "test_run_outputs.py"),
    "midtrain.tracking.hydra_output": ("test_secrets.py",),
    "midtrain.tracking": ("test_run_outputs.py",),
    "midtrain.tracking.conditions": ("test_report.py",),
    "midtrain.report": ("test_report.py",),
    "midtrain.generation": ("test_generate.py",),
}


def _module_of(mangled: str) -> str:
    """`midtrain.tracking.rundir.xǁRunDirǁlock` -> `midtrain.tracking.rundir`."""
    return mangled.rsplit(".", 1)[0]


def own_tests(mangled: str) -> tuple[str, ...] | None:
    module = _module_of(mangled)
    best = max((p for p in OWN_TESTS if module == p or module.startswith(p + ".")), key=len, default=None)
    return OWN_TESTS[best] if best else None


def _test_file(test_id: str) -> str:
    return test_id.split("::", 1)[0].rsplit("/", 1)[-1]


def narrow(tests_by_function: dict[str, list[str]]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """The narrowed mapping, and counts: functions narrowed, left alone, tests dropped."""
    out, counts = {}, {"narrowed": 0, "kept": 0, "dropped": 0}
    for fn, tests in tests_by_function.items():
        files = own_tests(fn)
        mine = [t for t in tests if files and _test_file(t) in files]
        if mine and len(mine) < len(tests):
            out[fn] = sorted(mine)
            counts["narrowed"] += 1
            counts["dropped"] += len(tests) - len(mine)
        else:
            out[fn] = sorted(tests)
            counts["kept"] += 1
    return out, counts


def main(argv: list[str] | None = None) -> int:
    if not STATS.is_file():
        print(f"{STATS.relative_to(ROOT)} does not exist: mutmut has not recorded its stats yet", file=sys.stderr)
        return 1
    data = json.loads(STATS.read_text(encoding="utf-8"))
    data["tests_by_mangled_function_name"], counts = narrow(data["tests_by_mangled_function_name"])
    tmp = STATS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=4), encoding="utf-8")
    os.replace(tmp, STATS)
    print(f"per-module selection: {counts['narrowed']} functions narrowed ({counts['dropped']} test links dropped), "
          f"{counts['kept']} left as recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
