"""Affine ops with constant parameters: Gemm, MatMul, Conv, ConvTranspose, BatchNorm and
elementwise arithmetic with constants.

Each is ``y = L(x) + b`` for a linear map L; interval bounds use the centre/radius form
``y in L(c) + b +- |L|(r)`` where ``|L|`` is L with its weights replaced by their absolute
values, which is exact for a box.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from verifier.ops.base import (
    F32_1E_5,
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
    register,
    safe_mul,
)


class AffineOp(Op):
    """An op affine in its variable inputs; subclasses give ``forward`` and ``abs_linear``."""

    linear = True

    def backward(self, A: Tensor) -> list[Tensor]:
        """Coefficients on each input given coefficients A (B, R, *out) on the output."""
        return vjp_backward(self, A)

    def bias_term(self, A: Tensor) -> Tensor:
        """(B, R): the constant part of A . forward(x), i.e. A . forward(0)."""
        return bias_term(self, A)

    def abs_linear(self, *rs: Any) -> Tensor:
        """|L| applied to non-negative radii (Tensors, one per variable input; ``Any`` so
        that each op declares its own arity, as for ``forward``)."""
        raise NotImplementedError

    def has_abs_linear(self) -> bool:
        """Whether this class gives ``abs_linear`` (Add, Sub and Neg do not: the weights
        from each of their inputs have one sign, ``weight_sign``)."""
        return type(self).abs_linear is not AffineOp.abs_linear

    _counted_terms: int | None = None  # rounding_terms, once counted

    def rounding_terms(self) -> int:
        """Rounded steps (products and sums) behind one output entry; the default, every
        input entry plus a bias, holds for any affine op.  0: the op is exact."""
        return sum(math.prod(s) for s in self.var_shapes) + 1

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        if self._counted_terms is None:  # counted once (some counts read the weights or run the op)
            self._counted_terms = self.rounding_terms()
        terms = self._counted_terms
        return affine_rounding(self, ins, u, terms) if terms else None

    def ibp(self, *bounds: Any) -> Interval:
        if self.monotone:
            return super().ibp(*bounds)
        # halves first: lo + hi overflows for bounds beyond half the largest float
        centres = [lo / 2 + hi / 2 for lo, hi in bounds]
        radii = [hi / 2 - lo / 2 for lo, hi in bounds]
        c = self.forward(*centres)
        r = self.abs_linear(*radii)
        return c - r, c + r


def vjp_backward(op: Op, A: Tensor) -> list[Tensor]:
    """Transpose of a linear map by autograd: the vector-Jacobian product at zero."""
    B, R = A.shape[:2]
    with torch.enable_grad():
        xs = [torch.zeros(B * R, *s, dtype=A.dtype, device=A.device, requires_grad=True)
              for s in op.var_shapes]
        y = op.forward(*xs)
        grads = torch.autograd.grad(y, xs, A.reshape(B * R, *A.shape[2:]),
                                    create_graph=A.requires_grad)
    return [g.reshape(B, R, *g.shape[1:]) for g in grads]


def sum_to_shape(A: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Reduce coefficients (B, R, *s) of a broadcast result to an input of ONNX ``shape``."""
    extra = A.dim() - 2 - len(shape)
    if extra > 0:
        A = A.sum(dim=tuple(range(2, 2 + extra)))
    dims = tuple(i + 2 for i, n in enumerate(shape) if n == 1 and A.shape[i + 2] != 1)
    return A.sum(dim=dims, keepdim=True) if dims else A


def constant_part(op: Op, like: Tensor) -> Tensor:
    """f(0) of a linear op, (1, *out), on ``like``'s device and dtype (cached)."""
    key = (-1, like.device, like.dtype)
    offset = op._cache.get(key)
    if offset is None:
        with torch.no_grad():
            zeros = [torch.zeros(1, *s, dtype=like.dtype, device=like.device)
                     for s in op.var_shapes]
            offset = op.forward(*zeros)
        op._cache[key] = offset
    return offset


