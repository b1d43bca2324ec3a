"""A model the engine cannot import still gets a search for counterexamples on onnxruntime:
``falsified`` with a counterexample that holds exactly, else ``unknown`` naming the op;
never ``verified``, never an error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from verifier.cli import InputError, load_instance, main, verify_safely
from verifier.search.blackbox import OpaqueModel
from verifier.verify import Settings


def cumsum_model(n: int = 4) -> bytes:
    """y = CumSum(Shrink(x)) with Shrink the identity (bias 0, lambd 0): the engine has no
    Shrink, onnxruntime has."""
    axis = numpy_helper.from_array(np.array(0, dtype=np.int64), "axis")
    graph = helper.make_graph(
        [helper.make_node("Shrink", ["X"], ["S"], name="shrink", bias=0.0, lambd=0.0),
         helper.make_node("CumSum", ["S", "axis"], ["Y"], name="cumsum")], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n])], [axis])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)],
                             ir_version=8).SerializeToString()


def spec(n: int, unsafe: str, lo: float = 0.0, hi: float = 1.0) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(n)]
    lines += [f"(declare-const Y_{i} Real)" for i in range(n)]
    for i in range(n):
        lines += [f"(assert (>= X_{i} {lo}))", f"(assert (<= X_{i} {hi}))"]
    return "\n".join(lines + [unsafe]) + "\n"


def instance(tmp_path: Path, model: bytes, text: str) -> tuple[Path, Path]:
    m, s = tmp_path / "m.onnx", tmp_path / "p.vnnlib"
    m.write_bytes(model)
    s.write_text(text)
    return m, s


def test_counterexample_found_on_onnxruntime(tmp_path: Path) -> None:
    m, s = instance(tmp_path, cumsum_model(), spec(4, "(assert (>= Y_3 3.9))"))
    model, prop = load_instance(m, s)
    assert isinstance(model, OpaqueModel)
    result = verify_safely(model, prop, Settings(timeout=5))
    assert result.verdict == "falsified", result.message
    cex = result.counterexamples[0]
    x = cex.x.astype(np.float32)
    assert np.all(x >= 0) and np.all(x <= 1)
    assert float(np.cumsum(x, dtype=np.float32)[3]) >= 3.9  # independent of onnxruntime


def test_no_counterexample_is_unknown_naming_the_op(tmp_path: Path) -> None:
    m, s = instance(tmp_path, cumsum_model(), spec(4, "(assert (>= Y_3 4.5))"))
    model, prop = load_instance(m, s)
    result = verify_safely(model, prop, Settings(timeout=1))
    assert result.verdict == "unknown"
    assert "Shrink" in result.message and "onnxruntime" in result.message


def test_hidden_counterexample_is_never_verified(tmp_path: Path) -> None:
    """The sum reaches 3.999 only in a tiny corner: found or not, never ``verified``."""
    m, s = instance(tmp_path, cumsum_model(), spec(4, "(assert (>= Y_3 3.99999))"))
    model, prop = load_instance(m, s)
    result = verify_safely(model, prop, Settings(timeout=1))
    assert result.verdict in ("falsified", "unknown")
    for cex in result.counterexamples:
        assert float(np.cumsum(cex.x.astype(np.float32), dtype=np.float32)[3]) >= 3.99999


def test_cli_reports_the_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m, s = instance(tmp_path, cumsum_model(), spec(4, "(assert (>= Y_3 3.9))"))
    out = tmp_path / "result.txt"
    assert main(["verify", str(m), str(s), "--timeout", "5", "--result-file", str(out)]) == 0
    assert out.read_text().startswith("sat\n")
    assert "falsified" in capsys.readouterr().out


def test_model_onnxruntime_cannot_run_keeps_the_importer_reason(tmp_path: Path) -> None:
    """Shrink beside a CumSum with a float axis: onnxruntime refuses the model too, so the
    importer's refusal (naming Shrink) stands."""
    proto = onnx.load_from_string(cumsum_model())
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(0.0, np.float32),
                                                                "axis"))
    m, s = instance(tmp_path, proto.SerializeToString(), spec(4, "(assert (>= Y_3 3.9))"))
    with pytest.raises(InputError, match="Shrink"):
        load_instance(m, s)
