"""VNN-LIB specifications -> :class:`verifier.property.core.Property`.

A VNN-LIB file declares the input variables ``X_i`` (flat row-major index into the ONNX input)
and output variables ``Y_j`` with ``(declare-const X_0 Real)`` and states, with ``(assert ...)``,
the *unsafe* set: a counterexample satisfies every assert.  The unsafe set is the conjunction of
all asserts; each assert may nest ``and``/``or``, so the result is brought to disjunctive normal
form (the product of the asserts' disjunctions).  Each DNF term is an input box (the top-level X
bounds intersected with the term's own X bounds) and a conjunction of output rows ``C @ y <= d``;
terms with identical boxes are grouped into one
:class:`~verifier.property.core.Case` (first appearance order).

Accepted atoms: ``(<= a b)``, ``(>= a b)``, ``(< a b)``, ``(> a b)`` (bounds use the closure;
strictness is kept for checking counterexamples), ``(= a b)`` and chains
``(<= a b c)``, where the operands are numbers, variables or linear
terms built with ``+``, ``-``, ``*`` (by a constant) and ``/`` (by a constant).  An atom either
bounds a single input (``X_i`` against constants) or is a linear row over outputs; mixing inputs
with outputs or two inputs in one atom is an error.  ``true``/``false`` are accepted as formulas.

Speed: the text is read in chunks cut at line ends (or at whitespace/parentheses for very long
lines) and tokenised with one regular expression.  Runs of simple atoms such as
``(>= X_3 0.25) (<= X_3 0.5)`` or ``(assert (<= X_0 1))`` lines are single tokens whose numbers
are converted in bulk with numpy at the end of each chunk, so the Python loop only sees the
structure (``(and``, ``)``, ...).  Atoms are stored in flat arrays; formulas refer to them by
index ranges.  Line numbers of atoms inside runs are not stored: when a semantic error (an empty
box, an undeclared index) needs one, the source is parsed a second time to locate it.
"""

from __future__ import annotations

import gc
import gzip
import io
import itertools
import math
import os
import re
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import BinaryIO, cast

import numpy as np

from verifier.property.core import Case, Conjunction, Property

__all__ = ["SpecError", "parse_vnnlib", "parse_vnnlib_file", "MAX_TERMS", "DEFAULT_CHUNK_SIZE"]

MAX_TERMS = 1_000_000  # largest DNF accepted (number of disjuncts after the product)
DEFAULT_CHUNK_SIZE = 1 << 22  # bytes read at a time by parse_vnnlib_file
_BOX_BATCH_ELEMS = 1 << 22  # input-box matrix elements built at once during assembly
_BOX_BATCH_ATOMS = 1 << 19  # input atoms applied at once during assembly


class SpecError(ValueError):
    """A specification that cannot be read: ``line`` is 1-based (or None), ``path`` a JSON path."""

    def __init__(self, message: str, line: int | None = None, path: str | None = None) -> None:
        self.message = message
        self.line = line
        self.path = path
        prefix = f"line {line}: " if line is not None else ""
        super().__init__(prefix + message)


