"""A checkpoint rebuilt from a pack (training.from_pack): the same weights back, or a clear error."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.pack import MANIFEST, PackError
from training.checkpoint import TEXT_PROJECTION_FILE, UNET_FILE, VAE_FILE, CheckpointError, load_config
from training.from_pack import checkpoint_from_pack
from training.models.config import cpu_config


def _config(checkpoint: Path):
    """The checkpoint's config with its (relative) text encoder folder made absolute."""
    from training.loop import absolute_encoder

    return absolute_encoder(load_config(checkpoint), checkpoint)


def _same(a: Path, b: Path, name: str, atol: float = 0.0) -> float:
    """Largest absolute difference between two checkpoints' tensors in file ``name``; they share keys."""
    x, y = load_file(a / name), load_file(b / name)
    assert set(x) == set(y)
    worst = max(float((x[k].float() - y[k].float()).abs().max()) for k in x)
    assert worst <= atol, f"{name}: {worst}"
    return worst


def test_fp32_pack_gives_back_the_exact_weights(tiny_checkpoint: Path, tiny_pack: Path, tmp_path: Path) -> None:
    out = checkpoint_from_pack(tiny_pack, tmp_path / "ckpt", _config(tiny_checkpoint))
    for name in (VAE_FILE, UNET_FILE, TEXT_PROJECTION_FILE):
        _same(tiny_checkpoint, out, name)  # bit for bit, transposed MatMul and GroupNorm constants included
    rebuilt, original = load_config(out), load_config(tiny_checkpoint)
    assert rebuilt.scaling_factor == pytest.approx(original.scaling_factor)
    assert (rebuilt.image_size, rebuilt.unet, rebuilt.vae, rebuilt.schedule) == (
        original.image_size, original.unet, original.vae, original.schedule,
    )  # fmt: skip


def test_int8_text_encoder_gives_the_dequantised_projection(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from training.export_onnx import export_pack

    pack = export_pack(tiny_checkpoint, tmp_path / "int8", text_int8=True)
    out = checkpoint_from_pack(pack, tmp_path / "ckpt", _config(tiny_checkpoint))
    _same(tiny_checkpoint, out, UNET_FILE)
    _same(tiny_checkpoint, out, VAE_FILE)
    x, y = load_file(tiny_checkpoint / TEXT_PROJECTION_FILE), load_file(out / TEXT_PROJECTION_FILE)
    weight = "linear.weight"
    step = float(x[weight].abs().max()) / 127  # one int8 step of a symmetric per-tensor scale
    assert 0 < float((x[weight] - y[weight]).abs().max()) <= step / 2 + 1e-7
    assert torch.equal(x["linear.bias"], y["linear.bias"])


def test_the_default_pack_rebuilds_with_the_cpu_config(tmp_path: Path) -> None:
    """The shipped model can be fine-tuned: every tensor of the cpu networks is found in its ONNX."""
    root = Path(__file__).resolve().parents[2] / "resources" / "models" / "default"
    out = checkpoint_from_pack(root, tmp_path / "ckpt", cpu_config())
    manifest = json.loads((root / MANIFEST).read_text())
    assert load_config(out).scaling_factor == pytest.approx(manifest["latent"]["scaling_factor"])
    assert load_file(out / UNET_FILE)["conv_in.weight"].shape == (64, 8, 3, 3)


def test_wrong_config_names_the_tensor_and_writes_nothing(
    tiny_checkpoint: Path, tiny_pack: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    from training.models.config import ConfigError, tiny_config

    right = _config(tiny_checkpoint)
    deeper = replace(right, unet=replace(right.unet, layers_per_block=2))
    with pytest.raises(CheckpointError, match=r"\(unet\): no weight for unet\.down_blocks\.0\.\w+\.1\."):
        checkpoint_from_pack(tiny_pack, tmp_path / "ckpt", deeper)
    wider = replace(right, unet=replace(right.unet, block_out_channels=(32, 48)))
    with pytest.raises(CheckpointError, match=r"has shape .* the config needs"):
        checkpoint_from_pack(tiny_pack, tmp_path / "ckpt", wider)
    with pytest.raises(ConfigError, match="tiny-random-bert"):  # the pack's encoder is not MiniLM
        checkpoint_from_pack(tiny_pack, tmp_path / "ckpt", tiny_config())
    assert not (tmp_path / "ckpt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ckpt")]  # no temporary folder left


def test_damaged_or_fp16_pack_is_refused(tiny_checkpoint: Path, tiny_pack: Path, tmp_path: Path) -> None:
    import shutil

    from training.export_onnx import export_pack

    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_pack, damaged)
    with (damaged / "unet.onnx").open("r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(PackError, match=r"unet\.onnx"):
        checkpoint_from_pack(damaged, tmp_path / "a", _config(tiny_checkpoint))
    half = export_pack(tiny_checkpoint, tmp_path / "fp16", fp16=True)
    with pytest.raises(PackError, match="fp16"):
        checkpoint_from_pack(half, tmp_path / "b", _config(tiny_checkpoint))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_writes_a_checkpoint_and_fails_in_one_line(
    tiny_checkpoint: Path, tiny_pack: Path, tmp_path: Path, capsys
) -> None:
    from training.cli import register_checkpoint_from_pack

    config = str(tiny_checkpoint / "config.json")  # a JSON config: its encoder folder is found beside it
    parser = argparse.ArgumentParser()
    register_checkpoint_from_pack(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["checkpoint-from-pack", str(tiny_pack), "--config", config, "--out", str(tmp_path / "c")])
    assert args.func(args) == 0
    assert (tmp_path / "c" / "config.json").is_file()
    capsys.readouterr()
    missing = str(tmp_path / "none")
    bad = parser.parse_args(["checkpoint-from-pack", missing, "--config", config, "--out", str(tmp_path / "d")])
    assert bad.func(bad) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cxr-studio checkpoint-from-pack: error:")
    assert not (tmp_path / "d").exists()
