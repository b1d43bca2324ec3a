"""Input clipping by linear bounds (verifier/search/clip.py): the cut box must keep every
point where some disjunct's linear functions are all <= 0, and BaB with clipping must keep
its verdicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from verifier.search.clip import clip_boxes


def _setup(rng: np.random.Generator, N: int, R: int, n: int, dtype: torch.dtype):
    lo = rng.uniform(-2, 1, (N, n))
    hi = lo + rng.uniform(0, 2, (N, n)) * (rng.uniform(size=(N, n)) > 0.1)  # some points
    a = rng.normal(size=(N, R, n)) * (rng.uniform(size=(N, R, n)) > 0.2)  # some zeros
    # offsets that put the rows' minima in [-1, 0.3]: near 0, where cuts happen
    c = -(np.minimum(a * lo[:, None], a * hi[:, None])).sum(-1) + rng.uniform(-1, 0.3, (N, R))
    row_disjunct = rng.integers(-1, 3, (N, R))
    n_disjuncts = np.maximum(row_disjunct.max(axis=1) + 1, 1)
    low_t, high_t = torch.tensor(lo, dtype=dtype), torch.tensor(hi, dtype=dtype)
    # the rows' exact minimum over the box, lowered a little (any lower bound is sound)
    m = (np.minimum(a * lo[:, None], a * hi[:, None])).sum(-1) + c
    m = m - rng.uniform(0, 0.5, m.shape) * (rng.uniform(size=m.shape) > 0.5)  # half exact
    return lo, hi, a, c, row_disjunct, n_disjuncts, low_t, high_t, m


def _extremes(lo: np.ndarray, hi: np.ndarray, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per row and input, the point of {L <= 0} farthest along that input from the row's
    minimising corner (the other inputs at the corner): where an exact cut is tight."""
    pts = []
    for r in range(a.shape[0]):
        corner = np.where(a[r] > 0, lo, hi)
        m = a[r] @ corner + c[r]
        for j in range(a.shape[1]):
            if a[r, j] == 0 or m > 0:
                continue
            x = corner.copy()
            x[j] = np.clip(corner[j] - np.sign(a[r, j]) * m / abs(a[r, j]) * (1 - 1e-9),
                           lo[j], hi[j])
            pts.append(x)
    return np.array(pts).reshape(-1, a.shape[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clipped_boxes_keep_every_violating_point(dtype: torch.dtype):
    rng = np.random.default_rng(0)
    N, R, n = 200, 4, 3
    lo, hi, a, c, rd, nd, low_t, high_t, m = _setup(rng, N, R, n, dtype)
    new_lo, new_hi, empty = clip_boxes(low_t, high_t, torch.tensor(a, dtype=dtype),
                                       torch.tensor(m), torch.tensor(rd), torch.tensor(nd))
    assert bool((new_lo >= low_t).all()) and bool((new_hi <= high_t).all())
    shrunk = 0
    for i in range(N):
        x = rng.uniform(lo[i], hi[i], (4000, n))
        x = np.concatenate([x, lo[i][None], hi[i][None], _extremes(lo[i], hi[i], a[i], c[i])])
        L = x @ a[i].T + c[i]  # (S, R)
        violating = np.zeros(len(x), dtype=bool)
        for k in range(nd[i]):
            rows = rd[i] == k
            violating |= (L[:, rows] <= 0).all(axis=1)  # an empty disjunct: all of the box
        xs = torch.tensor(x[violating], dtype=dtype)
        if bool(empty[i]):
            assert not violating.any(), i
            shrunk += 1
            continue
        inside = ((xs >= new_lo[i]) & (xs <= new_hi[i])).all(dim=1)
        assert bool(inside.all()), (i, x[violating][~inside.numpy()][:3])
        shrunk += bool(((new_hi[i] - new_lo[i]) < (high_t[i] - low_t[i]) * 0.9).any())
    assert shrunk > N // 8, shrunk  # the cut does something


def test_exact_small_case():
    # one row, L(x) = x0 + 2 x1 - 1 on [0, 1]^2: minimum -1, x0 <= 1 (no cut), x1 <= 0.5
    lo, hi = torch.zeros(1, 2), torch.ones(1, 2)
    A = torch.tensor([[[1.0, 2.0]]])
    new_lo, new_hi, empty = clip_boxes(lo, hi, A, torch.tensor([[-1.0]]),
                                       torch.tensor([[0]]), torch.tensor([1]))
    assert not bool(empty[0])
    assert new_lo.tolist() == [[0.0, 0.0]]
    assert new_hi[0, 0] == 1.0 and 0.5 <= float(new_hi[0, 1]) < 0.5 + 1e-6
    # a row whose bound is > 0 refutes the only disjunct: the domain is empty
    *_, empty = clip_boxes(lo, hi, A, torch.tensor([[0.25]]), torch.tensor([[0]]),
                           torch.tensor([1]))
    assert bool(empty[0])
    # two disjuncts, one cut to x1 <= 0.5, the other (-x1 + 0.25 >= ...) to x1 >= 0.75:
    # the hull is the whole of x1
    A2 = torch.tensor([[[1.0, 2.0], [0.0, -1.0]]])
    new_lo, new_hi, _ = clip_boxes(lo, hi, A2, torch.tensor([[-1.0, -0.25]]),
                                   torch.tensor([[0, 1]]), torch.tensor([2]))
    assert new_lo[0, 1] <= 0.0 and new_hi[0, 1] >= 1.0
    # non-finite rows or coefficients cut nothing
    new_lo, new_hi, empty = clip_boxes(lo, hi, torch.tensor([[[float("nan"), 2.0]]]),
                                       torch.tensor([[-1.0]]), torch.tensor([[0]]),
                                       torch.tensor([1]))
    assert not bool(empty[0]) and new_hi.tolist() == [[1.0, 1.0]]
