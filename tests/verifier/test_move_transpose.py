"""A move's transpose by its index map (``MoveOp._sources``) against autograd's.

Every op form of the shared op cases (tests/verifier/opcases.py) whose op only copies
entries (Slice with negative steps, Concat, Pad in every mode, Gather with repeated
indices, Transpose, Expand, Where on a constant condition, ScatterND, ...), and every
moving node of the shared benchmark models: ``backward`` on random coefficients equals the
vector-Jacobian product of ``forward``, the reference it replaces.
"""

from __future__ import annotations

import pytest
import torch

from tests.verifier.conftest import bench_models
from tests.verifier.opcases import CASES, build
from verifier import load_model
from verifier.ops.linear import vjp_backward


def _moves(model):
    return [n for n in model.graph.nodes if n.op.exact_move and hasattr(n.op, "_sources")]


def _check(node) -> None:
    A = torch.randn(2, 3, *node.shape, dtype=torch.float64)
    got, ref = node.op.backward(A), vjp_backward(node.op, A)
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        assert g.shape == r.shape and torch.allclose(g, r, atol=1e-12), node.op_type


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_each_moves_transpose_is_autograds(case):
    model = load_model(build(case))
    for node in _moves(model):
        assert node.op._sources(torch.zeros(1, dtype=torch.float64)) is not None, case.name
        _check(node)


def test_the_benchmark_models_moves(bench):
    checked = 0
    for path in bench_models():
        try:
            model = load_model(path)
        except Exception:  # refused models are the importer's tests' business
            continue
        for node in _moves(model):
            _check(node)
            checked += 1
    assert checked > 100


def test_the_op_cases_hold_moves_of_every_kind():
    kinds = {n.op_type for case in CASES for n in _moves(load_model(build(case)))}
    assert {"Slice", "Concat", "Pad", "Gather", "Transpose", "Expand", "Reshape"} <= kinds
