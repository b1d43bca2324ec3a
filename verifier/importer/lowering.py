"""Lowering of composite ONNX ops into primitive nodes that every bound method handles
(DESIGN.md: Graph).  The importer calls these; the ops they use live in ``ops/``.

* Softmax:  softmax_i = 1 / sum_j exp(x_j - x_i)  (PairDiff -> Exp -> ReduceSum ->
  Reciprocal).  With the differences formed exactly (D_ii = 0), interval and linear bounds
  of this form are much tighter than those of exp(x) / sum(exp(x)).
* LogSoftmax:  x - lse(x), lse(x) = m + log(sum_j exp(x_j - m)) with m the mean along the
  axis: one lse per group, so a difference of two outputs is the difference of the two
  inputs exactly (its coefficient on lse cancels in the backward pass).
* LayerNormalization:  c = x - mean(x);  y = c * (mean(c^2) + eps)^(-1/2) * gamma + beta;
  InstanceNormalization the same over the spatial axes, gamma and beta per channel.
* x / y for two variables:  x * Reciprocal(y).
* HardSigmoid:  Clip(alpha x + beta, 0, 1).
* DepthToSpace, SpaceToDepth:  Reshape to six axes, Transpose, Reshape.
* ReduceSumSquare, ReduceL1, ReduceL2:  ReduceSum of x^2 or |x| (then Sqrt for L2).
* Einsum:  sums, transposes and reshapes around one batched MatMul per pair of operands.
* GlobalMaxPool:  ReduceMax over the spatial axes.
* Greater, Less, GreaterOrEqual, LessOrEqual with a variable input:  Heaviside(a - b) (or
  of b - a), strict for Greater and Less: the sign of a float difference is the sign of
  the exact one (zero only for equal operands), so the step reads the comparison exactly;
  Equal: the product of the two or-equal steps (a >= b and b >= a; 0 where a or b is
  NaN, as onnxruntime's); Not: 1 - x; And, Or, Xor of a variable: a b, a + b - a b,
  a + b - 2 a b; Cast of a variable to BOOL: 1 - Equal(x, 0).
* Where with a variable condition:  y + c (x - y), c in {0, 1}: a product of the condition
  with the difference of the two branches (exact where the condition is decided); with
  two constant branches c x + (1 - c) y, exact for c in {0, 1} (x - y would round).
* x * x (one variable times itself):  Pow(x, 2), convex and >= 0, where a product of two
  variables would be bounded as if its factors varied apart (an interval around 0 giving
  a negative lower bound).
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from verifier.graph import Node
from verifier.ops.base import F32_1E_5, REGISTRY, Const, Input, Op, OpFormError, Var
from verifier.ops.bilinear import VarMatMul, VarMul
from verifier.ops.composite import Centre, PairDiff, Rsqrt, ScaleShift
from verifier.ops.linear import Add, MatMul, MulConst, Sub
from verifier.ops.nonlinear import (
    Abs,
    Clip,
    Exp,
    Log,
    PowConst,
    Reciprocal,
    ReduceMaxMin,
    Sqrt,
    Square,
)
from verifier.ops.shape import Reduce, Reshape, Transpose
from verifier.ops.step import Heaviside


def _node(name: str, op: Op, inputs: list[str], onnx_name: str, op_type: str) -> Node:
    return Node(name, op_type, op, inputs, op.out_shape, onnx_name)


def lower_softmax(out: str, x: Var, attrs: dict[str, Any], onnx_name: str) -> list[Node]:
    """Softmax over ONNX ``axis``; with ``_flatten`` (opset < 13) over the whole trailing
    block from ``axis`` on, as ONNX then defines it (the input seen as 2-d at ``axis``)."""
    return _over_axis(out, x, attrs, onnx_name, "Softmax", _softmax_nodes)


def lower_logsoftmax(out: str, x: Var, attrs: dict[str, Any], onnx_name: str) -> list[Node]:
    """LogSoftmax over ONNX ``axis``, flattened below opset 13 as Softmax."""
    return _over_axis(out, x, attrs, onnx_name, "LogSoftmax", _logsoftmax_nodes)


def _over_axis(out: str, x: Var, attrs: dict[str, Any], onnx_name: str, op_type: str,
               body: Callable[[str, Var, int, str], list[Node]]) -> list[Node]:
    """``body``'s nodes over the one axis ``axis``, or with ``_flatten`` over the input
    reshaped to 2-d at ``axis`` and back."""
    rank = len(x.shape)
    ax = int(attrs.get("axis", -1)) % rank
    if not attrs.get("_flatten") or ax == rank - 1:
        return body(out, x, ax, onnx_name)
    flat_shape = x.shape[:ax] + (math.prod(x.shape[ax:]),)
    flat, inner = out + "/flat", out + "/flat_" + op_type.lower()
    reshape = {"_op_type": "Reshape"}
    nodes = [_node(flat, Reshape(reshape, [x], flat_shape), [x.name], onnx_name, op_type)]
    nodes += body(inner, Var(flat, flat_shape), ax, onnx_name)
    back = Reshape(reshape, [Var(inner, flat_shape)], x.shape)
    return nodes + [_node(out, back, [inner], onnx_name, op_type)]


def _softmax_nodes(out: str, x: Var, ax: int, onnx_name: str) -> list[Node]:
    """Softmax over the one axis ``ax`` (non-negative) of ``x``."""
    n = x.shape[ax]
    pair_shape = x.shape[: ax + 1] + (n,) + x.shape[ax + 1:]
    base = {"_op_type": "Softmax"}
    pd = PairDiff(dict(base, axis=ax), [x], pair_shape)
    ex = Exp(base, [Var(out + "/diff", pair_shape)], pair_shape)
    sm = Reduce({"_op_type": "ReduceSum", "axes": [ax + 1], "keepdims": 0},
                [Var(out + "/exp", pair_shape)], x.shape)
    rc = Reciprocal(base, [Var(out + "/sum", x.shape)], x.shape)
    return [
        _node(out + "/diff", pd, [x.name], onnx_name, "Softmax"),
        _node(out + "/exp", ex, [out + "/diff"], onnx_name, "Softmax"),
        _node(out + "/sum", sm, [out + "/exp"], onnx_name, "Softmax"),
        _node(out, rc, [out + "/sum"], onnx_name, "Softmax"),
    ]


def _logsoftmax_nodes(out: str, x: Var, ax: int, onnx_name: str) -> list[Node]:
    group = x.shape[:ax] + (1,) + x.shape[ax + 1:]
    names = {k: f"{out}/{k}" for k in ("mean", "centred", "exp", "sum", "log", "lse")}
    mean = Reduce({"_op_type": "ReduceMean", "axes": [ax], "keepdims": 1}, [x], group)
    centred = Sub({"_op_type": "Sub"}, [x, Var(names["mean"], group)], x.shape)
    ex = Exp({"_op_type": "Exp"}, [Var(names["centred"], x.shape)], x.shape)
    total = Reduce({"_op_type": "ReduceSum", "axes": [ax], "keepdims": 1},
                   [Var(names["exp"], x.shape)], group)
    log = Log({"_op_type": "Log"}, [Var(names["sum"], group)], group)
    lse = Add({"_op_type": "Add"}, [Var(names["log"], group), Var(names["mean"], group)], group)
    y = Sub({"_op_type": "Sub"}, [x, Var(names["lse"], group)], x.shape)
    steps = [("mean", mean, [x.name]), ("centred", centred, [x.name, names["mean"]]),
             ("exp", ex, [names["centred"]]), ("sum", total, [names["exp"]]),
             ("log", log, [names["sum"]]), ("lse", lse, [names["log"], names["mean"]])]
    return [_node(names[k], op, ins, onnx_name, "LogSoftmax") for k, op, ins in steps] + \
        [_node(out, y, [x.name, names["lse"]], onnx_name, "LogSoftmax")]


def lower_instancenorm(out: str, inputs: list[Input], attrs: dict[str, Any],
                       onnx_name: str) -> list[Node]:
    """InstanceNormalization is LayerNormalization over the spatial axes (from 2 on) with
    one scale and bias per channel, shaped (C, 1, ..., 1) to broadcast."""
    x = inputs[0]
    if not isinstance(x, Var) or len(inputs) != 3 or \
            any(not isinstance(i, Const) for i in inputs[1:]):
        raise OpFormError("only the data input may vary; scale and B must be constant")
    if len(x.shape) < 3:
        raise OpFormError(f"an input of shape {list(x.shape)}: (N, C, D1, ...) expected")
    channels, ones = x.shape[1], (1,) * (len(x.shape) - 2)
    consts: list[Input] = [x]
    for name, c in zip(("scale", "B"), inputs[1:], strict=True):
        assert isinstance(c, Const)
        if c.value.size != channels:
            raise OpFormError(f"{name} has {c.value.size} values for {channels} channels")
        consts.append(Const(np.asarray(c.value).reshape(channels, *ones)))
    attrs = {"axis": 2, "epsilon": float(attrs.get("epsilon", F32_1E_5))}
    return lower_layernorm(out, consts, attrs, onnx_name, "InstanceNormalization")


def lower_layernorm(out: str, inputs: list[Input], attrs: dict[str, Any],
                    onnx_name: str, op_type: str = "LayerNormalization") -> list[Node]:
    x = inputs[0]
    if not isinstance(x, Var) or any(isinstance(i, Var) for i in inputs[1:]):
        raise OpFormError("only the data input may vary; scale and bias must be constant")
    rank = len(x.shape)
    ax = int(attrs.get("axis", -1)) % rank
    stat_shape = x.shape[:ax] + (1,) * (rank - ax)
    base = {"_op_type": "LayerNormalization", "axis": ax,
            "epsilon": float(attrs.get("epsilon", F32_1E_5))}
    c, sq, var, rs, prod = (out + s for s in ("/centre", "/square", "/var", "/rsqrt", "/norm"))
    nodes = [
        _node(c, Centre(base, [x], x.shape), [x.name], onnx_name, op_type),
        _node(sq, PowConst(base, [Var(c, x.shape), Const(np.array(2.0))], x.shape), [c],
              onnx_name, op_type),
        _node(var, Reduce({"_op_type": "ReduceMean", "axes": list(range(ax, rank)),
                           "keepdims": 1}, [Var(sq, x.shape)], stat_shape), [sq],
              onnx_name, op_type),
        _node(rs, Rsqrt(base, [Var(var, stat_shape)], stat_shape), [var], onnx_name,
              op_type),
        _node(prod, VarMul({"_op_type": "Mul"}, [Var(c, x.shape), Var(rs, stat_shape)],
                           x.shape), [c, rs], onnx_name, op_type),
    ]
    gamma = inputs[1] if len(inputs) > 1 else Const(np.zeros(0))
    beta = inputs[2] if len(inputs) > 2 else Const(np.zeros(0))
    consts = [Var(prod, x.shape)] + [g for g in (gamma, beta)]
    ss = ScaleShift(base, consts, x.shape)  # type: ignore[arg-type]
    for idx, inp in ((1, gamma), (2, beta)):
        if isinstance(inp, Const) and inp.value.size == 0:
            ss._consts.pop(idx, None)
    nodes.append(_node(out, ss, [prod], onnx_name, op_type))
    return nodes


def lower_depth_space(out: str, x: Var, attrs: dict[str, Any], onnx_name: str,
                      op_type: str) -> list[Node]:
    """DepthToSpace (DCR or CRD mode) and SpaceToDepth of an (N, C, H, W) input: a Reshape
    to six axes, a Transpose and a Reshape back, the moves the ONNX spec defines them by."""
    if len(x.shape) != 4:
        raise OpFormError(f"an input of shape {list(x.shape)}: (N, C, H, W) expected")
    b = int(attrs["blocksize"])
    n, c, h, w = x.shape
    if b < 1:
        raise OpFormError(f"attribute 'blocksize'={b} must be positive")
    if op_type == "DepthToSpace":
        if c % (b * b):
            raise OpFormError(f"{c} channels are not a multiple of blocksize^2 = {b * b}")
        mode = attrs.get("mode", "DCR")
        if mode not in ("DCR", "CRD"):
            raise OpFormError(f"attribute 'mode'={mode!r} is not an ONNX value")
        if mode == "DCR":
            six, perm = (n, b, b, c // (b * b), h, w), [0, 3, 4, 1, 5, 2]
        else:
            six, perm = (n, c // (b * b), b, b, h, w), [0, 1, 4, 2, 5, 3]
        final = (n, c // (b * b), h * b, w * b)
    else:
        if h % b or w % b:
            raise OpFormError(f"spatial size {h}x{w} is not a multiple of blocksize {b}")
        six, perm = (n, c, h // b, b, w // b, b), [0, 3, 5, 1, 2, 4]
        final = (n, c * b * b, h // b, w // b)
    moved = tuple(six[p] for p in perm)
    first, second = out + "/blocks", out + "/moved"
    reshape = {"_op_type": "Reshape"}
    return [
        _node(first, Reshape(reshape, [x], six), [x.name], onnx_name, op_type),
        _node(second, Transpose({"_op_type": "Transpose", "perm": perm},
                                [Var(first, six)], moved), [first], onnx_name, op_type),
        _node(out, Reshape(reshape, [Var(second, moved)], final), [second], onnx_name,
              op_type),
    ]


def lower_norm_reduce(out: str, inputs: list[Input], attrs: dict[str, Any],
                      onnx_name: str, op_type: str) -> list[Node]:
    """ReduceSumSquare, ReduceL1 and ReduceL2 as ReduceSum of x^2 (or |x|), then Sqrt for
    L2: the same axes (attribute, or input from opset 18), keepdims and
    noop_with_empty_axes, which ReduceSum reads alike."""
    x = inputs[0]
    if not isinstance(x, Var) or any(isinstance(i, Var) for i in inputs[1:]):
        raise OpFormError("only the data input may vary; the axes must be constant")
    terms = out + "/terms"
    base = {"_op_type": op_type}
    if op_type == "ReduceL1":
        elementwise: Op = Abs(base, [x], x.shape)
    else:
        elementwise = PowConst(base, [x, Const(np.array(2.0))], x.shape)
    nodes = [_node(terms, elementwise, [x.name], onnx_name, op_type)]
    sum_attrs = {k: v for k, v in attrs.items() if k in ("axes", "keepdims",
                                                         "noop_with_empty_axes")}
    sum_attrs["_op_type"] = "ReduceSum"
    sum_inputs: list[Input] = [Var(terms, x.shape), *inputs[1:]]
    total = Reduce(sum_attrs, sum_inputs, x.shape)
    probe = total.forward(torch.zeros(1, *x.shape, dtype=torch.float64))
    total.out_shape = shape = tuple(probe.shape[1:])
    if op_type != "ReduceL2":
        return nodes + [_node(out, total, [terms], onnx_name, op_type)]
    summed = out + "/sum"
    return nodes + [_node(summed, total, [terms], onnx_name, op_type),
                    _node(out, Sqrt(base, [Var(summed, shape)], shape), [summed], onnx_name,
                          op_type)]


def _expand_ellipsis(eq: str, terms: list[str], rhs: str | None,
                     shapes: list[tuple[int, ...]]) -> tuple[list[str], str]:
    """Einsum's '...' written out as letters the equation does not use, for the axes it
    stands for (as many in every operand that has it); they lead an implicit output.  Axes
    whose sizes differ between the operands (a broadcast of size 1) are refused by name."""
    free = [c for c in string.ascii_letters if c not in eq]
    counts = []
    for term, shape in zip(terms, shapes, strict=True):
        if term.count("...") > 1 or term.replace("...", "").count("."):
            raise OpFormError(f"equation {eq!r}: operand '{term}' is not a valid term")
        counts.append(len(shape) - (len(term) - 3) if "..." in term else 0)
        if counts[-1] < 0:
            raise OpFormError(f"equation {eq!r}: operand '{term}' does not match its shape "
                              f"{list(shape)}")
    with_dots = [k for term, k in zip(terms, counts, strict=True) if "..." in term]
    if len(set(with_dots)) > 1:  # onnxruntime's shape inference rejects the model
        raise OpFormError(f"equation {eq!r}: '...' stands for {with_dots[0]} axes in one "
                          f"operand and {with_dots[1]} in the other")
    rank = max(counts)
    letters = "".join(free[:rank])
    sizes: dict[str, int] = {}
    out_terms = []
    for term, shape, k in zip(terms, shapes, counts, strict=True):
        mine = letters[rank - k:]
        start = term.find("...")
        for c, n in zip(mine, shape[start:start + k] if start >= 0 else (), strict=True):
            if sizes.setdefault(c, n) != n:
                raise OpFormError(f"equation {eq!r}: the axes '...' stands for have sizes "
                                  f"{sizes[c]} and {n} (broadcasting in '...' is not "
                                  "supported)")
        out_terms.append(term.replace("...", mine))
    if rhs is None:  # implicit: the ellipsis axes, then the indices seen once, sorted
        plain = "".join(t.replace("...", "") for t in terms)
        rhs = letters + "".join(sorted(c for c in set(plain) if plain.count(c) == 1))
    else:
        if rhs.count("...") > 1 or rhs.replace("...", "").count("."):
            raise OpFormError(f"equation {eq!r}: the output '{rhs}' is not a valid term")
        rhs = rhs.replace("...", letters)
    return out_terms, rhs


def lower_einsum(out: str, inputs: list[Input], attrs: dict[str, Any],
                 onnx_name: str) -> list[Node]:
    """Einsum, each index at most once per operand, '...' written out; more than two
    operands are contracted pairwise from the left.  Of two (the attention forms
    'bhqd,bhkd->bhqk', 'bqk,bkd->bqd', 'ij,jk->ik', ...): indices summed
    in one operand only are reduced first; the rest is a batched matrix product, with
    each operand transposed to (batch, free, contracted) order and reshaped to three
    axes, then the product reshaped and transposed to the output's order.  A constant
    operand is rearranged at import."""
    eq = str(attrs["equation"]).replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(inputs) or len(terms) < 2:
        raise OpFormError(f"equation {eq!r}: {len(terms)} operand(s) for {len(inputs)} "
                          "input(s); two or more expected")
    shapes = [i.shape if isinstance(i, Var) else tuple(i.value.shape) for i in inputs]
    if "." in eq:
        terms, rhs = _expand_ellipsis(eq, terms, rhs if arrow else None, shapes)
        arrow = "->"
    if not arrow:  # implicit output: the indices seen once, in alphabetical order
        rhs = "".join(sorted(c for c in set(lhs) - {","} if lhs.count(c) == 1))
    for term, shape in zip(terms, shapes, strict=True):
        if len(set(term)) != len(term) or len(term) != len(shape):
            raise OpFormError(f"equation {eq!r}: operand '{term}' repeats an index or does "
                              f"not match its shape {list(shape)}")
    size: dict[str, int] = {}
    for term, shape in zip(terms, shapes, strict=True):
        for c, n in zip(term, shape, strict=True):
            if size.setdefault(c, n) != n:
                raise OpFormError(f"equation {eq!r}: index '{c}' has sizes {size[c]} and {n}")
    if len(set(rhs)) != len(rhs) or any(c not in size for c in rhs):
        raise OpFormError(f"equation {eq!r}: the output indices are not those of the operands")
    if len(terms) == 2:
        return _einsum_pair(out, inputs, terms, rhs, size, onnx_name)
    # more operands: contract them pairwise from the left, as onnxruntime's kernel does (so
    # each pair's rounding is the one charged), keeping the indices that a later operand or
    # the output still reads (a sum over the others distributes over the rest)
    if isinstance(inputs[0], Const) and isinstance(inputs[1], Const):
        raise OpFormError(f"equation {eq!r}: the first two operands are both constant (their "
                          "product would round outside any node); write an input-dependent "
                          "operand among the first two")
    nodes: list[Node] = []
    current, term = inputs[0], terms[0]
    for k in range(1, len(terms)):
        later = "".join(terms[k + 1:]) + rhs
        keep = rhs if k == len(terms) - 1 else \
            "".join(dict.fromkeys(c for c in term + terms[k] if c in later))
        name = out if k == len(terms) - 1 else f"{out}/pair{k}"
        nodes += _einsum_pair(name, [current, inputs[k]], [term, terms[k]], keep, size,
                              onnx_name)
        current, term = Var(name, tuple(size[c] for c in keep)), keep
    return nodes


def _einsum_pair(out: str, inputs: list[Input], terms: list[str], rhs: str,
                 size: dict[str, int], onnx_name: str) -> list[Node]:
    """Einsum of two operands (indices checked): the rest of ``lower_einsum``."""
    a, b = terms
    batch = [c for c in rhs if c in a and c in b]
    left = [c for c in rhs if c in a and c not in b]
    right = [c for c in rhs if c in b and c not in a]
    inner = [c for c in a if c in b and c not in rhs]
    nodes: list[Node] = []
    ops: list[Input] = []
    for k, (term, order) in enumerate(((a, batch + left + inner), (b, batch + inner + right))):
        x = inputs[k]
        lone = [term.index(c) for c in term if c not in order]  # summed here alone
        kept = [c for c in term if c in order]
        perm = [kept.index(c) for c in order]
        rows = math.prod(size[c] for c in (left if k == 0 else inner))
        cols = math.prod(size[c] for c in (inner if k == 0 else right))
        three = (math.prod(size[c] for c in batch), rows, cols)
        if isinstance(x, Const):
            v = np.asarray(x.value)
            v = v.sum(axis=tuple(lone)) if lone else v
            ops.append(Const(np.transpose(v, perm).reshape(three)))
            continue
        assert isinstance(x, Var)
        name, shape = x.name, x.shape
        if lone:
            shape = tuple(n for i, n in enumerate(shape) if i not in lone)
            red = Reduce({"_op_type": "ReduceSum", "keepdims": 0},
                         [Var(name, x.shape), Const(np.array(lone, np.int64))], shape)
            nodes.append(_node(f"{out}/sum{k}", red, [name], onnx_name, "Einsum"))
            name = f"{out}/sum{k}"
        moved = tuple(shape[p] for p in perm)
        nodes.append(_node(f"{out}/move{k}", Transpose({"_op_type": "Transpose", "perm": perm},
                                                       [Var(name, shape)], moved),
                           [name], onnx_name, "Einsum"))
        nodes.append(_node(f"{out}/flat{k}", Reshape({"_op_type": "Reshape"},
                                                     [Var(f"{out}/move{k}", moved)], three),
                           [f"{out}/move{k}"], onnx_name, "Einsum"))
        ops.append(Var(f"{out}/flat{k}", three))
    dims = [o.shape if isinstance(o, Var) else o.value.shape for o in ops]
    product = (dims[0][0], dims[0][1], dims[1][2])
    mm_attrs = {"_op_type": "MatMul"}
    if all(isinstance(o, Var) for o in ops):
        mm: Op = VarMatMul(mm_attrs, ops, product)  # type: ignore[arg-type]
    else:
        mm = MatMul(mm_attrs, ops, product)
    var_names = [o.name for o in ops if isinstance(o, Var)]
    nodes.append(_node(f"{out}/product", mm, var_names, onnx_name, "Einsum"))
    grouped = tuple(size[c] for c in batch + left + right)
    nodes.append(_node(f"{out}/split", Reshape({"_op_type": "Reshape"},
                                               [Var(f"{out}/product", product)], grouped),
                       [f"{out}/product"], onnx_name, "Einsum"))
    order = batch + left + right
    perm = [order.index(c) for c in rhs]
    final = tuple(size[c] for c in rhs)
    nodes.append(_node(out, Transpose({"_op_type": "Transpose", "perm": perm},
                                      [Var(f"{out}/split", grouped)], final),
                       [f"{out}/split"], onnx_name, "Einsum"))
    return nodes


def lower_global_max_pool(out: str, x: Var, onnx_name: str) -> list[Node]:
    """GlobalMaxPool: ReduceMax over the spatial axes (from 2 on), kept as size 1."""
    if len(x.shape) < 3:
        raise OpFormError(f"an input of shape {list(x.shape)}: (N, C, D1, ...) expected")
    shape = x.shape[:2] + (1,) * (len(x.shape) - 2)
    op = ReduceMaxMin({"_op_type": "ReduceMax", "axes": list(range(2, len(x.shape))),
                       "keepdims": 1}, [x], shape)
    return [_node(out, op, [x.name], onnx_name, "GlobalMaxPool")]


def lower_div(out: str, x: Var, y: Var, out_shape: tuple[int, ...], onnx_name: str) -> list[Node]:
    rec = Reciprocal({"_op_type": "Reciprocal"}, [y], y.shape)
    mul = VarMul({"_op_type": "Mul"}, [x, Var(out + "/reciprocal", y.shape)], out_shape)
    return [
        _node(out + "/reciprocal", rec, [y.name], onnx_name, "Div"),
        _node(out, mul, [x.name, out + "/reciprocal"], onnx_name, "Div"),
    ]


def lower_square(out: str, x: Var, onnx_name: str) -> list[Node]:
    """``Mul(x, x)``: onnxruntime rounds the product once, within Pow's rounding bound."""
    sq = Square({"_op_type": "Mul"}, [x, Const(np.array(2.0))], x.shape)
    return [_node(out, sq, [x.name], onnx_name, "Mul")]


