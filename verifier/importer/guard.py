"""The structural guard (DESIGN.md: Soundness rule 1): before any proof, the imported graph
must agree with onnxruntime on the property's boxes.

At a few points of every box (its centre, two corners, random points), in the model's input
type, onnxruntime's output must lie inside the engine's enclosure of the graph's
floating-point evaluation there: interval propagation of the point itself with every op's
rounding bound added (the same bounds every proof allows for).  An output outside it means
the import got the model's semantics wrong, or an op's rounding bound is too small; either
way no proof may be built on it, so the model is refused, naming the largest discrepancy and
the first node where onnxruntime's value leaves the enclosure.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import torch

from verifier import ort
from verifier.errors import ModelError
from verifier.importer.onnx_import import Model
from verifier.ops.base import Interval
from verifier.property.core import Property
from verifier.search.attack import into_box

MAX_POINTS = 12


def guard_points(model: Model, prop: Property, max_points: int = MAX_POINTS,
                 seed: int = 0) -> np.ndarray:
    """(N, n_inputs) float64 points in the model's input type, inside the boxes: every
    case's centre first, then its two extreme corners, then random points, round robin."""
    rng = np.random.default_rng(seed)
    cases = prop.cases[:max_points]
    per_case: list[list[np.ndarray]] = []
    for case in cases:
        lo, hi = case.lower, case.upper
        candidates = [(lo + hi) / 2, lo, hi] + [lo + rng.random(lo.shape) * (hi - lo)
                                                for _ in range(max_points)]
        per_case.append([into_box(c, lo, hi, model.input_dtype)[0] for c in candidates])
    points: list[np.ndarray] = []
    for k in range(max_points):
        points += [ps[k] for ps in per_case if k < len(ps)]
    return np.stack(points[:max_points]) if points else np.zeros((0, prop.n_inputs))


def enclosures(model: Model, x: torch.Tensor) -> dict[str, Interval]:
    """Per node, the interval holding its floating-point evaluation at the points ``x``."""
    graph = model.graph
    xs = graph.to_input_shape(x)
    box: dict[str, Interval] = {graph.input_name: (xs, xs)}
    u = graph.rounding(x.dtype)
    from verifier.graph import round_box

    for node in graph.nodes:
        ins = [box[i] for i in node.inputs]
        out = node.op.ibp(*ins)
        if u:
            err = node.op.rounding_error(ins, out, u)
            out = round_box(out, err, node.op.relative_rounding(ins, u), graph.largest_finite)
        box[node.name] = out
    return box


def _outside(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """How far each value lies outside [lo, hi] (inf for NaN where the enclosure is finite)."""
    with np.errstate(invalid="ignore"):
        gap = np.maximum(np.maximum(lo - y, y - hi), 0.0)
    nan = np.isnan(y) & np.isfinite(lo) & np.isfinite(hi)
    return np.where(nan, np.inf, np.where(np.isnan(gap), 0.0, gap))


def check_against_onnxruntime(model: Model, prop: Property, dtype: torch.dtype,
                              device: torch.device, max_points: int = MAX_POINTS) -> int:
    """Raise ModelError when onnxruntime's output leaves the enclosure at some guard point;
    returns the number of points checked."""
    points = guard_points(model, prop, max_points)
    if not len(points):
        return 0
    with torch.no_grad():
        x = torch.as_tensor(points, dtype=dtype, device=device)
        lo_t, hi_t = enclosures(model, x)[model.graph.output_name]
    lo = lo_t.reshape(len(points), -1).double().cpu().numpy()
    hi = hi_t.reshape(len(points), -1).double().cpu().numpy()
    ys = np.stack([ort.run(model, p) for p in points])
    gap = _outside(ys, lo, hi)
    if gap.max() > 0:
        p, j = np.unravel_index(int(np.argmax(gap)), gap.shape)
        where = _first_disagreeing_node(model, points[p], dtype, device)
        raise ModelError(
            f"the imported model disagrees with onnxruntime: at a point of the property's "
            f"box, output {j} is {ys[p, j]!r} in onnxruntime but the engine's evaluation "
            f"lies in [{lo[p, j]!r}, {hi[p, j]!r}] (off by {gap[p, j]:.3g}){where}; "
            f"nothing can be proved about this model until its import is fixed")
    return len(points)


def _first_disagreeing_node(model: Model, point: np.ndarray, dtype: torch.dtype,
                            device: torch.device) -> str:
    """', first at node ...' for the first graph node (in order) whose onnxruntime value
    leaves its enclosure at ``point``, or '' when none can be compared."""
    graph = model.graph
    proto = onnx.load_model_from_string(model.onnx_bytes)
    known = {o for n in proto.graph.node for o in n.output}
    names = [n.name for n in graph.nodes if n.name in known]
    existing = {o.name for o in proto.graph.output}
    for name in names:
        if name not in existing:
            proto.graph.output.append(onnx.ValueInfoProto(name=name))
    try:
        opts = onnxruntime.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.JUDGE_OPTIMIZATION
        sess = onnxruntime.InferenceSession(proto.SerializeToString(), opts,
                                            providers=["CPUExecutionProvider"])
        feed = np.asarray(point, dtype=model.input_dtype).reshape(model.input_shape)
        values = dict(zip([o.name for o in sess.get_outputs()],
                          sess.run(None, {model.input_name: feed}), strict=True))
    except Exception:  # a diagnosis only: the refusal stands without it
        return ""
    with torch.no_grad():
        box = enclosures(model, torch.as_tensor(point[None], dtype=dtype, device=device))
    for node in graph.nodes:
        if node.name not in values:
            continue
        v = np.asarray(values[node.name], dtype=np.float64).ravel()
        lo, hi = (t.double().cpu().numpy().ravel() for t in box[node.name])
        if v.shape != lo.shape:
            continue
        gap = _outside(v, lo, hi)
        if gap.max() > 0:
            label = f" '{node.onnx_name}'" if node.onnx_name else ""
            return (f", first at node{label} ({node.op_type}, output '{node.name}', off by "
                    f"{gap.max():.3g})")
    return ""
