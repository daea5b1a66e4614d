"""``cxr-studio train vae|diffusion``: registered through the entry-point group ``cxr_studio.commands``.

Registering is cheap (argparse only); torch and the trainers are imported when the command runs.
Every training flag defaults to None here so that ``--resume`` can tell "not given" (take the
run's value) from "given" (must equal the run's value, except the few a resumed run may change).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from training.cli import command_error

EXIT_OK = 0
EXIT_USAGE = 2
PATH_OPTIONS = ("data", "out", "vae", "init_from", "export", "latent_cache")
# Options that hold for one invocation: --resume does not take them from the run.
INVOCATION_OPTIONS = ("stop_after",)
# Shown in --help; tests/training/test_train.py checks them against the options classes.
COMMON_DEFAULTS: dict[str, Any] = {
    "grad_accum": 1, "min_lr_ratio": 0.1, "weight_decay": 0.01, "grad_clip": 1.0, "log_every": 10,
    "patience": 5, "min_delta": 0.0, "seed": 0,
}  # fmt: skip
VAE_DEFAULTS: dict[str, Any] = {"steps": 3000, "batch_size": 32, "lr": 2e-4, "checkpoint_every": 500}
DIFFUSION_DEFAULTS: dict[str, Any] = {"steps": 10000, "batch_size": 128, "lr": 2e-4, "checkpoint_every": 1000}


def _common(parser: argparse.ArgumentParser, defaults: dict[str, Any], config_help: str) -> None:
    def d(name: str) -> str:
        return f" (default {defaults[name]})"

    add = parser.add_argument
    add("--data", metavar="MANIFEST", default=None, help="manifest written by cxr-studio import (JSON Lines)")
    add("--out", metavar="RUN", required=True, help="run folder: new, or an existing one with --resume")
    add("--config", metavar="tiny|cpu|default|FILE.json", default=None, help=config_help)
    add("--resume", action="store_true", help="continue the run in --out from its last checkpoint, exactly")
    add("--steps", type=int, default=None, help="optimizer steps" + d("steps"))
    add("--batch-size", type=int, default=None, help="images per micro-batch" + d("batch_size"))
    add("--lr", type=float, default=None, help="peak AdamW learning rate" + d("lr"))
    add("--grad-accum", type=int, default=None, help="micro-batches per optimizer step" + d("grad_accum"))
    add("--max-process-batch", type=int, default=None, metavar="N",
        help="most images one process runs through the network at once; a larger share of a micro-batch "
        "goes through in several passes, the same gradient (default: the whole share)")  # fmt: skip
    add("--stop-after", type=int, default=None, metavar="STEP",
        help="end this invocation after optimizer step STEP with its state saved; --resume goes on")  # fmt: skip
    add("--warmup-steps", type=int, default=None, help="linear warmup steps (default 5%% of --steps, at most 1000)")
    add("--min-lr-ratio", type=float, default=None, help="cosine floor, x --lr" + d("min_lr_ratio"))
    add("--weight-decay", type=float, default=None, help="AdamW weight decay" + d("weight_decay"))
    add("--grad-clip", type=float, default=None, help="gradient norm clip, 0 off" + d("grad_clip"))
    add("--checkpoint-every", type=int, default=None, metavar="N", help="save every N steps" + d("checkpoint_every"))
    add("--val-every", type=int, default=None, metavar="N", help="validate every N steps (default: --checkpoint-every)")
    add("--sample-every", type=int, default=None, metavar="N", help="sample grid every N steps, 0 off (default 0)")
    add("--log-every", type=int, default=None, metavar="N", help="metrics line every N steps" + d("log_every"))
    add("--patience", type=int, default=None, help="early stopping after P validations without improvement, 0 off"
        + d("patience"))  # fmt: skip
    add("--min-delta", type=float, default=None, help="smallest validation improvement that counts" + d("min_delta"))
    add("--device", choices=("auto", "cpu", "cuda"), default=None, help="default auto: CUDA when available")
    add("--precision", choices=("auto", "bf16", "fp32"), default=None,
        help="forward/backward precision (default auto: bf16 autocast where the GPU or CPU has native bf16, "
        "else fp32; weights, optimiser and loss stay fp32)")  # fmt: skip
    add("--seed", type=int, default=None, help="seed of weights, data order and noise" + d("seed"))
    add("--compile", action=argparse.BooleanOptionalAction, default=None,
        help="torch.compile the training step (default: on for CUDA, off for the CPU)")  # fmt: skip
    add("--workers", type=int, default=None, help="image decoding threads (default up to 8)")
    add("--quiet", action="store_true", default=None, help="no progress bar or messages")


def register_train(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train vae`` and ``train diffusion``."""
    parser = subparsers.add_parser(
        "train",
        help="train the VAE or the diffusion model from a manifest",
        description="Train the VAE, then the text-conditioned diffusion model on its latents.",
    )
    models = parser.add_subparsers(dest="train_model", metavar="MODEL", required=True)

    vae = models.add_parser("vae", help="train the autoencoder", description="Train the KL autoencoder (VAE).")
    _common(vae, _defaults("vae"), "model config (default: default)")
    vae.add_argument("--kl-weight", type=float, default=None, help="KL weight (default 1e-6)")
    vae.add_argument("--edge-weight", type=float, default=None, help="Sobel edge L1 weight (default 0.2)")
    vae.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                     help="shift/zoom/rotation and intensity augmentation, never flips (default on)")  # fmt: skip
    vae.add_argument("--crop", type=int, default=None, metavar="PX",
                     help="train on random PX x PX crops (the VAE is convolutional; validation uses whole "
                          "images); 0 whole images (default 0)")  # fmt: skip
    vae.set_defaults(func=run)

    diffusion = models.add_parser(
        "diffusion",
        help="train the text-conditioned UNet on a trained VAE",
        description="Train the text-conditioned UNet on cached latents of a frozen VAE.",
    )
    _common(
        diffusion,
        _defaults("diffusion"),
        "UNet/text/schedule config (default: the VAE checkpoint's); its image and VAE sections must match the VAE's",
    )
    add = diffusion.add_argument
    add(
        "--vae",
        metavar="RUN_OR_CHECKPOINT",
        default=None,
        help="VAE run (its best checkpoint) or checkpoint folder (default: the --init-from checkpoint's VAE)",
    )
    add(
        "--init-from",
        metavar="RUN_OR_CHECKPOINT",
        default=None,
        help="fine-tune: start the UNet and text projection from this diffusion run or checkpoint "
        "(its config unless --config is given, which must agree with it)",
    )
    add(
        "--latent-cache",
        default=None,
        metavar="DIR",
        help="keep the VAE latents in memory-mapped shards in DIR (filled once, resumable, reused while the VAE "
        "and manifest are the same) instead of in memory: for data sets of 100k+ images",
    )
    add(
        "--augment-copies",
        type=int,
        default=None,
        metavar="K",
        help="also train on K augmented versions of each training image (shift, zoom, rotation, gamma; "
        "no flips), encoded once before training (default 0)",
    )
    add(
        "--augment-sources",
        default=None,
        metavar="NAMES",
        help="only the images of these manifest sources (comma-separated, e.g. nih) get augmented copies "
        "(default: all)",
    )
    add(
        "--min-snr-gamma",
        type=float,
        default=None,
        metavar="GAMMA",
        help="weight each timestep's loss by min(SNR, GAMMA)/SNR (epsilon) or /(SNR+1) (v prediction), "
        "or min(SNR, GAMMA) sigma^2 (flow), Hang et al. 2023, who use 5; default 0: plain MSE",
    )
    add(
        "--timestep-sampling",
        choices=("auto", "uniform", "logit-normal"),
        default=None,
        help="how each step draws its noise level: logit-normal, sigmoid(N(--logit-mean, --logit-std^2)) "
        "(Esser et al. 2024, SD3), or uniform; default auto: logit-normal for a flow_prediction schedule, "
        "uniform for epsilon and v",
    )
    add("--logit-mean", type=float, default=None, help="mean of the logit-normal noise levels (default 0)")
    add("--logit-std", type=float, default=None, help="std of the logit-normal noise levels (default 1)")
    add(
        "--record-tokens",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="condition on each image's labels (findings, age band, sex, view) as record tokens beside the text "
        "tokens (default on; runs started before them resume without)",
    )
    add(
        "--caption-augment",
        type=float,
        default=None,
        metavar="P",
        help="chance that a training sample gets a fresh augmented caption each time it is drawn (other "
        "phrasings, shorthand, no header, typos; training.data.caption_augment.augmented_caption); 0 off "
        "(default 0.8; runs started before it resume with 0)",
    )
    add("--ema-decay", type=float, default=None, help="EMA decay of the UNet weights (default 0.999)")
    add("--uncond-prob", type=float, default=None, help="empty-caption probability for guidance (default 0.1)")
    add("--sample-steps", type=int, default=None, help="sampler steps of the sample grids (default 20)")
    add("--guidance-scale", type=float, default=None, help="guidance of the sample grids (default 4)")
    add("--export", metavar="PACK", default=None, help="export a model pack (ONNX) from the best checkpoint at the end")
    add("--export-fp16", action="store_true", default=None, help="export float16 weights")
    add("--export-text-int8", action="store_true", default=None, help="export an int8 text encoder (smaller pack)")
    diffusion.set_defaults(func=run)
    parser.set_defaults(func=run)


