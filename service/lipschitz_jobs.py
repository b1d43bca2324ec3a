"""Lipschitz jobs: their input region, output selection and engine settings, the engine
call and what is stored (result and certificate).  The API validates a job with the same
functions the worker runs it with, so a region accepted at creation is read the same way.

The region is the first input box of the job's property: a stored ``region`` record
(``{"center": [...]}`` or ``{"lower": [...], "upper": [...]}``), or a VNN-LIB / JSON property.
With ``eps`` the box is replaced by its centre +- eps (as ``nnverify lipschitz --center-file``).

A job that brackets the constant succeeds with the verdict ``bounded``: ``lower <= L <= upper``
where ``upper`` comes from the engine's sound bound propagation (min with the naive bound)
and ``lower`` is a gradient norm at a point of the box.  Deadline before any upper bound:
verdict ``timeout``, no certificate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from verifier.bounds.crown import Interrupted
from verifier.certificate import make_lipschitz_certificate
from verifier.importer.onnx_import import Model
from verifier.lipschitz import (
    LipschitzProgress,
    LipschitzSettings,
    check_supported,
    local_lipschitz,
    monotonicity,
)

from .engine import parse_property
from .jobspec import JobSpec, LipschitzParams

KIND = "lipschitz"
REGION_FORMAT = "region"
VERDICT = "bounded"


# -- the region --------------------------------------------------------------------------
@dataclass(frozen=True)
class Region:
    """The input box bounded, flat (n_inputs,) float64."""

    lower: np.ndarray
    upper: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"lower": self.lower.tolist(), "upper": self.upper.tolist()}


def region_text(center: list[float] | None, lower: list[float] | None,
                upper: list[float] | None) -> str:
    """The canonical text of a ``region`` record (content-addressed like any property)."""
    obj = {"center": center} if center is not None else {"lower": lower, "upper": upper}
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _values(obj: dict[str, Any], key: str, n: int) -> np.ndarray:
    values = np.asarray(obj[key], dtype=np.float64).ravel()
    if values.size != n:
        raise ValueError(f"lipschitz.{key} has {values.size} values but the model has "
                         f"{n} inputs")
    if not np.isfinite(values).all():
        raise ValueError(f"lipschitz.{key} must hold finite numbers")
    return values


def first_box(fmt: str, text: str, model: Model) -> tuple[np.ndarray, np.ndarray]:
    """The first input box of a stored region or property, checked against the model."""
    if fmt == REGION_FORMAT:
        obj = json.loads(text)
        if "center" in obj:
            centre = _values(obj, "center", model.n_inputs)
            return centre, centre
        return _values(obj, "lower", model.n_inputs), _values(obj, "upper", model.n_inputs)
    case = parse_property(fmt, text, model).cases[0]
    return (np.asarray(case.lower, dtype=np.float64).ravel(),
            np.asarray(case.upper, dtype=np.float64).ravel())


def resolve_region(fmt: str, text: str, eps: float | None, model: Model) -> Region:
    """The box bounded: the first input box, or its centre +- ``eps``; its bounds must be
    finite numbers."""
    lower, upper = first_box(fmt, text, model)
    if eps is not None:
        with np.errstate(over="ignore"):  # an overflow is an infinite bound, refused below
            centre = lower / 2 + upper / 2
            lower, upper = centre - eps, centre + eps
    if not (np.isfinite(lower).all() and np.isfinite(upper).all()):
        raise ValueError("the region's bounds must be finite numbers (is eps too large?)")
    bad = np.flatnonzero(lower > upper)
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"the region is empty: input {i} has lower {lower[i]!r} > upper "
                         f"{upper[i]!r}")
    return Region(lower, upper)


# -- outputs, settings -------------------------------------------------------------------
def output_matrix(params: LipschitzParams, n_outputs: int) -> np.ndarray | None:
    """C: the given matrix, one output's row, or None (every output)."""
    if params.c_matrix is not None:
        if not params.c_matrix or len({len(r) for r in params.c_matrix}) != 1:
            raise ValueError(f"lipschitz.C must have rows of {n_outputs} values (one per "
                             "model output), all of one length")
        C = np.asarray(params.c_matrix, dtype=np.float64)
        if C.ndim != 2 or C.shape[1] != n_outputs or C.shape[0] == 0:
            raise ValueError(f"lipschitz.C must have rows of {n_outputs} values (one per "
                             f"model output), got shape {list(C.shape)}")
        if not np.isfinite(C).all():
            raise ValueError("lipschitz.C must hold finite numbers")
        return C
    output = params.output
    if output is None:
        return None
    if not 0 <= output < n_outputs:
        raise ValueError(f"lipschitz.output {output} is not an output of the model "
                         f"(0 to {n_outputs - 1})")
    C = np.zeros((1, n_outputs))
    C[0, output] = 1.0
    return C


