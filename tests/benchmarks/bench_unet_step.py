"""Per-step UNet time at batch 2 (one guided step) and 20-step generation: ONNX Runtime vs torch eager.

Builds the default-size architecture (``training.models.config.default_config``) with seeded random
weights — the cost of a step does not depend on the weights — exports it to a pack, and times the
same inputs through torch eager (the peer: the same diffusers modules a user would run) and
through the engine's ONNX Runtime session, in this one process.

    .venv/bin/python tests/benchmarks/bench_unet_step.py [--repeats 30] [--threads N]

Prints medians and the ratio torch / ORT (> 1: ORT is faster).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="threads for both (0: each library's default)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import torch

    from engine.pack import load_pack
    from engine.pipeline import GenerationRequest, Pipeline
    from engine.runtime import OrtBackend
    from engine.samplers import sample
    from training.checkpoint import build_model, save_checkpoint
    from training.export_onnx import export_pack
    from training.models.config import default_config

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; "
          f"torch {torch.__version__} threads={torch.get_num_threads()}")  # fmt: skip

    # 1. the default-size model, seeded, exported once
    torch.manual_seed(0)
    config = default_config()
    model = build_model(config)
    unet_params = sum(p.numel() for p in model.unet.parameters()) / 1e6
    vae_params = sum(p.numel() for p in model.vae.parameters()) / 1e6
    work = Path(tempfile.mkdtemp(prefix="cxr-bench-"))
    save_checkpoint(work / "ckpt", config, model.vae, model.unet, model.text)
    t0 = time.perf_counter()
    pack_dir = export_pack(work / "ckpt", work / "pack")
    latent = f"{config.latent_channels}x{config.latent_size}x{config.latent_size}"
    print(f"model: UNet {unet_params:.1f}M, VAE {vae_params:.1f}M parameters, image {config.image_size}px, "
          f"latent {latent}; export {time.perf_counter() - t0:.1f} s")  # fmt: skip

    pack = load_pack(pack_dir)
    backend = OrtBackend(pack, requested="cpu", intra_op_threads=args.threads)
    m = pack.manifest
    rng = np.random.default_rng(0)
    sample_np = rng.standard_normal((2, m.latent.channels, m.latent.height, m.latent.width)).astype(np.float32)
    timestep_np = np.array([500.0, 500.0], dtype=np.float32)
    context_np = rng.standard_normal((2, m.text.max_tokens, m.text.context_dim)).astype(np.float32)

    # 2. one UNet call at batch 2 (the guided halves of one image)
    unet = model.unet.eval()
    sample_t, timestep_t, context_t = map(torch.from_numpy, (sample_np, timestep_np, context_np))

    def torch_step() -> object:
        with torch.inference_mode():
            return unet(sample_t, timestep_t, encoder_hidden_states=context_t).sample

    def ort_step() -> object:
        return backend.unet(sample_np, timestep_np, context_np)

    torch_ms = _median_ms(torch_step, args.repeats)
    ort_ms = _median_ms(ort_step, args.repeats)
    diff = float(np.abs(torch_step().numpy() - ort_step()).max())
    print(f"UNet step, batch 2: torch eager {torch_ms:.1f} ms, ORT CPU {ort_ms:.1f} ms, "
          f"ratio torch/ORT {torch_ms / ort_ms:.2f}x (max abs diff {diff:.1e})")  # fmt: skip

    # 3. end to end: text + N guided steps + decode, same sampler for both
    request = GenerationRequest(prompt="Right lower lobe consolidation, no effusion", num_steps=args.steps, seed=1)
    pipeline = Pipeline(pack, backend=backend)
    pipeline.generate(request)  # warm-up (and the cached empty-text embedding)
    ort_runs = [pipeline.generate(request).timings["total_s"] for _ in range(3)]

    def torch_generate() -> None:
        with torch.inference_mode():
            tokens = pipeline.tokenizer.encode_batch([request.prompt, ""])
            ids, mask = torch.from_numpy(tokens.input_ids), torch.from_numpy(tokens.attention_mask)
            context = model.text(ids, mask)
            cond, uncond = context[:1], context[1:]
            both = torch.cat([uncond, cond])

            def model_fn(x: np.ndarray, t: np.ndarray) -> np.ndarray:
                x2 = torch.from_numpy(np.concatenate([x, x]))
                out = unet(x2, torch.from_numpy(np.concatenate([t, t])), encoder_hidden_states=both).sample
                u, c = out.chunk(2)
                return (u + request.guidance_scale * (c - u)).numpy()

            noise = np.random.default_rng(1).standard_normal(sample_np[:1].shape, dtype=np.float32)
            for step in sample(request.sampler, model_fn, noise, m.schedule, request.num_steps):
                latent = step.latent
            model.vae.decode(torch.from_numpy(latent) / m.latent.scaling_factor)

    torch_generate()
    torch_runs = []
    for _ in range(3):
        start = time.perf_counter()
        torch_generate()
        torch_runs.append(time.perf_counter() - start)
    torch_s, ort_s = statistics.median(torch_runs), statistics.median(ort_runs)
    print(f"{args.steps} steps end to end (batch 1, guided, {request.sampler}): torch eager {torch_s:.2f} s, "
          f"ORT CPU {ort_s:.2f} s, ratio torch/ORT {torch_s / ort_s:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
