"""Stage 3 of the VNN-LIB reader: a finished parse to the Property.

:class:`Assembler` takes the parser's atoms, declarations and DNF terms, checks the
declarations and indices, builds the input box of every term (grouping equal boxes into cases)
and the output rows of every term, and returns the
:class:`~verifier.property.core.Property` (to ``api``).  Lines for error messages come from the
atom store or, for atoms inside runs, from a locating re-parse (``locate``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from verifier.property.core import Case, Conjunction, Property
from verifier.property.vnnlib.atoms import ROW, XLO, XUP, YGE, YLE, Term
from verifier.property.vnnlib.errors import SpecError
from verifier.property.vnnlib.parser import Parser, product

_BOX_BATCH_ELEMS = 1 << 22  # input-box matrix elements built at once during assembly
_BOX_BATCH_ATOMS = 1 << 19  # input atoms applied at once during assembly


def _expand_ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of ``range(s, e)`` for each pair, vectorised."""
    lengths = ends - starts
    total = int(lengths.sum())
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(total, dtype=np.int64)


def _term_atoms(terms: list[Term]) -> tuple[np.ndarray, np.ndarray]:
    """For every atom of every term: (term number, atom index), ordered by term."""
    n = len(terms)
    counts = np.fromiter(map(len, terms), dtype=np.int64, count=n) // 2
    flat = np.fromiter(itertools.chain.from_iterable(terms), dtype=np.int64)
    segs = flat.reshape(-1, 2)
    seg_term = np.repeat(np.arange(n, dtype=np.int64), counts)
    lengths = segs[:, 1] - segs[:, 0]
    return np.repeat(seg_term, lengths), _expand_ranges(segs[:, 0], segs[:, 1])


