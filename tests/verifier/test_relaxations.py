"""Every scalar relaxation contains its function: dense samples of many random intervals
(narrow, wide, crossing inflection points and zero, large magnitudes), for CROWN's default
slopes and for random slopes anywhere in the range alpha-CROWN may choose."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from verifier.ops.activations import ExpLinear, GeluTanh, HardSwish, Mish, Softplus, Softsign
from verifier.ops.base import Const, Var
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
    Sigmoid,
    Sin,
    Sqrt,
    Tanh,
)
from verifier.ops.relax import relax, slope_range

X = [Var("x", (1, 1))]


def _op(cls, attrs=None, inputs=None):
    attrs = dict(attrs or {}, _op_type=cls.__name__)
    return cls(attrs, inputs or X, (1, 1))


OPS = {
    "relu": (_op(Relu), None),
    "leakyrelu": (_op(LeakyRelu, {"alpha": 0.2}), None),
    "sigmoid": (_op(Sigmoid), None),
    "tanh": (_op(Tanh), None),
    "erf": (_op(Erf), None),
    "gelu": (_op(Gelu), None),
    "sin": (_op(Sin), None),
    "cos": (_op(Cos), None),
    "exp": (_op(Exp), (-30.0, 30.0)),
    "log": (_op(Log), (1e-3, 1e3)),
    "sqrt": (_op(Sqrt), (0.0, 1e3)),
    "reciprocal_pos": (_op(Reciprocal), (1e-2, 1e2)),
    "reciprocal_neg": (_op(Reciprocal), (-1e2, -1e-2)),
    "reciprocal_scaled": (_op(Reciprocal, {}, [Const(np.array(-3.0)), X[0]]), (1e-2, 1e2)),
    "abs": (_op(Abs), None),
    "pow2": (_op(PowConst, {}, [X[0], Const(np.array(2.0))]), None),
    "pow3": (_op(PowConst, {}, [X[0], Const(np.array(3.0))]), (-20.0, 20.0)),
    "pow_half": (_op(PowConst, {}, [X[0], Const(np.array(0.5))]), (0.0, 100.0)),
    "pow_neg": (_op(PowConst, {}, [X[0], Const(np.array(-1.5))]), (1e-2, 100.0)),
    "clip": (_op(Clip, {}, [X[0], Const(np.array(-0.5)), Const(np.array(1.5))]), None),
    # one limit only: the relaxation's extreme-point candidate is that limit's kink
    "clip_min_only": (_op(Clip, {}, [X[0], Const(np.array(-0.5))]), None),
    "clip_max_only": (_op(Clip, {}, [X[0], Const(np.array([], dtype=np.float32)),
                                     Const(np.array(1.5))]), None),
    "max_const": (MaxMinConst({"_op_type": "Max"}, [X[0], Const(np.array(0.3))], ()), None),
    "min_const": (MaxMinConst({"_op_type": "Min"}, [X[0], Const(np.array(0.3))], ()), None),
    "rsqrt": (Rsqrt({"epsilon": 1e-5}, X, (1, 1)), (0.0, 1e3)),
    "elu": (ExpLinear({"_op_type": "Elu"}, X, (1, 1)), None),
    "elu_convex_kink": (ExpLinear({"_op_type": "Elu", "alpha": 0.3}, X, (1, 1)), None),
    "elu_concave_kink": (ExpLinear({"_op_type": "Elu", "alpha": 2.5}, X, (1, 1)), None),
    "elu_relu": (ExpLinear({"_op_type": "Elu", "alpha": 0.0}, X, (1, 1)), None),
    "selu": (ExpLinear({"_op_type": "Selu"}, X, (1, 1)), None),
    "selu_attrs": (ExpLinear({"_op_type": "Selu", "alpha": 0.5, "gamma": 3.0}, X, (1, 1)), None),
    "celu": (ExpLinear({"_op_type": "Celu", "alpha": 0.2}, X, (1, 1)), None),
    "celu_wide": (ExpLinear({"_op_type": "Celu", "alpha": 7.0}, X, (1, 1)), None),
    "softplus": (_op(Softplus), None),
    "softsign": (_op(Softsign), None),
    "hardswish": (_op(HardSwish), None),
    "mish": (_op(Mish), None),
    "gelu_tanh": (_op(GeluTanh), None),  # chosen by Gelu.select, not in the registry
}


def _intervals(rng: np.random.Generator, domain, n: int = 300):
    """Random intervals of many widths and places, clipped to the function's domain."""
    lo_dom, hi_dom = domain or (-60.0, 60.0)
    centres = np.concatenate([
        rng.uniform(-3, 3, n // 3), rng.uniform(-0.2, 0.2, n // 3),
        rng.uniform(-40, 40, n - 2 * (n // 3))])
    widths = 10 ** rng.uniform(-5, 1.6, n)
    l = np.clip(centres - widths / 2, lo_dom, hi_dom)
    u = np.clip(centres + widths / 2, lo_dom, hi_dom)
    u = np.maximum(u, l)
    return torch.tensor(l), torch.tensor(u)


@pytest.mark.parametrize("name", list(OPS))
def test_relaxation_contains_function(name):
    op, domain = OPS[name]
    seed = zlib.crc32(name.encode())  # stable across processes, unlike hash() of a str
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)  # the random slopes: not the global generator
    l, u = _intervals(rng, domain)
    l, u = op.domain(l, u)
    shape = op.scalar_shape()
    grid = torch.linspace(0, 1, 2001, dtype=torch.float64).unsqueeze(1)
    xs = l + grid * (u - l)  # (2001, n), includes both ends
    fx = op.f(xs)
    finite = torch.isfinite(fx).all(dim=0)
    smin, smax = slope_range(shape, l, u)
    trials = [None] + [smin + torch.rand(l.shape, dtype=torch.float64, generator=gen)
                       * (smax - smin)
                       for _ in range(4)] + [smin, smax]
    for slopes in trials:
        lines = relax(shape, l, u, slopes, slopes)
        lower = lines.a_l * xs + lines.b_l
        upper = lines.a_u * xs + lines.b_u
        # rounding when a line is evaluated: relative to the size of its terms
        scale = 1 + fx.abs() + (lines.a_l * xs).abs() + lines.b_l.abs() + (lines.a_u * xs).abs() \
            + lines.b_u.abs()
        tol = 1e-12 * scale
        bad_low = ((lower > fx + tol) & finite).any(dim=0)
        bad_up = ((upper < fx - tol) & finite).any(dim=0)
        assert not bad_low.any(), f"lower line above f on [{l[bad_low][0]}, {u[bad_low][0]}]"
        assert not bad_up.any(), f"upper line below f on [{l[bad_up][0]}, {u[bad_up][0]}]"


def test_relu_triangle_is_textbook():
    """One crossing ReLU on [l, u]: upper line u/(u-l) (x - l); lower slope 0 or 1."""
    op = OPS["relu"][0]
    l, u = torch.tensor([-1.0, -3.0]), torch.tensor([3.0, 1.0])
    lines = relax(op.scalar_shape(), l, u)
    assert torch.allclose(lines.a_u, u / (u - l))
    assert torch.allclose(lines.b_u, -u * l / (u - l))
    assert torch.equal(lines.a_l, torch.tensor([1.0, 0.0]))
    assert torch.equal(lines.b_l, torch.tensor([0.0, 0.0]))


def test_sigmoid_matches_tangent_and_chord_in_convex_region():
    op = OPS["sigmoid"][0]
    l, u = torch.tensor([-4.0], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)
    lines = relax(op.scalar_shape(), l, u)
    m = -2.5
    s = 1 / (1 + math.exp(-m))
    assert math.isclose(float(lines.a_l), s * (1 - s), rel_tol=1e-9)  # tangent at midpoint
    chord = (1 / (1 + math.exp(1)) - 1 / (1 + math.exp(4))) / 3
    assert math.isclose(float(lines.a_u), chord, rel_tol=1e-9)


@pytest.mark.parametrize("op_type,attrs", [("Relu", {}), ("LeakyRelu", {"alpha": 0.2}),
                                           ("PRelu", {})])
def test_closed_form_relu_rule_matches_general_lines_and_is_sound(op_type, attrs):
    """ReLU, LeakyReLU and PRelu (a slope per entry, 0 and 1 among them) relax in closed
    form (ReluRelaxation); for CROWN's slopes its lines are the general mechanism's, and for
    random slopes in [0, 1] the bounds contain the function at dense samples of every
    interval."""
    from onnx import TensorProto, helper, numpy_helper

    from verifier import load_model

    n = 64
    slope = np.concatenate([[0.0, 1.0], np.random.default_rng(4).uniform(0, 1, n - 2)])
    inits = [numpy_helper.from_array(slope, "S")] if op_type == "PRelu" else []
    node = helper.make_node(op_type, ["X"] + ["S"] * bool(inits), ["Y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "X", TensorProto.DOUBLE, (1, n))], [helper.make_tensor_value_info(
            "Y", TensorProto.DOUBLE, (1, n))], inits)
    g = load_model(helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17)]).SerializeToString()).graph
    op = g.nodes[-1].op
    rng = np.random.default_rng(5)
    centre = rng.uniform(-2, 2, (1, n))
    radius = 10 ** rng.uniform(-4, 0.5, (1, n))
    L, U = torch.tensor(centre - radius), torch.tensor(centre + radius)
    box = (L.reshape(1, n), U.reshape(1, n))
    relaxation = op.relax([box], op.ibp(box))
    ours = relaxation.lines()
    ref = relax(op.scalar_shape(), L.reshape(1, n), U.reshape(1, n))
    for got, want in ((ours.a_l, ref.a_l), (ours.b_l, ref.b_l), (ours.a_u, ref.a_u),
                      (ours.b_u, ref.b_u)):
        assert torch.allclose(got.reshape(1, n), want, atol=1e-12)
    xs = L + torch.rand(2000, n, dtype=torch.float64) * (U - L)
    xs = torch.cat([xs, L, U, torch.zeros(1, n).clamp(L, U)])
    ys = op.f(xs)
    for _ in range(5):  # random lower slopes for each row
        t = torch.rand(1, 2 * n, n, dtype=torch.float64)
        ln = relaxation.lines_for((t, t.clone()))  # (1, rows, n)
        x = xs.unsqueeze(1)  # (samples, 1, n)
        assert (ln.a_l * x + ln.b_l <= ys.unsqueeze(1) + 1e-12).all()
        assert (ln.a_u * x + ln.b_u >= ys.unsqueeze(1) - 1e-12).all()


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_one_inflection_intercepts_match_the_general_rule(name):
    """Sigmoid and tanh take their intercepts in closed form (one root per side); for
    slopes inside and outside f's slope range, on wide, narrow, one-sided and point
    intervals, they are the general rule's (the minimum over ``extreme_points``), up to
    the last bit of f."""
    from verifier.ops.relax import intercepts

    op, _ = OPS[name]
    shape = op.scalar_shape()
    assert shape.fast_intercepts is not None
    l, u = _intervals(np.random.default_rng(7), None, 3000)
    l[:50] = u[:50]  # points
    smin, smax = slope_range(shape, l, u)
    gen = torch.Generator().manual_seed(7)
    for t in (0.0, 0.5, 1.0, None):
        if t is None:  # anywhere, beyond the range too
            a = torch.randn(l.shape, dtype=torch.float64, generator=gen)
        else:
            a = smin + t * (smax - smin)
        b_l, b_u = shape.fast_intercepts(l, u, a, a)
        # the same candidates; f at them may differ in the last bit (vectorised tails)
        tol = 1e-15 * (1 + a.abs() * (l.abs() + u.abs()))
        assert bool(((b_l - intercepts(shape, l, u, a, lower=True)).abs() <= tol).all())
        assert bool(((b_u - intercepts(shape, l, u, a, lower=False)).abs() <= tol).all())