def bias_term(op: Op, A: Tensor, window: Window | None = None) -> Tensor:
    """A . f(0) summed over the output entries (those in ``window`` when A covers only
    that window of an (N, C, H, W) output): (B, R)."""
    offset = constant_part(op, A)
    if not bool((offset != 0).any()):
        return A.new_zeros(A.shape[:2])
    # the offset's infinite entries (empty: all finite); cache keys < 0 in use: -1 here,
    # -2 a conv's dense matrix, -4 a move's index map, -9 this
    infinite = op._cache.get((-9, A.device, A.dtype))
    if infinite is None:
        infinite = offset[~torch.isfinite(offset)]
        op._cache[(-9, A.device, A.dtype)] = infinite
    if window is not None:
        (y0, y1), (x0, x1) = window
        offset = offset[..., y0:y1, x0:x1]
    flat = offset.reshape(-1)  # one offset (batch 1) for every problem
    if infinite.numel() == 0:
        return A.flatten(2) @ flat
    finite = torch.isfinite(flat)
    # an infinite constant (a -inf attention mask): 0 * inf is 0, a coefficient of 0
    # ignores it; the finite part as above
    rows = A.flatten(2)
    return rows @ torch.where(finite, flat, 0.0) + \
        safe_mul(rows, torch.where(finite, 0.0, flat)).sum(-1)


def _require_const(inputs: list[Input], positions: tuple[int, ...], what: str) -> None:
    for p in positions:
        if p < len(inputs) and not isinstance(inputs[p], Const):
            raise OpFormError(f"{what} must be a constant")


def _summed_terms(w: np.ndarray, axis: int) -> int:
    """Products behind one output entry of a product with the constant ``w`` summed over
    ``axis``: the most nonzero weights any output entry sums (at least 1).  A zero weight's
    product is an exact zero, and adding it rounds to nothing, so the rounding bound holds
    for any summation order with the zeros left out (tllverifybench's sparse layers: 99%
    zeros)."""
    return max(1, int(np.count_nonzero(w, axis=axis).max(initial=0)))


def _flat_batch(x: Tensor, keep: int) -> tuple[Tensor, tuple[int, ...]]:
    """Merge all leading dims of ``x`` except the last ``keep`` into one."""
    lead = tuple(x.shape[: x.dim() - keep])
    return x.reshape(-1, *x.shape[x.dim() - keep :]), lead


@register
class Gemm(AffineOp):
    """``y = alpha * A' B' + beta * C`` with A the variable and B, C constants."""

    onnx_types = ("Gemm",)

    def rounding_terms(self) -> int:
        return _summed_terms(self.const_np(1), 1 if self.attrs.get("transB", 0) else 0) + 1

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        if not isinstance(inputs[0], Var):
            raise OpFormError("only the first input (A) may vary")
        _require_const(inputs, (1, 2), "Gemm weights B and bias C")

    def _weight(self, like: Tensor) -> Tensor:
        w = self.const(1, like) * float(self.attrs.get("alpha", 1.0))
        return w.t() if self.attrs.get("transB", 0) else w

    def _x(self, x: Tensor) -> Tensor:
        return x.transpose(-1, -2) if self.attrs.get("transA", 0) else x

    def forward(self, x: Tensor) -> Tensor:
        y = self._x(x) @ self._weight(x)
        if self.has_const(2):
            y = y + float(self.attrs.get("beta", 1.0)) * self.const(2, x)
        return y

    def abs_linear(self, r: Tensor) -> Tensor:
        return self._x(r) @ self._weight(r).abs()

    def backward(self, A: Tensor) -> list[Tensor]:
        if self.attrs.get("transA", 0):
            return super().backward(A)
        return [A @ self._weight(A).t()]


