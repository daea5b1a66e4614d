"""What you see is what you send: after every one of several Generate presses in a row, the viewer, the
case library's PNG, an exported DICOM file and what a C-STORE delivers to a real storescp are one image,
and the export and send dialogs show a thumbnail and the seed of that image (issue 17, item 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from desktop.main_window import MainWindow
from desktop.widgets.dialogs import DicomOptions
from desktop.widgets.viewer import thumbnail_pixels
from engine.dicom.dataset import stored_pixels

RUN_MS = 60_000
RUNS = 4  # the stale viewer showed on every second run


@pytest.fixture
def window(loaded_window: MainWindow):
    loaded_window.generate_panel.steps_spin.setValue(4)
    loaded_window.generate_panel.seed_lock.setChecked(False)  # a new random seed each time, as a user leaves it
    loaded_window.prompt_box.set_text("Right lower lobe consolidation")
    return loaded_window


def generate(qtbot, window: MainWindow) -> np.ndarray:
    with qtbot.waitSignal(window.generation_done, timeout=RUN_MS) as done:
        assert window.generate()
    qtbot.waitUntil(lambda: not window.is_running(), timeout=RUN_MS)
    return done.args[0].to_uint16()[0]


def test_consecutive_generations_show_export_and_keep_the_same_image(qtbot, window: MainWindow, tmp_path) -> None:
    seen = []
    for run in range(RUNS):
        image = generate(qtbot, window)
        seed = int(window.generate_panel.seed_edit.text())
        # 1. the viewer shows the new image, and the step strip is on its final frame
        assert window.steps.current_frame().label == "final", f"run {run + 1}: {window.steps.position_label.text()}"
        assert window.steps.following(), f"run {run + 1}"
        np.testing.assert_array_equal(window.viewer.view.source, image, err_msg=f"run {run + 1}: stale viewer")
        assert window.viewer.view.label.startswith(f"seed {seed} ")
        # 2. the case library keeps that image, under that seed, and selects it
        case = window.library.get(window.current.case_id)
        assert case.seed == seed and window.library_panel.selected_ids() == [case.id]
        np.testing.assert_array_equal(window.library.image(case), image)
        # 3. an exported DICOM holds it
        path = window.export_dicom(tmp_path / f"run{run}.dcm", options=DicomOptions(bits_stored=16))
        ds = pydicom.dcmread(path)
        np.testing.assert_array_equal(ds.pixel_array, image, err_msg=f"run {run + 1}: DICOM is another image")
        assert f"seed {seed}," in ds.ImageComments
        seen.append(image)
    assert len({a.tobytes() for a in seen}) == RUNS  # each run made a different image


def test_what_a_send_delivers_is_the_image_on_screen(qtbot, window: MainWindow, tmp_path: Path) -> None:
    pytest.importorskip("pynetdicom")
    from tests.pacs_servers import storescp

    with storescp(tmp_path / "scp", unique_filenames=True) as scp:
        for run in range(3):
            generate(qtbot, window)
            on_screen = window.viewer.view.source.copy()
            window.open_pacs_dialog()
            dialog = window.pacs_dialog
            dialog.name_edit.setText("test scp")
            dialog.host_edit.setText("127.0.0.1")
            dialog.port_spin.setValue(scp.port)
            dialog.called_edit.setText(scp.aet)
            # the dialog shows what it will send: a thumbnail of the image on screen and its seed
            assert f"seed {window.generate_panel.seed_edit.text()}" in dialog.preview.text()
            np.testing.assert_array_equal(dialog.preview.thumbnail(), thumbnail_pixels(on_screen))
            with qtbot.waitSignal(dialog.send_done, timeout=RUN_MS) as sent:
                dialog.send_button.click()
            assert sent.args[0].ok, sent.args[0].summary()
            qtbot.waitUntil(lambda n=run + 1: len(scp.files()) == n, timeout=10_000)
            newest = max(scp.files(), key=lambda p: p.stat().st_mtime_ns)
            ds = pydicom.dcmread(newest)
            bits = int(ds.BitsStored)
            np.testing.assert_array_equal(ds.pixel_array, stored_pixels(on_screen, bits), err_msg=f"send {run + 1}")
            dialog.close()


def test_the_dicom_export_dialog_shows_the_image_it_will_write(qtbot, window: MainWindow) -> None:
    for _run in range(2):
        image = generate(qtbot, window)
        dialog = window.dicom_export_dialog()
        assert f"seed {window.generate_panel.seed_edit.text()}" in dialog.case_preview.text()
        assert f"case {window.current.case_id}" in dialog.case_preview.text()
        np.testing.assert_array_equal(dialog.case_preview.thumbnail(), thumbnail_pixels(image))
        dialog.close()


def test_after_a_cancel_the_export_writes_the_image_on_screen(qtbot, window: MainWindow, tmp_path: Path) -> None:
    """A cancelled run leaves its partial image in the viewer: exports and sends write that one (not the
    previous run's, which the viewer no longer shows), and say it is not in the library."""
    generate(qtbot, window)
    window.generate_panel.steps_spin.setValue(250)
    with qtbot.waitSignal(window.host.step, timeout=RUN_MS):
        assert window.generate()
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        window.cancel()
    on_screen = window.viewer.view.source
    np.testing.assert_array_equal(window.current.pixels, on_screen)
    path = window.export_dicom(tmp_path / "cancelled.dcm", options=DicomOptions(bits_stored=16))
    np.testing.assert_array_equal(pydicom.dcmread(path).pixel_array, on_screen)
    dialog = window.dicom_export_dialog()
    assert "not in the library" in dialog.case_preview.text()
    np.testing.assert_array_equal(dialog.case_preview.thumbnail(), thumbnail_pixels(on_screen))
    dialog.close()


def test_an_export_whose_image_changed_under_its_dialogs_is_refused(
    qtbot, window: MainWindow, tmp_path: Path, monkeypatch
) -> None:
    """Ctrl+Shift+E: the dialogs run their own event loops, in which a run can finish; the file would then
    hold another image than the one the dialog showed."""
    from PySide6.QtWidgets import QFileDialog

    from desktop.widgets.dialogs import DicomExportDialog

    generate(qtbot, window)
    target = tmp_path / "changed.dcm"
    monkeypatch.setattr(DicomExportDialog, "exec", lambda self: DicomExportDialog.DialogCode.Accepted)

    def save_name_while_a_run_finishes(*_args):
        generate(qtbot, window)  # the user leaves the file dialog open while the next image arrives
        return str(target), "DICOM (*.dcm)"

    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_name_while_a_run_finishes)
    window.choose_dicom_export()
    assert not target.exists() and window.errors[-1].startswith("DICOM not saved: The image changed")
    window.errors.clear()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *_a: (str(target), "DICOM (*.dcm)"))
    window.choose_dicom_export()
    assert not window.errors
    np.testing.assert_array_equal(pydicom.dcmread(target).pixel_array, stored_pixels(window.viewer.view.source, 12))
