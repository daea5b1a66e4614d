"""The main window end to end on the tiny pack: prompt -> generate -> steps -> W/L -> CLAHE -> DICOM ->
library -> reopen -> identical regeneration; responsiveness, Cancel and closing during a run."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from PySide6.QtCore import QPoint, Qt, QTimer
from PySide6.QtTest import QTest

from desktop.main_window import MainWindow
from desktop.settings import Settings
from desktop.widgets.dialogs import DicomExportDialog, DicomOptions
from desktop.widgets.linked_views import linked_window
from engine.pipeline import GenerationResult, StepEvent

LOAD_MS = 30_000
RUN_MS = 60_000


def thread_alive(native_id: int) -> bool:
    task = Path("/proc/self/task")
    return task.is_dir() and (task / str(native_id)).exists()


def open_window(qtbot, settings, model: Path | None) -> MainWindow:
    window = MainWindow(model=model, settings=Settings(settings))
    qtbot.addWidget(window)
    window.show()
    if model is not None:
        qtbot.waitUntil(lambda: window.model_info is not None or bool(window.errors), timeout=LOAD_MS)
        assert not window.errors, window.errors
    return window


@pytest.fixture
def window(qtbot, settings, tiny_pack_dir: Path):
    window = open_window(qtbot, settings, tiny_pack_dir)
    yield window
    window.close()
    assert not window.host.thread.isRunning()


def set_controls(window: MainWindow, *, steps: int = 8, seed: int = 5, sampler: str = "dpmpp-2m") -> None:
    window.generate_panel.steps_spin.setValue(steps)
    window.generate_panel.seed_edit.setText(str(seed))
    window.generate_panel.seed_lock.setChecked(True)
    window.generate_panel.sampler_box.setCurrentIndex(window.generate_panel.sampler_box.findData(sampler))


def drag(widget, start: QPoint, end: QPoint, button=Qt.MouseButton.LeftButton) -> None:
    QTest.mousePress(widget, button, Qt.KeyboardModifier.NoModifier, start)
    for k in range(1, 5):
        QTest.mouseMove(widget, start + (end - start) * (k / 4))
    QTest.mouseRelease(widget, button, Qt.KeyboardModifier.NoModifier, end)


def test_whole_flow_prompt_generate_steps_window_clahe_dicom_library_regenerate(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    # 1. type a prompt and press Ctrl+Enter
    set_controls(window, steps=8, seed=5)
    QTest.keyClicks(window.prompt_box.edit, "Right lower lobe consolidation")
    with qtbot.waitSignal(window.generation_done, timeout=RUN_MS) as done:
        QTest.keyClick(window.prompt_box.edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    result: GenerationResult = done.args[0]
    qtbot.waitUntil(lambda: not window.is_running(), timeout=RUN_MS)
    assert result.request.prompt == "Right lower lobe consolidation" and result.seeds == [5]
    assert window.generate_panel.seed_edit.text() == "5" and "Done" in window.generate_panel.run_label.text()
    frames = window.steps.frames()
    assert [f.label for f in frames] == [f"step {i} / 8" for i in range(1, 9)] + ["final"]
    np.testing.assert_array_equal(window.viewer.view.source, result.to_uint16()[0])

    # 2. move the step slider: the viewer shows that step's preview
    window.steps.slider.setValue(2)
    assert window.viewer.view.label == "step 3 / 8"
    np.testing.assert_array_equal(window.viewer.view.source, frames[2].pixels)
    assert not window.steps.following()
    window.steps.slider.setValue(len(frames) - 1)
    np.testing.assert_array_equal(window.viewer.view.source, result.to_uint16()[0])

    # 3. drag window/level: right = wider, down = higher centre; and back
    view = window.viewer.view
    center0, width0 = view.window()
    middle = QPoint(view.width() // 2, view.height() // 2)
    drag(view, middle, middle + QPoint(80, 60))
    center1, width1 = view.window()
    assert width1 > width0 and center1 > center0
    drag(view, middle, middle + QPoint(-40, -100))
    center2, width2 = view.window()
    assert width2 < width1 and center2 < center1
    shown_center, shown_width = view.shown_window()  # in the exported image's units (12 bits stored)
    assert f"W {shown_width:.0f}  C {shown_center:.0f}  (12-bit stored)" in view.overlay_lines()[0]

    # 4. CLAHE changes what is displayed (and back)
    plain = view.displayed_pixels().copy()
    plain_screen = view.grab().toImage()
    QTest.mouseClick(window.viewer.clahe_box, Qt.MouseButton.LeftButton)
    assert window.viewer.clahe_box.isChecked()
    assert not np.array_equal(view.displayed_pixels(), plain)
    assert view.grab().toImage() != plain_screen
    assert any("CLAHE 2" in line for line in view.overlay_lines())
    window.viewer.clahe_box.setChecked(False)
    np.testing.assert_array_equal(view.displayed_pixels(), plain)

    # 5. export DICOM: pydicom reads it back; dciodvfy finds no error (when installed)
    dialog = DicomExportDialog(window, DicomOptions())
    study = dialog.study_context()
    assert study.patient_name == "SYNTHETIC^CXR STUDIO" and study.patient_id.startswith("SYN-")
    path = window.export_dicom(tmp_path / "case.dcm", study, dialog.options())
    assert path is not None and not window.errors
    ds = pydicom.dcmread(path)
    assert ds.ConversionType == "SYN" and ds.PatientID == study.patient_id
    assert ds.Rows == 32 and ds.BitsStored == 12 and "Right lower lobe consolidation" in ds.ImageComments
    assert list(ds.WindowCenterWidthExplanation)[:2] == ["VIEWER", "DEFAULT"]
    np.testing.assert_allclose(float(ds.WindowWidth[0]), width2 * 4095 / 65535, atol=0.01)
    if shutil.which("dciodvfy"):
        from tests.dicomtools import dciodvfy_errors

        errors, _warnings = dciodvfy_errors(path)
        assert errors == []

    # 6. find the case in the library by searching its prompt
    panel = window.library_panel
    panel.search_edit.setText("lobe consolidation")
    qtbot.waitUntil(lambda: panel.count() == 1, timeout=5_000)
    case_id = panel.case_ids()[0]
    panel.search_edit.setText("pneumothorax")
    qtbot.waitUntil(lambda: panel.count() == 0, timeout=5_000)
    panel.search_edit.setText("")
    qtbot.waitUntil(lambda: panel.count() == 1, timeout=5_000)

    # 7. reopen it with other settings in the controls, then regenerate: identical pixels
    set_controls(window, steps=3, seed=99, sampler="euler")
    window.prompt_box.set_text("something else")
    case = window.open_case(case_id)
    assert window.prompt_box.text() == case.prompt and window.generate_panel.seed_edit.text() == "5"
    panel = window.generate_panel
    assert panel.steps_spin.value() == 8 and panel.sampler_box.currentData() == "dpmpp-2m"
    stored = window.library.image(case)
    np.testing.assert_array_equal(stored, result.to_uint16()[0])
    with qtbot.waitSignal(window.generation_done, timeout=RUN_MS) as again:
        assert window.regenerate_case(case_id)
    np.testing.assert_array_equal(again.args[0].to_uint16()[0], stored)
    assert len(window.library) == 1 and f"identical to case {case_id}" in panel.run_label.text()  # no duplicate


def test_window_keeps_processing_events_and_cancel_stops_within_one_step(qtbot, window: MainWindow) -> None:
    set_controls(window, steps=250, seed=1)
    window.prompt_box.set_text("Large left pleural effusion")
    computed = [0]

    def in_worker(_event: StepEvent) -> None:  # runs on the worker thread, between steps
        computed[0] += 1
        time.sleep(0.01)  # a step as slow as a real model's (the tiny one takes ~1 ms, faster than the GUI draws)

    window.host.worker.step.connect(in_worker, Qt.ConnectionType.DirectConnection)
    ticks: list[bool] = []  # one per GUI timer tick: whether a run was going on
    at_cancel: list[int] = []

    def tick() -> None:
        ticks.append(window.is_running())
        if sum(ticks) >= 10 and not at_cancel:  # the GUI thread has ticked 10 times during the run: press Esc
            at_cancel.append(computed[0])
            QTest.keyClick(window.prompt_box.edit, Qt.Key.Key_Escape)

    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(tick)
    outcome: list[GenerationResult] = []
    window.host.cancelled.connect(outcome.append)
    window.generation_done.connect(outcome.append)
    timer.start()
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        assert window.generate()
    timer.stop()
    assert at_cancel, f"the GUI ticked only {sum(ticks)} times during a {computed[0]}-step run"
    assert len(outcome) == 1 and outcome[0].cancelled, f"Esc after step {at_cancel[0]} did not cancel the run"
    result = outcome[0]
    assert at_cancel[0] <= result.steps_done <= at_cancel[0] + 1 < 250
    qtbot.waitUntil(lambda: not window.is_running(), timeout=5_000)
    assert "Cancelled after" in window.generate_panel.run_label.text()
    assert len(window.library) == 0  # a cancelled run is not kept
    assert window.generate_panel.generate_button.isEnabled() and not window.generate_panel.cancel_button.isEnabled()


def test_batch_count_runs_seed_after_seed(qtbot, window: MainWindow) -> None:
    set_controls(window, steps=3, seed=40)
    window.generate_panel.batch_spin.setValue(3)
    window.prompt_box.set_text("Normal chest radiograph")
    seeds = []
    window.generation_done.connect(lambda r: seeds.append(r.seeds[0]))
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        window.generate()
    assert seeds == [40, 41, 42]
    assert sorted(c.seed for c in window.library.search()) == [40, 41, 42]


def test_unlocked_seed_is_random_and_shown(qtbot, window: MainWindow) -> None:
    set_controls(window, steps=2, seed=0)
    window.generate_panel.seed_lock.setChecked(False)
    window.prompt_box.set_text("Cardiomegaly")
    with qtbot.waitSignal(window.generation_done, timeout=RUN_MS) as done:
        window.generate()
    assert window.generate_panel.seed_edit.text() == str(done.args[0].seeds[0])


def test_closing_during_a_run_leaves_no_thread_running(qtbot, settings, tiny_pack_dir: Path) -> None:
    before = set(threading.enumerate())
    window = open_window(qtbot, settings, tiny_pack_dir)
    set_controls(window, steps=250)
    window.prompt_box.set_text("Right upper lobe mass")
    with qtbot.waitSignal(window.host.step, timeout=RUN_MS):
        window.generate()
    assert window.is_running() and window.host.busy
    native = window.host.worker.native_thread_id
    window.close()
    assert not window.host.thread.isRunning()
    qtbot.waitUntil(lambda: not thread_alive(native), timeout=2_000)
    assert [t for t in set(threading.enumerate()) - before if not isinstance(t, threading._DummyThread)] == []


def test_no_default_model_opens_and_offers_a_pack_folder(qtbot, settings, tiny_pack_dir: Path, tmp_path) -> None:
    window = open_window(qtbot, settings, None)
    assert window.model_banner.isVisible()
    assert "No model is installed" in window.model_banner_label.text()
    assert str(tmp_path / "no-default-model") in window.model_banner_label.text()
    assert window.open_model_button.isVisible() and window.open_model_button.isEnabled()
    assert not window.generate_panel.generate_button.isEnabled()
    assert window.generate() is False and "No model" in window.errors[-1]
    with qtbot.waitSignal(window.model_ready, timeout=LOAD_MS):
        window.load_model(tiny_pack_dir)
    assert not window.model_banner.isVisible() and window.generate_panel.generate_button.isEnabled()
    assert window.provider_label.text() == "CPU" and "cxr-tiny-seed0" in window.model_label.text()
    window.close()


def test_a_broken_pack_is_reported_with_what_to_do(qtbot, settings, tiny_pack_copy: Path) -> None:
    (tiny_pack_copy / "unet.onnx").write_bytes(b"not a model")
    window = MainWindow(model=tiny_pack_copy, settings=Settings(settings))
    qtbot.addWidget(window)
    with qtbot.waitSignal(window.error_shown, timeout=LOAD_MS) as shown:
        window.show()
    assert shown.args[0] == "Model not loaded" and "unet.onnx" in shown.args[1]
    assert "Open a different model pack" in shown.args[1]
    assert window.model_banner.isVisible() and not window.generate_panel.generate_button.isEnabled()
    window.close()


def test_errors_are_dialogs_and_go_to_the_log(qtbot, window: MainWindow, tmp_path: Path) -> None:
    window.prompt_box.set_text("   ")
    assert window.generate() is False
    assert window.errors[-1].startswith("Cannot generate: the prompt is empty")
    assert window._boxes and window._boxes[-1].isVisible()
    assert window.export_png(tmp_path / "x.png") is None  # nothing generated yet
    assert window.errors[-1].startswith("Nothing to export")
    set_controls(window, steps=2)
    window.prompt_box.set_text("Normal chest radiograph")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        window.generate()
    assert window.export_png(tmp_path / "missing-folder" / "x.png") is None
    assert "PNG not saved" in window.errors[-1] and "Choose another folder" in window.errors[-1]
    log_text = (tmp_path / "user-logs" / "cxr-studio.log").read_text(encoding="utf-8")
    assert "PNG not saved" in log_text and "Cannot generate" in log_text


def test_png_exports_16_bit_8_bit_and_as_displayed(qtbot, window: MainWindow, tmp_path: Path) -> None:
    import cv2

    set_controls(window, steps=3)
    window.prompt_box.set_text("Normal chest radiograph")
    with qtbot.waitSignal(window.generation_done, timeout=RUN_MS) as done:
        window.generate()
    image16 = done.args[0].to_uint16()[0]
    read = lambda p: cv2.imread(str(p), cv2.IMREAD_UNCHANGED)  # noqa: E731
    np.testing.assert_array_equal(read(window.export_png(tmp_path / "a.png")), image16)
    eight = read(window.export_png(tmp_path / "b.png", bits=8))
    assert eight.dtype == np.uint8 and np.abs(eight.astype(int) - image16 / 257).max() <= 0.5 + 1e-9
    window.viewer.invert_box.setChecked(True)
    shown = read(window.export_png(tmp_path / "c.png", displayed=True))
    np.testing.assert_array_equal(shown, window.viewer.view.displayed_pixels())


def test_settings_persist_between_runs(qtbot, settings, tiny_pack_dir: Path) -> None:
    window = open_window(qtbot, settings, tiny_pack_dir)
    set_controls(window, steps=3, seed=12, sampler="euler")
    window.generate_panel.guidance_spin.setValue(2.5)
    window.generate_panel.negative_edit.setText("lateral view")
    window.prompt_box.set_text("Left apical pneumothorax")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        window.generate()
    window.viewer.save_preset("my lung")
    window.viewer.clip_spin.setValue(3.0)
    window.close()

    again = open_window(qtbot, settings, None)  # no --model: the last model is reopened
    qtbot.waitUntil(lambda: again.model_info is not None, timeout=LOAD_MS)
    assert again.model_info.path == tiny_pack_dir.resolve()
    panel = again.generate_panel
    assert panel.sampler_box.currentData() == "euler" and panel.steps_spin.value() == 3
    assert panel.guidance_spin.value() == 2.5 and panel.negative_edit.text() == "lateral view"
    assert panel.seed_lock.isChecked() and panel.seed_edit.text() == "12"
    assert again.prompt_box.history[0] == "Left apical pneumothorax"
    assert "my lung" in again.viewer.custom_presets and again.viewer.clip_spin.value() == 3.0
    again.close()


def test_export_steps_as_png_frames_and_gif(qtbot, window: MainWindow, tmp_path: Path) -> None:
    set_controls(window, steps=4)
    window.prompt_box.set_text("Normal chest radiograph")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        window.generate()
    message = window.export_steps(tmp_path / "steps")
    names = sorted(p.name for p in (tmp_path / "steps").iterdir())
    assert [n for n in names if n.endswith(".png")] == ["final.png"] + [f"step_{i:03d}.png" for i in range(1, 5)]
    assert "animated GIF" in message
    with Image.open(tmp_path / "steps" / "denoising.gif") as gif:
        assert gif.n_frames == 5


def test_play_steps_advances_the_slider(qtbot, window: MainWindow) -> None:
    set_controls(window, steps=5)
    window.prompt_box.set_text("Normal chest radiograph")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        window.generate()
    window.steps.slider.setValue(0)
    window.steps.fps_spin.setValue(60)
    window.steps.play_button.click()
    assert window.steps.playing()
    qtbot.waitUntil(lambda: window.steps.current_index() >= 3, timeout=5_000)
    window.steps.play_button.click()
    assert not window.steps.playing()


def test_library_teaching_file_tags_notes(qtbot, window: MainWindow, tmp_path: Path) -> None:
    set_controls(window, steps=2, seed=7)
    window.generate_panel.batch_spin.setValue(2)
    window.prompt_box.set_text("Bilateral <hilar> adenopathy, no effusion")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        window.generate()
    panel = window.library_panel
    first = panel.case_ids()[-1]
    panel.select(first)
    panel.tags_edit.setText("teaching, hila")
    panel.notes_edit.setPlainText("Look at both hila.")
    panel.save_button.click()
    assert window.library.get(first).tags == ("hila", "teaching")
    panel.tag_box.setCurrentIndex(panel.tag_box.findText("teaching"))
    panel.tag_box.activated.emit(panel.tag_box.currentIndex())
    assert panel.case_ids() == [first]
    index = window.export_teaching_file([first], tmp_path / "teaching")
    text = index.read_text(encoding="utf-8")
    assert "Bilateral &lt;hilar&gt; adenopathy, no effusion" in text and "Look at both hila." in text
    assert pydicom.dcmread(tmp_path / "teaching" / "case001.dcm").ConversionType == "SYN"
    panel.tag_box.setCurrentIndex(0)
    panel.refresh()
    panel.confirm_delete = lambda count: count == 1
    panel.select(first)
    panel.delete_button.click()
    assert panel.count() == 1 and len(window.library) == 1


def test_compare_a_case_side_by_side(qtbot, window: MainWindow) -> None:
    set_controls(window, steps=2, seed=1)
    window.generate_panel.batch_spin.setValue(2)
    window.prompt_box.set_text("Normal chest radiograph")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        window.generate()
    older = window.library_panel.case_ids()[-1]
    window.compare_case(older)
    viewer = window.viewer
    assert viewer.comparing() and viewer.compare_view.isVisible()
    viewer.view.set_window(30000, 20000)
    # linked in units of each image's own DEFAULT window, as the dataset explorer links them
    shown, pinned = viewer.view.presets()[0], viewer.compare_view.presets()[0]
    expected = linked_window((shown.window_center, shown.window_width), (pinned.window_center, pinned.window_width),
                             30000, 20000)  # fmt: skip
    assert viewer.compare_view.window() == pytest.approx(expected)
    viewer.view.zoom_by(2.0)
    assert viewer.compare_view.zoom() == pytest.approx(viewer.view.zoom())


def test_main_opens_the_window_with_model(qtbot, tiny_pack_dir: Path, monkeypatch, tmp_path: Path) -> None:
    from PySide6.QtWidgets import QApplication

    from desktop import app as desktop_app

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    seen = {}

    def close_when_loaded() -> None:
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, MainWindow) and widget.isVisible() and widget.model_info is not None:
                seen["model"] = widget.model_info.model_id
                widget.close()
                return
        QTimer.singleShot(20, close_when_loaded)

    QTimer.singleShot(0, close_when_loaded)
    guard = QTimer()
    guard.setSingleShot(True)
    guard.timeout.connect(QApplication.quit)
    guard.start(LOAD_MS)
    assert desktop_app.main(["--model", str(tiny_pack_dir)]) == 0
    assert seen == {"model": "cxr-tiny-seed0"}
    assert (tmp_path / "default-settings.ini").is_file()  # the settings went to $CXR_STUDIO_SETTINGS


def test_main_refuses_a_missing_model_folder(tmp_path: Path, capsys) -> None:
    from desktop import app as desktop_app

    assert desktop_app.main(["--model", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_model_card_fills_completion_examples_and_analyser(qtbot, settings, tiny_pack_copy: Path) -> None:
    manifest = json.loads((tiny_pack_copy / "model.json").read_text())
    manifest["card"].update(
        vocabulary=["consolidation", "cardiomegaly", "pneumothorax"],
        example_prompts=["Right lower lobe consolidation", "Normal chest radiograph"],
        supported_findings=["pleural_effusion", "cardiomegaly"],
        training_data="Kermany et al., Cell 2018 (paediatric radiographs)",
        licence_of_training_data="CC BY 4.0",
    )
    (tiny_pack_copy / "model.json").write_text(json.dumps(manifest))
    window = open_window(qtbot, settings, tiny_pack_copy)
    about = window.about_text()  # the About box credits the loaded model's data
    assert "Trained on: Kermany et al., Cell 2018 (paediatric radiographs)" in about and "Licence: CC BY 4.0" in about
    box = window.prompt_box
    assert {"consolidation", "cardiomegaly", "Normal"} <= set(box.edit.words())
    assert box.examples == ["Right lower lobe consolidation", "Normal chest radiograph"]
    box.menu.aboutToShow.emit()
    titles = [a.text() for a in box.menu.actions()]
    assert "Right lower lobe consolidation" in titles
    # completion: the word being typed is completed from the vocabulary
    box.edit.setFocus()
    QTest.keyClicks(box.edit, "Small pneumot")
    assert box.edit.completer.completionPrefix() == "pneumot"
    assert box.edit.completer.currentCompletion() == "pneumothorax"
    box.edit.insert_completion("pneumothorax")
    assert box.text() == "Small pneumothorax"
    box.set_text("Cardiomegaly with right lower lobe consolidation, no pleural effusion")
    box.update_analysis()
    result = box.analysis_result()
    assert "Cardiomegaly" in result["present"] and "Consolidation" in result["present"]
    assert "Pleural effusion" in result["absent"]
    assert result["unsupported"] == ["Consolidation"]
    assert "Not in this model" in box.analysis.text()
    # the same reading as `cxr-studio generate` prints (engine.findings.understood)
    understood = box.understanding()
    assert understood.line in box.analysis.text() and "right lower lobe" in understood.line
    window.close()


def test_a_new_run_shows_its_image_after_the_user_scrubbed_the_steps(qtbot, window: MainWindow) -> None:
    """Scrubbing back in the steps of one run must not keep the next run's image off screen."""
    set_controls(window, steps=4, seed=1)
    window.prompt_box.set_text("Normal chest radiograph")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        window.generate()
    window.steps.filmstrip.setFocus()
    window.steps.filmstrip.setCurrentRow(1)  # the user looks at step 2
    assert not window.steps.following()
    window.viewer.pin_current()
    window.generate_panel.seed_edit.setText("2")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        window.generate()
    qtbot.wait(50)
    assert window.current.label.startswith("seed 2")
    assert np.array_equal(window.viewer.view.source, window.current.pixels)
