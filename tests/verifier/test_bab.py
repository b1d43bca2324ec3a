"""Branch-and-bound against exact answers on small networks, deadlines and cancellation."""

from __future__ import annotations

import dataclasses
import math
import threading
import time

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from verifier import Settings, load_model, ort, parse_vnnlib_file, verify
from verifier.property.core import Case, Conjunction, Property
from verifier.search.bab import BabSettings

ACTIVATIONS = ["Relu", "Sigmoid", "Tanh", "Gelu"]


def _net(act: str, seed: int, widths=(2, 12, 12, 1)) -> bytes:
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        W = (rng.standard_normal((b, a)) * 1.2).astype(np.float32)
        c = (rng.standard_normal(b) * 0.3).astype(np.float32)
        inits += [numpy_helper.from_array(W, f"W{i}"), numpy_helper.from_array(c, f"c{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"c{i}"], [f"h{i}"], transB=1))
        prev = f"h{i}"
        if i < len(widths) - 2:
            nodes.append(helper.make_node(act, [prev], [f"a{i}"]))
            prev = f"a{i}"
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, widths[0]))],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, (1, 1))], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString()


def _grid_min(model, lo, hi, n=401) -> float:
    g = np.stack(np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)), -1)
    with torch.no_grad():
        y = model.graph.forward(torch.tensor(g.reshape(-1, 2), dtype=torch.float64))
    return float(y.min())


def _prop(lo, hi, threshold: float) -> Property:
    """Unsafe: y <= threshold anywhere in the box."""
    conj = Conjunction(np.array([[1.0]]), np.array([threshold]))
    return Property(2, 1, (Case(np.array(lo), np.array(hi), (conj,)),))


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_verdicts_match_dense_gridding(act, seed):
    model = load_model(_net(act, seed))
    lo, hi = [-1.0, -1.0], [1.0, 1.0]
    true_min = _grid_min(model, lo, hi)
    spread = abs(true_min) + 1.0
    settings = Settings(timeout=20, methods=("ibp", "crown"))
    safe = verify(model, _prop(lo, hi, true_min - 0.02 * spread), settings)
    unsafe = verify(model, _prop(lo, hi, true_min + 0.02 * spread), settings)
    assert safe.verdict == "verified", safe.message
    assert unsafe.verdict == "falsified", unsafe.message
    # a verified answer survives a 100k-sample search
    x = torch.tensor(np.random.default_rng(seed).uniform(-1, 1, (100_000, 2)))
    with torch.no_grad():
        assert float(model.graph.forward(x).min()) > true_min - 0.02 * spread


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activation_splitting_decides_where_crown_alone_cannot(act):
    """Force activation splitting (input splitting switched off) on small networks."""
    model = load_model(_net(act, 5, widths=(2, 10, 10, 1)))
    lo, hi = [-1.0, -1.0], [1.0, 1.0]
    true_min = _grid_min(model, lo, hi)
    prop = _prop(lo, hi, true_min - 0.1 * (abs(true_min) + 1))
    crown_only = verify(model, prop, Settings(timeout=20, methods=("crown",), bab=False))
    bab = verify(model, prop, Settings(timeout=4, methods=("crown",),
                                       bab_settings=BabSettings(input_split_max_dims=0)))
    assert bab.verdict in ("verified", "timeout", "unknown"), bab.message  # it is safe
    if crown_only.verdict != "verified":
        assert bab.domains > 0
        # splitting tightens the bound (or decides)
        assert bab.verdict == "verified" or bab.bounds[0][0] > crown_only.bounds[0][0]


def test_deadline_is_honoured_within_a_second(bench):
    model = load_model(bench / "mnist_fc" / "onnx" / "mnist-net_256x6.onnx")
    prop = parse_vnnlib_file(bench / "mnist_fc" / "vnnlib" / "prop_0_0.05.vnnlib",
                             model.n_inputs, model.n_outputs)
    t0 = time.monotonic()
    result = verify(model, prop, Settings(timeout=3))
    elapsed = time.monotonic() - t0
    assert result.verdict in ("timeout", "falsified", "verified")
    assert elapsed < 4.0


