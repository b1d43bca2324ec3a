"""The op registry and the interface every op implements (DESIGN.md: Ops).

Tensor convention: a *variable* tensor carries one extra leading dimension, the batch of
problems, in front of the full ONNX shape (whose own leading dimension is the model's
batch of 1).  So a node whose ONNX shape is ``(1, 10)`` holds tensors of shape
``(B, 1, 10)``.  Constants carry no extra dimension.  This makes every ONNX shape and axis
attribute usable as is, shifted by one.

An op instance is built once per node, with its constant inputs and attributes baked in;
its methods receive only the variable inputs, in ONNX input order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

Tensor = torch.Tensor
Interval = tuple[Tensor, Tensor]
#: half-open (start, stop) rows and columns of the last two axes of an (N, C, H, W) tensor
Window = tuple[tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class Var:
    """A variable input of a node: the name of the producing node and its ONNX shape."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Const:
    """A constant input of a node (an initializer, a Constant node or a folded value)."""

    value: np.ndarray


Input = Var | Const

# ONNX float attributes are float32: their defaults as the runtime reads them
F32_1E_5 = float(np.float32(1e-5))  # epsilon of BatchNormalization, LayerNormalization
F32_0_01 = float(np.float32(0.01))  # alpha of LeakyRelu


class OpFormError(Exception):
    """An op is supported, but not in the form this node uses (said in the message)."""