class _Found(Exception):
    """Raised by a locating parse once the line of the wanted atom is known."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


# ----------------------------------------------------------------------------------------------
# Tokens
# ----------------------------------------------------------------------------------------------

_W = rb"[ \t\r\f\v]"  # whitespace inside a line
_NUMCHARS = rb"[-+.0-9eE]+"  # characters of a decimal number; validity is checked by float()
_ATOM = rb"\(" + _W + rb"*[<>]=?" + _W + rb"+[XY]_[0-9]+" + _W + rb"+" + _NUMCHARS + _W + rb"*\)"
_RUN_ASSERT = rb"(?:\(assert" + _W + rb"*" + _ATOM + _W + rb"*\)\s*)++"
_RUN_ATOMS = rb"(?:" + _ATOM + rb"\s*)++"
_RUN_AND = rb"\(and\s+" + _RUN_ATOMS + rb"\)\s*"
_DECL = rb"(?:\(declare-const" + _W + rb"+[XY]_[0-9]+" + _W + rb"+Real" + _W + rb"*\)\s*)++"
_GENERIC = rb"\n\s*|\([^\s();]*|\)|[^\s();]+"
# One group per kind of token: a run of asserted simple atoms, a run of simple atoms, an ``and``
# of simple atoms, a run of declarations, any other token.  A comment matches no group.
_GROUPS = (_RUN_ASSERT, _RUN_ATOMS, _RUN_AND, _DECL, _GENERIC)
_TOKEN = re.compile(b"|".join(b"(" + g + b")" for g in _GROUPS) + _W + rb"*|;[^\n]*")
_GENERIC_TOKEN = re.compile(rb"(" + _GENERIC + rb")" + _W + rb"*|;[^\n]*")
_ATOM_PARTS = re.compile(rb"\(\s*([<>]=?)\s*([XY]_[0-9]+)\s+([^\s()]+)\s*\)")
_VAR = re.compile(rb"([XY])_([0-9]+)")
_NUMBER = re.compile(_NUMCHARS)
_RUN_TABLE = bytes.maketrans(b"_()", b"   ")  # separators become spaces
_BOM = b"\xef\xbb\xbf"

# Kinds of runs of simple atoms.
_ATOMS, _ASSERTED, _AND = 0, 1, 2
# Atom kinds in the flat atom store.
_XLO, _XUP, _YLE, _YGE, _ROW = 0, 1, 2, 3, 4

_IGNORED_COMMANDS = frozenset(
    [b"set-logic", b"set-info", b"set-option", b"check-sat", b"get-model", b"exit", b"get-value"]
)
_COMPARISONS = frozenset([b"<=", b">=", b"<", b">", b"="])
_ARITHMETIC = frozenset([b"+", b"-", b"*", b"/"])

_Term = tuple[int, ...]  # flat (start, end, start, end, ...) ranges of atom indices
_Dnf = list[_Term]
_Lin = tuple[dict[tuple[int, int], float], float]  # ({(0, i) for X_i / (1, j) for Y_j: coef}, c)


def _show(token: bytes, limit: int = 40) -> str:
    """A token as text for an error message, shortened to ``limit`` characters."""
    text = token.decode("utf-8", "replace")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pieces(read: Callable[[int], bytes], chunk_size: int) -> Iterator[bytes]:
    """Split a byte stream into pieces that can be tokenised independently.

    Pieces end at a line end; a line longer than a chunk is cut at whitespace or next to a
    parenthesis (never inside a token or a comment), so every token lies in one piece or is
    split only where the tokeniser would also separate it.
    """
    carry = b""
    in_comment = False
    first = True
    while True:
        block = read(chunk_size)
        if first:
            first = False
            if block.startswith(_BOM):
                block = block[len(_BOM) :]
        if not block:
            if carry:
                yield carry
            return
        if in_comment:
            end = block.find(b"\n")
            if end < 0:
                continue
            block = block[end:]
            in_comment = False
        buf = carry + block if carry else block
        cut = buf.rfind(b"\n") + 1
        if cut == 0:
            semi = buf.find(b";")
            if semi >= 0:  # a comment runs past this block: drop it up to the next line end
                if semi:
                    yield buf[:semi]
                carry = b""
                in_comment = True
                continue
            cut = _cut_inside_line(buf)
        if cut:
            yield buf[:cut]
        carry = buf[cut:]


def _cut_inside_line(buf: bytes) -> int:
    """The last position where a comment-free partial line can be cut between tokens (0: none)."""
    return max(
        buf.rfind(b" "),
        buf.rfind(b"\t"),
        buf.rfind(b"\r"),
        buf.rfind(b"("),
        buf.rfind(b")") + 1,
        0,
    )


# ----------------------------------------------------------------------------------------------
# Parser state machine
# ----------------------------------------------------------------------------------------------


class _Frame:
    """An open parenthesised form: its kind, operator, opening line and what it collected."""

    __slots__ = ("kind", "head", "line", "items", "segs")

    def __init__(self, kind: str, head: bytes, line: int) -> None:
        self.kind = kind  # assert, and, or, atom, expr, decl, skip, head
        self.head = head
        self.line = line
        self.items: list = []
        self.segs: list[int] = []


def _extend_segs(segs: list[int], term: Iterable[int]) -> None:
    """Append the (start, end) ranges of ``term`` to ``segs``, merging adjacent ranges."""
    it = iter(term)
    for start, end in zip(it, it, strict=True):
        if start == end:
            continue
        if segs and segs[-1] == start:
            segs[-1] = end
        else:
            segs.append(start)
            segs.append(end)


def _product(left: _Dnf, right: _Dnf, line: int) -> _Dnf:
    """The DNF of the conjunction of two DNFs (every pair of terms), refusing huge results."""
    if len(left) * len(right) > MAX_TERMS:
        raise SpecError(
            f"the conjunction expands to {len(left) * len(right)} disjuncts "
            f"(more than {MAX_TERMS})",
            line,
        )
    if len(left) == 1:
        head = left[0]
        return [head + t for t in right]
    return [a + b for a in left for b in right]


class _Parser:
    """One parse of one source: consumes pieces, keeps atoms in flat arrays and formulas as DNFs.

    With ``locate`` set, the parse only looks for the line of that atom (raising ``_Found``).
    """

    def __init__(self, locate: int | None = None) -> None:
        self.locate = locate
        self.line = 1
        self.stack: list[_Frame] = []
        self.natoms = 0
        self.base: list[int] = []  # ranges of atoms asserted as a plain conjunction
        self.multi: list[tuple[_Dnf, int]] = []  # asserts that are real disjunctions, with line
        self.n_terms = 1
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
        # declarations
        self.decl_y = array("b")
        self.decl_idx = array("q")
        self.decl_line = array("q")

    # -- driving ----------------------------------------------------------------------------

    def feed(self, piece: bytes) -> None:
        """Parse one piece of the source (see ``_pieces``) and convert its atoms."""
        try:
            self._tokens(_TOKEN.findall(piece))
        except SpecError:
            if self.runs and self.locate is None:  # an invalid number before it comes first
                _convert_runs(self.runs, self.run_lines)
            raise
        self._flush()

    def _tokens(self, tokens: list[tuple[bytes, bytes, bytes, bytes, bytes]]) -> None:
        """Dispatch tokens to the state machine (the hot loop: only structure reaches Python)."""
        for run_assert, run_atoms, run_and, decl, gen in tokens:
            if gen:
                c = gen[0]
                if c == 10:
                    self.line += gen.count(b"\n")
                elif c == 40:
                    self._open(gen)
                elif c == 41:
                    self._close()
                else:
                    self._symbol(gen)
            elif run_and:
                self._run(run_and, _AND)
            elif run_atoms:
                self._run(run_atoms, _ATOMS)
            elif run_assert:
                self._run(run_assert, _ASSERTED)
            elif decl:
                self._declaration(decl)

    def _generic(self, text: bytes) -> None:
        """Parse ``text`` token by token (no runs): the slow path that locates errors exactly."""
        self._tokens([(b"", b"", b"", b"", g) for g in _GENERIC_TOKEN.findall(text) if g])

    def finish(self) -> None:
        """Check that every form was closed at the end of the source."""
        if self.stack:
            outer = self.stack[0]
            raise SpecError(
                f"'({_show(outer.head)}' opened here is never closed "
                f"(end of file reached with {len(self.stack)} unclosed parenthes"
                f"{'is' if len(self.stack) == 1 else 'es'})",
                outer.line,
            )

    # -- tokens -----------------------------------------------------------------------------

    def _open(self, token: bytes) -> None:
        """``(`` followed by an operator (or nothing yet)."""
        if self.stack and self.stack[-1].kind == "head":
            raise SpecError(f"expected an operator after '(', found '{_show(token)}'", self.line)
        head = token[1:]
        if head:
            self._open_head(head, self.line)
        else:
            self.stack.append(_Frame("head", b"", self.line))

    def _open_head(self, head: bytes, line: int) -> None:
        """Push the frame for ``(head`` according to the context."""
        top = self.stack[-1] if self.stack else None
        kind = top.kind if top is not None else "top"
        if top is not None and kind != "skip" and head in (b"assert", b"declare-const"):
            outer = self.stack[0]
            raise SpecError(
                f"'({_show(outer.head)}' opened here is not closed before the "
                f"'({_show(head)}' on line {line} (missing ')')",
                outer.line,
            )
        if top is None:  # kind == "top"
            if head == b"assert":
                frame = _Frame("assert", head, line)
            elif head == b"declare-const":
                frame = _Frame("decl", head, line)
            elif head in _IGNORED_COMMANDS:
                frame = _Frame("skip", head, line)
            else:
                raise SpecError(
                    f"expected a command such as '(declare-const' or '(assert', "
                    f"found '({_show(head)}'",
                    line,
                )
        elif kind in ("assert", "and", "or"):
            if head == b"and" or head == b"or":
                frame = _Frame(head.decode(), head, line)
            elif head in _COMPARISONS:
                frame = _Frame("atom", head, line)
            else:
                raise SpecError(
                    f"expected a formula ('(and', '(or', '(<=', '(>=' ...) inside "
                    f"'({_show(top.head)}', found '({_show(head)}'",
                    line,
                )
        elif kind in ("atom", "expr"):
            if head in _ARITHMETIC:
                frame = _Frame("expr", head, line)
            else:
                raise SpecError(
                    f"expected a number or variable after '{_show(top.head)}', "
                    f"found '({_show(head)}'",
                    line,
                )
        elif kind == "skip":
            frame = _Frame("skip", head, line)
        else:  # decl
            raise SpecError(
                f"expected a variable name and 'Real' in '(declare-const', found '({_show(head)}'",
                line,
            )
        self.stack.append(frame)

    def _symbol(self, token: bytes) -> None:
        """A bare word: an operator name, a number, a variable or a sort."""
        if not self.stack:
            raise SpecError(f"expected '(' to start a command, found '{_show(token)}'", self.line)
        top = self.stack[-1]
        kind = top.kind
        if kind == "head":
            self.stack.pop()
            self._open_head(token, top.line)
        elif kind == "atom" or kind == "expr":
            top.items.append(self._operand(token, top.head))
        elif kind == "decl":
            top.items.append(token)
        elif kind == "skip":
            pass
        elif token == b"true":
            self._formula([()])
        elif token == b"false":
            self._formula([])
        else:
            raise SpecError(
                f"expected a formula such as '(<= Y_0 1)' inside '({_show(top.head)}', "
                f"found '{_show(token)}'",
                self.line,
            )

    def _operand(self, token: bytes, op: bytes) -> _Lin:
        """A number or variable as a linear term."""
        var = _VAR.fullmatch(token)
        if var is not None:
            return {(0 if var[1] == b"X" else 1, int(var[2])): 1.0}, 0.0
        if _NUMBER.fullmatch(token):
            try:
                value = float(token)
            except ValueError:
                value = None
            if value is None:
                raise SpecError(f"invalid number '{_show(token)}' after '{_show(op)}'", self.line)
            if not math.isfinite(value):
                raise SpecError(f"number '{_show(token)}' is out of range", self.line)
            return {}, value
        if token[:1].isalpha():
            raise SpecError(
                f"unknown variable '{_show(token)}' after '{_show(op)}' "
                f"(variables are named X_<i> and Y_<j>)",
                self.line,
            )
        raise SpecError(
            f"expected a number or variable after '{_show(op)}', found '{_show(token)}'",
            self.line,
        )

    def _declaration(self, run: bytes) -> None:
        """A run of complete ``(declare-const X_i Real)`` forms (with the whitespace after)."""
        if self.stack:
            self._generic(run)  # a declaration inside a form: report it at its place
            return
        buf = np.frombuffer(run, dtype=np.uint8)
        where = np.flatnonzero((buf == 88) | (buf == 89))  # 'X' or 'Y': one per declaration
        lines = self.line + np.cumsum(buf == 10)[where]
        words = run.translate(_RUN_TABLE, b"XY").split()[1::3]
        try:
            idx = np.minimum(np.array(words, dtype=np.int64), 1 << 62)
        except OverflowError:
            idx = np.array([min(int(w), 1 << 62) for w in words], dtype=np.int64)
        self.decl_y.frombytes((buf[where] == 89).astype(np.int8).tobytes())
        self.decl_idx.frombytes(idx.tobytes())
        self.decl_line.frombytes(lines.astype(np.int64).tobytes())
        self.line += run.count(b"\n")

    def _declare(self, name: bytes, line: int) -> None:
        """Record the declaration of variable ``name``."""
        var = _VAR.fullmatch(name)
        if var is None:
            raise SpecError(
                f"expected a variable named X_<i> or Y_<j> after '(declare-const', "
                f"found '{_show(name)}'",
                line,
            )
        self.decl_y.append(var[1] == b"Y")
        self.decl_idx.append(min(int(var[2]), 1 << 62))
        self.decl_line.append(line)

    def _close(self) -> None:
        """``)``: finish the innermost form and hand its value to the enclosing one."""
        if not self.stack:
            raise SpecError("unexpected ')' with no open '(' before it", self.line)
        frame = self.stack.pop()
        kind = frame.kind
        if kind == "and":
            result: _Dnf = [tuple(frame.segs)]
            for child in frame.items:
                result = _product(result, child, frame.line)
            self._formula(result)
        elif kind == "or":
            self._formula(frame.items)
        elif kind == "atom":
            self._formula(self._atom(frame))
        elif kind == "assert":
            if not frame.items:
                raise SpecError("expected a formula after '(assert', found ')'", self.line)
            self._asserted(frame.items[0], frame.line)
        elif kind == "expr":
            self._operand_done(self._arithmetic(frame))
        elif kind == "decl":
            self._close_declaration(frame)
        elif kind == "head":
            raise SpecError("expected an operator after '(', found ')'", self.line)

    def _close_declaration(self, frame: _Frame) -> None:
        """Check a declaration written over several tokens."""
        items = frame.items
        if not items:
            raise SpecError("expected a variable name after '(declare-const', found ')'", self.line)
        if len(items) == 1:
            raise SpecError(f"expected 'Real' after '{_show(items[0])}', found ')'", self.line)
        if len(items) > 2 or items[1] != b"Real":
            raise SpecError(
                f"expected 'Real' and ')' in the declaration of {_show(items[0])}, "
                f"found '{_show(b' '.join(items[1:]))}' (only Real variables are supported)",
                frame.line,
            )
        self._declare(items[0], frame.line)

    def _operand_done(self, value: _Lin) -> None:
        """Give a finished arithmetic term to the enclosing atom or term."""
        self.stack[-1].items.append(value)

    def _formula(self, dnf: _Dnf) -> None:
        """Give a finished formula (as a DNF) to the enclosing assert/and/or."""
        top = self.stack[-1]
        if top.kind == "and":
            if len(dnf) == 1:
                _extend_segs(top.segs, dnf[0])
            else:
                top.items.append(dnf)
        elif top.kind == "or":
            top.items.extend(dnf)
        elif top.items:  # assert
            raise SpecError(
                f"expected ')' to close '(assert' opened on line {top.line}, "
                f"found a second formula",
                self.line,
            )
        else:
            top.items.append(dnf)

    def _asserted(self, dnf: _Dnf, line: int) -> None:
        """Conjoin a top-level assert with the others."""
        if len(dnf) == 1:
            _extend_segs(self.base, dnf[0])
            return
        if self.n_terms * len(dnf) > MAX_TERMS:
            raise SpecError(
                f"the asserts expand to {self.n_terms * len(dnf)} disjuncts "
                f"(more than {MAX_TERMS})",
                line,
            )
        self.n_terms *= len(dnf)
        self.multi.append((dnf, line))

    # -- runs of simple atoms ---------------------------------------------------------------

    def _run(self, run: bytes, how: int) -> None:
        """A run of simple atoms ``(op var number)``: bare, each in an assert, or in one ``and``."""
        n = run.count(b"(")
        if how == _ASSERTED:
            n //= 2
        elif how == _AND:
            n -= 1
        start = self.natoms
        top = self.stack[-1] if self.stack else None
        if top is None:
            ok = how == _ASSERTED
        elif how == _ASSERTED:
            ok = False
        else:
            ok = top.kind in ("and", "or") or (
                top.kind == "assert" and not top.items and (how == _AND or n == 1)
            )
        if not ok:
            self._generic(run)  # raises the error at its exact place, or parses it equivalently
            return
        if self.locate is not None and start <= self.locate < start + n:
            raise _Found(self._line_in_run(run, self.locate - start))
        end = self.natoms = start + n
        self.runs.append(run)
        self.run_lines.append(self.line)
        if top is None:
            _extend_segs(self.base, (start, end))
        elif top.kind == "and":
            _extend_segs(top.segs, (start, end))
        elif how == _AND:
            top.items.append((start, end) if top.kind == "or" else [(start, end)])
        elif top.kind == "or":
            top.items.extend((k, k + 1) for k in range(start, end))
        else:
            top.items.append([(start, end)])
        self.line += run.count(b"\n")

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
            r_kind, r_idx, r_val, r_strict = _convert_runs(runs, lines)
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

    # -- general atoms ----------------------------------------------------------------------

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

    def _atom(self, frame: _Frame) -> _Dnf:
        """Turn a comparison with its operands into atoms; its DNF (``[]`` if constant false)."""
        ops: list[_Lin] = frame.items
        op = frame.head
        if len(ops) < 2:
            what = "a number or variable" if not ops else "a second operand"
            raise SpecError(f"expected {what} after '{_show(op)}', found ')'", self.line)
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

    def _le(self, lin: _Lin) -> bool:
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
            self._emit(_XUP if a > 0 else _XLO, key[1], 0.0 - const / a)
            return True
        if not ys:
            return const < 0.0 if self.strict else const <= 0.0
        self.row_cols.extend(min(key[1], 1 << 62) for key in ys)
        self.row_coefs.extend(coefs[key] for key in ys)
        self.row_ptr.append(len(self.row_cols))
        self.row_d.append(0.0 - const)
        self.row_line.append(self.line)
        self._emit(_ROW, len(self.row_d) - 1, 0.0)
        return True

    def _arithmetic(self, frame: _Frame) -> _Lin:
        """Evaluate ``(+ ...)``, ``(- ...)``, ``(* ...)``, ``(/ ...)`` to a linear term."""
        ops: list[_Lin] = frame.items
        op = frame.head
        if not ops:
            raise SpecError(f"expected an operand after '{_show(op)}', found ')'", self.line)
        if op == b"+":
            return _sum(ops, [1.0] * len(ops))
        if op == b"-":
            if len(ops) == 1:
                return _scale(ops[0], -1.0)
            return _sum(ops, [1.0] + [-1.0] * (len(ops) - 1))
        if op == b"*":
            factor = 1.0
            linear: _Lin | None = None
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


def _sub(a: _Lin, b: _Lin) -> _Lin:
    """The linear term ``a - b`` (keys of both sides are kept, even with a zero coefficient)."""
    return _sum([a, b], [1.0, -1.0])


def _sum(terms: list[_Lin], signs: list[float]) -> _Lin:
    """The linear term ``sum(sign * term)``."""
    coefs: dict[tuple[int, int], float] = {}
    const = 0.0
    for (c, k), s in zip(terms, signs, strict=True):
        for key, v in c.items():
            coefs[key] = coefs.get(key, 0.0) + s * v
        const += s * k
    return coefs, const


def _scale(term: _Lin, factor: float) -> _Lin:
    """The linear term ``factor * term``."""
    return {key: factor * v for key, v in term[0].items()}, factor * term[1]


def _convert_runs(runs: list[bytes], lines: list[int]) -> tuple[np.ndarray, ...]:
    """Kinds, indices and numbers of all atoms in ``runs``, converted in bulk."""
    raw = b" ".join(runs)
    buf = np.frombuffer(raw, dtype=np.uint8)
    at = np.flatnonzero((buf == 60) | (buf == 62))  # '<' or '>': one per atom
    op = buf[at]
    strict = buf[np.minimum(at + 1, len(buf) - 1)] != 61  # no equals sign follows
    var = buf[(buf == 88) | (buf == 89)]  # 'X' or 'Y': one per atom
    text = raw.replace(b"assert", b"").replace(b"and", b"").translate(_RUN_TABLE, b"<>=XY")
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
    kind = np.where(is_y, np.where(upper, _YLE, _YGE), np.where(upper, _XUP, _XLO))
    return kind.astype(np.int8), idx, val, strict


def _diagnose_runs(runs: list[bytes], lines: list[int]) -> None:
    """Find the atom of a run whose number cannot be read and raise a SpecError at its line."""
    for run, line in zip(runs, lines, strict=True):
        for m in _ATOM_PARTS.finditer(run):
            token = m[3]
            here = line + run.count(b"\n", 0, m.start())
            try:
                value = float(token)
            except ValueError:
                raise SpecError(
                    f"invalid number '{_show(token)}' after '{_show(m[1])}'", here
                ) from None
            if not math.isfinite(value):
                raise SpecError(f"number '{_show(token)}' is out of range", here)
            if int(m[2][2:]) >= 1 << 62:
                raise SpecError(f"variable index of {_show(m[2])} is too large", here)


# ----------------------------------------------------------------------------------------------
# Assembly into a Property
# ----------------------------------------------------------------------------------------------


def _expand_ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of ``range(s, e)`` for each pair, vectorised."""
    lengths = ends - starts
    total = int(lengths.sum())
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(total, dtype=np.int64)


def _term_atoms(terms: list[_Term]) -> tuple[np.ndarray, np.ndarray]:
    """For every atom of every term: (term number, atom index), ordered by term."""
    n = len(terms)
    counts = np.fromiter(map(len, terms), dtype=np.int64, count=n) // 2
    flat = np.fromiter(itertools.chain.from_iterable(terms), dtype=np.int64)
    segs = flat.reshape(-1, 2)
    seg_term = np.repeat(np.arange(n, dtype=np.int64), counts)
    lengths = segs[:, 1] - segs[:, 0]
    return np.repeat(seg_term, lengths), _expand_ranges(segs[:, 0], segs[:, 1])


class _Assembler:
    """Builds the Property from a finished parse (declarations, boxes, rows, grouping)."""

    def __init__(
        self,
        parser: _Parser,
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
        limit = np.where(kind <= _XUP, self.nx, np.where(kind == _ROW, len(self.p.row_d), self.ny))
        bad = np.flatnonzero(idx >= limit)
        if len(bad):
            k = int(bad[0])
            letter, n = ("X", self.nx) if kind[k] <= _XUP else ("Y", self.ny)
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
        m = kind == _XLO
        np.maximum.at(lo, self.idx[pos[m]], self.val[pos[m]])
        m = kind == _XUP
        np.minimum.at(up, self.idx[pos[m]], self.val[pos[m]])
        bad = np.flatnonzero(lo > up)
        if len(bad):
            self._empty_box(int(bad[0]), lo, up, pos, None)
        return lo, up, pos[kind >= _YLE]

    def _empty_box(
        self, i: int, lo: np.ndarray, up: np.ndarray, pos: np.ndarray, term: int | None
    ) -> None:
        """Raise for lower > upper on X_i, at the line of the last bound on X_i involved."""
        base = np.asarray(self.p.base, dtype=np.int64).reshape(-1, 2)
        cand = np.concatenate([pos, _expand_ranges(base[:, 0], base[:, 1])])
        cand = cand[(self.kind[cand] <= _XUP) & (self.idx[cand] == i)]
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

    def terms(self) -> list[_Term]:
        """The DNF terms: the product of the disjunctive asserts (one empty term if none)."""
        terms: list[_Term] = [()]
        for dnf, line in self.p.multi:
            terms = _product(terms, dnf, line)
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
            xm = kind <= _XUP
            sel, kind, terms = sel[xm], kind[xm], term_of[starts[t0] : starts[t1]][xm]
            t0 = t1
            if not len(sel):
                continue
            change = np.ones(len(terms), dtype=bool)  # terms is sorted: mark each new term
            np.not_equal(terms[1:], terms[:-1], out=change[1:])
            row = np.cumsum(change) - 1
            with_x = terms[change]
            is_up = kind == _XUP
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
        ym = self.kind[pos] >= _YLE
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
        for code, sign in ((_YLE, 1.0), (_YGE, -1.0)):
            r = np.flatnonzero(kind == code)
            C[r, idx[r]] = sign
            d[r] = sign * val[r]
        r = np.flatnonzero(kind == _ROW)
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
        xs = (self.kind <= _XUP) & self.strict
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


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (restoring its state after).

    Parsing allocates many short-lived acyclic objects (token tuples, result objects); the
    collector would repeatedly scan them for nothing, costing about a quarter of the time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _run_parser(read: Callable[[int], bytes], chunk_size: int, locate: int | None) -> _Parser:
    """Parse a whole stream."""
    parser = _Parser(locate)
    for piece in _pieces(read, chunk_size):
        parser.feed(piece)
    parser.finish()
    return parser


def _parse_source(
    opener: Callable[[], AbstractContextManager[BinaryIO]],
    reader: Callable[[BinaryIO], Callable[[int], bytes]],
    n_inputs: int | None,
    n_outputs: int | None,
    chunk_size: int,
) -> Property:
    """Parse a source that can be opened (again, to locate an error) with ``opener``."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    with _collector_paused():
        return _parse_and_build(opener, reader, n_inputs, n_outputs, chunk_size)


def _parse_and_build(
    opener: Callable[[], AbstractContextManager[BinaryIO]],
    reader: Callable[[BinaryIO], Callable[[int], bytes]],
    n_inputs: int | None,
    n_outputs: int | None,
    chunk_size: int,
) -> Property:
    """Parse the source, then assemble the Property (locating error lines on demand)."""
    with opener() as f:
        parser = _run_parser(reader(f), chunk_size, None)

    def locate(k: int) -> int | None:
        """Re-parse to find the line of atom ``k``."""
        try:
            with opener() as f:
                _run_parser(reader(f), chunk_size, k)
        except _Found as found:
            return found.line
        return None

    return _Assembler(parser, locate, n_inputs, n_outputs).build()


def parse_vnnlib(
    text: str | bytes,
    n_inputs: int | None = None,
    n_outputs: int | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Property:
    """Parse VNN-LIB ``text`` into a Property; sizes, if given, must match the declarations.

    Raises SpecError (with ``line``) for anything malformed.
    """
    if not isinstance(text, str | bytes | bytearray | memoryview):
        raise SpecError(f"a VNN-LIB specification is text (str or bytes), not "
                        f"{type(text).__name__}")
    data = text.encode("utf-8", "replace") if isinstance(text, str) else bytes(text)
    return _parse_source(
        lambda: io.BytesIO(data), lambda f: f.read, n_inputs, n_outputs, chunk_size
    )


def parse_vnnlib_file(
    path: str | os.PathLike[str],
    n_inputs: int | None = None,
    n_outputs: int | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Property:
    """Parse a VNN-LIB file (plain or gzip-compressed), streaming it in ``chunk_size`` pieces."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            compressed = f.read(2) == b"\x1f\x8b"
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror or exc}") from None

    def opener() -> AbstractContextManager[BinaryIO]:
        """Open the file, decompressing if needed."""
        # a GzipFile is read through the BinaryIO methods, but typeshed does not derive it
        # from BinaryIO
        return cast(BinaryIO, gzip.open(path, "rb")) if compressed else open(path, "rb")

    def reader(f: BinaryIO) -> Callable[[int], bytes]:
        """``f.read`` with read errors reported as SpecError."""

        def read(n: int) -> bytes:
            """Read up to ``n`` bytes."""
            try:
                return f.read(n)
            except (OSError, EOFError, zlib.error) as exc:
                raise SpecError(f"cannot read {path}: {exc}") from None

        return read

    return _parse_source(opener, reader, n_inputs, n_outputs, chunk_size)
