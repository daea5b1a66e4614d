"""engine.sheet: the prompt x seed / prompt x guidance plan and the contact sheet the grid command and the app share."""

from __future__ import annotations

import numpy as np
import pytest

from engine.pipeline import GenerationRequest, RequestError
from engine.sheet import column_labels, contact_sheet, sheet_requests


def test_sheet_requests_are_one_image_requests_by_prompt_and_seed_or_guidance() -> None:
    template = GenerationRequest("x", num_steps=3, guidance_scale=2.0, seed=9, batch_size=4)
    rows = sheet_requests(template, ["a", "b"], "seed", [5, 6, 7])
    assert [[(r.prompt, r.seed, r.batch_size, r.guidance_scale) for r in row] for row in rows] == [
        [("a", 5, 1, 2.0), ("a", 6, 1, 2.0), ("a", 7, 1, 2.0)],
        [("b", 5, 1, 2.0), ("b", 6, 1, 2.0), ("b", 7, 1, 2.0)],
    ]
    rows = sheet_requests(template, ["a"], "guidance", [1.0, 4.5])
    assert [(r.seed, r.guidance_scale) for r in rows[0]] == [(9, 1.0), (9, 4.5)]
    assert column_labels("seed", [5, 6]) == ["seed 5", "seed 6"]
    assert column_labels("guidance", [1.0, 4.5]) == ["guidance 1", "guidance 4.5"]
    with pytest.raises(RequestError, match="guidance"):
        sheet_requests(template, ["a"], "guidance", [99.0])
    with pytest.raises(ValueError, match="axis"):
        sheet_requests(template, ["a"], "steps", [1])
    with pytest.raises(ValueError, match="at most"):
        sheet_requests(template, ["a"] * 9, "seed", list(range(9)))
    with pytest.raises(ValueError, match="prompt"):
        sheet_requests(template, [], "seed", [1])


def test_the_sheet_labels_its_columns_with_the_labels_given() -> None:
    image = np.full((32, 32), 200, np.uint8)
    plain = contact_sheet([("a", [image, image])], ["seed 1", "seed 2"], "footer")
    other = contact_sheet([("a", [image, image])], ["guidance 1", "guidance 9"], "footer")
    assert plain.shape == other.shape and not np.array_equal(plain[:28], other[:28])
