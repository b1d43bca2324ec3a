"""Composite patterns recognised at import: GeLU written with Erf and LayerNorm written with
ReduceMean / Sub / Pow / Sqrt / Div.  Fusing them gives one op whose bounds are much tighter
than those of its pieces (x * Phi(x) is not a product of two unrelated variables).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import onnx
from onnx import helper


def _scalar(name: str, consts: dict[str, np.ndarray]) -> float | None:
    v = consts.get(name)
    if v is None or np.asarray(v).size != 1:
        return None
    return float(np.asarray(v).ravel()[0])


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


def _match_gelu(erf: onnx.NodeProto, idx: _Index, consts: dict[str, np.ndarray]):
    """Return (x, output, nodes) when ``erf`` is the heart of x * 0.5 * (1 + erf(x / sqrt2))."""
    scale = idx.producer.get(erf.input[0])
    if scale is None or scale.op_type not in ("Div", "Mul"):
        return None
    x = scale.input[0]
    c = _scalar(scale.input[1], consts)
    if c is None:
        return None
    factor = 1 / c if scale.op_type == "Div" else c
    if not math.isclose(factor, 1 / math.sqrt(2), rel_tol=1e-4):
        return None
    add = idx.sole_consumer(erf.output[0], "Add")
    if add is None or not math.isclose(_scalar(_other(add, erf.output[0]), consts) or 0, 1.0):
        return None
    m1 = idx.sole_consumer(add.output[0], "Mul")
    if m1 is None:
        return None
    partner = _other(m1, add.output[0])
    half = _scalar(partner, consts)
    m2 = idx.sole_consumer(m1.output[0], "Mul")
    used = [scale, erf, add, m1]
    if partner == x and m2 is not None and math.isclose(
            _scalar(_other(m2, m1.output[0]), consts) or 0, 0.5):
        return x, m2.output[0], used + [m2]
    if half is not None and math.isclose(half, 0.5) and m2 is not None and \
            _other(m2, m1.output[0]) == x:
        return x, m2.output[0], used + [m2]
    p = idx.producer.get(partner)
    if p is not None and p.op_type == "Mul" and x in p.input and math.isclose(
            _scalar(_other(p, x), consts) or 0, 0.5) and len(idx.consumers[partner]) == 1:
        return x, m1.output[0], used + [p]
    return None


def _match_layernorm(mean: onnx.NodeProto, idx: _Index, consts: dict[str, np.ndarray]):
    """(x - mean) / sqrt(mean((x - mean)^2) + eps), optionally * gamma + beta."""
    x = mean.input[0]
    sub = next((n for n in idx.consumers.get(mean.output[0], []) if n.op_type == "Sub"
                and n.input[0] == x), None)
    if sub is None:
        return None
    d = sub.output[0]
    users = idx.consumers.get(d, [])
    sq = next((n for n in users if (n.op_type == "Pow" and _scalar(n.input[1], consts) == 2.0)
               or (n.op_type == "Mul" and n.input[0] == d and n.input[1] == d)), None)
    div = next((n for n in users if n.op_type == "Div" and n.input[0] == d), None)
    if sq is None or div is None or len(users) != 2:
        return None
    var = idx.sole_consumer(sq.output[0], "ReduceMean")
    add = var and idx.sole_consumer(var.output[0], "Add")
    sqrt = add and idx.sole_consumer(add.output[0], "Sqrt")
    eps = add and _scalar(_other(add, var.output[0]), consts)
    if sqrt is None or eps is None or div.input[1] != sqrt.output[0]:
        return None
    axes = [n for n in (mean, var) if "axes" in [a.name for a in n.attribute]]
    if len(axes) != 2 or list(helper.get_attribute_value(mean.attribute[0])) != [-1]:
        return None
    used, out, extra = [mean, sub, sq, var, add, sqrt, div], div.output[0], ["", ""]
    mul = idx.sole_consumer(out, "Mul")
    if mul is not None and _other(mul, out) in consts:
        extra[0], out, used = _other(mul, out), mul.output[0], used + [mul]
        bias = idx.sole_consumer(out, "Add")
        if bias is not None and _other(bias, out) in consts:
            extra[1], out, used = _other(bias, out), bias.output[0], used + [bias]
    return x, out, used, eps, extra


def fuse_patterns(nodes: list[onnx.NodeProto], consts: dict[str, np.ndarray]
                  ) -> list[onnx.NodeProto]:
    """Replace recognised composites by single nodes, keeping topological order."""
    idx = _Index(nodes)
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
                x, out, used, eps, (g, b) = m2
                ins = [x, g or _ones(consts, n.name), b] if b else [x, g] if g else [x]
                fused = helper.make_node("LayerNormalization", ins, [out], axis=-1,
                                         epsilon=eps, name=n.name + "/fused_layernorm")
                found = (fused, used)
        if found and not any(id(u) in drop for u in found[1]):
            fused_node, used = found
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
