"""Step-by-step denoising: every step's preview on a slider and a filmstrip, play/pause, export.

Frames are stored pixels (uint16). During a run the slider follows the newest step unless the
user has moved it; the last frame is the final decoded image. A step's frame is one of two kinds, and the
strip, its tooltips and the position label say which: an *approximate* preview (the engine's fitted linear
map of the small latent, upsampled: cheap, blurred, its grey levels only roughly the VAE's), or a real VAE
*decode* of the step's clean-image estimate, made every k steps when "Decode every" asks for it (the
engine's ``GenerationRequest.preview_decode_every``; each decode costs about as much as a final image).
Export writes PNG frames (16-bit, as stored) and an animated GIF (Pillow, a dependency) windowed with the
final image's DEFAULT window so that every frame has the same brightness scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine import imaging
from engine.fileio import atomic_write_bytes

THUMB = 56
APPROXIMATE, DECODED, FINAL = "approximate", "decoded", "final"
MAX_DECODE_EVERY = 100


@dataclass(frozen=True)
class Frame:
    label: str  # "step 3 / 20" or "final"
    pixels: np.ndarray  # (H, W) uint16
    kind: str = APPROXIMATE  # APPROXIMATE (linear map of the latent), DECODED (the VAE's) or FINAL
    latent_size: tuple[int, int] | None = None  # (h, w) of the latent an approximate preview maps

    def __post_init__(self) -> None:
        if self.label == "final":
            object.__setattr__(self, "kind", FINAL)

    def description(self) -> str:
        """What the frame's pixels are, for its tooltip and the position label."""
        if self.kind == FINAL:
            return "final image (VAE decode)"
        if self.kind == DECODED:
            return "VAE decode of this step's clean-image estimate"
        size = f"{self.latent_size[0]}x{self.latent_size[1]} " if self.latent_size else ""
        return f"approximate preview: a fitted linear map of the {size}latent, not the VAE's image"

    def strip_text(self) -> str:
        """The strip's short caption: '≈3' for an approximate preview, '3 VAE' for a decode, 'final'."""
        if self.kind == FINAL:
            return "final"
        number = self.label.replace("step ", "").split(" /")[0]
        return f"{number} VAE" if self.kind == DECODED else f"≈{number}"


def decoded_step(decode_every: int, index: int, total: int) -> bool:
    """Whether step ``index`` (0-based) of ``total`` is a VAE decode under ``preview_decode_every``: the
    engine's rule in Pipeline.iter_steps (every k-th step but the last, whose image is the final one)."""
    done = index + 1
    return decode_every > 0 and done % decode_every == 0 and done < total


def sequence_window(frames: list[Frame]) -> imaging.WindowPreset:
    """One window for a whole sequence: the last frame's DEFAULT preset."""
    return imaging.window_presets(frames[-1].pixels, ["DEFAULT"])[0]


def export_frames(
    frames: list[Frame], folder: Path, *, gif: bool = True, frame_ms: int = 120
) -> tuple[list[Path], Path | None, str]:
    """PNG frames (16-bit) into ``folder`` and, if asked, an animated GIF.

    Returns (png paths, gif path or None, a message for the user).
    """
    if not frames:
        raise ValueError("there are no denoising steps to export: generate an image first")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pngs = []
    for number, frame in enumerate(frames):
        name = "final.png" if frame.label == "final" else f"step_{number + 1:03d}.png"
        path = folder / name
        atomic_write_bytes(path, imaging.encode_png(frame.pixels))
        pngs.append(path)
    message = f"{len(pngs)} PNG frames (16-bit) written to {folder}"
    gif_path = None
    if gif:
        gif_path = folder / "denoising.gif"
        window = sequence_window(frames)
        display = [imaging.apply_window(frame.pixels, window.window_center, window.window_width) for frame in frames]
        _write_gif(gif_path, display, frame_ms)
        message += f" and an animated GIF ({gif_path.name})"
    return pngs, gif_path, message


