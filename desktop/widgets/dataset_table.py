"""The dataset explorer's table: a QAbstractTableModel over the records that pass the filters.

- It asks for a thumbnail only when the view paints that row; thumbnails are decoded on the model's own
  QThreadPool (newest request first) and cached, so a manifest of thousands of records opens at once.
- Every image path is checked in the background: missing files are counted, drawn with a placeholder and
  named in red; a file that exists but does not decode is counted as unreadable.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QRunnable, Qt, QThreadPool, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPixmap

from desktop.dataset import (
    THUMB,
    ImageReadError,
    RecordFilter,
    findings_summary,
    missing_images,
    read_record_image,
    search_text,
    thumbnail_pixels,
)
from desktop.widgets.viewer import to_qimage
from engine.findings.vocabulary import FINDINGS
from engine.manifest import ManifestRecord, resolve_image

log = logging.getLogger(__name__)

THUMB_CACHE = 2000  # thumbnails kept (LRU); far more than a screen shows


# 1. thumbnails off the GUI thread ----------------------------------------------------------------------


class _ThumbnailSignals(QObject):
    """Lives in the GUI thread; pool threads emit through it (queued connections)."""

    thumbnail = Signal(int, int, object, str, bool)  # token, record index, QImage or None, error, missing
    scanned = Signal(int, object)  # token, list of missing record indices


class _ThumbnailTask(QRunnable):
    def __init__(self, signals: _ThumbnailSignals, token: int, index: int, path: Path) -> None:
        super().__init__()
        self.signals, self.token, self.index, self.path = signals, token, index, path

    def run(self) -> None:
        try:
            image: QImage | None = to_qimage(thumbnail_pixels(read_record_image(self.path, reduced=True)))
            error, missing = "", False
        except ImageReadError as exc:
            image, error, missing = None, exc.reason, exc.missing
        except Exception as exc:  # never let a worker thread die silently
            log.exception("thumbnail of %s failed", self.path)
            image, error, missing = None, str(exc), False
        self.signals.thumbnail.emit(self.token, self.index, image, error, missing)


class _ScanTask(QRunnable):
    def __init__(self, signals: _ThumbnailSignals, token: int, paths: list[Path]) -> None:
        super().__init__()
        self.signals, self.token, self.paths = signals, token, paths

    def run(self) -> None:
        self.signals.scanned.emit(self.token, missing_images(self.paths))


def _placeholder(kind: str) -> QPixmap:
    """A THUMB x THUMB tile: "loading" (grey) or "missing" (red cross)."""
    pixmap = QPixmap(THUMB, THUMB)
    pixmap.fill(QColor(40, 40, 44))
    if kind != "loading":
        painter = QPainter(pixmap)
        painter.setPen(QPen(QColor(220, 60, 60), 3))
        painter.drawLine(8, 8, THUMB - 8, THUMB - 8)
        painter.drawLine(THUMB - 8, 8, 8, THUMB - 8)
        painter.end()
    return pixmap


# 2. the table model ------------------------------------------------------------------------------------


class RecordTableModel(QAbstractTableModel):
    """The records that pass the filter, one row each; thumbnails are loaded when a row is painted."""

    COLUMNS = ("Image", "Split", "View", "Label", "Findings", "Patient", "Text")
    problems_changed = Signal()
    thumbnail_ready = Signal(int)  # record index

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.manifest: Path | None = None
        self.records: list[ManifestRecord] = []
        self.paths: list[Path] = []
        self._haystacks: list[str] = []
        self._summaries: list[str] = []
        self._rows: list[int] = []  # record indices in display order
        self._row_of: dict[int, int] = {}
        self._filter = RecordFilter()
        self._sort: tuple[int, Qt.SortOrder] = (-1, Qt.SortOrder.AscendingOrder)
        self.missing: set[int] = set()  # record indices whose image file is missing (found so far)
        self.scanned = False  # the background check of every path has finished
        self._scan_queued = False
        self.unreadable: dict[int, str] = {}  # record index -> reason (file there, not decodable)
        self.thumbnail_requests = 0  # since the manifest was opened (tests check the laziness)
        self._thumbs: OrderedDict[int, QPixmap] = OrderedDict()
        self._pending: set[int] = set()
        self._token = 0
        self._priority = 0
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max(1, min(2, QThreadPool.globalInstance().maxThreadCount() - 1)))
        self._signals = _ThumbnailSignals(self)
        self._signals.thumbnail.connect(self._on_thumbnail)
        self._signals.scanned.connect(self._on_scanned)
        self._loading = _placeholder("loading")
        self._broken = _placeholder("missing")

    # records and filter ---------------------------------------------------------------------------

    def set_records(
        self, records: list[ManifestRecord], manifest: Path, record_filter: RecordFilter | None = None
    ) -> None:
        self._pool.clear()  # queued work for the previous manifest is dropped; results are ignored by token
        self._token += 1
        self._priority = 0
        self.beginResetModel()
        self.manifest = manifest
        self.records = records
        self.paths = [resolve_image(record, manifest) for record in records]
        self._haystacks = [search_text(record) for record in records]
        self._summaries = [findings_summary(record.findings) for record in records]
        self.missing = set()
        self.scanned = False
        self._scan_queued = False
        self.unreadable = {}
        self.thumbnail_requests = 0
        self._thumbs.clear()
        self._pending.clear()
        if record_filter is not None:
            self._filter = record_filter
        self._rows = self._filtered()
        self._sort_rows()
        self._row_of = {index: row for row, index in enumerate(self._rows)}
        self.endResetModel()
        self.resume()
        self.problems_changed.emit()

    def set_filter(self, record_filter: RecordFilter) -> None:
        self.beginResetModel()
        self._filter = record_filter
        self._rows = self._filtered()
        self._sort_rows()
        self._row_of = {index: row for row, index in enumerate(self._rows)}
        self.endResetModel()

    def record_filter(self) -> RecordFilter:
        return self._filter

    def _filtered(self) -> list[int]:
        f = self._filter
        return [i for i, record in enumerate(self.records) if f.matches(record, self._haystacks[i])]

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Column < 0: manifest order."""
        self.beginResetModel()
        self._sort = (column, order)
        self._sort_rows()
        self._row_of = {index: row for row, index in enumerate(self._rows)}
        self.endResetModel()

    def _sort_rows(self) -> None:
        column, order = self._sort
        if column < 0 or column >= len(self.COLUMNS):
            self._rows.sort()
            return
        self._rows.sort(key=lambda i: (self._sort_key(i, column), i), reverse=order == Qt.SortOrder.DescendingOrder)

    def _sort_key(self, index: int, column: int) -> str:
        if column == 0:
            return self.paths[index].name.lower()
        return self._text(index, column).lower()

    # access -----------------------------------------------------------------------------------------

    def record_index(self, row: int) -> int:
        return self._rows[row]

    def row_of(self, index: int) -> int | None:
        return self._row_of.get(index)

    def visible_indices(self) -> list[int]:
        return list(self._rows)

    def thumbnail(self, index: int) -> QPixmap | None:
        """The loaded thumbnail of a record, or None (not loaded yet, or the file failed)."""
        return self._thumbs.get(index)

    def failed(self, index: int) -> bool:
        return index in self.unreadable or index in self.missing

    def note_unreadable(self, index: int, reason: str, *, missing: bool = False) -> None:
        """A file found missing or undecodable outside the background check (e.g. when shown)."""
        if missing:
            if index in self.missing:
                return
            self.missing.add(index)
        elif self.unreadable.get(index) == reason:
            return
        else:
            self.unreadable[index] = reason
        self._row_changed(index)
        self.problems_changed.emit()

    # Qt model interface ------------------------------------------------------------------------

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        record_index = self._rows[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(record_index, column, short=True)
        if role == Qt.ItemDataRole.DecorationRole and column == 0:
            return self._decoration(record_index)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(record_index, column)
        if role == Qt.ItemDataRole.ForegroundRole and column == 0 and self.failed(record_index):
            return QColor(200, 40, 40)
        if role == Qt.ItemDataRole.UserRole:
            return record_index
        return None

    def _text(self, index: int, column: int, *, short: bool = False) -> str:
        record = self.records[index]
        if column == 0:
            name = self.paths[index].name
            if index in self.missing:
                return f"{name}\n(missing)"
            return f"{name}\n(unreadable)" if index in self.unreadable else name
        if column == 1:
            return record.split
        if column == 2:
            return record.view
        if column == 3:
            return record.label or ""
        if column == 4:
            return self._summaries[index]
        if column == 5:
            return record.patient_id
        text = " ".join(record.text.split())
        return text[:160] + "…" if short and len(text) > 160 else text

    def _tooltip(self, index: int, column: int) -> str:
        if column == 0:
            problem = ""
            if index in self.missing:
                problem = "\nThe file is missing."
            elif index in self.unreadable:
                problem = f"\nThe file cannot be shown: {self.unreadable[index]}"
            return f"{self.paths[index]}{problem}"
        if column == 4:
            findings = self.records[index].findings
            return "\n".join(f"{FINDINGS[name]}: {findings[name]}" for name in FINDINGS if name in findings)
        if column == 6:
            return self.records[index].text
        return None

    def _decoration(self, index: int) -> QPixmap:
        pixmap = self._thumbs.get(index)
        if pixmap is not None:
            self._thumbs.move_to_end(index)
            return pixmap
        if self.failed(index):
            return self._broken
        if index not in self._pending:
            self._pending.add(index)
            self.thumbnail_requests += 1
            self._priority += 1  # the newest request first: the rows on screen now
            self._pool.start(_ThumbnailTask(self._signals, self._token, index, self.paths[index]), self._priority)
        return self._loading

    def _on_thumbnail(self, token: int, index: int, image: QImage | None, error: str, missing: bool) -> None:
        if token != self._token:
            return
        self._pending.discard(index)
        if image is None:
            self.note_unreadable(index, error, missing=missing)
            return
        self._thumbs[index] = QPixmap.fromImage(image)
        while len(self._thumbs) > THUMB_CACHE:
            self._thumbs.popitem(last=False)
        self._row_changed(index)
        self.thumbnail_ready.emit(index)

    def _on_scanned(self, token: int, missing: list[int]) -> None:
        if token != self._token:
            return
        self.scanned = True
        self._scan_queued = False
        for index in set(missing) - self.missing:
            self.missing.add(index)
            self._row_changed(index)
        self.problems_changed.emit()

    def _row_changed(self, index: int) -> None:
        row = self._row_of.get(index)
        if row is not None:
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(self.COLUMNS) - 1))

    def scanning(self) -> bool:
        return not self.scanned and bool(self.records)

    def shutdown(self) -> None:
        """Drop queued thumbnails and wait for the running ones (called when the explorer closes)."""
        self._token += 1
        self._pool.clear()
        self._pool.waitForDone(10_000)
        self._pending.clear()
        self._scan_queued = False

    def resume(self) -> None:
        """After :meth:`shutdown`: check the image files again if that check was dropped."""
        if self.records and not self.scanned and not self._scan_queued:
            self._scan_queued = True
            self._pool.start(_ScanTask(self._signals, self._token, list(self.paths)), 1_000_000_000)


__all__ = ["THUMB_CACHE", "RecordTableModel"]
