"""What a diffusion run computes or loads before its first step: the VAE checkpoint and the model
config (``--vae``, ``--config``, record tokens), the frozen text encoder's and the VAE's outputs
(:func:`encode_texts`, :func:`encode_latents`), the :class:`Denoiser` that training, validation and
export share, and the sample grids' prompts. The training task, its options and the on-disk latent
cache's use are :mod:`training.train_diffusion`.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from engine.conditioning import DEFAULT_MAX_TOKENS, full_vocabulary
from engine.manifest import ManifestRecord
from training.checkpoint import (
    CONFIG_FILE,
    CheckpointError,
)
from training.datasets import (
    Augmentation,
    Manifest,
    augment,
    load_images,
)
from training.loop import (
    iter_chunks,
    resolve_config,
)
from training.models.config import ConfigError, ModelConfig, RecordConfig
from training.models.text import TextConditioner
from training.options import TrainingError
from training.run_folder import RUN_FILE

ENCODE_CHUNK = 512  # images decoded and encoded at a time while caching
SAMPLE_PROMPTS = 4


# --------------------------------------------------------------------------- the VAE checkpoint


def resolve_vae_checkpoint(path: str, flag: str = "--vae") -> Path:
    """A checkpoint folder as given, or a run folder's best (else last) checkpoint."""
    root = Path(path).expanduser()
    if (root / CONFIG_FILE).is_file():
        return root
    if (root / RUN_FILE).is_file():
        # .checkpoint.old/.tmp: complete checkpoints during the instant of a swap
        for name in ("best", "checkpoint", ".checkpoint.old", ".checkpoint.tmp"):
            if (root / name / CONFIG_FILE).is_file():
                return root / name
        raise TrainingError(f"{flag} {path}: the run has no checkpoint yet")
    raise TrainingError(f"{flag} {path}: not a checkpoint folder (config.json) or a training run folder (run.json)")


def diffusion_config(vae_config: ModelConfig, spec: str | None, init_config: ModelConfig | None = None) -> ModelConfig:
    """The VAE checkpoint's config, or ``spec``'s (else the ``--init-from`` checkpoint's)
    UNet/text/schedule on the VAE's geometry."""
    if spec is None and init_config is None:
        return vae_config
    config, where = (resolve_config(spec), f"--config {spec}") if spec is not None else (init_config, "--init-from")
    for key in ("image_size", "latent_channels", "downsample_factor", "vae"):
        mine, theirs = getattr(config, key), getattr(vae_config, key)
        if mine != theirs:
            raise ConfigError(f"{where}: {key} is {mine} but the VAE checkpoint has {theirs}")
    if init_config is not None and spec is not None:
        for key in ("unet", "text", "schedule"):
            if getattr(config, key) != getattr(init_config, key):
                raise ConfigError(f"--config {spec}: its {key} section differs from the --init-from checkpoint's")
    return replace(config, scaling_factor=vae_config.scaling_factor)


def with_record_tokens(config: ModelConfig, record_tokens: bool) -> ModelConfig:
    """``config`` with record tokens (the whole ``engine.conditioning`` vocabulary, K = 24, unless it
    has its own already), or without: a config that has them and ``--no-record-tokens`` is an error
    rather than a model that silently loses its table."""
    if not record_tokens:
        if config.record is not None:
            raise TrainingError(
                "--no-record-tokens: the --init-from checkpoint (or --config) is conditioned on record tokens; "
                "leave the flag out to keep them"
            )
        return config
    if config.record is not None:
        return config
    return replace(config, record=RecordConfig(tokens=full_vocabulary(), max_tokens=DEFAULT_MAX_TOKENS))


