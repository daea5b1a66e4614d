"""The dataset explorer's viewers: the record's image marked REAL, and the window/level link to a
generated image beside it, in units of each image's own DEFAULT window (see :func:`linked_window`): a real
8-bit JPEG and a synthetic 16-bit image have different ranges, so one window in stored-pixel units would
wash one of them out.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF
from PySide6.QtGui import QColor, QFont, QPainter
from PySide6.QtWidgets import QWidget

from desktop.widgets.viewer import ImageView

REAL_MARK_COLOR = QColor(90, 200, 255)


# 5. viewers ----------------------------------------------------------------------------------------------


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
        font = QFont(self.font())
        font.setBold(True)
        font.setPointSizeF(max(9.0, font.pointSizeF() + 1))
        painter.setFont(font)
        metrics = painter.fontMetrics()
        point = QPointF(self.width() - metrics.horizontalAdvance(self.mark) - 10, 6 + metrics.ascent())
        painter.setPen(QColor(0, 0, 0))
        painter.drawText(point + QPointF(1, 1), self.mark)
        painter.setPen(self.mark_color)
        painter.drawText(point, self.mark)


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


__all__ = ["REAL_MARK_COLOR", "MarkedImageView", "linked_window"]
