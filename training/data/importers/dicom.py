"""``dicom``: folders of DICOM files, converted to PNG beside the manifest (modality LUT, VOI LUT
or window, MONOCHROME1 inverted, percentile clipping, optional CLAHE, 8 or 16 bit); every skipped
file is named in ``ImportResult.skipped_items``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from engine.dicom.reading import display_values
from engine.findings.reader import clean_report, summarize
from engine.imaging import clahe, encode_png, float_to_stored
from engine.manifest import ManifestRecord
from training.data.captions import header
from training.data.importers.common import ImporterError, ImportOptions, ImportResult, make_record, need_existing

_NOT_DICOM_SUFFIXES = (".txt", ".json", ".csv", ".md", ".xml", ".png", ".jpg", ".jpeg")


class DicomSkip(Exception):
    """A DICOM file that cannot become a training image; the message is the reason."""


def dicom_to_float(ds: pydicom.Dataset, clip_percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """A single-frame greyscale dataset -> float32 (H, W) in [0, 1], 0 = black.

    1. stored values -> modality LUT / rescale, VOI LUT or window when the file has one,
       MONOCHROME1 (0 = white) inverted to MONOCHROME2: the engine's display decoder
       (:func:`engine.dicom.reading.display_values`), which the dataset explorer shows files with;
    2. the ``clip_percentiles`` of the pixels mapped to 0 and 1, clipping the tails (collimator
       edges, burnt-in markers).
    """
    photometric = str(getattr(ds, "PhotometricInterpretation", "")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomSkip(f"not greyscale ({photometric or 'no photometric interpretation'})")
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (ValueError, TypeError):
        raise DicomSkip(f"NumberOfFrames is not a whole number ({ds['NumberOfFrames'].repval})") from None
    if frames != 1:
        raise DicomSkip("multi-frame image")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for absent or undecodable pixel data
        raise DicomSkip(f"pixel data unreadable ({type(exc).__name__})") from None
    if pixels.ndim != 2:
        raise DicomSkip("not a single-frame greyscale image")
    try:
        values = np.asarray(display_values(ds, pixels, voi=True), dtype=np.float64)
    except Exception as exc:  # a malformed rescale, LUT or window value raises one of many types
        raise DicomSkip(f"modality or VOI LUT / window unusable ({type(exc).__name__}: {exc})") from None
    if not np.isfinite(values).all():
        raise DicomSkip("pixel values not finite after the modality or VOI LUT")
    low, high = np.percentile(values, clip_percentiles)
    if not high > low:
        raise DicomSkip("blank image (no contrast)")
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _dicom_age(value: object) -> int | None:
    """DICOM AS ("061Y", "006M", "003W", "002D") -> whole years."""
    match = re.fullmatch(r"(\d{1,3})([DWMY])", str(value or "").strip().upper())
    if not match:
        return None
    number, unit = int(match.group(1)), match.group(2)
    years = number if unit == "Y" else 0
    return years if years <= 120 else None


def _dicom_files(paths: Sequence[Path]) -> Iterator[tuple[Path, Path, int]]:
    """(file, the root it was found under, the root's index in ``paths``) for every candidate file,
    in sorted order."""
    for index, root in enumerate(paths):
        if root.is_file():
            yield root, root.parent, index
            continue
        for dirpath, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                yield Path(dirpath) / name, root, index


def dicom_image_folder(manifest: Path) -> Path:
    """Where the DICOM importer's PNGs go: ``MANIFEST-STEM_images/`` beside the manifest."""
    return manifest.parent / f"{manifest.stem}_images"


def _png_name(path: Path, root: Path, index: int, roots: int, used: set[str]) -> str:
    """The PNG's name: the file's place under its root ("series/1.dcm" -> "series__1.png"), after
    the root's number and name when several roots are given (two roots may hold the same relative
    name), and made unique ("~2") where two places still flatten to the same name."""
    relative = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    stem = "__".join(relative.with_suffix("").parts)
    if roots > 1:
        stem = f"{index + 1}-{root.name or 'root'}__{stem}"
    name, number = f"{stem}.png", 1
    while name.lower() in used:  # lower: case-insensitive file systems
        number += 1
        name = f"{stem}~{number}.png"
    used.add(name.lower())
    return name


def _dicom_record(ds: pydicom.Dataset, path: Path, png: Path, manifest: Path, result: ImportResult) -> ManifestRecord:
    """The manifest record of a converted file (header fields, and the report beside it if any)."""
    view = str(ds.get("ViewPosition", "") or "").upper()
    view = {"PA": "PA", "AP": "AP", "LL": "LATERAL", "RL": "LATERAL", "LATERAL": "LATERAL"}.get(view, "UNKNOWN")
    age = _dicom_age(ds.get("PatientAge"))
    sex = str(ds.get("PatientSex", "") or "").upper() or None
    sex = sex if sex in ("M", "F") else None
    sidecar = next((p for p in (path.with_suffix(".txt"), path.with_name(path.name + ".txt")) if p.is_file()), None)
    if sidecar is not None:
        text = clean_report(sidecar.read_text(encoding="utf-8", errors="replace"))
        findings = summarize(text)
    else:
        text = header(view=view if view != "UNKNOWN" else None, age=age, sex=sex) + "."
        findings = {}
        result.notes["no report beside the file: text from the header only"] += 1
    patient = str(ds.get("PatientID", "") or "").strip() or str(ds.get("StudyInstanceUID", "") or "") or path.stem
    return make_record(
        png,
        manifest,
        text=text or header() + ".",
        findings=findings,
        patient_id=patient,
        view=view,
        source="dicom",
        age=age,
        sex=sex,
        label=None,
    )


def import_dicom(
    paths: Sequence[Path], manifest: Path, options: ImportOptions, *, image_folder: Path | None = None
) -> ImportResult:
    """DICOM files -> PNGs in ``image_folder`` (default :func:`dicom_image_folder`; :func:`run_import`
    passes a staging folder) and records that name them in :func:`dicom_image_folder`.

    A file that cannot become an image is skipped by name; a PNG that cannot be written (a full
    disk) is an :class:`ImporterError` naming it.
    """
    need_existing(paths, "dicom")
    result = ImportResult()
    out_folder = dicom_image_folder(manifest)
    image_folder = out_folder if image_folder is None else image_folder
    seen: set[str] = set()
    used: set[str] = set()
    for path, root, index in _dicom_files(paths):
        if result.full(options):
            break
        if path.suffix.lower() in _NOT_DICOM_SUFFIXES or path.name.upper() == "DICOMDIR" or path.name.startswith("."):
            continue
        # 1. read and convert; one bad file is skipped by name, never the end of the import
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError):
            result.skip(str(path), "not a readable DICOM file")
            continue
        try:
            sop = str(ds.get("SOPInstanceUID", "")) or str(path)
            if sop in seen:
                result.skip(str(path), "duplicate SOP instance")
                continue
            image = dicom_to_float(ds, options.clip_percentiles)
            if options.clahe:
                image = clahe(image, clip_limit=2.0, tile_grid=(8, 8))
            name = _png_name(path, root, index, len(paths), used)
            record = _dicom_record(ds, path, out_folder / name, manifest, result)
        except DicomSkip as exc:
            result.skip(str(path), str(exc))
            continue
        except Exception as exc:  # a malformed header value raises on access, with one of many types
            result.skip(str(path), f"unusable header ({type(exc).__name__}: {exc})")
            continue
        seen.add(sop)
        # 2. write the PNG, then keep the record
        try:
            data = encode_png(float_to_stored(image, options.bits))
        except OSError:
            result.skip(str(path), "PNG encoding failed")
            continue
        png = image_folder / name
        try:
            png.write_bytes(data)
        except OSError as exc:
            raise ImporterError(
                f"dicom: cannot write {out_folder / name} (from {path}): {exc.strerror or exc}"
            ) from None
        result.records.append(record)
    return result


__all__ = [
    "DicomSkip",
    "dicom_image_folder",
    "dicom_to_float",
    "import_dicom",
]
