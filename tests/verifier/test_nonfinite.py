"""Non-finite bounds are never proofs (issue 12, soundness class 1).

Every elementwise op, product and quotient is handed intervals that are infinite,
half-infinite, contain a pole (0 for 1/x, log, rsqrt; negative bases for pow), are very
wide or very narrow, and its interval bounds and relaxation lines are checked against
dense float64 samples of the true function (numpy, independent of the op's own code).
An interval is closed in the extended reals: an infinite end is a value the model may
reach (overflow, a pole), so it is sampled too.  Where the true function is NaN at some
sample the bounds must be (-inf, inf) and the lines the constants -inf and +inf: nothing
that could be read as a proof.  End to end, small models with a pole, an overflow or a
NaN reachable in the box never get ``verified``; and a NaN branch-and-bound margin never
closes a domain.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from verifier import Settings, load_model, parse_vnnlib, verify
from verifier.ops.activations import (
    SELU_ALPHA,
    SELU_GAMMA,
    ExpLinear,
    GeluTanh,
    HardSwish,
    Mish,
    PRelu,
    Softplus,
    Softsign,
)
from verifier.ops.base import REGISTRY, Const, Var
from verifier.ops.bilinear import interval_matmul, interval_mul
from verifier.ops.branching import split_points
from verifier.ops.composite import Rsqrt
from verifier.ops.nonlinear import (
    Abs,
    Clip,
    Cos,
    Erf,
    Exp,
    Gelu,
    LeakyRelu,
    Log,
    MaxMinConst,
    PowConst,
    Reciprocal,
    Relu,
    ScalarOp,
    Sigmoid,
    Sin,
    Sqrt,
    Tanh,
)
from verifier.ops.relax import relax, slope_range
from verifier.search.attack import AttackSettings
from verifier.search.bab import BabSettings, proof_capable, still_open

INF = math.inf
X = [Var("x", (1, 1))]
NO_ATTACK = AttackSettings(restarts=1, steps=0)  # so the bounds alone decide



_erf = np.vectorize(math.erf, otypes=[np.float64])  # float64 references (stdlib, no scipy)


def _expit(x: np.ndarray) -> np.ndarray:
    """The logistic function in float64, without overflow at either end."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))

def _settings(**kw) -> Settings:
    """Settings for the bounds alone: no attack, and no onnxruntime comparison of the
    graph (where the Settings have it: NaN and infinite outputs are what is tested)."""
    if "check_model" in {f.name for f in dataclasses.fields(Settings)}:
        kw["check_model"] = False
    return Settings(**kw)


def _op(cls, attrs=None, inputs=None):
    return cls(dict({"_op_type": cls.__name__}, **(attrs or {})), inputs or X, (1, 1))


def _pow(p: float):
    return _op(PowConst, {}, [X[0], Const(np.array(p))]), lambda x: np.power(x, p)


def _gelu(x):
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _exp_linear(g: float, a: float, s: float):
    """g x above 0, g a (exp(x / s) - 1) below (Elu, Selu, Celu)."""
    return lambda x: np.where(x > 0, g * x, g * a * np.expm1(np.minimum(x, 0) / s))


def _leaky(alpha):
    return lambda x: np.where(x >= 0, x, alpha * x)


