"""Einsum of two or more operands, with or without an ellipsis (lowered in
verifier/importer/lowering.py to sums, transposes, reshapes and one batched matrix product).

- onnxruntime: attention forms ('bhqd,bhkd->bhqk', 'bqk,bkd->bqd'), plain and transposed
  matrix products, outer products, indices summed in one operand only, implicit outputs,
  a constant operand on either side, opsets 12 and 18: our forward agrees; random
  equations in the importer's fuzzing (``FUZZ``, run by test_import_fuzz.py).
- The engine's IBP, CROWN and alpha-CROWN bounds of an attention block written with
  Einsum contain onnxruntime's outputs on random boxes.
- An ellipsis ('...qd,...kd->...qk', fewer axes in one operand, implicit outputs) as
  onnxruntime reads it. Refused by name: three operands, an index repeated in one operand,
  '...' axes that broadcast (size 1 against n), '...' for different numbers of axes in
  the two operands (onnxruntime rejects the model).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from onnx import helper

from verifier import load_model
from verifier.errors import UnsupportedOpError

from .fuzzgraph import G
from .opcases import assert_net_bounds_contain, net_model, run_ort

F32 = np.float32

# (equation, shape of X, shape of the other operand, whether the other is constant,
# whether X is the left operand)
FORMS = [
    ("bhqd,bhkd->bhqk", (1, 2, 3, 4), (1, 2, 5, 4), False, True),
    ("bqk,bkd->bqd", (2, 3, 4), (2, 4, 5), False, True),
    ("ij,jk->ik", (3, 4), (4, 2), True, True),
    ("ij,jk->ik", (4, 2), (3, 4), True, False),
    ("ij,kj->ik", (3, 4), (5, 4), False, True),
    ("i,j->ij", (3,), (4,), False, True),
    ("bij,bj->bi", (2, 3, 4), (2, 4), True, True),
    ("ijk,kl", (2, 3, 4), (4, 2), True, True),
    ("ij,jk->ki", (3, 4), (4, 5), False, True),
    ("ijk,jl->il", (3, 4, 2), (4, 5), False, True),
    ("ab,cd->ad", (2, 3), (4, 5), True, True),
    # an ellipsis: the same axes in both, fewer in one, none in one, implicit outputs
    ("...qd,...kd->...qk", (1, 2, 3, 4), (1, 2, 5, 4), False, True),
    ("...ij,jk->...ik", (2, 3, 4), (4, 5), True, True),
    ("...ij,...jk", (2, 3, 4), (2, 4, 5), False, True),
    ("b...d,b...d->b...", (2, 3, 4), (2, 3, 4), False, True),
    ("ij...,jk->ik...", (3, 4, 2), (4, 5), True, True),
    ("...,...->...", (2, 3), (2, 3), False, True),
]


def _from_x(g: G, xs: tuple[int, ...], ys: tuple[int, ...], rng: np.random.Generator) -> str:
    """A second variable of shape ys made from X: its entries tiled, cut and scaled."""
    (flat,) = g.node("Reshape", ["X", g.const(np.array([-1], np.int64))])
    n = int(np.prod(ys))
    reps = -(-n // int(np.prod(xs)))
    (tiled,) = g.node("Tile", [flat, g.const(np.array([reps], np.int64))])
    (cut,) = g.node("Slice", [tiled, g.const(np.array([0], np.int64)),
                              g.const(np.array([n], np.int64))])
    (scaled,) = g.node("Mul", [cut, g.const(rng.normal(size=n).astype(F32))])
    return g.node("Reshape", [scaled, g.const(np.array(ys, np.int64))])[0]


def _graph(eq: str, xs: tuple[int, ...], ys: tuple[int, ...], const: bool, x_left: bool,
           opset: int, seed: int = 0) -> bytes:
    g = G(xs, opset)
    rng = np.random.default_rng(seed)
    if const:
        other = g.const(rng.normal(size=ys).astype(F32))
    else:
        other = _from_x(g, xs, ys, rng)
    ins = ["X", other] if x_left else [other, "X"]
    return g.model(g.node("Einsum", ins, equation=eq)[0])


@pytest.mark.parametrize("opset", [12, 18])
def test_agrees_with_onnxruntime(opset: int):
    rng = np.random.default_rng(opset)
    for eq, xs, ys, const, x_left in FORMS:
        a, b = (xs, ys) if x_left else (ys, xs)
        data = _graph(eq, xs, ys, const, x_left, opset)
        points = rng.normal(size=(3, *xs)).astype(F32)
        ours = load_model(data).graph.forward(torch.tensor(points.reshape(3, -1),
                                                           dtype=torch.float64)).numpy()
        np.testing.assert_allclose(ours.reshape(3, -1), run_ort(data, points).reshape(3, -1),
                                   rtol=1e-5, atol=1e-5, err_msg=str((eq, a, b)))


# three or four operands: (equation, shape of X, the others' shapes, which are constant)
MANY = [
    ("bi,ij,bj->b", (2, 3), [(3, 4), (2, 4)], [True, False]),  # a bilinear form
    ("ij,jk,kl->il", (2, 3), [(3, 4), (4, 2)], [True, True]),
    ("ij,jk,kl->il", (2, 3), [(3, 4), (4, 2)], [False, True]),
    ("i,i,i->", (4,), [(4,), (4,)], [False, True]),
    ("abc,cd,da", (2, 3, 4), [(4, 5), (5, 2)], [True, False]),  # implicit output: 'b'
    ("ij,jk,kl,lm->im", (2, 3), [(3, 2), (2, 3), (3, 2)], [True, False, True]),
    ("...i,ij,...j->...", (2, 3), [(3, 3), (2, 3)], [True, False]),
]


@pytest.mark.parametrize("opset", [12, 18])
def test_more_operands_agree_with_onnxruntime(opset: int):
    """X first, the others constant or made from X; X last as well."""
    rng = np.random.default_rng(opset)
    for eq, xs, others, consts in MANY:
        for x_last in (False, True):
            g = G(xs, opset)
            ins = [g.const(rng.normal(size=s).astype(F32)) if c else _from_x(g, xs, s, rng)
                   for s, c in zip(others, consts, strict=True)]
            terms, _, rhs = eq.partition("->")
            parts = terms.split(",")
            if x_last and all(consts[:2]):
                continue  # refused (test_unsupported_forms_are_refused_by_name)
            if x_last:  # the same contraction, X written last
                ins, parts = ins + ["X"], parts[1:] + parts[:1]
            else:
                ins = ["X", *ins]
            data = g.model(g.node("Einsum", ins, equation=",".join(parts) + (
                "->" + rhs if "->" in eq else ""))[0])
            points = rng.normal(size=(3, *xs)).astype(F32)
            ours = load_model(data).graph.forward(torch.tensor(points.reshape(3, -1),
                                                               dtype=torch.float64)).numpy()
            np.testing.assert_allclose(ours.reshape(3, -1), run_ort(data, points).reshape(3, -1),
                                       rtol=1e-5, atol=1e-5, err_msg=str((eq, x_last)))


@pytest.mark.parametrize("eq,ys,message", [
    ("ii,ij->j", (3, 4), "repeats an index"),
    ("...ij,...jk->...ik", (1, 3, 4), "broadcasting in '...'"),  # (3,) against (1,)
    ("....ij,jk->ik", (3, 4), "not a valid term"),
    ("...ij,...jk->...ik", (3, 4), "stands for 1 axes in one operand and 0"),
])
def test_unsupported_forms_are_refused_by_name(eq, ys, message):
    xs = (3, 3, 3) if "..." in eq else (3, 3)
    data = _graph(eq, xs, ys, True, True, 12)
    with pytest.raises(UnsupportedOpError, match=message):
        load_model(data)


def test_two_constant_operands_first_are_refused_by_name():
    """Their product would round outside any node (onnxruntime contracts left to right)."""
    g = G((2, 3), 12)
    rng = np.random.default_rng(0)
    w1, w2 = (g.const(rng.normal(size=s).astype(F32)) for s in ((3, 5), (5, 2)))
    data = g.model(g.node("Einsum", [w1, w2, "X"], equation="jk,kl,ij->il")[0])
    with pytest.raises(UnsupportedOpError, match="first two operands are both constant"):
        load_model(data)


def _net(seed: int) -> bytes:
    """X (1, 4) -> Gemm (12) -> tokens (1, 4, 3) -> q, k, v -> einsum scores -> Softmax ->
    einsum with v -> Flatten -> MatMul (2)."""
    rng = np.random.default_rng(seed)
    inits = {"W0": rng.normal(size=(4, 12)), "b0": rng.normal(size=12) * 0.3,
             "tokens": np.array([1, 4, 3], np.int64), "Wq": rng.normal(size=(3, 3)),
             "Wk": rng.normal(size=(3, 3)), "Wv": rng.normal(size=(3, 3)),
             "W2": rng.normal(size=(12, 2)) / 2}
    nodes = [helper.make_node("Gemm", ["X", "W0", "b0"], ["h"]),
             helper.make_node("Reshape", ["h", "tokens"], ["t"]),
             helper.make_node("Einsum", ["t", "Wq"], ["q"], equation="btd,de->bte"),
             helper.make_node("Einsum", ["t", "Wk"], ["k"], equation="btd,de->bte"),
             helper.make_node("Einsum", ["t", "Wv"], ["v"], equation="btd,de->bte"),
             helper.make_node("Einsum", ["q", "k"], ["s"], equation="bqd,bkd->bqk"),
             helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("Einsum", ["p", "v"], ["o"], equation="bqk,bkd->bqd"),
             helper.make_node("Flatten", ["o"], ["f"]),
             helper.make_node("MatMul", ["f", "W2"], ["Y"])]
    return net_model(nodes, inits, 13)


def test_engine_bounds_contain_the_outputs():
    data = _net(seed=1)
    assert_net_bounds_contain(data, seed=2, widths=(1e-4, 0.01, 0.1, 0.3, 1.0))


def test_engine_bounds_contain_the_outputs_of_four_operands():
    """sum_ij h_i W_ij h_j V_jk: a quadratic form of a hidden vector, in one Einsum."""
    rng = np.random.default_rng(7)
    nodes = [helper.make_node("Gemm", ["X", "W0"], ["h"], transB=1),
             helper.make_node("Einsum", ["h", "W", "h", "V"], ["Y"],
                              equation="bi,ij,bj,jk->bk")]
    inits = {"W0": rng.normal(size=(6, 4)) / 2, "W": rng.normal(size=(6, 6)) / 3,
             "V": rng.normal(size=(6, 2))}
    assert_net_bounds_contain(net_model(nodes, inits, 13), seed=8,
                              widths=(1e-4, 0.01, 0.1, 0.3, 1.0))


def gen_einsum(draw) -> tuple[G, str]:
    """One of the forms above at opset 12 to 21, the other operand constant or not."""
    eq, xs, ys, const, x_left = draw(st.sampled_from(FORMS))
    g = G(xs, draw(st.integers(12, 21)))
    data_const = draw(st.booleans()) or const
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    if data_const:
        other = g.const(rng.normal(size=ys).astype(F32))
    else:
        other = _from_x(g, xs, ys, rng)
    ins = ["X", other] if x_left else [other, "X"]
    return g, g.node("Einsum", ins, equation=eq)[0]


FUZZ = {"Einsum": gen_einsum}
