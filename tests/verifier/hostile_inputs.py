"""Hand-made hostile inputs (models and VNN-LIB texts) shared by the no-traceback tests of the
command line, the Python API and the service.

Each model is ``Hostile(name, data, n_in, n_out, must_fail)``: its ONNX bytes, the sizes a
matching property uses, and whether it must be refused (``True``) or may also be verified
(``False``: any verdict is fine, as long as nothing crashes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


@dataclass(frozen=True)
class Hostile:
    name: str
    data: bytes
    n_in: int = 2
    n_out: int = 2
    must_fail: bool = True


def _vi(name: str, shape, elem: int = F):  # type: ignore[no-untyped-def]
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, inits=(), opset: int = 17) -> bytes:  # type: ignore[no-untyped-def]
    graph = helper.make_graph(nodes, "hostile", inputs, outputs, list(inits))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return bytes(proto.SerializeToString())


def _const(name: str, value) -> object:  # type: ignore[no-untyped-def]
    return numpy_helper.from_array(np.asarray(value), name)


def good_model() -> bytes:
    """y = [[1, 1], [1, 1]] x on two inputs: a model every check accepts."""
    W = _const("W", np.ones((2, 2), np.float32))
    return _model([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)],
                  [_vi("x", (1, 2))], [_vi("y", (1, 2))], [W])


def _node(op: str, ins: list[str], outs: list[str], **attrs) -> object:  # type: ignore[no-untyped-def]
    return helper.make_node(op, ins, outs, **attrs)


def hostile_models() -> list[Hostile]:
    x2, y2 = [_vi("x", (1, 2))], [_vi("y", (1, 2))]
    good = good_model()
    ones_w = _const("W3", np.ones((2, 3), np.float32))
    return [
        Hostile("garbage", b"\x00\x01garbage" * 50),
        Hostile("truncated", good[: len(good) // 2]),
        Hostile("empty_file", b""),
        Hostile("no_nodes_output_is_input", _model([], x2, [_vi("x", (1, 2))]), must_fail=False),
        Hostile("identity", _model([_node("Identity", ["x"], ["y"])], x2, y2), must_fail=False),
        # the audit's crash: Relu of a constant as the graph output
        Hostile("relu_of_constant_is_output",
                _model([_node("Relu", ["C"], ["y"])], x2, y2,
                       [_const("C", np.ones((1, 2), np.float32))])),
        Hostile("constant_branch_added",
                _model([_node("Relu", ["C"], ["r"]), _node("Add", ["x", "r"], ["y"])], x2, y2,
                       [_const("C", np.ones((1, 2), np.float32))]), must_fail=False),
        Hostile("output_produced_by_no_node",
                _model([_node("Relu", ["x"], ["y"])], x2, [_vi("zz", (1, 2))])),
        Hostile("input_produced_by_no_node", _model([_node("Relu", ["q"], ["y"])], x2, y2)),
        Hostile("cycle", _model([_node("Add", ["x", "b"], ["a"]), _node("Relu", ["a"], ["b"])],
                                x2, [_vi("b", (1, 2))])),
        Hostile("unsupported_op",
                _model([_node("TopK", ["x", "K"], ["y", "i"])], x2, [_vi("y", (1, 1))],
                       [_const("K", np.array([1], np.int64))]), n_out=1,
                must_fail=False),  # onnxruntime runs it: searched there (never verified)
        Hostile("custom_domain", _model([helper.make_node("Foo", ["x"], ["y"], domain="com.x")],
                                        x2, y2)),
        Hostile("gemm_shape_mismatch",
                _model([_node("Gemm", ["x", "W3"], ["y"], transB=1)], x2, y2, [ones_w])),
        Hostile("matmul_shape_mismatch",
                _model([_node("MatMul", ["x", "W3"], ["y"])], x2, y2,
                       [_const("W3", np.ones((3, 2), np.float32))])),
        Hostile("reshape_to_wrong_size",
                _model([_node("Reshape", ["x", "s"], ["y"])], x2, [_vi("y", (1, 3))],
                       [_const("s", np.array([1, 3], np.int64))]), n_out=3),
        Hostile("kernel_larger_than_image",
                _model([_node("Conv", ["x", "K"], ["y"], kernel_shape=[3, 3])],
                       [_vi("x", (1, 1, 2, 2))], [_vi("y", (1, 1, 1, 1))],
                       [_const("K", np.ones((1, 1, 3, 3), np.float32))]), n_in=4, n_out=1),
        Hostile("zero_size_input", _model([_node("Relu", ["x"], ["y"])], [_vi("x", (1, 0))],
                                          [_vi("y", (1, 0))]), n_in=0, n_out=0, must_fail=False),
        Hostile("zero_size_output",
                _model([_node("Slice", ["x", "s", "e"], ["y"])], x2, [_vi("y", (1, 0))],
                       [_const("s", np.array([1], np.int64)),
                        _const("e", np.array([1], np.int64))]), n_out=0, must_fail=False),
        Hostile("int_input", _model([_node("Cast", ["x"], ["c"], to=F),
                                     _node("Relu", ["c"], ["y"])],
                                    [_vi("x", (1, 2), TensorProto.INT64)], y2)),
        Hostile("int_output", _model([_node("Cast", ["x"], ["y"], to=TensorProto.INT64)], x2,
                                     [_vi("y", (1, 2), TensorProto.INT64)])),
        Hostile("argmax_output", _model([_node("ArgMax", ["x"], ["y"], axis=1)], x2,
                                        [_vi("y", (1, 1), TensorProto.INT64)]), n_out=1),
        Hostile("two_inputs", _model([_node("Add", ["x", "z"], ["y"])],
                                     [_vi("x", (1, 2)), _vi("z", (1, 2))], y2)),
        Hostile("two_outputs", _model([_node("Relu", ["x"], ["y"]), _node("Neg", ["x"], ["z"])],
                                      x2, [_vi("y", (1, 2)), _vi("z", (1, 2))])),
        Hostile("input_without_shape",
                _model([_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", F, None)],
                       y2)),
        Hostile("two_symbolic_dims", _model([_node("Relu", ["x"], ["y"])], [_vi("x", ("a", "b"))],
                                            [_vi("y", ("a", "b"))])),
        Hostile("scalar_input", _model([_node("Relu", ["x"], ["y"])], [_vi("x", ())],
                                       [_vi("y", ())]), n_in=1, n_out=1, must_fail=False),
        Hostile("opset_1", _model([_node("Relu", ["x"], ["y"])], x2, y2, opset=1), must_fail=False),
        Hostile("float16", _model([_node("Relu", ["x"], ["y"])],
                                  [_vi("x", (1, 2), TensorProto.FLOAT16)],
                                  [_vi("y", (1, 2), TensorProto.FLOAT16)]), must_fail=False),
        Hostile("nan_weights", _model([_node("Gemm", ["x", "Wn"], ["y"], transB=1)], x2, y2,
                                      [_const("Wn", np.full((2, 2), np.nan, np.float32))]),
                must_fail=False),
        Hostile("inf_weights", inf_weights_model(), must_fail=False),
    ]


def inf_weights_model() -> bytes:
    """y = [[inf, inf], [inf, inf]] x: at x = (-1, -1) onnxruntime gives y = (-inf, -inf), so
    ``Y_0 <= -100`` over the box [-1, 1]^2 is violated there: never ``verified``."""
    Wi = _const("Wi", np.full((2, 2), np.inf, np.float32))
    return _model([_node("Gemm", ["x", "Wi"], ["y"], transB=1)], [_vi("x", (1, 2))],
                  [_vi("y", (1, 2))], [Wi])


def vnnlib(n_in: int = 2, n_out: int = 2, lo: object = -1, hi: object = 1,
           out: str = "(assert (<= Y_0 -100.0))") -> str:
    """A VNN-LIB text declaring ``n_in`` inputs in [lo, hi] and ``n_out`` outputs."""
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in))
    text += "".join(f"(declare-const Y_{j} Real)\n" for j in range(n_out))
    text += "".join(f"(assert (>= X_{i} {lo}))\n(assert (<= X_{i} {hi}))\n" for i in range(n_in))
    return text + out + "\n"


def hostile_specs() -> dict[str, tuple[str, bool]]:
    """VNN-LIB texts for the 2-input, 2-output ``good_model``: name -> (text, must_fail)."""
    ors = 100_000
    deep = f"(assert {'(or ' * ors}(<= Y_0 0){')' * ors})"
    many = " ".join(f"(and (<= Y_0 {i}) (>= Y_1 {i}))" for i in range(5000))
    return {
        "syntax_unclosed": (vnnlib() + "(assert (<= Y_0", True),
        "syntax_stray_parens": ("(declare-const X_0 Real))) (((", True),
        "undeclared_input": (vnnlib() + "(assert (<= X_7 0))\n", True),
        "undeclared_output": (vnnlib(out="(assert (<= Y_9 0))"), True),
        "empty_box": (vnnlib(lo=1, hi=-1), True),
        "nan_bound": (vnnlib(lo="nan"), True),
        "inf_bounds": (vnnlib(lo="-inf", hi="inf"), True),
        "inf_threshold": (vnnlib(out="(assert (<= Y_0 inf))"), True),
        "overflowing_bound": (vnnlib(lo="-1e999", hi="1e999"), True),
        "overflowing_constant": (vnnlib(out="(assert (<= Y_0 1" + "0" * 400 + "))"), True),
        "too_many_inputs": (vnnlib(n_in=3), True),
        "too_many_outputs": (vnnlib(n_out=5, out="(assert (<= Y_4 0))"), True),
        "unbounded_input": ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n"
                            "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
                            "(assert (<= Y_0 0))\n", True),
        "empty_text": ("", True),
        "binary_junk": ("\x00\xff\xfe junk \x01", True),
        "product_of_outputs": (vnnlib(out="(assert (<= (* Y_0 Y_1) 0))"), True),
        "division_by_zero": (vnnlib(out="(assert (<= (/ Y_0 0) 0))"), True),
        "empty_box_in_a_disjunct": (vnnlib(out="(assert (or (and (>= X_0 0.5) (<= Y_0 0)) "
                                                "(and (<= X_0 -2) (<= Y_1 0))))"), False),
        "deeply_nested": (vnnlib() + deep, False),
        "many_disjuncts": (vnnlib(out=f"(assert (or {many}))"), False),
        "no_output_constraint": (vnnlib(out=""), False),
    }
