"""A dataset manifest read for browsing, without Qt: the explorer's reading and filtering.

- Opening reads the manifest line by line: a line that breaks the format is counted and listed (with its
  number and the reason) and skipped; the other records still open. A file that cannot be read at all
  raises OSError.
- Images are stored pixels: 8- and 16-bit PNG / JPEG through OpenCV, DICOM through engine.dicom.dataset.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine import imaging
from engine.dicom.reading import read_display_pixels, read_pixels
from engine.findings.vocabulary import ABSENT, FINDINGS, PRESENT, UNCERTAIN
from engine.manifest import ManifestRecord, parse_record

THUMB = 48  # thumbnail edge in the table, pixels
NOT_MENTIONED = "not mentioned"
FINDING_STATUSES = (PRESENT, UNCERTAIN, ABSENT, NOT_MENTIONED)
NO_LABEL = "\x00no label"  # the label filter's value for records without a label
DICOM_SUFFIXES = (".dcm", ".dicom")
JPEG_SUFFIXES = (".jpg", ".jpeg")


# 1. reading manifests and images (no Qt) -----------------------------------------------------------------


@dataclass
class LoadedManifest:
    """The good records of a manifest, and one line per bad line ("line N: reason")."""

    path: Path
    records: list[ManifestRecord]
    bad_lines: list[str]


def load_manifest(path: str | os.PathLike[str]) -> LoadedManifest:
    """Read every line; a bad line (not UTF-8, not JSON, not a valid record) is noted and skipped.

    Raises OSError when the file cannot be read at all (missing, a folder, no permission)."""
    path = Path(path)
    records: list[ManifestRecord] = []
    bad: list[str] = []
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                bad.append(f"line {number}: not UTF-8 text ({exc.reason} at byte {exc.start})")
                continue
            if not line.strip():
                continue
            try:
                records.append(parse_record(line))  # any bad line, deep nesting included, is a ManifestError
            except (TypeError, ValueError) as exc:  # ManifestError is a ValueError
                bad.append(f"line {number}: {exc}")
    return LoadedManifest(path, records, bad)


class ImageReadError(Exception):
    """An image that cannot be shown; ``missing`` when the file is not there at all."""

    def __init__(self, path: Path, reason: str, *, missing: bool = False) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.missing = missing


def read_record_image(path: Path, *, reduced: bool = False) -> np.ndarray:
    """Stored pixels (H, W) uint8 or uint16 of a PNG / JPEG (OpenCV) or DICOM (engine.dicom.dataset) file.

    Colour files become grey (BT.601 weights). Other integer or float pixel types (signed DICOM,
    float TIFF) are stretched min..max to uint16 for display. DICOM pixels are shown as a viewer would
    (engine.dicom.read_display_pixels: rescale applied, MONOCHROME1 inverted so that bone is white).
    ``reduced`` decodes JPEGs at a quarter of their size (libjpeg's DCT scaling: fast thumbnails).
    Raises ImageReadError."""
    if not path.is_file():
        raise ImageReadError(path, "file missing", missing=True)
    if path.suffix.lower() in DICOM_SUFFIXES:
        try:
            pixels = np.asarray(read_display_pixels(path))
        except Exception as exc:  # pydicom raises many kinds; all mean "cannot show this file"
            reason = str(exc).removeprefix(f"{path}: ")  # engine.dicom.dataset's DicomReadError names the file already
            if not isinstance(exc, ValueError):
                reason = f"not a readable DICOM image ({exc})"
            raise ImageReadError(path, reason) from None
    else:
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            raise ImageReadError(path, exc.strerror or str(exc)) from None
        flags = cv2.IMREAD_UNCHANGED
        if reduced and path.suffix.lower() in JPEG_SUFFIXES:
            flags = cv2.IMREAD_REDUCED_GRAYSCALE_4
        pixels = cv2.imdecode(data, flags) if data.size else None
        if pixels is None:
            raise ImageReadError(path, "not an image OpenCV can decode")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    elif pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        rgb = path.suffix.lower() in DICOM_SUFFIXES  # pydicom gives RGB, OpenCV BGR
        codes = {(3, False): cv2.COLOR_BGR2GRAY, (4, False): cv2.COLOR_BGRA2GRAY,
                 (3, True): cv2.COLOR_RGB2GRAY, (4, True): cv2.COLOR_RGBA2GRAY}  # fmt: skip
        pixels = cv2.cvtColor(pixels, codes[(pixels.shape[2], rgb)])
    if pixels.ndim != 2 or pixels.size == 0:
        raise ImageReadError(path, f"a single-frame image is needed, not shape {pixels.shape}")
    if pixels.dtype in (np.uint8, np.uint16):
        return np.ascontiguousarray(pixels)
    if not (np.issubdtype(pixels.dtype, np.integer) or np.issubdtype(pixels.dtype, np.floating)):
        raise ImageReadError(path, f"pixel type {pixels.dtype} cannot be shown")
    values = pixels.astype(np.float64)
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return imaging.to_uint16(np.nan_to_num(scaled).astype(np.float32))


@dataclass(frozen=True)
class OpenedImage:
    """An image file opened into the viewer (File > Open image)."""

    path: Path
    pixels: np.ndarray  # (H, W) uint8 / uint16 as read_record_image gives them: what the viewer shows
    dataset: object | None = None  # a DICOM file's own pydicom Dataset (its tags, spacing, rescale)
    stored: np.ndarray | None = None  # a DICOM file's stored values, as the file holds them (the probe's)


def open_image(path: str | os.PathLike[str]) -> OpenedImage:
    """A PNG / JPEG or DICOM file for the viewer, with a DICOM file's dataset and stored values.
    Raises ImageReadError (its message names the file)."""
    path = Path(path)
    pixels = read_record_image(path)
    if path.suffix.lower() not in DICOM_SUFFIXES:
        return OpenedImage(path, pixels)
    import pydicom  # only here: the explorer's table never needs it

    try:
        dataset = pydicom.dcmread(path)
        stored = np.asarray(read_pixels(path))
    except Exception as exc:  # read_record_image has just read it: only a file changed meanwhile gets here
        raise ImageReadError(path, f"not a readable DICOM image ({exc})") from None
    return OpenedImage(path, pixels, dataset, stored)


def thumbnail_pixels(pixels: np.ndarray, size: int = THUMB) -> np.ndarray:
    """(h, w) uint8 no larger than ``size`` on either side, shown with the image's DEFAULT window."""
    height, width = pixels.shape
    scale = size / max(height, width)
    if scale < 1.0:
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = cv2.resize(pixels, target, interpolation=cv2.INTER_AREA)
    window = imaging.window_presets(pixels, ["DEFAULT"])[0]
    return imaging.apply_window(pixels, window.window_center, window.window_width)


def missing_images(paths: Sequence[Path]) -> list[int]:
    """Indices of the paths that are not files."""
    return [index for index, path in enumerate(paths) if not path.is_file()]


# 2. filtering (no Qt) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordFilter:
    """Which records to show; an empty field does not filter.

    ``finding`` + ``status``: records whose findings give that finding that status (``not mentioned``:
    records that do not name it). ``text``: every whitespace-separated word must start a word (ignoring case)
    of the record's text, label, patient id or image path: "effus" finds "effusion", "lateral" does not
    find "bilateral"."""

    finding: str = ""
    status: str = PRESENT
    split: str = ""
    view: str = ""
    label: str = ""  # NO_LABEL: records without a label
    source: str = ""
    text: str = ""

    def matches(self, record: ManifestRecord, haystack: str | None = None) -> bool:
        if self.finding:
            status = record.findings.get(self.finding, NOT_MENTIONED)
            if status != self.status:
                return False
        if self.split and record.split != self.split:
            return False
        if self.view and record.view != self.view:
            return False
        if self.label and (record.label or NO_LABEL) != self.label:
            return False
        if self.source and record.source != self.source:
            return False
        if self.text:
            haystack = search_text(record) if haystack is None else haystack
            return all(re.search(r"\b" + re.escape(word), haystack) for word in self.text.lower().split())
        return True


def search_text(record: ManifestRecord) -> str:
    """What free-text search looks in: lower-cased, "_" read as a space (labels, file names)."""
    return "\n".join((record.text, record.label or "", record.patient_id, record.image)).lower().replace("_", " ")


def findings_summary(findings: dict[str, str]) -> str:
    """Present findings by label, then uncertain ones with "?"; in vocabulary order."""
    present = [FINDINGS[name] for name in FINDINGS if findings.get(name) == PRESENT]
    uncertain = [f"{FINDINGS[name]}?" for name in FINDINGS if findings.get(name) == UNCERTAIN]
    return ", ".join(present + uncertain)


def finding_choices(records: Sequence[ManifestRecord]) -> list[tuple[str, str]]:
    """The finding filter's items: (name, "Label (3 present, 1 uncertain)") for each finding that a record
    names, in vocabulary order."""
    statuses: dict[str, Counter[str]] = {}
    for record in records:
        for name, status in record.findings.items():
            statuses.setdefault(name, Counter())[status] += 1
    choices = []
    for name in FINDINGS:
        if name in statuses:
            counts = statuses[name]
            parts = ", ".join(f"{counts[s]} {s}" for s in (PRESENT, UNCERTAIN, ABSENT) if counts[s])
            choices.append((name, f"{FINDINGS[name]} ({parts})"))
    return choices


def value_choices(records: Sequence[ManifestRecord], field: str) -> list[tuple[str, str]]:
    """A field filter's items: (value, "value (count)") for each value of ``field`` (split, view, label,
    source), sorted; records without a label count under NO_LABEL, shown as "(no label)"."""
    values = Counter((record.label or NO_LABEL) if field == "label" else getattr(record, field) for record in records)
    return [(value, f"{'(no label)' if value == NO_LABEL else value} ({values[value]})") for value in sorted(values)]


__all__ = [
    "FINDING_STATUSES",
    "NOT_MENTIONED",
    "NO_LABEL",
    "THUMB",
    "ImageReadError",
    "LoadedManifest",
    "RecordFilter",
    "finding_choices",
    "findings_summary",
    "load_manifest",
    "missing_images",
    "read_record_image",
    "search_text",
    "thumbnail_pixels",
    "value_choices",
]
