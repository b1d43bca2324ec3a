"""Engine commands of the ``nnverify`` command line: ``verify`` (more join later).

``add_engine_commands(subparsers)`` registers them on the top-level parser, which lives in
service/cli.py with the service's commands.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from verifier.bounds.limits import parse_bytes
from verifier.errors import NNVerifyError
from verifier.importer.onnx_import import Model, load_model
from verifier.property import SpecError, parse_vnnlib_file
from verifier.property.core import Property
from verifier.search.blackbox import OpaqueModel, load_or_opaque, verify_opaque
from verifier.verify import Result, Settings, verify


def add_engine_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="verify a VNN-LIB property of an ONNX model",
                       description="Decide whether MODEL satisfies SPEC (VNN-LIB).")
    p.add_argument("model", type=Path, help="the ONNX model")
    p.add_argument("spec", type=Path, help="the property, VNN-LIB (.vnnlib or .vnnlib.gz)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float64"],
                   help="bound arithmetic (default auto: the model's own precision)")
    p.add_argument("--methods", default="ibp,crown,alpha-crown",
                   help="bound methods in order (default ibp,crown,alpha-crown)")
    p.add_argument("--memory-budget", metavar="SIZE",
                   help="memory the run may hold, e.g. 8G or 512M (default: 60%% of the "
                        "machine's, 85%% of a GPU's); bound computations chunk to fit")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--result-file", type=Path,
                   help="write the VNN-COMP result (unsat/sat/unknown/timeout/error) here")
    p.add_argument("--certificate", type=Path, metavar="FILE",
                   help="when verified, also search a proof that `nnverify check` can "
                        "verify independently and write it to FILE (docs/proof-format.md)")
    p.add_argument("--proof-timeout", type=float, default=None, metavar="S",
                   help="seconds for the proof search (default: the --timeout)")
    p.set_defaults(func=run_verify)
    _add_vnncomp(sub)
    from checker.cli import add_check_command  # the independent checker (trusted base)

    add_check_command(sub)
    try:
        from verifier.lipschitz import add_lipschitz_command
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


class InputError(Exception):
    """Input the command line cannot use; the message says what is wrong and where."""


def describe_failure(what: str, path: object, exc: BaseException) -> str:
    """One paragraph naming the file that could not be used and why.

    Errors the engine raises on purpose carry their own explanation; anything else is an
    internal error, reported with its type and message (never as a traceback).
    """
    where = f"{what} '{path}'"
    if isinstance(exc, OSError):
        return f"cannot read {where}: {exc.strerror or exc}"
    if isinstance(exc, (NNVerifyError, SpecError, ValueError)):  # input the engine refuses
        return f"{where}: {exc}"
    return (f"{where} could not be processed (an internal error of nnverify, please report "
            f"it with the file): {type(exc).__name__}: {exc}")


def load_model_file(path: Path) -> Model:
    """The imported model, or InputError saying why it cannot be used."""
    try:
        return load_model(path)
    except Exception as exc:  # reported at this boundary, whatever it is
        raise InputError(describe_failure("model", path, exc)) from None


def load_instance(model_path: Path, spec_path: Path) -> tuple[Model | OpaqueModel, Property]:
    """The model and its VNN-LIB property, or InputError naming the file at fault.  A model
    with ops the engine does not support comes back as an OpaqueModel when onnxruntime runs
    it (only a search for counterexamples can run on it)."""
    try:
        model = load_or_opaque(model_path)
    except Exception as exc:  # reported at this boundary, whatever it is
        raise InputError(describe_failure("model", model_path, exc)) from None
    try:
        prop = parse_vnnlib_file(spec_path, model.n_inputs, model.n_outputs)
    except Exception as exc:  # reported at this boundary, whatever it is
        raise InputError(describe_failure("specification", spec_path, exc)) from None
    if isinstance(model, Model):
        check_evaluates(model, model_path, prop)
    return model, prop


def check_evaluates(model: Model, path: Path, prop: Property) -> None:
    """InputError unless the imported graph evaluates at the first box's centre (one
    forward pass: a model whose shapes do not fit together is refused before any work)."""
    if not prop.cases:
        return
    case = prop.cases[0]
    centre = torch.as_tensor((case.lower + case.upper) / 2, dtype=torch.float64)
    try:
        with torch.no_grad():
            y = model.graph.forward(centre.reshape(1, -1))
        if y[0].numel() != model.n_outputs:
            raise ValueError(f"it gives {y[0].numel()} outputs, not {model.n_outputs}")
    except Exception as exc:  # reported at this boundary, whatever it is
        raise InputError(f"model '{path}' cannot be evaluated at the centre of the "
                         f"property's first input box: {type(exc).__name__}: {exc}") from None


def check_device(device: str) -> None:
    """InputError unless ``device`` names a torch device this machine has."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).split(".")[0]
        raise InputError(f"--device {device!r} is not a torch device (use cpu or cuda:N): "
                         f"{first}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"--device {device}: torch sees no CUDA device on this machine "
                             "(use --device cpu)")
        if dev.index is not None and dev.index >= count:
            raise InputError(f"--device {device}: this machine has {count} CUDA device(s), "
                             f"cuda:0..cuda:{count - 1}")


def check_timeout(seconds: float, name: str = "--timeout") -> float:
    if not (math.isfinite(seconds) and seconds > 0):
        raise InputError(f"{name} must be a positive number of seconds, not {seconds!r}")
    return seconds


