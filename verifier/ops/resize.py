"""Resize (opsets 10, 11, 13, 18, 19): nearest and linear interpolation with constant scales
or sizes, a linear map of the one variable input; Upsample (opsets 7 to 9) as the opset 10
Resize onnxruntime runs it as (``UpsampleForm``).

**The map.**  Resize acts on each axis separately.  Along an axis of input length n and
output length m with scale s, output position j has a coordinate c_j in the input (the
``coordinate_transformation_mode``) and reads

- ``nearest``: x[i_j], i_j = the ``nearest_mode`` rounding of c_j, clamped to [0, n - 1];
- ``linear``: w0_j x[i0_j] + w1_j x[i1_j] with t = clamp(c_j, 0, n - 1), i0 = floor(t),
  i1 = min(i0 + 1, n - 1), w0 = i0 + 1 - t, w1 = t - i0 (both 1/2 where i0 = i1): weights
  in [0, 1] summing to 1, never negative (the clamp keeps t inside the input);
- ``tf_crop_and_resize``: the constant ``extrapolation_value`` where c_j < 0 or c_j > n - 1.

An output entry is the product of its axes' maps: the nearest entry, or the weighted sum
over the 2^k corners of a box in the k resized axes with weights the products of the
per-axis weights (or the extrapolation value when any axis is outside).  So the op is
``y = L x + b`` with L's entries non-negative (b: the extrapolation value, where it is used):
intervals map through it endpoint by endpoint, and its transpose applies each axis's
transposed 1-d map in turn (``index_add`` of the coefficients at the taps, times the weights).

**onnxruntime's numbers.**  The coordinates, the nearest roundings, the taps and the weights
are computed as onnxruntime's CPU kernel computes them: in float32, with its operation order
per mode (half_pixel_symmetric and the one-position tf_crop_and_resize partly in double), its
round_prefer_floor / round_prefer_ceil taking a coordinate within 1e-6 of halfway between two
indices as halfway (measured against onnxruntime; ``TIE``), its
output lengths (truncated ``scale * n`` in float32; from sizes, the scale ``m / n`` in
float32; ``keep_aspect_ratio_policy`` rounding ``scale * n``), the identity on an axis whose
scale is exactly 1 and on the whole tensor when no length changes, and opset 10's rounding
(ceil when the axis shrinks, else truncation).  The tests check the taps and weights bit for
bit against onnxruntime.  The weights are then exact data of the map: nearest is an exact
move (``rounding_ulps`` 0), and linear rounds only in its evaluation, bounded below.

**Rounding (linear).**  onnxruntime evaluates each output as a sum of 2^k terms, each a
product of k float32 weights (k - 1 float32 products) times an input entry, so its result
lies within ``gamma_(k + 2^k)`` (unit roundoff the coarser of the model's and float32's) of
``|L| |x|`` from the exact map; k is taken as at least onnxruntime's kernel's (2 for rank 2
and 4, 3 for rank 3 and 5).

**Refused** by name: ``mode='cubic'``; ``antialias=1`` (onnxruntime filters with its own
kernel, which differs from linear interpolation even on some upsamplings, and rejects it
with nearest); ``keep_aspect_ratio_policy`` with negative axes (onnxruntime leaves them out
of the policy, the spec does not); a roi, scales or sizes input that depends on the input;
both or neither of scales and sizes; non-positive scales or empty outputs; malformed axes or
roi.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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
    affine_rounding,
    nan_to,
    register,
    safe_mul,
)
from verifier.ops.shape import MoveOp

F32 = np.float32
COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                    "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
POLICIES = ("stretch", "not_larger", "not_smaller")
#: onnxruntime's round_prefer_floor and round_prefer_ceil take a coordinate closer than this
#: to halfway between two indices as halfway (measured: 9.8e-7 is, 1.01e-6 is not)
TIE = 1e-6


@dataclass(frozen=True)
class AxisMap:
    """How the output positions along one axis read the input along it: position j reads
    ``w0[j] x[i0[j]] + w1[j] x[i1[j]]`` (nearest: w0 = 1, w1 = 0, i1 = i0), or the
    extrapolation value where ``outside[j]``."""

    i0: np.ndarray  # (m,) int64
    i1: np.ndarray  # (m,) int64
    w0: np.ndarray  # (m,) float64 holding float32 values
    w1: np.ndarray
    outside: np.ndarray  # (m,) bool


@dataclass(frozen=True)
class Plan:
    """A Resize node's map: the output shape and, per resized ONNX axis, its 1-d map (axes
    not listed are the identity)."""

    out_shape: tuple[int, ...]
    axes: dict[int, AxisMap]
    extrapolation: float
    linear: bool


# -- reading the node ----------------------------------------------------------------------
def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _given(inputs: list[Input], index: int) -> np.ndarray | None:
    """Constant input ``index`` when present and non-empty."""
    if index >= len(inputs):
        return None
    inp = inputs[index]
    assert isinstance(inp, Const)
    return None if inp.value.size == 0 else np.asarray(inp.value)


def _check_inputs(inputs: list[Input]) -> None:
    if not inputs or not isinstance(inputs[0], Var):
        raise OpFormError("only the data input X may vary")
    names = ["scales"] if len(inputs) == 2 else ["roi", "scales", "sizes"]
    for name, inp in zip(names, inputs[1:], strict=False):
        if isinstance(inp, Var):
            raise OpFormError(f"the '{name}' input depends on the input; only a constant "
                              f"{name} is supported")


def _axes(attrs: dict[str, Any], rank: int) -> list[int]:
    if "axes" not in attrs:
        return list(range(rank))
    axes = [int(a) for a in attrs["axes"]]
    if any(not -rank <= a < rank for a in axes):
        raise OpFormError(f"attribute 'axes'={axes} is out of range for an input of rank {rank}")
    axes = [a % rank for a in axes]
    if len(set(axes)) != len(axes):
        raise OpFormError(f"attribute 'axes'={list(attrs['axes'])} repeats an axis")
    return axes


def _scales_and_lengths(attrs: dict[str, Any], inputs: list[Input], in_shape: tuple[int, ...],
                        axes: list[int]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Per axis, the float32 scale onnxruntime interpolates with and the output length."""
    opset10 = len(inputs) == 2
    scales = _given(inputs, 1 if opset10 else 2)
    sizes = None if opset10 else _given(inputs, 3)
    if (scales is None) == (sizes is None):
        raise OpFormError("exactly one of the 'scales' and 'sizes' inputs must be given")
    given = scales if scales is not None else sizes
    assert given is not None
    if given.size != len(axes):
        raise OpFormError(f"{'scales' if scales is not None else 'sizes'} has {given.size} "
                          f"values for {len(axes)} axes")
    n = np.array(in_shape, dtype=np.int64)
    scale = np.ones(len(in_shape), dtype=F32)
    policy = _text(attrs.get("keep_aspect_ratio_policy", "stretch"))
    if policy not in POLICIES:
        raise OpFormError(f"attribute 'keep_aspect_ratio_policy'={policy!r} is not an ONNX value")
    if scales is not None:
        if policy != "stretch":
            raise OpFormError(f"attribute 'keep_aspect_ratio_policy'={policy!r} with the "
                              "'scales' input is not allowed")
        scale[axes] = scales.astype(F32).ravel()
        if not (scale > 0).all() or not np.isfinite(scale).all():
            raise OpFormError(f"scales {scales.ravel().tolist()} must be positive and finite")
        out = (scale * n.astype(F32)).astype(np.int64)  # float32 product, truncated
    else:
        out = n.copy()
        out[axes] = sizes.astype(np.int64).ravel()  # type: ignore[union-attr]
        scale = np.divide(out.astype(F32), np.maximum(n, 1).astype(F32), dtype=F32)
        if policy != "stretch":
            if any(int(a) < 0 for a in attrs.get("axes", [])):
                raise OpFormError(f"attribute 'keep_aspect_ratio_policy'={policy!r} with "
                                  f"negative axes {list(attrs['axes'])} is not supported "
                                  "(onnxruntime leaves those axes out of the policy)")
            pick = np.min if policy == "not_larger" else np.max
            chosen = F32(pick(scale[axes]))
            scale[:] = 1
            scale[axes] = chosen
            out = n.copy()
            out[axes] = _round_away(chosen * n[axes].astype(F32))
    if (out < 1).any() or (n < 1).any():
        raise OpFormError(f"an input of shape {list(in_shape)} resized to {out.tolist()}: "
                          "empty tensors are not supported")
    return scale, tuple(int(v) for v in out)


