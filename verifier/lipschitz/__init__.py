"""Local Lipschitz constant bounds and monotonicity proofs (see core.py for the maths)."""

from .cli import add_lipschitz_command
from .core import LipschitzResult, LipschitzSettings, local_lipschitz, monotonicity

__all__ = ["LipschitzResult", "LipschitzSettings", "add_lipschitz_command", "local_lipschitz",
           "monotonicity"]
