"""Generation speed and memory: the engine (ONNX Runtime, CPU) against the diffusers/torch peer.

The peer is what a user would otherwise run: the same diffusers ``UNet2DConditionModel`` and
``AutoencoderKL`` and the same transformers text encoder, with the same weights, stepped by
diffusers' own ``DPMSolverMultistepScheduler`` (DPM++ 2M, the engine's default sampler), fp32,
``torch.inference_mode``. Both do the same work: text encoding of the prompt and the empty prompt,
N guided steps at batch 1 (the guided halves in one batch-2 UNet call) and one VAE decode.

Figures, each with the ratio peer / engine measured in this run (> 1: the engine is faster):

1. one UNet call at batch 2 (one guided step);
2. end to end at 20 and 50 steps (median of ``--runs``, engine and peer timed in alternation);
3. peak RSS of one generation, each in a fresh process (``ru_maxrss``; the engine's includes
   loading the pack, the peer's loading the checkpoint).

Weights: ``--checkpoint`` (a training checkpoint folder, e.g. ``runs/diffusion-cpu/best``, or the
embedded default rebuilt by ``cxr-studio checkpoint-from-pack resources/models/default --config cpu
--out runs/default-from-pack``) runs the real model; otherwise ``--config`` (cpu, default) builds
that architecture with seeded random weights (a step costs the same whatever the weights). The
engine runs the pack exported from those weights (``--text-int8`` as the default pack ships), or
``--pack`` when it is that export.

    .venv/bin/python tests/benchmarks/bench_generation.py [--checkpoint CKPT | --config cpu]
        [--text-int8] [--runs 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import benchutil
import numpy as np
from benchutil import interleaved, peak_rss_mb


def engine_generator(pack_dir: Path, threads: int) -> Callable[[int], np.ndarray]:
    from engine.pack import load_pack
    from engine.pipeline import Pipeline
    from engine.runtime import OrtBackend

    pack = load_pack(pack_dir)
    return benchutil.engine_generator(
        Pipeline(pack, backend=OrtBackend(pack, requested="cpu", intra_op_threads=threads))
    )


def torch_generator(checkpoint: Path, threads: int) -> Callable[[int], np.ndarray]:
    return benchutil.peer_generator(checkpoint, threads=threads)


def _child(kind: str, path: str, threads: int, steps: int) -> None:
    """One generation in this (fresh) process; prints JSON with its peak RSS."""
    make = engine_generator if kind == "engine" else torch_generator
    started = time.perf_counter()
    generate = make(Path(path), threads)
    generate(steps)
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "first_image_s": time.perf_counter() - started}))


def _fresh_process(kind: str, path: Path, threads: int, steps: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", kind, "--child-path", str(path), "--threads", str(threads)]
    out = subprocess.run([*command, "--child-steps", str(steps)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="training checkpoint folder (real weights)")
    parser.add_argument("--config", default="cpu", help="cpu or default: seeded weights of that architecture")
    parser.add_argument("--pack", type=Path, help="the pack exported from --checkpoint (else exported here)")
    parser.add_argument("--text-int8", action="store_true", help="export the text encoder int8, as the default pack")
    parser.add_argument("--runs", type=int, default=5, help="end-to-end runs per figure (median)")
    parser.add_argument("--repeats", type=int, default=30, help="UNet calls per figure (5 alternating blocks, median)")
    parser.add_argument("--threads", type=int, default=0, help="threads for both (0: each library's default)")
    parser.add_argument("--child", choices=("engine", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--child-path", help=argparse.SUPPRESS)
    parser.add_argument("--child-steps", type=int, default=20, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.child_path, args.threads, args.child_steps)
        return

    import torch

    from training.checkpoint import build_model, load_checkpoint, save_checkpoint
    from training.export_onnx import export_pack
    from training.loop import resolve_config

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; "
          f"torch {torch.__version__} threads={torch.get_num_threads()}")  # fmt: skip

    # 1. weights: the given checkpoint, or a seeded model of the preset; the engine's pack
    work = Path(tempfile.mkdtemp(prefix="cxr-bench-"))
    checkpoint = args.checkpoint
    if checkpoint is None:
        torch.manual_seed(0)
        config = resolve_config(args.config)
        model = build_model(config)
        checkpoint = work / "ckpt"
        save_checkpoint(checkpoint, config, model.vae, model.unet, model.text)
        print(f"weights: seeded, architecture {args.config!r}")
    else:
        model = load_checkpoint(checkpoint)
        print(f"weights: {checkpoint}")
    pack_dir = args.pack or export_pack(checkpoint, work / "pack", text_int8=args.text_int8)
    c = model.config
    unet_m = sum(p.numel() for p in model.unet.parameters()) / 1e6
    vae_m = sum(p.numel() for p in model.vae.parameters()) / 1e6
    print(f"model: UNet {unet_m:.1f}M, VAE {vae_m:.1f}M parameters, image {c.image_size}px, latent "
          f"{c.latent_channels}x{c.latent_size}x{c.latent_size}; engine pack {pack_dir}")  # fmt: skip

    # 2. one guided UNet call (batch 2)
    from engine.pack import load_pack
    from engine.runtime import OrtBackend

    pack = load_pack(pack_dir)
    backend = OrtBackend(pack, requested="cpu", intra_op_threads=args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, c.latent_channels, c.latent_size, c.latent_size)).astype(np.float32)
    t = np.array([500.0, 500.0], dtype=np.float32)
    ctx = rng.standard_normal((2, c.text.max_tokens, c.text.context_dim)).astype(np.float32)
    unet = model.unet.eval()
    xt, tt, ct = map(torch.from_numpy, (x, t, ctx))

    def torch_step() -> object:
        with torch.inference_mode():
            return unet(xt, tt, encoder_hidden_states=ct).sample

    def engine_step() -> np.ndarray:
        return backend.unet(x, t, ctx)

    rounds = 5
    block = max(1, args.repeats // rounds)
    medians, _ = interleaved({"torch": torch_step, "engine": engine_step}, rounds, block=block)
    torch_ms, ort_ms = medians["torch"] * 1000.0, medians["engine"] * 1000.0
    diff = float(np.abs(torch_step().numpy() - engine_step()).max())
    print(f"UNet call, batch 2 (one guided step): torch {torch_ms:.1f} ms, engine {ort_ms:.1f} ms, "
          f"ratio {torch_ms / ort_ms:.2f}x (max abs diff {diff:.1e})")  # fmt: skip

    # 3. end to end, batch 1 guided
    engine_generate = engine_generator(pack_dir, args.threads)
    torch_generate = torch_generator(checkpoint, args.threads)
    for steps in (20, 50):
        medians, images = interleaved(
            {"torch": partial(torch_generate, steps), "engine": partial(engine_generate, steps)}, args.runs, warmup=1
        )
        torch_s, engine_s = medians["torch"], medians["engine"]
        torch_image, engine_image = images["torch"], images["engine"]
        agree = float(np.abs(torch_image.astype(np.int16) - engine_image.astype(np.int16)).mean())
        print(f"{steps} steps end to end (text + {steps} guided steps + decode, batch 1): torch {torch_s:.3f} s, "
              f"engine {engine_s:.3f} s, ratio {torch_s / engine_s:.2f}x "
              f"(images' mean abs difference {agree:.2f} grey levels of 255)")  # fmt: skip

    # 4. peak RSS, fresh processes
    engine_mem = _fresh_process("engine", pack_dir, args.threads, 20)
    torch_mem = _fresh_process("torch", checkpoint, args.threads, 20)
    torch_mb, engine_mb = torch_mem["peak_rss_mb"], engine_mem["peak_rss_mb"]
    print(f"peak RSS of one 20-step generation in a fresh process: torch {torch_mb:.0f} MB, "
          f"engine {engine_mb:.0f} MB, ratio {torch_mb / engine_mb:.2f}x; "
          f"first image after start: torch {torch_mem['first_image_s']:.2f} s, "
          f"engine {engine_mem['first_image_s']:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