def _roi(inputs: list[Input], rank: int, axes: list[int]) -> np.ndarray:
    """(2, rank) float32 starts and ends (the default [0, 1] on every axis)."""
    roi = np.stack([np.zeros(rank, F32), np.ones(rank, F32)])
    given = None if len(inputs) == 2 else _given(inputs, 1)
    if given is None:
        return roi
    if given.size != 2 * len(axes):
        raise OpFormError(f"roi has {given.size} values; {2 * len(axes)} (starts and ends of "
                          f"{len(axes)} axes) are needed")
    roi[:, axes] = given.astype(F32).reshape(2, len(axes))
    return roi


def plan_resize(attrs: dict[str, Any], inputs: list[Input]) -> Plan:
    """The node's map, or OpFormError naming what is not supported.  Two inputs (X, scales)
    is opset 10's form (from opset 11 a second input is roi, and scales or sizes must
    follow): its coordinates are asymmetric and its rounding opset 10's."""
    _check_inputs(inputs)
    x = inputs[0]
    assert isinstance(x, Var)
    mode = _text(attrs.get("mode", "nearest"))
    if mode not in ("nearest", "linear"):
        raise OpFormError(f"attribute 'mode'={mode!r} is not supported (only nearest and "
                          "linear)")
    opset10 = len(inputs) == 2
    coords = "asymmetric" if opset10 else _text(attrs.get("coordinate_transformation_mode",
                                                          "half_pixel"))
    if coords not in COORDINATE_MODES:
        raise OpFormError(f"attribute 'coordinate_transformation_mode'={coords!r} is not an "
                          "ONNX value")
    rounding = "opset10" if opset10 else _text(attrs.get("nearest_mode", "round_prefer_floor"))
    if mode == "nearest" and rounding not in (*NEAREST_MODES, "opset10"):
        raise OpFormError(f"attribute 'nearest_mode'={rounding!r} is not an ONNX value")
    in_shape = tuple(x.shape)
    axes = _axes(attrs, len(in_shape))
    scale, out_shape = _scales_and_lengths(attrs, inputs, in_shape, axes)
    if int(attrs.get("antialias", 0)):
        raise OpFormError(f"attribute 'antialias'={int(attrs['antialias'])} is not supported "
                          "(onnxruntime's antialiasing filter, which differs from linear "
                          "interpolation even when upsampling)")
    roi = _roi(inputs, len(in_shape), axes) if coords == "tf_crop_and_resize" else None
    maps: dict[int, AxisMap] = {}
    if out_shape != in_shape:  # else onnxruntime copies the input
        for a, (n, m) in enumerate(zip(in_shape, out_shape, strict=True)):
            if scale[a] == 1:
                continue
            start, end = (F32(0), F32(1)) if roi is None else (roi[0, a], roi[1, a])
            c = coordinates(coords, m, n, scale[a], start, end)
            maps[a] = linear_taps(c, n) if mode == "linear" else \
                nearest_taps(c, n, rounding, bool(scale[a] < 1))
            if coords == "tf_crop_and_resize":
                maps[a] = _with_outside(maps[a], (c < 0) | (c > F32(n - 1)))
    extrapolation = float(F32(attrs.get("extrapolation_value", 0.0)))
    return Plan(out_shape, maps, extrapolation, mode == "linear")


