"""``cxr-studio import hannover`` (Hannover Medical School's COVID-19 films) and ``import merge`` (several
sources in one manifest), on small fixtures made here; one test runs on the real data set when present."""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.findings.parse import parse_prompt
from engine.findings.reader import summarize
from engine.manifest import ManifestRecord, read_manifest, resolve_image, write_manifest
from training.data.captions import COVID_PHRASES, caption_rng, covid_caption
from training.data.cli import register_import
from training.data.importers.common import ImporterError
from training.data.importers.run import run_import

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("CXR_SHARED_DATA", REPO.parent / "shared" / "data"))
HANNOVER = SHARED / "hannover-covid19"
COLUMNS = ["patient_id", "image_id", "sex", "age", "admission_offset", "modality", "projection", "crp_val"]


def _png(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((24, 20), value, np.uint8))


def _fixture(root: Path) -> tuple[Path, Path]:
    """data.csv as the source writes it (age redacted: empty), five good rows and four bad ones."""
    images = root / "images"
    rows = [
        {"patient_id": "042f06a9", "image_id": "b343e657", "sex": "m", "projection": "ap"},
        {"patient_id": "042f06a9", "image_id": "c9280a30", "sex": "m", "projection": "ap"},
        {"patient_id": "024e7871", "image_id": "fff13f3a", "sex": "f", "projection": "pa"},
        {"patient_id": "0a1b2c3d", "image_id": "aa000001", "sex": "", "projection": "lateral"},
        {"patient_id": "0a1b2c3e", "image_id": "aa000002", "sex": "x", "projection": ""},
        {"patient_id": "0a1b2c3f", "image_id": "gone0001", "sex": "f", "projection": "ap"},  # no image
        {"patient_id": "0a1b2c40", "image_id": "broken01", "sex": "f", "projection": "ap"},  # unreadable
        {"patient_id": "", "image_id": "aa000003", "sex": "f", "projection": "ap"},  # no patient
        {"patient_id": "024e7871", "image_id": "fff13f3a", "sex": "f", "projection": "pa"},  # twice
    ]
    for row in rows:
        if row["image_id"] not in ("gone0001", "broken01"):
            _png(images / f"{row['image_id']}.png")
    (images / "broken01.png").write_bytes(b"not a png")
    table = root / "data.csv"
    with open(table, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return table, images


def _command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cxr-studio")
    register_import(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_hannover_rows_become_adult_covid_records_without_invented_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table, images = _fixture(tmp_path / "hannover")
    out = tmp_path / "m.jsonl"
    assert _command(["import", "hannover", str(table), str(images), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "imported 5, skipped 4:" in printed
    for name, reason in [
        ("gone0001", "image file missing"),
        ("broken01", "image unreadable"),
        ("data.csv, line 9", "no patient_id or image_id"),
        ("data.csv, line 10", "image fff13f3a listed twice"),
    ]:
        assert f"  {name}: {reason}" in printed
    records = {Path(r.image).stem: r for r in read_manifest(out)}
    assert set(records) == {"b343e657", "c9280a30", "fff13f3a", "aa000001", "aa000002"}
    for record in records.values():
        assert (record.source, record.label, record.age_band, record.age) == ("hannover", "COVID-19", "adult", None)
        assert record.findings == {}  # nothing is labelled per image: no finding, and no normal study either
        assert summarize(record.text) == {}  # the caption implies none either
        parsed = parse_prompt(record.text)
        assert parsed.age_band == "adult" and not parsed.findings
        assert resolve_image(record, out).is_file()
    first, pa, lateral, odd = records["b343e657"], records["fff13f3a"], records["aa000001"], records["aa000002"]
    assert (first.patient_id, first.view, first.sex) == ("042f06a9", "AP", "M")
    assert (pa.view, pa.sex) == ("PA", "F")
    assert parse_prompt(pa.text).sex == "female" and parse_prompt(pa.text).view == "PA"
    assert (lateral.view, lateral.sex, odd.view, odd.sex) == ("UNKNOWN", None, "UNKNOWN", None)
    assert parse_prompt(odd.text).view is None and parse_prompt(odd.text).sex is None
    assert first.split == records["c9280a30"].split  # one patient, one split


def test_covid_captions_round_trip_in_every_phrasing() -> None:
    """Each phrasing, with each view and sex: adult, the view and sex stated, and no finding read
    (COVID-19 is the patients' diagnosis, not a finding of the film: it must not read as pneumonia)."""
    for index in range(40):
        for view in ("AP", "PA", None):
            for sex in ("M", "F", None):
                caption = covid_caption(caption_rng(index, "x"), view=view, sex=sex)
                parsed = parse_prompt(caption.text)
                assert caption.findings == {} and summarize(caption.text) == {} and not parsed.findings
                assert parsed.age_band == "adult"
                assert parsed.sex == {"M": "male", "F": "female", None: None}[sex]
                assert parsed.view == view
                assert "COVID-19" in caption.text
    assert len(COVID_PHRASES) >= 2


def test_hannover_bad_arguments(tmp_path: Path) -> None:
    table, images = _fixture(tmp_path / "hannover")
    with pytest.raises(ImporterError, match=r"hannover: give data\.csv"):
        run_import("hannover", [images], tmp_path / "m.jsonl")
    with pytest.raises(ImporterError, match="hannover: give the image folder"):
        run_import("hannover", [table], tmp_path / "m.jsonl")
    (tmp_path / "other.csv").write_text("file,label\na.png,normal\n")
    with pytest.raises(ImporterError, match=r"hannover: .*other\.csv has no column\(s\) patient_id, image_id"):
        run_import("hannover", [tmp_path / "other.csv", images], tmp_path / "m.jsonl")
    assert not (tmp_path / "m.jsonl").exists()


@pytest.mark.needs_shared_data
def test_hannover_real_data_set_imports_whole_split_by_patient(tmp_path: Path) -> None:
    if not (HANNOVER / "data.csv").is_file():
        pytest.skip("needs ../shared/data/hannover-covid19 (not in a user's clone)")
    summary, result = run_import("hannover", [HANNOVER / "data.csv", HANNOVER / "images"], tmp_path / "m.jsonl")
    records = read_manifest(tmp_path / "m.jsonl")
    assert len(records) == 230 and not summary.skipped and not result.skipped_items
    splits: dict[str, set[str]] = {}
    for record in records:
        splits.setdefault(record.patient_id, set()).add(record.split)
    assert len(splits) == 63 and all(len(s) == 1 for s in splits.values())
    assert {next(iter(s)) for s in splits.values()} == {"train", "val", "test"}
    assert Counter(r.view for r in records) == Counter({"AP": 189, "PA": 41})
    assert {r.age_band for r in records} == {"adult"} and all(r.findings == {} for r in records)


# merge ----------------------------------------------------------------------------------------------


def _record(image: str, patient: str, split: str, source: str, **extra: object) -> ManifestRecord:
    return ManifestRecord(image, "Chest radiograph.", {}, patient, "AP", source, split, **extra)


def test_merge_keeps_each_sources_splits_and_repoints_the_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Manifests in other folders (image paths are relative to each) -> one manifest whose paths are
    right from its own folder; splits are kept as each source's import made them, never drawn again."""
    for folder, images in (("child", ["a.png", "b.png"]), ("adult", ["c.png"])):
        for name in images:
            _png(tmp_path / folder / "images" / name)
    child = write_manifest(
        tmp_path / "child" / "child.jsonl",
        [
            _record("images/a.png", "P1", "test", "pediatric", age_band="child"),
            _record("images/b.png", "P2", "train", "pediatric", age_band="child"),
        ],
    )
    adult = write_manifest(tmp_path / "adult" / "adult.jsonl", [_record("images/c.png", "H1", "val", "hannover")])
    (tmp_path / "runs").mkdir()
    out = tmp_path / "runs" / "all.jsonl"
    assert _command(["import", "merge", str(child), str(adult), "--out", str(out), "--seed", "5"]) == 0
    assert "3 images, 3 patients" in capsys.readouterr().out
    merged = read_manifest(out)
    assert [(Path(r.image).name, r.split, r.source, r.age_band) for r in merged] == [
        ("a.png", "test", "pediatric", "child"),
        ("b.png", "train", "pediatric", "child"),
        ("c.png", "val", "hannover", None),
    ]
    assert all(resolve_image(r, out).is_file() for r in merged)
    assert merged[0].image == "../child/images/a.png" or Path(merged[0].image).is_absolute()


def test_merge_refuses_a_patient_in_two_sources_or_two_splits(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    first = write_manifest(tmp_path / "one.jsonl", [_record("a.png", "P1", "train", "pediatric")])
    other_split = write_manifest(tmp_path / "two.jsonl", [_record("b.png", "P1", "test", "pediatric")])
    other_source = write_manifest(tmp_path / "three.jsonl", [_record("b.png", "P1", "train", "nih")])
    same_image = write_manifest(tmp_path / "four.jsonl", [_record("a.png", "P9", "train", "nih")])
    out = tmp_path / "all.jsonl"
    for second, message in [
        (other_split, r"merge: patient 'P1' is in split train in one\.jsonl and in test in two\.jsonl"),
        (other_source, r"merge: patient id 'P1' is in source pediatric \(one\.jsonl\) and nih \(three\.jsonl\)"),
        (same_image, r"merge: image .*a\.png is in one\.jsonl and in four\.jsonl"),
        (tmp_path / "nowhere.jsonl", r"merge: .*nowhere\.jsonl does not exist"),
    ]:
        with pytest.raises(ImporterError, match=message):
            run_import("merge", [first, second], out)
        assert not out.exists()
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "a.png"}) + "\n")
    with pytest.raises(ImporterError, match=r"merge: .*bad\.jsonl, line 1: missing key"):
        run_import("merge", [first, tmp_path / "bad.jsonl"], out)


def test_captions_state_a_manifest_age_band_where_no_age_is_given() -> None:
    """The band of a record without an age (Hannover: adult; Kermany: child) reaches the augmented
    captions and the header, and nothing beyond it (no age number)."""
    from training.data.caption_augment import augment_target, augmented_caption, round_trip_problems
    from training.data.captions import header

    adult = _record("a.png", "H1", "train", "csv", age_band="adult", sex="F")
    adult = ManifestRecord(**{**adult.__dict__, "findings": {"pneumonia": "present", "no_finding": "absent"}})
    target = augment_target(adult)
    assert (target.age, target.age_band, target.paediatric) == (None, "adult", False)
    for index in range(30):
        text = augmented_caption(adult, caption_rng(index, "a"))
        assert round_trip_problems(adult, text) == [], text
    assert header(view="PA", sex="F", age_band="adult") == "PA chest radiograph of an adult woman"
    assert header(view="AP", age_band="older_adult") == "AP chest radiograph of an elderly patient"
    assert header(view="AP", age_band="child") == "Paediatric AP chest radiograph"
    assert header(view="AP", age=40, age_band="adult") == "AP chest radiograph of a 40-year-old patient"
    child = ManifestRecord("b.png", "x", {"pneumonia": "present"}, "P1", "AP", "csv", "train", age_band="child")
    assert augment_target(child).age_band == "child" and augment_target(child).paediatric


def test_a_diffusion_run_trains_on_the_merged_sources(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """``train diffusion --data ALL.jsonl`` on three sources in three folders, merged: children with the
    band only, adults with an age, Hannover's films with no finding; record tokens and caption augmentation on."""
    from training.train_diffusion import DiffusionOptions, train_diffusion

    sources = {
        "pediatric": dict(findings={"pneumonia": "present", "no_finding": "absent"}, age_band="child"),
        "nih": dict(findings={"no_finding": "present", "pneumothorax": "absent"}, age=50, sex="M"),
        "hannover": dict(findings={}, age_band="adult", sex="F"),
    }
    manifests = []
    for source, fields in sources.items():
        records = []
        for i in range(4):
            _png(tmp_path / source / f"{i}.png", 60 + 30 * i)
            split = "val" if i == 3 else "train"
            records.append(ManifestRecord(f"{i}.png", f"{source} chest radiograph", patient_id=f"{source}-{i}",
                                          view="AP", source=source, split=split, **fields))  # fmt: skip
        manifests.append(write_manifest(tmp_path / source / "m.jsonl", records))
    merged = tmp_path / "all.jsonl"
    run_import("merge", manifests, merged)
    messages: list[str] = []
    options = DiffusionOptions(
        data=str(merged), out=str(tmp_path / "run"), vae=str(tiny_checkpoint), steps=2, batch_size=4,
        checkpoint_every=2, log_every=1, quiet=True, workers=1, caption_augment=0.5,
    )  # fmt: skip
    result = train_diffusion(options, log=messages.append)
    assert result.finished and result.step == 2
    assert any("cached 9 training" in m for m in messages), messages
