"""The finding check after every generation (issue 18 item 2, GUI half): the line under the viewer says
what was asked and what the pack's checker sees, marked when an asked finding scores low or an absent one high."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from desktop.main_window import MainWindow
from tests.desktop.conftest import generate_locked, open_window

# bias over (bacterial_pneumonia, normal, viral_pneumonia): a checker that always sees ...
SEES_PNEUMONIA = (4.0, -4.0, 0.0)
SEES_NORMAL = (-4.0, 4.0, -4.0)


def test_check_line_shows_what_the_checker_sees_and_marks_a_failed_check(qtbot, settings, tiny_checker_pack) -> None:
    window = open_window(qtbot, settings, tiny_checker_pack(SEES_NORMAL, name="sees-normal"))
    try:
        assert window.check_line.isVisible()
        generate_locked(qtbot, window, "pneumonia")
        line = window.check_line
        assert line.text().startswith("asked: pneumonia · the checker sees: normal 1.00, pneumonia 0.00 · LOW:")
        assert line.failed and line.property("checkFailed") is True
        assert "⚠" in line.marker.text() and line.marker.isVisible()  # an icon as well as the words
        generate_locked(qtbot, window, "no pneumonia")
        assert line.text().endswith("· ok") and not line.failed and not line.marker.isVisible()
    finally:
        window.close()
    assert not window.host.thread.isRunning()


def test_check_line_says_so_when_the_pack_has_no_checker(qtbot, loaded_window: MainWindow) -> None:
    generate_locked(qtbot, loaded_window, "pneumonia")
    assert loaded_window.check_line.text() == "no checker in this model"
    assert not loaded_window.check_line.failed


def test_the_worker_scores_the_final_image_off_the_gui_thread(qtbot, settings, tiny_checker_pack) -> None:
    window = open_window(qtbot, settings, tiny_checker_pack(SEES_PNEUMONIA, name="sees-pneumonia"))
    try:
        threads: list[int] = []
        window.host.worker.checked.connect(
            lambda _checks: threads.append(threading.get_native_id()), type=Qt.ConnectionType.DirectConnection
        )
        generate_locked(qtbot, window, "pneumonia")
        assert threads and threads[0] == window.host.worker.native_thread_id != threading.get_native_id()
        assert window.check_line.text() == "asked: pneumonia · the checker sees: pneumonia 1.00, normal 0.00 · ok"
    finally:
        window.close()


# the case table as libraries made before the check was recorded have it (SCHEMA_VERSION 1)
OLD_CASES = """CREATE TABLE cases (id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL,
image_file TEXT NOT NULL UNIQUE, width INTEGER NOT NULL, height INTEGER NOT NULL, prompt TEXT NOT NULL,
negative_prompt TEXT NOT NULL DEFAULT '', seed INTEGER NOT NULL, num_steps INTEGER NOT NULL,
guidance_scale REAL NOT NULL, sampler TEXT NOT NULL, eta REAL NOT NULL DEFAULT 0, model_id TEXT NOT NULL,
model_fingerprint TEXT NOT NULL, provider TEXT NOT NULL DEFAULT '', total_s REAL, notes TEXT NOT NULL DEFAULT '');
CREATE TABLE tags (case_id INTEGER NOT NULL REFERENCES cases(id) ON DELETE CASCADE, tag TEXT NOT NULL,
PRIMARY KEY (case_id, tag));
INSERT INTO cases (created, image_file, width, height, prompt, seed, num_steps, guidance_scale, sampler, model_id,
model_fingerprint, notes) VALUES ('2026-01-01T00:00:00+00:00', 'old.png', 32, 32, 'old case', 7, 2, 4.0, 'ddim',
'cxr-tiny', 'abc', 'kept');
PRAGMA user_version = 1;"""


def test_an_old_library_gains_the_check_columns_and_keeps_its_cases(tmp_path: Path) -> None:
    import sqlite3

    from desktop.library import DB_NAME, CaseLibrary

    root = tmp_path / "library"
    (root / "images").mkdir(parents=True)
    (root / "images" / "old.png").write_bytes(b"")
    with sqlite3.connect(root / DB_NAME) as db:
        db.executescript(OLD_CASES)
    with CaseLibrary(root) as library:
        (case,) = library.search()
        assert (case.prompt, case.notes, case.seed) == ("old case", "kept", 7)
        assert case.check_ok is None and case.check_scores is None and case.check_line == ""
        assert library.search(check_failed=True) == []
    with CaseLibrary(root) as library:  # opening again migrates nothing twice
        assert len(library) == 1


def test_the_library_records_the_check_and_filters_on_a_failed_one(qtbot, settings, tiny_checker_pack) -> None:
    window = open_window(qtbot, settings, tiny_checker_pack(SEES_NORMAL, name="sees-normal"))
    try:
        generate_locked(qtbot, window, "pneumonia")  # LOW: the checker sees a normal chest
        generate_locked(qtbot, window, "no pneumonia")  # ok
        failed, passed = window.library.search(text="pneumonia")[::-1]
        assert failed.check_ok is False and passed.check_ok is True
        assert failed.check_scores["pneumonia"] == pytest.approx(0.0, abs=1e-3)
        assert failed.check_line.startswith("asked: pneumonia · the checker sees: normal 1.00")
        assert [c.id for c in window.library.search(check_failed=True)] == [failed.id]
        assert [c.id for c in window.library.search("no", check_failed=True)] == []
        panel = window.library_panel  # the case list: the row says so, and a box keeps only failed checks
        rows = {panel.list.item(i).data(Qt.ItemDataRole.UserRole): panel.list.item(i).text() for i in range(2)}
        assert "⚠ check failed" in rows[failed.id] and "check failed" not in rows[passed.id]
        panel.check_failed_box.setChecked(True)
        assert [panel.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(panel.list.count())] == [failed.id]
        window.open_case(failed.id)  # a case opened from the library shows the check it was kept with
        assert window.check_line.text() == failed.check_line and window.check_line.failed
        window.open_case(passed.id)
        assert window.check_line.text() == passed.check_line and not window.check_line.failed
    finally:
        window.close()
