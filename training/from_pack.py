"""A training checkpoint rebuilt from a model pack's ONNX weights (the inverse of export_onnx).

Users hold packs, not our training checkpoints: this is how they fine-tune the shipped model
(``train diffusion --init-from``) on their own data. The pack's ONNX files keep the torch
parameter names (``unet.conv_in.weight``), except where the exporter folded a Linear layer's
weight into a transposed ``MatMul`` constant (``onnx::MatMul_843``) or int8 quantisation replaced
it (``..._quantized`` with ``_scale``/``_zero_point``); those are found through the node that uses
them, transposed back and dequantised. Geometry, scaling factor, schedule and text settings come
from ``model.json``, and so do the record tokens (``conditioning``: the vocabulary, K, and the
table in ``record_embeddings.npy``); the network sizes (which a pack does not record) from ``--config``, and every
tensor's shape must then match, else CheckpointError names the first that does not.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from engine.conditioning import load_record_conditioning
from engine.fileio import folder_in_use, staged_folder
from engine.pack import PackError, PackManifest, load_pack
from training.checkpoint import CheckpointError, build_model, save_checkpoint
from training.models.config import ConfigError, ModelConfig, RecordConfig
from training.models.text import ENCODER_ALIASES

# model part -> the pack files whose initializers hold its weights, and the name prefix in them
PARTS = {
    "vae": (("vae_encoder.onnx", "vae_decoder.onnx"), "vae."),
    "unet": (("unet.onnx",), "unet."),
    "projection": (("text_encoder.onnx",), "text.projection."),
}


def _scope(name: str) -> str:
    """``/text/projection/linear/MatMul_output_0`` -> ``text.projection.linear.MatMul_output_0``."""
    return name.replace("/", ".").strip(".")


class _Weights:
    """Every float weight of some ONNX files, by torch parameter name where it can be found."""

    OPS = ("MatMul", "Mul", "Add")

    def __init__(self, paths: list[Path]):
        self.named: dict[str, np.ndarray] = {}
        # (module path, op) -> the constant operand of that module's first MatMul/Mul/Add: a Linear's
        # (in, out) weight, a GroupNorm's (C, 1, 1) scale and shift
        self.operand: dict[tuple[str, str], np.ndarray] = {}
        for path in paths:
            try:
                graph = onnx.load_model(str(path)).graph
            except (OSError, ValueError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:
                raise CheckpointError(f"{path}: not a readable ONNX model: {exc}") from None
            inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
            for node in graph.node:  # the exporter shares equal weights through Identity nodes
                if node.op_type == "Identity" and node.input[0] in inits:
                    inits[node.output[0]] = inits[node.input[0]]
            self.named.update(inits)
            for node in graph.node:
                op = "MatMul" if node.op_type == "MatMulInteger" else node.op_type
                if op not in self.OPS or not node.output:
                    continue
                module, sep, rest = _scope(node.output[0]).rpartition(f".{op}")
                # a MatMul's weight is its second input; Mul and Add take the constant on either side
                weight = node.input[1] if op == "MatMul" else next((x for x in node.input if x in inits), None)
                if not sep or not rest.startswith("_output_0") or weight not in inits:
                    continue
                array = inits[weight].astype(np.float32)
                if node.op_type == "MatMulInteger":  # dynamic int8: w = (q - zero_point) * scale
                    zero = inits[node.input[3]] if len(node.input) > 3 else 0
                    scale = inits[weight.removesuffix("_quantized") + "_scale"]
                    array = (array - np.asarray(zero, np.float32)) * np.asarray(scale, np.float32)
                self.operand.setdefault((module, op), array)

    def _find(self, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
        if key in self.named:
            return self.named[key]
        module, _, kind = key.rpartition(".")
        for scope in (module, module.partition(".")[2]):  # the VAE's nodes lack the "vae." scope
            if kind == "weight" and (scope, "MatMul") in self.operand:
                return self.operand[(scope, "MatMul")].T
            op = {"weight": "Mul", "bias": "Add"}.get(kind)
            found = self.operand.get((scope, op))
            if found is not None:  # (C, 1, 1) -> (C,); another size is reported as a shape mismatch
                return found.reshape(shape) if found.size == int(np.prod(shape)) else found.reshape(-1)
        return None

    def tensor(self, key: str, shape: tuple[int, ...], where: str) -> torch.Tensor:
        array = self._find(key, shape)
        if array is None:
            raise CheckpointError(f"{where}: no weight for {key}")
        if tuple(array.shape) != shape:
            raise CheckpointError(
                f"{where}: {key} has shape {tuple(array.shape)}, the config needs {shape} (try another --config)"
            )
        return torch.from_numpy(np.array(array, dtype=np.float32, copy=True))


def _fill(module: nn.Module, weights: _Weights, prefix: str, where: str) -> None:
    state = module.state_dict()
    tensors = {}
    for key, value in state.items():
        if not value.is_floating_point():
            tensors[key] = value  # buffers such as position ids are not weights
            continue
        tensors[key] = weights.tensor(prefix + key, tuple(value.shape), where)
    module.load_state_dict(tensors, strict=True)


def pack_config(manifest: PackManifest, base: ModelConfig) -> ModelConfig:
    """``base``'s network sizes with the pack's geometry, scaling factor, schedule and text settings."""
    if manifest.image.height != manifest.image.width:
        raise ConfigError(f"the pack's image is {manifest.image.height}x{manifest.image.width}: only square images")
    text = manifest.text
    encoder = base.text.encoder
    both_minilm = text.encoder_name in ENCODER_ALIASES and encoder in ENCODER_ALIASES
    if not both_minilm and Path(encoder).name != Path(text.encoder_name).name:
        raise ConfigError(
            f"the pack's text encoder is {text.encoder_name!r} but the config names {encoder!r}: "
            "give a --config JSON whose text.encoder is that encoder's folder"
        )
    return replace(
        base,
        image_size=manifest.image.height,
        latent_channels=manifest.latent.channels,
        downsample_factor=manifest.latent.downsample_factor,
        scaling_factor=float(manifest.latent.scaling_factor),
        schedule=manifest.schedule,
        text=replace(base.text, context_dim=text.context_dim, max_tokens=text.max_tokens, lowercase=text.lowercase),
        record=None
        if manifest.conditioning is None
        else RecordConfig(tokens=manifest.conditioning.tokens, max_tokens=manifest.conditioning.max_tokens),
    )


def checkpoint_from_pack(pack_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], base: ModelConfig) -> Path:
    """Write a checkpoint folder at ``out_dir`` (new or empty) from the pack at ``pack_dir``.

    Raises PackError for a damaged pack, ConfigError/CheckpointError when ``base`` does not fit
    it; either way nothing is left at ``out_dir``.
    """
    pack = load_pack(pack_dir)  # checks every file's size and sha256 first
    if pack.manifest.precision != "fp32":
        raise PackError(f"{pack.root}: precision {pack.manifest.precision}: only fp32 packs can be trained further")
    config = pack_config(pack.manifest, base)
    out = Path(out_dir)
    if folder_in_use(out):
        raise CheckpointError(f"{out}: exists and is not an empty folder")
    model = build_model(config)
    for part, (files, prefix) in PARTS.items():
        module = model.text.projection if part == "projection" else getattr(model, part)
        _fill(module, _Weights([pack.path(name) for name in files]), prefix, f"{pack.root} ({part})")
    conditioning = load_record_conditioning(pack)  # checks the table's shape against the vocabulary
    if model.record is not None and conditioning is not None:
        with torch.no_grad():
            model.record.table.weight.copy_(torch.from_numpy(conditioning.table))
    with staged_folder(out) as tmp:
        save_checkpoint(tmp, config, model.vae, model.unet, model.text, record=model.record)
    return out


__all__ = ["checkpoint_from_pack", "pack_config"]