def test_deadline_is_honoured_when_a_domain_takes_a_third_of_a_second(bench):
    """cgan's 32x32 generator splits its few inputs at about 0.3 s a domain (3 candidate
    splits each): rounds must shrink to what fits, not grow with the open domains (the
    batch once went from 4 domains a round to 64, and a 30 s run took 76 s)."""
    folder = bench / "cgan_2023"
    model = load_model(folder / "onnx" / "cGAN_imgSz32_nCh_1.onnx")
    prop = parse_vnnlib_file(
        folder / "vnnlib" / "cGAN_imgSz32_nCh_1_prop_3_input_eps_0.020_output_eps_0.025.vnnlib",
        model.n_inputs, model.n_outputs)
    t0 = time.monotonic()
    result = verify(model, prop, Settings(timeout=10))
    assert result.verdict in ("timeout", "verified"), result.message
    assert time.monotonic() - t0 < 11.5


def test_bounds_stop_at_every_node_without_backward_passes():
    """Interval and forward bounds alone (no backward pass) still honour ``stop``."""
    from verifier.bounds import intermediate
    from verifier.bounds.limits import Interrupted

    model = load_model(_net("Relu", 0))
    lo, hi = -torch.ones(1, 2), torch.ones(1, 2)
    intermediate.compute(model.graph, lo, hi, use_crown=False)
    with pytest.raises(Interrupted):
        intermediate.compute(model.graph, lo, hi, use_crown=False, stop=lambda: True)


def test_cancellation_is_honoured_within_a_second(bench):
    model = load_model(bench / "mnist_fc" / "onnx" / "mnist-net_256x6.onnx")
    prop = parse_vnnlib_file(bench / "mnist_fc" / "vnnlib" / "prop_0_0.05.vnnlib",
                             model.n_inputs, model.n_outputs)
    flag = threading.Event()
    threading.Timer(2.0, flag.set).start()
    t0 = time.monotonic()
    result = verify(model, prop, Settings(timeout=60), cancel=flag.is_set)
    assert time.monotonic() - t0 < 3.0
    assert result.verdict == "unknown" and "cancelled" in result.message


