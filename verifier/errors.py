"""Errors the engine reports to its callers with a message meant for a person."""

from __future__ import annotations


class NNVerifyError(Exception):
    """Base class of every error the engine raises on purpose."""


class ModelError(NNVerifyError):
    """The model cannot be used: not ONNX, external data, unsupported ops, bad inputs."""


class UnsupportedOpError(ModelError):
    """One or more nodes use ops (or op forms) the engine does not support.

    ``problems`` lists ``(op_type, node_name, position, reason)`` for every offending node.
    """

    def __init__(self, problems: list[tuple[str, str, int, str]]):
        self.problems = problems
        ops = sorted({p[0] for p in problems})
        lines = [f"  node #{pos} '{name}' ({op}): {why}" for op, name, pos, why in problems[:20]]
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(
            f"the model uses unsupported operations: {', '.join(ops)}\n" + "\n".join(lines) + more
        )
