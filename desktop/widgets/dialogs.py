"""Dialogs: warnings, DICOM export (pre-filled with synthetic patient/study values), teaching file folder,
model card."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QStandardPaths, Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.dicom.dataset import TRANSFER_SYNTAXES, StudyContext, codec_available

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
    closed with its window) until it is dismissed.

    The box shows ``message`` only: what went wrong and what to do, in the user's words. ``details``
    (e.g. where the log is) sits behind the box's "Show Details…" button, not in the message: a user
    who left the prompt empty needs to be told so, not where a log file lives."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, parent)
    if details:
        box.setDetailedText(details)
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


def default_teaching_folder() -> Path:
    """Where a teaching file goes unless the user says otherwise: "CXR Studio teaching file" in Documents."""
    documents = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
    return Path(documents or Path.home()) / "CXR Studio teaching file"


class TeachingFileDialog(QDialog):
    """Choose the folder a teaching file is written into: type a path (made on export if it does not exist),
    Browse… for an existing folder, or make one with New folder… inside the folder shown."""

    def __init__(self, case_count: int, parent: QWidget | None = None, folder: Path | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export teaching file")
        self.resize(560, 0)
        about = QLabel(
            f"{case_count} case(s): a DICOM file and a PNG for each, with an index.html and cases.json listing "
            "prompts, parameters, tags and notes. Files of an earlier teaching file in the folder are replaced."
        )
        about.setWordWrap(True)
        self.folder_edit = QLineEdit(str(folder if folder is not None else default_teaching_folder()))
        self.folder_edit.setToolTip("The folder to write into; it is made if it does not exist")
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self.browse)
        self.new_folder_button = QPushButton("New folder…")
        self.new_folder_button.setToolTip("Make a new folder inside the folder shown, and write into it")
        self.new_folder_button.clicked.connect(self.ask_new_folder)
        self.error_label = QLabel()
        self.error_label.setStyleSheet("color: #c0392b")
        self.error_label.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.folder_edit, 1)
        row.addWidget(self.browse_button)
        row.addWidget(self.new_folder_button)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(about)
        layout.addWidget(QLabel("Into folder"))
        layout.addLayout(row)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)

    def folder(self) -> Path:
        return Path(self.folder_edit.text().strip()).expanduser()

    def _existing_folder(self) -> Path:
        """The folder shown, or the nearest folder above it that exists (where a new folder is made)."""
        folder = self.folder()
        while not folder.is_dir() and folder.parent != folder:
            folder = folder.parent
        return folder

    def browse(self) -> None:
        chosen = QFileDialog.getExistingDirectory(
            self, "Export teaching file into folder", str(self._existing_folder())
        )
        if chosen:
            self.folder_edit.setText(chosen)

    def ask_new_folder(self) -> QInputDialog:
        """Ask for the new folder's name (window-modal, without blocking); :meth:`create_folder` makes it."""
        ask = QInputDialog(self)
        ask.setWindowTitle("New folder")
        ask.setLabelText(f"Name of the new folder in {self._existing_folder()}:")
        ask.setWindowModality(Qt.WindowModality.WindowModal)
        ask.textValueSelected.connect(self.create_folder)
        ask.finished.connect(ask.deleteLater)
        ask.open()
        return ask

    def create_folder(self, name: str) -> Path | None:
        """Make folder ``name`` inside the folder shown and show it; None (with a message here) if it cannot be."""
        name = name.strip()
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            self.error_label.setText(f"“{name}” is not a folder name: use letters, digits, spaces, - or _.")
            return None
        folder = self._existing_folder() / name
        try:
            folder.mkdir()
        except FileExistsError:
            if not folder.is_dir():
                self.error_label.setText(f"{folder} is a file: choose another name.")
                return None
        except OSError as exc:
            self.error_label.setText(f"{folder} cannot be made: {exc.strerror or exc}. Choose a writable folder.")
            return None
        self.error_label.clear()
        self.folder_edit.setText(str(folder))
        return folder

    def accept(self) -> None:
        folder = self.folder()
        if not self.folder_edit.text().strip() or not folder.is_absolute():
            self.error_label.setText("Give the full path of a folder, or choose one with Browse… or New folder….")
            return
        if folder.exists() and not folder.is_dir():
            self.error_label.setText(f"{folder} is a file: choose a folder.")
            return
        super().accept()
