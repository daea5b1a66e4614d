"""Prompt or caption -> one structured record: findings (present / absent / uncertain, with side and
lobe where stated), age and age band, sex, view, and the words that were and were not understood.

The record is what a model can be conditioned on besides the text tokens, and what a UI shows as
"understood" (:meth:`PromptRecord.describe`) and "ignored" (:attr:`PromptRecord.ignored`).
Pure standard library.

Reading a prompt into a record is :mod:`engine.findings.parse` (:func:`~engine.findings.parse.parse_prompt`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from engine.findings.vocabulary import FINDINGS, NO_FINDING, PRESENT, STATUSES
from engine.jsonfields import refuse_unknown_keys

RECORD_VERSION = 1

AGE_BANDS: dict[str, tuple[float, float]] = {
    "infant": (0.0, 2.0),
    "child": (2.0, 12.0),
    "adolescent": (12.0, 18.0),
    "adult": (18.0, 65.0),
    "older_adult": (65.0, 200.0),
}
AGE_GROUPS: dict[str, str] = {band: "child" if high <= 18.0 else "adult" for band, (_, high) in AGE_BANDS.items()}
"""Each age band's broad group, child (under 18) or adult: what a model that knows only children, and
the evaluation's --age-band, distinguish."""
"""Age band -> [lower, upper) in years."""
SEXES = ("female", "male")
VIEWS = ("PA", "AP", "supine AP", "lateral")
SIDES = ("right", "left", "bilateral")
LOBES: dict[str, str] = {
    "RUL": "right upper lobe",
    "RML": "right middle lobe",
    "RLL": "right lower lobe",
    "LUL": "left upper lobe",
    "lingula": "lingula",
    "LLL": "left lower lobe",
}
"""Lobe code -> its name in words."""
ZONES = ("upper", "mid", "lower")
SPAN_KINDS = ("finding", "cue", "place", "age", "age_band", "sex", "view", "study", "modifier", "ignored")
MAX_AGE_YEARS = 120.0


class RecordError(ValueError):
    """A record (JSON or fields) that is not valid; the message names the field."""


