"""Differential fuzzing of the ONNX importer against onnxruntime (issue 12, class 3).

Random small graphs over every supported op, with random attributes, shapes, constants and
opsets, are evaluated by nnverify (``load_model`` then ``graph.forward``) and by onnxruntime
(graph optimisations off: its own fusions are approximate).  Any disagreement beyond float
noise fails; a node refused with a ModelError is fine (refusal is sound, wrong semantics is
not).  Graphs onnxruntime itself rejects are discarded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
ort = pytest.importorskip("onnxruntime")

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from verifier.ops.base import REGISTRY  # noqa: E402

from .fuzzgraph import (  # noqa: E402
    SETTINGS,
    G,
    array,
    bcast_shape,
    check_against_ort,
    fl,
    maybe,
    opset,
    positive,
    put,
    reduce_graph,
    shape_of,
)

# -- one generator per op kind -----------------------------------------------------------

UNARY = ["Abs", "Cos", "Erf", "Exp", "Neg", "Relu", "Sigmoid", "Sin", "Tanh", "Identity"]
STEPS = {"Sign": 9, "Floor": 7, "Ceil": 7, "Round": 11}  # step functions: their first opset


def gen_unary(draw) -> tuple[G, str]:
    op = draw(st.sampled_from(UNARY + ["Log", "Sqrt", "Reciprocal", "LeakyRelu", "Gelu"]
                              + list(STEPS)))
    g = G(shape_of(draw), opset(draw, 20 if op == "Gelu" else STEPS.get(op, 7)))
    x = positive(g, "X") if op in ("Log", "Sqrt", "Reciprocal") else "X"
    attrs: dict = {}
    if op == "LeakyRelu":
        put(attrs, "alpha", maybe(draw, fl(-2, 2)))
    if op == "Gelu":
        put(attrs, "approximate", maybe(draw, st.sampled_from(["none", "tanh"])))
    return g, g.node(op, [x], **attrs)[0]


def gen_clip(draw) -> tuple[G, str]:
    g = G(shape_of(draw), opset(draw))
    lo, hi = maybe(draw, st.floats(-1.5, 0)), maybe(draw, st.floats(0, 1.5))
    if g.opset < 11:
        attrs: dict = {}
        put(attrs, "min", lo)
        put(attrs, "max", hi)
        return g, g.node("Clip", ["X"], **attrs)[0]
    ins = ["X", "" if lo is None else g.const(np.float32(lo)),
           "" if hi is None else g.const(np.float32(hi))]
    while ins[-1] == "":
        ins.pop()
    return g, g.node("Clip", ins)[0]


def gen_dropout(draw) -> tuple[G, str]:
    g = G(shape_of(draw), opset(draw))
    attrs: dict = {}
    ins = ["X"]
    if g.opset < 12:
        put(attrs, "ratio", maybe(draw, fl(0, 0.9)))
    else:
        put(attrs, "seed", maybe(draw, st.integers(0, 5)))
        if draw(st.booleans()):
            ins.append(g.const(np.float32(draw(st.floats(0, 0.9)))))
            if draw(st.booleans()):
                ins.append(g.const(np.array(draw(st.booleans()))))
    n_out = draw(st.integers(1, 2))
    outs = g.node("Dropout", ins, n_out=n_out, **attrs)
    return g, outs[0]


def gen_cast(draw) -> tuple[G, str]:
    g = G(shape_of(draw), opset(draw))
    to = draw(st.sampled_from([TensorProto.FLOAT, TensorProto.DOUBLE]))
    g.out_type = to
    return g, g.node("Cast", ["X"], to=to)[0]


def gen_binary(draw) -> tuple[G, str]:
    op = draw(st.sampled_from(["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"]))
    g = G(shape_of(draw), opset(draw, 8 if op in ("Max", "Min") else 7))
    if op == "Pow":
        p = draw(st.sampled_from([2.0, 3.0, 1.0, 0.5, -1.0, 1.5, 0.0]))
        base = "X" if p == int(p) and p >= 0 else positive(g, "X")
        e = np.full(draw(st.sampled_from([(), (), (1,), (1, 1)])), p, dtype=np.float32)
        return g, g.node("Pow", [base, g.const(e)])[0]
    kind = draw(st.sampled_from(["const", "const_first", "var"]))
    if kind == "var":
        other = positive(g, "X") if op == "Div" else g.node("Tanh", ["X"])[0]
        ins = ["X", other]
    else:
        c = array(draw, bcast_shape(draw, g.shape))
        if op == "Div" and kind == "const":
            c = np.sign(c) * (np.abs(c) + 0.5)
        x = positive(g, "X") if op == "Div" and kind == "const_first" else "X"
        ins = [x, g.const(c)] if kind == "const" else [g.const(c), x]
    if op in ("Max", "Min") and draw(st.booleans()):
        ins.append(g.const(array(draw, bcast_shape(draw, g.shape))))
    return g, g.node(op, ins)[0]


def gen_gemm(draw) -> tuple[G, str]:
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    ta, tb = draw(st.booleans()), draw(st.booleans())
    g = G((k, m) if ta else (m, k), opset(draw))
    b = g.const(array(draw, (n, k) if tb else (k, n)))
    ins = ["X", b]
    if draw(st.booleans()) or g.opset < 11:
        ins.append(g.const(array(draw, draw(st.sampled_from([(n,), (1, n), (m, n), ()])))))
    attrs: dict = {}
    put(attrs, "alpha", maybe(draw, fl(-2, 2)))
    put(attrs, "beta", maybe(draw, fl(-2, 2)))
    put(attrs, "transA", int(ta) if ta else maybe(draw, st.just(0)))
    put(attrs, "transB", int(tb) if tb else maybe(draw, st.just(0)))
    return g, g.node("Gemm", ins, **attrs)[0]


def gen_matmul(draw) -> tuple[G, str]:
    shape = shape_of(draw, 1, 3)
    g = G(shape, opset(draw))
    lead = (draw(st.integers(1, 3)),) if draw(st.floats(0, 1)) < 0.2 else ()
    if draw(st.booleans()):
        w = array(draw, (*lead, shape[-1], draw(st.integers(1, 4))) if draw(st.booleans())
                  else (shape[-1],))
        return g, g.node("MatMul", ["X", g.const(w)])[0]
    if len(shape) == 1:
        w = array(draw, (draw(st.integers(1, 3)), shape[0]))
        return g, g.node("MatMul", [g.const(w), "X"])[0]
    w = array(draw, (*lead, draw(st.integers(1, 3)), shape[-2]))
    return g, g.node("MatMul", [g.const(w), "X"])[0]


def spatial_attrs(draw, g: G, n: int, k: list[int], ops_opset: int, dil_ok: bool,
                  same_ok: bool = True) -> dict:
    attrs: dict = {}
    put(attrs, "strides", maybe(draw, st.lists(st.integers(1, 3), min_size=n, max_size=n)))
    if dil_ok:
        put(attrs, "dilations", maybe(draw, st.lists(st.integers(1, 2), min_size=n, max_size=n)))
    auto = maybe(draw, st.sampled_from(["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"]
                                       if same_ok else ["NOTSET", "VALID"]))
    put(attrs, "auto_pad", auto)
    if auto in (None, "NOTSET"):
        pads = maybe(draw, st.lists(st.integers(0, 2), min_size=2 * n, max_size=2 * n))
        if pads is not None:
            pads = [min(p, kk - 1) for p, kk in zip(pads, k + k, strict=True)]
        put(attrs, "pads", pads)
    return attrs


def gen_conv(draw) -> tuple[G, str]:
    n = draw(st.integers(1, 3))
    group = draw(st.integers(1, 2))
    cin, cout = group * draw(st.integers(1, 2)), group * draw(st.integers(1, 2))
    spatial = tuple(draw(st.integers(3, 6 if n < 3 else 4)) for _ in range(n))
    g = G((1, cin, *spatial), opset(draw))
    k = [draw(st.integers(1, 3)) for _ in range(n)]
    ins = ["X", g.const(array(draw, (cout, cin // group, *k)))]
    if draw(st.booleans()):
        ins.append(g.const(array(draw, (cout,))))
    attrs = spatial_attrs(draw, g, n, k, g.opset, True)
    if group > 1 or draw(st.booleans()):
        attrs["group"] = group
    if draw(st.booleans()):
        attrs["kernel_shape"] = k
    return g, g.node("Conv", ins, **attrs)[0]


def gen_convtranspose(draw) -> tuple[G, str]:
    n = draw(st.integers(1, 2))
    group = draw(st.integers(1, 2))
    cin, cout = group * draw(st.integers(1, 2)), group * draw(st.integers(1, 2))
    spatial = tuple(draw(st.integers(2, 4)) for _ in range(n))
    g = G((1, cin, *spatial), opset(draw))
    k = [draw(st.integers(1, 3)) for _ in range(n)]
    ins = ["X", g.const(array(draw, (cin, cout // group, *k)))]
    if draw(st.booleans()):
        ins.append(g.const(array(draw, (cout,))))
    attrs = spatial_attrs(draw, g, n, k, g.opset, True)
    strides = attrs.get("strides", [1] * n)
    if draw(st.booleans()):
        attrs["output_padding"] = [draw(st.integers(0, s - 1)) for s in strides]
    if group > 1:
        attrs["group"] = group
    if draw(st.booleans()):
        attrs["kernel_shape"] = k
    if draw(st.floats(0, 1)) < 0.1:
        attrs["output_shape"] = [s * st_ for s, st_ in zip(spatial, strides, strict=True)]
    return g, g.node("ConvTranspose", ins, **attrs)[0]


def gen_batchnorm(draw) -> tuple[G, str]:
    c = draw(st.integers(1, 3))
    g = G((1, c, *shape_of(draw, 0, 2)), opset(draw))
    ins = ["X"] + [g.const(array(draw, (c,))) for _ in range(3)]
    ins.append(g.const(array(draw, (c,), 0.1, 2.0)))
    attrs: dict = {}
    put(attrs, "epsilon", maybe(draw, fl(1e-5, 0.1)))
    put(attrs, "momentum", maybe(draw, fl(0.1, 0.99)))
    if g.opset < 9:
        put(attrs, "spatial", maybe(draw, st.integers(0, 1)))
    if g.opset >= 14:
        put(attrs, "training_mode", maybe(draw, st.integers(0, 1), 0.7))
    return g, g.node("BatchNormalization", ins, **attrs)[0]


def gen_pool(draw) -> tuple[G, str]:
    op = draw(st.sampled_from(["AveragePool", "MaxPool", "GlobalAveragePool"]))
    n = draw(st.integers(1, 3))
    spatial = tuple(draw(st.integers(2, 6 if n < 3 else 4)) for _ in range(n))
    g = G((1, draw(st.integers(1, 2)), *spatial), opset(draw))
    if op == "GlobalAveragePool":
        return g, g.node(op, ["X"])[0]
    k = [draw(st.integers(1, 3)) for _ in range(n)]
    dil_ok = (op == "MaxPool" and g.opset >= 10) or g.opset >= 19
    attrs = spatial_attrs(draw, g, n, k, g.opset, dil_ok)
    attrs["kernel_shape"] = k
    if g.opset >= 10:
        put(attrs, "ceil_mode", maybe(draw, st.integers(0, 1)))
    if op == "AveragePool":
        put(attrs, "count_include_pad", maybe(draw, st.integers(0, 1)))
    elif g.opset >= 8:
        put(attrs, "storage_order", maybe(draw, st.integers(0, 1), 0.7))
    return g, g.node(op, ["X"], **attrs)[0]


def gen_softmax(draw) -> tuple[G, str]:
    g = G(shape_of(draw), opset(draw))
    r = len(g.shape)
    attrs: dict = {}
    put(attrs, "axis", maybe(draw, st.integers(-r if g.opset >= 11 else 0, r - 1)))
    return g, g.node("Softmax", ["X"], **attrs)[0]


def gen_layernorm(draw) -> tuple[G, str]:
    g = G(shape_of(draw, 1, 3), opset(draw, 17))
    r = len(g.shape)
    ax = draw(st.integers(-r, r - 1))
    norm = g.shape[ax % r:]
    ins = ["X", g.const(array(draw, norm))]
    if draw(st.booleans()):
        ins.append(g.const(array(draw, norm)))
    attrs = {"axis": ax}
    put(attrs, "epsilon", maybe(draw, fl(1e-5, 0.1)))
    put(attrs, "stash_type", maybe(draw, st.just(1)))
    return g, g.node("LayerNormalization", ins, **attrs)[0]


def gen_reduce(draw) -> tuple[G, str]:
    return reduce_graph(draw, ["ReduceSum", "ReduceMean"])


def gen_reshape(draw) -> tuple[G, str]:
    op = draw(st.sampled_from(["Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"]))
    g = G(shape_of(draw), opset(draw))
    r = len(g.shape)
    if op == "Flatten":
        attrs: dict = {}
        put(attrs, "axis", maybe(draw, st.integers(-r if g.opset >= 11 else 0, r)))
        return g, g.node(op, ["X"], **attrs)[0]
    if op == "Transpose":
        attrs = {}
        put(attrs, "perm", maybe(draw, st.permutations(list(range(r)))))
        return g, g.node(op, ["X"], **attrs)[0]
    if op == "Reshape":
        target = list(draw(st.permutations(list(g.shape))))
        if draw(st.booleans()):
            target[draw(st.integers(0, r - 1))] = -1
        elif draw(st.booleans()):
            i = draw(st.integers(0, r - 1))
            if target[i] == g.shape[i]:
                target[i] = 0
        attrs = {}
        if g.opset >= 14:
            put(attrs, "allowzero", maybe(draw, st.just(0)))
        return g, g.node(op, ["X", g.const(np.array(target, dtype=np.int64))], **attrs)[0]
    if op == "Squeeze":
        ones = [i for i, d in enumerate(g.shape) if d == 1]
        axes = maybe(draw, st.lists(st.sampled_from(ones), unique=True, min_size=1)) \
            if ones else None
        axes = None if axes is None else [a - r if draw(st.booleans()) else a for a in axes]
    else:
        k = draw(st.integers(1, 2))
        axes = draw(st.lists(st.integers(-(r + k), r + k - 1), min_size=k, max_size=k,
                             unique_by=lambda a: a % (r + k)))
    if axes is None:
        return g, g.node(op, ["X"])[0]
    if g.opset < 13:
        return g, g.node(op, ["X"], axes=axes)[0]
    return g, g.node(op, ["X", g.const(np.array(axes, dtype=np.int64))])[0]


def gen_concat(draw) -> tuple[G, str]:
    g = G(shape_of(draw), opset(draw))
    r = len(g.shape)
    ax = draw(st.integers(-r if g.opset >= 11 else 0, r - 1))
    ins = ["X"]
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            shape = list(g.shape)
            shape[ax % r] = draw(st.integers(1, 3))
            ins.insert(draw(st.integers(0, len(ins))), g.const(array(draw, tuple(shape))))
        else:
            ins.append(g.node("Tanh", ["X"])[0])
    return g, g.node("Concat", ins, axis=ax)[0]


def gen_slice(draw) -> tuple[G, str]:
    g = G(shape_of(draw, 1, 3, 1, 6), opset(draw))
    r = len(g.shape)
    axes = draw(st.lists(st.integers(0, r - 1), min_size=1, max_size=r, unique=True))
    axes = [a - r if draw(st.booleans()) else a for a in axes]
    starts = [draw(st.integers(-7, 7)) for _ in axes]
    ends = [draw(st.sampled_from([draw(st.integers(-7, 7)), 2**62, -(2**62)])) for _ in axes]
    steps = [draw(st.sampled_from([1, 2, -1, -2])) for _ in axes]
    give_axes = draw(st.booleans())
    if g.opset < 10:
        attrs = {"starts": starts, "ends": ends}
        if give_axes:
            attrs["axes"] = [a % r for a in axes]
        return g, g.node("Slice", ["X"], **attrs)[0]
    i64 = lambda v: g.const(np.array(v, dtype=np.int64))  # noqa: E731
    ins = ["X", i64(starts), i64(ends), i64(axes)]
    if draw(st.booleans()):
        ins.append(i64(steps))
    elif not give_axes:
        ins = ins[:3]
    return g, g.node("Slice", ins)[0]


def gen_gather(draw) -> tuple[G, str]:
    g = G(shape_of(draw), opset(draw))
    r = len(g.shape)
    ax = draw(st.integers(-r if g.opset >= 11 else 0, r - 1))
    d = g.shape[ax % r]
    ishape = shape_of(draw, 0, 2)
    lo = -d if g.opset >= 11 else 0
    seed = draw(st.integers(0, 1000))
    idx = np.random.default_rng(seed).integers(lo, d, size=ishape).astype(np.int64)
    return g, g.node("Gather", ["X", g.const(idx)], axis=ax)[0]


def gen_split(draw) -> tuple[G, str]:
    g = G(shape_of(draw, 1, 3, 1, 6), opset(draw))
    r = len(g.shape)
    ax = draw(st.integers(-r, r - 1)) if draw(st.booleans()) else None
    d = g.shape[(ax or 0) % r]
    attrs: dict = {}
    put(attrs, "axis", ax)
    ins = ["X"]
    how = draw(st.sampled_from(["sizes", "equal", "num_outputs"]))
    if how == "sizes":
        cuts = sorted(draw(st.lists(st.integers(0, d), max_size=2)))
        sizes = [b - a for a, b in zip([0] + cuts, cuts + [d], strict=True)]
        n_out = len(sizes)
        if g.opset < 13:
            attrs["split"] = sizes
        else:
            ins.append(g.const(np.array(sizes, dtype=np.int64)))
    elif how == "num_outputs" and g.opset >= 18:
        n_out = draw(st.integers(1, 3))
        attrs["num_outputs"] = n_out
    else:
        n_out = draw(st.sampled_from([k for k in (1, 2, 3) if d % k == 0]))
    outs = g.node("Split", ins, n_out=n_out, **attrs)
    return g, outs[draw(st.integers(0, n_out - 1))]


def gen_pad(draw) -> tuple[G, str]:
    g = G(shape_of(draw, 1, 4, 2, 4), opset(draw))
    r = len(g.shape)
    modes = ["constant", "reflect", "edge"] + (["wrap"] if g.opset >= 19 else [])
    mode = maybe(draw, st.sampled_from(modes))
    axes = list(range(r))
    if g.opset >= 18 and draw(st.booleans()):
        axes = draw(st.lists(st.integers(-r, r - 1), min_size=1, max_size=r,
                             unique_by=lambda a: a % r))
    lo = -1 if draw(st.floats(0, 1)) < 0.2 else 0
    pads = [draw(st.integers(lo, 2)) for _ in range(2 * len(axes))]
    if mode == "reflect":
        pads = [min(p, g.shape[axes[i % len(axes)]] - 1) for i, p in enumerate(pads)]
    value = maybe(draw, fl(-2, 2))
    attrs: dict = {}
    put(attrs, "mode", mode)
    if g.opset < 11:
        attrs["pads"] = pads
        put(attrs, "value", value)
        return g, g.node("Pad", ["X"], **attrs)[0]
    ins = ["X", g.const(np.array(pads, dtype=np.int64))]
    ins.append("" if value is None else g.const(np.float32(value)))
    if axes != list(range(r)):
        ins.append(g.const(np.array(axes, dtype=np.int64)))
    while ins[-1] == "":
        ins.pop()
    return g, g.node("Pad", ins, **attrs)[0]


def gen_expand(draw) -> tuple[G, str]:
    g = G(shape_of(draw, 1, 3, 1, 3), opset(draw, 8))
    if draw(st.booleans()):
        reps = [draw(st.integers(1, 3)) for _ in g.shape]
        return g, g.node("Tile", ["X", g.const(np.array(reps, dtype=np.int64))])[0]
    extra = shape_of(draw, 0, 2, 1, 3)
    target = list(extra) + [draw(st.integers(2, 3)) if d == 1 and draw(st.booleans())
                            else (1 if draw(st.booleans()) else d) for d in g.shape]
    return g, g.node("Expand", ["X", g.const(np.array(target, dtype=np.int64))])[0]


def _exact_or_off(draw, value: float) -> float:
    return draw(st.sampled_from([value, value, value * (1 + 5e-5), value * (1 - 1e-3),
                                value * (1 + 3e-7)]))


def gen_gelu_pattern(draw) -> tuple[G, str]:
    g = G(shape_of(draw), opset(draw, 9))
    if draw(st.booleans()):
        (a,) = g.node("Div", ["X", g.const(np.float32(_exact_or_off(draw, 2 ** 0.5)))])
    else:
        c = g.const(np.float32(_exact_or_off(draw, 2 ** -0.5)))
        (a,) = g.node("Mul", ["X", c] if draw(st.booleans()) else [c, "X"])
    (e,) = g.node("Erf", [a])
    (p,) = g.node("Add", [e, g.const(np.float32(_exact_or_off(draw, 1.0)))])
    half = g.const(np.float32(_exact_or_off(draw, 0.5)))
    form = draw(st.integers(0, 2))
    if form == 0:
        out = g.node("Mul", [g.node("Mul", ["X", p])[0], half])[0]
    elif form == 1:
        out = g.node("Mul", [g.node("Mul", [p, half])[0], "X"])[0]
    else:
        out = g.node("Mul", [g.node("Mul", ["X", half])[0], p])[0]
    if draw(st.booleans()):  # an intermediate result used outside the pattern
        leak = draw(st.sampled_from([a, e, p]))
        out = g.node("Add", [out, leak])[0]
    return g, out


def gen_layernorm_pattern(draw) -> tuple[G, str]:
    g = G(shape_of(draw, 2, 3, 2, 4), opset(draw, 7, 17))
    r = len(g.shape)
    k = draw(st.integers(1, 2))
    axes_m = list(range(-k, 0))
    axes_v = axes_m if draw(st.booleans()) else draw(st.sampled_from([[-1], [-2], [-2, -1]]))
    kd = draw(st.sampled_from([1, 1, 0]))
    attr_order = draw(st.booleans())

    def mean(x: str, axes: list[int], keepdims: int) -> str:
        node = helper.make_node("ReduceMean", [x], [f"{x}_mean"], name=f"mean_{x}")
        attrs = [helper.make_attribute("axes", axes), helper.make_attribute("keepdims", keepdims)]
        node.attribute.extend(reversed(attrs) if attr_order else attrs)
        g.nodes.append(node)
        return node.output[0]

    m = mean("X", axes_m, kd)
    (d,) = g.node("Sub", ["X", m])
    (sq,) = g.node("Pow", [d, g.const(np.float32(_exact_or_off(draw, 2.0)))]) \
        if draw(st.booleans()) else g.node("Mul", [d, d])
    v = mean(sq, axes_v, 1)
    (ve,) = g.node("Add", [v, g.const(np.float32(draw(st.sampled_from([1e-5, 1e-3]))))])
    (s,) = g.node("Sqrt", [ve])
    (out,) = g.node("Div", [d, s])
    if draw(st.booleans()):
        (out,) = g.node("Mul", [out, g.const(array(draw, (g.shape[-1],)))])
        if draw(st.booleans()):
            (out,) = g.node("Add", [out, g.const(array(draw, (g.shape[-1],)))])
    if draw(st.booleans()):
        leak = draw(st.sampled_from([s, ve, v]))
        (out,) = g.node("Add", [out, leak])
    del r
    return g, out


def gen_chain(draw) -> tuple[G, str]:
    """Another generator's graph followed by one or two more ops."""
    kind = draw(st.sampled_from(sorted(k for k in GENERATORS if k != "chain")))
    g, out = GENERATORS[kind](draw)
    for _ in range(draw(st.integers(1, 2))):
        op = draw(st.sampled_from(["Relu", "Tanh", "Neg", "Abs", "Softmax", "Add", "Mul"]))
        if op in ("Add", "Mul"):
            (out,) = g.node(op, [out, g.const(np.float32(draw(fl(-2, 2))))])
        else:
            (out,) = g.node(op, [out])
    return g, out


