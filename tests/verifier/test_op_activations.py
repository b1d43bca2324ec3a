"""Elu, Selu, Celu, Softplus, Softsign, Mish, Gelu's tanh form, HardSigmoid, HardSwish and PRelu
(verifier/ops/activations.py; the HardSigmoid lowering in verifier/importer/lowering.py).
Their lines are sampled densely over random intervals in test_relaxations.py (every kink
shape: convex, concave, ReLU).

- onnxruntime: one node at every opset from the op's first (7 for the older ones) with
  default and other attributes, on a grid through the kinks, tiny, huge and infinite
  values: our forward agrees, and the point enclosure (interval propagation with the
  op's rounding bound) holds onnxruntime's value; random forms in the importer's fuzzing
  (``FUZZ``, run by test_import_fuzz.py).
- The engine's IBP, CROWN and alpha-CROWN bounds contain onnxruntime's outputs on dense
  samples of random boxes, end to end through a net with the op between two layers.
- Attributes outside the implemented range are refused by name.
- Mish's and GeLU tanh form's inflection points, minima and slope bounds (no closed form)
  are recomputed to 50 digits: the stated float64 values are the nearest, f'' changes
  sign across each and f' vanishes at the minimum.
- ``verify``: a property true with a margin is verified; one violated only near a corner
  of the box is falsified with a counterexample onnxruntime confirms; a one-point box
  whose unsafe set starts at onnxruntime's own value is falsified, never verified.
- PRelu: slopes as a scalar, per channel, along the last axis and per entry, at opsets 9,
  16 and 20; the same bound and verify checks; slopes outside [0, 1] and a slope that does
  not broadcast are refused by name.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from verifier import Settings, load_model, parse_vnnlib, verify
from verifier.errors import UnsupportedOpError

from .fuzzgraph import G, fl, maybe, opset, put, shape_of
from .opcases import assert_bounds_contain, verify_both_ways

F32 = np.float32
FIRST_OPSET = {"Elu": 7, "Selu": 7, "Celu": 12, "Softplus": 7, "Softsign": 7,
               "HardSigmoid": 7, "HardSwish": 14, "Mish": 18, "Gelu": 20}
ATTRS = {
    "Elu": [{}, {"alpha": 0.3}, {"alpha": 2.5}, {"alpha": 0.0}],
    "Selu": [{}, {"alpha": 0.5, "gamma": 3.0}, {"gamma": 0.25}],
    "Celu": [{}, {"alpha": 0.2}, {"alpha": 7.0}],
    "Softplus": [{}],
    "Softsign": [{}],
    "HardSwish": [{}],
    "Mish": [{}],
    "Gelu": [{"approximate": "tanh"}],  # the erf form: test_ops_agreement.py and others
    "HardSigmoid": [{}, {"alpha": -0.7, "beta": 0.1}, {"alpha": 3.0, "beta": -2.0},
                    {"alpha": 0.0, "beta": 1.5}],
}
NAMES = sorted(ATTRS)


def _one_node(op: str, attrs: dict, opset_: int, n: int) -> bytes:
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "act",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset_)]) \
        .SerializeToString()


def _ort(data: bytes, xs: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"x": x[None]})[0] for x in xs])


GRID = np.concatenate([np.linspace(-12, 12, 4001), 10.0 ** np.arange(-30, 31, 3),
                       -10.0 ** np.arange(-30, 31, 3), [0.0, -0.0, np.inf, -np.inf],
                       np.float32([-0.5, 0.5, 2.0, -2.0, -1 / 3, 2 / 3])]).astype(F32)


@pytest.mark.parametrize("op", NAMES)
def test_one_node_agrees_with_onnxruntime_at_every_opset(op: str):
    for opset_ in range(FIRST_OPSET[op], 22):
        for attrs in ATTRS[op]:
            data = _one_node(op, attrs, opset_, len(GRID))
            y = _ort(data, GRID[None])[0].astype(np.float64)
            model = load_model(data)
            x64 = torch.tensor(GRID[None], dtype=torch.float64)
            ours = model.graph.forward(x64).numpy().ravel()
            finite = np.isfinite(y)
            # exp(x / s) - 1 as it reads: a few ulps of 1, times g a
            atol = 1e-7 * max(1.0, abs(attrs.get("alpha", 1.0)) * attrs.get("gamma", 1.0)) * 8
            np.testing.assert_allclose(ours[finite], y[finite], rtol=1e-6, atol=atol,
                                       err_msg=f"{op} {attrs} opset {opset_}")
            assert np.array_equal(np.isnan(ours), np.isnan(y)), (op, attrs)
            for dtype in (torch.float32, torch.float64):
                t = torch.tensor(GRID[None]).to(dtype)
                lo, hi = (b.double().numpy().ravel() for b in model.graph.ibp(t, t))
                ok = np.isnan(y) | ((lo <= y) & (y <= hi))
                assert ok.all(), (op, attrs, opset_, GRID[~ok][:3], y[~ok][:3])


def _net(op: str, attrs: dict, seed: int) -> bytes:
    """x (1, 3) -> Gemm (8) -> op -> Gemm (2)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.normal(size=s) * k).astype(F32), name)
             for name, s, k in (("W1", (3, 8), 1.5), ("b1", (8,), 0.5), ("W2", (8, 2), 1.0))]
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"]),
             helper.make_node(op, ["h"], ["a"], **attrs),
             helper.make_node("MatMul", ["a", "W2"], ["y"])]
    graph = helper.make_graph(nodes, "net",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", _opset(op))]) \
        .SerializeToString()


def _opset(op: str) -> int:
    return max(17, FIRST_OPSET.get(op, 7))


@pytest.mark.parametrize("op", NAMES)
def test_engine_bounds_contain_the_outputs(op: str):
    rng = np.random.default_rng(len(op))
    for k, attrs in enumerate(ATTRS[op]):
        data = _net(op, attrs, seed=k)
        model = load_model(data)
        widths = np.array([1e-4, 0.05, 0.5, 2.0, 6.0])[:, None]
        centre = rng.uniform(-1, 1, (5, 3))
        lo, hi = centre - widths * rng.uniform(0.2, 1, (5, 3)), centre + widths
        assert_bounds_contain(model.graph, lambda xs, d=data: _ort(d, xs), lo, hi, 2, rng,
                              tag=(op, attrs))


@pytest.mark.parametrize("op,attrs,what", [
    ("Celu", {"alpha": 0.0}, "alpha=0.0"), ("Celu", {"alpha": -1.0}, "alpha=-1.0"),
    ("Elu", {"alpha": -0.5}, "alpha=-0.5"), ("Selu", {"gamma": -1.0}, "gamma=-1.0"),
    ("Selu", {"alpha": -2.0}, "alpha=-2.0")])
def test_attributes_outside_the_implemented_range_are_refused_by_name(op, attrs, what):
    with pytest.raises(UnsupportedOpError, match=what):
        load_model(_net(op, attrs, seed=0))


def _verify_both_ways(data: bytes, n: int, seed: int, tag: object) -> None:
    verify_both_ways(data, lambda xs: _ort(data, xs), n, 2, seed=seed, tag=tag)


@pytest.mark.parametrize("op", NAMES)
def test_true_property_is_verified_and_violated_one_falsified(op: str):
    _verify_both_ways(_net(op, ATTRS[op][-1], seed=11), 3, seed=12, tag=op)


@pytest.mark.parametrize("op,attrs", [(op, attrs) for op in NAMES for attrs in ATTRS[op]])
def test_a_threshold_at_onnxruntimes_own_value_is_never_proved(op: str, attrs: dict):
    """One-point boxes (a kink, tiny and large inputs, where exp(x / s) - 1 cancels) whose
    unsafe set starts exactly at onnxruntime's value, from above and from below: the point
    is a counterexample, so `verified` would be a false proof."""
    points = np.array([0.0, -1e-3, 1e-3, -0.37, -3.0, 3.0, -25.0, 40.0], F32)
    data = _one_node(op, attrs, _opset(op), 1)
    model = load_model(data)
    head = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
    for x in points:
        y = float(_ort(data, np.array([[x]], F32))[0, 0])
        box = head + f"(assert (>= X_0 {float(x)!r}))\n(assert (<= X_0 {float(x)!r}))\n"
        for relation in (">=", "<="):
            spec = parse_vnnlib(box + f"(assert ({relation} Y_0 {y!r}))\n", 1, 1)
            result = verify(model, spec, Settings(timeout=10))
            assert result.verdict == "falsified", (op, attrs, float(x), relation, result.message)


def _roots_and_flips(f, stated: list[tuple[float, int, float]], reach: float):
    """Each (value, order, guess): the value is the float64 nearest the root of f's
    order-th derivative near guess (mpmath, at the caller's precision), and that derivative
    changes sign across the root.  Returns where f'' changes sign on a grid of step 1/50
    over [-reach, reach], and its signs at the grid's two ends."""
    import mpmath as mp

    for value, order, guess in stated:
        root = mp.findroot(lambda x, k=order: mp.diff(f, x, k), guess)
        assert value == float(root), (value, root)
        step = mp.mpf(2) ** -45
        assert mp.diff(f, root - step, order) * mp.diff(f, root + step, order) < 0
    n = int(100 * reach)
    grid = [mp.mpf(i) / 50 - reach for i in range(n + 1)]
    signs = [mp.sign(mp.diff(f, x, 2)) for x in grid]
    flips = [float(grid[i]) for i in range(n) if signs[i] != signs[i + 1]]
    return flips, (signs[0], signs[-1])


def test_mish_constants_are_the_roots():
    import mpmath as mp

    from verifier.ops.activations import MISH_MIN_AT, MISH_P1, MISH_P2, Mish

    mp.mp.dps = 50

    def f(x):
        return x * mp.tanh(mp.log1p(mp.exp(x)))

    # the only flips of f'' on a fine grid of [-40, 40] (beyond: one sign, asymptotically)
    flips, ends = _roots_and_flips(f, [(MISH_P1, 2, -2.2), (MISH_P2, 2, 1.5),
                                       (MISH_MIN_AT, 1, -1.2)], 40)
    assert len(flips) == 2 and abs(flips[0] - MISH_P1) < 0.02 and abs(flips[1] - MISH_P2) < 0.02
    assert ends[0] < 0 and ends[1] < 0
    top = mp.diff(f, mp.findroot(lambda x: mp.diff(f, x, 2), 1.5), 1)
    assert top < Mish.slope_bound < top + 1e-4


def test_gelu_tanh_constants_are_the_roots():
    """GeLU's tanh form: -P and P are the roots of f'' (f'' even), C the minimum, to 50
    digits; f'' changes sign only there on [-10, 10] (beyond, its sign is argued in
    verifier/ops/activations.py); the slope bound is f'(P) rounded up."""
    import mpmath as mp

    from verifier.ops.activations import GELU_TANH_MIN_AT, GELU_TANH_P, GeluTanh

    mp.mp.dps = 50
    c, k = mp.sqrt(2 / mp.pi), mp.mpf("0.044715")

    def f(x):
        return x / 2 * (1 + mp.tanh(c * (x + k * x**3)))

    flips, ends = _roots_and_flips(f, [(GELU_TANH_P, 2, 1.4), (-GELU_TANH_P, 2, -1.4),
                                       (GELU_TANH_MIN_AT, 1, -0.75)], 10)
    assert len(flips) == 2 and all(abs(abs(v) - GELU_TANH_P) < 0.02 for v in flips)
    assert ends[0] < 0 and ends[1] < 0
    top = mp.diff(f, mp.mpf(GELU_TANH_P), 1)
    assert top < GeluTanh.slope_bound < top + 1e-6


def gen_activation(draw) -> tuple[G, str]:
    """One of the ops with random attributes (in the implemented range), for the
    importer's fuzzing (test_import_fuzz.py)."""
    op = draw(st.sampled_from(NAMES))
    g = G(shape_of(draw), opset(draw, FIRST_OPSET[op]))
    attrs: dict = {}
    if op in ("Elu", "Selu"):
        put(attrs, "alpha", maybe(draw, fl(0, 3)))
    if op == "Selu":
        put(attrs, "gamma", maybe(draw, fl(0.01, 3)))
    if op == "Celu":
        put(attrs, "alpha", maybe(draw, fl(0.01, 5)))
    if op == "HardSigmoid":
        put(attrs, "alpha", maybe(draw, fl(-3, 3)))
        put(attrs, "beta", maybe(draw, fl(-2, 2)))
    return g, g.node(op, ["X"], **attrs)[0]


FUZZ = {op: gen_activation for op in NAMES}


# -- PRelu: LeakyReLU with a constant slope tensor -------------------------------------------
SLOPES = {"scalar": np.array([0.25]), "channel": np.array([[[0.0]], [[0.5]], [[1.0]]]),
          "last": np.array([0.1, 0.3, 0.7, 0.9]), "full": "full"}


def _prelu_net(slope: np.ndarray | str, opset_: int = 17, seed: int = 0) -> bytes:
    """x (1, 4) -> Gemm (36) -> Reshape (1, 3, 3, 4) -> PRelu -> Flatten -> MatMul (2)."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(0, 1, (3, 3, 4)) if isinstance(slope, str) else slope
    inits = {"W1": rng.normal(size=(4, 36)) * 1.5, "b1": rng.normal(size=36) * 0.5,
             "W2": rng.normal(size=(36, 2)), "S": s,
             "shape": np.array([1, 3, 3, 4], np.int64)}
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h0"]),
             helper.make_node("Reshape", ["h0", "shape"], ["h"]),
             helper.make_node("PRelu", ["h", "S"], ["a"]),
             helper.make_node("Flatten", ["a"], ["f"]),
             helper.make_node("MatMul", ["f", "W2"], ["y"])]
    graph = helper.make_graph(
        nodes, "prelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(v if v.dtype == np.int64 else v.astype(F32), k)
         for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset_)]) \
        .SerializeToString()


@pytest.mark.parametrize("kind", sorted(SLOPES))
def test_prelu_agrees_with_onnxruntime_and_its_bounds_contain_the_outputs(kind: str):
    rng = np.random.default_rng(7)
    xs = rng.normal(size=(50, 4)).astype(F32) * 2
    for opset_ in (9, 16, 20):
        data = _prelu_net(SLOPES[kind], opset_)
        model = load_model(data)
        ours = model.graph.forward(torch.from_numpy(xs).double()).reshape(50, -1).numpy()
        np.testing.assert_allclose(ours, _ort(data, xs), rtol=1e-5, atol=1e-5)
    lo = rng.uniform(-1, 1, (4, 4))
    hi = lo + np.array([1e-3, 0.1, 1.0, 3.0])[:, None]
    assert_bounds_contain(model.graph, lambda pts: _ort(data, pts), lo, hi, 2, rng, tag=kind)


@pytest.mark.parametrize("slope,what", [
    (np.array([0.5, -0.1, 0.2, 0.3]), "slope -0.1"), (np.array([1.5]), "slope 1.5"),
    (np.ones((2, 1, 1)) * 0.5, "does not broadcast")])
def test_prelu_slopes_outside_the_implemented_range_are_refused_by_name(slope, what):
    with pytest.raises(UnsupportedOpError, match=what):
        load_model(_prelu_net(slope))


def test_prelu_true_property_is_verified_and_violated_one_falsified():
    _verify_both_ways(_prelu_net("full", seed=3), 4, seed=4, tag="PRelu")


def gen_prelu(draw) -> tuple[G, str]:
    """PRelu with a slope (in [0, 1]) of a random broadcastable shape."""
    g = G(shape_of(draw), opset(draw, 9))
    shape = g.shape[draw(st.integers(0, len(g.shape))):]
    shape = tuple(1 if draw(st.booleans()) else d for d in shape)
    slope = np.asarray(draw(st.lists(fl(0, 1), min_size=int(np.prod(shape)),
                                     max_size=int(np.prod(shape)))), F32).reshape(shape)
    return g, g.node("PRelu", ["X", g.const(slope)])[0]


FUZZ["PRelu"] = gen_prelu