def test_bab_lower_bound_never_decreases(bench):
    model = load_model(bench / "acasxu" / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx")
    prop = parse_vnnlib_file(bench / "acasxu" / "vnnlib" / "prop_1.vnnlib",
                             model.n_inputs, model.n_outputs)
    seen: list[float] = []
    verify(model, prop, Settings(timeout=30, methods=("crown",)),
           progress=lambda p: seen.append(p.lower_bound) if p.stage == "bab" else None)
    assert seen and all(b >= a - 1e-6 for a, b in zip(seen, seen[1:], strict=False))


def test_domains_with_different_split_nodes_concatenate():
    """Open domains split on different nodes still stack (missing limits are free)."""
    from verifier.search.bab import BabState

    box = torch.zeros(2, 3), torch.ones(2, 3)
    split = (torch.full((2, 4), -1.0), torch.full((2, 4), 0.5))
    a = BabState(*box, torch.zeros(2, dtype=torch.long), {"z": split})
    b = BabState(*box, torch.ones(2, dtype=torch.long))
    both = BabState.cat([a, b])
    lo, hi = both.splits["z"]
    assert lo.shape == (4, 4) and torch.equal(hi[:2], split[1])
    assert torch.isinf(lo[2:]).all() and torch.isinf(hi[2:]).all() and (hi[2:] > 0).all()


def test_domain_cap_is_respected(bench):
    """With a cap on open domains, BaB stops at the cap and answers unknown, never more."""
    model = load_model(bench / "mnist_fc" / "onnx" / "mnist-net_256x6.onnx")
    prop = parse_vnnlib_file(bench / "mnist_fc" / "vnnlib" / "prop_0_0.05.vnnlib",
                             model.n_inputs, model.n_outputs)
    cap = BabSettings(max_domains=40, batch=16)
    result = verify(model, prop, Settings(timeout=60, methods=("crown",), bab_settings=cap))
    assert result.verdict == "unknown"
    assert result.domains <= 4 * cap.max_domains
    # by memory: room for about 40 domains of this model (bounds, limits, parameters)
    by_bytes = BabSettings(batch=16, activation_domain_bytes=40 * 50_000)
    result = verify(model, prop, Settings(timeout=60, methods=("crown",),
                                          bab_settings=by_bytes))
    assert result.verdict == "unknown" and 0 < result.domains <= 400, result.domains


def test_input_splitting_cap_is_by_memory(bench):
    """Input-split domains (a box and a few bounds) are capped by the memory they take,
    ``input_domain_bytes``, not by the count meant for activation-split ones: with 40
    allowed and no bytes, BaB stops near 40 open domains; with the default bytes the same
    count does not stop it (acasxu 3_3 prop_9 needs a few thousand domains)."""
    model = load_model(bench / "acasxu" / "onnx" / "ACASXU_run2a_3_3_batch_2000.onnx")
    prop = parse_vnnlib_file(bench / "acasxu" / "vnnlib" / "prop_9.vnnlib",
                             model.n_inputs, model.n_outputs)
    by_count = BabSettings(max_domains=40, batch=16, input_domain_bytes=0)
    result = verify(model, prop, Settings(timeout=60, bab_settings=by_count))
    assert result.verdict == "unknown"
    assert result.domains <= 4 * by_count.max_domains
    by_bytes = BabSettings(max_domains=40, batch=16)
    result = verify(model, prop, Settings(timeout=60, bab_settings=by_bytes))
    assert result.verdict == "verified" and result.domains > 1000


def test_a_point_box_ends_at_once():
    """A box of one point (float32 values), thresholds just under onnxruntime's output
    there: where float32 bounds cannot prove the margin, splitting cannot narrow the box,
    so branch-and-bound stops at once (unknown) instead of splitting the point until the
    deadline; never falsified."""
    model = load_model(_net("Relu", 0))
    x = np.array([0.25, -0.125])
    y = float(ort.run(model, x)[0])
    for rel in (1e-7, 1e-6, 1e-5):
        t0 = time.monotonic()
        result = verify(model, _prop(list(x), list(x), y - rel * abs(y)), Settings(timeout=20))
        assert result.verdict in ("unknown", "verified"), result.message
        assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("act", ["Relu", "Gelu"])
def test_activation_bab_from_alpha_crown_bounds_is_sound(act):
    """Activation splitting starting from alpha-CROWN's intermediate bounds (reused before the
    earliest split, intersected after it): a threshold just below the true minimum (dense
    gridding) is never falsified, one just above is never verified."""
    model = load_model(_net(act, 7, widths=(2, 10, 10, 1)))
    lo, hi = [-1.0, -1.0], [1.0, 1.0]
    true_min = _grid_min(model, lo, hi)
    spread = abs(true_min) + 1.0
    settings = Settings(timeout=8, bab_settings=BabSettings(input_split_max_dims=0))
    safe = verify(model, _prop(lo, hi, true_min - 0.05 * spread), settings)
    unsafe = verify(model, _prop(lo, hi, true_min + 0.02 * spread), settings)
    assert safe.verdict in ("verified", "timeout", "unknown"), safe.message
    assert unsafe.verdict in ("falsified", "timeout", "unknown"), unsafe.message
    assert [m.method for m in safe.methods] == ["ibp", "crown", "alpha-crown", "probe", "bab"]
    if act == "Relu":  # decided by splitting (about 15k domains, 3 s here)
        assert safe.verdict == "verified", safe.message


@pytest.mark.parametrize("act", ["Relu", "Sigmoid"])
def test_children_keep_their_parents_bounds_below_the_split_node(act):
    """Activation-split children take their parent's bounds as they are below their split
    node and intersect theirs with the parent's after it, and start their slopes and split
    multipliers from their parent's: never looser than bounds computed afresh, and every
    sampled point of a child's domain (its input box, where its split constraints hold)
    lies inside every node's bounds and above the domain's final bound."""
    from verifier.search.bab import BabState, BranchAndBound
    from verifier.verify import make_batch

    model = load_model(_net(act, 3, widths=(3, 16, 16, 16, 16, 1)))
    lo, hi = [-1.0] * 3, [1.0] * 3
    conj = Conjunction(np.array([[1.0]]), np.array([-1e3]))
    prop = Property(3, 1, (Case(np.array(lo), np.array(hi), (conj,)),))
    root = make_batch(prop, [0], torch.device("cpu"), torch.float64)
    bab = BranchAndBound(model, prop, root, BabSettings(input_split_max_dims=0),
                         lambda: False, lambda *a: None)
    state = BabState(root.lower, root.upper, torch.zeros(1, dtype=torch.long))
    parents = [state]
    for _ in range(3):  # a few generations: children of children
        bab.bound_and_score(state)
        children = bab.split_activations(state)
        assert children is not None and children.keep is not None
        afresh = dataclasses.replace(children, keep=None, boxes={})
        bab.bound_and_score(afresh, afresh.per)
        kept, _ = bab.bound_children(children)
        for name in kept.boxes:
            order = torch.argsort(children.keep, stable=True)  # bound_children's regrouping
            f_lo, f_hi = (t[order] for t in afresh.boxes[name])
            k_lo, k_hi = kept.boxes[name]
            assert (k_lo >= f_lo - 1e-9).all() and (k_hi <= f_hi + 1e-9).all(), name
        state = kept
        parents.append(kept)
    assert state.warm is not None  # the children started from their parents' parameters
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.uniform(-1, 1, (20_000, 3)))
    names = tuple(state.boxes)
    with torch.no_grad():
        y, values = model.graph.search_values(x, names)
    checked = 0
    for d in range(state.size):
        inside = torch.ones(len(x), dtype=torch.bool)
        for name, (s_lo, s_hi) in state.splits.items():
            v = values[name].reshape(len(x), -1)
            inside &= ((v >= s_lo[d].reshape(-1)) & (v <= s_hi[d].reshape(-1))).all(dim=1)
        for name in names:
            v = values[name].reshape(len(x), -1)[inside]
            b_lo, b_hi = (t[d].reshape(-1) for t in state.boxes[name])
            assert (v >= b_lo - 1e-9).all() and (v <= b_hi + 1e-9).all(), (d, name)
        # the final bound too (the row: y + 1000)
        assert state.per is not None
        if inside.any():
            assert float(state.per[d, 0]) <= float(y.reshape(-1)[inside].min()) + 1e3 + 1e-9
            checked += 1
    assert checked >= state.size // 2


