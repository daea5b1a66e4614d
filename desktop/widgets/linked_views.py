"""The dataset explorer's two viewers: the record's image marked REAL and, while comparing, a generated
image beside it. The two share the display options and zoom/pan (scaled, so images of different sizes stay
aligned), and their window/level is linked in units of each image's own DEFAULT window (see
:func:`linked_window`): a real 8-bit JPEG and a synthetic 16-bit image have different ranges, so one window
in stored-pixel units would wash one of them out.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import QSplitter, QWidget

from desktop.widgets.measure import file_calibration
from desktop.widgets.viewer import DisplayOptions, ImageView

REAL_MARK_COLOR = QColor(90, 200, 255)


def linked_window(
    source_default: tuple[float, float], target_default: tuple[float, float], window_center: float, window_width: float
) -> tuple[float, float]:
    """The target's (centre, width) for a source window, both in units of each image's own default window.

    The source window's centre offset from the source's default centre and its width, each as a fraction of
    the source's default width, are applied to the target's default. So the source's default maps to the
    target's default exactly, and "half the width, a tenth of a width brighter" means the same on both
    images whatever their stored-pixel ranges (an 8-bit JPEG widened to 16 bits beside a synthetic image).
    """
    source_center, source_width = source_default
    target_center, target_width = target_default
    offset = (window_center - source_center) / source_width
    scale = window_width / source_width
    return target_center + offset * target_width, scale * target_width


class MarkedImageView(ImageView):
    """The viewer with another corner mark: a dataset image is real and must not say SYNTHETIC."""

    def __init__(self, mark: str, color: QColor, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.mark = mark
        self.mark_color = color

    def _paint_synthetic_mark(self, painter: QPainter) -> None:  # ImageView's hook for the corner mark
        self._paint_mark(painter, self.mark, self.mark_color)

    def set_image(
        self, pixels: np.ndarray | None, label: str = "", *, keep_window: bool = False, calibration=None
    ) -> None:
        """As ImageView's, but a dataset image is not a generated one: without a calibration its values are its
        own (8 or 16 bits), its spacing and orientation unknown, never the DICOM export's."""
        if calibration is None and pixels is not None:
            calibration = file_calibration(np.asarray(pixels))
        super().set_image(pixels, label, keep_window=keep_window, calibration=calibration)


def _fitted(view: ImageView) -> bool:
    """Whether the view shows its image fitted (so a linked view should fit too)."""
    if view.source is None:
        return False
    height, width = view.source.shape
    zoom = min(view.width() / width, view.height() / height)
    offset = view.offset()
    return (
        math.isclose(view.zoom(), zoom, rel_tol=1e-6)
        and abs(offset.x() - (view.width() - width * zoom) / 2) < 0.5
        and abs(offset.y() - (view.height() - height * zoom) / 2) < 0.5
    )


def follow_view(source: ImageView, target: ImageView) -> None:
    """The source's zoom/pan onto the target, scaled by the image widths so that the two images stay aligned
    (a fitted source fits the target). Used by both comparisons: the explorer's and the viewer panel's."""
    if source.source is None or target.source is None:
        return
    if _fitted(source):
        target.fit()
    else:
        scale = source.source.shape[1] / target.source.shape[1]
        target.set_view(source.zoom() * scale, source.offset())


class LinkedViews(QSplitter):
    """``real_view`` (the record's image, marked REAL) and ``generated_view`` beside it, hidden until
    :meth:`show_generated`; each side's window, zoom and pan follow the other's."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.real_view = MarkedImageView("REAL", REAL_MARK_COLOR)
        self.generated_view = ImageView()
        self.generated_view.hide()
        self.addWidget(self.real_view)
        self.addWidget(self.generated_view)
        self.setChildrenCollapsible(False)
        self._linking = False  # set while one side moves the other, so the other does not move it back
        real, generated = self.real_view, self.generated_view
        real.window_changed.connect(lambda _c, _w: self.link_window(real, generated))
        generated.window_changed.connect(lambda _c, _w: self.link_window(generated, real))
        real.view_changed.connect(lambda _z: self._link_view(real, generated))
        generated.view_changed.connect(lambda _z: self._link_view(generated, real))

    def comparing(self) -> bool:
        return not self.generated_view.isHidden()

    def fit(self) -> None:
        self.real_view.fit()
        self.generated_view.fit()

    def set_options(self, options: DisplayOptions) -> None:
        self.real_view.set_options(options)
        self.generated_view.set_options(options)

    def apply_preset(self, name: str) -> None:
        """Each image to its own window of that name (a LUNG window is a range of its own pixels)."""
        self.real_view.apply_preset(name)
        self._each_own_window(name)

    def reset_window(self) -> None:
        """Each image back to its own DEFAULT window."""
        self.real_view.reset_window()
        self._each_own_window("DEFAULT")

    def show_generated(self, pixels: np.ndarray, caption: str) -> None:
        """A generated image (stored pixels (H, W)) beside the record's, with the same window/level."""
        self.generated_view.set_image(pixels, caption)
        self.generated_view.set_options(self.real_view.options())
        if not self.comparing():
            self.generated_view.show()
            half = max(1, self.width() // 2)
            self.setSizes([half, half])  # side by side, the same size
        self.link_window(self.real_view, self.generated_view)
        QTimer.singleShot(0, self, self.fit)  # after the splitter has laid the two views out
        self.fit()

    def close_generated(self) -> None:
        self.generated_view.hide()
        self.real_view.fit()

    def link_window(self, source: ImageView, target: ImageView) -> None:
        """The source's window onto the target, in units of each image's own default (:func:`linked_window`)."""
        if self._linking or not source.has_image() or not target.has_image():
            return
        source_default, target_default = source.presets()[0], target.presets()[0]
        window = linked_window(
            (source_default.window_center, source_default.window_width),
            (target_default.window_center, target_default.window_width),
            *source.window(),
        )
        if target.window() != window:
            self._linking = True
            try:
                target.set_window(*window, emit=False)
            finally:
                self._linking = False

    def _each_own_window(self, name: str) -> None:
        """The generated side to its own preset ``name``, without moving the real side (already set)."""
        if self._linking or not self.generated_view.has_image():
            return
        self._linking = True
        try:
            self.generated_view.apply_preset(name)
        except KeyError:
            pass
        finally:
            self._linking = False

    def _link_view(self, source: ImageView, target: ImageView) -> None:
        """Zoom/pan of one side onto the other, scaled by the image widths so the images stay aligned."""
        if self._linking or not self.comparing() or source.source is None or target.source is None:
            return
        self._linking = True
        try:
            follow_view(source, target)
        finally:
            self._linking = False


__all__ = ["REAL_MARK_COLOR", "LinkedViews", "MarkedImageView", "follow_view", "linked_window"]
