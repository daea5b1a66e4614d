"""KL autoencoder for 1-channel radiographs: diffusers ``AutoencoderKL`` built from a ModelConfig.

Image (B, 1, H, W) in [-1, 1] <-> latent (B, C, H/f, W/f). The *diffusion-space* latent is the
VAE latent multiplied by ``ModelConfig.scaling_factor`` (chosen so it has about unit variance);
:func:`encode_to_diffusion` and :func:`decode_from_diffusion` apply it, as the exported graphs do.
Self-attention exists only in the middle block (latent resolution), and only when
``VAEConfig.mid_block_attention`` is on: at full resolution it costs far more than it gives.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL

from training.models.config import ModelConfig


def build_vae(config: ModelConfig) -> AutoencoderKL:
    """A freshly initialised AutoencoderKL (weights from the current torch RNG state)."""
    v = config.vae
    levels = len(v.block_out_channels)
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(v.block_out_channels),
        layers_per_block=v.layers_per_block,
        act_fn="silu",
        latent_channels=config.latent_channels,
        norm_num_groups=v.norm_num_groups,
        sample_size=config.image_size,
        scaling_factor=float(config.scaling_factor),
        mid_block_add_attention=v.mid_block_attention,
    )


def encode_to_diffusion(vae: AutoencoderKL, image: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """Image (B, 1, H, W) in [-1, 1] -> posterior mean x scaling_factor (B, C, h, w)."""
    return vae.encode(image).latent_dist.mean * scaling_factor


def decode_from_diffusion(vae: AutoencoderKL, latent: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """Diffusion-space latent (B, C, h, w) -> image (B, 1, H, W), about [-1, 1], not clamped."""
    return vae.decode(latent / scaling_factor).sample
