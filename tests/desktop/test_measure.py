"""Measurements on a real viewer (issue 18 items 3 and 4): the ruler in mm from the spacing the DICOM export
writes, the angle, the pixel probe, R/L markers, the tools' keys and Esc, right-drag zoom, preset keys 1-9 and
the window shown in the exported image's units."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtTest import QTest

from desktop.widgets.measure import MEASURE_COLOR, file_calibration
from desktop.widgets.viewer import ImageView
from desktop.widgets.viewer_panel import ViewerPanel
from engine import imaging
from engine.dicom.dataset import StudyContext, SyntheticImageInfo, build_dataset, stored_pixels


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:64, 0:96]
    return np.clip(9000 + 300 * x + 150 * y + rng.normal(0, 500, (64, 96)), 0, 65535).astype(np.uint16)


@pytest.fixture
def view(qtbot, image) -> ImageView:
    view = ImageView()
    qtbot.addWidget(view)
    view.resize(480, 320)
    view.show()
    qtbot.waitExposed(view)
    view.set_image(image, "generated")
    return view


def at(view: ImageView, x: float, y: float) -> QPoint:
    """The widget point of image point (x, y)."""
    return view.image_to_widget(x, y).toPoint()


def drag(view: ImageView, start: QPoint, end: QPoint, button=Qt.MouseButton.LeftButton) -> None:
    QTest.mousePress(view, button, Qt.KeyboardModifier.NoModifier, start)
    QTest.mouseMove(view, end)
    QTest.mouseRelease(view, button, Qt.KeyboardModifier.NoModifier, end)


def exported_spacing(image: np.ndarray) -> float:
    ds = build_dataset(image, SyntheticImageInfo(prompt="x"), StudyContext.synthetic())
    row, column = (float(v) for v in ds.PixelSpacing)
    assert row == column
    return row


def test_the_ruler_measures_mm_at_the_spacing_the_dicom_export_writes(view: ImageView, image) -> None:
    QTest.keyClick(view, Qt.Key.Key_M)
    assert view.tool == "ruler"
    drag(view, at(view, 10, 10), at(view, 40, 50))  # 30 x 40 pixels: 50 pixels long
    [text] = view.measurement_texts()
    length_px = math.dist(
        (view.measurements[0].points[0].x(), view.measurements[0].points[0].y()),
        (view.measurements[0].points[1].x(), view.measurements[0].points[1].y()),
    )
    assert length_px == pytest.approx(50, abs=0.5)  # one screen pixel is 0.2 image pixels here
    assert text == f"{length_px * exported_spacing(image):.1f} mm"


def test_the_ruler_says_px_when_the_spacing_is_unknown(view: ImageView, image) -> None:
    png = imaging.rescale_bits(image, 16, 8)
    view.set_image(png, "a PNG", calibration=file_calibration(png))
    view.set_tool("ruler")
    drag(view, at(view, 2, 2), at(view, 32, 42))  # not at widget (0, 0): QTest reads that as the centre
    assert view.measurement_texts()[0].endswith(" px")
    assert float(view.measurement_texts()[0].split()[0]) == pytest.approx(50, abs=0.5)


def test_the_angle_tool_measures_at_its_middle_point(view: ImageView) -> None:
    QTest.keyClick(view, Qt.Key.Key_A)
    drag(view, at(view, 10, 40), at(view, 40, 40))  # first arm, then the vertex
    QTest.mouseMove(view, at(view, 40, 10))
    QTest.mouseClick(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(view, 40, 10))
    assert view.measurement_texts() == ["90.0°"]
    # three clicks draw one too
    view.clear_measurements()
    for x, y in ((10, 10), (40, 40), (70, 10)):
        QTest.mouseMove(view, at(view, x, y))
        QTest.mouseClick(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(view, x, y))
    assert view.measurement_texts() == ["90.0°"]


def test_the_probe_shows_the_stored_value_of_the_exported_image(view: ImageView, image) -> None:
    QTest.keyClick(view, Qt.Key.Key_P)
    point = at(view, 20.5, 30.5)
    QTest.mouseMove(view, point)
    exported = stored_pixels(image, 12)  # what the DICOM export writes at its default 12 bits
    x, y = 20, 30
    assert view.probe_line == f"x {x} y {y} · stored {exported[y, x]} · value {exported[y, x]} 12-bit stored"
    assert view.overlay_lines()[0] == view.probe_line
    QTest.mouseClick(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, point)  # pins it
    assert view.measurement_texts() == [view.probe_line]


def test_measurements_survive_window_level_and_zoom_and_esc_clears_them(view: ImageView) -> None:
    view.set_tool("ruler")
    drag(view, at(view, 10, 32), at(view, 80, 32))
    before = view.measurement_texts()
    view.set_window(20000, 5000)
    view.zoom_by(2.0, QPointF(240, 160))
    assert view.measurement_texts() == before
    screen = view.grab().toImage()
    middle = at(view, 45, 32)  # on the line where the zoom has moved it
    assert any(screen.pixelColor(middle.x(), middle.y() + dy) == MEASURE_COLOR for dy in (-1, 0, 1)), (
        "the ruler is not drawn where its image points now are"
    )
    QTest.keyClick(view, Qt.Key.Key_Escape)
    assert view.measurement_texts() == []


def test_a_new_image_loses_the_measurements_but_steps_of_one_generation_keep_them(view: ImageView, image) -> None:
    view.set_tool("ruler")
    drag(view, at(view, 10, 10), at(view, 50, 10))
    view.set_image(image, "next step", keep_window=True)
    assert len(view.measurements) == 1
    view.set_image(image, "another case")
    assert view.measurements == []


def test_orientation_markers_show_the_patients_right_on_the_viewers_left(qtbot) -> None:
    view = ImageView()
    qtbot.addWidget(view)
    view.resize(400, 400)
    view.show()
    qtbot.waitExposed(view)
    view.set_image(np.zeros((64, 64), np.uint16), "dark")
    ds = build_dataset(np.zeros((64, 64), np.uint16), SyntheticImageInfo(prompt="x"), StudyContext.synthetic())
    assert list(ds.PatientOrientation) == ["L", "F"]  # the export's: the patient's left towards the right edge
    assert view.calibration.orientation == ("R", "L")
    screen = view.grab().toImage()

    def white(x0: int, x1: int) -> int:
        return sum(
            screen.pixelColor(x, y).red() > 200 and screen.pixelColor(x, y).blue() > 200
            for x in range(x0, x1)
            for y in range(185, 215)
        )

    assert white(0, 40) > 5 and white(360, 400) > 5  # the letters at the left and right edges, mid-height
    png = file_calibration(np.zeros((64, 64), np.uint8))
    view.set_image(np.zeros((64, 64), np.uint8), "a PNG", calibration=png)
    assert view.calibration.orientation is None  # a PNG does not say: no letters rather than a guess


def test_right_drag_zooms_without_a_menu(view: ImageView) -> None:
    zoom = view.zoom()
    drag(view, QPoint(240, 200), QPoint(240, 100), Qt.MouseButton.RightButton)  # up: in
    assert view.zoom() == pytest.approx(zoom * 2.0, rel=0.02)
    drag(view, QPoint(240, 100), QPoint(240, 200), Qt.MouseButton.RightButton)  # down: back out
    assert view.zoom() == pytest.approx(zoom, rel=0.02)


def test_keys_1_to_9_apply_the_image_presets_then_the_saved_ones(qtbot, image) -> None:
    panel = ViewerPanel()
    qtbot.addWidget(panel)
    panel.resize(700, 500)
    panel.show()
    panel.set_image(image, "x")
    presets = panel.view.presets()
    for number, preset in enumerate(presets, 1):
        QTest.keyClick(panel.view, getattr(Qt.Key, f"Key_{number}"))
        assert panel.view.window() == (preset.window_center, preset.window_width)
    panel.view.set_window(30000, 777)
    panel.save_preset("mine")
    panel.view.reset_window()
    QTest.keyClick(panel.view, getattr(Qt.Key, f"Key_{len(presets) + 1}"))
    assert panel.view.window() == (30000, 777)


def test_the_window_is_shown_in_the_units_of_the_exported_image(view: ImageView, image) -> None:
    center, width = view.window()
    scale = 4095 / 65535  # the export's default: 12 bits stored, rescale slope 1, intercept 0
    assert view.shown_window() == pytest.approx((center * scale, width * scale))
    first = view.overlay_lines()[0]
    assert first == f"W {width * scale:.0f}  C {center * scale:.0f}  (12-bit stored)"
    # the same numbers the export's own window of its stored pixels gives (not 16-bit viewer numbers)
    exported = imaging.window_presets(stored_pixels(image, 12))[0]
    assert view.shown_window() == pytest.approx((exported.window_center, exported.window_width), rel=0.01)


def test_the_tool_buttons_and_keys_are_one_choice_for_both_views(qtbot, image) -> None:
    panel = ViewerPanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.set_image(image, "x")
    panel.pin_current()
    QTest.mouseClick(panel.tools.buttons["angle"], Qt.MouseButton.LeftButton)
    assert panel.view.tool == panel.compare_view.tool == "angle"
    QTest.keyClick(panel.view, Qt.Key.Key_W)
    assert panel.view.tool == panel.compare_view.tool == "window"
    assert panel.tools.buttons["window"].isChecked()


def test_the_window_units_follow_the_bits_the_export_is_set_to_write(qtbot, image) -> None:
    panel = ViewerPanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.export_options = lambda: {"bits_stored": 16}  # the export dialog's 16 bits stored
    panel.set_image(image, "x")
    assert panel.view.calibration.unit == "16-bit stored"
    assert panel.view.shown_window() == pytest.approx(panel.view.window())
    panel.export_options = lambda: {"bits_stored": 12}
    panel.set_image(image, "x")
    assert panel.view.calibration.unit == "12-bit stored"
    panel.pin_current()  # the pinned copy keeps the image's calibration
    assert panel.compare_view.calibration == panel.view.calibration
