"""``hannover``: the COVID-19 image repository of Hannover Medical School (Winther HB et al.,
doi:10.6084/m9.figshare.12275009, CC BY 3.0: attribute the authors wherever the data or a model
trained on it is shown): ``data.csv`` (patient_id, image_id, sex, projection, ...) and the image
folder (``IMAGE_ID.png``).

What a record says, and why no more:
- ``patient_id`` the source's (the split is by patient; one patient has several films);
- ``view`` from ``projection`` (``ap`` / ``pa``; anything else ``UNKNOWN``), ``sex`` from ``m`` / ``f``;
- ``age_band`` "adult": the source redacts every age but is a data set of adults. It is a band, not
  an age; patients over 65 (AGE_BANDS' ``older_adult``) are surely among them, but nothing says which;
- ``findings`` empty: every patient had COVID-19, but no finding is labelled per image (many are
  intensive-care films with lines, tubes and electrodes, some with clear lungs), so none is
  invented, and the study is not called normal either;
- ``label`` "COVID-19", and a caption (:func:`training.data.captions.covid_caption`) that states
  adult, the view, the sex and the diagnosis, which engine.findings reads as no finding.

Rows without a patient or image id, an image listed twice, and missing or unreadable images are
skipped by name (table and line, or the image id).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from engine.manifest import ManifestRecord
from training.data.captions import caption_rng, covid_caption
from training.data.importers.common import (
    IMAGE_SUFFIXES,
    ImporterError,
    ImportOptions,
    ImportResult,
    check_image,
    collect,
    image_index,
    make_record,
    need_existing,
    table_rows,
)

_REQUIRED = ("patient_id", "image_id")
_VIEWS = {"ap": "AP", "pa": "PA"}
_SEXES = {"m": "M", "f": "F"}
LABEL = "COVID-19"


def iter_hannover(
    paths: Sequence[Path], manifest: Path, options: ImportOptions, result: ImportResult
) -> Iterator[ManifestRecord]:
    need_existing(paths, "hannover")
    tables = [p for p in paths if p.is_file()]
    folders = [p for p in paths if p.is_dir()]
    if not tables:
        raise ImporterError("hannover: give data.csv (the source's table) and the image folder")
    if not folders:
        raise ImporterError("hannover: give the image folder (IMAGE_ID.png files)")
    index = image_index(folders)
    rows = table_rows(tables, "hannover", _REQUIRED, result, key="image_id", filled=("patient_id",),
                      missing="no patient_id or image_id", duplicate="image {key} listed twice")  # fmt: skip
    for item in rows:
        row, image_id, patient = item.row, item.key, (item.row.get("patient_id") or "").strip()
        path = next(
            (index[name] for name in (image_id, *(image_id + s for s in IMAGE_SUFFIXES)) if name in index), None
        )
        problem = "image file missing" if path is None else check_image(path, options)
        if problem:
            result.skip(image_id, problem)
            continue
        view = _VIEWS.get((row.get("projection") or "").strip().lower(), "UNKNOWN")
        sex = _SEXES.get((row.get("sex") or "").strip().lower())
        if view == "UNKNOWN":
            result.notes["projection not ap or pa: view UNKNOWN"] += 1
        if sex is None:
            result.notes["sex not m or f: left out"] += 1
        caption = covid_caption(
            caption_rng(options.seed, path.name), view=None if view == "UNKNOWN" else view, sex=sex
        )
        yield (
            make_record(
                path,
                manifest,
                text=caption.text,
                findings=caption.findings,
                patient_id=patient,
                view=view,
                source="hannover",
                sex=sex,
                age_band="adult",
                label=LABEL,
            )
        )
        if result.full(options):
            break


def import_hannover(paths: Sequence[Path], manifest: Path, options: ImportOptions) -> ImportResult:
    """The records of :func:`iter_hannover` as a list (``run_import`` streams them instead)."""
    return collect(iter_hannover, paths, manifest, options)


__all__ = [
    "LABEL",
    "import_hannover",
    "iter_hannover",
]
