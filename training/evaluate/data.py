"""The real data of an evaluation: the manifest's records as classes, their images, and the prompts
that stand for each class.

A record's class is its ``label`` (the paediatric importer writes ``normal`` /
``bacterial_pneumonia`` / ``viral_pneumonia``); a record without one takes it from its findings:
``normal`` when ``no_finding`` is present, else its one present finding (a parent implied by a
present subtype, such as ``pneumonia`` beside ``bacterial_pneumonia``, does not count). Records
with several findings have no single class and are left out (counted in the report).

Prompts per class (``--prompt-source``):
- ``card``: the pack's own ``example_prompts`` (model card), each assigned to the class whose
  findings it states (``engine.findings.summarize``; see :func:`card_prompts`); an error unless
  every class gets one;
- ``test``: the class's most frequent texts of the test split (the captions the images came with);
- ``auto``: ``card`` when the card covers every class, else ``test``.
With ``--prompt-age-band child|adult`` a card prompt that states an age of the other band is left out.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.findings.parse import parse_prompt
from engine.findings.reader import summarize
from engine.findings.record import AGE_GROUPS
from engine.findings.vocabulary import NO_FINDING, PARENTS, PRESENT
from engine.manifest import ManifestError, ManifestRecord, read_manifest, resolve_image
from training.datasets import DatasetError, load_image
from training.evaluate.options import EvaluationError

NORMAL = "normal"


@dataclass(frozen=True)
class RealImage:
    path: Path
    text: str
    split: str
    label: str  # the class name
    findings: frozenset[str]  # present findings, parents implied by a subtype removed


@dataclass
class RealData:
    """The manifest's usable records by split, the class names, and what was left out."""

    manifest: Path
    classes: tuple[str, ...]
    splits: dict[str, list[RealImage]]
    left_out: Counter[str] = field(default_factory=Counter)

    def labels(self, split: str) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.classes)}
        return np.array([index[r.label] for r in self.splits[split]], dtype=np.int64)

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            split: {name: sum(r.label == name for r in records) for name in self.classes}
            for split, records in self.splits.items()
        }


def present_findings(findings: dict[str, str]) -> frozenset[str]:
    present = {name for name, status in findings.items() if status == PRESENT}
    implied = {PARENTS[name] for name in present if name in PARENTS}
    return frozenset(present - implied)


def class_of(record: ManifestRecord, classes: tuple[str, ...] | None = None) -> str | None:
    """The record's class name, or None when it has no single class. With ``classes`` (finding
    names, ``normal`` for no finding): the one of them the record has, its label ignored."""
    if classes is not None:
        present = present_findings(record.findings)
        names = {NORMAL if name == NO_FINDING else name for name in present}
        if not present and record.findings.get(NO_FINDING) == PRESENT:
            names = {NORMAL}
        chosen = names & set(classes)
        return next(iter(chosen)) if len(chosen) == 1 else None
    if record.label:
        return record.label.strip()
    present = present_findings(record.findings)
    if present == {NO_FINDING} or (not present and record.findings.get(NO_FINDING) == PRESENT):
        return NORMAL
    present = present - {NO_FINDING}
    return next(iter(present)) if len(present) == 1 else None


def read_records(manifest: Path) -> list[ManifestRecord]:
    """The manifest's records; :class:`EvaluationError` naming ``--data`` when it cannot be read."""
    if not Path(manifest).is_file():
        raise EvaluationError(f"--data {manifest}: no such manifest file")
    try:
        return read_manifest(manifest)
    except (ManifestError, OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"--data {' '.join(str(exc).split())}") from None


