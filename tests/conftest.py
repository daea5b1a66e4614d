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


CHECKER_CLASSES = ("bacterial_pneumonia", "normal", "viral_pneumonia")


@pytest.fixture
def tiny_checker_pack(tiny_pack_dir: Path, tmp_path: Path):
    """A factory: ``make(bias, weight=(0, 0, 0), name="checked")`` -> a copy of the tiny pack with a
    tiny finding checker (engine.checker) over :data:`CHECKER_CLASSES`: logits = mean pixel x
    ``weight`` + ``bias``, then a softmax. Zero weights give a checker that always says the same."""
    import onnx
    from onnx import TensorProto, helper

    from engine.pack import CheckerConfig, load_pack, write_manifest
    from training.checker_export import CHECKER_FILE, default_findings

    def make(bias: tuple[float, ...], weight: tuple[float, ...] = (0.0, 0.0, 0.0), name: str = "checked") -> Path:
        root = Path(shutil.copytree(tiny_pack_dir, tmp_path / name))
        nodes = [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ]
        graph = helper.make_graph(
            nodes, "tiny-checker",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 16, 16])],
            [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
            [helper.make_tensor("W", TensorProto.FLOAT, [1, 3], list(weight)),
             helper.make_tensor("b", TensorProto.FLOAT, [3], list(bias))],
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 10
        onnx.save_model(model, root / CHECKER_FILE)
        manifest = load_pack(root).manifest
        config = CheckerConfig(
            file=CHECKER_FILE, classes=CHECKER_CLASSES, findings=default_findings(CHECKER_CLASSES), input_size=16,
            accuracy=0.5, accuracy_n=0, accuracy_date="2026-12-03", accuracy_data="none (a test fixture)",
        )  # fmt: skip
        files = {**manifest.files, CHECKER_FILE: None}
        write_manifest(root, type(manifest)(**{**manifest.__dict__, "files": files, "checker": config}))
        return root

    return make
