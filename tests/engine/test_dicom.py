"""DICOM export: every file passes dciodvfy / dcmdump, round-trips pixel-exact, and says it is synthetic.

The validators (dicom3tools, dcmtk) are Debian tools; tests that need them skip with a reason when
they are missing. dciodvfy reports no warnings at all for these files today, so any new warning
fails the test: check it against the standard and either fix the file or list it in
ACCEPTED_WARNINGS with the reason.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID

from engine.dicom import dataset as dicom
from engine.dicom.dataset import (
    CodecUnavailableError,
    StudyContext,
    SyntheticImageInfo,
    build_dataset,
    datasets_from_result,
    new_uid,
    stored_pixels,
    write_dicom,
)
from engine.dicom.reading import read_pixels
from engine.imaging import WindowPreset, window_presets
from engine.pipeline import GenerationRequest, GenerationResult
from tests.dicomtools import dcentvfy_errors, dciodvfy_errors, dcmdump_ok

ASCII_PROMPT = "PA chest radiograph, moderate left pleural effusion, no pneumothorax"
NON_ASCII_PROMPT = "Épanchement pleural gauche, 左"
# dciodvfy warnings we accept, each with the reason. Empty: the files draw no warning today.
ACCEPTED_WARNINGS: dict[str, str] = {}
# dcentvfy compares every pair of files: none of its warnings is expected within one series.
TRANSFER_SYNTAXES = list(dicom.TRANSFER_SYNTAXES)


def phantom(height: int = 256, width: int = 208) -> np.ndarray:
    """A smooth gradient with two dark 'lungs' and a bright disc: float32 (H, W) in [0, 1]."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = 0.25 + 0.5 * yy / height + 0.1 * xx / width
    for centre_x in (0.3 * width, 0.7 * width):
        lung = ((xx - centre_x) / (0.17 * width)) ** 2 + ((yy - 0.45 * height) / (0.3 * height)) ** 2 < 1
        image[lung] -= 0.2
    image[(yy - 0.6 * height) ** 2 + (xx - 0.5 * width) ** 2 < (0.12 * width) ** 2] = 0.97
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def make_info(prompt: str = ASCII_PROMPT, **changes: object) -> SyntheticImageInfo:
    info = SyntheticImageInfo(
        prompt=prompt,
        negative_prompt="blurry, lateral view",
        seed=1234,
        num_steps=20,
        guidance_scale=4.0,
        sampler="dpmpp-2m",
        model_id="cxr-test",
        model_fingerprint="0123456789abcdef0123456789abcdef",
    )
    return replace(info, **changes)  # type: ignore[arg-type]


def assert_valid(path: Path) -> None:
    errors, warnings = dciodvfy_errors(path)
    assert errors == [], "\n".join(errors)
    unexpected = [w for w in warnings if not any(key in w for key in ACCEPTED_WARNINGS)]
    assert unexpected == [], "\n".join(unexpected)
    assert dcmdump_ok(path)


def require_codec(transfer_syntax: str) -> None:
    if not dicom.codec_available(transfer_syntax):
        package = dicom.CODEC_PACKAGES[dicom.TRANSFER_SYNTAXES[transfer_syntax]]
        pytest.skip(f"{transfer_syntax} needs the Python package {package}")


# 1. every combination is a valid file with identical pixels -------------------------------------

MATRIX = list(itertools.product(["sc", "dx"], [12, 16], TRANSFER_SYNTAXES, [False, True], [False, True]))