def lower_hardsigmoid(out: str, x: Var, attrs: dict[str, Any], onnx_name: str) -> list[Node]:
    """``max(0, min(1, alpha x + beta))``: the product and the sum round as onnxruntime's
    (or its fused multiply-add, within the two roundings), the clip is exact."""
    alpha = np.float32(attrs.get("alpha", np.float32(0.2)))
    beta = np.float32(attrs.get("beta", np.float32(0.5)))
    scaled, shifted = out + "/scaled", out + "/shifted"
    mul = MulConst({"_op_type": "Mul"}, [x, Const(np.array(alpha))], x.shape)
    add = Add({"_op_type": "Add"}, [Var(scaled, x.shape), Const(np.array(beta))], x.shape)
    clip = Clip({"_op_type": "Clip"}, [Var(shifted, x.shape), Const(np.array(0.0, np.float32)),
                                       Const(np.array(1.0, np.float32))], x.shape)
    return [
        _node(scaled, mul, [x.name], onnx_name, "HardSigmoid"),
        _node(shifted, add, [scaled], onnx_name, "HardSigmoid"),
        _node(out, clip, [shifted], onnx_name, "HardSigmoid"),
    ]


COMPARISONS = {"Greater": (False, True), "Less": (True, True),  # (operands swapped, strict)
               "GreaterOrEqual": (False, False), "LessOrEqual": (True, False)}


