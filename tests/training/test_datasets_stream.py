"""Streaming manifests (issue 20 item 2): records are read one line at a time and written from any iterable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.manifest import ManifestError, ManifestRecord, iter_manifest, read_manifest, write_manifest


def _record(index: int) -> ManifestRecord:
    return ManifestRecord(
        image=f"images/{index}.png", text=f"caption {index}", findings={}, patient_id=f"P{index}",
        view="PA", source="nih", split="train",
    )  # fmt: skip


def test_iter_manifest_yields_records_before_it_reads_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(_record(1).to_json() + "\n\n" + _record(2).to_json() + "\n" + json.dumps({"image": 3}) + "\n")
    records = iter_manifest(path)
    assert next(records) == _record(1)
    assert next(records) == _record(2)  # the blank line 2 is skipped; line 4 not read yet
    with pytest.raises(ManifestError, match=r"m\.jsonl, line 4: missing key"):
        next(records)


def test_read_manifest_is_the_list_of_iter_manifest(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "m.jsonl", [_record(i) for i in range(5)])
    assert read_manifest(path) == list(iter_manifest(path)) == [_record(i) for i in range(5)]


def test_write_manifest_streams_a_generator_and_leaves_nothing_on_a_bad_record(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "m.jsonl", (_record(i) for i in range(3)))
    assert read_manifest(path) == [_record(i) for i in range(3)]

    def records():
        yield _record(7)
        yield ManifestRecord(image="b.png", text="x", findings={}, patient_id="P", view="SIDE", source="nih")

    with pytest.raises(ManifestError, match=r"record 2 \(b\.png\): view must be"):
        write_manifest(tmp_path / "m.jsonl", records())
    assert read_manifest(path) == [_record(i) for i in range(3)]  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]  # no temporary file left
