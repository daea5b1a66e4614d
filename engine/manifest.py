"""The one manifest format every importer writes: JSON Lines, one record per image.

Each line is an object with
- ``image``: the image file, relative to the manifest's folder (or absolute when outside it);
- ``text``: the caption or report the model is conditioned on;
- ``findings``: finding name (``engine.findings.FINDINGS``) -> ``present`` / ``absent`` / ``uncertain``;
- ``patient_id``, ``view`` (``PA``, ``AP``, ``FRONTAL``, ``LATERAL``, ``UNKNOWN``), ``split``
  (``train`` / ``val`` / ``test``), ``source`` (the importer kind);
- optional ``age`` (whole years), ``sex`` (``M`` / ``F``), ``label`` (the source's own label text) and
  ``age_band`` (one of ``engine.findings.record.AGE_BANDS``: for sources that give a band but no
  age, such as Kermany's children of one to five or Hannover's adults with the age redacted; when
  ``age`` is there too, the age's band must be this one).
Unknown keys are an error when reading, so a typo never passes silently.

Splits are by patient: ``sha256(seed, patient_id)`` mapped to [0, 1) picks the split, so a patient's
images always share one, the same seed always gives the same split, and adding images or
sources never moves a patient.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from engine.fileio import _umask, fsync_dir
from engine.findings.record import AGE_BANDS, band_of
from engine.findings.vocabulary import FINDINGS, PRESENT, STATUSES
from engine.jsonfields import refuse_unknown_keys

SPLITS = ("train", "val", "test")
VIEWS = ("PA", "AP", "FRONTAL", "LATERAL", "UNKNOWN")
SEXES = ("M", "F")
REQUIRED_KEYS = ("image", "text", "findings", "patient_id", "view", "split", "source")
OPTIONAL_KEYS = ("age", "sex", "label", "age_band")


class ManifestError(ValueError):
    """A manifest line or record that breaks the format; the message names the line and the key."""


@dataclass(frozen=True)
class ManifestRecord:
    """One image. ``split`` is "" until :func:`assign_splits` sets it."""

    image: str
    text: str
    findings: dict[str, str]
    patient_id: str
    view: str
    source: str
    split: str = ""
    age: int | None = None
    sex: str | None = None
    label: str | None = None
    age_band: str | None = None

    def validated(self, *, need_split: bool = True) -> ManifestRecord:
        """The record itself if every field is well formed; else :class:`ManifestError`."""
        for key in ("image", "text", "patient_id", "source"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise ManifestError(f"{key} must be a non-empty string, not {value!r}")
        if not isinstance(self.findings, dict):
            raise ManifestError(f"findings must be an object (name -> status), not {type(self.findings).__name__}")
        for name, status in self.findings.items():
            if name not in FINDINGS:
                raise ManifestError(f"unknown finding {name!r}; known: {', '.join(FINDINGS)}")
            if status not in STATUSES:
                raise ManifestError(f"finding {name!r} has status {status!r}; one of {', '.join(STATUSES)}")
        if self.view not in VIEWS:
            raise ManifestError(f"view must be one of {', '.join(VIEWS)}, not {self.view!r}")
        if need_split and self.split not in SPLITS:
            raise ManifestError(f"split must be one of {', '.join(SPLITS)}, not {self.split!r}")
        if self.age is not None and (
            isinstance(self.age, bool) or not isinstance(self.age, int) or not 0 <= self.age <= 120
        ):
            raise ManifestError(f"age must be whole years from 0 to 120, not {self.age!r}")
        if self.sex is not None and self.sex not in SEXES:
            raise ManifestError(f"sex must be 'M' or 'F', not {self.sex!r}")
        if self.label is not None and not isinstance(self.label, str):
            raise ManifestError(f"label must be a string, not {self.label!r}")
        if self.age_band is not None:
            if not isinstance(self.age_band, str) or self.age_band not in AGE_BANDS:
                raise ManifestError(f"age_band must be one of {', '.join(AGE_BANDS)}, not {self.age_band!r}")
            if self.age is not None and band_of(self.age) != self.age_band:
                raise ManifestError(
                    f"age_band {self.age_band!r} disagrees with age {self.age} (band {band_of(self.age)!r})"
                )
        return self

    def to_json(self) -> str:
        data = {key: value for key, value in asdict(self).items() if key in REQUIRED_KEYS or value is not None}
        return json.dumps(data, ensure_ascii=False, sort_keys=False)

    @classmethod
    def from_dict(cls, data: object) -> ManifestRecord:
        if not isinstance(data, dict):
            raise ManifestError(f"a record must be a JSON object, not {type(data).__name__}")
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise ManifestError(f"missing key(s) {', '.join(missing)}")
        refuse_unknown_keys(data, REQUIRED_KEYS + OPTIONAL_KEYS, ManifestError, list_allowed=True)
        return cls(**data).validated()


# 1. splits ---------------------------------------------------------------------------------------


def check_fractions(val_frac: float, test_frac: float) -> None:
    for name, value in (("val fraction", val_frac), ("test fraction", test_frac)):
        if not isinstance(value, int | float) or not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be a number from 0 to below 1, not {value!r}")
    if val_frac + test_frac >= 1.0:
        raise ValueError(f"val + test fractions must leave some training data, not {val_frac} + {test_frac}")


def split_of(patient_id: str, *, seed: int, val_frac: float, test_frac: float) -> str:
    """``test`` / ``val`` / ``train`` for a patient: a hash of (seed, patient id), not the order of import."""
    digest = hashlib.sha256(f"{seed}\x00{patient_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if position < test_frac:
        return "test"
    if position < test_frac + val_frac:
        return "val"
    return "train"


def assign_splits(
    records: Iterable[ManifestRecord], *, seed: int, val_frac: float, test_frac: float
) -> list[ManifestRecord]:
    check_fractions(val_frac, test_frac)
    return [
        replace(record, split=split_of(record.patient_id, seed=seed, val_frac=val_frac, test_frac=test_frac))
        for record in records
    ]


# 2. reading and writing --------------------------------------------------------------------------


def relative_image_path(image: Path, manifest: Path) -> str:
    """The image path as the manifest stores it: relative to the manifest's folder when inside it."""
    image = Path(os.path.abspath(image))
    folder = Path(os.path.abspath(manifest)).parent
    try:
        return image.relative_to(folder).as_posix()
    except ValueError:
        return image.as_posix()


