"""The exports: PNG (16/8-bit stored or as displayed), DICOM (the export dialog, the dataset the PACS
dialog sends too) and the denoising steps, all of the window's current image.

:class:`Exports` is a mixin of :class:`desktop.main_window.MainWindow`: it uses the window's ``current``,
``viewer``, ``steps``, ``settings``, ``show_error`` and status bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QFileDialog

from desktop.widgets.dialogs import DicomExportDialog, DicomOptions
from desktop.widgets.steps import export_frames
from desktop.widgets.viewer import CasePreview
from engine import imaging
from engine.dicom.dataset import (
    CodecUnavailableError,
    StudyContext,
    SyntheticImageInfo,
    build_dataset,
    stored_pixels,
    write_dicom,
)
from engine.fileio import atomic_write_bytes


@dataclass
class CurrentImage:
    """The image the exports act on: a finished generation or a reopened case."""

    pixels: np.ndarray  # (H, W) uint16
    info: SyntheticImageInfo
    label: str
    case_id: int | None = None

    def caption(self) -> str:
        """What the export and send dialogs say they will write: case, seed and prompt."""
        parts = [f"case {self.case_id}"] if self.case_id is not None else ["not in the library"]
        parts.append(f"seed {self.info.seed}")
        prompt = self.info.prompt if len(self.info.prompt) <= 80 else self.info.prompt[:79] + "…"
        return " · ".join(parts) + f"\n{prompt}"


class Exports:
    """The window's export actions (a mixin of MainWindow)."""

    def _need_image(self) -> CurrentImage | None:
        if self.current is None:
            self.show_error("Nothing to export", "Generate an image or open a case from the library first.")
        return self.current

    def choose_png_export(self) -> None:
        if self._need_image() is None:
            return
        path, chosen = QFileDialog.getSaveFileName(
            self, "Export PNG", f"cxr-{self.current.info.seed}.png",
            "16-bit PNG, stored pixels (*.png);;8-bit PNG, stored pixels (*.png);;8-bit PNG, as displayed (*.png)",
        )  # fmt: skip
        if path:
            mode = {"16": (16, False), "8-bit PNG, s": (8, False), "8-bit PNG, a": (8, True)}
            bits, displayed = next((v for k, v in mode.items() if chosen.startswith(k)), (16, False))
            self.export_png(Path(path), bits=bits, displayed=displayed)

    def export_png(self, path: Path, *, bits: int = 16, displayed: bool = False) -> Path | None:
        """Stored pixels at 16 or 8 bits, or (``displayed``) the 8-bit image as the viewer shows it."""
        current = self._need_image()
        if current is None:
            return None
        if path.suffix.lower() != ".png":
            path = path.with_suffix(".png")
        if displayed:
            self.viewer.set_image(current.pixels, current.label, keep_window=True)
            image = self.viewer.view.displayed_pixels()
        elif bits == 8:
            image = imaging.rescale_bits(current.pixels, 16, 8)
        else:
            image = current.pixels
        try:
            atomic_write_bytes(path, imaging.encode_png(image))
        except OSError as exc:
            self.show_error("PNG not saved", f"{path}: {exc.strerror or exc}. Choose another folder or free space.")
            return None
        self.statusBar().showMessage(f"Saved {path}", 8000)
        return path

    def choose_dicom_export(self) -> None:
        if self._need_image() is None:
            return
        current = self.current
        dialog = self.dicom_export_dialog()
        if dialog.exec() != DicomExportDialog.DialogCode.Accepted:
            return
        options = dialog.options()
        self.settings.set_export(options.to_dict())
        name = f"cxr-{current.info.seed}.dcm"
        path, _ = QFileDialog.getSaveFileName(self, "Export DICOM", name, "DICOM (*.dcm)")
        if not path:
            return
        if self.current is not current:  # a run ended while the dialogs were open: not the image they showed
            self.show_error("DICOM not saved", "The image changed while the export dialogs were open. Export again.")
            return
        self.export_dicom(Path(path), dialog.study_context(), options)

    def dicom_export_dialog(self) -> DicomExportDialog:
        """The export dialog, with a thumbnail and the case and seed of the image it will write on top."""
        dialog = DicomExportDialog(self, DicomOptions.from_dict(self.settings.export()))
        preview = CasePreview(dialog)
        if self.current is not None:
            preview.set_image(self.current.pixels, self.current.caption())
        dialog.layout().insertWidget(0, preview)
        dialog.case_preview = preview
        return dialog

    def current_dataset(self, study: StudyContext | None = None, options: DicomOptions | None = None):
        """The current image as a synthetic DICOM dataset (export options from the settings by default);
        None, after an error dialog, when there is no image or a value is refused."""
        current = self._need_image()
        if current is None:
            return None
        study = study or StudyContext.synthetic()
        options = options or DicomOptions.from_dict(self.settings.export())
        try:
            windows = self._dicom_windows(current.pixels, options.bits_stored) if options.viewer_window else None
            return build_dataset(
                current.pixels, current.info, study, iod=options.iod, bits_stored=options.bits_stored,
                windows=windows, burn_in=options.burn_in,
            )  # fmt: skip
        except ValueError as exc:
            self.show_error("DICOM not made", f"{exc}. Correct the value in the export dialog.")
            return None

    def export_dicom(
        self, path: Path, study: StudyContext | None = None, options: DicomOptions | None = None
    ) -> Path | None:
        """Write the current image as a synthetic DICOM file; None (after an error dialog) on failure."""
        options = options or DicomOptions()
        dataset = self.current_dataset(study, options)
        if dataset is None:
            return None
        try:
            write_dicom(dataset, path, transfer_syntax=options.transfer_syntax)
        except CodecUnavailableError as exc:
            self.show_error("DICOM not saved", f"{exc}. Choose the uncompressed transfer syntax instead.")
            return None
        except ValueError as exc:
            self.show_error("DICOM not saved", f"{exc}. Correct the value in the export dialog.")
            return None
        except OSError as exc:
            self.show_error("DICOM not saved", f"{path}: {exc.strerror or exc}. Choose another folder or free space.")
            return None
        self.statusBar().showMessage(f"Saved {path}", 8000)
        return path

    def _dicom_windows(self, pixels: np.ndarray, bits_stored: int) -> list[imaging.WindowPreset]:
        """The viewer's window (rescaled to the stored bits) first, then the image-derived presets."""
        stored = stored_pixels(pixels, bits_stored)
        presets = imaging.window_presets(stored)
        if not self.viewer.view.has_image():
            return presets
        center, width = self.viewer.view.window()
        scale = (2**bits_stored - 1) / imaging.MAX_16BIT
        try:
            viewer = imaging.WindowPreset("VIEWER", round(center * scale, 2), max(1.0, round(width * scale, 2)))
        except ValueError:
            return presets
        return [viewer, *presets]

    def choose_steps_export(self) -> None:
        if not self.steps.frames():
            self.show_error("Nothing to export", "Generate an image first: its denoising steps are exported.")
            return
        folder = QFileDialog.getExistingDirectory(self, "Export denoising steps into folder")
        if folder:
            self.export_steps(Path(folder))

    def export_steps(self, folder: Path) -> str | None:
        try:
            _pngs, _gif, message = export_frames(self.steps.frames(), folder, gif=True)
        except (OSError, ValueError) as exc:
            self.show_error("Steps not exported", f"{exc}. Choose a writable folder with free space.")
            return None
        self.statusBar().showMessage(message, 10_000)
        return message
