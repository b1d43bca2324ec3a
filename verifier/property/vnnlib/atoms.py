"""Stage 2a of the VNN-LIB reader: the atom store (the parser's base class).

Atoms are the comparisons of a specification, stored in flat arrays: a kind (``XLO``/``XUP``:
a bound on an input, ``YLE``/``YGE``: a bound on an output, ``ROW``: a general output row kept
in the row table), an index, a value and whether the comparison is strict.  Runs of simple atoms
are converted in bulk with numpy at the end of each piece (``convert_runs``); other comparisons
are evaluated as linear terms and stored one by one.  The parser refers to atoms by index ranges
(``Term``, ``Dnf``); the arrays and the row table go to
:class:`~verifier.property.vnnlib.assemble.Assembler`.
"""

from __future__ import annotations

import itertools
import math
from array import array
from typing import TYPE_CHECKING

import numpy as np

from verifier.property.vnnlib.errors import SpecError, show
from verifier.property.vnnlib.reader import ATOM_PARTS, NUMBER, RUN_TABLE, VAR

if TYPE_CHECKING:
    from verifier.property.vnnlib.parser import Frame

# Atom kinds in the flat atom store.
XLO, XUP, YLE, YGE, ROW = 0, 1, 2, 3, 4

Term = tuple[int, ...]  # flat (start, end, start, end, ...) ranges of atom indices
Dnf = list[Term]
Lin = tuple[dict[tuple[int, int], float], float]  # ({(0, i) for X_i / (1, j) for Y_j: coef}, c)


