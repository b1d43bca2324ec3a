"""Engine commands of the ``nnverify`` command line: ``verify`` (more join later).

``add_engine_commands(subparsers)`` registers them on the top-level parser, which lives in
service/cli.py with the service's commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .errors import NNVerifyError
from .onnx_import import load_model
from .spec import SpecError, parse_vnnlib_file
from .verify import Result, Settings, verify


def add_engine_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="verify a VNN-LIB property of an ONNX model",
                       description="Decide whether MODEL satisfies SPEC (VNN-LIB).")
    p.add_argument("model", type=Path, help="the ONNX model")
    p.add_argument("spec", type=Path, help="the property, VNN-LIB (.vnnlib or .vnnlib.gz)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--methods", default="ibp,crown,alpha-crown",
                   help="bound methods in order (default ibp,crown,alpha-crown)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--result-file", type=Path,
                   help="write the VNN-COMP result (unsat/sat/unknown/timeout/error) here")
    p.set_defaults(func=run_verify)
    _add_vnncomp(sub)
    try:
        from .lipschitz import add_lipschitz_command
    except ImportError:  # pragma: no cover - the Lipschitz module is optional
        return
    add_lipschitz_command(sub)


def _add_vnncomp(sub: argparse._SubParsersAction) -> None:
    """VNN-COMP's prepare_instance.sh / run_instance.sh contract."""
    p = sub.add_parser("vnncomp", help="VNN-COMP run-script contract (prepare / run)")
    vsub = p.add_subparsers(dest="vnncomp_command", required=True)
    prep = vsub.add_parser("prepare", help="check that an instance can be run (no analysis)")
    run = vsub.add_parser("run", help="verify one instance and write the results file")
    for q in (prep, run):
        q.add_argument("category")
        q.add_argument("onnx", type=Path)
        q.add_argument("vnnlib", type=Path)
    run.add_argument("results", type=Path)
    run.add_argument("timeout", type=float)
    run.add_argument("--device", default="cpu")
    prep.set_defaults(func=run_prepare)
    run.set_defaults(func=run_vnncomp)


def run_prepare(args: argparse.Namespace) -> int:
    """Non-zero exit (instance skipped) when the model or spec cannot be used."""
    try:
        model = load_model(args.onnx)
        parse_vnnlib_file(args.vnnlib, model.n_inputs, model.n_outputs)
    except (NNVerifyError, SpecError, OSError) as exc:
        print(f"nnverify: cannot prepare {args.category} instance: {exc}", file=sys.stderr)
        return 1
    return 0


def run_vnncomp(args: argparse.Namespace) -> int:
    """Verify within the harness's timeout (minus start-up) and write the results file."""
    import time

    started = time.monotonic()
    try:
        model = load_model(args.onnx)
        prop = parse_vnnlib_file(args.vnnlib, model.n_inputs, model.n_outputs)
    except (NNVerifyError, SpecError, OSError) as exc:
        print(f"nnverify: error: {exc}", file=sys.stderr)
        args.results.write_text("error\n")
        return 0
    budget = max(0.5, args.timeout - (time.monotonic() - started) - 1.0)
    result = verify(model, prop, Settings(timeout=budget, device=args.device))
    args.results.write_text(result.to_vnncomp())
    print(f"{result.verdict} in {result.seconds:.2f} s")
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    return Settings(timeout=args.timeout, device=args.device, dtype=args.dtype, methods=methods)


def _write_result(path: Path | None, text: str) -> None:
    if path is not None:
        path.write_text(text)


def run_verify(args: argparse.Namespace) -> int:
    """Exit status 0 when a verdict was reached (whatever it is), 2 on bad input."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        settings = _settings(args)
        settings.validate()
        model = load_model(args.model)
        prop = parse_vnnlib_file(args.spec, model.n_inputs, model.n_outputs)
    except (NNVerifyError, SpecError, ValueError, OSError) as exc:
        print(f"nnverify: error: {exc}", file=sys.stderr)
        _write_result(args.result_file, "error\n")
        return 2
    result = verify(model, prop, settings)
    _write_result(args.result_file, result.to_vnncomp())
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(summary(result))
    return 0 if result.verdict != "error" else 1


def summary(result: Result) -> str:
    lines = [f"verdict: {result.verdict}  ({result.seconds:.2f} s)"]
    if result.message:
        lines.append(f"  {result.message}")
    for m in result.methods:
        lines.append(f"  {m.method:<12} {m.seconds:7.3f} s  open disjuncts "
                     f"{m.open_before} -> {m.open_after}")
    for cex in result.counterexamples[:3]:
        lines.append(f"  counterexample (case {cex.case}, disjunct {cex.disjunct}): "
                     f"output {[round(v, 5) for v in cex.y.tolist()[:10]]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nnverify")
    add_engine_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
