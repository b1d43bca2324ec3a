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

Stages, one module each: ``reader`` (bytes to pieces; the token grammar) -> ``parser`` (tokens
to DNF terms over atoms, on top of the atom store in ``atoms``, which converts the numbers) ->
``assemble`` (atoms, terms and declarations to the Property); ``api`` drives them and
``errors`` holds :class:`SpecError`.
"""

from verifier.property.vnnlib.api import parse_vnnlib, parse_vnnlib_file
from verifier.property.vnnlib.errors import SpecError
from verifier.property.vnnlib.parser import MAX_TERMS
from verifier.property.vnnlib.reader import DEFAULT_CHUNK_SIZE

__all__ = ["SpecError", "parse_vnnlib", "parse_vnnlib_file", "MAX_TERMS", "DEFAULT_CHUNK_SIZE"]
