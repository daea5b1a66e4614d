"""A radiology-style viewer for 16-bit greyscale images (display only; the pixel maths is engine.imaging).

Mouse (as OHIF / Cornerstone and Weasis): left-drag = window/level, *horizontal = width* (right:
wider, less contrast), *vertical = centre* (down: higher centre, darker image), or the chosen measurement
tool (desktop.widgets.measure); middle-drag = pan; right-drag = zoom; wheel = zoom about the cursor;
double-click = fit. Keys: the table desktop.shortcuts.VIEWER_KEYS (1-9 window presets as in OHIF/RadiAnt,
0 auto window, F fit, I invert, W/M/A/P tools, Esc clears the measurements, ...).

Display chain, each stage cached: stored pixels (uint16) -> enhancement preset
(``engine.imaging.enhance``) -> CLAHE (``engine.imaging.clahe``, display only) -> VOI window
(``engine.imaging.apply_window`` through a lookup table built with it) -> invert -> screen. The
window is held in viewer units (0..65535) and shown in the image's own units (:class:`Calibration`: the
exported stored values for a generated image, the modality values of an opened file). A "SYNTHETIC" mark is
always painted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QImage,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPixmap,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QWidget,
)

from desktop.shortcuts import viewer_key
from desktop.widgets.measure import (
    TOOLS,
    Calibration,
    Measurement,
    generated_calibration,
    measurement_text,
    paint_measurements,
    paint_orientation,
    probe_text,
)
from engine import imaging

MIN_ZOOM = 0.05
MAX_ZOOM = 64.0
WHEEL_STEP = 1.25  # zoom factor per wheel notch
DRAG_ZOOM_PIXELS = 100.0  # a right-drag of this many pixels up doubles the zoom


@dataclass(frozen=True)
class DisplayOptions:
    """Everything between the stored pixels and the screen except the window itself."""

    invert: bool = False
    clahe: bool = False
    clip_limit: float = 2.0
    tile_grid: tuple[int, int] = (8, 8)
    enhancement: str = "none"


def window_lut(window_center: float, window_width: float, invert: bool, maximum: int) -> np.ndarray:
    """apply_window over every stored value 0..maximum: a (maximum + 1,) uint8 table."""
    return imaging.apply_window(np.arange(maximum + 1, dtype=np.float64), window_center, window_width, invert=invert)


def to_qimage(display: np.ndarray) -> QImage:
    """(H, W) uint8 -> a QImage that owns a copy of the bytes."""
    display = np.ascontiguousarray(display, dtype=np.uint8)
    height, width = display.shape
    return QImage(display.data, width, height, display.strides[0], QImage.Format.Format_Grayscale8).copy()


def thumbnail_pixels(pixels: np.ndarray, size: int = 96) -> np.ndarray:
    """Stored pixels (H, W) uint16 -> a uint8 thumbnail at most about ``2 * size`` pixels a side, in its
    DEFAULT window: what the step strip and the export and send dialogs draw (scaled to ``size``)."""
    small = np.asarray(pixels)
    step = max(1, max(small.shape) // (size * 2))
    if step > 1:
        small = small[::step, ::step]
    window = imaging.window_presets(small, ["DEFAULT"])[0]
    return imaging.apply_window(small, window.window_center, window.window_width)


class ImageView(QWidget):
    """Shows one stored-pixel image with window/level, zoom and pan."""

    window_changed = Signal(float, float)  # centre, width (stored-pixel units)
    view_changed = Signal(float)  # zoom (screen pixels per image pixel)
    invert_toggled = Signal(bool)  # the I key: a panel's Invert box follows it
    tool_changed = Signal(str)  # one of measure.TOOLS (a panel's tool buttons and the other view follow)
    measurements_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(QSize(160, 160))
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(False)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self._source: np.ndarray | None = None  # stored pixels, uint16 (H, W)
        self._processed: np.ndarray | None = None  # after enhancement and CLAHE
        self._display: np.ndarray | None = None  # uint8 after the window
        self._qimage: QImage | None = None
        self._presets: list[imaging.WindowPreset] = []
        self._options = DisplayOptions()
        self._center = 32768.0
        self._width = 65536.0
        self._zoom = 1.0
        self._offset = QPointF(0.0, 0.0)  # widget position of the image's top-left corner
        self._fit = True
        self._drag: tuple[Qt.MouseButton, QPointF, float, float, QPointF] | None = None
        self._drag_zoom = 1.0  # the zoom when a right-drag began
        self.label = ""  # top-left caption, e.g. "step 5 / 20"
        self.calibration = Calibration()
        self.tool = "window"
        self.measurements: list[Measurement] = []  # finished ones, in image coordinates
        self._pending: Measurement | None = None  # the one being drawn
        self.probe_line = ""  # the pixel under the cursor while the probe tool is chosen
        self.saved_windows: list[tuple[str, float, float]] = []  # the panel's saved presets: keys after the image's
        self.heat_overlay: QImage | None = None  # a finding map drawn over the image (never mixed into its pixels)
        self.heat_opacity = 0.0

    # 1. data ------------------------------------------------------------------------------------

    def set_image(
        self,
        pixels: np.ndarray | None,
        label: str = "",
        *,
        keep_window: bool = False,
        calibration: Calibration | None = None,
    ) -> None:
        """Show stored pixels (H, W) uint16 (uint8 is widened); None clears. A new image gets its
        DEFAULT window and loses the measurements unless ``keep_window`` (used while stepping through one
        generation). ``calibration``: what the pixels mean; None for a generated image (the DICOM export's
        spacing, stored bits and orientation)."""
        self.label = label
        if not keep_window or pixels is None or self._source is None or np.shape(pixels) != self._source.shape:
            self.clear_measurements()
        if pixels is None:
            self._source = self._processed = self._display = self._qimage = None
            self._presets = []
            self.calibration = Calibration()
            self.update()
            return
        pixels = np.asarray(pixels)
        if pixels.ndim != 2:
            raise ValueError(f"the viewer shows one (H, W) image, not shape {pixels.shape}")
        if pixels.dtype == np.uint8:
            pixels = imaging.rescale_bits(pixels, 8, 16)
        elif pixels.dtype != np.uint16:
            raise ValueError(f"the viewer shows uint16 stored pixels, not {pixels.dtype}")
        new_shape = self._source is None or self._source.shape != pixels.shape
        if calibration is None:
            calibration = generated_calibration(tuple(pixels.shape))
        self.calibration = calibration
        self._source = pixels
        self._reprocess(keep_window=keep_window and not new_shape)
        if new_shape or self._fit:
            self.fit()

    def has_image(self) -> bool:
        return self._source is not None

    def set_heat_overlay(self, rgba: np.ndarray | None, opacity: float = 1.0) -> None:
        """Draw (H, W, 4) uint8 RGBA over the image, stretched to it, at ``opacity`` in [0, 1]; None removes it.
        Painted only: the stored, processed and displayed pixels stay as they are."""
        if rgba is None:
            self.heat_overlay = None
        else:
            rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
            height, width = rgba.shape[:2]
            self.heat_overlay = QImage(rgba.data, width, height, 4 * width, QImage.Format.Format_RGBA8888).copy()
        self.heat_opacity = float(opacity)
        self.update()

    @property
    def source(self) -> np.ndarray | None:
        return self._source

    @property
    def processed(self) -> np.ndarray | None:
        """Stored pixels after enhancement and CLAHE (what the window is applied to)."""
        return self._processed

    def displayed_pixels(self) -> np.ndarray | None:
        """The uint8 (H, W) image as drawn, before zoom: the result of the whole display chain."""
        return self._display

    def presets(self) -> list[imaging.WindowPreset]:
        return list(self._presets)

    def _reprocess(self, *, keep_window: bool) -> None:
        # 1. enhancement and CLAHE on the stored pixels (display only)
        assert self._source is not None
        opts = self._options
        data = self._source
        if opts.enhancement != "none":
            data = imaging.to_uint16(imaging.enhance(imaging.stored_to_float(data), opts.enhancement))
        if opts.clahe:
            data = imaging.clahe(data, opts.clip_limit, opts.tile_grid)
        self._processed = data
        # 2. presets from the image being windowed
        self._presets = imaging.window_presets(data)
        if not keep_window:
            default = self._presets[0]
            self._center, self._width = default.window_center, default.window_width
        self._rewindow()

    def _rewindow(self) -> None:
        if self._processed is None:
            return
        lut = window_lut(self._center, self._width, self._options.invert, imaging.MAX_16BIT)
        self._display = lut[self._processed]
        self._qimage = to_qimage(self._display)
        self.update()

    # 2. window / level ------------------------------------------------------------------------

    def window(self) -> tuple[float, float]:
        """(centre, width) in stored-pixel units."""
        return self._center, self._width

    def set_window(self, window_center: float, window_width: float, *, emit: bool = True) -> None:
        window_width = max(1.0, float(window_width))
        window_center = float(window_center)
        if not (math.isfinite(window_center) and math.isfinite(window_width)):
            return
        if (window_center, window_width) == (self._center, self._width):
            return
        self._center, self._width = window_center, window_width
        self._rewindow()
        if emit:
            self.window_changed.emit(self._center, self._width)

    def apply_preset(self, name: str) -> None:
        for preset in self._presets:
            if preset.name == name:
                self.set_window(preset.window_center, preset.window_width)
                return
        raise KeyError(f"no window preset {name!r}")

    def reset_window(self) -> None:
        if self._presets:
            self.apply_preset(self._presets[0].name)

    def apply_preset_number(self, number: int) -> bool:
        """Keys 1-9: an opened file's own windows first (as Weasis offers them), then the image's presets in
        order (DEFAULT, LUNG, MEDIASTINUM, BONE), then the saved ones."""
        windows = [self.calibration.viewer_window(center, width) for _name, center, width in self.calibration.windows]
        windows += [(p.window_center, p.window_width) for p in self._presets]
        windows += [(center, width) for _name, center, width in self.saved_windows]
        if not 1 <= number <= len(windows):
            return False
        self.set_window(*windows[number - 1])
        return True

    def shown_window(self) -> tuple[float, float]:
        """(centre, width) in the image's units (:class:`Calibration`), as the overlay shows them."""
        return self.calibration.window(self._center, self._width)

    def _drag_gain(self) -> float:
        """Stored-pixel units per screen pixel of drag: the image's own range over ~500 px."""
        if self._processed is None:
            return 1.0
        span = float(self._processed.max()) - float(self._processed.min())
        return max(1.0, span / 500.0)

    # 3. display options -------------------------------------------------------------------------

    def options(self) -> DisplayOptions:
        return self._options

    def set_options(self, options: DisplayOptions) -> None:
        if options == self._options:
            return
        old, self._options = self._options, options
        if self._source is None:
            return
        if (old.clahe, old.clip_limit, old.tile_grid, old.enhancement) != (
            options.clahe, options.clip_limit, options.tile_grid, options.enhancement,
        ):  # fmt: skip
            self._reprocess(keep_window=True)
        else:
            self._rewindow()

    # 4. zoom and pan ---------------------------------------------------------------------------

    def zoom(self) -> float:
        return self._zoom

    def offset(self) -> QPointF:
        return QPointF(self._offset)

    def fit(self) -> None:
        self._fit = True
        if self._source is None:
            return
        height, width = self._source.shape
        zoom = min(self.width() / width, self.height() / height)
        self._set_view(zoom, QPointF((self.width() - width * zoom) / 2, (self.height() - height * zoom) / 2))

    def actual_size(self) -> None:
        """1:1 - one image pixel per screen pixel, centred."""
        self._fit = False
        if self._source is None:
            return
        height, width = self._source.shape
        self._set_view(1.0, QPointF((self.width() - width) / 2, (self.height() - height) / 2))

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        """Zoom keeping the image point under ``anchor`` (default: the widget centre) in place."""
        if self._source is None:
            return
        self._fit = False
        anchor = QPointF(self.width() / 2, self.height() / 2) if anchor is None else anchor
        zoom = min(MAX_ZOOM, max(MIN_ZOOM, self._zoom * factor))
        image_point = (anchor - self._offset) / self._zoom
        self._set_view(zoom, anchor - image_point * zoom)

    def set_view(self, zoom: float, offset: QPointF) -> None:
        """Set zoom and pan exactly (for linked comparison views)."""
        self._fit = False
        self._set_view(zoom, offset)

    def _set_view(self, zoom: float, offset: QPointF) -> None:
        self._zoom, self._offset = zoom, QPointF(offset)
        self.update()
        self.view_changed.emit(self._zoom)

    def zoom_in(self) -> None:
        self.zoom_by(WHEEL_STEP)

    def zoom_out(self) -> None:
        self.zoom_by(1 / WHEEL_STEP)

    def toggle_invert(self) -> None:
        self.set_options(replace(self._options, invert=not self._options.invert))
        self.invert_toggled.emit(self._options.invert)

    def image_to_widget(self, x: float, y: float) -> QPointF:
        return self._offset + QPointF(x, y) * self._zoom

    def widget_to_image(self, point: QPointF) -> QPointF:
        return (point - self._offset) / self._zoom

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._fit:
            self.fit()

    # 5. measurements ----------------------------------------------------------------------------

    def set_tool(self, tool: str) -> None:
        """What the left button does: "window" (window/level) or a measurement tool (measure.TOOLS)."""
        if tool not in TOOLS:
            raise ValueError(f"no viewer tool {tool!r}; the tools are {', '.join(TOOLS)}")
        if tool == self.tool:
            return
        self.tool = tool
        self._pending = None
        self.probe_line = ""
        self.setMouseTracking(tool != "window")  # the probe reads, and a rubber band follows, without a button
        self.update()
        self.tool_changed.emit(tool)

    def clear_measurements(self) -> bool:
        """Esc / Clear: remove every measurement; False when there were none."""
        had = bool(self.measurements or self._pending)
        self.measurements, self._pending = [], None
        if had:
            self.update()
            self.measurements_changed.emit()
        return had

    def measurement_texts(self) -> list[str]:
        """What each finished measurement says ("52.3 mm", "90.0°", "x 3 y 4 · stored ..."), in order."""
        if self._source is None:
            return []
        return [measurement_text(m, self._source, self.calibration) for m in self.measurements]

    def _measure_press(self, point: QPointF) -> None:
        """A press starts a measurement or places its next point; the last point follows the mouse."""
        image_point = self.widget_to_image(point)
        if self._pending is None:
            self._pending = Measurement(self.tool, [image_point])
            if self.tool != "probe":
                self._pending.points.append(QPointF(image_point))  # the point that follows the mouse
            else:
                self._commit_point()
            self.update()
            return
        self._pending.points[-1] = image_point
        self._commit_point()

    def _measure_release(self, point: QPointF) -> None:
        """A release after a drag places the point; after a click the next click does."""
        if self._pending is None:
            return
        self._pending.points[-1] = self.widget_to_image(point)
        if (self._pending.points[-1] - self._pending.points[-2]).manhattanLength() * self._zoom >= 3:
            self._commit_point()
        self.update()

    def _commit_point(self) -> None:
        """The following point stays where it is: the measurement is done, or a new point follows the mouse."""
        pending = self._pending
        assert pending is not None
        if pending.complete():
            self.measurements.append(pending)
            self._pending = None
            self.measurements_changed.emit()
        else:
            pending.points.append(QPointF(pending.points[-1]))
        self.update()

    # 6. input ------------------------------------------------------------------------------------

    def mousePressEvent(self, event: QMouseEvent) -> None:
        buttons = (Qt.MouseButton.LeftButton, Qt.MouseButton.MiddleButton, Qt.MouseButton.RightButton)
        if event.button() in buttons and self._source is not None:
            left = event.button() == Qt.MouseButton.LeftButton
            if left and self.tool != "window":
                self._measure_press(event.position())
                event.accept()
                return
            self._drag = (event.button(), event.position(), self._center, self._width, QPointF(self._offset))
            self._drag_zoom = self._zoom
            cursors = {Qt.MouseButton.LeftButton: Qt.CursorShape.SizeAllCursor,
                       Qt.MouseButton.MiddleButton: Qt.CursorShape.ClosedHandCursor,
                       Qt.MouseButton.RightButton: Qt.CursorShape.SizeVerCursor}  # fmt: skip
            self.setCursor(cursors[event.button()])
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag is None:
            if self._source is not None and self.tool != "window":
                self._measure_move(event.position())
                event.accept()
                return
            super().mouseMoveEvent(event)
            return
        button, start, center, width, offset = self._drag
        delta = event.position() - start
        if button == Qt.MouseButton.LeftButton:
            gain = self._drag_gain()
            self.set_window(center + delta.y() * gain, width + delta.x() * gain)
        elif button == Qt.MouseButton.RightButton:  # zoom about where the drag began, as OHIF's zoom tool
            factor = 2.0 ** (-delta.y() / DRAG_ZOOM_PIXELS) * self._drag_zoom / self._zoom
            self.zoom_by(factor, start)
        else:
            self.set_view(self._zoom, offset + delta)
        event.accept()

    def _measure_move(self, point: QPointF) -> None:
        if self.tool == "probe":
            self.probe_line = probe_text(self.widget_to_image(point), self._source, self.calibration)
            self.update()
        elif self._pending is not None:
            self._pending.points[-1] = self.widget_to_image(point)
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.tool != "window" and self._drag is None:
            self._measure_release(event.position())
            event.accept()
            return
        if self._drag is not None and event.button() == self._drag[0]:
            self._drag = None
            self.unsetCursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def contextMenuEvent(self, event) -> None:
        event.accept()  # the right button zooms; no menu pops up at the end of a drag

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self.fit()
        event.accept()

    def wheelEvent(self, event: QWheelEvent) -> None:
        notches = event.angleDelta().y() / 120.0
        if notches:
            self.zoom_by(WHEEL_STEP**notches, event.position())
        event.accept()

    def event(self, event: QEvent) -> bool:
        # Esc is also the window's Cancel shortcut: while there are measurements, Esc clears them first
        if (
            event.type() == QEvent.Type.ShortcutOverride
            and isinstance(event, QKeyEvent)
            and event.key() == Qt.Key.Key_Escape
            and (self.measurements or self._pending)
        ):
            event.accept()
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        modifiers = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        entry = viewer_key(QKeySequence(event.key() | modifiers.value))
        if entry is None:
            super().keyPressEvent(event)
            return
        getattr(self, entry.method)(*entry.args)
        event.accept()

    # 7. painting ---------------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(0, 0, 0))
        if self._qimage is not None and self._source is not None:
            height, width = self._source.shape
            target = QRectF(self._offset.x(), self._offset.y(), width * self._zoom, height * self._zoom)
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self._zoom < 4.0)
            painter.drawImage(target, self._qimage)
            if self.heat_overlay is not None and self.heat_opacity > 0.0:
                painter.setOpacity(self.heat_opacity)
                painter.drawImage(target, self.heat_overlay)
                painter.setOpacity(1.0)
            self._paint_measurements(painter, target)
            self._paint_overlay(painter)
        else:
            painter.setPen(QColor(150, 150, 150))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.label or "No image")
        self._paint_synthetic_mark(painter)
        painter.end()

    def overlay_lines(self) -> list[str]:
        """The text drawn at the bottom left (also what tests and screen readers can check)."""
        opts = self._options
        center, width = self.shown_window()
        unit = f"  ({self.calibration.unit})" if self.calibration.unit else ""
        lines = [f"W {_window_number(width)}  C {_window_number(center)}{unit}", f"Zoom {self._zoom * 100:.0f}%"]
        if self.probe_line:
            lines.insert(0, self.probe_line)
        extras = []
        if opts.invert:
            extras.append("INVERTED")
        if opts.clahe:
            extras.append(f"CLAHE {opts.clip_limit:g} {opts.tile_grid[0]}x{opts.tile_grid[1]}")
        if opts.enhancement != "none":
            extras.append(f"enhance: {opts.enhancement}")
        if extras:
            lines.append("  ".join(extras))
        return lines

    def _paint_overlay(self, painter: QPainter) -> None:
        font = QFont(self.font())
        font.setPointSizeF(max(8.0, font.pointSizeF()))
        painter.setFont(font)
        metrics = painter.fontMetrics()
        line_height = metrics.height()
        lines = self.overlay_lines()
        y = self.height() - 6 - line_height * (len(lines) - 1)
        for line in lines:
            _shadow_text(painter, QPointF(8, y), line, QColor(255, 230, 120))
            y += line_height
        if self.label:
            _shadow_text(painter, QPointF(8, 6 + metrics.ascent()), self.label, QColor(220, 220, 220))

    def _paint_measurements(self, painter: QPainter, target: QRectF) -> None:
        shown = self.measurements + ([self._pending] if self._pending is not None else [])
        paint_measurements(painter, self.image_to_widget, shown, self._source, self.calibration)
        if self.calibration.orientation is not None:
            middle = target.center().y()
            left = QPointF(max(0.0, target.left()), middle)
            right = QPointF(min(float(self.width()), target.right()), middle)
            paint_orientation(painter, left, right, self.calibration.orientation)

    def _paint_synthetic_mark(self, painter: QPainter) -> None:
        """The hook for the corner mark; a view of a real image paints another (dataset explorer)."""
        self._paint_mark(painter, "SYNTHETIC", QColor(255, 90, 90))

    def _paint_mark(self, painter: QPainter, text: str, color: QColor) -> None:
        """``text`` in bold at the top right, with a shadow so that it reads on any image."""
        font = QFont(self.font())
        font.setBold(True)
        font.setPointSizeF(max(9.0, font.pointSizeF() + 1))
        painter.setFont(font)
        metrics = painter.fontMetrics()
        x = self.width() - metrics.horizontalAdvance(text) - 10
        y = 6 + metrics.ascent()
        _shadow_text(painter, QPointF(x, y), text, color)


