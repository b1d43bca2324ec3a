"""The engine's proofs (verifier/prove.py) before the independent checker (checker/): the
proofs of verified shared instances are accepted; the same proofs are rejected against a
model whose last layer is scaled so that the property no longer holds, and when tampered
with; ``nnverify verify --certificate`` and ``nnverify check`` round-trip on the command
line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.proofs import scaled_last_layer, with_manifest
from checker import check
from verifier import load_model, parse_vnnlib_file
from verifier.prove import ProofSettings, prove, sha256_file
from verifier.verify import Settings, verify

ROOT = Path(__file__).resolve().parents[2]

# the verified shared instances of test, acasxu, mnist_fc and eran: all 17 the engine
# verifies but acasxu 3_6 prop_1 (6,622 leaves: a 41 s search, 7 s check), which
# bench/proofs.py runs with the others
ACAS = "onnx/ACASXU_run2a_{}_batch_2000.onnx"
ERAN_SIGMOID = "nets/ffnnSIGMOID__Point_6x200.onnx"
INSTANCES = [
    ("test", "test_nano.onnx", "test_nano.vnnlib"),
    ("test", "test_tiny.onnx", "test_tiny.vnnlib"),
    ("test", "test_small.onnx", "test_small.vnnlib"),
    ("test", "test_unsat.onnx", "test_prop.vnnlib"),
    ("acasxu", ACAS.format("1_1"), "vnnlib/prop_1.vnnlib"),
    ("acasxu", ACAS.format("1_4"), "vnnlib/prop_4.vnnlib"),
    ("mnist_fc", "onnx/mnist-net_256x2.onnx", "vnnlib/prop_0_0.03.vnnlib"),
    ("eran", "nets/mnist_relu_9_200.onnx",
     "specs/mnist/mnist_spec_idx_8098_eps_0.01500.vnnlib"),
    ("acasxu", ACAS.format("1_3"), "vnnlib/prop_3.vnnlib"),
    ("acasxu", ACAS.format("3_8"), "vnnlib/prop_3.vnnlib"),
    ("acasxu", ACAS.format("3_9"), "vnnlib/prop_4.vnnlib"),
    ("acasxu", ACAS.format("3_3"), "vnnlib/prop_9.vnnlib"),  # 1,885 leaves, about 9 s
    ("mnist_fc", "onnx/mnist-net_256x4.onnx", "vnnlib/prop_0_0.03.vnnlib"),
    ("mnist_fc", "onnx/mnist-net_256x6.onnx", "vnnlib/prop_0_0.03.vnnlib"),
    ("eran", ERAN_SIGMOID, "specs/mnist/mnist_spec_idx_7167_eps_0.01200.vnnlib"),
    ("eran", ERAN_SIGMOID, "specs/mnist/mnist_spec_idx_7827_eps_0.01200.vnnlib"),
]


def _prove(model_path: Path, spec_path: Path, out: Path) -> None:
    model = load_model(model_path)
    prop = parse_vnnlib_file(spec_path, model.n_inputs, model.n_outputs)
    outcome = prove(model, prop, out, model_path, spec_path, ProofSettings(timeout=120))
    assert outcome.ok, outcome.reason


@pytest.mark.parametrize("family,onnx_rel,spec_rel", INSTANCES,
                         ids=[f"{f}-{Path(o).stem}-{Path(s).stem}" for f, o, s in INSTANCES])
def test_the_checker_accepts_the_engines_proofs(bench: Path, tmp_path: Path, family: str,
                                                onnx_rel: str, spec_rel: str) -> None:
    model_path, spec_path = bench / family / onnx_rel, bench / family / spec_rel
    out = tmp_path / "p.nnvproof"
    _prove(model_path, spec_path, out)
    report = check(out, model_path, spec_path)
    assert report.ok, report.reason


@pytest.mark.parametrize("family,onnx_rel,spec_rel,factor",
                         [(*INSTANCES[3], -1.0), (*INSTANCES[4], -1000.0),
                          (*INSTANCES[6], -1.0)],
                         ids=["test_unsat", "acasxu-1_1-prop_1", "mnist_fc-256x2"])
def test_a_proof_is_rejected_for_a_model_whose_property_fails(
        bench: Path, tmp_path: Path, family: str, onnx_rel: str, spec_rel: str,
        factor: float) -> None:
    model_path, spec_path = bench / family / onnx_rel, bench / family / spec_rel
    proof = tmp_path / "p.nnvproof"
    _prove(model_path, spec_path, proof)
    flipped = tmp_path / "flipped.onnx"
    scaled_last_layer(model_path, flipped, factor)
    model = load_model(flipped)
    prop = parse_vnnlib_file(spec_path, model.n_inputs, model.n_outputs)
    assert verify(model, prop, Settings(timeout=30)).verdict == "falsified"
    # as it is: the proof names another model
    report = check(proof, flipped, spec_path)
    assert not report.ok and "another model" in str(report.reason)
    # with the flipped model's hash written in: the bounds themselves fail
    forged = tmp_path / "forged.nnvproof"
    with_manifest(proof, forged, model_sha256=sha256_file(flipped))
    report = check(forged, flipped, spec_path)
    assert not report.ok
    assert report.failing_leaf is not None


def test_command_line_round_trip(bench: Path, tmp_path: Path) -> None:
    model_path = bench / "test" / "test_unsat.onnx"
    spec_path = bench / "test" / "test_prop.vnnlib"
    proof = tmp_path / "cert.nnvproof"
    run = subprocess.run([sys.executable, "-m", "service.cli", "verify", str(model_path),
                          str(spec_path), "--certificate", str(proof), "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["verdict"] == "verified" and out["proof"]["written"], out.get("proof")
    ok = subprocess.run([sys.executable, "-m", "service.cli", "check", str(proof),
                         str(model_path), str(spec_path)], capture_output=True, text=True,
                        cwd=ROOT, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    flipped = tmp_path / "flipped.onnx"
    scaled_last_layer(model_path, flipped, -1.0)
    bad = subprocess.run([sys.executable, "-m", "service.cli", "check", str(proof),
                          str(flipped), str(spec_path)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert bad.returncode == 1
    assert "Traceback" not in bad.stdout + bad.stderr