@pytest.mark.parametrize(
    ("iod", "bits_stored", "transfer_syntax", "non_ascii", "burn_in"),
    MATRIX,
    ids=[f"{i}-{b}bit-{t}-{'utf8' if n else 'ascii'}-{'burned' if x else 'clean'}" for i, b, t, n, x in MATRIX],
)
def test_file_is_valid_and_round_trips(
    tmp_path: Path, iod: str, bits_stored: int, transfer_syntax: str, non_ascii: bool, burn_in: bool
) -> None:
    require_codec(transfer_syntax)
    image = phantom()
    info = make_info(NON_ASCII_PROMPT if non_ascii else ASCII_PROMPT)
    ds = build_dataset(image, info, StudyContext.synthetic(0), iod=iod, bits_stored=bits_stored, burn_in=burn_in)
    expected = np.frombuffer(ds.PixelData, dtype="<u2").reshape(image.shape)
    if not burn_in:
        np.testing.assert_array_equal(expected, stored_pixels(image, bits_stored))
    else:
        assert (expected != stored_pixels(image, bits_stored)).any()
    assert int(expected.max()) <= 2**bits_stored - 1

    path = write_dicom(ds, tmp_path / "image.dcm", transfer_syntax=transfer_syntax)

    assert_valid(path)
    np.testing.assert_array_equal(read_pixels(path), expected)
    back = pydicom.dcmread(path)
    assert back.file_meta.TransferSyntaxUID == dicom.TRANSFER_SYNTAXES[transfer_syntax]
    assert back.SOPInstanceUID == ds.SOPInstanceUID  # lossless compression keeps the instance
    assert back.BitsStored == bits_stored and back.HighBit == bits_stored - 1 and back.BitsAllocated == 16
    assert back.PhotometricInterpretation == "MONOCHROME2"
    assert back.BurnedInAnnotation == ("YES" if burn_in else "NO")
    assert back.get("SpecificCharacterSet") == ("ISO_IR 192" if non_ascii else None)
    assert info.prompt in back.ImageComments and info.prompt in back.DerivationDescription


def test_no_windows_for_sc_is_valid(tmp_path: Path) -> None:
    ds = build_dataset(phantom(), make_info(), StudyContext.synthetic(), windows=())
    assert "WindowCenter" not in ds and "VOILUTFunction" not in ds
    assert_valid(write_dicom(ds, tmp_path / "plain.dcm"))


# 2. what the file says --------------------------------------------------------------------------


def test_file_is_marked_synthetic() -> None:
    info = make_info()
    ds = build_dataset(phantom(), info, StudyContext.synthetic(7))
    assert ds.SOPClassUID == dicom.IODS["sc"] and ds.Modality == "OT"
    assert ds.ConversionType == "SYN"
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert str(ds.PatientName) == "SYNTHETIC^CXR STUDIO" and ds.PatientID.startswith("SYN-")
    assert ds.PatientIdentityRemoved == "YES" and ds.DeidentificationMethod
    for text in (ds.ImageComments, ds.DerivationDescription):
        for fact in ("synthetic image", "CXR Studio 0.1.0", "cxr-test", "0123456789abcdef", "seed 1234"):
            assert fact in text
        for fact in ("steps 20", "guidance 4", "sampler dpmpp-2m", ASCII_PROMPT, "blurry, lateral view"):
            assert fact in text
    assert "0123456789abcdef0" not in ds.ImageComments  # fingerprint shortened to 16 characters
    (equipment,) = ds.ContributingEquipmentSequence
    (purpose,) = equipment.PurposeOfReferenceCodeSequence
    assert (purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning) == (
        "109103",
        "DCM",
        "Modifying Equipment",
    )
    assert equipment.Manufacturer == "CXR Studio" and equipment.SoftwareVersions == "0.1.0"
    for keyword in ("InstanceCreationDate", "ContentDate", "StudyDate", "SeriesDate", "ContentTime", "StudyTime"):
        assert ds.get(keyword)


def test_dx_has_its_type_1_attributes() -> None:
    ds = build_dataset(phantom(), make_info(), StudyContext.synthetic(), iod="dx")
    assert ds.SOPClassUID == dicom.IODS["dx"] and ds.Modality == "DX"
    assert ds.PresentationIntentType == "FOR PRESENTATION"
    assert ds.PresentationLUTShape == "IDENTITY" and ds.PixelIntensityRelationship == "LIN"
    assert ds.ImageLaterality == "U" and ds.LossyImageCompression == "00"
    assert ds.AnatomicRegionSequence[0].CodeMeaning == "Chest"
    field_of_view = float(ds.ImagerPixelSpacing[0]) * max(ds.Rows, ds.Columns)
    assert 350 <= field_of_view <= 430
    with pytest.raises(ValueError, match="window"):
        build_dataset(phantom(), make_info(), StudyContext.synthetic(), iod="dx", windows=())


def test_sc_pixel_spacing_is_plausible() -> None:
    ds = build_dataset(phantom(512, 512), make_info(), StudyContext.synthetic())
    assert 350 <= float(ds.PixelSpacing[0]) * 512 <= 430


