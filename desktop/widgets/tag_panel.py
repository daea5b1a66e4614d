"""The DICOM tag panel (View > DICOM tags): tag, name, VR and value of every element of the shown image's
dataset, sequences as nested rows, with a filter box, as PACS viewers list them.

For an opened file it is the file's own dataset; for a generated image the dataset the DICOM export would
write with the current export settings (MainWindow.current_dataset: fresh UIDs each time it is built).
"""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QLabel, QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

MAX_VALUE_CHARS = 200  # a long ImageComments is cut in the list (its tooltip has it whole, up to 4,000)


def element_value(element) -> str:
    """An element's value as one line: bytes as their length, long text cut."""
    if element.VR == "SQ":
        return f"{len(element.value)} item(s)"
    value = element.value
    if isinstance(value, bytes | bytearray):
        return f"({len(value):,} bytes)"
    text = "\\".join(str(v) for v in value) if element.VM > 1 else str(value if value is not None else "")
    return text.replace("\r", " ").replace("\n", " ")


class TagPanel(QWidget):
    """A tree of (tag, name, VR, value) rows and a filter box (any column, any case)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter tags: a name, a tag number, a VR or a value")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self.apply_filter)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Tag", "Name", "VR", "Value"])
        self.tree.setUniformRowHeights(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.filter_edit)
        layout.addWidget(self.tree, 1)

    def set_dataset(self, dataset, title: str = "") -> None:
        """Show ``dataset`` (a pydicom Dataset; None empties the list)."""
        self.title.setText(title)
        self.tree.clear()
        if dataset is not None:
            file_meta = getattr(dataset, "file_meta", None)
            if file_meta is not None:
                self._add(self.tree.invisibleRootItem(), file_meta)
            self._add(self.tree.invisibleRootItem(), dataset)
        for column in range(3):
            self.tree.resizeColumnToContents(column)
        self.apply_filter(self.filter_edit.text())

    def _add(self, parent: QTreeWidgetItem, dataset) -> None:
        for element in dataset:
            tag = f"({element.tag.group:04X},{element.tag.element:04X})"
            value = element_value(element)
            shown = value if len(value) <= MAX_VALUE_CHARS else value[: MAX_VALUE_CHARS - 1] + "…"
            item = QTreeWidgetItem(parent, [tag, element.name, element.VR, shown])
            item.setToolTip(3, value[:4000])
            if element.VR == "SQ":
                for number, child in enumerate(element.value, 1):
                    node = QTreeWidgetItem(item, ["", f"Item {number}", "", ""])
                    self._add(node, child)

    def rows(self, *, visible_only: bool = True) -> list[tuple[str, str, str, str]]:
        """The (tag, name, VR, value) of each row, depth first (the filter's hidden rows left out)."""
        found: list[tuple[str, str, str, str]] = []

        def walk(item: QTreeWidgetItem) -> None:
            for i in range(item.childCount()):
                child = item.child(i)
                if visible_only and child.isHidden():
                    continue
                if child.text(0):
                    found.append(tuple(child.text(c) for c in range(4)))
                walk(child)

        walk(self.tree.invisibleRootItem())
        return found

    def apply_filter(self, text: str) -> None:
        """Show the rows with ``text`` in any column (and the sequences holding them); "" shows all."""
        needle = text.strip().lower()

        def visit(item: QTreeWidgetItem) -> bool:
            own = not needle or any(needle in item.text(c).lower() for c in range(4))
            shown_child = False
            for i in range(item.childCount()):
                shown_child = visit(item.child(i)) or shown_child
            for i in range(item.childCount()):  # a matching sequence shows all it holds
                if own and needle:
                    _show_all(item.child(i))
            item.setHidden(not (own or shown_child))
            return own or shown_child

        root = self.tree.invisibleRootItem()
        for i in range(root.childCount()):
            visit(root.child(i))
        if needle:
            self.tree.expandAll()


def _show_all(item: QTreeWidgetItem) -> None:
    item.setHidden(False)
    for i in range(item.childCount()):
        _show_all(item.child(i))


class TagDialog(QDialog):
    """The tag panel in a window of its own (not modal: the viewer stays usable)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("DICOM tags")
        self.panel = TagPanel(self)
        layout = QVBoxLayout(self)
        layout.addWidget(self.panel)
        self.resize(760, 640)


def show_tags(window) -> TagDialog | None:
    """View > DICOM tags for the main window's shown image: an opened file's own dataset, else the dataset the
    DICOM export would write for the current generated image (None, after the window's error, when there is
    no image)."""
    opened = window.viewer.opened
    if opened is not None and opened.dataset is not None:
        dataset, title = opened.dataset, f"{opened.path} (the file's own tags)"
    elif opened is not None:
        window.show_error("No DICOM tags", f"{opened.path}: a PNG file has no DICOM tags.")
        return None
    else:
        dataset = window.current_dataset()
        if dataset is None:
            return None
        title = "What the DICOM export would write for this image (new UIDs on each export)"
    dialog = getattr(window, "tag_dialog", None)
    if dialog is None:
        dialog = window.tag_dialog = TagDialog(window)
    dialog.panel.set_dataset(dataset, title)
    dialog.show()
    dialog.raise_()
    return dialog
