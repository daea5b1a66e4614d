"""Shared by the benchmark scripts (run as scripts: their folder is on ``sys.path``)."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

PROMPT = "Paediatric AP chest radiograph: right lower lobe consolidation. No effusion."
GUIDANCE = 4.0


def peak_rss_mb() -> float:
    """This process's peak resident set so far, in MB: VmHWM (a fresh ``exec``'s own peak;
    ``ru_maxrss`` would carry the forking parent's), or ru_maxrss where there is no /proc."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 3, block: int = 1
) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds per call of each function, timed in alternation (A B A B ...), so that a slower
    moment of a shared machine hits both sides of a ratio alike; and each one's last result.

    With ``block`` > 1 each turn makes one untimed call first, then times ``block`` calls: the
    other library's worker threads may still be spinning when a turn starts (ONNX Runtime's and
    OpenMP's both spin a while after a call), which would bill one side for the other's idle wait.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, object] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            if block > 1:
                fn()
            start = time.perf_counter()
            for _ in range(block):
                results[name] = fn()
            times[name].append((time.perf_counter() - start) / block)
    return {name: statistics.median(t) for name, t in times.items()}, results


def engine_generator(pipeline) -> Callable[[int], np.ndarray]:
    """``generate(steps)`` -> the engine's uint8 image of PROMPT (seed 1, DPM++ 2M, guided)."""
    from engine.pipeline import GenerationRequest

    def generate(steps: int) -> np.ndarray:
        request = GenerationRequest(prompt=PROMPT, num_steps=steps, guidance_scale=GUIDANCE, sampler="dpmpp-2m", seed=1)
        return pipeline.generate(request).to_uint8()[0]

    return generate


def peer_generator(
    checkpoint: Path, *, threads: int = 0, device: str = "cpu", dtype: str = "float32"
) -> Callable[[int], np.ndarray]:
    """The diffusers/torch peer: what a user would otherwise run on the same weights.

    The checkpoint's diffusers ``UNet2DConditionModel`` and ``AutoencoderKL`` and its transformers
    text encoder, stepped by diffusers' own ``DPMSolverMultistepScheduler`` (DPM++ 2M, the engine's
    default sampler), ``torch.inference_mode``, eager; UNet and VAE in ``dtype`` on ``device`` (the
    text encoder in float32, as the engine's). Both guided halves go through one batch-2 UNet call,
    as in the engine. ``generate(steps)`` -> uint8 image of PROMPT from the engine's seed-1 noise.
    """
    import torch
    from diffusers import DPMSolverMultistepScheduler
    from diffusers.utils import logging as diffusers_logging

    from training.checkpoint import load_checkpoint

    diffusers_logging.set_verbosity_error()  # its notes on casting with .to() are not figures
    if threads:
        torch.set_num_threads(threads)
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    model = load_checkpoint(checkpoint)
    config = model.config
    unet = model.unet.eval().to(device, torch_dtype)
    vae = model.vae.eval().to(device, torch_dtype)
    text = model.text.eval().to(device)
    s = config.schedule
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=s.num_train_timesteps,
        beta_start=s.beta_start,
        beta_end=s.beta_end,
        beta_schedule=s.beta_schedule,
        prediction_type=s.prediction_type,
        algorithm_type="dpmsolver++",  # the engine's dpmpp-2m, as in tests/engine/test_samplers.py
        solver_order=2,
        solver_type="midpoint",
        timestep_spacing="trailing",
        steps_offset=0,
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    latent_shape = (config.latent_channels, config.latent_size, config.latent_size)

    @torch.inference_mode()
    def generate(steps: int) -> np.ndarray:
        context = text.encode(["", PROMPT]).to(torch_dtype)  # (2, tokens, dim): unguided, guided
        scheduler.set_timesteps(steps, device=device)
        # the engine's initial noise for seed 1 (engine.pipeline.Pipeline.initial_noise), so both
        # produce the same image and the printed difference checks that they do the same work
        noise = np.random.default_rng(1).standard_normal(latent_shape, dtype=np.float32)[None]
        x = (torch.from_numpy(noise) * scheduler.init_noise_sigma).to(device, torch_dtype)
        for t in scheduler.timesteps:
            out = unet(torch.cat([x, x]), t, encoder_hidden_states=context).sample
            uncond, cond = out.chunk(2)
            x = scheduler.step(uncond + GUIDANCE * (cond - uncond), t, x).prev_sample
        image = vae.decode(x / config.scaling_factor).sample
        return ((image[0, 0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()

    return generate
