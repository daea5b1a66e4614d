"""Training precision: bf16 autocast where the device computes bf16 natively, float32 elsewhere.

``--precision auto`` (the default) is bf16 on CUDA GPUs that support it and on CPUs whose oneDNN
has native bf16 kernels (AVX512-BF16 or AMX, as ``lscpu`` reports); fp32 otherwise. Only the
forward and backward passes run in bf16: parameters, gradients, the optimiser state and the loss
stay float32 (autocast's mixed precision, not a bf16 model). ``tests/benchmarks/bench_training.py``
measures the speed and the loss of each against float32 in one run.

On the CPU, bf16 attention runs on PyTorch's math kernel: its fused flash kernel for the CPU was
slower for our short sequences (28x28 latents, 64 text tokens) in that benchmark.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

PRECISIONS = ("auto", "bf16", "fp32")


class PrecisionError(ValueError):
    """A precision the device cannot run; the message names the option."""


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` has native bf16 kernels (CUDA: compute capability 8.0+; CPU: oneDNN bf16)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` | ``bf16`` | ``fp32`` -> ``bf16`` or ``fp32`` for ``device``; bf16 without native
    kernels is refused (emulated bf16 is slower than fp32 and only loses precision)."""
    if name not in PRECISIONS:
        raise PrecisionError(f"--precision must be one of {', '.join(PRECISIONS)}, not {name!r}")
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if name == "bf16" and not native_bf16(device):
        raise PrecisionError(f"--precision bf16: {device.type} has no native bf16 kernels here; use fp32 or auto")
    return name


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context of a forward + loss + backward pass at ``precision`` (``bf16`` or ``fp32``)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
    if device.type == "cpu":
        stack.enter_context(sdpa_kernel(SDPBackend.MATH))
    return stack


__all__ = ["PRECISIONS", "PrecisionError", "autocast", "native_bf16", "resolve_precision"]
