"""Model definitions, configs and checkpoints: shapes, JSON round trips, refusals, determinism."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.pack import ScheduleConfig
from training.checkpoint import (
    CHECKPOINT_FILES,
    CONFIG_FILE,
    UNET_FILE,
    VAE_FILE,
    CheckpointError,
    LatentDiffusionModel,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from training.models.config import (
    ConfigError,
    ModelConfig,
    TextConditionerConfig,
    VAEConfig,
    default_config,
    tiny_config,
)
from training.models.text import TextConditioner, TextEncoderError
from training.models.unet import build_unet
from training.models.vae import build_vae, decode_from_diffusion, encode_to_diffusion
from training.tiny import TINY_ENCODER_DIR, build_tiny_checkpoint


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("make", [tiny_config, default_config])
def test_config_json_round_trip(make) -> None:
    config = make()
    text = config.dumps()
    assert ModelConfig.loads(text) == config
    assert ModelConfig.from_json(json.loads(text)) == config


def test_v_prediction_config_round_trips() -> None:
    config = tiny_config(prediction_type="v_prediction")
    assert ModelConfig.loads(config.dumps()).schedule.prediction_type == "v_prediction"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(surprise=1, another=2), r"unknown key\(s\): another, surprise"),
        (lambda d: d["unet"].update(attention_resolutions=[1]), r"unet: unknown key\(s\): attention_resolutions"),
        (lambda d: d["schedule"].update(clip_sample=True), r"schedule: unknown key\(s\): clip_sample"),
        (lambda d: d["text"].update(tokenizer="x"), r"text: unknown key\(s\): tokenizer"),
        (lambda d: d.update(format_version=99), "format_version"),
    ],
)
def test_unknown_or_bad_keys_are_refused(edit, message: str) -> None:
    data = tiny_config().to_json()
    edit(data)
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_json(data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"downsample_factor": 8}, "downsample_factor is 8"),
        ({"image_size": 30}, "not a multiple of downsample_factor"),
        ({"scaling_factor": 0.0}, "scaling_factor"),
        ({"schedule": ScheduleConfig(prediction_type="sample")}, "prediction_type"),
        ({"vae": VAEConfig(block_out_channels=(16, 20, 32), norm_num_groups=8)}, "norm_num_groups"),
        ({"text": TextConditionerConfig(max_tokens=2)}, "max_tokens"),
    ],
)
def test_inconsistent_config_is_refused(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        replace(tiny_config(), **change)


def test_parameter_counts_of_the_presets(capsys) -> None:
    counts = {}
    for name, config in (("tiny", tiny_config()), ("default", default_config())):
        torch.manual_seed(0)
        counts[name] = (_n_params(build_vae(config)), _n_params(build_unet(config)))
    with capsys.disabled():
        for name, (vae, unet) in counts.items():
            print(f"\n{name} config: VAE {vae / 1e6:.2f}M parameters, UNet {unet / 1e6:.2f}M parameters")
    assert 2.5e6 < counts["default"][0] < 4.5e6
    assert 20e6 < counts["default"][1] < 30e6
    assert counts["tiny"][0] + counts["tiny"][1] < 2e6


# --------------------------------------------------------------------------- shapes


def test_tiny_model_shapes(tiny_model: LatentDiffusionModel) -> None:
    config = tiny_model.config
    image = torch.rand(3, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        latent = encode_to_diffusion(tiny_model.vae, image, config.scaling_factor)
        assert latent.shape == (3, 4, 8, 8)
        assert decode_from_diffusion(tiny_model.vae, latent, config.scaling_factor).shape == (3, 1, 32, 32)
        context = tiny_model.text.encode(["Normal chest radiograph", "", "Left pleural effusion"])
        assert context.shape == (3, 16, 32) and context.dtype == torch.float32
        output = tiny_model.unet(latent, torch.tensor([999.0, 500.0, 1.0]), encoder_hidden_states=context).sample
    assert output.shape == latent.shape


def test_default_model_shapes() -> None:
    """224x224 image <-> 8x28x28 latent; the UNet at 28x28 with a (B, 64, 256) context."""
    config = default_config()
    torch.manual_seed(0)
    vae, unet = build_vae(config).eval(), build_unet(config).eval()
    with torch.no_grad():
        latent = encode_to_diffusion(vae, torch.zeros(1, 1, 224, 224), config.scaling_factor)
        assert latent.shape == (1, 8, 28, 28)
        assert decode_from_diffusion(vae, latent, config.scaling_factor).shape == (1, 1, 224, 224)
        output = unet(latent, torch.tensor([10.0]), encoder_hidden_states=torch.zeros(1, 64, 256)).sample
    assert output.shape == (1, 8, 28, 28)
    # cross-attention at 28, 14 and 7, no self-attention in the VAE above latent resolution
    assert [type(b).__name__ for b in unet.down_blocks] == ["CrossAttnDownBlock2D"] * 3
    assert all(m.__class__.__name__ != "Attention" for m in vae.encoder.down_blocks.modules())
    assert all(m.__class__.__name__ != "Attention" for m in vae.decoder.up_blocks.modules())


# --------------------------------------------------------------------------- text conditioning


def test_text_conditioner_zeroes_pads_and_ignores_them(tiny_checkpoint: Path) -> None:
    folder = (tiny_checkpoint / TINY_ENCODER_DIR).resolve()
    torch.manual_seed(1)
    text = TextConditioner(TextConditionerConfig(encoder=str(folder), context_dim=32, max_tokens=16)).eval()
    assert text.folder == folder and text.encoder_dim == 32 and text.lowercase is True
    ids, mask = text.tokenize(["Normal chest radiograph", "", "chest " * 40])  # one token per word: no pads
    with torch.no_grad():
        context = text(ids, mask)
        # whatever sits at padded positions, the rest of the context is the same
        noisy_ids = torch.where(mask == 0, torch.randint(1000, 2000, ids.shape), ids)
        again = text(noisy_ids, mask)
    padded = mask == 0
    assert padded[0].any() and padded[1].any() and not padded[2].any()
    assert torch.equal(context[padded], torch.zeros_like(context[padded]))
    assert not torch.signbit(context[padded]).any()  # +0.0, not -0.0
    assert (context[~padded].abs().sum(-1) > 0).all()
    torch.testing.assert_close(again, context, atol=1e-6, rtol=0)


def test_text_encoder_is_frozen_and_only_the_projection_trains(tiny_model: LatentDiffusionModel) -> None:
    text = tiny_model.text
    assert not any(p.requires_grad for p in text.encoder.parameters())
    assert all(p.requires_grad for p in text.projection.parameters())
    text.train()
    try:
        assert not text.encoder.training and text.projection.training
        loss = text.encode(["Right lower lobe consolidation"]).square().mean()
        loss.backward()
        assert text.projection.linear.weight.grad is not None
    finally:
        text.projection.zero_grad(set_to_none=True)
        text.eval()


def test_default_encoder_is_minilm() -> None:
    torch.manual_seed(0)
    text = TextConditioner(default_config().text).eval()
    assert text.encoder_dim == 384 and text.lowercase is True
    context = text.encode(["Normal chest radiograph"])
    assert context.shape == (1, 64, 256)


def test_lowercase_comes_from_tokenizer_config(tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(tiny_checkpoint / TINY_ENCODER_DIR, tmp_path / "cased-bert"))
    (folder / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    text = TextConditioner(TextConditionerConfig(encoder=str(folder), context_dim=8, max_tokens=8))
    assert text.lowercase is False
    forced = TextConditioner(TextConditionerConfig(encoder=str(folder), context_dim=8, max_tokens=8, lowercase=True))
    assert forced.lowercase is True


def test_missing_encoder_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(TextEncoderError, match=r"nowhere[/\\]config\.json: missing"):
        TextConditioner(TextConditionerConfig(encoder=str(tmp_path / "nowhere")))


# --------------------------------------------------------------------------- checkpoints


def _tensors(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: load_file(folder / name) for name in CHECKPOINT_FILES if name.endswith(".safetensors")}


def test_checkpoint_round_trip_gives_identical_weights(tiny_checkpoint: Path, tmp_path: Path) -> None:
    model = load_checkpoint(tiny_checkpoint)
    shutil.copytree(tiny_checkpoint / TINY_ENCODER_DIR, tmp_path / "copy" / TINY_ENCODER_DIR)
    out = save_checkpoint(tmp_path / "copy", model.config, model.vae, model.unet, model.text)
    before, after = _tensors(tiny_checkpoint), _tensors(out)
    for name in before:
        assert before[name].keys() == after[name].keys()
        assert all(torch.equal(before[name][k], after[name][k]) for k in before[name])
    reloaded = load_checkpoint(out)
    assert reloaded.config == model.config
    for a, b in ((model.vae, reloaded.vae), (model.unet, reloaded.unet), (model.text, reloaded.text)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_ema_weights_go_into_unet_file(tiny_model: LatentDiffusionModel, tmp_path: Path) -> None:
    config = replace(tiny_model.config, text=replace(tiny_model.config.text, encoder=str(tiny_model.text.folder)))
    torch.manual_seed(5)
    ema = build_unet(config)
    out = save_checkpoint(tmp_path / "ema", config, tiny_model.vae, tiny_model.unet, tiny_model.text, unet_ema=ema)
    saved = load_file(out / UNET_FILE)
    assert all(torch.equal(saved[k], v) for k, v in ema.state_dict().items())


def test_same_seed_same_weights_other_seed_other_weights(tiny_checkpoint: Path, tmp_path: Path) -> None:
    again = build_tiny_checkpoint(tmp_path / "again", seed=0)
    other = build_tiny_checkpoint(tmp_path / "other", seed=1)
    for name in (VAE_FILE, UNET_FILE, "text_projection.safetensors", f"{TINY_ENCODER_DIR}/model.safetensors"):
        assert (again / name).read_bytes() == (tiny_checkpoint / name).read_bytes(), name
        assert (other / name).read_bytes() != (tiny_checkpoint / name).read_bytes(), name


@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_missing_file_is_refused_by_name(tiny_checkpoint: Path, tmp_path: Path, name: str) -> None:
    copy = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))
    (copy / name).unlink()
    with pytest.raises(CheckpointError, match=re.escape(f"{name}: missing")):
        load_checkpoint(copy)


def test_mismatched_weights_are_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))
    tensors = load_file(copy / VAE_FILE)
    tensors.pop(next(iter(tensors)))
    save_file(tensors, copy / VAE_FILE)
    with pytest.raises(CheckpointError, match=r"vae\.safetensors: does not match config\.json: 1 missing"):
        load_checkpoint(copy)


def test_bad_config_is_refused_with_the_file_named(tiny_checkpoint: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))
    data = json.loads((copy / CONFIG_FILE).read_text())
    data["vae"]["dropout"] = 0.1
    (copy / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"config\.json: vae: unknown key\(s\): dropout"):
        load_checkpoint(copy)
    with pytest.raises(CheckpointError, match="not a folder"):
        load_checkpoint(tmp_path / "nothing")


def test_build_model_is_deterministic_per_seed(tiny_checkpoint: Path) -> None:
    config = load_checkpoint(tiny_checkpoint).config
    weights = []
    for _ in range(2):
        torch.manual_seed(7)
        weights.append(build_model(config, base_dir=tiny_checkpoint).unet.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
