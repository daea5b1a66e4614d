"""A radiology-style viewer for 16-bit greyscale images (display only; the pixel maths is engine.imaging).

Mouse (as OHIF / Cornerstone and Weasis): left-drag = window/level, *horizontal = width* (right:
wider, less contrast), *vertical = centre* (down: higher centre, darker image); middle-drag = pan;
wheel = zoom about the cursor; double-click = fit. Keys: F fit, 1 actual size, I invert (the panel's
Invert box follows it), R reset, 0 auto window (DEFAULT preset).

Display chain, each stage cached: stored pixels (uint16) -> enhancement preset
(``engine.imaging.enhance``) -> CLAHE (``engine.imaging.clahe``, display only) -> VOI window
(``engine.imaging.apply_window`` through a lookup table built with it) -> invert -> screen. The
window is in stored-pixel units (0..65535), as DICOM writes it. A "SYNTHETIC" mark is always painted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QPixmap,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine import imaging

MIN_ZOOM = 0.05
MAX_ZOOM = 64.0
WHEEL_STEP = 1.25  # zoom factor per wheel notch


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
        self.label = ""  # top-left caption, e.g. "step 5 / 20"

    # 1. data ------------------------------------------------------------------------------------

    def set_image(self, pixels: np.ndarray | None, label: str = "", *, keep_window: bool = False) -> None:
        """Show stored pixels (H, W) uint16 (uint8 is widened); None clears. A new image gets its
        DEFAULT window unless ``keep_window`` (used while stepping through one generation)."""
        self.label = label
        if pixels is None:
            self._source = self._processed = self._display = self._qimage = None
            self._presets = []
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
        self._source = pixels
        self._reprocess(keep_window=keep_window and not new_shape)
        if new_shape or self._fit:
            self.fit()

    def has_image(self) -> bool:
        return self._source is not None

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

    def image_to_widget(self, x: float, y: float) -> QPointF:
        return self._offset + QPointF(x, y) * self._zoom

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._fit:
            self.fit()

    # 5. input ------------------------------------------------------------------------------------

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() in (Qt.MouseButton.LeftButton, Qt.MouseButton.MiddleButton) and self._source is not None:
            self._drag = (event.button(), event.position(), self._center, self._width, QPointF(self._offset))
            left = event.button() == Qt.MouseButton.LeftButton
            self.setCursor(Qt.CursorShape.SizeAllCursor if left else Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag is None:
            super().mouseMoveEvent(event)
            return
        button, start, center, width, offset = self._drag
        delta = event.position() - start
        if button == Qt.MouseButton.LeftButton:
            gain = self._drag_gain()
            self.set_window(center + delta.y() * gain, width + delta.x() * gain)
        else:
            self.set_view(self._zoom, offset + delta)
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._drag is not None and event.button() == self._drag[0]:
            self._drag = None
            self.unsetCursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self.fit()
        event.accept()

    def wheelEvent(self, event: QWheelEvent) -> None:
        notches = event.angleDelta().y() / 120.0
        if notches:
            self.zoom_by(WHEEL_STEP**notches, event.position())
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key == Qt.Key.Key_F:
            self.fit()
        elif key == Qt.Key.Key_1:
            self.actual_size()
        elif key in (Qt.Key.Key_0, Qt.Key.Key_R):
            self.reset_window()
        elif key == Qt.Key.Key_I:
            self.set_options(_replace(self._options, invert=not self._options.invert))
            self.invert_toggled.emit(self._options.invert)
        elif key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom_by(WHEEL_STEP)
        elif key == Qt.Key.Key_Minus:
            self.zoom_by(1 / WHEEL_STEP)
        else:
            super().keyPressEvent(event)

    # 6. painting ---------------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(0, 0, 0))
        if self._qimage is not None and self._source is not None:
            height, width = self._source.shape
            target = QRectF(self._offset.x(), self._offset.y(), width * self._zoom, height * self._zoom)
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self._zoom < 4.0)
            painter.drawImage(target, self._qimage)
            self._paint_overlay(painter)
        else:
            painter.setPen(QColor(150, 150, 150))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.label or "No image")
        self._paint_synthetic_mark(painter)
        painter.end()

    def overlay_lines(self) -> list[str]:
        """The text drawn at the bottom left (also what tests and screen readers can check)."""
        opts = self._options
        lines = [f"W {self._width:.0f}  C {self._center:.0f}", f"Zoom {self._zoom * 100:.0f}%"]
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

    def _paint_synthetic_mark(self, painter: QPainter) -> None:
        font = QFont(self.font())
        font.setBold(True)
        font.setPointSizeF(max(9.0, font.pointSizeF() + 1))
        painter.setFont(font)
        metrics = painter.fontMetrics()
        text = "SYNTHETIC"
        x = self.width() - metrics.horizontalAdvance(text) - 10
        y = 6 + metrics.ascent()
        painter.setPen(QPen(QColor(255, 80, 80)))
        _shadow_text(painter, QPointF(x, y), text, QColor(255, 90, 90))


def _shadow_text(painter: QPainter, point: QPointF, text: str, color: QColor) -> None:
    painter.setPen(QColor(0, 0, 0))
    painter.drawText(point + QPointF(1, 1), text)
    painter.setPen(color)
    painter.drawText(point, text)


def _replace(options: DisplayOptions, **changes: object) -> DisplayOptions:
    from dataclasses import replace

    return replace(options, **changes)


class HistogramView(QWidget):
    """Histogram of the windowed data (log counts) with the window's low and high edges."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(60)
        self.setMaximumHeight(90)
        self._counts: np.ndarray | None = None
        self._window = (32768.0, 65536.0)
        self.setToolTip("Histogram of the displayed data; yellow lines: the window's black and white points")

    def set_data(self, pixels: np.ndarray | None) -> None:
        if pixels is None:
            self._counts = None
        else:
            self._counts, _ = imaging.histogram(pixels, 256)
        self.update()

    def counts(self) -> np.ndarray | None:
        return self._counts

    def set_window(self, window_center: float, window_width: float) -> None:
        self._window = (window_center, window_width)
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(25, 25, 28))
        if self._counts is not None and self._counts.max() > 0:
            heights = np.log1p(self._counts.astype(np.float64))
            heights = heights / heights.max() * (self.height() - 4)
            bar = self.width() / len(heights)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(150, 170, 200))
            for i, h in enumerate(heights):
                if h > 0:
                    painter.drawRect(QRectF(i * bar, self.height() - h, max(bar, 1.0), h))
            center, width = self._window
            scale = self.width() / (imaging.MAX_16BIT + 1)
            painter.setPen(QPen(QColor(255, 220, 80), 1.5))
            for value in (center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2):
                x = value * scale
                painter.drawLine(QPointF(x, 0), QPointF(x, self.height()))
        painter.end()


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


