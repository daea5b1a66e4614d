"""The viewer widget on synthetic 16-bit images: W/L by mouse, presets, zoom/pan, invert, CLAHE, marks."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from desktop.widgets.linked_views import REAL_MARK_COLOR, MarkedImageView, linked_window
from desktop.widgets.viewer import DisplayOptions, ImageView
from desktop.widgets.viewer_panel import ViewerPanel
from engine import imaging


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:96]
    base = 8000 + 400 * x + 200 * y + rng.normal(0, 800, (64, 96))
    return np.clip(base, 0, 65535).astype(np.uint16)


@pytest.fixture
def view(qtbot, image) -> ImageView:
    view = ImageView()
    qtbot.addWidget(view)
    view.resize(480, 320)
    view.show()
    qtbot.waitExposed(view)
    view.set_image(image, "test")
    return view


def shown_panel(qtbot, image: np.ndarray, label: str, size: tuple[int, int] = (700, 500)) -> ViewerPanel:
    """A ViewerPanel on screen showing ``image``."""
    panel = ViewerPanel()
    qtbot.addWidget(panel)
    panel.resize(*size)
    panel.show()
    panel.set_image(image, label)
    return panel


def mark_pixels(view: ImageView, red: bool = True) -> int:
    """Pixels of the corner mark's colour in the top right: the red SYNTHETIC or (``red=False``) the blue REAL."""
    screen = view.grab().toImage()
    colors = (screen.pixelColor(x, y) for x in range(view.width() - 120, view.width()) for y in range(0, 30))
    if red:
        return sum(color.red() > 200 and color.green() < 130 for color in colors)
    return sum(color.blue() > 200 and color.red() < 130 for color in colors)


def wheel(widget, position: QPointF, notches: int) -> None:
    event = QWheelEvent(
        position, widget.mapToGlobal(position), QPoint(0, 0), QPoint(0, 120 * notches),
        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False,
    )  # fmt: skip
    QApplication.sendEvent(widget, event)


def test_new_image_gets_its_default_window_and_presets(view: ImageView, image) -> None:
    names = [p.name for p in view.presets()]
    assert names == ["DEFAULT", "LUNG", "MEDIASTINUM", "BONE"]
    default = imaging.window_presets(image, ["DEFAULT"])[0]
    assert view.window() == (default.window_center, default.window_width)
    expected = imaging.apply_window(image, default.window_center, default.window_width)
    np.testing.assert_array_equal(view.displayed_pixels(), expected)
    view.apply_preset("BONE")
    assert view.window()[0] > default.window_center
    view.reset_window()
    assert view.window() == (default.window_center, default.window_width)


