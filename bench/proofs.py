"""Proofs of verified instances: verification time, proof search time, leaves, proof size,
and the independent checker's time and answer.

    python bench/proofs.py FOLDER [FOLDER ...] [--cap 60] [--proof-cap 120] [--threads 1]
        [--keep DIR]

For each instance of each folder's instances.csv: ``verify`` (cap seconds); when verified,
``prove`` (proof-cap seconds) and ``checker.check`` on the proof.  Then the same proof
against the model with its last layer scaled (by -1, -1000 or 1000, then one output's row
by 1000 or -1000: the first for which the engine falsifies the property), its manifest
naming the scaled model's sha256, so that only the bounds can reject it: "scaled" says the
checker rejected it as it must (the scaling in brackets), "n/a" that none broke the
property.  A proof the checker rejects, or accepts against a broken model, is printed with
the reason and counted.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verifier import load_model, parse_vnnlib_file  # noqa: E402
from verifier.prove import ProofSettings, prove, sha256_file  # noqa: E402
from verifier.verify import Settings, verify  # noqa: E402


def instances(folder: Path) -> list[tuple[Path, Path]]:
    out = []
    for line in (folder / "instances.csv").read_text().splitlines():
        if line.strip():
            onnx_rel, spec_rel, _ = line.split(",")
            out.append((folder / onnx_rel, folder / spec_rel))
    return out


def scaled_last_layer(src: Path, dst: Path, factor: float, row: int | None = None) -> None:
    """The model with its last layer times ``factor`` (only output ``row``'s weights and
    bias when given): the constants of its last MatMul or Gemm and of an Add of a constant
    right after it."""
    model = onnx.load(src)
    nodes = list(model.graph.node)
    k = max(i for i, n in enumerate(nodes) if n.op_type in ("MatMul", "Gemm"))
    layer = [nodes[k]] + [n for n in nodes[k + 1:k + 2] if n.op_type == "Add"]
    inits = {t.name: t for t in model.graph.initializer}
    trans_b = any(a.name == "transB" and a.i for a in nodes[k].attribute)
    for name in {i for n in layer for i in n.input if i in inits}:
        t = inits[name]
        value = numpy_helper.to_array(t).copy()
        if row is None:
            value = value * np.float32(factor)
        elif value.ndim == 2:  # weights: output `row` is a column (a row under transB)
            index = (row, slice(None)) if trans_b else (slice(None), row)
            value[index] = value[index] * np.float32(factor)
        else:  # a bias
            value.reshape(-1)[row] *= np.float32(factor)
        t.CopyFrom(numpy_helper.from_array(value.astype(value.dtype), name))
    onnx.save(model, dst)


def with_manifest(path: Path, out: Path, **changes: object) -> None:
    """A copy of the proof at ``path`` with manifest entries changed."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    manifest = json.loads(str(arrays["manifest"]))
    manifest.update(changes)
    arrays["manifest"] = np.array(json.dumps(manifest))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    out.write_bytes(buf.getvalue())


def broken_check(proof: Path, onnx_path: Path, spec_path: Path, keep: Path,
                 cap: float) -> str:
    """The proof checked against the first scaled model the engine falsifies (see the
    module doc): "scaled (x-1)" when rejected, "ACCEPTED a broken model (x-1)", or "n/a"."""
    from checker import check

    scaled, forged = keep / f"{proof.stem}.scaled.onnx", keep / f"{proof.stem}.forged.nnvproof"
    outputs = load_model(onnx_path).n_outputs
    tries = [(f, None) for f in (-1.0, -1000.0, 1000.0)] + \
        [(f, r) for r in range(min(outputs, 5)) for f in (1000.0, -1000.0)]
    for factor, row in tries:
        scaled_last_layer(onnx_path, scaled, factor, row)
        model = load_model(scaled)
        prop = parse_vnnlib_file(spec_path, model.n_inputs, model.n_outputs)
        if verify(model, prop, Settings(timeout=cap)).verdict != "falsified":
            continue
        with_manifest(proof, forged, model_sha256=sha256_file(scaled))
        report = check(forged, scaled, spec_path)
        how = f"x{factor:g}" + ("" if row is None else f" on output {row}")
        return f"scaled ({how})" if not report.ok else f"ACCEPTED a broken model ({how})"
    return "n/a"


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
          f"{'check s':>8}  check; against a broken model")
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
            if ok:
                broken = broken_check(out, onnx_path, spec_path, keep, args.cap)
                failures += broken.startswith("ACCEPTED")
                verdict += f"; {broken}"
            print(f"{name:<58} {result.seconds:8.2f} {outcome.seconds:8.2f} "
                  f"{outcome.leaves:7d} {outcome.bytes / 1024:8.1f} {seconds:8.2f}  {verdict}")
    print(f"\nverified {verified}, proofs found {proved}, checker rejected {failures}; "
          f"check time / verify time: median "
          f"{statistics.median(ratios) if ratios else float('nan'):.2f}, max "
          f"{max(ratios) if ratios else float('nan'):.2f}; proofs in {keep}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
