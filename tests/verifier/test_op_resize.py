"""Resize (verifier/ops/resize.py) against independent references.

- onnxruntime, bit for bit: the taps and weights of one resized axis (an identity matrix
  resized along its rows gives the 1-d map itself) for every coordinate transformation mode,
  nearest mode, opset (10, 11, 13, 18, 19), scales and sizes, up and down, at lengths whose
  coordinates fall within float32 noise of a halfway point or an integer.
- onnxruntime on generated models (hypothesis; ``FUZZ`` also runs them in
  test_import_fuzz.py): ranks 1 to 5, nearest on any axes, linear in every layout
  onnxruntime runs (2-d, 3-d, NCHW, NHWC, NCDHW), scales or sizes, axes and
  keep_aspect_ratio_policy (18+), tf_crop_and_resize with a roi and an extrapolation value,
  antialias on upsampling; cctsdb_yolo_2023's Resize node itself.
- The transpose: ``A . forward(x) = backward(A) . x + bias_term(A)``; IBP on dense samples of
  random boxes (infinite ends too); onnxruntime's float32 result within the rounding bound.
- The engine's IBP, CROWN and alpha-CROWN bounds of conv nets with a Resize in the middle
  contain onnxruntime's outputs on dense samples of random boxes.
- Refusals by name: cubic, variable scales / sizes / roi, antialias when downsampling,
  both or neither of scales and sizes, bad axes, policies with scales, opset 9.
- ``verify``: a conv net whose output is exactly 0 through the Resize's transpose is
  verified, a conv net with a true margin is verified, and a planted narrow counterexample
  routed through the Resize is never verified.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from verifier import Settings, load_model, parse_vnnlib, verify
from verifier.bounds.crown import AlphaSettings
from verifier.bounds.methods import row_lower_bounds
from verifier.errors import UnsupportedOpError
from verifier.ops.base import Const, Op, OpFormError, Var
from verifier.ops.resize import COORDINATE_MODES, NEAREST_MODES, Resize, ResizeLinear

from .fuzzgraph import SETTINGS, G, check_against_ort, fl
from .opcases import plus_minus_rows

F32 = np.float32


def _rng(*key: object) -> np.random.Generator:
    """A generator seeded by the test's parameters (crc32: stable across processes)."""
    return np.random.default_rng(zlib.crc32("/".join(map(str, key)).encode()))


# -- model builders ------------------------------------------------------------------------
def resize(g: G, x: str, attrs: dict, scales: object = None, sizes: object = None,
           roi: object = None) -> str:
    """Resize of x with its constant inputs laid out for ``g.opset``: (X, scales) in opset
    10; from 11 (X, roi, scales, sizes), roi and scales required in 11 and 12 (empty
    tensors when unused), left out from 13."""
    if g.opset == 10:
        return g.node("Resize", [x, g.const(np.asarray(scales, F32))], **attrs)[0]
    required = g.opset < 13
    empty = np.zeros(0, F32)
    ins = [x,
           g.const(np.asarray(roi, F32)) if roi is not None else
           (g.const(empty) if required else ""),
           g.const(np.asarray(scales, F32)) if scales is not None else
           (g.const(empty) if required and sizes is not None else ""),
           g.const(np.asarray(sizes, np.int64)) if sizes is not None else ""]
    while ins[-1] == "":
        ins.pop()
    return g.node("Resize", ins, **attrs)[0]


def _modes(opset_: int) -> list[str]:
    """The coordinate transformation modes of an opset (tf_half_pixel_for_nn left at 11)."""
    if opset_ == 10:
        return ["asymmetric"]
    new, old = "half_pixel_symmetric", "tf_half_pixel_for_nn"
    out = [m for m in COORDINATE_MODES if m not in (new, old)]
    return out + ([old] if opset_ < 13 else []) + ([new] if opset_ >= 19 else [])


# (n, m): up, down, lengths 1, and coordinates within float32 noise of halfway points or
# integers (36 -> 40: 13.499999 at j = 15 and 26.999998 at j = 30; 29 -> 42: 14.500001)
LENGTHS = [(1, 3), (3, 1), (2, 5), (5, 3), (4, 4), (7, 8), (13, 6), (36, 40), (29, 42),
           (30, 16), (38, 24), (33, 75)]
SCALES = [0.5, 2.0, 3.0, 1.5, 0.75, float(F32(1 / 3)), 2.5, 0.6, 1.25, 1.0, float(F32(1.1))]

# linear layouts onnxruntime runs: rank and resized axes
LAYOUTS = {"2d": (2, (0, 1)), "3d": (3, (0, 1, 2)), "nchw": (4, (2, 3)), "nhwc": (4, (1, 2)),
           "ncdhw": (5, (2, 3, 4))}


