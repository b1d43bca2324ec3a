"""Local Lipschitz bounds (inf-norm) on the eran and mnist_fc models, eps around each spec's
centre: lower (sampled gradients), upper (bound propagation), naive (norm product).

    python bench/lipschitz.py [--eps 0.01] [--bab-seconds 0] [--models eran,mnist_fc]
    python bench/lipschitz.py --models acasxu --box-scale 0.2 --bab-seconds 10

``--box-scale k`` uses the spec's own box shrunk about its centre by k instead of +-eps
(for inputs in physical units, like ACAS Xu's).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

from verifier import load_model, parse_vnnlib_file
from verifier.lipschitz import LipschitzSettings, local_lipschitz

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
MODELS = {
    "eran": ["nets/mnist_relu_9_200.onnx", "nets/ffnnSIGMOID__Point_6x200.onnx"],
    "acasxu": ["onnx/ACASXU_run2a_1_1_batch_2000.onnx"],
    "mnist_fc": ["onnx/mnist-net_256x2.onnx", "onnx/mnist-net_256x4.onnx",
                 "onnx/mnist-net_256x6.onnx"],
}


def instances(folder: str) -> list[tuple[Path, Path]]:
    rows = []
    for line in (BENCH / folder / "instances.csv").read_text().splitlines():
        if line.strip():
            onnx_rel, spec_rel, _ = line.split(",")
            if onnx_rel in MODELS[folder]:
                rows.append((BENCH / folder / onnx_rel, BENCH / folder / spec_rel))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--bab-seconds", type=float, default=0.0)
    parser.add_argument("--models", default="eran,mnist_fc")
    parser.add_argument("--box-scale", type=float, default=0.0)
    args = parser.parse_args()
    settings = LipschitzSettings(bab_seconds=args.bab_seconds)
    print(f"{'model':<32} {'spec':<40} {'lower':>10} {'upper':>11} {'interval':>11} "
          f"{'naive':>11} {'up/naive':>9} {'up/low':>8} {'leaves':>6} {'s':>6}")
    seen: set[tuple[str, str]] = set()
    for folder in args.models.split(","):
        for model_path, spec_path in instances(folder):
            model = load_model(model_path)
            case = parse_vnnlib_file(spec_path, model.n_inputs, model.n_outputs).cases[0]
            centre = (case.lower + case.upper) / 2
            key = (model_path.name, hashlib.sha256(centre.tobytes()).hexdigest())
            if key in seen:  # specs differing only in eps share a centre
                continue
            seen.add(key)
            start = time.monotonic()
            radius = (case.upper - case.lower) / 2 * args.box_scale if args.box_scale else args.eps
            r = local_lipschitz(model, centre - radius, centre + radius, settings=settings)
            seconds = time.monotonic() - start
            ratio_low = r.upper / r.lower if r.lower > 0 else float("inf")
            print(f"{model_path.name:<32} {spec_path.name:<40} {r.lower:10.4g} "
                  f"{r.upper:11.4g} {r.details['interval_upper']:11.4g} {r.naive:11.4g} "
                  f"{r.upper / r.naive:9.2e} {ratio_low:8.3g} {r.details['bab_leaves']:6d} "
                  f"{seconds:6.1f}", flush=True)


if __name__ == "__main__":
    main()
