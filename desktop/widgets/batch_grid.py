"""Batches and comparisons: the last batch as a grid of thumbnails, and a prompt x seed (or prompt x guidance)
sheet made inside the app, as ``cxr-studio grid`` makes it; every cell opens its library case in the viewer.

The sheet's requests come from :func:`engine.sheet.sheet_requests` and its PNG from
:func:`engine.sheet.contact_sheet`, the grid command's own code, so the app's sheet is the command's sheet.
Each cell is a case of the case library: the sheet runs as one-image requests through the window's queue
(``run_requests``), and the window reports the case ids of the run (``last_batch``) when it ends.

The dialog gets what it needs from its opener explicitly (as the PACS dialog does), never the window itself:
``template()`` (the generate panel's request, which raises ValueError naming a bad control),
``run_requests(requests)``, ``is_running()``, ``library()`` (the CaseLibrary or None), ``last_batch()`` (the
case ids of the last run, in order, None for an image not kept) and ``open_case(case_id)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine import imaging
from engine.fileio import atomic_write_bytes
from engine.pipeline import GenerationRequest
from engine.sheet import column_labels, contact_sheet, sheet_requests

THUMB = 128
BATCH_COLUMNS = 6  # a batch wraps after this many thumbnails


@dataclass(frozen=True)
class Cell:
    case_id: int
    pixels: np.ndarray  # (H, W) uint16, as the library keeps it
    caption: str


class BatchGrid(QWidget):
    """Thumbnails in labelled rows and columns; a click on one asks for its case."""

    case_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QGridLayout(self)
        self._layout.setSpacing(4)
        self.row_names: list[str] = []
        self.column_names: list[str] = []
        self.cells: list[list[Cell | None]] = []
        self._buttons: dict[tuple[int, int], QToolButton] = {}

    def set_cells(self, row_names: list[str], column_names: list[str], cells: list[list[Cell | None]]) -> None:
        """Lay out ``cells[i][j]`` under row ``i``'s and column ``j``'s names (None: no image there)."""
        while self._layout.count():
            widget = self._layout.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()
        self.row_names, self.column_names, self.cells = list(row_names), list(column_names), cells
        self._buttons = {}
        for j, name in enumerate(column_names):
            self._layout.addWidget(QLabel(name), 0, j + 1, Qt.AlignmentFlag.AlignHCenter)
        for i, name in enumerate(row_names):
            label = QLabel(name)
            label.setWordWrap(True)
            label.setMaximumWidth(200)
            self._layout.addWidget(label, i + 1, 0)
            for j, cell in enumerate(cells[i]):
                if cell is None:
                    self._layout.addWidget(QLabel("(not made)"), i + 1, j + 1, Qt.AlignmentFlag.AlignCenter)
                    continue
                button = QToolButton()
                button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
                button.setIcon(_icon(cell.pixels))
                button.setIconSize(QSize(THUMB, THUMB))
                button.setText(cell.caption)
                button.setToolTip(f"{cell.caption}: open case {cell.case_id} in the viewer")
                button.clicked.connect(lambda _checked=False, case_id=cell.case_id: self.case_requested.emit(case_id))
                self._layout.addWidget(button, i + 1, j + 1)
                self._buttons[(i, j)] = button

    def button(self, row: int, column: int) -> QToolButton | None:
        return self._buttons.get((row, column))


class BatchGridDialog(QDialog):
    """The last batch's grid, and a prompt x seed / prompt x guidance sheet made from the generate settings."""

    shown = Signal()  # the grid shows another batch or sheet

    def __init__(
        self,
        parent: QWidget | None,
        *,
        template: Callable[[], GenerationRequest],
        run_requests: Callable[[list[GenerationRequest]], None],
        is_running: Callable[[], bool],
        library: Callable[[], object],
        last_batch: Callable[[], list[int | None]],
        open_case: Callable[[int], object],
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Batch grid and comparison sheet")
        self.resize(980, 720)
        self._template, self._run_requests, self._is_running = template, run_requests, is_running
        self._library, self._last_batch, self._open_case = library, last_batch, open_case
        self._sheet: tuple[list[str], str, list[float]] | None = None  # the sheet the running run makes
        self.footer = ""

        self.prompts_edit = QPlainTextEdit()
        self.prompts_edit.setPlaceholderText("One prompt per line (a row each)")
        self.prompts_edit.setFixedHeight(70)
        self.axis_box = QComboBox()
        self.axis_box.addItem("Seeds", "seed")
        self.axis_box.addItem("Guidance scales", "guidance")
        self.values_edit = QLineEdit("0, 1, 2, 3")
        self.values_edit.setToolTip("The columns: seeds (whole numbers) or guidance scales, separated by commas")
        self.sheet_button = QPushButton("Generate sheet")
        self.sheet_button.clicked.connect(self.generate_sheet)
        self.batch_button = QPushButton("Show last batch")
        self.batch_button.clicked.connect(self.show_last_batch)
        self.save_button = QPushButton("Save sheet PNG…")
        self.save_button.clicked.connect(self.choose_png)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Prompts (rows)", self.prompts_edit)
        form.addRow("Columns", self.axis_box)
        form.addRow("Column values", self.values_edit)
        buttons = QHBoxLayout()
        for button in (self.sheet_button, self.batch_button, self.save_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        self.grid = BatchGrid()
        self.grid.case_requested.connect(self._open_case)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.grid)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(scroll, 1)

    # the sheet ---------------------------------------------------------------------------------

    def column_values(self) -> list[float]:
        """The column values; ValueError naming the field when one is not a number (or a seed not whole)."""
        axis = self.axis_box.currentData()
        values = []
        for text in (t.strip() for t in re.split(r"[,\s]+", self.values_edit.text()) if t.strip()):
            try:
                values.append(int(text) if axis == "seed" else float(text))
            except ValueError:
                kind = "a whole number (a seed)" if axis == "seed" else "a number (a guidance scale)"
                raise ValueError(f"column values: {text!r} is not {kind}") from None
        return values

    def sheet_plan(self) -> list[list[GenerationRequest]]:
        """The sheet's requests (engine.sheet.sheet_requests); ValueError says what to correct."""
        prompts = [line.strip() for line in self.prompts_edit.toPlainText().splitlines() if line.strip()]
        return sheet_requests(self._template(), prompts, self.axis_box.currentData(), self.column_values())

    def generate_sheet(self) -> bool:
        if self._is_running():
            self._say("A generation is running: wait for it or cancel it (Esc).")
            return False
        try:
            plan = self.sheet_plan()
        except ValueError as exc:
            self._say(f"No sheet: {exc}.")
            return False
        axis = self.axis_box.currentData()
        values = [r.seed if axis == "seed" else r.guidance_scale for r in plan[0]]
        self._sheet = ([row[0].prompt for row in plan], axis, values)
        self._say(f"Generating {len(plan)} x {len(plan[0])} images…")
        self._run_requests([request for row in plan for request in row])
        return True

    def on_run_finished(self) -> None:
        """The window's run ended: show it as the sheet it was started for, else as the last batch."""
        if self._sheet is None:
            if self.isVisible():  # a closed dialog shows the last batch when it is opened again
                self.show_last_batch()
            return
        prompts, axis, values = self._sheet
        self._sheet = None
        ids = list(self._last_batch())
        cells = self._cells(ids + [None] * (len(prompts) * len(values) - len(ids)))
        rows = [cells[i * len(values) : (i + 1) * len(values)] for i in range(len(prompts))]
        made = sum(cell is not None for cell in cells)
        self._show(prompts, column_labels(axis, values), rows, f"Sheet: {made} of {len(cells)} images")

    def show_last_batch(self) -> None:
        """The last run's images as thumbnails, BATCH_COLUMNS to a row."""
        cells = self._cells(list(self._last_batch()))
        if not cells:
            self._show([], [], [], "No batch yet: generate one (Batch count sets its size).")
            return
        rows = [cells[i : i + BATCH_COLUMNS] for i in range(0, len(cells), BATCH_COLUMNS)]
        columns = [str(j + 1) for j in range(min(len(cells), BATCH_COLUMNS))]
        self._show([""] * len(rows), columns, rows, f"Last batch: {len(cells)} image(s); click one to open it")

    def _cells(self, case_ids: list[int | None]) -> list[Cell | None]:
        library = self._library()
        cells: list[Cell | None] = []
        for case_id in case_ids:
            cell = None
            if case_id is not None and library is not None:
                try:
                    case = library.get(case_id)
                    cell = Cell(case.id, library.image(case), f"case {case.id} · seed {case.seed}")
                except Exception as exc:  # a case deleted meanwhile, an unreadable PNG: an empty cell
                    self._say(f"Case {case_id} could not be shown: {exc}")
            cells.append(cell)
        return cells

    def _show(self, rows: list[str], columns: list[str], cells: list[list[Cell | None]], text: str) -> None:
        self.grid.set_cells(rows, columns, cells)
        first = next((c for row in cells for c in row if c is not None), None)
        self.footer = ""
        if first is not None and self._library() is not None:
            case = self._library().get(first.case_id)
            self.footer = (
                f"SYNTHETIC - {case.model_id} - {case.sampler}, {case.num_steps} steps, "
                f"guidance {case.guidance_scale:g}"
            )
        self._say(text)
        self.shown.emit()

    # the PNG -----------------------------------------------------------------------------------

    def sheet_image(self) -> np.ndarray:
        """The grid as the grid command's 8-bit contact sheet (engine.sheet.contact_sheet); ValueError when a
        cell is empty (a cancelled sheet) or nothing is shown."""
        cells = self.grid.cells
        if not cells or any(cell is None for row in cells for cell in row):
            raise ValueError("the sheet has empty cells (cancelled or not kept): generate it again to save it")
        rows = [
            (name, [imaging.to_uint8(cell.pixels.astype(np.float32) / 65535.0) for cell in row])
            for name, row in zip(self.grid.row_names, cells, strict=True)
        ]
        return contact_sheet(rows, self.grid.column_names, self.footer)

    def save_png(self, path: Path) -> Path | None:
        try:
            atomic_write_bytes(Path(path), imaging.encode_png(self.sheet_image()))
        except (OSError, ValueError) as exc:
            self._say(f"Sheet not saved: {exc}")
            return None
        self._say(f"Saved {path}")
        return Path(path)

    def choose_png(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save sheet", "sheet.png", "PNG (*.png)")
        if path:
            self.save_png(Path(path))

    def _say(self, text: str) -> None:
        self.status.setText(text)
        self.status.setToolTip(text)


def _icon(pixels: np.ndarray) -> QIcon:
    from desktop.widgets.viewer import thumbnail_pixels, to_qimage

    image = to_qimage(thumbnail_pixels(pixels, THUMB))
    return QIcon(
        QPixmap.fromImage(image).scaled(
            THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
        )
    )
