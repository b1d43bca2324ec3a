"""Tiny one-op ONNX models, one per supported op form, shared by the op tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from verifier.bounds.crown import AlphaSettings
from verifier.bounds.methods import row_lower_bounds
from verifier.graph import Graph
from verifier.problems import ProblemBatch

RNG = np.random.default_rng(1234)


@dataclass
class OpCase:
    name: str
    op: str
    shape: tuple[int, ...]
    consts: list[np.ndarray | None] = field(default_factory=list)  # None = the input X
    attrs: dict = field(default_factory=dict)
    positive: bool = False  # input must be > 0 (log, sqrt, reciprocal)
    n_outputs: int = 1
    second_var: tuple[int, ...] | None = None  # a second variable made from X by Slice
    opset: int = 17


def w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def sparse(*shape: int) -> np.ndarray:
    """``w`` with all but about a tenth of the entries zero (and a column of zeros)."""
    a = w(*shape)
    a[np.random.default_rng(a.size).random(shape) > 0.1] = 0.0
    a[..., 0] = 0.0
    return a


CASES = [
    OpCase("gemm", "Gemm", (1, 6), [None, w(4, 6), w(4)], {"transB": 1}),
    OpCase("matmul", "MatMul", (1, 3, 6), [None, w(6, 5)]),
    OpCase("matmul_left", "MatMul", (1, 6, 3), [w(4, 6), None]),
    # mostly zero weights (rounding_terms counts the nonzero ones a sum takes)
    OpCase("gemm_sparse", "Gemm", (1, 64), [None, sparse(64, 5), w(5)]),
    OpCase("matmul_sparse", "MatMul", (1, 2, 48), [None, sparse(48, 4)]),
    OpCase("add", "Add", (1, 2, 3), [None, w(2, 3)]),
    OpCase("sub_const_first", "Sub", (1, 5), [w(5), None]),
    OpCase("mul_const", "Mul", (1, 5), [None, w(5)]),
    OpCase("div_const", "Div", (1, 5), [None, np.abs(w(5)) + 0.5]),
    OpCase("neg", "Neg", (1, 5), [None]),
    OpCase("conv", "Conv", (1, 2, 6, 6), [None, w(3, 2, 3, 3), w(3)],
           {"pads": [1, 0, 1, 2], "strides": [2, 1]}),
    OpCase("conv_same", "Conv", (1, 2, 5, 5), [None, w(2, 1, 3, 3)],
           {"auto_pad": "SAME_UPPER", "group": 2}),
    OpCase("convtranspose", "ConvTranspose", (1, 2, 4, 4), [None, w(2, 3, 3, 3), w(3)],
           {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    # many channels, few of the kernel's taps per output entry (rounding_terms counts them)
    OpCase("convtranspose_sparse", "ConvTranspose", (1, 96, 2, 3),
           [None, w(96, 2, 4, 3), w(4)],
           {"strides": [3, 2], "dilations": [1, 2], "output_padding": [1, 0],
            "pads": [0, 1, 1, 0], "group": 2}),
    OpCase("batchnorm", "BatchNormalization", (1, 3, 4, 4),
           [None, w(3), w(3), w(3), np.abs(w(3)) + 0.1]),
    OpCase("relu", "Relu", (1, 7), [None]),
    OpCase("leakyrelu", "LeakyRelu", (1, 7), [None], {"alpha": 0.1}),
    OpCase("sigmoid", "Sigmoid", (1, 7), [None]),
    OpCase("tanh", "Tanh", (1, 7), [None]),
    OpCase("erf", "Erf", (1, 7), [None]),
    OpCase("gelu", "Gelu", (1, 7), [None], opset=20),
    OpCase("sin", "Sin", (1, 7), [None]),
    OpCase("cos", "Cos", (1, 7), [None]),
    OpCase("exp", "Exp", (1, 7), [None]),
    OpCase("log", "Log", (1, 7), [None], positive=True),
    OpCase("sqrt", "Sqrt", (1, 7), [None], positive=True),
    OpCase("reciprocal", "Reciprocal", (1, 7), [None], positive=True),
    OpCase("pow2", "Pow", (1, 7), [None, np.array(2.0, dtype=np.float32)]),
    OpCase("pow3", "Pow", (1, 7), [None, np.array(3.0, dtype=np.float32)]),
    OpCase("abs", "Abs", (1, 7), [None]),
    OpCase("clip", "Clip", (1, 7), [None, np.array(-0.5, np.float32), np.array(0.7, np.float32)]),
    OpCase("max_const", "Max", (1, 7), [None, w(7)]),
    OpCase("min_const", "Min", (1, 7), [None, w(7)]),
    OpCase("softmax", "Softmax", (1, 3, 5), [None], {"axis": -1}),
    OpCase("softmax_axis1", "Softmax", (1, 4, 3), [None], {"axis": 1}),
    OpCase("maxpool", "MaxPool", (1, 2, 6, 6), [None], {"kernel_shape": [2, 2], "strides": [2, 2]}),
    OpCase("avgpool", "AveragePool", (1, 2, 6, 6), [None],
           {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}),
    OpCase("globalavgpool", "GlobalAveragePool", (1, 3, 4, 4), [None]),
    OpCase("flatten", "Flatten", (1, 2, 3, 2), [None], {"axis": 1}),
    OpCase("reshape", "Reshape", (1, 2, 6), [None, np.array([1, 3, -1], dtype=np.int64)]),
    OpCase("transpose", "Transpose", (1, 2, 3, 4), [None], {"perm": [0, 2, 3, 1]}),
    OpCase("concat", "Concat", (1, 2, 3), [None, w(1, 2, 2)], {"axis": 2}),
    OpCase("slice", "Slice", (1, 6, 4), [None, np.array([1, 3]), np.array([5, 0]),
                                          np.array([1, 2]), np.array([2, -1])]),
    OpCase("gather", "Gather", (1, 6, 3), [None, np.array([4, 0, -1], dtype=np.int64)],
           {"axis": 1}),
    OpCase("split", "Split", (1, 6, 2), [None, np.array([2, 4], dtype=np.int64)], {"axis": 1},
           n_outputs=2),
    OpCase("squeeze", "Squeeze", (1, 3, 1, 2), [None, np.array([2], dtype=np.int64)]),
    OpCase("unsqueeze", "Unsqueeze", (1, 3), [None, np.array([1, 3], dtype=np.int64)]),
    OpCase("pad", "Pad", (1, 2, 3), [None, np.array([0, 1, 0, 0, 0, 2], dtype=np.int64),
                                      np.array(0.5, dtype=np.float32)]),
    OpCase("reducemean", "ReduceMean", (1, 3, 4), [None, np.array([2], dtype=np.int64)],
           {"keepdims": 0}, opset=18),
    OpCase("reducesum", "ReduceSum", (1, 3, 4), [None, np.array([1], dtype=np.int64)]),
    OpCase("layernorm", "LayerNormalization", (1, 3, 6), [None, w(6), w(6)], {"axis": -1}),
    OpCase("identity", "Identity", (1, 4), [None]),
    OpCase("expand", "Expand", (1, 1, 3), [None, np.array([1, 4, 3], dtype=np.int64)]),
    OpCase("tile", "Tile", (1, 2, 3), [None, np.array([1, 2, 2], dtype=np.int64)]),
    OpCase("mul_vars", "Mul", (1, 6), [None, None], second_var=(1, 3)),
    OpCase("div_vars", "Div", (1, 6), [None, None], second_var=(1, 3), positive=True),
    OpCase("matmul_vars", "MatMul", (1, 3, 4), [None, None], second_var=(1, 2, 3)),
    OpCase("max_vars", "Max", (1, 6), [None, None], second_var=(1, 3)),
]


def build(case: OpCase, dtype: int = TensorProto.FLOAT) -> bytes:
    """The case as an ONNX model with input X of case.shape (and outputs summed if several)."""
    np_dtype = np.float32 if dtype == TensorProto.FLOAT else np.float64
    inits, names, nodes = [], [], []
    if case.second_var is not None:
        # split X's trailing dim into two variables a (first half) and b (second half)
        last = case.shape[-1]
        half = last // 2
        for tag, (s, e) in {"a": (0, half), "b": (half, last)}.items():
            nodes.append(helper.make_node(
                "Slice", ["X", f"{tag}_s", f"{tag}_e", f"{tag}_ax"], [f"{tag}_raw"]))
            inits += [numpy_helper.from_array(np.array([s]), f"{tag}_s"),
                      numpy_helper.from_array(np.array([e]), f"{tag}_e"),
                      numpy_helper.from_array(np.array([len(case.shape) - 1]), f"{tag}_ax")]
        target = case.second_var
        inits.append(numpy_helper.from_array(np.array(target, dtype=np.int64), "b_shape"))
        nodes.append(helper.make_node("Reshape", ["b_raw", "b_shape"], ["b"]))
        if case.op == "MatMul":
            inits.append(numpy_helper.from_array(
                np.array((1, case.shape[1], half), dtype=np.int64), "a_shape"))
            nodes.append(helper.make_node("Reshape", ["a_raw", "a_shape"], ["a"]))
        else:
            nodes.append(helper.make_node("Identity", ["a_raw"], ["a"]))
        names = ["a", "b"]
    else:
        for i, c in enumerate(case.consts):
            if c is None:
                names.append("X")
            else:
                arr = c.astype(np_dtype) if np.issubdtype(c.dtype, np.floating) else c
                inits.append(numpy_helper.from_array(arr, f"c{i}"))
                names.append(f"c{i}")
    outs = [f"Y{i}" for i in range(case.n_outputs)]
    nodes.append(helper.make_node(case.op, names, outs, **case.attrs))
    final = outs[0]
    if case.n_outputs > 1:
        nodes.append(helper.make_node("Concat", outs, ["Ycat"], axis=1))
        final = "Ycat"
    graph = helper.make_graph(
        nodes, case.name, [helper.make_tensor_value_info("X", dtype, case.shape)],
        [helper.make_tensor_value_info(final, dtype, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
    model.ir_version = 9
    return model.SerializeToString()


def sample_box(case: OpCase, width: float, rng: np.random.Generator):
    """A random box around a random centre (positive when the op needs it)."""
    centre = rng.standard_normal(case.shape) * 1.5
    if case.positive:
        centre = np.abs(centre) + width + 0.2
    radius = rng.uniform(0, width, case.shape)
    return centre - radius, centre + radius


def onnx_model(case: OpCase) -> onnx.ModelProto:
    return onnx.load_model_from_string(build(case))


def plus_minus_rows(lo: np.ndarray, hi: np.ndarray, m: int) -> ProblemBatch:
    """A batch over the boxes (B, n) whose rows are y_j and -y_j (their lower bounds bound
    every output from both sides)."""
    B = lo.shape[0]
    C = torch.cat([torch.eye(m), -torch.eye(m)]).double().expand(B, 2 * m, m)
    return ProblemBatch(torch.tensor(lo), torch.tensor(hi), C.contiguous(),
                        torch.zeros(B, 2 * m, dtype=torch.float64),
                        torch.arange(2 * m).expand(B, 2 * m).contiguous(), list(range(B)),
                        [2 * m] * B)


def assert_bounds_contain(graph: Graph, run: Callable[[np.ndarray], np.ndarray],
                          lo: np.ndarray, hi: np.ndarray, n_out: int,
                          rng: np.random.Generator, samples: int = 400, corners: int = 8,
                          iterations: int = 8, tag: object = "") -> None:
    """IBP, CROWN and alpha-CROWN lower bounds of every output, from both sides, over the
    boxes [lo, hi] (B, n) contain ``run``'s outputs (onnxruntime's, on float32 points
    (N, n)) at ``samples`` random points of each box, ``corners`` of them corners."""
    batch = plus_minus_rows(lo, hi, n_out)
    alpha = AlphaSettings(iterations=iterations, early_stop=False)
    bounds = {m: row_lower_bounds(graph, batch, m, alpha=alpha)
              for m in ("ibp", "crown", "alpha-crown")}
    n = lo.shape[1]
    for b in range(lo.shape[0]):
        t = rng.uniform(size=(samples, n))
        t[:corners] = rng.integers(0, 2, (corners, n))
        xs = (lo[b] + t * (hi[b] - lo[b])).astype(np.float32)
        xs = xs[((xs >= lo[b]) & (xs <= hi[b])).all(1)]
        ys = np.asarray(run(xs)).reshape(len(xs), -1)
        rows = np.concatenate([ys, -ys], 1)
        for method, lb in bounds.items():
            assert (rows >= lb[b].numpy()).all(), (tag, method, b)


def reduce_form(opset: int, axes: list[int] | None, keepdims: int | None,
                noop: int | None = None) -> tuple[dict, list[onnx.TensorProto]]:
    """A Reduce* node's attributes and its extra initializers at ``opset``: ``axes`` an
    attribute below opset 18, else the second input (an initializer named "axes")."""
    attrs: dict = {}
    inits: list[onnx.TensorProto] = []
    if keepdims is not None:
        attrs["keepdims"] = keepdims
    if noop is not None:
        attrs["noop_with_empty_axes"] = noop
    if axes is not None and opset < 18:
        attrs["axes"] = axes
    elif axes is not None:
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
    return attrs, inits


def run_ort(data: bytes, xs: np.ndarray) -> np.ndarray:
    """onnxruntime's first output at each point of ``xs`` (each shaped as the model's one
    input), stacked."""
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.stack([sess.run(None, {name: x})[0] for x in xs])


def random_boxes(rng: np.random.Generator, n: int,
                 widths: tuple[float, ...] = (1e-4, 0.05, 0.3, 1.0, 3.0)
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One box (lo, hi) of n inputs per half-width, narrow to wide, around random centres
    in [-1, 1], its lower side cut short at random."""
    w = np.array(widths)[:, None]
    centre = rng.uniform(-1, 1, (len(widths), n))
    return centre - w * rng.uniform(0.2, 1, (len(widths), n)), centre + w


