"""The library panel when the library file is damaged under it: a clear message naming the file, no exception
escaping a Qt slot."""

from __future__ import annotations

from pathlib import Path

from desktop.library import CaseLibrary
from desktop.widgets.library_view import LibraryPanel
from tests.desktop.test_library import fake_result


def damage_tags(library: CaseLibrary) -> None:
    """Overwrite the tags table's pages (the cases table stays sound, so the library still opens)."""
    pages = [r[0] for r in library._db.execute("SELECT rootpage FROM sqlite_master WHERE tbl_name = 'tags'")]
    library._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(library.db_path, "r+b") as stream:
        for page in pages:
            stream.seek((page - 1) * 4096)
            stream.write(b"\xab" * 4096)


def test_a_damaged_library_is_reported_by_the_panel_naming_the_file(qtbot, tmp_path: Path) -> None:
    with CaseLibrary(tmp_path / "lib") as library:
        case = library.add(fake_result(seed=1))
        library.set_tags(case.id, ["teaching"])
        damage_tags(library)
    with CaseLibrary(tmp_path / "lib") as library:
        errors: list[tuple[str, str]] = []
        panel = LibraryPanel(None)
        qtbot.addWidget(panel)
        panel.error.connect(lambda title, message: errors.append((title, message)))
        panel.library = library
        panel.setEnabled(True)
        panel.refresh()  # raised sqlite3.DatabaseError out of the slot before
        assert panel.count() == 0
        assert str(library.db_path) in panel.details.text() and "damaged" in panel.details.text()
        assert len(errors) == 1 and errors[0][0] == "Case library unreadable"
        assert str(library.db_path) in errors[0][1]
        panel.refresh()  # the same problem again: shown in the panel, not one more dialog
        assert len(errors) == 1
