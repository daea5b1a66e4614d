"""Augmented captions: the same labels phrased the way clinicians type prompts (shorthand, no
header, other orders, typos), for training (``train diffusion --caption-augment P``), never for a
manifest. Each is read back by :func:`engine.findings.parse.parse_prompt` as the labels or less
(:func:`round_trip_problems`); the base caption grammar is :mod:`training.data.captions`.
"""

from __future__ import annotations

import functools
import json
import random
import re
from dataclasses import dataclass

from engine.findings.vocabulary import ABSENT, NO_FINDING, PARENTS, PRESENT, UNCERTAIN, with_implied_absent
from training.data.captions import CaptionError, caption_rng, join_phrases

AUGMENT_VERSION = 2  # 2: negatives implied by a normal label (no pneumonia, ...)

AUGMENT_PRESENT: dict[str, tuple[str, ...]] = {
    "atelectasis": ("atelectasis", "atelectatic change", "atx", "subsegmental atelectasis", "plate atelectasis"),
    "cardiomegaly": (
        "cardiomegaly", "enlarged heart", "big heart", "cardiac enlargement", "enlarged cardiac silhouette",
    ),
    "consolidation": ("consolidation", "consol", "consolidative change", "airspace consolidation"),
    "edema": (
        "pulmonary oedema", "pulmonary edema", "oedema", "interstitial oedema", "pulmonary venous congestion",
        "vascular congestion",
    ),
    "emphysema": ("emphysema", "emphysematous change", "changes of emphysema", "COPD"),
    "fibrosis": ("pulmonary fibrosis", "fibrotic change", "interstitial fibrosis", "fibrosis"),
    "hernia": ("hiatus hernia", "hiatal hernia"),
    "infiltration": ("infiltrate", "infiltrates", "pulmonary infiltrates", "infiltration", "infiltrative change"),
    "mass": ("mass", "lung mass", "pulmonary mass", "mass lesion"),
    "nodule": ("nodule", "lung nodule", "pulmonary nodule"),
    "opacity": ("opacity", "airspace opacity", "opacification"),
    "pleural_effusion": ("pleural effusion", "effusion", "pleural fluid", "eff"),
    "pleural_thickening": ("pleural thickening", "thickening of the pleura"),
    "pneumonia": ("pneumonia", "PNA", "changes of pneumonia"),
    "pneumothorax": ("pneumothorax", "PTX", "PNX"),
    "bacterial_pneumonia": ("bacterial pneumonia", "likely bacterial pneumonia", "features of bacterial pneumonia"),
    "viral_pneumonia": (
        "viral pneumonia", "viral pneumonitis", "likely viral pneumonia", "features of viral pneumonia",
    ),
}  # fmt: skip
"""Finding -> phrasings of its presence; engine.findings reads each as that finding and nothing else
(no side, lobe or severity: "airspace opacity" is an opacity, so it never stands for consolidation)."""
AUGMENT_NOUNS: dict[str, tuple[str, ...]] = {
    "atelectasis": ("atelectasis", "atx"),
    "cardiomegaly": ("cardiomegaly",),
    "consolidation": ("consolidation", "focal consolidation", "consol"),
    "edema": ("pulmonary oedema", "oedema", "pulmonary edema", "edema"),
    "emphysema": ("emphysema",),
    "fibrosis": ("fibrosis", "pulmonary fibrosis"),
    "hernia": ("hiatus hernia", "hiatal hernia"),
    "infiltration": ("infiltrate", "infiltrates"),
    "mass": ("mass", "lung mass"),
    "nodule": ("nodule", "pulmonary nodule"),
    "opacity": ("opacity", "airspace opacity"),
    "pleural_effusion": ("pleural effusion", "effusion", "pleural fluid", "eff"),
    "pleural_thickening": ("pleural thickening",),
    "pneumonia": ("pneumonia", "PNA"),
    "pneumothorax": ("pneumothorax", "PTX", "PNX"),
    "bacterial_pneumonia": ("bacterial pneumonia",),
    "viral_pneumonia": ("viral pneumonia",),
}
"""Finding -> nouns that a negation or a doubt can stand before or after ("no PTX", "effusion: nil")."""
AUGMENT_ABSENT_STATEMENTS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("heart size normal", "normal heart size", "heart not enlarged", "normal cardiac silhouette"),
}
"""Whole statements of absence besides the negated nouns."""
NEGATION_STYLES = ("no {}", "no {}", "{} not seen", "without {}", "negative for {}", "{}: none", "{}: nil",
                   "{} absent", "w/o {}", "-ve for {}", "{} - no")  # fmt: skip
