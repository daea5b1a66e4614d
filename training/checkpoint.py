"""Checkpoint folders: ``config.json`` + safetensors weights; never pickle.

Layout::

    CHECKPOINT/
      config.json                   ModelConfig (training.models.config)
      vae.safetensors               AutoencoderKL state dict
      unet.safetensors              UNet2DConditionModel state dict (the EMA weights when given)
      text_projection.safetensors   TextProjection state dict (Linear + LayerNorm)
      record_embeddings.safetensors RecordEmbedding state dict, only when config.json has ``record``

The frozen text encoder is not copied: ``config.text.encoder`` names it ("all-MiniLM-L6-v2")
or gives its folder (a relative path is relative to the checkpoint folder). Every file is
written atomically (temporary file in the same folder, then ``os.replace``), so a crash never
leaves a half-written file under a final name. Loading validates the config, refuses missing
files and mismatched tensors with an error that names the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors_bytes
from torch import nn

from engine.fileio import atomic_write_bytes, atomic_write_text
from training.models.config import ConfigError, ModelConfig
from training.models.record import RecordEmbedding, build_record
from training.models.text import TextConditioner, TextEncoderError
from training.models.unet import build_unet
from training.models.vae import build_vae

CONFIG_FILE = "config.json"
VAE_FILE = "vae.safetensors"
UNET_FILE = "unet.safetensors"
TEXT_PROJECTION_FILE = "text_projection.safetensors"
CHECKPOINT_FILES = (CONFIG_FILE, VAE_FILE, UNET_FILE, TEXT_PROJECTION_FILE)
RECORD_FILE = "record_embeddings.safetensors"  # models with record tokens (config.record) only


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file and why."""


@dataclass
class LatentDiffusionModel:
    """The three networks of one checkpoint, on the CPU in eval mode after loading."""

    config: ModelConfig
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    text: TextConditioner
    record: RecordEmbedding | None = None  # config.record's table; None for a text-only model


def build_model(config: ModelConfig, *, base_dir: str | os.PathLike[str] | None = None) -> LatentDiffusionModel:
    """Fresh networks for ``config`` (weights from the current torch RNG state: seed it first).

    ``base_dir`` is where a relative ``config.text.encoder`` folder is looked up.
    """
    # Order is fixed so one seed always gives the same weights.
    vae = build_vae(config)
    unet = build_unet(config)
    text = TextConditioner(config.text, base_dir=base_dir)
    record = build_record(config)  # last: text-only models keep the weights a seed always gave them
    return LatentDiffusionModel(config=config, vae=vae, unet=unet, text=text, record=record)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def _atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    atomic_write_bytes(path, save_tensors_bytes(tensors, metadata=metadata))


def save_checkpoint(
    out_dir: str | os.PathLike[str],
    config: ModelConfig,
    vae: AutoencoderKL,
    unet: nn.Module,
    text: TextConditioner | nn.Module,
    *,
    unet_ema: nn.Module | None = None,
    record: nn.Module | None = None,
) -> Path:
    """Write a checkpoint folder (created if needed) and return its path.

    ``text`` is the TextConditioner or its ``projection``; only the projection is saved.
    ``unet_ema``, when given, is what goes into unet.safetensors (inference uses EMA weights).
    ``record``: the RecordEmbedding of a model with record tokens (``config.record``), required then.
    """
    if (record is None) != (config.record is None):
        raise CheckpointError(f"{out_dir}: config.record and the record table must be given together")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    projection = text.projection if isinstance(text, TextConditioner) else text
    metadata = {"format": "pt"}  # one key: safetensors writes several in random order
    # 1. weights first, config last: a folder with config.json is a finished checkpoint.
    _atomic_save_tensors(out / VAE_FILE, _state(vae), metadata)
    _atomic_save_tensors(out / UNET_FILE, _state(unet_ema if unet_ema is not None else unet), metadata)
    _atomic_save_tensors(out / TEXT_PROJECTION_FILE, _state(projection), metadata)
    if record is not None:
        _atomic_save_tensors(out / RECORD_FILE, _state(record), metadata)
    # 2. config
    atomic_write_text(out / CONFIG_FILE, config.dumps())
    return out


def load_config(checkpoint_dir: str | os.PathLike[str]) -> ModelConfig:
    """Read and validate ``config.json``; CheckpointError names the file and the problem."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a folder (a checkpoint is a folder with {CONFIG_FILE})")
    path = root / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (not a checkpoint folder)")
    try:
        return ModelConfig.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def load_weights(module: nn.Module, path: Path) -> None:
    """Load a safetensors file into ``module``; CheckpointError names the file and the mismatch."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        tensors = load_file(path)
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: does not match config.json: {len(missing)} missing tensor(s) {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{path}: tensor {name} has shape {tuple(tensor.shape)}, "
                f"config.json needs {tuple(expected[name].shape)}"
            )
    module.load_state_dict(tensors, strict=True)


def load_checkpoint(checkpoint_dir: str | os.PathLike[str]) -> LatentDiffusionModel:
    """Load a checkpoint folder onto the CPU, in eval mode. Raises CheckpointError naming the file."""
    root = Path(checkpoint_dir)
    # 1. config, and every file present before building anything (building loads the encoder)
    config = load_config(root)
    for name in (*CHECKPOINT_FILES, *((RECORD_FILE,) if config.record is not None else ())):
        if not (root / name).is_file():
            raise CheckpointError(f"{root / name}: missing")
    # 2. networks, then weights
    try:
        with torch.random.fork_rng(devices=[]):  # the throwaway initial weights must not move the caller's RNG
            model = build_model(config, base_dir=root)
    except TextEncoderError as exc:
        raise CheckpointError(f"{root / CONFIG_FILE}: text.encoder: {exc}") from None
    load_weights(model.vae, root / VAE_FILE)
    load_weights(model.unet, root / UNET_FILE)
    load_weights(model.text.projection, root / TEXT_PROJECTION_FILE)
    if model.record is not None:
        load_weights(model.record, root / RECORD_FILE)
        model.record.eval()
    model.vae.eval()
    model.unet.eval()
    model.text.eval()
    return model
