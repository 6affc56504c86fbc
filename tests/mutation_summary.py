"""Summarise the last `mutmut run`: per module and in total, from mutmut's own result files.

    python -m tests.mutation_summary [--survivors]

Reads `mutants/**/*.py.meta` (mutmut 3's record of every mutant's exit code) and
`tests/mutation_equivalent.txt` (one surviving mutant per line with the reason it cannot be
killed: `<mutant name>  # <reason>`). The killed share is (killed + timed out) / (mutants - equivalent - not yet checked): a
mutant that no selected test reaches counts as not killed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT = Path(__file__).with_name("mutation_equivalent.txt")

# mutmut's exit-code meanings (mutmut.stats.status_by_exit_code). Any other code, a worker
# killed by a signal among them (-9 is SIGKILL: the hard stop one second past the CPU limit, or
# the kernel's out-of-memory killer; -11 a segfault), is "crashed": no test failed on purpose,
# so it counts as not killed and is listed with the survivors to be rerun.
STATUS = {1: "killed", 3: "killed", 37: "killed", 0: "survived", 5: "no tests", 33: "no tests",
          34: "skipped", 36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout",
          None: "not checked"}
COLUMNS = ["mutants", "killed", "timeout", "survived", "no tests", "equivalent", "crashed", "not checked"]


def equivalent_mutants(path: Path = EQUIVALENT) -> dict[str, str]:
    out = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            name, _, reason = line.partition("#")
            if name.strip():
                out[name.strip()] = reason.strip()
    return out


def results(root: Path = ROOT) -> dict[str, dict[str, str]]:
    """{module path: {mutant name: status}}."""
    out = {}
    for meta in sorted((root / "mutants").rglob("*.py.meta")):
        codes = json.loads(meta.read_text(encoding="utf-8")).get("exit_code_by_key", {})
        if codes:
            module = str(meta.relative_to(root / "mutants"))[: -len(".meta")]
            out[module] = {k: STATUS.get(v, "crashed") for k, v in codes.items()}
    return out


def count(statuses: dict[str, str], equivalent: dict[str, str]) -> Counter:
    """One row of the table. Every mutant lands in exactly one column (skipped ones, which
    mutmut has not mutated, in none: they are left out of the mutants)."""
    c = Counter("equivalent" if s == "survived" and k in equivalent else s for k, s in statuses.items())
    c["mutants"] = len(statuses) - c["skipped"]
    assert sum(c[k] for k in COLUMNS[1:]) == c["mutants"], f"a verdict outside the table's columns: {c}"
    return c


def main(argv: list[str] | None = None, root: Path = ROOT, equivalent: Path = EQUIVALENT) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--survivors", action="store_true",
                    help="list mutants neither killed nor marked equivalent (survived, no tests, crashed)")
    args = ap.parse_args(argv)
    res = results(root)
    if not res:
        print("no mutmut results under mutants/: run `make mutation` first", file=sys.stderr)
        return 1
    marked = equivalent_mutants(equivalent)
    stale = set(marked) - {k for r in res.values() for k in r}
    rows = [(module, count(statuses, marked)) for module, statuses in res.items()]
    total: Counter = Counter()
    for _, c in rows:
        total.update(c)
    print("| module | " + " | ".join(COLUMNS) + " | killed share |")
    print("| --- | " + " | ".join("---:" for _ in COLUMNS) + " | ---: |")
    for module, c in rows + [("**total**", total)]:
        # Mutants no selected test reaches, and crashed ones, count as not killed; equivalent
        # ones and those not yet checked (a partial run) are left out.
        counted = c["mutants"] - c["equivalent"] - c["not checked"]
        killed = c["killed"] + c["timeout"]
        share = f"{100 * killed / counted:.1f}%" if counted else "-"
        print(f"| {module} | " + " | ".join(str(c[k]) for k in COLUMNS) + f" | {share} |")
    if stale:
        print(f"\n{len(stale)} names in {equivalent.name} are not mutants of this run: {sorted(stale)[:5]}")
    if args.survivors:
        print()
        for statuses in res.values():
            for k, s in statuses.items():
                if s == "crashed" or (s in ("survived", "no tests") and k not in marked):
                    print(k)
    return 0


if __name__ == "__main__":
    sys.exit(main())