def test_lines_for_parameters_keep_their_ranges_only_over_constant_bounds():
    """A relaxation over fixed bounds keeps what its lines for parameters need besides
    them: lines for new parameters equal a fresh relaxation's; over bounds that carry a
    gradient nothing is kept, and the gradient reaches the bounds at every call."""
    from verifier.ops.relax import ScalarRelaxation

    op, _ = OPS["sigmoid"]
    shape = op.scalar_shape()
    gen = torch.Generator().manual_seed(3)
    lo = torch.randn(2, 8, dtype=torch.float64, generator=gen) * 3
    hi = lo + torch.rand(2, 8, dtype=torch.float64, generator=gen) * 4
    kept = ScalarRelaxation(shape, lo, hi)
    for _ in range(3):
        params = tuple(torch.rand(2, 5, 8, dtype=torch.float64, generator=gen) for _ in "lu")
        got, want = kept.lines_for(params), ScalarRelaxation(shape, lo, hi).lines_for(params)
        for x, y in zip((got.a_l, got.b_l, got.a_u, got.b_u),
                        (want.a_l, want.b_l, want.a_u, want.b_u), strict=True):
            assert torch.equal(x, y)
    lo_g = lo.clone().requires_grad_(True)
    moving = ScalarRelaxation(shape, lo_g, hi)
    for _ in range(2):
        params = tuple(torch.rand(2, 5, 8, dtype=torch.float64, generator=gen) for _ in "lu")
        (g,) = torch.autograd.grad(moving.lines_for(params).b_l.sum(), lo_g)
        assert torch.isfinite(g).all() and bool((g != 0).any())
