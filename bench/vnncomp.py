"""Run every instance of a VNN-COMP benchmark folder in one process and print the figures.

    python bench/vnncomp.py ../shared/benchmarks/acasxu [--cap 60] [--device cpu]

Prints one line per instance (verdict, seconds, BaB domains) and the totals.  The model of
consecutive instances is imported once (as a long-running worker would).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verifier import Settings, load_model, parse_vnnlib_file, verify  # noqa: E402
from verifier.errors import NNVerifyError  # noqa: E402
from verifier.property import SpecError  # noqa: E402


def run(folder: Path, cap: float, device: str) -> Counter:
    rows = list(csv.reader((folder / "instances.csv").read_text().splitlines()))
    totals: Counter = Counter()
    times: list[float] = []
    models: dict[str, object] = {}
    guards: list[float] = []
    print(f"{'instance':<70} {'verdict':<10} {'seconds':>8} {'domains':>8} {'guard ms':>8}")
    for onnx_rel, spec_rel, timeout in (r for r in rows if r):
        t0 = time.perf_counter()
        name = f"{Path(onnx_rel).stem} {Path(spec_rel).stem}"
        try:
            model = models.get(onnx_rel) or load_model(folder / onnx_rel)
            models[onnx_rel] = model
            prop = parse_vnnlib_file(folder / spec_rel, model.n_inputs, model.n_outputs)
            settings = Settings(timeout=min(float(timeout), cap), device=device)
            result = verify(model, prop, settings)
            verdict, domains = result.verdict, result.domains
            guard = result.guard_seconds
            if verdict == "error":
                print(f"  {result.message}", file=sys.stderr)
        except (NNVerifyError, SpecError, OSError) as exc:
            verdict, domains, guard = "error", 0, 0.0
            print(f"  {exc}", file=sys.stderr)
        seconds = time.perf_counter() - t0
        times.append(seconds)
        guards.append(guard)
        totals[verdict] += 1
        print(f"{name:<70} {verdict:<10} {seconds:8.2f} {domains:8d} {1000 * guard:8.1f}",
              flush=True)
    decided = totals["verified"] + totals["falsified"]
    print(f"\ntotal {len(times)}: verified {totals['verified']}, falsified {totals['falsified']}, "
          f"unknown {totals['unknown']}, timeout {totals['timeout']}, errors {totals['error']}; "
          f"decided {decided}/{len(times)}; median {statistics.median(times):.2f} s, "
          f"sum {sum(times):.1f} s; guard median {1000 * statistics.median(guards):.1f} ms "
          f"({100 * statistics.median(guards) / statistics.median(times):.1f}% of the median)")
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--cap", type=float, default=60.0, help="cap on each timeout (s)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run(args.folder, args.cap, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
