"""Exhaustive evaluation over the inputs a model reads only as integers.

Some models read a few input entries only through a cast to an integer type: a patch's
position that indexes the image (VNN-COMP's cctsdb_yolo), a class label.  The bound engine
cannot import such a model (a variable cast to an integer has no useful relaxation), but
when the property fixes every other entry the question is finite.

An entry is *free* when its box holds more than one value of the model's input type.  When
every free entry reaches the computation only through data movement (Gather, Slice,
Reshape, ...: followed entry by entry, ``_integer_only``) into a Cast to an integer type,
the output depends on the free entries only through their truncations toward zero (ONNX's
cast): finitely many classes, each taken by one point of the box (``_classes``).
onnxruntime's output at each, checked exactly against the property (``Conjunction.holds``),
decides the case: a class whose output is unsafe gives a counterexample (through
``confirm``, as everywhere); when no class is unsafe and every output read is finite, no
point of the box is, and the case is ``verified``.  Fixed entries are taken as ``into_box``
takes them (a decimal that is no float32: the nearest one, as for counterexamples).
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from verifier.importer.onnx_import import _fold
from verifier.property.core import Property
from verifier.search.attack import Counterexample, confirm, into_box

#: ONNX integer element types a float may be cast to: int32 and int64, for entries within
#: +-2^31 (narrower or unsigned targets wrap or saturate outside their range)
INTEGER_TYPES = frozenset({6, 7})
#: ops that only copy entries of their first input (the others are constant parameters)
MOVES = frozenset({"Gather", "Slice", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
                   "Transpose", "Identity"})
#: the most classes enumerated (each is one onnxruntime run)
MAX_CLASSES = 200_000


def free_entries(lower: np.ndarray, upper: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The entries whose box holds more than one value of ``dtype`` (bool mask)."""
    lo, _ = into_box(lower, lower, upper, dtype)
    hi, _ = into_box(upper, lower, upper, dtype)
    return lo < hi


def integer_only(proto: onnx.ModelProto, input_name: str, free: np.ndarray) -> bool:
    """Whether every ``free`` entry (flat mask over the input) reaches the graph only through
    data movement with constant parameters into casts to integer types."""
    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i)
                                     for i in graph.initializer}
    shape = next(tuple(d.dim_value for d in i.type.tensor_type.shape.dim)
                 for i in graph.input if i.name == input_name)
    # per tensor that copies input entries: the flat input index of each of its entries
    tracked: dict[str, np.ndarray] = {input_name: np.arange(free.size).reshape(shape)}
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute):
            return False  # a subgraph reads outer tensors its node does not list
        moved = [name for name in node.input if name in tracked]
        if not moved:
            if node.input and all(not n or n in consts for n in node.input) or \
                    node.op_type == "Constant":
                try:  # constant parameters computed from constants
                    args = [consts[n] if n else None for n in node.input]
                    consts.update(zip(node.output, _fold(node, args, opset), strict=False))
                except Exception:  # not needed unless a movement reads it
                    pass
            continue
        reads_free = any(free[tracked[n]].any() for n in moved)
        if node.op_type in MOVES and moved == [node.input[0]] and \
                all(not n or n in consts for n in node.input[1:]) and _evaluable(node, consts):
            args = [tracked[n] if n in tracked else consts[n] if n else None
                    for n in node.input]
            tracked[node.output[0]] = np.asarray(_fold(node, args, opset)[0])
        elif node.op_type == "Cast" and _cast_to(node) in INTEGER_TYPES or \
                node.op_type in ("Shape", "Size"):  # the latter read no values
            continue
        elif reads_free:
            return False
    return not any(free[tracked[o.name]].any() for o in graph.output if o.name in tracked)


def _evaluable(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> bool:
    """Whether ONNX's reference evaluator computes this movement's index map right (it
    gets a Slice with negative steps wrong: verifier/importer/onnx_import.py)."""
    steps = node.input[4] if node.op_type == "Slice" and len(node.input) > 4 else ""
    return not steps or bool((np.asarray(consts[steps]) > 0).all())


def _cast_to(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "to"), 0)


def _classes(lo: np.ndarray, hi: np.ndarray) -> list[list[float]]:
    """Per free entry with box [lo, hi] (values of the input type), one point of each class
    of its truncation toward zero: k itself where it lies in the box, else the box's end
    that truncates to k."""
    out = []
    for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
        out.append([min(max(float(k), a), b) for k in range(math.trunc(a), math.trunc(b) + 1)])
    return out


def enumerate_cases(model: Any, prop: Property, deadline: float
                    ) -> tuple[str, Counterexample | None, str] | None:
    """("verified" | "falsified" | "timeout", counterexample, message) by enumerating the
    integer classes of the free entries of every case, or None where the method does not
    apply (a free entry read as a float, too many classes, an entry out of range)."""
    proto = onnx.load_from_string(model.onnx_bytes)
    sess = model.cache["ort"]
    plans = []
    total = 0
    for k, case in enumerate(prop.cases):
        if not case.disjuncts:
            continue
        free = free_entries(case.lower, case.upper, model.input_dtype)
        try:
            applies = bool(free.any()) and integer_only(proto, model.input_name, free)
        except Exception:  # a movement the reference evaluator cannot run: not this case
            applies = False
        if not applies:
            return None
        lo, _ = into_box(case.lower, case.lower, case.upper, model.input_dtype)
        hi, _ = into_box(case.upper, case.lower, case.upper, model.input_dtype)
        if np.abs(np.concatenate([lo[free], hi[free]])).max() >= 2.0 ** 31:
            return None
        classes = _classes(lo[free], hi[free])
        total += math.prod(len(c) for c in classes)
        if total > MAX_CLASSES:
            return None
        plans.append((k, case, free, lo, classes))
    if not plans:
        return None
    done = 0
    for k, case, free, base, classes in plans:
        for values in itertools.product(*classes):
            if time.monotonic() >= deadline:
                return "timeout", None, (f"{done} of {total} integer classes of the free "
                                         "inputs evaluated, none unsafe")
            x = base.copy()
            x[free] = values
            feed = np.asarray(x, dtype=model.input_dtype).reshape(model.input_shape)
            (y,) = sess.run([model.output_name], {model.input_name: feed})
            y = np.asarray(y, dtype=np.float64).ravel()
            if any(conj.holds(y) for conj in case.disjuncts):
                found = confirm(model, prop, k, x)
                if found is not None:
                    return "falsified", found, ""
                return None  # the point left its box: not this method's case
            if not all(np.isfinite(y[np.any(conj.C != 0, axis=0)]).all()
                       for conj in case.disjuncts):
                return None
            done += 1
    return "verified", None, (f"every one of the {total} integer classes of the free inputs "
                              "(read only through casts to integers) evaluated on "
                              "onnxruntime: none unsafe")
