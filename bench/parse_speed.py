"""Speed of the VNN-LIB reader on large generated files.

Generates, in a temporary directory:

* ``nn4sys``: one ``(assert (or (and X-box Y-atom) ...))`` with 100,000 disjuncts (~60 MB);
* ``top_level_x``: a box given by ~34 MB of ``(assert (<= X_i c))`` lines plus one output atom;
* ``nn4sys.gz``: the first file gzip-compressed.

Each file is parsed by ``parse_vnnlib_file`` in a fresh subprocess, which reports the wall and
CPU time and its peak resident memory (and the part of it already used after the imports).
Throughput is the uncompressed size divided by the wall time (``MB/s``) and by the CPU time of
the parsing process (``CPU MB/s``, less sensitive to other load on the machine).

Usage: ``python bench/parse_speed.py [--scale 0.2] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_nn4sys(path: Path, n_terms: int, n_inputs: int, seed: int = 0) -> None:
    """An nn4sys-style file: every disjunct has its own input box and one output atom."""
    rng = random.Random(seed)
    with path.open("w") as f:
        f.writelines(f"(declare-const X_{i} Real)\n" for i in range(n_inputs))
        f.write("(declare-const Y_0 Real)\n\n(assert (or\n")
        for _ in range(n_terms):
            atoms = []
            for i in range(n_inputs):
                a = rng.random()
                atoms.append(f"(>= X_{i} {a!r}) (<= X_{i} {a + 1e-3!r})")
            atoms.append(f"(>= Y_0 {rng.uniform(-1, 1)!r})")
            f.write("    (and " + " ".join(atoms) + ")\n")
        f.write("))\n")


def write_top_level_x(path: Path, n_inputs: int, seed: int = 1) -> None:
    """A file whose input box is given by top-level atoms, one per line."""
    rng = random.Random(seed)
    with path.open("w") as f:
        f.writelines(f"(declare-const X_{i} Real)\n" for i in range(n_inputs))
        f.write("(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n\n")
        for i in range(n_inputs):
            a = rng.random()
            f.write(f"(assert (<= X_{i} {a + 0.01!r}))\n(assert (>= X_{i} {a!r}))\n\n")
        f.write("(assert (>= Y_1 Y_0))\n")


def measure(path: Path) -> dict[str, float]:
    """Parse ``path`` in this process: seconds, number of cases and disjuncts, peak RSS (MiB)."""
    from verifier.property import parse_vnnlib_file

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start, cpu_start = time.perf_counter(), time.process_time()
    prop = parse_vnnlib_file(path)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "cases": len(prop.cases),
        "disjuncts": sum(len(c.disjuncts) for c in prop.cases),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "import_rss_mib": before,
    }


def measure_in_child(path: Path) -> dict[str, float]:
    """``measure(path)`` in a fresh interpreter, so memory figures are not mixed up."""
    out = subprocess.run(
        [sys.executable, __file__, "--one", str(path)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)


def main() -> None:
    """Generate the files, parse each, print MB/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="file size factor (default 1)")
    parser.add_argument("--repeat", type=int, default=1, help="parses per file (best is shown)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(Path(args.one))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        nn4sys = tmpdir / "nn4sys.vnnlib"
        top_x = tmpdir / "top_level_x.vnnlib"
        write_nn4sys(nn4sys, max(1, int(100_000 * args.scale)), 10)
        write_top_level_x(top_x, max(1, int(300_000 * args.scale)))
        compressed = tmpdir / "nn4sys.vnnlib.gz"
        with nn4sys.open("rb") as src, gzip.open(compressed, "wb", compresslevel=6) as dst:
            dst.write(src.read())
        files = [("nn4sys", nn4sys, nn4sys), ("top_level_x", top_x, top_x)]
        files.append(("nn4sys.gz", compressed, nn4sys))
        print(
            f"{'file':<13}{'MB':>7}{'seconds':>9}{'MB/s':>7}{'CPU MB/s':>10}{'cases':>8}"
            f"{'disjuncts':>11}{'peak MiB':>10}{'of which imports':>18}"
        )
        for name, path, plain in files:
            size = plain.stat().st_size / 1e6
            runs = [measure_in_child(path) for _ in range(max(1, args.repeat))]
            best = min(runs, key=lambda r: r["seconds"])
            cpu = min(r["cpu_seconds"] for r in runs)
            print(
                f"{name:<13}{size:>7.1f}{best['seconds']:>9.2f}{size / best['seconds']:>7.1f}"
                f"{size / cpu:>10.1f}{best['cases']:>8}{best['disjuncts']:>11}"
                f"{best['peak_rss_mib']:>10.0f}{best['import_rss_mib']:>18.0f}"
            )


if __name__ == "__main__":
    main()
