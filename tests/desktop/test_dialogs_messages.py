"""Warning boxes say what went wrong in the user's words: Generate with an empty prompt shows a plain
message, and the log file's path only behind "Show Details…" (it was the box's second line)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox

from desktop.main_window import MainWindow


@pytest.fixture
def window(loaded_window: MainWindow):
    return loaded_window


def test_an_empty_prompt_gets_a_plain_message_not_the_log_path(qtbot, window: MainWindow) -> None:
    window.prompt_box.set_text("   ")
    QTest.mouseClick(window.generate_panel.generate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(window._boxes), timeout=5_000)
    box: QMessageBox = window._boxes[-1]
    assert box.isVisible() and not window.is_running()
    shown = f"{box.text()}\n{box.informativeText()}"
    assert "prompt is empty" in box.text() and "Normal chest radiograph" in box.text()
    assert "log" not in shown.lower() and str(window.log_path) not in shown
    assert str(window.log_path) in box.detailedText()  # still there for whoever asks for details