# name -> (op, the true function in numpy float64)
CASES = {
    "relu": (_op(Relu), lambda x: np.maximum(x, 0)),
    "leakyrelu": (_op(LeakyRelu, {"alpha": 0.2}), _leaky(0.2)),
    "leakyrelu_zero": (_op(LeakyRelu, {"alpha": 0.0}), _leaky(0.0)),
    "leakyrelu_negative": (_op(LeakyRelu, {"alpha": -0.5}), _leaky(-0.5)),
    "sigmoid": (_op(Sigmoid), _expit),
    "tanh": (_op(Tanh), np.tanh),
    "erf": (_op(Erf), _erf),
    "gelu": (_op(Gelu), _gelu),
    "sin": (_op(Sin), np.sin),
    "cos": (_op(Cos), np.cos),
    "exp": (_op(Exp), np.exp),
    "log": (_op(Log), np.log),
    "sqrt": (_op(Sqrt), np.sqrt),
    "reciprocal": (_op(Reciprocal), lambda x: 1 / x),
    "reciprocal_scaled": (_op(Reciprocal, {}, [Const(np.array(-3.0)), X[0]]), lambda x: -3 / x),
    "reciprocal_zero": (_op(Reciprocal, {}, [Const(np.array(0.0)), X[0]]), lambda x: 0 / x),
    "abs": (_op(Abs), np.abs),
    "pow2": _pow(2.0),
    "pow3": _pow(3.0),
    "pow1": _pow(1.0),
    "pow0": _pow(0.0),
    "pow_neg1": _pow(-1.0),
    "pow_neg2": _pow(-2.0),
    "pow_neg3": _pow(-3.0),
    "pow_half": _pow(0.5),
    "pow_1_5": _pow(1.5),
    "pow_neg_1_5": _pow(-1.5),
    "clip": (_op(Clip, {}, [X[0], Const(np.array(-0.5)), Const(np.array(1.5))]),
             lambda x: np.clip(x, -0.5, 1.5)),
    "max_const": (MaxMinConst({"_op_type": "Max"}, [X[0], Const(np.array(0.3))], ()),
                  lambda x: np.maximum(x, 0.3)),
    "min_const": (MaxMinConst({"_op_type": "Min"}, [X[0], Const(np.array(0.3))], ()),
                  lambda x: np.minimum(x, 0.3)),
    "rsqrt": (Rsqrt({"epsilon": 1e-5}, X, (1, 1)), lambda x: 1 / np.sqrt(x + 1e-5)),
    "rsqrt_eps0": (Rsqrt({"epsilon": 0.0}, X, (1, 1)), lambda x: 1 / np.sqrt(x + 0.0)),
    "elu": (_op(ExpLinear, {"_op_type": "Elu"}), _exp_linear(1.0, 1.0, 1.0)),
    "elu_concave_kink": (_op(ExpLinear, {"_op_type": "Elu", "alpha": 2.5}),
                         _exp_linear(1.0, 2.5, 1.0)),
    "elu_relu": (_op(ExpLinear, {"_op_type": "Elu", "alpha": 0.0}), _exp_linear(1.0, 0.0, 1.0)),
    "selu": (_op(ExpLinear, {"_op_type": "Selu"}), _exp_linear(SELU_GAMMA, SELU_ALPHA, 1.0)),
    "celu": (_op(ExpLinear, {"_op_type": "Celu", "alpha": 0.2}), _exp_linear(1.0, 0.2, 0.2)),
    "softplus": (_op(Softplus), lambda x: np.logaddexp(x, 0.0)),
    "softsign": (_op(Softsign), lambda x: x / (1 + np.abs(x))),
    "hardswish": (_op(HardSwish), lambda x: x * np.clip(x / 6 + 0.5, 0, 1)),
    "mish": (_op(Mish), lambda x: x * np.tanh(np.logaddexp(x, 0.0))),
    "gelu_tanh": (_op(GeluTanh), lambda x: 0.5 * x * (
        1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x * x * x)))),
    "prelu": (_op(PRelu, {}, [X[0], Const(np.array([0.3]))]), _leaky(0.3)),
    "prelu_zero": (_op(PRelu, {}, [X[0], Const(np.array([0.0]))]), _leaky(0.0)),
}


def test_every_scalar_op_class_has_a_case():
    classes = {c for c in REGISTRY.values() if isinstance(c, type) and issubclass(c, ScalarOp)}
    classes |= {MaxMinConst, Rsqrt}
    # the step functions relax by their own lines, tested over these intervals and more in
    # tests/verifier/test_op_step.py
    classes = {c for c in classes if c.__module__ != "verifier.ops.step"}
    covered = {type(op) for op, _ in CASES.values()}
    assert classes <= covered, f"no non-finite case for {classes - covered}"


# special intervals: infinite, half-infinite, poles, around -eps, wide, narrow, far out
SPECIAL = [
    (-INF, INF), (-INF, -INF), (INF, INF), (-INF, 0.0), (0.0, INF), (-INF, -5.0), (5.0, INF),
    (-INF, 3.0), (-2.0, INF), (-1.0, 1.0), (0.0, 1.0), (-1.0, 0.0), (0.0, 0.0), (-0.0, 0.0),
    (-3.0, -2.0), (-2.0, -1.0), (0.5, 2.0), (-1e-5, 1.0), (-2e-5, 1.0), (-1e-5, -1e-5),
    (-1e-300, 1e-300), (1e-300, 1e-299), (-1e300, 1e300), (-1e308, 1e308), (1e300, 1e308),
    (-1e6, 1e6), (1e15, 1e15 + 1), (1e8, 1e8 + 3), (-1e17, -1e17 + 64), (700.0, 800.0),
    (-800.0, -700.0), (2.0, 2.0), (1e-10, 1e-10 + 1e-20), (-1.5, -1.5 + 1e-12),
]