def read_real_data(manifest: Path, classes: tuple[str, ...] | None = None) -> RealData:
    """Read and check the manifest: a train and a test split, both with at least two classes, and
    every test class also in train. Raises :class:`EvaluationError` saying what is missing.
    ``classes``: see :func:`class_of`."""
    manifest = Path(manifest)
    records = read_records(manifest)
    splits: dict[str, list[RealImage]] = {"train": [], "val": [], "test": []}
    left_out: Counter[str] = Counter()
    for record in records:
        label = class_of(record, classes)
        if label is None:
            reason = "not exactly one of --classes" if classes else "no single class (several findings, or none)"
            left_out[reason] += 1
            continue
        image = RealImage(
            resolve_image(record, manifest), record.text, record.split, label, present_findings(record.findings)
        )
        splits[record.split].append(image)
    for split in ("train", "test"):
        if not splits[split]:
            raise EvaluationError(
                f"--data {manifest}: no usable records with split '{split}' (the evaluation needs train and test)"
            )
    train_classes = {r.label for r in splits["train"]}
    test_classes = {r.label for r in splits["test"]}
    if len(test_classes) < 2 or len(train_classes) < 2:
        raise EvaluationError(
            f"--data {manifest}: train and test need at least two classes each "
            f"(train: {', '.join(sorted(train_classes))}; "
            f"test: {', '.join(sorted(test_classes))})"
        )
    unseen = sorted(test_classes - train_classes)
    if unseen:
        raise EvaluationError(f"--data {manifest}: test class(es) {', '.join(unseen)} have no training images")
    return RealData(manifest.resolve(), tuple(sorted(train_classes)), splits, left_out)


def subsample(items: list, limit: int) -> list:
    """At most ``limit`` items, evenly spaced (all of them when fewer), order kept."""
    if len(items) <= limit:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def load_real_images(records: list[RealImage], size: int, workers: int | None = None, on_image=None) -> np.ndarray:
    """Decode ``records``' images at ``size`` x ``size`` (the trainers' loader: centre square, area
    resize) into one (N, size, size) float16 array in [0, 1]."""
    out = np.empty((len(records), size, size), dtype=np.float16)

    def load(i: int) -> None:
        try:
            out[i] = (load_image(records[i].path, size)[0] + 1.0) * 0.5
        except DatasetError as exc:
            raise EvaluationError(str(exc)) from None

    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for _ in pool.map(load, range(len(records))):
            if on_image is not None:
                on_image()
    return out


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class ClassPrompts:
    label: str
    prompts: tuple[str, ...]
    source: str  # "model card example_prompts" or "test-split captions"


def class_findings(data: RealData) -> dict[str, frozenset[str]]:
    """Each class's most common set of present findings over all splits (what its prompts must state)."""
    sets: dict[str, Counter[frozenset[str]]] = {name: Counter() for name in data.classes}
    for records in data.splits.values():
        for r in records:
            sets[r.label][r.findings] += 1
    return {name: counter.most_common(1)[0][0] if counter else frozenset() for name, counter in sets.items()}


def prompt_band_ok(prompt: str, age_band: str) -> bool:
    """True when ``prompt`` states no age (or sex-and-age shorthand) or one in ``age_band`` (any / child / adult)."""
    if age_band == "any":
        return True
    stated = parse_prompt(prompt).age_band
    return stated is None or AGE_GROUPS[stated] == age_band


def card_prompts(card: dict, data: RealData, age_band: str = "any") -> dict[str, list[str]]:
    """The card's ``example_prompts`` by class: a prompt belongs to the class whose findings it
    states (it may state more, such as the opacities of a viral pneumonia); when several classes'
    findings are stated, to the most specific one, and to none when that is not unique. With
    ``age_band`` child or adult, a prompt that states an age of the other band belongs to no class
    (a card for children and adults has an adult "normal chest radiograph": without this, a
    paediatric evaluation's normal class would take it and judge adult images as children)."""
    wanted = {name: findings for name, findings in class_findings(data).items() if findings}
    out: dict[str, list[str]] = {name: [] for name in data.classes}
    examples = card.get("example_prompts") if isinstance(card, dict) else None
    for prompt in examples if isinstance(examples, list) else []:
        if not isinstance(prompt, str) or not prompt.strip() or not prompt_band_ok(prompt, age_band):
            continue
        stated = present_findings(summarize(prompt))
        matches = [name for name, findings in wanted.items() if findings <= stated]
        most = max((len(wanted[name]) for name in matches), default=0)
        best = [name for name in matches if len(wanted[name]) == most]
        if len(best) == 1:
            out[best[0]].append(prompt.strip())
    return out