"""How one absent finding is stated ("no X", "X not seen", "X: none", ...)."""
LIST_NEGATION_STYLES = ("no {}", "negative for {}", "{} not seen")
# not "suspected X": engine.findings reads it as present
UNCERTAIN_STYLES = ("possible {}", "?{}", "? {}", "query {}", "{} cannot be excluded", "{}?")
AUGMENT_NORMAL = (
    "no acute cardiopulmonary abnormality", "no acute abnormality", "NAD", "normal study",
    "unremarkable chest radiograph", "normal chest film", "no active disease", "normal chest x-ray",
)  # fmt: skip
"""Statements of a normal study."""
IMPLIED_KEEP = 0.2
"""Chance that a caption states one of the negatives a normal label implies (NORMAL_IMPLIES_ABSENT)."""
_AUGMENT_VIEWS: dict[str, tuple[str, ...]] = {
    "PA": ("PA", "PA", "posteroanterior", "postero-anterior"),
    "AP": ("AP", "AP", "anteroposterior", "portable AP", "mobile AP", "bedside AP"),
    "lateral": ("lateral",),
}
_STUDY_WORDS = ("chest radiograph", "CXR", "film", "chest film", "chest x-ray", "chest")
_BAND_WORDS_FOR: dict[str, tuple[str, ...]] = {
    "infant": ("infant", "baby"),
    "child": ("child", "paediatric", "paeds", "pediatric", "kid"),
    "adolescent": ("adolescent", "teenage", "teenager"),
    "adult": ("adult",),
    "older_adult": ("elderly", "older"),
}
"""Age band -> words engine.findings.record reads as that band (strong words where a sex noun follows)."""
_MANIFEST_VIEWS = {"PA": "PA", "AP": "AP", "LATERAL": "lateral"}  # FRONTAL, UNKNOWN: no single view
_SEX_NAMES = {"M": "male", "F": "female"}


@dataclass(frozen=True)
class AugmentTarget:
    """What an augmented caption of a record may say: the record's findings (name -> status, the
    parent of a subtype and ``no_finding`` included as the importers wrote them), age in whole years,
    age band (``engine.findings.record.AGE_BANDS``), sex ("male"/"female"), view ("PA", "AP",
    "lateral") and whether the record is paediatric (a child's film without an age); None: unknown."""

    findings: dict[str, str]
    age: int | None
    age_band: str | None
    sex: str | None
    view: str | None
    paediatric: bool
    implied: frozenset[str] = frozenset()  # absent by a normal label, not listed (engine.findings.vocabulary)


def augment_target(record: object) -> AugmentTarget:
    """The :class:`AugmentTarget` of a manifest record (anything with ``findings``, ``age``, ``sex``,
    ``view`` and ``source``); CaptionError when its findings cannot all be phrased, or contradict
    each other (a finding present and the study normal)."""
    from engine.findings.record import band_of

    findings = with_implied_absent(record.findings)
    implied = frozenset(findings) - frozenset(record.findings)
    unknown = sorted(name for name in findings if name != NO_FINDING and name not in AUGMENT_PRESENT)
    if unknown:
        raise CaptionError(f"no augmented phrasing for {', '.join(unknown)}")
    stated = {name: status for name, status in findings.items() if name != NO_FINDING}
    normal = findings.get(NO_FINDING)
    if normal == PRESENT and any(status != ABSENT for status in stated.values()):
        raise CaptionError("no_finding is present beside a finding that is not absent")
    if not stated and normal != PRESENT:
        raise CaptionError("nothing to state: no finding and no normal study")
    age = record.age
    if age is not None:
        band = band_of(age)
    else:  # the manifest's band (Kermany: child, Hannover: adult); a paediatric manifest from before it: child
        band = getattr(record, "age_band", None) or ("child" if record.source == "pediatric" else None)
    paediatric = record.source == "pediatric" or band in ("infant", "child", "adolescent")
    sex = _SEX_NAMES.get(record.sex or "")
    return AugmentTarget(findings, age, band, sex, _MANIFEST_VIEWS.get(record.view), paediatric, implied)