def lipschitz_settings(spec: JobSpec) -> LipschitzSettings:
    """Engine settings: input splitting (``options.bab``) for ``bab_seconds``, by default
    until the job's timeout."""
    params = spec.params
    bab_seconds = 0.0
    if spec.bab:
        bab_seconds = spec.timeout if params.bab_seconds is None else params.bab_seconds
    return LipschitzSettings(norm=params.norm, samples=params.samples,
                             attack_steps=params.attack_steps, bab_seconds=bab_seconds,
                             seed=params.seed)


def validate_job(fmt: str, text: str, spec: JobSpec, model: Model) -> None:
    """Raise ValueError saying what is wrong with a Lipschitz job on ``model``."""
    params = spec.params
    check_supported(model.graph)
    resolve_region(fmt, text, params.eps, model)
    output_matrix(params, model.n_outputs)
    for k, q in enumerate(params.monotonicity):
        if not (q.output < model.n_outputs and q.input < model.n_inputs):
            raise ValueError(f"lipschitz.monotonicity[{k}]: output must be in 0 to "
                             f"{model.n_outputs - 1} and input in 0 to {model.n_inputs - 1}")
    lipschitz_settings(spec).validate()


# -- running -----------------------------------------------------------------------------
@dataclass
class LipschitzRun:
    """What a run produced: verdict ``bounded`` with a result and certificate, or
    ``timeout`` (None) when it stopped before any upper bound."""

    verdict: str
    message: str
    seconds: float
    result: dict[str, Any] | None
    certificate: dict[str, Any] | None


def _show(value: float) -> str:
    return "NaN" if math.isnan(value) else f"{value:g}"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _monotonicity(model: Model, region: Region, params: LipschitzParams,
                  settings: LipschitzSettings, stop: Callable[[], bool]
                  ) -> list[dict[str, Any]]:
    out = []
    for q in params.monotonicity:
        try:
            if stop():
                raise Interrupted
            out.append(monotonicity(model, region.lower, region.upper, q.output,
                                    q.input, settings.samples, settings.seed, stop))
        except Interrupted:
            out.append({"output": q.output, "input_index": q.input, "proved": None,
                        "skipped": "stopped before this query ran"})
    return out


def run_lipschitz(model: Model, fmt: str, text: str, spec: JobSpec,
                  stop: Callable[[], bool],
                  report: Callable[[LipschitzProgress], None]) -> LipschitzRun:
    """Bracket the job's local Lipschitz constant; ValueError for a job the engine refuses
    (a region whose bounds come out NaN or infinite among them: no bracket is claimed)."""
    params = spec.params
    region = resolve_region(fmt, text, params.eps, model)
    C = output_matrix(params, model.n_outputs)
    settings = lipschitz_settings(spec)
    try:
        r = local_lipschitz(model, region.lower, region.upper, C, settings, stop, report)
    except Interrupted:
        return LipschitzRun("timeout", f"no upper bound within {spec.timeout:g} s",
                            0.0, None, None)
    if not (math.isfinite(r.upper) and math.isfinite(r.lower)):
        raise ValueError(f"the Lipschitz bounds are not finite numbers (NaN or infinite: "
                         f"lower {_show(r.lower)}, upper {_show(r.upper)}): the region is too "
                         "wide or the model's values overflow on it; no bound is claimed")
    mono = _monotonicity(model, region, params, settings, stop)
    seconds = r.seconds
    report(LipschitzProgress("done", seconds, r.lower, r.upper, r.details["bab_leaves"]))
    result = {
        "kind": KIND, "lower": r.lower, "upper": r.upper, "naive": _finite(r.naive),
        "ratio": _finite(r.naive / r.upper) if r.upper > 0 else None, "norm": r.norm,
        "outputs": params.describe_outputs(), "argmax_input": r.argmax_input,
        "argmax_row": r.details["argmax_row"], "seconds": seconds, "details": r.details,
        "region": dict(region.to_dict(), eps=params.eps, source=fmt),
        "monotonicity": mono,
    }
    stopped = (" (stopped at the deadline: the bracket of the work done by then)"
               if r.details.get("stopped") else "")
    message = (f"{r.lower:.6g} <= L <= {r.upper:.6g} ({r.norm}-norm), naive bound "
               f"{r.naive:.6g}{stopped}")
    cert = make_lipschitz_certificate(model, text, region.lower, region.upper, C, r, mono)
    return LipschitzRun(VERDICT, message, seconds, result, cert)
