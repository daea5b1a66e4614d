"""training.torch_backend: the engine's Backend on torch, found through ``cxr_studio.backends``.

On this CPU machine the backend runs on the CPU in float32, where it must agree with the ONNX
Runtime backend on every graph and give the same image; the CUDA path is measured on the lent GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.cli.main import main
from engine.pack import load_pack
from engine.pipeline import GenerationRequest, Pipeline
from engine.runtime import BackendError, OrtBackend, backend_names, make_backend, parse_backend_options
from training.tiny import build_tiny_checkpoint
from training.torch_backend import TorchBackend, verify_against_pack


@pytest.fixture(scope="module")
def checkpoint(tiny_pack_dir: Path) -> Path:
    """The checkpoint the tiny pack was exported from (training.tiny.build_tiny_pack)."""
    return tiny_pack_dir.parent / f"{tiny_pack_dir.name}.checkpoint"


def test_torch_is_an_installed_backend() -> None:
    assert backend_names()[0] == "onnxruntime" and "torch" in backend_names()


def test_every_graph_agrees_with_onnx_runtime(tiny_pack_dir: Path, checkpoint: Path) -> None:
    pack = load_pack(tiny_pack_dir)
    ort, torch_backend = OrtBackend(pack, requested="cpu"), TorchBackend(checkpoint, device="cpu")
    assert torch_backend.provider == "torch-cpu-fp32"
    m, rng = pack.manifest, np.random.default_rng(3)
    latent = rng.standard_normal((2, m.latent.channels, m.latent.height, m.latent.width)).astype(np.float32)
    context = rng.standard_normal((2, m.text.max_tokens, m.text.context_dim)).astype(np.float32)
    t = np.array([999.0, 10.0], dtype=np.float32)
    image = rng.uniform(-1, 1, (2, 1, m.image.height, m.image.width)).astype(np.float32)
    ids = np.array([[101, 2000, 2001, 102] + [0] * (m.text.max_tokens - 4)] * 2, dtype=np.int64)
    mask = (ids > 0).astype(np.int64)
    pairs = {
        "unet": (ort.unet(latent, t, context), torch_backend.unet(latent, t, context)),
        "decode": (ort.decode(latent), torch_backend.decode(latent)),
        "encode": (ort.encode_image(image), torch_backend.encode_image(image)),
        "text": (ort.encode_text(ids, mask), torch_backend.encode_text(ids, mask)),
    }
    for name, (expected, got) in pairs.items():
        assert got.dtype == np.float32 and got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-4, err_msg=name)
        assert np.abs(expected).max() > 0, name  # not two zero outputs agreeing


def test_pipeline_on_torch_gives_the_onnx_image(tiny_pack_dir: Path, checkpoint: Path) -> None:
    pack = load_pack(tiny_pack_dir)
    request = GenerationRequest(prompt="Right lower lobe consolidation", num_steps=6, seed=4)
    ort_image = Pipeline(pack, backend=make_backend(pack)).generate(request)
    torch_result = Pipeline(pack, backend=make_backend(pack, "torch", {"checkpoint": str(checkpoint)})).generate(
        request
    )
    assert torch_result.provider == "torch-cpu-fp32"
    assert np.abs(torch_result.images - ort_image.images).max() < 1e-3
    assert np.abs(torch_result.to_uint8().astype(int) - ort_image.to_uint8().astype(int)).max() <= 1


def test_verify_refuses_other_weights(tiny_pack_dir: Path, tmp_path: Path) -> None:
    pack = load_pack(tiny_pack_dir)
    other = build_tiny_checkpoint(tmp_path / "other", seed=1)  # same architecture, other weights
    with pytest.raises(BackendError, match="not the weights this pack was exported from"):
        make_backend(pack, "torch", {"checkpoint": str(other), "verify": "true"})
    assert verify_against_pack(TorchBackend(tiny_pack_dir.parent / "pack.checkpoint", device="cpu"), pack) < 1e-3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs --backend-option checkpoint=FOLDER"),
        ({"checkpoint": "x", "colour": "red"}, "unknown option(s) colour"),
        ({"checkpoint": "/no/such/folder"}, "not a folder"),
        ({"checkpoint": "CKPT", "dtype": "int4"}, "dtype must be auto or one of float16, bfloat16, float32"),
        ({"checkpoint": "CKPT", "compile": "max"}, "compile must be one of none, default, reduce-overhead"),
        ({"checkpoint": "CKPT", "verify": "maybe"}, "verify must be true or false"),
    ],
)
def test_bad_options_name_the_problem(
    tiny_pack_dir: Path, checkpoint: Path, options: dict[str, str], message: str
) -> None:
    options = {k: str(checkpoint) if v == "CKPT" else v for k, v in options.items()}
    with pytest.raises(BackendError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_backend(load_pack(tiny_pack_dir), "torch", options)


def test_a_checkpoint_of_another_model_is_refused(tiny_pack_dir: Path, tmp_path: Path) -> None:
    v_checkpoint = build_tiny_checkpoint(tmp_path / "v", prediction_type="v_prediction")
    with pytest.raises(BackendError, match="prediction type v_prediction does not match the pack's epsilon"):
        make_backend(load_pack(tiny_pack_dir), "torch", {"checkpoint": str(v_checkpoint)})


def test_option_parsing_and_unknown_backend(tiny_pack_dir: Path) -> None:
    assert parse_backend_options(["checkpoint=a=b", " device = cuda "]) == {"checkpoint": "a=b", "device": "cuda"}
    with pytest.raises(BackendError, match="expected KEY=VALUE"):
        parse_backend_options(["checkpoint"])
    with pytest.raises(BackendError, match="given twice"):
        parse_backend_options(["a=1", "a=2"])
    with pytest.raises(BackendError, match="unknown backend 'tensorrt': installed are onnxruntime, torch"):
        make_backend(load_pack(tiny_pack_dir), "tensorrt")
    with pytest.raises(BackendError, match="takes no backend options"):
        make_backend(load_pack(tiny_pack_dir), "onnxruntime", {"device": "cuda"})


def test_cli_generate_on_the_torch_backend(tiny_pack_dir: Path, checkpoint: Path, tmp_path: Path, capsys) -> None:
    common = ["generate", "Left pleural effusion", "--model", str(tiny_pack_dir), "--steps", "3", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "ort.png")]) == 0
    argv = [*common, "--out", str(tmp_path / "torch.png"), "--backend", "torch"]
    assert main([*argv, "--backend-option", f"checkpoint={checkpoint}"]) == 0
    assert "torch-cpu-fp32" in capsys.readouterr().err
    assert (tmp_path / "torch.png").stat().st_size > 0
    assert main([*argv, "--backend-option", "checkpoint"]) == 2
    err = capsys.readouterr().err.strip()
    assert "expected KEY=VALUE" in err and len(err.splitlines()) == 1
    assert main([*common, "--out", str(tmp_path / "x.png"), "--backend", "tensorrt"]) == 2
    assert "--backend tensorrt: not installed (installed: onnxruntime, torch)" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
