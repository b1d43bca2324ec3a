"""Regenerate the bundled example: a small ReLU classifier and a robustness property.

    python examples/make_examples.py
"""

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).parent


def classifier() -> bytes:
    rng = np.random.default_rng(7)
    w1 = rng.standard_normal((16, 4)).astype(np.float32) / 2
    b1 = rng.standard_normal(16).astype(np.float32) / 4
    w2 = rng.standard_normal((3, 16)).astype(np.float32) / 4
    w2[0] += 0.6  # make class 0 win around the property's centre
    b2 = np.array([0.5, 0.0, -0.2], dtype=np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"),
                                                    (b2, "b2"))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def robustness(centre: list[float], eps: float, label: int, n_out: int) -> str:
    lines = ["; class 0 stays the top class in an L-infinity ball around the centre", ""]
    lines += [f"(declare-const X_{i} Real)" for i in range(len(centre))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    lines.append("")
    for i, c in enumerate(centre):
        lines += [f"(assert (>= X_{i} {c - eps:.6f}))", f"(assert (<= X_{i} {c + eps:.6f}))"]
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(n_out) if j != label)
    lines += ["", f"(assert (or {others}))", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    (HERE / "tiny_classifier.onnx").write_bytes(classifier())
    (HERE / "tiny_robustness.vnnlib").write_text(robustness([0.5, -0.2, 0.1, 0.3], 0.05, 0, 3))
