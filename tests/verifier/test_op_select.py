"""ScatterND and Where (verifier/ops/select.py) against independent references.

- onnxruntime: generated models (hypothesis; ``FUZZ`` also runs them in test_import_fuzz.py)
  and a grid of ScatterND at every opset (11, 13, 16, 18), data and/or updates variable,
  index depths 0 to the rank, negative indices, reduction none and add; Where with a constant
  condition, X and/or Y variable, every operand broadcasting (scalars too).
- The transpose: ``A . forward(x) = sum_k backward(A)_k . x_k + bias_term(A)`` on random A and
  x, exactly (the ops are linear); the add-reduction's rounding bound holds against float32
  onnxruntime.
- The engine's IBP, CROWN and alpha-CROWN bounds (``row_lower_bounds``) contain onnxruntime's
  and our outputs on dense samples of random boxes, end to end through nets that use the ops.
- Folding: an all-constant Where (float, and the int64 shape arithmetic that torch's export
  of index_put emits) and an all-constant ScatterND fold away and agree with onnxruntime.
- Refusals by name: variable indices, variable condition, duplicate indices with reduction
  none, reductions mul/max/min, an index out of range, opsets before the op.
- ``verify``: a property true with a margin is verified, a violated one falsified with a
  counterexample onnxruntime confirms, and a narrow planted violation routed through both ops
  is never verified.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from verifier import Settings, load_model, parse_vnnlib, verify
from verifier.bounds.crown import AlphaSettings
from verifier.bounds.methods import row_lower_bounds
from verifier.errors import UnsupportedOpError
from verifier.ops.base import Const, OpFormError, Var
from verifier.ops.select import ScatterND, ScatterNDAdd, Where

from .fuzzgraph import SETTINGS, G, bcast_shape, check_against_ort, opset, shape_of
from .opcases import plus_minus_rows

F32 = np.float32


def _rng(*key: object) -> np.random.Generator:
    """A generator seeded by the test's parameters (crc32: stable across processes)."""
    return np.random.default_rng(zlib.crc32("/".join(map(str, key)).encode()))


def _i64(g: G, values: object) -> str:
    return g.const(np.array(values, dtype=np.int64))


def _mixed(g: G, src: str, src_shape: tuple[int, ...], shape: tuple[int, ...],
           rng: np.random.Generator) -> str:
    """A variable of ``shape`` made from ``src``: each entry is +-x_i + x_j / 2 for random
    entries i, j of src (MatMul by a sparse matrix; float32 rounds it at most once)."""
    n, m = math.prod(src_shape), math.prod(shape)
    w = np.zeros((n, m), F32)
    w[rng.integers(0, n, m), np.arange(m)] += rng.choice([-1.0, 1.0], m)
    w[rng.integers(0, n, m), np.arange(m)] += 0.5
    (flat,) = g.node("Reshape", [src, _i64(g, [1, n])])
    (mixed,) = g.node("MatMul", [flat, g.const(w)])
    return g.node("Reshape", [mixed, _i64(g, list(shape))])[0]


# -- model builders ------------------------------------------------------------------------
def scatter_indices(rng: np.random.Generator, data_shape: tuple[int, ...], k: int,
                    ishape: tuple[int, ...], unique: bool) -> np.ndarray:
    """Indices (*ishape, k) into data_shape's first k axes, about half negative; distinct
    tuples if ``unique`` (fewer of them if the axes hold fewer)."""
    dims = data_shape[:k]
    room = math.prod(dims)
    if unique and math.prod(ishape) > room:
        ishape = (room,)
    flat = rng.choice(room, math.prod(ishape), replace=not unique)
    idx = np.stack(np.unravel_index(flat, dims), -1) if k else np.zeros((flat.size, 0))
    idx = idx.astype(np.int64)
    negative = rng.random(idx.shape) < 0.5
    idx = np.where(negative, idx - np.array(dims, dtype=np.int64), idx)
    return idx.reshape(*ishape, k)


