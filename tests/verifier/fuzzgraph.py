"""The differential fuzzing harness shared by test_import_fuzz.py and the op test files.

A generator draws a small graph (``G``) with hypothesis and returns it with its output's
name; ``check_against_ort`` evaluates the model with nnverify (``load_model`` then
``graph.forward``) and with onnxruntime (graph optimisations off) and fails on any
disagreement beyond float noise.  An op test file ``test_op_*.py`` that defines
``FUZZ = {"OpType": generator}`` has its generators run by test_import_fuzz.py, which also
counts its ops as covered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import hypothesis
import numpy as np
import onnx
import onnxruntime as ort
import torch
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import verifier
from verifier.errors import ModelError, UnsupportedOpError

MAX_FUZZ_OPSET = 21
TOL = 3e-6  # float32 (onnxruntime) against float64 (nnverify) on small graphs
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


@dataclass
class G:
    """A graph under construction: input X of ``shape``, nodes, initializers."""

    shape: tuple[int, ...]
    opset: int
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    out_type: int = TensorProto.FLOAT
    n: int = 0

    def const(self, value: np.ndarray) -> str:
        self.n += 1
        name = f"k{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> list[str]:
        self.n += 1
        outs = [f"t{self.n}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"{op}_{self.n}", **attrs))
        return outs

    def model(self, out: str) -> bytes:
        graph = helper.make_graph(
            self.nodes, "fuzz", [helper.make_tensor_value_info("X", TensorProto.FLOAT, self.shape)],
            [helper.make_tensor_value_info(out, self.out_type, None)], self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                              ir_version=8 if self.opset <= 15 else 10)
        return m.SerializeToString()


def f32(rng_draw, shape) -> np.ndarray:
    return np.asarray(rng_draw, dtype=np.float32).reshape(shape)


# -- drawing helpers ---------------------------------------------------------------------

def shape_of(draw, min_rank=1, max_rank=4, lo=1, hi=4) -> tuple[int, ...]:
    rank = draw(st.integers(min_rank, max_rank))
    return tuple(draw(st.integers(lo, hi)) for _ in range(rank))


def array(draw, shape, lo=-2.0, hi=2.0) -> np.ndarray:
    seed = draw(st.integers(0, 2**31 - 1))
    return np.random.default_rng(seed).uniform(lo, hi, size=shape).astype(np.float32)


def opset(draw, lo=7, hi=MAX_FUZZ_OPSET) -> int:
    return draw(st.integers(max(lo, 7), min(hi, MAX_FUZZ_OPSET)))


def fl(lo: float, hi: float):
    """Floats in [lo, hi] that float32 represents exactly."""
    return st.floats(lo, hi).map(lambda v: float(np.float32(v)))


def maybe(draw, strategy, p_absent=0.35):
    """A drawn value or None (the attribute is left out)."""
    return None if draw(st.floats(0, 1)) < p_absent else draw(strategy)


def put(attrs: dict, name: str, value) -> None:
    if value is not None:
        attrs[name] = value


def bcast_shape(draw, shape) -> tuple[int, ...]:
    """A shape that broadcasts to ``shape`` (a suffix with some dims set to 1)."""
    k = draw(st.integers(0, len(shape)))
    return tuple(1 if draw(st.booleans()) else d for d in shape[len(shape) - k:])


def positive(g: G, x: str) -> str:
    """A variable > 0 made from x: sigmoid(x) + 0.25."""
    (s,) = g.node("Sigmoid", [x])
    return g.node("Add", [s, g.const(np.float32(0.25))])[0]


# -- the differential check --------------------------------------------------------------

def _ort_outputs(model: bytes, xs: np.ndarray) -> np.ndarray | None:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 4
    try:
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        return np.stack([np.asarray(sess.run(None, {"X": x})[0], dtype=np.float64)
                         for x in xs])
    except Exception:  # onnxruntime rejects the random graph: not a test case
        return None


def check_against_ort(model: bytes, shape: tuple[int, ...]) -> str:
    """'refused', or 'agrees'; fails the test on any disagreement."""
    xs = np.random.default_rng(0).uniform(-2, 2, size=(3, *shape)).astype(np.float32)
    ref = _ort_outputs(model, xs)
    if ref is None:
        hypothesis.event("onnxruntime rejects")
    assume(ref is not None)
    assert ref is not None
    assume(np.isfinite(ref).all())
    try:
        m = verifier.load_model(model)
    except UnsupportedOpError:
        return "refused"
    except ModelError as exc:  # a clear refusal, not an internal error wrapped as one
        assert "cannot be imported" not in str(exc), str(exc)
        return "refused"
    got = m.graph.forward(torch.tensor(xs.reshape(3, -1), dtype=torch.float64)).detach()
    got = got.numpy()
    assert got.shape == ref.shape, (got.shape, ref.shape, onnx.load_from_string(model).graph)
    np.testing.assert_allclose(got, ref, rtol=TOL, atol=TOL,
                               err_msg=str(onnx.load_from_string(model).graph))
    return "agrees"


def reduce_graph(draw, ops: list[str]) -> tuple[G, str]:
    """One of the Reduce* ``ops`` with random axes (an attribute before the opset that made
    them an input: 13 for ReduceSum, 18 for the others), keepdims and noop_with_empty_axes."""
    op = draw(st.sampled_from(ops))
    g = G(shape_of(draw), opset(draw))
    r = len(g.shape)
    axes = maybe(draw, st.lists(st.integers(-r, r - 1), max_size=r, unique_by=lambda a: a % r))
    attrs: dict = {}
    put(attrs, "keepdims", maybe(draw, st.integers(0, 1)))
    ins = ["X"]
    if g.opset >= (13 if op == "ReduceSum" else 18):
        put(attrs, "noop_with_empty_axes", maybe(draw, st.integers(0, 1)))
        if axes is not None:
            ins.append(g.const(np.array(axes, dtype=np.int64)))
    elif axes:
        attrs["axes"] = axes
    return g, g.node(op, ins, **attrs)[0]
