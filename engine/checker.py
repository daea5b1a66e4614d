"""The finding check: a small classifier in the pack scores each finding in a generated image.

A pack may carry ``checker.onnx`` and a ``checker`` section in model.json (``engine.pack.CheckerConfig``):
the graph takes ``image`` (B, 1, S, S) float32 in ``input_range`` and gives ``probabilities``
(B, classes), a softmax. The engine resizes each image in [0, 1] to S x S exactly as the
classifier's training resized real films (torch's ``area`` interpolation, an average over each
output pixel's source window, when shrinking; bilinear with half-pixel centres when enlarging),
maps it to ``input_range`` and runs the graph in ONNX Runtime on the CPU (it is small: a few
milliseconds an image). No torch.

A finding's score is the sum of the probabilities of the classes model.json maps it to
(``pneumonia`` = bacterial + viral). The verdict on a prompt: every finding the prompt states
present (``no_finding`` present for "normal"), absent or uncertain, that the checker scores, is
judged against the pack's ``threshold`` (0.5 unless model.json says otherwise, the point where a
finding is more likely there than not): a present finding passes when its score is >= threshold,
an absent one when it is below; an uncertain one is shown, never judged. An image passes when
every judged finding passes. :func:`agreement` gives one number for "how well the image shows
what was asked" (the lowest of: the present findings' scores and one minus the absent findings'
scores), which ``make-studies --check-min`` compares with its minimum.

Retries (:func:`generate_checked`): an image whose agreement is below the minimum is generated again
alone with the next seed of its own sequence, ``seed + k * RETRY_STRIDE`` for try k = 1, 2, ...
(``seed`` the image's first seed, request seed + its index in the batch). The stride is the largest
batch (16), so the retries of the images of one batch never meet each other's seeds, and with at
most :data:`MAX_TRIES` tries every seed stays within the 1000 seeds make-studies gives each study
(``engine.dicom.studies.SEED_STRIDE``): studies never share a seed. The image kept (the first that
reaches the minimum, else the best of all tries) carries the seed that made it, so it is
regenerated bit for bit from that seed alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np

from engine.findings.parse import parse_prompt
from engine.pack import CheckerConfig, ModelPack
from engine.pipeline import MAX_BATCH, GenerationRequest, GenerationResult, Pipeline

PRESENT, ABSENT, UNCERTAIN = "present", "absent", "uncertain"
NORMAL = "no_finding"
RETRY_STRIDE = MAX_BATCH  # try k of an image uses its seed + k * RETRY_STRIDE
MAX_TRIES = 60  # 15 + 59 * 16 = 959: every try stays inside a study's 1000 seeds


class CheckerError(ValueError):
    """A pack without a checker, or a checker graph that cannot be run; the message names it."""


def _area_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) averaging weights of torch's adaptive average pooling (``area`` mode):
    output i averages inputs floor(i * in / out) .. ceil((i + 1) * in / out) - 1."""
    matrix = np.zeros((size_out, size_in), np.float64)
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -((-(i + 1) * size_in) // size_out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """(B, H, W) -> (B, size, size) float32: area averaging per axis when shrinking, bilinear when enlarging."""
    images = np.asarray(images, dtype=np.float32)
    _, h, w = images.shape
    if (h, w) == (size, size):
        return images.copy()
    if h >= size and w >= size:
        rows, cols = _area_matrix(h, size), _area_matrix(w, size)
        return (rows @ images.astype(np.float64) @ cols.T).astype(np.float32)  # (an einsum of three loops naively)
    return np.stack([cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR) for image in images])


@dataclass(frozen=True)
class FindingCheck:
    """One finding of a prompt as the checker judged it: ``ok`` None for an uncertain finding."""

    finding: str
    asked: str  # present / absent / uncertain
    score: float
    ok: bool | None


