"""Inputs a model reads only through casts to integers (verifier/search/discrete.py).

A model reads a position p (input entry 0) only as ``int64(p)`` to pick an entry of a
constant table, and a fixed "image" (the other entries) as floats; the property bounds
the output.  Enumerating the integer classes of p on onnxruntime decides it: verified when
no table entry the box can reach is unsafe, falsified with the one hidden class that is
(found whatever its position, at both signs, with the box ending inside a class), and not
applied at all (so never ``verified``) when the position is also read as a float or an
entry read as a float is free.  The cast's truncation toward zero, which the classes rest
on, is checked on onnxruntime itself.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from verifier import parse_vnnlib
from verifier.search.blackbox import opaque_model, verify_opaque
from verifier.search.discrete import free_entries

OFFSET = 8  # table index = int64(p) + OFFSET


def _model(table: np.ndarray, p_as_float: bool = False) -> bytes:
    """y = table[int64(x[0]) + OFFSET] + sum(x[1:3]) (+ x[0] with ``p_as_float``)."""
    inits = [numpy_helper.from_array(table.astype(np.float32), "table"),
             numpy_helper.from_array(np.array([0], dtype=np.int64), "i0"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "s1"),
             numpy_helper.from_array(np.array([3], dtype=np.int64), "s3"),
             numpy_helper.from_array(np.array(OFFSET, dtype=np.int64), "off"),
             numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "shape")]
    nodes = [helper.make_node("Slice", ["x", "i0", "s1"], ["p1"]),  # moved, then cast
             helper.make_node("Reshape", ["p1", "s1"], ["p2"]),
             helper.make_node("Cast", ["p2"], ["pi"], to=TensorProto.INT64),
             helper.make_node("Add", ["pi", "off"], ["idx"]),
             helper.make_node("Gather", ["table", "idx"], ["t"], axis=0),
             helper.make_node("Slice", ["x", "s1", "s3"], ["img"]),
             helper.make_node("ReduceSum", ["img"], ["s"], keepdims=1),
             helper.make_node("Add", ["t", "s"], ["y0"])]
    if p_as_float:
        nodes.append(helper.make_node("Add", ["y0", "p1"], ["y1"]))
    nodes.append(helper.make_node("Reshape", ["y1" if p_as_float else "y0", "shape"], ["y"]))
    graph = helper.make_graph(nodes, "pos", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, (3,))], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, (1, 1))], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                             ).SerializeToString()


def _spec(p_lo: float, p_hi: float, x1: tuple[float, float] = (0.25, 0.25)) -> str:
    """Unsafe: y >= 10, with x1 in ``x1`` and x2 fixed at 0.5."""
    return ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const X_2 Real)\n"
            "(declare-const Y_0 Real)\n"
            f"(assert (>= X_0 {p_lo}))\n(assert (<= X_0 {p_hi}))\n"
            f"(assert (>= X_1 {x1[0]}))\n(assert (<= X_1 {x1[1]}))\n"
            "(assert (>= X_2 0.5))\n(assert (<= X_2 0.5))\n(assert (>= Y_0 10))\n")


def _run(table: np.ndarray, spec: str, p_as_float: bool = False):
    model = opaque_model(_model(table, p_as_float), "Cast to int64 is not supported")
    return verify_opaque(model, parse_vnnlib(spec, 3, 1), timeout=10)


def test_casts_truncate_toward_zero_on_onnxruntime():
    """The classes rest on this: int64(p) is p truncated toward zero."""
    table = np.arange(17, dtype=np.float32)
    sess = ort.InferenceSession(_model(table), providers=["CPUExecutionProvider"])
    for p in (-7.9, -1.0, -0.99, -0.0, 0.5, 0.999, 3.0, 7.99):
        y = sess.run(None, {"x": np.array([p, 0, 0], dtype=np.float32)})[0]
        assert y.item() == int(np.trunc(np.float32(p))) + OFFSET


def test_no_reachable_unsafe_class_is_verified():
    table = np.zeros(17)
    table[[0, 16]] = 50  # unsafe classes -8 and 8: outside the box [-6.5, 6.5]
    result = _run(table, _spec(-6.5, 6.5))
    assert result.verdict == "verified", result.message
    assert "integer classes" in result.message


@pytest.mark.parametrize("k, box", [(-6, (-6.5, 6.5)), (-1, (-6.5, 6.5)), (0, (-0.5, 0.5)),
                                    (5, (-3.0, 5.25)), (3, (2.75, 3.0))])
def test_the_one_unsafe_class_is_found(k, box):
    table = np.zeros(17)
    table[k + OFFSET] = 50
    result = _run(table, _spec(*box))
    assert result.verdict == "falsified", result.message
    (cex,) = result.counterexamples
    assert box[0] <= cex.x[0] <= box[1] and np.trunc(cex.x[0]) == k
    assert cex.y[0] >= 10


def test_an_unsafe_class_just_outside_the_box_is_not_reported():
    table = np.zeros(17)
    table[3 + OFFSET] = 50  # p in [2.0, 2.999]: the class of 3 is never reached
    assert _run(table, _spec(2.0, 2.999)).verdict == "verified"


def test_a_position_also_read_as_a_float_is_not_enumerated():
    table = np.zeros(17)
    result = _run(table, _spec(-6.5, 6.5), p_as_float=True)
    assert result.verdict != "verified"
    assert "integer classes" not in result.message


def test_a_free_entry_read_as_a_float_is_not_enumerated():
    table = np.zeros(17)
    result = _run(table, _spec(-6.5, 6.5, x1=(0.0, 1.0)))
    assert result.verdict != "verified"
    assert "integer classes" not in result.message


def test_free_entries_are_those_holding_two_values_of_the_input_type():
    lo = np.array([0.1, 0.5, 1.0, 0.0])
    hi = np.array([0.1, 0.5 + 1e-12, 1.0 + 2e-7, 1.0])
    assert free_entries(lo, hi, np.dtype(np.float32)).tolist() == [False, False, True, True]


def test_a_subgraph_reading_the_position_as_a_float_is_not_enumerated():
    """An If's branch reads outer tensors without listing them as the node's inputs: the
    position, read there as a float, makes the output unsafe at p = 0.25 only."""
    table = np.zeros(17)
    model = onnx.load_from_string(_model(table))
    graph = model.graph
    out = helper.make_tensor_value_info("b", TensorProto.FLOAT, None)
    branch = helper.make_graph(  # b = 200 * p1 (p1: the position, Slice of x)
        [helper.make_node("Mul", ["p1", "k200"], ["b"])], "then", [], [out],
        [numpy_helper.from_array(np.array([200.0], dtype=np.float32), "k200")])
    graph.initializer.append(numpy_helper.from_array(np.array(True), "yes"))
    graph.node.insert(len(graph.node) - 1, helper.make_node(
        "If", ["yes"], ["iff"], then_branch=branch, else_branch=branch))
    graph.node.insert(len(graph.node) - 1, helper.make_node("Add", ["y0", "iff"], ["y2"]))
    graph.node[-1].input[0] = "y2"
    data = model.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert sess.run(None, {"x": np.array([0.25, 0.25, 0.5], np.float32)})[0].item() >= 10
    result = verify_opaque(opaque_model(data, "Cast"), parse_vnnlib(_spec(-0.5, 0.5), 3, 1),
                           timeout=3)
    assert result.verdict != "verified", result.message
    assert "integer classes" not in result.message


def test_a_cast_to_a_narrow_integer_type_is_not_enumerated():
    model = onnx.load_from_string(_model(np.zeros(17)))
    for node in model.graph.node:
        if node.op_type == "Cast":
            node.attribute[0].i = TensorProto.INT8
    model.graph.node.insert(3, helper.make_node("Cast", ["pi"], ["pi64"], to=TensorProto.INT64))
    next(n for n in model.graph.node if n.op_type == "Add" and "pi" in n.input).input[0] = "pi64"
    data = model.SerializeToString()
    result = verify_opaque(opaque_model(data, "Cast"), parse_vnnlib(_spec(-6.5, 6.5), 3, 1),
                           timeout=3)
    assert "integer classes" not in result.message