def load_vae_weights(vae: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    try:
        vae.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{where}: does not match the config: {first}") from None


def read_vae_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return load_file(path)
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from None


# --------------------------------------------------------------------------- caches


@torch.no_grad()
def encode_texts(text: TextConditioner, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts -> encoder hidden states (U, T, E) and masks (U, T) bool, on ``device``.

    Hidden states are bfloat16 on CUDA (what autocast feeds the projection anyway), float32 on the CPU.
    """
    encoder = text.encoder.to(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    hidden, masks = [], []
    for chunk in iter_chunks(len(texts), 256):
        batch = text.tokenizer.encode_batch(texts[chunk])
        ids = torch.from_numpy(batch.input_ids).to(device)
        mask = torch.from_numpy(batch.attention_mask).to(device)
        hidden.append(encoder(input_ids=ids, attention_mask=mask).last_hidden_state.to(dtype))
        masks.append(mask.bool())
    text.encoder.to("cpu")
    return torch.cat(hidden), torch.cat(masks)


@torch.no_grad()
def encode_latents(
    vae: nn.Module,
    records: list[ManifestRecord],
    image_size: int,
    device: torch.device,
    *,
    workers: int | None,
    progress: bool = False,
    what: str = "latents",
    augmentation: Augmentation | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std (N, C, h, w) float32 on ``device`` of the records' images (float32 VAE),
    each image augmented first when ``augmentation`` is given (drawn from ``seed`` only)."""
    from tqdm import tqdm

    means, stds = [], []
    generator = torch.Generator(device=device).manual_seed(seed)
    with tqdm(total=len(records), desc=f"caching {what}", unit="img", disable=not progress, leave=False) as bar:
        for chunk in iter_chunks(len(records), ENCODE_CHUNK):
            images = load_images(records[chunk], image_size, workers=workers)
            for part in iter_chunks(images.shape[0], 64):
                batch = images[part].to(device).float()
                if augmentation is not None:
                    batch = augment(batch, generator, augmentation)
                posterior = vae.encode(batch).latent_dist
                means.append(posterior.mean.float())
                stds.append(posterior.std.float())
                bar.update(posterior.mean.shape[0])
    if not means:
        return torch.zeros(0, device=device), torch.zeros(0, device=device)
    return torch.cat(means).contiguous(), torch.cat(stds).contiguous()  # NCHW, as the disk cache gives them


class Denoiser(nn.Module):
    """(x_t (B, C, h, w), t (B,), hidden (B, T, E), mask (B, T) bool[, record ids (B, K) int64])
    -> model output (B, C, h, w). With a ``record`` table the context is the projected text (B, T, D)
    followed by the record tokens (B, K, D)."""

    def __init__(self, unet: nn.Module, projection: nn.Module, record: nn.Module | None = None):
        super().__init__()
        self.unet, self.projection, self.record = unet, projection, record

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        record_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        context = self.projection(hidden).masked_fill(~mask.unsqueeze(-1), 0.0)
        if self.record is not None:
            context = torch.cat([context, self.record(record_ids).to(context.dtype)], dim=1)
        return self.unet(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]


def sample_prompts(manifest: Manifest, limit: int = SAMPLE_PROMPTS) -> list[str]:
    """``limit`` distinct non-empty captions that differ in content (validation records first): the
    first caption, then each time the one sharing the fewest words with those already chosen, so
    a grid shows normals and findings alike rather than four phrasings of one class."""
    candidates: dict[str, None] = {}  # distinct, in order; streamed: 100k+ records are never all in memory
    for record in itertools.chain(manifest.split("val"), manifest.split("train")):
        text = record.text.strip()
        if text:
            candidates.setdefault(text)
    words = {text: set(text.lower().replace(".", " ").replace(",", " ").split()) for text in candidates}
    prompts: list[str] = list(itertools.islice(candidates, 1))
    while len(prompts) < min(limit, len(candidates)):

        def overlap(text: str) -> float:
            return max(len(words[text] & words[p]) / len(words[text] | words[p]) for p in prompts)

        prompts.append(min((t for t in candidates if t not in prompts), key=overlap))  # first of equals
    return prompts


__all__ = [
    "Denoiser",
    "diffusion_config",
    "encode_latents",
    "encode_texts",
    "load_vae_weights",
    "read_vae_file",
    "resolve_vae_checkpoint",
    "sample_prompts",
    "with_record_tokens",
]
