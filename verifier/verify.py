"""The verification pipeline: attack, then bounds of increasing strength (DESIGN.md).

``verify(model, prop, settings)`` is the whole engine behind one call.  It takes every
setting as an argument and keeps no state between calls, so verifications may run side by
side in one process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from verifier.bounds.limits import Interrupted, MemoryBudget, MemoryExceeded, format_bytes, within
from verifier.bounds.methods import METHODS, row_lower_bounds
from verifier.importer.guard import check_against_onnxruntime
from verifier.importer.onnx_import import Model
from verifier.problems import ProblemBatch, batches, exactly_representable, make_batch
from verifier.property.core import Property
from verifier.search.attack import AttackSettings, Counterexample, falsify
from verifier.search.bab import BabSettings, run_bab
from verifier.search.probe import ProbeSettings, probe

VERDICTS = ("verified", "falsified", "unknown", "timeout", "error")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class Settings:
    """Everything a verification run depends on.  Defaults suit a first try."""

    timeout: float = 60.0
    device: str = "cpu"
    # "auto": float64 for a model that computes in float64 or a property whose output
    # coefficients float32 cannot hold exactly, else float32 (docs/design-notes.md)
    dtype: str = "auto"
    methods: tuple[str, ...] = ("ibp", "crown", "alpha-crown")
    attack: AttackSettings = field(default_factory=AttackSettings)
    # after the bound methods, the sides of nonlinearities no sample reached (None: off)
    probe: ProbeSettings | None = field(default_factory=ProbeSettings)
    bab: bool = True
    bab_settings: BabSettings = field(default_factory=BabSettings)
    batch_cases: int = 64
    # compare the imported graph with onnxruntime on the property's boxes before any proof
    check_model: bool = True
    # bytes of memory the run may hold (process resident memory on CPU, torch's allocation
    # on CUDA); None: 60% of the machine's (85% of a GPU's).  Bound computations chunk to
    # stay inside it and give up the step that cannot (verifier/bounds/limits.py)
    memory_budget: int | None = None

    def validate(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown bound method(s) {unknown}; known: {sorted(METHODS)}")
        if self.dtype not in DTYPES and self.dtype != "auto":
            raise ValueError(f"dtype must be auto or one of {sorted(DTYPES)}, not "
                             f"{self.dtype!r}")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.memory_budget is not None and self.memory_budget <= 0:
            raise ValueError("memory_budget must be a positive number of bytes")
        torch.device(self.device)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Progress:
    """What a long run reports while it works."""

    stage: str
    elapsed: float
    domains_open: int = 0
    domains_done: int = 0
    lower_bound: float | None = None


@dataclass
class MethodRecord:
    method: str
    seconds: float
    open_before: int
    open_after: int


@dataclass
class Result:
    """The outcome of one verification, as plain data."""

    verdict: str
    message: str = ""
    # per case, per disjunct: best proven lower bound of the disjunct's violation margin
    # (> 0 means the disjunct is impossible); None where nothing was computed
    bounds: list[list[float | None]] = field(default_factory=list)
    counterexamples: list[Counterexample] = field(default_factory=list)
    methods: list[MethodRecord] = field(default_factory=list)
    seconds: float = 0.0
    domains: int = 0
    guard_seconds: float = 0.0  # of ``seconds``: the check against onnxruntime

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "message": self.message,
            "bounds": self.bounds,
            "counterexamples": [c.to_dict() for c in self.counterexamples],
            "methods": [asdict(m) for m in self.methods],
            "seconds": self.seconds,
            "domains": self.domains,
            "guard_seconds": self.guard_seconds,
        }

    def to_vnncomp(self) -> str:
        """The VNN-COMP result file: unsat / sat with assignments / unknown / timeout / error."""
        word = {"verified": "unsat", "falsified": "sat"}.get(self.verdict, self.verdict)
        if self.verdict != "falsified" or not self.counterexamples:
            return word + "\n"
        cex = self.counterexamples[0]
        lines = [f"(X_{i} {v!r})" for i, v in enumerate(cex.x.tolist())]
        lines += [f"(Y_{j} {v!r})" for j, v in enumerate(cex.y.tolist())]
        return "sat\n(" + "\n".join(lines) + ")\n"


class Clock:
    """Deadline and cancellation, checked inside every long loop."""

    def __init__(self, timeout: float, cancel: Callable[[], bool] | None):
        self.start = time.monotonic()
        self.deadline = self.start + timeout
        self.cancel = cancel or (lambda: False)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline or self.cancel()


class _State:
    """Which disjuncts of which cases are still open, and their best bounds."""

    def __init__(self, prop: Property):
        self.open = [np.ones(len(c.disjuncts), dtype=bool) for c in prop.cases]
        self.best: list[list[float | None]] = [[None] * len(c.disjuncts) for c in prop.cases]
        self.boxes: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}

    def open_cases(self) -> list[int]:
        return [i for i, o in enumerate(self.open) if o.any()]

    def n_open(self) -> int:
        return int(sum(o.sum() for o in self.open))

    def weakest(self) -> float | None:
        """The smallest proven bound among open disjuncts (None before any bound)."""
        values = [b for bs, o in zip(self.best, self.open, strict=True)
                  for b, is_open in zip(bs, o, strict=True) if is_open and b is not None]
        return min(values) if values else None

    def keep_boxes(self, batch: ProblemBatch, boxes: dict[str, tuple[torch.Tensor,
                                                                      torch.Tensor]]) -> None:
        """Keep a method's intermediate bounds per case, for branch-and-bound to start from."""
        if not boxes:
            return
        for b, case in enumerate(batch.cases):
            self.boxes[case] = {name: (lo[b:b + 1], hi[b:b + 1])
                                for name, (lo, hi) in boxes.items()}

    def root_boxes(self, cases: list[int]) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
        """The kept bounds of ``cases`` stacked in that order, or None unless all have them."""
        if not cases or any(c not in self.boxes for c in cases):
            return None
        names = self.boxes[cases[0]].keys()
        return {name: (torch.cat([self.boxes[c][name][0] for c in cases]),
                       torch.cat([self.boxes[c][name][1] for c in cases])) for name in names}

    def record(self, batch: ProblemBatch, disjunct_lb: torch.Tensor) -> None:
        """Keep each disjunct's best bound; a disjunct is refuted only by a finite bound > 0
        (NaN, read as -inf, and infinities prove nothing)."""
        lb = disjunct_lb.detach().cpu().double().numpy()
        lb = np.where(np.isnan(lb) | np.isneginf(lb), -np.inf, lb)
        for b, case in enumerate(batch.cases):
            for k in range(batch.n_disjuncts[b]):
                value = float(lb[b, k])
                old = self.best[case][k]
                self.best[case][k] = value if old is None else max(old, value)
                if 0 < value < math.inf:
                    self.open[case][k] = False