def gen_folded(draw) -> tuple[G, str]:
    """A supported op applied to constants only (folded at import), then added to X."""
    g = G(shape_of(draw), opset(draw))
    op = draw(st.sampled_from(["Relu", "Tanh", "Exp", "Neg", "Transpose", "Softmax", "Erf",
                               "Sigmoid", "LeakyRelu", "Abs", "Sin", "Identity"]))
    c = g.const(array(draw, g.shape[::-1] if op == "Transpose" else g.shape))
    (folded,) = g.node(op, [c])
    return g, g.node("Add", ["X", folded])[0]


def gen_folded_any(draw) -> tuple[G, str]:
    """Another generator's graph on a constant instead of X (folded at import), plus X."""
    kind = draw(st.sampled_from(sorted(k for k in GENERATORS if k not in ("chain", "folded_any"))))
    g, out = GENERATORS[kind](draw)
    c = g.const(array(draw, g.shape))
    for n in g.nodes:
        n.input[:] = [c if i == "X" else i for i in n.input]
    g.shape = (1,)
    return g, g.node("Add", [out, "X"])[0]


GENERATORS: dict[str, Callable] = {
    "unary": gen_unary, "clip": gen_clip, "dropout": gen_dropout, "cast": gen_cast,
    "binary": gen_binary, "gemm": gen_gemm, "matmul": gen_matmul, "conv": gen_conv,
    "convtranspose": gen_convtranspose, "batchnorm": gen_batchnorm, "pool": gen_pool,
    "softmax": gen_softmax, "layernorm": gen_layernorm, "reduce": gen_reduce,
    "reshape": gen_reshape, "concat": gen_concat, "slice": gen_slice, "gather": gen_gather,
    "split": gen_split, "pad": gen_pad, "expand": gen_expand,
    "gelu_pattern": gen_gelu_pattern, "layernorm_pattern": gen_layernorm_pattern,
    "folded": gen_folded,
}
GENERATORS["chain"] = gen_chain
GENERATORS["folded_any"] = gen_folded_any

