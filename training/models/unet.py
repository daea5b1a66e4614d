"""Conditional UNet: diffusers ``UNet2DConditionModel`` built from a ModelConfig.

``unet(sample (B, C, h, w), timestep (B,), encoder_hidden_states=context (B, T, D))`` returns the
model output (B, C, h, w): ``ε`` or ``v`` as ``ModelConfig.schedule.prediction_type``. Levels
with ``UNetConfig.cross_attention`` use ``CrossAttnDownBlock2D``/``CrossAttnUpBlock2D`` (self-
then cross-attention to the text context after each ResNet); the middle block always has it.
"""

from __future__ import annotations

from diffusers import UNet2DConditionModel

from training.models.config import ModelConfig


def build_unet(config: ModelConfig) -> UNet2DConditionModel:
    """A freshly initialised UNet2DConditionModel (weights from the current torch RNG state)."""
    u = config.unet
    down = tuple("CrossAttnDownBlock2D" if flag else "DownBlock2D" for flag in u.cross_attention)
    up = tuple("CrossAttnUpBlock2D" if flag else "UpBlock2D" for flag in reversed(u.cross_attention))
    return UNet2DConditionModel(
        sample_size=config.latent_size,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        down_block_types=down,
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=up,
        block_out_channels=tuple(u.block_out_channels),
        layers_per_block=u.layers_per_block,
        norm_num_groups=u.norm_num_groups,
        cross_attention_dim=config.text.context_dim,
        transformer_layers_per_block=u.transformer_layers_per_block,
        # diffusers' historical naming: ``attention_head_dim`` is the number of heads per level.
        attention_head_dim=u.num_heads,
        flip_sin_to_cos=True,
        freq_shift=0,
    )