def resolve_image(record: ManifestRecord, manifest: str | os.PathLike[str]) -> Path:
    """The image file of a record read from ``manifest``."""
    path = Path(record.image)
    return path if path.is_absolute() else Path(manifest).parent / path


def write_manifest(path: str | os.PathLike[str], records: Iterable[ManifestRecord]) -> Path:
    """Write the records, streamed one line at a time (any iterable: a generator of 100k+ records
    never becomes a list), to a temporary file renamed over ``path``; a bad record (named by its
    number) or a failed write leaves the old file as it was and no temporary file behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as stream:
            for index, record in enumerate(records, start=1):
                try:
                    record.validated()
                except ManifestError as exc:
                    raise ManifestError(f"record {index} ({record.image}): {exc}") from None
                stream.write(record.to_json() + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def parse_record(line: str) -> ManifestRecord:
    """One manifest line -> a valid record; any way the line is bad is a :class:`ManifestError`
    (not JSON, nested past Python's recursion limit, not an object, a bad field)."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"not JSON ({exc.msg}, column {exc.colno})") from None
    except RecursionError:  # json recurses once per [ or {
        raise ManifestError("not JSON (nested too deeply)") from None
    try:
        return ManifestRecord.from_dict(data)
    except TypeError as exc:  # a key the dataclass refuses
        raise ManifestError(str(exc)) from None


def iter_manifest(path: str | os.PathLike[str]) -> Iterator[ManifestRecord]:
    """The records one at a time, in file order (blank lines skipped): what a pass over 100k+ records
    uses instead of a list. :class:`ManifestError` names the first bad line when the pass reaches it."""
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                yield parse_record(line)
            except ManifestError as exc:
                raise ManifestError(f"{path}, line {number}: {exc}") from None


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestRecord]:
    """All records (:func:`iter_manifest` as a list); :class:`ManifestError` names the first bad line."""
    return list(iter_manifest(path))


# 3. summary --------------------------------------------------------------------------------------


@dataclass
class ImportSummary:
    """Counts for the printout: images and patients per split, present findings per split, skips
    by reason, and notes (things kept but worth knowing, such as guessed views)."""

    records: list[ManifestRecord]
    skipped: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)

    def split_counts(self) -> dict[str, tuple[int, int]]:
        images = Counter(record.split for record in self.records)
        patients = {split: {r.patient_id for r in self.records if r.split == split} for split in SPLITS}
        return {split: (images[split], len(patients[split])) for split in SPLITS}

    def finding_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for record in self.records:
            for name, status in record.findings.items():
                if status == PRESENT:
                    row = counts.setdefault(name, dict.fromkeys(SPLITS, 0))
                    row[record.split] += 1
        return {name: counts[name] for name in FINDINGS if name in counts}

    def format(self) -> str:
        lines = [f"{len(self.records)} images, {len({r.patient_id for r in self.records})} patients"]
        lines.append(f"{'split':<8} {'images':>8} {'patients':>9}")
        for split, (images, patients) in self.split_counts().items():
            lines.append(f"{split:<8} {images:>8} {patients:>9}")
        findings = self.finding_counts()
        if findings:
            lines.append(f"{'finding (present)':<24} " + " ".join(f"{split:>7}" for split in SPLITS))
            for name, row in findings.items():
                lines.append(f"{name:<24} " + " ".join(f"{row[split]:>7}" for split in SPLITS))
        if self.skipped:
            lines.append(f"skipped: {sum(self.skipped.values())}")
            for reason, count in self.skipped.most_common():
                lines.append(f"  {count:>7}  {reason}")
        else:
            lines.append("skipped: none")
        for reason, count in self.notes.most_common():
            lines.append(f"note: {count} {reason}")
        return "\n".join(lines)


__all__ = [
    "SPLITS",
    "VIEWS",
    "ImportSummary",
    "ManifestError",
    "ManifestRecord",
    "assign_splits",
    "check_fractions",
    "iter_manifest",
    "parse_record",
    "read_manifest",
    "relative_image_path",
    "resolve_image",
    "split_of",
    "write_manifest",
]
