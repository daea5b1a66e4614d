"""Importers: data sets in their own layouts -> manifest records (``training.data.manifest``).

Kinds (``IMPORTERS``), each a function ``(paths, manifest, options) -> ImportResult``:
- ``pediatric``: the Kermany paediatric set, as ``labels.csv`` (file, label, patient_id) beside an
  ``images/`` folder, or the original Kaggle ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}``
  layout (type and patient from names like ``person1_bacteria_1.jpeg``, ``IM-0115-0001.jpeg``);
- ``iu-xray``: Open-i's ``NLMCXR_reports.tgz`` (or its extracted XML folder) and ``NLMCXR_png``:
  FINDINGS + IMPRESSION text with "XXXX" cleaned, MeSH kept as the label, frontal images only
  unless asked (view from a projections CSV such as Kaggle's ``indiana_projections.csv``, else
  guessed from left-right symmetry, see :func:`symmetry_score`);
- ``nih``: ``Data_Entry_2017*.csv(.gz)`` (or the subset's ``images.csv``) and image folders:
  captions from labels, age, sex and view, for the rows whose image is there;
- ``csv``: ``path,text[,findings][,patient_id][,view][,age][,sex][,label]`` with paths relative to the CSV;
- ``dicom``: folders of DICOM files, converted to PNG beside the manifest (modality LUT, VOI LUT
  or window, MONOCHROME1 inverted, percentile clipping, optional CLAHE, 8 or 16 bit).

Missing files, unreadable images and malformed rows are counted by reason in
``ImportResult.skipped`` and never stop an import (the CSV and DICOM importers also name each one
in ``ImportResult.skipped_items``); only arguments that cannot work (a path that does not exist, a
file of the wrong kind, a table that cannot be read at all) raise :class:`ImporterError`, naming
the file (and line).

The DICOM importer writes its PNGs into a staging folder beside ``MANIFEST-STEM_images/`` and
moves it into place only when every image is written; the manifest is written last, so a failed
import (a full disk included) leaves neither images nor a manifest, and an earlier import's stay.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import re
import shutil
import tarfile
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from engine.fileio import folder_in_use, staged_folder
from engine.findings.reader import FINDINGS, STATUSES, clean_report, summarize
from engine.imaging import clahe, float_to_stored
from engine.manifest import (
    VIEWS,
    ImportSummary,
    ManifestRecord,
    assign_splits,
    check_fractions,
    relative_image_path,
    write_manifest,
)
from training.data.captions import (
    PAEDIATRIC_LABELS,
    CaptionError,
    caption_rng,
    header,
    nih_caption,
    paediatric_caption,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImporterError(ValueError):
    """Arguments an importer cannot work with; one line, for the command line's exit code 2."""


@dataclass(frozen=True)
class ImportOptions:
    """Options shared by the importers; each reads the ones it needs.

    ``limit``: stop after this many records (in sorted order), for quick looks and tests.
    ``verify_images``: decode every image to catch unreadable files (slower on big sets).
    ``clip_percentiles``, ``bits``, ``clahe``: the DICOM conversion.
    ``include_lateral``, ``projections``: IU X-ray views.
    """

    seed: int = 0
    limit: int | None = None
    verify_images: bool = True
    include_lateral: bool = False
    projections: Path | None = None
    bits: int = 16
    clahe: bool = False
    clip_percentiles: tuple[float, float] = (0.5, 99.5)

    def validated(self) -> ImportOptions:
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ImporterError(f"limit must be a positive whole number, not {self.limit!r}")
        if self.bits not in (8, 16):
            raise ImporterError(f"bits must be 8 or 16, not {self.bits!r}")
        low, high = self.clip_percentiles
        if not 0.0 <= low < high <= 100.0:
            raise ImporterError(f"clip percentiles must satisfy 0 <= low < high <= 100, not {low}, {high}")
        if self.projections is not None and not Path(self.projections).is_file():
            raise ImporterError(f"projections file {self.projections} does not exist")
        return self


@dataclass
class ImportResult:
    """Records without splits, skipped items by reason (and by name where the importer names
    them: (file or "table, line N", reason)), and notes (kept, but worth knowing)."""

    records: list[ManifestRecord] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    skipped_items: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, name: str, reason: str) -> None:
        """Count a skipped item under ``reason`` and keep its name for the summary."""
        self.skipped[reason] += 1
        self.skipped_items.append((name, reason))

    def full(self, options: ImportOptions) -> bool:
        return options.limit is not None and len(self.records) >= options.limit


