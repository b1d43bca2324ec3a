from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

BENCH = Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks"


@pytest.fixture(scope="session")
def bench() -> Path:
    if not BENCH.exists():
        pytest.skip(f"benchmarks not found at {BENCH}")
    return BENCH


def bench_models() -> list[Path]:
    return sorted(BENCH.glob("*/**/*.onnx"))


def bench_instances() -> list[tuple[Path, Path]]:
    out = []
    for csv in sorted(BENCH.glob("*/instances.csv")):
        for line in csv.read_text().splitlines():
            if line.strip():
                onnx_rel, spec_rel, _ = line.split(",")
                out.append((csv.parent / onnx_rel, csv.parent / spec_rel))
    return out


def ort_box_samples(model_path: Path, model, case, n: int, seed: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uniform samples of ``case``'s input box and onnxruntime's outputs on them (flat)."""
    rng = np.random.default_rng(seed)
    x = case.lower + rng.uniform(size=(n, model.n_inputs)) * (case.upper - case.lower)
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    ys = np.stack([sess.run(None, {model.input_name: xi.reshape(model.input_shape).astype(
        model.input_dtype)})[0].ravel() for xi in x])
    return x, ys


def load_bench_model(path: Path):
    """A shared model, imported; skipped (with the refusal as the reason) when it uses an op
    the importer refuses by name, as the 2024 families' Resize still is."""
    from verifier import load_model
    from verifier.errors import UnsupportedOpError

    try:
        return load_model(path)
    except UnsupportedOpError as exc:
        pytest.skip(f"refused by the importer: {str(exc).splitlines()[0]}")
