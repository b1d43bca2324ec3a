"""Problems as batched tensors (DESIGN.md: Problem).

Each case of a property (one input box, several disjuncts) becomes one row of a batch.
Every disjunct contributes its rows of ``C y - d``; all rows of a case are stacked along a
row axis (padded with inert rows marked -1), so that bounds for all disjuncts of many cases
come from one call.  A disjunct is refuted when the lower bound of one of its rows is > 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from verifier.property.core import Case, Property

Tensor = torch.Tensor


@dataclass
class ProblemBatch:
    lower: Tensor  # (B, n_in)
    upper: Tensor  # (B, n_in)
    C: Tensor  # (B, R, n_out)
    d: Tensor  # (B, R)
    row_disjunct: Tensor  # (B, R) long: index of the row's disjunct in its case, -1 = padding
    cases: list[int]  # index of each batch row's case in the property
    n_disjuncts: list[int]  # disjuncts per batch row

    @property
    def size(self) -> int:
        return self.lower.shape[0]

    def disjunct_bounds(self, row_lower: Tensor) -> Tensor:
        """(B, D): per disjunct, the largest row lower bound (> 0 refutes it); padding +inf."""
        B = self.size
        D = max(self.n_disjuncts) if self.n_disjuncts else 0
        out = torch.full((B, D + 1), -torch.inf, dtype=row_lower.dtype, device=row_lower.device)
        idx = torch.where(self.row_disjunct < 0, D, self.row_disjunct)
        out = out.scatter_reduce(1, idx, row_lower, reduce="amax", include_self=True)[:, :D]
        counts = torch.tensor(self.n_disjuncts, device=row_lower.device).unsqueeze(1)
        pad = torch.arange(D, device=row_lower.device).unsqueeze(0) >= counts
        return torch.where(pad, torch.inf, out)


def rounded(a: np.ndarray, dtype: torch.dtype, device: torch.device, direction: int) -> Tensor:
    """``a`` (float64) in ``dtype``, rounded down (direction -1) or up (+1) where the cast
    is inexact: a box rounded outward holds every input of the original box, and with d
    rounded up, a lower bound of ``C y - d`` stays one for the original d."""
    t = torch.as_tensor(a, dtype=dtype, device=device)
    back = t.double().cpu().numpy()
    wrong = back > a if direction < 0 else back < a
    if not wrong.any():
        return t
    toward = torch.full_like(t, -torch.inf if direction < 0 else torch.inf)
    step = torch.nextafter(t, toward)
    return torch.where(torch.as_tensor(wrong, device=device), step, t)


def exactly_representable(a: np.ndarray, dtype: torch.dtype) -> bool:
    """Whether every entry of ``a`` (float64) survives the cast to ``dtype`` unchanged."""
    return bool(np.array_equal(torch.as_tensor(a, dtype=dtype).double().numpy(), a))


def case_rows(case: Case, n_out: int, keep: Sequence[bool] | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All rows of a case's disjuncts (those ``keep`` marks, when given, numbered from 0 in
    order): C (R, n_out), d (R,), disjunct index per row (R,)."""
    disjuncts = [c for k, c in enumerate(case.disjuncts) if keep is None or keep[k]]
    Cs = [c.C.reshape(-1, n_out) for c in disjuncts]
    ds = [c.d.reshape(-1) for c in disjuncts]
    which = [np.full(len(d), i) for i, d in enumerate(ds)]
    if not Cs:
        return np.zeros((0, n_out)), np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(Cs), np.concatenate(ds), np.concatenate(which).astype(np.int64)


def make_batch(prop: Property, indices: list[int], device: torch.device,
               dtype: torch.dtype, open_disjuncts: Sequence[Sequence[bool]] | None = None
               ) -> ProblemBatch:
    """Stack the given cases of ``prop`` into one batch; with ``open_disjuncts`` (per case
    given, a flag per disjunct) only the flagged disjuncts of each case, renumbered from 0
    (the others refuted on the case's whole box already, so on every part of it too)."""
    keeps = open_disjuncts if open_disjuncts is not None else [None] * len(indices)
    rows = [case_rows(prop.cases[i], prop.n_outputs, keep)
            for i, keep in zip(indices, keeps, strict=True)]
    R = max(1, max(len(r[1]) for r in rows))
    B, m = len(indices), prop.n_outputs
    C = np.zeros((B, R, m))
    d = np.zeros((B, R))
    which = np.full((B, R), -1, dtype=np.int64)
    for b, (Cb, db, wb) in enumerate(rows):
        C[b, : len(db)], d[b, : len(db)], which[b, : len(db)] = Cb, db, wb
    lower = np.stack([prop.cases[i].lower for i in indices])
    upper = np.stack([prop.cases[i].upper for i in indices])

    def t(a: np.ndarray) -> Tensor:
        return torch.as_tensor(a, dtype=dtype, device=device)

    return ProblemBatch(
        lower=rounded(lower, dtype, device, -1), upper=rounded(upper, dtype, device, +1),
        C=t(C), d=rounded(d, dtype, device, +1),
        row_disjunct=torch.as_tensor(which, device=device),
        cases=list(indices),
        n_disjuncts=[len(prop.cases[i].disjuncts) if keep is None else int(sum(keep))
                     for i, keep in zip(indices, keeps, strict=True)],
    )


def batches(prop: Property, max_rows: int, device: torch.device, dtype: torch.dtype):
    """Yield ProblemBatch objects covering every case, at most ``max_rows`` cases each."""
    for start in range(0, len(prop.cases), max_rows):
        yield make_batch(prop, list(range(start, min(start + max_rows, len(prop.cases)))),
                         device, dtype)
