"""Input splitting's branching: the score (``BranchAndBound.input_scores``: ``|A_x| * width``
plus each input's share of the relaxations' looseness) and the look-ahead over candidates
(``branch_inputs`` with ``input_candidates`` > 1), which splits each domain along the
candidate whose children gain most, judged by bounding them.  The children must be sound
halves of their parent, the look-ahead's choice must never gain less than the score's own,
and the score must decide deep random networks and a hidden kink that the coefficients
alone cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from tests.verifier.test_bab import _net
from verifier import Settings, load_model, verify
from verifier.problems import make_batch
from verifier.property.core import Case, Conjunction, Property
from verifier.search.bab import BabSettings, BabState, BranchAndBound


def _setting(seed: int, n: int, margin: float):
    """A deep random ReLU net on [-1, 1]^n and "unsafe: y <= threshold", the threshold
    ``margin`` of the output's sampled spread below (margin > 0) or above its sampled
    minimum."""
    model = load_model(_net("Relu", seed, widths=(n, 24, 24, 24, 1)))
    x = torch.tensor(np.random.default_rng(seed).uniform(-1, 1, (200_000, n)))
    with torch.no_grad():
        y = model.graph.forward(x).flatten()
    low, high = float(y.min()), float(y.max())
    threshold = low - margin * (high - low)
    conj = Conjunction(np.array([[1.0]]), np.array([threshold]))
    return model, Property(n, 1, (Case(-np.ones(n), np.ones(n), (conj,)),)), threshold


def _open_domains(seed: int, rounds: int = 3):
    """A BranchAndBound over the setting and its domains after a few plain splits."""
    model, prop, threshold = _setting(seed, 4, 0.03)
    root = make_batch(prop, [0], torch.device("cpu"), torch.float32)
    bab = BranchAndBound(model, prop, root, BabSettings(input_candidates=3), lambda: False,
                         lambda *a: None)
    state = BabState(root.lower, root.upper, torch.zeros(1, dtype=torch.long))
    bab.bound_and_score(state)
    for _ in range(rounds):
        state = bab.split_inputs(state)
        bab.bound_and_score(state)
    return bab, state, model, threshold


def _lack(per: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """What a pair of children (first half, second half of ``per``) still lacks in all."""
    n = parent.shape[0]
    weakest = torch.maximum(per.min(dim=1).values, torch.cat([parent, parent]))
    weakest = weakest.clamp(max=0)
    return weakest[:n] + weakest[n:]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_children_are_sound_halves_that_gain_at_least_the_score_choice(seed: int):
    bab, state, model, threshold = _open_domains(seed)
    n = state.size
    parent = state.per.min(dim=1).values.clamp(max=0)
    children, A_x = bab.branch_inputs(state)
    assert children.size == 2 * n and A_x is not None and A_x.shape[0] == 2 * n
    rng = np.random.default_rng(seed)
    for i in range(n):
        left, right = (children.take(torch.tensor([j])) for j in (i, i + n))
        for child in (left, right):  # within the parent (clipping may cut it further)
            assert bool((child.lower >= state.lower[i]).all())
            assert bool((child.upper <= state.upper[i]).all())
        # split at the middle of one dimension: the halves meet there and nowhere else
        apart = (left.upper[0] <= right.lower[0]).nonzero().flatten().tolist()
        assert len(apart) >= 1
        d = apart[0]
        mid = float((state.lower[i, d] + state.upper[i, d]) / 2)
        assert float(left.upper[0, d]) <= mid <= float(right.lower[0, d])
        for child in (left, right):  # the bound holds on samples of the child's box
            lo, hi = child.lower[0].double().numpy(), child.upper[0].double().numpy()
            x = torch.tensor(rng.uniform(lo, hi, (2000, lo.shape[0])))
            with torch.no_grad():
                y = model.graph.forward(x).flatten()
            assert float(child.per.min()) <= float((y - threshold).min()) + 1e-5
    # the score's own choice, bounded the same way, never gains more
    scored = bab.split_inputs(state)
    bab.bound_and_score(scored)
    chosen = _lack(children.per, parent)
    baseline = _lack(scored.per, parent)
    assert bool((chosen >= baseline - 1e-4 * (1 + baseline.abs())).all())


@pytest.mark.parametrize("seed", [3, 6])
def test_the_relaxations_share_decides_where_the_coefficients_alone_cannot(
        seed: int, monkeypatch: pytest.MonkeyPatch):
    """Deep random nets: the score (one candidate, the default) and the look-ahead over
    three both decide in a few hundred domains; scored by ``|A_x| * width`` alone (the
    relaxations' share taken out) the same run times out in many times the domains."""
    model, prop, _ = _setting(seed, 3, 0.03)
    domains = []
    for k in (1, 3):
        result = verify(model, prop, Settings(timeout=20, methods=("ibp", "crown"),
                                              bab_settings=BabSettings(input_candidates=k)))
        assert result.verdict == "verified", result.message
        assert result.domains < 5000
        domains.append(result.domains)
    monkeypatch.setattr(BranchAndBound, "_relaxation_share",
                        lambda self, state, b, weight: torch.zeros_like(state.lower))
    coefficients = verify(model, prop, Settings(timeout=3, methods=("ibp", "crown")))
    assert coefficients.verdict == "timeout"
    assert coefficients.domains > 2 * max(domains)


@pytest.mark.parametrize("seed", [3, 4])
def test_a_threshold_above_the_minimum_is_never_proved(seed: int):
    model, prop, threshold = _setting(seed, 3 + seed % 2, -0.01)
    result = verify(model, prop, Settings(timeout=10, methods=("ibp", "crown")))
    assert result.verdict in ("falsified", "timeout"), result.message
    for cex in result.counterexamples:  # onnxruntime's output, in the box
        assert float(cex.y[0]) <= threshold
        assert bool((np.abs(cex.x) <= 1).all())


def _hidden_kink() -> bytes:
    """y = relu(x0) - 0.5 x0 + 0.6 x1 on [-1, 1]^2 (ReLUs of x + 10 carry the linear
    terms): x0 reaches y through its coefficient (+-0.5 under either lower line of the
    ReLU) and through the one unstable ReLU, x1 only through its larger coefficient."""
    W1 = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    b1 = np.array([0, 10, 10], dtype=np.float32)
    W2 = np.array([[1, -0.5, 0.6]], dtype=np.float32)
    b2 = np.array([5 - 6], dtype=np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((W1, "W1"), (b1, "b1"), (W2, "W2"), (b2, "b2"))]
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["a"]),
             helper.make_node("Gemm", ["a", "W2", "b2"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "kink", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 2))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 1))], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString()