def can_augment(record: object) -> bool:
    """Whether :func:`augmented_caption` can phrase ``record`` (else train on its own caption)."""
    try:
        augment_target(record)
    except CaptionError:
        return False
    return True


def _phrase_findings(target: AugmentTarget, rng: random.Random) -> list[str]:
    """Statements, shuffled: the positives (in one or several), the doubts, a normal statement and a
    random subset of the negatives (a negative may be left out; a positive or a doubt never)."""
    findings = target.findings
    subtypes = {PARENTS[name] for name, status in findings.items() if name in PARENTS and status != ABSENT}
    present = [n for n, s in findings.items() if s == PRESENT and n != NO_FINDING and n not in subtypes]
    uncertain = [n for n, s in findings.items() if s == UNCERTAIN and n != NO_FINDING and n not in subtypes]
    absent = [n for n, s in findings.items() if s == ABSENT and n != NO_FINDING]
    statements: list[tuple[str, str]] = []  # (kind, text)
    # 1. positives: one list or one statement each
    phrases = [rng.choice(AUGMENT_PRESENT[name]) for name in rng.sample(present, len(present))]
    if phrases and rng.random() < 0.5:
        joiner = rng.choice((" and ", ", ", " + ", " with "))
        text = joiner.join(phrases) if joiner != ", " or len(phrases) < 3 else join_phrases(phrases)
        statements.append((PRESENT, text))
    else:
        statements += [(PRESENT, phrase) for phrase in phrases]
    # 2. doubts, one each
    for name in uncertain:
        statements.append((UNCERTAIN, rng.choice(UNCERTAIN_STYLES).format(rng.choice(AUGMENT_NOUNS[name]))))
    # 3. normal statement and negatives: a normal study says so, or states at least one negative
    normal_statement = findings.get(NO_FINDING) == PRESENT and (not absent or rng.random() < 0.6)
    if normal_statement:
        statements.append((ABSENT, rng.choice(AUGMENT_NORMAL)))
    # a listed negative is said three times in four, one implied by a normal label once in five (else a
    # normal caption would list ten); "no pneumonia" then covers its subtypes
    keep = [name for name in absent if rng.random() < (IMPLIED_KEEP if name in target.implied else 0.75)]
    if "pneumonia" in keep and "pneumonia" in target.implied:
        keep = [name for name in keep if PARENTS.get(name) != "pneumonia" or name not in target.implied]
    if not keep and absent and not present and not uncertain and not normal_statement:
        keep = [rng.choice(absent)]
    rng.shuffle(keep)
    while keep:
        listed = [n for n in keep if n not in AUGMENT_ABSENT_STATEMENTS]
        if len(listed) >= 2 and rng.random() < 0.4:
            group = listed[: rng.randint(2, len(listed))]
            nouns = [rng.choice(AUGMENT_NOUNS[name]) for name in group]
            words = ", ".join(nouns[:-1]) + " or " + nouns[-1]
            style = rng.choice(LIST_NEGATION_STYLES)
            if style == "{} not seen" and len(nouns) == 2:
                words = f"{nouns[0]} and {nouns[1]}"  # the reader reaches back over two ("A and B not seen"), not three
            elif style == "{} not seen":
                style = "no {}"
            statements.append((ABSENT, style.format(words)))
            keep = [name for name in keep if name not in group]
            continue
        name = keep.pop()
        choices = [style.format(noun) for style in NEGATION_STYLES for noun in AUGMENT_NOUNS[name]]
        choices += list(AUGMENT_ABSENT_STATEMENTS.get(name, ()))
        statements.append((ABSENT, rng.choice(choices)))
    rng.shuffle(statements)
    # 4. separators: a comma only after a positive (a negation or doubt reaches through a comma list)
    text = ""
    for index, (_, statement) in enumerate(statements):
        if index:
            previous = statements[index - 1][0]
            text += rng.choice((". ", "; ", ", ") if previous == PRESENT else (". ", "; "))
        text += statement
    return [text] if text else []