def _ort(data: bytes, xs: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return np.stack([np.asarray(sess.run(None, {"X": x})[0], np.float64) for x in xs])


def _ours(data: bytes, xs: np.ndarray) -> np.ndarray:
    model = load_model(data)
    with torch.no_grad():
        y = model.graph.forward(torch.tensor(xs.reshape(len(xs), -1), dtype=torch.float64))
    return y.reshape(len(xs), *y.shape[1:]).numpy()


# -- onnxruntime, bit for bit ---------------------------------------------------------------
def _axis_cases():
    """(opset, attrs, scales, sizes, roi, n, m) for one resized axis (rows of an n x n
    input): every mode at every opset, scales and sizes, and tf_crop_and_resize's roi."""
    rng = _rng("axis-cases")
    chosen = {10: _modes(10), 11: ["tf_half_pixel_for_nn", "half_pixel"], 13: _modes(13),
              19: ["half_pixel_symmetric", "align_corners"]}
    for opset_, modes in chosen.items():
        for coords in modes:
            for mode, nm in [("linear", None), *[("nearest", k) for k in NEAREST_MODES]]:
                if opset_ == 10 and nm not in (None, "round_prefer_floor"):
                    continue
                attrs = {"mode": mode}
                if opset_ > 10:
                    attrs["coordinate_transformation_mode"] = coords
                    if nm is not None:
                        attrs["nearest_mode"] = nm
                roi = None
                if coords == "tf_crop_and_resize":
                    attrs["extrapolation_value"] = 7.0
                    roi = [0, rng.uniform(-0.4, 0.5), 1, rng.uniform(0.5, 1.4)]
                for n, m in LENGTHS:
                    if opset_ > 10:
                        yield opset_, attrs, None, [m, n], roi, n, m
                    s = F32(m / n * rng.choice([1.0, 1.0003, 0.9997]))
                    if int(s * F32(n)) >= 1:
                        yield opset_, attrs, [s, 1.0], None, roi, n, m


def test_taps_and_weights_are_onnxruntimes_bit_for_bit():
    """Resizing the rows of an identity matrix gives the 1-d map (linear: its weights, the
    other axis has scale 1; tf_crop_and_resize: 7.0 where extrapolated); ours equals
    onnxruntime's exactly, in shape and every value."""
    count = 0
    for opset_, attrs, scales, sizes, roi, n, _ in _axis_cases():
        g = G((n, n), opset_)
        data = g.model(resize(g, "X", attrs, scales, sizes, roi))
        x = np.eye(n, dtype=F32)[None]
        ref, got = _ort(data, x), _ours(data, x)
        assert got.shape == ref.shape, (opset_, attrs, scales, sizes, n)
        np.testing.assert_array_equal(got, ref, err_msg=str((opset_, attrs, scales, sizes, roi)))
        count += 1
    assert count > 1000


def test_near_ties_round_as_onnxruntime_does():
    """36 -> 40 (asymmetric) puts output 15 at 13.499999 and output 30 at 26.999998 in
    float32: onnxruntime's round_prefer_ceil takes the first as halfway (14), floor keeps
    the second below 27 (26); 29 -> 42 puts output 21 at 14.500001, which
    round_prefer_floor takes as halfway (14)."""
    for (n, m), nm, j, index in [((36, 40), "round_prefer_ceil", 15, 14),
                                 ((36, 40), "floor", 30, 26),
                                 ((29, 42), "round_prefer_floor", 21, 14),
                                 ((29, 42), "round_prefer_ceil", 21, 15)]:
        g = G((n,), 13)
        data = g.model(resize(g, "X", {"mode": "nearest", "nearest_mode": nm,
                                       "coordinate_transformation_mode": "asymmetric"},
                              sizes=[m]))
        x = np.arange(n, dtype=F32)[None]
        assert _ort(data, x)[0, j] == _ours(data, x)[0, j] == index


# -- generated models ----------------------------------------------------------------------
def _draw(draw, refusable: bool) -> tuple[G, str]:
    """A Resize of X: opset, mode, layout, scales or sizes, attributes.  ``refusable``:
    also forms the engine refuses (antialias when downsampling) or onnxruntime rejects."""
    opset_ = draw(st.sampled_from([10, 11, 13, 18, 19]))
    mode = draw(st.sampled_from(["nearest", "linear"]))
    if mode == "linear":
        rank, axes = LAYOUTS[draw(st.sampled_from(sorted(LAYOUTS)))]
    else:
        rank = draw(st.integers(1, 4))
        axes = tuple(sorted(draw(st.sets(st.integers(0, rank - 1), min_size=1))))
    top = 3 if rank == 5 else 5
    shape = tuple(draw(st.integers(1, top)) for _ in range(rank))
    g = G(shape, opset_)
    use_sizes = opset_ > 10 and draw(st.booleans())
    attrs: dict = {"mode": mode}
    if opset_ > 10:
        coords = draw(st.sampled_from(_modes(opset_)))
        attrs["coordinate_transformation_mode"] = coords
        if draw(st.booleans()):
            attrs["nearest_mode"] = draw(st.sampled_from(NEAREST_MODES))
        if draw(st.booleans()):
            attrs["cubic_coeff_a"] = draw(fl(-1, 0))  # inert
    listed = opset_ >= 18 and draw(st.booleans())  # the axes attribute
    if listed:
        attrs["axes"] = [a - rank if draw(st.booleans()) else a for a in axes]
    values: list = []
    for a in range(rank):
        if a not in axes:
            values.append(shape[a] if use_sizes else 1.0)
        elif use_sizes:
            values.append(draw(st.integers(1, 9)))
        else:
            values.append(draw(st.sampled_from(SCALES) | fl(0.3, 3.2)))
    if listed:
        values = [values[a] for a in axes]
    if not use_sizes:
        out = [int(F32(values[list(axes).index(a)] if listed else values[a]) * F32(shape[a]))
               if a in axes else shape[a] for a in range(rank)]
        assume(min(out) >= 1)
    negative = any(a < 0 for a in attrs.get("axes", []))  # onnxruntime ignores them there
    if use_sizes and opset_ >= 18 and (refusable or not negative) and draw(st.booleans()):
        attrs["keep_aspect_ratio_policy"] = draw(st.sampled_from(["not_larger", "not_smaller"]))
    roi = None
    if attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        starts = [draw(fl(-0.4, 0.5)) if a in axes else 0.0 for a in range(rank)]
        ends = [draw(fl(0.5, 1.4)) if a in axes else 1.0 for a in range(rank)]
        roi = [starts[a] for a in axes] + [ends[a] for a in axes] if listed else starts + ends
        if draw(st.booleans()):
            attrs["extrapolation_value"] = draw(fl(-3, 3))
    if opset_ >= 18 and refusable and draw(st.booleans()):
        attrs["antialias"] = 1  # refused
    return g, resize(g, "X", attrs, None if use_sizes else values,
                     values if use_sizes else None, roi)


def gen_resize(draw) -> tuple[G, str]:
    return _draw(draw, refusable=True)


FUZZ = {"Resize": gen_resize}


@SETTINGS
@given(st.data())
def test_generated_models_agree_with_onnxruntime(data):
    g, out = _draw(data.draw, refusable=False)
    model_bytes = g.model(out)
    try:  # keep_aspect_ratio_policy may round an axis to length 0: an empty tensor
        assume(_ort(model_bytes, np.zeros((1, *g.shape), F32)).size > 0)
    except ort.capi.onnxruntime_pybind11_state.Fail:
        pass  # onnxruntime rejects the form: check_against_ort discards it
    assert check_against_ort(model_bytes, g.shape) == "agrees"


def _yolo_form(g: G, x: str) -> str:
    """cctsdb_yolo_2023's node: opset 11, roi an empty Constant, scales [1, 1, 2, 2],
    nearest, asymmetric, floor, cubic_coeff_a = -0.75 (inert)."""
    (roi,) = g.node("Constant", [], value=numpy_helper.from_array(np.zeros(0, F32)))
    scales = g.const(F32([1, 1, 2, 2]))
    return g.node("Resize", [x, roi, scales], coordinate_transformation_mode="asymmetric",
                  cubic_coeff_a=-0.75, mode="nearest", nearest_mode="floor")[0]


def test_cctsdb_yolo_form_is_an_exact_move():
    g = G((1, 3, 2, 5), 11)
    data = g.model(_yolo_form(g, "X"))
    (node,) = load_model(data).graph.nodes
    assert type(node.op) is Resize and node.op.exact_move and node.shape == (1, 3, 4, 10)
    xs = _rng("yolo").standard_normal((3, 1, 3, 2, 5)).astype(F32)
    np.testing.assert_array_equal(_ours(data, xs), _ort(data, xs))


def test_cctsdb_yolo_node_itself_agrees(bench):
    """The Resize node of patch-3.onnx with its own constant inputs, on its input shape."""
    path = bench / "cctsdb_yolo_2023" / "onnx" / "patch-3.onnx"
    if not path.exists():
        pytest.skip(f"{path} not found")
    m = onnx.shape_inference.infer_shapes(onnx.load(path))
    (node,) = [n for n in m.graph.node if n.op_type == "Resize"]
    shape = next(tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
                 for v in m.graph.value_info if v.name == node.input[0])
    consts = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in m.graph.node
                   if n.op_type == "Constant" and n.output[0] in node.input})
    inits = [numpy_helper.from_array(consts[name], name) for name in node.input[1:]]
    one = helper.make_node("Resize", ["X", *node.input[1:]], ["Y"], **{
        a.name: helper.get_attribute_value(a) for a in node.attribute})
    graph = helper.make_graph([one], "yolo", [helper.make_tensor_value_info(
        "X", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info(
            "Y", TensorProto.FLOAT, None)], inits)
    data = helper.make_model(graph, opset_imports=m.opset_import, ir_version=8
                             ).SerializeToString()
    xs = _rng("yolo-node").standard_normal((2, *shape)).astype(F32)
    got = _ours(data, xs)
    assert got.shape == (2, 1, 192, 4, 4)
    np.testing.assert_array_equal(got, _ort(data, xs))


def test_all_constant_resize_folds():
    g = G((1, 1, 4, 6), 13)
    data = g.const(_rng("fold").uniform(-2, 2, (1, 1, 2, 3)).astype(F32))
    (out,) = g.node("Add", ["X", resize(g, data, {"mode": "linear"}, [1, 1, 2, 2])])
    model_bytes = g.model(out)
    assert [n.op_type for n in load_model(model_bytes).graph.nodes] == ["Add"]
    xs = _rng("fold-x").uniform(-2, 2, (2, 1, 1, 4, 6)).astype(F32)
    np.testing.assert_allclose(_ours(model_bytes, xs), _ort(model_bytes, xs), rtol=0,
                               atol=1e-6)


# -- the map: transpose, intervals, rounding -----------------------------------------------
def _op(shape: tuple[int, ...], attrs: dict, scales: object = None, sizes: object = None,
        roi: object = None) -> Op:
    """The op of an opset-13 node (a Const per input, empty where unused)."""
    empty = Const(np.zeros(0, F32))
    inputs = [Var("x", shape), Const(np.asarray(roi, F32)) if roi is not None else empty,
              Const(np.asarray(scales, F32)) if scales is not None else empty,
              Const(np.asarray(sizes, np.int64)) if sizes is not None else empty]
    attrs = {"_op_type": "Resize", **attrs}
    cls = Resize.select(attrs, inputs)
    cls.check(attrs, inputs)
    return cls(attrs, inputs, None)  # type: ignore[arg-type]


def _op_cases() -> list[Op]:
    crop = {"coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": -2.5}
    return [
        _op((1, 2, 3, 4), {"mode": "nearest"}, [1, 1, 2.5, 0.5]),
        _op((1, 2, 3, 4), {"mode": "nearest", **crop}, sizes=[1, 2, 5, 3],
            roi=[0, 0, -0.3, 0.2, 1, 1, 0.9, 1.3]),
        _op((1, 2, 3, 4), {"mode": "linear"}, [1, 1, 1.5, 0.75]),
        _op((1, 3, 4, 2), {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
            sizes=[1, 5, 2, 2]),
        _op((1, 2, 3, 4), {"mode": "linear", **crop}, sizes=[1, 2, 4, 6],
            roi=[0, 0, -0.3, 0.2, 1, 1, 0.9, 1.3]),
        _op((2, 3, 2), {"mode": "linear", "coordinate_transformation_mode": "asymmetric"},
            [1.5, 0.7, 2.0]),
        _op((3, 2, 2, 2, 1), {"mode": "linear"}, sizes=[3, 2, 3, 1, 2]),
    ]


def test_backward_is_the_exact_transpose():
    """A . forward(x) = backward(A) . x + bias_term(A) for random A (B, R, *out) and x."""
    rng = _rng("transpose")
    for op in _op_cases():
        B, R = 2, 3
        (shape,) = op.var_shapes
        x = torch.tensor(rng.uniform(-3, 3, (B, *shape)))
        y = op.forward(x)
        assert y.shape == (B, *op.out_shape)
        A = torch.tensor(rng.uniform(-1, 1, (B, R, *op.out_shape)))
        lhs = (A * y.unsqueeze(1)).reshape(B, R, -1).sum(-1)
        (coeff,) = op.backward(A)  # type: ignore[attr-defined]
        assert coeff.shape == (B, R, *shape)
        rhs = op.bias_term(A) + (coeff * x.unsqueeze(1)).reshape(B, R, -1).sum(-1)  # type: ignore[attr-defined]
        torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


def _box_samples(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, k: int) -> np.ndarray:
    """k points of each box [lo, hi] (B, *shape): uniform, corners, infinite ends read as
    +-1e6."""
    lo_f, hi_f = np.nan_to_num(lo, neginf=-1e6), np.nan_to_num(hi, posinf=1e6)
    t = rng.uniform(size=(k, *lo.shape))
    t[: k // 4] = rng.integers(0, 2, (k // 4, *lo.shape))
    return np.clip(lo_f + t * (hi_f - lo_f), lo_f, hi_f)


def test_interval_bounds_contain_samples():
    """Narrow, wide and half-infinite boxes: IBP holds every sampled output, never NaN
    (a zero weight on an infinite end counts 0), and is exact at the ends (non-negative
    weights: the ends map to the ends)."""
    rng = _rng("ibp")
    for op in _op_cases():
        (shape,) = op.var_shapes
        B = 6
        centre = rng.uniform(-2, 2, (B, *shape))
        width = np.array([1e-4, 0.1, 1, 3, 10, 1])[:, None].repeat(math.prod(shape), 1)
        lo, hi = centre - width.reshape(B, *shape), centre + width.reshape(B, *shape)
        lo[5].flat[0], hi[5].flat[-1] = -math.inf, math.inf
        low, high = op.ibp((torch.tensor(lo), torch.tensor(hi)))
        assert not (torch.isnan(low).any() or torch.isnan(high).any())
        xs = _box_samples(rng, lo, hi, 200)
        with torch.no_grad():
            ys = torch.stack([op.forward(torch.tensor(x)) for x in xs])
        tol = 1e-12 * (1 + ys.abs())  # float64 sums of a few terms
        assert (ys >= low - tol).all() and (ys <= high + tol).all()
        finite = np.isfinite(lo).all(axis=tuple(range(1, lo.ndim)))
        ends = op.forward(torch.tensor(lo[finite])), op.forward(torch.tensor(hi[finite]))
        torch.testing.assert_close(low[finite], ends[0])
        torch.testing.assert_close(high[finite], ends[1])


@pytest.mark.parametrize("layout", ["2d", "nchw", "nhwc", "3d", "ncdhw"])
def test_float32_result_lies_within_the_rounding_bound(layout: str):
    """onnxruntime's float32 evaluation (with cancellation: entries of +-1e3 mixed with
    small ones) lies within the op's rounding bound of the exact map, and the bound is
    attained in order of magnitude (not vacuous)."""
    rank, axes = LAYOUTS[layout]
    shape = tuple(4 if a in axes else 2 for a in range(rank))
    scales = [1.7 if a == axes[0] else 0.6 if a in axes else 1.0 for a in range(rank)]
    g = G(shape, 13)
    data = g.model(resize(g, "X", {"mode": "linear"}, scales))
    rng = _rng("rounding", layout)
    xs = (rng.uniform(-1e3, 1e3, (20, *shape)) * rng.choice([1, 1e-3], (20, *shape)))
    xs = xs.astype(F32)
    ref, exact = _ort(data, xs), _ours(data, xs)
    (node,) = load_model(data).graph.nodes
    box = torch.tensor(np.abs(xs).astype(np.float64))
    y = torch.tensor(exact)
    err = node.op.rounding_error([(-box, box)], (y, y), 2.0**-24)
    assert err is not None
    diff = np.abs(ref - exact)
    assert (diff <= err.numpy()).all()
    assert diff.max() > 0.01 * float(err.max())


# -- the engine's bounds --------------------------------------------------------------------
NET_FORMS = {
    "yolo": ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
              "nearest_mode": "floor"}, [1, 1, 2, 2], None, None),
    "nearest-down": ({"mode": "nearest", "nearest_mode": "round_prefer_ceil"}, None,
                     [1, 2, 3, 2], None),
    "linear-up": ({"mode": "linear"}, [1, 1, 1.5, 2], None, None),
    "linear-align-down": ({"mode": "linear", "coordinate_transformation_mode": "align_corners"},
                          None, [1, 2, 3, 2], None),
    "linear-crop": ({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
                     "extrapolation_value": 0.75}, None, [1, 2, 5, 5],
                    [0, 0, -0.25, 0.1, 1, 1, 0.8, 1.3]),
}


def _conv_net(form: str) -> bytes:
    """X (1, 1, 4, 4) -> Conv (2 channels, 3x3, pad 1) -> Relu -> Resize -> Conv (1
    channel, 2x2) -> Tanh -> Flatten -> Gemm -> (1, 3): the Resize's bounds feed a Relu's
    and a Tanh's relaxations, and its transpose is crossed by every backward pass."""
    attrs, scales, sizes, roi = NET_FORMS[form]
    rng = _rng("net", form)
    g = G((1, 1, 4, 4), 13)
    w1 = g.const(rng.standard_normal((2, 1, 3, 3)).astype(F32) / 2)
    (h,) = g.node("Conv", ["X", w1, g.const(rng.uniform(-0.5, 0.5, 2).astype(F32))],
                  pads=[1, 1, 1, 1])
    (r,) = g.node("Relu", [h])
    t = resize(g, r, attrs, scales, sizes, roi)
    shape = load_model(g.model(t)).graph.output_shape
    w2 = g.const(rng.standard_normal((1, 2, 2, 2)).astype(F32) / 2)
    (c,) = g.node("Conv", [t, w2])
    (a,) = g.node("Tanh", [c])
    (flat,) = g.node("Flatten", [a])
    n = (shape[2] - 1) * (shape[3] - 1)
    w3 = g.const(rng.standard_normal((3, n)).astype(F32) / math.sqrt(n))
    return g.model(g.node("Gemm", [flat, w3, g.const(F32([0.1, -0.2, 0.3]))], transB=1)[0])


@pytest.mark.parametrize("form", sorted(NET_FORMS))
def test_engine_bounds_contain_the_outputs(form: str):
    """IBP, CROWN and alpha-CROWN on 5 random boxes at once (narrow to wide) contain
    onnxruntime's outputs and ours on dense samples and corners of each box."""
    data = _conv_net(form)
    model = load_model(data)
    rng = _rng("boxes", form)
    widths = np.array([1e-3, 0.05, 0.3, 1.0, 3.0])[:, None]
    centre = rng.uniform(-1, 1, (5, 16))
    lo, hi = centre - widths * rng.uniform(0.2, 1, (5, 16)), centre + widths
    batch = plus_minus_rows(lo, hi, 3)
    bounds = {m: row_lower_bounds(model.graph, batch, m,
                                  alpha=AlphaSettings(iterations=5, early_stop=False))
              for m in ("ibp", "crown", "alpha-crown")}
    for b in range(5):
        xs = _box_samples(rng, lo[b], hi[b], 200).astype(F32)
        xs = xs[((xs >= lo[b]) & (xs <= hi[b])).all(1)]  # float32 rounding may step out
        for ys in (_ort(data, xs.reshape(-1, 1, 1, 4, 4)), _ours(data, xs)):
            ys = torch.tensor(ys.reshape(len(xs), -1))
            for method, rows in bounds.items():
                assert (ys >= rows[b, :3]).all(), f"{method} lower bound above an output"
                assert (ys <= -rows[b, 3:]).all(), f"{method} upper bound below an output"


# -- refusals ------------------------------------------------------------------------------
def _refused(data: bytes, message: str) -> None:
    with pytest.raises(UnsupportedOpError, match=message):
        load_model(data)


def test_cubic_is_refused_by_name():
    for opset_ in (10, 13, 19):
        g = G((1, 1, 2, 2), opset_)
        _refused(g.model(resize(g, "X", {"mode": "cubic"}, [1, 1, 2, 2])),
                 "attribute 'mode'='cubic' is not supported")


def test_variable_scales_sizes_and_roi_are_refused_by_name():
    g = G((1, 1, 2, 2), 13)
    (flat,) = g.node("Reshape", ["X", g.const(np.array([4], np.int64))])
    (scales,) = g.node("Add", [flat, g.const(F32(2))])
    (out,) = g.node("Resize", ["X", "", scales])
    _refused(g.model(out), "the 'scales' input depends on the input")
    x, empty = Var("x", (1, 1, 2, 2)), Const(np.zeros(0, F32))
    for position, name in ((1, "roi"), (2, "scales"), (3, "sizes")):
        ins: list = [x, empty, Const(F32([1, 1, 2, 2])), empty]
        ins[position] = Var("v", (4,))
        with pytest.raises(OpFormError, match=f"the '{name}' input depends on the input"):
            Resize.check({"mode": "nearest"}, ins)
    with pytest.raises(OpFormError, match="the 'scales' input depends on the input"):
        Resize.check({}, [x, Var("v", (4,))])  # opset 10's form


@pytest.mark.parametrize("attrs,scales,sizes,message", [
    ({"mode": "linear", "antialias": 1}, [1, 1, 0.5, 2], None,
     "attribute 'antialias'=1 is not supported"),
    ({"mode": "linear", "antialias": 1}, [1, 1, 2, 2], None,
     "attribute 'antialias'=1 is not supported"),
    ({"mode": "nearest", "keep_aspect_ratio_policy": "not_smaller", "axes": [-1, 2]}, None,
     [4, 5], "'keep_aspect_ratio_policy'='not_smaller' with negative axes"),
    ({"mode": "nearest"}, [1, 1, 2, 2], [1, 1, 4, 4], "exactly one of the 'scales' and "),
    ({"mode": "nearest"}, None, None, "exactly one of the 'scales' and 'sizes'"),
    ({"mode": "nearest", "keep_aspect_ratio_policy": "not_larger"}, [1, 1, 2, 2], None,
     "'keep_aspect_ratio_policy'='not_larger' with the 'scales' input is not allowed"),
    ({"mode": "nearest", "axes": [2, -2]}, [2, 2], None, r"'axes'=\[2, -2\] repeats an axis"),
    ({"mode": "nearest", "axes": [4]}, [2], None, "'axes'=.4. is out of range"),
    ({"mode": "nearest"}, [1, 1, 0, 2], None, "must be positive"),
    ({"mode": "nearest"}, [1, 2], None, "scales has 2 values for 4 axes"),
    ({"mode": "nearest"}, None, [1, 1, 0, 3], "empty tensors are not supported"),
    ({"mode": "bicubic"}, [1, 1, 2, 2], None, "attribute 'mode'='bicubic' is not supported"),
    ({"mode": "nearest", "nearest_mode": "up"}, [1, 1, 2, 2], None,
     "'nearest_mode'='up' is not an ONNX value"),
])
def test_unsupported_forms_are_refused_by_name(attrs, scales, sizes, message):
    g = G((1, 1, 2, 3), 19)
    _refused(g.model(resize(g, "X", attrs, scales, sizes)), message)


def test_opset_before_the_op_is_refused_and_inert_attributes_accepted():
    g = G((1, 1, 2, 2), 9)
    (out,) = g.node("Resize", ["X", g.const(F32([1, 1, 2, 2]))])
    _refused(g.model(out), "Resize is not an operator of ONNX opset 9")
    g = G((1, 1, 2, 2), 13)  # exclude_outside and cubic_coeff_a only act in cubic mode
    load_model(g.model(resize(g, "X", {"mode": "linear", "exclude_outside": 1,
                                       "cubic_coeff_a": -0.5}, [1, 1, 2, 2])))
    assert {"exclude_outside", "cubic_coeff_a"} == set(Resize.inert_attributes)
    assert type(_op_cases()[2]) is ResizeLinear and not ResizeLinear.exact_move


# -- verify ----------------------------------------------------------------------------------
def _spec(n: int, lo: float, hi: float, threshold: float, n_out: int) -> str:
    """Unsafe: x in [lo, hi]^n and Y_0 >= threshold."""
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(n))
    text += "".join(f"(declare-const Y_{j} Real)\n" for j in range(n_out))
    text += "".join(f"(assert (>= X_{i} {lo!r}))\n(assert (<= X_{i} {hi!r}))\n"
                    for i in range(n))
    return text + f"(assert (>= Y_0 {threshold!r}))\n"


