"""What the loaded model will make of a prompt: the structured record in one line, the words it will
ignore (each with the reason), and whether anything at all was recognised.

One function, :func:`understand`, for the CLI (``cxr-studio generate`` prints it) and the desktop
prompt box (shows it under the prompt). Qt-free; it reads the prompt with
:func:`engine.findings.parse.parse_prompt` and the model's abilities from its card:

- ``supported_findings`` (:func:`engine.pack.card_supported_findings`): a finding stated present or
  uncertain that is not listed is ignored ("not in this model"). A card that lists none flags none.
  Absent findings are not flagged: "no pneumothorax" is how the training captions describe normals.
- ``conditioning``: what the model is conditioned on besides the text, a list of ``"place"``
  (side, lobe, zone), ``"age"``, ``"sex"``. A card without it is text-only: sides, lobes and sex
  are ignored (the words reach the text encoder but nothing taught the model to draw them), except
  place words the card's ``example_prompts`` or ``caption_grammar`` use (they were in the captions).
- ``age_bands``: the :data:`engine.findings.record.AGE_BANDS` the training data covers. Without
  it, a card whose ``does_not_know`` names adults is read as children only (infant to adolescent).
- ``views``: the views the training data has; a view outside it is ignored. Without it, none is flagged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from engine.findings.parse import parse_prompt
from engine.findings.record import AGE_BANDS, AGE_GROUPS, LOBES, PromptRecord
from engine.findings.vocabulary import ABSENT, FINDINGS, NO_FINDING
from engine.pack import card_supported_findings

CHILD_BANDS = tuple(band for band, group in AGE_GROUPS.items() if group == "child")


@dataclass(frozen=True)
class Ignored:
    """Words of the prompt the model will not act on, and why (``what`` names them: "side 'right'")."""

    what: str
    reason: str

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}"


@dataclass(frozen=True)
class Understanding:
    """The result of :func:`understand`. ``line``: the record in words ("nothing recognised" when so)."""

    record: PromptRecord
    line: str
    ignored: tuple[Ignored, ...]
    unsupported: tuple[str, ...]  # engine.findings names stated present/uncertain that the model lacks
    nothing_recognised: bool

    def lines(self) -> list[str]:
        """Plain-text lines for a terminal: "understood: ...", then "ignored: ..." per item."""
        out = [f"understood: {self.line}"]
        out += [f"ignored: {item}" for item in self.ignored]
        return out


def _age_bands(card: dict[str, Any]) -> tuple[str, ...] | None:
    """The age bands the model was trained on; None when the card does not say."""
    bands = card.get("age_bands")
    if isinstance(bands, list):
        return tuple(str(b) for b in bands if str(b) in AGE_BANDS)
    if re.search(r"\badults?\b", str(card.get("does_not_know", "")), re.IGNORECASE):
        return CHILD_BANDS
    return None


def _place_kind(value: str) -> str:
    """A place span's value ("right RLL lower", "left", "upper") -> "lobe", "side" or "zone"."""
    words = value.split()
    if any(word in LOBES for word in words):
        return "lobe"
    return "side" if words and words[0] in ("right", "left", "bilateral") else "zone"


def understand(prompt: str, card: Any) -> Understanding:
    """The record of ``prompt`` and what a model with this ``card`` (its manifest's "card") will ignore."""
    card = card if isinstance(card, dict) else {}
    record = parse_prompt(prompt)
    conditioning = card.get("conditioning")
    conditioned = {str(c) for c in conditioning} if isinstance(conditioning, list) else set()
    ignored: list[Ignored] = []

    def typed(span: Any) -> str:
        return record.text[span.start : span.end]

    # a place word the training captions used ("patchy bilateral opacities" for viral pneumonia) was learned
    captions = " ".join(str(x) for x in [*(card.get("example_prompts") or []), card.get("caption_grammar", "")]).lower()
    if "place" not in conditioned:
        for span in record.spans:
            if span.kind == "place" and not re.search(rf"\b{re.escape(typed(span).lower())}\b", captions):
                what = f"{_place_kind(span.value)} '{typed(span)}'"
                ignored.append(Ignored(what, "this model cannot place findings"))

    unsupported: list[str] = []
    supported = card_supported_findings(card)
    if supported is not None:
        known = {s.strip().lower().replace(" ", "_") for s in supported}
        for name, status in record.findings.items():
            if status == ABSENT or name == NO_FINDING or name in known or name in unsupported:
                continue
            unsupported.append(name)
            words = sorted({typed(s) for s in record.spans if s.kind == "finding" and s.value == name})
            said = f" ({', '.join(repr(w) for w in words)})" if words and words != [name.replace("_", " ")] else ""
            ignored.append(Ignored(f"finding '{FINDINGS[name].lower()}'{said}", "not in this model"))

    bands = _age_bands(card)
    if bands is not None and record.age_band is not None and record.age_band not in bands:
        who = "children only" if bands == CHILD_BANDS else ", ".join(b.replace("_", " ") for b in bands) + " only"
        for span in record.spans:
            if span.kind == "age_band":
                ignored.append(Ignored(f"'{typed(span)}'", f"this model was trained on {who}"))
            elif span.kind == "age":
                band = record.age_band.replace("_", " ")
                ignored.append(Ignored(f"age '{typed(span)}' ({band})", f"this model was trained on {who}"))

    if record.sex is not None and "sex" not in conditioned:
        for span in record.spans:
            if span.kind == "sex":
                ignored.append(Ignored(f"sex '{typed(span)}' ({span.value})", "this model does not condition on sex"))

    views = card.get("views")
    if record.view is not None and isinstance(views, list) and record.view not in {str(v) for v in views}:
        for span in record.spans:
            if span.kind == "view":
                ignored.append(Ignored(f"view '{typed(span)}'", "this model has no " + span.value + " images"))

    if record.ignored_words:
        words = ", ".join(repr(w) for w in record.ignored_words)
        ignored.append(Ignored(f"words {words}", "not understood (they still reach the text encoder)"))

    return Understanding(
        record=record,
        line=record.describe(),
        ignored=tuple(ignored),
        unsupported=tuple(unsupported),
        nothing_recognised=bool(prompt.strip()) and not record.recognised_anything,
    )


__all__ = ["CHILD_BANDS", "Ignored", "Understanding", "understand"]