def _person(target: AugmentTarget, rng: random.Random, lower: bool) -> str | None:
    """Age, age band and sex in one of several phrasings; None when the record has none of them (or,
    now and then, on purpose). Never an age, band or sex the record lacks."""
    age, band, sex = target.age, target.age_band, target.sex
    if (band is None and sex is None) or rng.random() < 0.1:
        return None
    young = band in ("infant", "child", "adolescent")
    nouns = {
        "male": ("boy", "male") if young else ("man", "male", "gentleman"),
        "female": ("girl", "female") if young else ("woman", "female", "lady"),
    }
    noun = nouns.get(sex or "", ("patient",))
    if band is None and sex is not None:
        noun = (sex,)  # "man" / "woman" would say adult, "boy" / "girl" child: the record does not
    if young and sex is None:
        noun = ("child", "patient") if band != "adolescent" else ("patient",)
    noun_word = rng.choice(noun)
    if sex is not None and rng.random() < 0.1:
        noun_word = "patient"  # the sex left out on purpose
    if age is not None and age >= 1 and rng.random() < 0.8:
        forms = [f"{age}-year-old {noun_word}", f"{age} yo {noun_word}", f"{age}yo {noun_word}",
                 f"{age} y/o {noun_word}", f"{noun_word}, {age} years"]  # fmt: skip
        if sex is not None:
            letter = sex[0].upper()
            forms += [f"{age}{letter}", f"{age}{letter.lower()}", f"{sex}, {age} years"]
            if not lower:
                forms.append(f"{age} yo {letter}")
        return rng.choice(forms)
    # no age number: a band word that outranks a sex noun's own band ("elderly woman", "adolescent boy")
    if band is None:
        return noun_word if noun_word != "patient" else None
    band_word = rng.choice(_BAND_WORDS_FOR[band])
    if band == "adult" and noun_word in ("man", "woman", "gentleman", "lady") and rng.random() < 0.5:
        return noun_word  # man / woman alone read as adult
    if band in ("child", "infant") and noun_word in ("child",):
        return band_word if band == "infant" else rng.choice(("child", "kid"))
    if band_word in ("paediatric", "paeds", "pediatric") and noun_word in ("boy", "girl"):
        band_word = "child"  # "paediatric" is a weak band word: fine alone, but say it plainly here
    if noun_word == "patient" and band_word in ("kid", "child", "infant", "baby", "teenager"):
        return band_word  # nouns already
    return f"{band_word} {noun_word}" if noun_word != "patient" or rng.random() < 0.5 else band_word


def _study(target: AugmentTarget, rng: random.Random) -> str:
    """A study phrase: "PA CXR", "portable AP film", "chest x-ray", ... (the view only when the record has one)."""
    study = rng.choice(_STUDY_WORDS)
    view = rng.choice(_AUGMENT_VIEWS[target.view]) if target.view and rng.random() < 0.9 else None
    if view is None:
        return study if study != "film" and study != "chest" else "chest film"
    return rng.choice((f"{view} {study}", f"{study} ({view})", f"{study}, {view}"))


def _typo(text: str, rng: random.Random) -> str:
    """One word the record parser corrects (``correct_typo``) given one edit it reads back; unchanged
    when the text has no such word."""
    from engine.findings.parse import TYPO_TARGETS, correct_typo

    words = [m for m in re.finditer(r"[A-Za-z]+", text) if m.group().lower() in TYPO_TARGETS]
    if not words:
        return text
    match = rng.choice(words)
    word = match.group()
    target = word.lower()
    letters = "abcdefghijklmnopqrstuvwxyz"
    for _ in range(30):
        i = rng.randrange(1, len(word))  # the first letter stays: people rarely miss it
        kind = rng.choice(("delete", "swap", "substitute", "insert"))
        if kind == "delete":
            candidate = word[:i] + word[i + 1 :]
        elif kind == "swap" and i + 1 < len(word):
            candidate = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        elif kind == "substitute":
            candidate = word[:i] + rng.choice(letters) + word[i + 1 :]
        else:
            candidate = word[:i] + rng.choice(letters) + word[i:]
        if candidate.lower() != target and correct_typo(candidate) == target:
            return text[: match.start()] + candidate + text[match.end() :]
    return text


MAX_HELD_OUT_REDRAWS = 50


def _normalised(text: str) -> str:
    """Lower case, punctuation (but "?") as spaces, single spaces: how held-out prompts are compared."""
    return " ".join(re.sub(r"[^\w?]+", " ", text.lower()).split())


