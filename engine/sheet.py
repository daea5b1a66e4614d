"""A contact sheet: images tiled in labelled rows and columns into one 8-bit image.

Used by ``cxr-studio grid`` and by the app's prompt x seed sheet, so both draw the same sheet.
"""

from __future__ import annotations

import textwrap

import cv2
import numpy as np

LABEL_WIDTH = 260
HEADER = 28
FOOTER = 30
GAP = 4
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(canvas: np.ndarray, text: str, x: int, y: int, scale: float = 0.45) -> None:
    cv2.putText(canvas, text, (x, y), FONT, scale, 255, 1, cv2.LINE_AA)


def contact_sheet(rows: list[tuple[str, list[np.ndarray]]], seeds: list[int], footer: str) -> np.ndarray:
    """8-bit sheet: ``rows`` of (prompt, images (H, W) uint8 one per seed), labelled."""
    height, width = rows[0][1][0].shape
    columns = len(seeds)
    sheet_w = LABEL_WIDTH + columns * (width + GAP)
    sheet_h = HEADER + len(rows) * (height + GAP) + FOOTER
    canvas = np.zeros((sheet_h, sheet_w), dtype=np.uint8)
    for j, seed in enumerate(seeds):
        _text(canvas, f"seed {seed}", LABEL_WIDTH + j * (width + GAP) + 4, HEADER - 9)
    for i, (prompt, images) in enumerate(rows):
        top = HEADER + i * (height + GAP)
        for k, line in enumerate(textwrap.wrap(prompt, 34)[: max(1, height // 18)]):
            _text(canvas, line, 6, top + 18 + 18 * k, 0.42)
        for j, image in enumerate(images):
            left = LABEL_WIDTH + j * (width + GAP)
            canvas[top : top + height, left : left + width] = image
    _text(canvas, footer, 6, sheet_h - 10, 0.42)
    return canvas