@dataclass(frozen=True)
class ImageCheck:
    """The check of one image: every scored class (``normal`` as named by the pack) and the findings asked."""

    scores: dict[str, float]  # finding name -> score, every finding the pack maps
    findings: tuple[FindingCheck, ...]

    @property
    def judged(self) -> tuple[FindingCheck, ...]:
        return tuple(f for f in self.findings if f.ok is not None)

    @property
    def ok(self) -> bool:
        """True when every judged finding passes (and when none is judged: nothing to contradict)."""
        return all(f.ok for f in self.judged)

    @property
    def agreement(self) -> float | None:
        """The lowest of the present findings' scores and of one minus the absent findings' scores;
        None when the prompt asks nothing the checker scores."""
        values = [f.score if f.asked == PRESENT else 1.0 - f.score for f in self.judged]
        return min(values) if values else None

    def line(self) -> str:
        """``asked: pneumonia · the checker sees: pneumonia 0.84, normal 0.05 · ok`` (or ``· LOW: ...``)."""
        asked = [_label(f.finding) if f.asked == PRESENT else f"no {_label(f.finding)}" for f in self.findings]
        asked = [a for a in asked if a != "no normal"]
        ranked = sorted(self.scores.items(), key=lambda kv: (-kv[1], kv[0]))
        shown = {f.finding for f in self.findings} | {NORMAL}
        seen = ", ".join(f"{_label(name)} {score:.2f}" for name, score in ranked if name in shown)
        head = f"asked: {', '.join(asked) or 'nothing the checker scores'} · the checker sees: {seen}"
        if not self.judged:
            return f"{head} · not checked"
        wrong = [f for f in self.judged if not f.ok]
        if not wrong:
            return f"{head} · ok"
        low = [f"{_label(f.finding)} {f.score:.2f}" for f in wrong if f.asked == PRESENT]
        high = [f"{_label(f.finding)} {f.score:.2f}" for f in wrong if f.asked == ABSENT]
        parts = ([f"LOW: {', '.join(low)}"] if low else []) + ([f"HIGH: {', '.join(high)}"] if high else [])
        return f"{head} · {'; '.join(parts)}"


def _label(finding: str) -> str:
    return "normal" if finding == NORMAL else finding.replace("_", " ")


class Checker:
    """A pack's finding checker, run in ONNX Runtime on the CPU."""

    def __init__(self, pack: ModelPack):
        config = pack.manifest.checker
        if config is None:
            raise CheckerError(f"{pack.root}: this model pack has no finding checker (model.json has no 'checker')")
        import onnxruntime as ort

        self.config: CheckerConfig = config
        options = ort.SessionOptions()
        options.log_severity_level = 3
        path = pack.path(config.file)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises several types; all mean "this graph cannot run"
            raise CheckerError(f"{path}: the checker graph cannot be loaded: {' '.join(str(exc).split())}") from None
        self.input_name = self.session.get_inputs()[0].name

    @property
    def findings(self) -> tuple[str, ...]:
        return tuple(self.config.findings)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W) in [0, 1] -> (B, classes) float32 class probabilities (rows sum to 1)."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 3:
            raise CheckerError(f"the checker takes images (B, H, W), not an array of shape {images.shape}")
        low, high = self.config.input_range
        x = resize(np.clip(images, 0.0, 1.0), self.config.input_size) * (high - low) + low
        return np.asarray(self.session.run(None, {self.input_name: x[:, None]})[0], dtype=np.float32)

    def scores(self, images: np.ndarray) -> list[dict[str, float]]:
        """Per image: finding name -> score in [0, 1] (the sum of its classes' probabilities)."""
        probabilities = self.probabilities(images)
        column = {name: i for i, name in enumerate(self.config.classes)}
        return [
            {
                finding: float(min(1.0, sum(row[column[c]] for c in classes)))
                for finding, classes in self.config.findings.items()
            }
            for row in probabilities
        ]

    def judge(self, prompt: str, scores: dict[str, float]) -> ImageCheck:
        """The verdict on one image's ``scores`` for what ``prompt`` asks (module docstring)."""
        asked = dict(parse_prompt(prompt).findings)
        threshold = self.config.threshold
        checks = []
        for finding, status in asked.items():
            if finding not in scores:
                continue
            score = scores[finding]
            ok = None if status == UNCERTAIN else (score >= threshold if status == PRESENT else score < threshold)
            checks.append(FindingCheck(finding, status, score, ok))
        # the asked findings first (present before absent), normal last unless it was asked
        checks.sort(key=lambda f: (f.asked != PRESENT, f.finding == NORMAL))
        return ImageCheck(scores=scores, findings=tuple(checks))

    def check(self, prompt: str, images: np.ndarray) -> list[ImageCheck]:
        """Score ``images`` (B, H, W) in [0, 1] and judge each against ``prompt``."""
        return [self.judge(prompt, scores) for scores in self.scores(images)]


