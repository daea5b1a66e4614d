"""Shared fixtures: one tiny seeded model pack per test session (built with training, run by engine)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout (CI has it; a user's fresh clone does not)."""
    return Path(os.environ.get("CXR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _private_pacs_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's own PACS node list."""
    monkeypatch.setenv("CXR_STUDIO_NODES", str(tmp_path / "pacs_nodes.json"))


@pytest.fixture(scope="session")
def tiny_pack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified tiny pack (32x32 images, random weights): read-only, shared by all tests."""
    from training.tiny import build_tiny_pack

    return build_tiny_pack(tmp_path_factory.mktemp("tiny") / "pack", seed=0)


@pytest.fixture(scope="session")
def tiny_record_pack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified tiny pack conditioned on record tokens as well as text (random weights): read-only."""
    from training.tiny import build_tiny_pack

    return build_tiny_pack(tmp_path_factory.mktemp("tiny-record") / "pack", seed=0, record_tokens=True)


@pytest.fixture(scope="session")
def tiny_attention_pack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pack's model (same seed, same weights) exported with attention-map outputs: read-only."""
    from training.export_onnx import export_pack
    from training.tiny import build_tiny_checkpoint

    folder = tmp_path_factory.mktemp("tiny-attention")
    checkpoint = build_tiny_checkpoint(folder / "checkpoint", seed=0)
    return export_pack(checkpoint, folder / "pack", model_id="cxr-tiny-seed0", attention_maps=True)


@pytest.fixture
def tiny_pack_copy(tiny_pack_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny pack that a test may damage."""
    return Path(shutil.copytree(tiny_pack_dir, tmp_path / "pack"))


FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def pediatric_fixture_dir() -> Path:
    """12 real paediatric radiographs (CC BY 4.0, Kermany et al.; tests/fixtures/README.md) in the
    ``pediatric-cxr`` layout: ``images/`` and ``labels.csv``."""
    return FIXTURES / "pediatric-cxr"
