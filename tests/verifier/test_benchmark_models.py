"""Every shared benchmark model: import, agreement with onnxruntime, and sound bounds on its
own specification's box (checked against onnxruntime on samples)."""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
import pytest
import torch

from verifier import parse_vnnlib_file
from verifier.bounds.crown import AlphaSettings, Interrupted
from verifier.bounds.methods import row_lower_bounds
from verifier.problems import make_batch

from .conftest import bench_instances, bench_models, load_bench_model, ort_box_samples

MODELS = bench_models()
INSTANCES = list({m: (m, s) for m, s in bench_instances()}.values())  # one spec per model


@pytest.mark.parametrize("path", MODELS, ids=[p.name for p in MODELS])
def test_agrees_with_onnxruntime(path, bench):
    model = load_bench_model(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, *model.input_shape)).astype(np.float32)
    ref = np.stack([sess.run(None, {model.input_name: xi})[0] for xi in x]).reshape(3, -1)
    with torch.no_grad():
        ours32 = model.graph.forward(torch.tensor(x)).reshape(3, -1).numpy()
        ours64 = model.graph.forward(torch.tensor(x, dtype=torch.float64)).reshape(3, -1).numpy()
    scale = np.abs(ref).max()
    assert np.abs(ours32 - ref).max() / scale < 1e-4
    # float64 evaluation of a float32 model differs from float32 onnxruntime by rounding only
    assert np.abs(ours64 - ref).max() / scale < 1e-4


@pytest.mark.parametrize("model_path,spec_path", INSTANCES,
                         ids=[f"{m.stem}-{s.stem}" for m, s in INSTANCES])
def test_bounds_sound_on_spec_box(model_path, spec_path, bench):
    model = load_bench_model(model_path)
    prop = parse_vnnlib_file(spec_path, model.n_inputs, model.n_outputs)
    batch = make_batch(prop, [0], torch.device("cpu"), torch.float32)
    case = prop.cases[0]
    _, ys = ort_box_samples(model_path, model, case, 300, seed=1)
    C, d = batch.C[0].double().numpy(), batch.d[0].double().numpy()
    rows = (ys @ C.T - d)  # (samples, R)
    previous = None
    for method in ("ibp", "crown", "alpha-crown"):
        t0 = time.monotonic()
        try:  # the big 2024 image models take minutes on 2 cores: those bounds are benched
            lb = row_lower_bounds(model.graph, batch, method,
                                  alpha=AlphaSettings(iterations=5, early_stop=False),
                                  expired=lambda t0=t0: time.monotonic() > t0 + 2.5)[0].numpy()
        except Interrupted:
            break
        assert (rows >= lb - 1e-4 * (1 + np.abs(rows))).all(), method
        if previous is not None and method == "alpha-crown":
            assert (lb >= previous - 1e-5).all()
        previous = lb
        if method == "crown" and time.monotonic() - t0 > 1.0:
            break  # a big model (vit, the 2024 image families): alpha-CROWN would take minutes
