"""Desktop fixtures: the user's data, log and settings point into tmp_path; a worker thread never outlives a test."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings

import engine.paths

LOAD_MS = 60_000  # a loaded CI machine can take a while to open even the tiny pack


@pytest.fixture(autouse=True)
def user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """User data, logs and settings under tmp_path; no default model unless a test installs one."""
    data = tmp_path / "user-data"
    monkeypatch.setattr(engine.paths, "user_data_dir", lambda: data)
    monkeypatch.setattr(engine.paths, "user_models_dir", lambda: data / "models")
    monkeypatch.setattr(engine.paths, "user_log_dir", lambda: tmp_path / "user-logs")
    monkeypatch.setenv("CXR_STUDIO_MODEL", str(tmp_path / "no-default-model"))
    monkeypatch.setenv("CXR_STUDIO_SETTINGS", str(tmp_path / "default-settings.ini"))  # never the user's
    return data


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


RUN_MS = 60_000


def open_window(qtbot, settings: QSettings, pack: Path):
    """The main window on ``pack``, shown and with its model loaded (no error)."""
    from desktop.main_window import MainWindow
    from desktop.settings import Settings

    window = MainWindow(model=pack, settings=Settings(settings))
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.model_info is not None or bool(window.errors), timeout=LOAD_MS)
    assert not window.errors, window.errors
    return window


def generate_locked(qtbot, window, prompt: str) -> None:
    """One 2-step generation of ``prompt`` with the seed locked at 3, waited for to the end."""
    window.generate_panel.steps_spin.setValue(2)
    window.generate_panel.seed_edit.setText("3")
    window.generate_panel.seed_lock.setChecked(True)
    window.prompt_box.set_text(prompt)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        window.generate()


@pytest.fixture
def loaded_window(qtbot, settings: QSettings, tiny_pack_dir: Path):
    """The main window on the tiny pack, shown and loaded; closed at the end with no worker left running."""
    window = open_window(qtbot, settings, tiny_pack_dir)
    yield window
    window.close()
    assert not window.host.thread.isRunning()


@pytest.fixture(autouse=True)
def no_thread_left_behind():
    before = {t.ident for t in threading.enumerate()}
    yield
    left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    # A QThread that ran Python code stays listed as a _DummyThread forever on Python 3.11 (even when
    # ended); tests check those through QThread.isRunning() and /proc instead. Real Python threads must end.
    assert not [t for t in left if not isinstance(t, threading._DummyThread)], left
