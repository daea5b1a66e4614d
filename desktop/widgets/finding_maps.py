"""Finding maps beside the viewer (issue 18 item 1): where in the image each finding and word acted.

The worker asks the pipeline for the generation's finding maps (engine.attention) when the pack has
them. This panel lists the prompt's findings and words; picking one lays its map over the viewer as a
colour map (a jet-like ramp whose alpha follows the map, so cold regions leave the radiograph
visible) at the slider's opacity. Nothing picked, nothing drawn. The overlay is painted over the
image only: the stored and displayed pixels, and what exports write, stay those of the generation.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QSlider, QVBoxLayout, QWidget

from engine.attention import AttentionMap, FindingMaps

NONE_LABEL = "none (no overlay)"
NO_MAPS = "no finding maps in this model"
DEFAULT_OPACITY = 60  # percent


def heat_rgba(values: np.ndarray) -> np.ndarray:
    """(H, W) map in [0, 1] -> (H, W, 4) uint8 RGBA: blue (cold) through green and yellow to red (hot),
    alpha = the value, so a cold region barely tints the image under it."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    rgb = np.stack([np.clip(1.5 - np.abs(4.0 * v - c), 0.0, 1.0) for c in (3.0, 2.0, 1.0)], axis=-1)
    rgba = np.concatenate([rgb, v[..., None]], axis=-1)
    return np.ascontiguousarray(np.round(rgba * 255.0).astype(np.uint8))


def map_label(entry: AttentionMap) -> str:
    """How the list names a map: a finding with what the prompt asked of it, a word in quotes."""
    if entry.kind == "finding":
        return f"{entry.label.replace('_', ' ')} ({entry.status})"
    return f"“{entry.label}”"


class FindingMapsPanel(QWidget):
    """The list of the last generation's findings and words, and the overlay's opacity."""

    overlay_changed = Signal(object, float)  # (H, W, 4) uint8 RGBA or None, opacity in [0, 1]

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.list = QListWidget()
        self.list.setToolTip("Pick a finding or a word to see where in the image it acted (cross-attention)")
        self.list.currentRowChanged.connect(lambda _row: self._emit())
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(DEFAULT_OPACITY)
        self.opacity_slider.setToolTip("Opacity of the map over the image")
        self.opacity_slider.valueChanged.connect(lambda _value: self._emit())
        row = QHBoxLayout()
        row.addWidget(QLabel("Opacity"))
        row.addWidget(self.opacity_slider, 1)
        layout.addWidget(self.status)
        layout.addWidget(self.list, 1)
        layout.addLayout(row)
        self.maps: FindingMaps | None = None
        self.set_maps(None)

    @property
    def opacity(self) -> float:
        return self.opacity_slider.value() / 100.0

    def labels(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def pick(self, row: int) -> None:
        """Pick the list's ``row`` (0 = none), as a click does."""
        self.list.setCurrentRow(row)

    def set_maps(self, maps: FindingMaps | None, *, available: bool = True) -> None:
        """Show a generation's maps (nothing picked); None clears. ``available``: whether the pack has maps."""
        self.maps = maps
        self.list.blockSignals(True)
        self.list.clear()
        if maps is not None:
            self.list.addItem(NONE_LABEL)
            for entry in (*maps.findings, *maps.words):
                item = QListWidgetItem(map_label(entry))
                item.setData(Qt.ItemDataRole.UserRole, entry)
                self.list.addItem(item)
            self.list.setCurrentRow(0)
        self.list.blockSignals(False)
        self.list.setEnabled(maps is not None)
        self.opacity_slider.setEnabled(maps is not None)
        if not available:
            self.status.setText(NO_MAPS)
        elif maps is None:
            self.status.setText("Generate an image to see where each finding and word acted")
        else:
            self.status.setText(f"{len(maps.findings)} finding(s), {len(maps.words)} word(s): pick one")
        self._emit()

    def picked(self) -> AttentionMap | None:
        item = self.list.currentItem()
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def _emit(self) -> None:
        entry = self.picked()
        self.overlay_changed.emit(None if entry is None else heat_rgba(entry.image[0]), self.opacity)
