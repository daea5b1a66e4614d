"""Training captions in clinical language, built from labels by a small grammar and a seeded RNG.

A caption is a header (who and what view) and the findings the labels support:

    "PA chest radiograph of a 61-year-old woman: cardiomegaly. No pneumothorax."
    "Paediatric AP chest radiograph: focal airspace consolidation consistent with bacterial pneumonia."
    "Paediatric AP chest radiograph: no focal consolidation. Heart size normal. No pleural effusion."

Rules (also in :func:`caption_grammar`, for model cards)
- Each positive finding takes one of several phrasings; nothing the labels do not say is added
  (no side, lobe or severity is invented).
- Normal studies state two to four explicit negatives (and sometimes a normal statement); abnormal
  adult studies state up to two negatives of findings their labels leave out (NIH labels are
  exhaustive over their 14 findings), never one that a positive finding could imply.
- Paediatric (Kermany) studies are anterior-posterior radiographs of children aged one to five;
  the header says "Paediatric" and pneumonia captions name the bacterial or viral type.
- Every caption round-trips: ``engine.findings.summarize(caption.text)`` gives each entry of
  ``caption.findings`` its status (tests/training/test_captions.py checks every phrasing).

The RNG is ``random.Random`` seeded from (seed, key), so a record's caption depends only on the
seed and the record's key (its file name), never on the order of the import.

Augmented captions (:func:`augmented_caption`, section 4) are for training, not for the manifest:
the same labels phrased the way clinicians type prompts (shorthand, no header, other orders,
typos), each read back by ``engine.findings.parse.parse_prompt`` as the labels or less
(:func:`round_trip_problems`); ``train diffusion --caption-augment`` draws them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engine.findings.vocabulary import ABSENT, NO_FINDING, PRESENT

GRAMMAR_VERSION = 1

# 1. phrasings ------------------------------------------------------------------------------------

POSITIVE_PHRASES: dict[str, tuple[str, ...]] = {
    "atelectasis": ("atelectasis", "subsegmental atelectasis", "plate-like atelectasis", "atelectatic change"),
    "cardiomegaly": ("cardiomegaly", "enlarged cardiac silhouette", "enlargement of the cardiac silhouette"),
    "consolidation": ("consolidation", "airspace consolidation", "focal consolidation"),
    "edema": ("pulmonary oedema", "pulmonary edema", "interstitial oedema", "vascular congestion"),
    "emphysema": ("emphysema", "emphysematous change", "changes of emphysema"),
    "fibrosis": ("pulmonary fibrosis", "fibrotic change", "interstitial fibrosis"),
    "hernia": ("hiatal hernia", "hiatus hernia"),
    "infiltration": ("infiltrate", "pulmonary infiltrates", "infiltration"),
    "mass": ("mass", "pulmonary mass", "lung mass"),
    "nodule": ("nodule", "pulmonary nodule", "lung nodule"),
    "pleural_effusion": ("pleural effusion", "pleural fluid", "effusion"),
    "pleural_thickening": ("pleural thickening", "thickening of the pleura"),
    "pneumonia": ("pneumonia", "findings consistent with pneumonia", "airspace opacity consistent with pneumonia"),
    "pneumothorax": ("pneumothorax",),
}
NEGATIVE_PHRASES: dict[str, tuple[str, ...]] = {
    "consolidation": ("No focal consolidation.", "No consolidation."),
    "cardiomegaly": ("Heart size normal.", "Normal heart size.", "The heart is not enlarged."),
    "pleural_effusion": ("No pleural effusion.", "No effusion."),
    "pneumothorax": ("No pneumothorax.",),
    "edema": ("No pulmonary oedema.", "No pulmonary edema."),
}
NORMAL_STATEMENTS = ("No acute cardiopulmonary abnormality.", "Normal chest radiograph.", "No active disease.")
# a negative never contradicts what a positive may show
NEGATIVE_CONFLICTS: dict[str, frozenset[str]] = {
    "consolidation": frozenset(
        {"pneumonia", "infiltration", "atelectasis", "mass", "bacterial_pneumonia", "viral_pneumonia"}
    ),
    "pleural_effusion": frozenset({"pleural_thickening"}),
    "edema": frozenset({"cardiomegaly", "infiltration", "pneumonia", "consolidation"}),
    "cardiomegaly": frozenset({"edema"}),
}
PAEDIATRIC_PHRASES: dict[str, tuple[str, ...]] = {
    "bacterial_pneumonia": (
        "focal airspace consolidation consistent with bacterial pneumonia",
        "lobar consolidation in keeping with bacterial pneumonia",
        "consolidation consistent with bacterial pneumonia",
        "findings consistent with bacterial pneumonia",
    ),
    "viral_pneumonia": (
        "diffuse interstitial opacities consistent with viral pneumonia",
        "bilateral perihilar interstitial opacities in keeping with viral pneumonia",
        "patchy bilateral opacities consistent with viral pneumonia",
        "findings consistent with viral pneumonia",
    ),
    "pneumonia": ("airspace opacity consistent with pneumonia", "findings consistent with pneumonia"),
}
# label value in the sources -> finding names it makes present
PAEDIATRIC_LABELS: dict[str, tuple[str, ...]] = {
    "normal": (NO_FINDING,),
    "bacterial_pneumonia": ("pneumonia", "bacterial_pneumonia"),
    "viral_pneumonia": ("pneumonia", "viral_pneumonia"),
    "pneumonia": ("pneumonia",),
}
NIH_LABELS: dict[str, str] = {
    "No Finding": NO_FINDING,
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Effusion": "pleural_effusion",
    "Emphysema": "emphysema",
    "Fibrosis": "fibrosis",
    "Hernia": "hernia",
    "Infiltration": "infiltration",
    "Mass": "mass",
    "Nodule": "nodule",
    "Pleural_Thickening": "pleural_thickening",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
}
VIEW_WORDS = {"PA": "PA", "AP": "AP", "FRONTAL": "Frontal", "LATERAL": "Lateral", "LL": "Lateral", "RL": "Lateral"}
ADULT_AGE = 18


class CaptionError(ValueError):
    """Labels that no caption can be made from (an unknown label, a bad age or sex)."""


@dataclass(frozen=True)
class Caption:
    """``text`` and the finding statuses it states (name -> present / absent)."""

    text: str
    findings: dict[str, str]


# 2. building -------------------------------------------------------------------------------------


def caption_rng(seed: int, key: str) -> random.Random:
    """A ``random.Random`` that depends only on (seed, key)."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def header(
    *,
    view: str | None = None,
    age: int | None = None,
    sex: str | None = None,
    paediatric: bool = False,
    age_band: str | None = None,
) -> str:
    """ "Paediatric AP chest radiograph", "PA chest radiograph of a 61-year-old woman", ...

    ``age_band`` (a manifest's band, for records without an age) is stated only for the bands the
    header can say: "child" as "Paediatric", "adult" and "older_adult" as "of an adult/elderly
    man"; an age, when given, is stated instead."""
    if age is not None and (not isinstance(age, int) or not 0 <= age <= 120):
        raise CaptionError(f"age must be a whole number of years from 0 to 120, not {age!r}")
    if sex not in (None, "M", "F"):
        raise CaptionError(f"sex must be 'M', 'F' or None, not {sex!r}")
    view_word = VIEW_WORDS.get((view or "FRONTAL").upper())
    if view_word is None:
        raise CaptionError(f"view must be one of {', '.join(VIEW_WORDS)} or None, not {view!r}")
    paediatric = paediatric or (age is None and age_band == "child")
    young = paediatric or (age is not None and age < ADULT_AGE)
    text = (
        f"Paediatric {view_word if view_word.isupper() else view_word.lower()} chest radiograph"
        if young
        else f"{view_word} chest radiograph"
    )
    if age is not None and age >= 1:
        person = {"M": "boy" if age < ADULT_AGE else "man", "F": "girl" if age < ADULT_AGE else "woman"}.get(
            sex or "", "child" if young else "patient"
        )
        article = "an" if str(age).startswith("8") or age in (11, 18) else "a"
        text += f" of {article} {age}-year-old {person}"
    elif age is None and age_band in ("adult", "older_adult") and not young:
        person = {"M": "man", "F": "woman"}.get(sex or "", "patient")
        text += f" of {'an adult' if age_band == 'adult' else 'an elderly'} {person}"
    elif sex is not None and not young:
        text += f" of a {'man' if sex == 'M' else 'woman'}"
    return text


