"""Stand-ins for held-out eran instances: the shared MNIST images shifted by one pixel.

    python bench/shifted_mnist.py OUT          # writes OUT/instances.csv, OUT/nets, OUT/specs
    OMP_NUM_THREADS=1 python bench/vnncomp.py OUT --cap 20 --threads 1

The eran folder's specs and mnist_fc's give seven MNIST images (each spec's box is the image
within eps, clipped to [0, 1], so the image is read back from the box).  Each image, as is and
shifted by one pixel (down, up, right, left, diagonally), becomes an L-infinity robustness
spec at the family's eps (relu 9x200: 0.015, sigmoid 6x200: 0.012) for each eran model,
with the label the image's spec names, kept only where the model (onnxruntime) still
predicts that label.  No answer is known for these instances: they are for comparing
versions of the engine (decided counts, bounds, domains), never for tuning to.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
NETS = {"mnist_relu_9_200.onnx": 0.015, "ffnnSIGMOID__Point_6x200.onnx": 0.012}
SHIFTS = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1)]
BOUND = re.compile(r"\(assert \((<=|>=) X_(\d+) ([-+\d.eE]+)\)\)")


def _image(spec: Path, eps: float) -> tuple[np.ndarray, int]:
    """The image (784,) a robustness spec's box was made from, and its label."""
    text = spec.read_text()
    lo, hi = np.zeros(784), np.zeros(784)
    for m in BOUND.finditer(text):
        (hi if m.group(1) == "<=" else lo)[int(m.group(2))] = float(m.group(3))
    x = np.clip(np.where(hi < 1, hi - eps, lo + eps), 0, 1)
    pairs = re.findall(r"\(>= Y_(\d+) Y_(\d+)\)", text)
    # eran: "Y_j >= Y_label" is unsafe; mnist_fc: "Y_label >= Y_j" must hold for some j
    label = int(pairs[0][1]) if "eran" in str(spec) else int(pairs[0][0])
    return x, label


def _images() -> list[tuple[str, np.ndarray, int]]:
    found = []
    for spec in sorted((SHARED / "eran" / "specs" / "mnist").glob("*.vnnlib")):
        idx, eps = re.search(r"idx_(\d+)_eps_([\d.]+\d)", spec.name).groups()  # type: ignore
        found.append((idx, *_image(spec, float(eps))))
    found.append(("fc0", *_image(SHARED / "mnist_fc" / "vnnlib" / "prop_0_0.03.vnnlib", 0.03)))
    return found


def _spec(lo: np.ndarray, hi: np.ndarray, label: int) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(784)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(10)]
    for i in range(784):
        lines += [f"(assert (<= X_{i} {hi[i]:.8f}))", f"(assert (>= X_{i} {lo[i]:.8f}))"]
    lines += ["(assert (or"] + [f"\t(and (>= Y_{j} Y_{label}))" for j in range(10)
                                if j != label] + ["))"]
    return "\n".join(lines) + "\n"


def write(out: Path) -> int:
    (out / "nets").mkdir(parents=True, exist_ok=True)
    (out / "specs").mkdir(exist_ok=True)
    rows = []
    images = _images()
    for net, eps in NETS.items():
        shutil.copy(SHARED / "eran" / "nets" / net, out / "nets" / net)
        session = ort.InferenceSession(str(out / "nets" / net),
                                       providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        for name, x, label in images:
            for dy, dx in SHIFTS:
                img = np.roll(x.reshape(28, 28), (dy, dx), (0, 1)).reshape(-1)
                y = session.run(None, {inp.name: img.reshape(shape).astype(np.float32)})[0]
                if int(np.argmax(y)) != label:
                    continue
                spec = f"specs/{name}_{dy}_{dx}_{net.split('.')[0]}.vnnlib"
                (out / spec).write_text(_spec(np.clip(img - eps, 0, 1),
                                              np.clip(img + eps, 0, 1), label))
                rows.append(f"nets/{net},{spec},60\n")
    (out / "instances.csv").write_text("".join(rows))
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(f"{write(args.out)} instances in {args.out}")


if __name__ == "__main__":
    main()
