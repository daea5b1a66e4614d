"""Training speed and loss: float32 (the path before issue 16) against the bf16 path, in one run.

For the VAE and for the diffusion UNet (latents cached, as ``train diffusion`` does), each variant
is the real training task (``training.train_vae.VAETask``, ``training.train_diffusion.DiffusionTask``)
stepped by ``training.loop.train_step``, the function ``fit`` calls: the same seeded weights, the same
batch order and the same noise draws. Steps alternate between the variants (A B C A B C ...), so a
slower moment of this shared machine hits every variant alike; each variant's images/s is the median
over its timed steps. After the same steps the script prints each variant's training loss (mean of
the last steps, identical batches and noise) and its validation loss, computed for every variant in
float32 on the same held-out images.

    .venv/bin/python tests/benchmarks/bench_training.py                        # test fixtures, cpu config
    .venv/bin/python tests/benchmarks/bench_training.py --images ../shared/data/pediatric-cxr --steps 40

Variants: ``fp32`` (before issue 16), ``bf16`` (torch.autocast bf16 + the math attention kernel on
the CPU: ``--precision auto`` on this machine, the default now), and where asked with ``--variants``:
``bf16-flash`` (bf16 with PyTorch's fused CPU attention kernel), ``bf16-cl`` (bf16 + channels_last),
``bf16-compile`` (bf16 + torch.compile; minutes of compilation first, not timed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

from training.precision import native_bf16  # noqa: E402

SHARED = ROOT.parent / "shared/data/pediatric-cxr"
FIXTURES = ROOT / "tests/fixtures/pediatric-cxr"
VARIANTS = ("fp32", "bf16", "bf16-flash", "bf16-cl", "bf16-compile")


@dataclass
class Variant:
    name: str
    precision: str
    channels_last: bool = False
    compile: bool = False
    flash: bool = False

    def context(self, device: torch.device) -> contextlib.AbstractContextManager:
        from training.precision import autocast

        if not self.flash:
            return autocast(device, self.precision)
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
        stack.enter_context(sdpa_kernel(SDPBackend.FLASH_ATTENTION))
        return stack


def make_variant(name: str) -> Variant:
    return Variant(
        name=name,
        precision="fp32" if name == "fp32" else "bf16",
        channels_last=name == "bf16-cl",
        compile=name == "bf16-compile",
        flash=name == "bf16-flash",
    )


def import_manifest(images: Path, out: Path, limit: int) -> Path:
    """``cxr-studio import pediatric`` of ``images`` into ``out`` (the same importer users run)."""
    manifest = out / "manifest.jsonl"
    command = [sys.executable, "-m", "engine.cli", "import", "pediatric", str(images), "--out", str(manifest),
               "--limit", str(limit), "--val-frac", "0.2", "--test-frac", "0.0"]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return manifest


class Trainer:
    """One variant's task, optimiser, batch order and generator: what ``fit`` sets up, stepwise."""

    def __init__(self, task, options, device: torch.device, variant: Variant):
        from training.loop import BatchOrder

        self.task, self.options, self.device, self.variant = task, options, device, variant
        modules = task.trainable()
        if variant.channels_last:
            for module in modules.values():
                module.to(memory_format=torch.channels_last)
        self.params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=options.lr, weight_decay=options.weight_decay)
        self.order = BatchOrder(task.num_train, options.batch_size, options.seed, device)
        self.generator = torch.Generator(device=device).manual_seed(options.seed)
        self.losses: list[float] = []
        self.seconds: list[float] = []

    def step(self, step: int, timed: bool) -> None:
        from training.loop import train_step

        started = time.perf_counter()
        loss = train_step(
            self.task, self.optimizer, self.params, self.order, self.generator, self.options, step,
            context=lambda: self.variant.context(self.device),
        )  # fmt: skip
        value = float(loss)  # the host sync: the step is done
        if timed:
            self.seconds.append(time.perf_counter() - started)
        self.losses.append(value)


def diffusion_trainers(manifest: Path, out: Path, config: str, batch: int, steps: int, variants: list[Variant], log):
    """One DiffusionTask per variant over one VAE (random, seeded: its latents are as real as its
    weights; the UNet's speed and the precision's effect on the loss do not depend on them)."""
    from training.checkpoint import build_model, save_checkpoint
    from training.datasets import read_manifest
    from training.loop import resolve_config, seed_everything
    from training.train_diffusion import DiffusionOptions, DiffusionTask

    model_config = resolve_config(config)
    seed_everything(0)
    vae_dir = out / "vae"
    vae_model = build_model(model_config)
    save_checkpoint(vae_dir, model_config, vae_model.vae, vae_model.unet, vae_model.text)
    data = read_manifest(manifest)
    train, val = data.split("train"), data.split("val")
    device = torch.device("cpu")
    trainers = []
    for variant in variants:
        options = DiffusionOptions(data=str(manifest), out=str(out / variant.name), vae=str(vae_dir), steps=steps,
                                   warmup_steps=0, batch_size=min(batch, len(train)), quiet=True,
                                   compile=variant.compile, device="cpu")  # fmt: skip
        seed_everything(options.seed)
        model = build_model(model_config)
        task = DiffusionTask(model, data, train, val, options, device, log=lambda *_: None)
        trainers.append(Trainer(task, options, device, variant))
    log(
        f"diffusion: {len(train)} training / {len(val)} validation latents, config {config}, "
        f"batch {trainers[0].options.batch_size}, LR {trainers[0].options.lr} constant (no warm-up)"
    )
    return trainers


