"""Compare two saved outputs of bench/vnncomp.py run over the same folders (before / after).

    for d in ../shared/benchmarks/*/; do
        echo "== $d"; python bench/vnncomp.py $d --cap 30 --threads 1
    done > after.txt
    python bench/compare_runs.py before.txt after.txt

Prints a per-family table (decided, median seconds, verified/falsified flips), every instance
whose verdict changed, and the guard's cost where the second run has the guard column.
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

LINE = re.compile(r"^(\S.*?)\s+(verified|falsified|unknown|timeout|error)\s+([\d.]+)\s+(\d+)"
                  r"(?:\s+([\d.]+))?(?:\s+(?:sat|unsat|unknown|timeout|error)\s.*)?\s*$")


def parse(path: Path) -> dict[str, dict[str, tuple[str, float, float | None]]]:
    """family -> instance -> (verdict, seconds, guard seconds or None)."""
    out: dict[str, dict[str, tuple[str, float, float | None]]] = {}
    family = ""
    for line in path.read_text().splitlines():
        if line.startswith("== "):
            family = line.rstrip("/").split("/")[-1].split()[-1]
            out[family] = {}
        elif (m := LINE.match(line)) and family:
            guard = float(m.group(5)) / 1000 if m.group(5) else None
            out[family][m.group(1).strip()] = (m.group(2), float(m.group(3)), guard)
    return out


def decided(runs: dict[str, tuple[str, float, float | None]]) -> int:
    return sum(v[0] in ("verified", "falsified") for v in runs.values())


def main() -> int:
    before, after = parse(Path(sys.argv[1])), parse(Path(sys.argv[2]))
    print("| family | decided before | decided after | median s before | median s after "
          "| flips |")
    print("|---|---|---|---|---|---|")
    totals = [0, 0, 0]
    for family, runs in before.items():
        new = after.get(family, {})
        flips = sum({v[0], new[k][0]} == {"verified", "falsified"}
                    for k, v in runs.items() if k in new)
        med = [statistics.median([v[1] for v in r.values()]) if r else 0.0 for r in (runs, new)]
        totals = [totals[0] + len(runs), totals[1] + decided(runs), totals[2] + decided(new)]
        print(f"| {family} | {decided(runs)}/{len(runs)} | {decided(new)}/{len(new)} "
              f"| {med[0]:.2f} | {med[1]:.2f} | {flips} |")
    print(f"| total | {totals[1]}/{totals[0]} | {totals[2]}/{totals[0]} | | | |\n")
    for family, runs in before.items():
        for k, v in runs.items():
            w = after.get(family, {}).get(k)
            if w and w[0] != v[0]:
                print(f"changed: {family} {k}: {v[0]} -> {w[0]}")
    timed = [v for r in after.values() for v in r.values() if v[2] is not None
             and v[0] != "error"]
    if timed:
        secs = [max(v[1], 1e-3) for v in timed]
        guards = [v[2] or 0.0 for v in timed]
        share = statistics.median(g / s for g, s in zip(guards, secs, strict=True))
        print(f"guard: median {1000 * statistics.median(guards):.1f} ms against a median "
              f"instance of {statistics.median(secs):.3f} s "
              f"({100 * statistics.median(guards) / statistics.median(secs):.1f}%); median "
              f"share per instance {100 * share:.1f}%; "
              f"{100 * sum(guards) / sum(secs):.2f}% of all time ({len(timed)} instances)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
