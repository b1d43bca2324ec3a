"""``python -m checker CERTIFICATE MODEL PROPERTY [--json] [--verbose]``."""

import sys

from checker.cli import main

sys.exit(main())
