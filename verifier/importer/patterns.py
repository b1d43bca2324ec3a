"""Composite patterns recognised at import: GeLU written with Erf and LayerNorm written with
ReduceMean / Sub / Pow / Sqrt / Div.  Fusing them gives one op whose bounds are much tighter
than those of its pieces (x * Phi(x) is not a product of two unrelated variables).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TypeGuard

import numpy as np
import onnx
from onnx import helper

FUSED = "nnverify: fused pattern"  # doc_string of the nodes that fuse_patterns makes
SQRT2 = math.sqrt(2.0)


def _scalar(name: str, consts: dict[str, np.ndarray]) -> np.ndarray | None:
    """A constant of one entry that broadcasts without adding a dimension (rank 0 or 1)."""
    v = consts.get(name)
    if v is None:
        return None
    a = np.asarray(v)
    if a.size != 1 or a.ndim > 1 or not (np.issubdtype(a.dtype, np.floating)
                                         or np.issubdtype(a.dtype, np.integer)):
        return None
    return a


def _is(name: str, consts: dict[str, np.ndarray], exact: float) -> bool:
    """``name`` is a scalar constant equal to ``exact`` up to rounding to its own type
    (two units in the last place)."""
    a = _scalar(name, consts)
    if a is None:
        return False
    eps = float(np.finfo(a.dtype).eps) if np.issubdtype(a.dtype, np.floating) else 0.0
    return abs(float(a.ravel()[0]) - exact) <= 2 * eps * abs(exact)


def _plain(node: onnx.NodeProto | None) -> TypeGuard[onnx.NodeProto]:
    """The node exists and has no attributes (elementwise ops of opset >= 7 have none)."""
    return node is not None and not node.attribute


class _Index:
    """Producers and consumers of every tensor name in a node list."""

    def __init__(self, nodes: list[onnx.NodeProto]):
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in nodes:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                self.consumers[i].append(n)

    def sole_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        if len(users) == 1 and users[0].op_type == op_type:
            return users[0]
        return None


def _other(node: onnx.NodeProto, name: str) -> str:
    a, b = node.input
    return b if a == name else a


def _scaled_input(node: onnx.NodeProto | None, consts: dict[str, np.ndarray]) -> str | None:
    """x when ``node`` is x / sqrt(2) or x * (1 / sqrt(2)) (either operand order)."""
    if not _plain(node):
        return None
    a, b = node.input
    if node.op_type == "Div" and _is(b, consts, SQRT2):
        return a
    if node.op_type == "Mul":
        if _is(b, consts, 1 / SQRT2):
            return a
        if _is(a, consts, 1 / SQRT2):
            return b
    return None


def _match_gelu(erf: onnx.NodeProto, idx: _Index, consts: dict[str, np.ndarray]):
    """(x, output, nodes) when ``erf`` is the heart of x * 0.5 * (1 + erf(x / sqrt2)),
    with the factors in any of the three usual orders."""
    scale = idx.producer.get(erf.input[0])
    x = _scaled_input(scale, consts)
    add = idx.sole_consumer(erf.output[0], "Add")
    if x is None or not _plain(erf) or not _plain(add) or \
            not _is(_other(add, erf.output[0]), consts, 1.0):
        return None
    m1 = idx.sole_consumer(add.output[0], "Mul")
    if not _plain(m1):
        return None
    partner = _other(m1, add.output[0])
    m2 = idx.sole_consumer(m1.output[0], "Mul")
    used = [scale, erf, add, m1]
    if _plain(m2) and (
            (partner == x and _is(_other(m2, m1.output[0]), consts, 0.5))
            or (_is(partner, consts, 0.5) and _other(m2, m1.output[0]) == x)):
        return x, m2.output[0], used + [m2]
    p = idx.producer.get(partner)
    if _plain(p) and p.op_type == "Mul" and x in p.input and _is(_other(p, x), consts, 0.5):
        return x, m1.output[0], used + [p]
    return None


def _mean_axes(node: onnx.NodeProto | None, consts: dict[str, np.ndarray]) -> list[int] | None:
    """The axes of a ReduceMean that keeps its dims, when they are the last k (negative)."""
    if node is None or node.op_type != "ReduceMean":
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if set(attrs) - {"axes", "keepdims", "noop_with_empty_axes"} or \
            int(attrs.get("keepdims", 1)) != 1:
        return None
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1] in consts:
        axes = np.asarray(consts[node.input[1]]).ravel().tolist()
    if not axes:
        return None
    axes = sorted(int(a) for a in axes)
    return axes if axes == list(range(-len(axes), 0)) else None


def _match_layernorm(mean: onnx.NodeProto, idx: _Index, consts: dict[str, np.ndarray]):
    """(x - mean) / sqrt(mean((x - mean)^2) + eps), optionally * gamma + beta, both means
    over the same trailing axes."""
    x, axes = mean.input[0], _mean_axes(mean, consts)
    sub = next((n for n in idx.consumers.get(mean.output[0], []) if n.op_type == "Sub"
                and list(n.input) == [x, mean.output[0]]), None)
    if axes is None or not _plain(sub):
        return None
    d = sub.output[0]
    users = list({id(n): n for n in idx.consumers.get(d, [])}.values())
    sq = next((n for n in users if (n.op_type == "Pow" and n.input[0] == d
                                    and _is(n.input[1], consts, 2.0))
               or (n.op_type == "Mul" and list(n.input) == [d, d])), None)
    div = next((n for n in users if n.op_type == "Div" and n.input[0] == d), None)
    if not _plain(sq) or not _plain(div) or len(users) != 2:
        return None
    var = idx.sole_consumer(sq.output[0], "ReduceMean")
    if var is None or var.input[0] != sq.output[0] or _mean_axes(var, consts) != axes:
        return None
    add = idx.sole_consumer(var.output[0], "Add")
    if not _plain(add):
        return None
    sqrt = idx.sole_consumer(add.output[0], "Sqrt")
    eps = _scalar(_other(add, var.output[0]), consts)
    if not _plain(sqrt) or eps is None or div.input[1] != sqrt.output[0]:
        return None
    used, out, extra = [mean, sub, sq, var, add, sqrt, div], div.output[0], ["", ""]
    mul = idx.sole_consumer(out, "Mul")
    if _plain(mul) and _affine_const(_other(mul, out), consts):
        extra[0], out, used = _other(mul, out), mul.output[0], used + [mul]
        bias = idx.sole_consumer(out, "Add")
        if _plain(bias) and _affine_const(_other(bias, out), consts):
            extra[1], out, used = _other(bias, out), bias.output[0], used + [bias]
    return x, out, used, float(eps.ravel()[0]), extra, -len(axes)


def _affine_const(name: str, consts: dict[str, np.ndarray]) -> bool:
    """A floating constant of rank <= 1: it broadcasts along the last axis only."""
    v = consts.get(name)
    return v is not None and np.asarray(v).ndim <= 1 and np.issubdtype(
        np.asarray(v).dtype, np.floating)


def _closed(used: list[onnx.NodeProto], out: str, idx: _Index, outputs: set[str]) -> bool:
    """Every tensor the pattern's nodes make, but its result, is read only inside it."""
    inside = {id(u) for u in used}
    for u in used:
        for o in u.output:
            if o != out and (o in outputs or any(
                    id(c) not in inside for c in idx.consumers.get(o, []))):
                return False
    return True


