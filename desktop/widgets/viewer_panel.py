"""The viewer panel: the main ImageView with its controls (window presets, saved presets, fit, invert,
CLAHE, enhancement), a histogram with the window's edges, and an optional side-by-side comparison with a
pinned image whose window, display options and zoom/pan follow the main view.
"""

from __future__ import annotations

import json

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QSpinBox,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.widgets.viewer import DisplayOptions, ImageView
from engine import imaging


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
