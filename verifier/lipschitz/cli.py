"""``nnverify lipschitz MODEL --center ... --eps E``: bracket a local Lipschitz constant."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from verifier.cli import InputError, describe_failure, load_model_file, report_error
from verifier.errors import NNVerifyError
from verifier.lipschitz.core import LipschitzResult, LipschitzSettings, local_lipschitz
from verifier.property import SpecError, parse_vnnlib_file


def add_lipschitz_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lipschitz", help="bound the local Lipschitz constant of an ONNX model",
                       description="Bracket max ||C J(x)|| over the box centre +- eps.")
    p.add_argument("model", type=Path, help="the ONNX model")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--center", help="the box centre, comma-separated values")
    where.add_argument("--center-file", type=Path,
                       help=".npy array, or a VNN-LIB file (its first input box's centre)")
    p.add_argument("--eps", type=float, required=True, help="half-width of the input box")
    p.add_argument("--output-row", action="append", default=None,
                   help="a row of C: an output index, or comma-separated coefficients "
                        "(repeatable; default: every output)")
    p.add_argument("--norm", default="inf", choices=["inf", "2"])
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--attack-steps", type=int, default=50)
    p.add_argument("--bab-seconds", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_lipschitz)


def read_center(args: argparse.Namespace, n_inputs: int, n_outputs: int) -> np.ndarray:
    if args.center is not None:
        return np.array([float(v) for v in args.center.split(",") if v.strip()])
    path: Path = args.center_file
    try:
        if path.suffix == ".npy":
            return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64).ravel()
        case = parse_vnnlib_file(path, n_inputs, n_outputs).cases[0]
    except Exception as exc:  # reported at this boundary, whatever it is
        raise InputError(describe_failure("centre file", path, exc)) from None
    return (case.lower + case.upper) / 2


def read_rows(rows: list[str] | None, n_outputs: int) -> np.ndarray | None:
    if not rows:
        return None
    C = []
    for text in rows:
        values = [float(v) for v in text.split(",") if v.strip()]
        if len(values) == 1 and n_outputs > 1:
            if not float(values[0]).is_integer():
                raise ValueError(f"--output-row {text}: an output index must be an integer")
            index = int(values[0])
            if not 0 <= index < n_outputs:
                raise ValueError(f"output index {index} is not in [0, {n_outputs})")
            values = [0.0] * n_outputs
            values[index] = 1.0
        if len(values) != n_outputs:
            raise ValueError(f"an output row needs {n_outputs} coefficients, got {len(values)}")
        C.append(values)
    return np.array(C)


def run_lipschitz(args: argparse.Namespace) -> int:
    """Exit status 0 with a result, 2 on bad input or an internal error (one message on
    stderr, never a traceback)."""
    try:
        if not (args.eps >= 0 and math.isfinite(args.eps)):
            raise InputError(f"--eps must be a finite non-negative number, not {args.eps!r}")
        model = load_model_file(args.model)
        centre = read_center(args, model.n_inputs, model.n_outputs)
        C = read_rows(args.output_row, model.n_outputs)
        settings = LipschitzSettings(args.norm, args.samples, args.attack_steps,
                                     args.bab_seconds, args.seed)
        result = local_lipschitz(model, centre - args.eps, centre + args.eps, C, settings)
    except (InputError, NNVerifyError, SpecError, ValueError) as exc:
        return report_error(str(exc))
    except Exception as exc:  # an internal error: reported, never a traceback or a bound
        return report_error(f"bounding the Lipschitz constant of '{args.model}' failed "
                            f"(an internal error of nnverify): {type(exc).__name__}: {exc}")
    if math.isnan(result.upper):
        return report_error(f"the upper bound for '{args.model}' is NaN (not a bound): the "
                            "model's weights or the box produce non-finite values")
    print(json.dumps(result.to_dict(), indent=2) if args.json else summary(result))
    return 0


def summary(result: LipschitzResult) -> str:
    d = result.details
    return (f"local Lipschitz constant ({result.norm}-norm), {result.seconds:.2f} s\n"
            f"  lower {result.lower:.6g}  upper {result.upper:.6g}  naive {result.naive:.6g}\n"
            f"  interval products {d['interval_upper']:.6g}, unsplit {d['unsplit_upper']:.6g}, "
            f"{d['bab_leaves']} leaves")
