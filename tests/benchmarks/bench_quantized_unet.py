"""Static int8 UNet on the CPU: is it worth shipping? Speed and image fidelity against fp32, same run.

The UNet is about three quarters of a CPU generation, so it is the one lever for the CPU target.
This script quantises a pack's ``unet.onnx`` with ONNX Runtime's static quantiser (QDQ, int8
per-channel weights, uint8 activations with MinMax ranges calibrated on the UNet inputs of real
20-step generations), then prints, each against fp32 measured in the same run:

1. one UNet call at batch 2 (one guided step), median of interleaved rounds;
2. the final image of the same requests (prompt, seed) through the int8 UNet: PSNR and the largest
   pixel difference against the fp32 image (the text encoder and VAE are unchanged).

Variants: ``conv`` (Conv only) and ``conv+matmul`` (also attention and feed-forward MatMuls).

    .venv/bin/python tests/benchmarks/bench_quantized_unet.py [--pack PACK] [--threads 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from benchutil import interleaved

ROOT = Path(__file__).resolve().parents[2]
TEST_REQUESTS = (("Paediatric PA chest radiograph: right middle lobe consolidation.", 7), ("Normal chest", 11))


def _run_unet(ort_session) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """An engine ``backend.unet`` that runs ``ort_session`` instead."""

    def unet(sample: np.ndarray, timestep: np.ndarray, context: np.ndarray) -> np.ndarray:
        feeds = {"sample": sample, "timestep": timestep, "context": context}
        return ort_session.run(None, {k: v.astype(np.float32) for k, v in feeds.items()})[0]

    return unet


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def final_image(pipeline, prompt: str, seed: int) -> np.ndarray:
    from engine.pipeline import GenerationRequest

    result = pipeline.generate(GenerationRequest(prompt=prompt, seed=seed, num_steps=20))
    return result.to_uint16()[0].astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, default=ROOT / "resources" / "models" / "default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from engine.pack import load_pack
    from engine.pipeline import Pipeline
    from engine.runtime import OrtBackend
    from training.quantize import OP_SETS, calibration_inputs, quantize_unet_file

    pack = load_pack(args.pack)
    backend = OrtBackend(pack, requested="cpu")
    pipeline = Pipeline(pack, backend)
    inputs = calibration_inputs(pack)  # as `cxr-studio quantize-unet` calibrates
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as work:
        paths = {"fp32": args.pack / "unet.onnx"}
        for name, ops in OP_SETS.items():
            paths[name] = Path(work) / f"unet-{name}.onnx"
            quantize_unet_file(args.pack / "unet.onnx", paths[name], inputs, ops)
        sizes = {name: path.stat().st_size / 1e6 for name, path in paths.items()}
        sessions = {name: session(path, args.threads) for name, path in paths.items()}
    print(f"pack {args.pack}, {len(inputs)} calibration calls, {args.threads} threads")

    feeds = inputs[len(inputs) // 2]
    calls = {name: partial(s.run, None, feeds) for name, s in sessions.items()}
    medians, _ = interleaved(calls, args.rounds, block=10)  # a slower moment hits every variant
    for name, seconds in medians.items():
        ms, base = seconds * 1000.0, medians["fp32"] * 1000.0
        print(f"UNet call, batch 2: {name:12s} {ms:6.1f} ms  (fp32/this {base / ms:.2f}x)  {sizes[name]:5.1f} MB")

    engine_unet = backend.unet
    for prompt, seed in TEST_REQUESTS:
        reference = final_image(pipeline, prompt, seed)
        for name in OP_SETS:
            backend.unet = _run_unet(sessions[name])
            image = final_image(pipeline, prompt, seed)
            backend.unet = engine_unet
            mse = float(np.mean((image - reference) ** 2))
            psnr = float("inf") if mse == 0 else 10 * np.log10(65535.0**2 / mse)
            worst = float(np.abs(image - reference).max()) / 65535.0
            print(f"20-step image vs fp32, seed {seed}: {name:12s} PSNR {psnr:5.1f} dB, max |diff| {worst:.3f}")


if __name__ == "__main__":
    main()