# 1. shared helpers -------------------------------------------------------------------------------


def read_image(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray | None:
    """An image decoded by OpenCV (any path, also non-ASCII), or None when it cannot be read."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    return cv2.imdecode(data, flags)


def _check_image(path: Path, options: ImportOptions) -> str | None:
    """Why an image cannot be used, or None."""
    if not path.is_file():
        return "image file missing"
    if options.verify_images and read_image(path, cv2.IMREAD_GRAYSCALE) is None:
        return "image unreadable"
    return None


def _need_existing(paths: Sequence[Path], kind: str) -> None:
    if not paths:
        raise ImporterError(f"{kind}: give at least one path")
    for path in paths:
        if not path.exists():
            raise ImporterError(f"{kind}: {path} does not exist")


def _read_table(path: Path, kind: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """A CSV or CSV.GZ file (UTF-8, a byte-order mark dropped) -> its column names and its rows,
    each with the number of its (last) line. A file that cannot be read whole (a truncated gzip,
    bytes that are not UTF-8, a field over the csv module's limit) is an :class:`ImporterError`
    naming the file and, where there is one, the line: a table read in part would import a
    silently different data set."""
    try:
        data = path.read_bytes()
        if path.suffix.lower() == ".gz":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise ImporterError(f"{kind}: cannot read {path}: {exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImporterError(f"{kind}: {path}, line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = list(reader.fieldnames or ())
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise ImporterError(f"{kind}: {path}, line {reader.line_num + 1}: {exc}") from None
    return columns, rows


AGE_RANGE = (0, 120)  # whole years, as engine.manifest accepts them


def _age_years(text: str | None) -> int | None:
    """An age cell ("58", "058Y", "58.0") -> whole years, or None when it is no finite number of
    years in :data:`AGE_RANGE` (NIH's own table holds ages such as 412)."""
    try:
        value = float((text or "").strip().rstrip("Yy"))
    except ValueError:
        return None
    if not math.isfinite(value) or not AGE_RANGE[0] <= value <= AGE_RANGE[1]:
        return None
    return int(value)


def _image_index(folders: Sequence[Path], suffixes: Sequence[str] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """File name -> path for every image under the folders (the first one wins)."""
    index: dict[str, Path] = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
            for name in sorted(files):
                if name.lower().endswith(tuple(suffixes)) and not name.startswith("._"):
                    index.setdefault(name, Path(root) / name)
    return index


def _record(image: Path, manifest: Path, **fields: object) -> ManifestRecord:
    return ManifestRecord(image=relative_image_path(image, manifest), **fields).validated(need_split=False)


# 2. paediatric (Kermany) -------------------------------------------------------------------------

_PERSON = re.compile(r"person(\d+)_", re.IGNORECASE)
_NORMAL2 = re.compile(r"^NORMAL2-IM-(\d+)", re.IGNORECASE)
_NORMAL = re.compile(r"^IM-(\d+)", re.IGNORECASE)


def kermany_patient_id(file_name: str) -> str:
    """Patient from a Kermany file name: person12_virus_3 -> P12, IM-0115-0001 -> N-0115, NORMAL2-IM-0041 -> N2-0041."""
    for pattern, prefix in ((_PERSON, "P"), (_NORMAL2, "N2-"), (_NORMAL, "N-")):
        match = pattern.search(file_name)
        if match:
            return prefix + match.group(1)
    return Path(file_name).stem


def kermany_label(file_name: str, folder: str) -> str:
    """normal / bacterial_pneumonia / viral_pneumonia / pneumonia from the class folder and name."""
    if folder.upper() == "NORMAL":
        return "normal"
    lower = file_name.lower()
    if "bacteria" in lower:
        return "bacterial_pneumonia"
    if "virus" in lower:
        return "viral_pneumonia"
    return "pneumonia"


def _pediatric_rows(root: Path, result: ImportResult) -> Iterator[tuple[Path, str, str]]:
    """(image, label, patient id) from labels.csv or the Kaggle class folders."""
    labels = root / "labels.csv"
    if labels.is_file():
        folder = root / "images" if (root / "images").is_dir() else root
        columns, numbered = _read_table(labels, "pediatric")
        if not {"file", "label"} <= set(columns):
            raise ImporterError(f"pediatric: {labels} needs the columns file,label[,patient_id]")
        for row in sorted((row for _, row in numbered), key=lambda r: r.get("file") or ""):
            name, label = (row.get("file") or "").strip(), (row.get("label") or "").strip()
            if not name or not label:
                result.skipped["malformed row (no file or label)"] += 1
                continue
            patient = (row.get("patient_id") or "").strip() or kermany_patient_id(name)
            yield folder / name, label, patient
        return
    class_folders = sorted(
        Path(dirpath)
        for dirpath, _, _ in os.walk(root)
        if Path(dirpath).name.upper() in ("NORMAL", "PNEUMONIA") and "__MACOSX" not in Path(dirpath).parts
    )
    if not class_folders:
        raise ImporterError(f"pediatric: {root} has neither labels.csv nor NORMAL/PNEUMONIA folders")
    seen: set[tuple[str, str]] = set()
    for folder in class_folders:
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            key = (folder.name.upper(), path.name)
            if key in seen:  # the Kaggle archive holds some trees twice
                result.skipped["duplicate file name"] += 1
                continue
            seen.add(key)
            yield path, kermany_label(path.name, folder.name), kermany_patient_id(path.name)


def import_pediatric(paths: Sequence[Path], manifest: Path, options: ImportOptions) -> ImportResult:
    _need_existing(paths, "pediatric")
    result = ImportResult()
    for root in paths:
        if not root.is_dir():
            raise ImporterError(f"pediatric: {root} is not a folder")
        for image, label, patient in _pediatric_rows(root, result):
            if result.full(options):
                return result
            if label not in PAEDIATRIC_LABELS:
                result.skipped[f"unknown label {label!r}"] += 1
                continue
            problem = _check_image(image, options)
            if problem:
                result.skipped[problem] += 1
                continue
            caption = paediatric_caption(label, caption_rng(options.seed, image.name))
            result.records.append(
                _record(
                    image,
                    manifest,
                    text=caption.text,
                    findings=caption.findings,
                    patient_id=patient,
                    view="AP",
                    source="pediatric",
                    label=label,
                )
            )
    return result


# 3. IU X-ray (Open-i) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IUReport:
    """One Open-i report: cleaned FINDINGS / IMPRESSION / INDICATION, MeSH "major" terms, image ids."""

    uid: str
    findings: str
    impression: str
    indication: str
    mesh_major: tuple[str, ...]
    image_ids: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(part for part in (self.findings, self.impression) if part)


def parse_iu_report(data: bytes) -> IUReport:
    """One report XML (``ecgen-radiology/N.xml``); raises ``xml.etree.ElementTree.ParseError``."""
    root = ET.fromstring(data)
    uid_node = root.find("uId")
    uid = uid_node.get("id", "") if uid_node is not None else ""
    sections = {node.get("Label", "").upper(): (node.text or "") for node in root.iter("AbstractText")}
    mesh = tuple((node.text or "").strip() for node in root.findall("MeSH/major") if (node.text or "").strip())
    images = tuple(node.get("id", "") for node in root.findall("parentImage") if node.get("id"))
    return IUReport(
        uid=uid,
        findings=clean_report(sections.get("FINDINGS", "")),
        impression=clean_report(sections.get("IMPRESSION", "")),
        indication=clean_report(sections.get("INDICATION", "")),
        mesh_major=mesh,
        image_ids=images,
    )


def read_iu_reports(path: str | os.PathLike[str], skipped: Counter[str] | None = None) -> list[IUReport]:
    """All reports in an archive (``NLMCXR_reports.tgz``) or a folder of XML files, by uid order."""
    path = Path(path)
    skipped = Counter() if skipped is None else skipped
    blobs: list[bytes] = []
    if path.is_dir():
        blobs = [p.read_bytes() for p in sorted(path.rglob("*.xml"))]
    else:
        try:
            with tarfile.open(path, "r:*") as archive:
                for member in archive:
                    if member.isfile() and member.name.endswith(".xml"):
                        stream = archive.extractfile(member)
                        if stream is not None:
                            blobs.append(stream.read())
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ImporterError(f"iu-xray: cannot read {path} as a report archive: {exc}") from None
    reports = []
    for blob in blobs:
        try:
            reports.append(parse_iu_report(blob))
        except ET.ParseError:
            skipped["report XML malformed"] += 1
    return sorted(reports, key=lambda r: (len(r.uid), r.uid))


# MeSH "major" heading (the part before the first "/") -> finding; qualifiers checked where a
# heading covers more than the finding (Cardiac Shadow/enlarged, Thickening/pleura, ...).
IU_MESH_FINDINGS: dict[str, str] = {
    "normal": "no_finding",
    "Cardiomegaly": "cardiomegaly",
    "Pleural Effusion": "pleural_effusion",
    "Pulmonary Atelectasis": "atelectasis",
    "Opacity": "opacity",
    "Airspace Disease": "opacity",
    "Density": "opacity",
    "Consolidation": "consolidation",
    "Pneumonia": "pneumonia",
    "Nodule": "nodule",
    "Mass": "mass",
    "Pulmonary Edema": "edema",
    "Pulmonary Congestion": "edema",
    "Heart Failure": "edema",
    "Pneumothorax": "pneumothorax",
    "Hydropneumothorax": "pneumothorax",
    "Hemopneumothorax": "pneumothorax",
    "Emphysema": "emphysema",
    "Pulmonary Emphysema": "emphysema",
    "Bullous Emphysema": "emphysema",
    "Pulmonary Disease, Chronic Obstructive": "emphysema",
    "Infiltrate": "infiltration",
    "Pulmonary Fibrosis": "fibrosis",
    "Fibrosis": "fibrosis",
    "Hernia, Hiatal": "hernia",
    "Hernia, Diaphragmatic": "hernia",
    "Fractures, Bone": "fracture",
    "Granuloma": "granuloma",
    "Calcified Granuloma": "granuloma",
    "Granulomatous Disease": "granuloma",
    "Scoliosis": "scoliosis",
    "Spondylosis": "degenerative_spine",
    "Osteophyte": "degenerative_spine",
    "Calcinosis": "calcification",
    "Atherosclerosis": "calcification",
    "Cicatrix": "scarring",
    "Diaphragmatic Eventration": "elevated_hemidiaphragm",
    "Catheters, Indwelling": "support_devices",
    "Implanted Medical Device": "support_devices",
    "Surgical Instruments": "support_devices",
    "Tube, Inserted": "support_devices",
    "Medical Device": "support_devices",
    "Stents": "support_devices",
    "Sutures": "support_devices",
}
_MESH_QUALIFIED: dict[tuple[str, str], str] = {
    ("Cardiac Shadow", "enlarged"): "cardiomegaly",
    ("Thickening", "pleura"): "pleural_thickening",
    ("Pleura", "thickening"): "pleural_thickening",
    ("Thoracic Vertebrae", "degenerative"): "degenerative_spine",
    ("Thoracic vertebrae", "degenerative"): "degenerative_spine",
    ("Spine", "degenerative"): "degenerative_spine",
    ("Lumbar Vertebrae", "degenerative"): "degenerative_spine",
    ("Cervical Vertebrae", "degenerative"): "degenerative_spine",
    ("Arthritis", "spine"): "degenerative_spine",
    ("Arthritis", "thoracic vertebrae"): "degenerative_spine",
    ("Arthritis", "cervical vertebrae"): "degenerative_spine",
    ("Lung", "hyperdistention"): "hyperinflation",
    ("Lung", "hypoinflation"): "hypoinflation",
    ("Aorta", "tortuous"): "tortuous_aorta",
    ("Aorta, Thoracic", "tortuous"): "tortuous_aorta",
    ("Diaphragm", "elevated"): "elevated_hemidiaphragm",
}
IU_MESH_NAMES: frozenset[str] = frozenset(IU_MESH_FINDINGS.values()) | frozenset(_MESH_QUALIFIED.values())
"""The findings that some MeSH term names (the others cannot be scored on IU X-ray)."""


def iu_mesh_findings(mesh_major: Sequence[str]) -> set[str]:
    """Finding names that an IU report's MeSH "major" terms name ("Cardiomegaly/mild" -> cardiomegaly)."""
    names = set()
    for term in mesh_major:
        heading, *qualifiers = [part.strip() for part in term.split("/")]
        if heading in IU_MESH_FINDINGS:
            names.add(IU_MESH_FINDINGS[heading])
        for qualifier in qualifiers:
            if (heading, qualifier) in _MESH_QUALIFIED:
                names.add(_MESH_QUALIFIED[heading, qualifier])
    return names


_IU_IMAGE_KEY = re.compile(r"(IM-\d+-\d+)", re.IGNORECASE)
FRONTAL_SYMMETRY = 0.3  # below this mirror correlation a lone image is taken for a lateral
FRONTAL_MARGIN = 0.15  # images within this of a report's most symmetric one are frontal too


def iu_image_key(report_uid: str, image_id: str) -> tuple[str, str]:
    """(report number, "IM-xxxx-xxxx"), the same for an Open-i id (CXR1_1_IM-0001-4001) and a
    Kaggle file name (1_IM-0001-4001.dcm.png)."""
    match = _IU_IMAGE_KEY.search(image_id)
    return report_uid.upper().removeprefix("CXR"), (match.group(1).upper() if match else image_id)


def symmetry_score(image: np.ndarray) -> float:
    """Correlation of a downsampled image with its mirror image: about 0.8 for frontal chest
    radiographs (two lungs about the spine), lower for laterals. A heuristic for when no
    projections file is given; a report's most symmetric image is taken as its frontal one."""
    small = cv2.resize(image.astype(np.float32), (64, 64), interpolation=cv2.INTER_AREA)
    small = (small - small.mean()) / (small.std() + 1e-6)
    return float((small * small[:, ::-1]).mean())


def read_projections(path: Path) -> dict[tuple[str, str], str]:
    """A projections CSV (Kaggle's indiana_projections.csv: uid, filename, projection) -> key -> FRONTAL / LATERAL."""
    names, rows = _read_table(path, "iu-xray")
    columns = {name.lower(): name for name in names}
    if "filename" not in columns or "projection" not in columns:
        raise ImporterError(f"iu-xray: {path} needs the columns filename,projection[,uid]")
    views = {}
    for _, row in rows:
        name = (row.get(columns["filename"]) or "").strip()
        projection = (row.get(columns["projection"]) or "").strip().lower()
        uid = (row.get(columns["uid"]) or "").strip() if "uid" in columns else name.split("_", 1)[0]
        if name and projection:
            views[iu_image_key(uid, name)] = "LATERAL" if projection.startswith("lat") else "FRONTAL"
    return views


def _iu_views(
    report: IUReport,
    images: list[tuple[str, Path]],
    projections: dict[tuple[str, str], str] | None,
    options: ImportOptions,
    result: ImportResult,
) -> dict[str, str]:
    """Image id -> FRONTAL / LATERAL: from the projections file, else guessed by symmetry among
    the report's images. An image that cannot be decoded gets no view (each image is decoded at
    most once: for the guess, or to verify it)."""
    views: dict[str, str] = {}
    unknown = []
    for image_id, path in images:
        view = projections.get(iu_image_key(report.uid, image_id)) if projections is not None else None
        if view is None:
            unknown.append((image_id, path))
        elif not options.verify_images or read_image(path, cv2.IMREAD_GRAYSCALE) is not None:
            views[image_id] = view
    if projections is not None and unknown:
        result.notes["image not in the projections file (view guessed)"] += len(unknown)
    scores = {}
    for image_id, path in unknown:
        pixels = read_image(path, cv2.IMREAD_GRAYSCALE)
        if pixels is not None:
            scores[image_id] = symmetry_score(pixels)
    best = max(scores.values(), default=0.0)
    for image_id, score in scores.items():
        views[image_id] = "FRONTAL" if score >= FRONTAL_SYMMETRY and score >= best - FRONTAL_MARGIN else "LATERAL"
    if projections is None and scores:
        result.notes["view guessed from left-right symmetry"] += len(scores)
    return views


def import_iu_xray(paths: Sequence[Path], manifest: Path, options: ImportOptions) -> ImportResult:
    _need_existing(paths, "iu-xray")
    # 1. sort the paths: report archives or XML folders, and image folders
    result = ImportResult()
    report_sources = [p for p in paths if p.is_file() or (p.is_dir() and next(p.rglob("*.xml"), None) is not None)]
    image_folders = [p for p in paths if p.is_dir() and p not in report_sources]
    if not report_sources:
        raise ImporterError("iu-xray: give the reports (NLMCXR_reports.tgz or its extracted folder)")
    if not image_folders:
        raise ImporterError("iu-xray: give the image folder (NLMCXR_png)")
    projections = read_projections(Path(options.projections)) if options.projections else None
    index: dict[str, Path] = {}
    for name, path in _image_index(image_folders).items():
        stem = name.rsplit(".", 1)[0].removesuffix(".dcm")
        index.setdefault(stem.upper(), path)

    # 2. one record per (frontal) image of each report with text
    for source in report_sources:
        for report in read_iu_reports(source, result.skipped):
            if result.full(options):
                return result
            if not report.text:
                result.skipped["image of a report without findings or impression"] += len(report.image_ids)
                continue
            if not report.image_ids:
                result.skipped["report without images"] += 1
                continue
            images = []
            for image_id in report.image_ids:
                path = index.get(image_id.upper())
                if path is None:
                    result.skipped["image file missing"] += 1
                else:
                    images.append((image_id, path))
            views = _iu_views(report, images, projections, options, result)
            findings = summarize(report.text) if views else {}
            for image_id, path in images:
                view = views.get(image_id)
                if view is None:
                    result.skipped["image unreadable"] += 1
                    continue
                if view == "LATERAL" and not options.include_lateral:
                    result.skipped["lateral view (use --include-lateral)"] += 1
                    continue
                if result.full(options):
                    return result
                result.records.append(
                    _record(
                        path,
                        manifest,
                        text=report.text,
                        findings=findings,
                        patient_id=report.uid,
                        view=view,
                        source="iu-xray",
                        label="; ".join(report.mesh_major) or None,
                    )
                )
    return result


# 4. NIH ChestX-ray14 ------------------------------------------------------------------------------

_NIH_REQUIRED = ("Image Index", "Finding Labels")


def import_nih(paths: Sequence[Path], manifest: Path, options: ImportOptions) -> ImportResult:
    _need_existing(paths, "nih")
    tables = [p for p in paths if p.is_file()]
    folders = [p for p in paths if p.is_dir()]
    if not tables:
        raise ImporterError("nih: give the label table (Data_Entry_2017*.csv or .csv.gz, or images.csv)")
    if not folders:
        raise ImporterError("nih: give the image folder(s)")
    index = _image_index(folders)
    result = ImportResult()
    # 1. rows from every table; the first row for an image wins
    rows: dict[str, dict[str, str]] = {}
    for table in tables:
        columns, numbered = _read_table(table, "nih")
        missing = [name for name in _NIH_REQUIRED if name not in columns]
        if missing:
            raise ImporterError(f"nih: {table} has no column(s) {', '.join(missing)}")
        for _, row in numbered:
            name = (row.get("Image Index") or "").strip()
            if not name or None in row or any(value is None for value in row.values()):
                result.skipped["malformed row"] += 1
            elif name in rows:
                result.skipped["duplicate row"] += 1
            else:
                rows[name] = row
    # 2. the rows whose image is there
    without_image = 0
    for name in sorted(rows):
        if result.full(options):
            break
        row = rows[name]
        path = index.get(name)
        if path is None:
            without_image += 1
            continue
        problem = _check_image(path, options)
        if problem:
            result.skipped[problem] += 1
            continue
        labels = [label.strip() for label in (row.get("Finding Labels") or "").split("|") if label.strip()]
        age = _age_years(row.get("Patient Age"))
        if row.get("Patient Age") and age is None:
            result.notes["implausible age left out"] += 1
        sex = (row.get("Patient Gender") or "").strip().upper() or None
        sex = sex if sex in ("M", "F") else None
        view = (row.get("View Position") or "").strip().upper()
        view = view if view in ("PA", "AP") else "UNKNOWN"
        try:
            caption = nih_caption(
                labels, caption_rng(options.seed, name), age=age, sex=sex, view=view if view != "UNKNOWN" else None
            )
        except CaptionError:
            result.skipped["unknown finding label"] += 1
            continue
        patient = (row.get("Patient ID") or "").strip() or name.split("_", 1)[0]
        result.records.append(
            _record(
                path,
                manifest,
                text=caption.text,
                findings=caption.findings,
                patient_id=f"NIH-{int(patient):08d}" if patient.isdigit() else f"NIH-{patient}",
                view=view,
                source="nih",
                age=age,
                sex=sex,
                label="|".join(labels),
            )
        )
    if without_image:
        result.notes["table rows without an image in the folders"] += without_image
    return result


# 5. CSV (path, text[, findings]) ------------------------------------------------------------------


def parse_findings(text: str) -> dict[str, str]:
    """A findings cell: a JSON object {"name": "status"} or "name:status; name" (status defaults to present)."""
    text = text.strip()
    if text.startswith("{"):
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("findings JSON must be an object")
        items = [(str(k), str(v)) for k, v in data.items()]
    else:
        items = []
        for part in re.split(r"[;|]", text):
            name, _, status = part.partition(":")
            if name.strip():
                items.append((name.strip(), status.strip() or "present"))
    findings = {}
    for name, status in items:
        if name not in FINDINGS:
            raise ValueError(f"unknown finding {name!r}")
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        findings[name] = status
    return findings


def import_csv(paths: Sequence[Path], manifest: Path, options: ImportOptions) -> ImportResult:
    _need_existing(paths, "csv")
    result = ImportResult()
    for table in paths:
        if not table.is_file():
            raise ImporterError(f"csv: {table} is not a file")
        names, rows = _read_table(table, "csv")
        columns = {name.strip().lower(): name for name in names}
        if "path" not in columns or "text" not in columns:
            raise ImporterError(f"csv: {table} needs the columns path,text[,findings,patient_id,view,age,sex,label]")
        for line, row in rows:
            if result.full(options):
                return result
            where = f"{table}, line {line}"
            cell = {key: (row.get(name) or "").strip() for key, name in columns.items()}
            if None in row:
                result.skip(where, "malformed row (extra cells)")
                continue
            if not cell["path"] or not cell["text"]:
                result.skip(where, "malformed row (no path or text)")
                continue
            image = Path(cell["path"])
            image = image if image.is_absolute() else table.parent / image
            problem = _check_image(image, options)
            if problem:
                result.skip(where, problem)
                continue
            try:
                findings = parse_findings(cell["findings"]) if cell.get("findings") else summarize(cell["text"])
            except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
                result.skip(where, "malformed findings")
                continue
            view = cell.get("view", "").upper() or "UNKNOWN"
            if view not in VIEWS:
                result.skip(where, "unknown view")
                continue
            age = _age_years(cell["age"]) if cell.get("age") else None
            if cell.get("age") and age is None:
                result.skip(where, f"age {cell['age']!r} is not whole years from {AGE_RANGE[0]} to {AGE_RANGE[1]}")
                continue
            sex = cell.get("sex", "").upper() or None
            if sex not in (None, "M", "F"):
                result.skip(where, "unknown sex")
                continue
            patient = cell.get("patient_id") or ""
            if not patient:
                patient = image.stem
                result.notes["no patient_id: the image stands for its patient"] += 1
            result.records.append(
                _record(
                    image,
                    manifest,
                    text=cell["text"],
                    findings=findings,
                    patient_id=patient,
                    view=view,
                    source="csv",
                    age=age,
                    sex=sex,
                    label=cell.get("label") or None,
                )
            )
    return result


# 6. DICOM ----------------------------------------------------------------------------------------

_NOT_DICOM_SUFFIXES = (".txt", ".json", ".csv", ".md", ".xml", ".png", ".jpg", ".jpeg")


class DicomSkip(Exception):
    """A DICOM file that cannot become a training image; the message is the reason."""


def dicom_to_float(ds: pydicom.Dataset, clip_percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """A single-frame greyscale dataset -> float32 (H, W) in [0, 1], 0 = black.

    1. stored values -> modality LUT / rescale (``apply_modality_lut``);
    2. VOI LUT or window, when the file has one (``apply_voi_lut``);
    3. MONOCHROME1 (0 = white) inverted to MONOCHROME2;
    4. the ``clip_percentiles`` of the pixels mapped to 0 and 1, clipping the tails (collimator
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
        values = apply_modality_lut(pixels, ds)
        if "VOILUTSequence" in ds or "WindowCenter" in ds:
            values = apply_voi_lut(values, ds)
    except Exception as exc:  # a malformed rescale, LUT or window value raises one of many types
        raise DicomSkip(f"modality or VOI LUT / window unusable ({type(exc).__name__}: {exc})") from None
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise DicomSkip("pixel values not finite after the modality or VOI LUT")
    if photometric == "MONOCHROME1":
        values = values.max() + values.min() - values
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
    return _record(
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
    _need_existing(paths, "dicom")
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
        ok, buffer = cv2.imencode(".png", float_to_stored(image, options.bits))
        if not ok:
            result.skip(str(path), "PNG encoding failed")
            continue
        png = image_folder / name
        try:
            png.write_bytes(buffer.tobytes())
        except OSError as exc:
            raise ImporterError(
                f"dicom: cannot write {out_folder / name} (from {path}): {exc.strerror or exc}"
            ) from None
        result.records.append(record)
    return result


def _import_dicom_staged(
    paths: Sequence[Path], manifest: Path, options: ImportOptions, val_frac: float, test_frac: float
) -> tuple[ImportResult, list[ManifestRecord]]:
    """:func:`import_dicom` into a staging folder, moved into place when every PNG is written; the
    manifest last. On any failure neither the new images nor a manifest remain, and an earlier
    import's images (``--overwrite``) are put back."""
    folder = dicom_image_folder(manifest)
    if folder.exists() and not folder.is_dir():
        raise ImporterError(f"dicom: {folder} exists and is not a folder")
    if folder_in_use(folder) and not manifest.exists():
        raise ImporterError(f"dicom: {folder} holds files but {manifest.name} does not exist; move them away first")
    aside = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(aside, ignore_errors=True)  # left by a killed import: the manifest never named it
    records: list[ManifestRecord] = []
    moved_in = False
    try:
        with staged_folder(folder) as staging:
            result = import_dicom(paths, manifest, options, image_folder=staging)
            records = assign_splits(result.records, seed=options.seed, val_frac=val_frac, test_frac=test_frac)
            if not records:
                raise _NothingImported
            if folder.exists():  # an earlier import's images: set aside until the new manifest is written
                os.replace(folder, aside)
        moved_in = True
        write_manifest(manifest, records)
    except _NothingImported:
        return result, []
    except BaseException:
        if moved_in:  # the new images without their manifest
            shutil.rmtree(folder, ignore_errors=True)
        if aside.exists():
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(aside, folder)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return result, records


class _NothingImported(Exception):
    """No record: the staging folder is dropped and nothing is written."""


# 7. all kinds ------------------------------------------------------------------------------------

Importer = Callable[[Sequence[Path], Path, ImportOptions], ImportResult]
IMPORTERS: dict[str, Importer] = {
    "pediatric": import_pediatric,
    "iu-xray": import_iu_xray,
    "nih": import_nih,
    "csv": import_csv,
    "dicom": import_dicom,
}


def run_import(
    kind: str,
    paths: Sequence[str | os.PathLike[str]],
    manifest: str | os.PathLike[str],
    options: ImportOptions | None = None,
    *,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
) -> tuple[ImportSummary, ImportResult]:
    """Import, split by patient, write the manifest; returns the summary and the raw result.

    Nothing is written when no record could be made (the summary's skip reasons say why).
    """
    # 1. check the arguments before anything is read or written
    if kind not in IMPORTERS:
        raise ImporterError(f"unknown kind {kind!r}; one of {', '.join(IMPORTERS)}")
    options = (options or ImportOptions()).validated()
    try:
        check_fractions(val_frac, test_frac)
    except ValueError as exc:
        raise ImporterError(str(exc)) from None
    manifest = Path(manifest)
    if manifest.suffix.lower() not in (".jsonl", ".json"):
        raise ImporterError(f"the manifest must be a .jsonl file, not {manifest.name!r}")
    if not manifest.parent.resolve().is_dir():
        raise ImporterError(f"the folder {manifest.parent} does not exist")
    # 2. import, split, write (the DICOM importer's PNGs staged, the manifest last)
    if kind == "dicom":
        result, records = _import_dicom_staged([Path(p) for p in paths], manifest, options, val_frac, test_frac)
    else:
        result = IMPORTERS[kind]([Path(p) for p in paths], manifest, options)
        records = assign_splits(result.records, seed=options.seed, val_frac=val_frac, test_frac=test_frac)
        if records:
            write_manifest(manifest, records)
    summary = ImportSummary(records, Counter(result.skipped), Counter(result.notes))
    return summary, result


__all__ = [
    "IMPORTERS",
    "IU_MESH_FINDINGS",
    "IU_MESH_NAMES",
    "IUReport",
    "ImportOptions",
    "ImportResult",
    "ImporterError",
    "dicom_image_folder",
    "dicom_to_float",
    "import_csv",
    "import_dicom",
    "import_iu_xray",
    "import_nih",
    "import_pediatric",
    "iu_mesh_findings",
    "kermany_label",
    "kermany_patient_id",
    "parse_findings",
    "parse_iu_report",
    "read_iu_reports",
    "run_import",
    "symmetry_score",
]