@pytest.mark.parametrize("bits_stored", [12, 16])
def test_labelled_windows_in_stored_units(bits_stored: int) -> None:
    image = phantom()
    ds = build_dataset(image, make_info(), StudyContext.synthetic(), bits_stored=bits_stored)
    assert list(ds.WindowCenterWidthExplanation) == ["DEFAULT", "LUNG", "MEDIASTINUM", "BONE"]
    expected = window_presets(stored_pixels(image, bits_stored))
    assert [float(c) for c in ds.WindowCenter] == pytest.approx([w.window_center for w in expected])
    assert [float(w) for w in ds.WindowWidth] == pytest.approx([w.window_width for w in expected])
    assert ds.VOILUTFunction == "LINEAR"
    assert all(0 <= float(c) <= 2**bits_stored for c in ds.WindowCenter)

    custom = [WindowPreset("SOFT", 1000, 500)]
    ds = build_dataset(image, make_info(), StudyContext.synthetic(), windows=custom)
    assert float(ds.WindowCenter) == 1000 and ds.WindowCenterWidthExplanation == "SOFT"


def test_full_range_uint16_input_is_rescaled() -> None:
    pixels = np.array([[0, 65535], [32768, 16]], dtype=np.uint16)
    np.testing.assert_array_equal(stored_pixels(pixels, 12), [[0, 4095], [2048, 1]])
    np.testing.assert_array_equal(stored_pixels(pixels, 16), pixels)


# 3. series, UIDs, dates -------------------------------------------------------------------------


def test_three_image_series_is_consistent(tmp_path: Path) -> None:
    study = StudyContext.synthetic(3)
    paths = []
    for number in (1, 2, 3):
        info = make_info(seed=1233 + number)
        ds = build_dataset(phantom() * (0.9 + 0.03 * number), info, study, iod="dx", instance_number=number)
        paths.append(write_dicom(ds, tmp_path / f"{number}.dcm"))
    files = [pydicom.dcmread(path) for path in paths]
    assert len({f.StudyInstanceUID for f in files}) == 1 and len({f.SeriesInstanceUID for f in files}) == 1
    assert len({f.SOPInstanceUID for f in files}) == 3
    assert [f.InstanceNumber for f in files] == [1, 2, 3]
    assert all(f.SOPInstanceUID not in (f.StudyInstanceUID, f.SeriesInstanceUID) for f in files)
    errors, warnings = dcentvfy_errors(paths)
    assert errors == [] and warnings == [], "\n".join(errors + warnings)


def test_batch_from_generation_result(tmp_path: Path) -> None:
    request = GenerationRequest(prompt=ASCII_PROMPT, seed=40, batch_size=2, num_steps=12, sampler="ddim")
    result = GenerationResult(
        request=request,
        images=np.stack([phantom(64, 64), phantom(64, 64)[::-1].copy()]),
        seeds=request.seeds(),
        model_id="cxr-tiny",
        model_fingerprint="f" * 64,
        provider="CPUExecutionProvider",
        cancelled=False,
        steps_done=12,
        dropped_words=(),
    )
    study = StudyContext.synthetic()
    datasets = datasets_from_result(result, study, iod="dx")
    assert [ds.InstanceNumber for ds in datasets] == [1, 2]
    assert "seed 40," in datasets[0].ImageComments and "seed 41," in datasets[1].ImageComments
    assert "sampler ddim" in datasets[1].ImageComments
    assert {ds.SeriesInstanceUID for ds in datasets} == {study.series_instance_uid}
    paths = [write_dicom(ds, tmp_path / f"{ds.InstanceNumber}.dcm") for ds in datasets]
    for path in paths:
        assert_valid(path)
    with pytest.raises(ValueError, match="outside the batch"):
        SyntheticImageInfo.from_result(result, 2)