@register
class MatMul(AffineOp):
    """``x @ W`` or ``W @ x`` with one constant operand (two variables: see bilinear)."""

    onnx_types: ClassVar[tuple[str, ...]] = ("MatMul",)

    def rounding_terms(self) -> int:
        w = self.const_np(self.w_index)
        return _summed_terms(w, -2 if self.w_index == 1 and w.ndim >= 2 else -1)

    @classmethod
    def select(cls, attrs: dict[str, Any], inputs: list[Input]) -> type[Op]:
        """A product of two variables is the bilinear op; with a constant operand, this one."""
        from verifier.ops.bilinear import VarMatMul

        return VarMatMul if all(isinstance(i, Var) for i in inputs) else cls

    def __init__(self, attrs: dict[str, Any], inputs: list[Input], out_shape: tuple[int, ...]):
        super().__init__(attrs, inputs, out_shape)
        self.w_index = 1 if isinstance(inputs[1], Const) else 0

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        if all(isinstance(i, Var) for i in inputs):
            raise OpFormError("internal: variable x variable MatMul is the bilinear op")

    def _apply(self, x: Tensor, w: Tensor) -> Tensor:
        if self.w_index == 1:
            return x @ w
        if x.dim() == 2:  # ONNX 1-D right operand: (B, k) -> W @ x per problem
            return x @ w.transpose(-1, -2)
        return w @ x

    def forward(self, x: Tensor) -> Tensor:
        return self._apply(x, self.const(self.w_index, x))

    def abs_linear(self, r: Tensor) -> Tensor:
        return self._apply(r, self.const(self.w_index, r).abs())

    def backward(self, A: Tensor) -> list[Tensor]:
        w = self.const(self.w_index, A)
        if self.w_index == 1 and w.dim() == 2 and len(self.var_shapes[0]) >= 2:
            return [A @ w.t()]
        return super().backward(A)


def _conv_pads(attrs: dict[str, Any], spatial: tuple[int, ...], kernel: tuple[int, ...],
               strides: list[int], dilations: list[int]) -> list[int]:
    """Explicit ONNX pads [begin..., end...], resolving auto_pad SAME_* and VALID."""
    auto = attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    n = len(spatial)
    if auto in ("NOTSET", ""):
        return list(attrs.get("pads", [0] * (2 * n)))
    if auto == "VALID":
        return [0] * (2 * n)
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begins.append(small if auto == "SAME_UPPER" else big)
        ends.append(big if auto == "SAME_UPPER" else small)
    return begins + ends


