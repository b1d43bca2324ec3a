"""Comparisons of variables and Where with a variable condition (verifier/importer/lowering.py
``lower_compare`` and ``lower_where``; the step in verifier/ops/step.py ``Heaviside``).

- onnxruntime: Greater, Less, GreaterOrEqual, LessOrEqual and Equal of a variable with a
  constant (either side) and of two variables, Not, And, Or and Xor, and Where with a
  variable condition and variable or constant branches (broadcast), at opsets 9 (11) to
  20, on points that hit the constants exactly (ties decide strictness) and random ones:
  our forward agrees.
- The engine's IBP, CROWN and alpha-CROWN bounds contain onnxruntime's outputs on random
  boxes for a leaky ReLU written ``Where(h > 0, h, 0.1 h)``, a net that masks with a
  comparison of two variables and one with a band (And) and an Or.
- ``verify``: a property true with a margin is verified and one violated near a corner is
  falsified with a counterexample onnxruntime confirms.
- Cast of a variable to BOOL (x != 0) agrees with onnxruntime at exact zeros and one ulp
  either side, and a zero at the box's end is falsified, never proved away.
- Refused by name: a comparison or Where with a non-finite constant.
- Random forms in the importer's fuzzing (``FUZZ``, run by test_import_fuzz.py).
- Heaviside's lines and interval over random intervals (narrow, wide, ending at the jump,
  infinite, NaN) hold the function at dense samples, at 0 itself and at the one-sided
  limits; the interval is the exact range.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from verifier import load_model
from verifier.errors import UnsupportedOpError

from .fuzzgraph import G, array, shape_of
from .opcases import assert_net_bounds_contain, net_model, run_ort, verify_both_ways

F32 = np.float32
COMPARES = ["Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Equal"]
# the first opset defining each for floats (Equal before 11: integers and booleans only)
FIRST = {"Greater": 9, "Less": 9, "GreaterOrEqual": 12, "LessOrEqual": 12, "Equal": 11}


def _model(nodes, inits: dict, opset: int, n: int = 6) -> bytes:
    graph = helper.make_graph(
        nodes, "cmp", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]
                             ).SerializeToString()


def _points(rng: np.random.Generator, c: np.ndarray) -> np.ndarray:
    """Points (N, 1, 6) with entries equal to the constants, beside them and random."""
    n = c.size
    ties = np.broadcast_to(c, (1, n)).astype(F32)
    near = np.stack([np.nextafter(ties, F32(np.inf)), np.nextafter(ties, F32(-np.inf))])[:, 0]
    rand = rng.uniform(-2, 2, (20, n)).astype(F32)
    mixed = np.where(rng.random((20, n)) < 0.5, ties, rand).astype(F32)
    return np.concatenate([ties, near, rand, mixed])[:, None]


def _agree(data: bytes, xs: np.ndarray, tag: object) -> None:
    ours = load_model(data).graph.forward(torch.tensor(xs.reshape(len(xs), -1),
                                                       dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ours.reshape(len(xs), -1), run_ort(data, xs).reshape(len(xs), -1),
                               rtol=1e-6, atol=1e-6, err_msg=str(tag))


@pytest.mark.parametrize("op", COMPARES)
def test_comparisons_agree_with_onnxruntime(op: str):
    """A comparison cast to float, its negation, and Where on it, for each operand form."""
    rng = np.random.default_rng(0)
    c = np.array([0.0, -1.0, 0.5, 1.25, -0.75, 2.0], F32)
    for opset in sorted({FIRST[op], 13, 20}):
        for form in ("var-const", "const-var", "var-var"):
            ins = {"var-const": ["X", "c"], "const-var": ["c", "X"], "var-var": ["X", "Xr"]}[form]
            nodes = [helper.make_node("Neg", ["X"], ["n"]),
                     helper.make_node("Add", ["n", "one"], ["Xr"]),  # 1 - X: ties at 0.5
                     helper.make_node(op, ins, ["b"]),
                     helper.make_node("Not", ["b"], ["nb"]),
                     helper.make_node("Cast", ["b"], ["f"], to=TensorProto.FLOAT),
                     helper.make_node("Cast", ["nb"], ["g"], to=TensorProto.FLOAT),
                     helper.make_node("Where", ["b", "X", "s"], ["w"]),
                     helper.make_node("Mul", ["g", "w"], ["gw"]),
                     helper.make_node("Add", ["f", "gw"], ["Y"])]
            inits = {"c": c, "one": np.array([1.0], F32), "s": np.array([-3.0], F32)}
            data = _model(nodes, inits, opset)
            xs = _points(rng, c if form != "var-var" else np.full(6, 0.5, F32))
            _agree(data, xs, (op, opset, form))


@pytest.mark.parametrize("opset", [9, 13, 20])
def test_cast_of_a_variable_to_bool_agrees_with_onnxruntime(opset: int):
    """Cast to BOOL of X - c (zero exactly at the constants) and of a comparison (the
    identity on its 0/1), then to float and as Where's condition."""
    rng = np.random.default_rng(2)
    c = np.array([0.0, -1.0, 0.5, 1.25, -0.75, 2.0], F32)
    nodes = [helper.make_node("Sub", ["X", "c"], ["d"]),
             helper.make_node("Cast", ["d"], ["b"], to=TensorProto.BOOL),
             helper.make_node("Greater", ["X", "c"], ["g"]),
             helper.make_node("Cast", ["g"], ["gb"], to=TensorProto.BOOL),
             helper.make_node("Cast", ["b"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Where", ["gb", "X", "s"], ["w"]),
             helper.make_node("Add", ["f", "w"], ["Y"])]
    data = _model(nodes, {"c": c, "s": np.array([-3.0], F32)}, opset)
    _agree(data, _points(rng, c), opset)


def test_a_zero_at_the_boxs_end_is_cast_to_false_never_proved_away():
    """Y = float(bool(X)) over [0, c]: Y <= 0 is reached at X = 0 only, and must be
    falsified there (onnxruntime confirming); over [c / 2, c] it is verified."""
    from verifier import Settings, parse_vnnlib, verify

    c = float(F32(0.3137))
    nodes = [helper.make_node("Cast", ["X"], ["b"], to=TensorProto.BOOL),
             helper.make_node("Cast", ["b"], ["Y"], to=TensorProto.FLOAT)]
    data = _model(nodes, {}, 13, n=1)

    def spec(lo: float) -> str:
        return ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
                f"(assert (>= X_0 {lo!r}))\n(assert (<= X_0 {c!r}))\n(assert (<= Y_0 0.0))\n")

    found = verify(load_model(data), parse_vnnlib(spec(0.0), 1, 1), Settings(timeout=10))
    assert found.verdict == "falsified", found.message
    assert found.counterexamples[0].x[0] == 0.0
    assert run_ort(data, found.counterexamples[0].x.astype(F32).reshape(1, 1, 1))[0, 0, 0] == 0
    proved = verify(load_model(data), parse_vnnlib(spec(c / 2), 1, 1), Settings(timeout=10))
    assert proved.verdict == "verified", proved.message


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logic_of_comparisons_agrees_with_onnxruntime(op: str):
    """Two comparisons of the input (a band, ties included) combined, then with a constant
    mask, negated, cast and used as a condition."""
    rng = np.random.default_rng(1)
    lo_c = np.array([0.0, -1.0, 0.5, 1.25, -0.75, 2.0], F32)
    hi_c = lo_c + np.array([0.5, 1.0, 0.0, 0.25, 2.0, -1.0], F32)
    for opset in (9, 13, 20):
        nodes = [helper.make_node("Greater" if opset < 12 else "GreaterOrEqual", ["X", "lo"],
                                  ["a"]),
                 helper.make_node("Less", ["X", "hi"], ["b"]),
                 helper.make_node(op, ["a", "b"], ["ab"]),
                 helper.make_node(op, ["mask", "ab"], ["abm"]),
                 helper.make_node("Not", ["abm"], ["n"]),
                 helper.make_node("Cast", ["ab"], ["f"], to=TensorProto.FLOAT),
                 helper.make_node("Where", ["n", "X", "s"], ["w"]),
                 helper.make_node("Add", ["f", "w"], ["Y"])]
        inits = {"lo": lo_c, "hi": hi_c, "s": np.array([-3.0], F32),
                 "mask": np.array([True, False, True, True, False, True])}
        data = _model(nodes, inits, opset)
        xs = np.concatenate([_points(rng, lo_c), _points(rng, hi_c)])
        _agree(data, xs, (op, opset))


@pytest.mark.parametrize("opset", [11, 16, 20])
def test_where_with_a_variable_condition_agrees_with_onnxruntime(opset: int):
    """Branches variable/variable, variable/constant, constant/variable and constant/
    constant, a condition of another shape broadcast against them."""
    rng = np.random.default_rng(opset)
    a = rng.normal(size=6).astype(F32)
    b = rng.normal(size=6).astype(F32)
    for x, y in (("X", "sq"), ("X", "a"), ("a", "X"), ("a", "b")):
        nodes = [helper.make_node("Mul", ["X", "X"], ["sq"]),
                 helper.make_node("Reshape", ["X", "s23"], ["r"]),
                 helper.make_node("Slice", ["r", "z", "one", "z"], ["row"]),  # (1, 3)
                 helper.make_node("Greater", ["row", "t"], ["cond3"]),
                 helper.make_node("Reshape", ["X", "s23"], ["x23"]),
                 helper.make_node("Reshape", [x, "s23"], ["xb"]) if x != "X" else
                 helper.make_node("Identity", ["x23"], ["xb"]),
                 helper.make_node("Reshape", [y, "s23"], ["yb"]),
                 helper.make_node("Where", ["cond3", "xb", "yb"], ["w"]),
                 helper.make_node("Reshape", ["w", "s16"], ["Y"])]
        inits = {"a": a, "b": b, "s23": np.array([2, 3], np.int64),
                 "s16": np.array([1, 6], np.int64), "z": np.array([0], np.int64),
                 "one": np.array([1], np.int64), "t": np.array([0.1, -0.2, 0.3], F32)}
        data = _model(nodes, inits, opset)
        xs = _points(rng, np.array([0.1, -0.2, 0.3, 0.0, 1.0, -1.0], F32))
        _agree(data, xs, (opset, x, y))


def _leaky_where(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Gemm", ["X", "W0", "b0"], ["h"], transB=1),
             helper.make_node("Greater", ["h", "zero"], ["pos"]),
             helper.make_node("Mul", ["h", "slope"], ["low"]),
             helper.make_node("Where", ["pos", "h", "low"], ["a"]),
             helper.make_node("Gemm", ["a", "W1"], ["Y"], transB=1)]
    inits = {"W0": rng.normal(size=(8, 4)), "b0": rng.normal(size=8) * 0.3,
             "zero": np.array(0.0), "slope": np.array(0.1), "W1": rng.normal(size=(2, 8))}
    return net_model(nodes, inits, 13)


def _band(seed: int) -> bytes:
    """Where a hidden unit lies in a band (two comparisons, And), a ReLU of it, else a
    constant; Or of the band with a comparison of two units adds an offset."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Gemm", ["X", "W0"], ["h"], transB=1),
             helper.make_node("Gemm", ["X", "W2"], ["g"], transB=1),
             helper.make_node("Greater", ["h", "lo"], ["a"]),
             helper.make_node("LessOrEqual", ["h", "hi"], ["b"]),
             helper.make_node("And", ["a", "b"], ["band"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Where", ["band", "r", "k"], ["w"]),
             helper.make_node("Less", ["g", "h"], ["c"]),
             helper.make_node("Or", ["band", "c"], ["o"]),
             helper.make_node("Cast", ["o"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["w", "f"], ["s"]),
             helper.make_node("Gemm", ["s", "W1"], ["Y"], transB=1)]
    inits = {"W0": rng.normal(size=(6, 4)), "W2": rng.normal(size=(6, 4)),
             "lo": np.array(-0.5), "hi": np.array(1.0), "k": np.array(0.25),
             "W1": rng.normal(size=(2, 6))}
    return net_model(nodes, inits, 13)


def _masked(seed: int) -> bytes:
    """Two hidden vectors; where the first exceeds the second, the first, else a constant;
    the mask's negation adds a constant offset."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Gemm", ["X", "Wa"], ["p"], transB=1),
             helper.make_node("Gemm", ["X", "Wb"], ["q"], transB=1),
             helper.make_node("LessOrEqual", ["q", "p"], ["m"]),
             helper.make_node("Where", ["m", "p", "k"], ["w"]),
             helper.make_node("Not", ["m"], ["nm"]),
             helper.make_node("Cast", ["nm"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["w", "f"], ["s"]),
             helper.make_node("Gemm", ["s", "W1"], ["Y"], transB=1)]
    inits = {"Wa": rng.normal(size=(6, 4)), "Wb": rng.normal(size=(6, 4)),
             "k": np.array(-0.5), "W1": rng.normal(size=(2, 6))}
    return net_model(nodes, inits, 13)


@pytest.mark.parametrize("make", [_leaky_where, _masked, _band],
                         ids=["leaky", "masked", "band"])
def test_engine_bounds_contain_the_outputs(make):
    assert_net_bounds_contain(make(3), seed=4, tag=make.__name__)


@pytest.mark.parametrize("make,margin", [(_leaky_where, 0.05), (_masked, 0.3), (_band, 0.3)],
                         ids=["leaky", "masked", "band"])
def test_true_property_is_verified_and_violated_one_falsified(make, margin: float):
    """The masked and band nets jump across hyperplanes: boxes that straddle one keep both
    branches, so their bounds near the sampled maximum slowly (a wider margin)."""
    data = make(5)
    verify_both_ways(data, lambda xs: run_ort(data, xs[:, None])[:, 0], n=4, n_out=2,
                     margin=margin, tag=make.__name__)


@pytest.mark.parametrize("op", COMPARES)
def test_a_tie_at_the_boxs_end_is_never_proved_away(op: str):
    """Y = (X op c) with the box ending at c and Y >= 1 unsafe: reached only at X = c by the
    or-equal forms and Equal (falsified there, with onnxruntime's confirmation), never by
    the strict ones (which must not be falsified)."""
    from verifier import Settings, parse_vnnlib, verify

    c = float(F32(0.3137))
    lo, hi = (0.0, c) if op.startswith("Greater") else (c, 1.0)
    nodes = [helper.make_node(op, ["X", "c"], ["b"]),
             helper.make_node("Cast", ["b"], ["Y"], to=TensorProto.FLOAT)]
    data = _model(nodes, {"c": np.array([c], F32)}, 13, n=1)
    spec = ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
            f"(assert (>= X_0 {lo!r}))\n(assert (<= X_0 {hi!r}))\n(assert (>= Y_0 1.0))\n")
    result = verify(load_model(data), parse_vnnlib(spec, 1, 1), Settings(timeout=10))
    if op.endswith("Equal"):
        assert result.verdict == "falsified", result.message
        assert result.counterexamples[0].x[0] == c
    else:
        assert result.verdict in ("verified", "unknown"), result.message


