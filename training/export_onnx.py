"""Export a checkpoint folder to a model pack (ONNX graphs + model.json) that ``engine`` runs.

Graphs (names and shapes as in ``engine.pack``; every input and output has a dynamic batch axis):

- ``text_encoder.onnx``: input_ids, attention_mask (B, T) int64 -> context (B, T, D) float32;
  encoder + projection, padded positions exactly zero.
- ``unet.onnx``: sample (B, C, h, w) float32, timestep (B,) float32, context (B, T, D) float32
  -> model_output (B, C, h, w): epsilon, v or the flow velocity ε - x_0, as the schedule's prediction_type
  (model.json's ``schedule``; a flow_prediction pack's also holds its ``shift``). The token axis T
  of ``context`` is dynamic too: a model with record tokens takes the text's T plus K of them.
- ``record_embeddings.npy`` (models with record tokens only): the (V, D) float32 table of
  ``engine.conditioning``, with the ``conditioning`` section of model.json naming its tokens.
- ``vae_decoder.onnx``: latent (B, C, h, w) in diffusion space (already x scaling_factor) ->
  image (B, 1, H, W), about [-1, 1], not clamped (the graph divides by scaling_factor).
- ``vae_encoder.onnx``: image (B, 1, H, W) in [-1, 1] -> latent (B, C, h, w), posterior mean
  x scaling_factor.

``attention_maps=True`` (``export-onnx --attention-maps``) gives ``unet.onnx`` one more output per
cross-attention layer, ``attention_<i>`` (B, h_l * w_l, T): the layer's softmax(QK^T / sqrt(d))
averaged over heads, for finding maps (``engine.attention``), named with their grid sizes in
model.json's ``attention`` section. The outputs tap the Softmax nodes the traced graph already
has (a ReduceMean over the head axis hangs off each), so ``model_output`` is computed by exactly
the same nodes as without maps: an attention processor that recomputed the probabilities would
round differently from the scaled-dot-product attention the packs were traced with.

The TorchScript exporter (``torch.onnx.export(..., dynamo=False)``, opset 17) exports diffusers'
models reliably. ``ir_version`` is capped at 10 because onnxruntime 1.31 reads IR <= 13 and
onnx 1.23 may write 14. ``fp16=True`` converts the weights and arithmetic to float16 with
onnxconverter-common, keeping float32 inputs and outputs. The pack is built in a temporary
folder beside ``out_dir``, checked with ``onnx.checker`` and ONNX Runtime (CPU), and only then
renamed to ``out_dir``: a failed export leaves nothing behind.
"""

from __future__ import annotations

import io
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto
from torch import nn

from engine.conditioning import EMBEDDINGS_FILE, RECORD_TOKENS
from engine.fileio import folder_in_use, staged_folder
from engine.pack import (
    AttentionConfig,
    ConditioningConfig,
    DefaultsConfig,
    ImageConfig,
    LatentConfig,
    PackManifest,
    PreviewConfig,
    TextConfig,
    write_manifest,
)
from training.checkpoint import LatentDiffusionModel, load_checkpoint
from training.models.text import ENCODER_ALIASES, TextConditioner

OPSET = 17
FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
MAX_IR_VERSION = 10
PREVIEW_SAMPLES = 64
DEFAULT_CARD: dict[str, Any] = {
    "intended_use": "Education and testing; not for diagnosis.",
    "not_for": "Clinical decisions, diagnosis, triage, or training diagnostic models without validation.",
    "training_data": "Unknown (an untrained or undocumented model).",
    "limitations": [
        "Images are synthetic and may contain anatomically impossible findings.",
        "Text conditioning is limited to what the training reports described.",
    ],
}


class ExportError(RuntimeError):
    """The export could not produce a valid pack; the message names the graph or folder."""


# --------------------------------------------------------------------------- graph wrappers


class TextEncoderGraph(nn.Module):
    """input_ids, attention_mask (B, T) int64 -> context (B, T, D) float32, pads zero."""

    def __init__(self, text: TextConditioner):
        super().__init__()
        self.text = text

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text(input_ids, attention_mask)