class ViewerPanel(QWidget):
    """The viewer with its controls, a histogram and an optional side-by-side comparison.

    ``view`` is the main image; ``compare_view`` (shown by ``set_compare(True)``) holds the pinned
    reference and is linked to ``view``: window, display options and zoom/pan follow it.
    """

    window_changed = Signal(float, float)
    custom_presets_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = ImageView(self)
        self.compare_view = ImageView(self)
        self.compare_view.hide()
        self.histogram = HistogramView(self)
        self.custom_presets: dict[str, tuple[float, float]] = {}
        self._reference: tuple[np.ndarray, str] | None = None
        self._linking = False

        # 1. controls
        self.preset_box = QComboBox()
        self.preset_box.setToolTip("Window presets computed from this image (not CT Hounsfield values)")
        self.preset_box.activated.connect(self._preset_chosen)
        self.reset_button = _tool("Reset", "Reset the window to the image's DEFAULT preset (0)", self.view.reset_window)
        self.save_preset_button = _tool("Save W/L…", "Save the current window as a named preset", self._save_preset)
        self.fit_button = _tool("Fit", "Fit the image to the view (F)", self.fit)
        self.actual_button = _tool("1:1", "One image pixel per screen pixel (1)", self.actual_size)
        self.invert_box = QCheckBox("Invert")
        self.invert_box.setToolTip("Display inverted (a display toggle: the data are unchanged) (I)")
        self.clahe_box = QCheckBox("CLAHE")
        self.clahe_box.setToolTip("Contrast-limited adaptive histogram equalisation, display only")
        self.clip_spin = QDoubleSpinBox()
        self.clip_spin.setRange(0.1, 40.0)
        self.clip_spin.setSingleStep(0.5)
        self.clip_spin.setValue(2.0)
        self.clip_spin.setPrefix("clip ")
        self.clip_spin.setToolTip("CLAHE clip limit (2.0 is usual for chest films; OpenCV's 40 is far too strong)")
        self.tiles_spin = QSpinBox()
        self.tiles_spin.setRange(1, 32)
        self.tiles_spin.setValue(8)
        self.tiles_spin.setPrefix("tiles ")
        self.tiles_spin.setSuffix(f"x{8}")
        self.tiles_spin.setToolTip("CLAHE tile grid (n x n)")
        self.enhance_box = QComboBox()
        for name, preset in imaging.ENHANCEMENT_PRESETS.items():
            if name == "clahe":  # the CLAHE box (with its clip and tiles) is the one CLAHE control
                continue
            self.enhance_box.addItem(name, name)
            self.enhance_box.setItemData(self.enhance_box.count() - 1, preset.description, Qt.ItemDataRole.ToolTipRole)
        self.enhance_box.setToolTip("Enhancement preset (display only); CLAHE alone is the CLAHE box")
        self.compare_box = QCheckBox("Compare")
        self.compare_box.setToolTip("Show the pinned image beside the current one, linked")
        self.compare_box.setEnabled(False)
        self.pin_button = _tool("Pin", "Pin the current image for side-by-side comparison", self.pin_current)
        for widget in (self.invert_box, self.clahe_box):
            widget.toggled.connect(self._options_changed)
        self.clip_spin.valueChanged.connect(self._options_changed)
        self.tiles_spin.valueChanged.connect(self._tiles_changed)
        self.enhance_box.currentIndexChanged.connect(self._options_changed)
        self.compare_box.toggled.connect(self.set_compare)

        row1 = QHBoxLayout()
        row1.setContentsMargins(0, 0, 0, 0)
        row1.addWidget(QLabel("W/L"))
        for widget in (self.preset_box, self.reset_button, self.save_preset_button):
            row1.addWidget(widget)
        row1.addSpacing(8)
        for widget in (self.fit_button, self.actual_button, self.invert_box):
            row1.addWidget(widget)
        row1.addSpacing(8)
        for widget in (self.pin_button, self.compare_box):
            row1.addWidget(widget)
        row1.addStretch(1)
        row2 = QHBoxLayout()
        row2.setContentsMargins(0, 0, 0, 0)
        for widget in (self.clahe_box, self.clip_spin, self.tiles_spin, QLabel("Enhance"), self.enhance_box):
            row2.addWidget(widget)
        row2.addStretch(1)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.compare_view)
        self.splitter.addWidget(self.view)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row1)
        layout.addLayout(row2)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.histogram)

        # 2. linking
        self.view.window_changed.connect(self._view_window_changed)
        self.view.view_changed.connect(self._sync_compare_view)
        self.compare_view.window_changed.connect(self._compare_window_changed)
        for view in (self.view, self.compare_view):  # one state: the I key ticks the box, the box inverts both
            view.invert_toggled.connect(self.invert_box.setChecked)
        self._refresh_presets()

    # images ------------------------------------------------------------------------------------

    def set_image(self, pixels: np.ndarray | None, label: str = "", *, keep_window: bool = False) -> None:
        self.view.set_image(pixels, label, keep_window=keep_window)
        self.histogram.set_data(self.view.processed)
        self.histogram.set_window(*self.view.window())
        self._refresh_presets()
        self._link_window()

    def pin_current(self) -> None:
        if self.view.source is None:
            return
        self.set_reference(self.view.source.copy(), f"pinned: {self.view.label}".strip())

    def set_reference(self, pixels: np.ndarray, label: str) -> None:
        """The image shown on the left in comparison mode."""
        self._reference = (pixels, label)
        self.compare_view.set_image(pixels, label)
        self.compare_view.set_options(self.view.options())
        self.compare_box.setEnabled(True)
        self._link_window()

    def set_compare(self, on: bool) -> None:
        on = bool(on) and self._reference is not None
        if self.compare_box.isChecked() != on:
            self.compare_box.setChecked(on)
        self.compare_view.setVisible(on)
        if on:
            self.compare_view.fit()
            self.view.fit()

    def comparing(self) -> bool:
        return self.compare_view.isVisible()

    def fit(self) -> None:
        self.view.fit()
        self.compare_view.fit()

    def actual_size(self) -> None:
        self.view.actual_size()
        self.compare_view.actual_size()

    # controls ----------------------------------------------------------------------------------

    def display_options(self) -> DisplayOptions:
        tiles = self.tiles_spin.value()
        return DisplayOptions(
            invert=self.invert_box.isChecked(),
            clahe=self.clahe_box.isChecked(),
            clip_limit=self.clip_spin.value(),
            tile_grid=(tiles, tiles),
            enhancement=self.enhance_box.currentData() or "none",
        )

    def _tiles_changed(self, value: int) -> None:
        self.tiles_spin.setSuffix(f"x{value}")
        self._options_changed()

    def _options_changed(self, *_args: object) -> None:
        options = self.display_options()
        self.view.set_options(options)
        self.compare_view.set_options(options)
        self.histogram.set_data(self.view.processed)
        self._refresh_presets()

    def _refresh_presets(self) -> None:
        current = self.preset_box.currentText()
        self.preset_box.blockSignals(True)
        self.preset_box.clear()
        for preset in self.view.presets():
            self.preset_box.addItem(preset.name.title(), ("image", preset.name))
        for name in sorted(self.custom_presets):
            self.preset_box.addItem(f"{name} (saved)", ("custom", name))
        index = self.preset_box.findText(current)
        self.preset_box.setCurrentIndex(max(index, 0))
        self.preset_box.blockSignals(False)
        self.preset_box.setEnabled(self.view.has_image())

    def _preset_chosen(self, index: int) -> None:
        kind, name = self.preset_box.itemData(index)
        if kind == "image":
            self.view.apply_preset(name)
        else:
            self.view.set_window(*self.custom_presets[name])

    def apply_preset(self, name: str) -> None:
        """By name: an image preset (DEFAULT, LUNG, MEDIASTINUM, BONE) or a saved one."""
        if name in self.custom_presets:
            self.view.set_window(*self.custom_presets[name])
        else:
            self.view.apply_preset(name.upper())

    def _save_preset(self) -> None:
        name, ok = QInputDialog.getText(self, "Save window preset", "Name for the current window:")
        if ok and name.strip():
            self.save_preset(name.strip())

    def save_preset(self, name: str) -> None:
        self.custom_presets[name] = self.view.window()
        self._refresh_presets()
        self.custom_presets_changed.emit()

    def presets_json(self) -> str:
        return json.dumps({k: list(v) for k, v in self.custom_presets.items()})

    def load_presets_json(self, text: str) -> None:
        try:
            data = json.loads(text) if text else {}
            self.custom_presets = {str(k): (float(v[0]), float(v[1])) for k, v in data.items()}
        except (ValueError, TypeError, IndexError, AttributeError):
            self.custom_presets = {}
        self._refresh_presets()

    # linking -----------------------------------------------------------------------------------

    def _view_window_changed(self, center: float, width: float) -> None:
        self.histogram.set_window(center, width)
        self._link_window()
        self.window_changed.emit(center, width)

    def _compare_window_changed(self, center: float, width: float) -> None:
        if not self._linking:
            self.view.set_window(center, width)

    def _link_window(self) -> None:
        if self._reference is None or self._linking:
            return
        self._linking = True
        try:
            self.compare_view.set_window(*self.view.window(), emit=False)
        finally:
            self._linking = False

    def _sync_compare_view(self, _zoom: float) -> None:
        if self.comparing() and self.compare_view.source is not None and not self._linking:
            self._linking = True
            try:
                self.compare_view.set_view(self.view.zoom(), self.view.offset())
            finally:
                self._linking = False


def _tool(text: str, tip: str, slot: object) -> QToolButton:
    button = QToolButton()
    button.setText(text)
    button.setToolTip(tip)
    button.clicked.connect(slot)
    return button