def vae_trainers(manifest: Path, out: Path, config: str, batch: int, steps: int, variants: list[Variant], log):
    from training.checkpoint import build_model
    from training.datasets import load_images, read_manifest
    from training.loop import resolve_config, seed_everything
    from training.train_vae import VAEOptions, VAETask

    model_config = resolve_config(config)
    data = read_manifest(manifest)
    train = load_images(data.split("train"), model_config.image_size, progress=False)
    val = load_images(data.split("val"), model_config.image_size, progress=False)
    device = torch.device("cpu")
    trainers = []
    for variant in variants:
        options = VAEOptions(data=str(manifest), out=str(out / variant.name), steps=steps, warmup_steps=0,
                             batch_size=min(batch, train.shape[0]), quiet=True, compile=variant.compile,
                             device="cpu")  # fmt: skip
        seed_everything(options.seed)
        task = VAETask(build_model(model_config), train, val, options, device)
        trainers.append(Trainer(task, options, device, variant))
    log(
        f"vae: {train.shape[0]} training / {val.shape[0]} validation images, config {config}, "
        f"batch {trainers[0].options.batch_size}, LR {trainers[0].options.lr} constant (no warm-up)"
    )
    return trainers


def run(trainers: list[Trainer], steps: int, warmup: int) -> None:
    """Alternate the variants step by step; the first ``warmup`` steps are not timed."""
    for step in range(1, steps + 1):
        for trainer in trainers:
            trainer.step(step, timed=step > warmup)


def report(title: str, trainers: list[Trainer], batch: int, last: int, print_fn: Callable[[str], None]) -> None:
    base = trainers[0]
    base_speed = batch / statistics.median(base.seconds)
    print_fn(f"\n{title}")
    print_fn(f"  {'variant':<13} {'img/s':>7} {'vs fp32':>8} {'train loss':>11} {'val loss (fp32)':>16}")
    base_val = None
    for trainer in trainers:
        speed = batch / statistics.median(trainer.seconds)
        train_loss = statistics.fmean(trainer.losses[-last:])
        trainer.task.precision = "fp32"  # validation in float32 for every variant: the same yardstick
        val_loss = trainer.task.validate()["val_loss"]
        base_val = val_loss if base_val is None else base_val
        print_fn(
            f"  {trainer.variant.name:<13} {speed:7.1f} {speed / base_speed:7.2f}x {train_loss:11.5f} "
            f"{val_loss:10.5f} ({(val_loss - base_val) / base_val:+.1%})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=SHARED if SHARED.is_dir() else FIXTURES,
                        help="a pediatric-cxr folder (labels.csv + images/); default: ../shared/data/pediatric-cxr "
                        "where it exists, else the 12 test fixtures (batches then shrink to fit)")  # fmt: skip
    parser.add_argument("--limit", type=int, default=400, help="images to import (default 400)")
    parser.add_argument("--config", default="cpu", help="model config (default cpu, the shipped default's)")
    parser.add_argument("--steps", type=int, default=12, help="steps per variant, warm-up included (default 12)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (default 2)")
    parser.add_argument("--unet-batch", type=int, default=48, help="UNet batch (default 48, as v1 was trained)")
    parser.add_argument("--vae-batch", type=int, default=16, help="VAE batch (default 16)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--variants", default="fp32,bf16", help=f"comma-separated, fp32 first; of {VARIANTS}")
    parser.add_argument("--only", choices=("vae", "unet"), default=None, help="one network only")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    if names[0] != "fp32" or any(n not in VARIANTS for n in names):
        parser.error(f"--variants: fp32 first, then any of {', '.join(VARIANTS[1:])}")
    if args.steps <= args.warmup:
        parser.error("--steps must be larger than --warmup")
    if not native_bf16(torch.device("cpu")):
        print("this CPU has no native bf16 kernels: --precision auto trains in fp32 here; bf16 figures are emulated")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [make_variant(n) for n in names]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} CPUs")  # fmt: skip
    last = max(1, (args.steps - args.warmup) // 2)
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        out = Path(tmp)
        manifest = import_manifest(args.images, out, args.limit)
        for network in ("vae", "unet"):
            if args.only and args.only != network:
                continue
            build = vae_trainers if network == "vae" else diffusion_trainers
            batch = args.vae_batch if network == "vae" else args.unet_batch
            started = time.perf_counter()
            trainers = build(manifest, out / network, args.config, batch, args.steps, variants, print)
            batch = trainers[0].options.batch_size
            run(trainers, args.steps, args.warmup)
            report(
                f"{network}: {args.steps} steps of batch {batch} each ({args.warmup} untimed), "
                f"train loss = mean of the last {last}, {time.perf_counter() - started:.0f} s",
                trainers, batch, last, print,
            )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
