"""The planes of a product of two variables (``CentrePlanes`` in verifier/ops/bilinear.py)
and the second backward pass that picks them at the bound's minimiser
(``backward.at_minimiser``).

- Every plane of the family (alpha-CROWN's parameters anywhere in [0, 1], the ends
  included) bounds x y on dense samples of random boxes (wide, narrow, one-sided, across
  zero, huge), from the side the coefficient's sign asks for; the ends are McCormick's
  planes, exact on their edges (a sign slip in the family fails one of the two tests).
- ``choose`` gives, at any point, a plane at least as tight there as both ends.
- CROWN through products contains onnxruntime's outputs on random nets (products of two
  affine or Tanh branches); it is never looser than the centre planes, and where the
  minimiser is a corner of the factors' box (x0 x1 on [0, 1]^2) it is exact where the
  centre planes are 0.5 off.
- Verification through products both ways, the counterexamples confirmed by onnxruntime.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper

import verifier.bounds.backward as backward_module
from verifier import load_model
from verifier.bounds import intermediate
from verifier.bounds.backward import at_minimiser, backward, concretise
from verifier.ops.bilinear import CentrePlanes

from .opcases import assert_net_bounds_contain, net_model, run_ort, verify_both_ways

F64 = torch.float64


def _boxes(rng: np.random.Generator, k: int) -> tuple[torch.Tensor, ...]:
    """k boxes of x and of y each of every kind: wide, narrow, one-sided either way,
    across zero, huge, a point."""
    kinds = []
    for centre, radius in ((0.0, 3.0), (0.7, 1e-4), (2.0, 0.5), (-2.0, 0.5), (0.1, 1.0),
                           (1e3, 5e2), (-0.3, 0.0)):
        c = centre + rng.normal(size=(k,)) * 0.1 * (abs(centre) + 1)
        r = radius * rng.uniform(0.5, 1.0, size=(k,))
        kinds.append((c - r, c + r))
    lo = np.concatenate([a for a, _ in kinds])
    hi = np.concatenate([b for _, b in kinds])
    perm = rng.permutation(len(lo))
    return tuple(torch.tensor(v, dtype=F64) for v in (lo, hi, lo[perm], hi[perm]))


def _planes(lx, ux, ly, uy) -> CentrePlanes:
    """The relaxation of x y, x and y of shape (B, n), the output (B, n)."""
    return CentrePlanes([(lx, ux), (ly, uy)], (lx.shape[1],), [(lx.shape[1],)] * 2)


def _samples(lo: torch.Tensor, hi: torch.Tensor, rng: np.random.Generator, k: int
             ) -> torch.Tensor:
    """(k, *lo.shape) points of the boxes, the first four of them corners."""
    t = torch.tensor(rng.uniform(size=(k, *lo.shape)), dtype=F64)
    t[:4] = torch.tensor(rng.integers(0, 2, size=(4, *lo.shape)), dtype=F64)
    return lo + t * (hi - lo)


@pytest.mark.parametrize("seed", range(4))
def test_every_plane_of_the_family_bounds_the_product(seed):
    rng = np.random.default_rng(seed)
    lx, ux, ly, uy = (t.reshape(-1, 1) for t in _boxes(rng, 6))
    B, R = lx.shape[0], 5
    rel = _planes(lx, ux, ly, uy)
    A = torch.tensor(rng.normal(size=(B, R, 1)), dtype=F64)
    A[:, 0] = 1.0
    A[:, 1] = -1.0
    choices = [torch.zeros(B, R, 1, dtype=F64), torch.ones(B, R, 1, dtype=F64),
               torch.full((B, R, 1), 0.5, dtype=F64),
               torch.tensor(rng.uniform(size=(B, R, 1)), dtype=F64)]
    xs, ys = _samples(lx, ux, rng, 400), _samples(ly, uy, rng, 400)
    for p_l in choices:
        for p_u in choices:
            (A_x, A_y), bias = rel.backward(A, (p_l, p_u))
            for x, y in zip(xs, ys, strict=True):  # x, y: (B, 1)
                exact = (A * (x * y).unsqueeze(1)).squeeze(2)
                line = (A_x * x.unsqueeze(1) + A_y * y.unsqueeze(1)).squeeze(2) + bias
                slack = 1e-12 * (1 + (A.abs() * ((x * y).abs() + x.abs() * y.abs() + 1)
                                      .unsqueeze(1)).squeeze(2))
                assert (exact >= line - slack).all()


def test_the_family_ends_are_mccormicks_planes():
    rng = np.random.default_rng(7)
    lx, ux, ly, uy = (t.reshape(-1, 1) for t in _boxes(rng, 3))
    B = lx.shape[0]
    rel = _planes(lx, ux, ly, uy)
    one, zero = torch.ones(B, 1, 1, dtype=F64), torch.zeros(B, 1, 1, dtype=F64)
    cases = {  # (A's sign, p_l, p_u): the plane's slopes on x and y and its constant
        (1, zero, zero): (ly, lx, -lx * ly), (1, one, zero): (uy, ux, -ux * uy),
        (-1, zero, one): (uy, lx, -lx * uy), (-1, zero, zero): (ly, ux, -ux * ly)}
    for (sign, p_l, p_u), (a, b, c) in cases.items():
        A = torch.full((B, 1, 1), float(sign), dtype=F64)
        (A_x, A_y), bias = rel.backward(A, (p_l, p_u))
        scale = 1 + lx.abs() * uy.abs() + ux.abs() * ly.abs()
        for got, want in ((A_x, a), (A_y, b), (bias, c)):
            err = (got.reshape(B, 1) - sign * want).abs() / scale
            assert float(err.max()) < 1e-12, (sign, got, want)


def test_choose_is_at_least_as_tight_as_either_end_at_the_point():
    rng = np.random.default_rng(3)
    lx, ux, ly, uy = (t.reshape(-1, 1) for t in _boxes(rng, 6))
    B = lx.shape[0]
    rel = _planes(lx, ux, ly, uy)
    A = torch.tensor([1.0, -1.0], dtype=F64).reshape(1, 2, 1).expand(B, 2, 1)
    for x, y in zip(_samples(lx, ux, rng, 100), _samples(ly, uy, rng, 100), strict=True):
        px, py = (t.unsqueeze(1).expand(B, 2, 1) for t in (x, y))

        def value(params, px=px, py=py):
            (A_x, A_y), bias = rel.backward(A, params)
            return (A_x * px + A_y * py).squeeze(2) + bias  # (B, 2): both rows at the point

        chosen = value(rel.choose(px, py))
        scale = 1e-12 * (1 + (ux.abs() + lx.abs()) * (uy.abs() + ly.abs()))
        for end in (0.0, 1.0):
            other = value(tuple(torch.full((B, 2, 1), end, dtype=F64) for _ in range(2)))
            assert (chosen >= other - scale).all()


def _product_net(seed: int, tanh: bool) -> bytes:
    """Y = [sum((x A + a) * g(x B + b)), x0 (x C)_0]: products of two branches."""
    rng = np.random.default_rng(seed)
    inits = {"A": rng.normal(size=(4, 3)), "a": rng.normal(size=(1, 3)) * 0.5,
             "B": rng.normal(size=(4, 3)), "b": rng.normal(size=(1, 3)) * 0.5,
             "C": rng.normal(size=(4, 1)), "first": np.eye(4)[:, :1],
             "ones": np.ones((3, 1))}
    nodes = [helper.make_node("MatMul", ["X", "A"], ["u0"]),
             helper.make_node("Add", ["u0", "a"], ["u"]),
             helper.make_node("MatMul", ["X", "B"], ["w0"]),
             helper.make_node("Add", ["w0", "b"], ["w1"]),
             helper.make_node("Tanh" if tanh else "Identity", ["w1"], ["w"]),
             helper.make_node("Mul", ["u", "w"], ["uw"]),
             helper.make_node("MatMul", ["uw", "ones"], ["s"]),
             helper.make_node("MatMul", ["X", "first"], ["x0"]),
             helper.make_node("MatMul", ["X", "C"], ["xc"]),
             helper.make_node("Mul", ["x0", "xc"], ["q"]),
             helper.make_node("Concat", ["s", "q"], ["Y"], axis=1)]
    return net_model(nodes, inits, 17)


@pytest.mark.parametrize("seed,tanh", [(0, False), (1, True), (2, True)])
def test_bounds_through_products_contain_onnxruntime(seed, tanh):
    assert_net_bounds_contain(_product_net(seed, tanh), seed, tag=(seed, tanh))


@pytest.mark.parametrize("seed", range(3))
def test_the_second_pass_is_never_looser_and_holds(seed, monkeypatch):
    data = _product_net(seed, True)
    graph = load_model(data).graph
    rng = np.random.default_rng(seed)
    lo = torch.tensor(rng.uniform(-1, 0, size=(64, 4)), dtype=F64)
    hi = lo + torch.tensor(rng.uniform(0.01, 1, size=(64, 4)), dtype=F64)
    A = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], dtype=F64)
    A = A.expand(64, 4, 2).reshape(64, 4, *graph.output_shape).contiguous()
    nb = intermediate.compute(graph, lo, hi)
    met: dict[str, torch.Tensor] = {}
    A_x, bias = backward(nb, graph.output_name, A, record=met)
    first = concretise(nb, A_x, bias)
    kept_A, kept_bias, second = at_minimiser(nb, graph.output_name, A, A_x, bias, met)
    assert torch.equal(concretise(nb, kept_A, kept_bias), second)  # rows match their lines
    monkeypatch.setattr(backward_module, "CORNER_ENTRIES", 1)  # one minimiser at a time
    chunked = at_minimiser(nb, graph.output_name, A, A_x, bias, met)[2]
    assert torch.equal(chunked, second)
    assert (second >= first).all()
    assert (second > first + 1e-6).any()  # the planes changed somewhere
    xs = (lo.numpy()[:, None] + rng.uniform(size=(64, 300, 4)) * (hi - lo).numpy()[:, None])
    ys = run_ort(data, xs.reshape(-1, 1, 4).astype(np.float32)).reshape(64, 300, 2)
    rows = np.concatenate([ys, -ys], axis=2)
    assert (rows >= second.numpy()[:, None, :]).all()


def test_crown_of_a_product_is_exact_at_a_corner_minimiser():
    nodes = [helper.make_node("MatMul", ["X", "e0"], ["x0"]),
             helper.make_node("MatMul", ["X", "e1"], ["x1"]),
             helper.make_node("Mul", ["x0", "x1"], ["Y"])]
    data = net_model(nodes, {"e0": np.eye(2)[:, :1], "e1": np.eye(2)[:, 1:]}, 17, n_in=2,
                     n_out=1)
    graph = load_model(data).graph
    lo, hi = torch.zeros(1, 2, dtype=F64), torch.ones(1, 2, dtype=F64)
    A = torch.tensor([1.0, -1.0], dtype=F64).reshape(1, 2, *graph.output_shape)
    nb = intermediate.compute(graph, lo, hi)
    met: dict[str, torch.Tensor] = {}
    A_x, bias = backward(nb, graph.output_name, A, record=met)
    centre = concretise(nb, A_x, bias)
    assert torch.allclose(centre, torch.tensor([[-0.5, -1.0]], dtype=F64))
    chosen = at_minimiser(nb, graph.output_name, A, A_x, bias, met)[2]
    assert torch.allclose(chosen, torch.tensor([[0.0, -1.0]], dtype=F64), atol=1e-6)
    assert (chosen <= torch.tensor([[0.0, -1.0]], dtype=F64)).all()  # still a bound


@pytest.mark.parametrize("seed", range(2))
def test_verify_through_products_both_ways(seed):
    data = _product_net(seed, True)
    # the sampled maximum of Y_0 is its maximum (to 5% of the spread) on a box this small
    verify_both_ways(data, lambda xs: run_ort(data, xs[:, None])[:, 0], 4, 2, r=0.5,
                     seed=seed, tag=seed)


@pytest.mark.parametrize("low", [0.0, 0.25])
def test_a_minimum_on_the_planes_exact_edge_is_never_proved_away(low):
    """x0 x1 over [low, 1]^2 is least, low^2, on the edges where the chosen plane is exact:
    "x0 x1 > low^2" is false there and must be falsified (onnxruntime confirming), never
    verified; "x0 x1 > low^2 - 0.01" holds and is verified."""
    from verifier import Settings, parse_vnnlib, verify

    nodes = [helper.make_node("MatMul", ["X", "e0"], ["x0"]),
             helper.make_node("MatMul", ["X", "e1"], ["x1"]),
             helper.make_node("Mul", ["x0", "x1"], ["Y"])]
    data = net_model(nodes, {"e0": np.eye(2)[:, :1], "e1": np.eye(2)[:, 1:]}, 17, n_in=2,
                     n_out=1)
    model = load_model(data)

    def spec(threshold: float) -> str:
        return ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                f"(assert (>= X_0 {low!r}))\n(assert (<= X_0 1.0))\n"
                f"(assert (>= X_1 {low!r}))\n(assert (<= X_1 1.0))\n"
                f"(assert (<= Y_0 {threshold!r}))\n")

    tight = verify(model, parse_vnnlib(spec(low * low), 2, 1), Settings(timeout=10))
    assert tight.verdict == "falsified", tight.message
    assert tight.counterexamples
    for cex in tight.counterexamples:
        assert ((cex.x >= low) & (cex.x <= 1.0)).all()
        x = np.asarray(cex.x, dtype=np.float32).reshape(1, 1, 2)
        assert run_ort(data, x).reshape(-1)[0] <= low * low
    loose = verify(model, parse_vnnlib(spec(low * low - 0.01), 2, 1), Settings(timeout=10))
    assert loose.verdict == "verified", loose.message
