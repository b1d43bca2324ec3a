"""The engine's model: nodes in topological order over one batched input (DESIGN.md: Graph).

Variable tensors carry a leading batch-of-problems dimension in front of the node's ONNX
shape (see ops/base.py).  ``Graph.forward`` evaluates concretely, ``Graph.ibp`` propagates
interval bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .ops.base import Interval, Op, Tensor


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

    def __post_init__(self) -> None:
        self._by_name = {n.name: n for n in self.nodes}
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

    def _run(self, seed: object, step: Callable[[Node, list], object]) -> dict[str, object]:
        values: dict[str, object] = {self.input_name: seed}
        remaining = {name: len(users) for name, users in self.users.items()}
        keep = {self.output_name}
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

    def ibp(self, lower: Tensor, upper: Tensor) -> Interval:
        """Interval bounds of the output over the boxes [lower, upper] (batched)."""
        lower = lower.reshape(lower.shape[0], *self.input_shape)
        upper = upper.reshape(upper.shape[0], *self.input_shape)
        values = self._run((lower, upper), lambda node, bs: node.op.ibp(*bs))
        return values[self.output_name]  # type: ignore[return-value]

    def to_input_shape(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.input_shape)

