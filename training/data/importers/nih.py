"""``nih``: ``Data_Entry_2017*.csv(.gz)`` (or the subset's ``images.csv``) and image folders:
captions from labels, age, sex and view, for the rows whose image is there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from engine.manifest import ManifestRecord
from training.data.captions import CaptionError, caption_rng, nih_caption
from training.data.importers.common import (
    ImporterError,
    ImportOptions,
    ImportResult,
    age_years,
    check_image,
    collect,
    image_index,
    make_record,
    need_existing,
    table_rows,
)

_NIH_REQUIRED = ("Image Index", "Finding Labels")


def iter_nih(
    paths: Sequence[Path], manifest: Path, options: ImportOptions, result: ImportResult
) -> Iterator[ManifestRecord]:
    need_existing(paths, "nih")
    tables = [p for p in paths if p.is_file()]
    folders = [p for p in paths if p.is_dir()]
    if not tables:
        raise ImporterError("nih: give the label table (Data_Entry_2017*.csv or .csv.gz, or images.csv)")
    if not folders:
        raise ImporterError("nih: give the image folder(s)")
    index = image_index(folders)
    # 1. rows from every table; the first row for an image wins (held: the rows, to import them in name order)
    table = table_rows(
        tables, "nih", _NIH_REQUIRED, result, key="Image Index", whole=True, missing="malformed row",
        duplicate="duplicate row",
    )  # fmt: skip
    rows = {item.key: item.row for item in table}
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
        problem = check_image(path, options)
        if problem:
            result.skipped[problem] += 1
            continue
        labels = [label.strip() for label in (row.get("Finding Labels") or "").split("|") if label.strip()]
        age = age_years(row.get("Patient Age"))
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
        yield (
            make_record(
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


def import_nih(paths: Sequence[Path], manifest: Path, options: ImportOptions) -> ImportResult:
    """The records of :func:`iter_nih` as a list (``run_import`` streams them instead)."""
    return collect(iter_nih, paths, manifest, options)


__all__ = [
    "import_nih",
    "iter_nih",
]