class Assembler:
    """Builds the Property from a finished parse (declarations, boxes, rows, grouping)."""

    def __init__(
        self,
        parser: Parser,
        locate: Callable[[int], int | None],
        n_inputs: int | None,
        n_outputs: int | None,
    ) -> None:
        self.p = parser
        self.locate = locate
        self.kind = _concat(parser.kind_parts, np.int8)
        self.idx = _concat(parser.idx_parts, np.int64)
        self.val = _concat(parser.val_parts, np.float64)
        self.strict = _concat(parser.strict_parts, bool)
        self.nx, self.x_lines = self._declared(False, "inputs", "X", n_inputs)
        self.ny, _ = self._declared(True, "outputs", "Y", n_outputs)

    def atom_line(self, k: int) -> int | None:
        """Line of atom ``k``."""
        line = self.p.gen_lines.get(k)
        return line if line is not None else self.locate(k)

    def _declared(
        self, is_y: bool, what: str, letter: str, expected: int | None
    ) -> tuple[int, np.ndarray]:
        """Number of declared variables of one kind (checked 0..n-1) and their lines by index."""
        p = self.p
        sel = np.asarray(p.decl_y, dtype=np.int8) == is_y
        idx = np.asarray(p.decl_idx, dtype=np.int64)[sel]
        lines = np.asarray(p.decl_line, dtype=np.int64)[sel]
        order = np.argsort(idx, kind="stable")
        sidx = idx[order]
        n = len(sidx)
        dup = np.flatnonzero(sidx[1:] == sidx[:-1])
        if len(dup):
            i = int(sidx[dup[0]])
            both = sorted(int(x) for x in lines[order][dup[0] : dup[0] + 2])
            raise SpecError(
                f"{letter}_{i} is declared twice (lines {both[0]} and {both[1]})", both[1]
            )
        gap = np.flatnonzero(sidx != np.arange(n))
        if len(gap):
            g = int(gap[0])
            raise SpecError(
                f"{what} must be declared as {letter}_0..{letter}_{n - 1} without gaps, "
                f"but {letter}_{g} is not declared",
                int(lines[order][g]),
            )
        if expected is not None and n != expected:
            names = f" ({letter}_0..{letter}_{n - 1})" if n else ""
            raise SpecError(
                f"the specification declares {n} {what}{names} but the model has {expected}",
                int(lines.max()) if n else None,
            )
        if n == 0:
            raise SpecError(f"the specification declares no {what} ({letter}_0, ...)")
        by_index = np.empty(n, dtype=np.int64)
        by_index[sidx] = lines[order]
        return n, by_index

    def check_indices(self) -> None:
        """Every atom refers to a declared variable."""
        kind, idx = self.kind, self.idx
        limit = np.where(kind <= XUP, self.nx, np.where(kind == ROW, len(self.p.row_d), self.ny))
        bad = np.flatnonzero(idx >= limit)
        if len(bad):
            k = int(bad[0])
            letter, n = ("X", self.nx) if kind[k] <= XUP else ("Y", self.ny)
            raise SpecError(self._undeclared(letter, int(idx[k]), n), self.atom_line(k))
        cols = np.asarray(self.p.row_cols, dtype=np.int64)
        if len(cols) and int(cols.max()) >= self.ny:
            c = int(np.flatnonzero(cols >= self.ny)[0])
            row = int(np.searchsorted(np.asarray(self.p.row_ptr, dtype=np.int64), c, "right"))
            raise SpecError(
                self._undeclared("Y", int(cols[c]), self.ny), int(self.p.row_line[row - 1])
            )

    @staticmethod
    def _undeclared(letter: str, i: int, n: int) -> str:
        """Message for a reference to an undeclared variable."""
        declared = f"{letter}_0..{letter}_{n - 1}" if n else "none"
        return f"{letter}_{i} is not declared (declared: {declared})"

    def base_box(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The box of the top-level X atoms, and the top-level Y atoms (ordered indices)."""
        segs = np.asarray(self.p.base, dtype=np.int64).reshape(-1, 2)
        pos = _expand_ranges(segs[:, 0], segs[:, 1])
        kind = self.kind[pos]
        lo = np.full(self.nx, -np.inf)
        up = np.full(self.nx, np.inf)
        m = kind == XLO
        np.maximum.at(lo, self.idx[pos[m]], self.val[pos[m]])
        m = kind == XUP
        np.minimum.at(up, self.idx[pos[m]], self.val[pos[m]])
        bad = np.flatnonzero(lo > up)
        if len(bad):
            self._empty_box(int(bad[0]), lo, up, pos, None)
        return lo, up, pos[kind >= YLE]

    def _empty_box(
        self, i: int, lo: np.ndarray, up: np.ndarray, pos: np.ndarray, term: int | None
    ) -> None:
        """Raise for lower > upper on X_i, at the line of the last bound on X_i involved."""
        base = np.asarray(self.p.base, dtype=np.int64).reshape(-1, 2)
        cand = np.concatenate([pos, _expand_ranges(base[:, 0], base[:, 1])])
        cand = cand[(self.kind[cand] <= XUP) & (self.idx[cand] == i)]
        line = self.atom_line(int(cand.max())) if len(cand) else None
        where = f" in disjunct {term + 1}" if term is not None else ""
        raise SpecError(
            f"X_{i} has lower bound {float(lo[i])!r} above its upper bound {float(up[i])!r}{where}",
            line,
        )

    def _unbounded(self, lo: np.ndarray, up: np.ndarray, term: int | None) -> None:
        """Raise if some input lacks a finite lower or upper bound."""
        missing = np.flatnonzero(~(np.isfinite(lo) & np.isfinite(up)))
        if len(missing):
            i = int(missing[0])
            side, op = ("lower", ">=") if not np.isfinite(lo[i]) else ("upper", "<=")
            where = f" in disjunct {term + 1}" if term is not None else ""
            raise SpecError(
                f"X_{i} has no {side} bound{where}: add (assert ({op} X_{i} ...))",
                int(self.x_lines[i]),
            )

    def terms(self) -> list[Term]:
        """The DNF terms: the product of the disjunctive asserts (one empty term if none)."""
        terms: list[Term] = [()]
        for dnf, line in self.p.multi:
            terms = product(terms, dnf, line)
        return terms

    def boxes(
        self, term_of: np.ndarray, pos: np.ndarray, n_terms: int, lo: np.ndarray, up: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Case number of every term and the distinct boxes, shape (cases, 2, n_inputs).

        Terms without X atoms use the top-level box; the others get the top-level box
        intersected with their own bounds, computed for batches of terms (bounded in rows and
        atoms, so temporaries stay small).  Cases are numbered in order of first appearance.
        """
        nx = self.nx
        starts = np.searchsorted(term_of, np.arange(n_terms + 1))  # atoms of term t: starts[t:t+2]
        max_rows = max(1, _BOX_BATCH_ELEMS // max(2 * nx, 1))
        parts: list[np.ndarray] = []
        n_boxes = 0
        case_of = np.full(n_terms, -1, dtype=np.int64)
        t0 = 0
        while t0 < n_terms:
            by_atoms = int(np.searchsorted(starts, starts[t0] + _BOX_BATCH_ATOMS, "right")) - 1
            t1 = min(n_terms, t0 + max_rows, max(t0 + 1, by_atoms))
            sel = pos[starts[t0] : starts[t1]]
            kind = self.kind[sel]
            xm = kind <= XUP
            sel, kind, terms = sel[xm], kind[xm], term_of[starts[t0] : starts[t1]][xm]
            t0 = t1
            if not len(sel):
                continue
            change = np.ones(len(terms), dtype=bool)  # terms is sorted: mark each new term
            np.not_equal(terms[1:], terms[:-1], out=change[1:])
            row = np.cumsum(change) - 1
            with_x = terms[change]
            is_up = kind == XUP
            flat = row * (2 * nx) + self.idx[sel] + is_up * nx
            values = self.val[sel]
            LU = np.empty((len(with_x), 2, nx))
            LU[:, 0] = lo
            LU[:, 1] = up
            np.maximum.at(LU.reshape(-1), flat[~is_up], values[~is_up])
            np.minimum.at(LU.reshape(-1), flat[is_up], values[is_up])
            self._check_batch(LU[:, 0], LU[:, 1], with_x, term_of, pos)
            LU += 0.0  # -0.0 -> 0.0, so equal boxes have equal bytes
            first, inverse = _first_unique(LU)
            parts.append(LU[first])
            case_of[with_x] = n_boxes + inverse
            n_boxes += len(first)
        if (case_of < 0).any():  # some term uses the top-level box as it is
            self._unbounded(lo, up, None)
            parts.append(np.stack([lo, up])[None] + 0.0)
            case_of[case_of < 0] = n_boxes
        boxes = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if len(parts) > 1:  # the same box may occur in several batches
            first, inverse = _first_unique(boxes)
            boxes = boxes[first]
            case_of = inverse[case_of]
        return _renumber(case_of, boxes)

    def _check_batch(
        self,
        L: np.ndarray,
        U: np.ndarray,
        terms: np.ndarray,
        term_of: np.ndarray,
        pos: np.ndarray,
    ) -> None:
        """Raise for the first term of a batch whose box is empty or unbounded."""
        bad = ~(L <= U) | ~np.isfinite(L) | ~np.isfinite(U)
        rows = np.flatnonzero(bad.any(axis=1))
        if not len(rows):
            return
        r = int(rows[0])
        t = int(terms[r])
        multi = self.p.multi
        label = t if (len(multi) == 1) else None
        empty = np.flatnonzero(L[r] > U[r])
        if len(empty):
            self._empty_box(int(empty[0]), L[r], U[r], pos[term_of == t], label)
        self._unbounded(L[r], U[r], label)

    def conjunctions(
        self, term_of: np.ndarray, pos: np.ndarray, n_terms: int, base_y: np.ndarray
    ) -> list[Conjunction]:
        """The output rows of every term (top-level rows included), in file order."""
        ym = self.kind[pos] >= YLE
        y_term, y_pos = term_of[ym], pos[ym]
        if len(base_y):
            y_pos = np.concatenate([np.tile(base_y, n_terms), y_pos])
            y_term = np.concatenate(
                [np.repeat(np.arange(n_terms, dtype=np.int64), len(base_y)), y_term]
            )
        order = np.lexsort((y_pos, y_term))
        y_pos, y_term = y_pos[order], y_term[order]
        n_rows = len(y_pos)
        C = np.zeros((n_rows, self.ny))
        d = np.empty(n_rows)
        kind, idx, val = self.kind[y_pos], self.idx[y_pos], self.val[y_pos]
        for code, sign in ((YLE, 1.0), (YGE, -1.0)):
            r = np.flatnonzero(kind == code)
            C[r, idx[r]] = sign
            d[r] = sign * val[r]
        r = np.flatnonzero(kind == ROW)
        if len(r):
            self._general_rows(C, d, r, idx[r])
        strict = self.strict[y_pos]
        counts = np.bincount(y_term, minlength=n_terms)
        ends = np.cumsum(counts).tolist()
        starts = [0] + ends[:-1]
        return [Conjunction(C[s:e], d[s:e], strict[s:e] if strict[s:e].any() else None)
                for s, e in zip(starts, ends, strict=True)]

    def _general_rows(self, C: np.ndarray, d: np.ndarray, r: np.ndarray, g: np.ndarray) -> None:
        """Fill rows ``r`` of C, d from the general-row table entries ``g``."""
        p = self.p
        ptr = np.asarray(p.row_ptr, dtype=np.int64)
        cols = np.asarray(p.row_cols, dtype=np.int64)
        coefs = np.asarray(p.row_coefs, dtype=np.float64)
        starts, ends = ptr[g], ptr[g + 1]
        at = _expand_ranges(starts, ends)
        rows = np.repeat(r, ends - starts)
        C[rows, cols[at]] = coefs[at]
        d[r] = np.asarray(p.row_d, dtype=np.float64)[g]

    def build(self) -> Property:
        """The Property."""
        self.check_indices()
        lo, up, base_y = self.base_box()
        terms = self.terms()
        n_terms = len(terms)
        if n_terms == 0:
            return Property(self.nx, self.ny, ())
        term_of, pos = _term_atoms(terms)
        del terms
        case_of, boxes = self.boxes(term_of, pos, n_terms, lo, up)
        conj = self.conjunctions(term_of, pos, n_terms, base_y)
        grouped: list[list[Conjunction]] = [[] for _ in boxes]
        for c, cj in zip(case_of.tolist(), conj, strict=True):
            grouped[c].append(cj)
        cases = tuple(Case(b[0], b[1], tuple(g)) for b, g in zip(list(boxes), grouped, strict=True))
        xs = (self.kind <= XUP) & self.strict
        strict_x = tuple(zip(self.idx[xs].tolist(), self.val[xs].tolist(), strict=True))
        return Property(self.nx, self.ny, cases, strict_x)


def _first_unique(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``rows`` (compared by bytes) in first-appearance order.

    Returns the index of each distinct row's first occurrence and, for every row, the number
    of its distinct row.
    """
    n = len(rows)
    flat = np.ascontiguousarray(rows).reshape(n, -1)
    keys = flat.view(np.dtype((np.void, flat.shape[1] * flat.itemsize))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(first), dtype=np.int64)
    rank[order] = np.arange(len(first))
    return first[order], rank[inverse.ravel()]


def _renumber(case_of: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber cases in order of first use by a term, dropping unused boxes."""
    first, inverse = _first_unique(case_of[:, None])
    return inverse, boxes[case_of[first]]


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    """Concatenate arrays (an empty array of ``dtype`` if none)."""
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