class Op:
    """Base of every op.  Subclasses set ``onnx_types`` and override what they support.

    ``linear`` ops are affine jointly in their variable inputs; ``monotone`` ops are
    non-decreasing in every variable input, which gives their interval bounds directly.
    """

    onnx_types: ClassVar[tuple[str, ...]] = ()
    linear: ClassVar[bool] = False
    monotone: ClassVar[bool] = False
    #: an elementwise function of its one variable input (``out[i] = f(in[i])``): such ops
    #: are relaxed by lines, have a derivative op and are split by branch-and-bound
    elementwise: ClassVar[bool] = False
    #: the op only copies, drops or reorders entries of its inputs (or pads constants), so
    #: where its inputs' bounds are linear bounds its own need no backward pass
    exact_move: ClassVar[bool] = False
    #: ``ibp`` gives the exact range of the op over its input's interval, which no linear
    #: bound in terms of that input can tighten (the backward pass is skipped for it)
    ibp_exact: ClassVar[bool] = False
    #: ONNX attributes the op implements exactly (any value), and those without effect on
    #: the one output the engine computes; any other attribute is accepted only at its
    #: schema default (``verifier/importer/onnx_attrs.py`` holds the older ops' tables)
    onnx_attributes: ClassVar[frozenset[str]] = frozenset()
    inert_attributes: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, attrs: dict[str, Any], inputs: list[Input], out_shape: tuple[int, ...]):
        self.attrs = attrs
        self.out_shape = out_shape
        self._consts: dict[int, np.ndarray] = {
            i: inp.value for i, inp in enumerate(inputs) if isinstance(inp, Const)
        }
        self.var_shapes = [inp.shape for inp in inputs if isinstance(inp, Var)]
        self._cache: dict[tuple[int, torch.device, torch.dtype], Tensor] = {}

    # -- helpers -------------------------------------------------------------------------
    @classmethod
    def select(cls, attrs: dict[str, Any], inputs: list[Input]) -> type[Op]:
        """The class that implements this node's form; one ONNX type may map to several
        (a product with a constant is linear, a product of two variables is not)."""
        return cls

    @classmethod
    def check(cls, attrs: dict[str, Any], inputs: list[Input]) -> None:
        """Raise OpFormError when this node's form (which inputs vary) is not supported."""

    def const(self, index: int, like: Tensor) -> Tensor:
        """Constant input ``index`` as a tensor on ``like``'s device and dtype (cached)."""
        key = (index, like.device, like.dtype)
        t = self._cache.get(key)
        if t is None:
            arr = self._consts[index]
            dtype = like.dtype if np.issubdtype(arr.dtype, np.floating) else None
            t = torch.as_tensor(np.array(arr), device=like.device)
            t = t.to(dtype) if dtype is not None else t
            self._cache[key] = t
        return t

    def has_const(self, index: int) -> bool:
        return index in self._consts

    def const_np(self, index: int) -> np.ndarray:
        return self._consts[index]

    # -- semantics -----------------------------------------------------------------------
    # The variable inputs are typed ``Any`` so that each op can declare its own arity
    # (``forward(self, x: Tensor)``, ``ibp(self, a: Interval, b: Interval)``): they are
    # Tensors for ``forward`` and Intervals for ``ibp``, one per variable input.
    def forward(self, *xs: Any) -> Tensor:
        """Concrete evaluation on batched variable inputs (Tensors)."""
        raise NotImplementedError

    def search_forward(self, *xs: Any) -> Tensor:
        """``forward``'s values with the gradient a counterexample search follows: the true
        one, unless the op overrides it (a step function's is 0 almost everywhere)."""
        return self.forward(*xs)

    def ibp(self, *bounds: Any) -> Interval:
        """Interval bounds of the output given interval bounds of each variable input."""
        if self.monotone:
            return self.forward(*(b[0] for b in bounds)), self.forward(*(b[1] for b in bounds))
        raise NotImplementedError(f"{type(self).__name__} has no interval rule")

    # -- windows (verifier/bounds/window.py) ---------------------------------------------
    def window_of_input(self, k: int, out: Window) -> Window | None:
        """The window of variable input k that the output entries in window ``out`` depend
        on, within the input; None when the op cannot say (its passes then run on whole
        tensors).  Elementwise ops with scalar constants: ``out`` itself."""
        if self.elementwise and all(np.size(v) == 1 for v in self._consts.values()):
            return out
        return None

    def window_transpose(self, A: Tensor, out: Window) -> list[Tensor]:
        """A linear op's transpose for coefficients A (B, R, N, C, h, w) over the output
        window ``out``: the coefficients over each input's ``window_of_input``.  The
        default, ``backward`` as it is, holds for ops that act entry by entry."""
        op: Any = self
        return op.backward(A)

    # -- linear bounds (the backward pass) ------------------------------------------------
    def relax(self, ins: list[Interval], out: Interval) -> Relaxation:
        """Linear bounds of the op's output in terms of its variable inputs, valid while the
        inputs lie in ``ins`` (and the output in ``out``): exact for linear ops; for an op
        without a rule of its own, its interval ``out`` (a constant, concretised where the
        backward pass meets it).  Ops with a relaxation override this."""
        if self.linear:
            return ExactLinear(self)
        return ByInterval(out)

    def insensitive(self, k: int, ins: list[Interval]) -> Tensor | None:
        """Entries (B, *shape of input k) where the op's relaxation does not depend on input
        k's bounds (the op is affine in input k there, given the other inputs' bounds), so
        tighter bounds of input k change nothing; None when the op cannot tell (every entry
        matters).  Bounding a node, only entries some user is sensitive to get a backward
        pass of their own."""
        return None

    def passes_coefficients(self) -> bool:
        """Whether the op is ``x -> +-x + c`` on its one variable input, same shape: linear
        bound coefficients cross it unchanged up to sign."""
        return False

    def weight_sign(self, k: int) -> float | None:
        """For a linear op whose weights from variable input k all have one sign (moves,
        sums and means, +-x): that sign, so that ``|L_k| = sign * L_k``.  None for every
        other op (the default)."""
        return None

    def has_abs_linear(self) -> bool:
        """Whether the op gives ``|L|``, its linear map with every weight replaced by its
        absolute value, by ``abs_linear`` (affine ops whose weights have mixed signs)."""
        return False

    # -- floating point ------------------------------------------------------------------
    #: rounding of the op's floating-point evaluation, in units of the unit roundoff u and
    #: relative to the magnitude of its result plus that of its inputs (0: exact)
    rounding_ulps: ClassVar[float] = 16.0

    def relative_rounding(self, ins: list[Interval], u: float) -> float | None:
        """For an op whose result is non-negative on ``ins`` and rounds relatively, ``k u``
        such that its floating-point value lies in ``[(1 - k u) f, (1 + k u) f]``: intervals
        are scaled by those factors and the coefficients crossing the node in the backward
        pass too (finite where f overflows, unlike an additive bound), and
        ``rounding_error`` adds only the underflow floor.  None for every other op."""
        return None

    def rounding_error(self, ins: list[Interval], out: Interval, u: float) -> Tensor | None:
        """A bound, per output entry, on ``|fl(op(x)) - op(x)|``: how far an evaluation in
        floating point of unit roundoff ``u`` (onnxruntime's, or ours) may lie from the exact
        op on inputs ``x`` in the intervals ``ins`` whose exact results lie in ``out``.
        None when the op is exact.  The default suits elementwise functions whose library
        implementations are accurate to a few ulps of the result or of the argument
        (measured for onnxruntime in docs/design-notes.md: at most 2.4 ulps of |f| + |x|),
        with a factor of safety; ops that sum many terms override it."""
        if self.rounding_ulps == 0:
            return None
        mag = magnitude(out)
        for b in ins:
            m = magnitude(b)
            mag = mag + (m if m.shape == mag.shape else m.flatten(1).amax(1).reshape(
                -1, *([1] * (mag.dim() - 1))))
        return self.rounding_ulps * u * mag + tiny(u)


def nan_to(x: Tensor, value: float) -> Tensor:
    """``x`` with its NaN entries replaced by ``value`` (infinities kept, unlike
    ``torch.nan_to_num``, which makes them the largest finite numbers)."""
    return torch.where(torch.isnan(x), torch.full_like(x, value), x)


def magnitude(b: Interval) -> Tensor:
    """The largest absolute value in each entry's interval (NaN read as infinite)."""
    m = torch.maximum(b[0].abs(), b[1].abs())
    return nan_to(m, math.inf)


