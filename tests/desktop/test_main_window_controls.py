"""Main-window defects found in a walk-through (issue 17, item 12): Regenerate, Ctrl+M, a layout that
jumped when a warning showed, and the dataset explorer's "Generate from this text"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from desktop.main_window import MainWindow
from desktop.widgets.model_manager import ModelManager

RUN_MS = 60_000
LONG_WARNING = (
    "The text encoder's token limit cut off the end of the prompt: 'with a small left pleural effusion and "
    "blunting of the costophrenic angle, no pneumothorax' was ignored. Shorten the prompt to use it."
)


@pytest.fixture
def window(loaded_window: MainWindow):
    loaded_window.generate_panel.steps_spin.setValue(3)
    return loaded_window


def generate(qtbot, window: MainWindow) -> None:
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        assert window.generate()
    assert not window.errors, window.errors


def place(widget) -> tuple[QPoint, tuple[int, int]]:
    """Where a widget is on its window, and its size."""
    return widget.mapTo(widget.window(), QPoint(0, 0)), (widget.width(), widget.height())


# 1. Regenerate ---------------------------------------------------------------------------------------------


def test_regenerate_keeps_lock_and_tags_and_reports_an_identical_case(qtbot, window: MainWindow) -> None:
    window.generate_panel.seed_lock.setChecked(False)
    window.prompt_box.set_text("Right lower lobe consolidation")
    generate(qtbot, window)
    case = window.library.get(window.current.case_id)
    window.library.set_tags(case.id, ["teaching", "pneumonia"])
    window.library_panel.refresh()
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        assert window.regenerate_case(case.id)
    assert not window.generate_panel.seed_lock.isChecked()  # the user's Lock box is as they left it
    assert len(window.library) == 1  # no duplicate row
    assert window.library.get(case.id).tags == ("pneumonia", "teaching")
    assert f"identical to case {case.id}" in window.generate_panel.run_label.text()
    assert window.current.case_id == case.id and window.library_panel.selected_ids() == [case.id]
    np.testing.assert_array_equal(window.viewer.view.source, window.library.image(case))
    # an unlocked Generate after it draws a new seed, as Lock off promises
    generate(qtbot, window)
    assert len(window.library) == 2 and window.library.get(window.current.case_id).seed != case.seed


def test_the_same_locked_request_twice_is_one_case(qtbot, window: MainWindow) -> None:
    window.generate_panel.seed_edit.setText("77")
    window.generate_panel.seed_lock.setChecked(True)
    window.prompt_box.set_text("Normal chest radiograph")
    generate(qtbot, window)
    first = window.current.case_id
    generate(qtbot, window)
    assert len(window.library) == 1 and window.current.case_id == first
    assert f"identical to case {first}" in window.generate_panel.run_label.text()


# 2. Ctrl+M -------------------------------------------------------------------------------------------------


def _models_dialogs() -> list[ModelManager]:
    return [w for w in QApplication.topLevelWidgets() if isinstance(w, ModelManager) and w.isVisible()]


def test_ctrl_m_opens_the_models_while_the_prompt_has_focus(qtbot, window: MainWindow) -> None:
    window.activateWindow()
    window.prompt_box.edit.setFocus()
    QTest.keyClicks(window.prompt_box.edit, "Small pneu")
    QTest.keyClick(window.windowHandle(), Qt.Key.Key_M, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: bool(_models_dialogs()), timeout=2_000)
    assert window.prompt_box.text() == "Small pneu"  # nothing typed into the prompt
    for dialog in _models_dialogs():
        dialog.close()


def test_ctrl_m_works_from_the_apps_other_windows(qtbot, window: MainWindow, tmp_path: Path) -> None:
    import cv2

    from engine.manifest import ManifestRecord

    (tmp_path / "images").mkdir()
    assert cv2.imwrite(str(tmp_path / "images" / "a.png"), np.full((32, 32), 30000, np.uint16))
    record = ManifestRecord(
        image="images/a.png",
        text="Normal chest radiograph",
        findings={},
        patient_id="P1",
        view="PA",
        source="csv",
        split="train",
    )
    manifest = tmp_path / "data.jsonl"
    manifest.write_text(record.validated().to_json() + "\n", encoding="utf-8")
    explorer = window.open_dataset_explorer(manifest)
    explorer.activateWindow()
    qtbot.waitUntil(explorer.isActiveWindow, timeout=2_000)
    QTest.keyClick(explorer.windowHandle(), Qt.Key.Key_M, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: bool(_models_dialogs()), timeout=2_000)
    for dialog in _models_dialogs():
        dialog.close()


# 3. warnings do not move the buttons -----------------------------------------------------------------------


@pytest.mark.parametrize("height", [860, 600])
def test_a_warning_does_not_move_the_generate_buttons(qtbot, window: MainWindow, height: int) -> None:
    panel = window.generate_panel
    window.resize(1100, height)  # 600: a laptop screen, no spare room in the Generate panel
    qtbot.wait(50)
    QApplication.processEvents()
    before = [place(b) for b in (panel.generate_button, panel.cancel_button)]
    panel.warning_label.setText(LONG_WARNING)  # what a finished run with a cut-off prompt shows
    panel.warning_label.show()
    panel.run_label.setText("Seed 123: 0.52 s on CPU, a longer line than usual to wrap it over two lines or more")
    QApplication.processEvents()
    assert panel.warning_label.isVisible() and panel.warning_label.text() == LONG_WARNING
    assert [place(b) for b in (panel.generate_button, panel.cancel_button)] == before
    panel.run_label.setText("Generating seed 124 (3 steps, dpmpp-2m)…")
    panel.warning_label.setText("")  # what the next run's start does
    QApplication.processEvents()
    assert [place(b) for b in (panel.generate_button, panel.cancel_button)] == before


def test_a_pacs_error_does_not_move_the_pacs_buttons(qtbot, window: MainWindow) -> None:
    window.prompt_box.set_text("Normal chest radiograph")
    generate(qtbot, window)
    window.open_pacs_dialog()
    dialog = window.pacs_dialog
    qtbot.waitExposed(dialog)
    buttons = (dialog.echo_button, dialog.send_button, dialog.pending_button, dialog.cancel_button)
    QApplication.processEvents()
    before = [place(b) for b in buttons], dialog.size()
    dialog._say(
        "Association rejected by 127.0.0.1:104 (called AE title ANY-SCP): the PACS does not know the calling AE "
        "title CXRSTUDIO. Add it to the PACS's list of known nodes, or correct the AE titles, then test again. "
        "The image waits in the outbox.",
        ok=False,
    )
    QApplication.processEvents()
    assert ([place(b) for b in buttons], dialog.size()) == before
    dialog.close()


# 4. "Generate from this text" ------------------------------------------------------------------------------


def test_generate_from_text_makes_one_image_and_leaves_the_prompt_alone(qtbot, window: MainWindow) -> None:
    window.generate_panel.batch_spin.setValue(4)
    window.prompt_box.set_text("My own prompt, being edited")
    done = []
    window.generation_done.connect(done.append)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        assert window._generate_from_text("Left upper lobe collapse")
    assert [r.request.prompt for r in done] == ["Left upper lobe collapse"]  # one image, not the batch of 4
    assert window.prompt_box.text() == "My own prompt, being edited"
    assert window.generate_panel.batch_spin.value() == 4
    assert window.library.get(window.current.case_id).prompt == "Left upper lobe collapse"


def test_regenerate_on_another_model_adds_a_case_that_keeps_the_tags(qtbot, window: MainWindow, tmp_path: Path) -> None:
    from training.tiny import build_tiny_pack

    window.generate_panel.seed_lock.setChecked(True)
    window.prompt_box.set_text("Right lower lobe consolidation")
    generate(qtbot, window)
    case = window.library.get(window.current.case_id)
    window.library.set_tags(case.id, ["teaching"])
    other = build_tiny_pack(tmp_path / "other-pack", seed=1)
    with qtbot.waitSignal(window.model_ready, timeout=RUN_MS):
        window.load_model(other)
    window.generate_panel.seed_lock.setChecked(False)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        assert window.regenerate_case(case.id)
    assert "Different model" in window.errors[-1]  # said before it ran
    assert not window.generate_panel.seed_lock.isChecked() and len(window.library) == 2
    new = window.library.get(window.current.case_id)
    assert new.id != case.id and new.seed == case.seed and new.tags == ("teaching",)
    assert "identical" not in window.generate_panel.run_label.text()


def test_the_prompt_analysers_warning_does_not_move_the_generate_button(qtbot, window: MainWindow) -> None:
    """The "Not in this model's supported findings" warning sits above the buttons: it pushed them down."""
    box = window.prompt_box
    box.supported_findings = ("cardiomegaly",)
    box.other_packs = {"other-model": ("consolidation", "pleural_effusion")}
    box.set_text("Cardiomegaly")
    box.update_analysis()
    QApplication.processEvents()
    before = place(window.generate_panel.generate_button), place(box.edit)
    box.set_text("Cardiomegaly with right lower lobe consolidation, a small left pleural effusion, no pneumothorax")
    box.update_analysis()
    QApplication.processEvents()
    assert "Not in this model" in box.analysis.text()
    assert (place(window.generate_panel.generate_button), place(box.edit)) == before
    assert "Not in this model" in box.analysis.toolTip()  # the whole text, should it not fit
