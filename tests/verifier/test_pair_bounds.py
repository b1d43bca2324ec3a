"""Two rows of a disjunct bounded together (verifier/search/clip.py, ``pair_bounds``): the
bound must lie below ``max(L_j, L_k)`` everywhere on the box, be exact for one input
(where the minimum is at an end or where the two lines cross), and survive float64's
rounding on exact rational arithmetic; in branch-and-bound it refutes a disjunct that
neither row refutes alone."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from verifier import Settings
from verifier.property.core import Case, Conjunction, Property
from verifier.search.clip import pair_bounds
from verifier.verify import verify


def _rows(rng: np.random.Generator, N: int, R: int, n: int, scale: float = 1.0):
    lo = rng.uniform(-2, 1, (N, n)) * scale
    hi = lo + rng.uniform(0, 2, (N, n)) * scale * (rng.uniform(size=(N, n)) > 0.1)
    a = rng.normal(size=(N, R, n)) * (rng.uniform(size=(N, R, n)) > 0.2)
    low = np.minimum(a * lo[:, None], a * hi[:, None]).sum(-1)  # min of a.x over the box
    m = rng.uniform(-1, 0.2, (N, R)) * scale
    return lo, hi, a, m, low


def _per(rd: np.ndarray, D: int) -> torch.Tensor:
    return torch.full((rd.shape[0], D), -1.0, dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_below_the_rows_maximum_everywhere(dtype: torch.dtype):
    rng = np.random.default_rng(1)
    N, R, n, D = 150, 5, 3, 2
    lo, hi, a, m, low = _rows(rng, N, R, n)
    rd = rng.integers(-1, D, (N, R))
    out = pair_bounds(torch.tensor(lo, dtype=dtype), torch.tensor(hi, dtype=dtype),
                      torch.tensor(a, dtype=dtype), torch.tensor(m, dtype=dtype),
                      torch.tensor(rd), _per(rd, D).to(dtype))
    assert out is not None and out.dtype == dtype
    gained = 0
    for i in range(N):
        x = rng.uniform(lo[i], hi[i], (20000, n))
        corners = np.array(np.meshgrid(*zip(lo[i], hi[i], strict=True))).reshape(n, -1).T
        x = np.concatenate([x, corners])
        L = x @ a[i].T + (m[i] - low[i])  # each row's linear function, minimum m
        for k in range(D):
            rows = rd[i] == k
            if rows.sum() < 2:
                assert float(out[i, k]) == -np.inf
                continue
            worst = L[:, rows].max(axis=1).min()
            assert float(out[i, k]) <= worst + 1e-12, (i, k)
            gained += float(out[i, k]) > m[i, rows].max() + 1e-3
    assert gained > 20, gained  # the pair does better than its best row often


def test_exact_on_one_input_in_rational_arithmetic():
    """For one input the minimum of max(L_j, L_k) is at an end or where the lines cross;
    the bound must be below it (computed exactly) and next to it (float64's error on the
    magnitudes involved), also where the rows' slopes differ by 14 orders."""
    rng = np.random.default_rng(2)
    for scale in (1.0, 1e-6, 1e6):
        N = 300
        lo, hi, a, m, _ = _rows(rng, N, 2, 1, scale)
        a = a * rng.choice([1e-7, 1.0, 1e7], (N, 2, 1))
        rd = np.zeros((N, 2), dtype=np.int64)
        out = pair_bounds(torch.tensor(lo), torch.tensor(hi), torch.tensor(a),
                          torch.tensor(m), torch.tensor(rd), _per(rd, 1))
        assert out is not None
        for i in range(N):
            fl, fh = Fraction(lo[i, 0]), Fraction(hi[i, 0])
            aj, ak = Fraction(a[i, 0, 0]), Fraction(a[i, 1, 0])
            cj = Fraction(m[i, 0]) - min(aj * fl, aj * fh)
            ck = Fraction(m[i, 1]) - min(ak * fl, ak * fh)
            points = [fl, fh]
            if aj != ak:
                cross = (ck - cj) / (aj - ak)
                if fl <= cross <= fh:
                    points.append(cross)
            exact = min(max(aj * x + cj, ak * x + ck) for x in points)
            got = Fraction(float(out[i, 0]))
            assert got <= exact, (scale, i)
            # within float64's error on the magnitudes involved
            size = max(abs(lo[i, 0]), abs(hi[i, 0]))
            magnitude = abs(m[i]).sum() + abs(a[i]).sum() * size
            assert float(exact - got) <= 1e-13 * magnitude + 1e-300, (scale, i)


def test_no_pairs_refuted_or_non_finite():
    lo, hi = torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    A = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]], dtype=torch.float64)
    m = torch.tensor([[-0.4, -0.4]], dtype=torch.float64)  # x0 <= 0.4 and x0 >= 0.6
    one_each = torch.tensor([[0, 1]])
    assert pair_bounds(lo, hi, A, m, one_each, _per(one_each.numpy(), 2)) is None
    both = torch.tensor([[0, 0]])
    out = pair_bounds(lo, hi, A, m, both, _per(both.numpy(), 1))
    assert out is not None and 0.09 < float(out[0, 0]) <= 0.1  # w = 1/2: 0.1 everywhere
    done = torch.ones(1, 1, dtype=torch.float64)  # already refuted: not looked at
    assert float(pair_bounds(lo, hi, A, m, both, done)[0, 0]) == -np.inf  # type: ignore
    wide = hi.clone()
    wide[0, 1] = float("inf")  # an unbounded input: nothing to conclude
    assert float(pair_bounds(lo, wide, A, m, both, _per(both.numpy(), 1))[0, 0]) == -np.inf  # type: ignore[index]
    bad = A.clone()
    bad[0, 1, 1] = float("nan")
    assert float(pair_bounds(lo, hi, bad, m, both, _per(both.numpy(), 1))[0, 0]) == -np.inf  # type: ignore[index]


def test_bab_refutes_a_disjunct_of_two_rows_neither_refutes_alone():
    """y = x0 + x1 on [0, 1]^2: "y <= 1 and y >= 1.001" holds nowhere, but over the whole
    box each row's bound is about -1 and clipping cuts next to nothing; the pair refutes
    it in the root's bound (by rows alone it takes splits down to the diagonal's
    neighbourhood)."""
    from onnx import TensorProto, helper, numpy_helper

    from verifier.importer.onnx_import import load_model

    w = numpy_helper.from_array(np.ones((2, 1), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], [w])
    model = load_model(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    conj = Conjunction(np.array([[1.0], [-1.0]]), np.array([1.0, -1.001]))
    prop = Property(2, 1, (Case(np.zeros(2), np.ones(2), (conj,)),))
    result = verify(model, prop, Settings(timeout=20, methods=("ibp",)))
    assert result.verdict == "verified"
    assert result.domains <= 2, result.domains
