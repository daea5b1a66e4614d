""":func:`run_import`: check the arguments, run one importer (:data:`IMPORTERS`), split by patient
and write the manifest.

The kinds of :data:`STREAMS` go from the source to the manifest one record at a time (100k+ records
are never a list): a split is a hash of the patient id (``engine.manifest.split_of``), so no list of
patients is needed either. What an import holds is the importer's own index (the image files found,
NIH's table rows to import them in name order, a merge's images and patients to refuse repeats) and
then, for the summary, counts and each split's patient ids, read back from the written manifest.

The DICOM importer writes its PNGs into a staging folder beside ``MANIFEST-STEM_images/`` and
moves it into place only when every image is written; the manifest is written last, so a failed
import (a full disk included) leaves neither images nor a manifest, and an earlier import's stay.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from engine.fileio import folder_in_use, staged_folder
from engine.manifest import (
    ImportSummary,
    ManifestRecord,
    assign_splits,
    check_fractions,
    iter_manifest,
    split_of,
    write_manifest,
)
from training.data.importers.common import ImporterError, ImportOptions, ImportResult, RecordStream
from training.data.importers.csv_table import import_csv, iter_csv
from training.data.importers.dicom import dicom_image_folder, import_dicom
from training.data.importers.hannover import import_hannover, iter_hannover
from training.data.importers.iu_xray import import_iu_xray
from training.data.importers.merge import iter_merged, merge_manifests
from training.data.importers.nih import import_nih, iter_nih
from training.data.importers.pediatric import import_pediatric, iter_pediatric


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


STREAMS: dict[str, RecordStream] = {
    "pediatric": iter_pediatric,
    "nih": iter_nih,
    "csv": iter_csv,
    "hannover": iter_hannover,
    "merge": iter_merged,
}
"""The kinds whose records stream into the manifest (the DICOM importer stages its PNGs, then writes
its records; IU X-ray builds its list)."""


def _write_streamed(manifest: Path, records: Iterator[ManifestRecord]) -> int:
    """Write ``records`` (``engine.manifest.write_manifest``: atomic, line by line); 0 and nothing
    written (an earlier manifest kept) when there are none."""
    count = 0

    def counted() -> Iterator[ManifestRecord]:
        nonlocal count
        for record in records:
            count += 1
            yield record
        if not count:
            raise _NothingImported  # write_manifest removes its temporary file

    try:
        write_manifest(manifest, counted())
    except _NothingImported:
        return 0
    return count


class _Written(Sequence[ManifestRecord]):
    """The records just written, read again from the manifest by each pass of the summary, so that an
    import never holds them (the summary holds counts and, per split, the patient ids)."""

    def __init__(self, path: Path, count: int):
        self.path, self.count = path, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[ManifestRecord]:
        return iter_manifest(self.path)

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        return list(self)[index]  # not used by the summary; a list's answer, read whole


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
    if kind in STREAMS:  # one record at a time from the source to the manifest
        result = ImportResult()
        streamed = itertools.islice(STREAMS[kind]([Path(p) for p in paths], manifest, options, result), options.limit)
        if kind not in KEEPS_SPLITS:  # the split is a hash of the patient id: no list of patients is needed
            split = functools.partial(split_of, seed=options.seed, val_frac=val_frac, test_frac=test_frac)
            streamed = (replace(record, split=split(record.patient_id)) for record in streamed)
        count = _write_streamed(manifest, streamed)
        written = _Written(manifest, count) if count else []
        return ImportSummary(written, Counter(result.skipped), Counter(result.notes)), result
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
    "STREAMS",
    "Importer",
    "run_import",
]
