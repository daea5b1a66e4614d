"""The state one evaluation run carries from section to section: the checked inputs, the real and
generated image sets, and progress reporting."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from engine.pack import ModelPack
from engine.pipeline import Pipeline
from training.evaluate.classifier import ChestClassifier
from training.evaluate.data import ClassPrompts, PromptPlan, RealData
from training.evaluate.options import EvaluationOptions


class Progress:
    """tqdm bars on stderr, one per phase, and a line per finished phase (all off with ``quiet``)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.timings: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str, total: int | None = None, unit: str = "it") -> Iterator[Any]:
        from tqdm import tqdm

        start = time.perf_counter()
        bar = tqdm(total=total, desc=name, unit=unit, disable=self.quiet or None, file=sys.stderr, leave=False)
        try:
            yield bar
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        self.timings[name] = self.timings.get(name, 0.0) + seconds
        self.note(f"evaluate: {name}: {seconds:.1f} s")

    def note(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data holders


@dataclass
class ImageSet:
    """Images (N, H, W) in [0, 1] with class indices, classifier probabilities and features."""

    images: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray | None = None
    features: np.ndarray | None = None


@dataclass
class Generated(ImageSet):
    plan: PromptPlan | None = None
    sampler: str = ""
    num_steps: int = 0
    guidance_scale: float = 0.0
    seconds: float = 0.0


@dataclass
class Context:
    options: EvaluationOptions
    pack: ModelPack
    data: RealData
    classes: tuple[str, ...]
    prompts: dict[str, ClassPrompts]
    sampler: str
    num_steps: int
    guidance_scale: float
    device: torch.device
    progress: Progress
    rng_seed: int
    record_guidance: float | None = None  # --record-guidance
    pipeline: Pipeline | None = None
    classifier: ChestClassifier | None = None
    loaded_classifier: tuple[ChestClassifier, dict] | None = None  # --classifier, checked before work starts
    init_body: dict[str, torch.Tensor] | None = None  # --classifier-init's conv layers, read before work starts
    prompt_sets: dict[str, list] = field(default_factory=dict)  # --prompt-sets, read before work starts
    real: dict[str, ImageSet] = field(default_factory=dict)
    generated: Generated | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)

    def rng(self, purpose: int) -> np.random.Generator:
        """A generator per purpose, so that skipping a section never changes another's draws."""
        return np.random.default_rng([self.rng_seed, purpose])

    @property
    def resamples(self) -> int:
        return self.options.bootstrap


__all__ = ["Context", "Generated", "ImageSet", "Progress"]