@functools.cache
def held_out_prompts() -> frozenset[str]:
    """The prompts of every committed evaluation prompt set (``resources/evaluation/prompts/*.jsonl``),
    normalised (:func:`_normalised`). Read only to keep them out of the training captions."""
    from engine.paths import resources_dir

    prompts = set()
    for path in sorted((resources_dir() / "evaluation" / "prompts").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                prompts.add(_normalised(json.loads(line)["prompt"]))
    return frozenset(prompts)


def augmented_caption(record: object, rng: random.Random, *, typo_rate: float = 0.1) -> str:
    """One caption for a manifest record, phrased afresh from its labels on each call.

    Draws (from ``rng`` only: the same rng state gives the same caption): a header or none
    ("Paediatric AP chest radiograph:", "PA CXR", "portable AP film", nothing), the person in one
    of several forms ("4 yo boy", "male, 45 years", "45M", "elderly woman", "adult"), finding
    synonyms from engine.findings' vocabulary (pneumothorax / PTX, effusion / pleural fluid, big
    heart), negations ("no X", "X not seen", "without X", "negative for X", "X: none", a list "no
    X, Y or Z"), doubts ("?X", "X cannot be excluded"), the statements in a shuffled order, now and
    then all lower case, and with ``typo_rate`` one typo in a word that engine.findings.record
    corrects (one edit, so the meaning survives).

    The invariant (tests/training/test_caption_augment.py): ``engine.findings.parse.parse_prompt``
    reads the caption back as the record's findings, age band, sex and view, or as strictly less
    on purpose: a negative finding, the view, the age number (its band word kept), the sex or the
    whole person may be left out, never a positive finding, a doubt or a normal study. Nothing the
    record lacks is said: no side, lobe or severity, no age band or sex it does not give.
    CaptionError when the record's findings cannot be phrased (:func:`can_augment`).

    Held out: a draw that is, up to case, punctuation and spacing, a prompt of the evaluation's
    prompt sets (:func:`held_out_prompts`) is drawn again, so that the paraphrase and negation
    checks never score a sentence the model was trained on (short clinician prompts such as "no
    PTX" are otherwise a likely draw).
    """
    target = augment_target(record)
    held_out = held_out_prompts()
    for _ in range(MAX_HELD_OUT_REDRAWS):
        text = _draw_caption(target, rng, typo_rate)
        if _normalised(text) not in held_out:
            return text
    raise CaptionError(f"every one of {MAX_HELD_OUT_REDRAWS} draws was a held-out evaluation prompt")


def _draw_caption(target: AugmentTarget, rng: random.Random, typo_rate: float) -> str:
    """One draw of :func:`augmented_caption` (not checked against the held-out prompts)."""
    lower = rng.random() < 0.2
    findings = _phrase_findings(target, rng)
    body = findings[0]
    person = _person(target, rng, lower)
    header_kind = rng.choice(("grammar", "study", "study", "none"))
    if header_kind == "grammar":
        # 1. the trained grammar's own header, its person in it or after it
        view = {"PA": "PA", "AP": "AP", "lateral": "lateral"}.get(target.view or "", "")
        if target.view is not None and rng.random() < 0.2:
            view = ""
        # "Paediatric" reads as a child: only for that band (an infant or adolescent gets its own words)
        paediatric = target.age_band == "child"
        head = f"{'Paediatric ' if paediatric else ''}{view + ' ' if view else ''}chest radiograph".strip()
        if person is not None and rng.random() < 0.6:
            article = "an" if person[:1].lower() in "aeiou8" or person.startswith(("11", "18")) else "a"
            text = f"{head} of {article} {person}: {body}" if "," not in person else f"{head}, {person}: {body}"
        else:
            text = f"{head}: {body}" + (f". {person}" if person else "")
    elif header_kind == "study":
        # 2. a short study header, the person before or after it
        study = _study(target, rng)
        if person is None:
            text = rng.choice((f"{study}: {body}", f"{body}. {study}", f"{study}. {body}"))
        else:
            text = rng.choice((f"{person}, {study}: {body}", f"{study}, {person}: {body}",
                               f"{body}. {person}, {study}", f"{person}. {study}: {body}"))  # fmt: skip
    else:
        # 3. no header: the findings with the person before or after, or alone
        if person is None:
            text = body
        else:
            text = rng.choice((f"{person}: {body}", f"{body}. {person}", f"{person}, {body}"))
    if rng.random() < 0.5:
        text += "."
    if lower:
        text = text.lower()
    elif text[:1].islower() and rng.random() < 0.5:
        text = text[:1].upper() + text[1:]
    if rng.random() < typo_rate:
        text = _typo(text, rng)
    return text


def round_trip_problems(record: object, text: str) -> list[str]:
    """What ``parse_prompt(text)`` reads differently from the record (empty: the caption is right).

    Allowed on purpose: a negative finding, the age number, the band, the sex or the view left out
    (read as missing, never as something else).
    """
    from engine.findings.parse import parse_prompt

    target = augment_target(record)
    parsed = parse_prompt(text)
    problems = []
    stated = {name: status for name, status in target.findings.items() if name != NO_FINDING}
    implied = {PARENTS[n] for n, s in stated.items() if n in PARENTS and s != ABSENT}
    for name, status in stated.items():
        got = parsed.findings.get(name)
        if got != status and not (got is None and status == ABSENT):
            problems.append(f"{name}: {status} read as {got}")
    statuses = set(stated.values())
    normal = PRESENT if not statuses & {PRESENT, UNCERTAIN} else (ABSENT if PRESENT in statuses else UNCERTAIN)
    if target.findings.get(NO_FINDING, normal) != normal:
        problems.append(f"the record's no_finding {target.findings[NO_FINDING]} contradicts its findings")
    if parsed.findings.get(NO_FINDING) != normal:
        problems.append(f"no_finding: {normal} read as {parsed.findings.get(NO_FINDING)}")
    for name, status in parsed.findings.items():
        if name not in stated and name != NO_FINDING and name not in implied:
            problems.append(f"{name}: not in the record, read as {status}")
    if parsed.age is not None and parsed.age != target.age:
        problems.append(f"age: {target.age} read as {parsed.age:g}")
    for field_name in ("age_band", "sex", "view"):
        want, got = getattr(target, field_name), getattr(parsed, field_name)
        if got is not None and got != want:
            problems.append(f"{field_name}: {want} read as {got}")
    return problems


def augment_rng(seed: int, draw: int, index: int) -> random.Random:
    """The rng of one sample's caption: a function of the run seed, the draw (an epoch, or a number
    drawn once per batch from the run's seeded generator) and the sample's index."""
    return caption_rng(seed, f"augment\x00{draw}\x00{index}")


def training_caption(record: object, probability: float, rng: random.Random) -> str:
    """The caption a training step uses: with ``probability`` an :func:`augmented_caption` drawn
    from ``rng``, else (and always for a record that cannot be augmented) the record's own text."""
    if probability > 0 and rng.random() < probability and can_augment(record):
        return augmented_caption(record, rng)
    return record.text


def augmentation_grammar() -> dict:
    """The augmentation as plain data (JSON-serialisable), for a model card beside
    :func:`training.data.captions.caption_grammar`."""
    return {
        "version": AUGMENT_VERSION,
        "present_phrases": {name: list(phrases) for name, phrases in AUGMENT_PRESENT.items()},
        "negated_nouns": {name: list(nouns) for name, nouns in AUGMENT_NOUNS.items()},
        "negation_styles": list(NEGATION_STYLES),
        "uncertain_styles": list(UNCERTAIN_STYLES),
        "normal_statements": list(AUGMENT_NORMAL),
        "rules": [
            "train diffusion --caption-augment P: with chance P a sample's caption is one of its image's 8 "
            "augmented captions (augmented_caption), drawn each time the sample is drawn",
            "a header or none, the person in several forms or left out, shuffled statements, lower case now "
            "and then, one-edit typos that engine.findings.record corrects",
            "engine.findings.parse.parse_prompt reads each back as the labels (or less): no side, lobe, "
            "severity, age band or sex the labels lack",
            "a study labelled normal may also be said to lack what its label rules out (no pneumonia, no "
            "effusion, ...: engine.findings.vocabulary.NORMAL_IMPLIES_ABSENT), one such negative in five",
            "captions equal to an evaluation prompt set's prompt are drawn again",
        ],
    }


__all__ = [
    "AUGMENT_NOUNS",
    "AUGMENT_PRESENT",
    "AugmentTarget",
    "augment_rng",
    "augment_target",
    "augmentation_grammar",
    "augmented_caption",
    "can_augment",
    "held_out_prompts",
    "round_trip_problems",
    "training_caption",
]