def _defaults(kind: str) -> dict[str, Any]:
    """The defaults --help shows (the options classes import torch; a test checks these match them)."""
    return {**COMMON_DEFAULTS, **(VAE_DEFAULTS if kind == "vae" else DIFFUSION_DEFAULTS)}


def _absolute(value: str | None, name: str) -> str | None:
    """Paths as absolute strings, so that ``--resume`` from another folder compares equal."""
    if value is None or (name == "config" and not Path(value).expanduser().is_file()):
        return value  # tiny, default, or a name the trainer will refuse as given
    return str(Path(value).expanduser().resolve())


def options_from_args(args: argparse.Namespace, cls: type) -> Any:
    """The options dataclass from parsed flags; with ``--resume`` missing flags come from the run."""
    from dataclasses import fields

    from training.options import LEGACY_OPTIONS
    from training.run_folder import read_run_options

    names = [f.name for f in fields(cls)]
    values = {name: getattr(args, name, None) for name in names}
    for name in (*PATH_OPTIONS, "config"):
        if name in values:
            values[name] = _absolute(values[name], name)
    if args.resume:
        stored = read_run_options(args.out)
        stored = {**{k: v for k, v in LEGACY_OPTIONS.items() if k not in stored}, **stored}
        stored = {k: v for k, v in stored.items() if k not in INVOCATION_OPTIONS}
        values = {name: stored.get(name) if value is None else value for name, value in values.items()}
    return cls(**{name: value for name, value in values.items() if value is not None})