def _window_number(value: float) -> str:
    """Window values to one decimal below 100 (an 8-bit or a rescaled image), whole numbers above."""
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def _shadow_text(painter: QPainter, point: QPointF, text: str, color: QColor) -> None:
    painter.setPen(QColor(0, 0, 0))
    painter.drawText(point + QPointF(1, 1), text)
    painter.setPen(color)
    painter.drawText(point, text)


def reserve_text_lines(label: QLabel, lines: int) -> QLabel:
    """Give a word-wrapped status label a fixed height of ``lines`` lines, so that a message appearing,
    growing or going does not move the buttons around it (the whole text is also its tooltip)."""
    label.setWordWrap(True)
    label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
    margins = label.contentsMargins()
    label.setFixedHeight(label.fontMetrics().lineSpacing() * lines + margins.top() + margins.bottom() + 2)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
    return label


class CasePreview(QWidget):
    """A thumbnail and a caption ("case 12 · seed 123 · …") of the image an export or a send will write,
    so that what leaves the application can be checked against what is on screen."""

    SIZE = 96

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._thumbnail: np.ndarray | None = None
        self.image_label = QLabel()
        self.image_label.setFixedSize(self.SIZE, self.SIZE)
        self.image_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image_label.setStyleSheet("background: black")
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.image_label)
        layout.addWidget(self.caption, 1)
        self.set_image(None, "")

    def set_image(self, pixels: np.ndarray | None, caption: str) -> None:
        """Stored pixels (H, W) uint16, or None for "no image"."""
        if pixels is None:
            self._thumbnail = None
            self.image_label.clear()
            self.image_label.setText("no image")
            self.caption.setText(caption or "No image: generate one or open a case from the library.")
            return
        self._thumbnail = thumbnail_pixels(pixels, self.SIZE)
        pixmap = QPixmap.fromImage(to_qimage(self._thumbnail))
        self.image_label.setPixmap(
            pixmap.scaled(
                self.SIZE, self.SIZE, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
        )
        self.caption.setText(caption)

    def thumbnail(self) -> np.ndarray | None:
        """The uint8 thumbnail drawn (before scaling to the label)."""
        return self._thumbnail

    def text(self) -> str:
        return self.caption.text()