# -- one axis ------------------------------------------------------------------------------
def coordinates(mode: str, m: int, n: int, scale: np.float32, start: np.float32,
                end: np.float32) -> np.ndarray:
    """The float32 input coordinate of each of the m output positions (onnxruntime's
    arithmetic: float32 steps in its order; some modes partly in double)."""
    x = np.arange(m, dtype=F32)
    L0, L1, half = F32(n), F32(m), F32(0.5)
    if mode == "asymmetric":
        return x / scale
    if mode == "half_pixel":
        return (x + half) / scale - half
    if mode == "pytorch_half_pixel":
        return (x + half) / scale - half if m > 1 else np.zeros(m, F32)
    if mode == "tf_half_pixel_for_nn":
        return (x + half) / scale
    if mode == "align_corners":
        return x * (L0 - F32(1)) / (L1 - F32(1)) if m > 1 else np.zeros(m, F32)
    if mode == "half_pixel_symmetric":
        adjustment = L1 / (scale * L0)
        offset = np.float64(L0 / F32(2) * (F32(1) - adjustment))
        return (offset + (x.astype(np.float64) + 0.5) / np.float64(scale) - 0.5).astype(F32)
    assert mode == "tf_crop_and_resize", mode
    if m == 1:
        mid = 0.5 * np.float64(start + end) * np.float64(L0 - F32(1))
        return np.full(1, mid, dtype=np.float64).astype(F32)
    return start * (L0 - F32(1)) + x * (end - start) * (L0 - F32(1)) / (L1 - F32(1))


