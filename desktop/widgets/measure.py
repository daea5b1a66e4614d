"""Measurements on the viewer, as PACS viewers draw them: a ruler (mm from the pixel spacing, "px" when the
spacing is unknown), an angle (three points, the middle one the vertex) and a pixel probe (stored value and the
value in the image's units), plus the R/L orientation markers.

Measurements are kept in image coordinates (pixel centres at x + 0.5), so zoom, pan and window/level leave them
where they were drawn. :class:`Calibration` says what an image's pixels mean: its spacing, how a viewer value
(uint16) maps to the image's own units, and which side of the patient each image edge shows.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QButtonGroup, QHBoxLayout, QToolButton, QWidget

from engine import imaging

TOOLS = ("window", "ruler", "angle", "probe")  # "window": the left button sets window/level (the default)
TOOL_TEXT = {"window": "W/L", "ruler": "Ruler", "angle": "Angle", "probe": "Probe"}
MEASURE_COLOR = QColor(120, 255, 140)
MARKER_COLOR = QColor(255, 255, 255)


@dataclass(frozen=True)
class Calibration:
    """What an image's pixels mean.

    ``spacing_mm``: (row, column) spacing in mm per pixel, None when unknown. A viewer value ``v`` (the uint16
    the viewer holds) is ``value_offset + value_scale * v`` in ``unit`` (e.g. "12-bit stored", "US"), which is
    also the unit of the window/level shown. ``stored``: the values the file holds (H, W), for the probe, when
    they differ from the viewer's (a MONOCHROME1 file); None: the stored value is ``value`` itself.
    ``orientation``: the patient side at the image's (left, right) edges, e.g. ("R", "L"), None unknown.
    """

    spacing_mm: tuple[float, float] | None = None
    value_scale: float = 1.0
    value_offset: float = 0.0
    unit: str = ""
    stored: np.ndarray | None = field(default=None, compare=False, repr=False)
    orientation: tuple[str, str] | None = None
    source: str = "generated"  # "generated" (the DICOM export's facts) or the opened file's path
    windows: tuple[tuple[str, float, float], ...] = ()  # a file's own (name, centre, width), in its units

    def value(self, viewer_value: float) -> float:
        return self.value_offset + self.value_scale * viewer_value

    def window(self, window_center: float, window_width: float) -> tuple[float, float]:
        """A viewer window (uint16 units) in the image's units."""
        return self.value(window_center), abs(self.value_scale) * window_width

    def viewer_window(self, window_center: float, window_width: float) -> tuple[float, float]:
        """A window in the image's units -> viewer units (the inverse of :meth:`window`)."""
        return (window_center - self.value_offset) / self.value_scale, window_width / abs(self.value_scale)


@functools.lru_cache(maxsize=8)
def generated_calibration(shape: tuple[int, int], bits_stored: int = 12) -> Calibration:
    """The facts the DICOM export writes for a generated image of ``shape`` (built through the export itself,
    engine.dicom.dataset.build_dataset, so the two cannot differ): its pixel spacing, the stored values at
    ``bits_stored`` bits (rescale slope 1, intercept 0) and its PatientOrientation."""
    from engine.dicom.dataset import StudyContext, SyntheticImageInfo, build_dataset

    ds = build_dataset(np.zeros(shape, np.uint16), SyntheticImageInfo(prompt=""), StudyContext.synthetic(),
                       bits_stored=bits_stored, windows=[])  # fmt: skip
    return Calibration(
        spacing_mm=dataset_spacing(ds),
        value_scale=(2**bits_stored - 1) / imaging.MAX_16BIT,
        unit=f"{bits_stored}-bit stored",
        orientation=dataset_orientation(ds),
    )


