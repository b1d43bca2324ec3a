"""Falsification on onnxruntime alone, for a model the bound engine cannot import.

A model with an op the engine does not support (or supports in another form) cannot be
bounded, so it can never be ``verified``; but onnxruntime runs it, and a counterexample is
judged on onnxruntime's output anyway.  This module searches the property's boxes for one
with the model as a black box: the box's corners and centre, then uniform samples, then a
local search from the best point so far (Gaussian steps on a few coordinates, scaled to
the box, kept when the violation falls).  The violation is the attack's,
``v(x) = min_k max_r (C_k f(x) - d_k)_r`` (<= 0: a counterexample); every candidate with
v <= 0 goes through ``confirm``, the same exact check as any other counterexample.

The answer is ``falsified`` with a confirmed counterexample, else ``unknown`` (or
``timeout``) with the import error as the reason: a search that finds nothing proves
nothing.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime

from verifier.errors import ModelError, UnsupportedOpError
from verifier.importer.onnx_import import Model, Sizes, load_model, read_model_bytes
from verifier.ort import JUDGE_OPTIMIZATION
from verifier.property.core import Property
from verifier.search.attack import Counterexample, confirm
from verifier.search.discrete import enumerate_cases
from verifier.verify import MethodRecord, Result

ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
              "tensor(float16)": np.float16}
BATCH = 64  # points evaluated between two looks at the clock


@dataclass
class OpaqueModel(Sizes):
    """An ONNX model known only through onnxruntime: what ``confirm`` and ``ort.run`` read
    of an imported model (names, shapes, input type, bytes, a session cache)."""

    onnx_bytes: bytes
    sha256: str
    input_name: str
    input_shape: tuple[int, ...]
    input_dtype: np.dtype
    output_name: str
    output_shape: tuple[int, ...]
    reason: str = ""  # why the engine could not import it
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def describe(self) -> dict[str, Any]:
        """``Model.describe``'s summary, with ``bounded`` false and the importer's reason."""
        graph = onnx.load_from_string(self.onnx_bytes).graph
        return {
            "sha256": self.sha256,
            "input": {"name": self.input_name, "shape": list(self.input_shape),
                      "dtype": str(self.input_dtype)},
            "output": {"name": self.output_name, "shape": list(self.output_shape)},
            "op_census": dict(Counter(n.op_type for n in graph.node)),
            "n_parameters": int(sum(math.prod(t.dims) for t in graph.initializer)),
            "bounded": False,
            "reason": self.reason,
        }


def opaque_model(data: bytes, reason: str) -> OpaqueModel:
    """The model as onnxruntime runs it (``reason``: why the engine cannot import it);
    ModelError when onnxruntime cannot, or when the model has not exactly one float input
    of static shape and a float output."""
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 4
    opts.graph_optimization_level = JUDGE_OPTIMIZATION
    try:
        sess = onnxruntime.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own message says what is wrong
        raise ModelError(f"onnxruntime cannot run the model either: {exc}") from None
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    if len(inputs) != 1:
        raise ModelError(f"the model has {len(inputs)} inputs; one is needed")
    (inp,) = inputs
    dtype = ORT_DTYPES.get(inp.type)
    if dtype is None or not all(isinstance(d, int) and d > 0 for d in inp.shape):
        raise ModelError(f"input '{inp.name}' is {inp.type} of shape {inp.shape}: a float "
                         "tensor of static shape is needed")
    if outputs[0].type not in ORT_DTYPES:
        raise ModelError(f"output '{outputs[0].name}' is {outputs[0].type}: a float tensor "
                         "is needed")
    shape = tuple(int(d) for d in inp.shape)
    try:  # the output's size, which a dynamic shape leaves open, from one run
        y = sess.run([outputs[0].name], {inp.name: np.zeros(shape, dtype=dtype)})[0]
    except Exception as exc:
        raise ModelError(f"onnxruntime cannot evaluate the model at 0: {exc}") from None
    model = OpaqueModel(data, hashlib.sha256(data).hexdigest(), inp.name, shape,
                        np.dtype(dtype), outputs[0].name, tuple(np.shape(y)) or (1,), reason)
    model.cache["ort"] = sess
    return model


def load_or_opaque(source: bytes | str | Path) -> Model | OpaqueModel:
    """The imported model, or, when the engine refuses an op but onnxruntime runs the
    model, the model as onnxruntime runs it; raises the importer's error otherwise."""
    try:
        return load_model(source)
    except UnsupportedOpError as refused:
        try:
            return opaque_model(read_model_bytes(source), str(refused))
        except Exception:  # onnxruntime cannot run it either: the importer's reason stands
            raise refused from None


