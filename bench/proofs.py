"""Proofs of verified instances: verification time, proof search time, leaves, proof size,
and the independent checker's time and answer.

    python bench/proofs.py FOLDER [FOLDER ...] [--cap 60] [--proof-cap 120] [--threads 1]
        [--keep DIR]

For each instance of each folder's instances.csv: ``verify`` (cap seconds); when verified,
``prove`` (proof-cap seconds) and ``checker.check`` on the proof.  A proof the checker
rejects is printed with the reason and counted; the totals end the table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verifier import load_model, parse_vnnlib_file  # noqa: E402
from verifier.prove import ProofSettings, prove  # noqa: E402
from verifier.verify import Settings, verify  # noqa: E402


def instances(folder: Path) -> list[tuple[Path, Path]]:
    out = []
    for line in (folder / "instances.csv").read_text().splitlines():
        if line.strip():
            onnx_rel, spec_rel, _ = line.split(",")
            out.append((folder / onnx_rel, folder / spec_rel))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--cap", type=float, default=60.0, help="verification timeout (s)")
    ap.add_argument("--proof-cap", type=float, default=120.0, help="proof search timeout (s)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="keep the proofs in this folder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from checker import check  # the trusted checker, imported only here
    from checker.model import Unusable

    keep = args.keep or Path(tempfile.mkdtemp(prefix="nnv-proofs-"))
    keep.mkdir(parents=True, exist_ok=True)
    print(f"{'instance':<58} {'verify s':>8} {'prove s':>8} {'leaves':>7} {'KiB':>8} "
          f"{'check s':>8}  check")
    ratios, failures, proved, verified = [], 0, 0, 0
    for folder in args.folders:
        for onnx_path, spec_path in instances(folder):
            name = f"{folder.name}/{onnx_path.stem}/{spec_path.stem}"[:58]
            model = load_model(onnx_path)
            prop = parse_vnnlib_file(spec_path, model.n_inputs, model.n_outputs)
            result = verify(model, prop, Settings(timeout=args.cap))
            if result.verdict != "verified":
                print(f"{name:<58} {result.seconds:8.2f} {'-':>8} {'-':>7} {'-':>8} {'-':>8}  "
                      f"({result.verdict})")
                continue
            verified += 1
            out = keep / f"{onnx_path.stem}__{spec_path.stem}.nnvproof"
            outcome = prove(model, prop, out, onnx_path, spec_path,
                            ProofSettings(timeout=args.proof_cap))
            if not outcome.ok:
                print(f"{name:<58} {result.seconds:8.2f} {outcome.seconds:8.2f} "
                      f"{outcome.leaves:7d} {'-':>8} {'-':>8}  no proof: {outcome.reason}")
                continue
            proved += 1
            t0 = time.perf_counter()
            try:
                report = check(out, onnx_path, spec_path)
                ok, why = report.ok, report.reason
            except Unusable as exc:
                ok, why = False, f"unusable: {exc}"
            seconds = time.perf_counter() - t0
            ratios.append(seconds / max(result.seconds, 1e-9))
            verdict = "accepted" if ok else f"REJECTED: {why}"
            failures += 0 if ok else 1
            print(f"{name:<58} {result.seconds:8.2f} {outcome.seconds:8.2f} "
                  f"{outcome.leaves:7d} {outcome.bytes / 1024:8.1f} {seconds:8.2f}  {verdict}")
    print(f"\nverified {verified}, proofs found {proved}, checker rejected {failures}; "
          f"check time / verify time: median "
          f"{statistics.median(ratios) if ratios else float('nan'):.2f}, max "
          f"{max(ratios) if ratios else float('nan'):.2f}; proofs in {keep}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