def _shape_of(i: Input) -> tuple[int, ...]:
    return i.shape if isinstance(i, Var) else tuple(np.asarray(i.value).shape)


def _arith(op_type: str, name: str, inputs: list[Input], onnx_name: str,
           origin: str) -> tuple[Node, Var]:
    """One Add, Sub or Mul node of these inputs (the class the registry selects for which of
    them vary) and the variable it makes."""
    out_shape = tuple(np.broadcast_shapes(*[_shape_of(i) for i in inputs]))
    attrs = {"_op_type": op_type}
    cls = REGISTRY[op_type].select(attrs, inputs)
    cls.check(attrs, inputs)
    op = cls(attrs, inputs, out_shape)
    names = [i.name for i in inputs if isinstance(i, Var)]
    return _node(name, op, names, onnx_name, origin), Var(name, out_shape)


def _finite_constants(inputs: list[Input], what: str) -> None:
    for i in inputs:
        if isinstance(i, Const) and not np.isfinite(np.asarray(i.value, np.float64)).all():
            raise OpFormError(f"{what} with a variable input and a non-finite constant is not "
                              "supported")


def lower_compare(out: str, inputs: list[Input], op_type: str, onnx_name: str) -> list[Node]:
    """A comparison with a variable input: a Heaviside step of the difference (module
    docstring); Not: 1 - x."""
    if op_type == "Not":
        sub, _ = _arith("Sub", out, [Const(np.array(1.0, np.float32)), inputs[0]], onnx_name,
                        op_type)
        return [sub]
    if op_type in ("And", "Or", "Xor"):
        return _logic(out, inputs, op_type, onnx_name)
    _finite_constants(inputs, op_type)  # inf - inf would be NaN where the operands are equal
    if op_type == "Equal":  # a >= b and b >= a: a product of the two steps (0 at NaN)
        ge = lower_compare(out + "/at_least", inputs, "GreaterOrEqual", onnx_name)
        le = lower_compare(out + "/at_most", inputs, "LessOrEqual", onnx_name)
        both, _ = _arith("Mul", out, [Var(ge[-1].name, ge[-1].shape),
                                      Var(le[-1].name, le[-1].shape)], onnx_name, op_type)
        return [*ge, *le, both]
    swapped, strict = COMPARISONS[op_type]
    a, b = (inputs[1], inputs[0]) if swapped else (inputs[0], inputs[1])
    sub, diff = _arith("Sub", out + "/difference", [a, b], onnx_name, op_type)
    step = Heaviside({"_op_type": "Heaviside", "strict": strict}, [diff], diff.shape)
    return [sub, _node(out, step, [diff.name], onnx_name, op_type)]