def verify_opaque(model: OpaqueModel, prop: Property, timeout: float) -> Result:
    """``falsified`` with a counterexample found on onnxruntime within ``timeout`` seconds,
    else ``unknown`` saying why nothing could be proven."""
    start = time.monotonic()
    why = model.reason.splitlines()[0] if model.reason else "the model cannot be imported"
    enumerated = enumerate_cases(model, prop, start + timeout)
    if enumerated is not None:
        verdict, cex, message = enumerated
        seconds = time.monotonic() - start
        record = MethodRecord("integer-classes", seconds, len(prop.cases),
                              0 if verdict != "timeout" else len(prop.cases))
        if cex is not None:
            message = ("counterexample found by evaluating every integer class of the "
                       "inputs the model reads only through casts to integers")
        return Result(verdict, message, counterexamples=[cex] if cex else [],
                      methods=[record], seconds=seconds)
    record = MethodRecord("onnxruntime-search", 0.0, len(prop.cases), len(prop.cases))
    found = search(model, prop, start + timeout)
    record.seconds = time.monotonic() - start
    if found is not None:
        record.open_after = 0
        return Result("falsified", "counterexample found by a search on onnxruntime (the "
                      f"bound engine cannot import the model: {why})", counterexamples=[found],
                      methods=[record], seconds=record.seconds)
    return Result("unknown", f"the bound engine cannot import the model ({why}), so nothing "
                  f"can be proven; a search on onnxruntime found no counterexample in "
                  f"{record.seconds:.1f} s", methods=[record], seconds=record.seconds)


def search(model: OpaqueModel, prop: Property, deadline: float,
           seed: int = 0) -> Counterexample | None:
    """A counterexample confirmed on onnxruntime, found before ``deadline``
    (time.monotonic()), or None."""
    rng = np.random.default_rng(seed)
    sess = model.cache["ort"]
    cases = [(k, c) for k, c in enumerate(prop.cases) if c.disjuncts]
    if not cases:
        return None
    best: list[tuple[float, np.ndarray]] = [(math.inf, (c.lower + c.upper) / 2) for _, c in cases]
    rounds = 0
    while time.monotonic() < deadline:
        for slot, (k, case) in enumerate(cases):
            lo, hi = case.lower, case.upper
            points = _proposals(rng, lo, hi, best[slot][1], rounds)
            for x in points:
                v = _violation(sess, model, case, x)
                if v <= 0:
                    found = confirm(model, prop, k, x)  # type: ignore[arg-type]
                    if found is not None:
                        return found
                if v < best[slot][0]:
                    best[slot] = (v, x)
            if time.monotonic() >= deadline:
                break
        rounds += 1
    return None


def _proposals(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, best: np.ndarray,
               rounds: int) -> list[np.ndarray]:
    """Round 0: centre and corners; then half uniform samples, half local steps from the
    best point (a few coordinates moved by a Gaussian step of a shrinking scale)."""
    width = hi - lo
    varying = np.flatnonzero(width > 0)
    if rounds == 0:
        pts = [(lo + hi) / 2, lo.copy(), hi.copy()]
        pts += [np.where(rng.random(lo.shape) < 0.5, lo, hi) for _ in range(BATCH - 3)]
        return pts
    pts = [lo + width * rng.random(lo.shape) for _ in range(BATCH // 2)]
    scale = 0.3 / math.sqrt(1 + rounds / 8)
    for _ in range(BATCH - len(pts)):
        x = best.copy()
        if len(varying):
            pick = rng.choice(varying, size=min(len(varying), int(rng.integers(1, 9))),
                              replace=False)
            x[pick] += rng.normal(0, scale, len(pick)) * width[pick]
        pts.append(np.clip(x, lo, hi))
    return pts


def _violation(sess: Any, model: OpaqueModel, case: Any, x: np.ndarray) -> float:
    """v(x) on onnxruntime's output (inf where it is not finite)."""
    feed = np.asarray(x, dtype=model.input_dtype).reshape(model.input_shape)
    (y,) = sess.run([model.output_name], {model.input_name: feed})
    y = np.asarray(y, dtype=np.float64).ravel()
    if not np.all(np.isfinite(y)):
        return math.inf
    return min(float(np.max(conj.C @ y - conj.d)) for conj in case.disjuncts)
