"""desktop.dataset, the explorer's Qt-free reading and filtering: manifests with bad lines, and images
(PNG, JPEG, DICOM through the engine's decoder) read to grey stored pixels. No QApplication is needed."""

from __future__ import annotations

import ast
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

import desktop.dataset
from desktop.dataset import (
    NO_LABEL,
    NOT_MENTIONED,
    ImageReadError,
    RecordFilter,
    finding_choices,
    findings_summary,
    load_manifest,
    read_record_image,
    value_choices,
)
from engine.manifest import ManifestRecord


def write_png16(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buffer = cv2.imencode(".png", pixels)
    assert ok
    path.write_bytes(buffer.tobytes())


# 1. reading ---------------------------------------------------------------------------------------------


def test_load_manifest_keeps_good_records_and_names_each_bad_line(tmp_path: Path) -> None:
    good = ManifestRecord(
        image="a.png", text="Normal chest.", findings={"no_finding": "present"}, patient_id="P1", view="PA",
        source="csv", split="train",
    ).to_json()  # fmt: skip
    path = tmp_path / "m.jsonl"
    path.write_bytes(
        "\n".join([
            good,
            '{"image": "b.png", "text": ',  # 2: cut off
            good.replace('"present"', '"maybe"'),  # 3: a status that does not exist
            "",  # blank lines are allowed
            good.replace('"split"', '"splt"'),  # 5: a misspelt key
            "[1, 2]",  # 6: not an object
        ]).encode() + b"\n\xff\xfe not utf-8\n" + good.encode() + b"\n"
    )  # fmt: skip
    loaded = load_manifest(path)
    assert len(loaded.records) == 2 and loaded.records[0].patient_id == "P1"
    numbers = [line.split(":")[0] for line in loaded.bad_lines]
    assert numbers == ["line 2", "line 3", "line 5", "line 6", "line 7"]
    assert "not JSON" in loaded.bad_lines[0] and "'maybe'" in loaded.bad_lines[1]
    assert "missing key(s) split" in loaded.bad_lines[2] and "not UTF-8" in loaded.bad_lines[4]
    with pytest.raises(FileNotFoundError):
        load_manifest(tmp_path / "nowhere.jsonl")


def test_read_record_image_gives_grey_stored_pixels_or_says_why_not(tmp_path: Path) -> None:
    colour = np.zeros((20, 30, 3), dtype=np.uint8)
    colour[..., 1] = 200  # pure green: OpenCV's grey weight for G is 0.587
    write_png16(tmp_path / "colour.png", colour)
    grey = read_record_image(tmp_path / "colour.png")
    assert grey.shape == (20, 30) and grey.dtype == np.uint8 and int(grey[0, 0]) == round(200 * 0.587)
    # a signed DICOM (pydicom's own CT test file) is stretched to uint16 in the same order
    from pydicom.data import get_testdata_file

    ct = Path(get_testdata_file("CT_small.dcm", download=False))
    stored = pydicom.dcmread(ct).pixel_array
    shown = read_record_image(ct)
    assert shown.dtype == np.uint16 and shown.min() == 0 and shown.max() == 65535
    np.testing.assert_array_equal(
        np.argsort(shown, axis=None, kind="stable"), np.argsort(stored, axis=None, kind="stable")
    )
    # a real MONOCHROME1 chest CR (0 = white): shown inverted, bone white, as a PACS viewer shows it
    cr = Path(get_testdata_file("RG1_UNCI.dcm", download=False))
    cr_stored = pydicom.dcmread(cr).pixel_array
    cr_shown = read_record_image(cr)
    assert cr_shown.dtype == np.uint16
    np.testing.assert_array_equal(cr_shown, (1 << 15) - 1 - cr_stored)  # BitsStored 15
    # pydicom's RGB test file: grey with the RGB weights (its pixels are RGB, not OpenCV's BGR)
    rgb_file = Path(get_testdata_file("SC_rgb.dcm", download=False))
    rgb = pydicom.dcmread(rgb_file).pixel_array
    expected = np.round(rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114)
    assert np.abs(read_record_image(rgb_file).astype(float) - expected).max() <= 1
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(ImageReadError, match="decode") as unreadable:
        read_record_image(tmp_path / "junk.png")
    assert not unreadable.value.missing
    with pytest.raises(ImageReadError, match="missing") as missing:
        read_record_image(tmp_path / "nowhere.png")
    assert missing.value.missing


# 2. filtering -------------------------------------------------------------------------------------------


def record(**fields: object) -> ManifestRecord:
    values: dict[str, object] = dict(
        image="images/IM_0001.png", text="Small left pleural effusion.", findings={"pleural_effusion": "present"},
        patient_id="P7", view="PA", source="csv", split="train",
    )  # fmt: skip
    values.update(fields)
    return ManifestRecord(**values)


def test_record_filter_fields_statuses_and_word_start_search() -> None:
    effusion = record()
    lateral = record(text="Bilateral opacities.", findings={"opacity": "uncertain"}, view="LATERAL", label="viral")
    assert RecordFilter().matches(effusion) and RecordFilter().matches(lateral)
    assert RecordFilter(finding="pleural_effusion").matches(effusion)
    assert not RecordFilter(finding="pleural_effusion", status="absent").matches(effusion)
    assert RecordFilter(finding="pleural_effusion", status=NOT_MENTIONED).matches(lateral)
    assert RecordFilter(label=NO_LABEL).matches(effusion) and not RecordFilter(label=NO_LABEL).matches(lateral)
    assert RecordFilter(label="viral", view="LATERAL").matches(lateral)
    assert not RecordFilter(view="LATERAL", split="test").matches(lateral)
    assert RecordFilter(text="EFFUS left").matches(effusion)  # every word, any case, at a word's start
    assert not RecordFilter(text="lateral").matches(lateral)  # "bilateral" does not start with it
    assert RecordFilter(text="im 0001").matches(effusion)  # "_" in a file name reads as a space
    assert findings_summary({"opacity": "uncertain", "pleural_effusion": "present", "edema": "absent"}) == (
        "Pleural effusion, Lung opacity / airspace disease?"
    )


def test_the_filter_choices_count_each_finding_status_and_each_value() -> None:
    records = [
        record(),
        record(findings={"pleural_effusion": "uncertain", "edema": "present"}, label="viral", split="val"),
        record(findings={"pleural_effusion": "present", "no_finding": "absent"}, label="viral"),
    ]
    assert finding_choices(records) == [
        ("no_finding", "No finding (normal study) (1 absent)"),
        ("pleural_effusion", "Pleural effusion (2 present, 1 uncertain)"),
        ("edema", "Pulmonary edema / congestion (1 present)"),
    ]  # vocabulary order, present before uncertain before absent
    assert value_choices(records, "split") == [("train", "train (2)"), ("val", "val (1)")]
    assert value_choices(records, "label") == [(NO_LABEL, "(no label) (1)"), ("viral", "viral (2)")]
    assert value_choices([], "view") == []


def test_the_dataset_module_imports_no_qt() -> None:
    """The reading and filtering stay usable without a display: no PySide6, no Qt widget module."""
    tree = ast.parse(Path(desktop.dataset.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in imported if name.split(".")[0] in ("PySide6", "desktop")}
