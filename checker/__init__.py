"""The independent proof checker: the trusted base of nnverify's certificates.

``check(proof, model, property)`` re-checks a "nnverify-proof/1" file against the ONNX model
and the VNN-LIB property it claims to prove.  It shares no code with the engine (``verifier``)
except the property reader: it reads the ONNX graph itself (``checker.model``), does its own
interval arithmetic and back-substitution in float64 with a bound on every rounding
(``checker.arith``, ``checker.check``), and checks every line of every activation rigorously
(``checker.lines``).  Audit these four modules and the property reader, and nothing else.
"""

from checker.check import Rejected, Report, check
from checker.model import Unusable

__all__ = ["Rejected", "Report", "Unusable", "check"]