def dataset_spacing(ds) -> tuple[float, float] | None:
    """(row, column) mm from PixelSpacing, else ImagerPixelSpacing; None when absent or not positive."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        try:
            row, column = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if row > 0 and column > 0 and math.isfinite(row) and math.isfinite(column):
            return row, column
    return None


_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}


def dataset_orientation(ds) -> tuple[str, str] | None:
    """The patient side at the image's (left, right) edges: from PatientOrientation (its first value is the
    direction of the rows, towards the right edge), else from a frontal ViewPosition (PA or AP films are
    hung with the patient's right on the viewer's left); None for anything else."""
    try:
        row_direction = str(ds.get("PatientOrientation")[0]).upper()
    except (TypeError, IndexError):
        row_direction = ""
    if row_direction and all(letter in _OPPOSITE for letter in row_direction):
        return "".join(_OPPOSITE[letter] for letter in row_direction), row_direction
    if str(ds.get("ViewPosition", "")).upper() in ("PA", "AP"):
        return "R", "L"
    return None


@dataclass
class Measurement:
    """One measurement: ``kind`` in ruler / angle / probe, its points (image coordinates)."""

    kind: str
    points: list[QPointF]

    def complete(self) -> bool:
        return len(self.points) >= {"ruler": 2, "angle": 3, "probe": 1}[self.kind]


def ruler_length(points: list[QPointF], calibration: Calibration) -> tuple[float, str]:
    """The ruler's length: (mm, "mm") from the spacing, else (pixels, "px")."""
    a, b = points[0], points[1]
    dx, dy = b.x() - a.x(), b.y() - a.y()
    if calibration.spacing_mm is None:
        return math.hypot(dx, dy), "px"
    row, column = calibration.spacing_mm
    return math.hypot(dx * column, dy * row), "mm"


def angle_degrees(points: list[QPointF], calibration: Calibration | None = None) -> float:
    """The angle at the vertex ``points[1]`` between the rays to ``points[0]`` and ``points[2]`` (0..180),
    in physical space when the spacing is known (rows and columns may be spaced differently)."""
    row, column = calibration.spacing_mm if calibration and calibration.spacing_mm else (1.0, 1.0)
    a, v, b = points[0], points[1], points[2]
    ax, ay = (a.x() - v.x()) * column, (a.y() - v.y()) * row
    bx, by = (b.x() - v.x()) * column, (b.y() - v.y()) * row
    if (ax == 0 and ay == 0) or (bx == 0 and by == 0):
        return 0.0
    return math.degrees(abs(math.atan2(ax * by - ay * bx, ax * bx + ay * by)))


def probe_text(point: QPointF, pixels: np.ndarray, calibration: Calibration) -> str:
    """ "x 12 y 40 · stored 1234 · 1234 12-bit stored" for the pixel under ``point`` ("" outside the image)."""
    x, y = math.floor(point.x()), math.floor(point.y())
    height, width = pixels.shape
    if not (0 <= x < width and 0 <= y < height):
        return ""
    value = calibration.value(float(pixels[y, x]))
    if calibration.stored is None:  # a generated image or a PNG: whole stored values, no rescale
        value = stored = round(value)
    else:
        stored = calibration.stored[y, x]
    unit = f" {calibration.unit}" if calibration.unit else ""
    return f"x {x} y {y} · stored {_number(stored)} · value {_number(value)}{unit}"


def measurement_text(measurement: Measurement, pixels: np.ndarray, calibration: Calibration) -> str:
    if measurement.kind == "ruler":
        length, unit = ruler_length(measurement.points, calibration)
        return f"{length:.1f} {unit}"
    if measurement.kind == "angle":
        return f"{angle_degrees(measurement.points, calibration):.1f}°"
    return probe_text(measurement.points[0], pixels, calibration)


def _number(value: float) -> str:
    value = float(value)
    return f"{value:.0f}" if value == round(value) else f"{value:.2f}"


def paint_measurements(painter: QPainter, to_widget, measurements: list[Measurement], pixels: np.ndarray,
                       calibration: Calibration) -> None:  # fmt: skip
    """Draw each measurement's lines and its text (``to_widget(x, y)`` maps image to widget points)."""
    pen = QPen(MEASURE_COLOR, 1.5)
    for measurement in measurements:
        points = [to_widget(p.x(), p.y()) for p in measurement.points]
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        for a, b in itertools.pairwise(points):
            painter.drawLine(a, b)
        for point in points:
            painter.drawEllipse(point, 3.0, 3.0)
        if not measurement.complete():
            continue
        text = measurement_text(measurement, pixels, calibration)
        anchor = points[1] if measurement.kind == "angle" else points[-1]
        _shadow(painter, anchor + QPointF(8, -8), text, MEASURE_COLOR)


def paint_orientation(painter: QPainter, left: QPointF, right: QPointF, orientation: tuple[str, str]) -> None:
    """The orientation letters inside the image's left and right edges, at mid-height."""
    metrics = painter.fontMetrics()
    _shadow(painter, left + QPointF(6, metrics.ascent() / 2), orientation[0], MARKER_COLOR)
    width = metrics.horizontalAdvance(orientation[1])
    _shadow(painter, right + QPointF(-6 - width, metrics.ascent() / 2), orientation[1], MARKER_COLOR)


