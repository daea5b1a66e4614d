"""Dialogs: DICOM export (pre-filled with synthetic patient/study values), model card."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from engine.dicom import TRANSFER_SYNTAXES, StudyContext, codec_available

IOD_LABELS = {
    "sc": "Secondary Capture, conversion type SYN (recommended)",
    "dx": "Digital X-Ray For Presentation (for PACS tests that need DX)",
}
SYNTAX_LABELS = {
    "explicit": "Explicit VR Little Endian (uncompressed)",
    "rle": "RLE Lossless",
    "jpeg-ls": "JPEG-LS Lossless",
    "jpeg2000": "JPEG 2000 Lossless",
}


def open_warning(parent: QWidget, boxes: list[QMessageBox], title: str, message: str, details: str = "") -> QMessageBox:
    """A window-modal warning that does not block the event loop; kept in ``boxes`` (so it can be
    closed with its window) until it is dismissed."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, parent)
    if details:
        box.setInformativeText(details)
    box.setWindowModality(Qt.WindowModality.WindowModal)
    box.finished.connect(lambda _r, b=box: boxes.remove(b) if b in boxes else None)
    boxes.append(box)
    box.open()
    return box


@dataclass(frozen=True)
class DicomOptions:
    iod: str = "sc"
    bits_stored: int = 12
    burn_in: bool = False
    transfer_syntax: str = "explicit"
    viewer_window: bool = True  # write the viewer's current window first, labelled VIEWER

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DicomOptions:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            options = cls(**known)
        except TypeError:
            return cls()
        if options.iod not in IOD_LABELS or options.bits_stored not in (12, 16):
            return cls()
        if options.transfer_syntax not in TRANSFER_SYNTAXES:
            return cls()
        return options


class DicomExportDialog(QDialog):
    """Patient / study / series values (fake by default: StudyContext.synthetic) and file options."""

    def __init__(self, parent: QWidget | None = None, options: DicomOptions | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export DICOM")
        study = StudyContext.synthetic()
        self._uids = (study.study_instance_uid, study.series_instance_uid)
        self.fields: dict[str, QLineEdit] = {}
        patient = QGroupBox("Patient and study (synthetic values: no real patient)")
        form = QFormLayout(patient)
        for key, label, value in (
            ("patient_name", "Patient name", study.patient_name),
            ("patient_id", "Patient ID", study.patient_id),
            ("patient_birth_date", "Birth date (YYYYMMDD)", study.patient_birth_date),
            ("patient_sex", "Sex (M, F, O or empty)", study.patient_sex),
            ("accession_number", "Accession number", study.accession_number),
            ("study_id", "Study ID", study.study_id),
            ("study_description", "Study description", study.study_description),
            ("series_description", "Series description", study.series_description),
        ):
            edit = QLineEdit(value)
            self.fields[key] = edit
            form.addRow(label, edit)

        options = options or DicomOptions()
        files = QGroupBox("File")
        file_form = QFormLayout(files)
        self.iod_box = QComboBox()
        for key, label in IOD_LABELS.items():
            self.iod_box.addItem(label, key)
        self.iod_box.setCurrentIndex(list(IOD_LABELS).index(options.iod))
        self.bits_box = QComboBox()
        self.bits_box.addItem("12 bits stored (0..4095)", 12)
        self.bits_box.addItem("16 bits stored (0..65535)", 16)
        self.bits_box.setCurrentIndex(0 if options.bits_stored == 12 else 1)
        self.syntax_box = QComboBox()
        for key, label in SYNTAX_LABELS.items():
            available = codec_available(key)
            self.syntax_box.addItem(label if available else f"{label} (codec not installed)", key)
            if not available:
                self.syntax_box.model().item(self.syntax_box.count() - 1).setEnabled(False)
        self.syntax_box.setCurrentIndex(max(0, self.syntax_box.findData(options.transfer_syntax)))
        self.burn_in_box = QCheckBox('Burn a "SYNTHETIC" label into the pixels')
        self.burn_in_box.setChecked(options.burn_in)
        self.window_box = QCheckBox("Store the viewer's current window first (labelled VIEWER)")
        self.window_box.setChecked(options.viewer_window)
        file_form.addRow("Image type", self.iod_box)
        file_form.addRow("Pixels", self.bits_box)
        file_form.addRow("Transfer syntax", self.syntax_box)
        file_form.addRow(self.burn_in_box)
        file_form.addRow(self.window_box)
        note = QLabel(
            "The file stores the generated pixels; display settings (CLAHE, invert, enhancement) are not "
            "applied. Lung, mediastinum and bone windows computed from the image are included."
        )
        note.setWordWrap(True)
        self.error_label = QLabel()
        self.error_label.setStyleSheet("color: #c0392b")
        self.error_label.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(patient)
        layout.addWidget(files)
        layout.addWidget(note)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)

    def study_context(self) -> StudyContext:
        """The values as a StudyContext; ValueError says which value is wrong."""
        values = {key: edit.text().strip() for key, edit in self.fields.items()}
        return StudyContext(study_instance_uid=self._uids[0], series_instance_uid=self._uids[1], **values)

    def options(self) -> DicomOptions:
        return DicomOptions(
            iod=self.iod_box.currentData(),
            bits_stored=self.bits_box.currentData(),
            burn_in=self.burn_in_box.isChecked(),
            transfer_syntax=self.syntax_box.currentData(),
            viewer_window=self.window_box.isChecked(),
        )

    def accept(self) -> None:
        try:
            self.study_context()
        except ValueError as exc:
            self.error_label.setText(f"{exc}. Correct the value and save again.")
            return
        super().accept()


class TextDialog(QDialog):
    """Read-only text (the model card)."""

    def __init__(self, title: str, text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.resize(640, 480)
        view = QPlainTextEdit(text)
        view.setReadOnly(True)
        view.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(view)
        layout.addWidget(buttons, alignment=Qt.AlignmentFlag.AlignRight)
