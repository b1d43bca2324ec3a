"""Stage 1 of the VNN-LIB reader: bytes to pieces, and the token grammar.

``pieces`` cuts a byte stream (read ``chunk_size`` bytes at a time) into pieces that can be
tokenised independently; the regular expressions below are the lexical grammar the parser
applies to each piece (``TOKEN``: runs of simple atoms, runs of declarations or single tokens)
and to single tokens.  The pieces go to :class:`~verifier.property.vnnlib.parser.Parser`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

DEFAULT_CHUNK_SIZE = 1 << 22  # bytes read at a time by parse_vnnlib_file

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
TOKEN = re.compile(b"|".join(b"(" + g + b")" for g in _GROUPS) + _W + rb"*|;[^\n]*")
GENERIC_TOKEN = re.compile(rb"(" + _GENERIC + rb")" + _W + rb"*|;[^\n]*")
ATOM_PARTS = re.compile(rb"\(\s*([<>]=?)\s*([XY]_[0-9]+)\s+([^\s()]+)\s*\)")
VAR = re.compile(rb"([XY])_([0-9]+)")
NUMBER = re.compile(_NUMCHARS)
RUN_TABLE = bytes.maketrans(b"_()", b"   ")  # separators become spaces
_BOM = b"\xef\xbb\xbf"


def pieces(read: Callable[[int], bytes], chunk_size: int) -> Iterator[bytes]:
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