def gamma(n: int, u: float) -> float:
    """Higham's gamma_n = n u / (1 - n u): |fl(sum of n rounded steps) - exact| <=
    gamma_n * (sum of the terms' magnitudes), for any order of evaluation."""
    n = max(int(n), 1)
    return math.inf if n * u >= 0.5 else n * u / (1 - n * u)


def tiny(u: float) -> float:
    """An absolute floor for underflow: 16 smallest normal numbers of the coarsest format
    with unit roundoff <= ``u`` (float16 or bfloat16: 2^-14, float32: 2^-126, float64)."""
    if u <= 0:
        return 0.0
    smallest = 2.0 ** -14 if u >= 2.0 ** -12 else 2.0 ** -126 if u >= 2.0 ** -40 else 2.0 ** -1022
    return 16 * smallest


def affine_rounding(op: Op, ins: list[Interval], u: float, terms: int) -> Tensor:
    """Rounding of an affine op ``y = L(x) + b`` evaluated as sums of ``terms`` rounded
    steps per output entry: ``gamma_terms * (|L| |x| + |b|)``, where ``|L| m + |b|`` is the
    largest magnitude of the op's interval image of the symmetric boxes [-m, m]."""
    mags = [magnitude(b) for b in ins]
    lo, hi = op.ibp(*[(-m, m) for m in mags])
    return nan_to(gamma(terms, u) * magnitude((lo, hi)), math.inf) + tiny(u)


# -- relaxations: what the backward pass asks of an op --------------------------------------
Params = tuple[Tensor, Tensor]  # alpha-CROWN's two free parameters per entry, in [0, 1]


@dataclass(frozen=True)
class ParamInit:
    """Starting values in [0, 1], (B, *shape), of a relaxation's free parameters (the lower
    and the upper line's), and whether the upper one is free at all."""

    lower: Tensor
    upper: Tensor
    upper_free: bool = True


class Relaxation:
    """Linear bounds of one node's output over its inputs' bounds.  For coefficients A
    (B, R, *out) on the output, ``backward`` returns coefficients A_k on each variable input
    and a bias (B, R) with

        A . out >= sum_k A_k . in_k + bias      for all inputs within their bounds.

    ``params`` (B, R, *out) are alpha-CROWN's choice among valid relaxations (None: the
    default one); ``initial_params`` says where they start (None: the relaxation has none);
    ``lines`` are an elementwise relaxation's default lines (B, 1, *shape), which
    branch-and-bound reads to score splits (None for other relaxations)."""

    def backward(self, A: Tensor, params: Params | None = None) -> tuple[list[Tensor], Tensor]:
        raise NotImplementedError

    def initial_params(self) -> ParamInit | None:
        return None

    def lines(self) -> Any:
        return None


class ExactLinear(Relaxation):
    """A linear op's own transpose: ``A . L(x) = L^T(A) . x + A . L(0)``, exact."""

    def __init__(self, op: Op):
        self.op = op

    def backward(self, A: Tensor, params: Params | None = None) -> tuple[list[Tensor], Tensor]:
        op: Any = self.op  # linear ops define backward and bias_term
        return op.backward(A), op.bias_term(A)


class ByInterval(Relaxation):
    """No linear rule: ``A . out >= A+ . lo + A- . hi`` over the output's interval [lo, hi]
    (a coefficient of 0 ignores an infinite end)."""

    def __init__(self, out: Interval):
        self.out = out

    def backward(self, A: Tensor, params: Params | None = None) -> tuple[list[Tensor], Tensor]:
        lo, hi = self.out
        term = safe_mul(A.clamp(min=0), lo.unsqueeze(1)) + safe_mul(A.clamp(max=0),
                                                                    hi.unsqueeze(1))
        return [], term.flatten(2).sum(-1)


def safe_mul(a: Tensor, b: Tensor) -> Tensor:
    """a * b with 0 * inf = 0 (a coefficient of zero ignores an infinite intercept)."""
    return torch.where(a == 0, torch.zeros_like(a), a * b)


OpClass = type[Op]
REGISTRY: dict[str, OpClass] = {}


def register(cls: OpClass) -> OpClass:
    """Class decorator: make ``cls`` the op for each of its ``onnx_types``."""
    for name in cls.onnx_types:
        if name in REGISTRY:
            raise RuntimeError(f"op {name} registered twice")
        REGISTRY[name] = cls
    return cls


def axis(a: int, rank: int) -> int:
    """ONNX axis ``a`` (may be negative) of a rank-``rank`` tensor, shifted past the batch."""
    if a < 0:
        a += rank
    return a + 1


def align(x: Tensor, rank: int) -> Tensor:
    """Insert unit dims after the batch so a variable of smaller ONNX rank broadcasts."""
    missing = rank - (x.dim() - 1)
    if missing <= 0:
        return x
    return x.reshape(x.shape[0], *([1] * missing), *x.shape[1:])


Fn = Callable[..., Tensor]
