"""engine.findings.understood: the record line, what the loaded model ignores (with why), nothing-recognised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.findings.understood import understand

DEFAULT_CARD = json.loads(
    (Path(__file__).resolve().parents[2] / "resources" / "models" / "default" / "model.json").read_text()
)["card"]


def reasons(prompt: str, card: dict) -> list[str]:
    return [str(item) for item in understand(prompt, card).ignored]


def test_the_default_model_ignores_places_adults_sex_and_unknown_findings() -> None:
    u = understand("RLL consol, no PTX, 45M", DEFAULT_CARD)
    assert u.line == "consolidation present (right lower lobe) · pneumothorax absent · 45 years · adult · male"
    assert not u.nothing_recognised
    assert reasons("RLL consol, no PTX, 45M", DEFAULT_CARD) == [
        "lobe 'RLL': this model cannot place findings",
        "age '45M' (adult): this model was trained on children only",
        "sex '45M' (male): this model does not condition on sex",
    ]
    assert reasons("right pneumothorax in an adult", DEFAULT_CARD) == [
        "side 'right': this model cannot place findings",
        "finding 'pneumothorax': not in this model",
        "'adult': this model was trained on children only",
    ]
    assert understand("right pneumothorax in an adult", DEFAULT_CARD).unsupported == ("pneumothorax",)


def test_a_prompt_the_model_was_trained_on_ignores_nothing() -> None:
    for prompt in DEFAULT_CARD["example_prompts"]:
        u = understand(prompt, DEFAULT_CARD)
        assert u.ignored == () and not u.nothing_recognised, prompt
    assert "child · AP" in understand(DEFAULT_CARD["example_prompts"][1], DEFAULT_CARD).line


@pytest.mark.parametrize("prompt", ["4", "asdf", "hello there"])
def test_nothing_recognised_is_flagged_and_the_words_named(prompt: str) -> None:
    u = understand(prompt, DEFAULT_CARD)
    assert u.nothing_recognised and u.line == "nothing recognised"
    assert u.lines()[-1].startswith("ignored: words ") and "not understood" in u.lines()[-1]


def test_an_empty_prompt_is_not_flagged_as_unrecognised() -> None:
    assert not understand("   ", DEFAULT_CARD).nothing_recognised


def test_a_card_that_conditions_on_place_age_and_sex_ignores_none_of_them() -> None:
    card = {
        "supported_findings": ["consolidation", "pneumothorax"],
        "conditioning": ["place", "age", "sex"],
        "age_bands": ["child", "adult"],
    }
    assert reasons("RLL consol, no PTX, 45M", card) == []
    assert reasons("consolidation in an infant", card) == ["'infant': this model was trained on child, adult only"]


def test_a_card_without_capabilities_flags_no_findings_or_ages() -> None:
    assert reasons("pneumothorax in an adult", {}) == []
    expected = ["view 'lateral': this model has no lateral images"]
    assert reasons("lateral view, effusion", {"views": ["AP", "PA"]}) == expected
