"""training.data importers, manifest and the ``import`` command, on the real files under ../shared/data.

Each test that needs a data set skips with a reason when it is absent (a user's clone has none);
the DICOM tests use RG1_UNCI.dcm from the pydicom-data package.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.findings.reader import summarize
from engine.findings.vocabulary import ABSENT, NO_FINDING, PRESENT
from engine.manifest import (
    ManifestError,
    ManifestRecord,
    read_manifest,
    resolve_image,
    split_of,
    write_manifest,
)
from training.data.cli import register_import
from training.data.importers.common import ImporterError, ImportOptions
from training.data.importers.iu_xray import iu_mesh_findings, read_iu_reports, symmetry_score
from training.data.importers.pediatric import kermany_label, kermany_patient_id
from training.data.importers.run import run_import

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("CXR_SHARED_DATA", REPO.parent / "shared" / "data"))
PEDIATRIC = SHARED / "pediatric-cxr"
FIXTURES = REPO / "tests" / "fixtures"
# the committed fixture (12 images of the same layout) stands in where the full set is absent
PEDIATRIC_SAMPLE = PEDIATRIC if (PEDIATRIC / "labels.csv").is_file() else FIXTURES / "pediatric-cxr"
NIH = SHARED / "nih-chestxray14"
IU_TGZ = SHARED / "iu-xray" / "NLMCXR_reports.tgz"

pytestmark = pytest.mark.needs_shared_data


def needs(path: Path, what: str) -> None:
    if not path.exists():
        pytest.skip(f"needs ../shared/data/{what} (not in a user's clone)")


def pydicom_data_file(name: str) -> Path:
    data = pytest.importorskip("pydicom.data", reason="needs the pydicom-data package")
    try:
        return Path(data.get_testdata_file(name))
    except Exception:  # pydicom raises differently across versions when the data store lacks it
        pytest.skip(f"needs {name} from the pydicom-data package")


def pediatric_rows() -> list[dict[str, str]]:
    with open(PEDIATRIC_SAMPLE / "labels.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def one_of_each_label(count: int = 2) -> list[dict[str, str]]:
    chosen: list[dict[str, str]] = []
    per_label: Counter[str] = Counter()
    for row in pediatric_rows():
        if per_label[row["label"]] < count:
            chosen.append(row)
            per_label[row["label"]] += 1
    return chosen


def by_image(manifest: Path) -> dict[str, ManifestRecord]:
    return {Path(record.image).name: record for record in read_manifest(manifest)}


# 1. manifest ---------------------------------------------------------------------------------------


def test_manifest_round_trip_relative_paths_and_validation(tmp_path: Path) -> None:
    image = tmp_path / "images" / "a.png"
    record = ManifestRecord(
        image="images/a.png",
        text="PA chest radiograph: cardiomegaly.",
        findings={"cardiomegaly": PRESENT, NO_FINDING: ABSENT},
        patient_id="P1",
        view="PA",
        source="csv",
        split="train",
        age=61,
        sex="F",
    )
    manifest = write_manifest(tmp_path / "m.jsonl", [record])
    assert read_manifest(manifest) == [record]
    assert resolve_image(record, manifest) == image
    line = json.loads(manifest.read_text().splitlines()[0])
    assert "label" not in line and line["age"] == 61  # optional keys only when set

    for change, message in [
        ({"shape": "square"}, "unknown key"),
        ({"findings": {"cardiomegaly": "maybe"}}, "status"),
        ({"findings": {"tumour": "present"}}, "unknown finding"),
        ({"split": "holdout"}, "split"),
        ({"view": "OBLIQUE"}, "view"),
        ({"age": 400}, "age"),
    ]:
        bad = {**json.loads(record.to_json()), **change}
        (tmp_path / "bad.jsonl").write_text(json.dumps(bad) + "\n")
        with pytest.raises(ManifestError, match=message):
            read_manifest(tmp_path / "bad.jsonl")


def test_split_of_is_a_deterministic_hash_with_the_asked_fractions() -> None:
    splits = Counter(split_of(f"P{i}", seed=7, val_frac=0.2, test_frac=0.1) for i in range(20000))
    assert abs(splits["val"] / 20000 - 0.2) < 0.015 and abs(splits["test"] / 20000 - 0.1) < 0.015
    assert split_of("P1", seed=7, val_frac=0.2, test_frac=0.1) == split_of("P1", seed=7, val_frac=0.2, test_frac=0.1)
    assert {split_of("P1", seed=s, val_frac=0.3, test_frac=0.3) for s in range(20)} == {"train", "val", "test"}


# 2. paediatric ---------------------------------------------------------------------------------------


def test_kermany_names() -> None:
    assert kermany_patient_id("person1004_bacteria_2935.jpeg") == "P1004"
    assert kermany_patient_id("IM-0115-0001.jpeg") == "N-0115"
    assert kermany_patient_id("NORMAL2-IM-0041-0001.jpeg") == "N2-0041"
    assert kermany_label("person1_virus_6.jpeg", "PNEUMONIA") == "viral_pneumonia"
    assert kermany_label("person1_bacteria_1.jpeg", "PNEUMONIA") == "bacterial_pneumonia"
    assert kermany_label("IM-0115-0001.jpeg", "NORMAL") == "normal"


def test_pediatric_labels_csv_layout_counts_what_it_skips(tmp_path: Path) -> None:
    # 1. a small copy of the real layout, with one of each kind of trouble
    rows = one_of_each_label()
    root = tmp_path / "pediatric"
    (root / "images").mkdir(parents=True)
    for row in rows:
        shutil.copy(PEDIATRIC_SAMPLE / "images" / row["file"], root / "images" / row["file"])
    (root / "images" / "person9_bacteria_1.jpeg").write_bytes(b"not a jpeg")
    extra = [
        {"file": "person9_bacteria_1.jpeg", "label": "bacterial_pneumonia", "patient_id": "P9"},
        {"file": "gone.jpeg", "label": "normal", "patient_id": "N-9999"},
        {"file": rows[0]["file"], "label": "covid", "patient_id": "X"},
        {"file": "", "label": "normal", "patient_id": "N-1"},
    ]
    with open(root / "labels.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["file", "label", "patient_id"])
        writer.writeheader()
        writer.writerows(rows + extra)

    # 2. import
    summary, _ = run_import("pediatric", [root], tmp_path / "m.jsonl")
    assert summary.skipped == Counter(
        {
            "image unreadable": 1,
            "image file missing": 1,
            "unknown label 'covid'": 1,
            "malformed row (no file or label)": 1,
        }
    )
    records = by_image(tmp_path / "m.jsonl")
    assert len(records) == len(rows)
    for row in rows:
        record = records[row["file"]]
        assert record.patient_id == row["patient_id"] and record.label == row["label"]
        assert record.view == "AP" and record.source == "pediatric"
        assert record.text.startswith("Paediatric AP chest radiograph: ")
        assert all(summarize(record.text).get(k) == v for k, v in record.findings.items())
        assert (tmp_path / record.image).is_file()
    assert "skipped: 4" in summary.format()


def test_pediatric_kaggle_layout(tmp_path: Path) -> None:
    rows = {row["label"]: row for row in one_of_each_label(1)}
    tree = {
        "chest_xray/train/NORMAL/IM-0005-0001.jpeg": rows["normal"],
        "chest_xray/train/NORMAL/NORMAL2-IM-0041-0001.jpeg": rows["normal"],
        "chest_xray/train/PNEUMONIA/person1_bacteria_1.jpeg": rows["bacterial_pneumonia"],
        "chest_xray/train/PNEUMONIA/person1_virus_6.jpeg": rows["viral_pneumonia"],
        "chest_xray/test/PNEUMONIA/person3_bacteria_10.jpeg": rows["bacterial_pneumonia"],
        "chest_xray/chest_xray/train/NORMAL/IM-0005-0001.jpeg": rows["normal"],  # the archive's second copy
        "__MACOSX/chest_xray/train/NORMAL/._IM-0005-0001.jpeg": rows["normal"],
    }
    for relative, row in tree.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PEDIATRIC_SAMPLE / "images" / row["file"], tmp_path / relative)

    summary, _ = run_import("pediatric", [tmp_path], tmp_path / "m.jsonl")
    records = by_image(tmp_path / "m.jsonl")
    assert summary.skipped == Counter({"duplicate file name": 1})
    assert {name: (r.label, r.patient_id) for name, r in records.items()} == {
        "IM-0005-0001.jpeg": ("normal", "N-0005"),
        "NORMAL2-IM-0041-0001.jpeg": ("normal", "N2-0041"),
        "person1_bacteria_1.jpeg": ("bacterial_pneumonia", "P1"),
        "person1_virus_6.jpeg": ("viral_pneumonia", "P1"),
        "person3_bacteria_10.jpeg": ("bacterial_pneumonia", "P3"),
    }
    assert records["person1_virus_6.jpeg"].findings["viral_pneumonia"] == PRESENT
    assert records["person1_bacteria_1.jpeg"].split == records["person1_virus_6.jpeg"].split


def test_pediatric_committed_fixture_imports_whole(tmp_path: Path) -> None:
    """The 12 committed images (tests/fixtures): every one imported, labels and patients kept."""
    root = FIXTURES / "pediatric-cxr"
    summary, _ = run_import("pediatric", [root], tmp_path / "m.jsonl", val_frac=0.25, test_frac=0.25)
    records = by_image(tmp_path / "m.jsonl")
    with open(root / "labels.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert not summary.skipped and len(records) == len(rows) == 12
    assert {name: r.label for name, r in records.items()} == {row["file"]: row["label"] for row in rows}
    # Kermany's children (one to five) have no per-image age: the band says child, so training's record has it
    assert {(r.age, r.age_band) for r in records.values()} == {(None, "child")}
    assert Counter(r.split for r in records.values())["train"] >= 4


def test_pediatric_real_set_splits_by_patient(tmp_path: Path) -> None:
    needs(PEDIATRIC / "labels.csv", "pediatric-cxr")
    options = ImportOptions(seed=3, verify_images=False)
    summary, _ = run_import("pediatric", [PEDIATRIC], tmp_path / "m.jsonl", options, val_frac=0.15, test_frac=0.15)
    records = read_manifest(tmp_path / "m.jsonl")
    assert len(records) == 5277 and not summary.skipped
    split_of_patient: dict[str, set[str]] = {}
    for record in records:
        split_of_patient.setdefault(record.patient_id, set()).add(record.split)
    assert all(len(splits) == 1 for splits in split_of_patient.values())
    patients = Counter(next(iter(s)) for s in split_of_patient.values())
    total = sum(patients.values())
    assert abs(patients["val"] / total - 0.15) < 0.03 and abs(patients["test"] / total - 0.15) < 0.03
    # the same seed gives the same manifest, byte for byte
    run_import("pediatric", [PEDIATRIC], tmp_path / "again.jsonl", options, val_frac=0.15, test_frac=0.15)
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "m.jsonl").read_bytes()


# 3. NIH ---------------------------------------------------------------------------------------------


def test_nih_data_entry_rows_whose_image_is_there(tmp_path: Path) -> None:
    needs(NIH / "Data_Entry_2017_v2020.csv.gz", "nih-chestxray14")
    with open(NIH / "images.csv", newline="") as stream:
        listed = list(csv.DictReader(stream))[:6]
    folder = tmp_path / "images_001" / "images"
    folder.mkdir(parents=True)
    for row in listed[:5]:
        shutil.copy(NIH / "images" / row["Image Index"], folder)
    (folder / listed[5]["Image Index"]).write_bytes(b"\x89PNG broken")

    summary, _ = run_import("nih", [NIH / "Data_Entry_2017_v2020.csv.gz", tmp_path], tmp_path / "m.jsonl")
    assert summary.skipped == Counter({"image unreadable": 1})
    assert summary.notes["table rows without an image in the folders"] == 112120 - 6
    records = by_image(tmp_path / "m.jsonl")
    assert len(records) == 5
    for row in listed[:5]:
        record = records[row["Image Index"]]
        assert record.age == int(row["Patient Age"]) and record.sex == row["Patient Gender"]
        assert record.view == row["View Position"] and record.label == row["Finding Labels"]
        assert record.patient_id == "NIH-" + row["Image Index"].split("_")[0]
        assert record.text.startswith(f"{row['View Position']} chest radiograph of a")
        assert all(summarize(record.text).get(k) == v for k, v in record.findings.items())


def test_nih_malformed_rows_are_counted(tmp_path: Path) -> None:
    needs(NIH / "images", "nih-chestxray14")
    names = sorted(p.name for p in (NIH / "images").glob("*.png"))[:4]
    table = tmp_path / "Data_Entry_2017.csv.gz"
    with gzip.open(table, "wt", newline="") as stream:
        stream.write("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n")
        stream.write(f"{names[0]},Cardiomegaly|Effusion,0,75,412,F,PA\n")  # NIH's own impossible ages exist
        stream.write(f"{names[1]},Tumour,0,76,50,M,PA\n")
        stream.write(f"{names[2]},No Finding,0,77\n")
        stream.write(f"{names[3]},No Finding,0,78,40,M,AP\n")
        stream.write(f"{names[3]},No Finding,0,78,40,M,AP\n")
    summary, _ = run_import("nih", [table, NIH / "images"], tmp_path / "m.jsonl")
    assert summary.skipped == Counter({"unknown finding label": 1, "malformed row": 1, "duplicate row": 1})
    assert summary.notes["implausible age left out"] == 1
    records = by_image(tmp_path / "m.jsonl")
    assert records[names[0]].age is None and records[names[0]].findings["pleural_effusion"] == PRESENT
    assert records[names[3]].findings[NO_FINDING] == PRESENT and records[names[3]].view == "AP"


# 4. IU X-ray ----------------------------------------------------------------------------------------


def _frontal_like(size: int = 256) -> np.ndarray:
    """Two dark lungs either side of a bright spine: left-right symmetric."""
    y, x = np.mgrid[0:size, 0:size] / size
    lungs = np.exp(-(((x - 0.3) / 0.12) ** 2 + ((y - 0.5) / 0.3) ** 2)) + np.exp(
        -(((x - 0.7) / 0.12) ** 2 + ((y - 0.5) / 0.3) ** 2)
    )
    return (255 * (0.9 - 0.7 * lungs)).clip(0, 255).astype(np.uint8)


def _lateral_like(size: int = 256) -> np.ndarray:
    """One lung field and a spine at one side: not symmetric."""
    y, x = np.mgrid[0:size, 0:size] / size
    field = np.exp(-(((x - 0.35) / 0.2) ** 2 + ((y - 0.5) / 0.35) ** 2))
    return (255 * (0.6 - 0.5 * field + 0.4 * x)).clip(0, 255).astype(np.uint8)


def test_symmetry_score_tells_the_synthetic_views_apart() -> None:
    assert symmetry_score(_frontal_like()) > 0.9 > 0.3 > symmetry_score(_lateral_like())


def test_iu_xray_real_reports_with_synthesised_images(tmp_path: Path) -> None:
    needs(IU_TGZ, "iu-xray")
    reports = [r for r in read_iu_reports(IU_TGZ) if len(r.image_ids) == 2 and r.text][:4]
    folder = tmp_path / "NLMCXR_png"
    folder.mkdir()
    for report in reports:
        frontal, lateral = report.image_ids
        cv2.imwrite(str(folder / f"{frontal}.png"), _frontal_like())
        cv2.imwrite(str(folder / f"{lateral}.png"), _lateral_like())

    # 1. frontal images only, by default
    summary, _ = run_import("iu-xray", [IU_TGZ, folder], tmp_path / "m.jsonl")
    records = {record.patient_id: record for record in read_manifest(tmp_path / "m.jsonl")}
    assert set(records) == {r.uid for r in reports}
    assert summary.skipped["lateral view (use --include-lateral)"] == 4
    assert summary.skipped["image file missing"] > 7000  # the rest of Open-i is not in this folder
    for report in reports:
        record = records[report.uid]
        assert Path(record.image).stem == report.image_ids[0] and record.view == "FRONTAL"
        assert "XXXX" not in record.text and record.text == report.text
        assert record.label == "; ".join(report.mesh_major)
        assert record.findings == summarize(report.text)

    # 2. laterals too; and views from a projections file (Kaggle's naming) win over the guess
    run_import("iu-xray", [IU_TGZ, folder], tmp_path / "all.jsonl", ImportOptions(include_lateral=True))
    assert Counter(r.view for r in read_manifest(tmp_path / "all.jsonl")) == {"FRONTAL": 4, "LATERAL": 4}
    projections = tmp_path / "indiana_projections.csv"
    with open(projections, "w", newline="") as stream:
        stream.write("uid,filename,projection\n")
        for report in reports:
            number = report.uid.removeprefix("CXR")
            for image_id, view in zip(report.image_ids, ("Lateral", "Frontal"), strict=True):
                stream.write(f"{number},{number}_{image_id.split('_')[-1]}.dcm.png,{view}\n")
    run_import("iu-xray", [IU_TGZ, folder], tmp_path / "p.jsonl", ImportOptions(projections=projections))
    assert {Path(r.image).stem for r in read_manifest(tmp_path / "p.jsonl")} == {r.image_ids[1] for r in reports}


def test_iu_mesh_terms_to_findings() -> None:
    assert iu_mesh_findings(["Cardiomegaly/mild", "Pulmonary Atelectasis/base/left", "normal"]) == {
        "cardiomegaly",
        "atelectasis",
        "no_finding",
    }
    assert iu_mesh_findings(["Cardiac Shadow/enlarged", "Thickening/pleura/apex", "Lung/hypoinflation"]) == {
        "cardiomegaly",
        "pleural_thickening",
        "hypoinflation",
    }
    assert iu_mesh_findings(["Markings/bronchovascular", "Cardiac Shadow/borderline"]) == set()


# 5. CSV ---------------------------------------------------------------------------------------------


def test_csv_rows(tmp_path: Path) -> None:
    image = tmp_path / "img" / "a.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), _frontal_like(64))
    table = tmp_path / "cases.csv"
    with open(table, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "text", "findings", "patient_id", "view"])
        writer.writerow(["img/a.png", "Left pleural effusion.", "", "p1", "PA"])
        writer.writerow(["img/a.png", "Anything.", json.dumps({"mass": "present"}), "p2", "ap"])
        writer.writerow(["img/a.png", "Anything.", "nodule; pneumothorax:absent", "p3", ""])
        writer.writerow(["img/missing.png", "Text.", "", "p4", "PA"])
        writer.writerow(["img/a.png", "Text.", "tumour:present", "p5", "PA"])
        writer.writerow(["img/a.png", "Text.", "", "p6", "OBLIQUE"])
        writer.writerow(["img/a.png", "", "", "p7", "PA"])
    summary, _ = run_import("csv", [table], tmp_path / "m.jsonl")
    assert summary.skipped == Counter(
        {"image file missing": 1, "malformed findings": 1, "unknown view": 1, "malformed row (no path or text)": 1}
    )
    records = {r.patient_id: r for r in read_manifest(tmp_path / "m.jsonl")}
    assert records["p1"].findings["pleural_effusion"] == PRESENT and records["p1"].image == "img/a.png"
    assert records["p2"].findings == {"mass": PRESENT} and records["p2"].view == "AP"
    assert records["p3"].findings == {"nodule": PRESENT, "pneumothorax": ABSENT}
    assert records["p3"].view == "UNKNOWN"


# 6. DICOM -------------------------------------------------------------------------------------------


def test_dicom_monochrome1_is_inverted_and_written_as_16_bit_png(tmp_path: Path) -> None:
    import pydicom

    source = pydicom_data_file("RG1_UNCI.dcm")
    folder = tmp_path / "dicom"
    (folder / "series").mkdir(parents=True)
    shutil.copy(source, folder / "series" / "RG1_UNCI.dcm")
    (folder / "series2").mkdir()
    shutil.copy(source, folder / "series2" / "again.dcm")  # the same SOP instance again
    (folder / "readme.bin").write_bytes(b"not dicom")
    (folder / "series" / "RG1_UNCI.txt").write_text("Mild cardiomegaly. No pleural effusion.")

    summary, _ = run_import("dicom", [folder], tmp_path / "m.jsonl")
    assert summary.skipped == Counter({"duplicate SOP instance": 1, "not a readable DICOM file": 1})
    (record,) = read_manifest(tmp_path / "m.jsonl")
    png = resolve_image(record, tmp_path / "m.jsonl")
    assert png.parent == tmp_path / "m_images"
    pixels = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    stored = pydicom.dcmread(source).pixel_array
    assert pixels.dtype == np.uint16 and pixels.shape == stored.shape
    assert pixels.min() == 0 and pixels.max() == 65535  # percentile clipping fills the range
    # MONOCHROME1: high stored values are dark, so the PNG runs the other way
    assert np.corrcoef(pixels[::8, ::8].ravel(), stored[::8, ::8].ravel())[0, 1] < -0.9
    assert record.view == "PA" and record.sex == "F" and record.patient_id == "9RG1"
    assert record.findings == {"no_finding": ABSENT, "cardiomegaly": PRESENT, "pleural_effusion": ABSENT}


def test_dicom_8_bit_with_clahe_and_skips(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(pydicom_data_file("RG1_UNCI.dcm"), folder / "chest.dcm")
    shutil.copy(pydicom_data_file("SC_rgb.dcm"), folder / "colour.dcm")
    options = ImportOptions(bits=8, clahe=True, clip_percentiles=(1.0, 99.0))
    summary, _ = run_import("dicom", [folder], tmp_path / "m.jsonl", options)
    assert summary.skipped == Counter({"not greyscale (RGB)": 1})
    assert summary.notes["no report beside the file: text from the header only"] == 1
    (record,) = read_manifest(tmp_path / "m.jsonl")
    assert record.text == "PA chest radiograph of a woman." and record.findings == {}
    pixels = cv2.imread(str(resolve_image(record, tmp_path / "m.jsonl")), cv2.IMREAD_UNCHANGED)
    assert pixels.dtype == np.uint8 and pixels.std() > 40


def _decoded_before_the_engine(ds, clip_percentiles: tuple[float, float]) -> np.ndarray:
    """What the importer computed with its own copy of the display decoder (modality LUT, VOI LUT
    or window, MONOCHROME1 inverted), before it used the engine's: the outputs must not change."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(ds.pixel_array, ds)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        values = apply_voi_lut(values, ds)
    values = np.asarray(values, dtype=np.float64)
    if str(ds.PhotometricInterpretation) == "MONOCHROME1":
        values = values.max() + values.min() - values
    low, high = np.percentile(values, clip_percentiles)
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