def _pad_input(x: Tensor, pads: list[int], value: float = 0.0) -> tuple[Tensor, list[int]]:
    """Apply asymmetric padding up front; returns the padded input and symmetric zero pads."""
    n = len(pads) // 2
    if all(p == 0 for p in pads):
        return x, [0] * n
    torch_pads: list[int] = []
    for i in reversed(range(n)):
        torch_pads += [pads[i], pads[i + n]]
    return F.pad(x, torch_pads, value=value), [0] * n


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@register
class Conv(AffineOp):
    """N-d convolution with constant weights and bias (groups and dilations allowed)."""

    onnx_types = ("Conv",)

    def rounding_terms(self) -> int:
        w = self.const_np(1)
        return int(math.prod(w.shape[1:])) + 1

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        if not isinstance(inputs[0], Var):
            raise OpFormError("only the data input may vary")
        _require_const(inputs, (1, 2), "convolution weights and bias")

    def _conv(self, x: Tensor, w: Tensor) -> Tensor:
        n = w.dim() - 2
        xb, lead = _flat_batch(x, n + 1)
        strides = list(self.attrs.get("strides", [1] * n))
        dil = list(self.attrs.get("dilations", [1] * n))
        pads = _conv_pads(self.attrs, tuple(xb.shape[2:]), tuple(w.shape[2:]), strides, dil)
        xb, _ = _pad_input(xb, pads)
        y = _CONV[n](xb, w, None, strides, 0, dil, int(self.attrs.get("group", 1)))
        return y.reshape(*lead, *y.shape[1:])

    def forward(self, x: Tensor) -> Tensor:
        y = self._conv(x, self.const(1, x))
        if self.has_const(2):
            b = self.const(2, x)
            y = y + b.reshape(-1, *([1] * (self.const(1, x).dim() - 2)))
        return y

    def abs_linear(self, r: Tensor) -> Tensor:
        return self._conv(r, self.const(1, r).abs())

    def backward(self, A: Tensor) -> list[Tensor]:
        """A small convolution (inputs x outputs <= DENSE_LIMIT) as its dense matrix, made
        once per device and dtype: one matrix product per pass instead of a transposed
        convolution, far faster for e.g. a vision transformer's patch embedding."""
        W = self._dense(A)
        if W is None:
            return vjp_backward(self, A)
        B, R = A.shape[:2]
        return [(A.reshape(B * R, -1) @ W).reshape(B, R, *self.var_shapes[0])]

    def _geometry(self) -> tuple[list[int], list[int], list[int]] | None:
        """Strides, dilations and leading pads of a 2-d convolution; None for others."""
        w = self.const_np(1)
        if w.ndim != 4:
            return None
        strides = list(self.attrs.get("strides", [1, 1]))
        dil = list(self.attrs.get("dilations", [1, 1]))
        pads = _conv_pads(self.attrs, tuple(self.var_shapes[0][-2:]), tuple(w.shape[2:]),
                          strides, dil)
        return strides, dil, pads[:2]

    def window_of_input(self, k: int, out: Window) -> Window | None:
        geometry = self._geometry()
        if geometry is None:
            return None
        kernel, sizes = self.const_np(1).shape[2:], self.var_shapes[0][-2:]
        return tuple(  # type: ignore[return-value]
            (max(0, a * s - p), min(size, (b - 1) * s - p + (kk - 1) * d + 1))
            for (a, b), size, kk, s, d, p in zip(out, sizes, kernel, *geometry, strict=True))

    def window_transpose(self, A: Tensor, out: Window) -> list[Tensor]:
        """The transposed convolution of the window's coefficients covers the input from
        row ``a * stride - pad`` on; the part inside the input is the input's window."""
        strides, dil, pads = self._geometry()  # type: ignore[misc]
        inner = self.window_of_input(0, out)
        assert inner is not None
        flat = A.reshape(-1, *A.shape[-3:])
        full = F.conv_transpose2d(flat, self.const(1, A), None, strides, 0, 0,
                                  int(self.attrs.get("group", 1)), dil)
        (y0, y1), (x0, x1) = inner
        oy, ox = (lo - (a * s - p) for lo, (a, _), s, p in
                  zip((y0, x0), out, strides, pads, strict=True))
        part = full[..., oy:oy + y1 - y0, ox:ox + x1 - x0]
        return [part.reshape(*A.shape[:-3], *part.shape[1:])]

    def _dense(self, like: Tensor) -> Tensor | None:
        """(n_out, n_in): d output / d input, or None when too large."""
        n_in, n_out = math.prod(self.var_shapes[0]), math.prod(self.out_shape)
        if n_in * n_out > DENSE_LIMIT:
            return None
        key = (-2, like.device, like.dtype)
        W = self._cache.get(key)
        if W is None:
            eye = torch.eye(n_in, dtype=like.dtype, device=like.device)
            with torch.no_grad():
                cols = self._conv(eye.reshape(n_in, *self.var_shapes[0]), self.const(1, eye))
            W = cols.reshape(n_in, n_out).T.contiguous()
            self._cache[key] = W
        return W


DENSE_LIMIT = 1 << 22


