"""Rigorous 1-D checks that a line bounds an activation function over an interval.

A *lower* line ``(a, b)`` for f on ``[lo, hi]`` is valid when ``a x + b <= f(x) + tol`` for
every real x in ``[lo, hi]``, an *upper* line when ``a x + b >= f(x) - tol``.  The slack
``tol = LINE_SLACK (1 + |a| max(|lo|, |hi|) + |b|)`` (about 1e-11 relative) lets a proof use
lines that touch f exactly (chords, tangents), which no float computation can confirm to the
last bit; the caller charges ``tol`` in every bound that uses the line, so the slack costs
soundness nothing.

ReLU: ``relu - line`` is piecewise linear with its only kink at 0, so its extremes on
``[lo, hi]`` are at lo, hi and (when inside) 0; relu being convex, an upper line needs only
the ends, a lower line the ends and the kink.

Sigmoid and tanh: with ``g(x) = s (f(x) - a x - b)`` (s = +1 for a lower line, -1 for an
upper one), Taylor's theorem on a piece of centre c and radius r gives, for |x - c| <= r,

    g(x) >= g(c) - |g'(c)| r - K r**2 / 2,     K >= sup |f''|.

``sigmoid'' = s(1-s)(1-2s)`` with s = sigmoid(x) in (0, 1); writing t = 1 - 2s in (-1, 1),
``s(1-s) = (1 - t**2)/4``, so ``|sigmoid''| = |t|(1 - t**2)/4``, whose maximum over t (at
t**2 = 1/3) is ``1/(6 sqrt 3) = 0.0962 <= 0.1``.  ``tanh'' = -2 t (1 - t**2)`` with
t = tanh(x) in (-1, 1), maximal at t**2 = 1/3: ``4/(3 sqrt 3) = 0.7698 <= 0.8``.
In the tails these constants are far too large (a line 3e-9 under a saturated sigmoid would
need pieces of 2e-4), so on a piece at distance d = min |x| from 0 the smaller local bounds
are used too: ``|sigmoid''| <= sigmoid' <= sigmoid'(d) <= exp(-d)`` (sigmoid' decreases in
|x|, |1 - 2s| <= 1) and ``|tanh''| <= 2 (1 - t**2) = 2 sech(x)**2 <= 8 exp(-2 d)``
(sech x <= 2 exp(-|x|)); exp is taken EVAL_ULPS ulps high.
g(c) and g'(c) are computed in float64 with an allowance of ``EVAL_ULPS`` ulps of their
terms' magnitudes (numpy's exp and tanh are within 1-2 ulps; sigmoid's three roundings add
3).  Pieces where the bound is not ``>= -tol`` are bisected, all neurons at once, until the
bound holds everywhere, or a piece narrower than ``MIN_WIDTH`` relative is reached (the line
is then rejected, near that piece's centre), or the piece budget is spent (``exhausted``: the
caller may retry fewer lines at a time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from checker.arith import U64, magnitude

LINE_SLACK = 2.0**-36
EVAL_ULPS = 8.0
MIN_WIDTH = 1e-12
PIECE_BUDGET = 4_000_000
SECOND_DERIVATIVE_BOUND = {"Sigmoid": 0.1, "Tanh": 0.8}


@dataclass(frozen=True)
class BadLine:
    """A line that fails: the neuron, and a point near which it crosses f (or could not be
    shown not to)."""

    index: int
    x: float
    why: str
    exhausted: bool = False  # the piece budget ran out before the line was shown valid


def slack(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The tolerance ``tol`` granted to line (a, b) on ``[lo, hi]`` (see the module doc)."""
    return LINE_SLACK * (1.0 + np.abs(a) * magnitude(lo, hi) + np.abs(b))


