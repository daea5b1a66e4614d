""":func:`run_import`: check the arguments, run one importer (:data:`IMPORTERS`), split by patient
and write the manifest.

The DICOM importer writes its PNGs into a staging folder beside ``MANIFEST-STEM_images/`` and
moves it into place only when every image is written; the manifest is written last, so a failed
import (a full disk included) leaves neither images nor a manifest, and an earlier import's stay.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from engine.fileio import folder_in_use, staged_folder
from engine.manifest import ImportSummary, ManifestRecord, assign_splits, check_fractions, write_manifest
from training.data.importers.common import ImporterError, ImportOptions, ImportResult
from training.data.importers.csv_table import import_csv
from training.data.importers.dicom import dicom_image_folder, import_dicom
from training.data.importers.hannover import import_hannover
from training.data.importers.iu_xray import import_iu_xray
from training.data.importers.merge import merge_manifests
from training.data.importers.nih import import_nih
from training.data.importers.pediatric import import_pediatric


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


Importer = Callable[[Sequence[Path], Path, ImportOptions], ImportResult]
IMPORTERS: dict[str, Importer] = {
    "pediatric": import_pediatric,
    "iu-xray": import_iu_xray,
    "nih": import_nih,
    "csv": import_csv,
    "dicom": import_dicom,
    "hannover": import_hannover,
    "merge": merge_manifests,
}
KEEPS_SPLITS = frozenset({"merge"})  # its records come split already (by each source's import)


def run_import(
    kind: str,
    paths: Sequence[str | os.PathLike[str]],
    manifest: str | os.PathLike[str],
    options: ImportOptions | None = None,
    *,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
) -> tuple[ImportSummary, ImportResult]:
    """Import, split by patient (a merge keeps its manifests' splits), write the manifest; returns the
    summary and the raw result.

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
        if kind in KEEPS_SPLITS:
            records = result.records
        else:
            records = assign_splits(result.records, seed=options.seed, val_frac=val_frac, test_frac=test_frac)
        if records:
            write_manifest(manifest, records)
    summary = ImportSummary(records, Counter(result.skipped), Counter(result.notes))
    return summary, result


__all__ = [
    "IMPORTERS",
    "KEEPS_SPLITS",
    "Importer",
    "run_import",
]
