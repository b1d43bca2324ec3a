"""ScatterND and Where: ops that build their output from the entries of two inputs.

**ScatterND** (data, indices, updates), indices constant.  With k = indices.shape[-1], each
index tuple ``indices[i]`` (i over indices.shape[:-1]) names a slice data[indices[i]] of
shape data.shape[k:], and updates[i] is a slice of that shape.  Seen flat, every entry e of
updates has one target position t(e) in data (negative indices count from the end of their
axis, as in ONNX), and

    reduction none:  out[j] = updates[e]  where j = t(e),  out[j] = data[j] elsewhere
    reduction add:   out[j] = data[j] + sum of updates[e] over the e with t(e) = j.

Both are linear with 0/1 weights, so non-decreasing in data and updates: interval bounds map
through ``forward`` exactly.  Their transpose, for coefficients A on out:

    none:  A_data[j] = A[j] where no update lands on j, 0 where one does;  A_updates[e] = A[t(e)]
    add:   A_data = A;                                                      A_updates[e] = A[t(e)]

and the constant parts (a constant data or updates input) are ``A . forward(0)``.  With
reduction none, two updates on one position leave the result undefined in ONNX: refused.
The copy is exact in floating point; ``add`` rounds once per update landing on an entry.

**Where** (condition, X, Y), condition constant: out = X where the condition holds, else Y,
all three broadcast together (numpy rules).  Each output entry is a copy of one entry of X or
of Y: a move, non-decreasing in both, exact.  Its transpose: A_X is A where the condition
holds (0 elsewhere), A_Y the rest, each summed over the positions its input was broadcast
along.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch

from verifier.ops.base import (
    Const,
    Input,
    Interval,
    Op,
    OpFormError,
    Tensor,
    Var,
    align,
    magnitude,
    register,
    tiny,
)
from verifier.ops.linear import sum_to_shape
from verifier.ops.shape import MoveOp


def _shape(inp: Input) -> tuple[int, ...]:
    return inp.shape if isinstance(inp, Var) else tuple(inp.value.shape)


def scatter_targets(data_shape: tuple[int, ...], indices: np.ndarray) -> np.ndarray:
    """For each entry of updates (flat, in order), its flat position in data: the index
    tuple's position (negative indices plus the axis size) times the size of a slice, plus
    the entry's offset within the slice.  OpFormError for an index out of [-s, s - 1]."""
    k = indices.shape[-1]
    dims = np.array(data_shape[:k], dtype=np.int64)
    idx = indices.reshape(math.prod(indices.shape[:-1]), k).astype(np.int64)
    bad = (idx < -dims) | (idx >= dims)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise OpFormError(f"index {int(idx[row, col])} is out of range for axis {int(col)} "
                          f"of size {int(dims[col])}")
    idx = np.where(idx < 0, idx + dims, idx)
    inner = math.prod(data_shape[k:])
    strides = np.array([math.prod(data_shape[a + 1:k]) for a in range(k)], dtype=np.int64)
    base = idx @ strides if k else np.zeros(len(idx), dtype=np.int64)
    return (base[:, None] * inner + np.arange(inner, dtype=np.int64)[None, :]).ravel()