def _depending_on(nodes: list[onnx.NodeProto], inputs: set[str]) -> set[str]:
    """The tensors computed from ``inputs`` (nodes in topological order)."""
    seen = set(inputs)
    for n in nodes:
        if seen.intersection(n.input):
            seen.update(n.output)
    return seen


def fuse_patterns(nodes: list[onnx.NodeProto], consts: dict[str, np.ndarray],
                  outputs: set[str] | frozenset[str] = frozenset(),
                  inputs: set[str] | None = None) -> list[onnx.NodeProto]:
    """Replace recognised composites by single nodes, keeping topological order.  A pattern
    fuses only when it matches exactly (constants, axes), none of its intermediate results
    is used outside it or is one of the graph ``outputs``, and (``inputs`` given) its input
    is computed from the graph's variable ``inputs`` (constant parts are folded instead)."""
    for n in nodes:  # the mark is ours: a model's own doc strings never carry it
        if n.doc_string == FUSED:
            n.doc_string = ""
    idx = _Index(nodes)
    variable = None if inputs is None else _depending_on(nodes, inputs)
    replace: dict[int, onnx.NodeProto] = {}
    drop: set[int] = set()
    for n in nodes:
        found = None
        if n.op_type == "Erf":
            m = _match_gelu(n, idx, consts)
            if m:
                x, out, used = m
                found = (helper.make_node("Gelu", [x], [out], name=n.name + "/fused_gelu"), used)
        elif n.op_type == "ReduceMean":
            m2 = _match_layernorm(n, idx, consts)
            if m2:
                x, out, used, eps, (g, b), ax = m2
                ins = [x, g or _ones(consts, n.name), b] if b else [x, g] if g else [x]
                fused = helper.make_node("LayerNormalization", ins, [out], axis=ax,
                                         epsilon=eps, name=n.name + "/fused_layernorm")
                found = (fused, used)
        if found and (variable is None or found[0].input[0] in variable) and \
                _closed(found[1], found[0].output[0], idx, set(outputs)) and \
                not any(id(u) in drop for u in found[1]):
            fused_node, used = found
            fused_node.doc_string = FUSED
            last = max(nodes.index(u) for u in used)
            replace[last] = fused_node
            drop.update(id(u) for u in used)
    out = []
    for i, n in enumerate(nodes):
        if i in replace:
            out.append(replace[i])
        elif id(n) not in drop:
            out.append(n)
    return out


def _ones(consts: dict[str, np.ndarray], tag: str) -> str:
    name = f"{tag}/ones"
    consts[name] = np.ones(1, dtype=np.float32)
    return name
