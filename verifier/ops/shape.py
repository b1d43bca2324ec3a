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

from verifier.ops.base import (
    Const,
    Input,
    Interval,
    Op,
    OpFormError,
    Tensor,
    Var,
    Window,
    affine_rounding,
    align,
    axis,
    gamma,
    magnitude,
    register,
    tiny,
)
from verifier.ops.linear import _CONV, bias_term, vjp_backward

# Cast targets that round: ONNX type -> (unit roundoff, largest finite value)
CAST_TARGETS = {1: (2.0 ** -24, 3.4028234663852886e38), 10: (2.0 ** -11, 65504.0),
                16: (2.0 ** -8, 3.3895313892515355e38)}

TORCH_CASTS = {1: torch.float32, 10: torch.float16, 16: torch.bfloat16}


class MoveOp(Op):
    """A linear op with non-negative weights: intervals map through ``forward``."""

    linear = True
    monotone = True

    def backward(self, A: Tensor) -> list[Tensor]:
        """A move's transpose adds each output's coefficient to the input entry it copies
        (``_sources``, found once); other ops, and moves it cannot read, by autograd."""
        found = self._sources(A) if self.exact_move else None
        if found is None:
            return vjp_backward(self, A)
        positions, sources = found
        B, R = A.shape[:2]
        sizes = [math.prod(s) for s in self.var_shapes]
        out = A.new_zeros(B, R, sum(sizes))
        out.index_add_(2, sources, A.reshape(B, R, -1).index_select(2, positions))
        return [part.reshape(B, R, *shape) for part, shape in
                zip(out.split(sizes, dim=2), self.var_shapes, strict=True)]

    def _sources(self, like: Tensor) -> tuple[Tensor, Tensor] | None:
        """(output positions, the flat index of the input entry each copies, counted over
        the variable inputs in turn), by running the op on numbered inputs twice, the
        numbers shifted by their count the second time: an output that shifts with them is
        a copy (one that does not, a constant).  None when an output is neither."""
        key = (-4, like.device, torch.long)
        found: Any = self._cache.get(key)
        if found is None:
            total = sum(math.prod(s) for s in self.var_shapes)

            def numbered(first: float) -> Tensor:
                xs, start = [], first
                for shape in self.var_shapes:
                    size = math.prod(shape)
                    xs.append(torch.arange(start, start + size, dtype=torch.float64,
                                           device=like.device).reshape(1, *shape))
                    start += size
                with torch.no_grad():
                    return self.forward(*xs).reshape(-1)

            y1, y2 = numbered(1.0), numbered(1.0 + total)
            moved = (y2 - y1) == total
            src = y1 - 1
            valid = moved & (src == src.round()) & (src >= 0) & (src < total)
            positions = valid.nonzero().flatten()
            unread = bool((moved & ~valid).any()) or not torch.isfinite(y1[~moved]).all()
            found = () if unread else (positions, src[positions].long())
            self._cache[key] = found
        return found or None

    def bias_term(self, A: Tensor) -> Tensor:
        return bias_term(self, A)

    def weight_sign(self, k: int) -> float | None:
        """Every weight is non-negative (0 or 1 for a move, 1/n for a mean or a pool)."""
        return 1.0

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        """Moving entries is exact (reductions and pools override this)."""
        return None

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
    exact_move = True
    onnx_types = ("Identity", "Dropout", "Cast")

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        """Cast rounds to its target type (to float64: exact from any float type we take);
        to float16 beyond its largest finite value it gives infinity."""
        target = int(self.attrs.get("to", 11)) if self.attrs["_op_type"] == "Cast" else 11
        if target == 11:
            return None
        u_to, top = CAST_TARGETS[target]
        mag = magnitude(out)
        return torch.where(mag > top, math.inf, u_to * mag + tiny(u_to))

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        if attrs["_op_type"] == "Dropout":
            _only_first_varies(inputs, "ratio and training_mode")
            mode = inputs[2] if len(inputs) > 2 else None
            if isinstance(mode, Const) and np.asarray(mode.value).astype(bool).any():
                raise OpFormError("training_mode=true (random dropout) is not supported")
        if attrs["_op_type"] == "Cast" and int(attrs.get("to", 1)) not in (1, 10, 11, 16):
            raise OpFormError(f"attribute 'to'={attrs.get('to')}: a variable can only be cast "
                              "to a floating-point type")

    def forward(self, x: Tensor) -> Tensor:
        """The identity; a Cast to a narrower float type rounds as onnxruntime does."""
        target = TORCH_CASTS.get(int(self.attrs.get("to", 0))) \
            if self.attrs["_op_type"] == "Cast" else None
        if target is None or torch.finfo(target).eps <= torch.finfo(x.dtype).eps:
            return x
        return x.to(target).to(x.dtype)

    def backward(self, A: Tensor) -> list[Tensor]:
        return [A]

    def bias_term(self, A: Tensor) -> Tensor:
        return A.new_zeros(A.shape[:2])

    def window_of_input(self, k: int, out: Window) -> Window | None:
        return out