def _run(data: bytes, n: int, lo: float, hi: float, threshold: float, timeout: float,
         n_out: int = 1):
    prop = parse_vnnlib(_spec(n, lo, hi, threshold, n_out), n, n_out)
    return prop, verify(load_model(data), prop, Settings(timeout=timeout))


def _cancelling_net(attrs: dict, scales: object, sizes: object) -> bytes:
    """X (1, 1, 3, 3) -> Conv (2 channels, 2x2, pad 1) -> Resize -> Flatten -> y = sum of
    the resized entries minus the same sum taken through the map's column sums: 0 for
    every x, which only the Resize's exact transpose proves (IBP cannot)."""
    rng = _rng("cancel", str(attrs))
    g = G((1, 1, 3, 3), 13)
    w = rng.standard_normal((2, 1, 2, 2)).astype(F32)
    (h,) = g.node("Conv", ["X", g.const(w)], pads=[1, 1, 1, 1])
    t = resize(g, h, attrs, scales, sizes)
    op = load_model(g.model(t)).graph.nodes[-1].op
    with torch.no_grad():
        (colsum,) = op.backward(torch.ones(1, 1, *op.out_shape, dtype=torch.float64))
    (flat_t,) = g.node("Flatten", [t])
    (flat_h,) = g.node("Flatten", [h])
    n_t = math.prod(op.out_shape)
    weights = np.concatenate([np.ones(n_t), -colsum.numpy().ravel()])[None].astype(F32)
    (both,) = g.node("Concat", [flat_t, flat_h], axis=1)
    return g.model(g.node("Gemm", [both, g.const(weights)], transB=1)[0])


