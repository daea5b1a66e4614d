"""Conditioning on the structured prompt record: record tokens beside the text tokens.

A pack whose ``model.json`` has a ``conditioning`` section of kind ``record_tokens`` conditions its
UNet on K extra context tokens besides the text encoder's T: the prompt is parsed into a
:class:`engine.findings.record.PromptRecord` (findings with status, age band, sex, view, sides), each
fact that the pack's token vocabulary lists becomes one token id, and the ids index a learned table
(V, D) float32 shipped in the pack (``embeddings``, a ``.npy`` file listed and hashed in ``files``).
The UNet's context is then ``concat(text context (B, T, D), table[ids] (B, K, D))`` on the token axis.

Token names (the vocabulary is a list of them, the null token first)::

    <null>                              padding, and every slot of an empty record
    finding:pneumothorax=absent         one per finding (engine.findings names) x status
    age_band:child                      one per engine.findings.record.AGE_BANDS
    sex:female  view:AP  side:right     sexes, views and sides as the record spells them

Ids are in a fixed order, so that when a record has more facts than K the least telling are cut:
age band, sex, view, findings present, their sides, findings uncertain, findings absent (each group in
vocabulary order). Facts the vocabulary lacks are skipped (the model was not trained on them).

Training builds the same record from a manifest's ground-truth labels (:func:`record_of_manifest`), not by
re-reading the caption. Pure numpy: no torch here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.findings.record import AGE_BANDS, SEXES, SIDES, VIEWS, PromptRecord, band_of
from engine.findings.vocabulary import ABSENT, FINDINGS, PRESENT, UNCERTAIN, with_implied_absent
from engine.manifest import ManifestRecord
from engine.pack import MANIFEST, ModelPack, PackError

RECORD_TOKENS = "record_tokens"
NULL_TOKEN = "<null>"
DEFAULT_MAX_TOKENS = 24
EMBEDDINGS_FILE = "record_embeddings.npy"
# engine.manifest's views and sexes -> the record's
MANIFEST_VIEWS = {"PA": "PA", "AP": "AP", "LATERAL": "lateral", "FRONTAL": None, "UNKNOWN": None}
MANIFEST_SEXES = {"F": "female", "M": "male"}


def finding_token(finding: str, status: str) -> str:
    return f"finding:{finding}={status}"


def full_vocabulary() -> tuple[str, ...]:
    """Every token a record can give: null, findings x statuses, age bands, sexes, views, sides."""
    return (
        NULL_TOKEN,
        *(finding_token(name, status) for name in FINDINGS for status in (PRESENT, UNCERTAIN, ABSENT)),
        *(f"age_band:{band}" for band in AGE_BANDS),
        *(f"sex:{sex}" for sex in SEXES),
        *(f"view:{view}" for view in VIEWS),
        *(f"side:{side}" for side in SIDES),
    )


def record_tokens(record: PromptRecord) -> list[str]:
    """The record's facts as token names, most telling first (see the module docstring); no limit."""
    tokens = []
    if record.age_band is not None:
        tokens.append(f"age_band:{record.age_band}")
    if record.sex is not None:
        tokens.append(f"sex:{record.sex}")
    if record.view is not None:
        tokens.append(f"view:{record.view}")
    order = {name: i for i, name in enumerate(FINDINGS)}
    findings = sorted(record.findings.items(), key=lambda item: order[item[0]])
    tokens += [finding_token(name, status) for name, status in findings if status == PRESENT]
    sides = {entry.side for entry in record.entries if entry.status == PRESENT and entry.side is not None}
    tokens += [f"side:{side}" for side in SIDES if side in sides]
    tokens += [finding_token(name, status) for name, status in findings if status == UNCERTAIN]
    tokens += [finding_token(name, status) for name, status in findings if status == ABSENT]
    return tokens


def record_of_labels(
    findings: Mapping[str, str],
    *,
    age: float | None = None,
    sex: str | None = None,
    view: str | None = None,
    age_band: str | None = None,
) -> PromptRecord:
    """The record of a manifest line's ground truth: ``findings`` (name -> status), ``age`` in years,
    ``sex`` ``M``/``F`` and ``view`` as engine.manifest writes them (FRONTAL and UNKNOWN name no view).

    The age band is the age's when the age is known, else ``age_band`` (a manifest's band for sources
    without ages: Kermany's children, Hannover's adults), so such images still get their band token.
    ValueError for a band that is not one of AGE_BANDS."""
    if age_band is not None and age_band not in AGE_BANDS:
        raise ValueError(f"age_band {age_band!r} is not one of {', '.join(AGE_BANDS)}")
    return PromptRecord(
        text="",
        findings=dict(findings),
        age=None if age is None else float(age),
        age_band=age_band if age is None else band_of(float(age)),
        sex=MANIFEST_SEXES.get(sex) if sex is not None else None,
        view=MANIFEST_VIEWS.get(view) if view is not None else None,
    )


