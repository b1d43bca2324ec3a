"""Properties: what is to be proved, in the engine's one form (DESIGN.md: Property).

A property describes the *unsafe* set.  It is a union of cases; a case is an input box
together with a disjunction of conjunctions of linear output constraints.  An input x in a
case's box whose output y = f(x) satisfies every row of one of the case's conjunctions
(``C @ y <= d``) is a counterexample.  The property is *verified* when no such x exists.

Inputs and outputs are flat vectors in row-major order of the ONNX tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Conjunction:
    """Unsafe outputs: every row holds, ``C @ y <= d``.  C is (rows, n_outputs), d is (rows,)."""

    C: np.ndarray
    d: np.ndarray

    def holds(self, y: np.ndarray, tol: float = 0.0) -> bool:
        """Whether output vector ``y`` lies in this unsafe set (up to ``tol``)."""
        return bool(np.all(self.C @ np.asarray(y, dtype=np.float64).ravel() <= self.d + tol))


@dataclass(frozen=True, eq=False)
class Case:
    """One input box and the disjunction of unsafe output conjunctions that goes with it."""

    lower: np.ndarray  # (n_inputs,) float64
    upper: np.ndarray  # (n_inputs,) float64
    disjuncts: tuple[Conjunction, ...]


@dataclass(frozen=True, eq=False)
class Property:
    """The unsafe set: the union over cases of {x in box, f(x) in some disjunct}."""

    n_inputs: int
    n_outputs: int
    cases: tuple[Case, ...]

    def violated_by(self, x: np.ndarray, y: np.ndarray, tol: float = 1e-4) -> bool:
        """Whether (x, y) is a counterexample: x in some case's box and y unsafe there."""
        x = np.asarray(x, dtype=np.float64).ravel()
        for case in self.cases:
            if np.all(x >= case.lower - tol) and np.all(x <= case.upper + tol):
                if any(conj.holds(y, tol) for conj in case.disjuncts):
                    return True
        return False