@register
class ConvTranspose(AffineOp):
    """Transposed convolution with constant weights (explicit pads and output_padding)."""

    onnx_types = ("ConvTranspose",)

    def rounding_terms(self) -> int:
        """Products behind one output entry, plus the bias.  An output entry sums only the
        (input entry, kernel tap) pairs that reach it: with a stride above 1, or an input
        smaller than the kernel, far fewer than ``C_in / group * kernel`` (cgan's first
        layer, a 4x4 kernel on a 1x1 input: 512 of 8192).  An implementation that forms
        the others (zeros inserted between the inputs, or padding) multiplies and adds
        exact zeros, which round to nothing.  Counted by running the op on ones with a
        kernel of ones: each output entry is then its number of products."""
        ones = torch.ones(self.var_shapes[0], dtype=torch.float64)
        kernel = torch.ones(self.const_np(1).shape, dtype=torch.float64)
        return int(self._conv(ones, kernel).max()) + 1

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        Conv.check(attrs, inputs)
        auto = attrs.get("auto_pad", "NOTSET")
        if (auto.decode() if isinstance(auto, bytes) else auto) not in ("NOTSET", "", "VALID"):
            raise OpFormError(f"attribute 'auto_pad'={auto!r} is not supported for "
                              "ConvTranspose")
        if "output_shape" in attrs:  # the importer turns it into pads
            raise OpFormError("internal: output_shape left for the op")

    def _conv(self, x: Tensor, w: Tensor) -> Tensor:
        n = w.dim() - 2
        xb, lead = _flat_batch(x, n + 1)
        strides = list(self.attrs.get("strides", [1] * n))
        dil = list(self.attrs.get("dilations", [1] * n))
        pads = list(self.attrs.get("pads", [0] * (2 * n)))
        out_pad = list(self.attrs.get("output_padding", [0] * n))
        y = _CONV_T[n](xb, w, None, strides, 0, out_pad, int(self.attrs.get("group", 1)), dil)
        index = [slice(None), slice(None)]
        for i in range(n):
            index.append(slice(pads[i], y.shape[2 + i] - pads[i + n]))
        y = y[tuple(index)]
        return y.reshape(*lead, *y.shape[1:])

    def forward(self, x: Tensor) -> Tensor:
        y = self._conv(x, self.const(1, x))
        if self.has_const(2):
            y = y + self.const(2, x).reshape(-1, *([1] * (self.const(1, x).dim() - 2)))
        return y

    def abs_linear(self, r: Tensor) -> Tensor:
        return self._conv(r, self.const(1, r).abs())

    def _geometry(self) -> tuple[list[int], list[int], list[int], list[int]] | None:
        """Kernel, strides, dilations and leading pads of a 2-d one; None for others."""
        w = self.const_np(1)
        if w.ndim != 4:
            return None
        pads = list(self.attrs.get("pads", [0] * 4))
        return (list(w.shape[2:]), list(self.attrs.get("strides", [1, 1])),
                list(self.attrs.get("dilations", [1, 1])), pads[:2])

    def window_of_input(self, k: int, out: Window) -> Window | None:
        """Input i reaches outputs i * stride + j * dilation - pad (j < kernel)."""
        geometry = self._geometry()
        if geometry is None:
            return None
        return tuple(  # type: ignore[return-value]
            (max(0, -(-(a + p - (kk - 1) * d) // s)), min(size, (b - 1 + p) // s + 1))
            for (a, b), size, kk, s, d, p in zip(out, self.var_shapes[0][-2:], *geometry,
                                                   strict=True))

    def window_transpose(self, A: Tensor, out: Window) -> list[Tensor]:
        """A convolution of the coefficients, padded (or cut) to the outputs the input's
        window reaches."""
        kernel, strides, dil, pads = self._geometry()  # type: ignore[misc]
        inner = self.window_of_input(0, out)
        assert inner is not None
        torch_pads: list[int] = []
        for (i0, i1), (a, b), kk, s, d, p in reversed(list(zip(inner, out, kernel, strides,
                                                               dil, pads, strict=True))):
            first, end = i0 * s - p, (i1 - 1) * s - p + (kk - 1) * d + 1
            torch_pads += [a - first, end - b]
        flat = F.pad(A.reshape(-1, *A.shape[-3:]), torch_pads)
        part = F.conv2d(flat, self.const(1, A), None, strides, 0, dil,
                        int(self.attrs.get("group", 1)))
        return [part.reshape(*A.shape[:-3], *part.shape[1:])]


@register
class BatchNormalization(AffineOp):
    """Inference-mode batch norm: ``y = s * x + t`` per channel (ONNX axis 1)."""

    onnx_types = ("BatchNormalization",)

    def rounding_terms(self) -> int:
        return 5  # (x - mean) / sqrt(var + eps) * scale + bias, or folded into a product

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        if not isinstance(inputs[0], Var):
            raise OpFormError("only the data input may vary")
        _require_const(inputs, (1, 2, 3, 4), "scale, bias, mean and variance")

    def _scale_shift(self, like: Tensor) -> tuple[Tensor, Tensor]:
        eps = float(self.attrs.get("epsilon", F32_1E_5))
        s = self.const(1, like) / torch.sqrt(self.const(4, like) + eps)
        t = self.const(2, like) - self.const(3, like) * s
        shape = (-1,) + (1,) * (like.dim() - 3)  # channels are dim 2 of (B, N, C, ...)
        return s.reshape(shape), t.reshape(shape)

    def forward(self, x: Tensor) -> Tensor:
        s, t = self._scale_shift(x)
        return x * s + t

    def abs_linear(self, r: Tensor) -> Tensor:
        return r * self._scale_shift(r)[0].abs()

    def backward(self, A: Tensor) -> list[Tensor]:
        return [A * self._scale_shift(A[:, 0])[0]]

    def window_of_input(self, k: int, out: Window) -> Window | None:
        return out  # per channel


@register
class Add(AffineOp):
    """Elementwise sum with broadcasting (any mix of variables and constants)."""

    onnx_types = ("Add",)

    def rounding_terms(self) -> int:
        return 1

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        """One rounded sum; none where the constant term is +-inf (a -inf attention mask):
        a float plus an infinity is that infinity exactly (or NaN, which the interval
        itself reads as unknown)."""
        err = super().rounding_error(ins, out, u)
        if err is None or not self._consts:
            return err
        return torch.where(torch.isinf(constant_part(self, out[0])), 0.0, err)

    def passes_coefficients(self) -> bool:
        return len(self.var_shapes) == 1 and tuple(self.var_shapes[0]) == tuple(self.out_shape)
    monotone = True

    def __init__(self, attrs: dict[str, Any], inputs: list[Input], out_shape: tuple[int, ...]):
        super().__init__(attrs, inputs, out_shape)
        self.n_inputs = len(inputs)

    def _args(self, xs: tuple[Tensor, ...]) -> list[Tensor]:
        it = iter(xs)
        rank = len(self.out_shape)
        return [
            self.const(i, xs[0]) if self.has_const(i) else align(next(it), rank)
            for i in range(self.n_inputs)
        ]

    def forward(self, *xs: Tensor) -> Tensor:
        a, b = self._args(xs)
        return a + b

    def _signs(self) -> list[float]:
        return [1.0] * len(self.var_shapes)

    def weight_sign(self, k: int) -> float | None:
        """The sign input k enters with (Sub: -1 for what it subtracts, else +1)."""
        return self._signs()[k]

    def backward(self, A: Tensor) -> list[Tensor]:
        return [sum_to_shape(A * s if s != 1.0 else A, shape)
                for s, shape in zip(self._signs(), self.var_shapes, strict=True)]

    def window_of_input(self, k: int, out: Window) -> Window | None:
        return out if tuple(self.var_shapes[k]) == tuple(self.out_shape) else None

    def window_transpose(self, A: Tensor, out: Window) -> list[Tensor]:
        return [A * s if s != 1.0 else A for s in self._signs()]


@register
class Sub(Add):
    """Elementwise difference; decreasing in its second input."""

    onnx_types = ("Sub",)
    monotone = False

    def forward(self, *xs: Tensor) -> Tensor:
        a, b = self._args(xs)
        return a - b

    def _signs(self) -> list[float]:
        if len(self.var_shapes) == 2:
            return [1.0, -1.0]
        return [-1.0] if self.has_const(0) else [1.0]

    def ibp(self, *bounds: Interval) -> Interval:
        lows, highs = [b[0] for b in bounds], [b[1] for b in bounds]
        if len(bounds) == 2:
            return self.forward(lows[0], highs[1]), self.forward(highs[0], lows[1])
        if self.has_const(0):  # c - x
            return self.forward(*highs), self.forward(*lows)
        return self.forward(*lows), self.forward(*highs)


@register
class MulConst(AffineOp):
    """Elementwise product or quotient of one variable with a constant."""

    onnx_types = ("Mul", "Div")

    def rounding_terms(self) -> int:
        return 2  # x * c, or x / c (ours: x * (1 / c))

    @classmethod
    def select(cls, attrs: dict[str, Any], inputs: list[Input]) -> type[Op]:
        """Mul/Div by a constant is this affine op; of two variables a product or quotient;
        a scalar constant divided by a variable a scaled reciprocal."""
        from verifier.ops.bilinear import VarDiv, VarMul
        from verifier.ops.nonlinear import Reciprocal

        both = all(isinstance(i, Var) for i in inputs)
        if attrs["_op_type"] == "Mul":
            return VarMul if both else cls
        if both:
            return VarDiv
        if isinstance(inputs[0], Const):
            if inputs[0].value.size != 1:
                raise OpFormError("a non-scalar constant divided by a variable is not supported")
            return Reciprocal
        return cls

    def __init__(self, attrs: dict[str, Any], inputs: list[Input], out_shape: tuple[int, ...]):
        super().__init__(attrs, inputs, out_shape)
        self.divide = attrs["_op_type"] == "Div"
        self.c_index = 0 if isinstance(inputs[0], Const) else 1
        if self.divide and self.c_index == 0:
            raise OpFormError("internal: constant / variable is the reciprocal op")

    def _factor(self, like: Tensor) -> Tensor:
        c = self.const(self.c_index, like)
        return 1.0 / c if self.divide else c

    def forward(self, x: Tensor) -> Tensor:
        return align(x, len(self.out_shape)) * self._factor(x)

    def abs_linear(self, r: Tensor) -> Tensor:
        return align(r, len(self.out_shape)) * self._factor(r).abs()

    def backward(self, A: Tensor) -> list[Tensor]:
        return [sum_to_shape(A * self._factor(A), self.var_shapes[0])]


@register
class Neg(AffineOp):
    onnx_types = ("Neg",)

    def rounding_terms(self) -> int:
        return 0

    def forward(self, x: Tensor) -> Tensor:
        return -x

    def weight_sign(self, k: int) -> float | None:
        return -1.0

    def ibp(self, b: Interval) -> Interval:
        return -b[1], -b[0]

    def backward(self, A: Tensor) -> list[Tensor]:
        return [-A]


@register
class CumSum(AffineOp):
    """Cumulative sum along a constant axis (``exclusive``: of the entries before, not
    including, each; ``reverse``: from the end).  Its weights are 0 or 1, so it is monotone
    (interval ends map through it) and ``|L| = L``; each output sums at most n entries."""

    onnx_types = ("CumSum",)
    onnx_attributes = frozenset({"exclusive", "reverse"})
    monotone = True

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        if not isinstance(inputs[0], Var) or not isinstance(inputs[1], Const):
            raise OpFormError("only the data input may vary; the axis must be constant")
        if inputs[1].value.size != 1:
            raise OpFormError(f"the axis input has {inputs[1].value.size} values; one expected")
        if not np.issubdtype(np.asarray(inputs[1].value).dtype, np.integer):
            raise OpFormError(f"the axis input is {np.asarray(inputs[1].value).dtype}; an "
                              "integer tensor expected")
        rank = len(inputs[0].shape)
        a = int(np.asarray(inputs[1].value).ravel()[0])
        if not -rank <= a < rank:
            raise OpFormError(f"axis {a} is out of range for an input of rank {rank}")

    def _dim(self, x: Tensor) -> int:
        a = int(np.asarray(self.const_np(1)).ravel()[0])
        rank = x.dim() - 1
        return (a + rank if a < 0 else a) + 1

    def rounding_terms(self) -> int:
        return self.var_shapes[0][self._dim(torch.zeros(1, *self.var_shapes[0])) - 1] + 1

    def forward(self, x: Tensor) -> Tensor:
        d = self._dim(x)
        reverse = bool(int(self.attrs.get("reverse", 0)))
        y = x.flip(d) if reverse else x
        y = y.cumsum(d)
        if int(self.attrs.get("exclusive", 0)):  # shifted by one, 0 first (no x - x: inf)
            first = torch.zeros_like(y.narrow(d, 0, 1))
            y = torch.cat([first, y.narrow(d, 0, y.shape[d] - 1)], dim=d)
        return y.flip(d) if reverse else y

    def abs_linear(self, r: Tensor) -> Tensor:
        return self.forward(r)

    def weight_sign(self, k: int) -> float | None:
        return 1.0
