"""Intermediate bounds domain by domain, and input splitting's inherited bounds.

``intermediate._pair_bounds`` bounds only the (domain, entry) pairs some user is sensitive
to, one pass per pair on that domain's bounds (``NodeBounds.take``); it must give the
bounds the whole-batch passes give those entries, and both must contain every sampled
value.  Input splitting hands a domain's bounds of the nonlinear ops' inputs to its
children where they make the ops' relaxations exact (they hold on the sub-boxes);
verdicts must still agree with dense gridding: a threshold below the true minimum never
falsified, one above it never verified.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from verifier import Settings, load_model, verify
from verifier.bounds import intermediate
from verifier.property.core import Case, Conjunction, Property
from verifier.search import bab


def _net(seed: int, act: str = "Relu", widths=(3, 24, 24, 24, 24, 2)) -> bytes:
    """An MLP; with act "Mul" each hidden layer is ReLU(h) * h' (a product of two
    variables, so planes and their choice at the minimiser are crossed too)."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        W = (rng.standard_normal((b, a)) * 1.1).astype(np.float32)
        c = (rng.standard_normal(b) * 0.3).astype(np.float32)
        inits += [numpy_helper.from_array(W, f"W{i}"), numpy_helper.from_array(c, f"c{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"c{i}"], [f"h{i}"], transB=1))
        prev = f"h{i}"
        if i == len(widths) - 2:
            break
        if act == "Mul" and i == 1:
            inits.append(numpy_helper.from_array(np.float32(0.5).reshape(1), f"s{i}"))
            nodes += [helper.make_node("Relu", [prev], [f"r{i}"]),
                      helper.make_node("Mul", [prev, f"s{i}"], [f"q{i}"]),
                      helper.make_node("Mul", [f"r{i}", f"q{i}"], [f"a{i}"])]
        else:
            nodes.append(helper.make_node("Relu" if act == "Mul" else act, [prev], [f"a{i}"]))
        prev = f"a{i}"
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, widths[0]))],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, (1, widths[-1]))], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                             ).SerializeToString()


