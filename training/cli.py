"""``cxr-studio export-onnx``, ``checkpoint-from-pack`` and ``quantize-unet``: registered through the entry-point group
``cxr_studio.commands``.

Registering is cheap (argparse only); torch and the exporter are imported when the command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_USAGE = 2


def command_error(command: str, error: object) -> int:
    """Print ``cxr-studio COMMAND: error: ...`` on one line (library errors can span several) to stderr
    and return the usage exit code, 2. Every training command reports a failure this way."""
    message = " ".join(str(error).split())
    print(f"cxr-studio {command}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def register_export_onnx(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export-onnx --checkpoint DIR --out PACK [--fp16] [--model-id ID]``."""
    parser = subparsers.add_parser(
        "export-onnx",
        help="export a training checkpoint to a model pack (ONNX + model.json)",
        description="Export a checkpoint folder (config.json + safetensors) to a verified model pack.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="DIR", help="checkpoint folder")
    parser.add_argument("--out", type=Path, required=True, metavar="PACK", help="new (or empty) folder for the pack")
    parser.add_argument("--fp16", action="store_true", help="float16 weights and arithmetic (float32 inputs/outputs)")
    parser.add_argument(
        "--text-int8", action="store_true", help="int8 dynamic quantisation of the text encoder (a smaller pack)"
    )
    parser.add_argument(
        "--model-id", default=None, metavar="ID", help="model id (default: the checkpoint folder's name)"
    )
    parser.add_argument(
        "--attention-maps", action="store_true",
        help="UNet outputs for finding maps (cross-attention per layer; generate --attention); pixels unchanged",
    )  # fmt: skip
    parser.add_argument(
        "--card", type=Path, default=None, metavar="FILE.json",
        help="model card entries (a JSON object: training data and its licence, what the model knows, "
             "example prompts, evaluation) merged over the defaults",
    )  # fmt: skip
    parser.set_defaults(func=run)


def read_card(path: Path | None) -> dict | None:
    """The ``--card`` JSON object, or None; ValueError naming the file when it is not one."""
    if path is None:
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--card {path}: cannot be read as JSON: {exc}") from None
    if not isinstance(card, dict):
        raise ValueError(f"--card {path}: must be a JSON object")
    return card


def run(args: argparse.Namespace) -> int:
    """Export; 0 when the pack is written, 2 with a one-line error on stderr when it cannot be."""
    from transformers.utils import logging as hf_logging

    from training.checkpoint import CheckpointError
    from training.export_onnx import ExportError, export_pack
    from training.models.text import TextEncoderError

    hf_logging.disable_progress_bar()  # no "Loading weights" bars in a command's output
    try:
        card = read_card(args.card)
        pack = export_pack(
            args.checkpoint, args.out, fp16=args.fp16, text_int8=args.text_int8, model_id=args.model_id, card=card,
            attention_maps=args.attention_maps,
        )  # fmt: skip
    except (CheckpointError, ExportError, TextEncoderError, OSError, ValueError) as exc:
        return command_error("export-onnx", exc)
    print(f"wrote {pack}")
    return EXIT_OK


def register_checkpoint_from_pack(subparsers: argparse._SubParsersAction) -> None:
    """Add ``checkpoint-from-pack PACK --config NAME|FILE --out DIR``."""
    parser = subparsers.add_parser(
        "checkpoint-from-pack",
        help="rebuild a training checkpoint from a model pack (to fine-tune it with train --init-from)",
        description="Rebuild a training checkpoint (config.json + safetensors) from an fp32 model pack's "
        "ONNX weights, so that `train diffusion --init-from DIR` can fine-tune a pack you were given.",
    )
    parser.add_argument("pack", type=Path, metavar="PACK", help="model pack folder (with model.json)")
    parser.add_argument(
        "--config", required=True, metavar="NAME|FILE",
        help="network sizes the pack was trained with: tiny, cpu, default or a config JSON "
             "(the default pack: cpu); geometry, schedule and text settings come from the pack",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="new (or empty) checkpoint folder")
    parser.set_defaults(func=run_checkpoint_from_pack)


def run_checkpoint_from_pack(args: argparse.Namespace) -> int:
    """0 when the checkpoint is written, 2 with a one-line error when it cannot be."""
    from transformers.utils import logging as hf_logging

    from engine.pack import PackError
    from training.checkpoint import CheckpointError
    from training.from_pack import checkpoint_from_pack
    from training.loop import resolve_config
    from training.models.config import ConfigError
    from training.models.text import TextEncoderError

    hf_logging.disable_progress_bar()
    try:
        out = checkpoint_from_pack(args.pack, args.out, resolve_config(args.config))
    except (PackError, CheckpointError, ConfigError, TextEncoderError, OSError) as exc:
        return command_error("checkpoint-from-pack", exc)
    print(f"wrote {out}")
    return EXIT_OK


def register_quantize_unet(subparsers: argparse._SubParsersAction) -> None:
    """Add ``quantize-unet PACK --out NEW_PACK [--ops conv|conv+matmul] [--model-id ID]``."""
    from training.quantize import OP_SETS

    parser = subparsers.add_parser(
        "quantize-unet",
        help="copy a pack with a static int8 UNet (faster on CPUs; evaluate it before trusting it)",
        description="Calibrate on the pack's own generations, quantise its UNet to int8 (ONNX Runtime QDQ) "
        "and write a new verified pack; the other files are copied unchanged.",
    )
    parser.add_argument("pack", type=Path, metavar="PACK", help="fp32 model pack folder (with model.json)")
    parser.add_argument("--out", type=Path, required=True, metavar="NEW_PACK", help="new (or empty) folder")
    parser.add_argument(
        "--ops", choices=tuple(OP_SETS), default="conv+matmul",
        help="what to quantise: convolutions only, or also the attention and feed-forward matrix products",
    )  # fmt: skip
    parser.add_argument("--model-id", default=None, metavar="ID", help="model id (default: PACK's id + -unet-int8)")
    parser.set_defaults(func=run_quantize_unet)


def run_quantize_unet(args: argparse.Namespace) -> int:
    """0 when the pack is written, 2 with a one-line error when it cannot be."""
    from engine.pack import PackError
    from engine.runtime import BackendError
    from training.export_onnx import ExportError
    from training.quantize import QuantizeError, quantize_pack_unet

    try:
        out = quantize_pack_unet(args.pack, args.out, ops=args.ops, model_id=args.model_id)
    except (PackError, QuantizeError, ExportError, BackendError, OSError) as exc:
        return command_error("quantize-unet", exc)
    print(f"wrote {out}")
    return EXIT_OK