@pytest.mark.parametrize("variant", ["windowed MONOCHROME1", "MONOCHROME1", "MONOCHROME2", "rescaled MONOCHROME1"])
def test_dicom_decodes_through_the_engine_with_the_same_pixels(variant: str) -> None:
    """One DICOM-to-display decoder: the importer's pixels are the engine's display values
    (engine.dicom.reading.display_values with the file's window), percentile-clipped, and equal to
    what the importer's own copy of the decoder made, bit for bit, on each path through it."""
    import pydicom

    from engine.dicom.reading import display_values
    from training.data.importers.dicom import dicom_to_float

    ds = pydicom.dcmread(pydicom_data_file("RG1_UNCI.dcm"))
    if variant != "windowed MONOCHROME1":
        del ds.WindowCenter, ds.WindowWidth  # the unsigned, unrescaled path inverts in integers
    if variant == "MONOCHROME2":
        ds.PhotometricInterpretation = "MONOCHROME2"
    if variant == "rescaled MONOCHROME1":
        ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    clip = (1.0, 99.5)
    image = dicom_to_float(ds, clip)
    assert np.array_equal(image, _decoded_before_the_engine(ds, clip))
    values = np.asarray(display_values(ds, ds.pixel_array, voi=True), dtype=np.float64)
    low, high = np.percentile(values, clip)
    assert np.array_equal(image, np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32))