class AtomStore:
    """The atoms of one parse of one source, and its position (``line``) in the source.

    With ``locate`` set, atoms are counted but not converted (the parse only looks for a line).
    """

    def __init__(self, locate: int | None = None) -> None:
        self.locate = locate
        self.line = 1
        self.natoms = 0
        # atoms of the current piece, converted at its end
        self.runs: list[bytes] = []
        self.run_lines: list[int] = []
        self.piece_start = 0
        self.g_pos: list[int] = []
        self.g_kind: list[int] = []
        self.g_idx: list[int] = []
        self.g_val: list[float] = []
        self.g_strict: list[bool] = []
        self.strict = False  # whether the comparison being stored is strict (< or >)
        # converted atoms
        self.strict_parts: list[np.ndarray] = []
        self.kind_parts: list[np.ndarray] = []
        self.idx_parts: list[np.ndarray] = []
        self.val_parts: list[np.ndarray] = []
        self.gen_lines: dict[int, int] = {}
        # general output rows (linear terms, Y against Y)
        self.row_ptr = array("q", [0])
        self.row_cols = array("q")
        self.row_coefs = array("d")
        self.row_d = array("d")
        self.row_line = array("q")

    def _operand(self, token: bytes, op: bytes) -> Lin:
        """A number or variable as a linear term."""
        var = VAR.fullmatch(token)
        if var is not None:
            return {(0 if var[1] == b"X" else 1, int(var[2])): 1.0}, 0.0
        if NUMBER.fullmatch(token):
            try:
                value = float(token)
            except ValueError:
                value = None
            if value is None:
                raise SpecError(f"invalid number '{show(token)}' after '{show(op)}'", self.line)
            if not math.isfinite(value):
                raise SpecError(f"number '{show(token)}' is out of range", self.line)
            return {}, value
        if token[:1].isalpha():
            raise SpecError(
                f"unknown variable '{show(token)}' after '{show(op)}' "
                f"(variables are named X_<i> and Y_<j>)",
                self.line,
            )
        raise SpecError(
            f"expected a number or variable after '{show(op)}', found '{show(token)}'",
            self.line,
        )

    def _line_in_run(self, run: bytes, k: int) -> int:
        """The line of the ``k``-th atom of a run that starts on the current line."""
        buf = np.frombuffer(run, dtype=np.uint8)
        ops = np.flatnonzero((buf == 60) | (buf == 62))
        return self.line + run.count(b"\n", 0, int(ops[k]))

    def _flush(self) -> None:
        """Convert the atoms of the finished piece into arrays (numbers in bulk)."""
        n = self.natoms - self.piece_start
        runs, self.runs = self.runs, []
        lines, self.run_lines = self.run_lines, []
        g_pos, g_kind, g_idx, g_val = self.g_pos, self.g_kind, self.g_idx, self.g_val
        g_strict, self.g_strict = self.g_strict, []
        self.g_pos, self.g_kind, self.g_idx, self.g_val = [], [], [], []
        self.piece_start = self.natoms
        if n == 0 or self.locate is not None:
            return
        kind = np.empty(n, dtype=np.int8)
        idx = np.empty(n, dtype=np.int64)
        val = np.empty(n, dtype=np.float64)
        strict = np.empty(n, dtype=bool)
        if runs:
            r_kind, r_idx, r_val, r_strict = convert_runs(runs, lines)
            if g_pos:
                mask = np.ones(n, dtype=bool)
                mask[np.asarray(g_pos, dtype=np.int64) - (self.natoms - n)] = False
                kind[mask], idx[mask], val[mask], strict[mask] = r_kind, r_idx, r_val, r_strict
                mask = ~mask
                kind[mask], idx[mask], val[mask], strict[mask] = g_kind, g_idx, g_val, g_strict
            else:
                kind, idx, val, strict = r_kind, r_idx, r_val, r_strict
        else:
            kind[:], idx[:], val[:], strict[:] = g_kind, g_idx, g_val, g_strict
        self.strict_parts.append(strict)
        self.kind_parts.append(kind)
        self.idx_parts.append(idx)
        self.val_parts.append(val)

    def _emit(self, kind: int, idx: int, value: float) -> None:
        """Store one atom found by the slow path (its line is known)."""
        k = self.natoms
        self.natoms = k + 1
        self.g_pos.append(k)
        self.g_kind.append(kind)
        self.g_idx.append(min(idx, 1 << 62))
        self.g_val.append(value)
        self.g_strict.append(self.strict)
        self.gen_lines[k] = self.line

    def _atom(self, frame: Frame) -> Dnf:
        """Turn a comparison with its operands into atoms; its DNF (``[]`` if constant false)."""
        ops: list[Lin] = frame.items
        op = frame.head
        if len(ops) < 2:
            what = "a number or variable" if not ops else "a second operand"
            raise SpecError(f"expected {what} after '{show(op)}', found ')'", self.line)
        start = self.natoms
        holds = True
        self.strict = op in (b"<", b">")
        for a, b in itertools.pairwise(ops):
            if op in (b"<=", b"<"):
                holds &= self._le(_sub(a, b))
            elif op in (b">=", b">"):
                holds &= self._le(_sub(b, a))
            else:
                holds &= self._le(_sub(a, b))
                holds &= self._le(_sub(b, a))
        self.strict = False
        return [(start, self.natoms)] if holds else []

    def _le(self, lin: Lin) -> bool:
        """Store the constraint ``lin <= 0``; returns False if it is a constant falsehood."""
        coefs, const = lin
        xs = [key for key in coefs if key[0] == 0]
        ys = [key for key in coefs if key[0] == 1]
        if xs and ys:
            raise SpecError(
                f"the comparison mixes input X_{xs[0][1]} with output Y_{ys[0][1]}; "
                f"inputs may only be bounded by constants",
                self.line,
            )
        if len(xs) > 1:
            raise SpecError(
                f"the comparison relates inputs X_{xs[0][1]} and X_{xs[1][1]}; "
                f"inputs may only be bounded by constants",
                self.line,
            )
        if xs:
            key = xs[0]
            a = coefs[key]
            if a == 0.0:
                raise SpecError(f"X_{key[1]} cancels out of the comparison", self.line)
            self._emit(XUP if a > 0 else XLO, key[1], 0.0 - const / a)
            return True
        if not ys:
            return const < 0.0 if self.strict else const <= 0.0
        self.row_cols.extend(min(key[1], 1 << 62) for key in ys)
        self.row_coefs.extend(coefs[key] for key in ys)
        self.row_ptr.append(len(self.row_cols))
        self.row_d.append(0.0 - const)
        self.row_line.append(self.line)
        self._emit(ROW, len(self.row_d) - 1, 0.0)
        return True

    def _arithmetic(self, frame: Frame) -> Lin:
        """Evaluate ``(+ ...)``, ``(- ...)``, ``(* ...)``, ``(/ ...)`` to a linear term."""
        ops: list[Lin] = frame.items
        op = frame.head
        if not ops:
            raise SpecError(f"expected an operand after '{show(op)}', found ')'", self.line)
        if op == b"+":
            return _sum(ops, [1.0] * len(ops))
        if op == b"-":
            if len(ops) == 1:
                return _scale(ops[0], -1.0)
            return _sum(ops, [1.0] + [-1.0] * (len(ops) - 1))
        if op == b"*":
            factor = 1.0
            linear: Lin | None = None
            for term in ops:
                if term[0]:
                    if linear is not None:
                        raise SpecError("a product of two variables is not linear", self.line)
                    linear = term
                else:
                    factor *= term[1]
            return _scale(linear, factor) if linear is not None else ({}, factor)
        divisor = 1.0  # "/"
        for term in ops[1:]:
            if term[0] or term[1] == 0.0:
                raise SpecError("division is only supported by a non-zero constant", self.line)
            divisor *= term[1]
        return _scale(ops[0], 1.0 / divisor)