def record_of_manifest(record: ManifestRecord) -> PromptRecord:
    """:func:`record_of_labels` of a manifest record: its findings, age, age band, sex and view (what
    training conditions each image on). A study labelled normal also has the findings its label rules out
    as absent (:func:`engine.findings.vocabulary.with_implied_absent`: "no pneumonia" for a normal film), so
    that the absent tokens a prompt's negations give were trained."""
    findings = with_implied_absent(record.findings)
    return record_of_labels(findings, age=record.age, sex=record.sex, view=record.view, age_band=record.age_band)


@dataclass(frozen=True)
class RecordVocabulary:
    """Token names (index = id; ``<null>`` is id 0) and K, the number of record tokens per prompt."""

    tokens: tuple[str, ...]
    max_tokens: int = DEFAULT_MAX_TOKENS

    def __post_init__(self) -> None:
        tokens = tuple(self.tokens)
        object.__setattr__(self, "tokens", tokens)
        if not tokens or tokens[0] != NULL_TOKEN:
            raise ValueError(f"record vocabulary: the first token must be {NULL_TOKEN}")
        known = set(full_vocabulary())
        unknown = [t for t in tokens if t not in known]
        if unknown:
            raise ValueError(f"record vocabulary: unknown token(s) {', '.join(unknown[:5])}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("record vocabulary: a token is listed twice")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"record vocabulary: max_tokens must be a whole number >= 1, not {self.max_tokens!r}")
        object.__setattr__(self, "_ids", {token: i for i, token in enumerate(tokens)})

    def __len__(self) -> int:
        return len(self.tokens)

    def known_tokens(self, record: PromptRecord) -> list[str]:
        """The record's tokens that this vocabulary has, in order, not cut to K."""
        return [t for t in record_tokens(record) if t in self._ids]  # type: ignore[attr-defined]

    def record_token_ids(self, record: PromptRecord) -> np.ndarray:
        """(K,) int64: the record's token ids, then 0 (null) up to K; facts beyond K are cut."""
        ids = np.zeros(self.max_tokens, dtype=np.int64)
        known = [self._ids[t] for t in self.known_tokens(record)][: self.max_tokens]  # type: ignore[attr-defined]
        ids[: len(known)] = known
        return ids

    def batch_ids(self, records: Sequence[PromptRecord]) -> np.ndarray:
        """(B, K) int64 ids of several records."""
        if not records:
            return np.zeros((0, self.max_tokens), np.int64)
        return np.stack([self.record_token_ids(r) for r in records])


@dataclass(frozen=True)
class RecordConditioning:
    """A vocabulary and its learned table (V, D) float32: records -> context tokens (B, K, D)."""

    vocabulary: RecordVocabulary
    table: np.ndarray

    def context(self, records: Sequence[PromptRecord]) -> np.ndarray:
        """(B, K, D) float32 record context of ``records``."""
        return self.table[self.vocabulary.batch_ids(records)]


def read_table(path: str | os.PathLike[str], vocabulary_size: int, context_dim: int) -> np.ndarray:
    """The (V, D) float32 table in a ``.npy`` file (never unpickled); PackError names the file."""
    path = Path(path)
    try:
        table = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise PackError(f"{path}: not a readable .npy array: {exc}") from None
    if table.dtype != np.float32 or table.shape != (vocabulary_size, context_dim):
        raise PackError(
            f"{path}: {table.dtype} {table.shape}, the pack needs float32 ({vocabulary_size}, {context_dim}) "
            "(record tokens x text.context_dim)"
        )
    if not np.all(np.isfinite(table)):
        raise PackError(f"{path}: has NaN or infinite values")
    return table


def load_record_conditioning(pack: ModelPack) -> RecordConditioning | None:
    """The pack's record conditioning, or None when its model.json has no ``conditioning``."""
    spec = pack.manifest.conditioning
    if spec is None:
        return None
    if spec.kind != RECORD_TOKENS:
        raise PackError(f"{pack.root / MANIFEST}: conditioning.kind {spec.kind!r} is not {RECORD_TOKENS!r}")
    try:
        vocabulary = RecordVocabulary(tuple(spec.tokens), spec.max_tokens)
    except ValueError as exc:
        raise PackError(f"{pack.root / MANIFEST}: conditioning: {exc}") from None
    table = read_table(pack.path(spec.embeddings), len(vocabulary), pack.manifest.text.context_dim)
    return RecordConditioning(vocabulary, table)


__all__ = [
    "DEFAULT_MAX_TOKENS",
    "EMBEDDINGS_FILE",
    "NULL_TOKEN",
    "RECORD_TOKENS",
    "RecordConditioning",
    "RecordVocabulary",
    "finding_token",
    "full_vocabulary",
    "load_record_conditioning",
    "read_table",
    "record_of_labels",
    "record_of_manifest",
    "record_tokens",
]
