"""A torch backend for the engine: the pack's four graphs run from the training checkpoint.

For machines where onnxruntime-gpu cannot run (no CUDA 13 / cuDNN 9) but torch with CUDA can,
and for measuring the GPU path. It implements :class:`engine.runtime.Backend` from outside
``engine`` (the packaged app has no torch) and is found through the entry-point group
``cxr_studio.backends``::

    cxr-studio generate "..." --backend torch --backend-option checkpoint=RUN/best \\
        --backend-option device=cuda --backend-option dtype=float16 --backend-option compile=reduce-overhead

The graphs are the export's own wrappers (``training.export_onnx``), so both backends compute
the same functions; the checkpoint must describe the pack's model (geometry, schedule, text,
scaling factor are compared; the export's model id is not a proof of identical weights, so
``verify=true`` also compares one UNet call against the pack's ONNX graph).

Options (``--backend-option KEY=VALUE``):

- ``checkpoint``: the checkpoint folder (required; ``config.json`` + safetensors);
- ``device``: ``auto`` (CUDA when available), ``cuda``, ``cpu``;
- ``dtype``: ``auto`` (float16 on CUDA, float32 on the CPU), ``float16``, ``bfloat16``, ``float32``
  (the UNet and VAE; the text encoder always runs in float32);
- ``compile``: ``none`` (default), ``default``, ``reduce-overhead`` (torch.compile; on CUDA
  ``reduce-overhead`` captures CUDA graphs, removing most kernel-launch cost);
- ``verify``: ``true`` / ``false`` (default false).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.pack import ModelPack
from engine.runtime import BackendError
from training.checkpoint import CheckpointError, load_checkpoint
from training.export_onnx import TextEncoderGraph, UNetGraph, VAEDecoderGraph, VAEEncoderGraph
from training.models.config import ModelConfig

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
COMPILE_MODES = ("none", "default", "reduce-overhead")
OPTIONS = ("checkpoint", "device", "dtype", "compile", "verify")


def check_matches_pack(config: ModelConfig, pack: ModelPack, where: str) -> None:
    """BackendError naming the first property where the checkpoint and the pack disagree."""
    m = pack.manifest
    pairs = {
        "image size": ((config.image_size, config.image_size), (m.image.height, m.image.width)),
        "latent shape": (
            (config.latent_channels, config.latent_size, config.latent_size),
            (m.latent.channels, m.latent.height, m.latent.width),
        ),
        "scaling factor": (round(config.scaling_factor, 6), round(m.latent.scaling_factor, 6)),
        "text tokens and width": (
            (config.text.max_tokens, config.text.context_dim),
            (m.text.max_tokens, m.text.context_dim),
        ),
        "prediction type": (config.schedule.prediction_type, m.schedule.prediction_type),
        "noise schedule": (
            (config.schedule.beta_schedule, config.schedule.num_train_timesteps),
            (m.schedule.beta_schedule, m.schedule.num_train_timesteps),
        ),
    }  # fmt: skip
    for what, (mine, theirs) in pairs.items():
        if mine != theirs:
            raise BackendError(f"{where}: {what} {mine} does not match the pack's {theirs}")


class TorchBackend:
    """:class:`engine.runtime.Backend` on torch (numpy float32 in and out)."""

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        *,
        device: str = "auto",
        dtype: str = "auto",
        compile_mode: str = "none",
    ):
        # 1. device and dtype
        if device not in ("auto", "cuda", "cpu"):
            raise BackendError(f"torch backend: device must be auto, cuda or cpu, not {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendError("torch backend: device cuda requested, but torch sees no CUDA device")
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda" if use_cuda else "cpu")
        if dtype == "auto":
            dtype = "float16" if self.device.type == "cuda" else "float32"
        if dtype not in DTYPES:
            raise BackendError(f"torch backend: dtype must be auto or one of {', '.join(DTYPES)}, not {dtype!r}")
        if compile_mode not in COMPILE_MODES:
            modes = ", ".join(COMPILE_MODES)
            raise BackendError(f"torch backend: compile must be one of {modes}, not {compile_mode!r}")
        self.dtype = DTYPES[dtype]
        # 2. the checkpoint, wrapped as the export wraps it
        try:
            model = load_checkpoint(checkpoint)
        except CheckpointError as exc:
            raise BackendError(f"torch backend: {exc}") from None
        self.config = model.config
        s = model.config.scaling_factor
        self._graphs: dict[str, nn.Module] = {
            "text": TextEncoderGraph(model.text).to(self.device),
            "unet": UNetGraph(model.unet).to(self.device, self.dtype),
            "decode": VAEDecoderGraph(model.vae, s).to(self.device, self.dtype),
            "encode": VAEEncoderGraph(model.vae, s).to(self.device, self.dtype),
        }
        for graph in self._graphs.values():
            graph.eval().requires_grad_(False)
        if self.device.type == "cuda":
            self._graphs["unet"].to(memory_format=torch.channels_last)
        if compile_mode != "none":
            self._graphs["unet"] = torch.compile(self._graphs["unet"], mode=compile_mode, dynamic=False)
        precision = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[self.dtype]
        self.provider = f"torch-{self.device.type}-{precision}" + ("" if compile_mode == "none" else f"-{compile_mode}")

    def _run(self, name: str, *arrays: np.ndarray, float_dtype: torch.dtype | None = None) -> np.ndarray:
        dtype = float_dtype or self.dtype
        with torch.inference_mode():
            inputs = [
                torch.from_numpy(np.ascontiguousarray(a)).to(self.device, dtype if a.dtype.kind == "f" else None)
                for a in arrays
            ]
            out = self._graphs[name](*inputs)
            return out.float().cpu().numpy()

    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._run("text", input_ids.astype(np.int64), attention_mask.astype(np.int64), float_dtype=torch.float32)

    def unet(self, sample: np.ndarray, timestep: np.ndarray, context: np.ndarray) -> np.ndarray:
        return self._run("unet", sample, timestep, context)

    def decode(self, latent: np.ndarray) -> np.ndarray:
        return self._run("decode", latent)

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        return self._run("encode", image)


def _flag(value: str, name: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise BackendError(f"torch backend: {name} must be true or false, not {value!r}")


def make_backend(pack: ModelPack, options: Mapping[str, str]) -> TorchBackend:
    """The ``cxr_studio.backends`` entry point: a TorchBackend for ``pack`` from ``options``."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise BackendError(f"torch backend: unknown option(s) {', '.join(unknown)} (known: {', '.join(OPTIONS)})")
    if "checkpoint" not in options:
        raise BackendError("torch backend: needs --backend-option checkpoint=FOLDER (the training checkpoint)")
    checkpoint = Path(options["checkpoint"]).expanduser()
    backend = TorchBackend(
        checkpoint,
        device=options.get("device", "auto"),
        dtype=options.get("dtype", "auto"),
        compile_mode=options.get("compile", "none"),
    )
    check_matches_pack(backend.config, pack, str(checkpoint))
    if _flag(options.get("verify", "false"), "verify"):
        verify_against_pack(backend, pack)
    return backend


def verify_against_pack(backend: TorchBackend, pack: ModelPack, tolerance: float | None = None) -> float:
    """One UNet call through both backends on the same seeded input; BackendError when they differ
    by more than ``tolerance`` (default: 1e-3 in float32, 5e-2 in half precision). Returns the
    largest absolute difference."""
    from engine.runtime import OrtBackend

    m = pack.manifest
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, m.latent.channels, m.latent.height, m.latent.width)).astype(np.float32)
    t = np.array([500.0], dtype=np.float32)
    ctx = rng.standard_normal((1, m.text.max_tokens, m.text.context_dim)).astype(np.float32)
    expected = OrtBackend(pack, requested="cpu").unet(x, t, ctx)
    diff = float(np.abs(backend.unet(x, t, ctx) - expected).max())
    limit = tolerance if tolerance is not None else (1e-3 if backend.dtype == torch.float32 else 5e-2)
    if not diff <= limit:
        raise BackendError(
            f"torch backend: the checkpoint's UNet differs from the pack's by {diff:.3g} (limit {limit:g}): "
            "not the weights this pack was exported from"
        )
    return diff


__all__ = ["TorchBackend", "check_matches_pack", "make_backend", "verify_against_pack"]