def retry_seed(seed: int, attempt: int) -> int:
    """The seed of try ``attempt`` (0 = the first) of an image whose first seed is ``seed``."""
    return seed + attempt * RETRY_STRIDE


@dataclass(frozen=True)
class CheckedImage:
    """What the retries of one image came to: the seeds tried in order, the kept check and seed."""

    seeds: tuple[int, ...]
    seed: int
    check: ImageCheck
    passed: bool  # the kept image reached the minimum (or the prompt asks nothing the checker scores)

    def line(self, minimum: float) -> str:
        tries = len(self.seeds)
        if self.check.agreement is None:
            return f"seed {self.seed}: {self.check.line()}"
        if self.passed:
            return f"seed {self.seed} (try {self.seeds.index(self.seed) + 1} of {tries}): {self.check.line()}"
        return (
            f"seed {self.seed}: none of {tries} tries reached {minimum:g}; kept the best "
            f"({self.check.agreement:.2f}): {self.check.line()}"
        )


def generate_checked(
    pipeline: Pipeline,
    checker: Checker,
    request: GenerationRequest,
    minimum: float,
    tries: int,
    on_try: Callable[[int, int], None] | None = None,
) -> tuple[GenerationResult, list[CheckedImage]]:
    """Generate ``request``, then regenerate each image whose agreement is below ``minimum`` with its
    next seeds (module docstring) until one reaches it or ``tries`` images were made; keep the first
    that reaches it, else the best. The result holds the kept images and their seeds.
    ``on_try(image index, seed)`` is called before each retry."""
    if not 1 <= tries <= MAX_TRIES:
        raise CheckerError(f"tries must be from 1 to {MAX_TRIES}, not {tries}")
    result = pipeline.generate(request)
    images, seeds, outcomes = list(result.images), list(result.seeds), []
    for index, check in enumerate(checker.check(request.prompt, result.images)):
        first, tried, best = seeds[index], [seeds[index]], (check, seeds[index], result.images[index])
        while best[0].agreement is not None and best[0].agreement < minimum and len(tried) < tries:
            seed = retry_seed(first, len(tried))
            tried.append(seed)
            if on_try is not None:
                on_try(index, seed)
            again = pipeline.generate(replace(request, seed=seed, batch_size=1).validated())
            retry = checker.check(request.prompt, again.images)[0]
            if retry.agreement > best[0].agreement:
                best = (retry, seed, again.images[0])
        check, seeds[index], images[index] = best
        passed = check.agreement is None or check.agreement >= minimum
        outcomes.append(CheckedImage(tuple(tried), seeds[index], check, passed))
    kept = replace(result, images=np.stack(images).astype(result.images.dtype), seeds=seeds)
    return kept, outcomes


def load_checker(pack: ModelPack) -> Checker:
    """The pack's checker; CheckerError naming the pack when it has none."""
    return Checker(pack)


__all__ = [
    "MAX_TRIES",
    "RETRY_STRIDE",
    "CheckedImage",
    "Checker",
    "CheckerError",
    "FindingCheck",
    "ImageCheck",
    "generate_checked",
    "load_checker",
    "resize",
    "retry_seed",
]