def test_cases_with_fewer_disjuncts_than_others_branch_together():
    """A property whose cases have different numbers of disjuncts: a batch of the smaller
    case's domains keeps the root's width of per-disjunct bounds (padding: +inf), so the
    bounds they inherit still meet theirs; and the whole property is decided soundly."""
    from verifier.search.bab import BabState, BranchAndBound
    from verifier.verify import make_batch

    model = load_model(_net("Relu", 4, widths=(2, 10, 10, 1)))
    lo, hi = [-1.0, -1.0], [1.0, 1.0]
    true_min = _grid_min(model, lo, hi)
    low = true_min - 0.05 * (abs(true_min) + 1)
    rows = [Conjunction(np.array([[1.0]]), np.array([low - k])) for k in range(3)]
    prop = Property(2, 1, (Case(np.array(lo), np.array([0.0, 1.0]), tuple(rows[:2])),
                           Case(np.array([0.0, -1.0]), np.array(hi), tuple(rows))))
    root = make_batch(prop, [0, 1], torch.device("cpu"), torch.float64)
    bab = BranchAndBound(model, prop, root, BabSettings(input_split_max_dims=0),
                         lambda: False, lambda *a: None)
    only_first = BabState(root.lower[:1].repeat(2, 1), root.upper[:1].repeat(2, 1),
                          torch.zeros(2, dtype=torch.long))
    bab.bound_and_score(only_first, torch.full((2, 3), -math.inf, dtype=torch.float64))
    assert only_first.per is not None and only_first.per.shape == (2, 3)
    assert torch.isinf(only_first.per[:, 2]).all()  # the padding: no third disjunct here
    r = verify(model, prop, Settings(timeout=10, methods=("crown",),
                                     bab_settings=BabSettings(input_split_max_dims=0)))
    assert r.verdict in ("verified", "timeout"), r.message