@register
class Reshape(MoveOp):
    """Reshape, Flatten, Squeeze and Unsqueeze: the output shape is known at import."""
    exact_move = True

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
    if axes_src is None:  # Unsqueeze's axes are required (the importer reports the error)
        raise TypeError("Unsqueeze has no axes (neither attribute nor input)")
    rank = len(in_shape) + len(axes_src)
    new_axes = sorted(int(a) % rank for a in axes_src)
    out_list, it = [], iter(in_shape)
    for i in range(rank):
        out_list.append(1 if i in new_axes else next(it))
    return tuple(out_list)


@register
class Transpose(MoveOp):
    exact_move = True
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
    exact_move = True
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
    """ONNX Slice along one axis: negative starts/ends count from the end, then both are
    clamped to [0, size] (step > 0) or start to [0, size - 1] and end to [-1, size - 1]."""
    if step == 0:
        raise OpFormError("a Slice step of 0 is not allowed")
    start, end = start + size if start < 0 else start, end + size if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), size), min(max(end, 0), size)
    else:
        start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
    return list(range(start, end, step))


@register
class Slice(MoveOp):
    """Slice with constant starts/ends/axes/steps (attributes in opset < 10)."""
    exact_move = True

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
    exact_move = True

    onnx_types = ("Split",)

    def forward(self, x: Tensor) -> Tensor:
        rank = x.dim() - 1
        dim = axis(int(self.attrs.get("axis", 0)), rank)
        start = int(self.attrs["_split_start"])
        return x.narrow(dim, start, self.out_shape[dim - 1])


@register
class Gather(MoveOp):
    """Gather along an axis with constant indices."""
    exact_move = True

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
    """Constant, reflect, edge or wrap padding along any axes, with constant pads (negative
    ones crop); a constant value adds a bias."""
    exact_move = True

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
        if mode == "constant":  # negative pads crop, as in ONNX
            full = [0] * (2 * (rank + 1))  # torch order: last dim first, (begin, end) pairs
            for i, a in enumerate(axes):
                pos = 2 * (rank - axis(a, rank))
                full[pos], full[pos + 1] = pads[i], pads[i + n]
            return F.pad(x, full, value=value)
        if min(pads) < 0:
            raise OpFormError(f"attribute 'pads'={pads}: negative pads (cropping) are only "
                              f"supported in constant mode, not '{mode}'")
        for i, a in enumerate(axes):
            d = axis(a, rank)
            idx = _pad_index(x.shape[d], pads[i], pads[i + n], mode)
            x = x.index_select(d, torch.tensor(idx, dtype=torch.long, device=x.device))
        return x


    def _shift(self) -> tuple[int, int] | None:
        """The leading pads of rows and columns when the op pads only those, with
        zeros, of an (N, C, H, W) tensor; else None."""
        rank = len(self.var_shapes[0])
        pads = self.attr_or_input("pads", 1) or [0] * (2 * rank)
        axes = [axis(a, rank) - 1 for a in (self.attr_or_input("axes", 3) or range(rank))]
        n = len(axes)
        mode = self.attrs.get("mode", "constant")
        value = float(self.attrs.get("value", 0.0))
        if self.has_const(2) and self.const_np(2).size:
            value = float(self.const_np(2).ravel()[0])
        if rank != 4 or mode not in ("constant", b"constant") or min(pads) < 0:
            return None
        by_axis = {a: (pads[i], pads[i + n]) for i, a in enumerate(axes)}
        if any(by_axis.get(a, (0, 0)) != (0, 0) for a in (0, 1)) or \
                (value != 0 and any(pads)):
            return None
        return by_axis.get(2, (0, 0))[0], by_axis.get(3, (0, 0))[0]

    def window_of_input(self, k: int, out: Window) -> Window | None:
        shift = self._shift()
        if shift is None:
            return None
        return tuple((max(0, a - p), min(size, b - p)) for (a, b), p, size in  # type: ignore
                     zip(out, shift, self.var_shapes[0][-2:], strict=True))

    def window_transpose(self, A: Tensor, out: Window) -> list[Tensor]:
        """The output entries that copy the input's window; the rest are the pads."""
        shift, inner = self._shift(), self.window_of_input(0, out)
        assert shift is not None and inner is not None
        (y0, y1), (x0, x1) = inner
        oy, ox = y0 + shift[0] - out[0][0], x0 + shift[1] - out[1][0]
        return [A[..., oy:oy + y1 - y0, ox:ox + x1 - x0]]


