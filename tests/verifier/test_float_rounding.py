"""Proofs survive floating point (issue: sound by construction, class 2).

The model that counts is onnxruntime's floating-point evaluation, not the exact function the
graph denotes.  These tests build models where the two differ (cancellation, a float16
cast, one-ulp differences in tanh, margins of 1e-7 relative) and check that nnverify never
proves what onnxruntime's outputs refute; and that every op's rounding bound holds against
onnxruntime itself on random points, in float32 and float64 models.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from verifier import Settings, load_model, verify
from verifier import ort as judge
from verifier.importer.guard import enclosures
from verifier.property.core import Case, Conjunction, Property
from verifier.verify import compute_dtype

from .opcases import CASES, build, sample_box

FAST = Settings(timeout=10)


def _model(nodes, inits, elem=TensorProto.FLOAT, n_in=1, n_out=1) -> bytes:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", elem, [1, n_in])],
                              [helper.make_tensor_value_info("y", elem, [1, n_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def _const(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _prop(lo, hi, C, d, strict=None) -> Property:
    conj = Conjunction(np.asarray(C, float), np.asarray(d, float),
                       None if strict is None else np.asarray(strict, bool))
    return Property(len(lo), len(C[0]), (Case(np.asarray(lo, float), np.asarray(hi, float),
                                              (conj,)),))


def _ort_out(data: bytes, x: np.ndarray, dtype) -> np.ndarray:
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": np.asarray(x, dtype=dtype).reshape(1, -1)})[0].ravel()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("elem", [TensorProto.FLOAT, TensorProto.DOUBLE], ids=["f32", "f64"])
@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_rounding_bounds_contain_onnxruntime(case, elem, scale):
    """At random points (also large ones), onnxruntime's value of every op lies inside the
    engine's enclosure of the op's floating-point evaluation, in both precisions."""
    data = build(case, elem)
    try:
        model = load_model(data)
    except Exception as exc:  # an op refused in float64 is not a rounding question
        pytest.skip(f"not imported: {exc}")
    np_dtype = np.float32 if elem == TensorProto.FLOAT else np.float64
    rng = np.random.default_rng(7)
    points = np.stack([sample_box(case, 0.5, rng)[0] * (1 if case.positive else scale)
                       for _ in range(16)]).astype(np_dtype)
    try:
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime has no kernel for this op in this type
        pytest.skip(f"onnxruntime cannot run it: {exc}")
    ref = np.stack([sess.run(None, {"X": p})[0] for p in points]).reshape(len(points), -1)
    for dtype in (torch.float32, torch.float64):
        if np_dtype == np.float64 and dtype == torch.float32:
            continue  # float32 cannot hold float64 points; verify never does this (auto dtype)
        lo, hi = enclosures(model, torch.as_tensor(points.astype(np.float64), dtype=dtype))[
            model.graph.output_name]
        lo = lo.reshape(len(points), -1).double().numpy()
        hi = hi.reshape(len(points), -1).double().numpy()
        ok = np.isnan(ref) | ((lo <= ref) & (ref <= hi))
        assert ok.all(), (case.name, dtype, np.abs(np.where(ok, 0, ref - (lo + hi) / 2)).max())


def test_cancellation_is_not_proved():
    """y = (2^24 x + 1) - 2^24 x is 1 in exact arithmetic but 0 in float32 at x = 1, so
    'y > 0.5 on [1, 2]' is false on onnxruntime's outputs."""
    data = _model([helper.make_node("Mul", ["x", "k"], ["a"]),
                   helper.make_node("Add", ["a", "one"], ["b"]),
                   helper.make_node("Sub", ["b", "a"], ["y"])],
                  [_const("k", [2.0 ** 24]), _const("one", [1.0])])
    assert _ort_out(data, [1.0], np.float32)[0] == 0.0
    result = verify(load_model(data), _prop([1.0], [2.0], [[1.0]], [0.5]), FAST)
    assert result.verdict == "falsified"
    assert result.counterexamples[0].y[0] <= 0.5


def test_float16_cast_rounds():
    """Cast to float16 and back moves 0.1 to 0.0999755859375: a property that holds for the
    identity fails for the model."""
    data = _model([helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
                   helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)], [])
    x = float(np.float32(0.1))
    result = verify(load_model(data), _prop([x], [x], [[1.0]], [0.09999]), FAST)
    assert result.verdict == "falsified"


def _net(elem, rng, act="Tanh"):
    dtype = np.float32 if elem == TensorProto.FLOAT else np.float64
    W1, b1 = rng.standard_normal((6, 24)), rng.standard_normal(24)
    W2 = rng.standard_normal((24, 1))
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]),
             helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node(act, ["hb"], ["t"]),
             helper.make_node("MatMul", ["t", "W2"], ["y"])]
    inits = [_const("W1", W1, dtype), _const("b1", b1, dtype), _const("W2", W2, dtype)]
    return _model(nodes, inits, elem, n_in=6), dtype


