"""`falsified` only with an input inside the box in the model's input type that satisfies the
property exactly, strict comparisons included, on onnxruntime's output."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from verifier import Settings, load_model, parse_vnnlib, verify
from verifier.search.attack import confirm, into_box

FAST = Settings(timeout=5)


def _scale_model(elem=TensorProto.FLOAT, k=1.0) -> bytes:
    dtype = np.float32 if elem == TensorProto.FLOAT else np.float64
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])], "g",
        [helper.make_tensor_value_info("x", elem, [1, 1])],
        [helper.make_tensor_value_info("y", elem, [1, 1])],
        [numpy_helper.from_array(np.array([k], dtype=dtype), "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def _spec(x_lo: str, x_hi: str, y_atom: str) -> str:
    return ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
            f"(assert (>= X_0 {x_lo}))\n(assert (<= X_0 {x_hi}))\n(assert {y_atom})\n")


def test_rounding_into_the_box_stays_inside():
    lo, hi = np.array([0.2]), np.array([0.3])
    x, snapped = into_box(np.array([0.2]), lo, hi, np.dtype(np.float32))
    assert x[0] >= 0.2 and np.float32(x[0]) == x[0] and not snapped.any()
    # no float32 equals 0.3: a fixed input 0.3 is taken at the nearest float32, and marked
    x, snapped = into_box(np.array([0.3]), np.array([0.3]), np.array([0.3]),
                          np.dtype(np.float32))
    assert snapped.all() and x[0] == float(np.float32(0.3))


def test_fixed_inputs_that_are_no_float32_are_snapped_and_said():
    """y = x0 + x1 with X_1 fixed at 0.3 (no float32): the counterexample takes the nearest
    float32 for X_1, only there, and the message says so."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    text = ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
            "(assert (>= X_0 0.5))\n(assert (<= X_0 1))\n"
            "(assert (>= X_1 0.3))\n(assert (<= X_1 0.3))\n(assert (>= Y_0 1.2))\n")
    result = verify(load_model(model.SerializeToString()), parse_vnnlib(text, 2, 1), FAST)
    assert result.verdict == "falsified"
    cex = result.counterexamples[0]
    assert cex.snapped == 1 and cex.x[1] == float(np.float32(0.3)) and 0.5 <= cex.x[0] <= 1
    assert "nearest" in result.message


def test_no_float32_input_reaches_the_bound():
    """y = x on X in [0.1, 0.2]: 'y >= 0.2' needs x = 0.2, which float32 cannot hold (its
    neighbours are 0.19999999 and 0.20000001); the old check accepted 0.20000000298."""
    model = load_model(_scale_model())
    prop = parse_vnnlib(_spec("0.1", "0.2", "(>= Y_0 0.2)"), 1, 1)
    result = verify(model, prop, FAST)
    assert result.verdict != "falsified"
    assert confirm(model, prop, 0, np.array([0.2])) is None


def test_float64_model_reaches_the_bound():
    model = load_model(_scale_model(TensorProto.DOUBLE))
    prop = parse_vnnlib(_spec("0.1", "0.2", "(>= Y_0 0.2)"), 1, 1)
    result = verify(model, prop, FAST)
    assert result.verdict == "falsified"
    assert result.counterexamples[0].x[0] == 0.2


def test_strict_output_comparison():
    """y = x on [0.5, 1]: the unsafe 'y <= 0.5' holds at x = 0.5, 'y < 0.5' nowhere."""
    model = load_model(_scale_model())
    closed = verify(model, parse_vnnlib(_spec("0.5", "1", "(<= Y_0 0.5)"), 1, 1), FAST)
    assert closed.verdict == "falsified"
    strict_prop = parse_vnnlib(_spec("0.5", "1", "(< Y_0 0.5)"), 1, 1)
    strict = verify(model, strict_prop, FAST)
    assert strict.verdict != "falsified"
    assert confirm(model, strict_prop, 0, np.array([0.5])) is None


def test_strict_input_bound():
    """X_0 > 0.5 strictly: the point 0.5 (where y = x reaches the unsafe y <= 0.5) is out."""
    model = load_model(_scale_model())
    text = ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
            "(assert (> X_0 0.5))\n(assert (<= X_0 1))\n(assert (<= Y_0 0.5))\n")
    prop = parse_vnnlib(text, 1, 1)
    assert prop.strict_x == ((0, 0.5),)
    assert confirm(model, prop, 0, np.array([0.5])) is None
    assert verify(model, prop, FAST).verdict != "falsified"


def test_strictness_in_general_rows_and_runs():
    text = ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
            "(assert (>= X_0 0))\n(assert (<= X_0 1))\n"
            "(assert (or (and (< Y_0 Y_1)) (and (<= Y_1 3) (> Y_0 2))))\n")
    prop = parse_vnnlib(text, 1, 2)
    first, second = prop.cases[0].disjuncts
    assert first.strict is not None and first.strict.tolist() == [True]
    assert second.strict is not None and second.strict.tolist() == [False, True]
    assert not first.holds(np.array([1.0, 1.0])) and first.holds(np.array([1.0, 1.5]))
    assert not second.holds(np.array([2.0, 3.0])) and second.holds(np.array([2.5, 3.0]))


def test_exact_row_arithmetic():
    """0.1 + 0.2 > 0.3 in float64 sums but not in the decimals' float64 values summed
    exactly: the check is exact on the values as given."""
    text = ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
            "(assert (>= X_0 0))\n(assert (<= X_0 1))\n"
            "(assert (<= (+ Y_0 Y_1) 0.30000000000000004))\n")
    prop = parse_vnnlib(text, 1, 2)
    conj = prop.cases[0].disjuncts[0]
    assert conj.holds(np.array([0.1, 0.2]))  # exact 0.1 + 0.2 (as float64) < 0.3000...04
