"""The ``check`` command: exit status 0 when the proof holds, 1 when it does not, 2 when the
files cannot be used (what and where in one paragraph, never a traceback)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from checker.check import check
from checker.model import Unusable


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("certificate", help="the proof file (nnverify-proof/1)")
    parser.add_argument("model", help="the ONNX model it proves a property of")
    parser.add_argument("property", help="the VNN-LIB property it proves")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--verbose", action="store_true", help="also print notes (empty leaves)")
    parser.set_defaults(func=run)
    return parser


def add_check_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``check CERTIFICATE MODEL PROPERTY`` on an argparse subparsers object; the
    parsed namespace's ``func(args)`` runs it and returns the exit status."""
    parser = subparsers.add_parser(
        "check", help="check a proof independently of the engine",
        description="Re-check a proof certificate against the model and the property, with "
                    "the independent checker (exit 0: it holds, 1: it does not, 2: unusable "
                    "files).")
    return _configure(parser)


def run(args: argparse.Namespace) -> int:
    """Check and print the verdict; returns the exit status."""
    try:
        report = check(args.certificate, args.model, args.property)
    except (Unusable, OSError) as exc:
        if args.json:
            print(json.dumps({"ok": False, "unusable": str(exc)}))
        else:
            print(f"cannot check: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(report)))
    elif report.ok:
        print(f"proof holds: {report.leaves} leaves over {report.cases} cases checked in "
              f"{report.seconds:.2f} s")
    else:
        where = f"leaf {report.failing_leaf}" if report.failing_leaf is not None else "proof"
        print(f"proof does not hold (first failure at {where}): {report.reason}")
    if args.verbose and not args.json:
        for note in report.notes:
            print(f"note: {note}")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m checker``."""
    parser = _configure(argparse.ArgumentParser(prog="python -m checker"))
    return int(run(parser.parse_args(argv)))
