"""What the job page draws: the bound history as inline SVG and a counterexample as an
image (a PNG data URL, for image-shaped inputs) or as a table, with the model's output."""

from __future__ import annotations

import base64
import json
import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from ..jobspec import JobSpec
from ..tables import Certificate

PLOT_W, PLOT_H, PAD_L, PAD_B, PAD_T, PAD_R = 440, 200, 64, 36, 14, 14
MAX_TABLE_VALUES = 64


OFF_SCALE_FACTOR = 5.0  # a leading bound this many times further below the top is cut off
N_TICKS = 6


def bound_history(progress: dict[str, Any] | None,
                  result: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The points (elapsed, domains_done, lower_bound) with a bound: ``progress["history"]``
    where the worker keeps one, else the latest progress alone; then the final point when
    it is a bound at the run's end (not for a proof by branch-and-bound: see final_point)."""
    points = (progress or {}).get("history") or ([progress] if progress else [])
    out = [p for p in points if isinstance(p, dict) and _finite(p.get("lower_bound"))]
    last = final_point(result)
    return out + [last] if last and last["proof"] != "bab" else out


def final_point(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """A finished job's least bound over its disjuncts (when every disjunct has one), at the
    run's time and domain count, with ``proof``: "bounds" when that bound is above 0 (it
    proves the property), "bab" when the job is verified although it is not (those are the
    bounds before branch-and-bound, which proved the property by closing every domain with
    a bound above 0), else None."""
    final = [b for case in (result or {}).get("bounds") or [] for b in case]
    if not result or not final or not all(_finite(b) for b in final):
        return None
    least = min(final)
    proof = "bounds" if least > 0 else ("bab" if result.get("verdict") == "verified" else None)
    return {"elapsed": float(result.get("seconds") or 0.0),
            "domains_done": int(result.get("domains") or 0), "lower_bound": least,
            "proof": proof}


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def number_text(value: Any, fmt: str = "%.6g") -> str:
    """``value`` in ``fmt`` (the templates' ``num`` filter); a dash where it is no finite
    number (a value stored as null, or one row's odd data: the page still renders)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    return fmt % value


def _fmt(v: float) -> str:
    return f"{v:.3g}"


@dataclass
class Scale:
    """A plot's y range, ``lo`` to ``hi``, and how many leading points lie below it.

    The range always holds 0 (the line a bound must pass to prove the property) and the
    later points; a leading point more than OFF_SCALE_FACTOR times further below the top
    than every later point (the first IBP bound of a run whose CROWN and BaB bounds are
    hundreds of times tighter) is left off, drawn on the bottom edge and labelled, so the
    approach to 0 fills the plot instead of a flat line at the top."""

    lo: float
    hi: float
    off_scale: int

    @classmethod
    def fit(cls, ys: list[float]) -> Scale:
        top = max(max(ys), 0.0)
        cut = 0
        while cut < len(ys) - 1 and \
                top - ys[cut] > OFF_SCALE_FACTOR * (top - min(ys[cut + 1:]) or 1e-300):
            cut += 1
        lo, hi = min(ys[cut:] + [0.0]), top
        span = (hi - lo) or (abs(hi) or 1.0)
        return cls(lo - 0.08 * span, hi + 0.08 * span, cut)

    def ticks(self) -> list[float]:
        """About N_TICKS round values inside the range (steps of 1, 2 or 5 times 10^k)."""
        raw = (self.hi - self.lo) / N_TICKS
        step = 10 ** math.floor(math.log10(raw))
        step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
        first = math.ceil(self.lo / step)
        return [k * step for k in range(first, math.floor(self.hi / step) + 1)]


def line_plot(points: list[tuple[float, float]], xlabel: str, ylabel: str, title: str,
              proved_at: float | None = None) -> Markup:
    """An SVG line plot of ``points`` (x, y) on a Scale with gridlines and a dashed y = 0
    line; ``proved_at``: the x where branch-and-bound closed its last domain, marked on the
    0 line."""
    if not points and proved_at is None:
        return empty_plot(title)
    xs = [p[0] for p in points] + ([proved_at] if proved_at is not None else [])
    x0, x1 = min(xs), max(xs)
    x0, x1 = (x0, x1) if x1 > x0 else (x0 - 1.0, x1 + 1.0)
    scale = Scale.fit([p[1] for p in points] or [0.0])
    w, h = PLOT_W - PAD_L - PAD_R, PLOT_H - PAD_T - PAD_B

    def sx(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * w

    def sy(y: float) -> float:
        return PAD_T + (scale.hi - max(y, scale.lo)) / (scale.hi - scale.lo) * h

    data = escape(json.dumps([[x, y] for x, y in points]))  # job.js extends the series
    parts = [f'<svg class="plot" viewBox="0 0 {PLOT_W} {PLOT_H}" role="img" '
             f'aria-label="{escape(title)}" data-points="{data}"><title>{escape(title)}</title>',
             f'<rect class="frame" x="{PAD_L}" y="{PAD_T}" width="{w}" height="{h}"/>']
    for t in scale.ticks():
        parts.append(f'<line class="grid" x1="{PAD_L}" x2="{PAD_L + w}" y1="{sy(t):.1f}" '
                     f'y2="{sy(t):.1f}"/><text x="{PAD_L - 4}" y="{sy(t) + 4:.1f}" '
                     f'text-anchor="end">{_fmt(t)}</text>')
    parts.append(f'<line class="zero" x1="{PAD_L}" x2="{PAD_L + w}" y1="{sy(0):.1f}" '
                 f'y2="{sy(0):.1f}"/>')
    if points:
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        x, y = points[-1]
        parts.append(f'<polyline class="series" points="{line}"/><g class="dot">'
                     f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5"/></g>')
    parts += _off_scale_note(points, scale, sx, sy)
    if proved_at is not None:
        parts.append(f'<g class="proved"><circle cx="{sx(proved_at):.1f}" cy="{sy(0):.1f}" '
                     f'r="4"/><text x="{sx(proved_at) - 6:.1f}" y="{sy(0) - 7:.1f}" '
                     'text-anchor="end">proved by branch-and-bound</text></g>')
    parts += [f'<text x="{PAD_L}" y="{PLOT_H - 20}">{_fmt(x0)}</text>',
              f'<text x="{PAD_L + w}" y="{PLOT_H - 20}" text-anchor="end">{_fmt(x1)}</text>',
              f'<text x="{PAD_L + w / 2}" y="{PLOT_H - 4}" text-anchor="middle">'
              f'{escape(xlabel)}</text>',
              f'<text x="12" y="{PAD_T + h / 2}" transform="rotate(-90 12 {PAD_T + h / 2})" '
              f'text-anchor="middle">{escape(ylabel)}</text></svg>']
    return Markup("".join(parts))


def _off_scale_note(points: list[tuple[float, float]], scale: Scale,
                    sx: Callable[[float], float], sy: Callable[[float], float]) -> list[str]:
    """Markers on the bottom edge for the points below the range, and a label with the
    lowest of them."""
    if not scale.off_scale:
        return []
    cut = points[:scale.off_scale]
    marks = "".join(f'<path d="M{sx(x) - 4:.1f},{sy(scale.lo) - 6:.1f} h8 l-4,6 z"/>'
                    for x, _y in cut)
    lowest = min(y for _x, y in cut)
    return [f'<g class="offscale">{marks}<text x="{sx(cut[0][0]) + 8:.1f}" '
            f'y="{sy(scale.lo) - 4:.1f}">{"first bound" if len(cut) == 1 else "first bounds"}'
            f' down to {_fmt(lowest)}, below the scale</text></g>']


def empty_plot(title: str) -> Markup:
    """The plot's frame, saying that no bound has been computed (yet)."""
    w, h = PLOT_W - PAD_L - PAD_R, PLOT_H - PAD_T - PAD_B
    return Markup(
        f'<svg class="plot plot-empty" viewBox="0 0 {PLOT_W} {PLOT_H}" role="img" '
        f'aria-label="{escape(title)}: no bound computed"><title>{escape(title)}</title>'
        f'<rect class="frame" x="{PAD_L}" y="{PAD_T}" width="{w}" height="{h}"/>'
        f'<text x="{PAD_L + w / 2}" y="{PAD_T + h / 2}" text-anchor="middle">'
        "no bound computed</text></svg>")


def bound_plots(progress: dict[str, Any] | None,
                result: dict[str, Any] | None = None) -> dict[str, Markup]:
    hist = bound_history(progress, result)
    final = final_point(result)
    bab = final if final and final["proof"] == "bab" else None
    by_time = [(float(p.get("elapsed", 0.0)), float(p["lower_bound"])) for p in hist]
    by_domains = [(float(p.get("domains_done", 0)), float(p["lower_bound"])) for p in hist]
    return {"time": line_plot(by_time, "seconds", "lower bound", "Global lower bound vs time",
                              bab["elapsed"] if bab else None),
            "domains": line_plot(by_domains, "domains done", "lower bound",
                                 "Global lower bound vs domains",
                                 float(bab["domains_done"]) if bab else None)}


def image_layout(shape: list[int]) -> tuple[int, int, int] | None:
    """(channels, height, width) when an input of ``shape`` is an image (C in {1, 3},
    channels first, as 1x28x28 or 3x32x32; or a plain HxW grid), else None."""
    dims = list(shape)
    while dims and dims[0] == 1 and len(dims) > 2:
        dims = dims[1:]
    if len(dims) == 3 and dims[0] in (1, 3) and min(dims[1:]) >= 4:
        return dims[0], dims[1], dims[2]
    if len(dims) == 2 and min(dims) >= 4:
        return 1, dims[0], dims[1]
    return None


def _png(width: int, height: int, rgb_rows: list[bytes]) -> bytes:
    """A minimal 8-bit RGB PNG (no filter on any row)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    raw = b"".join(b"\x00" + row for row in rgb_rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def image_data_url(values: list[float], layout: tuple[int, int, int]) -> str:
    """The input as a PNG data URL: values in [0, 1] as they are, anything else rescaled
    from its own minimum and maximum."""
    c, h, w = layout
    lo, hi = min(values), max(values)
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    span = (hi - lo) or 1.0
    level = [max(0, min(255, round((v - lo) / span * 255))) for v in values[:c * h * w]]
    rows = []
    for y in range(h):
        row = bytearray()
        for x in range(w):
            px = [level[ch * h * w + y * w + x] for ch in range(c)]
            row += bytes(px * 3 if c == 1 else px)
        rows.append(bytes(row))
    return "data:image/png;base64," + base64.b64encode(_png(w, h, rows)).decode()


@dataclass
class CounterexampleView:
    case: int
    disjunct: int
    image: str | None  # PNG data URL when the input is an image
    inputs: list[tuple[int, float]]  # shown as a table when not an image (first values)
    n_inputs: int
    outputs: list[tuple[int, float]]
    top_output: int | None


def counterexample_views(result: dict[str, Any] | None,
                         input_shape: list[int]) -> list[CounterexampleView]:
    layout = image_layout(input_shape)
    views = []
    for cex in (result or {}).get("counterexamples") or []:
        x, y = list(cex.get("input") or []), list(cex.get("output") or [])
        is_image = layout is not None and len(x) == math.prod(layout) and bool(x)
        views.append(CounterexampleView(
            case=cex.get("case", 0), disjunct=cex.get("disjunct", 0),
            image=image_data_url(x, layout) if is_image and layout else None,
            inputs=[] if is_image else list(enumerate(x[:MAX_TABLE_VALUES])),
            n_inputs=len(x), outputs=list(enumerate(y)),
            top_output=max(range(len(y)), key=y.__getitem__) if y else None))
    return views


REGION_VALUES_SHOWN = 8


@dataclass
class LipschitzView:
    """A Lipschitz job's page: its bracket (final, or the one known so far) and region."""

    lower: float | None
    upper: float | None
    naive: float | None
    ratio: float | None  # naive / upper: how much tighter than the product of norms
    norm: str
    outputs: str
    eps: float | None
    source: str  # "region" (given in the job) or the property format
    n_inputs: int
    centre: list[float]  # the box's centre, first values
    width: tuple[float, float] | None  # the least and largest width of the box
    leaves: int
    stopped: bool
    monotonicity: list[dict[str, Any]]
    final: bool


def lipschitz_view(spec: JobSpec, result: dict[str, Any] | None,
                   progress: dict[str, Any] | None, source: str) -> LipschitzView:
    params = spec.params
    if result and result.get("kind") == "lipschitz":
        lower, upper, naive = result.get("lower"), result.get("upper"), result.get("naive")
        ratio = result.get("ratio")
    else:
        lower = (progress or {}).get("lipschitz_lower")
        upper = (progress or {}).get("lipschitz_upper")
        naive = ratio = None
    region = (result or {}).get("region") or {}
    lo, hi = region.get("lower") or [], region.get("upper") or []
    details = (result or {}).get("details") or {}
    return LipschitzView(
        lower=lower, upper=upper, naive=naive, ratio=ratio,
        norm=params.norm, outputs=params.describe_outputs(),
        eps=params.eps, source=source, n_inputs=len(lo),
        centre=[(a + b) / 2 for a, b in zip(lo, hi, strict=False)][:REGION_VALUES_SHOWN],
        width=(min(b - a for a, b in zip(lo, hi, strict=False)),
               max(b - a for a, b in zip(lo, hi, strict=False))) if lo else None,
        leaves=int(details.get("bab_leaves") or 0), stopped=bool(details.get("stopped")),
        monotonicity=list((result or {}).get("monotonicity") or []),
        final=bool(result and result.get("kind") == "lipschitz"))



def size_text(n: int | None) -> str:
    """A file size for people: bytes, kB or MB."""
    if n is None:
        return "–"
    if n < 1000:
        return f"{n} bytes"
    return f"{n / 1000:.1f} kB" if n < 1_000_000 else f"{n / 1_000_000:.1f} MB"


def proof_view(cert: Certificate | None, result: dict[str, Any] | None
               ) -> dict[str, Any] | None:
    """What the job page says of the certificate's proof: its status and reason, the
    leaves, size and times of a checked one with its download link, and whether a result
    the engine verified was published as unknown for want of one (NNVERIFY_PROOFS=required)."""
    if cert is None:
        return None
    leaves = cert.proof_leaves
    return {"status": cert.proof_status, "reason": cert.proof_reason,
            "checked": cert.proof_status == "checked", "checker": cert.proof_checker,
            "leaves": None if leaves is None else
            f"{leaves} {'leaf' if leaves == 1 else 'leaves'}",
            "size": size_text(cert.proof_size_bytes),
            "check_seconds": cert.proof_check_seconds,
            "search_seconds": cert.proof_search_seconds,
            "url": f"/api/v1/certificates/{cert.id}/proof",
            "model_url": f"/api/v1/models/{cert.model_id}/file",
            "property_url": f"/api/v1/certificates/{cert.id}/property",
            "withheld": (result or {}).get("engine_verdict") == "verified"}