class UNetGraph(nn.Module):
    """sample (B, C, h, w), timestep (B,) float32, context (B, T, D) -> model_output (B, C, h, w)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]


class VAEDecoderGraph(nn.Module):
    """Diffusion-space latent (B, C, h, w) -> image (B, 1, H, W), about [-1, 1], not clamped."""

    def __init__(self, vae: nn.Module, scaling_factor: float):
        super().__init__()
        self.vae = vae
        self.scaling_factor = float(scaling_factor)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent / self.scaling_factor).sample


class VAEEncoderGraph(nn.Module):
    """Image (B, 1, H, W) in [-1, 1] -> posterior mean x scaling_factor (B, C, h, w)."""

    def __init__(self, vae: nn.Module, scaling_factor: float):
        super().__init__()
        self.vae = vae
        self.scaling_factor = float(scaling_factor)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(image).latent_dist.mean * self.scaling_factor


def graph_modules(model: LatentDiffusionModel) -> dict[str, tuple[nn.Module, tuple[torch.Tensor, ...], list[str], str]]:
    """File name -> (module, example inputs (batch 2), input names, output name)."""
    c = model.config
    s = c.scaling_factor
    generator = torch.Generator().manual_seed(0)
    input_ids, attention_mask = model.text.tokenize(["normal chest radiograph", ""])
    with torch.no_grad():
        context = model.text(input_ids, attention_mask)
        if model.record is not None:  # the UNet sees T text + K record tokens
            context = torch.cat([context, model.record(torch.zeros(2, model.record.vocabulary.max_tokens,
                                                                   dtype=torch.long))], dim=1)  # fmt: skip
    latent = torch.randn(2, c.latent_channels, c.latent_size, c.latent_size, generator=generator)
    image = torch.rand(2, 1, c.image_size, c.image_size, generator=generator) * 2 - 1
    timestep = torch.tensor([999.0, 500.5])
    # Batch 2 in every example so nothing specialises on a batch of one.
    return {
        "text_encoder.onnx": (
            TextEncoderGraph(model.text),
            (input_ids, attention_mask),
            ["input_ids", "attention_mask"],
            "context",
        ),
        "unet.onnx": (
            UNetGraph(model.unet),
            (latent, timestep, context),
            ["sample", "timestep", "context"],
            "model_output",
        ),
        "vae_decoder.onnx": (VAEDecoderGraph(model.vae, s), (latent,), ["latent"], "image"),
        "vae_encoder.onnx": (VAEEncoderGraph(model.vae, s), (image,), ["image"], "latent"),
    }


# --------------------------------------------------------------------------- export steps


# Axes besides the batch that may vary: the UNet's context tokens (text T, or T + K record tokens).
DYNAMIC_AXES = {"context": {1: "tokens"}}


def export_graph(
    module: nn.Module, args: tuple[torch.Tensor, ...], input_names: list[str], output_name: str
) -> onnx.ModelProto:
    """Trace ``module`` on ``args`` to an ONNX model (opset 17, dynamic batch axis and
    :data:`DYNAMIC_AXES`, IR <= 10)."""
    module.eval()
    buffer = io.BytesIO()
    names = [*input_names, output_name]
    with warnings.catch_warnings(), torch.no_grad():
        # Tracer warnings about Python branches on shapes: diffusers' branches do not depend on batch.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        torch.onnx.export(
            module,
            args,
            buffer,
            input_names=input_names,
            output_names=[output_name],
            opset_version=OPSET,
            dynamic_axes={name: {0: "batch", **DYNAMIC_AXES.get(name, {})} for name in names},
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    return proto


ATTENTION_OUTPUT = "attention_{}"


def add_attention_outputs(proto: onnx.ModelProto) -> list[str]:
    """Add to a traced UNet one output per cross-attention layer (diffusers' ``attn2``): its Softmax
    output (B, heads, HW, T) averaged over heads, (B, HW, T) float32, named ``attention_<i>`` in graph
    order; returns the names. Nothing feeding ``model_output`` changes. ExportError when the graph has
    no cross-attention Softmax of rank 4 (scaled-dot-product attention as traced by torch)."""
    graph = proto.graph
    inferred = onnx.shape_inference.infer_shapes(proto)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in inferred.graph.value_info}
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    softmaxes = [n for n in graph.node if n.op_type == "Softmax" and "/attn2/" in n.name]
    if not softmaxes:
        raise ExportError("unet.onnx: no cross-attention (attn2) Softmax found; cannot add attention maps")
    names = []
    for i, node in enumerate(softmaxes):
        probs = node.output[0]
        if ranks.get(probs) != 4:
            raise ExportError(f"unet.onnx: {node.name} is not (B, heads, HW, T); cannot add attention maps")
        name = ATTENTION_OUTPUT.format(i)
        mean = f"{name}_fp16" if types.get(probs) == FLOAT16 else name  # an fp16 pack's maps leave as float32
        graph.node.append(
            onnx.helper.make_node("ReduceMean", [probs], [mean], name=f"/attention_maps/{i}", axes=[1], keepdims=0)
        )
        if mean != name:
            graph.node.append(onnx.helper.make_node("Cast", [mean], [name], name=f"/attention_maps/{i}/Cast", to=FLOAT))
        graph.output.append(onnx.helper.make_tensor_value_info(name, FLOAT, ["batch", f"positions_{i}", "tokens"]))
        names.append(name)
    return names


def attention_config(path: Path, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> AttentionConfig:
    """The ``attention`` section for an exported UNet: each output's grid, from one run on ``feeds``
    (sample (1, C, h, w), timestep, context).

    A layer of HW positions on an h x w latent is (h / f) x (w / f) with f = sqrt(h * w / HW)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(list(names), dict(feeds))
    h, w = feeds["sample"].shape[2:]
    heights, widths = [], []
    for name, value in zip(names, outputs, strict=True):
        f = round((h * w / value.shape[1]) ** 0.5)
        if f < 1 or h % f or w % f or (h // f) * (w // f) != value.shape[1] or not np.all(np.isfinite(value)):
            raise ExportError(f"unet.onnx: output {name} of shape {value.shape} is not a grid of the {h}x{w} latent")
        heights.append(h // f)
        widths.append(w // f)
    return AttentionConfig(outputs=tuple(names), heights=tuple(heights), widths=tuple(widths))


def _cast_to(node: onnx.NodeProto) -> int:
    return next(a.i for a in node.attribute if a.name == "to")


def _rewire(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new


def _drop_noop_casts(proto: onnx.ModelProto) -> None:
    """Remove Cast nodes whose input already has the target type (torch's ``.to(dtype)``
    no-ops): onnxconverter-common would otherwise pair them with its own casts and rewire
    float32 tensors into float16 nodes."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.input)}
    types.update({t.name: t.data_type for t in proto.graph.initializer})
    outputs = {o.name for o in proto.graph.output}
    for node in list(proto.graph.node):
        if node.op_type == "Cast" and node.output[0] not in outputs and types.get(node.input[0]) == _cast_to(node):
            _rewire(proto.graph, node.output[0], node.input[0])
            proto.graph.node.remove(node)


def _timestep_region(graph: onnx.GraphProto) -> set[str]:
    """Names of the nodes from the ``timestep`` input to the sinusoidal embedding (diffusers'
    ``time_proj``): kept in float32 as diffusers does, since ``sin(999 * f)`` in float16 is off
    by up to ~0.3."""
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    region = {node.name for node in graph.node if "/time_proj/" in node.name}
    # ancestors of the projection that descend from the timestep input
    ancestors: set[str] = set()
    stack = [node for node in graph.node if node.name in region]
    while stack:
        for name in stack.pop().input:
            producer = producers.get(name)
            if producer is not None and producer.name not in ancestors:
                ancestors.add(producer.name)
                stack.append(producer)
    descendants: set[str] = set()
    stack = list(consumers.get("timestep", []))
    while stack:
        node = stack.pop()
        if node.name not in descendants:
            descendants.add(node.name)
            for name in node.output:
                stack.extend(consumers.get(name, []))
    return region | (ancestors & descendants)


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Float16 weights and arithmetic, float32 inputs and outputs (``keep_io_types``); the
    timestep embedding stays float32.

    onnxconverter-common 1.16 leaves the model's own ``Cast(to=float)`` nodes (int -> float)
    at float32 while it marks their outputs float16, and inserts float16 -> float32 cast
    pairs between kept-float32 nodes; both are repaired here.
    """
    from onnxconverter_common import float16

    # 1. float32 clean-up and the region that stays float32
    _drop_noop_casts(proto)
    keep_fp32 = _timestep_region(proto.graph)
    int_to_float = {
        n.name for n in proto.graph.node if n.op_type == "Cast" and _cast_to(n) == FLOAT and n.name not in keep_fp32
    }
    # 2. convert
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # "values truncated to fp16 range"
        converted = float16.convert_float_to_float16(proto, keep_io_types=True, node_block_list=sorted(keep_fp32))
    graph = converted.graph
    # 3. the model's int -> float casts now feed float16 arithmetic
    for node in graph.node:
        if node.name in int_to_float:
            for attribute in node.attribute:
                if attribute.name == "to":
                    attribute.i = FLOAT16
    # 4. float32 -> float16 -> float32 round trips inside the float32 region: use the float32 tensor
    outputs = {o.name for o in graph.output}
    changed = True
    while changed:
        changed = False
        producers = {out: node for node in graph.node for out in node.output}
        for node in graph.node:
            first = producers.get(node.input[0]) if node.op_type == "Cast" else None
            if (
                first is not None
                and _cast_to(node) == FLOAT
                and node.output[0] not in outputs
                and first.op_type == "Cast"
                and _cast_to(first) == FLOAT16
                and first.name not in int_to_float  # its input is float32
            ):
                _rewire(graph, node.output[0], first.input[0])
                graph.node.remove(node)
                if first.output[0] not in outputs and not any(first.output[0] in n.input for n in graph.node):
                    graph.node.remove(first)
                changed = True
                break
    converted.ir_version = min(converted.ir_version, MAX_IR_VERSION)
    return converted


def quantize_int8(path: Path) -> None:
    """Dynamic int8 quantisation of MatMul/Gemm weights and embedding tables (Gather), in place (ORT quantizer)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_name(f".{path.name}.int8")
    # per channel: one scale per output column. Per tensor, MiniLM's context drifted to a per-token
    # cosine of 0.961 mean, 0.883 worst against fp32; per channel 0.990 and 0.971, at the same size.
    quantize_dynamic(
        path,
        quantized,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gemm", "Gather"],
    )
    proto = onnx.load_model(quantized)
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    onnx.save_model(proto, path)
    quantized.unlink()


def check_graph(path: Path, feeds: Mapping[str, np.ndarray], expected_shape: Sequence[int]) -> None:
    """``onnx.checker`` and one run in ONNX Runtime (CPU); ExportError names the file."""
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path), full_check=True)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        output = session.run(None, dict(feeds))[0]
    except Exception as exc:  # checker and ORT raise many types; all mean "this graph is unusable"
        raise ExportError(f"{path.name}: failed verification: {exc}") from exc
    if output.dtype != np.float32 or tuple(output.shape) != tuple(expected_shape):
        raise ExportError(
            f"{path.name}: output {output.dtype} {output.shape}, expected float32 {tuple(expected_shape)}"
        )
    if not np.all(np.isfinite(output)):
        raise ExportError(f"{path.name}: output has NaN or infinite values")


def fit_preview(model: LatentDiffusionModel, num_samples: int = PREVIEW_SAMPLES, seed: int = 0) -> PreviewConfig:
    """Least-squares ``pixel ~ sum_c weight[c] z[c] + bias`` at latent resolution.

    ``z`` (num_samples, C, h, w) ~ N(0, 1) in diffusion space is decoded with the torch VAE;
    the images are average-pooled by the downsample factor to (num_samples, 1, h, w).
    """
    c = model.config
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(num_samples, c.latent_channels, c.latent_size, c.latent_size, generator=generator)
    pooled = []
    with torch.no_grad():
        for start in range(0, num_samples, 8):
            image = model.vae.decode(z[start : start + 8] / c.scaling_factor).sample
            pooled.append(F.avg_pool2d(image, c.downsample_factor))
    pixels = torch.cat(pooled).double().numpy().reshape(-1)  # (N*h*w,)
    design = z.double().numpy().transpose(0, 2, 3, 1).reshape(-1, c.latent_channels)  # (N*h*w, C)
    design = np.concatenate([design, np.ones((design.shape[0], 1))], axis=1)
    solution, *_ = np.linalg.lstsq(design, pixels, rcond=None)
    return PreviewConfig(weight=tuple(float(w) for w in solution[:-1]), bias=float(solution[-1]))


def _feeds(name: str, model: LatentDiffusionModel) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
    """Batch-1 inputs for a verification run of ``name``, and the expected output shape."""
    c = model.config
    t, h, img = c.text.max_tokens, c.latent_size, c.image_size
    latent = np.zeros((1, c.latent_channels, h, h), np.float32)
    if name == "text_encoder.onnx":
        ids, mask = model.text.tokenize(["normal chest radiograph"])
        return {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}, (1, t, c.text.context_dim)
    if name == "unet.onnx":
        k = model.record.vocabulary.max_tokens if model.record is not None else 0
        context = np.zeros((1, t + k, c.text.context_dim), np.float32)
        return {"sample": latent, "timestep": np.array([500.0], np.float32), "context": context}, latent.shape
    if name == "vae_decoder.onnx":
        return {"latent": latent}, (1, 1, img, img)
    return {"image": np.zeros((1, 1, img, img), np.float32)}, latent.shape


def _parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_card(model: LatentDiffusionModel, card: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults (intended use, unknown training data, ...) and an architecture summary, then ``card``."""
    c = model.config
    vae_params, unet_params = _parameter_count(model.vae) / 1e6, _parameter_count(model.unet) / 1e6
    architecture = {
        "vae": f"AutoencoderKL, {vae_params:.2f}M parameters, channels {list(c.vae.block_out_channels)}",
        "unet": f"UNet2DConditionModel, {unet_params:.2f}M parameters, "
        f"channels {list(c.unet.block_out_channels)}, cross-attention {list(c.unet.cross_attention)}",
        "text_encoder": f"{_encoder_name(model)} (frozen, {model.text.encoder_dim}-d)"
        f" + projection to {c.text.context_dim}-d",
    }
    if model.record is not None:
        vocabulary = model.record.vocabulary
        architecture["record_tokens"] = (
            f"{vocabulary.max_tokens} tokens of the parsed prompt record (findings x status, age band, sex, "
            f"view, side) beside the text tokens; a learned table of {len(vocabulary)} x {c.text.context_dim}"
        )
    return {**DEFAULT_CARD, "architecture": architecture, **dict(card or {})}


def _encoder_name(model: LatentDiffusionModel) -> str:
    encoder = model.config.text.encoder
    return encoder if encoder in ENCODER_ALIASES else model.text.folder.name


def _prepare_out_dir(out: Path) -> None:
    if folder_in_use(out):
        raise ExportError(f"{out}: already exists and is not an empty folder; choose a new folder for the pack")


def export_pack(
    checkpoint_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    fp16: bool = False,
    text_int8: bool = False,
    model_id: str | None = None,
    card: Mapping[str, Any] | None = None,
    attention_maps: bool = False,
) -> Path:
    """Export a checkpoint folder to a verified model pack at ``out_dir`` (new or empty); returns it.

    ``text_int8``: dynamic int8 quantisation of the text encoder's weights (MiniLM: 91 -> about
    23 MB), so that the default pack stays under its size budget; the UNet and VAE are untouched.
    ``attention_maps``: the UNet's extra head-averaged cross-attention outputs (module docstring).

    Raises CheckpointError for a bad checkpoint and ExportError when the pack cannot be made;
    either way nothing is left at ``out_dir``.
    """
    out = Path(out_dir)
    # 1. load and check everything before touching the output folder
    model = load_checkpoint(checkpoint_dir)
    _prepare_out_dir(out)
    config = model.config
    with staged_folder(out) as tmp:  # published (shareable, renamed into place) only when all went well
        # 2. trace, convert, save and verify each graph
        attention = None
        for name, (module, args, input_names, output_name) in graph_modules(model).items():
            proto = export_graph(module, args, input_names, output_name)
            maps = add_attention_outputs(proto) if attention_maps and name == "unet.onnx" else []
            if fp16:
                proto = to_fp16(proto)
            onnx.save_model(proto, tmp / name)
            if text_int8 and name == "text_encoder.onnx":
                quantize_int8(tmp / name)
            check_graph(tmp / name, *_feeds(name, model))
            if maps:
                attention = attention_config(tmp / name, _feeds(name, model)[0], maps)
        # 3. vocabulary, preview map, manifest
        shutil.copyfile(model.text.folder / "vocab.txt", tmp / "vocab.txt")
        conditioning = None
        if model.record is not None:
            np.save(tmp / EMBEDDINGS_FILE, model.record.numpy_table(), allow_pickle=False)
            vocabulary = model.record.vocabulary
            conditioning = ConditioningConfig(RECORD_TOKENS, vocabulary.tokens, vocabulary.max_tokens, EMBEDDINGS_FILE)
        manifest = PackManifest(
            model_id=model_id or Path(checkpoint_dir).resolve().name,
            precision="fp16" if fp16 else "fp32",
            image=ImageConfig(height=config.image_size, width=config.image_size, channels=1),
            latent=LatentConfig(
                channels=config.latent_channels,
                height=config.latent_size,
                width=config.latent_size,
                scaling_factor=float(config.scaling_factor),
                downsample_factor=config.downsample_factor,
            ),
            schedule=config.schedule,
            text=TextConfig(
                vocab_file="vocab.txt",
                lowercase=model.text.lowercase,
                max_tokens=config.text.max_tokens,
                context_dim=config.text.context_dim,
                encoder_name=_encoder_name(model),
            ),
            preview=fit_preview(model),
            defaults=DefaultsConfig(),
            card=build_card(model, card),
            conditioning=conditioning,
            attention=attention,
        )
        write_manifest(tmp, manifest)
    return out


def add_attention_maps(pack_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """A copy of the pack at ``pack_dir`` in the new (or empty) folder ``out_dir`` whose UNet has the
    attention-map outputs (:func:`add_attention_outputs`) and whose model.json names them; every other
    file byte-identical. The UNet's nodes are the shipped ones, so its ``model_output`` is too: a pack
    gains maps without a round trip through torch (which would re-quantise an int8 text encoder).
    ExportError (nothing left at ``out_dir``) for a pack that already has maps or whose UNet has no
    cross-attention; PackError for a pack that does not load."""
    from dataclasses import replace

    from engine.pack import load_pack

    pack = load_pack(pack_dir)
    manifest = pack.manifest
    if manifest.attention is not None:
        raise ExportError(f"{pack.root}: the pack already has attention maps")
    out = Path(out_dir)
    _prepare_out_dir(out)
    with staged_folder(out) as tmp:
        for name in manifest.files:
            shutil.copyfile(pack.path(name), tmp / name)
        proto = onnx.load_model(tmp / "unet.onnx")
        names = add_attention_outputs(proto)
        onnx.save_model(proto, tmp / "unet.onnx")
        latent = manifest.latent
        tokens = manifest.text.max_tokens + (manifest.conditioning.max_tokens if manifest.conditioning else 0)
        sample = np.zeros((1, latent.channels, latent.height, latent.width), np.float32)
        feeds = {
            "sample": sample,
            "timestep": np.array([500.0], np.float32),
            "context": np.zeros((1, tokens, manifest.text.context_dim), np.float32),
        }
        check_graph(tmp / "unet.onnx", feeds, sample.shape)
        write_manifest(tmp, replace(manifest, attention=attention_config(tmp / "unet.onnx", feeds, names)))
    return out
