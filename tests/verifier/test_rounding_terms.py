"""The rounding charge of affine ops counts the products behind each output entry
(``rounding_terms``), not the fan-in: ConvTranspose's must equal a brute-force enumeration of
the (input channel, input position, kernel tap) triples that reach an output entry, for
random strides, dilations, pads, output paddings and groups; Gemm's and MatMul's the most
nonzero weights one output entry sums.  (Too few terms would make the rounding bound
unsound; onnxruntime's values are checked against the bound in test_float_rounding.py,
whose cases include a sparse grouped ConvTranspose and sparse Gemm and MatMul.)"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from verifier import load_model


def _count(size: int, kernel: int, stride: int, dilation: int, pad_begin: int, out: int
           ) -> list[int]:
    """Per output position along one axis: the (input position, tap) pairs reaching it."""
    hits = [0] * out
    for i, k in itertools.product(range(size), range(kernel)):
        o = i * stride + k * dilation - pad_begin
        if 0 <= o < out:
            hits[o] += 1
    return hits


def _op(op_type: str, weight: np.ndarray, x_shape: list[int], out_shape: list[int],
        **attrs):
    """The imported op of a one-node model ``op_type(x, w)`` (``left``: ``(w, x)``)."""
    inputs = ["w", "x"] if attrs.pop("left", False) else ["x", "w"]
    node = helper.make_node(op_type, inputs, ["y"], **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(weight, "w")])
    model = load_model(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return next(n.op for n in model.graph.nodes if type(n.op).__name__ == op_type)


@pytest.mark.parametrize("seed", range(12))
def test_terms_are_the_products_that_reach_an_output_entry(seed: int):
    rng = np.random.default_rng(seed)
    group = int(rng.integers(1, 3))
    c_in, c_out = group * int(rng.integers(1, 4)), group * int(rng.integers(1, 3))
    size = [int(v) for v in rng.integers(1, 5, 2)]
    kernel = [int(v) for v in rng.integers(1, 5, 2)]
    strides = [int(v) for v in rng.integers(1, 4, 2)]
    dil = [int(v) for v in rng.integers(1, 3, 2)]
    out_pad = [int(rng.integers(0, s)) for s in strides]
    full = [(n - 1) * s + (k - 1) * d + 1 + p
            for n, s, k, d, p in zip(size, strides, kernel, dil, out_pad, strict=True)]
    pads = [int(rng.integers(0, max(1, f // 3))) for f in full] * 2
    out = [f - pads[i] - pads[i + 2] for i, f in enumerate(full)]
    weight = rng.standard_normal((c_in, c_out // group, *kernel)).astype(np.float32)
    op = _op("ConvTranspose", weight, [1, c_in, *size], [1, c_out, *out], strides=strides,
             dilations=dil, output_padding=out_pad, pads=pads, group=group)
    per_axis = [_count(size[a], kernel[a], strides[a], dil[a], pads[a], out[a])
                for a in range(2)]
    expected = (c_in // group) * max(per_axis[0]) * max(per_axis[1]) + 1
    assert op.rounding_terms() == expected
    assert op.rounding_terms() <= c_in // group * kernel[0] * kernel[1] + 1


@pytest.mark.parametrize("seed", range(8))
def test_products_count_the_nonzero_weights_a_sum_takes(seed: int):
    """Gemm (either transB) and MatMul (weight right or left): the most nonzero weights
    behind one output entry, counted here entry by entry (plus Gemm's bias); never more
    than the fan-in."""
    rng = np.random.default_rng(seed)
    k, m = int(rng.integers(1, 30)), int(rng.integers(1, 6))
    weight = rng.standard_normal((k, m)).astype(np.float32)
    weight[rng.random((k, m)) < rng.uniform(0, 1)] = 0.0
    per_output = [int(np.count_nonzero(weight[:, j])) for j in range(m)]
    expected = max(1, max(per_output))
    trans = bool(seed % 2)
    gemm = _op("Gemm", weight.T.copy() if trans else weight, [1, k], [1, m],
                       transB=int(trans))
    assert gemm.rounding_terms() == expected + 1 <= k + 1
    right = _op("MatMul", weight, [1, 3, k], [1, 3, m])
    assert right.rounding_terms() == expected <= k
    left = _op("MatMul", weight.T.copy(), [1, k, 2], [1, m, 2], left=True)
    assert left.rounding_terms() == expected <= k