def test_branch_and_bound_bounds_only_the_disjuncts_still_open():
    """The root batch of branch-and-bound holds the rows of the disjuncts still open only,
    renumbered in order; a property of which the methods refuted some disjuncts is still
    decided as dense gridding says, both ways."""
    from verifier.problems import make_batch

    rows = [Conjunction(np.full((k + 1, 1), k + 1.0), np.arange(k + 1.0)) for k in range(3)]
    prop = Property(2, 1, (Case(np.zeros(2), np.ones(2), tuple(rows)),))
    full = make_batch(prop, [0], torch.device("cpu"), torch.float64)
    part = make_batch(prop, [0], torch.device("cpu"), torch.float64, [[True, False, True]])
    assert full.n_disjuncts == [3] and part.n_disjuncts == [2]
    assert part.row_disjunct[0].tolist() == [0, 1, 1, 1]
    assert torch.equal(part.C[0, 1:], full.C[0, 3:]) and torch.equal(part.d[0, 1:], full.d[0, 3:])

    model = load_model(_net("Relu", 6, widths=(2, 10, 10, 1)))
    lo, hi = [-1.0, -1.0], [1.0, 1.0]
    true_min = _grid_min(model, lo, hi)
    spread = abs(true_min) + 1.0
    settings = Settings(timeout=10, bab_settings=BabSettings(input_split_max_dims=0))
    for offset, verdicts in ((-0.05, ("verified", "timeout")), (0.02, ("falsified", "timeout"))):
        easy = Conjunction(np.array([[1.0]]), np.array([true_min - 10 * spread]))
        near = Conjunction(np.array([[1.0]]), np.array([true_min + offset * spread]))
        prop = Property(2, 1, (Case(np.array(lo), np.array(hi), (easy, near, easy)),))
        r = verify(model, prop, settings)
        assert r.verdict in verdicts, (offset, r.message)


def test_warm_parameters_stack_with_zeros_where_a_part_has_none():
    from verifier.bounds.crown import Warm

    slope = {("y", 0, "a0"): (torch.rand(2, 1, 4), torch.rand(2, 1, 4), False)}
    one = Warm(slope, {"h0": (torch.rand(2, 1, 4), torch.rand(2, 1, 4))})
    other = Warm({k: (lo[:1], hi[:1], f) for k, (lo, hi, f) in slope.items()},
                 {"h1": (torch.rand(1, 1, 3), torch.rand(1, 1, 3))})
    both = Warm.cat([one, other], [2, 1])
    assert both is not None and set(both.betas) == {"h0", "h1"}
    assert torch.equal(both.betas["h0"][0][:2], one.betas["h0"][0])
    assert not both.betas["h0"][0][2:].any() and not both.betas["h1"][1][:2].any()
    assert torch.equal(both.take(torch.tensor([2])).betas["h1"][0], other.betas["h1"][0])
    assert Warm.cat([one, None], [2, 1]) is None
    # a slope a part lacks (nothing to choose there in its batch): 0 for its domains
    bare = Warm({}, {})
    mixed = Warm.cat([one, bare], [2, 3])
    assert mixed is not None and mixed.slopes[("y", 0, "a0")][0].shape == (5, 1, 4)
    assert not mixed.slopes[("y", 0, "a0")][0][2:].any()
    assert mixed.slopes[("y", 0, "a0")][2] is False


