"""Batches and comparisons in the app (issue 18 item 6): the last batch as thumbnails, and a prompt x seed /
prompt x guidance sheet as `cxr-studio grid` makes it, each cell opening its library case in the viewer."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from engine.sheet import FOOTER, GAP, HEADER, LABEL_WIDTH

RUN_MS = 60_000


def test_the_last_batch_is_a_grid_whose_cells_open_their_cases(loaded_window, qtbot) -> None:
    window = loaded_window
    window.prompt_box.set_text("Normal chest radiograph")
    window.generate_panel.steps_spin.setValue(2)
    window.generate_panel.batch_spin.setValue(3)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        assert window.generate()
    ids = list(window.last_batch)
    assert len(ids) == 3 and None not in ids
    window.open_batch_grid()
    dialog = window.batch_grid_dialog
    grid = dialog.grid
    assert [cell.case_id for cell in grid.cells[0]] == ids
    assert "seed" in grid.button(0, 1).text()
    grid.button(0, 1).click()  # opens case 2 of the batch in the viewer
    assert window.current.case_id == ids[1]
    assert np.array_equal(window.current.pixels, window.library.image(ids[1]))


def test_a_prompt_by_seed_and_a_prompt_by_guidance_sheet_in_the_app(loaded_window, qtbot, tmp_path: Path) -> None:
    window = loaded_window
    window.prompt_box.set_text("Normal chest radiograph")
    window.generate_panel.steps_spin.setValue(2)
    window.open_batch_grid()
    dialog = window.batch_grid_dialog
    prompts = ["Normal chest radiograph", "Left pleural effusion"]
    dialog.prompts_edit.setPlainText("\n".join(prompts))
    dialog.values_edit.setText("5, 6, 7")
    with qtbot.waitSignal(dialog.shown, timeout=RUN_MS):
        dialog.sheet_button.click()
    grid = dialog.grid
    assert grid.row_names == prompts and grid.column_names == ["seed 5", "seed 6", "seed 7"]
    for i, prompt in enumerate(prompts):
        for j, seed in enumerate((5, 6, 7)):
            case = window.library.get(grid.cells[i][j].case_id)
            assert (case.prompt, case.seed, case.num_steps) == (prompt, seed, 2)
    grid.button(1, 2).click()
    assert window.current.case_id == grid.cells[1][2].case_id
    # the PNG is the grid command's sheet (engine.sheet.contact_sheet): its size and a tile's pixels
    saved = dialog.save_png(tmp_path / "sheet.png")
    sheet = cv2.imread(str(saved), cv2.IMREAD_UNCHANGED)
    size = 32
    assert sheet.shape == (HEADER + 2 * (size + GAP) + FOOTER, LABEL_WIDTH + 3 * (size + GAP))
    tile = sheet[HEADER + size + GAP : HEADER + 2 * size + GAP, LABEL_WIDTH + 2 * (size + GAP) :][:, :size]
    stored = window.library.image(grid.cells[1][2].case_id).astype(np.float64) / 65535.0
    assert np.abs(tile.astype(np.int16) - np.round(stored * 255).astype(np.int16)).max() <= 1
    # prompt x guidance: one seed (the panel's), a column per guidance scale
    window.generate_panel.seed_edit.setText("11")
    window.generate_panel.seed_lock.setChecked(True)
    dialog.prompts_edit.setPlainText(prompts[1])
    dialog.axis_box.setCurrentIndex(dialog.axis_box.findData("guidance"))
    dialog.values_edit.setText("1, 3.5")
    with qtbot.waitSignal(dialog.shown, timeout=RUN_MS):
        dialog.sheet_button.click()
    assert grid.column_names == ["guidance 1", "guidance 3.5"]
    cases = [window.library.get(cell.case_id) for cell in grid.cells[0]]
    assert [(c.seed, c.guidance_scale) for c in cases] == [(11, 1.0), (11, 3.5)]
    # bad column values are named, nothing runs
    dialog.values_edit.setText("1, x")
    assert not dialog.generate_sheet() and "'x'" in dialog.status.text() and not window.is_running()
