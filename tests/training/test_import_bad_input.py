"""``cxr-studio import`` on bad input: one bad record is skipped by name, a file that cannot be read
at all is one line and exit 2, and a failed import leaves no PNG or manifest behind (issue 17, item 7).

Real files throughout: DICOM made from pydicom-data's RG1_UNCI.dcm with raw (unparsed) bad header
values, CSV and gzip files written here, and a real write failure from a file-size limit
(RLIMIT_FSIZE) on a subprocess.
"""

from __future__ import annotations

import csv
import gzip
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.manifest import read_manifest, resolve_image
from tests.training.test_importers import _command, pydicom_data_file

REPO = Path(__file__).resolve().parents[2]


def _dicom(path: Path, uid: str, **raw: tuple[str, bytes]) -> Path:
    """RG1_UNCI.dcm under a new SOP Instance UID, with header elements given as raw bytes
    (keyword -> (VR, value)), so that values pydicom would refuse to set reach the file."""
    import pydicom
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement

    ds = pydicom.dcmread(pydicom_data_file("RG1_UNCI.dcm"))
    ds.SOPInstanceUID = uid
    for keyword, (vr, value) in raw.items():
        tag = pydicom.tag.Tag(tag_for_keyword(keyword))
        ds[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


def test_same_relative_name_under_two_roots_gives_two_images(tmp_path: Path) -> None:
    first = _dicom(tmp_path / "r1" / "study" / "a.dcm", "1.2.826.0.1.3680043.8.498.1")
    second = _dicom(tmp_path / "r2" / "study" / "a.dcm", "1.2.826.0.1.3680043.8.498.2")
    out = tmp_path / "m.jsonl"
    assert _command(["import", "dicom", str(tmp_path / "r1"), str(tmp_path / "r2"), "--out", str(out)]) == 0
    records = read_manifest(out)
    images = {resolve_image(record, out) for record in records}
    assert len(records) == 2 and len(images) == 2 and all(image.is_file() for image in images)
    assert sorted(p.name for p in (tmp_path / "m_images").iterdir()) == sorted(image.name for image in images)
    assert first.is_file() and second.is_file()


def test_bad_dicom_headers_are_skipped_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    _dicom(folder / "a_good.dcm", "1.2.826.0.1.3680043.8.498.3")
    _dicom(folder / "b_frames.dcm", "1.2.826.0.1.3680043.8.498.4", NumberOfFrames=("IS", b"abc "))
    _dicom(
        folder / "c_window.dcm", "1.2.826.0.1.3680043.8.498.5",
        WindowCenter=("DS", b"100 "), WindowWidth=("DS", b"x "),
    )  # fmt: skip
    out = tmp_path / "m.jsonl"
    assert _command(["import", "dicom", str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "imported 1, skipped 2" in printed
    assert f"{folder / 'b_frames.dcm'}: NumberOfFrames is not a whole number ('abc')" in printed
    assert f"{folder / 'c_window.dcm'}: modality or VOI LUT / window unusable" in printed
    (record,) = read_manifest(out)
    assert [p.name for p in (tmp_path / "m_images").iterdir()] == [resolve_image(record, out).name]


def _limited(argv: list[str], limit: int) -> subprocess.CompletedProcess[str]:
    """``python -m training.data.cli ARGV`` with files limited to ``limit`` bytes: writes past it fail (EFBIG)."""

    def set_limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "training.data.cli", *argv], cwd=REPO, env=env, capture_output=True, text=True,
        preexec_fn=set_limit, timeout=300,
    )  # fmt: skip


def test_a_failed_write_leaves_no_image_and_keeps_the_earlier_import(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _dicom(folder / "a.dcm", "1.2.826.0.1.3680043.8.498.6")
    _dicom(folder / "b.dcm", "1.2.826.0.1.3680043.8.498.7")
    out = tmp_path / "out" / "m.jsonl"
    out.parent.mkdir()
    argv = ["import", "dicom", str(folder), "--out", str(out)]
    # 1. a first import cannot write its PNGs: one line naming the file, nothing left
    done = _limited(argv, 64 * 1024)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("cxr-studio import: error: ")
    assert ".png" in done.stderr and "a.dcm" in done.stderr and "Traceback" not in done.stderr
    assert list(out.parent.iterdir()) == []
    # 2. an import that works, then an --overwrite that fails: the first one's manifest and images stay
    assert _command([*argv, "--bits", "8"]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out" / "m_images").iterdir()}
    manifest = out.read_bytes()
    done = _limited([*argv, "--overwrite"], 64 * 1024)
    assert done.returncode == 2, done.stderr
    assert out.read_bytes() == manifest
    assert {p.name: p.read_bytes() for p in (tmp_path / "out" / "m_images").iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.jsonl", "m_images"]


# CSV ---------------------------------------------------------------------------------------------


def _image(folder: Path, name: str = "a.png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(folder / name), rng.integers(0, 255, (32, 32), dtype=np.uint8))


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as stream:
        csv.writer(stream).writerows([["path", "text", "patient_id", "age"], *rows])
    return path


@pytest.mark.parametrize("age", ["1e400", "-1e400", "nan", "-3", "131", "old"])
def test_csv_bad_age_skips_the_row_by_name(tmp_path: Path, age: str, capsys: pytest.CaptureFixture[str]) -> None:
    _image(tmp_path / "img")
    table = _write_csv(tmp_path / "cases.csv", [["img/a.png", "Normal.", "p1", "40"], ["img/a.png", "X.", "p2", age]])
    out = tmp_path / "m.jsonl"
    assert _command(["import", "csv", str(table), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "imported 1, skipped 1" in printed and f"{table}, line 3: age {age!r}" in printed
    (record,) = read_manifest(out)
    assert record.patient_id == "p1" and record.age == 40


def test_nih_age_that_overflows_is_left_out(tmp_path: Path) -> None:
    _image(tmp_path / "images", "00000001_000.png")
    table = tmp_path / "Data_Entry_2017.csv"
    table.write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"
        "00000001_000.png,No Finding,0,1,1e400,F,PA\n"
    )
    out = tmp_path / "m.jsonl"
    assert _command(["import", "nih", str(table), str(tmp_path / "images"), "--out", str(out)]) == 0
    (record,) = read_manifest(out)
    assert record.age is None


@pytest.mark.parametrize("case", ["long field", "truncated gz", "not utf-8"])
def test_a_table_that_cannot_be_read_is_one_line_exit_2(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _image(tmp_path / "img")
    rows = [["img/a.png", "Normal.", "p1", "40"], ["img/a.png", "Normal.", "p2", "41"], ["img/a.png", "N.", "p3", ""]]
    if case == "long field":
        rows[1][1] = "x" * 131_073
    table = _write_csv(tmp_path / "cases.csv", rows)
    expected = f"{table}, line 3"
    if case == "truncated gz":
        data = gzip.compress(table.read_bytes())
        table = tmp_path / "cases.csv.gz"
        table.write_bytes(data[: len(data) // 2])
        expected = str(table)
    elif case == "not utf-8":
        table.write_bytes(table.read_bytes().replace(b"p2", b"p\xe92"))
    out = tmp_path / "m.jsonl"
    assert _command(["import", "csv", str(table), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("cxr-studio import: error: csv: ")
    assert expected in captured.err, captured.err
    assert not out.exists()