def evaluate(op: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """f(x) and f'(x) in float64 (each within a few ulps of the exact values)."""
    with np.errstate(over="ignore"):
        if op == "Sigmoid":
            f = 1.0 / (1.0 + np.exp(-x))
            return f, f * (1.0 - f)
        if op == "Tanh":
            f = np.tanh(x)
            return f, 1.0 - f * f
        if op == "Relu":
            return np.maximum(x, 0.0), (x > 0).astype(np.float64)
    raise ValueError(f"no line check for {op}")


def check_lines(op: str, a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                lower: bool) -> BadLine | None:
    """None when every line ``a[j] x + b[j]`` bounds f on ``[lo[j], hi[j]]`` from below
    (``lower``) or above, up to ``slack``; else the first failing neuron."""
    finite = np.isfinite(a) & np.isfinite(b) & np.isfinite(lo) & np.isfinite(hi)
    if not finite.all():
        j = int(np.flatnonzero(~finite)[0])
        return BadLine(j, float("nan"), "the line or its interval is not finite")
    if op == "Relu":
        return _check_relu(a, b, lo, hi, lower)
    return _check_smooth(op, a, b, lo, hi, lower)


def _check_relu(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                lower: bool) -> BadLine | None:
    """ReLU: test the ends (and the kink, for a lower line)."""
    tol = slack(a, b, lo, hi)
    points = [lo, hi] + ([np.clip(np.zeros_like(lo), lo, hi)] if lower else [])
    for x in points:
        f, _ = evaluate("Relu", x)
        value = a * x + b  # errs by at most 2 U64 (|a x| + |b|)
        allowance = tol - 4 * U64 * (np.abs(a * x) + np.abs(b))
        ok = (value - f <= allowance) if lower else (f - value <= allowance)
        if not ok.all():
            j = int(np.flatnonzero(~ok)[0])
            return BadLine(j, float(x[j]), f"is {'above' if lower else 'below'} relu")
    return None


def _tail_curvature(op: str, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """An upper bound of |f''| on each piece from its distance to 0 (module doc)."""
    d = np.maximum(0.0, np.maximum(x0, -x1))
    with np.errstate(under="ignore"):
        if op == "Sigmoid":
            return np.exp(-d) * (1.0 + EVAL_ULPS * U64) + 1e-300
        return 8.0 * np.exp(-2.0 * d) * (1.0 + EVAL_ULPS * U64) + 1e-300


def _lower_bound_of_g(op: str, a: np.ndarray, b: np.ndarray, s: float, x0: np.ndarray,
                      x1: np.ndarray) -> np.ndarray:
    """A rigorous lower bound of ``g = s (f - a x - b)`` on each piece ``[x0, x1]``."""
    c = 0.5 * (x0 + x1)
    r = np.maximum(c - x0, x1 - c) * (1.0 + 4 * U64)
    f, df = evaluate(op, c)
    g = s * (f - (a * c + b))
    g_err = EVAL_ULPS * U64 * (np.abs(f) + np.abs(a * c) + np.abs(b) + 1e-300)
    dg_bound = np.abs(df - a) + EVAL_ULPS * U64 * (1.0 + np.abs(a))
    K = np.minimum(SECOND_DERIVATIVE_BOUND[op], _tail_curvature(op, x0, x1))
    bound = g - g_err - dg_bound * r - 0.5 * K * r * r
    return bound - 4 * U64 * np.abs(bound)


def _check_smooth(op: str, a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  lower: bool) -> BadLine | None:
    """Sigmoid/tanh: adaptive bisection, vectorised over all pieces of all neurons."""
    s = 1.0 if lower else -1.0
    tol = slack(a, b, lo, hi)
    idx = np.arange(len(a))
    x0, x1 = lo.astype(np.float64), hi.astype(np.float64)
    spent = 0
    while len(idx):
        spent += len(idx)
        ok = _lower_bound_of_g(op, a[idx], b[idx], s, x0, x1) >= -tol[idx]
        idx, x0, x1 = idx[~ok], x0[~ok], x1[~ok]
        if not len(idx):
            return None
        c = 0.5 * (x0 + x1)
        f, _ = evaluate(op, c)
        crossed = s * (f - (a[idx] * c + b[idx])) < -tol[idx]
        narrow = (x1 - x0) <= MIN_WIDTH * (1.0 + magnitude(x0, x1))
        stuck = crossed | narrow | ((c <= x0) | (c >= x1))
        if stuck.any():
            k = int(np.flatnonzero(stuck)[0])
            side = "above" if lower else "below"
            return BadLine(int(idx[k]), float(c[k]), f"is {side} {op.lower()}")
        if spent > PIECE_BUDGET:
            return BadLine(int(idx[0]), float(c[0]), f"could not be shown to bound "
                           f"{op.lower()} within {PIECE_BUDGET} pieces", exhausted=True)
        idx, x0, x1 = np.concatenate([idx, idx]), np.concatenate([x0, c]), \
            np.concatenate([c, x1])
    return None