def test_the_chosen_neuron_is_the_candidate_whose_weaker_child_bounds_best(monkeypatch):
    """Of the best scored neurons, each domain splits the one whose weaker child's cheap
    bound is highest (checked against every candidate split on its own); one candidate:
    the best scored, as before."""
    from verifier.search.bab import BabState, BranchAndBound
    from verifier.verify import make_batch

    model = load_model(_net("Relu", 8, widths=(3, 16, 16, 16, 1)))
    conj = Conjunction(np.array([[1.0]]), np.array([-1e3]))
    prop = Property(3, 1, (Case(-np.ones(3), np.ones(3), (conj,)),))
    root = make_batch(prop, [0], torch.device("cpu"), torch.float64)
    bab = BranchAndBound(model, prop, root, BabSettings(input_split_max_dims=0,
                                                        activation_candidates=5),
                         lambda: False, lambda *a: None)
    state = BabState(root.lower, root.upper, torch.zeros(1, dtype=torch.long))
    bab.bound_and_score(state)
    state, _ = bab.bound_children(bab.split_activations(state))
    chosen = bab.choose_neurons(state)
    assert chosen is not None and state.score is not None
    candidates = state.score.topk(5, dim=1).indices
    for d in range(state.size):
        one = state.take(torch.tensor([d]))
        weaker = [float(bab._quick_bound(bab._split_at(one, c.reshape(1))).min())
                  for c in candidates[d]]
        assert int(chosen[d]) in candidates[d].tolist()
        picked = weaker[candidates[d].tolist().index(int(chosen[d]))]
        assert picked >= max(weaker) - 1e-9
    bab.settings = BabSettings(input_split_max_dims=0, activation_candidates=1)
    assert bab.choose_neurons(state) is None
    # a model too big for the look-ahead's children: the best scored, too
    import verifier.search.bab as bab_module

    bab.settings = BabSettings(input_split_max_dims=0, activation_candidates=5)
    monkeypatch.setattr(bab_module, "LOOKAHEAD_ENTRIES", 2 * state.size * 48)
    assert bab.choose_neurons(state) is None


def test_a_point_box_set_aside_is_bounded_on_its_own_box():
    """Clipping cuts a box after it was bounded, so a point box may carry its larger
    parent's bound.  Set aside, it is bounded again: one whose own box refutes it is
    dropped (a stale -1 where onnxruntime's margin is 0.3), one whose own bound cannot
    refute it stays open, with its bound in the run's global one."""
    from verifier.search.bab import BabState, BranchAndBound
    from verifier.verify import make_batch

    model = load_model(_net("Relu", 0))
    x = np.array([0.25, -0.125])
    y = float(ort.run(model, x)[0])
    for threshold, kept in ((y - 0.3, False), (y - 1e-7 * abs(y), True)):
        prop = _prop([-1.0, -1.0], [1.0, 1.0], threshold)
        root = make_batch(prop, [0], torch.device("cpu"), torch.float64)
        bab = BranchAndBound(model, prop, root, BabSettings(), lambda: False,
                             lambda *a: None)
        assert bab.mode == "input"
        point = torch.tensor(x[None], dtype=torch.float64)
        stale = torch.full((1, 1), -1.0, dtype=torch.float64)
        bab._set_aside(BabState(point, point.clone(), torch.zeros(1, dtype=torch.long),
                                per=stale))
        assert len(bab.points) == int(kept)
        if kept:
            assert -1.0 < bab.points_lb <= 0
        else:
            assert bab.points_lb == math.inf
