"""``cxr-studio`` with no subcommand (or ``./studio``): open the desktop app.

cxr-studio [--model PACK] [--provider auto|cpu|cuda] [Qt options]
cxr-studio --selftest [--model PACK] [--provider P]   (headless check, see desktop/selftest.py)
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.runtime import PROVIDER_CHOICES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxr-studio", description="CXR Studio desktop app: synthetic chest radiographs from clinical text."
    )
    parser.add_argument("--model", type=Path, default=None, metavar="PACK", help="model pack folder to open")
    parser.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto", help="ONNX Runtime device")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (to the log file and stderr)")
    parser.add_argument("--selftest", action="store_true", help="check the installation headless, print one line, exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    multiprocessing.freeze_support()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, qt_args = build_parser().parse_known_args(argv)
    if args.selftest:
        from desktop.selftest import main as selftest_main

        return selftest_main(argv)
    if args.model is not None and not args.model.is_dir():
        print(f"cxr-studio: error: --model {args.model}: no such folder (a model pack is a folder)", file=sys.stderr)
        return 2

    from PySide6.QtWidgets import QApplication

    from desktop.logs import install_excepthook, setup_logging
    from desktop.main_window import MainWindow
    from desktop.settings import APPLICATION, ORGANIZATION

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    app = QApplication.instance() or QApplication([sys.argv[0], *qt_args])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    window = MainWindow(model=args.model, provider=args.provider)
    install_excepthook(window.show_error)
    _quit_on_interrupt(window)
    window.show()
    logging.getLogger(__name__).info("CXR Studio window open")
    code = int(app.exec())
    del window  # destroy the window (and its worker thread object) while the QApplication still exists
    return code


def _quit_on_interrupt(window) -> None:
    """Ctrl+C in the terminal closes the window (cleanly, like the close button).

    Python runs signal handlers only between bytecodes, so a timer lets it run now and then while Qt's
    event loop waits in C++.
    """
    import signal

    from PySide6.QtCore import QTimer

    signal.signal(signal.SIGINT, lambda *_: window.close())
    timer = QTimer(window)
    timer.timeout.connect(lambda: None)
    timer.start(250)


if __name__ == "__main__":
    sys.exit(main())