def test_the_score_counts_what_an_input_loosens_through_unstable_neurons():
    """|A_x| * width alone ranks x1 (1.2) above x0 (1.0), though halving x1 leaves the
    weaker child's bound where it was and halving x0 makes every neuron stable: the
    relaxation's share (here all of it x0's) must rank x0 first, and the score alone
    (no look-ahead, no clipping) must prove y > -0.65 (true minimum -0.6; root bound -1.1) with one
    split."""
    model = load_model(_hidden_kink())
    x = torch.tensor(np.random.default_rng(0).uniform(-1, 1, (100_000, 2)))
    with torch.no_grad():  # the model is what the docstring says
        y = model.graph.forward(x).flatten()
    expected = torch.relu(x[:, 0]) - 0.5 * x[:, 0] + 0.6 * x[:, 1]
    assert torch.allclose(y, expected, atol=1e-5)
    conj = Conjunction(np.array([[1.0]]), np.array([-0.65]))
    prop = Property(2, 1, (Case(-np.ones(2), np.ones(2), (conj,)),))
    root = make_batch(prop, [0], torch.device("cpu"), torch.float32)
    plain = BabSettings(input_candidates=1, clip_inputs=False)  # clipping cuts x0 to >= 0.1
    bab = BranchAndBound(model, prop, root, plain, lambda: False, lambda *a: None)
    state = BabState(root.lower, root.upper, torch.zeros(1, dtype=torch.long))
    bab.bound_and_score(state)
    assert float(state.per.min()) < -0.4  # open at the root
    assert state.score is not None and float(state.score[0, 0]) > float(state.score[0, 1])
    result = verify(model, prop, Settings(timeout=10, methods=("ibp", "crown"),
                                          bab_settings=plain))
    assert result.verdict == "verified", result.message
    assert result.domains == 2
    above = Conjunction(np.array([[1.0]]), np.array([-0.59]))  # above the minimum
    result = verify(model, Property(2, 1, (Case(-np.ones(2), np.ones(2), (above,)),)),
                    Settings(timeout=10, methods=("ibp", "crown")))
    assert result.verdict == "falsified", result.message