def _random_intervals(rng: np.random.Generator, n: int) -> list[tuple[float, float]]:
    """Random intervals at every scale, some with one end at +-inf or at 0."""
    mags = 10.0 ** rng.uniform(-12, 12, (n, 2))
    signs = rng.choice([-1.0, 1.0], (n, 2))
    ends = mags * signs
    ends[rng.uniform(size=n) < 0.1, 0] = -INF
    ends[rng.uniform(size=n) < 0.1, 1] = INF
    ends[rng.uniform(size=n) < 0.05, 0] = 0.0
    return [tuple(e) for e in np.sort(ends, axis=1)]


def _samples(lo: float, hi: float) -> np.ndarray:
    """Dense points of [lo, hi] in the extended reals: both ends (infinite ones too), a
    linear grid of the finite part, a geometric grid over every scale, and 0 and -0."""
    pts = [lo, hi]
    a, b = max(lo, -1e308), min(hi, 1e308)
    if a <= b:
        pts += list(a + np.linspace(0, 1, 801) * (b - a)) if b - a < INF else \
            list(np.linspace(a / 2, b / 2, 801) * 2)
        geo = 10.0 ** np.linspace(-320, 308, 1257)
        cand = np.concatenate([geo, -geo, [0.0, -0.0], a + (b - a) * 10.0 ** -np.arange(1, 17),
                               b - (b - a) * 10.0 ** -np.arange(1, 17)])
        pts += list(cand[(cand >= lo) & (cand <= hi)])
    return np.clip(np.array(pts, dtype=np.float64), lo, hi)  # the grid's rounding