def lower_cast_bool(out: str, x: Var, onnx_name: str) -> list[Node]:
    """Cast of a variable to BOOL: x != 0, that is 1 - Equal(x, 0) (1 at NaN, as
    onnxruntime's; the identity on the 0/1 of a comparison)."""
    zero = lower_compare(out + "/is_zero", [x, Const(np.array(0.0, np.float32))], "Equal",
                         onnx_name)
    sub, _ = _arith("Sub", out, [Const(np.array(1.0, np.float32)),
                                 Var(zero[-1].name, zero[-1].shape)], onnx_name, "Cast")
    return [*zero, sub]


def _logic(out: str, inputs: list[Input], op_type: str, onnx_name: str) -> list[Node]:
    """And, Or, Xor of 0/1 values a, b (one at least variable): a b, a + b - a b and
    a + b - 2 a b, each exact on {0, 1}."""
    a, b = (Const(np.asarray(i.value, np.float32)) if isinstance(i, Const) else i
            for i in inputs)
    if op_type == "And":
        return [_arith("Mul", out, [a, b], onnx_name, op_type)[0]]
    both, ab = _arith("Mul", out + "/both", [a, b], onnx_name, op_type)
    total, s = _arith("Add", out + "/sum", [a, b], onnx_name, op_type)
    if op_type == "Xor":
        twice, ab = _arith("Mul", out + "/twice", [ab, Const(np.array(2.0, np.float32))],
                           onnx_name, op_type)
        return [both, total, twice, _arith("Sub", out, [s, ab], onnx_name, op_type)[0]]
    return [both, total, _arith("Sub", out, [s, ab], onnx_name, op_type)[0]]


def lower_where(out: str, inputs: list[Input], onnx_name: str) -> list[Node]:
    """Where with a variable condition c: y + c (x - y) (module docstring); constant
    branches must be finite (c times an infinite difference would be NaN where c is 0)."""
    cond, x, y = inputs
    assert isinstance(cond, Var)
    _finite_constants([x, y], "Where")
    if isinstance(x, Const) and isinstance(y, Const):  # c x + (1 - c) y: x - y would round
        on, picked_x = _arith("Mul", out + "/picked", [cond, x], onnx_name, "Where")
        off, other = _arith("Sub", out + "/other", [Const(np.array(1.0, np.float32)), cond],
                            onnx_name, "Where")
        mul, picked_y = _arith("Mul", out + "/picked_other", [other, y], onnx_name, "Where")
        add, _ = _arith("Add", out, [picked_x, picked_y], onnx_name, "Where")
        return [on, off, mul, add]
    sub, gap = _arith("Sub", out + "/gap", [x, y], onnx_name, "Where")
    mul, picked = _arith("Mul", out + "/picked", [cond, gap], onnx_name, "Where")
    add, _ = _arith("Add", out, [picked, y], onnx_name, "Where")
    return [sub, mul, add]