def error_text(message: str) -> str:
    """The VNN-COMP result file for an error: ``error``, then the message as comment lines."""
    return "error\n" + "".join(f"; {line}\n" for line in message.splitlines())


def report_error(message: str, result_file: Path | None = None) -> int:
    """Print the message, write ``error`` (with it) to the result file; exit status 2."""
    print(f"nnverify: error: {message}", file=sys.stderr)
    try:
        _write_result(result_file, error_text(message))
    except InputError as exc:
        print(f"nnverify: error: {exc}", file=sys.stderr)
    return 2


def verify_safely(model: Model | OpaqueModel, prop: Property, settings: Settings) -> Result:
    """``verify``, with anything it raises (it should not) turned into verdict ``error``."""
    try:
        if isinstance(model, OpaqueModel):
            return verify_opaque(model, prop, settings.timeout)
        return verify(model, prop, settings)
    except Exception as exc:  # an internal error is 'error', never another verdict
        return Result("error", f"internal error: {type(exc).__name__}: {exc}")


def run_prepare(args: argparse.Namespace) -> int:
    """Exit status 2 (instance skipped) when the model or spec cannot be used."""
    try:
        load_instance(args.onnx, args.vnnlib)
    except InputError as exc:
        return report_error(f"cannot prepare {args.category} instance: {exc}")
    return 0


def run_vnncomp(args: argparse.Namespace) -> int:
    """Verify within the harness's timeout (minus start-up) and write the results file;
    exit status 0 with a verdict, 2 (and ``error`` in the results file) otherwise."""
    import time

    started = time.monotonic()
    try:
        check_timeout(args.timeout, "the timeout")
        check_device(args.device)
        model, prop = load_instance(args.onnx, args.vnnlib)
    except InputError as exc:
        return report_error(str(exc), args.results)
    budget = max(0.5, args.timeout - (time.monotonic() - started) - 1.0)
    result = verify_safely(model, prop, Settings(timeout=budget, device=args.device))
    status = _report(result, args.onnx, args.vnnlib, args.results)
    if status == 0:
        print(f"{result.verdict} in {result.seconds:.2f} s")
    return status


def _report(result: Result, model: Path, spec: Path, result_file: Path | None) -> int:
    """Write the VNN-COMP result file; an ``error`` verdict or an unwritable file is
    reported (exit status 2), else 0."""
    if result.verdict == "error":
        return report_error(f"verifying '{spec}' on '{model}' failed: {result.message}",
                            result_file)
    try:
        _write_result(result_file, result.to_vnncomp())
    except InputError as exc:
        return report_error(str(exc))
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    check_timeout(args.timeout)
    check_device(args.device)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    try:
        memory = parse_bytes(args.memory_budget) if args.memory_budget else None
    except ValueError as exc:
        raise InputError(f"invalid option --memory-budget: {exc}") from None
    settings = Settings(timeout=args.timeout, device=args.device, dtype=args.dtype,
                        methods=methods, memory_budget=memory)
    try:
        settings.validate()
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"invalid option: {exc}") from None
    return settings


def _write_result(path: Path | None, text: str) -> None:
    if path is None:
        return
    try:
        path.write_text(text)
    except OSError as exc:
        raise InputError(f"cannot write the result file '{path}': "
                         f"{exc.strerror or exc}") from None


def run_verify(args: argparse.Namespace) -> int:
    """Exit status 0 when a verdict was reached (whatever it is), 2 on bad input or an
    internal error (``error`` in the result file, the message on stderr)."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        settings = _settings(args)
        model, prop = load_instance(args.model, args.spec)
    except InputError as exc:
        return report_error(str(exc), args.result_file)
    result = verify_safely(model, prop, settings)
    proof = _certificate(args, model, prop, result)
    if args.json:
        out = result.to_dict()
        if proof is not None:
            out["proof"] = proof
        print(json.dumps(out, indent=2))
    status = _report(result, args.model, args.spec, args.result_file)
    if status == 0 and not args.json:
        print(summary(result))
        if proof is not None:
            print(f"  proof: {proof['message']}")
    return status


def _certificate(args: argparse.Namespace, model: Model | OpaqueModel, prop: Property,
                 result: Result) -> dict[str, Any] | None:
    """With --certificate: a proof of a verified result searched and written (what became
    of it, as data); None without the option."""
    path = getattr(args, "certificate", None)
    if path is None:
        return None
    if result.verdict != "verified" or not isinstance(model, Model):
        return {"written": False, "message": f"no proof: the verdict is {result.verdict}"}
    from verifier.prove import ProofSettings, prove

    timeout = args.proof_timeout if args.proof_timeout else args.timeout
    try:
        outcome = prove(model, prop, path, args.model, args.spec,
                        ProofSettings(timeout=timeout), device=args.device)
    except OSError as exc:
        return {"written": False, "message": f"cannot write the proof to '{path}': {exc}"}
    except Exception as exc:  # the verdict stands; the proof is reported as missing
        return {"written": False, "message": f"no proof: {type(exc).__name__}: {exc}"}
    if not outcome.ok:
        return {"written": False, "message": f"no proof: {outcome.reason}"}
    return {"written": True, "path": str(path), "leaves": outcome.leaves,
            "bytes": outcome.bytes, "seconds": round(outcome.seconds, 3),
            "message": f"{outcome.leaves} leaves, {outcome.bytes} bytes, "
                       f"{outcome.seconds:.2f} s, written to {path} "
                       f"(check it: nnverify check {path} {args.model} {args.spec})"}


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
