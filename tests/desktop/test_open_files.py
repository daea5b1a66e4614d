"""File > Open a .dcm or .png (real or synthetic) into the viewer and the compare view (issue 18 item 3), and
Help > Keyboard shortcuts listing every key (item 4). Real files: pydicom-data's chest CR RG1_UNCI.dcm, a
DICOM file written by the export, PNGs written by the PNG encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtTest import QTest

from desktop.shortcuts import VIEWER_KEYS, shortcut_rows, show_shortcuts
from desktop.widgets.viewer_panel import ViewerPanel
from engine import imaging
from engine.dicom.dataset import StudyContext, SyntheticImageInfo, build_dataset, write_dicom


@pytest.fixture(scope="module")
def real_cr() -> Path:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("RG1_UNCI.dcm", download=False))


@pytest.fixture
def synthetic() -> np.ndarray:
    y, x = np.mgrid[0:80, 0:100]
    return (200 * x + 300 * y + 4000).astype(np.uint16)


@pytest.fixture
def panel(qtbot, synthetic) -> ViewerPanel:
    panel = ViewerPanel()
    qtbot.addWidget(panel)
    panel.resize(900, 600)
    panel.show()
    qtbot.waitExposed(panel)
    panel.set_image(synthetic, "generated")
    return panel


def test_a_real_chest_cr_opens_with_its_own_facts(panel: ViewerPanel, real_cr: Path) -> None:
    ds = pydicom.dcmread(real_cr)
    assert panel.open_file(real_cr)
    view = panel.view
    assert view.source.shape == (ds.Rows, ds.Columns) and view.label == "RG1_UNCI.dcm"
    assert panel.opened.dataset.SOPInstanceUID == ds.SOPInstanceUID
    # its PixelSpacing is 0\0 (unknown): the ruler counts pixels; PatientOrientation L\F puts R on the left
    assert view.calibration.spacing_mm is None and view.calibration.orientation == ("R", "L")
    view.set_tool("ruler")
    start, end = view.image_to_widget(100, 100), view.image_to_widget(400, 500)
    QTest.mousePress(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start.toPoint())
    QTest.mouseMove(view, end.toPoint())
    QTest.mouseRelease(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end.toPoint())
    assert view.measurement_texts()[0].endswith(" px")
    # the probe gives the file's stored value (MONOCHROME1: shown inverted, stored as the file holds it)
    view.set_tool("probe")
    point = view.image_to_widget(900.5, 1000.5)
    QTest.mouseMove(view, point.toPoint())
    x, y = (int(v) for v in (view.widget_to_image(point.toPoint().toPointF()).x(),
                             view.widget_to_image(point.toPoint().toPointF()).y()))  # fmt: skip
    stored = int(ds.pixel_array[y, x])
    assert f"x {x} y {y} · stored {stored} · value {stored} stored" == view.probe_line
    # the window in the file's units: its DEFAULT window maps back onto the file's stored values
    center, width = view.shown_window()
    assert 0 < width <= 2**ds.BitsStored and 0 <= center <= 2**ds.BitsStored


def test_a_synthetic_dicom_opens_with_the_spacing_it_was_written_with(panel, synthetic, tmp_path: Path) -> None:
    path = tmp_path / "synthetic.dcm"
    write_dicom(build_dataset(synthetic, SyntheticImageInfo(prompt="x"), StudyContext.synthetic()), path)
    assert panel.open_file(path)
    spacing = float(pydicom.dcmread(path).PixelSpacing[0])
    assert panel.view.calibration.spacing_mm == (spacing, spacing)
    assert panel.view.calibration.unit == "stored"
    # a 12-bit file's window is shown in its 12-bit values
    assert panel.view.shown_window()[1] < 4096


def test_a_png_opens_into_the_compare_view_linked_both_ways(panel: ViewerPanel, synthetic, tmp_path) -> None:
    path = tmp_path / "other.png"
    path.write_bytes(imaging.encode_png(imaging.rescale_bits(synthetic[:40, :50], 16, 8)))
    assert panel.open_file(path, compare=True)
    assert panel.comparing() and panel.compare_view.label == "other.png"
    assert panel.compare_view.calibration.unit == "8-bit PNG"
    # CLAHE and the tools follow; zoom and pan are linked from either side
    panel.clahe_box.setChecked(True)
    assert panel.compare_view.options().clahe
    panel.compare_view.zoom_by(2.0, QPointF(100, 100))
    scale = panel.compare_view.source.shape[1] / panel.view.source.shape[1]
    assert panel.view.zoom() == pytest.approx(panel.compare_view.zoom() * scale)
    panel.view.zoom_by(1.5, QPointF(100, 100))
    assert panel.compare_view.zoom() == pytest.approx(panel.view.zoom() / scale)
    # window/level from the compare side moves the main view (in units of each image's default window)
    before = panel.view.window()
    default = panel.compare_view.presets()[0]
    panel.compare_view.set_window(default.window_center, default.window_width / 2)
    assert panel.view.window()[1] == pytest.approx(panel.view.presets()[0].window_width / 2)
    assert panel.view.window() != before


@pytest.mark.parametrize(
    "name, content", [("broken.dcm", b"DICM? not really"), ("broken.png", b"\x89PNG\r\n garbage"), ("empty.png", b"")]
)
def test_a_bad_file_is_one_line_naming_it_and_changes_nothing(panel, tmp_path, qtbot, name, content) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    shown, label = panel.view.source, panel.view.label
    with qtbot.waitSignal(panel.open_failed) as failed:
        assert not panel.open_file(path)
    [message] = failed.args
    assert message.startswith(str(path)) and "\n" not in message
    assert panel.view.source is shown and panel.view.label == label and panel.opened is None
    with qtbot.waitSignal(panel.open_failed):
        assert not panel.open_file(path, compare=True)
    assert not panel.comparing()


def test_the_window_opens_files_from_its_menu_and_says_which_failed(loaded_window, real_cr, tmp_path) -> None:
    window = loaded_window
    texts = [a.text() for a in window.menuBar().actions()[0].menu().actions()]
    assert "Open image…" in texts and "Open image to compare…" in texts
    assert window.viewer.open_file(real_cr)
    assert window.current is None  # an export would not write the generated image while the CR is shown
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"nothing")
    window.viewer.open_file(bad)
    assert window.errors[-1].startswith(f"Image not opened: {bad}")
    assert window.viewer.view.label == "RG1_UNCI.dcm"


def test_help_lists_every_shortcut_of_the_window(loaded_window, qtbot) -> None:
    window = loaded_window
    help_texts = [a.text() for a in window.menuBar().actions()[-1].menu().actions()]
    assert "Keyboard shortcuts" in help_texts
    dialog = show_shortcuts(window)
    qtbot.addWidget(dialog)
    listed = set(dialog.keys())
    native = QKeySequence.SequenceFormat.NativeText
    keys = [s.toString(native) for action in window.findChildren(QAction) for s in action.shortcuts()]
    keys += [s.toString(native) for shortcut in window.findChildren(QShortcut) for s in shortcut.keys()]  # noqa: SIM118
    assert keys and "F1" in keys and "Ctrl+Shift+O" in keys
    assert not [key for key in keys if key not in listed]
    assert all(entry.keys in listed for entry in VIEWER_KEYS)
    assert dialog.table.rowCount() == len(shortcut_rows(window))


def test_every_viewer_key_in_the_list_does_something(qtbot, panel: ViewerPanel) -> None:
    """The list is the table the viewer reads its keys from: each one acts on the view."""
    view = panel.view
    for entry in VIEWER_KEYS:
        assert callable(getattr(view, entry.method)), entry
    panel.view.set_window(12345, 999)
    QTest.keyClick(view, Qt.Key.Key_0)
    assert view.window() == (view.presets()[0].window_center, view.presets()[0].window_width)


def test_the_window_shows_a_generated_image_in_the_units_of_its_export_settings(loaded_window, synthetic) -> None:
    from desktop.widgets.dialogs import DicomOptions

    window = loaded_window
    window.settings.set_export(DicomOptions(bits_stored=16).to_dict())
    window.viewer.set_image(synthetic, "generated")
    assert window.viewer.view.calibration.unit == "16-bit stored"
    window.settings.set_export(DicomOptions(bits_stored=12).to_dict())
    window.viewer.set_image(synthetic, "generated")
    assert window.viewer.view.overlay_lines()[0].endswith("(12-bit stored)")


def test_esc_in_the_window_clears_the_measurements_before_it_cancels(loaded_window, qtbot, synthetic) -> None:
    """Esc is also the window's Cancel shortcut: on the viewer it clears the measurements first."""
    window = loaded_window
    view = window.viewer.view
    window.viewer.set_image(synthetic, "generated")
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5_000)  # window shortcuts work in the active window only
    view.setFocus()
    qtbot.waitUntil(view.hasFocus, timeout=5_000)
    QTest.keyClick(view, Qt.Key.Key_M)
    start, end = view.image_to_widget(10, 10).toPoint(), view.image_to_widget(60, 50).toPoint()
    QTest.mousePress(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    QTest.mouseMove(view, end)
    QTest.mouseRelease(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)
    assert len(view.measurements) == 1 and view.measurement_texts()[0].endswith(" mm")
    cancels: list[bool] = []
    window.cancel_action.setEnabled(True)  # as during a run (cancel() does nothing with no run going)
    window.cancel_action.triggered.connect(lambda *_: cancels.append(True))
    QTest.keyClick(view, Qt.Key.Key_Escape)
    assert view.measurements == [] and not cancels
    QTest.keyClick(view, Qt.Key.Key_Escape)  # nothing left to clear: Esc is the window's Cancel again
    assert cancels == [True]


def test_keys_1_and_up_give_an_opened_files_own_windows_first(panel: ViewerPanel, real_cr: Path, tmp_path) -> None:
    """As Weasis: 1, 2, ... are the windows stored in the file (in its units), then the image's presets."""
    ds = pydicom.dcmread(real_cr)
    assert panel.open_file(real_cr)
    view = panel.view
    QTest.keyClick(view, Qt.Key.Key_1)
    assert view.shown_window() == pytest.approx((float(ds.WindowCenter), float(ds.WindowWidth)))
    QTest.keyClick(view, Qt.Key.Key_2)  # the file has one window: 2 is the image's DEFAULT
    default = view.presets()[0]
    assert view.window() == (default.window_center, default.window_width)
    # a file the export wrote: its labelled windows, in its 12-bit values
    path = tmp_path / "synthetic.dcm"
    synthetic = (np.mgrid[0:80, 0:100][1] * 600 + 1000).astype(np.uint16)
    write_dicom(build_dataset(synthetic, SyntheticImageInfo(prompt="x"), StudyContext.synthetic()), path)
    written = pydicom.dcmread(path)
    assert panel.open_file(path)
    QTest.keyClick(view, Qt.Key.Key_2)
    assert written.WindowCenterWidthExplanation[1] == "LUNG"
    assert view.shown_window() == pytest.approx((float(written.WindowCenter[1]), float(written.WindowWidth[1])))
