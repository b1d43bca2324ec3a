"""The CUDA path: every op case and every shared model bounds the same on the GPU as on the CPU
(and soundly, against onnxruntime samples), and whole verifications reach the same verdicts.
Skipped, with the reason, where torch sees no GPU (CI has none; run on a GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto

from verifier import Settings, load_model, parse_vnnlib_file, verify
from verifier.bounds.crown import AlphaSettings, alpha_crown_rows, crown_rows
from verifier.bounds.methods import row_lower_bounds
from verifier.problems import make_batch

from .conftest import bench_instances, load_bench_model, ort_box_samples
from .opcases import CASES, build, sample_box

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
ALPHA = AlphaSettings(iterations=5, early_stop=False)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_op_bounds_match_cpu(case):
    dtype = TensorProto.DOUBLE if case.op != "Gelu" else TensorProto.FLOAT
    g = load_model(build(case, dtype)).graph
    rng = np.random.default_rng(7)
    lo, hi = sample_box(case, 0.3, rng)
    out = {}
    for dev in (CPU, CUDA):
        L = torch.tensor(lo, dtype=torch.float64, device=dev).reshape(1, -1)
        U = torch.tensor(hi, dtype=torch.float64, device=dev).reshape(1, -1)
        m = int(np.prod(g.output_shape))
        C = torch.cat([torch.eye(m), -torch.eye(m)]).to(dev, torch.float64).unsqueeze(0)
        d = torch.zeros(1, 2 * m, dtype=torch.float64, device=dev)
        with torch.no_grad():
            crown = crown_rows(g, L, U, C, d)
        alpha = alpha_crown_rows(g, L, U, C, d, ALPHA)
        assert crown.device.type == dev.type and alpha.device.type == dev.type
        out[dev.type] = (crown.cpu(), alpha.cpu())
    for got, want in zip(out["cuda"], out["cpu"], strict=True):
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-6 * (1 + want.abs().max()))


INSTANCES = list({m: (m, s) for m, s in bench_instances()}.values())


@pytest.mark.parametrize("model_path,spec_path", INSTANCES,
                         ids=[f"{m.stem}-{s.stem}" for m, s in INSTANCES])
def test_model_bounds_sound_and_match_cpu(model_path, spec_path, bench):
    model = load_bench_model(model_path)
    prop = parse_vnnlib_file(spec_path, model.n_inputs, model.n_outputs)
    case = prop.cases[0]
    _, ys = ort_box_samples(model_path, model, case, 200, seed=3)
    methods = ("ibp", "crown") if "vit" in str(model_path) else ("ibp", "crown", "alpha-crown")
    for method in methods:
        lows = {}
        for dev in (CPU, CUDA):
            batch = make_batch(prop, [0], dev, torch.float32)
            lows[dev.type] = row_lower_bounds(model.graph, batch, method, alpha=ALPHA)[0].cpu()
        C, d = batch.C[0].double().cpu().numpy(), batch.d[0].double().cpu().numpy()
        rows = ys @ C.T - d
        gpu = lows["cuda"].numpy()
        assert (rows >= gpu - 1e-4 * (1 + np.abs(rows))).all(), method
        scale = 1e-3 * (1 + lows["cpu"].abs())
        assert ((lows["cuda"] - lows["cpu"]).abs() <= scale).all(), method


VERDICT_INSTANCES = [(m, s) for m, s in bench_instances()
                     if m.parent.parent.name in ("test", "acasxu")
                     or m.parent.name in ("test", "acasxu")][:8]


@pytest.mark.parametrize("model_path,spec_path", VERDICT_INSTANCES,
                         ids=[f"{m.stem}-{s.stem}" for m, s in VERDICT_INSTANCES])
def test_verdicts_match_cpu(model_path, spec_path, bench):
    model = load_bench_model(model_path)
    prop = parse_vnnlib_file(spec_path, model.n_inputs, model.n_outputs)
    cpu = verify(model, prop, Settings(timeout=30, device="cpu"))
    gpu = verify(model, prop, Settings(timeout=30, device="cuda"))
    assert gpu.verdict == cpu.verdict
    if gpu.verdict == "falsified":  # the witness was confirmed by onnxruntime on the model
        assert gpu.counterexamples
