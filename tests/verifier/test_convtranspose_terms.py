"""ConvTranspose's rounding charge counts the products behind each output entry
(``ConvTranspose.rounding_terms``), not ``C_in * kernel``: the count must equal a brute-force
enumeration of the (input channel, input position, kernel tap) triples that reach an output
entry, for random strides, dilations, pads, output paddings and groups.  (Too few terms
would make the rounding bound unsound; onnxruntime's values are checked against the bound
in test_float_rounding.py, whose cases include a sparse, grouped one.)"""

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
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=strides,
                            dilations=dil, output_padding=out_pad, pads=pads, group=group)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, *size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, *out])],
        [numpy_helper.from_array(weight, "w")])
    model = load_model(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    op = next(n.op for n in model.graph.nodes if type(n.op).__name__ == "ConvTranspose")
    per_axis = [_count(size[a], kernel[a], strides[a], dil[a], pads[a], out[a])
                for a in range(2)]
    expected = (c_in // group) * max(per_axis[0]) * max(per_axis[1]) + 1
    assert op.rounding_terms() == expected
    assert op.rounding_terms() <= c_in // group * kernel[0] * kernel[1] + 1
