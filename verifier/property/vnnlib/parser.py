"""Stage 2 of the VNN-LIB reader: the s-expression parser, formulas to DNF terms.

:class:`Parser` tokenises each piece from ``reader`` and runs a state machine over the tokens:
commands, declarations and formulas (``assert``, ``and``, ``or``, comparisons).  Atoms go to the
atom store it derives from (``atoms``); every formula becomes a DNF whose terms are ranges of
atom indices.  Asserts that are plain conjunctions are kept in ``base``, disjunctive ones in
``multi``; the finished parser goes to :class:`~verifier.property.vnnlib.assemble.Assembler`.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

import numpy as np

from verifier.property.vnnlib.atoms import AtomStore, Dnf, Lin, convert_runs
from verifier.property.vnnlib.errors import Found, SpecError, show
from verifier.property.vnnlib.reader import GENERIC_TOKEN, RUN_TABLE, TOKEN, VAR

MAX_TERMS = 1_000_000  # largest DNF accepted (number of disjuncts after the product)

# Kinds of runs of simple atoms.
_ATOMS, _ASSERTED, _AND = 0, 1, 2

_IGNORED_COMMANDS = frozenset(
    [b"set-logic", b"set-info", b"set-option", b"check-sat", b"get-model", b"exit", b"get-value"]
)
_COMPARISONS = frozenset([b"<=", b">=", b"<", b">", b"="])
_ARITHMETIC = frozenset([b"+", b"-", b"*", b"/"])


class Frame:
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


def product(left: Dnf, right: Dnf, line: int) -> Dnf:
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


class Parser(AtomStore):
    """One parse of one source: consumes pieces, keeps atoms in flat arrays and formulas as DNFs.

    With ``locate`` set, the parse only looks for the line of that atom (raising ``Found``).
    """

    def __init__(self, locate: int | None = None) -> None:
        super().__init__(locate)
        self.stack: list[Frame] = []
        self.base: list[int] = []  # ranges of atoms asserted as a plain conjunction
        self.multi: list[tuple[Dnf, int]] = []  # asserts that are real disjunctions, with line
        self.n_terms = 1
        # declarations
        self.decl_y = array("b")
        self.decl_idx = array("q")
        self.decl_line = array("q")

    # -- driving ----------------------------------------------------------------------------

    def feed(self, piece: bytes) -> None:
        """Parse one piece of the source (see ``pieces``) and convert its atoms."""
        try:
            self._tokens(TOKEN.findall(piece))
        except SpecError:
            if self.runs and self.locate is None:  # an invalid number before it comes first
                convert_runs(self.runs, self.run_lines)
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
        self._tokens([(b"", b"", b"", b"", g) for g in GENERIC_TOKEN.findall(text) if g])

    def finish(self) -> None:
        """Check that every form was closed at the end of the source."""
        if self.stack:
            outer = self.stack[0]
            raise SpecError(
                f"'({show(outer.head)}' opened here is never closed "
                f"(end of file reached with {len(self.stack)} unclosed parenthes"
                f"{'is' if len(self.stack) == 1 else 'es'})",
                outer.line,
            )

    # -- tokens -----------------------------------------------------------------------------

    def _open(self, token: bytes) -> None:
        """``(`` followed by an operator (or nothing yet)."""
        if self.stack and self.stack[-1].kind == "head":
            raise SpecError(f"expected an operator after '(', found '{show(token)}'", self.line)
        head = token[1:]
        if head:
            self._open_head(head, self.line)
        else:
            self.stack.append(Frame("head", b"", self.line))

    def _open_head(self, head: bytes, line: int) -> None:
        """Push the frame for ``(head`` according to the context."""
        top = self.stack[-1] if self.stack else None
        kind = top.kind if top is not None else "top"
        if top is not None and kind != "skip" and head in (b"assert", b"declare-const"):
            outer = self.stack[0]
            raise SpecError(
                f"'({show(outer.head)}' opened here is not closed before the "
                f"'({show(head)}' on line {line} (missing ')')",
                outer.line,
            )
        if top is None:  # kind == "top"
            if head == b"assert":
                frame = Frame("assert", head, line)
            elif head == b"declare-const":
                frame = Frame("decl", head, line)
            elif head in _IGNORED_COMMANDS:
                frame = Frame("skip", head, line)
            else:
                raise SpecError(
                    f"expected a command such as '(declare-const' or '(assert', "
                    f"found '({show(head)}'",
                    line,
                )
        elif kind in ("assert", "and", "or"):
            if head == b"and" or head == b"or":
                frame = Frame(head.decode(), head, line)
            elif head in _COMPARISONS:
                frame = Frame("atom", head, line)
            else:
                raise SpecError(
                    f"expected a formula ('(and', '(or', '(<=', '(>=' ...) inside "
                    f"'({show(top.head)}', found '({show(head)}'",
                    line,
                )
        elif kind in ("atom", "expr"):
            if head in _ARITHMETIC:
                frame = Frame("expr", head, line)
            else:
                raise SpecError(
                    f"expected a number or variable after '{show(top.head)}', "
                    f"found '({show(head)}'",
                    line,
                )
        elif kind == "skip":
            frame = Frame("skip", head, line)
        else:  # decl
            raise SpecError(
                f"expected a variable name and 'Real' in '(declare-const', found '({show(head)}'",
                line,
            )
        self.stack.append(frame)

    def _symbol(self, token: bytes) -> None:
        """A bare word: an operator name, a number, a variable or a sort."""
        if not self.stack:
            raise SpecError(f"expected '(' to start a command, found '{show(token)}'", self.line)
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
                f"expected a formula such as '(<= Y_0 1)' inside '({show(top.head)}', "
                f"found '{show(token)}'",
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
        words = run.translate(RUN_TABLE, b"XY").split()[1::3]
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
        var = VAR.fullmatch(name)
        if var is None:
            raise SpecError(
                f"expected a variable named X_<i> or Y_<j> after '(declare-const', "
                f"found '{show(name)}'",
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
            result: Dnf = [tuple(frame.segs)]
            for child in frame.items:
                result = product(result, child, frame.line)
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

    def _close_declaration(self, frame: Frame) -> None:
        """Check a declaration written over several tokens."""
        items = frame.items
        if not items:
            raise SpecError("expected a variable name after '(declare-const', found ')'", self.line)
        if len(items) == 1:
            raise SpecError(f"expected 'Real' after '{show(items[0])}', found ')'", self.line)
        if len(items) > 2 or items[1] != b"Real":
            raise SpecError(
                f"expected 'Real' and ')' in the declaration of {show(items[0])}, "
                f"found '{show(b' '.join(items[1:]))}' (only Real variables are supported)",
                frame.line,
            )
        self._declare(items[0], frame.line)

    def _operand_done(self, value: Lin) -> None:
        """Give a finished arithmetic term to the enclosing atom or term."""
        self.stack[-1].items.append(value)

    def _formula(self, dnf: Dnf) -> None:
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

    def _asserted(self, dnf: Dnf, line: int) -> None:
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
            raise Found(self._line_in_run(run, self.locate - start))
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
