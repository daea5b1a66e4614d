"""Manifest lines: any bad line, however it is bad, is a ManifestError naming the file and line (never a crash)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.manifest import ManifestError, ManifestRecord, parse_record, read_manifest

GOOD = {
    "image": "a.png", "text": "Normal chest radiograph", "findings": {}, "patient_id": "p1",
    "view": "PA", "split": "train", "source": "test",
}  # fmt: skip
DEEP = "[" * 100_000 + "]" * 100_000


def test_deeply_nested_line_is_a_bad_line_not_a_recursion_error(tmp_path: Path) -> None:
    """json.loads raised RecursionError on a line nested 100,000 deep, past every ``except`` for bad JSON."""
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps(GOOD) + "\n" + '{"image": ' + DEEP + "}\n")
    with pytest.raises(ManifestError, match=r"manifest\.jsonl, line 2: not JSON \(nested too deeply\)"):
        read_manifest(manifest)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (DEEP, r"not JSON \(nested too deeply\)"),
        ("{ nope", r"not JSON \(Expecting property name enclosed in double quotes, column 3\)"),
        ("[1, 2]", "a record must be a JSON object"),
    ],
)
def test_parse_record_names_what_is_wrong(line: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_record(line)


def test_parse_record_reads_a_good_line() -> None:
    assert parse_record(json.dumps(GOOD)) == ManifestRecord.from_dict(GOOD)


def test_dataset_explorer_skips_a_deeply_nested_line(tmp_path: Path) -> None:
    """The dataset explorer promises a bad line is never fatal: it is listed by number and skipped."""
    from desktop.dataset import load_manifest

    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps(GOOD) + "\n" + DEEP + "\n" + "{ nope\n")
    loaded = load_manifest(manifest)
    assert len(loaded.records) == 1
    assert loaded.bad_lines[0] == "line 2: not JSON (nested too deeply)"
    assert loaded.bad_lines[1].startswith("line 3: not JSON (")


def test_age_band_is_read_and_checked_against_the_age(tmp_path: Path) -> None:
    """``age_band`` (issue 16 item 5): a child's film without an age (Kermany) or an adult's with its age
    redacted (Hannover) still says its band; an unknown band, or one the age contradicts, names the line."""
    banded = {**GOOD, "age_band": "child"}
    assert parse_record(json.dumps(banded)).age_band == "child"
    assert parse_record(json.dumps({**banded, "age": 4})).age == 4  # the age agrees with the band
    assert "age_band" not in ManifestRecord.from_dict(GOOD).to_json()  # written only when set
    assert json.loads(parse_record(json.dumps(banded)).to_json())["age_band"] == "child"
    manifest = tmp_path / "manifest.jsonl"
    for change, message in [
        ({"age_band": "toddler"}, r"line 2: age_band must be one of infant, child, adolescent, adult, older_adult"),
        ({"age_band": "adult", "age": 4}, r"line 2: age_band 'adult' disagrees with age 4 \(band 'child'\)"),
        ({"age_band": 3}, r"line 2: age_band must be one of"),
    ]:
        manifest.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, **change}) + "\n")
        with pytest.raises(ManifestError, match=message):
            read_manifest(manifest)
