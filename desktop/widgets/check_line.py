"""The line under the viewer that says whether the image shows what was asked (issue 18 item 2).

After each generation the worker scores the final image with the pack's finding checker
(engine.checker); this widget shows the same line as ``cxr-studio generate --check``:
``asked: pneumonia · the checker sees: pneumonia 0.84, normal 0.05 · ok``. When an asked finding
scores low or an absent one high the line is marked twice, by a warning icon and by colour, so it
reads without colour vision too; the words (LOW/HIGH) say which finding failed.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

from engine.checker import ImageCheck

NO_CHECKER = "no checker in this model"
FAILED_STYLE = "color: #ff6b5a; font-weight: bold;"


class CheckLine(QWidget):
    """One line: the checker's verdict on the image in the viewer (or why there is none)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        self.marker = QLabel("⚠")
        self.marker.setStyleSheet(FAILED_STYLE)
        self.marker.setToolTip("The checker disagrees with the prompt: see the line")
        self.marker.setVisible(False)
        self.label = QLabel("")
        self.label.setObjectName("check-line")
        layout.addWidget(self.marker)
        layout.addWidget(self.label, 1)
        self.checks: list[ImageCheck] = []
        self.failed = False
        self.setProperty("checkFailed", False)

    def text(self) -> str:
        return self.label.text()

    def show_checks(self, checks: Sequence[ImageCheck] | None) -> None:
        """The verdict on the first image of a generation; None: the pack has no checker."""
        if checks is None:
            self._show(NO_CHECKER, [], failed=False)
            return
        self._show(checks[0].line() if checks else "", list(checks), failed=bool(checks) and not checks[0].ok)

    def show_recorded(self, line: str, ok: bool | None) -> None:
        """A case's check as the library kept it: its ``line`` and whether it passed (None: not checked)."""
        self._show(line, [], failed=ok is False)

    def clear(self) -> None:
        self._show("", [], failed=False)

    def _show(self, text: str, checks: list[ImageCheck], *, failed: bool) -> None:
        self.checks = checks
        self.failed = failed
        self.setProperty("checkFailed", failed)
        self.label.setText(text)
        self.label.setToolTip(
            "The pack's finding checker (a classifier) scored this image; its accuracy is on the model card"
            if checks
            else text
        )
        self.label.setStyleSheet(FAILED_STYLE if failed else "")
        self.marker.setVisible(failed)
