"""Proofs of verified results in the service (issue 17).

After the engine has verified a VNN-LIB property, the worker searches a proof
(``verifier.prove``, its own budget: ``NNVERIFY_PROOF_TIMEOUT``) and has the independent
checker (``checker.check``) check it, against the model's stored bytes and the property's
stored text written to files: the very bytes whose sha256 the proof's manifest and the
certificate name, and which a user fetches through the API to check it again.  The
certificate records the outcome (``ProofRecord``) and keeps the proof file only when the
checker accepted it.  Under ``NNVERIFY_PROOFS=required`` a verified result without such a
proof is published as ``unknown`` (``withheld``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import checker
from verifier.importer.onnx_import import Model
from verifier.property.core import Property
from verifier.prove import FORMAT, ProofSettings, prove

CHECKER_VERSION = FORMAT  # the proof format the checker reads: "nnverify-proof/1"
ProofMode = Literal["off", "after", "required"]  # ServiceSettings.proofs


@dataclass(frozen=True)
class ProofRecord:
    """What a certificate records of its proof: ``status`` one of
    ``service.tables.PROOF_STATUSES``, ``reason`` why there is none or why the checker
    refused it, and ``data``, the proof file, exactly when the status is ``checked``."""

    status: str
    reason: str = ""
    leaves: int | None = None
    size_bytes: int | None = None
    search_seconds: float | None = None
    check_seconds: float | None = None
    data: bytes | None = None

    def columns(self) -> dict[str, Any]:
        """The certificate's proof columns."""
        return {"proof_status": self.status, "proof_reason": self.reason,
                "proof_leaves": self.leaves, "proof_size_bytes": self.size_bytes,
                "proof_search_seconds": self.search_seconds,
                "proof_check_seconds": self.check_seconds,
                "proof_checker": CHECKER_VERSION if self.search_seconds is not None else None,
                "proof_data": self.data}


def not_searched(mode: ProofMode, verdict: str, fmt: str) -> ProofRecord | None:
    """The record of a verification for which no proof is searched, saying why; None when
    one is to be searched (a verified VNN-LIB property, proofs not off)."""
    if verdict != "verified":
        return ProofRecord("none", f"proofs back verified results; the verdict is {verdict}")
    if mode == "off":
        return ProofRecord("none", "proofs are off on this server (NNVERIFY_PROOFS=off)")
    if fmt != "vnnlib":
        return ProofRecord("unavailable", "proofs cover VNN-LIB properties only; this "
                                          f"property is in the {fmt.upper()} form")
    return None


def search_and_check(model: Model, prop: Property, onnx_bytes: bytes, property_text: str,
                     timeout: float, device: str, cancel: Callable[[], bool]) -> ProofRecord:
    """Search a proof of ``prop`` within ``timeout`` seconds and check it with the
    independent checker, both against the model's bytes and the property's text as files."""
    with tempfile.TemporaryDirectory(prefix="nnverify-proof-") as tmp:
        model_path, prop_path = Path(tmp, "model.onnx"), Path(tmp, "property.vnnlib")
        out = Path(tmp, "proof.nnvproof")
        model_path.write_bytes(onnx_bytes)
        prop_path.write_bytes(property_text.encode())
        found = prove(model, prop, out, model_path, prop_path, ProofSettings(timeout=timeout),
                      device=device, cancel=cancel)
        if not found.ok:
            return ProofRecord("unavailable", f"no proof found: {found.reason}",
                               search_seconds=found.seconds)
        searched = ProofRecord("checked", leaves=found.leaves, size_bytes=found.bytes,
                               search_seconds=found.seconds)
        try:
            report = checker.check(str(out), str(model_path), str(prop_path))
        except checker.Unusable as exc:
            reason = str(exc).replace(f"{tmp}/", "")
            return replace(searched, status="unavailable",
                           reason=f"the checker cannot use it: {reason}")
        if not report.ok:
            return replace(searched, status="rejected", check_seconds=report.seconds,
                           reason=f"the checker rejected it: {report.reason}")
        return replace(searched, check_seconds=report.seconds, data=out.read_bytes())


def internal_error(exc: Exception, search_seconds: float) -> ProofRecord:
    """The record of a proof search or check that failed with an internal error (logged
    by the caller): the verdict stands under ``after``, and is withheld under
    ``required``."""
    return ProofRecord("unavailable", f"internal error in the proof search: "
                                      f"{type(exc).__name__}: {exc}",
                       search_seconds=search_seconds)


def withheld_message(record: ProofRecord) -> str:
    """The message of a verified result withheld for want of a checked proof."""
    return f"verified by the engine, but no proof the checker accepts: {record.reason}"


def withhold(result: dict[str, Any] | None, certificate: dict[str, Any] | None,
             message: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The job's result and certificate with the verdict ``unknown`` in place of the
    engine's ``verified`` (kept as ``engine_verdict``)."""
    changed = {"verdict": "unknown", "engine_verdict": "verified", "message": message}
    return (None if result is None else {**result, **changed},
            None if certificate is None else {**certificate, **changed})