@pytest.mark.parametrize("elem", [TensorProto.FLOAT, TensorProto.DOUBLE], ids=["f32", "f64"])
@pytest.mark.parametrize("act", ["Tanh", "Relu", "Sigmoid"])
@pytest.mark.parametrize("seed", range(3))
def test_margins_of_1e7_relative(elem, act, seed):
    """At a point, thresholds 1e-7 relative above and below onnxruntime's output: above, the
    point is a counterexample (never 'verified'); below, nothing is (never 'falsified'); a
    float64 model, analysed in float64, proves the margin."""
    rng = np.random.default_rng(seed)
    data, dtype = _net(elem, rng, act)
    model = load_model(data)
    x = rng.uniform(-1, 1, 6).astype(dtype).astype(np.float64)
    # the judge's own session (basic optimisations, one thread): a session with other
    # settings may pick another MatMul kernel and round differently by more than 1e-7
    y = float(judge.run(model, x)[0])
    above = verify(model, _prop(x, x, [[1.0]], [y + 1e-7 * abs(y)]), FAST)
    below = verify(model, _prop(x, x, [[1.0]], [y - 1e-7 * abs(y)]), FAST)
    assert above.verdict != "verified" and below.verdict != "falsified"
    assert above.verdict == "falsified"
    if elem == TensorProto.DOUBLE:
        assert below.verdict == "verified"


def test_float64_model_is_analysed_in_float64():
    rng = np.random.default_rng(0)
    data64, _ = _net(TensorProto.DOUBLE, rng)
    data32, _ = _net(TensorProto.FLOAT, rng)
    prop = _prop([0.0] * 6, [0.1] * 6, [[1.0]], [0.0])
    assert compute_dtype("auto", load_model(data64), prop) == torch.float64
    assert compute_dtype("auto", load_model(data32), prop) == torch.float32
    # an output coefficient float32 cannot hold forces float64 as well
    inexact = _prop([0.0] * 6, [0.1] * 6, [[0.1]], [0.0])
    assert compute_dtype("auto", load_model(data32), inexact) == torch.float64


def test_long_sum_cancellation_not_proved():
    """A 2000-term dot product whose float32 sum differs from the exact one by far more than
    one ulp of the result: the claim 'y > exact - tiny' is not proved when onnxruntime's
    value is below it."""
    rng = np.random.default_rng(3)
    big = rng.uniform(1e3, 1e4, 1000)
    w = np.concatenate([big, -big]).astype(np.float32)[:, None]
    w[0] += 1.0
    data = _model([helper.make_node("MatMul", ["x", "W"], ["y"])],
                  [_const("W", w)], n_in=2000)
    x = np.ones(2000)
    exact = float(np.sum(w.astype(np.float64)))
    got = float(_ort_out(data, x, np.float32)[0])
    prop = _prop(x, x, [[1.0]], [min(got, exact) + 1e-3])  # unsafe: y <= that
    # onnxruntime's value is above the threshold, so nothing falsifies it: the run ends at
    # its timeout (4 s: a one-point box has nothing to split)
    result = verify(load_model(data), prop, Settings(timeout=4))
    assert result.verdict != "verified"


@pytest.mark.parametrize("scale", [1.0, 60.0])
def test_softmax_margins_of_1e7_relative(scale):
    """Softmax (exp and its sum round relatively, see design notes): 1e-7 relative above
    onnxruntime's output at a point is a counterexample, never 'verified'; below, never
    'falsified'; with logits large enough that exp overflows elsewhere in float32."""
    rng = np.random.default_rng(11)
    W = rng.standard_normal((4, 5)) * scale
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["z"]),
         helper.make_node("Softmax", ["z"], ["y"], axis=-1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [_const("W", W)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    data = model.SerializeToString()
    x = rng.uniform(-1, 1, 4).astype(np.float32).astype(np.float64)
    y = _ort_out(data, x, np.float32)
    j = int(np.argmax(y))
    row = np.eye(5)[j:j + 1]
    m = load_model(data)
    above = verify(m, _prop(x, x, row, [y[j] * (1 + 1e-7)]), FAST)
    below = verify(m, _prop(x, x, row, [y[j] * (1 - 1e-7)]), FAST)
    assert above.verdict == "falsified" and below.verdict != "falsified"


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_affine_interval_bounds_near_the_float32_limit(sign):
    """Boxes beyond half the largest float32: the interval bound of a mixed-sign Gemm
    (centre and radius) contains onnxruntime's outputs; the sum of the box's ends
    overflowed to an infinite centre, an interval at a single infinite point."""
    import dataclasses

    from verifier.bounds.methods import row_lower_bounds

    from .opcases import plus_minus_rows, run_ort

    W = np.array([[1.0, 1e-3], [0.5, -0.5]], np.float32)
    data = _model([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)], [_const("W", W)],
                  n_in=2, n_out=2)
    lo = sign * np.array([[3.0e38, 0.0], [2.0e38, -1.0]])
    hi = sign * np.array([[2.9e38, 1.0], [1.8e38, 1.0]])
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    b = plus_minus_rows(lo, hi, 2)
    batch = dataclasses.replace(b, lower=b.lower.float(), upper=b.upper.float(),
                                C=b.C.float(), d=b.d.float())
    bound = row_lower_bounds(load_model(data).graph, batch, "ibp").double().numpy()
    for i in range(len(lo)):
        xs = np.array([[lo[i, 0], lo[i, 1]], [hi[i, 0], hi[i, 1]], [lo[i, 0], hi[i, 1]],
                       [hi[i, 0], lo[i, 1]]], np.float32)
        ys = run_ort(data, xs[:, None])[:, 0]
        rows = np.concatenate([ys, -ys], 1)
        assert np.isfinite(bound[i]).all() and (rows >= bound[i]).all(), (bound[i], rows)