def _boxes(seed: int, n: int, B: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(B, n, generator=g) * 2 - 1
    # wide, narrow and one degenerate side among the domains
    width = torch.rand(B, 1, generator=g) ** 3 * torch.rand(B, n, generator=g)
    width[::7, 0] = 0
    return centre - width, centre + width


@pytest.mark.parametrize("act", ["Relu", "Sigmoid", "Mul"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairs_give_the_whole_batch_passes_bounds(act, seed):
    """On the same bounds, a pair's pass bounds its entry as the whole batch's pass of
    every row does; entries not asked for keep what they had."""
    model = load_model(_net(seed, act))
    graph = model.graph
    lower, upper = _boxes(seed, 3, 32)
    nb = intermediate.compute(graph, lower, upper)
    g = torch.Generator().manual_seed(seed)
    checked = 0
    for node in graph.nodes:
        if node.op.linear is False or node.name == graph.output_name or \
                graph.position(node.name) < 2:
            continue
        shape = nb.box[node.name][0].shape
        lo, hi = torch.full(shape, -torch.inf), torch.full(shape, torch.inf)
        n = lo[0].numel()
        rows = torch.arange(n)
        whole = intermediate._node_bounds(nb, node, lo, hi, None, intermediate.never, rows,
                                          None)
        each = torch.rand(shape[0], n, generator=g) < 0.4
        paired = intermediate._pair_bounds(nb, node, lo, hi, each, intermediate.never)
        for w, p in zip(whole, paired, strict=True):
            w, p = w.reshape(-1, n), p.reshape(-1, n)
            scale = 1e-5 * (1 + float(w.abs().max()))
            assert torch.allclose(p[each], w[each], rtol=0, atol=scale), node.name
            assert bool(torch.isinf(p[~each]).all()), node.name
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("act", ["Relu", "Sigmoid", "Mul"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_bounded_nodes_contain_samples(act, seed, monkeypatch):
    """Every node's bounds with its passes by pairs (as many as it takes) contain every
    sampled value."""
    model = load_model(_net(seed, act))
    graph = model.graph
    lower, upper = _boxes(seed, 3, 64)
    monkeypatch.setattr(intermediate, "RAGGED_SHARE", 2.0)  # always by pairs
    calls = []
    real = intermediate._pair_bounds
    monkeypatch.setattr(intermediate, "_pair_bounds",
                        lambda *a: calls.append(a[1].name) or real(*a))
    paired = intermediate.compute(graph, lower, upper)
    assert calls, "no node was bounded by pairs"
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(400, *lower.shape, generator=g, dtype=torch.float64)
    x = (lower.double() + t * (upper - lower).double()).reshape(-1, 3)
    _, values = graph.search_values(x, tuple(n.name for n in graph.nodes))
    for node in graph.nodes:
        lo, hi = paired.box[node.name]
        v = values[node.name].reshape(400, 64, -1)
        assert bool((v >= lo.reshape(1, 64, -1).double()).all()), node.name
        assert bool((v <= hi.reshape(1, 64, -1).double()).all()), node.name


def test_take_selects_domains_in_order_with_repeats():
    model = load_model(_net(3))
    graph = model.graph
    lower, upper = _boxes(3, 3, 5)
    nb = intermediate.compute(graph, lower, upper)
    last = graph.nodes[-2].name
    index = torch.tensor([4, 0, 4, 2])
    sub = nb.take(index, last)
    assert sub.size == 4
    assert torch.equal(sub.lower, nb.lower[index]) and torch.equal(sub.upper, nb.upper[index])
    for name, (lo, hi) in sub.box.items():
        assert torch.equal(lo, nb.box[name][0][index]) and torch.equal(hi, nb.box[name][1][index])
    # only what a pass from ``last`` reads
    assert graph.output_name not in sub.box


def _grid(model_bytes: bytes, lo: np.ndarray, hi: np.ndarray, row: np.ndarray
          ) -> tuple[float, float]:
    """The row's least value on a 61^3 grid and its spread there (+1)."""
    model = load_model(model_bytes)
    axes = [np.linspace(a, b, 61) for a, b in zip(lo, hi, strict=True)]
    x = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(lo))
    with torch.no_grad():
        y = model.graph.forward(torch.tensor(x, dtype=torch.float64)).reshape(len(x), -1)
    v = y.numpy() @ row
    return float(v.min()), float(v.max() - v.min()) + 1.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_inherited_bounds_keep_verdicts_on_the_right_side(seed, monkeypatch):
    """Thresholds just below the gridded minimum of a row (by more than the grid can miss
    the true one) must never be falsified, and are verified; just above it (a grid point
    is a counterexample), never verified.  Children take their parent's bounds where they
    make a ReLU stable (checked by a spy)."""
    data = _net(seed, "Relu", (3, 20, 20, 20, 2))
    lo, hi = np.full(3, -1.0), np.full(3, 1.0)
    row = np.array([1.0, -1.0])
    m, spread = _grid(data, lo, hi, row)
    handed: list[dict] = []

    def spy(self, nb):
        got = real(self, nb)
        handed.append(got)
        return got

    real = bab.BranchAndBound._inherited
    monkeypatch.setattr(bab.BranchAndBound, "_inherited", spy)
    model = load_model(data)
    for threshold, expected in ((m - 0.03 * spread, {"verified"}),
                                (m + 0.005 * spread, {"falsified", "timeout", "unknown"})):
        # unsafe: y0 - y1 <= threshold
        prop = Property(3, 2, (Case(lo, hi, (Conjunction(row[None], np.array([threshold])),)),))
        result = verify(model, prop, Settings(timeout=30))
        assert result.verdict in expected, (threshold, m, result.verdict)
    # stable entries go to the children with their bounds, the others unbounded
    finite = [bool(torch.isfinite(lo).any()) for got in handed for lo, _ in got.values()]
    assert any(finite), "input splitting never handed bounds to children"
    assert not all(finite)


def test_big_models_keep_the_whole_batch_passes(monkeypatch):
    """Every pair copies its domain's bounds of every node it crosses: where fewer than
    MIN_PAIR_CHUNK pairs fit a pass (here: PAIR_ENTRIES made small), the whole batch's
    passes run, with the same bounds as before."""
    model = load_model(_net(4))
    lower, upper = _boxes(4, 3, 64)
    monkeypatch.setattr(intermediate, "RAGGED_SHARE", -1.0)
    want = intermediate.compute(model.graph, lower, upper)
    monkeypatch.setattr(intermediate, "RAGGED_SHARE", 2.0)
    monkeypatch.setattr(intermediate, "PAIR_ENTRIES", 100 * intermediate.MIN_PAIR_CHUNK)
    monkeypatch.setattr(intermediate, "_pair_bounds",
                        lambda *a: pytest.fail("pairs on a model too big for them"))
    got = intermediate.compute(model.graph, lower, upper)
    for name, (lo, hi) in want.box.items():
        assert torch.equal(got.box[name][0], lo) and torch.equal(got.box[name][1], hi)
