"""What every importer shares: :class:`ImportOptions`, :class:`ImportResult`, :class:`ImporterError`,
and the helpers that check images, read tables (CSV or CSV.GZ) and make manifest records.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import math
import os
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.manifest import ManifestRecord, relative_image_path

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


RecordStream = Callable[[Sequence[Path], Path, ImportOptions, ImportResult], Iterator[ManifestRecord]]
"""An importer's records one at a time (``paths, manifest, options, result``): the skipped items and
notes go to ``result`` as they happen, the records are yielded, so that ``run_import`` writes them
line by line (``engine.manifest.write_manifest``) and never holds them."""


def collect(records: RecordStream, paths: Sequence[Path], manifest: Path, options: ImportOptions) -> ImportResult:
    """An importer's records as a list in an :class:`ImportResult` (``options.limit`` of them at most)."""
    result = ImportResult()
    result.records.extend(itertools.islice(records(paths, manifest, options, result), options.limit))
    return result


def read_image(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray | None:
    """An image decoded by OpenCV (any path, also non-ASCII), or None when it cannot be read."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    return cv2.imdecode(data, flags)


def check_image(path: Path, options: ImportOptions) -> str | None:
    """Why an image cannot be used, or None."""
    if not path.is_file():
        return "image file missing"
    if options.verify_images and read_image(path, cv2.IMREAD_GRAYSCALE) is None:
        return "image unreadable"
    return None


def need_existing(paths: Sequence[Path], kind: str) -> None:
    if not paths:
        raise ImporterError(f"{kind}: give at least one path")
    for path in paths:
        if not path.exists():
            raise ImporterError(f"{kind}: {path} does not exist")


def read_table(path: Path, kind: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
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


@dataclass(frozen=True)
class TableRow:
    """One row of a source's table: where it is ("TABLE, line N"), its key cell and its cells."""

    where: str
    key: str
    row: dict[str, str]


def table_rows(
    tables: Sequence[Path],
    kind: str,
    required: Sequence[str],
    result: ImportResult,
    *,
    key: str,
    filled: Sequence[str] = (),
    whole: bool = False,
    missing: str,
    duplicate: str,
) -> Iterator[TableRow]:
    """The rows of ``tables`` in order, one at a time, for the importers that read a source's label
    table: each table must have the ``required`` columns (else :class:`ImporterError`); a row whose
    ``key`` cell or a ``filled`` cell is empty (or, with ``whole``, a line with too few or too many
    cells) is skipped by name as ``missing``, a key seen before as ``duplicate`` (``{key}`` in it
    names the key): the first row of a key wins. What is held: the keys seen."""
    seen: set[str] = set()
    for table in tables:
        columns, numbered = read_table(table, kind)
        absent = [name for name in required if name not in columns]
        if absent:
            raise ImporterError(f"{kind}: {table} has no column(s) {', '.join(absent)}")
        for line, row in numbered:
            where = f"{table.name}, line {line}"
            value = (row.get(key) or "").strip()
            broken = whole and (None in row or any(cell is None for cell in row.values()))
            if not value or broken or any(not (row.get(name) or "").strip() for name in filled):
                result.skip(where, missing)
                continue
            if value in seen:
                result.skip(where, duplicate.format(key=value))
                continue
            seen.add(value)
            yield TableRow(where, value, row)


AGE_RANGE = (0, 120)  # whole years, as engine.manifest accepts them


def age_years(text: str | None) -> int | None:
    """An age cell ("58", "058Y", "58.0") -> whole years, or None when it is no finite number of
    years in :data:`AGE_RANGE` (NIH's own table holds ages such as 412)."""
    try:
        value = float((text or "").strip().rstrip("Yy"))
    except ValueError:
        return None
    if not math.isfinite(value) or not AGE_RANGE[0] <= value <= AGE_RANGE[1]:
        return None
    return int(value)


def image_index(folders: Sequence[Path], suffixes: Sequence[str] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """File name -> path for every image under the folders (the first one wins)."""
    index: dict[str, Path] = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
            for name in sorted(files):
                if name.lower().endswith(tuple(suffixes)) and not name.startswith("._"):
                    index.setdefault(name, Path(root) / name)
    return index


def make_record(image: Path, manifest: Path, **fields: object) -> ManifestRecord:
    return ManifestRecord(image=relative_image_path(image, manifest), **fields).validated(need_split=False)


__all__ = [
    "AGE_RANGE",
    "IMAGE_SUFFIXES",
    "ImportOptions",
    "ImportResult",
    "ImporterError",
    "RecordStream",
    "TableRow",
    "age_years",
    "check_image",
    "collect",
    "image_index",
    "make_record",
    "need_existing",
    "read_image",
    "read_table",
    "table_rows",
]