@pytest.mark.parametrize("op,const", [("Greater", np.inf), ("Where", -np.inf)])
def test_non_finite_constants_are_refused_by_name(op: str, const: float):
    if op == "Where":
        nodes = [helper.make_node("Greater", ["X", "z"], ["b"]),
                 helper.make_node("Where", ["b", "X", "k"], ["Y"])]
    else:
        nodes = [helper.make_node(op, ["X", "k"], ["b"]),
                 helper.make_node("Cast", ["b"], ["Y"], to=TensorProto.FLOAT)]
    data = _model(nodes, {"k": np.array([const], F32), "z": np.array([0.0], F32)}, 13)
    with pytest.raises(UnsupportedOpError, match="non-finite constant"):
        load_model(data)


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_heaviside_lines_and_interval_hold_the_function(strict: bool, dtype: torch.dtype):
    from verifier.ops.base import Var
    from verifier.ops.step import Heaviside

    op = Heaviside({"_op_type": "Heaviside", "strict": strict}, [Var("x", (1,))], (1,))
    rng = np.random.default_rng(int(strict))
    c = rng.uniform(-2, 2, 300)
    w = 10 ** rng.uniform(-6, 1.5, 300)
    lo, hi = c - w * rng.random(300), c + w * rng.random(300)
    lo[:20], hi[20:40] = 0.0, 0.0  # ending at the jump
    lo[40:50], hi[50:60] = -np.inf, np.inf
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    lo[60:63] = np.nan
    lt, ht = torch.tensor(lo, dtype=dtype), torch.tensor(hi, dtype=dtype)
    ln = op.lines(lt, ht)
    low, high = (t.double().numpy() for t in op.ibp((lt, ht)))
    a_l, b_l, a_u, b_u = (t.double().numpy() for t in (ln.a_l, ln.b_l, ln.a_u, ln.b_u))
    lo, hi = lt.double().numpy(), ht.double().numpy()  # the ends as the op saw them
    f = (lambda x: (x > 0).astype(float)) if strict else (lambda x: (x >= 0).astype(float))
    for i in range(300):
        if np.isnan(lo[i]) or np.isnan(hi[i]):
            assert low[i] <= 0 and high[i] >= 1  # 0 or 1, whatever the input
            continue
        a, b = max(lo[i], -1e3), min(hi[i], 1e3)
        xs = np.concatenate([np.linspace(a, b, 2001), [0.0] if lo[i] <= 0 <= hi[i] else []])
        xs = xs[(xs >= lo[i]) & (xs <= hi[i])]
        y = f(xs)
        assert low[i] <= y.min() and y.max() <= high[i], (lo[i], hi[i])
        if np.isfinite(lo[i]) and np.isfinite(hi[i]):
            assert (low[i], high[i]) == (f(np.array([lo[i]]))[0], f(np.array([hi[i]]))[0])
        with np.errstate(invalid="ignore"):  # 0 * inf where a line is a constant
            lower = np.where(a_l[i] == 0, b_l[i], a_l[i] * xs + b_l[i])
            upper = np.where(a_u[i] == 0, b_u[i], a_u[i] * xs + b_u[i])
        assert (lower <= y + 1e-9).all() and (upper >= y - 1e-9).all(), (lo[i], hi[i], ln)
        if lo[i] < 0 < hi[i] and np.isfinite(lo[i]) and np.isfinite(hi[i]):  # limits at 0
            assert b_l[i] <= 1e-9 and b_u[i] >= 1 - 1e-9, (lo[i], hi[i])


