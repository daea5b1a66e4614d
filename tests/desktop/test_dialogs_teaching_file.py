"""The teaching-file dialog on a real window: New folder… makes a folder (and says why not when it cannot),
a typed path that does not exist yet is accepted (the export makes it), a file is refused."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QDialog, QInputDialog

from desktop.widgets.dialogs import TeachingFileDialog


def new_folder(qtbot, dialog: TeachingFileDialog, name: str) -> None:
    """Click New folder…, type ``name`` into the dialog it opens and press OK, as a user would."""
    QTest.mouseClick(dialog.new_folder_button, Qt.MouseButton.LeftButton)

    def shown() -> list[QInputDialog]:
        return [child for child in dialog.findChildren(QInputDialog) if child.isVisible()]

    qtbot.waitUntil(lambda: len(shown()) == 1, timeout=5_000)
    ask = shown()[0]
    assert ask.windowModality() == Qt.WindowModality.WindowModal  # the main window goes on
    ask.setTextValue(name)
    ask.accept()


def test_new_folder_makes_the_folder_and_exports_into_it(qtbot, tmp_path: Path) -> None:
    dialog = TeachingFileDialog(3, folder=tmp_path)
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.new_folder_button.text() == "New folder…"
    new_folder(qtbot, dialog, "Week 3 – pneumonia")
    assert (tmp_path / "Week 3 – pneumonia").is_dir()
    assert dialog.folder() == tmp_path / "Week 3 – pneumonia" and not dialog.error_label.text()
    # a second new folder goes inside the one just made
    new_folder(qtbot, dialog, "cases")
    assert (tmp_path / "Week 3 – pneumonia" / "cases").is_dir()
    with qtbot.waitSignal(dialog.accepted, timeout=1_000):
        dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted


def test_a_bad_name_or_a_file_is_refused_with_a_message(qtbot, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file")
    dialog = TeachingFileDialog(1, folder=tmp_path / "not yet" / "there")
    qtbot.addWidget(dialog)
    dialog.show()
    new_folder(qtbot, dialog, "a/b")
    assert "not a folder name" in dialog.error_label.text() and not (tmp_path / "a").exists()
    dialog.folder_edit.setText(str(tmp_path))
    new_folder(qtbot, dialog, "taken")
    assert "is a file" in dialog.error_label.text() and dialog.folder() == tmp_path
    # a folder that does not exist yet is fine (the export makes it); a file or a relative path is not
    dialog.folder_edit.setText(str(tmp_path / "taken"))
    dialog.accept()
    assert dialog.isVisible() and "is a file" in dialog.error_label.text()
    dialog.folder_edit.setText("relative/folder")
    dialog.accept()
    assert dialog.isVisible() and "full path" in dialog.error_label.text()
    dialog.folder_edit.setText(str(tmp_path / "new" / "folder"))
    dialog.accept()
    assert not dialog.isVisible() and dialog.result() == QDialog.DialogCode.Accepted
