"""The one table of the viewer's keys and mouse buttons, and the Help > Keyboard shortcuts list.

The viewer's keyPressEvent looks keys up in :data:`VIEWER_KEYS` (so a key does exactly what the list says),
and the help list is :data:`VIEWER_KEYS` and :data:`MOUSE` followed by every shortcut of the window's actions
and QShortcuts, read from the window itself: neither can drift from what the keys do.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget


@dataclass(frozen=True)
class ViewerKey:
    """``keys`` (QKeySequence text) call the viewer's method ``method`` with ``args``."""

    keys: str
    what: str
    method: str
    args: tuple = ()


VIEWER_KEYS: tuple[ViewerKey, ...] = (
    *(
        ViewerKey(
            str(n),
            f"Window preset {n} (an opened file's own windows, then DEFAULT, LUNG, MEDIASTINUM, BONE, then saved)",
            "apply_preset_number",
            (n,),
        )
        for n in range(1, 10)
    ),
    ViewerKey("0", "Auto window (the image's DEFAULT preset)", "reset_window"),
    ViewerKey("R", "Reset the window (DEFAULT preset)", "reset_window"),
    ViewerKey("F", "Fit the image to the view", "fit"),
    ViewerKey("Ctrl+1", "Actual size (one image pixel per screen pixel)", "actual_size"),
    ViewerKey("+", "Zoom in", "zoom_in"),
    ViewerKey("=", "Zoom in", "zoom_in"),
    ViewerKey("-", "Zoom out", "zoom_out"),
    ViewerKey("I", "Invert the display", "toggle_invert"),
    ViewerKey("W", "Window/level tool (left-drag)", "set_tool", ("window",)),
    ViewerKey("M", "Ruler tool: length in mm (px when the pixel spacing is unknown)", "set_tool", ("ruler",)),
    ViewerKey("A", "Angle tool: three clicks, the second is the vertex", "set_tool", ("angle",)),
    ViewerKey("P", "Pixel probe tool: stored value and value in the image's units", "set_tool", ("probe",)),
    ViewerKey(
        "Esc", "Clear the measurements (while there are any; else Esc cancels a generation)", "clear_measurements"
    ),
)

MOUSE: tuple[tuple[str, str], ...] = (
    ("Left-drag", "Window/level (horizontal: width, vertical: centre), or the chosen measurement tool"),
    ("Middle-drag", "Pan"),
    ("Right-drag", "Zoom (up: in, down: out)"),
    ("Wheel", "Zoom about the cursor"),
    ("Double-click", "Fit"),
)


def viewer_key(sequence: QKeySequence) -> ViewerKey | None:
    """The table's entry for a pressed key (Shift is ignored where the table has no Shift: '+' is Shift+= on
    many layouts)."""
    text = sequence.toString(QKeySequence.SequenceFormat.PortableText)
    candidates = [text, text.replace("Shift+", "")]
    for entry in VIEWER_KEYS:
        if entry.keys in candidates:
            return entry
    return None


def tool_key(tool: str) -> str:
    """The key that picks a measurement tool (for tooltips)."""
    return next(entry.keys for entry in VIEWER_KEYS if entry.method == "set_tool" and entry.args == (tool,))


def shortcut_rows(window: QWidget) -> list[tuple[str, str]]:
    """(keys, what) for the viewer's keys and mouse, then every QAction and QShortcut shortcut in ``window``."""
    rows = [(entry.keys, f"Viewer: {entry.what}") for entry in VIEWER_KEYS]
    rows += [(button, f"Viewer: {what}") for button, what in MOUSE]
    seen: set[tuple[str, str]] = set()
    for action in window.findChildren(QAction):
        what = action.text().replace("&", "").rstrip("…").strip()
        for sequence in action.shortcuts():
            row = (sequence.toString(QKeySequence.SequenceFormat.NativeText), what)
            if row[0] and row not in seen:
                seen.add(row)
                rows.append(row)
    for shortcut in window.findChildren(QShortcut):
        what = shortcut.whatsThis() or shortcut.objectName() or "Shortcut"
        for sequence in shortcut.keys():  # noqa: SIM118 - a QShortcut, not a dict
            row = (sequence.toString(QKeySequence.SequenceFormat.NativeText), what)
            if row[0] and row not in seen:
                seen.add(row)
                rows.append(row)
    return rows


class ShortcutsDialog(QDialog):
    """Help > Keyboard shortcuts: a two-column table made by :func:`shortcut_rows`."""

    def __init__(self, window: QWidget) -> None:
        super().__init__(window)
        self.setWindowTitle("Keyboard shortcuts")
        self.rows = shortcut_rows(window)
        self.table = QTableWidget(len(self.rows), 2)
        self.table.setHorizontalHeaderLabels(["Keys", "Does"])
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        for i, (keys, what) in enumerate(self.rows):
            self.table.setItem(i, 0, QTableWidgetItem(keys))
            self.table.setItem(i, 1, QTableWidgetItem(what))
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setStretchLastSection(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(640, 560)

    def keys(self) -> list[str]:
        return [keys for keys, _what in self.rows]


def show_shortcuts(window: QWidget) -> ShortcutsDialog:
    """Help > Keyboard shortcuts (not modal), its list made afresh from the window each time."""
    dialog = getattr(window, "shortcuts_dialog", None)
    if dialog is not None:
        dialog.close()
        dialog.deleteLater()
    dialog = window.shortcuts_dialog = ShortcutsDialog(window)
    dialog.show()
    return dialog