def _true(fn, x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(fn(x), dtype=np.float64)


def _check_interval(name, lo, hi, blo, bhi, fx):
    where = f"{name} on [{lo!r}, {hi!r}]: bounds [{blo!r}, {bhi!r}]"
    assert not (math.isnan(blo) or math.isnan(bhi)), where + " are NaN"
    if np.isnan(fx).any():
        assert blo == -INF and bhi == INF, where + " but f is NaN somewhere in the interval"
        return
    tol = 1e-12 * (1 + np.abs(np.where(np.isfinite(fx), fx, 0)))
    assert bool(np.all((fx >= blo - tol) | (fx == blo))), \
        where + f" exclude f = {fx[fx < blo - tol][:3]}"
    assert bool(np.all((fx <= bhi + tol) | (fx == bhi))), \
        where + f" exclude f = {fx[fx > bhi + tol][:3]}"


def _intervals() -> list[tuple[float, float]]:
    return SPECIAL + _random_intervals(np.random.default_rng(12), 300)


@pytest.mark.parametrize("name", list(CASES))
def test_interval_bounds_contain_the_function_or_are_unknown(name):
    op, fn = CASES[name]
    ivs = _intervals()
    lo = torch.tensor([[a] for a, _ in ivs], dtype=torch.float64)
    hi = torch.tensor([[b] for _, b in ivs], dtype=torch.float64)
    blo, bhi = op.ibp((lo, hi))
    for i, (a, b) in enumerate(ivs):
        _check_interval(name, a, b, float(blo[i, 0]), float(bhi[i, 0]), _true(fn, _samples(a, b)))


def _line_at(a: float, b: float, x: np.ndarray) -> np.ndarray:
    """a x + b, a slope of 0 meaning the constant b also at infinite x."""
    with np.errstate(all="ignore"):
        return np.where(a == 0, b, a * x + b)


def _slope_trials(shape, lo: torch.Tensor, hi: torch.Tensor) -> list[tuple]:
    """CROWN's default slopes, and alpha-CROWN's kind: anywhere in slope_range (which may be
    infinite off regular intervals, making NaN or infinite slopes), the ends of that range."""
    smin, smax = slope_range(shape, lo, hi)
    rng = torch.Generator().manual_seed(3)
    trials: list[tuple] = [(None, None), (smin, smax), (smax, smin)]
    for _ in range(2):
        t = torch.rand(lo.shape, generator=rng, dtype=torch.float64)
        trials.append((smin + t * (smax - smin), smin + (1 - t) * (smax - smin)))
    nan = torch.full_like(lo, math.nan)
    trials.append((nan, torch.full_like(lo, INF)))
    return trials


def _check_lines(name, lo, hi, lines, i, x, fx):
    a_l, b_l, a_u, b_u = (float(t.reshape(-1)[i]) for t in
                          (lines.a_l, lines.b_l, lines.a_u, lines.b_u))
    where = f"{name} on [{lo!r}, {hi!r}]: lines {a_l!r} x + {b_l!r} .. {a_u!r} x + {b_u!r}"
    assert not any(math.isnan(v) for v in (a_l, b_l, a_u, b_u)), where + " hold a NaN"
    low, up = _line_at(a_l, b_l, x), _line_at(a_u, b_u, x)
    assert not (np.isnan(low).any() or np.isnan(up).any()), where + " are NaN at a sample"
    if np.isnan(fx).any():
        assert b_l == -INF and b_u == INF, where + " but f is NaN somewhere in the interval"
        return
    finite = [abs(v) if math.isfinite(v) else 0.0 for v in (b_l, b_u)]
    with np.errstate(over="ignore"):  # rounding of a x + b, relative to its terms' size
        scale = 1 + np.abs(np.where(np.isfinite(fx), fx, 0)) + np.abs(np.where(
            np.isfinite(x), x, 0)) * (abs(a_l) + abs(a_u)) + sum(finite)
    tol = 1e-10 * np.minimum(scale, np.finfo(np.float64).max)
    bad_low = ~((low <= fx + tol) | (low == fx))
    bad_up = ~((up >= fx - tol) | (up == fx))
    assert not bad_low.any(), where + f": lower line above f at x = {x[bad_low][:3]}"
    assert not bad_up.any(), where + f": upper line below f at x = {x[bad_up][:3]}"


@pytest.mark.parametrize("name", list(CASES))
def test_relaxation_lines_hold_or_are_infinite_constants(name):
    op, fn = CASES[name]
    ivs = _intervals()
    lo = torch.tensor([a for a, _ in ivs], dtype=torch.float64)
    hi = torch.tensor([b for _, b in ivs], dtype=torch.float64)
    shape = op.scalar_shape()
    l, u = op.domain(lo, hi)
    assert torch.equal(l, lo) and torch.equal(u, hi), "the domain must not be clamped"
    samples = [_samples(a, b) for a, b in ivs]
    truth = [_true(fn, x) for x in samples]
    for a_l, a_u in _slope_trials(shape, lo, hi):
        lines = relax(shape, lo, hi, a_l, a_u)
        for i, (a, b) in enumerate(ivs):
            _check_lines(name, a, b, lines, i, samples[i], truth[i])


# -- products and quotients --------------------------------------------------------------
PRODUCT_INTERVALS = [(-INF, INF), (0.0, INF), (-INF, 0.0), (1.0, INF), (-INF, -1.0), (0.0, 0.0),
                     (0.0, 1.0), (-1.0, 1.0), (-1.0, 0.0), (2.0, 3.0), (INF, INF), (-INF, -INF),
                     (-1e308, 1e308), (1e300, 1e308)]


def _product_samples(lo: float, hi: float) -> np.ndarray:
    pts = np.array([lo, hi, 0.0, 1.0, -1.0, 1e300, -1e300, 1e-300, (lo + hi) / 2])
    pts = pts[(pts >= lo) & (pts <= hi)]
    return np.concatenate([pts, [lo, hi]])


def _pairs():
    return [(a, b) for a in PRODUCT_INTERVALS for b in PRODUCT_INTERVALS]


def test_interval_product_contains_every_product_or_is_unknown():
    pairs = _pairs()
    t = lambda k, j: torch.tensor([p[k][j] for p in pairs], dtype=torch.float64)  # noqa: E731
    lo, hi = interval_mul((t(0, 0), t(0, 1)), (t(1, 0), t(1, 1)))
    for i, (a, b) in enumerate(pairs):
        xs, ys = _product_samples(*a), _product_samples(*b)
        with np.errstate(all="ignore"):
            prod = np.multiply.outer(xs, ys).ravel()
        _check_interval("x*y", a, b, float(lo[i]), float(hi[i]), prod)


def test_interval_matmul_contains_every_product_sum_or_is_unknown():
    """1x2 @ 2x1 interval matrices: the sum of two products, with infinite entries."""
    rng = np.random.default_rng(5)
    for _ in range(400):
        ia = [PRODUCT_INTERVALS[k] for k in rng.integers(0, len(PRODUCT_INTERVALS), 2)]
        ib = [PRODUCT_INTERVALS[k] for k in rng.integers(0, len(PRODUCT_INTERVALS), 2)]
        A = (torch.tensor([[[a for a, _ in ia]]]), torch.tensor([[[b for _, b in ia]]]))
        B = (torch.tensor([[[a] for a, _ in ib]]), torch.tensor([[[b] for _, b in ib]]))
        lo, hi = interval_matmul(A, B)
        s = [_product_samples(*iv) for iv in ia + ib]
        with np.errstate(all="ignore"):
            sums = (np.multiply.outer(s[0], s[2]).reshape(-1, 1) +
                    np.multiply.outer(s[1], s[3]).reshape(1, -1)).ravel()
        _check_interval("x1 y1 + x2 y2", ia, ib, float(lo.reshape(-1)[0]),
                        float(hi.reshape(-1)[0]), sums)


def test_split_points_lie_inside_infinite_and_huge_intervals():
    table = np.full((65, 33), 0.5)
    lo = torch.tensor([-INF, -INF, 3.0, -INF, -1e308, 2.0, -5.0], dtype=torch.float64)
    hi = torch.tensor([INF, -4.0, INF, 0.0, 1e308, 2.0, 7.0], dtype=torch.float64)
    p = split_points(table, lo, hi)
    assert bool(torch.isfinite(p).all()), p
    assert bool(((p >= lo) & (p <= hi)).all()), p
    strict = hi > lo
    assert bool(((p > lo) & (p < hi))[strict].all()), p


# -- branch and bound: a NaN margin never closes a domain ---------------------------------
def test_nan_and_infinite_row_bounds_prove_nothing():
    rows = torch.tensor([[math.nan, 1.0], [INF, -1.0], [-INF, 2.0], [0.5, math.nan]])
    assert torch.equal(proof_capable(rows)[:, 0], torch.tensor([-INF, -INF, -INF, 0.5]))
    margin = torch.tensor([math.nan, 0.0, -1.0, 1e-9, INF])
    assert still_open(margin).tolist() == [True, True, True, False, False]


def _identity_model(n: int = 1) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "id",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, n))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, n))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _box_spec(boxes: list[tuple[float, float]], out: str) -> str:
    decl = "".join(f"(declare-const X_{i} Real)\n" for i in range(len(boxes)))
    decl += "(declare-const Y_0 Real)\n"
    ins = "".join(f"(assert (>= X_{i} {a!r}))\n(assert (<= X_{i} {b!r}))\n"
                  for i, (a, b) in enumerate(boxes))
    return decl + ins + f"(assert {out})\n"