def _pad_index(size: int, begin: int, end: int, mode: str) -> list[int]:
    """For each output position along one axis, the input entry it copies: ``edge`` repeats
    the end entries, ``wrap`` is periodic, ``reflect`` mirrors about the end entries (which
    are not repeated)."""
    out = []
    period = 2 * (size - 1)
    for j in range(-begin, size + end):
        if mode == "edge":
            i = min(max(j, 0), size - 1)
        elif mode == "wrap":
            i = j % size
        else:
            i = j % period if period else 0
            i = period - i if i >= size else i
        out.append(i)
    return out


@register
class Reduce(MoveOp):
    """ReduceSum and ReduceMean (non-negative weights)."""

    onnx_types = ("ReduceSum", "ReduceMean")

    def _terms(self) -> int:
        return math.prod(self.var_shapes[0]) // max(1, math.prod(self.out_shape)) + 1

    def relative_rounding(self, ins: list[Interval], u: float) -> float | None:
        """A sum (or mean) of non-negative terms rounds relatively: gamma_n of the result."""
        return gamma(self._terms(), u) if bool((ins[0][0] >= 0).all()) else None

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        if self.relative_rounding(ins, u) is not None:
            return torch.full_like(out[0], tiny(u))
        return affine_rounding(self, ins, u, self._terms())

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
    exact_move = True

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
    """AveragePool and GlobalAveragePool (1-d to 3-d)."""

    onnx_types = ("AveragePool", "GlobalAveragePool")

    def _terms(self) -> int:
        if self.attrs["_op_type"] == "GlobalAveragePool":
            return math.prod(self.var_shapes[0][2:]) + 1
        return math.prod(self.attrs["kernel_shape"]) + 1

    def relative_rounding(self, ins: list[Interval], u: float) -> float | None:
        """An average of non-negative terms rounds relatively: gamma_n of the result."""
        return gamma(self._terms(), u) if bool((ins[0][0] >= 0).all()) else None

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        if self.relative_rounding(ins, u) is not None:
            return torch.full_like(out[0], tiny(u))
        return affine_rounding(self, ins, u, self._terms())

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, C, *spatial) -> (B, N, C, *pooled)."""
        n = len(self.var_shapes[0]) - 2
        xb = x.reshape(-1, *x.shape[-(n + 1):])
        if self.attrs["_op_type"] == "GlobalAveragePool":
            y = xb.mean(dim=tuple(range(2, 2 + n)), keepdim=True)
        else:  # the importer made every attribute explicit (auto_pad resolved to pads)
            k = [int(v) for v in self.attrs["kernel_shape"]]
            strides = [int(v) for v in self.attrs.get("strides", [1] * n)]
            dil = [int(v) for v in self.attrs.get("dilations", [1] * n)]
            pads = [int(v) for v in self.attrs.get("pads", [0] * (2 * n))]
            include = bool(self.attrs.get("count_include_pad", 0))
            y = _avg_pool(xb, k, strides, dil, pads, include,
                          self.attrs.get("_overhang", [0] * n))
        return y.reshape(*x.shape[:2], *y.shape[1:])


    def _geometry(self) -> tuple[list[int], list[int], list[int], list[int]] | None:
        """Kernel, strides, dilations and leading pads of a 2-d pool that divides by its
        whole kernel everywhere; None for others."""
        if self.attrs["_op_type"] == "GlobalAveragePool" or len(self.var_shapes[0]) != 4:
            return None
        k = [int(v) for v in self.attrs["kernel_shape"]]
        pads = [int(v) for v in self.attrs.get("pads", [0] * 4)]
        if any(pads) and not self.attrs.get("count_include_pad", 0) or \
                any(self.attrs.get("_overhang", [])):
            return None
        strides = [int(v) for v in self.attrs.get("strides", [1, 1])]
        dil = [int(v) for v in self.attrs.get("dilations", [1, 1])]
        return k, strides, dil, pads[:2]

    def window_of_input(self, k: int, out: Window) -> Window | None:
        geometry = self._geometry()
        if geometry is None:
            return None
        return tuple(  # type: ignore[return-value]
            (max(0, a * s - p), min(size, (b - 1) * s - p + (kk - 1) * d + 1))
            for (a, b), size, kk, s, d, p in zip(out, self.var_shapes[0][-2:], *geometry,
                                                   strict=True))

    def window_transpose(self, A: Tensor, out: Window) -> list[Tensor]:
        """A transposed depthwise convolution with the weights 1 / kernel size, cut to the
        input's window (as Conv's)."""
        k, strides, dil, pads = self._geometry()  # type: ignore[misc]
        inner = self.window_of_input(0, out)
        assert inner is not None
        flat = A.reshape(-1, 1, *A.shape[-2:])
        kernel = flat.new_full((1, 1, *k), 1.0 / math.prod(k))
        full = F.conv_transpose2d(flat, kernel, None, strides, 0, 0, 1, dil)
        (y0, y1), (x0, x1) = inner
        oy, ox = (lo - (a * s - p) for lo, (a, _), s, p in
                  zip((y0, x0), out, strides, pads, strict=True))
        part = full[..., oy:oy + y1 - y0, ox:ox + x1 - x0]
        return [part.reshape(*A.shape[:-2], *part.shape[-2:])]


def _avg_pool(x: Tensor, k: list[int], strides: list[int], dil: list[int], pads: list[int],
              include_pad: bool, overhang: list[int]) -> Tensor:
    """Mean over each (dilated) window of the zero-padded x (N, C, *spatial): over its taps
    in the padded input (count_include_pad; all k of them but where a ceil_mode window
    overhangs, onnxruntime's divisor), or over its taps inside x.  ``overhang``: the end
    pads, per axis, that ceil_mode added to ``pads``."""
    n = len(k)
    torch_pads: list[int] = []
    for i in reversed(range(n)):
        torch_pads += [pads[i], pads[i + n]]
    c = x.shape[1]
    kernel = x.new_ones((c, 1, *k))
    total = _CONV[n](F.pad(x, torch_pads), kernel, None, strides, 0, dil, c)
    if include_pad and not any(overhang):
        return total / math.prod(k)
    counted = x.new_ones((1, 1, *x.shape[2:]))
    if include_pad:  # the given pads count, the overhang does not
        given: list[int] = []
        for i in reversed(range(n)):
            given += [pads[i], pads[i + n] - overhang[i]]
        counted = F.pad(F.pad(counted, given, value=1.0), _end_pads(overhang))
    else:
        counted = F.pad(counted, torch_pads)
    return total / _CONV[n](counted, kernel[:1], None, strides, 0, dil)


def _end_pads(end: list[int]) -> list[int]:
    """F.pad's list for pads at the end of each spatial axis."""
    out: list[int] = []
    for e in reversed(end):
        out += [0, e]
    return out


__all__ = ["reshape_target", "Const"]


@register
class DepthToSpace(Op):
    """Registered for import; always lowered to Reshape, Transpose, Reshape
    (verifier/importer/lowering.py); SpaceToDepth alike."""

    onnx_types = ("DepthToSpace", "SpaceToDepth")
    onnx_attributes = frozenset({"blocksize", "mode"})


@register
class NormReduce(Op):
    """Registered for import; ReduceSumSquare, ReduceL1 and ReduceL2 are always lowered to
    ReduceSum of x^2 or |x| (and Sqrt) (verifier/importer/lowering.py)."""

    onnx_types = ("ReduceSumSquare", "ReduceL1", "ReduceL2")
    onnx_attributes = frozenset({"axes", "keepdims", "noop_with_empty_axes"})
