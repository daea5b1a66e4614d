"""A rectified-flow pack (``prediction_type="flow_prediction"``) in the app: it loads and generates like any pack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.desktop.conftest import generate_locked, open_window


@pytest.fixture(scope="module")
def tiny_flow_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.tiny import build_tiny_pack

    return build_tiny_pack(tmp_path_factory.mktemp("flow") / "pack", seed=0, prediction_type="flow_prediction")


def test_a_flow_pack_generates_in_the_window(qtbot, settings, tiny_flow_pack: Path) -> None:
    window = open_window(qtbot, settings, tiny_flow_pack)
    try:
        generate_locked(qtbot, window, "Right lower lobe pneumonia")
        assert not window.errors, window.errors
        pixels = np.asarray(window.current.pixels)
        assert pixels.shape[-2:] == (32, 32) and np.isfinite(pixels).all() and pixels.std() > 0
    finally:
        window.close()
    assert not window.host.thread.isRunning()