def test_nan_branch_and_bound_margin_never_closes_a_domain(monkeypatch):
    """Every bound branch-and-bound computes is NaN: it must not answer verified (before
    the fix a NaN margin failed ``margin <= 0`` and the domain was dropped as refuted)."""
    import verifier.search.bab as bab

    def nan_rows(nb, C, d, splits, iterations, lr=0.1, expired=lambda: False, start=None):
        return torch.full(C.shape[:2], math.nan, dtype=C.dtype, device=C.device), None

    def nan_lines(nb, start, A, A_x, bias, met):  # the rows' bound, NaN
        return A_x, bias, torch.full_like(bias, math.nan)

    monkeypatch.setattr(bab, "optimise_final", nan_rows)  # activation splitting
    monkeypatch.setattr(bab, "at_minimiser", nan_lines)  # input splitting
    model = load_model(_identity_model())
    prop = parse_vnnlib(_box_spec([(1.0, 2.0)], "(<= Y_0 -1.0)"))  # true, yet unproven
    result = verify(model, prop, _settings(timeout=3, methods=(), attack=NO_ATTACK))
    assert result.verdict != "verified", result.message


# -- end to end: a pole, an overflow or a NaN reachable, and the answer is never verified --
def _model(nodes, inits, n_in: int, out: str = "y", opset: int = 17) -> bytes:
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, n_in))],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, (1, 1))], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]
                             ).SerializeToString()


def _split2(nodes, inits):
    """x (1, 2) -> a, b (1, 1) each."""
    inits += [numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "halves")]
    nodes.append(helper.make_node("Split", ["x", "halves"], ["a", "b"], axis=1))


