"""ONNX attribute semantics at import (issue 12, class 3): one test per audit finding.

Each model is evaluated by nnverify and by onnxruntime (graph optimisations off, since its own
fusions are approximate); the importer must either agree or refuse with a ModelError that
names the op, the node and the attribute.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import verifier
from verifier.errors import ModelError, UnsupportedOpError


def model(nodes, shape, inits=(), opset=13, out="Y") -> bytes:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    return m.SerializeToString()


def agree(data: bytes, shape, seed: int = 0) -> verifier.Model:
    """Import ``data`` and check nnverify's outputs against onnxruntime's on random inputs."""
    xs = np.random.default_rng(seed).uniform(-2, 2, size=(4, *shape)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    ref = np.stack([sess.run(None, {"X": x})[0] for x in xs])
    m = verifier.load_model(data)
    got = m.graph.forward(torch.tensor(xs.reshape(4, -1), dtype=torch.float64)).numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    return m


def refused(data: bytes, *words: str) -> str:
    with pytest.raises(ModelError) as info:
        verifier.load_model(data)
    msg = str(info.value)
    for w in words:
        assert w in msg, msg
    return msg


def node(op, ins, outs=("Y",), name=None, **attrs):
    return helper.make_node(op, list(ins), list(outs), name=name or f"{op.lower()}_node", **attrs)


# -- Softmax below opset 13: flatten to 2-d at axis (default 1) --------------------------

@pytest.mark.parametrize("opset,attrs,shape", [
    (11, {}, (1, 3, 4)),  # default axis 1: one softmax over all 12 entries
    (12, {"axis": 1}, (1, 2, 3, 2)),
    (9, {"axis": 2}, (1, 2, 3, 2)),
    (11, {"axis": -2}, (1, 2, 3, 2)),
    (13, {"axis": 1}, (1, 2, 3, 2)),  # opset 13: that one axis only
])
def test_softmax_below_opset_13_flattens_at_axis(opset, attrs, shape):
    agree(model([node("Softmax", ["X"], **attrs)], shape, opset=opset), shape)


def test_folded_softmax_below_opset_13_flattens_too():
    """A Softmax of a constant is folded at import, with the same opset semantics."""
    data = model([node("Softmax", ["c"], ["s"]), node("Add", ["X", "s"], ["Y"], "add")],
                 (1, 2, 3), {"c": np.arange(6, dtype=np.float32).reshape(1, 2, 3) / 4}, opset=11)
    agree(data, (1, 2, 3))


# -- pooling: dilations, auto_pad, ceil_mode, storage_order --------------------------------

@pytest.mark.parametrize("op,opset,attrs,shape", [
    ("AveragePool", 19, {"kernel_shape": [2, 2], "dilations": [2, 2]}, (1, 1, 6, 6)),
    ("AveragePool", 19, {"kernel_shape": [2], "dilations": [3], "pads": [1, 1]}, (1, 2, 7)),
    ("AveragePool", 13, {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER"}, (1, 1, 6, 6)),
    ("AveragePool", 13, {"kernel_shape": [2, 2], "auto_pad": "SAME_LOWER",
                         "count_include_pad": 1}, (1, 1, 5, 5)),
    ("AveragePool", 13, {"kernel_shape": [2, 2], "auto_pad": "VALID", "strides": [2, 2]},
     (1, 1, 5, 5)),
    ("AveragePool", 13, {"kernel_shape": [2, 2, 2], "pads": [1, 0, 0, 0, 1, 1]},
     (1, 1, 3, 3, 3)),
    ("MaxPool", 13, {"kernel_shape": [2, 2], "auto_pad": "SAME_LOWER"}, (1, 1, 5, 5)),
    ("MaxPool", 13, {"kernel_shape": [3, 2], "auto_pad": "SAME_UPPER", "strides": [2, 1]},
     (1, 2, 5, 4)),
    ("MaxPool", 13, {"kernel_shape": [2, 2], "ceil_mode": 1, "strides": [2, 2]}, (1, 1, 6, 6)),
    ("MaxPool", 13, {"kernel_shape": [2, 2], "storage_order": 1}, (1, 1, 4, 4)),
])
def test_pool_attributes_are_implemented(op, opset, attrs, shape):
    agree(model([node(op, ["X"], **attrs)], shape, opset=opset), shape)


@pytest.mark.parametrize("opset", [11, 19, 22])
def test_average_pool_ceil_mode_windows_are_onnxruntimes(opset):
    """ceil_mode windows that overhang the padded input: onnxruntime's count of windows (as
    MaxPool's), the sum over their taps inside the input, divided by the taps inside the
    input, or (count_include_pad) inside the padded input but not the overhang: a grid of
    sizes, kernels, strides, dilations (opset 19 on), pads, both counts, 1-d and 2-d."""
    cases = 0
    for size, k, s, d, begin, end, include in itertools.product(
            (5, 7, 10), (2, 3), (2, 3), (1, 2), (0, 1), (0, 1), (0, 1)):
        if d > 1 and opset < 19 or size + begin + end < (k - 1) * d + 1:
            continue
        attrs = {"kernel_shape": [k, k], "strides": [s, s + 1], "pads": [begin, end, end, 0],
                 "ceil_mode": 1, "count_include_pad": include}
        if d > 1:
            attrs["dilations"] = [d, 1]
        agree(model([node("AveragePool", ["X"], **attrs)], (1, 2, size, size + 1),
                    opset=opset), (1, 2, size, size + 1))
        cases += 1
    one_d = {"kernel_shape": [3], "strides": [2], "pads": [1, 0], "ceil_mode": 1,
             "count_include_pad": 1}
    agree(model([node("AveragePool", ["X"], **one_d)], (1, 2, 8), opset=opset), (1, 2, 8))
    assert cases > 40


@pytest.mark.parametrize("include", [0, 1])
def test_average_pool_ceil_mode_bounds_contain_onnxruntime(include):
    """IBP, CROWN and alpha-CROWN through an overhanging ceil_mode AveragePool (the
    windowed passes decline it: its divisor is not the kernel's size at the overhang)."""
    from .opcases import assert_net_bounds_contain, net_model

    rng = np.random.default_rng(include)
    nodes = [node("Reshape", ["X", "shape"], ["r"]),
             node("AveragePool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2],
                  pads=[1, 0, 0, 0], ceil_mode=1, count_include_pad=include),
             node("Relu", ["p"], ["q"]), node("Flatten", ["q"], ["f"]),
             node("Gemm", ["f", "W"], ["Y"], transB=1)]
    inits = {"shape": np.array([1, 1, 5, 5], np.int64),
             "W": rng.standard_normal((2, 9)).astype(np.float32)}  # 3 x 3 windows
    assert_net_bounds_contain(net_model(nodes, inits, 13, n_in=25), seed=include, n=25,
                              tag=include)


@pytest.mark.parametrize("opset", [10, 13, 22])
def test_max_pool_ceil_mode_windows_are_onnxruntimes(opset):
    """ceil_mode windows that overhang the padded input read only its entries, and a last
    window that would start past the input and its leading pad is not there (onnxruntime's
    count, which ONNX's shape inference exceeds on some of these): a grid of sizes,
    kernels, strides, dilations and pads, 1-d and 2-d."""
    cases = 0
    for size, k, s, d, begin, end in itertools.product((5, 7, 10), (2, 3, 4), (2, 3), (1, 2),
                                                       (0, 2), (0, 1)):
        extent = (k - 1) * d + 1
        if max(begin, end) >= k or size + begin + end < extent:  # onnxruntime: pads < k
            continue
        attrs = {"kernel_shape": [k, k], "strides": [s, s], "dilations": [d, d],
                 "pads": [begin, begin, end, end], "ceil_mode": 1}
        agree(model([node("MaxPool", ["X"], **attrs)], (1, 2, size, size), opset=opset),
              (1, 2, size, size))
        cases += 1
    one_d = {"kernel_shape": [3], "strides": [2], "pads": [1, 0], "ceil_mode": 1}
    agree(model([node("MaxPool", ["X"], **one_d)], (1, 2, 8), opset=opset), (1, 2, 8))
    assert cases > 80


def test_conv_transpose_output_shape_and_same_padding_are_onnxruntimes():
    """ConvTranspose's output_shape and auto_pad SAME_*: the total padding
    split as onnxruntime splits it, an output larger than the input and stride give taken
    as output_padding (below the stride): a grid of sizes, kernels, strides, dilations and
    output sizes, 1-d and 2-d, against onnxruntime; larger outputs are refused by name."""
    rng = np.random.default_rng(0)
    cases = 0
    for n_in, k, s, d, extra, auto in itertools.product(
            (3, 4), (2, 3), (1, 2, 3), (1, 2), (-2, -1, 0, 1, 2),
            ("NOTSET", "SAME_UPPER", "SAME_LOWER")):
        if d > 1 and auto != "NOTSET":
            continue  # refused: test_dilated_same_padding_is_refused
        out = s * (n_in - 1) + (k - 1) * d + 1 + extra
        w = {"w": rng.standard_normal((2, 3, k, k)).astype(np.float32)}
        attrs = {"strides": [s, 1], "dilations": [d, 1], "output_shape": [out, n_in + k - 1]}
        if auto != "NOTSET":
            attrs["auto_pad"] = auto
        data = model([node("ConvTranspose", ["X", "w"], **attrs)], (1, 2, n_in, n_in), w)
        if extra >= s:
            refused(data, "ConvTranspose", "output_shape")
            continue
        agree(data, (1, 2, n_in, n_in))
        cases += 1
    for auto, k, s in itertools.product(("SAME_UPPER", "SAME_LOWER"), (1, 2, 3, 4), (1, 2, 3)):
        # no output_shape: the input's size times s, where the kernel reaches that far
        attrs = {"strides": [s], "auto_pad": auto, "kernel_shape": [k]}
        w1 = {"w": rng.standard_normal((2, 1, k)).astype(np.float32)}
        agree(model([node("ConvTranspose", ["X", "w"], **attrs)], (1, 2, 5), w1), (1, 2, 5))
    assert cases > 60


def test_dilated_same_padding_is_refused():
    """onnxruntime and the ONNX spec disagree on it (pooling) or onnxruntime refuses (Conv)."""
    data = model([node("MaxPool", ["X"], name="mp", kernel_shape=[3], dilations=[2],
                       auto_pad="SAME_UPPER")], (1, 1, 6), opset=13)
    refused(data, "MaxPool", "mp", "auto_pad", "dilations")


# -- Pad: any axis, axes input, constant value, opset < 11 attributes ----------------------

PADS = {"p": np.array([0, 1, 0, 0, 0, 2, 0, 0], dtype=np.int64)}


@pytest.mark.parametrize("mode", ["reflect", "edge", "constant"])
def test_pad_on_a_leading_axis(mode):
    agree(model([node("Pad", ["X", "p"], mode=mode)], (1, 4, 3, 3), PADS), (1, 4, 3, 3))


@pytest.mark.parametrize("mode", ["reflect", "edge", "constant", "wrap"])
def test_pad_axes_input_and_constant_value(mode):
    inits = {"p": np.array([1, 2, 2, 0], dtype=np.int64), "v": np.float32(0.75),
             "a": np.array([-3, 2], dtype=np.int64)}
    data = model([node("Pad", ["X", "p", "v", "a"], mode=mode)], (1, 3, 4, 2), inits,
                 opset=19)
    agree(data, (1, 3, 4, 2))


def test_pad_opset_10_attributes_and_negative_pads():
    data = model([node("Pad", ["X"], mode="constant", pads=[0, -1, 1, 0, 1, -1], value=1.5)],
                 (1, 3, 4), opset=10)
    agree(data, (1, 3, 4))
    data = model([node("Pad", ["X"], mode="edge", pads=[0, 2, 0, 0, 1, 0])], (1, 3, 4),
                 opset=10)
    agree(data, (1, 3, 4))


# -- patterns: fuse only on exact matches ---------------------------------------------------

def gelu_nodes(sqrt2=2 ** 0.5, leak=False):
    nodes = [node("Div", ["X", "s"], ["a"], "div"), node("Erf", ["a"], ["b"], "erf"),
             node("Add", ["b", "one"], ["c"], "add"), node("Mul", ["X", "c"], ["d"], "mul"),
             node("Mul", ["d", "half"], ["g"] if leak else ["Y"], "mul2")]
    if leak:
        nodes.append(node("Add", ["g", "a"], ["Y"], "leak"))
    inits = {"s": np.float32(sqrt2), "one": np.float32(1.0), "half": np.float32(0.5)}
    return nodes, inits


def op_types(m: verifier.Model) -> set[str]:
    return {n.op_type for n in m.graph.nodes}


def test_gelu_pattern_fuses_only_with_the_exact_constant():
    nodes, inits = gelu_nodes()
    assert "Gelu" in op_types(agree(model(nodes, (1, 6), inits), (1, 6)))
    nodes, inits = gelu_nodes(sqrt2=1.4142)
    assert "Gelu" not in op_types(agree(model(nodes, (1, 6), inits), (1, 6)))


def test_fusion_keeps_an_intermediate_used_elsewhere():
    nodes, inits = gelu_nodes(leak=True)
    m = agree(model(nodes, (1, 6), inits), (1, 6))
    assert "Gelu" not in op_types(m)


def layernorm_nodes(var_axes=(-1,), keepdims_first=False, leak=False):
    def mean(x, out, axes):
        n = helper.make_node("ReduceMean", [x], [out], name=f"mean_{out}")
        attrs = [helper.make_attribute("axes", list(axes)),
                 helper.make_attribute("keepdims", 1)]
        n.attribute.extend(reversed(attrs) if keepdims_first else attrs)
        return n

    nodes = [mean("X", "m", [-1]), node("Sub", ["X", "m"], ["d"], "sub"),
             node("Pow", ["d", "two"], ["q"], "pow"), mean("q", "v", var_axes),
             node("Add", ["v", "eps"], ["ve"], "add"), node("Sqrt", ["ve"], ["s"], "sqrt"),
             node("Div", ["d", "s"], ["Y"] if not leak else ["n"], "div")]
    if leak:
        nodes.append(node("Add", ["n", "s"], ["Y"], "leak"))
    return nodes, {"two": np.float32(2.0), "eps": np.float32(1e-5)}


def test_layernorm_pattern_fuses_only_with_the_same_axes():
    nodes, inits = layernorm_nodes()
    assert "LayerNormalization" in op_types(agree(model(nodes, (1, 3, 4), inits), (1, 3, 4)))
    nodes, inits = layernorm_nodes(var_axes=(-2,))
    m = agree(model(nodes, (1, 3, 4), inits), (1, 3, 4))
    assert "LayerNormalization" not in op_types(m)


def test_layernorm_pattern_with_attributes_in_another_order():
    nodes, inits = layernorm_nodes(keepdims_first=True)
    assert "LayerNormalization" in op_types(agree(model(nodes, (1, 3, 4), inits), (1, 3, 4)))


def test_layernorm_fusion_keeps_an_intermediate_used_elsewhere():
    nodes, inits = layernorm_nodes(leak=True)
    m = agree(model(nodes, (1, 3, 4), inits), (1, 3, 4))
    assert "LayerNormalization" not in op_types(m)


def test_slice_with_a_negative_step_clamps_as_onnx():
    """ONNX clamps a start before the beginning to 0 for a negative step (Python: empty)."""
    inits = {k: np.array(v, dtype=np.int64) for k, v in
             {"s": [-5], "e": [-2**62], "a": [1], "st": [-1]}.items()}
    agree(model([node("Slice", ["X", "s", "e", "a", "st"])], (1, 3), inits), (1, 3))


def test_folded_nodes_follow_the_engines_semantics():
    """Constant subgraphs are folded with the engine's ops, not ONNX's reference evaluator,
    which gets a negative-step Slice wrong and ConvTranspose's output_shape too."""
    inits = {k: np.array(v, dtype=np.int64) for k, v in
             {"s": [-5], "e": [-2**62], "a": [1], "st": [-1]}.items()}
    inits["c"] = np.arange(3, dtype=np.float32).reshape(1, 3)
    data = model([node("Slice", ["c", "s", "e", "a", "st"], ["k"]),
                  node("Add", ["X", "k"], ["Y"], "add")], (1, 1), inits)
    agree(data, (1, 1))
    inits = {"c": np.ones((1, 1, 3), np.float32), "w": np.ones((1, 1, 2), np.float32)}
    data = model([node("ConvTranspose", ["c", "w"], ["k"], "ct", output_shape=[5]),
                  node("Add", ["X", "k"], ["Y"], "add")], (1,), inits)
    refused(data, "ConvTranspose", "ct", "output_shape")


def test_constant_operand_of_higher_rank_is_refused():
    """It would broadcast against the batch of problems."""
    data = model([node("MatMul", ["X", "w"], name="mm")], (3, 4),
                 {"w": np.ones((3, 4, 2), np.float32)})
    refused(data, "MatMul", "mm", "rank 3")
    agree(model([node("MatMul", ["X", "w"])], (4,), {"w": np.ones((4, 2), np.float32)}), (4,))


def test_a_models_own_doc_string_does_not_skip_the_checks():
    from verifier.importer.patterns import FUSED

    n = node("Relu", ["X"], name="r2", alpha=0.5)
    n.doc_string = FUSED
    refused(model([n], (1, 3)), "Relu", "r2", "alpha")


# -- outputs that do not depend on the input ------------------------------------------------

@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Identity"])
def test_constant_output_is_a_clear_model_error(op):
    data = model([node(op, ["c"], ["Y"]), node("Relu", ["X"], ["Z"])], (1, 3),
                 {"c": np.ones(3, dtype=np.float32)})
    refused(data, "output 'Y'", "does not depend on the input")


# -- the central rule: implemented exactly or refused by name -------------------------------

def test_unknown_attribute_is_refused_by_name():
    data = model([node("Relu", ["X"], name="r1", alpha=0.5)], (1, 3))
    refused(data, "Relu", "r1", "alpha")


@pytest.mark.parametrize("nodes,inits,shape,opset,attr", [
    ([node("BatchNormalization", ["X", "s", "b", "m", "v"], name="bn", spatial=0)],
     {"s": np.ones((3, 2), np.float32), "b": np.zeros((3, 2), np.float32),
      "m": np.zeros((3, 2), np.float32), "v": np.ones((3, 2), np.float32)}, (1, 3, 2), 8,
     "spatial"),
    ([node("ConvTranspose", ["X", "w"], name="ct", output_shape=[5], output_padding=[1],
           strides=[2])],
     {"w": np.ones((1, 1, 2), np.float32)}, (1, 1, 3), 13, "output_padding"),
    ([node("Conv", ["X", "w"], name="cv", kernel_shape=[3])],
     {"w": np.ones((1, 1, 2), np.float32)}, (1, 1, 4), 13, "kernel_shape"),
    ([node("Gelu", ["X"], name="ge", approximate="cubic")], {}, (1, 3), 20, "approximate"),
    ([node("Split", ["X"], ["Y", "Z"], name="sp", num_outputs=3)], {}, (1, 6), 18,
     "num_outputs"),
    ([node("LayerNormalization", ["X", "s"], ["Y", "mean"], name="ln"),
      node("Add", ["Y", "mean"], ["W"], name="use")], {"s": np.ones(4, np.float32)},
     (1, 4), 17, "output #1"),
])
def test_unimplemented_attribute_is_refused_by_name(nodes, inits, shape, opset, attr):
    out = "W" if any(n.name == "use" for n in nodes) else "Y"
    data = model(nodes, shape, inits, opset=opset, out=out)
    with pytest.raises(UnsupportedOpError) as info:
        verifier.load_model(data)
    (op_type, name, _, why), = info.value.problems[:1]
    assert op_type == nodes[0].op_type and name == nodes[0].name and attr in why, why


@pytest.mark.parametrize("op,attrs,shape,attr", [
    ("Softmax", {"axis": 3}, (1, 2, 3), "axis"),
    ("Concat", {"axis": -4}, (1, 2, 3), "axis"),
    ("MaxPool", {"kernel_shape": [2], "auto_pad": "SAME"}, (1, 1, 4), "auto_pad"),
])
def test_attribute_values_outside_onnx_are_refused(op, attrs, shape, attr):
    refused(model([node(op, ["X"], name="n1", **attrs)], shape), op, "n1", attr)


def test_opset_outside_the_supported_range_is_refused():
    refused(model([node("Relu", ["X"])], (1, 3), opset=6), "opset 6")


def test_attribute_check_covers_every_registered_op():
    from verifier.importer.onnx_attrs import IMPLEMENTED, MIN_OPSET, schema
    from verifier.ops.base import REGISTRY

    for op in IMPLEMENTED:
        assert op in REGISTRY, op
    for op in REGISTRY:  # every registered op exists in some opset we accept
        assert any(_has_schema(schema, op, v) for v in range(MIN_OPSET, 30)), op


def _has_schema(schema, op, v) -> bool:
    try:
        schema(op, v)
        return True
    except Exception:
        return False