def run(args: argparse.Namespace) -> int:
    """Train; 0 when the run ends (finished, stopped by --stop-after, or resumed after it had
    finished), 2 with a one-line error on stderr when an input, the run folder or the export cannot
    be used. Under torchrun every process runs this (:mod:`training.distributed`)."""
    from transformers.utils import logging as hf_logging

    from training import distributed
    from training.checkpoint import CheckpointError
    from training.datasets import DatasetError
    from training.device import DeviceError
    from training.export_onnx import ExportError
    from training.models.config import ConfigError
    from training.models.text import TextEncoderError
    from training.options import TrainingError

    hf_logging.disable_progress_bar()  # no "Loading weights" bars in a command's output
    kind = args.train_model
    try:
        if kind == "vae":
            from training.train_vae import VAEOptions, train_vae

            train_vae(options_from_args(args, VAEOptions), resume=args.resume)
        else:
            from training.train_diffusion import DiffusionOptions, train_diffusion

            train_diffusion(options_from_args(args, DiffusionOptions), resume=args.resume)
    except (
        DatasetError,
        DeviceError,
        TrainingError,
        ConfigError,
        CheckpointError,
        TextEncoderError,
        ExportError,
        OSError,
    ) as exc:
        return command_error(f"train {kind}", exc)
    finally:
        distributed.shutdown()
    return EXIT_OK