def scatter_graph(g: G, k: int, ishape: tuple[int, ...], reduction: str | None, which: str,
                  rng: np.random.Generator) -> str:
    """ScatterND on X (data shape ``g.shape``): ``which`` of data and updates vary (data,
    updates or both); the other is a constant."""
    indices = scatter_indices(rng, g.shape, k, ishape, reduction in (None, "none"))
    ushape = indices.shape[:-1] + g.shape[k:]
    data = g.const(rng.uniform(-2, 2, g.shape).astype(F32)) if which == "updates" else "X"
    updates = g.const(rng.uniform(-2, 2, ushape).astype(F32)) if which == "data" else \
        _mixed(g, "X", g.shape, ushape, rng)
    attrs = {} if reduction is None else {"reduction": reduction}
    return g.node("ScatterND", [data, g.const(indices), updates], **attrs)[0]


def where_graph(g: G, shapes: list[tuple[int, ...]], which: str, rng: np.random.Generator
                ) -> str:
    """Where(constant condition, X, Y) with the operands' ``shapes`` (condition, X, Y), each
    broadcasting to X's (``g.shape``); ``which`` of X and Y vary (x, y, both, same: X for
    both)."""
    cond = g.const(np.asarray(rng.random(shapes[0]) < 0.5))
    ops = []
    for name, shape in (("x", shapes[1]), ("y", shapes[2])):
        if which not in (name, "both", "same"):
            ops.append(g.const(rng.uniform(-2, 2, shape).astype(F32)))
        elif which == "same" or (shape == g.shape and rng.random() < 0.3):
            ops.append("X")
        else:
            ops.append(_mixed(g, "X", g.shape, shape, rng))
    return g.node("Where", [cond, *ops])[0]


