"""The torch device a command runs on: ``--device auto|cuda|cpu`` to a :class:`torch.device`, and the
CUDA settings training uses. Training and evaluation both read ``--device`` through here.
"""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A ``--device`` torch cannot use on this machine; the message names the option."""


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda: no CUDA GPU is available to torch")
    return torch.device(name)


def configure_torch(device: torch.device) -> None:
    """TF32 matmuls and cuDNN autotuning on CUDA (bf16 autocast, ``--precision``, does the rest)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


__all__ = ["DeviceError", "configure_torch", "pick_device"]