@register
class ScatterND(MoveOp):
    """ScatterND with constant indices, reduction none (see the module docstring)."""

    exact_move = True
    onnx_types: ClassVar[tuple[str, ...]] = ("ScatterND",)
    onnx_attributes = frozenset({"reduction"})

    @classmethod
    def select(cls, attrs: dict[str, Any], inputs: list[Input]) -> type[Op]:
        return ScatterNDAdd if attrs.get("reduction", "none") == "add" else cls

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        reduction = attrs.get("reduction", "none")
        if reduction not in ("none", "add"):
            raise OpFormError(f"attribute 'reduction'={reduction!r} is not supported (only "
                              "'none' and 'add')")
        if not isinstance(inputs[1], Const):
            raise OpFormError("ScatterND with indices that depend on the input is not "
                              "supported (the indices must be constant)")
        data_shape, indices = _shape(inputs[0]), np.asarray(inputs[1].value)
        if not np.issubdtype(indices.dtype, np.integer) or indices.ndim == 0 or \
                indices.shape[-1] > len(data_shape):
            raise OpFormError(f"indices of type {indices.dtype} and shape {indices.shape} do "
                              f"not index data of shape {data_shape}")
        want = indices.shape[:-1] + data_shape[indices.shape[-1]:]
        if _shape(inputs[2]) != want:
            raise OpFormError(f"updates of shape {_shape(inputs[2])} do not match indices of "
                              f"shape {indices.shape} into data of shape {data_shape} "
                              f"(expected {want})")
        targets = scatter_targets(data_shape, indices)
        if reduction == "none" and len(np.unique(targets)) < len(targets):
            raise OpFormError("duplicate indices with reduction 'none' (the result is "
                              "undefined in ONNX)")

    def __init__(self, attrs: dict[str, Any], inputs: list[Input], out_shape: tuple[int, ...]):
        super().__init__(attrs, inputs, out_shape)
        self.data_shape, self.updates_shape = _shape(inputs[0]), _shape(inputs[2])
        self.out_shape = self.data_shape
        self.variable = [isinstance(inputs[i], Var) for i in (0, 2)]  # data, updates
        indices = inputs[1]
        assert isinstance(indices, Const)  # check() refuses variable indices
        targets = scatter_targets(self.data_shape, np.asarray(indices.value))
        n = math.prod(self.data_shape)
        #: how many updates land on each data entry, and (reduction none) which one
        self.hits = np.bincount(targets, minlength=n)
        source = np.zeros(n, dtype=np.int64)
        source[targets] = np.arange(len(targets))
        self._index = {"targets": targets, "source": source, "written": self.hits > 0}
        self._on_device: dict[tuple[str, torch.device], Tensor] = {}

    def index(self, name: str, like: Tensor) -> Tensor:
        """One of the index arrays (targets, source, written) on ``like``'s device (cached)."""
        key = (name, like.device)
        t = self._on_device.get(key)
        if t is None:
            t = self._on_device[key] = torch.as_tensor(self._index[name], device=like.device)
        return t

    def operands(self, xs: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """data (B, N) and updates (B, M), flat, a constant one expanded over the batch."""
        like, it = xs[0], iter(xs)
        flat = [next(it).reshape(like.shape[0], -1) if var else
                self.const(i, like).reshape(1, -1).expand(like.shape[0], -1)
                for i, var in zip((0, 2), self.variable, strict=True)]
        return flat[0], flat[1]

    def forward(self, *xs: Tensor) -> Tensor:
        data, updates = self.operands(xs)
        if updates.shape[1]:  # (no updates: nothing to gather from)
            data = torch.where(self.index("written", data),
                               updates[:, self.index("source", data)], data)
        return data.reshape(data.shape[0], *self.out_shape)

    def data_coefficients(self, flat: Tensor) -> Tensor:
        """A_data (B, R, N) from A (B, R, N): 0 where an update overwrites the entry."""
        return torch.where(self.index("written", flat), torch.zeros_like(flat), flat)

    def backward(self, A: Tensor) -> list[Tensor]:
        """A_data and A_updates, for the variable ones (module docstring)."""
        B, R = A.shape[:2]
        flat = A.reshape(B, R, -1)
        out = []
        if self.variable[0]:
            out.append(self.data_coefficients(flat).reshape(B, R, *self.data_shape))
        if self.variable[1]:
            out.append(flat[:, :, self.index("targets", flat)].reshape(B, R, *self.updates_shape))
        return out


class ScatterNDAdd(ScatterND):
    """ScatterND with reduction add: data plus the sum of the updates landing on each entry
    (affine, not a move: an output entry may sum several input entries)."""

    exact_move = False
    onnx_types = ()

    def forward(self, *xs: Tensor) -> Tensor:
        data, updates = self.operands(xs)
        out = data.index_add(1, self.index("targets", data), updates)
        return out.reshape(data.shape[0], *self.out_shape)

    def data_coefficients(self, flat: Tensor) -> Tensor:
        return flat

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        """Entry j is data[j] plus n_j updates, added one by one in some order: within
        gamma_{n_j} (|data[j]| + the sum of the updates' magnitudes) of the exact sum;
        entries no update lands on are copied exactly."""
        it = iter(ins)
        like = out[0]
        mags = [magnitude(next(it)).reshape(like.shape[0], -1) if var else
                self.const(i, like).abs().reshape(1, -1).expand(like.shape[0], -1)
                for i, var in zip((0, 2), self.variable, strict=True)]
        total = mags[0].index_add(1, self.index("targets", like), mags[1])
        n = torch.as_tensor(self.hits, dtype=like.dtype, device=like.device)
        g = torch.where(n * u < 0.5, n * u / (1 - n * u), math.inf)
        err = torch.where(n > 0, g * total + tiny(u), torch.zeros_like(total))
        return err.reshape(like.shape)


@register
class Where(MoveOp):
    """Where with a constant condition (see the module docstring)."""

    exact_move = True
    onnx_types = ("Where",)

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        if not isinstance(inputs[0], Const):
            raise OpFormError("Where with a condition that depends on the input is not "
                              "supported")
        shapes = [_shape(i) for i in inputs]
        try:
            np.broadcast_shapes(*shapes)
        except ValueError:
            raise OpFormError(f"the shapes {shapes} do not broadcast together") from None

    def __init__(self, attrs: dict[str, Any], inputs: list[Input], out_shape: tuple[int, ...]):
        super().__init__(attrs, inputs, out_shape)
        self.shapes = [_shape(i) for i in inputs]
        self.out_shape = out_shape or tuple(np.broadcast_shapes(*self.shapes))
        self.variable = [isinstance(inputs[i], Var) for i in (1, 2)]  # X, Y
        self._consts[0] = np.asarray(self._consts[0]).astype(bool)

    def forward(self, *xs: Tensor) -> Tensor:
        like, it, rank = xs[0], iter(xs), len(self.out_shape)
        x, y = (align(next(it), rank) if var else self.const(i, like)
                for i, var in zip((1, 2), self.variable, strict=True))
        return torch.where(self.const(0, like), x, y)

    def backward(self, A: Tensor) -> list[Tensor]:
        """A where the condition holds for X, elsewhere for Y, summed to each one's shape."""
        cond = self.const(0, A)
        zero = torch.zeros_like(A)
        parts = [(torch.where(cond, A, zero), self.shapes[1]),
                 (torch.where(cond, zero, A), self.shapes[2])]
        return [sum_to_shape(p, s) for (p, s), var in zip(parts, self.variable, strict=True)
                if var]
