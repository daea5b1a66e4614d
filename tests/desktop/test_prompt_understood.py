"""The prompt box shows what the loaded model understood and ignores; a prompt in which nothing is
recognised asks before generating (issue 16, item 4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from desktop.main_window import MainWindow
from desktop.settings import Settings

RUN_MS = 60_000
DEFAULT_PACK = Path(__file__).resolve().parents[2] / "resources" / "models" / "default"


def open_window(qtbot, settings, pack: Path) -> MainWindow:
    window = MainWindow(model=pack, settings=Settings(settings))
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.model_info is not None or bool(window.errors), timeout=RUN_MS)
    assert not window.errors, window.errors
    return window


def test_the_default_model_shows_the_record_and_what_it_ignores(qtbot, settings, tmp_path: Path) -> None:
    pack = Path(shutil.copytree(DEFAULT_PACK, tmp_path / "default"))
    window = open_window(qtbot, settings, pack)
    box = window.prompt_box
    box.set_text("RLL consol, no PTX, 45M, right pneumothorax")
    box.update_analysis()
    text = box.analysis.text()
    assert "<b>Understood:</b> consolidation present (right lower lobe) · pneumothorax absent" in text
    assert "Not in this model's supported findings: Pneumothorax" in text
    assert "lobe &#x27;RLL&#x27;: this model cannot place findings" in text
    assert "age &#x27;45M&#x27; (adult): this model was trained on children only" in text
    assert "sex &#x27;45M&#x27; (male): this model does not condition on sex" in text
    box.set_text("asdf")
    box.update_analysis()
    assert "Nothing recognised in the prompt" in box.analysis.text()
    window.close()


def answer_next_question(button: QMessageBox.StandardButton, seen: list[str]) -> None:
    """Click ``button`` on the question box as soon as it is open (it runs its own event loop)."""

    def click() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, click)
            return
        seen.append(box.text())
        box.button(button).click()

    QTimer.singleShot(20, click)


@pytest.mark.parametrize("prompt", ["4", "asdf"])
def test_an_unrecognised_prompt_asks_cancel_generates_nothing_yes_generates(
    qtbot, settings, tiny_pack_dir: Path, prompt: str
) -> None:
    window = open_window(qtbot, settings, tiny_pack_dir)
    window.generate_panel.steps_spin.setValue(2)
    window.prompt_box.set_text(prompt)
    seen: list[str] = []
    answer_next_question(QMessageBox.StandardButton.Cancel, seen)
    assert window.generate() is False
    assert len(seen) == 1 and "Nothing in the prompt" in seen[0] and prompt in seen[0]
    assert len(window.library) == 0 and not window.prompt_box.history

    answer_next_question(QMessageBox.StandardButton.Yes, seen)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        assert window.generate() is True
    assert len(seen) == 2 and len(window.library) == 1 and not window.errors
    window.close()


def test_a_recognised_prompt_does_not_ask(qtbot, settings, tiny_pack_copy: Path) -> None:
    manifest = json.loads((tiny_pack_copy / "model.json").read_text())
    window = open_window(qtbot, settings, tiny_pack_copy)
    assert manifest["card"] is not None
    window.generate_panel.steps_spin.setValue(2)
    window.prompt_box.set_text("Left pleural effusion")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        assert window.generate() is True  # no question box: it would block here
    assert len(window.library) == 1
    window.close()


def test_the_analyser_line_is_always_there_with_no_availability_guard(qtbot) -> None:
    """findings_available() was always true ("now that the analyser is engine.findings.understood"), a dead
    guard that talked about other parts of the project; the analyser line shows with no question asked."""
    from desktop.widgets import prompt

    assert not hasattr(prompt, "findings_available")
    box = prompt.PromptBox()
    qtbot.addWidget(box)
    box.show()
    box.set_text("Cardiomegaly, no pleural effusion")
    box.update_analysis()
    assert box.analysis_area.isVisible() and "cardiomegaly present" in box.analysis.text()
