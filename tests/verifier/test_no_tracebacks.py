"""No stack traces: every hostile model, property or option is either a verdict or one clear
error message (exit status 2, ``error`` with the message in the result file), never a
Python traceback, from the command line and from the Python API.

Most cases call the ``nnverify`` entry point in-process (the same ``main``); a few run the
installed ``.venv/bin/nnverify`` as a subprocess to check the real process boundary.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.cli import main
from verifier import Settings, SpecError, load_model, parse_json_spec, parse_vnnlib, verify
from verifier.errors import ModelError
from verifier.verify import VERDICTS

from .hostile_inputs import Hostile, good_model, hostile_models, hostile_specs, vnnlib

MODELS = hostile_models()
SPECS = hostile_specs()
NNVERIFY = Path(sys.executable).parent / "nnverify"
RESULT_WORDS = ("sat", "unsat", "unknown", "timeout")


def _write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    """``nnverify argv`` in-process: exit status, stdout, stderr (it must not raise)."""
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _check_outcome(rc: int, out: str, err: str, result: Path | None, must_fail: bool) -> None:
    assert "Traceback" not in out + err
    assert rc in (0, 2), (rc, out, err)
    if rc == 2:
        assert "nnverify: error: " in err and len(err.strip()) > 25, err
        if result is not None:
            lines = result.read_text().splitlines()
            assert lines[0] == "error" and len(lines) > 1, lines  # the message follows
    else:
        assert not must_fail, f"expected an error, got: {out}"
        if result is not None:
            assert result.read_text().split("\n")[0] in RESULT_WORDS


# -- models ----------------------------------------------------------------------------
@pytest.mark.parametrize("case", MODELS, ids=[m.name for m in MODELS])
def test_verify_command_on_hostile_models(case: Hostile, tmp_path, capsys):
    model = _write(tmp_path, "m.onnx", case.data)
    spec = _write(tmp_path, "p.vnnlib", vnnlib(case.n_in, case.n_out, out=""))
    result = tmp_path / "result.txt"
    rc, out, err = _run(capsys, "verify", str(model), str(spec), "--timeout", "2",
                        "--result-file", str(result))
    _check_outcome(rc, out, err, result, case.must_fail)
    if rc == 2:
        assert "m.onnx" in err or "p.vnnlib" in err  # the message says where


@pytest.mark.parametrize("case", [m for m in MODELS if m.must_fail],
                         ids=[m.name for m in MODELS if m.must_fail])
def test_vnncomp_commands_on_hostile_models(case: Hostile, tmp_path, capsys):
    model = _write(tmp_path, "m.onnx", case.data)
    spec = _write(tmp_path, "p.vnnlib", vnnlib(case.n_in, case.n_out))
    rc, out, err = _run(capsys, "vnncomp", "prepare", "cat", str(model), str(spec))
    _check_outcome(rc, out, err, None, must_fail=True)
    assert "cannot prepare cat instance" in err
    result = tmp_path / "result.txt"
    rc, out, err = _run(capsys, "vnncomp", "run", "cat", str(model), str(spec), str(result), "5")
    _check_outcome(rc, out, err, result, must_fail=True)


@pytest.mark.parametrize("case", MODELS, ids=[m.name for m in MODELS])
def test_lipschitz_command_on_hostile_models(case: Hostile, tmp_path, capsys):
    model = _write(tmp_path, "m.onnx", case.data)
    centre = ",".join(["0"] * max(case.n_in, 1))
    rc, out, err = _run(capsys, "lipschitz", str(model), "--center", centre, "--eps", "0.1",
                        "--samples", "8", "--attack-steps", "2")
    _check_outcome(rc, out, err, None, case.must_fail)


@pytest.mark.parametrize("case", MODELS, ids=[m.name for m in MODELS])
def test_python_api_on_hostile_models(case: Hostile):
    """load_model raises ModelError or gives a model; parse_vnnlib raises SpecError or gives
    a property; verify returns a Result, never raises (``error`` carries its message)."""
    try:
        model = load_model(case.data)
        prop = parse_vnnlib(vnnlib(model.n_inputs, model.n_outputs, out=""))
    except (ModelError, SpecError) as exc:
        assert str(exc)
        return
    result = verify(model, prop, Settings(timeout=2))
    assert result.verdict in VERDICTS
    assert result.verdict != "error" or result.message


def test_infinite_weights_are_never_verified():
    """y = inf * (x0 + x1): at x = (-1, -1) onnxruntime gives y_0 = -inf <= -100.  (BaB
    answered `verified` with bound -inf here, "every domain refuted (0 domains)".)"""
    model = next(m for m in MODELS if m.name == "inf_weights")
    result = verify(load_model(model.data), parse_vnnlib(vnnlib()), Settings(timeout=3))
    assert result.verdict != "verified", result.to_dict()


# -- properties ------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SPECS))
def test_verify_command_on_hostile_specs(name: str, tmp_path, capsys):
    text, must_fail = SPECS[name]
    model = _write(tmp_path, "m.onnx", good_model())
    spec = _write(tmp_path, "p.vnnlib", text)
    result = tmp_path / "result.txt"
    rc, out, err = _run(capsys, "verify", str(model), str(spec), "--timeout", "2",
                        "--result-file", str(result))
    _check_outcome(rc, out, err, result, must_fail)
    if must_fail:
        assert "p.vnnlib" in err


@pytest.mark.parametrize("name", list(SPECS))
def test_python_api_on_hostile_specs(name: str):
    text, must_fail = SPECS[name]
    try:
        parse_vnnlib(text, 2, 2)
    except SpecError as exc:
        assert str(exc)
    else:
        assert not must_fail


def test_unreadable_spec_files(tmp_path, capsys):
    model = _write(tmp_path, "m.onnx", good_model())
    damaged = _write(tmp_path, "p.vnnlib.gz", b"\x1f\x8bnot really gzip")
    for spec in (damaged, tmp_path / "missing.vnnlib", tmp_path):
        result = tmp_path / "r.txt"
        rc, out, err = _run(capsys, "verify", str(model), str(spec), "--result-file", str(result))
        _check_outcome(rc, out, err, result, must_fail=True)
        assert str(spec) in err


def test_huge_spec_file(tmp_path, capsys):
    model = _write(tmp_path, "m.onnx", good_model())
    spec = _write(tmp_path, "p.vnnlib", vnnlib() + ";" + "x" * (20 << 20) + "\n")
    rc, out, err = _run(capsys, "verify", str(model), str(spec), "--timeout", "2")
    _check_outcome(rc, out, err, None, must_fail=False)


def test_python_api_on_wrong_types():
    with pytest.raises(SpecError, match="text"):
        parse_vnnlib(None)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="overflows"):
        parse_json_spec({"kind": "robustness", "center": [1e308, 0], "epsilon": 1e308,
                         "label": 0}, 2, 2)
    model = load_model(good_model())
    wrong = parse_vnnlib(vnnlib(n_in=3))
    result = verify(model, wrong, Settings(timeout=2))
    assert result.verdict == "error" and "3 inputs" in result.message


# -- options and output files ------------------------------------------------------------
BAD_OPTIONS = [
    (["--timeout", "nan"], "--timeout"),
    (["--timeout", "-1"], "--timeout"),
    (["--timeout", "inf"], "--timeout"),
    (["--device", "bogus"], "--device"),
    (["--device", "cuda:99"], "--device"),
    (["--methods", "foo"], "foo"),
    (["--result-file", "/nonexistent-dir/r.txt"], "result file"),
]


@pytest.mark.parametrize("extra,word", BAD_OPTIONS, ids=[" ".join(e) for e, _ in BAD_OPTIONS])
def test_bad_options_are_clear_errors(extra, word, tmp_path, capsys):
    model = _write(tmp_path, "m.onnx", good_model())
    spec = _write(tmp_path, "p.vnnlib", vnnlib())
    rc, out, err = _run(capsys, "verify", str(model), str(spec), *extra)
    _check_outcome(rc, out, err, None, must_fail=True)
    assert word in err


def test_vnncomp_run_bad_timeout_and_results_path(tmp_path, capsys):
    model = _write(tmp_path, "m.onnx", good_model())
    spec = _write(tmp_path, "p.vnnlib", vnnlib())
    result = tmp_path / "r.txt"
    rc, out, err = _run(capsys, "vnncomp", "run", "c", str(model), str(spec), str(result), "nan")
    _check_outcome(rc, out, err, result, must_fail=True)
    rc, out, err = _run(capsys, "vnncomp", "run", "c", str(model), str(spec),
                        str(tmp_path / "no" / "r.txt"), "5")
    _check_outcome(rc, out, err, None, must_fail=True)
    assert "result file" in err


BAD_LIPSCHITZ = [
    (["--center", "0,0,0"], "3"),
    (["--center", "a,b"], "a"),
    (["--center", "nan,0"], "finite"),
    (["--center", "0,0", "--eps", "nan"], "--eps"),
    (["--center", "0,0", "--eps", "inf"], "--eps"),
    (["--center", "0,0", "--output-row", "5"], "5"),
    (["--center", "0,0", "--output-row", "1.5"], "integer"),
    (["--center", "0,0", "--output-row", "x"], "x"),
    (["--center", "0,0", "--samples", "-5"], "non-negative"),
]


@pytest.mark.parametrize("extra,word", BAD_LIPSCHITZ, ids=[" ".join(e) for e, _ in BAD_LIPSCHITZ])
def test_lipschitz_bad_arguments(extra, word, tmp_path, capsys):
    model = _write(tmp_path, "m.onnx", good_model())
    args = extra if "--eps" in extra else [*extra, "--eps", "0.1"]
    args = args if "--samples" in extra else [*args, "--samples", "8"]
    rc, out, err = _run(capsys, "lipschitz", str(model), *args)
    _check_outcome(rc, out, err, None, must_fail=True)
    assert word in err


def test_lipschitz_bad_centre_files(tmp_path, capsys):
    model = _write(tmp_path, "m.onnx", good_model())
    pickled = _write(tmp_path, "c.npy", b"not an array")
    short = tmp_path / "short.npy"
    np.save(short, np.zeros(3))
    broken = _write(tmp_path, "c.vnnlib", "(assert (<= X_0")
    for path in (pickled, short, broken, tmp_path / "missing.npy"):
        rc, out, err = _run(capsys, "lipschitz", str(model), "--center-file", str(path),
                            "--eps", "0.1")
        _check_outcome(rc, out, err, None, must_fail=True)


# -- the real process boundary ------------------------------------------------------------
def _process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(NNVERIFY), *args], capture_output=True, text=True, timeout=120,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


@pytest.mark.skipif(not NNVERIFY.exists(), reason="the nnverify script is not installed")
def test_installed_command_reports_the_audit_crash_cleanly(tmp_path):
    model = next(m for m in MODELS if m.name == "relu_of_constant_is_output")
    onnx_path = _write(tmp_path, "m.onnx", model.data)
    spec = _write(tmp_path, "p.vnnlib", vnnlib())
    result = tmp_path / "r.txt"
    for argv in (["verify", str(onnx_path), str(spec), "--result-file", str(result)],
                 ["vnncomp", "run", "c", str(onnx_path), str(spec), str(result), "5"],
                 ["lipschitz", str(onnx_path), "--center", "0,0", "--eps", "0.1"]):
        proc = _process(*argv)
        _check_outcome(proc.returncode, proc.stdout, proc.stderr,
                       result if "lipschitz" not in argv else None, must_fail=True)
        assert "m.onnx" in proc.stderr


@pytest.mark.skipif(not NNVERIFY.exists(), reason="the nnverify script is not installed")
def test_installed_command_on_a_closed_pipe(tmp_path):
    """`nnverify verify ... --json | head -c 1`: no BrokenPipeError traceback.  The reading
    end is closed before the command has started up, so its first write fails."""
    onnx_path = _write(tmp_path, "m.onnx", good_model())
    spec = _write(tmp_path, "p.vnnlib", vnnlib())
    proc = subprocess.Popen([str(NNVERIFY), "verify", str(onnx_path), str(spec), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == 0
