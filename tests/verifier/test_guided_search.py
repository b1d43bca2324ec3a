"""The counterexample search guided by branch-and-bound's domains (verifier/search/guided.py).

The planted models of test_hidden_counterexamples.py hide a counterexample in a slab
|x_1 + ... + x_20 - 20 P| <= ~1e-4 with no gradient outside it: PGD from random starts never
sees it, and with 20 inputs branch-and-bound splits activations, whose domains never shrink
the box.  The split limits (z >= 0, z <= 0 on the bump's pre-activations) are what point
at it; these tests check that the search follows them, that what it returns is real
(onnxruntime), and that it is what finds the counterexamples.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from verifier import Settings, load_model, parse_vnnlib, verify
from verifier.problems import make_batch
from verifier.search.bab import BabSettings, split_nodes
from verifier.search.guided import GuidedSettings, guided_points, limit_violation, start_points

from .test_hidden_counterexamples import BUMPS, P, _spec, relu

N = 20


def _relu_domain(limited: bool):
    """The 20-input triangle y = relu(s + 1) - 2 relu(s) + relu(s - 1), s = K (sum x - 20 P),
    unsafe where y >= 0.5, and the domain s + 1 >= 0, s >= 0, s - 1 <= 0 (where y = 1 - s)
    or the same box without limits."""
    bump = next(b for b in BUMPS if b.name == "relu")
    data = relu(N)
    model = load_model(data)
    prop = parse_vnnlib(_spec(bump, N, bump.hidden), model.n_inputs, model.n_outputs)
    batch = make_batch(prop, [0], torch.device("cpu"), torch.float32)
    (name, node), = split_nodes(model.graph)
    inf = math.inf
    lo = torch.tensor([[0.0, 0.0, -inf]]).reshape(1, *node.shape)
    hi = torch.tensor([[inf, inf, 0.0]]).reshape(1, *node.shape)
    return data, model, batch, ({name: (lo, hi)} if limited else {})


@pytest.mark.parametrize("starts", [1, 4])
def test_split_limits_lead_into_the_slab(starts: int):
    data, model, batch, splits = _relu_domain(limited=True)
    x0 = start_points(batch, None, starts, seed=0)  # the centre (sum 0: s = -20 P K) first
    xs, vs = guided_points(model.graph, batch, splits, x0, GuidedSettings())
    assert bool((xs >= batch.lower.unsqueeze(1)).all() and (xs <= batch.upper.unsqueeze(1)).all())
    best = int(vs.argmin())
    assert float(vs.reshape(-1)[best]) <= 0
    x = xs.reshape(-1, N)[best].numpy().astype(np.float32)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": x.reshape(1, -1)})[0].ravel()
    assert y[0] >= 0.5, (x.sum() - N * P, y)  # a real counterexample, in the slab


def test_without_limits_the_flat_model_gives_nothing_to_follow():
    """The same search without the domain's limits: v has no gradient off the slab, so the
    limits, not the steps alone, are what find it."""
    _, model, batch, splits = _relu_domain(limited=False)
    x0 = start_points(batch, None, 4, seed=0)
    _, vs = guided_points(model.graph, batch, splits, x0, GuidedSettings())
    assert float(vs.min()) > 0


def test_limit_violation_counts_only_what_leaves_the_limits():
    zero = torch.zeros(2, 3)
    z = torch.tensor([[-2.0, 0.5, 3.0], [0.0, 1.0, 2.0]]).repeat_interleave(3, 0)  # (6, 3)
    lo = torch.tensor([[-1.0, -math.inf, 0.0], [-math.inf, -math.inf, -math.inf]])
    hi = torch.tensor([[math.inf, 0.0, 1.0], [math.inf, math.inf, math.inf]])
    got = limit_violation({"z": z}, {"z": (lo, hi)}, zero)
    # row 0: -2 is 1 below -1; 0.5 is 0.5 above 0; 3 is 2 above 1 -> 3.5; row 1: no limits
    assert torch.allclose(got, torch.tensor([[3.5] * 3, [0.0] * 3]))


FOUND_BY_GUIDED = ("relu", "leaky_relu", "sigmoid", "exp", "log", "sqrt", "reciprocal",
                   "abs", "max_of_variables", "product", "conv", "average_pool")


@pytest.mark.parametrize("name", FOUND_BY_GUIDED)
def test_hidden_counterexample_found_with_20_inputs(name: str):
    """verify() finds the planted counterexample (found here in 0.1-1.1 s; the timeout
    leaves room for a loaded machine), and onnxruntime confirms it."""
    bump = next(b for b in BUMPS if b.name == name)
    data = bump.build(N)
    model = load_model(data)
    prop = parse_vnnlib(_spec(bump, N, bump.hidden), model.n_inputs, model.n_outputs)
    result = verify(model, prop, Settings(timeout=20))
    assert result.verdict == "falsified", result.message
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for cex in result.counterexamples:
        x = np.asarray(cex.x, dtype=np.float32)
        assert np.all((-1 <= x) & (x <= 1))
        y = sess.run(None, {"x": x.reshape(1, -1)})[0].ravel()
        assert y[bump.out] >= bump.hidden


def test_branch_and_bound_without_the_guided_search_misses_it():
    """The control: the same engine with the guided search off ends without a
    counterexample on the triangle (this is what the search adds)."""
    bump = next(b for b in BUMPS if b.name == "relu")
    model = load_model(bump.build(N))
    prop = parse_vnnlib(_spec(bump, N, bump.hidden), model.n_inputs, model.n_outputs)
    settings = dataclasses.replace(Settings(timeout=3), bab_settings=BabSettings(guided=None))
    assert verify(model, prop, settings).verdict in ("unknown", "timeout")
