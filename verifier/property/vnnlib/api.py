"""The VNN-LIB reader's entry points: they drive the stages.

``parse_vnnlib`` (text) and ``parse_vnnlib_file`` (a plain or gzip-compressed file) read the
source in pieces (``reader``), parse them (``parser``) and assemble the Property
(``assemble``), re-parsing the source to locate the line of an error when needed.
"""

from __future__ import annotations

import gc
import gzip
import io
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from numbers import Integral
from typing import BinaryIO, cast

from verifier.property.core import Property
from verifier.property.vnnlib.assemble import Assembler
from verifier.property.vnnlib.errors import Found, SpecError
from verifier.property.vnnlib.parser import Parser
from verifier.property.vnnlib.reader import DEFAULT_CHUNK_SIZE, pieces


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


def _run_parser(read: Callable[[int], bytes], chunk_size: int, locate: int | None) -> Parser:
    """Parse a whole stream."""
    parser = Parser(locate)
    for piece in pieces(read, chunk_size):
        parser.feed(piece)
    parser.finish()
    return parser


def _check_sizes(n_inputs: object, n_outputs: object) -> None:
    """The sizes a caller gives are counts (a TypeError names the one that is not)."""
    for name, size in (("n_inputs", n_inputs), ("n_outputs", n_outputs)):
        if size is not None and (not isinstance(size, Integral) or isinstance(size, bool)):
            raise TypeError(f"{name} is the model's number of {name[2:]} (an int or None), "
                            f"not a {type(size).__name__}")


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
    _check_sizes(n_inputs, n_outputs)
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
        except Found as found:
            return found.line
        return None

    return Assembler(parser, locate, n_inputs, n_outputs).build()


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