def gen_scatternd(draw) -> tuple[G, str]:
    g = G(shape_of(draw, 1, 4, 1, 4), opset(draw, 11))
    k = draw(st.integers(0, len(g.shape)))
    ishape = shape_of(draw, 1, 2, 1, 3)
    reduction = draw(st.sampled_from([None, "none", "add"])) if g.opset >= 16 else None
    which = draw(st.sampled_from(["data", "updates", "both"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    return g, scatter_graph(g, k, ishape, reduction, which, rng)


def gen_where(draw) -> tuple[G, str]:
    g = G(shape_of(draw, 1, 4, 1, 3), opset(draw, 9))
    shapes = [bcast_shape(draw, g.shape) for _ in range(3)]
    which = draw(st.sampled_from(["x", "y", "both", "same"]))
    if which == "same":
        shapes[1] = shapes[2] = g.shape
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    return g, where_graph(g, shapes, which, rng)


FUZZ = {"ScatterND": gen_scatternd, "Where": gen_where}


# -- onnxruntime agreement -----------------------------------------------------------------
def _ort(data: bytes, xs: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.stack([np.asarray(sess.run(None, {name: x})[0], np.float64) for x in xs])


def _ours(data: bytes, xs: np.ndarray) -> np.ndarray:
    model = load_model(data)
    with torch.no_grad():
        y = model.graph.forward(torch.tensor(xs.reshape(len(xs), -1), dtype=torch.float64))
    return y.numpy()


def _agree(g: G, out: str, exact: bool) -> None:
    data = g.model(out)
    xs = _rng("x", g.shape).uniform(-2, 2, (3, *g.shape)).astype(F32)
    ref, got = _ort(data, xs), _ours(data, xs)
    assert got.shape == ref.shape
    tol = 0.0 if exact else 3e-6
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("opset_", [11, 13, 16, 18])
def test_scatternd_grid_agrees_with_onnxruntime(opset_: int):
    """Every index depth 0..3 into data (2, 3, 4), negative indices, data / updates / both
    variable, and from opset 16 reduction none and add (duplicate indices with add)."""
    reductions = [None, "none", "add"] if opset_ >= 16 else [None]
    for which in ("data", "updates", "both"):
        for k in range(4):
            for reduction in reductions:
                g = G((2, 3, 4), opset_)
                rng = _rng("grid", opset_, which, k, reduction)
                out = scatter_graph(g, k, (2, 2), reduction, which, rng)
                _agree(g, out, exact=which == "data" and reduction != "add")


def test_empty_updates_leave_data_unchanged():
    """No index tuples (indices (2, 0, 1), updates (2, 0, 3)): the output is the data, as
    in the patch models of cctsdb_yolo_2023, whose patch indices are empty at most
    positions; variable data, and all constant (folded)."""
    g = G((4, 3), 13)
    empty = (_i64(g, np.zeros((2, 0, 1))), g.const(np.zeros((2, 0, 3), F32)))
    _agree(g, g.node("ScatterND", ["X", *empty])[0], exact=True)
    g = G((4, 3), 13)
    empty = (_i64(g, np.zeros((2, 0, 1))), g.const(np.zeros((2, 0, 3), F32)))
    data = g.const(_rng("empty").uniform(-2, 2, (4, 3)).astype(F32))
    _folded(g, g.node("ScatterND", [data, *empty])[0])


@SETTINGS
@given(st.data())
def test_scatternd_generated_models_agree_with_onnxruntime(data):
    g, out = gen_scatternd(data.draw)
    assert check_against_ort(g.model(out), g.shape) == "agrees"


@SETTINGS
@given(st.data())
def test_where_generated_models_agree_with_onnxruntime(data):
    g, out = gen_where(data.draw)
    assert check_against_ort(g.model(out), g.shape) == "agrees"


def test_where_grid_agrees_with_onnxruntime():
    """Each operand in turn the only one of full rank, scalars, and the output larger than
    every operand (X (3, 1), Y (4,), condition (1, 4) -> (3, 4))."""
    cases = [((3, 4), [(3, 4), (4,), (1, 1)]), ((3, 4), [(), (3, 1), ()]),
             ((3, 1), [(1, 4), (3, 1), (4,)]), ((2, 3), [(2, 1), (), (3,)])]
    for i, (shape, shapes) in enumerate(cases):
        for which in ("x", "y", "both"):
            for opset_ in (9, 16, 21):
                g = G(shape, opset_)
                out = where_graph(g, shapes, which, _rng("where", i, which, opset_))
                _agree(g, out, exact=False)


# -- the transpose and the rounding --------------------------------------------------------
def _op_cases():
    """(op, variable shapes) for the exact-linearity check: both ScatterND forms with each
    input pattern, and Where with broadcasting and a constant operand."""
    rng = _rng("ops")
    data_shape = (3, 2, 4)
    for reduction, unique in (("none", True), ("add", False)):
        for k in (0, 1, 2, 3):
            idx = scatter_indices(rng, data_shape, k, (2, 2) if k else (1,), unique)
            ushape = idx.shape[:-1] + data_shape[k:]
            data = rng.uniform(-2, 2, data_shape)
            upd = rng.uniform(-2, 2, ushape)
            for which in ("data", "updates", "both"):
                ins = [Var("d", data_shape) if which != "updates" else Const(data),
                       Const(idx),
                       Var("u", ushape) if which != "data" else Const(upd)]
                attrs = {"_op_type": "ScatterND", "reduction": reduction}
                cls = ScatterND.select(attrs, ins)
                cls.check(attrs, ins)
                yield cls(attrs, ins, data_shape), [i.shape for i in ins if isinstance(i, Var)]
    cond = rng.random((2, 1, 4)) < 0.5
    for xs, ys in (((2, 3, 4), (4,)), ((3, 1), (2, 1, 4)), ((), (2, 3, 4))):
        for which in ("x", "y", "both"):
            ins = [Const(cond), Var("x", xs) if which != "y" else Const(rng.uniform(size=xs)),
                   Var("y", ys) if which != "x" else Const(rng.uniform(size=ys))]
            Where.check({}, ins)
            out_shape = tuple(np.broadcast_shapes(cond.shape, xs, ys))
            yield Where({"_op_type": "Where"}, ins, out_shape), \
                [i.shape for i in ins if isinstance(i, Var)]


def test_backward_is_the_exact_transpose():
    """A . forward(x) = sum_k backward(A)_k . x_k + bias_term(A), for random A (B, R, *out)
    and x: the coefficients the backward pass hands each input are the op's own."""
    rng = _rng("transpose")
    for op, shapes in _op_cases():
        B, R = 2, 3
        xs = [torch.tensor(rng.uniform(-3, 3, (B, *s))) for s in shapes]
        y = op.forward(*xs)
        assert y.shape == (B, *op.out_shape)
        A = torch.tensor(rng.uniform(-1, 1, (B, R, *op.out_shape)))
        lhs = (A * y.unsqueeze(1)).reshape(B, R, -1).sum(-1)
        coeffs = op.backward(A)
        assert [tuple(c.shape[2:]) for c in coeffs] == [tuple(s) for s in shapes]
        rhs = op.bias_term(A) + sum((c * x.unsqueeze(1)).reshape(B, R, -1).sum(-1)
                                    for c, x in zip(coeffs, xs, strict=True))
        torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)
        los = [torch.tensor(rng.uniform(-3, 0, (B, *s))) for s in shapes]
        his = [x + torch.tensor(rng.uniform(0, 2, x.shape)) for x in los]
        low, high = op.ibp(*zip(los, his, strict=True))
        for t in (0.0, 0.3, 1.0):
            mid = op.forward(*(a + t * (b - a) for a, b in zip(los, his, strict=True)))
            assert (low <= mid).all() and (mid <= high).all()


def test_exact_forms_are_moves_and_add_rounds():
    ops = [op for op, _ in _op_cases()]
    assert all(op.exact_move and op.rounding_error([], (torch.zeros(1), torch.zeros(1)),
                                                   2.0**-24) is None
               for op in ops if not isinstance(op, ScatterNDAdd))
    assert not any(op.exact_move for op in ops if isinstance(op, ScatterNDAdd))


def test_add_reduction_rounding_bound_holds_against_float32():
    """40 updates (the input) added onto 8 constant entries, with cancellation: onnxruntime's
    float32 result lies within the op's rounding bound of the exact one (float64 here)."""
    g = G((40,), 16)
    rng = _rng("rounding")
    data = g.const(rng.uniform(-1e3, 1e3, 8).astype(F32))
    idx = rng.choice([-8, -7, -6, 0, 1, 2, 3, 4], (40, 1))  # none on 5..7: exact copies
    out = g.node("ScatterND", [data, _i64(g, idx), "X"], reduction="add")[0]
    model_bytes = g.model(out)
    xs = rng.uniform(-1e3, 1e3, (20, 40)).astype(F32)
    ref, exact = _ort(model_bytes, xs), _ours(model_bytes, xs)
    (node,) = load_model(model_bytes).graph.nodes
    box = torch.full((20, 40), 1e3, dtype=torch.float64)
    y = torch.tensor(exact)
    err = node.op.rounding_error([(-box, box)], (y, y), 2.0**-24)
    assert err is not None and err.shape == y.shape
    assert (np.abs(ref - exact) <= err.numpy()).all()
    assert (np.abs(ref - exact).max(0) > 0).any()  # the bound is not tested on exact sums
    assert (err.numpy()[:, 5:] == 0).all() and (ref[:, 5:] == exact[:, 5:]).all()


# -- folding -------------------------------------------------------------------------------
def _folded(g: G, out: str) -> None:
    """The node folds away (the graph is X + the folded constant) and agrees with
    onnxruntime."""
    (final,) = g.node("Add", ["X", out])
    data = g.model(final)
    assert [n.op_type for n in load_model(data).graph.nodes] == ["Add"]
    _agree(g, final, exact=False)


def test_all_constant_where_folds():
    g = G((2, 3), 16)
    rng = _rng("fold-where")
    cond = g.const(rng.random((2, 1)) < 0.5)
    out = g.node("Where", [cond, g.const(rng.uniform(-2, 2, (2, 3)).astype(F32)),
                           g.const(rng.uniform(-2, 2, (3,)).astype(F32))])[0]
    _folded(g, out)


@pytest.mark.parametrize("opset_", [11, 17])
def test_where_in_shape_arithmetic_folds(opset_: int):
    """torch's export of index_put (as in cctsdb_yolo_2023's patch models): int64 shapes
    through Shape, ConstantOfShape, Equal and Where, then Expand: folded by ONNX's reference
    evaluator, as before Where was an op of the engine."""
    g = G((1, 3, 4), opset_)
    (shape,) = g.node("Shape", ["X"])
    (shape2,) = g.node("Shape", [shape])
    ones = g.node("ConstantOfShape", [shape2],
                  value=helper.make_tensor("v", TensorProto.INT64, [1], [1]))[0]
    (minus,) = g.node("Mul", [ones, _i64(g, -1)])
    (eq,) = g.node("Equal", [shape, minus])
    (target,) = g.node("Where", [eq, ones, shape])
    (grid,) = g.node("Expand", [g.const(np.arange(4, dtype=F32)), target])
    _folded(g, grid)


@pytest.mark.parametrize("integer", [False, True])
def test_all_constant_scatternd_folds(integer: bool):
    """Float data: folded by the engine's own op; integer data: by the reference evaluator
    (then cast to float for the sum)."""
    g = G((2, 3), 16)
    kind = np.int64 if integer else F32
    data = g.const(np.arange(6, dtype=kind).reshape(2, 3))
    updates = g.const(np.array([[7, 8, 9]], dtype=kind))
    (out,) = g.node("ScatterND", [data, _i64(g, [[-1]]), updates])
    if integer:
        (out,) = g.node("Cast", [out], to=TensorProto.FLOAT)
    _folded(g, out)


def test_cctsdb_patch_masking_folds_and_agrees(bench: Path):
    """cctsdb_yolo_2023's patch-3 reads the patch position from its input (Gather, Cast to
    int64: refused for a variable); with that position a constant, the index_put export that
    builds the patch mask (shape arithmetic with Where, then ScatterND of zeros into ones) is
    all constant: it folds, and the masked image (the graph cut after its Mul) agrees with
    onnxruntime, at positions where the mask's indices are empty and where they are not."""
    path = bench / "cctsdb_yolo_2023" / "onnx" / "patch-3.onnx"
    if not path.exists():
        pytest.skip(f"{path} not found")
    base = onnx.load(path)
    for position in ((0, 0), (10, 20)):
        m = onnx.ModelProto()
        m.CopyFrom(base)
        nodes = list(m.graph.node[:101])  # up to the Mul that masks the image
        casts = [i for i, n in enumerate(nodes) if n.op_type == "Cast" and
                 n.output[0] in ("onnx::Add_236", "onnx::Add_239")]
        assert len(casts) == 2
        for i, at in zip(casts, position, strict=True):
            nodes[i] = helper.make_node("Constant", [], list(nodes[i].output),
                                        value=numpy_helper.from_array(np.array(at)))
        del m.graph.node[:], m.graph.output[:]
        m.graph.node.extend(nodes)
        m.graph.output.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, None))
        data = m.SerializeToString()
        assert "Where" not in [n.op_type for n in load_model(data).graph.nodes]
        xs = _rng("patch", position).uniform(0, 1, (2, 12296)).astype(F32)
        ref = _ort(data, xs)
        assert (ref == 0).any() == (position == (0, 0))
        np.testing.assert_array_equal(_ours(data, xs).reshape(ref.shape), ref)


# -- refusals ------------------------------------------------------------------------------
def _refused(g: G, out: str, message: str) -> None:
    with pytest.raises(UnsupportedOpError, match=message):
        load_model(g.model(out))


def _scatter(g: G, idx: object, reduction: str | None = None) -> str:
    indices = np.array(idx, dtype=np.int64)
    ushape = indices.shape[:-1] + g.shape[indices.shape[-1]:]
    updates = g.const(np.ones(ushape, F32))
    attrs = {} if reduction is None else {"reduction": reduction}
    return g.node("ScatterND", ["X", g.const(indices), updates], **attrs)[0]


def test_duplicate_indices_are_refused_with_reduction_none():
    for reduction, opset_ in ((None, 13), ("none", 18)):
        g = G((4, 3), opset_)
        _refused(g, _scatter(g, [[1], [-3]], reduction), "duplicate indices")
    g = G((4, 3), 16)  # with add they are fine
    _agree(g, _scatter(g, [[1], [-3]], "add"), exact=False)


@pytest.mark.parametrize("reduction,opset_", [("mul", 16), ("max", 18), ("min", 18)])
def test_other_reductions_are_refused_by_name(reduction: str, opset_: int):
    g = G((4, 3), opset_)
    _refused(g, _scatter(g, [[1]], reduction), f"'reduction'='{reduction}' is not supported")


def test_malformed_scatternd_is_refused_by_name():
    g = G((4, 3), 13)
    _refused(g, _scatter(g, [[4]]), "index 4 is out of range for axis 0 of size 4")
    g = G((4, 3), 13)
    _refused(g, _scatter(g, [[0, -4]]), "index -4 is out of range for axis 1 of size 3")
    g = G((4, 3), 13)
    _refused(g, _scatter(g, [[1]], "add"), "attribute 'reduction' is not defined")
    g = G((4, 3), 10)
    _refused(g, _scatter(g, [[1]]), "ScatterND is not an operator of ONNX opset 10")
    g = G((4, 3), 8)
    cond = g.const(np.array([True, False, True]))
    _refused(g, g.node("Where", [cond, "X", g.const(F32(0))])[0],
             "Where is not an operator of ONNX opset 8")


def test_variable_indices_and_condition_are_refused_by_name():
    """A variable index or condition is an integer or bool tensor computed from the input:
    the ops that would compute it and have no rule (Cast to an integer, IsNaN) are refused
    first, and the op's own check refuses it by name (comparisons, Greater, Equal and the
    like, have a rule: test_op_compare.py)."""
    data, idx = Var("d", (4, 3)), Var("i", (2, 1))
    with pytest.raises(OpFormError, match="ScatterND with indices that depend on the input"):
        ScatterND.check({}, [data, idx, Const(np.ones((2, 3)))])
    with pytest.raises(OpFormError, match="^Where with a condition that depends on the input "
                                          "is not supported$"):
        Where.check({}, [Var("c", (4, 3)), data, Const(np.zeros(3))])
    g = G((4, 3), 13)
    (cond,) = g.node("IsNaN", ["X"])
    _refused(g, g.node("Where", [cond, "X", g.const(F32(0))])[0], "IsNaN")


# -- linear bounds, end to end -------------------------------------------------------------
def _net(form: str) -> tuple[bytes, int]:
    """X (1, 6) -> h = relu(W1 x + b1) (1, 8) and v = W2 x + b2 -> the op, on (2, 4) views
    of them -> tanh -> Gemm -> (1, 3): the op's bounds are needed by tanh's relaxation, and
    its coefficients cross it in every backward pass.  Returns the model and its opset."""
    rng = _rng("net", form)
    opset_ = 16
    g = G((1, 6), opset_)

    def gemm(x: str, n_out: int, n_in: int) -> str:
        w = g.const((rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(F32))
        return g.node("Gemm", [x, w, g.const(rng.uniform(-0.5, 0.5, n_out).astype(F32))],
                      transB=1)[0]

    (h,) = g.node("Relu", [gemm("X", 8, 6)])
    (data,) = g.node("Reshape", [h, _i64(g, [2, 4])])

    def v(shape: tuple[int, ...]) -> str:
        return g.node("Reshape", [gemm("X", math.prod(shape), 6), _i64(g, list(shape))])[0]

    if form == "scatter":  # three entries of relu(h) overwritten by a signed variable
        (t,) = g.node("ScatterND", [data, _i64(g, [[0, 1], [1, -1], [-2, 0]]), v((3,))])
    elif form == "scatter-rows":
        (t,) = g.node("ScatterND", [data, _i64(g, [[-1]]), v((1, 4))])
    elif form == "scatter-add":
        (t,) = g.node("ScatterND", [data, _i64(g, [[0, 1], [0, 1], [1, -1]]), v((3,))],
                      reduction="add")
    elif form == "scatter-const-data":
        const = g.const(rng.uniform(-1, 1, (2, 4)).astype(F32))
        (t,) = g.node("ScatterND", [const, _i64(g, [[1], [0]]), v((2, 4))])
    elif form == "scatter-const-updates":
        (t,) = g.node("ScatterND", [data, _i64(g, [[-1, 2]]), g.const(F32([0.75]))])
    elif form == "where":
        cond = g.const(rng.random((2, 4)) < 0.5)
        (t,) = g.node("Where", [cond, data, v((1, 4))])
    elif form == "where-const":
        (t,) = g.node("Where", [g.const(rng.random((1, 4)) < 0.5), g.const(F32([0.5] * 4)),
                                data])
    else:  # where-scalar: a scalar variable broadcast against a constant condition
        (t,) = g.node("Where", [g.const(rng.random((2, 4)) < 0.5), data, v(())])
    (flat,) = g.node("Reshape", [t, _i64(g, [1, 8])])
    (a,) = g.node("Tanh", [flat])
    return g.model(gemm(a, 3, 8)), opset_


FORMS = ["scatter", "scatter-rows", "scatter-add", "scatter-const-data",
         "scatter-const-updates", "where", "where-const", "where-scalar"]


@pytest.mark.parametrize("form", FORMS)
def test_engine_bounds_contain_the_outputs(form: str):
    """IBP, CROWN and alpha-CROWN on 6 random boxes at once (narrow to wide): their bounds
    contain onnxruntime's outputs and ours on dense samples of each box and its corners."""
    data, _ = _net(form)
    model = load_model(data)
    rng = _rng("boxes", form)
    widths = np.array([1e-3, 0.05, 0.3, 1.0, 2.0, 4.0])[:, None]
    centre = rng.uniform(-1, 1, (6, 6))
    lo, hi = centre - widths * rng.uniform(0.2, 1, (6, 6)), centre + widths
    batch = plus_minus_rows(lo, hi, 3)
    bounds = {m: row_lower_bounds(model.graph, batch, m,
                                  alpha=AlphaSettings(iterations=5, early_stop=False))
              for m in ("ibp", "crown", "alpha-crown")}
    for b in range(6):
        t = rng.uniform(size=(300, 6))
        t[:64] = rng.integers(0, 2, (64, 6))  # corners
        xs = (lo[b] + t * (hi[b] - lo[b])).astype(F32)
        xs = xs[((xs >= lo[b]) & (xs <= hi[b])).all(1)]  # float32 rounding may step out
        for ys in (_ort(data, xs[:, None]), _ours(data, xs[:, None])):
            ys = ys.reshape(len(xs), -1)
            rows = np.concatenate([ys, -ys], 1)
            for method, lb in bounds.items():
                assert (rows >= lb[b].numpy()).all(), (form, method, b)


# -- verify --------------------------------------------------------------------------------
def _spec(boxes: list[tuple[float, float]], threshold: float, n_out: int) -> str:
    """Unsafe: x in the boxes and Y_0 >= threshold."""
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(len(boxes)))
    text += "".join(f"(declare-const Y_{j} Real)\n" for j in range(n_out))
    text += "".join(f"(assert (>= X_{i} {a!r}))\n(assert (<= X_{i} {b!r}))\n"
                    for i, (a, b) in enumerate(boxes))
    return text + f"(assert (>= Y_0 {threshold!r}))\n"


def _check_counterexamples(data: bytes, result, prop, boxes, threshold: float) -> None:
    assert result.counterexamples
    for cex in result.counterexamples:
        x = np.asarray(cex.x, dtype=F32)
        assert all(a <= float(v) <= b for v, (a, b) in zip(x, boxes, strict=True)), x
        y = _ort(data, x.reshape(1, 1, -1))[0].ravel()
        assert y[0] >= threshold, (x, y)
        assert prop.violated_by(x, y, tol=0.0)


@pytest.mark.parametrize("form", ["scatter", "where-scalar"])
def test_true_property_is_verified_and_violated_one_falsified(form: str):
    data, _ = _net(form)
    model = load_model(data)
    rng = _rng("verify", form)
    centre = rng.uniform(-1, 1, 6)
    boxes = [(float(F32(c - 0.02)), float(F32(c + 0.02))) for c in centre]
    xs = np.array([a for a, _ in boxes]) + rng.uniform(size=(200, 6)) * 0.04
    top = float(_ort(data, xs.astype(F32)[:, None]).reshape(200, -1)[:, 0].max())
    safe = parse_vnnlib(_spec(boxes, top + 0.25, 3), 6, 3)
    result = verify(model, safe, Settings(timeout=10))
    assert result.verdict == "verified", result.message
    unsafe = parse_vnnlib(_spec(boxes, top - 1e-3, 3), 6, 3)
    result = verify(model, unsafe, Settings(timeout=10))
    assert result.verdict == "falsified", result.message
    _check_counterexamples(data, result, unsafe, boxes, top - 1e-3)


P = float(F32(0.3137))  # the planted point: not a centre, corner or dyadic midpoint


def _bump(n: int) -> bytes:
    """y = 0.75 - 1.5 |s|, s = 1e4 (x_1 + ... + x_n - n P), computed through both ops:
    data = (-|s|, -|s|, -|s|), ScatterND writes 1 - |s| at index -2, Where keeps the first
    two and puts the constant -1 third, and y = (0.5, 1, 0.25) . that.  y >= 0.5 iff
    |s| <= 1/6: a violation of width 1/(3e4 sqrt(n)) around x = P."""
    g = G((1, n), 17)
    total = "X" if n == 1 else g.node("MatMul", ["X", g.const(np.ones((n, 1), F32))])[0]
    (s,) = g.node("Mul", [g.node("Sub", [total, g.const(F32(n * P))])[0], g.const(F32(1e4))])
    (a,) = g.node("Abs", [s])
    (t,) = g.node("Sub", [g.const(F32(1.0)), a])
    (data,) = g.node("MatMul", [g.node("Neg", [a])[0], g.const(np.ones((1, 3), F32))])
    (updates,) = g.node("Reshape", [t, _i64(g, [1])])
    (d,) = g.node("ScatterND", [data, _i64(g, [[0, -2]]), updates])
    (w,) = g.node("Where", [g.const(np.array([[True, True, False]])), d,
                            g.const(np.full((1, 3), -1.0, F32))])
    (y,) = g.node("Gemm", [w, g.const(np.array([[0.5, 1.0, 0.25]], F32))], transB=1)
    return g.model(y)


@pytest.mark.parametrize("n", [1, 20])
def test_planted_counterexample_is_real_and_never_verified(n: int):
    """Unsafe: y >= 0.5, true only in the bump: `verified` would be unsound, `falsified`
    must carry a counterexample onnxruntime confirms; and y >= 1.0 (above y's maximum 0.75)
    must not be falsified."""
    data = _bump(n)
    xs = np.concatenate([np.full((1, n), P), _rng("bump", n).uniform(-1, 1, (200, n))])
    ys = _ort(data, xs.astype(F32)[:, None]).ravel()
    assert ys[0] >= 0.5 and (ys[1:] < 0.5).all()
    model = load_model(data)
    boxes = [(-1.0, 1.0)] * n
    prop = parse_vnnlib(_spec(boxes, 0.5, 1), n, 1)
    result = verify(model, prop, Settings(timeout=1.0))
    assert result.verdict in ("falsified", "unknown", "timeout"), result.message
    if result.verdict == "falsified":
        _check_counterexamples(data, result, prop, boxes, 0.5)
    control = verify(model, parse_vnnlib(_spec(boxes, 1.0, 1), n, 1), Settings(timeout=1.0))
    assert control.verdict in ("verified", "unknown", "timeout"), control.message
