"""Finding maps in the app (issue 18 item 1, GUI half): a list of the prompt's findings and words beside the
viewer; picking one lays its map over the image as a colour map with an opacity slider; the pixels stay the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from desktop.main_window import MainWindow
from tests.desktop.conftest import generate_locked, open_window


@pytest.fixture
def maps_window(qtbot, settings, tiny_attention_pack_dir: Path):
    window = open_window(qtbot, settings, tiny_attention_pack_dir)
    yield window
    window.close()
    assert not window.host.thread.isRunning()


def _rendered(window: MainWindow) -> np.ndarray:
    image = window.viewer.view.grab().toImage().convertToFormat(window.viewer.view.grab().toImage().Format.Format_RGB32)
    return np.array(image.constBits(), dtype=np.uint8).reshape(image.height(), image.width(), 4)[..., :3].copy()


def test_picking_a_finding_overlays_its_map_and_leaves_the_pixels_alone(qtbot, maps_window: MainWindow) -> None:
    window = maps_window
    panel = window.finding_maps
    assert window.model_info.has_attention
    generate_locked(qtbot, window, "Right pleural effusion")
    assert panel.labels() == [
        "none (no overlay)", "pleural effusion (present)", "“Right”", "“pleural”", "“effusion”",
    ]  # fmt: skip
    view = window.viewer.view
    source, shown = view.source.copy(), view.displayed_pixels().copy()
    plain = _rendered(window)
    assert view.heat_overlay is None

    panel.pick(1)  # the finding
    assert view.heat_overlay is not None
    np.testing.assert_array_equal(view.source, source)  # the generated pixels are unchanged
    np.testing.assert_array_equal(view.displayed_pixels(), shown)
    assert window.current.pixels is not None and np.array_equal(window.current.pixels, source)
    overlaid = _rendered(window)
    assert not np.array_equal(overlaid, plain)  # and the map is drawn over them

    panel.opacity_slider.setValue(0)
    assert view.heat_opacity == 0.0
    np.testing.assert_array_equal(_rendered(window), plain)  # fully transparent: the plain image
    panel.opacity_slider.setValue(80)
    assert view.heat_opacity == pytest.approx(0.8)

    panel.pick(3)  # a word: another map
    assert not np.array_equal(_rendered(window), overlaid)
    panel.pick(0)  # none picked: no overlay
    assert view.heat_overlay is None
    np.testing.assert_array_equal(_rendered(window), plain)

    window.generate_panel.seed_edit.setText("4")  # a new generation: new maps, nothing picked
    panel.pick(1)
    generate_locked(qtbot, window, "Cardiomegaly")
    assert view.heat_overlay is None and panel.labels()[0] == "none (no overlay)"
    assert "“Cardiomegaly”" in panel.labels()


def test_a_pack_without_maps_says_so(qtbot, loaded_window: MainWindow) -> None:
    assert not loaded_window.model_info.has_attention
    generate_locked(qtbot, loaded_window, "Right pleural effusion")
    panel = loaded_window.finding_maps
    assert panel.labels() == [] and not panel.list.isEnabled()
    assert panel.status.text() == "no finding maps in this model"
    assert loaded_window.viewer.view.heat_overlay is None


def test_opening_a_file_drops_the_maps_of_the_last_generation(qtbot, maps_window: MainWindow, tmp_path: Path) -> None:
    from PIL import Image

    generate_locked(qtbot, maps_window, "Right pleural effusion")
    maps_window.finding_maps.pick(1)
    path = tmp_path / "other.png"
    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(path)
    assert maps_window.viewer.open_file(path)
    assert maps_window.viewer.view.heat_overlay is None and maps_window.finding_maps.labels() == []
    assert maps_window.check_line.text() == ""


def test_opening_a_case_drops_the_overlay_of_the_last_generation(qtbot, maps_window: MainWindow) -> None:
    generate_locked(qtbot, maps_window, "Right pleural effusion")
    case_id = maps_window.current.case_id
    maps_window.finding_maps.pick(1)
    assert maps_window.viewer.view.heat_overlay is not None
    maps_window.open_case(case_id)  # the maps are not kept with a case: none shown rather than stale ones
    assert maps_window.viewer.view.heat_overlay is None and maps_window.finding_maps.labels() == []
