"""training.data.captions: every phrasing round-trips through engine.findings.summarize."""

from __future__ import annotations

import json

import pytest

from engine.findings.reader import summarize
from engine.findings.vocabulary import ABSENT, NO_FINDING, PRESENT
from training.data.caption_augment import AUGMENT_PRESENT, augmentation_grammar
from training.data.captions import (
    NEGATIVE_PHRASES,
    NIH_LABELS,
    NORMAL_STATEMENTS,
    PAEDIATRIC_LABELS,
    PAEDIATRIC_PHRASES,
    POSITIVE_PHRASES,
    CaptionError,
    caption_from_findings,
    caption_grammar,
    caption_rng,
    example_prompts,
    header,
    nih_caption,
    paediatric_caption,
)


def _assert_round_trip(text: str, findings: dict[str, str]) -> None:
    summary = summarize(text)
    wrong = {name: (status, summary.get(name)) for name, status in findings.items() if summary.get(name) != status}
    assert not wrong, f"{text!r}: stated -> read {wrong}"


@pytest.mark.parametrize(("name", "phrase"), [(n, p) for n, ps in POSITIVE_PHRASES.items() for p in ps])
def test_every_positive_phrase_reads_as_present(name: str, phrase: str) -> None:
    _assert_round_trip(f"PA chest radiograph: {phrase}.", {name: PRESENT, NO_FINDING: ABSENT})


@pytest.mark.parametrize(("name", "phrase"), [(n, p) for n, ps in PAEDIATRIC_PHRASES.items() for p in ps])
def test_every_paediatric_phrase_reads_as_present(name: str, phrase: str) -> None:
    _assert_round_trip(f"Paediatric AP chest radiograph: {phrase}.", {name: PRESENT, "pneumonia": PRESENT})


@pytest.mark.parametrize(("name", "phrase"), [(n, p) for n, ps in NEGATIVE_PHRASES.items() for p in ps])
def test_every_negative_phrase_reads_as_absent(name: str, phrase: str) -> None:
    _assert_round_trip(
        f"PA chest radiograph: cardiomegaly. {phrase}" if name != "cardiomegaly" else phrase, {name: ABSENT}
    )


@pytest.mark.parametrize("statement", NORMAL_STATEMENTS)
def test_every_normal_statement_reads_as_normal(statement: str) -> None:
    _assert_round_trip(statement, {NO_FINDING: PRESENT})


@pytest.mark.parametrize("label", sorted(PAEDIATRIC_LABELS))
def test_paediatric_captions_round_trip(label: str) -> None:
    for seed in range(40):
        caption = paediatric_caption(label, caption_rng(seed, "person1_bacteria_1.jpeg"))
        assert caption.text.startswith("Paediatric AP chest radiograph: ")
        _assert_round_trip(caption.text, caption.findings)
        for name in PAEDIATRIC_LABELS[label]:
            assert caption.findings[name] == PRESENT


def test_nih_captions_round_trip_for_every_label_and_pairs() -> None:
    labels = sorted(NIH_LABELS)
    combos = [[label] for label in labels] + [
        [a, b] for a in labels for b in labels if a < b and "No Finding" not in (a, b)
    ]
    for index, combo in enumerate(combos):
        rng = caption_rng(index, "00000001_000.png")
        caption = nih_caption(combo, rng, age=20 + index % 70, sex="MF"[index % 2], view=("PA", "AP")[index % 2])
        _assert_round_trip(caption.text, caption.findings)
        for label in combo:
            assert caption.findings[NIH_LABELS[label]] == PRESENT


def test_normal_captions_state_explicit_negatives() -> None:
    caption = paediatric_caption("normal", caption_rng(0, "IM-0001-0001.jpeg"))
    negatives = [name for name, status in caption.findings.items() if status == ABSENT]
    assert caption.findings[NO_FINDING] == PRESENT
    assert 2 <= len(negatives) <= 4


def test_adult_caption_header_and_example_from_the_brief() -> None:
    assert header(view="PA", age=61, sex="F") == "PA chest radiograph of a 61-year-old woman"
    assert header(view="AP", age=80, sex="M") == "AP chest radiograph of an 80-year-old man"
    assert header(view="PA", age=12, sex="M") == "Paediatric PA chest radiograph of a 12-year-old boy"
    assert header(view=None) == "Frontal chest radiograph"
    seen = {nih_caption(["Cardiomegaly"], caption_rng(s, "x"), age=61, sex="F", view="PA").text for s in range(60)}
    assert "PA chest radiograph of a 61-year-old woman: cardiomegaly. No pneumothorax." in seen


def test_negatives_never_contradict_a_positive() -> None:
    for seed in range(200):
        caption = caption_from_findings(["pneumonia"], caption_rng(seed, "x"), view="PA")
        assert caption.findings.get("consolidation") != ABSENT


def test_same_seed_and_key_same_caption_others_vary() -> None:
    def text(seed: int, key: str) -> str:
        return nih_caption(["Effusion", "Atelectasis"], caption_rng(seed, key), age=50, sex="F", view="PA").text

    assert text(3, "a.png") == text(3, "a.png")
    assert len({text(seed, "a.png") for seed in range(30)}) > 3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: paediatric_caption("covid", caption_rng(0, "x")), "unknown paediatric label"),
        (lambda: nih_caption(["Tumour"], caption_rng(0, "x"), age=1, sex="F", view="PA"), "unknown NIH label"),
        (lambda: header(age=-1), "age"),
        (lambda: header(sex="X"), "sex"),
        (lambda: header(view="OBLIQUE"), "view"),
        (lambda: caption_from_findings(["no_finding", "mass"], caption_rng(0, "x")), "no_finding cannot"),
    ],
)
def test_bad_labels_are_refused(call, message: str) -> None:
    with pytest.raises(CaptionError, match=message):
        call()


def test_grammar_and_example_prompts_for_model_cards() -> None:
    grammar = caption_grammar()
    assert json.loads(json.dumps(grammar)) == grammar
    assert set(grammar["positive_phrases"]) == set(POSITIVE_PHRASES)
    augmentation = augmentation_grammar()
    assert json.loads(json.dumps(augmentation)) == augmentation
    assert set(augmentation["present_phrases"]) == set(AUGMENT_PRESENT) and augmentation["rules"]
    assert grammar["rules"]
    prompts = example_prompts()
    assert len(prompts) >= 8 and len(set(prompts)) == len(prompts)
    for prompt in prompts:
        assert summarize(prompt), prompt
