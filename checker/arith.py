"""Rigorous float64 helpers: the rounding argument every other module of the checker uses.

All of the checker's arithmetic is ordinary IEEE float64 (round to nearest, unit roundoff
``U64 = 2**-53``).  Instead of directed rounding, every computed quantity carries a bound on
its own rounding error, from the standard model ``fl(a op b) = (a op b)(1 + delta)``,
``|delta| <= U64``:

* an elementwise product or sum errs by at most ``U64 |result|``;
* a sum of n terms, in any order, errs by at most ``gamma64(n-1) sum |terms|``;
* a matrix product ``fl(A @ B)`` with inner dimension n errs entrywise by at most
  ``gamma64(n) (|A| @ |B|)`` (any summation order, FMA or not); we charge ``gamma64(n+2)``.

Error terms themselves are computed in float64 from non-negative quantities; their own
rounding is a relative error of at most ``gamma64(k)`` for k steps, far below the factor
``1 + SAFETY`` (1e-10) by which every error term is inflated before it is used (a first-order
argument that holds while fewer than about 1e5 rounded steps feed one error term).  Final
comparisons use ``down``/``up`` (one ulp outward) so that the last subtraction is covered too.
"""

from __future__ import annotations

import numpy as np

U64 = 2.0**-53
SAFETY = 1e-10  # relative inflation of every error term (covers the error terms' own rounding)

#: unit roundoff of the ONNX floating-point element types the checker accepts
UNIT_ROUNDOFF = {"FLOAT16": 2.0**-11, "FLOAT": 2.0**-24, "DOUBLE": 2.0**-53}


def gamma(n: int | np.ndarray, u: float) -> float | np.ndarray:
    """Higham's ``gamma_n = n u / (1 - n u)``: the relative error of n rounded steps."""
    if isinstance(n, int):  # the usual case, without numpy's overhead
        if n * u >= 0.5:
            raise ValueError("too many rounded steps for the error model")
        return n * u / (1.0 - n * u) * (1.0 + SAFETY)
    nu = np.asarray(n, dtype=np.float64) * u
    if np.any(nu >= 0.5):
        raise ValueError("too many rounded steps for the error model")
    return nu / (1.0 - nu) * (1.0 + SAFETY)


def down(x: np.ndarray) -> np.ndarray:
    """The next float64 below ``x`` (covers one rounding of a result towards +inf)."""
    return np.nextafter(x, -np.inf)


def up(x: np.ndarray) -> np.ndarray:
    """The next float64 above ``x``."""
    return np.nextafter(x, np.inf)


def widen(lo: np.ndarray, hi: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[lo - e, hi + e]``, rounded outward (``e >= 0``)."""
    e = e * (1.0 + SAFETY)
    return down(lo - e), up(hi + e)


def magnitude(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``max(|lo|, |hi|)``: the largest magnitude of a value in ``[lo, hi]`` (exact)."""
    return np.maximum(np.abs(lo), np.abs(hi))


def times_mag(A: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``|A| @ m`` for non-negative m, with 0 * inf taken as 0 (an unused entry of an
    unbounded tensor costs nothing); inf where a used entry is unbounded.  A is (R, n), the
    same for every leaf, or (B, R, n), one per leaf; m is (n,) or (B, n); the result is
    (R,) or (B, R)."""
    absA = np.abs(A)
    finite = np.isfinite(m)
    out = _rows_times(absA, np.where(finite, m, 0.0))
    if not finite.all():
        out = np.where(_rows_times(absA, (~finite).astype(np.float64)) > 0, np.inf, out)
    return np.asarray(out * (1.0 + SAFETY))


def _rows_times(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``A @ x`` row by row: (R, n) with (n,) or (B, n), or (B, R, n) with (B, n)."""
    return x @ A.T if A.ndim == 2 else np.matmul(A, x[..., None])[..., 0]


def interval_affine(mats: tuple[np.ndarray, ...], boxes: list[tuple[np.ndarray, np.ndarray]],
                    b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Interval image of ``sum_i W_i x_i + b`` over ``x_i in boxes[i]``, computed in float64
    (a box is (n_i,), or (B, n_i) for B leaves at once).

    Returns (lower, upper, err, wx, n): the exact image lies in ``[lower - err, upper + err]``;
    ``wx = sum_i |W_i| max|x_i|`` and n, the number of products per entry, size the float
    evaluation's own noise.  A ``W_i`` is (m, n_i) dense or (n_i,) diagonal; each entry is
    one sum of at most n products (``W+ lo + W- hi`` per input) and the bias, whose rounding
    is at most ``gamma64(n + 2) (wx + |b|)``."""
    lower, upper = b.astype(np.float64), b.astype(np.float64)
    wx, n = np.zeros_like(lower), 0
    for W, (lo, hi) in zip(mats, boxes, strict=True):
        Wp, Wn = np.maximum(W, 0.0), np.minimum(W, 0.0)
        with np.errstate(invalid="ignore"):
            if W.ndim == 1:
                lower, upper = lower + Wp * lo + Wn * hi, upper + Wp * hi + Wn * lo
                wx, n = wx + np.abs(W) * magnitude(lo, hi), n + 2
            else:
                lower, upper = lower + lo @ Wp.T + hi @ Wn.T, upper + hi @ Wp.T + lo @ Wn.T
                wx, n = wx + times_mag(W, magnitude(lo, hi)), n + 2 * W.shape[1]
    err = gamma(n + 2, U64) * (wx + np.abs(b))
    return lower, upper, err, wx, n
