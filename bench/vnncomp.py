"""Run every instance of a VNN-COMP benchmark folder in one process and print the figures.

    python bench/vnncomp.py ../shared/benchmarks/acasxu [--cap 60] [--device cpu]
        [--threads 2] [--no-guided-search] [--no-probe]

Prints one line per instance (verdict, seconds, BaB domains, the guard's milliseconds and,
where ../shared/reference/vnncomp2024.md lists the instance, the published answer and
alpha-beta-CROWN's answer and seconds in VNN-COMP 2024; ``WRONG`` marks a verdict that
contradicts the published answer) and the totals.  A model the engine cannot import runs
on onnxruntime alone (a search for counterexamples).  The model of
consecutive instances is imported once (as a long-running worker would).
``--no-guided-search`` turns off BaB's search in its weakest domains (guided.py), to
measure what it costs in domains per second; ``--no-probe`` turns off the probe of the
sides of nonlinearities no sample reached (probe.py), to measure what it costs.
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

from verifier import Settings, parse_vnnlib_file  # noqa: E402
from verifier.cli import verify_safely  # noqa: E402
from verifier.errors import NNVerifyError  # noqa: E402
from verifier.property import SpecError  # noqa: E402
from verifier.search.bab import BabSettings  # noqa: E402
from verifier.search.blackbox import load_or_opaque  # noqa: E402
from verifier.search.probe import ProbeSettings  # noqa: E402


def run(folder: Path, cap: float, device: str, bab: BabSettings | None = None,
        probe: bool = True) -> Counter:
    rows = list(csv.reader((folder / "instances.csv").read_text().splitlines()))
    totals: Counter = Counter()
    times: list[float] = []
    models: dict[str, object] = {}
    guards: list[float] = []
    published = _published(folder)
    print(f"{'instance':<70} {'verdict':<10} {'seconds':>8} {'domains':>8} {'guard ms':>8}"
          + ("  expected abcrown   its s" if published else ""))
    for onnx_rel, spec_rel, timeout in (r for r in rows if r):
        t0 = time.perf_counter()
        name = f"{Path(onnx_rel).stem} {Path(spec_rel).stem}"
        try:
            model = models.get(onnx_rel) or _load(folder / onnx_rel)
            models[onnx_rel] = model
            prop = parse_vnnlib_file(folder / spec_rel, model.n_inputs, model.n_outputs)
            settings = Settings(timeout=min(float(timeout), cap), device=device,
                                bab_settings=bab or BabSettings(),
                                probe=ProbeSettings() if probe else None)
            result = verify_safely(model, prop, settings)  # type: ignore[arg-type]
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
        line = f"{name:<70} {verdict:<10} {seconds:8.2f} {domains:8d} {1000 * guard:8.1f}"
        ref = published.get((onnx_rel, spec_rel))
        if ref is not None:
            expected, theirs, their_s = ref
            wrong = {"verified": "sat", "falsified": "unsat"}.get(verdict) == expected
            line += f"  {expected:<8} {theirs:<8} {their_s:>5}" + ("  WRONG" if wrong else "")
            totals["theirs decided"] += theirs in ("sat", "unsat")
            totals["wrong"] += wrong
        print(line, flush=True)
    decided = totals["verified"] + totals["falsified"]
    print(f"\ntotal {len(times)}: verified {totals['verified']}, falsified {totals['falsified']}, "
          f"unknown {totals['unknown']}, timeout {totals['timeout']}, errors {totals['error']}; "
          f"decided {decided}/{len(times)}; median {statistics.median(times):.2f} s, "
          f"sum {sum(times):.1f} s; guard median {1000 * statistics.median(guards):.1f} ms "
          f"({100 * statistics.median(guards) / statistics.median(times):.1f}% of the median)"
          + (f"; alpha-beta-CROWN (2024) decided {totals['theirs decided']}; wrong "
             f"{totals['wrong']}" if published else ""))
    return totals


def _load(path: Path) -> object:
    """The imported model, or the model as onnxruntime runs it when the engine refuses an
    op (then only a search for counterexamples runs)."""
    return load_or_opaque(path)


REFERENCE_2024 = Path(__file__).resolve().parents[2] / "shared" / "reference" / "vnncomp2024.md"


def _published(folder: Path) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(onnx, vnnlib) -> (expected answer, alpha-beta-CROWN's answer, its seconds) for the
    folder's family, from the VNN-COMP 2024 reference table (empty when absent)."""
    if not REFERENCE_2024.exists():
        return {}
    out = {}
    for line in REFERENCE_2024.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0] == folder.resolve().name:
            out[(cells[1], cells[2])] = (cells[6], cells[4], cells[5])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--cap", type=float, default=60.0, help="cap on each timeout (s)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-guided-search", action="store_true",
                        help="BaB without its counterexample search in the weakest domains")
    parser.add_argument("--no-probe", action="store_true",
                        help="without the probe of the sides no sample reached")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run(args.folder, args.cap, args.device,
        BabSettings(guided=None) if args.no_guided_search else None, not args.no_probe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
