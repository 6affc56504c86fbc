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

# mutmut's exit-code meanings (mutmut.stats.status_by_exit_code).
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", 37: "killed",
          None: "not checked", 2: "interrupted"}


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
            out[module] = {k: STATUS.get(v, "suspicious") for k, v in codes.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--survivors", action="store_true", help="list mutants not killed and not marked equivalent")
    args = ap.parse_args(argv)
    res = results()
    if not res:
        print("no mutmut results under mutants/: run `make mutation` first", file=sys.stderr)
        return 1
    equivalent = equivalent_mutants()
    stale = set(equivalent) - {k for r in res.values() for k in r}
    total: Counter = Counter()
    rows = []
    for module, statuses in res.items():
        c = Counter(statuses.values())
        c["equivalent"] = sum(1 for k, s in statuses.items() if s == "survived" and k in equivalent)
        c["survived"] -= c["equivalent"]
        total.update(c)
        rows.append((module, c))
    cols = ["mutants", "killed", "timeout", "survived", "no tests", "equivalent", "not checked"]
    print("| module | " + " | ".join(cols) + " | killed share |")
    print("| --- | " + " | ".join("---:" for _ in cols) + " | ---: |")
    for module, c in rows + [("**total**", total)]:
        c["mutants"] = sum(len(s) for s in res.values()) if module == "**total**" else len(res[module])
        # Mutants no selected test reaches count as not killed; equivalent ones and those not
        # yet checked (a partial run) are left out.
        counted = c["mutants"] - c["equivalent"] - c["not checked"] - c["skipped"]
        killed = c["killed"] + c["timeout"]
        share = f"{100 * killed / counted:.1f}%" if counted else "-"
        print(f"| {module} | " + " | ".join(str(c[k]) for k in cols) + f" | {share} |")
    if stale:
        print(f"\n{len(stale)} names in {EQUIVALENT.name} are not mutants of this run: {sorted(stale)[:5]}")
    if args.survivors:
        print()
        for module, statuses in res.items():
            for k, s in statuses.items():
                if s in ("survived", "no tests") and k not in equivalent:
                    print(k)
    return 0


if __name__ == "__main__":
    sys.exit(main())
