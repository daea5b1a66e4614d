"""``merge``: several manifests (one per source: ``import pediatric``, ``import nih``, ``import hannover``)
-> one, for one training run on all of them (``train diffusion --data`` reads one manifest).

Why not ``cat``: image paths are relative to each manifest's folder, so concatenated manifests from
different folders point at the wrong files. Here each record's image is resolved from its own
manifest and written relative to the merged one (absolute when outside its folder).

Splits are kept as each source's import drew them (by patient, ``engine.manifest.split_of``), never
drawn again: a patient stays in its split. Refused, naming both manifests: a patient id in two
splits, a patient id in two sources (two people who would be counted as one), and an image listed
twice; and a manifest that does not exist or has a bad line (the reader's message, with the line).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from engine.manifest import ManifestError, ManifestRecord, iter_manifest, relative_image_path, resolve_image
from training.data.importers.common import ImporterError, ImportOptions, ImportResult, collect


def _records(path: Path) -> Iterator[ManifestRecord]:
    """A manifest's records one at a time; a bad line is an :class:`ImporterError` naming it."""
    try:
        yield from iter_manifest(path)
    except (ManifestError, UnicodeDecodeError) as exc:
        raise ImporterError(f"merge: {exc}") from None


def iter_merged(
    paths: Sequence[Path], manifest: Path, options: ImportOptions, result: ImportResult
) -> Iterator[ManifestRecord]:
    """The records of ``paths`` in order, images re-pointed for ``manifest``, splits kept; ``options``
    are not used (a merge draws nothing)."""
    if len(paths) < 2:
        raise ImporterError("merge: give two or more manifests (.jsonl)")
    patients: dict[str, tuple[str, str, str]] = {}  # patient id -> (split, source, manifest name)
    images: dict[str, str] = {}  # resolved image -> manifest name
    for path in paths:
        if not path.is_file():
            raise ImporterError(f"merge: {path} does not exist or is not a file")
        count = 0
        for record in _records(path):
            image = str(resolve_image(record, path).resolve())
            if image in images:
                raise ImporterError(f"merge: image {image} is in {images[image]} and in {path.name}")
            images[image] = path.name
            split, source, where = patients.setdefault(record.patient_id, (record.split, record.source, path.name))
            if source != record.source:
                raise ImporterError(
                    f"merge: patient id {record.patient_id!r} is in source {source} ({where}) and "
                    f"{record.source} ({path.name}); give one source distinct ids"
                )
            if split != record.split:
                raise ImporterError(
                    f"merge: patient {record.patient_id!r} is in split {split} in {where} and in {record.split} "
                    f"in {path.name}; import the sources with the same --seed"
                )
            yield replace(record, image=relative_image_path(Path(image), manifest))
            count += 1
        result.notes[f"images from {path.name}"] += count


def merge_manifests(paths: Sequence[Path], manifest: Path, options: ImportOptions) -> ImportResult:
    """The records of :func:`iter_merged` as a list (``run_import`` streams them instead)."""
    return collect(iter_merged, paths, manifest, options)


__all__ = [
    "iter_merged",
    "merge_manifests",
]
