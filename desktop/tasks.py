"""Short blocking calls (a C-ECHO, a send) off the GUI thread: :class:`Task`, which the main window's
``run_task`` starts and waits for when the window closes."""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, QThread, Signal

log = logging.getLogger(__name__)


class Task(QThread):
    """A short blocking call (a C-ECHO, a send) off the GUI thread; ``done(result)`` or ``errored(message)``."""

    done = Signal(object)
    errored = Signal(str)

    def __init__(self, function, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._function = function

    def run(self) -> None:
        try:
            result = self._function()
        except Exception as exc:
            log.exception("background task failed")
            self.errored.emit(str(exc))
            return
        self.done.emit(result)