def box_spec(n: int, n_out: int, r: float, threshold: float) -> str:
    """VNN-LIB: every input in [-r, r], unsafe where Y_0 >= threshold."""
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(n))
    text += "".join(f"(declare-const Y_{j} Real)\n" for j in range(n_out))
    text += "".join(f"(assert (>= X_{i} {-r!r}))\n(assert (<= X_{i} {r!r}))\n" for i in range(n))
    return text + f"(assert (>= Y_0 {threshold!r}))\n"


def verify_both_ways(data: bytes, run: Callable[[np.ndarray], np.ndarray], n: int,
                     n_out: int, r: float = 1.0, seed: int = 0, margin: float = 0.05,
                     timeout: float = 30, tag: object = "") -> None:
    """Over [-r, r]^n: Y_0 below its largest sampled value (corners included) plus
    ``margin`` of its spread is verified; Y_0 reaching 2% of the spread below that maximum
    is falsified, with counterexamples in the box that ``run`` (onnxruntime on points
    (N, n), first output column Y_0) confirms."""
    from verifier import Settings, load_model, parse_vnnlib, verify

    model = load_model(data)
    rng = np.random.default_rng(seed)
    corners = np.array(np.meshgrid(*[[-r, r]] * n)).reshape(n, -1).T
    xs = np.concatenate([corners, rng.uniform(-r, r, (20000, n))]).astype(np.float32)
    ys = run(xs).reshape(len(xs), -1)[:, 0]
    top, spread = float(ys.max()), float(ys.max() - ys.min())
    proved = verify(model, parse_vnnlib(box_spec(n, n_out, r, top + margin * spread + 1e-3),
                                        n, n_out), Settings(timeout=timeout))
    assert proved.verdict == "verified", (tag, proved.message)
    threshold = top - 0.02 * spread
    unsafe = verify(model, parse_vnnlib(box_spec(n, n_out, r, threshold), n, n_out),
                    Settings(timeout=timeout))
    assert unsafe.verdict == "falsified", (tag, unsafe.message)
    for cex in unsafe.counterexamples:
        x = np.asarray(cex.x, np.float32).reshape(1, n)
        assert np.all(np.abs(x) <= r) and run(x).reshape(-1)[0] >= threshold, tag


