"""The naive bound: a product of operator norms, valid over the whole input space.

For a node ``y = L(x_1, ..., x_k) + b`` the chain rule gives
``||dy/dx|| <= sum_k ||L_k|| ||dx_k/dx||`` and for ``y = sigma(z)`` elementwise
``||dy/dx|| <= max |sigma'| ||dz/dx||`` (max |sigma'| is the op's ``max_slope``), so a
forward sweep over the graph bounds ``||C J(x)||`` by the product of the layers' norms
(summed where paths join).

Norms: for the inf-norm (the induced inf->inf norm, the largest row l1 norm)
``||L||_inf = max (|L| 1)``; for the 2-norm the spectral norm of the materialised matrix
when it is small, else ``sqrt(||L||_1 ||L||_inf)``, which is never smaller.
"""

from __future__ import annotations

import math

import torch

from verifier.graph import Graph
from verifier.lipschitz.jacobian import (
    abs_part,
    check_supported,
    elementwise,
    linear_part,
    transpose_apply,
)
from verifier.ops.base import Op, Tensor

DENSE_LIMIT = 4_000_000


def linear_norm(op: Op, k: int, shape: tuple[int, ...], norm: str, dtype: torch.dtype) -> float:
    """||L_k|| for the op's linear map from its input k (ONNX shape ``shape``)."""
    n = math.prod(shape)
    ones = torch.ones(1, *shape, dtype=dtype)
    inf_norm = float(abs_part(op, k, ones).max())
    if norm == "inf":
        return inf_norm
    n_out = math.prod(op.out_shape)
    if n * n_out <= DENSE_LIMIT:
        eye = torch.eye(n, dtype=dtype).reshape(n, *shape)
        M = linear_part(op, k, eye).reshape(n, n_out)
        return float(torch.linalg.matrix_norm(M, ord=2))
    out_ones = torch.ones(1, *op.out_shape, dtype=dtype)
    one_norm = float(transpose_apply(lambda x: abs_part(op, k, x), shape, out_ones).max())
    return math.sqrt(one_norm * inf_norm)


def naive_bound(graph: Graph, C: Tensor, box: dict[str, tuple[Tensor, Tensor]],
                norm: str) -> float:
    """A bound on ||C J(x)|| valid everywhere (see the module docstring).  ``box`` holds
    intervals of every node, used only for functions whose slope is unbounded (exp)."""
    check_supported(graph)
    dtype = C.dtype
    gain: dict[str, float] = {graph.input_name: 1.0}
    shapes = {graph.input_name: graph.input_shape}
    for node in graph.nodes:
        shapes[node.name] = node.shape
        if elementwise(node.op):
            gain[node.name] = node.op.max_slope(*box[node.inputs[0]]) * gain[node.inputs[0]]
            continue
        gain[node.name] = sum(
            linear_norm(node.op, k, shapes[i], norm, dtype) * gain[i]
            for k, i in enumerate(node.inputs))
    c = C.reshape(C.shape[0], -1)
    c_norm = float(c.abs().sum(1).max()) if norm == "inf" else float(
        torch.linalg.matrix_norm(c, ord=2))
    return c_norm * gain[graph.output_name]