@pytest.mark.parametrize("attrs,scales,sizes", [
    ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
      "nearest_mode": "floor"}, [1, 1, 2, 2], None),
    ({"mode": "linear"}, None, [1, 2, 6, 3]),
], ids=["nearest", "linear"])
def test_identity_through_the_transpose_is_verified(attrs, scales, sizes):
    """y = 0 up to float32 rounding (the final Gemm's, about 6e-3 here, dominates): IBP's
    bound is hundreds, the backward pass through the Resize's transpose proves y < 0.05."""
    data = _cancelling_net(attrs, scales, sizes)
    batch = plus_minus_rows(-np.ones((1, 9)), np.ones((1, 9)), 1)
    assert float(row_lower_bounds(load_model(data).graph, batch, "ibp")[0, 1]) < -100
    _, result = _run(data, 9, -1.0, 1.0, 0.05, timeout=10)
    assert result.verdict == "verified", result.message


def test_true_margin_is_verified_and_attained_value_falsified():
    """The yolo form between two convs, on [-0.5, 0.5]^16: Y_0 >= (its CROWN upper bound +
    0.01) is verified; Y_0 >= (a value onnxruntime attains at a sampled input) is falsified
    with a counterexample onnxruntime confirms."""
    data = _conv_net("yolo")
    batch = plus_minus_rows(np.full((1, 16), -0.5), np.full((1, 16), 0.5), 3)
    upper = -float(row_lower_bounds(load_model(data).graph, batch, "crown")[0, 3])
    xs = _rng("margin").uniform(-0.5, 0.5, (200, 1, 1, 4, 4)).astype(F32)
    attained = float(_ort(data, xs)[:, 0, 0].max())
    assert attained < upper
    _, result = _run(data, 16, -0.5, 0.5, upper + 0.01, 10, 3)
    assert result.verdict == "verified", result.message
    prop, result = _run(data, 16, -0.5, 0.5, attained, 10, 3)
    assert result.verdict == "falsified", result.message
    _confirm(data, result, prop, attained)


