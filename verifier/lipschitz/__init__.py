"""Local Lipschitz constant bounds and monotonicity proofs (see core.py for the maths)."""

from verifier.lipschitz.cli import add_lipschitz_command
from verifier.lipschitz.core import (
    NORMS,
    LipschitzProgress,
    LipschitzResult,
    LipschitzSettings,
    local_lipschitz,
    monotonicity,
)
from verifier.lipschitz.jacobian import check_supported

__all__ = ["NORMS", "LipschitzProgress", "LipschitzResult", "LipschitzSettings",
           "add_lipschitz_command", "check_supported", "local_lipschitz", "monotonicity"]
