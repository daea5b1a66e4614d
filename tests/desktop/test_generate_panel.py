"""The generate panel on its own (no model, no window): request() describes what the controls say, load(case)
fills them from a library case, and the two round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from desktop.library import Case
from desktop.widgets.generate_panel import GeneratePanel
from engine.pipeline import MAX_SEED, GenerationRequest


def a_case(**changes) -> Case:
    values = dict(
        id=7, created="2026-01-01T00:00:00+00:00", image_path=Path("case-7.png"), width=64, height=64,
        prompt="Right lower lobe consolidation", negative_prompt="lateral view", seed=1234, num_steps=9,
        guidance_scale=2.5, sampler="euler", eta=0.0, model_id="tiny", model_fingerprint="f" * 64,
    )  # fmt: skip
    values.update(changes)
    return Case(**values)


@pytest.fixture
def panel(qtbot) -> GeneratePanel:
    panel = GeneratePanel()
    qtbot.addWidget(panel)
    return panel


def test_load_case_then_request_is_the_cases_own_request(panel: GeneratePanel) -> None:
    panel.batch_spin.setValue(3)
    panel.seed_lock.setChecked(False)
    case = a_case()
    panel.load(case)
    assert panel.seed_lock.isChecked() and panel.batch_spin.value() == 1
    assert panel.request() == case.request()  # a locked seed: the same request every time
    assert panel.request() == case.request()


def test_load_without_locking_the_seed_leaves_the_lock_box_alone(panel: GeneratePanel) -> None:
    panel.seed_lock.setChecked(False)
    panel.load(a_case(seed=5), lock_seed=False)
    assert not panel.seed_lock.isChecked() and panel.seed_edit.text() == "5"


def test_request_is_one_request_for_the_batch_whose_seeds_are_the_engines(panel: GeneratePanel) -> None:
    panel.load(a_case(seed=40))
    panel.batch_spin.setValue(3)
    request = panel.request()
    assert isinstance(request, GenerationRequest) and request.batch_size == 3 and request.seeds() == [40, 41, 42]
    one = panel.request(prompt="Normal chest radiograph", count=1)
    assert one.batch_size == 1 and one.prompt == "Normal chest radiograph" and one.seed == 40


def test_request_refuses_a_batch_past_the_largest_seed_and_a_bad_seed(panel: GeneratePanel) -> None:
    panel.load(a_case(seed=MAX_SEED - 1))
    panel.batch_spin.setValue(3)
    with pytest.raises(ValueError, match=f"seed \\+ batch count must stay at most {MAX_SEED}"):
        panel.request()
    panel.batch_spin.setValue(2)
    assert panel.request().seeds() == [MAX_SEED - 1, MAX_SEED]
    panel.seed_edit.setText("twelve")
    with pytest.raises(ValueError, match="the seed must be a whole number"):
        panel.request()


def test_an_unlocked_seed_is_drawn_anew_for_each_request(panel: GeneratePanel) -> None:
    panel.load(a_case())
    panel.seed_lock.setChecked(False)
    seeds = {panel.request().seed for _ in range(5)}
    assert len(seeds) > 1 and all(str(seed) != "1234" for seed in seeds)


def test_values_round_trip_through_apply_values(panel: GeneratePanel, qtbot) -> None:
    panel.load(a_case())
    panel.batch_spin.setValue(4)
    other = GeneratePanel()
    qtbot.addWidget(other)
    other.apply_values(panel.values())
    assert other.values() == panel.values()
    assert other.request(prompt="x") == panel.request(prompt="x")


def test_an_unlocked_seed_says_random_until_drawn_and_a_lock_locks_a_seed_one_can_see(panel: GeneratePanel) -> None:
    """Issue 18 item 4: the seed box said 0 before the first generation, though an unlocked seed is drawn."""
    assert not panel.seed_lock.isChecked()
    assert panel.seed_edit.text() == "" and panel.seed_edit.placeholderText() == "random"
    seed = panel.request(prompt="Normal chest radiograph").seed
    assert panel.seed_edit.text() == str(seed)  # the drawn seed, once drawn
    panel.seed_edit.clear()
    panel.seed_lock.setChecked(True)
    assert panel.seed_edit.text().isdigit()
    assert panel.request(prompt="Normal chest radiograph").seed == int(panel.seed_edit.text())