def test_prompts(data: RealData, per_class: int) -> dict[str, list[str]]:
    """The ``per_class`` most frequent test-split texts of each class (ties by text)."""
    out = {}
    for name in data.classes:
        counts = Counter(r.text.strip() for r in data.splits["test"] if r.label == name)
        out[name] = [text for text, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:per_class]]
    return out


def choose_prompts(
    card: dict, data: RealData, source: str, per_class: int, age_band: str = "any"
) -> dict[str, ClassPrompts]:
    """Prompts per class from ``source`` (auto / card / test), the card's of ``age_band`` or none stated
    (``--prompt-age-band``); see the module docstring."""
    from_card = card_prompts(card, data, age_band)
    covered = all(from_card[name] for name in data.classes)
    if source == "card" and not covered:
        missing = [name for name in data.classes if not from_card[name]]
        raise EvaluationError(
            f"--prompt-source card: the model card's example_prompts state no prompt for {', '.join(missing)}"
        )
    if source == "card" or (source == "auto" and covered):
        return {
            name: ClassPrompts(name, tuple(from_card[name][:per_class]), "model card example_prompts")
            for name in data.classes
        }
    from_test = test_prompts(data, per_class)
    for name in data.classes:
        if not from_test[name]:  # a class with training images but none in test
            from_test[name] = [r.text.strip() for r in data.splits["train"] if r.label == name][:1]
    return {name: ClassPrompts(name, tuple(from_test[name]), "test-split captions") for name in data.classes}


def allocate(total: int, weights: dict[str, int], classes: tuple[str, ...]) -> dict[str, int]:
    """``total`` split over ``classes`` in proportion to ``weights`` (largest remainder), every
    class at least one when ``total`` allows."""
    raw = np.array([max(weights.get(name, 0), 0) for name in classes], dtype=np.float64)
    raw = np.ones_like(raw) if raw.sum() == 0 else raw
    floor_min = 1 if total >= len(classes) else 0
    share = raw / raw.sum() * (total - floor_min * len(classes))
    counts = np.floor(share).astype(int) + floor_min
    for i in np.argsort(-(share - np.floor(share)), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return {name: int(c) for name, c in zip(classes, counts, strict=True)}


@dataclass(frozen=True)
class PromptPlan:
    """Image i of a generated set: ``labels[i]`` (class index), ``prompts[i]``, seed ``seeds[i]``.
    Images of one prompt are consecutive with consecutive seeds, so one request makes a batch."""

    labels: np.ndarray
    prompts: tuple[str, ...]
    seeds: np.ndarray


def plan_images(
    total: int, prompts: dict[str, ClassPrompts], classes: tuple[str, ...], weights: dict[str, int], seed: int
) -> PromptPlan:
    """``total`` images over the classes (in proportion to ``weights``), each class's images cycling
    through its prompts; seeds ``seed``, ``seed + 1``, ..."""
    per_class = allocate(total, weights, classes)
    labels, texts = [], []
    for index, name in enumerate(classes):
        options = prompts[name].prompts
        chosen = [options[j % len(options)] for j in range(per_class[name])]
        for prompt in sorted(chosen, key=options.index):
            labels.append(index)
            texts.append(prompt)
    return PromptPlan(np.array(labels, dtype=np.int64), tuple(texts), seed + np.arange(len(texts), dtype=np.int64))


__all__ = [
    "NORMAL",
    "ClassPrompts",
    "PromptPlan",
    "RealData",
    "RealImage",
    "allocate",
    "choose_prompts",
    "class_of",
    "load_real_images",
    "plan_images",
    "read_real_data",
    "read_records",
    "subsample",
]