# 1. the record -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """Characters [start, end) of the prompt, what they were read as (``kind``) and the value read.

    ``value``: the finding name for a finding, the status a cue gave, "right RLL lower" style
    place text, the age in years, the band, sex or view; the words themselves for ignored spans.
    """

    start: int
    end: int
    kind: str
    value: str


@dataclass(frozen=True)
class FindingEntry:
    """One finding with one status at one place (``side``, ``lobe`` and ``zone`` None when not stated)."""

    finding: str
    status: str
    side: str | None = None
    lobe: str | None = None
    zone: str | None = None

    def place(self) -> str | None:
        """The place in words: "right lower lobe", "bilateral lower zones", "left"; None when not stated."""
        if self.lobe is not None:
            return LOBES[self.lobe]
        if self.zone is not None:
            zone = f"{self.zone} zone" + ("s" if self.side == "bilateral" else "")
            return f"{self.side} {zone}" if self.side else zone
        return self.side


def band_of(age: float) -> str:
    """The :data:`AGE_BANDS` band of an age in years."""
    return next(band for band, (low, high) in AGE_BANDS.items() if low <= age < high)


@dataclass(frozen=True)
class PromptRecord:
    """What a prompt says, structured. Build it with :func:`parse_prompt`.

    ``findings``: finding name -> present / absent / uncertain, as :func:`engine.findings.summarize`
    reads the (shorthand-expanded) prompt, ``no_finding`` included. ``entries``: one per finding,
    status and place stated (a finding said twice at two places has two). ``age`` in years (a
    float: 0.5 is six months), ``age_band`` one of :data:`AGE_BANDS`, ``sex`` one of
    :data:`SEXES`, ``view`` one of :data:`VIEWS`, each None when not stated. ``spans``: the words
    used, in order; ``ignored``: the words and phrases not understood.
    """

    text: str
    findings: Mapping[str, str] = field(default_factory=dict)
    entries: tuple[FindingEntry, ...] = ()
    age: float | None = None
    age_band: str | None = None
    sex: str | None = None
    view: str | None = None
    spans: tuple[Span, ...] = ()
    ignored: tuple[Span, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "findings", MappingProxyType(dict(self.findings)))
        object.__setattr__(self, "entries", tuple(self.entries))
        object.__setattr__(self, "spans", tuple(self.spans))
        object.__setattr__(self, "ignored", tuple(self.ignored))
        _validate(self)

    def __hash__(self) -> int:
        return hash((self.text, tuple(self.findings.items()), self.entries, self.age, self.sex, self.view))

    @property
    def recognised_anything(self) -> bool:
        """Whether any finding, age, age band, sex or view was read (study words alone do not count)."""
        return bool(self.findings) or any(v is not None for v in (self.age, self.age_band, self.sex, self.view))

    @property
    def ignored_words(self) -> tuple[str, ...]:
        """The words and phrases not understood, as typed (for "ignored: ...")."""
        return tuple(self.text[span.start : span.end] for span in self.ignored)

    def describe(self) -> str:
        """One short line for users: "consolidation present (right lower lobe) · pneumothorax absent · child · AP"."""
        parts: list[str] = []
        if self.findings.get(NO_FINDING) == PRESENT:
            parts.append("normal")
        for entry in self.entries:
            place = entry.place()
            words = f"{entry.finding.replace('_', ' ')} {entry.status}"
            parts.append(f"{words} ({place})" if place else words)
        if self.age is not None:
            if self.age < 1 / 12:
                parts.append(f"{max(1, round(self.age * 365.25 / 7))} weeks")
            elif self.age < 1:
                parts.append(f"{max(1, round(self.age * 12))} months")
            else:
                parts.append(f"{self.age:g} years")
        if self.age_band is not None:
            parts.append(self.age_band.replace("_", " "))
        if self.sex is not None:
            parts.append(self.sex)
        if self.view is not None:
            parts.append(self.view)
        return " · ".join(parts) if parts else "nothing recognised"

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-serialisable); :meth:`from_dict` reads it back."""
        return {
            "version": RECORD_VERSION,
            "text": self.text,
            "findings": dict(self.findings),
            "entries": [
                {"finding": e.finding, "status": e.status, "side": e.side, "lobe": e.lobe, "zone": e.zone}
                for e in self.entries
            ],
            "age": self.age,
            "age_band": self.age_band,
            "sex": self.sex,
            "view": self.view,
            "spans": [[s.start, s.end, s.kind, s.value] for s in self.spans],
            "ignored": [[s.start, s.end, s.kind, s.value] for s in self.ignored],
            "recognised_anything": self.recognised_anything,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptRecord:
        """The record of :meth:`to_dict`; a missing, unknown or invalid key is a :class:`RecordError`."""
        if not isinstance(data, Mapping):
            raise RecordError(f"a prompt record must be a JSON object, not {type(data).__name__}")
        expected = set(cls(text="").to_dict())
        missing = sorted(expected - set(data))
        refuse_unknown_keys(data, expected, RecordError, "prompt record")
        if missing:
            raise RecordError(f"prompt record: missing key(s) {', '.join(missing)}")
        if data["version"] != RECORD_VERSION:
            raise RecordError(f"prompt record: version must be {RECORD_VERSION}, not {data['version']!r}")
        try:
            entries = []
            for item in data["entries"]:
                if set(item) != {"finding", "status", "side", "lobe", "zone"}:
                    raise RecordError(f"prompt record: entries: keys must be finding, status, side, lobe, zone: {item}")
                entries.append(FindingEntry(**item))
            spans = [Span(*item) for item in data["spans"]]
            ignored = [Span(*item) for item in data["ignored"]]
            record = cls(
                text=data["text"],
                findings=data["findings"],
                entries=tuple(entries),
                age=data["age"],
                age_band=data["age_band"],
                sex=data["sex"],
                view=data["view"],
                spans=tuple(spans),
                ignored=tuple(ignored),
            )
        except RecordError:
            raise
        except (TypeError, ValueError, AttributeError) as error:
            raise RecordError(f"prompt record: malformed ({error})") from None
        if data["recognised_anything"] is not record.recognised_anything:
            raise RecordError("prompt record: recognised_anything does not match its fields")
        return record

    @classmethod
    def from_json(cls, text: str) -> PromptRecord:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise RecordError(f"prompt record: not JSON ({error})") from None
        return cls.from_dict(data)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise RecordError(f"prompt record: {message}")


def _validate(record: PromptRecord) -> None:
    _check(isinstance(record.text, str), "text must be a string")
    for name, status in record.findings.items():
        _check(name in FINDINGS, f"findings: unknown finding {name!r}")
        _check(status in STATUSES, f"findings: {name} has status {status!r}, not one of {', '.join(STATUSES)}")
    for entry in record.entries:
        _check(isinstance(entry, FindingEntry), "entries must be FindingEntry items")
        _check(entry.finding in FINDINGS and entry.finding != NO_FINDING, f"entries: unknown finding {entry.finding!r}")
        _check(entry.status in STATUSES, f"entries: status {entry.status!r}")
        _check(entry.side is None or entry.side in SIDES, f"entries: side {entry.side!r}")
        _check(entry.lobe is None or entry.lobe in LOBES, f"entries: lobe {entry.lobe!r}")
        _check(entry.zone is None or entry.zone in ZONES, f"entries: zone {entry.zone!r}")
        _check(entry.finding in record.findings, f"entries: {entry.finding} is not in findings")
    age = record.age
    if age is not None:
        _check(
            isinstance(age, int | float) and not isinstance(age, bool) and 0 <= age <= MAX_AGE_YEARS,
            f"age must be a number of years from 0 to {MAX_AGE_YEARS:g}, not {age!r}",
        )
    _check(record.age_band is None or record.age_band in AGE_BANDS, f"age_band {record.age_band!r}")
    if age is not None:
        _check(record.age_band == band_of(age), f"age_band {record.age_band!r} does not fit age {age!r}")
    _check(record.sex is None or record.sex in SEXES, f"sex {record.sex!r}")
    _check(record.view is None or record.view in VIEWS, f"view {record.view!r}")
    for span in (*record.spans, *record.ignored):
        _check(isinstance(span, Span), "spans must be Span items")
        _check(
            isinstance(span.start, int)
            and isinstance(span.end, int)
            and 0 <= span.start < span.end <= len(record.text),
            f"span {span.start}-{span.end} is not inside the text",
        )
        _check(span.kind in SPAN_KINDS, f"span kind {span.kind!r}")
        _check(isinstance(span.value, str), f"span value {span.value!r}")


__all__ = [
    "AGE_BANDS",
    "AGE_GROUPS",
    "LOBES",
    "MAX_AGE_YEARS",
    "RECORD_VERSION",
    "SEXES",
    "SIDES",
    "SPAN_KINDS",
    "VIEWS",
    "ZONES",
    "FindingEntry",
    "PromptRecord",
    "RecordError",
    "Span",
    "band_of",
]
