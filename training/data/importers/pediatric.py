"""``pediatric``: the Kermany paediatric set, as ``labels.csv`` (file, label, patient_id) beside an
``images/`` folder, or the original Kaggle ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}``
layout (type and patient from names like ``person1_bacteria_1.jpeg``, ``IM-0115-0001.jpeg``).

Every record gets ``age_band`` "child" and no ``age``: the source gives no age per image, only that
the patients were one to five years old (Kermany et al. 2018). "child" (AGE_BANDS: 2 to 12) is an
approximation: the one-year-olds among them are "infant" (0 to 2) by AGE_BANDS, but nothing says
which images those are, most of the span is child, and the prompt word "paediatric" (the header of
every caption here) reads as child. Without a band these images had no age-band token in training
(engine.conditioning.record_of_manifest), so a model on children and adults could not tell them apart
by record. Splitting the band between infant and child at random would invent ages; leaving it out
loses what the source does say.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from engine.manifest import ManifestRecord
from training.data.captions import PAEDIATRIC_LABELS, caption_rng, paediatric_caption
from training.data.importers.common import (
    IMAGE_SUFFIXES,
    ImporterError,
    ImportOptions,
    ImportResult,
    check_image,
    collect,
    make_record,
    need_existing,
    read_table,
)

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
        columns, numbered = read_table(labels, "pediatric")
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


def iter_pediatric(
    paths: Sequence[Path], manifest: Path, options: ImportOptions, result: ImportResult
) -> Iterator[ManifestRecord]:
    need_existing(paths, "pediatric")
    for root in paths:
        if not root.is_dir():
            raise ImporterError(f"pediatric: {root} is not a folder")
        for image, label, patient in _pediatric_rows(root, result):
            if result.full(options):
                return
            if label not in PAEDIATRIC_LABELS:
                result.skipped[f"unknown label {label!r}"] += 1
                continue
            problem = check_image(image, options)
            if problem:
                result.skipped[problem] += 1
                continue
            caption = paediatric_caption(label, caption_rng(options.seed, image.name))
            yield (
                make_record(
                    image,
                    manifest,
                    text=caption.text,
                    findings=caption.findings,
                    patient_id=patient,
                    view="AP",
                    source="pediatric",
                    label=label,
                    age_band="child",
                )
            )


def import_pediatric(paths: Sequence[Path], manifest: Path, options: ImportOptions) -> ImportResult:
    """The records of :func:`iter_pediatric` as a list (``run_import`` streams them instead)."""
    return collect(iter_pediatric, paths, manifest, options)


__all__ = [
    "import_pediatric",
    "iter_pediatric",
    "kermany_label",
    "kermany_patient_id",
]
