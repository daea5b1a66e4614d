"""The dataset explorer's text pane for one record: its facts (patient, view, split, source, label, age,
sex and the image path), its text, and its findings in vocabulary order, present ones in bold."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.findings.vocabulary import ABSENT, FINDINGS, PRESENT, UNCERTAIN
from engine.manifest import ManifestRecord

STATUS_COLORS = {PRESENT: QColor(200, 40, 40), UNCERTAIN: QColor(190, 120, 0), ABSENT: QColor(120, 120, 120)}


class RecordDetail(QWidget):
    """``info_label`` (the facts), ``text_view`` (the text) and ``findings_table`` (label, status)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.text_view = QPlainTextEdit()
        self.text_view.setReadOnly(True)
        self.text_view.setPlaceholderText("The record's text")
        self.info_label = QLabel()
        self.info_label.setWordWrap(True)
        self.info_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.findings_table = QTableWidget(0, 2)
        self.findings_table.setHorizontalHeaderLabels(["Finding", "Status"])
        self.findings_table.verticalHeader().hide()
        self.findings_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.findings_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.findings_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        text_layout = QHBoxLayout(self)
        text_layout.setContentsMargins(0, 0, 0, 0)
        left = QVBoxLayout()
        left.addWidget(self.info_label)
        left.addWidget(self.text_view, 1)
        text_layout.addLayout(left, 3)
        text_layout.addWidget(self.findings_table, 2)

    def clear(self) -> None:
        self.text_view.clear()
        self.info_label.clear()
        self.findings_table.setRowCount(0)

    def show_record(self, record: ManifestRecord, path: Path) -> None:
        """The record's text, facts and findings; ``path`` is its image file, resolved."""
        self.text_view.setPlainText(record.text)
        facts = (("Patient", record.patient_id), ("View", record.view), ("Split", record.split),
                 ("Source", record.source), ("Label", record.label), ("Age", record.age),
                 ("Sex", record.sex))  # fmt: skip
        self.info_label.setText(
            " · ".join(f"<b>{name}</b> {html.escape(str(value))}" for name, value in facts if value not in (None, ""))
            + f"<br><small>{html.escape(str(path))}</small>"
        )
        names = [name for name in FINDINGS if name in record.findings]
        self.findings_table.setRowCount(len(names))
        for row, name in enumerate(names):
            status = record.findings[name]
            label_item = QTableWidgetItem(FINDINGS[name])
            label_item.setToolTip(name)
            status_item = QTableWidgetItem(status)
            status_item.setForeground(STATUS_COLORS[status])
            if status == PRESENT:
                font = status_item.font()
                font.setBold(True)
                status_item.setFont(font)
            self.findings_table.setItem(row, 0, label_item)
            self.findings_table.setItem(row, 1, status_item)

    def findings_rows(self) -> list[tuple[str, str]]:
        """The findings table as (label, status) pairs."""
        table = self.findings_table
        return [(table.item(row, 0).text(), table.item(row, 1).text()) for row in range(table.rowCount())]


__all__ = ["STATUS_COLORS", "RecordDetail"]
