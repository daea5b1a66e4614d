"""``python -m engine.cli ARGS`` = ``cxr-studio ARGS``."""

from __future__ import annotations

import sys

from engine.cli.main import main

sys.exit(main())
