"""The dataset explorer: open a manifest written by the importers (engine.manifest), browse and filter its
records, read each image with its text and findings, and put it beside a generated image.

- Reading and filtering are Qt-free (desktop.dataset); the table and its background thumbnails are
  desktop.widgets.dataset_table; the two linked viewers desktop.widgets.linked_views; the record's facts,
  text and findings desktop.widgets.record_detail. This module is the window that holds them together.
- A manifest that cannot be read at all gives one error dialog and leaves the explorer as it was; bad lines
  are skipped, counted and listed under Problems….
- The record's image is shown in an ImageView marked REAL (a dataset image must not carry the viewer's
  SYNTHETIC mark). "Compare" puts a generated image (the main window's current one, or one generated from
  the record's text with the main window's settings) in a second ImageView beside it; the two share the
  display options and zoom/pan (scaled, so images of different sizes stay aligned), and their
  window/level is linked in units of each image's own DEFAULT window (see
  :func:`desktop.widgets.linked_views.linked_window`). Reset W/L (or R) gives each image its own default
  back; a preset gives each image its own window of that name.
- Close: the Close button, Esc, or the platform's Close shortcut (Ctrl+W / Cmd+W).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import QModelIndex, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from desktop.dataset import (
    FINDING_STATUSES,
    THUMB,
    ImageReadError,
    LoadedManifest,
    RecordFilter,
    finding_choices,
    load_manifest,
    read_record_image,
    value_choices,
)
from desktop.settings import Settings
from desktop.widgets.dataset_table import RecordTableModel
from desktop.widgets.dialogs import TextDialog, open_warning
from desktop.widgets.linked_views import LinkedViews
from desktop.widgets.record_detail import RecordDetail
from engine.findings.vocabulary import PRESENT
from engine.manifest import ManifestRecord

log = logging.getLogger(__name__)

MANIFEST_FILTER = "Manifests (*.jsonl *.json);;All files (*)"


class DatasetExplorer(QMainWindow):
    """Browse a manifest. The host (the main window) sets ``current_image`` and ``generate_text`` with
    :meth:`set_host` and calls :meth:`generated` / :meth:`generation_ended` as its runs finish."""

    manifest_opened = Signal(str)  # path, after the records are in the table
    record_shown = Signal(int)  # record index, after the detail pane shows it
    error_shown = Signal(str, str)  # title, message

    def __init__(self, settings: Settings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setWindowTitle("Dataset explorer — CXR Studio")
        self.resize(1320, 820)
        self.settings = settings
        self.loaded: LoadedManifest | None = None
        self.current_index: int | None = None
        self.errors: list[str] = []  # every error shown, in order
        self._boxes: list[QMessageBox] = []
        self._current_image: Callable[[], tuple[np.ndarray, str] | None] | None = None
        self._generate_text: Callable[[str], bool] | None = None
        self._awaiting_generation = False
        self.model = RecordTableModel(self)
        self.model.problems_changed.connect(self._update_counts)
        self._build()
        self.model.modelReset.connect(self._restore_selection)  # after the view's own reset handlers
        if settings is not None:
            geometry = settings.dataset_explorer_geometry()
            if geometry is not None:
                self.restoreGeometry(geometry)
        self._update_counts()
        self._show_record(None)

    # building -------------------------------------------------------------------------------------

    def _build(self) -> None:
        # 1. the list: filters above, the table, counts and problems below
        self.open_button = QPushButton("Open manifest…")
        self.open_button.setToolTip("Open a manifest (.jsonl) written by `cxr-studio import`")
        self.open_button.clicked.connect(self.choose_manifest)
        self.manifest_label = QLabel("No manifest open")
        self.manifest_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search text, label, patient, file… (all words)")
        self.search_edit.setClearButtonEnabled(True)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(200)
        self._search_timer.timeout.connect(self.apply_filters)
        self.search_edit.textChanged.connect(self._search_timer.start)
        self.finding_box = _combo("Show only records with this finding…")
        self.status_box = _combo("…in this status")
        for status in FINDING_STATUSES:
            self.status_box.addItem(status, status)
        self.split_box = _combo("Split")
        self.view_box = _combo("View (projection)")
        self.label_box = _combo("The source's own label")
        self.source_box = _combo("Importer (source)")
        for box in (self.finding_box, self.status_box, self.split_box, self.view_box, self.label_box, self.source_box):
            box.activated.connect(lambda _i: self.apply_filters())
        self.clear_button = QPushButton("Clear filters")
        self.clear_button.clicked.connect(self.clear_filters)
        self.count_label = QLabel()
        self.problems_label = QLabel()
        self.problems_label.setWordWrap(True)
        self.problems_button = QPushButton("Problems…")
        self.problems_button.setToolTip("Every bad manifest line and every missing or unreadable image")
        self.problems_button.clicked.connect(self.show_problems)
        self.close_button = QPushButton("Close")
        self.close_button.setToolTip("Close the dataset explorer (Esc)")
        self.close_button.clicked.connect(self.close)

        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setIconSize(QSize(THUMB, THUMB))
        self.table.setWordWrap(False)
        self.table.setAlternatingRowColors(True)
        rows = self.table.verticalHeader()
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)  # never measures every row
        rows.setDefaultSectionSize(THUMB + 6)
        rows.hide()
        columns = self.table.horizontalHeader()
        columns.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        columns.setStretchLastSection(True)
        for column, width in enumerate((200, 50, 60, 130, 180, 80)):
            self.table.setColumnWidth(column, width)
        columns.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # manifest order until a header is clicked
        self.table.setSortingEnabled(True)
        self.table.selectionModel().currentRowChanged.connect(self._current_row_changed)

        filters1 = QHBoxLayout()
        filters1.addWidget(self.open_button)
        filters1.addWidget(self.manifest_label, 1)
        filters2 = QHBoxLayout()
        filters2.addWidget(self.search_edit, 1)
        filters2.addWidget(self.clear_button)
        filters3 = QHBoxLayout()
        for label, box in (("Finding", self.finding_box), ("is", self.status_box)):
            filters3.addWidget(QLabel(label))
            filters3.addWidget(box, 1 if box is self.finding_box else 0)
        filters4 = QHBoxLayout()
        for label, box in (("Split", self.split_box), ("View", self.view_box), ("Label", self.label_box),
                           ("Source", self.source_box)):  # fmt: skip
            filters4.addWidget(QLabel(label))
            filters4.addWidget(box, 1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.count_label)
        bottom.addWidget(self.problems_label, 1)
        bottom.addWidget(self.problems_button)
        bottom.addWidget(self.close_button)
        browse = QWidget()
        browse_layout = QVBoxLayout(browse)
        browse_layout.setContentsMargins(4, 4, 4, 4)
        for row in (filters1, filters2, filters3, filters4):
            browse_layout.addLayout(row)
        browse_layout.addWidget(self.table, 1)
        browse_layout.addLayout(bottom)

        # 2. the detail: viewer toolbar, the record's image (and the generated one), text, findings
        self.views = LinkedViews()
        self.real_view, self.generated_view = self.views.real_view, self.views.generated_view
        self.preset_box = _combo("Window presets: each image gets its own window of that name, from its pixels")
        self.preset_box.activated.connect(self._preset_chosen)
        self.reset_button = QPushButton("Reset W/L")
        self.reset_button.setToolTip("Each image back to its own default window (R)")
        self.reset_button.clicked.connect(self.reset_window)
        self.fit_button = QPushButton("Fit")
        self.fit_button.clicked.connect(self.fit)
        self.invert_box = QCheckBox("Invert")
        self.clahe_box = QCheckBox("CLAHE")
        self.clahe_box.setToolTip("CLAHE (clip 2, 8x8 tiles) on both sides, display only")
        self.invert_box.toggled.connect(self._options_changed)
        self.clahe_box.toggled.connect(self._options_changed)
        self.compare_current_button = QPushButton("Compare with current image")
        self.compare_current_button.setToolTip("Show the main window's current generated image beside this one")
        self.compare_current_button.clicked.connect(self.compare_with_current)
        self.generate_button = QPushButton("Generate from this text")
        self.generate_button.setToolTip(
            "Generate one image from this record's text with the main window's model and settings, and compare"
        )
        self.generate_button.clicked.connect(self.generate_from_record)
        self.close_compare_button = QPushButton("Close comparison")
        self.close_compare_button.clicked.connect(self.close_compare)
        toolbar1 = QHBoxLayout()
        toolbar1.addWidget(QLabel("W/L"))
        for widget in (self.preset_box, self.reset_button, self.fit_button, self.invert_box, self.clahe_box):
            toolbar1.addWidget(widget)
        toolbar1.addStretch(1)
        toolbar2 = QHBoxLayout()
        for widget in (self.compare_current_button, self.generate_button, self.close_compare_button):
            toolbar2.addWidget(widget)
        toolbar2.addStretch(1)
        self.image_message = QLabel()
        self.image_message.setWordWrap(True)
        self.image_message.setStyleSheet("color: #c33")
        self.image_message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.image_message.hide()
        self.detail = RecordDetail()
        image_pane = QWidget()
        image_layout = QVBoxLayout(image_pane)
        image_layout.setContentsMargins(0, 0, 0, 0)
        image_layout.addLayout(toolbar1)
        image_layout.addLayout(toolbar2)
        image_layout.addWidget(self.image_message)
        image_layout.addWidget(self.views, 1)
        detail = QSplitter(Qt.Orientation.Vertical)
        detail.addWidget(image_pane)
        detail.addWidget(self.detail)
        detail.setStretchFactor(0, 4)
        detail.setStretchFactor(1, 1)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(browse)
        splitter.addWidget(detail)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        self.setCentralWidget(splitter)

        self._update_compare_buttons()

        # 3. closing: Esc and the platform's Close shortcut (Ctrl+W), as the Close button
        for keys in (QKeySequence(Qt.Key.Key_Escape), QKeySequence(QKeySequence.StandardKey.Close)):
            shortcut = QShortcut(keys, self)
            shortcut.setContext(Qt.ShortcutContext.WindowShortcut)
            shortcut.activated.connect(self.close)

    # opening ----------------------------------------------------------------------------------------

    def choose_manifest(self) -> None:
        start = ""
        if self.settings is not None and self.settings.last_manifest:
            start = str(Path(self.settings.last_manifest).parent)
        path, _ = QFileDialog.getOpenFileName(self, "Open dataset manifest", start, MANIFEST_FILTER)
        if path:
            self.open_manifest(path)

    def open_last(self) -> bool:
        """Open the manifest opened last time, if it is still there."""
        last = self.settings.last_manifest if self.settings is not None else ""
        return bool(last) and Path(last).is_file() and self.open_manifest(last)

    def open_manifest(self, path: str | os.PathLike[str]) -> bool:
        """Read a manifest into the table; False (after an error dialog) when the file cannot be read."""
        path = Path(path)
        try:
            loaded = load_manifest(path)
        except FileNotFoundError:
            self.show_error("Manifest not opened", f"{path}: no such file. Choose a manifest written by "
                            "`cxr-studio import`.")  # fmt: skip
            return False
        except OSError as exc:
            self.show_error("Manifest not opened", f"{path}: {exc.strerror or exc}. Choose a readable .jsonl file.")
            return False
        self.loaded = loaded
        self.current_index = None
        self._fill_filter_boxes(loaded.records)
        self.search_edit.blockSignals(True)
        self.search_edit.clear()
        self.search_edit.blockSignals(False)
        self.model.set_records(loaded.records, path, RecordFilter())
        self.manifest_label.setText(str(path))
        self.manifest_label.setToolTip(str(path))
        self.setWindowTitle(f"Dataset explorer — {path.name}")
        if self.settings is not None:
            self.settings.last_manifest = str(path.resolve())
        self._update_counts()
        if loaded.records:
            self.select_record(0)
        else:
            self._show_record(None)
        if loaded.bad_lines:
            shown = "\n".join(loaded.bad_lines[:5])
            more = f"\n… and {len(loaded.bad_lines) - 5} more (Problems…)" if len(loaded.bad_lines) > 5 else ""
            self.show_error(
                "Manifest lines skipped",
                f"{len(loaded.bad_lines)} line(s) of {path.name} could not be read and were skipped; "
                f"{len(loaded.records)} record(s) opened.\n{shown}{more}\n"
                "Fix or re-create the manifest with `cxr-studio import`.",
            )
        elif not loaded.records:
            self.show_error("Empty manifest", f"{path} holds no records.")
        log.info("dataset %s: %d records, %d bad lines", path, len(loaded.records), len(loaded.bad_lines))
        self.manifest_opened.emit(str(path))
        return True

    def _fill_filter_boxes(self, records: list[ManifestRecord]) -> None:
        self.finding_box.clear()
        self.finding_box.addItem("Any finding", "")
        for name, text in finding_choices(records):
            self.finding_box.addItem(text, name)
        self.status_box.setCurrentIndex(0)
        for box, field in ((self.split_box, "split"), (self.view_box, "view"), (self.label_box, "label"),
                           (self.source_box, "source")):  # fmt: skip
            box.clear()
            box.addItem(f"All {field}s", "")
            for value, text in value_choices(records, field):
                box.addItem(text, value)
        self._update_status_box()

    # filtering --------------------------------------------------------------------------------------

    def current_filter(self) -> RecordFilter:
        return RecordFilter(
            finding=self.finding_box.currentData() or "",
            status=self.status_box.currentData() or PRESENT,
            split=self.split_box.currentData() or "",
            view=self.view_box.currentData() or "",
            label=self.label_box.currentData() or "",
            source=self.source_box.currentData() or "",
            text=self.search_edit.text().strip(),
        )

    def apply_filters(self) -> None:
        self._search_timer.stop()
        self._update_status_box()
        self.model.set_filter(self.current_filter())
        self._select_first_if_hidden()
        self._update_counts()

    def set_filter(self, record_filter: RecordFilter) -> None:
        """Put a filter into the controls and apply it (unknown values fall back to "all")."""
        for box, value in ((self.finding_box, record_filter.finding), (self.status_box, record_filter.status),
                           (self.split_box, record_filter.split), (self.view_box, record_filter.view),
                           (self.label_box, record_filter.label), (self.source_box, record_filter.source)):  # fmt: skip
            box.setCurrentIndex(max(0, box.findData(value)))
        self.search_edit.blockSignals(True)
        self.search_edit.setText(record_filter.text)
        self.search_edit.blockSignals(False)
        self.apply_filters()

    def clear_filters(self) -> None:
        self.set_filter(RecordFilter())

    def _update_status_box(self) -> None:
        self.status_box.setEnabled(bool(self.finding_box.currentData()))

    def shown_count(self) -> int:
        return self.model.rowCount()

    def _update_counts(self) -> None:
        total = len(self.model.records)
        self.count_label.setText(f"{self.shown_count():,} of {total:,} records" if self.loaded else "")
        problems = self.problem_counts()
        parts = []
        if problems["bad lines"]:
            parts.append(f"{problems['bad lines']} bad manifest line(s) skipped")
        if self.model.scanning():
            parts.append("checking image files…")
        elif problems["missing"]:
            parts.append(f"{problems['missing']} image file(s) missing")
        if problems["unreadable"]:
            parts.append(f"{problems['unreadable']} image(s) unreadable")
        self.problems_label.setText(" · ".join(parts))
        self.problems_label.setStyleSheet("color: #c33" if any(problems.values()) else "")
        self.problems_button.setEnabled(any(problems.values()))

    def problem_counts(self) -> dict[str, int]:
        return {
            "bad lines": len(self.loaded.bad_lines) if self.loaded else 0,
            "missing": len(self.model.missing),
            "unreadable": len(self.model.unreadable),
        }

    def problems_text(self) -> str:
        lines = []
        if self.loaded and self.loaded.bad_lines:
            lines.append(f"Manifest lines skipped ({self.loaded.path}):")
            lines.extend(f"  {line}" for line in self.loaded.bad_lines)
        missing = sorted(self.model.missing)
        if missing:
            lines.append("Image files missing:")
            lines.extend(f"  {self.model.paths[i]}" for i in missing)
        if self.model.unreadable:
            lines.append("Images that cannot be shown:")
            lines.extend(f"  {self.model.paths[i]}: {why}" for i, why in sorted(self.model.unreadable.items()))
        return "\n".join(lines) or "No problems found."

    def show_problems(self) -> None:
        TextDialog("Dataset problems", self.problems_text(), self).open()

    # selection and detail ---------------------------------------------------------------------------

    def select_record(self, index: int) -> bool:
        """Select a record (by its index in the manifest) in the table; False when filtered out."""
        row = self.model.row_of(index)
        if row is None:
            return False
        self.table.selectRow(row)
        self.table.setCurrentIndex(self.model.index(row, 0))
        self.table.scrollTo(self.model.index(row, 0))
        if self.current_index != index:  # selecting the current row again does not signal
            self._show_record(index)
        return True

    def _current_row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            index = self.model.record_index(current.row())
            if index != self.current_index:
                self._show_record(index)

    def _restore_selection(self) -> None:
        """After a filter or sort: keep the shown record selected when it is still listed."""
        row = None if self.current_index is None else self.model.row_of(self.current_index)
        if row is None:
            return
        self.table.selectionModel().blockSignals(True)
        self.table.selectRow(row)
        self.table.setCurrentIndex(self.model.index(row, 0))
        self.table.selectionModel().blockSignals(False)
        self.table.scrollTo(self.model.index(row, 0))

    def _select_first_if_hidden(self) -> None:
        """After a filter: a record filtered out gives way to the first one listed (or to none)."""
        if self.current_index is not None and self.model.row_of(self.current_index) is not None:
            return
        if self.model.rowCount():
            self.select_record(self.model.record_index(0))
        elif self.loaded is not None:
            self._show_record(None)
            self.real_view.set_image(None, "No record matches the filters")

    def current_record(self) -> ManifestRecord | None:
        return None if self.current_index is None else self.model.records[self.current_index]

    def _show_record(self, index: int | None) -> None:
        self.current_index = index
        self._update_compare_buttons()
        if index is None:
            self.real_view.set_image(None, "Open a manifest and select a record" if not self.loaded else "")
            self.image_message.hide()
            self.detail.clear()
            self._refresh_presets()
            return
        record = self.model.records[index]
        path = self.model.paths[index]
        # 1. the image (or a placeholder that names the file)
        self.real_view.mark = f"REAL · {record.source}"
        try:
            pixels = read_record_image(path)
        except ImageReadError as exc:
            what = "Image file missing" if exc.missing else "Image cannot be shown"
            self.real_view.set_image(None, f"{what}:\n{path}")
            self.image_message.setText(f"{what}: {path}" + ("" if exc.missing else f" ({exc.reason})"))
            self.image_message.show()
            self.model.note_unreadable(index, exc.reason, missing=exc.missing)
        else:
            self.image_message.hide()
            self.real_view.set_image(pixels, path.name)  # view, label and the rest are in the facts below
            self.views.link_window(self.real_view, self.generated_view)
        self._refresh_presets()
        # 2. text, facts and findings
        self.detail.show_record(record, path)
        self.record_shown.emit(index)

    def findings_rows(self) -> list[tuple[str, str]]:
        """The findings table as (label, status) pairs."""
        return self.detail.findings_rows()

    # display controls ---------------------------------------------------------------------------------

    def _refresh_presets(self) -> None:
        self.preset_box.clear()
        for preset in self.real_view.presets():
            self.preset_box.addItem(preset.name.title(), preset.name)
        self.preset_box.setEnabled(self.real_view.has_image())

    def _preset_chosen(self, index: int) -> None:
        """Each image to its own window of that name (a LUNG window is a range of its own pixels)."""
        name = self.preset_box.itemData(index)
        if name:
            self.views.apply_preset(name)

    def reset_window(self) -> None:
        """Each image back to its own DEFAULT window."""
        self.views.reset_window()

    def _options_changed(self, *_args: object) -> None:
        options = replace(
            self.real_view.options(), invert=self.invert_box.isChecked(), clahe=self.clahe_box.isChecked()
        )
        self.views.set_options(options)
        self._refresh_presets()

    def fit(self) -> None:
        self.views.fit()

    # comparison ---------------------------------------------------------------------------------------

    def set_host(
        self,
        current_image: Callable[[], tuple[np.ndarray, str] | None] | None,
        generate_text: Callable[[str], bool] | None,
    ) -> None:
        """``current_image()``: the host's current generated image and its caption, or None.

        ``generate_text(text)``: "Generate from this text". The explorer hands over the record's text and
        nothing else (no batch count, seed or settings of its own). The host generates ONE image from it with
        its loaded model and its sampling settings, without writing the text into its own prompt box or
        running its batch count, and returns False if it cannot start; the finished image comes back
        through :meth:`generated`."""
        self._current_image = current_image
        self._generate_text = generate_text
        self._update_compare_buttons()

    def _update_compare_buttons(self) -> None:
        has_record = self.current_index is not None
        self.compare_current_button.setEnabled(self._current_image is not None)
        self.generate_button.setEnabled(self._generate_text is not None and has_record)
        self.close_compare_button.setEnabled(self.comparing())

    def comparing(self) -> bool:
        return self.views.comparing()

    def compare_with_current(self) -> bool:
        image = self._current_image() if self._current_image is not None else None
        if image is None:
            self.show_error("No generated image", "Generate an image in the main window first, or use "
                            "“Generate from this text”.")  # fmt: skip
            return False
        pixels, caption = image
        self.set_generated(pixels, caption)
        return True

    def generate_from_record(self) -> bool:
        """Ask the host for one image from the record's text (the text only: see :meth:`set_host`)."""
        record = self.current_record()
        if record is None or self._generate_text is None:
            return False
        if not self._generate_text(record.text):
            return False
        self._awaiting_generation = True
        self.statusBar().showMessage("Generating from this record's text in the main window…")
        return True

    def generated(self, pixels: np.ndarray, caption: str) -> None:
        """The host finished an image; shown here when this explorer asked for it."""
        if self._awaiting_generation:
            self.set_generated(pixels, caption)
            self.statusBar().showMessage(f"Generated: {caption}", 8000)

    def generation_ended(self) -> None:
        self._awaiting_generation = False

    def set_generated(self, pixels: np.ndarray, caption: str) -> None:
        """Show a generated image (stored pixels (H, W)) beside the record's, with the same window/level."""
        self.views.show_generated(pixels, caption)
        self._update_compare_buttons()

    def close_compare(self) -> None:
        self.views.close_generated()
        self._update_compare_buttons()

    # errors and closing -------------------------------------------------------------------------------

    def show_error(self, title: str, message: str) -> None:
        """Log it and show a dialog that does not block the event loop."""
        log.error("%s: %s", title, message)
        self.errors.append(f"{title}: {message}")
        open_warning(self, self._boxes, title, message)
        self.statusBar().showMessage(f"{title}: {message.splitlines()[0]}", 10_000)
        self.error_shown.emit(title, message)

    def showEvent(self, event: QShowEvent) -> None:
        self.model.resume()
        super().showEvent(event)

    def closeEvent(self, event: QCloseEvent) -> None:
        self._awaiting_generation = False
        self.model.shutdown()
        for box in list(self._boxes):
            box.close()
        if self.settings is not None:
            self.settings.set_dataset_explorer_geometry(self.saveGeometry())
        super().closeEvent(event)


def _combo(tip: str) -> QComboBox:
    box = QComboBox()
    box.setToolTip(tip)
    box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    box.setMinimumContentsLength(8)
    return box


__all__ = ["DatasetExplorer"]
