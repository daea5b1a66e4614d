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


def test_previews_say_they_are_approximate_and_decodes_say_they_are_real(qtbot) -> None:
    """Issue 18 item 5: a step preview is a fitted linear map of the latent, not the VAE's image; the strip,
    its tooltips and the position label said only "step 3 / 4", so previews passed for real images."""
    panel = StepsPanel()
    qtbot.addWidget(panel)
    shots = frames(4)
    panel.add_frame("step 1 / 4", shots[0], latent_size=(28, 28))
    panel.add_frame("step 2 / 4", shots[1], decoded=True, latent_size=(28, 28))
    panel.add_frame("final", shots[2])
    approximate, decoded, final = (panel.filmstrip.item(row) for row in range(3))
    assert "approximate" in approximate.toolTip() and "linear map of the 28x28 latent" in approximate.toolTip()
    assert "approximate" not in decoded.toolTip() and "VAE decode" in decoded.toolTip()
    assert approximate.text() != decoded.text() and "≈" in approximate.text() and final.text() == "final"
    assert [frame.kind for frame in panel.frames()] == ["approximate", "decoded", "final"]
    panel.show_frame(0)
    assert "approximate" in panel.position_label.text()
    panel.show_frame(1)
    assert "VAE decode" in panel.position_label.text()
    # the cine player runs over both kinds
    panel.fps_spin.setValue(60)
    panel.set_playing(True)
    seen: set[int] = set()
    panel.frame_selected.connect(seen.add)
    qtbot.waitUntil(lambda: seen == {0, 1, 2}, timeout=3000)
    panel.set_playing(False)


def test_decode_every_is_a_steps_option_off_by_default(qtbot) -> None:
    panel = StepsPanel()
    qtbot.addWidget(panel)
    assert panel.decode_every() == 0 and panel.decode_every_spin.specialValueText() == "off"
    panel.decode_every_spin.setValue(5)
    assert panel.decode_every() == 5


def test_the_window_shows_real_decodes_at_every_kth_step(loaded_window, qtbot) -> None:
    """The option reaches the engine (GenerationRequest.preview_decode_every): with k=2 on 5 steps, steps 2 and 4
    are VAE decodes, the rest approximate previews, and the final image is the final image."""
    window = loaded_window
    window.prompt_box.set_text("right pleural effusion")
    window.generate_panel.steps_spin.setValue(5)
    window.steps.decode_every_spin.setValue(2)
    with qtbot.waitSignal(window.run_finished, timeout=60_000):
        assert window.generate()
    kinds = [frame.kind for frame in window.steps.frames()]
    assert kinds == ["approximate", "decoded", "approximate", "decoded", "approximate", "final"], kinds
    assert window.generate_panel.request().preview_decode_every == 0  # the panel's request is unchanged
    # the same seed with the option off: the approximate frames and the final image are the same pixels, the
    # decoded steps differ (they are the VAE's image, not the linear map): the option reached the engine
    decoded = window.steps.frames()
    window.generate_panel.seed_edit.setText(str(window.current.info.seed))
    window.generate_panel.seed_lock.setChecked(True)
    window.steps.decode_every_spin.setValue(0)
    with qtbot.waitSignal(window.run_finished, timeout=60_000):
        assert window.generate()
    plain = window.steps.frames()
    assert [frame.kind for frame in plain] == ["approximate"] * 5 + ["final"]
    same = [np.array_equal(a.pixels, b.pixels) for a, b in zip(decoded, plain, strict=True)]
    assert same == [True, False, True, False, True, True], same