def _shadow(painter: QPainter, point: QPointF, text: str, color: QColor) -> None:
    painter.setPen(QColor(0, 0, 0))
    painter.drawText(point + QPointF(1, 1), text)
    painter.setPen(color)
    painter.drawText(point, text)


class MeasureToolBar(QWidget):
    """The tool buttons (W/L, Ruler, Angle, Probe: one checked) and Clear."""

    tool_chosen = Signal(str)
    clear_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from desktop.shortcuts import tool_key

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.group = QButtonGroup(self)
        self.buttons: dict[str, QToolButton] = {}
        for tool in TOOLS:
            button = QToolButton()
            button.setText(TOOL_TEXT[tool])
            button.setCheckable(True)
            button.setToolTip(f"{TOOL_TEXT[tool]} tool ({tool_key(tool)})")
            button.clicked.connect(lambda _checked=False, t=tool: self.tool_chosen.emit(t))
            self.group.addButton(button)
            self.buttons[tool] = button
            layout.addWidget(button)
        self.buttons["window"].setChecked(True)
        self.clear_button = QToolButton()
        self.clear_button.setText("Clear")
        self.clear_button.setToolTip("Clear the measurements (Esc)")
        self.clear_button.clicked.connect(self.clear_requested.emit)
        layout.addWidget(self.clear_button)

    def show_tool(self, tool: str) -> None:
        self.buttons[tool].setChecked(True)


def file_calibration(
    pixels: np.ndarray, dataset=None, stored: np.ndarray | None = None, source: str = ""
) -> Calibration:
    """What an opened file's pixels mean. ``pixels``: what the viewer is given (uint8 is widened to 16 bits);
    ``dataset`` and ``stored``: a DICOM file's own dataset and stored values.

    A PNG's values are its own (8 or 16 bits, no spacing, no orientation). A DICOM file's viewer values map
    linearly onto its modality values (stored * RescaleSlope + RescaleIntercept; negatively for MONOCHROME1,
    which the viewer shows inverted), fitted at the darkest and brightest pixel, so the window is shown in the
    file's units, as PACS viewers show it.
    """
    if dataset is None:
        bits = 8 if pixels.dtype == np.uint8 else 16
        scale = 1 / 257 if bits == 8 else 1.0  # the viewer widens 8-bit values x 257
        kind = " PNG" if source.lower().endswith(".png") else ""
        return Calibration(value_scale=scale, unit=f"{bits}-bit{kind}", source=source)
    spacing, orientation = dataset_spacing(dataset), dataset_orientation(dataset)
    viewer = imaging.rescale_bits(pixels, 8, 16) if pixels.dtype == np.uint8 else pixels
    if stored is None or np.shape(stored) != viewer.shape:
        return Calibration(spacing, orientation=orientation, unit="grey", source=source)
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    darkest, brightest = (
        np.unravel_index(np.argmin(viewer), viewer.shape),
        np.unravel_index(np.argmax(viewer), viewer.shape),
    )
    v0, v1 = float(viewer[darkest]), float(viewer[brightest])
    m0, m1 = (float(stored[i]) * slope + intercept for i in (darkest, brightest))
    scale = (m1 - m0) / (v1 - v0) if v1 > v0 else 1.0
    unit = str(dataset.get("RescaleType", "") or "") or "stored"
    return Calibration(
        spacing, scale, m0 - scale * v0, unit, np.asarray(stored), orientation, source, dataset_windows(dataset)
    )


def dataset_windows(ds) -> tuple[tuple[str, float, float], ...]:
    """The file's own windows (WindowCenter, WindowWidth, WindowCenterWidthExplanation), in its modality units;
    () when it has none or they do not parse."""
    centers, widths, names = (
        _values(ds, key) for key in ("WindowCenter", "WindowWidth", "WindowCenterWidthExplanation")
    )
    try:
        windows = [(float(c), float(w)) for c, w in zip(centers, widths, strict=False)]
    except (TypeError, ValueError):
        return ()
    return tuple(
        (str(names[i]) if i < len(names) else f"FILE {i + 1}", center, width)
        for i, (center, width) in enumerate(windows)
        if width >= 1 and math.isfinite(center) and math.isfinite(width)
    )


def _values(ds, key: str) -> list:
    """A DICOM attribute's values as a list (one value, several (pydicom's MultiValue) or none)."""
    value = ds.get(key)
    if value is None or value == "":
        return []
    return list(value) if hasattr(value, "__len__") and not isinstance(value, str | bytes) else [value]
