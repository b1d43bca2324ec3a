"""Local Lipschitz constant bounds and monotonicity proofs (see core.py for the maths)."""

from .cli import add_lipschitz_command
from .core import (
    NORMS,
    LipschitzProgress,
    LipschitzResult,
    LipschitzSettings,
    local_lipschitz,
    monotonicity,
)
from .jacobian import check_supported

__all__ = ["NORMS", "LipschitzProgress", "LipschitzResult", "LipschitzSettings",
           "add_lipschitz_command", "check_supported", "local_lipschitz", "monotonicity"]
