"""The case library without Qt: records, search, tags, notes, delete, crash safety, teaching file."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest

import desktop.library as library_module
from desktop.library import CaseLibrary, LibraryError
from engine.pipeline import GenerationRequest, GenerationResult


def fake_result(prompt: str = "Normal chest radiograph", seed: int = 3, value: float = 0.5) -> GenerationResult:
    rng = np.random.default_rng(seed)
    images = np.clip(rng.normal(value, 0.1, (1, 16, 16)), 0, 1).astype(np.float32)
    request = GenerationRequest(prompt, negative_prompt="lateral", num_steps=7, guidance_scale=3.5,
                                sampler="euler", seed=seed).validated()  # fmt: skip
    return GenerationResult(request, images, [seed], "model-x", "f" * 64, "CPUExecutionProvider", False, 7, (),
                            {"total_s": 0.1})  # fmt: skip


def test_default_location_is_the_user_data_dir(user_dirs: Path) -> None:
    with CaseLibrary() as library:
        assert library.root == user_dirs / "library"
        assert (user_dirs / "library" / "library.sqlite3").is_file()


def test_add_get_and_regenerate_request(tmp_path: Path) -> None:
    with CaseLibrary(tmp_path / "lib") as library:
        result = fake_result()
        case = library.add(result)
        assert case.prompt == "Normal chest radiograph" and case.negative_prompt == "lateral"
        assert (case.seed, case.num_steps, case.guidance_scale, case.sampler) == (3, 7, 3.5, "euler")
        assert case.model_fingerprint == "f" * 64 and case.width == case.height == 16
        np.testing.assert_array_equal(library.image(case), result.to_uint16()[0])
        assert case.request() == GenerationRequest("Normal chest radiograph", "lateral", 7, 3.5, "euler", 3)
    with CaseLibrary(tmp_path / "lib") as reopened:  # persisted
        assert [c.id for c in reopened.search()] == [case.id]


def test_search_tags_notes_delete(tmp_path: Path) -> None:
    with CaseLibrary(tmp_path / "lib") as library:
        a = library.add(fake_result("Right lower lobe consolidation", seed=1))
        b = library.add(fake_result("Left pleural effusion", seed=2))
        c = library.add(fake_result("Cardiomegaly 100%_wide", seed=3))
        assert [x.id for x in library.search()] == [c.id, b.id, a.id]
        assert [x.id for x in library.search("lobe CONSOLIDATION")] == [a.id]
        assert [x.id for x in library.search("100%_")] == [c.id]
        assert [x.id for x in library.search("2")] == [b.id]  # the seed
        library.set_tags(a.id, ["teaching", " lung ", ""])
        library.set_notes(b.id, "Meniscus sign")
        assert library.get(a.id).tags == ("lung", "teaching") and library.all_tags() == ["lung", "teaching"]
        assert [x.id for x in library.search(tag="teaching")] == [a.id]
        assert [x.id for x in library.search("meniscus")] == [b.id]
        assert [x.id for x in library.search("teach")] == [a.id]
        with pytest.raises(ValueError, match="comma"):
            library.set_tags(a.id, ["a,b"])
        with pytest.raises(KeyError):
            library.set_notes(999, "x")
        path = library.get(a.id).image_path
        library.delete([a.id])
        assert not path.exists() and len(library) == 2 and library.all_tags() == []


def test_a_failed_insert_leaves_no_image_behind(tmp_path: Path, monkeypatch) -> None:
    with CaseLibrary(tmp_path / "lib") as library:
        library.add(fake_result(seed=1))

        class Broken:
            def __init__(self, real):
                self.real = real

            def __getattr__(self, name):
                return getattr(self.real, name)

            def __enter__(self):
                return self.real.__enter__()

            def __exit__(self, *exc):
                return self.real.__exit__(*exc)

            def execute(self, sql, *args):
                if sql.startswith("INSERT INTO cases"):
                    raise sqlite3.OperationalError("database or disk is full")
                return self.real.execute(sql, *args)

        real = library._db
        library._db = Broken(real)
        with pytest.raises(LibraryError, match="disk is full"):
            library.add(fake_result(seed=2))
        library._db = real
        assert len(library) == 1
        assert len(list(library.images_dir.iterdir())) == 1


def test_a_failed_image_write_leaves_no_row(tmp_path: Path, monkeypatch) -> None:
    with CaseLibrary(tmp_path / "lib") as library:

        def full_disk(path, data):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(library_module, "atomic_write_bytes", full_disk)
        with pytest.raises(LibraryError, match="No space left"):
            library.add(fake_result())
        assert len(library) == 0 and list(library.images_dir.iterdir()) == []


def test_orphans_of_a_crash_are_removed_on_open_once_older_than_the_grace_period(tmp_path: Path) -> None:
    with CaseLibrary(tmp_path / "lib") as library:
        kept = library.add(fake_result())
        old = time.time() - library_module.ORPHAN_GRACE_S - 60
        for name in ("deadbeef.png", ".x.png.123.tmp"):  # a crash's leftovers, long ago
            (library.images_dir / name).write_bytes(b"half written")
            os.utime(library.images_dir / name, (old, old))
        # perhaps another process's image, written a moment ago, whose row is not committed yet
        (library.images_dir / "fresh.png").write_bytes(b"on its way")
    with CaseLibrary(tmp_path / "lib") as library:
        assert sorted(p.name for p in library.images_dir.iterdir()) == sorted([kept.image_path.name, "fresh.png"])
        assert library.orphan_grace_s == library_module.ORPHAN_GRACE_S == 600


def test_teaching_file(tmp_path: Path) -> None:
    with CaseLibrary(tmp_path / "lib") as library:
        a = library.add(fake_result("Right <lower> lobe & consolidation", seed=1))
        library.set_notes(a.id, "Air bronchograms")
        library.set_tags(a.id, ["pneumonia"])
        b = library.add(fake_result("Normal", seed=2))
        index = library.export_teaching_file([a.id, b.id], tmp_path / "out")
        text = index.read_text(encoding="utf-8")
        assert "Right &lt;lower&gt; lobe &amp; consolidation" in text and "Air bronchograms" in text
        assert "SYNTHETIC" in text and 'href="case002.dcm"' in text
        ds = pydicom.dcmread(tmp_path / "out" / "case001.dcm")
        assert ds.ConversionType == "SYN" and "Right <lower> lobe" in ds.ImageComments
        assert ds.StudyInstanceUID != pydicom.dcmread(tmp_path / "out" / "case002.dcm").StudyInstanceUID
        assert (tmp_path / "out" / "case001.png").is_file() and (tmp_path / "out" / "cases.json").is_file()
        with pytest.raises(ValueError, match="at least one"):
            library.export_teaching_file([], tmp_path / "none")


def test_unwritable_location_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LibraryError, match="writable"):
        CaseLibrary(blocker / "lib")


@contextlib.contextmanager
def read_only(*folders: Path) -> Iterator[None]:
    """Folders nobody can write in: mode 0555, or for root (whom modes do not stop) the immutable flag."""
    if os.geteuid() != 0:
        for folder in folders:
            folder.chmod(0o555)
        try:
            yield
        finally:
            for folder in folders:
                folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", *map(str, folders)], capture_output=True).returncode != 0:
        pytest.skip("running as root and chattr +i is not allowed here: no way to make a read-only folder")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, folders)], check=True)


def test_a_read_only_library_folder_is_a_library_error_naming_the_file(tmp_path: Path) -> None:
    with CaseLibrary(tmp_path / "lib") as library:
        library.add(fake_result())
        db_path = library.db_path
    with read_only(library.root, library.images_dir), pytest.raises(LibraryError) as info:
        CaseLibrary(tmp_path / "lib")
    message = str(info.value)
    assert str(db_path) in message and "writable" in message
    assert "\n" not in message


def test_a_file_that_is_not_a_database_is_a_library_error_naming_the_file(tmp_path: Path) -> None:
    db_path = tmp_path / "lib" / "library.sqlite3"
    db_path.parent.mkdir()
    db_path.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(LibraryError, match="not a case library") as info:
        CaseLibrary(tmp_path / "lib")
    assert str(db_path) in str(info.value)
    assert db_path.read_bytes() == b"this is not a database\n" * 200  # left as it was, for the user to move


def test_a_damaged_database_is_a_library_error_naming_the_file(tmp_path: Path) -> None:
    with CaseLibrary(tmp_path / "lib") as library:
        for seed in range(3):
            library.add(fake_result(seed=seed))
        db_path = library.db_path
    data = bytearray(db_path.read_bytes())
    data[4096:] = b"\xab" * (len(data) - 4096)  # every page after the header and the schema
    db_path.write_bytes(bytes(data))
    with pytest.raises(LibraryError, match="damaged") as info, CaseLibrary(tmp_path / "lib") as library:
        library.search()
    assert str(db_path) in str(info.value)


def test_reads_and_edits_of_a_damaged_table_raise_library_errors(tmp_path: Path) -> None:
    """The tags' pages damaged: the library opens (its cases table is sound), then every call that reads
    tags fails as a LibraryError naming the file, not as a raw sqlite3 error."""
    with CaseLibrary(tmp_path / "lib") as library:
        case = library.add(fake_result(seed=1))
        library.set_tags(case.id, ["teaching"])
        pages = [r[0] for r in library._db.execute("SELECT rootpage FROM sqlite_master WHERE tbl_name = 'tags'")]
        db_path = library.db_path
    with open(db_path, "r+b") as stream:
        for page in pages:
            stream.seek((page - 1) * 4096)
            stream.write(b"\xab" * 4096)
    with CaseLibrary(tmp_path / "lib") as library:
        for action in (
            library.search, library.all_tags, lambda: library.get(case.id), lambda: library.image(case.id),
            lambda: library.set_tags(case.id, ["a"]), lambda: library.delete(case.id),
        ):  # fmt: skip
            with pytest.raises(LibraryError, match=re.escape(f"{db_path} could not be")):
                action()