def _unary(op: str, *consts: float, **attrs) -> bytes:
    inits = [numpy_helper.from_array(np.array(c, dtype=np.float32), f"c{i}")
             for i, c in enumerate(consts)]
    node = helper.make_node(op, ["x"] + [f"c{i}" for i in range(len(consts))], ["y"], **attrs)
    return _model([node], inits, 1)


def _div() -> bytes:
    nodes, inits = [], []
    _split2(nodes, inits)
    nodes.append(helper.make_node("Div", ["a", "b"], ["y"]))
    return _model(nodes, inits, 2)


def _mul_exp() -> bytes:
    """y = a * exp(b): exp overflows in float32, and 0 * inf is NaN."""
    nodes, inits = [], []
    _split2(nodes, inits)
    nodes += [helper.make_node("Exp", ["b"], ["e"]), helper.make_node("Mul", ["a", "e"], ["y"])]
    return _model(nodes, inits, 2)


def _sin_exp() -> bytes:
    nodes = [helper.make_node("Exp", ["x"], ["e"]), helper.make_node("Sin", ["e"], ["y"])]
    return _model(nodes, [], 1)


def _layernorm_eps0() -> bytes:
    """LayerNorm of two features with epsilon 0: x1 = x2 gives 0 / 0, and a tiny x1 - x2
    gives a variance that underflows to 0 and an infinite output."""
    inits = [numpy_helper.from_array(np.ones(2, np.float32), "g"),
             numpy_helper.from_array(np.zeros(2, np.float32), "bb"),
             numpy_helper.from_array(np.array([0], dtype=np.int64), "first"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "ax")]
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "bb"], ["n"], axis=-1,
                              epsilon=0.0),
             helper.make_node("Slice", ["n", "first", "one", "ax"], ["y"])]
    return _model(nodes, inits, 2)


E2E = {
    # x^p on negative bases (the base was clamped to >= 0: over [-2, 1], [1, inf])
    "pow_neg1_negative_base": (_unary("Pow", -1.0), [(-0.1, 1.0)], "(<= Y_0 -20.0)"),
    "pow_neg2_negative_base": (_unary("Pow", -2.0), [(-2.0, 1.0)], "(<= Y_0 0.5)"),
    "pow_neg3_negative_base": (_unary("Pow", -3.0), [(-0.1, 1.0)], "(<= Y_0 -2000.0)"),
    "pow_neg2_below_zero": (_unary("Pow", -2.0), [(-2.0, -1.0)], "(<= Y_0 2.0)"),
    # log near 0 (was clamped to >= 1e-30: CROWN's lower line about -69 at x = 0)
    "log_at_zero": (_unary("Log"), [(0.0, 1.0)], "(<= Y_0 -100.0)"),
    # NaN reachable: log, sqrt and fractional powers of negatives (were clamped to 0)
    "log_of_negative": (_unary("Log"), [(-1.0, 1.0)], "(>= Y_0 1.0)"),
    "sqrt_of_negative": (_unary("Sqrt"), [(-1.0, 1.0)], "(<= Y_0 -0.5)"),
    "pow_half_of_negative": (_unary("Pow", 0.5), [(-1.0, 1.0)], "(<= Y_0 -0.5)"),
    # a pole inside the box: 1/x and a/b over b containing 0
    "reciprocal_pole": (_unary("Reciprocal"), [(-1.0, 3.0)], "(>= Y_0 1000.0)"),
    "division_pole": (_div(), [(1.0, 2.0), (-1.0, 3.0)], "(>= Y_0 1000.0)"),
    # float32 overflow: exp -> inf, a * inf, sin(inf) = NaN
    "mul_exp_overflow": (_mul_exp(), [(-0.5, 1.0), (0.0, 200.0)], "(<= Y_0 -1e30)"),
    "sin_of_exp_overflow": (_sin_exp(), [(0.0, 200.0)], "(>= Y_0 2.0)"),
    # LayerNorm with epsilon 0 (the variance was clamped to >= 1e-12)
    "layernorm_eps0": (_layernorm_eps0(), [(0.0, 1.0), (0.0, 1.0)], "(>= Y_0 1e7)"),
}

BOUNDS_ONLY = _settings(timeout=4, attack=NO_ATTACK, bab_settings=BabSettings(max_domains=2000))


