"""A contact sheet: images tiled in labelled rows and columns into one 8-bit image, and the plan of
one-image requests behind it (one row per prompt, one column per seed or per guidance scale).

Used by ``cxr-studio grid`` and by the app's prompt x seed sheet, so both draw the same sheet.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import replace

import cv2
import numpy as np

from engine.pipeline import GenerationRequest

AXES = ("seed", "guidance")  # what changes from column to column
MAX_CELLS = 64

LABEL_WIDTH = 260
HEADER = 28
FOOTER = 30
GAP = 4
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(canvas: np.ndarray, text: str, x: int, y: int, scale: float = 0.45) -> None:
    cv2.putText(canvas, text, (x, y), FONT, scale, 255, 1, cv2.LINE_AA)


def sheet_requests(
    template: GenerationRequest, prompts: Sequence[str], axis: str, values: Sequence[float]
) -> list[list[GenerationRequest]]:
    """One-image requests, a row per prompt and a column per value, each validated.

    ``axis`` "seed": column j has seed ``values[j]`` (the grid command's columns); "guidance": guidance scale
    ``values[j]`` with the template's seed. Everything else comes from ``template``. ValueError (RequestError,
    PromptError) names what is wrong; more than MAX_CELLS cells are refused.
    """
    if axis not in AXES:
        raise ValueError(f"the sheet's axis must be one of {', '.join(AXES)}, not {axis!r}")
    if not prompts or not values:
        raise ValueError("a sheet needs at least one prompt and one column value")
    if len(prompts) * len(values) > MAX_CELLS:
        raise ValueError(f"a sheet holds at most {MAX_CELLS} images, not {len(prompts)} x {len(values)}")
    one = replace(template, batch_size=1)
    column = "seed" if axis == "seed" else "guidance_scale"
    return [[replace(one, prompt=prompt, **{column: value}).validated() for value in values] for prompt in prompts]


def column_labels(axis: str, values: Sequence[float]) -> list[str]:
    """The column headers: 'seed 5' or 'guidance 4.5'."""
    return [f"seed {int(v)}" if axis == "seed" else f"guidance {float(v):g}" for v in values]


def contact_sheet(rows: list[tuple[str, list[np.ndarray]]], column_names: list[str], footer: str) -> np.ndarray:
    """8-bit sheet: ``rows`` of (prompt, images (H, W) uint8 one per column), labelled by ``column_names``."""
    height, width = rows[0][1][0].shape
    columns = len(column_names)
    sheet_w = LABEL_WIDTH + columns * (width + GAP)
    sheet_h = HEADER + len(rows) * (height + GAP) + FOOTER
    canvas = np.zeros((sheet_h, sheet_w), dtype=np.uint8)
    for j, name in enumerate(column_names):
        _text(canvas, name, LABEL_WIDTH + j * (width + GAP) + 4, HEADER - 9)
    for i, (prompt, images) in enumerate(rows):
        top = HEADER + i * (height + GAP)
        for k, line in enumerate(textwrap.wrap(prompt, 34)[: max(1, height // 18)]):
            _text(canvas, line, 6, top + 18 + 18 * k, 0.42)
        for j, image in enumerate(images):
            left = LABEL_WIDTH + j * (width + GAP)
            canvas[top : top + height, left : left + width] = image
    _text(canvas, footer, 6, sheet_h - 10, 0.42)
    return canvas
