"""Session fixtures for training tests: one tiny seeded checkpoint, its torch model and its pack.

Other test packages can build the same objects with ``training.tiny.build_tiny_checkpoint`` and
``training.tiny.build_tiny_pack``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from training.checkpoint import LatentDiffusionModel


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint (seed 0, epsilon prediction): read-only, shared by all tests."""
    from training.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("training") / "checkpoint", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path) -> LatentDiffusionModel:
    """The tiny checkpoint loaded in torch (CPU, eval mode): do not modify."""
    from training.checkpoint import load_checkpoint

    return load_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="session")
def tiny_pack(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported to an fp32 pack: read-only."""
    from training.export_onnx import export_pack

    return export_pack(tiny_checkpoint, tmp_path_factory.mktemp("training") / "pack", model_id="cxr-tiny-test")
