"""The denoising-steps panel on its own: clearing it for a new run must leave it following the newest frame."""

from __future__ import annotations

import numpy as np

from desktop.widgets.steps import StepsPanel


def frames(count: int, offset: int = 0) -> list[np.ndarray]:
    return [np.random.default_rng(offset + i).integers(0, 65535, (32, 32), dtype=np.uint16) for i in range(count)]


def test_a_new_run_after_a_finished_one_follows_its_newest_frame(qtbot) -> None:
    """Issue 17, item 1: clear() set following on, then emptying the filmstrip moved its current row and the
    row handler took that for a click on frame 1, so every second run stayed on "step 1"."""
    panel = StepsPanel()
    qtbot.addWidget(panel)
    panel.resize(800, 120)
    panel.show()
    qtbot.waitExposed(panel)
    shown: list[int] = []
    panel.frame_selected.connect(shown.append)
    for run in range(4):
        panel.clear()
        qtbot.wait(10)  # the event loop runs between the worker's signals, as in the window
        assert panel.following(), f"run {run + 1}"
        for i, pixels in enumerate(frames(4, run * 10)):
            panel.add_frame(f"step {i + 1} / 4", pixels)
            qtbot.wait(10)
        panel.add_frame("final", frames(1, run * 10 + 9)[0])
        qtbot.wait(10)
        assert panel.current_frame().label == "final", f"run {run + 1}: {panel.position_label.text()}"
        assert shown[-1] == 4 and panel.filmstrip.currentRow() == 4


def test_a_click_on_the_strip_still_stops_following(qtbot) -> None:
    panel = StepsPanel()
    qtbot.addWidget(panel)
    for i, pixels in enumerate(frames(3)):
        panel.add_frame(f"step {i + 1} / 3", pixels)
    panel.filmstrip.setCurrentRow(0)
    assert not panel.following() and panel.current_index() == 0
    panel.add_frame("final", frames(1, 9)[0])
    assert panel.current_index() == 0  # the user's choice is kept until the next run


def test_export_writes_the_png_frames_and_the_gif_with_no_pillow_guard(tmp_path) -> None:
    """Pillow is a dependency: the 'Pillow is not installed, PNG frames only' branch and its
    pillow_available() guard were dead code."""
    from PIL import Image

    from desktop.widgets import steps

    assert not hasattr(steps, "pillow_available")
    shots = [steps.Frame(f"step {i + 1} / 3", pixels) for i, pixels in enumerate(frames(3))]
    shots.append(steps.Frame("final", frames(1, 9)[0]))
    pngs, gif, message = steps.export_frames(shots, tmp_path / "out")
    assert [p.name for p in pngs] == ["step_001.png", "step_002.png", "step_003.png", "final.png"]
    assert gif == tmp_path / "out" / "denoising.gif" and "animated GIF" in message
    with Image.open(gif) as animation:
        assert animation.n_frames == 4