def join_phrases(phrases: Sequence[str]) -> str:
    if len(phrases) <= 2:
        return " and ".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def caption_from_findings(
    positives: Iterable[str],
    rng: random.Random,
    *,
    view: str | None = None,
    age: int | None = None,
    sex: str | None = None,
    paediatric: bool = False,
    max_negatives: int = 2,
) -> Caption:
    """A caption for the positive finding names (empty or ``{"no_finding"}`` for a normal study).

    Negatives are drawn from :data:`NEGATIVE_PHRASES` among the findings not positive and not
    implied by a positive (:data:`NEGATIVE_CONFLICTS`).
    """
    # 1. check the names
    positive = list(dict.fromkeys(positives))
    known = set(POSITIVE_PHRASES) | set(PAEDIATRIC_PHRASES) | {NO_FINDING}
    unknown = [name for name in positive if name not in known]
    if unknown:
        raise CaptionError(f"no caption phrasing for {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    normal = not positive or positive == [NO_FINDING]
    if not normal and NO_FINDING in positive:
        raise CaptionError("no_finding cannot be combined with other findings")
    findings: dict[str, str] = {}
    head = header(view=view, age=age, sex=sex, paediatric=paediatric)

    # 2. positives: a subtype is phrased once, and names its parent ("bacterial pneumonia")
    sentences: list[str] = []
    if normal:
        findings[NO_FINDING] = PRESENT
    else:
        phrased = []
        subtypes = [name for name in positive if name in ("bacterial_pneumonia", "viral_pneumonia")]
        for name in positive:
            if name == "pneumonia" and subtypes:
                continue
            table = (
                PAEDIATRIC_PHRASES
                if (paediatric or name in subtypes) and name in PAEDIATRIC_PHRASES
                else POSITIVE_PHRASES
            )
            phrased.append(rng.choice(table[name]))
            findings[name] = PRESENT
        if subtypes:
            findings["pneumonia"] = PRESENT
        sentences.append(join_phrases(phrased) + ".")

    # 3. negatives
    candidates = [
        name
        for name in NEGATIVE_PHRASES
        if name not in positive and not (NEGATIVE_CONFLICTS.get(name, frozenset()) & set(positive))
    ]
    if normal:
        count = rng.randint(min(2, len(candidates)), min(4, len(candidates)))
    else:
        count = rng.randint(0, min(max_negatives, len(candidates)))
    for name in rng.sample(candidates, count):
        sentences.append(rng.choice(NEGATIVE_PHRASES[name]))
        findings[name] = ABSENT
    if normal and rng.random() < 0.5:
        sentences.append(rng.choice(NORMAL_STATEMENTS))

    # 4. "Header: first sentence. Others." with the first word after the colon in lower case
    body = " ".join(sentences)
    if body and body[0].isupper() and not body[:2].isupper():
        body = body[0].lower() + body[1:]
    return Caption(f"{head}: {body}" if body else f"{head}.", findings)


def paediatric_caption(label: str, rng: random.Random) -> Caption:
    """Caption for a Kermany label (``normal``, ``bacterial_pneumonia``, ``viral_pneumonia``, ``pneumonia``)."""
    if label not in PAEDIATRIC_LABELS:
        raise CaptionError(f"unknown paediatric label {label!r}; one of {', '.join(PAEDIATRIC_LABELS)}")
    names = [
        name for name in PAEDIATRIC_LABELS[label] if not (name == "pneumonia" and len(PAEDIATRIC_LABELS[label]) > 1)
    ]
    # a pneumonia label says nothing about effusion or heart size: no negatives then
    return caption_from_findings(names, rng, view="AP", paediatric=True, max_negatives=0)


COVID_PHRASES = ("{head} with COVID-19.", "{head}, a COVID-19 patient.", "{head}: patient with COVID-19.")
"""A Hannover film's caption: its patients all had COVID-19, a diagnosis, not a finding of the film
(engine.findings reads none in it; tests/training/test_hannover.py checks that it never reads pneumonia)."""


def covid_caption(rng: random.Random, *, view: str | None, sex: str | None) -> Caption:
    """Caption for a Hannover COVID-19 film: an adult (the age is redacted at the source), the view and
    sex when known, and the diagnosis; no finding, since no finding is labelled per image (many are
    intensive-care films with lines and tubes, and nothing says which show what)."""
    head = header(view=view, sex=sex, age_band="adult")
    if view is None:  # header's default "Frontal" would state a view the record lacks
        head = "Chest" + head.removeprefix("Frontal chest")
    return Caption(rng.choice(COVID_PHRASES).format(head=head), {})


def nih_caption(
    labels: Sequence[str], rng: random.Random, *, age: int | None, sex: str | None, view: str | None
) -> Caption:
    """Caption for NIH ChestX-ray14 ``Finding Labels`` (already split at "|"), age, sex and view."""
    unknown = [label for label in labels if label not in NIH_LABELS]
    if unknown or not labels:
        raise CaptionError(f"unknown NIH label(s) {', '.join(unknown) or '(none)'}; known: {', '.join(NIH_LABELS)}")
    names = [NIH_LABELS[label] for label in labels]
    return caption_from_findings(names, rng, view=view, age=age, sex=sex)


# 3. for model cards ------------------------------------------------------------------------------


def caption_grammar() -> dict:
    """The grammar as plain data (JSON-serialisable), for a model card."""
    return {
        "version": GRAMMAR_VERSION,
        "header": "[Paediatric ]{PA|AP|Frontal} chest radiograph[ of a {age}-year-old {man|woman|boy|girl}]: ",
        "positive_phrases": {name: list(phrases) for name, phrases in POSITIVE_PHRASES.items()},
        "paediatric_phrases": {name: list(phrases) for name, phrases in PAEDIATRIC_PHRASES.items()},
        "negative_phrases": {name: list(phrases) for name, phrases in NEGATIVE_PHRASES.items()},
        "normal_statements": list(NORMAL_STATEMENTS),
        "negative_conflicts": {name: sorted(names) for name, names in NEGATIVE_CONFLICTS.items()},
        "labels": {
            "paediatric": {label: list(names) for label, names in PAEDIATRIC_LABELS.items()},
            "nih": dict(NIH_LABELS),
        },
        "rules": [
            "positives are joined with commas and 'and' in one sentence; no side, lobe or severity is invented",
            "normal studies state 2-4 negatives, half of them also a normal statement",
            "abnormal adult studies state 0-2 negatives of findings not labelled and not implied by a positive",
            "paediatric pneumonia captions state no negatives",
            "under 18 years, or a paediatric source, the header says 'Paediatric' and boy/girl",
            "the phrasing is drawn by random.Random seeded from sha256(seed, image key)",
        ],
    }


def example_prompts(seed: int = 0) -> list[str]:
    """Prompts in the training captions' language: a few written out, a few drawn from the grammar."""
    written = [
        "PA chest radiograph of a 61-year-old woman: cardiomegaly. No pneumothorax.",
        "Paediatric AP chest radiograph: focal airspace consolidation consistent with bacterial pneumonia.",
        "Paediatric AP chest radiograph: diffuse interstitial opacities consistent with viral pneumonia.",
        "Paediatric AP chest radiograph: no focal consolidation. Heart size normal. No pleural effusion.",
        "AP chest radiograph of a 72-year-old man: pleural effusion and atelectasis.",
        "PA chest radiograph of a 45-year-old man: no focal consolidation. No pneumothorax. Normal chest radiograph.",
    ]
    rng = caption_rng(seed, "example_prompts")
    drawn = [
        caption_from_findings(["nodule"], rng, view="PA", age=58, sex="F").text,
        caption_from_findings(["pneumothorax"], rng, view="PA", age=24, sex="M").text,
        caption_from_findings(["edema", "cardiomegaly"], rng, view="AP", age=80, sex="F").text,
        caption_from_findings(["emphysema"], rng, view="PA", age=67, sex="M").text,
    ]
    return written + drawn


__all__ = [
    "COVID_PHRASES",
    "NIH_LABELS",
    "PAEDIATRIC_LABELS",
    "Caption",
    "CaptionError",
    "caption_from_findings",
    "caption_grammar",
    "caption_rng",
    "covid_caption",
    "example_prompts",
    "header",
    "nih_caption",
    "paediatric_caption",
]