# 7. arguments and the command -----------------------------------------------------------------------


def _command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cxr-studio")
    register_import(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_import_command_writes_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    needs(PEDIATRIC / "labels.csv", "pediatric-cxr")
    out = tmp_path / "m.jsonl"
    assert _command(["import", "pediatric", str(PEDIATRIC), "--out", str(out), "--limit", "30", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "30 images" in printed and "train" in printed and f"wrote {out}" in printed
    assert len(read_manifest(out)) == 30


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["import", "mimic", "{data}", "--out", "{out}"], "unknown kind 'mimic'"),
        (["import", "pediatric", "{data}/nowhere", "--out", "{out}"], "does not exist"),
        (["import", "pediatric", "{data}", "--out", "{existing}"], "exists; pass --overwrite"),
        (["import", "pediatric", "{data}", "--out", "{out}", "--val-frac", "0.6", "--test-frac", "0.5"], "fractions"),
        (["import", "pediatric", "{data}", "--out", "{out}", "--bits", "12"], "bits must be 8 or 16"),
        (["import", "pediatric", "{data}", "--out", "{data}/m.txt"], "must be a .jsonl file"),
        (["import", "nih", "{data}", "--out", "{out}"], "give the label table"),
    ],
)
def test_bad_arguments_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "existing.jsonl").write_text("")
    names = {"data": str(tmp_path), "out": str(tmp_path / "m.jsonl"), "existing": str(tmp_path / "existing.jsonl")}
    assert _command([part.format(**names) for part in argv]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("cxr-studio import: error: ") and message in error
    assert not (tmp_path / "m.jsonl").exists()


def test_nothing_importable_exits_1_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "labels.csv").write_text("file,label,patient_id\ngone.jpeg,normal,N-1\n")
    assert _command(["import", "pediatric", str(tmp_path), "--out", str(tmp_path / "m.jsonl")]) == 1
    assert "image file missing" in capsys.readouterr().out
    assert not (tmp_path / "m.jsonl").exists()


def test_run_import_refuses_an_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ImporterError, match="unknown kind"):
        run_import("mimic", [tmp_path], tmp_path / "m.jsonl")


def test_importer_docstrings_name_modules_and_names_that_exist() -> None:
    """Every dotted ``engine.…``/``training.…`` name the importers' docstrings and comments cite
    resolves (the package's overview once pointed at a ``training.data.manifest`` that is not there)."""
    import importlib
    import re

    cited = re.compile(r"(?<![\w.])((?:training|engine)(?:\.[A-Za-z_]\w*)+)")
    absent, missing = object(), []
    for path in sorted((REPO / "training" / "data" / "importers").glob("*.py")):
        for dotted in sorted(set(cited.findall(path.read_text(encoding="utf-8")))):
            parts = dotted.split(".")
            for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
                try:
                    target: object = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                for name in parts[cut:]:
                    target = getattr(target, name, absent)
                break
            else:
                target = absent
            if target is absent:
                missing.append(f"{path.name}: {dotted}")
    assert missing == []
