"""Model manager: the embedded default pack plus every pack dropped into the user models folder.

Each pack is listed by model id with its folder; selecting one shows its model card (training
data, licence and credit, what it knows, evaluation figures) read from ``model.json``. Listing
does not hash the weights (that happens when a pack is loaded), so a large folder lists at once;
a folder whose ``model.json`` cannot be read is listed with the reason and cannot be chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine import paths
from engine.pack import MANIFEST as MANIFEST_FILE
from engine.pack import PackError, PackManifest, card_supported_findings, read_manifest
from engine.pack import card_text as pack_card_text


@dataclass(frozen=True)
class PackEntry:
    """One listed pack: where it is, what it is called, its card text, or why it cannot be used."""

    path: Path
    title: str
    card_text: str
    error: str = ""
    embedded: bool = False
    supported: tuple[str, ...] | None = None  # the card's supported_findings (None: not listed)
    model_id: str = ""


def model_variable_problem() -> str | None:
    """When ``$CXR_STUDIO_MODEL`` is set to a path that does not exist, the message that names the
    variable as the command line does (the user may not know it is set); else None. A path that
    exists is tried as a pack: its errors are prefixed with ``CXR_STUDIO_MODEL=VALUE: ``."""
    override = paths.model_override()
    if override is None or Path(override).exists():
        return None
    return f"{paths.MODEL_VARIABLE}={override}: no model pack there (unset it for the embedded default model)"


def card_text(path: Path, manifest: PackManifest | None = None) -> str:
    """The card as the command line's ``info`` prints it (``engine.pack.card_text``), from model.json
    alone (read here unless given), so without the fingerprint: listing does not hash the weights."""
    return pack_card_text(manifest if manifest is not None else read_manifest(path), path)


def list_packs(default: Path | None = None, user_folder: Path | None = None) -> list[PackEntry]:
    """The default pack (when present) and the folders of the user models folder that hold a
    model.json, sorted by name; unreadable ones carry ``error``. Without ``default``, the default is
    ``$CXR_STUDIO_MODEL``'s pack when that is set: its title and error name the variable."""
    variable = paths.model_override() if default is None else None
    default = default if default is not None else paths.default_model_dir()
    user_folder = user_folder if user_folder is not None else paths.user_models_dir()
    candidates: list[tuple[Path, bool]] = []
    if (default / MANIFEST_FILE).is_file() or (variable and default.exists()):
        candidates.append((default, True))
    if user_folder.is_dir():
        candidates += [(p, False) for p in sorted(user_folder.iterdir()) if (p / MANIFEST_FILE).is_file()]
    entries = []
    for path, embedded in candidates:
        try:
            manifest = read_manifest(path)
            where = f" — from {paths.MODEL_VARIABLE}" if variable else " — embedded default"
            title = f"{manifest.model_id} ({manifest.precision})" + (where if embedded else "")
            supported = card_supported_findings(manifest.card)
            entries.append(
                PackEntry(path, title, card_text(path, manifest), "", embedded, supported, manifest.model_id)
            )
        except (PackError, OSError, ValueError) as exc:
            if embedded and variable:
                title, error = f"{paths.MODEL_VARIABLE} — cannot be used", f"{paths.MODEL_VARIABLE}={variable}: {exc}"
            else:
                title, error = f"{path.name} — cannot be used", str(exc)
            entries.append(PackEntry(path, title, "", error, embedded))
    return entries


class ModelManager(QDialog):
    """Lists the packs; "Use this model" calls ``on_choose(path)`` and closes."""

    def __init__(self, on_choose: Callable[[Path], None], current: Path | None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.resize(900, 560)
        self._on_choose = on_choose
        self.entries = list_packs()
        self.list = QListWidget()
        self.card = QPlainTextEdit(readOnly=True)
        self.folder_label = QLabel(
            f"Drop a model pack's folder into {paths.user_models_dir()} to add it here.", wordWrap=True
        )
        # a variable that names no pack hides the embedded default: say so (it is not in the list)
        problem = model_variable_problem()
        self.variable_label = QLabel(problem or "", wordWrap=True)
        self.variable_label.setStyleSheet("color: #c0392b")
        self.variable_label.setVisible(problem is not None)
        self.use_button = QPushButton("Use this model")
        self.use_button.clicked.connect(self.choose_selected)
        for entry in self.entries:
            item = QListWidgetItem(entry.title + ("" if current is None or entry.path != current else "  (loaded)"))
            item.setToolTip(str(entry.path))
            if entry.error:
                item.setForeground(Qt.GlobalColor.red)
            self.list.addItem(item)
        self.list.currentRowChanged.connect(self._show)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.addButton(self.use_button, QDialogButtonBox.ButtonRole.ActionRole)
        row = QHBoxLayout()
        row.addWidget(self.list, 2)
        row.addWidget(self.card, 3)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.variable_label)
        layout.addWidget(self.folder_label)
        layout.addWidget(buttons)
        if self.entries:
            self.list.setCurrentRow(0)
        else:
            self.card.setPlainText("No model pack found.")
            self.use_button.setEnabled(False)

    def _show(self, row: int) -> None:
        if not 0 <= row < len(self.entries):
            return
        entry = self.entries[row]
        self.card.setPlainText(entry.card_text or f"{entry.path}\n\nThis pack cannot be used: {entry.error}")
        self.use_button.setEnabled(not entry.error)

    def choose_selected(self) -> None:
        row = self.list.currentRow()
        if 0 <= row < len(self.entries) and not self.entries[row].error:
            self._on_choose(self.entries[row].path)
            self.accept()
