"""``csv``: ``path,text[,findings][,patient_id][,view][,age][,sex][,label]`` with paths relative to
the CSV; every skipped line is named in ``ImportResult.skipped_items``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from engine.findings.reader import summarize
from engine.findings.vocabulary import FINDINGS, STATUSES
from engine.manifest import VIEWS, ManifestRecord
from training.data.importers.common import (
    AGE_RANGE,
    ImporterError,
    ImportOptions,
    ImportResult,
    age_years,
    check_image,
    collect,
    make_record,
    need_existing,
    read_table,
)


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


def iter_csv(
    paths: Sequence[Path], manifest: Path, options: ImportOptions, result: ImportResult
) -> Iterator[ManifestRecord]:
    need_existing(paths, "csv")
    for table in paths:
        if not table.is_file():
            raise ImporterError(f"csv: {table} is not a file")
        names, rows = read_table(table, "csv")
        columns = {name.strip().lower(): name for name in names}
        if "path" not in columns or "text" not in columns:
            raise ImporterError(f"csv: {table} needs the columns path,text[,findings,patient_id,view,age,sex,label]")
        for line, row in rows:
            if result.full(options):
                return
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
            problem = check_image(image, options)
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
            age = age_years(cell["age"]) if cell.get("age") else None
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
            yield (
                make_record(
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


def import_csv(paths: Sequence[Path], manifest: Path, options: ImportOptions) -> ImportResult:
    """The records of :func:`iter_csv` as a list (``run_import`` streams them instead)."""
    return collect(iter_csv, paths, manifest, options)


__all__ = [
    "import_csv",
    "iter_csv",
    "parse_findings",
]