def _round_away(c: np.ndarray) -> np.ndarray:
    """Round half away from zero (C's round), exactly: float32 values in float64."""
    c = np.asarray(c, dtype=np.float64)
    return (np.sign(c) * np.floor(np.abs(c) + 0.5)).astype(np.int64)


def nearest_taps(c: np.ndarray, n: int, rounding: str, shrinks: bool) -> AxisMap:
    """The input index each coordinate rounds to, clamped into [0, n - 1]."""
    c64 = c.astype(np.float64)
    if rounding == "opset10":  # ceil when the axis shrinks, else truncation
        idx = np.ceil(c64) if shrinks else np.trunc(c64)
    elif rounding == "floor":
        idx = np.floor(c64)
    elif rounding == "ceil":
        idx = np.ceil(c64)
    else:  # round_prefer_*: to the nearest, and within TIE of halfway down or up
        tie = np.abs(c64 - (np.floor(c64) + 0.5)) < TIE
        idx = np.where(tie, np.floor(c64) if rounding == "round_prefer_floor" else np.ceil(c64),
                       _round_away(c64))
    i = np.clip(idx, 0, n - 1).astype(np.int64)
    ones = np.ones(len(c), dtype=np.float64)
    return AxisMap(i, i, ones, np.zeros_like(ones), np.zeros(len(c), dtype=bool))


