"""Entry point of the PyInstaller bundle: ``cxr-studio`` = ``engine.cli.main``.

No arguments (or a leading ``--option`` such as ``--model`` or ``--selftest``) opens the desktop app;
``cxr-studio generate ...``, ``info``, ``dicom ...`` run the CLI subcommands.
"""

from __future__ import annotations

import multiprocessing
import sys

if __name__ == "__main__":
    # Must run first in a frozen program: a child started by multiprocessing re-enters here.
    multiprocessing.freeze_support()
    from engine.cli.main import main

    sys.exit(main())