def verify(model: Model, prop: Property, settings: Settings | None = None,
           progress: Callable[[Progress], None] | None = None,
           cancel: Callable[[], bool] | None = None) -> Result:
    """Decide ``prop`` on ``model``.  Never raises for a verification problem: an internal
    failure is a Result with verdict ``error`` and its message."""
    settings = settings or Settings()
    clock = Clock(settings.timeout, cancel)
    try:
        device = torch.device(settings.device)
        budget = (MemoryBudget(settings.memory_budget, device) if settings.memory_budget
                  else MemoryBudget.default(device))
        with within(budget):
            result = _run(model, prop, settings, clock, progress or (lambda p: None))
        if budget.reached and result.verdict in ("unknown", "timeout"):
            result.message += (f"; the memory budget of {format_bytes(budget.limit)} was "
                               f"reached {budget.reached} time(s): alpha-CROWN kept its best "
                               "bound so far, branch-and-bound took fewer domains per round, "
                               "a step that could not shrink was skipped")
    except MemoryExceeded as exc:
        result = Result("unknown", str(exc))
    except Exception as exc:  # reported as 'error', never as another verdict
        result = Result("error", f"{type(exc).__name__}: {exc}")
    result.seconds = clock.elapsed()
    return result


def _check_sizes(model: Model, prop: Property) -> None:
    if prop.n_inputs != model.n_inputs or prop.n_outputs != model.n_outputs:
        raise ValueError(
            f"the property has {prop.n_inputs} inputs and {prop.n_outputs} outputs but the "
            f"model has {model.n_inputs} inputs and {model.n_outputs} outputs")


