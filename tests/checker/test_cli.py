"""The check command: exit status 0 (holds), 1 (does not, with the first failing leaf and
the reason), 2 (unusable files); --json and --verbose; ``python -m checker``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from checker.cli import add_check_command, main
from tests.checker import proofgen as pg
from tests.checker.conftest import Instance

ROOT = Path(__file__).resolve().parents[2]


def _args(inst: Instance, proof: Path | None = None) -> list[str]:
    return [str(proof or inst.proof), str(inst.model), str(inst.spec)]


def test_module_entry_point_exit_0(relu_split: Instance) -> None:
    run = subprocess.run([sys.executable, "-m", "checker", *_args(relu_split)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("proof holds: ")


def test_exit_1_names_leaf_and_reason(relu_split: Instance, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    man, arrays = pg.load_proof(relu_split.proof)
    box = arrays["L1/A0/box"].copy()
    box[1, 0] += 0.01
    arrays["L1/A0/box"] = box
    bad = pg.save_proof(relu_split.proof.parent / "bad.npz", man, arrays)
    assert main(_args(relu_split, bad)) == 1
    out = capsys.readouterr().out
    assert out.startswith("proof does not hold (first failure at leaf 1): leaf 1, activation 0")
    assert "Traceback" not in out and out.count("\n") == 1
    assert main([*_args(relu_split, bad), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["failing_leaf"] == 1
    assert "lower line" in report["reason"] and report["leaves"] == len(man["leaves"])


def test_exit_2_for_unusable_files(relu_split: Instance, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_args(relu_split, tmp_path / "absent.npz")) == 2
    assert "cannot check:" in capsys.readouterr().err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    man, arrays = pg.load_proof(relu_split.proof)
    man["model_sha256"] = pg.sha256(junk)
    proof = pg.save_proof(tmp_path / "p.npz", man, arrays)
    assert main([str(proof), str(junk), str(relu_split.spec)]) == 2
    err = capsys.readouterr().err
    assert "cannot read the model" in err and "Traceback" not in err
    assert main([str(proof), str(junk), str(relu_split.spec), "--json"]) == 2
    assert "unusable" in json.loads(capsys.readouterr().out)


def test_json_and_verbose_on_success(relu_split: Instance,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_args(relu_split), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["reason"] is None and report["cases"] == 1
    assert report["leaves"] >= 2 and report["seconds"] >= 0
    assert main([*_args(relu_split), "--verbose"]) == 0


def test_add_check_command_registers_the_subcommand(relu_split: Instance) -> None:
    parser = argparse.ArgumentParser(prog="nnverify")
    add_check_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["check", *_args(relu_split), "--json"])
    assert args.command == "check" and args.json and args.func(args) == 0