def _gen(op: str):
    """A comparison of X with a constant (either side, broadcast) or with a function of X,
    perhaps negated, then cast to float or selecting between X and a constant."""

    def gen(draw) -> tuple[G, str]:
        first = {"Not": 9, **FIRST}[op]
        g = G(shape_of(draw), draw(st.integers(max(first, 11), 21)))
        kind = op if op != "Not" else draw(st.sampled_from(COMPARES))
        other = draw(st.sampled_from(["const", "var"]))
        if other == "const":
            k = g.const(array(draw, g.shape[-draw(st.integers(0, len(g.shape))):]))
        else:
            k = g.node("Mul", ["X", g.const(array(draw, (1,)))])[0]
        ins = ["X", k] if draw(st.booleans()) else [k, "X"]
        (b,) = g.node(kind, ins)
        if op == "Not" or draw(st.booleans()):
            (b,) = g.node("Not", [b])
        if draw(st.booleans()):
            return g, g.node("Cast", [b], to=TensorProto.FLOAT)[0]
        return g, g.node("Where", [b, "X", g.const(array(draw, (1,)))])[0]

    return gen


def _gen_logic(op: str):
    """Two comparisons of X with constants combined by ``op`` (one side perhaps a constant
    mask), cast to float."""

    def gen(draw) -> tuple[G, str]:
        g = G(shape_of(draw), draw(st.integers(9, 21)))
        (a,) = g.node("Greater", ["X", g.const(array(draw, g.shape[-1:]))])
        if draw(st.booleans()):
            (b,) = g.node("Less", ["X", g.const(array(draw, (1,)))])
        else:
            b = g.const(np.asarray(array(draw, g.shape[-1:]) > 0))
        ins = [a, b] if draw(st.booleans()) else [b, a]
        return g, g.node("Cast", [g.node(op, ins)[0]], to=TensorProto.FLOAT)[0]

    return gen


FUZZ = {**{op: _gen(op) for op in [*COMPARES, "Not"]},
        **{op: _gen_logic(op) for op in ("And", "Or", "Xor")}}