def test_left_drag_horizontal_is_width_vertical_is_centre(qtbot, view: ImageView) -> None:
    start = QPoint(200, 150)
    c0, w0 = view.window()
    for end, check in (
        (QPoint(260, 150), lambda c, w: w > w0 and c == c0),  # right: wider only
        (QPoint(200, 210), lambda c, w: c > c0 and w == w0),  # down: higher centre only
        (QPoint(140, 90), lambda c, w: c < c0 and w < w0),  # up-left: lower centre, narrower
    ):
        view.set_window(c0, w0)
        with qtbot.waitSignal(view.window_changed, timeout=1000):
            QTest.mousePress(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
            QTest.mouseMove(view, end)
            QTest.mouseRelease(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)
        assert check(*view.window()), view.window()


def test_width_never_goes_below_one(view: ImageView) -> None:
    view.set_window(1000, -50)
    assert view.window()[1] == 1.0


def test_wheel_zooms_about_the_cursor_and_middle_drag_pans(view: ImageView) -> None:
    view.fit()
    anchor = QPointF(250, 140)
    before = (anchor - view.offset()) / view.zoom()
    zoom = view.zoom()
    wheel(view, anchor, 2)
    assert view.zoom() == pytest.approx(zoom * 1.25**2)
    after = (anchor - view.offset()) / view.zoom()
    assert after.x() == pytest.approx(before.x()) and after.y() == pytest.approx(before.y())
    offset = view.offset()
    QTest.mousePress(view, Qt.MouseButton.MiddleButton, Qt.KeyboardModifier.NoModifier, QPoint(100, 100))
    QTest.mouseMove(view, QPoint(130, 80))
    QTest.mouseRelease(view, Qt.MouseButton.MiddleButton, Qt.KeyboardModifier.NoModifier, QPoint(130, 80))
    assert view.offset() == offset + QPointF(30, -20)
    window = view.window()
    assert window == view.window()  # panning leaves W/L alone


def test_fit_and_actual_size(view: ImageView) -> None:
    view.actual_size()
    assert view.zoom() == 1.0
    view.fit()
    assert view.zoom() == pytest.approx(min(480 / 96, 320 / 64))
    QTest.keyClick(view, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier)  # 1 alone is the first preset
    assert view.zoom() == 1.0
    QTest.keyClick(view, Qt.Key.Key_F)
    assert view.zoom() == pytest.approx(5.0)


def test_invert_is_a_display_toggle(view: ImageView, image) -> None:
    plain = view.displayed_pixels().copy()
    QTest.keyClick(view, Qt.Key.Key_I)
    assert view.options().invert
    np.testing.assert_array_equal(view.displayed_pixels(), 255 - plain)
    np.testing.assert_array_equal(view.source, image)  # the data are untouched


def test_clahe_and_enhancement_change_the_display_not_the_data(view: ImageView, image) -> None:
    plain = view.displayed_pixels().copy()
    view.set_options(DisplayOptions(clahe=True, clip_limit=2.0, tile_grid=(8, 8)))
    np.testing.assert_array_equal(view.processed, imaging.clahe(image, 2.0, (8, 8)))
    assert not np.array_equal(view.displayed_pixels(), plain)
    view.set_options(DisplayOptions(enhancement="edges"))
    expected = imaging.to_uint16(imaging.enhance(imaging.stored_to_float(image), "edges"))
    np.testing.assert_array_equal(view.processed, expected)
    np.testing.assert_array_equal(view.source, image)


def test_synthetic_mark_and_overlay_are_painted(view: ImageView) -> None:
    assert mark_pixels(view) > 20  # the red "SYNTHETIC" letters, top right
    assert view.overlay_lines()[0].startswith("W ")
    view.set_image(None)
    assert mark_pixels(view) > 20  # even without an image


def test_a_real_image_is_marked_real_and_never_synthetic(qtbot, image) -> None:
    """The dataset explorer's view of a real image paints its own mark in the SYNTHETIC mark's place."""
    view = MarkedImageView("REAL", REAL_MARK_COLOR)
    qtbot.addWidget(view)
    view.resize(480, 320)
    view.show()
    qtbot.waitExposed(view)
    view.set_image(image, "real")
    assert mark_pixels(view, red=False) > 20 and mark_pixels(view) == 0


def test_other_inputs(view: ImageView) -> None:
    eight = np.arange(64 * 96, dtype=np.uint32).reshape(64, 96).astype(np.uint8)
    view.set_image(eight)
    assert view.source.dtype == np.uint16 and view.source.max() == 255 * 257
    with pytest.raises(ValueError, match="uint16"):
        view.set_image(np.zeros((4, 4), np.float32))


def test_panel_histogram_presets_and_saved_windows(qtbot, image) -> None:
    panel = shown_panel(qtbot, image, "x")
    assert panel.histogram.counts().sum() == image.size
    assert [panel.preset_box.itemText(i) for i in range(panel.preset_box.count())] == [
        "Default", "Lung", "Mediastinum", "Bone",
    ]  # fmt: skip
    panel.apply_preset("lung")
    lung = imaging.window_presets(image, ["LUNG"])[0]
    assert panel.view.window() == (lung.window_center, lung.window_width)
    panel.view.set_window(12345, 6789)
    panel.save_preset("mine")
    panel.view.reset_window()
    panel.apply_preset("mine")
    assert panel.view.window() == (12345.0, 6789.0)
    restored = ViewerPanel()
    qtbot.addWidget(restored)
    restored.load_presets_json(panel.presets_json())
    assert restored.custom_presets == {"mine": (12345.0, 6789.0)}
    restored.load_presets_json("not json")
    assert restored.custom_presets == {}
    panel.clahe_box.setChecked(True)
    assert panel.histogram.counts().sum() == image.size
    assert panel.view.options().clahe


def test_pin_and_compare_are_linked(qtbot, image) -> None:
    panel = shown_panel(qtbot, image, "first", (800, 500))
    assert not panel.compare_box.isEnabled()
    panel.pin_current()
    panel.set_image(65535 - image, "second")
    panel.compare_box.setChecked(True)
    assert panel.comparing()
    np.testing.assert_array_equal(panel.compare_view.source, image)
    panel.view.set_window(20000, 10000)
    # linked in units of each image's own DEFAULT window (as the dataset explorer links them)
    main, pinned = panel.view.presets()[0], panel.compare_view.presets()[0]
    expected = linked_window((main.window_center, main.window_width), (pinned.window_center, pinned.window_width),
                             20000, 10000)  # fmt: skip
    assert panel.compare_view.window() == pytest.approx(expected)
    panel.invert_box.setChecked(True)
    assert panel.compare_view.options().invert
    panel.compare_box.setChecked(False)
    assert not panel.comparing()


def test_the_i_key_and_the_invert_box_are_one_state(qtbot, image) -> None:
    """Issue 17, item 12: I inverted the image but left the box unticked, so clicking the box did nothing."""
    panel = shown_panel(qtbot, image, "x")
    panel.pin_current()
    plain = panel.view.displayed_pixels().copy()
    QTest.keyClick(panel.view, Qt.Key.Key_I)
    assert panel.invert_box.isChecked() and panel.view.options().invert and panel.compare_view.options().invert
    np.testing.assert_array_equal(panel.view.displayed_pixels(), 255 - plain)
    QTest.mouseClick(panel.invert_box, Qt.MouseButton.LeftButton)  # the box now undoes it
    assert not panel.invert_box.isChecked() and not panel.view.options().invert
    np.testing.assert_array_equal(panel.view.displayed_pixels(), plain)
    QTest.keyClick(panel.compare_view, Qt.Key.Key_I)  # I on the pinned image inverts both, as the box does
    assert panel.invert_box.isChecked() and panel.view.options().invert and panel.compare_view.options().invert
    QTest.keyClick(panel.view, Qt.Key.Key_I)
    assert not panel.invert_box.isChecked() and not panel.view.options().invert


def test_clahe_is_one_control(qtbot, image) -> None:
    """Issue 17, item 12: the CLAHE box and Enhance = clahe were two controls that disagreed (one ticked,
    the other not, both applied at once). CLAHE is the box with its clip and tiles; Enhance has no clahe."""
    panel = ViewerPanel()
    qtbot.addWidget(panel)
    panel.set_image(image, "x")
    names = [panel.enhance_box.itemData(i) for i in range(panel.enhance_box.count())]
    assert "clahe" not in names and "none" in names and "radiograph" in names
    panel.clahe_box.setChecked(True)
    assert panel.view.options().clahe and panel.view.options().enhancement == "none"
    np.testing.assert_array_equal(panel.view.processed, imaging.clahe(image, 2.0, (8, 8)))


def test_a_real_image_gets_its_own_units_not_the_exports_spacing_or_markers(qtbot, image) -> None:
    """The explorer's REAL side shows a dataset image: the DICOM export's spacing, 12-bit units and R/L
    markers are facts about generated images, not about it."""
    view = MarkedImageView("REAL", REAL_MARK_COLOR)
    qtbot.addWidget(view)
    view.set_image(image, "real")
    assert view.calibration.spacing_mm is None and view.calibration.orientation is None
    assert view.calibration.unit == "16-bit" and view.shown_window() == view.window()
    generated = ImageView()
    qtbot.addWidget(generated)
    generated.set_image(image, "generated")
    assert generated.calibration.spacing_mm is not None and generated.calibration.orientation == ("R", "L")