@pytest.mark.parametrize("settings", [BOUNDS_ONLY, Settings(timeout=4)],
                         ids=["bounds_only", "defaults"])
@pytest.mark.parametrize("name", list(E2E))
def test_unprovable_property_is_never_verified(name, settings):
    model_bytes, boxes, out = E2E[name]
    model = load_model(model_bytes)
    prop = parse_vnnlib(_box_spec(boxes, out))
    result = verify(model, prop, settings)
    assert result.verdict != "verified", f"{name}: {result.verdict}: {result.message}"


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_periodic_bounds_in_float32_far_from_zero(name):
    """float32 (the default compute type): k*pi far from 0 misses the peaks; the bounds
    must still contain sin / cos, within float32 rounding of the result."""
    op, fn = CASES[name]
    rng = np.random.default_rng(7)
    centres = np.concatenate([10.0 ** rng.uniform(0, 7, 300), -(10.0 ** rng.uniform(0, 7, 300))])
    lo32 = torch.tensor(centres, dtype=torch.float32)
    hi32 = lo32 + torch.tensor(10.0 ** rng.uniform(-3, 0.7, 600), dtype=torch.float32)
    blo, bhi = op.ibp((lo32, hi32))
    for i in range(len(centres)):
        a, b = float(lo32[i]), float(hi32[i])
        fx = _true(fn, np.linspace(a, b, 2001))
        assert fx.min() >= float(blo[i]) - 4e-7 and fx.max() <= float(bhi[i]) + 4e-7, \
            f"{name} on [{a}, {b}] (float32): [{float(blo[i])}, {float(bhi[i])}]"


def _layernorm0_truth(x: np.ndarray) -> np.ndarray:
    c = x - x.mean(axis=1, keepdims=True)
    return c[:, 0] / np.sqrt((c * c).mean(axis=1))


# CROWN through products and quotients (McCormick planes) with infinite and pole-holding
# intermediate boxes: (model, input box, the true output in numpy float64)
CROWN_CASES = {
    "division_pole": (_div(), [(1.0, 2.0), (-1.0, 3.0)], lambda x: x[:, 0] / x[:, 1]),
    "mul_exp_overflow": (_mul_exp(), [(-0.5, 1.0), (0.0, 800.0)],
                         lambda x: x[:, 0] * np.exp(x[:, 1])),
    "sin_of_exp_overflow": (_sin_exp(), [(0.0, 800.0)], lambda x: np.sin(np.exp(x[:, 0]))),
    "layernorm_eps0": (_layernorm_eps0(), [(0.0, 1.0), (0.0, 1.0)], _layernorm0_truth),
    "log_at_zero": (_unary("Log"), [(0.0, 1.0)], lambda x: np.log(x[:, 0])),
}


@pytest.mark.parametrize("name", list(CROWN_CASES))
def test_crown_bounds_through_poles_and_overflow_exclude_nothing(name):
    """CROWN's lower bounds of +y and -y (float64) against samples of the box (its corners,
    a grid, points on the diagonal where LayerNorm's variance is 0): a bound may be
    infinite or NaN (never a proof), but a finite one must hold at every sample, and where
    y is NaN at a sample no finite bound may stand."""
    from verifier.bounds.crown import crown_rows

    model_bytes, boxes, truth = CROWN_CASES[name]
    graph = load_model(model_bytes).graph
    lo = torch.tensor([[a for a, _ in boxes]], dtype=torch.float64)
    hi = torch.tensor([[b for _, b in boxes]], dtype=torch.float64)
    C = torch.tensor([[[1.0], [-1.0]]], dtype=torch.float64)
    with torch.no_grad():
        lb = crown_rows(graph, lo, hi, C, torch.zeros(1, 2, dtype=torch.float64))[0]
    axes = [np.unique(np.clip(np.concatenate([np.linspace(a, b, 41), [0.0, 1e-300, 1e-30]]),
                              a, b)) for a, b in boxes]
    xs = np.stack(np.meshgrid(*axes), -1).reshape(-1, len(boxes))
    y = _true(truth, xs)
    for row, sign in enumerate((1.0, -1.0)):
        bound = float(lb[row])
        if math.isnan(bound) or bound == -INF:
            continue
        assert not np.isnan(y).any(), f"{name}: finite bound {bound} of {sign} y, y NaN"
        assert bound <= float(np.min(sign * y)), f"{name}: {sign} y >= {bound} excludes samples"
