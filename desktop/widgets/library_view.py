"""The case library browser: search, tag filter, thumbnails, details with tags and notes, actions."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.library import Case, CaseLibrary, LibraryError
from engine import imaging

THUMB = 64
ALL_TAGS = "All tags"


class LibraryPanel(QWidget):
    """Browse the CaseLibrary. The window connects the *_requested signals to its actions."""

    open_requested = Signal(int)  # case id
    regenerate_requested = Signal(int)
    compare_requested = Signal(int)
    export_requested = Signal(list)  # case ids
    error = Signal(str, str)  # title, message

    def __init__(self, library: CaseLibrary | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.library = library
        self.confirm_delete: Callable[[int], bool] = self._ask_delete  # tests replace it
        self._read_error = ""  # the last read failure reported, so a refresh does not repeat its dialog
        self._icons: dict[int, QIcon] = {}
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search prompts, notes, tags, seed…")
        self.search_edit.setClearButtonEnabled(True)
        self.tag_box = QComboBox()
        self.tag_box.setToolTip("Show only cases with this tag")
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(200)
        self._search_timer.timeout.connect(self.refresh)
        self.search_edit.textChanged.connect(self._search_timer.start)
        self.tag_box.activated.connect(lambda _i: self.refresh())
        self.check_failed_box = QCheckBox("Check failed")
        self.check_failed_box.setToolTip("Show only cases where the finding checker disagreed with the prompt")
        self.check_failed_box.toggled.connect(lambda _on: self.refresh())
        self.list = QListWidget()
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.setWordWrap(True)
        self.list.itemSelectionChanged.connect(self._selection_changed)
        self.list.itemDoubleClicked.connect(lambda item: self.open_requested.emit(item.data(Qt.ItemDataRole.UserRole)))
        self.details = QLabel()
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.tags_edit = QLineEdit()
        self.tags_edit.setPlaceholderText("tags, comma separated")
        self.notes_edit = QPlainTextEdit()
        self.notes_edit.setPlaceholderText("Teaching notes")
        self.notes_edit.setMaximumHeight(90)
        self.save_button = QPushButton("Save tags and notes")
        self.save_button.clicked.connect(self.save_details)
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Show this case in the viewer and its settings in the prompt panel")
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.setToolTip("Generate this case again from its record (same seed, steps, sampler)")
        self.compare_button = QPushButton("Compare")
        self.compare_button.setToolTip("Show this case beside the current image")
        self.delete_button = QPushButton("Delete")
        self.export_button = QPushButton("Teaching file…")
        self.export_button.setToolTip("Export the selected cases as DICOM files with an index.html")
        self.open_button.clicked.connect(lambda: self._emit_current(self.open_requested))
        self.regenerate_button.clicked.connect(lambda: self._emit_current(self.regenerate_requested))
        self.compare_button.clicked.connect(lambda: self._emit_current(self.compare_requested))
        self.delete_button.clicked.connect(self.delete_selected)
        self.export_button.clicked.connect(lambda: self.export_requested.emit(self.selected_ids()))

        filters = QHBoxLayout()
        filters.addWidget(self.search_edit, 1)
        filters.addWidget(self.tag_box)
        filters.addWidget(self.check_failed_box)
        buttons1 = QHBoxLayout()
        for button in (self.open_button, self.regenerate_button, self.compare_button):
            buttons1.addWidget(button)
        buttons2 = QHBoxLayout()
        for button in (self.delete_button, self.export_button):
            buttons2.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(filters)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.details)
        layout.addWidget(self.tags_edit)
        layout.addWidget(self.notes_edit)
        layout.addWidget(self.save_button)
        layout.addLayout(buttons1)
        layout.addLayout(buttons2)
        self.refresh()

    # listing -----------------------------------------------------------------------------------

    def refresh(self) -> None:
        if self.library is None:
            self.list.clear()
            self.details.setText("The case library could not be opened (see the log).")
            self.setEnabled(False)
            return
        selected = set(self.selected_ids())
        tag = self.tag_box.currentText()
        try:
            tags = self.library.all_tags()
            chosen = tag if tag in tags else ALL_TAGS
            cases = self.library.search(
                self.search_edit.text(),
                tag=None if chosen == ALL_TAGS else chosen,
                check_failed=self.check_failed_box.isChecked(),
            )
        except LibraryError as exc:  # a damaged or locked file: say so here, and once in a dialog
            self.list.clear()
            self.details.setText(f"The case library cannot be read: {_e(str(exc))}")
            if str(exc) != self._read_error:
                self._read_error = str(exc)
                self.error.emit("Case library unreadable", str(exc))
            return
        self._read_error = ""
        self.tag_box.blockSignals(True)
        self.tag_box.clear()
        self.tag_box.addItems([ALL_TAGS, *tags])
        self.tag_box.setCurrentIndex(max(0, self.tag_box.findText(tag)))
        self.tag_box.blockSignals(False)
        self.list.blockSignals(True)
        self.list.clear()
        for case in cases:
            failed = " · ⚠ check failed" if case.check_ok is False else ""
            item = QListWidgetItem(self._icon(case), f"{case.title}\nseed {case.seed} · {case.created[:16]}{failed}")
            item.setData(Qt.ItemDataRole.UserRole, case.id)
            item.setToolTip(case.prompt)
            self.list.addItem(item)
            item.setSelected(case.id in selected)
        self.list.blockSignals(False)
        self._selection_changed()

    def _icon(self, case: Case) -> QIcon:
        if case.id not in self._icons:
            from desktop.widgets.viewer import to_qimage

            try:
                pixels = self.library.image(case)
                window = imaging.window_presets(pixels, ["DEFAULT"])[0]
                image = to_qimage(imaging.apply_window(pixels, window.window_center, window.window_width))
                pixmap = QPixmap.fromImage(image).scaled(
                    THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
                )
                self._icons[case.id] = QIcon(pixmap)
            except (LibraryError, ValueError):
                self._icons[case.id] = QIcon()
        return self._icons[case.id]

    def count(self) -> int:
        return self.list.count()

    def case_ids(self) -> list[int]:
        return [self.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.list.count())]

    def selected_ids(self) -> list[int]:
        return [item.data(Qt.ItemDataRole.UserRole) for item in self.list.selectedItems()]

    def select(self, case_id: int) -> None:
        for i in range(self.list.count()):
            item = self.list.item(i)
            item.setSelected(item.data(Qt.ItemDataRole.UserRole) == case_id)
            if item.isSelected():
                self.list.setCurrentItem(item)

    def current_case(self) -> Case | None:
        ids = self.selected_ids()
        if len(ids) != 1 or self.library is None:
            return None
        try:
            return self.library.get(ids[0])
        except (KeyError, LibraryError):  # deleted by another window, or unreadable (refresh says so)
            return None

    # details -----------------------------------------------------------------------------------

    def _selection_changed(self) -> None:
        case = self.current_case()
        single = case is not None
        for widget in (
            self.tags_edit, self.notes_edit, self.save_button, self.open_button, self.regenerate_button,
            self.compare_button,
        ):  # fmt: skip
            widget.setEnabled(single)
        self.delete_button.setEnabled(bool(self.selected_ids()))
        self.export_button.setEnabled(bool(self.selected_ids()))
        if case is None:
            count = len(self.selected_ids())
            self.details.setText(f"{count} cases selected" if count > 1 else "Select a case")
            self.tags_edit.clear()
            self.notes_edit.clear()
            return
        negative = f"<br><b>Negative:</b> {_e(case.negative_prompt)}" if case.negative_prompt else ""
        self.details.setText(
            f"<b>{_e(case.prompt)}</b>{negative}<br>seed {case.seed} · {case.num_steps} steps · "
            f"{_e(case.sampler)} · guidance {case.guidance_scale:g}<br>model {_e(case.model_id)} "
            f"({case.model_fingerprint[:12]}) · {case.width}x{case.height} · {_e(case.created)}"
        )
        self.tags_edit.setText(", ".join(case.tags))
        self.notes_edit.setPlainText(case.notes)

    def save_details(self) -> None:
        case = self.current_case()
        if case is None or self.library is None:
            return
        try:
            self.library.set_tags(case.id, self.tags_edit.text().split(","))
            self.library.set_notes(case.id, self.notes_edit.toPlainText())
        except (ValueError, LibraryError) as exc:  # the library's SQLite errors arrive as LibraryError
            self.error.emit("Tags and notes not saved", f"{exc}")
            return
        self.refresh()
        self.select(case.id)

    def delete_selected(self) -> None:
        ids = self.selected_ids()
        if not ids or self.library is None or not self.confirm_delete(len(ids)):
            return
        try:
            self.library.delete(ids)
        except (KeyError, LibraryError) as exc:
            self.error.emit("Cases not deleted", f"{exc}")
        for case_id in ids:
            self._icons.pop(case_id, None)
        self.refresh()

    def _ask_delete(self, count: int) -> bool:
        answer = QMessageBox.question(
            self, "Delete cases", f"Delete {count} case(s) and their images from the library? This cannot be undone."
        )
        return answer == QMessageBox.StandardButton.Yes

    def _emit_current(self, signal: Signal) -> None:
        case = self.current_case()
        if case is not None:
            signal.emit(case.id)


def _e(text: str) -> str:
    import html

    return html.escape(text)