def test_uids_are_fresh_and_rooted() -> None:
    first, second = StudyContext.synthetic(5), StudyContext.synthetic(5)
    assert first.patient_id == second.patient_id  # the seed fixes the fake values ...
    assert first.study_instance_uid != second.study_instance_uid  # ... never the UIDs
    assert first.study_instance_uid.startswith("2.25.")
    root = "1.2.826.0.1.3680043.10.999"
    uids = {new_uid(root) for _ in range(100)}
    assert len(uids) == 100
    assert all(uid.startswith(root + ".") and len(uid) <= 64 and UID(uid).is_valid for uid in uids)
    ds = build_dataset(phantom(), make_info(), StudyContext.synthetic(uid_root=root), uid_root=root)
    assert ds.SOPInstanceUID.startswith(root + ".") and ds.StudyInstanceUID.startswith(root + ".")
    for bad in ("1.02.3", "abc", "1..2", "1." + "2" * 45):
        with pytest.raises(ValueError, match="UID root"):
            new_uid(bad)
    later = first.next_series()
    assert later.study_instance_uid == first.study_instance_uid and later.series_number == 2
    assert later.series_instance_uid != first.series_instance_uid


# 4. text limits ---------------------------------------------------------------------------------


def test_long_prompts_fit_their_vrs(tmp_path: Path) -> None:
    prompt, negative = "p" * 3999 + "P", "n" * 3999 + "N"  # the engine's maximum, 4,000 each
    ds = build_dataset(phantom(), make_info(prompt, negative_prompt=negative), StudyContext.synthetic())
    assert prompt in ds.ImageComments and negative in ds.ImageComments  # LT holds both whole
    assert len(ds.DerivationDescription) <= 1024 and "..." in ds.DerivationDescription  # ST forces a cut
    assert "seed 1234" in ds.DerivationDescription
    assert_valid(write_dicom(ds, tmp_path / "long.dcm"))

    wide = "左" * 4000  # 12,000 UTF-8 bytes: more than LT's 10,240
    ds = build_dataset(phantom(), make_info(wide, negative_prompt=wide), StudyContext.synthetic())
    assert len(ds.ImageComments.encode()) <= 10240 and ds.ImageComments.count("...") == 2
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert_valid(write_dicom(ds, tmp_path / "wide.dcm"))


def test_non_ascii_patient_name_sets_utf8(tmp_path: Path) -> None:
    study = StudyContext.synthetic(patient_name="SYNTHÉTIQUE^Zoë")
    ds = build_dataset(phantom(), make_info(), study)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    path = write_dicom(ds, tmp_path / "name.dcm")
    assert_valid(path)
    assert str(pydicom.dcmread(path).PatientName) == "SYNTHÉTIQUE^Zoë"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"study_description": "a\\b"}, "backslash"),
        ({"study_description": "x" * 65}, "study description"),
        ({"accession_number": "A" * 17}, "accession number"),
        ({"patient_sex": "X"}, "patient sex"),
        ({"patient_birth_date": "1990-01-01"}, "birth date"),
        ({"patient_id": ""}, "patient ID"),
        ({"series_number": -1}, "series number"),
    ],
)
def test_study_values_are_checked_not_cut(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StudyContext.synthetic(**changes)


@pytest.mark.parametrize(
    ("pixels", "options", "message"),
    [
        (phantom(), {"iod": "ct"}, "iod"),
        (phantom(), {"bits_stored": 10}, "bits_stored"),
        (phantom(), {"instance_number": 0}, "instance number"),
        (phantom(), {"field_of_view_mm": 50.0}, "field of view"),
        (phantom() * 1.5, {}, r"\[0, 1\]"),
        (np.stack([phantom(), phantom()]), {}, "shape"),
        (np.zeros((8, 8), np.int32), {}, "uint16"),
        (phantom(), {"windows": [(100, 50)]}, "WindowPreset"),
    ],
)
def test_bad_arguments_are_refused(pixels: np.ndarray, options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_dataset(pixels, make_info(), StudyContext.synthetic(), **options)  # type: ignore[arg-type]


def test_model_id_too_long_for_lo_is_refused() -> None:
    with pytest.raises(ValueError, match="64 characters"):
        build_dataset(phantom(), make_info(model_id="m" * 60), StudyContext.synthetic())


CONTROL_PROMPT = "Left\teffusion\a, no\bpneumothorax\x1b[31m red\x7f\x85 end\r\nsecond\x0cline\x00."


@pytest.mark.parametrize("iod", ["sc", "dx"])
def test_control_characters_in_prompts_pass_dciodvfy(tmp_path: Path, iod: str) -> None:
    """TAB, BEL, BS, ESC, DEL, NUL and C1 characters in a prompt made dciodvfy report 'Character invalid
    for this VR' in ImageComments (LT) and DerivationDescription (ST). LT and ST may hold CR, LF and FF
    (PS3.5 6.2) and keep them; every other control character becomes a space."""
    info = make_info(CONTROL_PROMPT, negative_prompt="\tblurry\x07")
    ds = build_dataset(phantom(), info, StudyContext.synthetic(), iod=iod)
    for text in (ds.ImageComments, ds.DerivationDescription):
        assert not any((ord(c) < 32 and c not in "\r\n\f") or 0x7F <= ord(c) <= 0x9F for c in text), repr(text)
        assert "Left effusion , no pneumothorax [31m red" in text and "end\r\nsecond\x0cline ." in text
    assert_valid(write_dicom(ds, tmp_path / "controls.dcm"))


def test_model_id_with_a_backslash_or_controls_is_one_lo_value(tmp_path: Path) -> None:
    """A model id 'a\\b' made ManufacturerModelName two values (VM 2: backslash is DICOM's separator)."""
    ds = build_dataset(phantom(), make_info(model_id="team\\cxr\tv2\x1b"), StudyContext.synthetic())
    assert ds["ManufacturerModelName"].VM == 1
    assert ds.ManufacturerModelName == "CXR Studio team/cxr v2"
    assert ds.SecondaryCaptureDeviceManufacturerModelName == "CXR Studio team/cxr v2"
    path = write_dicom(ds, tmp_path / "model.dcm")
    assert_valid(path)
    assert pydicom.dcmread(path)["ManufacturerModelName"].VM == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"study_description": "chest\tPA"}, "study description.*control character"),
        ({"patient_name": "SYNTHETIC^A\x1bB"}, "patient name.*control character"),
        ({"accession_number": "A\x07"}, "accession number.*control character"),
    ],
)
def test_control_characters_in_study_values_are_refused(changes: dict[str, object], message: str) -> None:
    """Study values are typed by the user: refused with the field named, never silently changed."""
    with pytest.raises(ValueError, match=message):
        StudyContext.synthetic(**changes)


