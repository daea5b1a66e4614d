"""The viewer panel: the main ImageView with its controls (window presets, saved presets, fit, invert,
CLAHE, enhancement, the measurement tools), a histogram with the window's edges, and an optional side-by-side
comparison with a pinned or opened image: window/level (in units of each image's default window, as the
dataset explorer links them), display options, the tool and zoom/pan are linked both ways.

Images come from generation and the library, or from a file (:meth:`ViewerPanel.open_file`: a PNG or DICOM
file, real or synthetic, into the main view or the comparison).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QSpinBox,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.dataset import ImageReadError, OpenedImage, open_image
from desktop.widgets.dialogs import DicomOptions
from desktop.widgets.linked_views import follow_view, linked_window
from desktop.widgets.measure import Calibration, MeasureToolBar, file_calibration, generated_calibration
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
    image_opened = Signal(str)  # a file's path, after open_file showed it in the main view
    open_failed = Signal(str)  # one line naming the file and why it was not opened (nothing changed)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = ImageView(self)
        self.compare_view = ImageView(self)
        self.compare_view.hide()
        self.histogram = HistogramView(self)
        self.custom_presets: dict[str, tuple[float, float]] = {}
        self._reference: tuple[np.ndarray, str] | None = None
        self._linking = False
        self.opened: OpenedImage | None = None  # the file the main view shows, if it shows one
        self.reference_opened: OpenedImage | None = None  # the file the comparison shows, if any
        # the DICOM export's settings (DicomOptions.to_dict; the window gives its Settings.export): a generated
        # image's window/level, probe and ruler are in the units and spacing that export writes
        self.export_options: Callable[[], dict] = dict

        # 1. controls
        self.preset_box = QComboBox()
        self.preset_box.setToolTip("Window presets computed from this image (not CT Hounsfield values); keys 1-9")
        self.preset_box.activated.connect(self._preset_chosen)
        self.reset_button = _tool("Reset", "Reset the window to the image's DEFAULT preset (0)", self.view.reset_window)
        self.save_preset_button = _tool("Save W/L…", "Save the current window as a named preset", self._save_preset)
        self.fit_button = _tool("Fit", "Fit the image to the view (F)", self.fit)
        self.actual_button = _tool("1:1", "One image pixel per screen pixel (Ctrl+1)", self.actual_size)
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
        self.tools = MeasureToolBar()
        self.tools.tool_chosen.connect(self.set_tool)
        self.tools.clear_requested.connect(self.clear_measurements)

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
        row2.addSpacing(8)
        row2.addWidget(self.tools)
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
        self.compare_view.view_changed.connect(self._sync_main_view)
        self.compare_view.window_changed.connect(self._compare_window_changed)
        for view in (self.view, self.compare_view):  # one state: the I key ticks the box, the box inverts both
            view.invert_toggled.connect(self.invert_box.setChecked)
            view.tool_changed.connect(self.set_tool)  # a tool key on either view picks it for both
        self._refresh_presets()

    # images ------------------------------------------------------------------------------------

    def set_image(
        self,
        pixels: np.ndarray | None,
        label: str = "",
        *,
        keep_window: bool = False,
        calibration: Calibration | None = None,
    ) -> None:
        """Stored pixels into the main view (``calibration`` None: a generated image, see ImageView.set_image)."""
        self.opened = None
        calibration = self._generated(pixels) if calibration is None else calibration
        self.view.set_image(pixels, label, keep_window=keep_window, calibration=calibration)
        self.histogram.set_data(self.view.processed)
        self.histogram.set_window(*self.view.window())
        self._refresh_presets()
        self._link_window()

    def _generated(self, pixels: np.ndarray | None) -> Calibration | None:
        """A generated image's calibration at the bits stored the DICOM export is set to write."""
        if pixels is None:
            return None
        bits_stored = DicomOptions.from_dict(self.export_options()).bits_stored
        return generated_calibration(tuple(np.shape(pixels)), bits_stored)

    def pin_current(self) -> None:
        if self.view.source is None:
            return
        opened = self.opened  # a pinned file keeps its own units, spacing and tags
        self.set_reference(self.view.source.copy(), f"pinned: {self.view.label}".strip(), self.view.calibration)
        self.reference_opened = opened

    def set_reference(self, pixels: np.ndarray, label: str, calibration: Calibration | None = None) -> None:
        """The image shown on the left in comparison mode."""
        self._reference = (pixels, label)
        self.reference_opened = None
        calibration = self._generated(pixels) if calibration is None else calibration
        self.compare_view.set_image(pixels, label, calibration=calibration)
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

    # files -------------------------------------------------------------------------------------

    def choose_file(self, *, compare: bool = False) -> bool:
        """File > Open image (into the comparison): a dialog, then :meth:`open_file`."""
        title = "Open an image to compare" if compare else "Open an image"
        path, _ = QFileDialog.getOpenFileName(
            self, title, "", "Images (*.dcm *.dicom *.png *.jpg *.jpeg);;DICOM (*.dcm *.dicom);;PNG (*.png);;All (*)"
        )
        return self.open_file(Path(path), compare=compare) if path else False

    def open_file(self, path: str | Path, *, compare: bool = False) -> bool:
        """A PNG or DICOM file (real or synthetic) into the main view, or (``compare``) beside it, with the same
        window/level, CLAHE and tools as any image. A file that cannot be read changes nothing: one line naming
        it goes out through ``open_failed`` and False comes back."""
        path = Path(path)
        try:
            opened = open_image(path)
            calibration = file_calibration(opened.pixels, opened.dataset, opened.stored, str(path))
        except ImageReadError as exc:
            self.open_failed.emit(f"{exc}")
            return False
        except (OSError, ValueError) as exc:  # a DICOM header too odd for the calibration
            self.open_failed.emit(f"{path}: {exc}")
            return False
        if compare:
            self.set_reference(opened.pixels, path.name, calibration)
            self.reference_opened = opened
            self.set_compare(True)
        else:
            self.set_image(opened.pixels, path.name, calibration=calibration)
            self.opened = opened
            self.image_opened.emit(str(path))
        return True

    # tools -------------------------------------------------------------------------------------

    def set_tool(self, tool: str) -> None:
        """The left button's tool on both views (measure.TOOLS)."""
        self.view.set_tool(tool)
        self.compare_view.set_tool(tool)
        self.tools.show_tool(tool)

    def clear_measurements(self) -> None:
        self.view.clear_measurements()
        self.compare_view.clear_measurements()

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
        saved = [(name, *self.custom_presets[name]) for name in sorted(self.custom_presets)]
        self.view.saved_windows = self.compare_view.saved_windows = saved  # keys 1-9 after the image's presets
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

    def _compare_window_changed(self, _center: float, _width: float) -> None:
        if not self._linking:
            self._linking = True
            try:
                self.view.set_window(*_linked(self.compare_view, self.view))  # emits: histogram and window follow
            finally:
                self._linking = False

    def _link_window(self) -> None:
        """The main view's window onto the comparison, in units of each image's own DEFAULT window (a 12-bit
        DICOM beside a 16-bit generated image: the same window in viewer units would wash one out)."""
        if self._reference is None or self._linking or not self.view.has_image():
            return
        self._linking = True
        try:
            self.compare_view.set_window(*_linked(self.view, self.compare_view), emit=False)
        finally:
            self._linking = False

    def _sync_compare_view(self, _zoom: float) -> None:
        self._follow(self.view, self.compare_view)

    def _sync_main_view(self, _zoom: float) -> None:
        self._follow(self.compare_view, self.view)

    def _follow(self, source: ImageView, target: ImageView) -> None:
        if self.comparing() and not self._linking:
            self._linking = True
            try:
                follow_view(source, target)
            finally:
                self._linking = False


def _linked(source: ImageView, target: ImageView) -> tuple[float, float]:
    """The source's window for the target (linked_views.linked_window over each image's DEFAULT preset)."""
    source_default, target_default = source.presets()[0], target.presets()[0]
    return linked_window(
        (source_default.window_center, source_default.window_width),
        (target_default.window_center, target_default.window_width),
        *source.window(),
    )


def _tool(text: str, tip: str, slot: object) -> QToolButton:
    button = QToolButton()
    button.setText(text)
    button.setToolTip(tip)
    button.clicked.connect(slot)
    return button
