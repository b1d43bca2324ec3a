"""The engine's model: nodes in topological order over one batched input (DESIGN.md: Graph).

Variable tensors carry a leading batch-of-problems dimension in front of the node's ONNX
shape (see ops/base.py).  ``Graph.forward`` evaluates concretely, ``Graph.ibp`` propagates
interval bounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from verifier.bounds.limits import check_memory
from verifier.ops.base import Interval, Op, Tensor, nan_to
from verifier.precision import largest_finite


def round_box(box: Interval, err: Tensor | None, ku: float | None,
              limit: float = math.inf) -> Interval:
    """The interval holding an op's floating-point value given its exact one ``box``: for
    a non-negative op rounding relatively (``ku``), [(1 - ku) lo, (1 + ku) hi], never below
    0; then widened by the additive bound ``err`` (see ``widen``)."""
    if ku:
        box = box[0] * (1 - ku), box[1] * (1 + ku)
    lo, hi = widen(box, err, limit)
    return (lo.clamp(min=0), hi) if ku else (lo, hi)


def widen(box: Interval, err: Tensor | None, limit: float = math.inf) -> Interval:
    """``box`` grown by ``err`` on both sides (NaN bounds read as infinite); a bound beyond
    ``limit``, the model type's largest finite number, becomes infinite (overflow)."""
    if err is None:
        return box
    lo, hi = nan_to(box[0] - err, -math.inf), nan_to(box[1] + err, math.inf)
    if limit < math.inf:
        lo = torch.where(lo < -limit, -math.inf, lo)
        hi = torch.where(hi > limit, math.inf, hi)
    return lo, hi


@dataclass(eq=False)
class Node:
    """One op applied to the named variable inputs; ``shape`` is its ONNX output shape."""

    name: str
    op_type: str
    op: Op
    inputs: list[str]
    shape: tuple[int, ...]
    onnx_name: str = ""


@dataclass(eq=False)
class Graph:
    input_name: str
    input_shape: tuple[int, ...]
    nodes: list[Node]
    output_name: str
    users: dict[str, list[str]] = field(default_factory=dict)
    #: unit roundoff of the coarsest floating-point type the model computes in (2^-24 for
    #: float32); 0 for a graph that is exact mathematics (not evaluated by onnxruntime)
    unit_roundoff: float = 0.0

    def __post_init__(self) -> None:
        self._by_name = {n.name: n for n in self.nodes}
        self._position = {n.name: i for i, n in enumerate(self.nodes)}
        self.users = {self.input_name: []}
        for node in self.nodes:
            self.users[node.name] = []
            for name in node.inputs:
                self.users[name].append(node.name)

    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.output_name == self.input_name:
            return self.input_shape
        return self.node(self.output_name).shape

    def node(self, name: str) -> Node:
        return self._by_name[name]

    def shape(self, name: str) -> tuple[int, ...]:
        """The ONNX shape of tensor ``name`` (the input or a node's output)."""
        return self.input_shape if name == self.input_name else self.node(name).shape

    def position(self, name: str) -> int:
        """The node's index in the topological order of ``nodes``."""
        return self._position[name]

    def _run(self, seed: object, step: Callable[[Node, list], object],
             also: tuple[str, ...] = ()) -> dict[str, object]:
        values: dict[str, object] = {self.input_name: seed}
        remaining = {name: len(users) for name, users in self.users.items()}
        keep = {self.output_name, *also}
        for node in self.nodes:
            values[node.name] = step(node, [values[i] for i in node.inputs])
            for i in node.inputs:  # free what no later node needs
                remaining[i] -= 1
                if remaining[i] == 0 and i not in keep:
                    del values[i]
        return values

    def forward(self, x: Tensor) -> Tensor:
        """Outputs for a batch of flat or shaped inputs: (B, *input) -> (B, *output)."""
        x = x.reshape(x.shape[0], *self.input_shape)
        values = self._run(x, lambda node, xs: node.op.forward(*xs))
        return values[self.output_name]  # type: ignore[return-value]

    def values(self, x: Tensor, names: tuple[str, ...]) -> dict[str, Tensor]:
        """The values of the tensors ``names`` for a batch of flat or shaped inputs."""
        x = x.reshape(x.shape[0], *self.input_shape)
        values = self._run(x, lambda node, xs: node.op.forward(*xs), names)
        return {name: values[name] for name in names}  # type: ignore[misc]

    def search_forward(self, x: Tensor, also: str | None = None
                       ) -> tuple[Tensor, Tensor | None]:
        """``forward`` with each op's ``search_forward`` (the values, with the gradients a
        counterexample search follows), and the value of tensor ``also`` when named."""
        out, kept = self.search_values(x, (also,) if also else ())
        return out, kept[also] if also else None

    def search_values(self, x: Tensor, names: tuple[str, ...]
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        """``search_forward``'s outputs and the values of the tensors ``names``."""
        x = x.reshape(x.shape[0], *self.input_shape)
        values = self._run(x, lambda node, xs: node.op.search_forward(*xs), names)
        return (values[self.output_name],  # type: ignore[return-value]
                {name: values[name] for name in names})  # type: ignore[misc]

    @property
    def largest_finite(self) -> float:
        """The largest finite number of the model's coarsest type (inf for exact graphs)."""
        return largest_finite(self.unit_roundoff) if self.unit_roundoff else math.inf

    def rounding(self, dtype: torch.dtype) -> float:
        """The unit roundoff every node's rounding noise is sized with when bounds are
        computed in ``dtype``: the model's own (onnxruntime's evaluation) plus twice that of
        the computation (docs/design-notes.md, "Floating point")."""
        if self.unit_roundoff == 0:
            return 0.0
        return self.unit_roundoff + torch.finfo(dtype).eps  # eps = 2 u

    def ibp(self, lower: Tensor, upper: Tensor) -> Interval:
        """Interval bounds over the boxes [lower, upper] (batched) of the output as any
        floating-point evaluation within the ops' rounding bounds computes it."""
        lower = lower.reshape(lower.shape[0], *self.input_shape)
        upper = upper.reshape(upper.shape[0], *self.input_shape)
        u = self.rounding(lower.dtype)

        def step(node: Node, bs: list) -> Interval:
            check_memory()
            out = node.op.ibp(*bs)
            if not u:
                return out
            err = node.op.rounding_error(bs, out, u)
            return round_box(out, err, node.op.relative_rounding(bs, u), self.largest_finite)

        values = self._run((lower, upper), step)
        return values[self.output_name]  # type: ignore[return-value]

    def to_input_shape(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.input_shape)