def _write_gif(path: Path, frames: list[np.ndarray], frame_ms: int) -> None:
    import io

    from PIL import Image

    images = [Image.fromarray(frame, mode="L") for frame in frames]
    buffer = io.BytesIO()
    durations = [frame_ms] * (len(images) - 1) + [max(frame_ms, 1000)]  # hold the final image
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    atomic_write_bytes(path, buffer.getvalue())


class StepsPanel(QWidget):
    """Slider + filmstrip over the frames of the current generation."""

    frame_selected = Signal(int)  # index into frames()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._frames: list[Frame] = []
        self._follow = True  # the slider tracks the newest frame until the user moves it
        self._programmatic = False
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setEnabled(False)
        self.slider.setToolTip("Denoising step shown in the viewer")
        self.slider.valueChanged.connect(self._slider_moved)
        self.slider.sliderPressed.connect(self._user_took_over)
        self.play_button = QToolButton()
        self.play_button.setText("Play")
        self.play_button.setCheckable(True)
        self.play_button.setToolTip("Play the denoising steps in a loop")
        self.play_button.toggled.connect(self.set_playing)
        self.fps_spin = QSpinBox()
        self.fps_spin.setRange(1, 60)
        self.fps_spin.setValue(8)
        self.fps_spin.setSuffix(" fps")
        self.fps_spin.valueChanged.connect(lambda fps: self._timer.setInterval(1000 // fps))
        self.decode_every_spin = QSpinBox()
        self.decode_every_spin.setRange(0, MAX_DECODE_EVERY)
        self.decode_every_spin.setSpecialValueText("off")
        self.decode_every_spin.setPrefix("every ")
        self.decode_every_spin.setSuffix(" steps")
        self.decode_every_spin.setToolTip(
            "Step previews are approximate (a fitted linear map of the latent). Decode every k steps shows the "
            "VAE's real image at those steps instead (marked 'VAE' on the strip); each decode takes about as long "
            "as decoding the final image. Off: approximate previews only."
        )
        self.position_label = QLabel("no steps")
        self.position_label.setMinimumWidth(110)
        self.filmstrip = QListWidget()
        self.filmstrip.setViewMode(QListView.ViewMode.IconMode)
        self.filmstrip.setFlow(QListView.Flow.LeftToRight)
        self.filmstrip.setWrapping(False)
        self.filmstrip.setIconSize(QSize(THUMB, THUMB))
        self.filmstrip.setFixedHeight(THUMB + 34)
        self.filmstrip.setMovement(QListView.Movement.Static)
        self.filmstrip.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.filmstrip.currentRowChanged.connect(self._strip_clicked)
        self._timer = QTimer(self)
        self._timer.setInterval(1000 // self.fps_spin.value())
        self._timer.timeout.connect(self._advance)

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Steps"))
        row.addWidget(self.play_button)
        row.addWidget(self.fps_spin)
        row.addWidget(QLabel("Decode"))
        row.addWidget(self.decode_every_spin)
        row.addWidget(self.slider, 1)
        row.addWidget(self.position_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.filmstrip)

    # frames ------------------------------------------------------------------------------------

    def frames(self) -> list[Frame]:
        return list(self._frames)

    def decode_every(self) -> int:
        """The "Decode every k steps" option: the request's ``preview_decode_every`` (0: off)."""
        return self.decode_every_spin.value()

    def current_index(self) -> int:
        return self.slider.value()

    def current_frame(self) -> Frame | None:
        return self._frames[self.slider.value()] if self._frames else None

    def clear(self) -> None:
        self.set_playing(False)
        self._frames = []
        # Emptying the strip moves its current row, and _strip_clicked would take that for the user
        # picking a frame (it turned following off, so every second run's viewer kept the old image).
        self.filmstrip.blockSignals(True)
        self.filmstrip.clear()
        self.filmstrip.blockSignals(False)
        self._follow = True
        self.slider.blockSignals(True)
        self.slider.setRange(0, 0)
        self.slider.blockSignals(False)
        self.slider.setEnabled(False)
        self.position_label.setText("no steps")

    def add_frame(
        self, label: str, pixels: np.ndarray, *, decoded: bool = False, latent_size: tuple[int, int] | None = None
    ) -> None:
        """Append a frame: ``decoded`` for a VAE decode of the step, else an approximate preview of a latent of
        ``latent_size`` (h, w); the label "final" is the final image."""
        frame = Frame(label, pixels, DECODED if decoded else APPROXIMATE, latent_size)
        self._frames.append(frame)
        item = QListWidgetItem(_thumbnail(pixels), frame.strip_text())
        item.setToolTip(f"{label}: {frame.description()}")
        self.filmstrip.blockSignals(True)
        self.filmstrip.addItem(item)
        self.filmstrip.blockSignals(False)
        last = len(self._frames) - 1
        self.slider.blockSignals(True)
        self.slider.setRange(0, last)
        self.slider.blockSignals(False)
        self.slider.setEnabled(True)
        if self._follow:
            self.show_frame(last)
        else:
            self._update_label()

    def set_frames(self, frames: list[Frame]) -> None:
        self.clear()
        for frame in frames:
            self.add_frame(frame.label, frame.pixels, decoded=frame.kind == DECODED, latent_size=frame.latent_size)

    def show_frame(self, index: int) -> None:
        if not self._frames:
            return
        index = max(0, min(index, len(self._frames) - 1))
        self._programmatic = True
        try:
            if self.slider.value() != index:
                self.slider.setValue(index)  # -> _slider_moved
            else:
                self._slider_moved(index)
        finally:
            self._programmatic = False

    # playing -----------------------------------------------------------------------------------

    def set_playing(self, on: bool) -> None:
        on = bool(on) and len(self._frames) > 1
        if self.play_button.isChecked() != on:
            self.play_button.blockSignals(True)
            self.play_button.setChecked(on)
            self.play_button.blockSignals(False)
        self.play_button.setText("Pause" if on else "Play")
        if on:
            self._follow = False
            self._timer.start()
        else:
            self._timer.stop()

    def playing(self) -> bool:
        return self._timer.isActive()

    def _advance(self) -> None:
        if self._frames:
            self.show_frame((self.slider.value() + 1) % len(self._frames))

    # internals ---------------------------------------------------------------------------------

    def _user_took_over(self) -> None:
        self._follow = False

    def following(self) -> bool:
        return self._follow

    def _slider_moved(self, index: int) -> None:
        if not self._frames:
            return
        if not self._programmatic and not self.playing():  # the user moved it: follow only at the end
            self._follow = index == len(self._frames) - 1
        self.filmstrip.blockSignals(True)
        self.filmstrip.setCurrentRow(index)
        self.filmstrip.blockSignals(False)
        self._update_label()
        self.frame_selected.emit(index)

    def _strip_clicked(self, row: int) -> None:
        if row >= 0:
            self._follow = row == len(self._frames) - 1
            self.show_frame(row)

    def _update_label(self) -> None:
        frame = self.current_frame()
        if frame is not None:
            kind = {APPROXIMATE: "approximate", DECODED: "VAE decode", FINAL: ""}[frame.kind]
            kind = f" · {kind}" if kind and frame.label != "final" else ""
            self.position_label.setText(f"{frame.label}{kind}  ({self.slider.value() + 1}/{len(self._frames)})")
            self.position_label.setToolTip(frame.description())


def _thumbnail(pixels: np.ndarray) -> QIcon:
    from desktop.widgets.viewer import thumbnail_pixels, to_qimage

    image = to_qimage(thumbnail_pixels(pixels, THUMB))
    return QIcon(
        QPixmap.fromImage(image).scaled(
            THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
        )
    )