def _run(model: Model, prop: Property, settings: Settings, clock: Clock,
         progress: Callable[[Progress], None]) -> Result:
    settings.validate()
    _check_sizes(model, prop)
    device, dtype = torch.device(settings.device), compute_dtype(settings.dtype, model, prop)
    graph = model.graph
    state = _State(prop)
    result = Result("unknown")
    if settings.check_model:
        t0 = time.monotonic()
        check_against_onnxruntime(model, prop, dtype, device)
        result.guard_seconds = time.monotonic() - t0

    def open_batches() -> list[ProblemBatch]:
        keep, size = state.open_cases(), settings.batch_cases
        return [make_batch(prop, keep[s:s + size], device, dtype)
                for s in range(0, len(keep), size)]

    progress(Progress("attack", clock.elapsed(), domains_open=state.n_open()))
    for batch in batches(prop, settings.batch_cases, device, dtype):
        result.counterexamples += falsify(model, prop, batch, settings.attack, clock.expired)
        if clock.expired():
            break
    if result.counterexamples:
        return _finish(result, "falsified", state,
                       "counterexample confirmed by onnxruntime" + _snapped(result))

    input_split = model.n_inputs <= settings.bab_settings.input_split_max_dims
    for method in settings.methods:
        if clock.expired():
            break
        if method == "alpha-crown" and settings.bab and input_split:
            continue  # input splitting with CROWN beats optimising slopes on few inputs
        t0, before = time.monotonic(), state.n_open()
        # alpha-CROWN gets a share of the time left, so branch-and-bound keeps the rest
        share = 0.3 if settings.bab else 1.0
        stop = t0 + share * max(0.0, clock.deadline - t0)
        expired = _until(clock, stop)
        for batch in open_batches():
            boxes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
            try:
                rows = row_lower_bounds(graph, batch, method, expired=expired,
                                        boxes_out=boxes)
            except Interrupted:
                break
            state.record(batch, batch.disjunct_bounds(rows))
            state.keep_boxes(batch, boxes)
            if clock.expired():
                break
        result.methods.append(MethodRecord(method, time.monotonic() - t0, before, state.n_open()))
        progress(Progress(method, clock.elapsed(), domains_open=state.n_open(),
                          lower_bound=state.weakest()))
        if state.n_open() == 0:
            return _finish(result, "verified", state, f"all disjuncts refuted by {method}")

    if settings.probe is not None and not clock.expired():
        progress(Progress("probe", clock.elapsed(), domains_open=state.n_open(),
                          lower_bound=state.weakest()))
        t0, before = time.monotonic(), state.n_open()
        left = max(0.0, clock.deadline - t0)
        stop = t0 + max(settings.probe.share * left, min(settings.probe.min_seconds, left / 4))
        for batch in open_batches():
            result.counterexamples += probe(model, prop, batch,
                                            state.root_boxes(batch.cases), settings.probe,
                                            _until(clock, stop))
            if clock.expired() or time.monotonic() > stop:
                break
        result.methods.append(MethodRecord("probe", time.monotonic() - t0, before, before))
        if result.counterexamples:
            return _finish(result, "falsified", state, "counterexample found by probing "
                           "the sides of nonlinearities no sample reached, confirmed by "
                           "onnxruntime" + _snapped(result))

    if settings.bab and not clock.expired():
        decided = _branch_and_bound(model, prop, settings, clock, state, result, progress,
                                    device, dtype)
        if decided is not None:
            return decided

    if clock.cancel():
        return _finish(result, "unknown", state, "cancelled")
    if clock.expired():
        return _finish(result, "timeout", state, f"no decision within {settings.timeout:g} s")
    return _finish(result, "unknown", state,
                   f"{state.n_open()} disjunct(s) neither refuted nor falsified")


def compute_dtype(name: str, model: Model, prop: Property) -> torch.dtype:
    """The dtype bounds are computed in: ``name``, or for "auto" the model's precision
    (float64 when it computes in float64) and float64 as well when float32 cannot hold the
    property's output coefficients exactly (their rounding error would scale with |y|)."""
    if name != "auto":
        return DTYPES[name]
    if model.graph.unit_roundoff < 2.0 ** -30:
        return torch.float64
    coefficients = [conj.C for case in prop.cases for conj in case.disjuncts]
    if not all(exactly_representable(np.asarray(C, dtype=np.float64), torch.float32)
               for C in coefficients):
        return torch.float64
    return torch.float32


def _until(clock: Clock, stop: float) -> Callable[[], bool]:
    """A deadline that also fires at ``stop`` (monotonic seconds)."""
    return lambda: clock.expired() or time.monotonic() > stop


def _branch_and_bound(model: Model, prop: Property, settings: Settings, clock: Clock,
                      state: _State, result: Result, progress: Callable[[Progress], None],
                      device: torch.device, dtype: torch.dtype) -> Result | None:
    """BaB over the cases still open; a Result when it decides, else None."""
    open_cases = state.open_cases()
    # only the disjuncts still open: a refuted one is refuted on every domain of its case
    root = make_batch(prop, open_cases, device, dtype,
                      [state.open[c].tolist() for c in open_cases])
    t0, before = time.monotonic(), state.n_open()

    def report(n_open: int, done: int, lb: float) -> None:
        progress(Progress("bab", clock.elapsed(), domains_open=n_open, domains_done=done,
                          lower_bound=lb))

    outcome = run_bab(model, prop, root, settings.bab_settings, clock.expired, report,
                      state.root_boxes(open_cases))
    result.domains = outcome.domains
    if outcome.verdict == "verified":
        for case in open_cases:
            state.open[case][:] = False
    elif math.isfinite(outcome.lower_bound):
        # the weakest open domain bounds every disjunct of every open case from below
        for case in open_cases:
            state.best[case] = [max(v if v is not None else -math.inf, outcome.lower_bound)
                                for v in state.best[case]]
    result.methods.append(MethodRecord("bab", time.monotonic() - t0, before, state.n_open()))
    if outcome.counterexamples:
        result.counterexamples += outcome.counterexamples
        return _finish(result, "falsified", state, "counterexample found during branch-and-bound"
                       ", confirmed by onnxruntime" + _snapped(result))
    if outcome.verdict == "verified":
        return _finish(result, "verified", state,
                       f"every domain refuted by branch-and-bound ({outcome.domains} domains)")
    return None


def _snapped(result: Result) -> str:
    """The note a counterexample needs when some of its inputs could not lie in the box."""
    n = result.counterexamples[0].snapped if result.counterexamples else 0
    if not n:
        return ""
    return (f" ({n} input(s) whose bounds hold no value of the model's input type, such as "
            f"a fixed input written as a decimal that is no float32, are at the nearest one)")


def _finish(result: Result, verdict: str, state: _State, message: str) -> Result:
    result.verdict = verdict
    result.message = message
    result.bounds = state.best
    return result
