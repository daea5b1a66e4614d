"""The finding check after every generation (issue 18 item 2, GUI half): the line under the viewer says
what was asked and what the pack's checker sees, marked when an asked finding scores low or an absent one high."""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import Qt

from desktop.main_window import MainWindow
from desktop.settings import Settings
from tests.desktop.conftest import LOAD_MS

RUN_MS = 60_000
# bias over (bacterial_pneumonia, normal, viral_pneumonia): a checker that always sees ...
SEES_PNEUMONIA = (4.0, -4.0, 0.0)
SEES_NORMAL = (-4.0, 4.0, -4.0)


def _open(qtbot, settings, pack: Path) -> MainWindow:
    window = MainWindow(model=pack, settings=Settings(settings))
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.model_info is not None or bool(window.errors), timeout=LOAD_MS)
    assert not window.errors, window.errors
    return window


def _generate(qtbot, window: MainWindow, prompt: str) -> None:
    window.generate_panel.steps_spin.setValue(2)
    window.generate_panel.seed_edit.setText("3")
    window.generate_panel.seed_lock.setChecked(True)
    window.prompt_box.set_text(prompt)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        window.generate()


def test_check_line_shows_what_the_checker_sees_and_marks_a_failed_check(qtbot, settings, tiny_checker_pack) -> None:
    window = _open(qtbot, settings, tiny_checker_pack(SEES_NORMAL, name="sees-normal"))
    try:
        assert window.check_line.isVisible()
        _generate(qtbot, window, "pneumonia")
        line = window.check_line
        assert line.text().startswith("asked: pneumonia · the checker sees: normal 1.00, pneumonia 0.00 · LOW:")
        assert line.failed and line.property("checkFailed") is True
        assert "⚠" in line.marker.text() and line.marker.isVisible()  # an icon as well as the words
        _generate(qtbot, window, "no pneumonia")
        assert line.text().endswith("· ok") and not line.failed and not line.marker.isVisible()
    finally:
        window.close()
    assert not window.host.thread.isRunning()


def test_check_line_says_so_when_the_pack_has_no_checker(qtbot, loaded_window: MainWindow) -> None:
    _generate(qtbot, loaded_window, "pneumonia")
    assert loaded_window.check_line.text() == "no checker in this model"
    assert not loaded_window.check_line.failed


def test_the_worker_scores_the_final_image_off_the_gui_thread(qtbot, settings, tiny_checker_pack) -> None:
    window = _open(qtbot, settings, tiny_checker_pack(SEES_PNEUMONIA, name="sees-pneumonia"))
    try:
        threads: list[int] = []
        window.host.worker.checked.connect(
            lambda _checks: threads.append(threading.get_native_id()), type=Qt.ConnectionType.DirectConnection
        )
        _generate(qtbot, window, "pneumonia")
        assert threads and threads[0] == window.host.worker.native_thread_id != threading.get_native_id()
        assert window.check_line.text() == "asked: pneumonia · the checker sees: pneumonia 1.00, normal 0.00 · ok"
    finally:
        window.close()