def _confirm(data: bytes, result, prop, threshold: float) -> None:
    """Every counterexample lies in the box and onnxruntime's Y_0 there reaches the
    threshold."""
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert result.counterexamples
    for cex in result.counterexamples:
        x = np.asarray(cex.x, F32)
        y = sess.run(None, {"X": x.reshape(sess.get_inputs()[0].shape)})[0].ravel()
        assert y[0] >= threshold and prop.violated_by(x, y, tol=0.0), (x, y)


P = float(F32(0.3137))  # the planted point: not a centre, corner or dyadic midpoint


def _bump_net(mode: str) -> bytes:
    """X (1, 1, 2, 2) -> Conv 1x1: s = K (x - P) -> b = relu(1 - |s|) (1 at x = P, 0 beyond
    1/K) -> Resize x2 -> Conv 4x4 of ones (the sum) -> y (1, 1): y = 4 sum_i b_i, >= 1 only
    within 1/K of P on some input, K = 1e5."""
    K = 1e5
    g = G((1, 1, 2, 2), 13)
    (s,) = g.node("Conv", ["X", g.const(F32([[[[K]]]])), g.const(F32([-K * P]))])
    (a,) = g.node("Abs", [s])
    (b,) = g.node("Relu", [g.node("Sub", [g.const(F32(1)), a])[0]])
    attrs = {"mode": mode} if mode == "linear" else {
        "mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    t = resize(g, b, attrs, [1, 1, 2, 2])
    (y,) = g.node("Conv", [t, g.const(np.ones((1, 1, 4, 4), F32))])
    return g.model(g.node("Flatten", [y])[0])


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_planted_counterexample_is_real_and_never_verified(mode: str):
    data = _bump_net(mode)
    at_p = _ort(data, np.full((1, 1, 1, 2, 2), P, F32))[0, 0, 0]
    assert at_p == pytest.approx(16.0, abs=0.1)
    others = _ort(data, _rng("bump", mode).uniform(-1, 1, (300, 1, 1, 2, 2)).astype(F32))
    assert others.max() < 1.0
    prop, result = _run(data, 4, -1.0, 1.0, 1.0, timeout=2)
    assert result.verdict in ("falsified", "unknown", "timeout"), result.message
    if result.verdict == "falsified":
        _confirm(data, result, prop, 1.0)
    _, control = _run(data, 4, -1.0, 1.0, 16.5, timeout=2)
    assert control.verdict in ("verified", "unknown", "timeout"), control.message
