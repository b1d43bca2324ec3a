"""The branching-point table: split points inside the interval, halves never looser than the
whole, sound halves, and a disk cache that later runs reuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from verifier.ops import branching as branch_points
from verifier.ops.base import Var
from verifier.ops.branching import gap, load_table, split_points
from verifier.ops.nonlinear import Gelu, Sigmoid, Sin, Tanh
from verifier.ops.relax import relax

OPS = [cls({"_op_type": cls.__name__}, [Var("x", (1,))], (1,)) for cls in (Sigmoid, Tanh, Gelu,
                                                                           Sin)]


@pytest.mark.parametrize("op", OPS, ids=lambda o: type(o).__name__)
def test_splitting_at_table_points_never_loosens_and_stays_sound(op, tmp_path, monkeypatch):
    monkeypatch.setenv("NNVERIFY_CACHE_DIR", str(tmp_path))
    rng = np.random.default_rng(7)
    centre = rng.uniform(-6, 6, 400)
    width = np.exp(rng.uniform(np.log(0.02), np.log(6.0), 400))
    l = torch.tensor(centre - width / 2)
    u = torch.tensor(centre + width / 2)
    shape = op.scalar_shape()
    table = load_table(type(op).__name__ + "-test", "", shape)
    p = split_points(table, l, u)
    assert ((p > l) & (p < u)).all()
    whole = gap(shape, l, u)
    halves = gap(shape, l, p) + gap(shape, p, u)
    assert (halves <= whole + 1e-9 * (1 + whole.abs())).all()
    for a, b in ((l, p), (p, u)):  # each half's relaxation contains the function
        xs = a + torch.linspace(0, 1, 501, dtype=torch.float64).unsqueeze(1) * (b - a)
        lines = relax(shape, a, b)
        fx = op.f(xs)
        assert (lines.a_l * xs + lines.b_l <= fx + 1e-9).all()
        assert (lines.a_u * xs + lines.b_u >= fx - 1e-9).all()


def test_table_is_cached_on_disk_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("NNVERIFY_CACHE_DIR", str(tmp_path))
    op = OPS[0]
    first = load_table("Sigmoid-cache-test", "", op.scalar_shape())
    files = list((tmp_path / "nnverify").glob("branch-points-Sigmoid-cache-test-*.npy"))
    assert len(files) == 1
    branch_points._LOADED.clear()  # a new process: read from disk, not recomputed
    calls = []
    monkeypatch.setattr(branch_points, "compute_table", lambda s: calls.append(s))
    again = load_table("Sigmoid-cache-test", "", op.scalar_shape())
    assert not calls and np.array_equal(first, again)
