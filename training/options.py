"""Options shared by ``train vae`` and ``train diffusion`` (:class:`TrainOptions`, checked where
they are made), which of them a resumed run may change, and :class:`TrainingError`, the one error
a run that cannot start or go on raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from training.precision import PRECISIONS

# Options a resumed run may change: they do not touch the training trajectory. (``data`` may move:
# the manifest's SHA-256 must match; ``vae`` is read from the run's own state on resume.)
# Options added after runs existed, with the value a run whose run.json lacks them was trained with
# (runs before --precision trained in float32 on the CPU, with plain MSE and without record tokens), so that such a
# run resumes as it ran.
LEGACY_OPTIONS: dict[str, Any] = {
    "precision": "fp32", "min_snr_gamma": 0.0, "record_tokens": False, "caption_augment": 0.0,
    "timestep_sampling": "auto", "logit_mean": 0.0, "logit_std": 1.0,  # auto: epsilon/v drew U{0..N-1}
}  # fmt: skip

MUTABLE_OPTIONS = frozenset(
    {
        "data",
        "out",
        "vae",
        "device",
        "compile",
        "workers",
        "quiet",
        "checkpoint_every",
        "sample_every",
        "log_every",
        "export",
        "export_fp16",
        "export_text_int8",
        "sample_steps",
        "guidance_scale",
        "max_process_batch",
        "stop_after",
    }
)

Log = Callable[[str], None]


class TrainingError(RuntimeError):
    """A run that cannot start or go on (bad options, run folder, state); one line, names the file."""


@dataclass(frozen=True)
class TrainOptions:
    """Options shared by ``train vae`` and ``train diffusion`` (the CLI flags, in Python).

    ``warmup_steps`` None: 5% of ``steps`` (at most 1000). ``val_every`` None: ``checkpoint_every``.
    ``sample_every`` 0 and ``patience`` 0 switch sample grids and early stopping off. ``compile``
    None: on for CUDA, off for the CPU. ``workers``: threads that decode images (None: up to 8).

    The global batch of an optimizer step is ``batch_size`` x ``grad_accum`` images whatever the
    number of processes (:mod:`training.distributed`); ``max_process_batch`` caps the images one
    process puts through the network at once (None: its whole share of a micro-batch), a larger share
    going through in several passes with the same gradient. ``stop_after``: end this invocation after
    that optimizer step with its state saved (a job's time limit); ``--resume`` goes on.
    """

    data: str = ""
    out: str = ""
    config: str | None = None
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-4
    grad_accum: int = 1
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    checkpoint_every: int = 500
    val_every: int | None = None
    sample_every: int = 0
    log_every: int = 10
    patience: int = 5
    min_delta: float = 0.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool | None = None
    workers: int | None = None
    quiet: bool = False
    max_process_batch: int | None = None
    stop_after: int | None = None

    def __post_init__(self) -> None:
        if not self.data:
            raise TrainingError("--data: a manifest is required")
        if not self.out:
            raise TrainingError("--out: a run folder is required")
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "log_every"):
            _check_int(self, name, minimum=1)
        for name in ("sample_every", "patience"):
            _check_int(self, name, minimum=0)
        for name in ("warmup_steps", "val_every"):
            if getattr(self, name) is not None:
                _check_int(self, name, minimum=0 if name == "warmup_steps" else 1)
        for name in ("workers", "max_process_batch", "stop_after"):
            if getattr(self, name) is not None:
                _check_int(self, name, minimum=1)
        _check_int(self, "seed", minimum=0)
        for name in ("lr", "weight_decay", "grad_clip", "min_delta"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise TrainingError(f"--{option_flag(name)} must be a number >= 0, got {value!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise TrainingError(f"--min-lr-ratio must be from 0 to 1, got {self.min_lr_ratio!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise TrainingError(f"--device must be auto, cpu or cuda, not {self.device!r}")
        if self.precision not in PRECISIONS:
            raise TrainingError(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else min(1000, self.steps // 20)

    @property
    def validate_every(self) -> int:
        return self.val_every if self.val_every is not None else self.checkpoint_every

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def option_flag(name: str) -> str:
    """The command-line flag of an option field: ``min_lr_ratio`` -> ``min-lr-ratio``."""
    return name.replace("_", "-")


def _check_int(options: Any, name: str, *, minimum: int) -> None:
    value = getattr(options, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TrainingError(f"--{option_flag(name)} must be a whole number >= {minimum}, got {value!r}")


def option_names(cls: type[TrainOptions]) -> list[str]:
    return [f.name for f in fields(cls)]


__all__ = ["LEGACY_OPTIONS", "MUTABLE_OPTIONS", "Log", "TrainOptions", "TrainingError", "option_flag", "option_names"]
