"""Importers at scale (issue 20 item 2): the label tables' shared row loop, and imports that stream."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np

NIH_HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"


def _images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        assert cv2.imwrite(str(folder / name), rng.integers(0, 255, (40, 36), dtype=np.uint8))


def test_nih_names_its_malformed_and_duplicate_rows_as_hannover_does(tmp_path: Path) -> None:
    """One row loop (importers.common.table_rows) for NIH and Hannover: NIH now names the rows it
    skips (table and line), as Hannover always did."""
    from training.data.importers.run import run_import

    names = [f"0000000{i}_000.png" for i in range(1, 4)]
    _images(tmp_path / "images", names)
    table = tmp_path / "Data_Entry_2017.csv"
    table.write_text(
        NIH_HEADER + f"{names[0]},Cardiomegaly,0,1,50,F,PA\n{names[1]},No Finding,0,2\n"
        f"{names[2]},No Finding,0,3,40,M,AP\n{names[2]},Effusion,0,3,40,M,AP\n",
        encoding="utf-8",
    )
    summary, result = run_import("nih", [table, tmp_path / "images"], tmp_path / "m.jsonl")
    assert summary.skipped == Counter({"malformed row": 1, "duplicate row": 1})
    assert result.skipped_items == [
        ("Data_Entry_2017.csv, line 3", "malformed row"),
        ("Data_Entry_2017.csv, line 5", "duplicate row"),
    ]
    assert len(summary.records) == 2  # the first row of an image wins
