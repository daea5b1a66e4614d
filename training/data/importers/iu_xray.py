"""``iu-xray``: Open-i's ``NLMCXR_reports.tgz`` (or its extracted XML folder) and ``NLMCXR_png``:
FINDINGS + IMPRESSION text with "XXXX" cleaned, MeSH kept as the label, frontal images only
unless asked (view from a projections CSV such as Kaggle's ``indiana_projections.csv``, else
guessed from left-right symmetry, see :func:`symmetry_score`).
"""

from __future__ import annotations

import os
import re
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.findings.reader import clean_report, summarize
from training.data.importers.common import (
    ImporterError,
    ImportOptions,
    ImportResult,
    image_index,
    make_record,
    need_existing,
    read_image,
    read_table,
)


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
    names, rows = read_table(path, "iu-xray")
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
    need_existing(paths, "iu-xray")
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
    for name, path in image_index(image_folders).items():
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
                    make_record(
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


__all__ = [
    "IU_MESH_FINDINGS",
    "IU_MESH_NAMES",
    "IUReport",
    "import_iu_xray",
    "iu_image_key",
    "iu_mesh_findings",
    "parse_iu_report",
    "read_iu_reports",
    "read_projections",
    "symmetry_score",
]
