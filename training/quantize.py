"""Static int8 UNet for CPUs: a new pack whose UNet is quantised on its own generations' inputs.

The UNet is about three quarters of a CPU generation. ONNX Runtime's static quantiser (QDQ, int8
per-channel weights, uint8 activations with MinMax ranges) needs calibration data: the UNet's real
inputs, recorded while the pack itself generates the calibration prompts (20 DPM++ 2M steps each,
guided: every call is the batch-2 call the engine makes). Every other file is copied unchanged;
the card records the quantisation, and the model id gains ``-unet-int8``.

The result is an fp32 pack to ONNX Runtime (float inputs and outputs); its images move a little
against the source pack's (bench_quantized_unet.py prints by how much), so it is a new model:
evaluate it (``cxr-studio evaluate``) before trusting it in place of the source.

    cxr-studio quantize-unet PACK --out NEW_PACK [--ops conv|conv+matmul]
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.fileio import folder_in_use, staged_folder
from engine.pack import ModelPack, load_pack, write_manifest

CALIBRATION_PROMPTS = (
    "Normal paediatric chest radiograph",
    "Paediatric chest radiograph: bacterial pneumonia.",
    "Paediatric AP chest radiograph: viral pneumonia.",
    "Right lower lobe consolidation",
    "Paediatric chest radiograph: left upper lobe opacity.",
    "Normal chest radiograph",
)
CALIBRATION_STEPS = 20
CALIBRATION_SEED = 100
OP_SETS = {"conv": ("Conv",), "conv+matmul": ("Conv", "MatMul", "Gemm")}


class QuantizeError(RuntimeError):
    """The pack cannot be quantised; the message says why. Nothing is left at the output folder."""


def calibration_inputs(pack: ModelPack, prompts: Sequence[str] = CALIBRATION_PROMPTS) -> list[dict[str, np.ndarray]]:
    """The UNet's inputs while ``pack`` generates ``prompts`` (CPU; 20 guided steps each, seeds 100...)."""
    from engine.pipeline import GenerationRequest, Pipeline
    from engine.runtime import OrtBackend

    backend = OrtBackend(pack, requested="cpu")
    pipeline = Pipeline(pack, backend)
    seen: list[dict[str, np.ndarray]] = []
    unet = backend.unet

    def recording(sample: np.ndarray, timestep: np.ndarray, context: np.ndarray) -> np.ndarray:
        seen.append({"sample": sample.astype(np.float32), "timestep": timestep.astype(np.float32),
                     "context": context.astype(np.float32)})  # fmt: skip
        return unet(sample, timestep, context)

    backend.unet = recording  # type: ignore[method-assign]
    for i, prompt in enumerate(prompts):
        request = GenerationRequest(prompt=prompt, seed=CALIBRATION_SEED + i, num_steps=CALIBRATION_STEPS)
        pipeline.generate(request)
    return seen


def quantize_unet_file(source: Path, out: Path, inputs: list[dict[str, np.ndarray]], ops: Sequence[str]) -> None:
    """QDQ static quantisation of ``source`` (an fp32 UNet graph) to ``out``, calibrated on ``inputs``."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    # the calibrator writes augmented models and range files: keep them out of the pack folder.
    # The quantiser advises "pre-processing" (shape inference) on the root logger at every call; our
    # graphs are already shape-inferred exports, so that line is not for the user's console.
    advice = _DropMessage("pre-processing before quantization", "run pre-processing before quantization")
    logging.getLogger().addFilter(advice)
    try:
        with tempfile.TemporaryDirectory(prefix="cxr-quantize-") as work:
            staged = Path(work) / "unet.onnx"
            quantize_static(
                source, staged, Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=list(ops),
                calibrate_method=CalibrationMethod.MinMax,
            )  # fmt: skip
            proto = onnx.load_model(staged)
    finally:
        logging.getLogger().removeFilter(advice)
    from training.export_onnx import MAX_IR_VERSION  # imported here: it imports torch

    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    onnx.save_model(proto, out)


class _DropMessage(logging.Filter):
    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(fragment in record.getMessage() for fragment in self.fragments)


def is_quantized(path: Path) -> bool:
    """True when the graph already holds quantisation nodes (static QDQ or dynamic int8)."""
    import onnx

    model = onnx.load_model(path, load_external_data=False)
    kinds = {"QuantizeLinear", "DequantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear"}
    return any(node.op_type in kinds for node in model.graph.node)


def quantize_pack_unet(
    pack_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    ops: str = "conv+matmul",
    model_id: str | None = None,
    prompts: Sequence[str] = CALIBRATION_PROMPTS,
) -> Path:
    """A verified copy of the pack at ``out_dir`` (new or empty) with a static int8 UNet; returns it.

    QuantizeError for an fp16 pack, a UNet that is already quantised, unknown ``ops`` or an output
    folder in use; PackError for a damaged source; ExportError when the quantised UNet fails the
    exporter's verification. Either way nothing is left at ``out_dir``.
    """
    from training.export_onnx import check_graph  # imported here: it imports torch

    if ops not in OP_SETS:
        raise QuantizeError(f"--ops must be one of {', '.join(OP_SETS)}, not {ops!r}")
    pack = load_pack(pack_dir)
    out = Path(out_dir)
    if folder_in_use(out):
        raise QuantizeError(f"{out}: already exists and is not an empty folder; choose a new folder")
    if pack.manifest.precision != "fp32":
        raise QuantizeError(f"{pack.root}: an {pack.manifest.precision} pack; int8 quantisation needs an fp32 pack")
    if is_quantized(pack.path("unet.onnx")):
        raise QuantizeError(f"{pack.path('unet.onnx')}: the UNet is already quantised")
    inputs = calibration_inputs(pack, prompts)
    with staged_folder(out) as tmp:
        for name in pack.manifest.files:
            if name != "unet.onnx":
                shutil.copyfile(pack.path(name), tmp / name)
        quantize_unet_file(pack.path("unet.onnx"), tmp / "unet.onnx", inputs, OP_SETS[ops])
        feeds = inputs[len(inputs) // 2]  # a real guided call
        check_graph(tmp / "unet.onnx", feeds, feeds["sample"].shape)
        card = dict(pack.manifest.card)
        card["unet_quantisation"] = (
            f"static int8 (ONNX Runtime QDQ, per-channel int8 weights, uint8 activations, MinMax) of "
            f"{', '.join(OP_SETS[ops])}, calibrated on {len(inputs)} UNet calls of {len(prompts)} "
            f"{CALIBRATION_STEPS}-step generations; made from {pack.model_id} ({pack.fingerprint[:12]})"
        )
        manifest = dataclasses.replace(pack.manifest, model_id=model_id or f"{pack.model_id}-unet-int8", card=card)
        write_manifest(tmp, manifest)
    load_pack(out)  # the published pack verifies
    return out


__all__ = [
    "CALIBRATION_PROMPTS",
    "OP_SETS",
    "QuantizeError",
    "calibration_inputs",
    "is_quantized",
    "quantize_pack_unet",
    "quantize_unet_file",
]
