"""engine.findings.record: prompts as trainees type them -> one structured record (findings, places, age, sex, view).

Cases are parameterised (MONAI style): each prompt with the record it must give. The training captions
(training.data.captions) must parse back to their own labels, header included.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import pytest

from engine.findings.parse import TYPO_TARGETS, correct_typo, parse_prompt
from engine.findings.reader import summarize
from engine.findings.record import AGE_BANDS, FindingEntry, PromptRecord, RecordError
from engine.findings.vocabulary import ABSENT, NO_FINDING, PRESENT, UNCERTAIN


@dataclass(frozen=True)
class Case:
    """A prompt and what its record must hold.

    ``findings``: every finding other than no_finding, with its status (exactly these, no others);
    ``entries``: (finding, status, side, lobe) of every entry (exactly these); the rest exact values.
    """

    prompt: str
    findings: dict[str, str] = field(default_factory=dict)
    entries: tuple[tuple[str, str, str | None, str | None], ...] | None = None
    age: float | None = None
    age_band: str | None = None
    sex: str | None = None
    view: str | None = None
    ignored: tuple[str, ...] = ()
    recognised: bool = True


P, A, U = PRESENT, ABSENT, UNCERTAIN

CASES = [
    # shorthand, lobes and sides
    Case("45M RLL consol, no PTX", {"consolidation": P, "pneumothorax": A},
         (("consolidation", P, "right", "RLL"), ("pneumothorax", A, None, None)), 45, "adult", "male"),
    Case("RLL pneumonia", {"pneumonia": P}, (("pneumonia", P, "right", "RLL"),)),
    Case("LUL mass", {"mass": P}, (("mass", P, "left", "LUL"),)),
    Case("RUL and RML consolidation", {"consolidation": P},
         (("consolidation", P, "right", "RUL"), ("consolidation", P, "right", "RML"))),
    Case("lingular consolidation 8 yo girl", {"consolidation": P}, (("consolidation", P, "left", "lingula"),),
         8, "child", "female"),
    Case("left base atelectasis", {"atelectasis": P}, (("atelectasis", P, "left", "LLL"),)),
    Case("r lower zone opacity", {"opacity": P}, (("opacity", P, "right", "RLL"),)),
    Case("L PTX", {"pneumothorax": P}, (("pneumothorax", P, "left", None),)),
    Case("bibasal effusions", {"pleural_effusion": P}, (("pleural_effusion", P, "bilateral", None),)),
    Case("bilat pleural effs", {"pleural_effusion": P}, (("pleural_effusion", P, "bilateral", None),)),
    Case("b/l infiltrates in a 45 yo F", {"infiltration": P}, (("infiltration", P, "bilateral", None),),
         45, "adult", "female"),
    Case("right and left effusions", {"pleural_effusion": P}, (("pleural_effusion", P, "bilateral", None),)),
    Case("elderly man, supine, L>R effusions, cardiomegaly", {"pleural_effusion": P, "cardiomegaly": P},
         (("pleural_effusion", P, "bilateral", None), ("cardiomegaly", P, None, None)),
         None, "older_adult", "male", "supine AP"),
    Case("Right pleural effusion, no pneumothorax", {"pleural_effusion": P, "pneumothorax": A},
         (("pleural_effusion", P, "right", None), ("pneumothorax", A, None, None))),
    Case("consolidation in the right lower lobe with small effusion", {"consolidation": P, "pleural_effusion": P},
         (("consolidation", P, "right", "RLL"), ("pleural_effusion", P, None, None))),
    Case("Pneumonia of the left lower lobe", {"pneumonia": P}, (("pneumonia", P, "left", "LLL"),)),
    Case("Tension pneumothorax on the right", {"pneumothorax": P}, (("pneumothorax", P, "right", None),)),
    Case("teenage boy, PA, left apical pneumothorax", {"pneumothorax": P}, (("pneumothorax", P, "left", None),),
         None, "adolescent", "male", "PA"),
    Case("ap supine film 2 month old baby, RML collapse", {"atelectasis": P}, (("atelectasis", P, "right", "RML"),),
         0.17, "infant", None, "supine AP"),
    # negation and uncertainty
    Case("no pneumothorax", {"pneumothorax": A}, (("pneumothorax", A, None, None),)),
    Case("no pneumonia", {"pneumonia": A}, (("pneumonia", A, None, None),)),
    Case("no PTX or effusion", {"pneumothorax": A, "pleural_effusion": A}),
    Case("?pneumonia", {"pneumonia": U}, (("pneumonia", U, None, None),)),
    Case("? PTX after CVC insertion", {"pneumothorax": U, "support_devices": P}, ignored=("insertion",)),
    Case("pneumonia?", {"pneumonia": U}),
    Case("r/o pneumonia", {"pneumonia": U}),
    Case("query PTX", {"pneumothorax": U}),
    Case("toddler, LLL pneumonia vs atelectasis", {"pneumonia": U, "atelectasis": U},
         (("pneumonia", U, "left", "LLL"), ("atelectasis", U, "left", "LLL")), None, "child"),
    Case("Heart size normal. No effusion.", {"cardiomegaly": A, "pleural_effusion": A}),
    Case("adult female, no acute abnormality", {}, (), None, "adult", "female"),
    # devices, heart, typos
    Case("portable CXR, ETT and NGT in situ", {"support_devices": P}, None, None, None, None, "AP"),
    Case("CVC tip in the SVC", {"support_devices": P}, None, ignored=("SVC",)),
    Case("M 70 yo, enlarged heart", {"cardiomegaly": P}, (("cardiomegaly", P, None, None),), 70, "older_adult", "male"),
    Case("pt 80F APO", {"edema": P}, None, 80, "older_adult", "female"),
    Case("cardiomegally with pulmonary odema", {"cardiomegaly": P, "edema": P}),
    Case("6 month old infant with pnemonia", {"pneumonia": P}, (("pneumonia", P, None, None),), 0.5, "infant"),
    Case("effusoin R lower zone", {"pleural_effusion": P}, (("pleural_effusion", P, "right", None),)),
    Case("atelectsis RLL", {"atelectasis": P}, (("atelectasis", P, "right", "RLL"),)),
    Case("pnuemothorax", {"pneumothorax": P}),
    Case("hyperinflated lungs c/w COPD in a 67 year old male", {"hyperinflation": P, "emphysema": P}, None,
         67, "older_adult", "male"),
    # free word order, no header, demographics and views
    Case("Large left pneumothorax in an adult", {"pneumothorax": P}, (("pneumothorax", P, "left", None),),
         None, "adult"),
    Case("child with consolidation, AP", {"consolidation": P}, None, None, "child", None, "AP"),
    Case("paediatric PA chest film, viral pneumonia", {"pneumonia": P, "viral_pneumonia": P}, None,
         None, "child", None, "PA"),
    Case("normal paediatric CXR", {}, (), None, "child"),
    Case("PA and lateral, normal", {}, (), view="PA"),
    Case("lateral view, small effusion", {"pleural_effusion": P}, view="lateral"),
    Case("CXR for 3 week old neonate, ?RDS", {}, (), 0.06, "infant", ignored=("RDS",)),
    Case("Normal chest x-ray of a 30 year old woman", {}, (), 30, "adult", "female"),
    Case("neonate", {}, (), None, "infant"),
    Case("aged 12, male, erect PA", {}, (), 12, "adolescent", "male", "PA"),
    Case("4", {}, (), ignored=("4",), recognised=False),
    # a lone M or F is a sex only when attached to an age; a size is not an age
    Case("RML consolidation, M", {"consolidation": P}, (("consolidation", P, "right", "RML"),), ignored=("M",)),
    Case("5 mm nodule RUL", {"nodule": P}, (("nodule", P, "right", "RUL"),)),
    Case("CXR PA 35 y/o M - normal", {}, (), 35, "adult", "male", "PA"),
    Case("Rt sided pneumothorax", {"pneumothorax": P}, (("pneumothorax", P, "right", None),)),
    Case("lt effusion", {"pleural_effusion": P}, (("pleural_effusion", P, "left", None),)),
    Case("effusion R", {"pleural_effusion": P}, (("pleural_effusion", P, "right", None),)),
    Case("no L effusion", {"pleural_effusion": A}, (("pleural_effusion", A, "left", None),)),
    Case("R PTX, no L PTX", {"pneumothorax": P},
         (("pneumothorax", P, "right", None), ("pneumothorax", A, "left", None))),
    Case("consolidation at the left base and right apex", {"consolidation": P},
         (("consolidation", P, "left", "LLL"), ("consolidation", P, "right", "RUL"))),
    Case("haziness left lower zone", {"opacity": P}, (("opacity", P, "left", "LLL"),)),
    Case("pneumonia, likely RML", {"pneumonia": P}, (("pneumonia", P, "right", "RML"),)),
    Case("small apical PTX R", {"pneumothorax": P}, (("pneumothorax", P, "right", None),)),
    # a zone gives no lobe to a finding that is not in a lobe; a named lobe is kept as said
    Case("left base effusion", {"pleural_effusion": P}, (("pleural_effusion", P, "left", None),)),
    Case("RLL effusion", {"pleural_effusion": P}, (("pleural_effusion", P, "right", "RLL"),)),
    # form-style answers
    Case("pneumonia: no", {"pneumonia": A}, (("pneumonia", A, None, None),)),
    Case("cardiomegaly? no", {"cardiomegaly": A}),
    Case("PTX - yes", {"pneumothorax": P}),
    # a duration is not an age
    Case("cough for 3 days, RLL pneumonia", {"pneumonia": P}, (("pneumonia", P, "right", "RLL"),),
         ignored=("cough", "3")),
    Case("smoker for 40 years, 60 yo man", {}, (), 60, "adult", "male", ignored=("smoker", "40")),
    Case("18 months boy with pneumonia", {"pneumonia": P}, None, 1.5, "infant", "male"),
    Case("Épanchement pleural droit", {}, (), ignored=("Épanchement", "droit"), recognised=False),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.prompt for case in CASES])
def test_prompt_gives_its_record(case: Case) -> None:
    record = parse_prompt(case.prompt)
    got = {name: status for name, status in record.findings.items() if name != NO_FINDING}
    assert got == case.findings, record.describe()
    if case.entries is not None:
        entries = {(e.finding, e.status, e.side, e.lobe) for e in record.entries}
        assert entries == set(case.entries), record.describe()
    assert (record.age, record.age_band, record.sex, record.view) == (
        case.age,
        case.age_band,
        case.sex,
        case.view,
    ), record.describe()
    assert record.ignored_words == case.ignored
    assert record.recognised_anything == case.recognised


def test_any_text_gives_a_valid_record_that_survives_json() -> None:
    rng = random.Random(16)
    pieces = [
        "RLL",
        "no",
        "?",
        "PTX",
        "L",
        "R",
        "45M",
        "b/l",
        "consol",
        "effusoin",
        ",",
        ".",
        "and",
        "İ",
        "x-ray",
        "6 month old",
        "supine",
        "AP",
        "M",
        "for",
        "3 days",
        "normal",
        "-",
        "L>R",
        "pna",
        "  ",
        "\n",
        "99999",
    ]
    for _ in range(300):
        prompt = "".join(rng.choice(pieces) + rng.choice(["", " "]) for _ in range(rng.randint(0, 12)))
        record = parse_prompt(prompt)
        assert PromptRecord.from_json(record.to_json()) == record, prompt
        for span in (*record.spans, *record.ignored):
            assert prompt[span.start : span.end].strip(), (prompt, span)


def test_enough_cases_written_as_trainees_type() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize(
    ("prompt", "zone"),
    [
        ("bibasal effusions", "lower"),
        ("left apical pneumothorax", "upper"),
        ("R mid zone opacity", "mid"),
        ("small apical PTX R", "upper"),
    ],
)
def test_zone_is_kept_where_no_lobe_is_named(prompt: str, zone: str) -> None:
    (entry,) = parse_prompt(prompt).entries
    assert entry.zone == zone
    if zone == "mid":
        assert entry.lobe is None  # a mid zone is not one lobe


@pytest.mark.parametrize(
    ("prompt", "words"),
    [
        ("45M RLL consol, no PTX", ["45M", "RLL", "consol", "no", "PTX"]),
        ("?pneumonia in a toddler", ["pneumonia", "toddler"]),
        ("effusoin R lower zone", ["effusoin", "R lower zone"]),
    ],
)
def test_spans_point_at_the_words_as_typed(prompt: str, words: list[str]) -> None:
    record = parse_prompt(prompt)
    used = [prompt[span.start : span.end] for span in record.spans]
    for word in words:
        assert word in used, used


def test_finding_span_values_and_cue_status() -> None:
    record = parse_prompt("no PTX")
    kinds = {(span.kind, span.value, record.text[span.start : span.end]) for span in record.spans}
    assert ("finding", "pneumothorax", "PTX") in kinds
    assert ("cue", ABSENT, "no") in kinds


# typo tolerance must not invent findings ------------------------------------------------------------

NORMAL_SENTENCES = [
    "The patient is feeling much better today.",
    "Please generate a picture for my teaching session tomorrow.",
    "Diffusion models are trained on many images.",
    "The infusion is running through the left arm.",
    "A module on imaging for students.",
    "The lingual nerve runs under the tongue.",
    "Plural forms of nouns.",
    "Pneumatic tools were used on the building site.",
    "The capacity of the lecture theatre is limited.",
    "He enjoys gardening and reading in the evening.",
    "Remember the meeting with the consultant at noon.",
    "Exposure was adequate and the film is well centred.",
    "Collateral damage was avoided.",
    "The contrast and brightness were adjusted.",
    "Opening hours are posted at the reception desk.",
    "Information about the department is online.",
    "The emphasis of the course is on interpretation.",
    "Federation of national societies.",
    "Atmospheric pressure changes with altitude.",
    "Consultation requested by the ward team.",
    "Bilingual teaching materials are available.",
    "The weather was hazy this morning.",
    "Turn right after the lift and then left at the end of the corridor.",
    "He left early, no problem, see you tomorrow.",
    "Please make it look realistic and sharp.",
    "Effective teaching needs good examples.",
]


@pytest.mark.parametrize("sentence", NORMAL_SENTENCES)
def test_ordinary_sentences_give_no_findings(sentence: str) -> None:
    record = parse_prompt(sentence)
    assert dict(record.findings) == {}, record.describe()
    assert record.entries == ()


@pytest.mark.parametrize(
    ("typo", "word"),
    [("pnemonia", "pneumonia"), ("effusoin", "effusion"), ("pnuemothorax", "pneumothorax"),
     ("consolidaton", "consolidation"), ("cardiomegally", "cardiomegaly"), ("atelectsis", "atelectasis"),
     ("opacitiy", "opacity"), ("emphysama", "emphysema")],
)  # fmt: skip
def test_one_edit_typos_of_finding_words_are_read(typo: str, word: str) -> None:
    assert correct_typo(typo) == word


@pytest.mark.parametrize(
    "word", ["diffusion", "infusion", "lingual", "plural", "module", "nodules", "capacity", "emphasis", "pneumatic"]
)
def test_ordinary_words_are_not_corrected(word: str) -> None:
    assert correct_typo(word) is None


def test_every_typo_target_is_itself_a_finding_or_place_word() -> None:
    for target in TYPO_TARGETS:
        record = parse_prompt(target)
        assert record.findings or record.entries or any(s.kind == "place" for s in record.spans), target


# the training captions parse back to their labels ------------------------------------------------------


def _caption_cases() -> list:
    from training.data.captions import NIH_LABELS, PAEDIATRIC_LABELS, caption_rng, nih_caption, paediatric_caption

    cases = []
    for label in sorted(PAEDIATRIC_LABELS):
        for seed in range(25):
            cases.append((paediatric_caption(label, caption_rng(seed, "p.jpeg")), None, None, "AP", "child"))
    labels = sorted(NIH_LABELS)
    combos = [[label] for label in labels] + [
        [a, b] for a in labels for b in labels if a < b and "No Finding" not in (a, b)
    ]
    for index, combo in enumerate(combos):
        age = (1, 5, 15, 20, 45, 70, 88)[index % 7]
        sex = "MF"[index % 2]
        view = ("PA", "AP", None, "LATERAL")[index % 4]
        caption = nih_caption(combo, caption_rng(index, "n.png"), age=age, sex=sex, view=view)
        band = next(b for b, (low, high) in AGE_BANDS.items() if low <= age < high)
        cases.append((caption, age, "male" if sex == "M" else "female", {"LATERAL": "lateral"}.get(view, view), band))
    return cases


def test_captions_built_from_labels_parse_back_to_the_same_labels() -> None:
    pytest.importorskip("training.data.captions")
    cases = _caption_cases()
    assert len(cases) > 150
    for caption, age, sex, view, band in cases:
        record = parse_prompt(caption.text)
        wrong = {n: (s, record.findings.get(n)) for n, s in caption.findings.items() if record.findings.get(n) != s}
        assert not wrong, f"{caption.text!r}: {wrong}"
        assert dict(record.findings) == summarize(caption.text), caption.text
        assert (record.age, record.sex, record.view, record.age_band) == (age, sex, view, band), caption.text
        # the grammar invents no place: a side only where the phrase itself says "bilateral"
        for entry in record.entries:
            assert entry.lobe is None, caption.text
            assert entry.side in (None, "bilateral") and (entry.side is None or "bilateral" in caption.text)
        assert record.ignored_words == (), caption.text
        assert record.recognised_anything


def test_the_card_example_prompts_are_understood_word_for_word() -> None:
    pytest.importorskip("training.data.captions")
    from training.data.captions import example_prompts

    for prompt in example_prompts():
        record = parse_prompt(prompt)
        assert record.ignored_words == (), prompt
        assert record.view in ("PA", "AP"), prompt
        assert record.age_band is not None, prompt


# the record: JSON, validation, describe ---------------------------------------------------------------


@pytest.mark.parametrize("case", CASES[:12] + CASES[-6:], ids=lambda case: case.prompt)
def test_json_round_trip(case: Case) -> None:
    record = parse_prompt(case.prompt)
    again = PromptRecord.from_json(record.to_json())
    assert again == record
    assert json.loads(again.to_json()) == json.loads(record.to_json())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(colour="red"), "unknown key"),
        (lambda d: d.pop("view"), "missing key"),
        (lambda d: d.update(version=99), "version"),
        (lambda d: d.update(findings={"pneumothorax": "maybe"}), "status"),
        (lambda d: d.update(findings={"broken_leg": "present"}), "unknown finding"),
        (lambda d: d.update(sex="X"), "sex"),
        (lambda d: d.update(view="oblique"), "view"),
        (lambda d: d.update(age=-3), "age"),
        (lambda d: d.update(age_band="teen"), "age_band"),
        (lambda d: d.update(age_band="adult"), "does not fit age"),
        (lambda d: d.update(findings=["abc"]), "malformed"),
        (lambda d: d["entries"].append({"finding": "pneumothorax", "status": "present", "side": "up", "lobe": None,
                                        "zone": None}), "side"),
        (lambda d: d["entries"].append({"finding": "pneumothorax", "status": "present", "side": None, "lobe": None,
                                        "zone": None, "extra": 1}), "entries"),
        (lambda d: d["spans"].append([0, 999, "finding", "x"]), "inside the text"),
        (lambda d: d.update(recognised_anything=False), "recognised_anything"),
    ],
)  # fmt: skip
def test_bad_json_is_refused_naming_the_field(change, message: str) -> None:
    data = parse_prompt("RLL consolidation, no PTX, 5 yo, AP").to_dict()
    change(data)
    with pytest.raises(RecordError, match=message):
        PromptRecord.from_dict(data)


def test_not_json_is_refused() -> None:
    with pytest.raises(RecordError, match="not JSON"):
        PromptRecord.from_json("{")


def test_record_is_frozen() -> None:
    record = parse_prompt("no PTX")
    assert hash(record) == hash(parse_prompt("no PTX"))
    with pytest.raises(AttributeError):
        record.view = "PA"  # type: ignore[misc]
    with pytest.raises(TypeError):
        record.findings["pneumothorax"] = PRESENT  # type: ignore[index]


@pytest.mark.parametrize(
    ("prompt", "line"),
    [
        ("child, AP, RLL consolidation, no PTX",
         "consolidation present (right lower lobe) · pneumothorax absent · child · AP"),
        ("bibasal effusions in a 70 year old woman",
         "pleural effusion present (bilateral lower zones) · 70 years · older adult · female"),
        ("6 month old infant, ?pneumonia", "pneumonia uncertain · 6 months · infant"),
        ("normal CXR", "normal"),
        ("4", "nothing recognised"),
    ],
)  # fmt: skip
def test_describe_is_one_short_line(prompt: str, line: str) -> None:
    assert parse_prompt(prompt).describe() == line


def test_entries_of_a_subtype_name_the_parent_too() -> None:
    record = parse_prompt("RLL bacterial pneumonia")
    assert FindingEntry("bacterial_pneumonia", PRESENT, "right", "RLL", "lower") in record.entries
    assert FindingEntry("pneumonia", PRESENT, "right", "RLL", "lower") in record.entries


def test_a_non_string_prompt_is_refused() -> None:
    with pytest.raises(TypeError, match="prompt must be a str"):
        parse_prompt(None)  # type: ignore[arg-type]