def linear_taps(c: np.ndarray, n: int) -> AxisMap:
    """The two taps and their float32 weights: t = clamp(c, 0, n - 1), i0 = floor(t),
    i1 = min(i0 + 1, n - 1), weights |t - i1| on i0 and |t - i0| on i1 (1/2 each where
    i0 = i1)."""
    t = np.maximum(F32(0), np.minimum(c, F32(n - 1)))
    i0 = np.minimum(np.trunc(t).astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    d0, d1 = np.abs(t - i0.astype(F32)), np.abs(t - i1.astype(F32))  # float32
    same = i0 == i1
    d0, d1 = np.where(same, F32(0.5), d0), np.where(same, F32(0.5), d1)
    return AxisMap(i0, i1, d1.astype(np.float64), d0.astype(np.float64),
                   np.zeros(len(c), dtype=bool))


def _with_outside(amap: AxisMap, outside: np.ndarray) -> AxisMap:
    return AxisMap(amap.i0, amap.i1, amap.w0, amap.w1, outside)


# -- the op --------------------------------------------------------------------------------
@register
class Resize(MoveOp):
    """Resize in nearest mode (an exact move, the extrapolation value a constant); the
    linear mode is ``ResizeLinear`` (``select``).  See the module docstring."""

    onnx_types = ("Resize",)
    onnx_attributes = frozenset({"mode", "coordinate_transformation_mode", "nearest_mode",
                                 "extrapolation_value", "axes", "keep_aspect_ratio_policy",
                                 "antialias"})
    # cubic only (refused): no effect on nearest and linear
    inert_attributes = frozenset({"exclude_outside", "cubic_coeff_a"})
    exact_move = True

    def __init__(self, attrs: dict[str, Any], inputs: list[Input], out_shape: tuple[int, ...]):
        super().__init__(attrs, inputs, out_shape)
        self.plan = plan_resize(*self.resize_form(attrs, inputs))
        self.out_shape = self.plan.out_shape
        self._taps: dict[tuple[torch.device, torch.dtype], list[tuple[int, list[Tensor]]]] = {}
        self._masks: dict[torch.device, Tensor | None] = {}

    @classmethod
    def select(cls, attrs: dict[str, Any], inputs: list[Input]) -> type[Op]:
        return ResizeLinear if _text(attrs.get("mode", "nearest")) == "linear" else cls

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        plan_resize(*cls.resize_form(attrs, inputs))

    @classmethod
    def resize_form(cls, attrs: dict[str, Any], inputs: list[Input]
                    ) -> tuple[dict[str, Any], list[Input]]:
        """The node as the Resize whose map it is (itself)."""
        return attrs, inputs

    def taps(self, like: Tensor) -> list[tuple[int, list[Tensor]]]:
        """Per resized axis, its tensor dimension (past the batch) and (i0, i1, w0, w1) on
        ``like``'s device, the weights in its dtype (cached)."""
        key = (like.device, like.dtype)
        if key not in self._taps:
            self._taps[key] = [
                (a + 1, [torch.as_tensor(amap.i0, device=like.device),
                         torch.as_tensor(amap.i1, device=like.device),
                         torch.as_tensor(amap.w0, device=like.device, dtype=like.dtype),
                         torch.as_tensor(amap.w1, device=like.device, dtype=like.dtype)])
                for a, amap in sorted(self.plan.axes.items())]
        return self._taps[key]

    def outside(self, like: Tensor) -> Tensor | None:
        """(1, *out) broadcastable bool: the entries that are the extrapolation value (None:
        none is; cached per device)."""
        if like.device in self._masks:
            return self._masks[like.device]
        rank = len(self.out_shape)
        mask = None
        for a, amap in self.plan.axes.items():
            if amap.outside.any():
                shape = [1] * (rank + 1)
                shape[a + 1] = len(amap.outside)
                m = torch.as_tensor(amap.outside, device=like.device).reshape(shape)
                mask = m if mask is None else mask | m
        self._masks[like.device] = mask
        return mask

    @staticmethod
    def _along(w: Tensor, dim: int, ndim: int) -> Tensor:
        """Weights (m,) shaped to broadcast along tensor dimension ``dim`` of ``ndim``."""
        shape = [1] * ndim
        shape[dim] = -1
        return w.reshape(shape)

    def _apply(self, x: Tensor, safe: bool = False) -> Tensor:
        """The map without the extrapolation: each axis in turn; ``safe``: 0 * inf = 0."""
        mul = safe_mul if safe else torch.mul
        for dim, (i0, i1, w0, w1) in self.taps(x):
            a = x.index_select(dim, i0)
            if self.plan.linear:
                b = x.index_select(dim, i1)
                x = mul(self._along(w0, dim, x.dim()), a) + \
                    mul(self._along(w1, dim, x.dim()), b)
            else:
                x = a
        return x

    def _extrapolate(self, y: Tensor) -> Tensor:
        mask = self.outside(y)
        if mask is None:
            return y
        return torch.where(mask, torch.full_like(y, self.plan.extrapolation), y)

    def forward(self, x: Tensor) -> Tensor:
        return self._extrapolate(self._apply(x))

    def backward(self, A: Tensor) -> list[Tensor]:
        """The transpose: each axis's taps add their coefficient times the weight onto the
        input entry they read; extrapolated entries read none."""
        mask = self.outside(A)
        if mask is not None:
            A = torch.where(mask.unsqueeze(1), torch.zeros_like(A), A)
        for dim, (i0, i1, w0, w1) in self.taps(A):
            d = dim + 1  # A is (B, R, *out)
            shape = list(A.shape)
            shape[d] = self.var_shapes[0][dim - 1]
            zeros = A.new_zeros(shape)
            if self.plan.linear:
                At = zeros.index_add(d, i0, A * self._along(w0, d, A.dim()))
                A = At.index_add(d, i1, A * self._along(w1, d, A.dim()))
            else:
                A = zeros.index_add(d, i0, A)
        return [A]


class ResizeLinear(Resize):
    """Resize in linear mode: a weighted sum of 2^k input entries with non-negative weights
    (see the module docstring), not an exact move."""

    exact_move = False

    def ibp(self, b: Interval) -> Interval:
        """Weights are non-negative: each end maps through the map (0 * inf read as 0; a
        NaN from inf - inf as the infinite end)."""
        lo = nan_to(self._apply(b[0], safe=True), -math.inf)
        hi = nan_to(self._apply(b[1], safe=True), math.inf)
        return self._extrapolate(lo), self._extrapolate(hi)

    def _corner_axes(self) -> int:
        """k: the resized axes, at least those onnxruntime's kernel multiplies weights of."""
        rank = len(self.out_shape)
        kernel = {2: 2, 4: 2, 3: 3, 5: 3}.get(rank, 0)
        return max(kernel, len(self.plan.axes))

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        """``gamma_(k + 2^k) |L| |x|`` (see the module docstring); the weights' products
        round in float32 whatever the model's type."""
        k = self._corner_axes()
        if not self.plan.axes:
            return None
        return affine_rounding(self, ins, max(u, 2.0 ** -24), k + 2 ** k)


class UpsampleForm:
    """Upsample (opsets 7 to 9; ONNX deprecated it for Resize at 10): onnxruntime runs it as
    opset 10's Resize with the same scales (tested bit for bit), which come from the
    ``scales`` attribute up to opset 8 and the second input from 9.  Scales below 1, which
    onnxruntime rejects, are refused by name."""

    @classmethod
    def resize_form(cls, attrs: dict[str, Any], inputs: list[Input]
                    ) -> tuple[dict[str, Any], list[Input]]:
        if "scales" in attrs:
            inputs = [inputs[0], Const(np.asarray(attrs["scales"], dtype=F32))]
            attrs = {k: v for k, v in attrs.items() if k != "scales"}
        if len(inputs) != 2:
            raise OpFormError("Upsample takes the scales as its attribute (opsets 7 and 8) "
                              "or its second input (opset 9)")
        given = inputs[1].value if isinstance(inputs[1], Const) else None
        if given is not None and (np.asarray(given, dtype=np.float64) < 1).any():
            raise OpFormError(f"scales {np.asarray(given).ravel().tolist()} below 1 are not "
                              "supported (onnxruntime rejects them for Upsample)")
        return attrs, inputs


@register
class Upsample(UpsampleForm, Resize):
    """Upsample in nearest mode (``UpsampleForm``)."""

    onnx_types = ("Upsample",)
    onnx_attributes = frozenset({"mode", "scales"})
    inert_attributes = frozenset()

    @classmethod
    def select(cls, attrs: dict[str, Any], inputs: list[Input]) -> type[Op]:
        return UpsampleLinear if _text(attrs.get("mode", "nearest")) == "linear" else cls


class UpsampleLinear(UpsampleForm, ResizeLinear):
    """Upsample in linear mode (``UpsampleForm``)."""
