"""Input splitting's branching (BranchAndBound.branch_inputs): each domain is split along the
candidate dimension whose children gain most, judged by bounding them.  The children must
be sound halves of their parent, the choice must never gain less than the score's own, and
it must decide deep random networks that splitting by the score alone cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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
    bab = BranchAndBound(model, prop, root, BabSettings(), lambda: False, lambda *a: None)
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
    assert bool((chosen > baseline + 1e-6).any())  # and here it does gain more somewhere


@pytest.mark.parametrize("seed", [3, 6])
def test_branching_decides_where_the_score_alone_cannot(seed: int):
    model, prop, _ = _setting(seed, 3, 0.03)
    strong = verify(model, prop, Settings(timeout=20, methods=("ibp", "crown")))
    assert strong.verdict == "verified", strong.message
    assert strong.domains < 5000
    scored = verify(model, prop, Settings(timeout=3, methods=("ibp", "crown"),
                                          bab_settings=BabSettings(input_candidates=1)))
    assert scored.verdict == "timeout"
    assert scored.domains > 2 * strong.domains


@pytest.mark.parametrize("seed", [3, 4])
def test_a_threshold_above_the_minimum_is_never_proved(seed: int):
    model, prop, threshold = _setting(seed, 3 + seed % 2, -0.01)
    result = verify(model, prop, Settings(timeout=10, methods=("ibp", "crown")))
    assert result.verdict in ("falsified", "timeout"), result.message
    for cex in result.counterexamples:  # onnxruntime's output, in the box
        assert float(cex.y[0]) <= threshold
        assert bool((np.abs(cex.x) <= 1).all())
