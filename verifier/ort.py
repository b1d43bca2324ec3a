"""onnxruntime: the independent judge of counterexamples (DESIGN.md: Soundness rule 2)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from verifier.importer.onnx_import import Model

# Basic graph optimisations only (constant folding, dead nodes): the extended levels fuse
# patterns such as GeLU into approximate kernels, which compute another function (2.9e-6
# apart on a GeLU with constant 1.4142); the judge runs the model as written.
JUDGE_OPTIMIZATION = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


def session(model: Model) -> ort.InferenceSession:
    """One CPU inference session per imported model, created on first use."""
    sess = model.cache.get("ort")
    if sess is None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        opts.graph_optimization_level = JUDGE_OPTIMIZATION
        sess = ort.InferenceSession(model.onnx_bytes, opts, providers=["CPUExecutionProvider"])
        model.cache["ort"] = sess
    return sess


def run(model: Model, x: np.ndarray) -> np.ndarray:
    """The original model's output (flat, float64) on one flat input vector."""
    feed = np.asarray(x, dtype=model.input_dtype).reshape(model.input_shape)
    (y,) = session(model).run([model.output_name], {model.input_name: feed})
    return np.asarray(y, dtype=np.float64).ravel()
