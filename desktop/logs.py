"""The app's log file in ``engine.paths.user_log_dir()`` and the hook that turns stray exceptions into dialogs."""

from __future__ import annotations

import logging
import logging.handlers
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from engine import paths

LOG_NAME = "cxr-studio.log"
_HANDLER_NAME = "cxr-studio-file"


def log_file() -> Path:
    return paths.user_log_dir() / LOG_NAME


def setup_logging(level: int = logging.INFO) -> Path | None:
    """Log to ``user_log_dir()/cxr-studio.log`` (rotating, 1 MB x 3). Idempotent; follows a changed log dir.

    Returns the file, or None when the folder cannot be written (then only stderr gets the log).
    """
    root = logging.getLogger()
    root.setLevel(min(root.level or level, level))
    path = log_file()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            if Path(getattr(handler, "baseFilename", "")) == path:
                return path
            root.removeHandler(handler)
            handler.close()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=1_000_000, backupCount=3, encoding="utf-8")
    except OSError as exc:
        print(f"cxr-studio: cannot write the log file {path}: {exc}", file=sys.stderr)
        return None
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    return path


def install_excepthook(show: Callable[[str, str], None]) -> None:
    """Uncaught exceptions (e.g. in a slot) are logged with their traceback and shown by ``show(title, text)``."""

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        logging.getLogger("desktop").error(
            "unexpected error:\n%s", "".join(traceback.format_exception(kind, value, tb))
        )
        try:
            show(
                "Unexpected error",
                f"{kind.__name__}: {value}\n\nThe details are in the log file {log_file()}. "
                "Please report it with that file; your work so far is kept in the case library.",
            )
        except Exception:  # never let the hook itself raise
            sys.__excepthook__(kind, value, tb)

    sys.excepthook = hook