# 5. writing -------------------------------------------------------------------------------------


def test_write_is_atomic_and_leaves_the_dataset_alone(tmp_path: Path) -> None:
    require_codec("rle")
    ds = build_dataset(phantom(), make_info(), StudyContext.synthetic())
    before = ds.PixelData
    path = write_dicom(ds, tmp_path / "a.dcm", transfer_syntax="rle")
    assert ds.PixelData == before and getattr(ds, "file_meta", None) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dcm"]  # no temporary file left
    write_dicom(ds, path)  # replaces the file
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    with pytest.raises(FileNotFoundError):
        write_dicom(ds, tmp_path / "missing" / "b.dcm")
    with pytest.raises(ValueError, match="transfer syntax"):
        write_dicom(ds, tmp_path / "c.dcm", transfer_syntax="jpeg-baseline")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dcm"]


def test_written_file_keeps_the_umask_permissions(tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    path = write_dicom(build_dataset(phantom(), make_info(), StudyContext.synthetic()), tmp_path / "p.dcm")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_validators_do_catch_errors(tmp_path: Path) -> None:
    """The helpers really fail a bad file: non-ASCII text without a character set, a missing Type 2."""
    ds = build_dataset(phantom(), make_info(NON_ASCII_PROMPT), StudyContext.synthetic())
    del ds.SpecificCharacterSet, ds.PatientID
    with pytest.warns(UserWarning, match="encode"):  # pydicom falls back to replacement characters
        path = write_dicom(ds, tmp_path / "bad.dcm")
    errors, _ = dciodvfy_errors(path)
    assert any("Image Comments" in e and "character repertoire" in e for e in errors)
    assert any("PatientID" in e for e in errors)


def test_missing_codec_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Missing:
        is_available = False

    monkeypatch.setattr(dicom, "get_encoder", lambda uid: Missing())
    ds = build_dataset(phantom(), make_info(), StudyContext.synthetic())
    with pytest.raises(CodecUnavailableError, match="pyjpegls"):
        write_dicom(ds, tmp_path / "x.dcm", transfer_syntax="jpeg-ls")
    with pytest.raises(CodecUnavailableError, match="pylibjpeg-openjpeg"):
        write_dicom(ds, tmp_path / "x.dcm", transfer_syntax="jpeg2000")
    assert not dicom.codec_available("jpeg-ls") and dicom.codec_available("explicit")
    assert list(tmp_path.iterdir()) == []
