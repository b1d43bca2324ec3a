"""Ops that move, select or copy entries: each output entry is one input entry (or a
constant), so they are linear with 0/1 weights and non-decreasing, and interval bounds pass
through them unchanged.  Reductions by sum or mean and average pooling are here too: their
weights are non-negative."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .base import Const, Input, Op, OpFormError, Tensor, Var, align, axis, register
from .linear import bias_term, vjp_backward


class MoveOp(Op):
    """A linear op with non-negative weights: intervals map through ``forward``."""

    linear = True
    monotone = True

    def backward(self, A: Tensor) -> list[Tensor]:
        return vjp_backward(self, A)

    def bias_term(self, A: Tensor) -> Tensor:
        return bias_term(self, A)

    def attr_or_input(self, name: str, index: int) -> list[int] | None:
        """An integer list given as attribute (old opsets) or constant input (new)."""
        if name in self.attrs:
            return [int(v) for v in self.attrs[name]]
        if self.has_const(index):
            return [int(v) for v in np.asarray(self.const_np(index)).ravel()]
        return None


def _only_first_varies(inputs: list[Input], what: str) -> None:
    if not isinstance(inputs[0], Var) or any(isinstance(i, Var) for i in inputs[1:]):
        raise OpFormError(f"only the data input may vary; {what} must be constant")


@register
class Identity(MoveOp):
    onnx_types = ("Identity", "Dropout", "Cast")

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        if attrs["_op_type"] == "Cast" and int(attrs.get("to", 1)) not in (1, 10, 11, 16):
            raise OpFormError("a variable can only be cast to a floating-point type")

    def forward(self, x: Tensor) -> Tensor:
        return x

    def backward(self, A: Tensor) -> list[Tensor]:
        return [A]

    def bias_term(self, A: Tensor) -> Tensor:
        return A.new_zeros(A.shape[:2])


@register
class Reshape(MoveOp):
    """Reshape, Flatten, Squeeze and Unsqueeze: the output shape is known at import."""

    onnx_types = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        _only_first_varies(inputs, "the shape or axes")

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.out_shape)

    def backward(self, A: Tensor) -> list[Tensor]:
        return [A.reshape(*A.shape[:2], *self.var_shapes[0])]

    def bias_term(self, A: Tensor) -> Tensor:
        return A.new_zeros(A.shape[:2])


def reshape_target(op_type: str, attrs: dict[str, Any], in_shape: tuple[int, ...],
                   consts: list[np.ndarray | None]) -> tuple[int, ...]:
    """The ONNX output shape of a reshape-like node (used by the importer)."""
    if op_type == "Flatten":
        a = int(attrs.get("axis", 1))
        a = a + len(in_shape) if a < 0 else a
        return (math.prod(in_shape[:a]), math.prod(in_shape[a:]))
    if op_type == "Reshape":
        assert consts[1] is not None
        target = [int(v) for v in consts[1].ravel()]
        allow_zero = int(attrs.get("allowzero", 0))
        out = [in_shape[i] if v == 0 and not allow_zero else v for i, v in enumerate(target)]
        if -1 in out:
            known = math.prod(v for v in out if v != -1)
            out[out.index(-1)] = math.prod(in_shape) // known if known else 0
        return tuple(out)
    axes_src = attrs.get("axes")
    if axes_src is None and len(consts) > 1 and consts[1] is not None:
        axes_src = consts[1].ravel()
    if op_type == "Squeeze":
        if axes_src is None:
            return tuple(d for d in in_shape if d != 1)
        ax = {int(a) % len(in_shape) for a in axes_src}
        return tuple(d for i, d in enumerate(in_shape) if i not in ax)
    rank = len(in_shape) + len(axes_src)
    ax = sorted(int(a) % rank for a in axes_src)
    out_list, it = [], iter(in_shape)
    for i in range(rank):
        out_list.append(1 if i in ax else next(it))
    return tuple(out_list)


@register
class Transpose(MoveOp):
    onnx_types = ("Transpose",)

    def _perm(self, rank: int) -> list[int]:
        return [int(p) for p in self.attrs.get("perm", list(reversed(range(rank))))]

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, *[p + 1 for p in self._perm(x.dim() - 1)])

    def backward(self, A: Tensor) -> list[Tensor]:
        """Output dim j is input dim perm[j], so input dim i takes output dim inv[i]."""
        perm = self._perm(A.dim() - 2)
        inv = [0] * len(perm)
        for j, p in enumerate(perm):
            inv[p] = j
        return [A.permute(0, 1, *[2 + j for j in inv])]


@register
class Concat(MoveOp):
    onnx_types = ("Concat",)

    def __init__(self, attrs: dict[str, Any], inputs: list[Input], out_shape: tuple[int, ...]):
        super().__init__(attrs, inputs, out_shape)
        self.n_inputs = len(inputs)

    def forward(self, *xs: Tensor) -> Tensor:
        batch = xs[0].shape[0]
        it = iter(xs)
        parts = [
            self.const(i, xs[0]).expand(batch, *self.const_np(i).shape)
            if self.has_const(i) else next(it)
            for i in range(self.n_inputs)
        ]
        return torch.cat(parts, dim=axis(int(self.attrs["axis"]), len(self.out_shape)))


def _slice_indices(size: int, start: int, end: int, step: int) -> list[int]:
    return list(range(*slice(start, end, step).indices(size)))


@register
class Slice(MoveOp):
    """Slice with constant starts/ends/axes/steps (attributes in opset < 10)."""

    onnx_types = ("Slice",)

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        _only_first_varies(inputs, "starts, ends, axes and steps")

    def forward(self, x: Tensor) -> Tensor:
        rank = x.dim() - 1
        starts = self.attr_or_input("starts", 1) or []
        ends = self.attr_or_input("ends", 2) or []
        axes = self.attr_or_input("axes", 3) or list(range(len(starts)))
        steps = self.attr_or_input("steps", 4) or [1] * len(starts)
        for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
            dim = axis(a, rank)
            idx = _slice_indices(x.shape[dim], s, e, st)
            x = x.index_select(dim, torch.tensor(idx, dtype=torch.long, device=x.device))
        return x


@register
class SplitPart(MoveOp):
    """One output of a Split node (the importer makes one node per output)."""

    onnx_types = ("Split",)

    def forward(self, x: Tensor) -> Tensor:
        rank = x.dim() - 1
        dim = axis(int(self.attrs.get("axis", 0)), rank)
        start = int(self.attrs["_split_start"])
        return x.narrow(dim, start, self.out_shape[dim - 1])


@register
class Gather(MoveOp):
    """Gather along an axis with constant indices."""

    onnx_types = ("Gather",)

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        _only_first_varies(inputs, "the indices")

    def forward(self, x: Tensor) -> Tensor:
        rank = x.dim() - 1
        dim = axis(int(self.attrs.get("axis", 0)), rank)
        idx = torch.as_tensor(self.const_np(1).astype(np.int64), device=x.device)
        idx = torch.where(idx < 0, idx + x.shape[dim], idx)
        y = x.index_select(dim, idx.reshape(-1))
        return y.reshape(*x.shape[:dim], *idx.shape, *x.shape[dim + 1 :])


@register
class Pad(MoveOp):
    """Constant, reflect or edge padding with constant pads (a constant value adds a bias)."""

    onnx_types = ("Pad",)

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        _only_first_varies(inputs, "pads and value")

    def forward(self, x: Tensor) -> Tensor:
        rank = x.dim() - 1
        pads = self.attr_or_input("pads", 1) or [0] * (2 * rank)
        axes = self.attr_or_input("axes", 3) or list(range(rank))
        n = len(axes)
        value = float(self.attrs.get("value", 0.0))
        if self.has_const(2) and self.const_np(2).size:
            value = float(self.const_np(2).ravel()[0])
        mode = self.attrs.get("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        full = [0] * (2 * (rank + 1))  # torch order: last dim first, (begin, end) pairs
        for i, a in enumerate(axes):
            d = axis(a, rank)
            pos = 2 * (rank - d)
            full[pos], full[pos + 1] = pads[i], pads[i + n]
        if mode == "constant":
            return F.pad(x, full, value=value)
        torch_mode = {"reflect": "reflect", "edge": "replicate"}[mode]
        lead = x.shape[:-2] if rank >= 2 else x.shape[:-1]
        keep = 2 if rank >= 2 else 1
        xb = x.reshape(-1, 1, *x.shape[-keep:])
        y = F.pad(xb, full[: 2 * keep], mode=torch_mode)
        return y.reshape(*lead, *y.shape[2:])


@register
class Reduce(MoveOp):
    """ReduceSum and ReduceMean (non-negative weights)."""

    onnx_types = ("ReduceSum", "ReduceMean")

    def forward(self, x: Tensor) -> Tensor:
        rank = x.dim() - 1
        axes = self.attr_or_input("axes", 1)
        if not axes:
            if int(self.attrs.get("noop_with_empty_axes", 0)):
                return x
            axes = list(range(rank))
        dims = [axis(a, rank) for a in axes]
        keep = bool(int(self.attrs.get("keepdims", 1)))
        if self.attrs["_op_type"] == "ReduceSum":
            return x.sum(dim=dims, keepdim=keep)
        return x.mean(dim=dims, keepdim=keep)


@register
class Expand(MoveOp):
    """Expand and Tile of a variable by constant shapes (copies entries)."""

    onnx_types = ("Expand", "Tile")

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        _only_first_varies(inputs, "the shape or repeats")

    def forward(self, x: Tensor) -> Tensor:
        if self.attrs["_op_type"] == "Tile":
            reps = [int(v) for v in self.const_np(1).ravel()]
            return x.repeat(1, *reps)
        x = align(x, len(self.out_shape))
        return x.expand(x.shape[0], *self.out_shape)


@register
class AveragePool(MoveOp):
    """AveragePool and GlobalAveragePool (2-d and 1-d)."""

    onnx_types = ("AveragePool", "GlobalAveragePool")

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        if attrs.get("ceil_mode", 0):
            raise OpFormError("ceil_mode=1 is not supported")

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-3]
        spatial = self.var_shapes[0][2:]
        n = len(spatial)
        xb = x.reshape(-1, *x.shape[-(n + 1):])
        if self.attrs["_op_type"] == "GlobalAveragePool":
            y = xb.mean(dim=tuple(range(2, 2 + n)), keepdim=True)
        else:
            k = list(self.attrs["kernel_shape"])
            strides = list(self.attrs.get("strides", [1] * n))
            pads = list(self.attrs.get("pads", [0] * (2 * n)))
            include = bool(self.attrs.get("count_include_pad", 0))
            y = _avg_pool(xb, k, strides, pads, include)
        return y.reshape(*lead, *y.shape[1:]) if n == 2 else y.reshape(x.shape[0], *self.out_shape)


def _avg_pool(x: Tensor, k: list[int], strides: list[int], pads: list[int],
              include_pad: bool) -> Tensor:
    n = len(k)
    sym = all(pads[i] == pads[i + n] for i in range(n)) and all(
        pads[i] <= k[i] // 2 for i in range(n))
    pool = F.avg_pool2d if n == 2 else F.avg_pool1d
    if sym:
        return pool(x, k, strides, pads[:n], count_include_pad=include_pad)
    ones = torch.ones_like(x[:1, :1])
    torch_pads: list[int] = []
    for i in reversed(range(n)):
        torch_pads += [pads[i], pads[i + n]]
    total = pool(F.pad(x, torch_pads), k, strides, 0) * math.prod(k)
    if include_pad:
        return total / math.prod(k)
    count = pool(F.pad(ones, torch_pads), k, strides, 0) * math.prod(k)
    return total / count


__all__ = ["reshape_target", "Const"]