def net_model(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], opset: int,
              n_in: int = 4, n_out: int = 2, ir_version: int | None = None) -> bytes:
    """A model of ``nodes`` from input X (1, n_in) to output Y (1, n_out); the initializers
    are float32, except int64 ones (shapes, axes), kept."""
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, n_in])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, n_out])],
        [numpy_helper.from_array(v if v.dtype == np.int64 else v.astype(np.float32), k)
         for k, v in inits.items()])
    extra = {} if ir_version is None else {"ir_version": ir_version}
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             **extra).SerializeToString()


def assert_net_bounds_contain(data: bytes, seed: int, n: int = 4, n_out: int = 2,
                              widths: tuple[float, ...] = (1e-4, 0.05, 0.3, 1.0, 3.0),
                              samples: int = 400, tag: object = "") -> None:
    """``assert_bounds_contain`` for a ``net_model`` (X (1, n) -> Y (1, n_out)) over
    ``random_boxes`` of these half-widths, onnxruntime's outputs as the reference."""
    from verifier import load_model

    rng = np.random.default_rng(seed)
    lo, hi = random_boxes(rng, n, widths)
    assert_bounds_contain(load_model(data).graph, lambda xs: run_ort(data, xs[:, None])[:, 0],
                          lo, hi, n_out, rng, samples=samples, corners=16, iterations=5,
                          tag=tag)