def _sub(a: Lin, b: Lin) -> Lin:
    """The linear term ``a - b`` (keys of both sides are kept, even with a zero coefficient)."""
    return _sum([a, b], [1.0, -1.0])


def _sum(terms: list[Lin], signs: list[float]) -> Lin:
    """The linear term ``sum(sign * term)``."""
    coefs: dict[tuple[int, int], float] = {}
    const = 0.0
    for (c, k), s in zip(terms, signs, strict=True):
        for key, v in c.items():
            coefs[key] = coefs.get(key, 0.0) + s * v
        const += s * k
    return coefs, const


def _scale(term: Lin, factor: float) -> Lin:
    """The linear term ``factor * term``."""
    return {key: factor * v for key, v in term[0].items()}, factor * term[1]


def convert_runs(runs: list[bytes], lines: list[int]) -> tuple[np.ndarray, ...]:
    """Kinds, indices and numbers of all atoms in ``runs``, converted in bulk."""
    raw = b" ".join(runs)
    buf = np.frombuffer(raw, dtype=np.uint8)
    at = np.flatnonzero((buf == 60) | (buf == 62))  # '<' or '>': one per atom
    op = buf[at]
    strict = buf[np.minimum(at + 1, len(buf) - 1)] != 61  # no equals sign follows
    var = buf[(buf == 88) | (buf == 89)]  # 'X' or 'Y': one per atom
    text = raw.replace(b"assert", b"").replace(b"and", b"").translate(RUN_TABLE, b"<>=XY")
    words = text.split()
    try:
        if len(words) != 2 * len(op) or len(var) != len(op):
            raise ValueError("run layout")
        idx = np.array(words[0::2], dtype=np.int64)
        val = np.array(words[1::2], dtype=np.float64)
        if not np.isfinite(val).all():
            raise ValueError("overflow")
    except (ValueError, OverflowError):
        _diagnose_runs(runs, lines)
        raise SpecError("could not read the numbers of a run of atoms", lines[0]) from None
    is_y = var == 89
    upper = op == 60
    kind = np.where(is_y, np.where(upper, YLE, YGE), np.where(upper, XUP, XLO))
    return kind.astype(np.int8), idx, val, strict


def _diagnose_runs(runs: list[bytes], lines: list[int]) -> None:
    """Find the atom of a run whose number cannot be read and raise a SpecError at its line."""
    for run, line in zip(runs, lines, strict=True):
        for m in ATOM_PARTS.finditer(run):
            token = m[3]
            here = line + run.count(b"\n", 0, m.start())
            try:
                value = float(token)
            except ValueError:
                raise SpecError(
                    f"invalid number '{show(token)}' after '{show(m[1])}'", here
                ) from None
            if not math.isfinite(value):
                raise SpecError(f"number '{show(token)}' is out of range", here)
            if int(m[2][2:]) >= 1 << 62:
                raise SpecError(f"variable index of {show(m[2])} is too large", here)