COVERED = set(UNARY) | {
    "Log", "Sqrt", "Reciprocal", "LeakyRelu", "Gelu", *STEPS, "Clip", "Dropout", "Cast", "Add",
    "Sub",
    "Mul", "Div", "Pow", "Max", "Min", "Gemm", "MatMul", "Conv", "ConvTranspose",
    "BatchNormalization", "AveragePool", "MaxPool", "GlobalAveragePool", "Softmax",
    "LayerNormalization", "ReduceSum", "ReduceMean", "Reshape", "Flatten", "Squeeze",
    "Unsqueeze", "Transpose", "Concat", "Slice", "Gather", "Split", "Pad", "Expand", "Tile",
}


def _op_test_files() -> None:
    """The generators op test files declare (``FUZZ = {"OpType": generator}``)."""
    for path in sorted(Path(__file__).parent.glob("test_op_*.py")):
        module = importlib.import_module(f"{__package__}.{path.stem}")
        for op, gen in getattr(module, "FUZZ", {}).items():
            GENERATORS[op.lower()] = gen
            COVERED.add(op)


_op_test_files()


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_importer_agrees_with_onnxruntime(kind: str) -> None:
    gen = GENERATORS[kind]

    @SETTINGS
    @given(st.data())
    def run(data) -> None:
        g, out = gen(data.draw)
        hypothesis.event(check_against_ort(g.model(out), g.shape))

    run()


def test_fuzzing_covers_every_registered_op() -> None:
    assert set(REGISTRY) <= COVERED, sorted(set(REGISTRY) - COVERED)
