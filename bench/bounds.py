"""Lower bounds of every spec row by IBP, CROWN and alpha-CROWN, with timings.

    python bench/bounds.py MODEL.onnx SPEC.vnnlib [--json]
        [--reference ../shared/reference/bounds.json]

For each method: the lower bound of every row ``C y - d`` of every output conjunction of the
spec's first input box, flattened in file order (a positive bound refutes its conjunction),
and the median time of 5 runs after a warm-up.  With --reference, the matching entry of the
reference file is printed beside ours, with the ratio of times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verifier import load_model, parse_vnnlib_file  # noqa: E402
from verifier.bounds.crown import AlphaSettings  # noqa: E402
from verifier.bounds.methods import row_lower_bounds  # noqa: E402
from verifier.problems import make_batch  # noqa: E402

METHODS = ("ibp", "crown", "alpha-crown")


def measure(model_path: Path, spec_path: Path, device: str, runs: int = 5) -> dict:
    model = load_model(model_path)
    prop = parse_vnnlib_file(spec_path, model.n_inputs, model.n_outputs)
    batch = make_batch(prop, [0], torch.device(device), torch.float32)
    rows = batch.row_disjunct[0] >= 0
    out = {}
    for method in METHODS:
        options = {"alpha": AlphaSettings(early_stop=False)}
        lower = row_lower_bounds(model.graph, batch, method, **options)  # warm-up
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            lower = row_lower_bounds(model.graph, batch, method, **options)
            if lower.is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        out[method] = {"lower": lower[0][rows].tolist(), "seconds": statistics.median(times)}
    return out


def _reference(path: Path | None, model: Path, spec: Path) -> dict:
    if path is None or not path.exists():
        return {}
    for entry in json.loads(path.read_text())["entries"]:
        if Path(entry["model"]).name == model.name and Path(entry["spec"]).name == spec.name:
            return entry["methods"]
    return {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("spec", type=Path)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ours = measure(args.model, args.spec, args.device)
    if args.json:
        print(json.dumps(ours))
        return 0
    ref = _reference(args.reference, args.model, args.spec)
    for method, got in ours.items():
        r = ref.get(method, {})
        ratio = f"{r['seconds'] / got['seconds']:.1f}x faster" if r.get("seconds") else ""
        print(f"{method:<12} {got['seconds']:.4f} s  {ratio}")
        print(f"  nnverify   {[round(v, 4) for v in got['lower']]}")
        if "lower" in r:
            gain = [round(a - b, 4) for a, b in zip(got["lower"], r["lower"], strict=False)]
            print(f"  reference  {[round(v, 4) for v in r['lower']]}  ({r['seconds']:.4f} s)")
            print(f"  ours-ref   {gain}")
        elif r:
            print(f"  reference  {r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
