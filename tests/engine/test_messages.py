"""Error messages name what failed: the file (decode, disk full, too large) or the variable."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest

import engine.fileio
from engine.cli.main import main
from engine.dicom.dataset import (
    StudyContext,
    SyntheticImageInfo,
    build_dataset,
    write_dicom,
)
from engine.dicom.reading import read_display_pixels, read_pixels


def _disk_full_for_temporary_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """os.write raises ENOSPC for the atomic writer's temporary files only (a full disk, as seen by it)."""
    real_write = os.write

    def write(fd: int, data) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(engine.fileio.os, "write", write)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell the writer's files apart")
@pytest.mark.parametrize("name", ["out.png", "out.dcm"])
def test_disk_full_names_the_output_file(tiny_pack_dir: Path, tmp_path: Path, monkeypatch, capsys, name: str) -> None:
    """'[Errno 28] No space left on device' named no file; the message now starts with the output."""
    _disk_full_for_temporary_files(monkeypatch)
    out = tmp_path / name
    code = main(["generate", "Normal chest radiograph", "--model", str(tiny_pack_dir), "--steps", "1", "--quiet",
                 "--out", str(out)])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"cxr-studio generate: error: {out}: No space left on device"]
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def test_atomic_writer_names_the_file_it_could_not_create(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "x.png"
    with pytest.raises(FileNotFoundError) as caught:
        engine.fileio.atomic_write_bytes(missing, b"x")
    assert caught.value.filename == str(missing)


def test_cxr_studio_model_variable_is_named(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CXR_STUDIO_MODEL", "/nonexistent")
    assert main(["info"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cxr-studio info: error: CXR_STUDIO_MODEL=/nonexistent: no model pack there "
                   "(unset it for the embedded default model, or pass --model PACK)"]  # fmt: skip
    monkeypatch.setenv("CXR_STUDIO_MODEL", str(tmp_path))
    assert main(["info"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"cxr-studio info: error: CXR_STUDIO_MODEL={tmp_path}: ")
    assert "model.json is missing" in err[0]


def test_cxr_studio_model_variable_that_works_is_used(tiny_pack_dir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CXR_STUDIO_MODEL", str(tiny_pack_dir))
    assert main(["info"]) == 0
    assert f"Folder: {tiny_pack_dir}" in capsys.readouterr().out


@pytest.mark.parametrize("reader", [read_pixels, read_display_pixels])
def test_undecodable_dicom_names_the_file(tmp_path: Path, reader) -> None:
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"not a DICOM file at all" * 10)
    with pytest.raises(ValueError, match=rf"{path}: not a readable DICOM image"):
        reader(path)


@pytest.mark.parametrize("reader", [read_pixels, read_display_pixels])
def test_too_large_dicom_names_the_file(tmp_path: Path, reader) -> None:
    """A header claiming 65535 x 65535 x 1000 frames: refused by name before anything is decoded."""
    ds = build_dataset(np.zeros((8, 8), np.float32), SyntheticImageInfo(prompt="x"), StudyContext.synthetic())
    path = write_dicom(ds, tmp_path / "huge.dcm")
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 1000
    ds.save_as(path)
    with pytest.raises(ValueError, match=rf"{path}: too large: 65535 x 65535 x 1000 pixels"):
        reader(path)


def test_dataset_explorer_names_a_bad_dicom_once(tmp_path: Path) -> None:
    from desktop.dataset import ImageReadError, read_record_image

    path = tmp_path / "broken.dcm"
    path.write_bytes(b"not a DICOM file at all" * 10)
    with pytest.raises(ImageReadError) as caught:
        read_record_image(path)
    assert str(caught.value).startswith(f"{path}: not a readable DICOM image (")
    assert str(caught.value).count(str(path)) == 1


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell the writer's files apart")
@pytest.mark.parametrize("suffix", [".png", ".dcm"])
def test_disk_full_in_a_batch_leaves_no_part_of_it(tiny_pack_dir: Path, tmp_path: Path, monkeypatch, capsys,
                                                    suffix: str) -> None:  # fmt: skip
    """The first image of a batch was kept when the second could not be written: nothing partial now."""
    real_write = os.write
    seen: list[str] = []

    def write(fd: int, data) -> int:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if name.endswith(".tmp"):
            seen.append(name)
            if f"out_01{suffix}" in name:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(engine.fileio.os, "write", write)
    code = main(["generate", "Normal chest radiograph", "--model", str(tiny_pack_dir), "--steps", "1", "--quiet",
                 "--batch", "2", "--out", str(tmp_path / f"out{suffix}")])  # fmt: skip
    assert code == 1
    assert any(f"out_00{suffix}" in name for name in seen)  # the first file was written, then removed
    assert capsys.readouterr().err.strip() == (
        f"cxr-studio generate: error: {tmp_path / f'out_01{suffix}'}: No space left on device"
    )
    assert list(tmp_path.iterdir()) == []
