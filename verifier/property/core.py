"""Properties: what is to be proved, in the engine's one form (DESIGN.md: Property).

A property describes the *unsafe* set.  It is a union of cases; a case is an input box
together with a disjunction of conjunctions of linear output constraints.  An input x in a
case's box whose output y = f(x) satisfies every row of one of the case's conjunctions
(``C @ y <= d``, ``<`` on the rows marked strict) is a counterexample.  The property is
*verified* when no such x exists.

Inputs and outputs are flat vectors in row-major order of the ONNX tensors.  Checks with
``tol=0`` are exact: the rows are evaluated in rational arithmetic, so a counterexample is
one on the values as given, with no rounding in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np


def _exact_rows(C: np.ndarray, y: np.ndarray) -> list[Fraction]:
    """``C @ y`` in exact rational arithmetic (only the non-zero coefficients)."""
    out = []
    for row in C:
        nz = np.flatnonzero(row)
        out.append(sum((Fraction(float(row[j])) * Fraction(float(y[j])) for j in nz),
                       Fraction(0)))
    return out


@dataclass(frozen=True, eq=False)
class Conjunction:
    """Unsafe outputs: every row holds, ``C @ y <= d`` (``<`` where ``strict``).  C is
    (rows, n_outputs), d is (rows,), strict (rows,) bool or None (no strict row)."""

    C: np.ndarray
    d: np.ndarray
    strict: np.ndarray | None = None

    def holds(self, y: np.ndarray, tol: float = 0.0) -> bool:
        """Whether output vector ``y`` lies in this unsafe set: exactly for ``tol`` 0
        (non-finite outputs never do), else up to ``tol`` (strictness ignored)."""
        y = np.asarray(y, dtype=np.float64).ravel()
        if tol:
            return bool(np.all(self.C @ y <= self.d + tol))
        used = np.flatnonzero(np.any(self.C != 0, axis=0))
        if not np.all(np.isfinite(y[used])):
            return False
        strict = self.strict if self.strict is not None else np.zeros(len(self.d), dtype=bool)
        for value, bound, s in zip(_exact_rows(self.C, y), self.d.tolist(), strict.tolist(),
                                   strict=True):
            bound = Fraction(bound)
            if value > bound or (s and value == bound):
                return False
        return True


@dataclass(frozen=True, eq=False)
class Case:
    """One input box and the disjunction of unsafe output conjunctions that goes with it."""

    lower: np.ndarray  # (n_inputs,) float64
    upper: np.ndarray  # (n_inputs,) float64
    disjuncts: tuple[Conjunction, ...]

    def contains(self, x: np.ndarray) -> bool:
        """Whether ``x`` lies in the (closed) box, compared exactly."""
        x = np.asarray(x, dtype=np.float64).ravel()
        return bool(np.all(x >= self.lower) and np.all(x <= self.upper))


@dataclass(frozen=True, eq=False)
class Property:
    """The unsafe set: the union over cases of {x in box, f(x) in some disjunct}.

    ``strict_x`` lists (input index, value) of every strict input bound (``X_i < v`` or
    ``X_i > v``): the boxes are their closures, and an input equal to such a value is never
    taken as a counterexample."""

    n_inputs: int
    n_outputs: int
    cases: tuple[Case, ...]
    strict_x: tuple[tuple[int, float], ...] = ()

    def admits(self, case: int, x: np.ndarray, ignore: np.ndarray | None = None) -> bool:
        """Whether ``x`` lies in case ``case``'s box, strict input bounds respected, on the
        coordinates not marked in ``ignore``."""
        x = np.asarray(x, dtype=np.float64).ravel()
        c = self.cases[case]
        keep = np.ones(len(x), dtype=bool) if ignore is None else ~np.asarray(ignore)
        if not (np.all(x[keep] >= c.lower[keep]) and np.all(x[keep] <= c.upper[keep])):
            return False
        return not any(x[i] == v and keep[i] for i, v in self.strict_x)

    def violated_by(self, x: np.ndarray, y: np.ndarray, tol: float = 1e-4) -> bool:
        """Whether (x, y) is a counterexample: x in some case's box and y unsafe there
        (exactly for ``tol`` 0)."""
        x = np.asarray(x, dtype=np.float64).ravel()
        for k, case in enumerate(self.cases):
            inside = self.admits(k, x) if not tol else bool(
                np.all(x >= case.lower - tol) and np.all(x <= case.upper + tol))
            if inside and any(conj.holds(y, tol) for conj in case.disjuncts):
                return True
        return False
