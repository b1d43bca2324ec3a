"""Errors of the VNN-LIB reader (every stage raises them).

``SpecError`` is what callers see; ``Found`` is raised by a locating parse (see ``api``) to hand
the line of the wanted atom back to the assembly; ``show`` shortens a token for a message.
"""

from __future__ import annotations


class SpecError(ValueError):
    """A specification that cannot be read: ``line`` is 1-based (or None), ``path`` a JSON path."""

    def __init__(self, message: str, line: int | None = None, path: str | None = None) -> None:
        self.message = message
        self.line = line
        self.path = path
        prefix = f"line {line}: " if line is not None else ""
        super().__init__(prefix + message)


class Found(Exception):
    """Raised by a locating parse once the line of the wanted atom is known."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def show(token: bytes, limit: int = 40) -> str:
    """A token as text for an error message, shortened to ``limit`` characters."""
    text = token.decode("utf-8", "replace")
    return text if len(text) <= limit else text[: limit - 3] + "..."
