"""Every supported op: torch evaluation agrees with onnxruntime; IBP, CROWN and alpha-CROWN
bounds contain the outputs on dense samples of random boxes (narrow, wide, very wide)."""

from __future__ import annotations

import zlib

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto

from verifier import load_model
from verifier.bounds import intermediate
from verifier.bounds.crown import AlphaSettings, alpha_crown_rows, crown_rows

from .opcases import CASES, build, sample_box

IDS = [c.name for c in CASES]


def _ort(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, {"X": xi})[0] for xi in x])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_agrees_with_onnxruntime(case):
    data = build(case)
    model = load_model(data)
    rng = np.random.default_rng(0)
    x = np.stack([sample_box(case, 0.5, rng)[0] for _ in range(4)]).astype(np.float32)
    ref = _ort(data, x)
    ours = model.graph.forward(torch.tensor(x)).numpy()
    scale = np.abs(ref).max() + 1e-6
    assert np.abs(ours.reshape(ref.shape) - ref).max() / scale < 1e-4


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float64_agrees_with_onnxruntime(case):
    data = build(case, TensorProto.DOUBLE)
    try:
        ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime lacks a double kernel for this op
        data = build(case)
    model = load_model(data)
    rng = np.random.default_rng(1)
    x = np.stack([sample_box(case, 0.5, rng)[0] for _ in range(4)])
    dtype = model.input_dtype
    ref = _ort(data, x.astype(dtype)).astype(np.float64)
    ours = model.graph.forward(torch.tensor(x.astype(dtype), dtype=torch.float64)).numpy()
    scale = np.abs(ref).max() + 1e-6
    tol = 1e-5 if dtype == np.float64 else 1e-4
    assert np.abs(ours.reshape(ref.shape) - ref).max() / scale < tol


def _samples(lo: np.ndarray, hi: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform samples plus every corner of the first few coordinates' extremes."""
    u = rng.uniform(size=(n, *lo.shape))
    pts = lo + u * (hi - lo)
    corners = rng.integers(0, 2, size=(n // 4, *lo.shape))
    return np.concatenate([pts, np.where(corners == 1, hi, lo), lo[None], hi[None]])


@pytest.mark.parametrize("width", [1e-4, 0.3, 3.0], ids=["narrow", "medium", "wide"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bounds_contain_outputs(case, width):
    model = load_model(build(case, TensorProto.DOUBLE if case.op != "Gelu" else TensorProto.FLOAT))
    g = model.graph
    # a seed stable across processes (hash() of a str is randomised per process)
    rng = np.random.default_rng(zlib.crc32(f"{case.name}/{width}".encode()))
    lo, hi = sample_box(case, width, rng)
    x = _samples(lo, hi, 400, rng)
    with torch.no_grad():
        y = g.forward(torch.tensor(x, dtype=torch.float64)).reshape(len(x), -1)
    L = torch.tensor(lo, dtype=torch.float64).reshape(1, -1)
    U = torch.tensor(hi, dtype=torch.float64).reshape(1, -1)
    ilo, ihi = g.ibp(L, U)
    ilo, ihi = ilo.reshape(-1), ihi.reshape(-1)
    tol = 1e-9 * (1 + y.abs().max())
    assert (y >= ilo - tol).all() and (y <= ihi + tol).all(), "IBP"
    m = y.shape[1]
    C = torch.cat([torch.eye(m), -torch.eye(m)]).to(torch.float64).unsqueeze(0)
    d = torch.zeros(1, 2 * m, dtype=torch.float64)
    with torch.no_grad():
        crown = crown_rows(g, L, U, C, d)
    alpha = alpha_crown_rows(g, L, U, C, d, AlphaSettings(iterations=5, early_stop=False))
    for name, rows in (("CROWN", crown), ("alpha-CROWN", alpha)):
        low, high = rows[0, :m], -rows[0, m:]
        assert (y >= low - tol).all(), f"{name} lower bound above a sampled output"
        assert (y <= high + tol).all(), f"{name} upper bound below a sampled output"
    # alpha-CROWN is never looser than CROWN
    assert (alpha >= crown - 1e-9).all()


def test_crown_no_looser_than_ibp_after_intersection():
    case = next(c for c in CASES if c.name == "gemm")
    g = load_model(build(case)).graph
    L, U = -torch.ones(1, 6), torch.ones(1, 6)
    nb = intermediate.compute(g, L, U)
    ilo, ihi = g.ibp(L, U)
    blo, bhi = nb.box[g.output_name]
    assert (blo >= ilo - 1e-6).all() and (bhi <= ihi + 1e-6).all()


LINEAR_CASES = [c for c in CASES if any(n.op.linear for n in load_model(build(c)).graph.nodes)]


@pytest.mark.parametrize("case", LINEAR_CASES, ids=[c.name for c in LINEAR_CASES])
def test_linear_backward_is_the_transpose(case):
    """Every linear op's own backward rule (dense matrices, permutations, ...) equals the
    transpose of its map computed by autograd, on random coefficients."""
    from verifier.ops.linear import vjp_backward

    g = load_model(build(case, TensorProto.DOUBLE)).graph
    gen = torch.Generator().manual_seed(0)
    checked = 0
    for node in g.nodes:
        if not node.op.linear:
            continue
        A = torch.randn(2, 3, *node.shape, generator=gen, dtype=torch.float64)
        ours, ref = node.op.backward(A), vjp_backward(node.op, A)
        for a, b in zip(ours, ref, strict=True):
            assert torch.allclose(a.reshape(b.shape), b, atol=1e-10), node.name
        checked += 1
    assert checked
