"""Where to split a nonlinearity's interval in branch-and-bound: a table computed once per
function, cached on disk across runs and jobs, and read once per process.

For an interval [l, u] of a smooth function, the split point p is chosen among
``l + t (u - l)`` (t in (0, 1)) to minimise the area between the relaxation lines of the two
halves, ``gap(l, p) + gap(p, u)``, where ``gap`` integrates (upper line - lower line) over
the piece.  The best fraction t depends only on the interval's place and width, so it is
tabulated over a grid of centres and log-widths; intervals off the grid use the nearest
entry (a split point is only a choice of tightness: any point inside is sound).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from verifier.ops.relax import ScalarShape, relax

CENTRES = np.linspace(-8.0, 8.0, 65)
LOG_WIDTHS = np.linspace(np.log(0.01), np.log(40.0), 33)
FRACTIONS = np.linspace(0.1, 0.9, 17)
VERSION = 1


def cache_dir() -> Path:
    base = os.environ.get("NNVERIFY_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "nnverify" if base else Path.home() / ".cache" / "nnverify"


def gap(shape: ScalarShape, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Area between CROWN's upper and lower lines over [l, u]."""
    lines = relax(shape, l, u)
    mid = (l + u) / 2
    return ((lines.a_u - lines.a_l) * mid + (lines.b_u - lines.b_l)) * (u - l)


def compute_table(shape: ScalarShape) -> np.ndarray:
    """Best split fraction per (centre, log-width): a (len(CENTRES), len(LOG_WIDTHS)) array."""
    c, w, t = np.meshgrid(CENTRES, np.exp(LOG_WIDTHS), FRACTIONS, indexing="ij")
    l = torch.tensor(c - w / 2, dtype=torch.float64)
    u = torch.tensor(c + w / 2, dtype=torch.float64)
    p = l + torch.tensor(t) * (u - l)
    with torch.no_grad():
        total = gap(shape, l, p) + gap(shape, p, u)
    total = torch.nan_to_num(total, nan=np.inf)
    best = total.argmin(dim=-1).numpy()
    return FRACTIONS[best]


# Tables read in this process (each is computed or read from disk once, then only read).
_LOADED: dict[tuple[str, str], np.ndarray] = {}


def load_table(name: str, shape_key: str, shape: ScalarShape) -> np.ndarray:
    """The table for function ``name`` (attributes ``shape_key``): from this process's
    memory, else from the disk cache, else computed and stored in both."""
    table = _LOADED.get((name, shape_key))
    if table is None:
        table = _read_or_compute(name, shape_key, shape)
        _LOADED[(name, shape_key)] = table
    return table


def _read_or_compute(name: str, shape_key: str, shape: ScalarShape) -> np.ndarray:
    digest = hashlib.sha256(f"{name}|{shape_key}|{VERSION}".encode()).hexdigest()[:16]
    path = cache_dir() / f"branch-points-{name}-{digest}.npy"
    try:
        return np.load(path)
    except (OSError, ValueError):
        pass
    table = compute_table(shape)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, table)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home still works, it just recomputes next time
    return table


def split_points(table: np.ndarray, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Tabulated split points for intervals [lo, hi] (strictly inside when hi > lo).
    Infinite ends: a point one unit (or |end|) inside the finite end, 0 when both are."""
    finite = torch.isfinite(lo) & torch.isfinite(hi)
    inner = _table_points(table, torch.where(finite, lo, 0.0), torch.where(finite, hi, 1.0))
    point = torch.where(finite, inner, _unbounded_points(lo, hi))
    return torch.fmin(torch.fmax(point, lo), hi)  # inside; a NaN end is ignored


def _unbounded_points(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Points inside intervals with an infinite end (0 for (-inf, inf) or NaN ends)."""
    below = hi - torch.clamp(hi.abs(), min=1.0)  # (-inf, hi]: a point left of hi
    above = lo + torch.clamp(lo.abs(), min=1.0)  # [lo, inf): a point right of lo
    point = torch.where(torch.isfinite(hi), below, torch.where(torch.isfinite(lo), above, 0.0))
    return torch.where(torch.isnan(point), 0.0, point)


def _table_points(table: np.ndarray, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    centre = (lo / 2 + hi / 2).double().cpu().numpy()
    width = np.maximum((hi.double() - lo.double()).cpu().numpy(), 1e-12)
    i = np.clip(np.rint((centre - CENTRES[0]) / (CENTRES[1] - CENTRES[0])), 0, len(CENTRES) - 1)
    j = np.clip(np.rint((np.log(width) - LOG_WIDTHS[0]) / (LOG_WIDTHS[1] - LOG_WIDTHS[0])), 0,
                len(LOG_WIDTHS) - 1)
    frac = torch.as_tensor(table[i.astype(int), j.astype(int)], dtype=lo.dtype,
                           device=lo.device)
    point = (1 - frac) * lo + frac * hi  # finite even when hi - lo overflows
    return torch.minimum(torch.maximum(point, lo), hi)
