"""The command line and the Python API, end to end on the shared test benchmark."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from verifier import Settings, load_model, parse_vnnlib, parse_vnnlib_file, verify
from verifier.bounds.crown import crown_rows
from verifier.errors import ModelError, UnsupportedOpError

from .conftest import bench_instances

TEST_INSTANCES = [(m, s) for m, s in bench_instances() if m.parent.name == "test"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_sat_instance_is_falsified_with_a_confirmed_counterexample(bench, tmp_path):
    model, spec = bench / "test" / "test_sat.onnx", bench / "test" / "test_prop.vnnlib"
    out = tmp_path / "result.txt"
    proc = _cli("verify", str(model), str(spec), "--result-file", str(out), "--timeout", "30")
    assert proc.returncode == 0, proc.stderr
    assert "falsified" in proc.stdout
    lines = out.read_text().split("\n")
    assert lines[0] == "sat"
    values = {}
    for token in out.read_text().replace("(", " ").replace(")", " ").split()[1:]:
        values.setdefault("pending", []).append(token)
    tokens = values["pending"]
    assign = {tokens[i]: float(tokens[i + 1]) for i in range(0, len(tokens), 2)}
    x = np.array([assign[f"X_{i}"] for i in range(5)], dtype=np.float32)
    m = load_model(model)
    prop = parse_vnnlib_file(spec, m.n_inputs, m.n_outputs)
    y = ort.InferenceSession(str(model)).run(None, {m.input_name: x.reshape(m.input_shape)})[0]
    assert prop.violated_by(x, y.ravel(), tol=0.0)
    assert np.allclose([assign[f"Y_{j}"] for j in range(5)], y.ravel(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_path,spec_path", TEST_INSTANCES,
                         ids=[m.stem for m, _ in TEST_INSTANCES])
def test_no_verified_verdict_is_refuted_by_sampling(model_path, spec_path, bench):
    model = load_model(model_path)
    prop = parse_vnnlib_file(spec_path, model.n_inputs, model.n_outputs)
    result = verify(model, prop, Settings(timeout=30))
    assert result.verdict in ("verified", "falsified")
    sess = ort.InferenceSession(str(model_path))
    rng = np.random.default_rng(0)
    violated = False
    for case in prop.cases:
        x = case.lower + rng.uniform(size=(3000, model.n_inputs)) * (case.upper - case.lower)
        for xi in x.astype(np.float32):
            y = sess.run(None, {model.input_name: xi.reshape(model.input_shape)})[0].ravel()
            violated |= prop.violated_by(xi, y, tol=0.0)
    if result.verdict == "verified":
        assert not violated
    else:
        cex = result.counterexamples[0]
        assert prop.violated_by(cex.x, cex.y, tol=0.0)


def test_two_verifications_side_by_side(bench):
    pairs = [(bench / "test" / "test_sat.onnx", bench / "test" / "test_prop.vnnlib"),
             (bench / "test" / "test_unsat.onnx", bench / "test" / "test_prop.vnnlib")]
    jobs = []
    for m, s in pairs:
        model = load_model(m)
        jobs.append((model, parse_vnnlib_file(s, model.n_inputs, model.n_outputs)))
    alone = [verify(m, p, Settings(timeout=30)).verdict for m, p in jobs]
    together: list[str] = [""] * 2

    def work(i: int) -> None:
        together[i] = verify(*jobs[i], Settings(timeout=30)).verdict

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert alone == together == ["falsified", "verified"]
    assert verify(*jobs[0], Settings(timeout=30)).to_dict()["verdict"] == "falsified"


def _linear_model(W: np.ndarray, b: np.ndarray) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["X", "W", "b"], ["Y"], transB=1)], "lin",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, (1, W.shape[1]))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, (1, W.shape[0]))],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def test_linear_model_bound_is_exact():
    rng = np.random.default_rng(3)
    W, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    g = load_model(_linear_model(W, b)).graph
    lo, hi = -np.ones(4), 2 * np.ones(4)
    c = np.array([1.0, -2.0, 0.5])
    Wc = c @ W.astype(np.float64)
    exact = (np.where(Wc > 0, Wc * lo, Wc * hi)).sum() + c @ b
    L, U = torch.tensor(lo).reshape(1, 4), torch.tensor(hi).reshape(1, 4)
    got = crown_rows(g.__class__(g.input_name, g.input_shape, g.nodes, g.output_name),
                     L.double(), U.double(), torch.tensor(c).reshape(1, 1, 3),
                     torch.zeros(1, 1, dtype=torch.float64))
    assert abs(float(got) - exact) < 1e-5


def test_bad_inputs_get_clear_errors(tmp_path, bench):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a model")
    proc = _cli("verify", str(junk), str(bench / "test" / "test_prop.vnnlib"))
    assert proc.returncode == 2 and "not an ONNX model" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = _cli("verify", str(bench / "test" / "test_nano.onnx"),
                str(bench / "test" / "test_prop.vnnlib"))
    assert proc.returncode == 2 and "5" in proc.stderr and "1" in proc.stderr
    truncated = (bench / "test" / "test_sat.onnx").read_bytes()[:200]
    with pytest.raises(ModelError):
        load_model(truncated)


def test_unsupported_ops_are_listed_up_front():
    nodes = [helper.make_node("Relu", ["X"], ["a"], name="ok"),
             helper.make_node("TopK", ["a", "k"], ["v", "i"], name="pick"),
             helper.make_node("Mod", ["v", "v"], ["Y"], name="mod")]
    graph = helper.make_graph(
        nodes, "bad", [helper.make_tensor_value_info("X", TensorProto.FLOAT, (1, 4))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([2], dtype=np.int64), "k")])
    data = helper.make_model(graph).SerializeToString()
    with pytest.raises(UnsupportedOpError) as info:
        load_model(data)
    assert "TopK" in str(info.value) and "pick" in str(info.value)


def test_external_data_is_refused(tmp_path):
    W = np.ones((4, 4), dtype=np.float32)
    model = onnx.load_model_from_string(_linear_model(W, np.zeros(4, dtype=np.float32)))
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    with pytest.raises(ModelError, match="external data"):
        load_model(tmp_path / "m.onnx")


def test_spec_size_mismatch_names_both_sizes(bench):
    model = load_model(bench / "test" / "test_nano.onnx")
    prop = parse_vnnlib((bench / "test" / "test_prop.vnnlib").read_text())
    result = verify(model, prop, Settings(timeout=5))
    assert result.verdict == "error" and "5 inputs" in result.message


def test_vnncomp_contract(bench, tmp_path):
    import gzip

    model = tmp_path / "m.onnx.gz"
    model.write_bytes(gzip.compress((bench / "test" / "test_unsat.onnx").read_bytes()))
    spec = bench / "test" / "test_prop.vnnlib"
    assert _cli("vnncomp", "prepare", "test", str(model), str(spec)).returncode == 0
    out = tmp_path / "res.txt"
    proc = _cli("vnncomp", "run", "test", str(model), str(spec), str(out), "30.0")
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().strip() == "unsat"
    bad = _cli("vnncomp", "prepare", "test", str(bench / "test" / "test_nano.onnx"), str(spec))
    assert bad.returncode != 0 and "5" in bad.stderr
