"""Training data: a manifest -> grayscale images (N, 1, H, W) in [-1, 1] and captions.

The manifest is the one format every importer writes, read by the one reader every part of the
project uses (:func:`engine.manifest.read_manifest`), so a line the engine or the dataset
explorer rejects is rejected here too, with the same message. Training reads ``image`` (made
absolute here), ``text``, ``split`` and ``source`` of each record.

Images are read with OpenCV (8- or 16-bit PNG, JPEG, ...; colour is converted to gray), mapped to
[0, 1] by their bit depth, centre-cropped to a square (the shorter side) and resized to the model's
``image_size``, then mapped to [-1, 1]. :func:`load_images` decodes a whole split into one float16
tensor (about 100 KB per 224x224 image), so training draws batches by index with no per-sample
Python work.

:func:`augment` applies light, batched, seeded augmentation on the device: a small shift, zoom and
rotation, and intensity changes (gamma, contrast, brightness). Never a horizontal flip: the heart
is on the patient's left, and a flipped radiograph is a different (rare) anatomy.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engine import manifest as manifest_format
from engine.manifest import SPLITS, ManifestError, ManifestRecord, resolve_image

if TYPE_CHECKING:
    from training.models.text import TextConditioner


class DatasetError(ValueError):
    """A manifest or image that cannot be used; the message names the file (and line)."""


@dataclass(frozen=True)
class Manifest:
    """The records of one manifest file, in file order (``image`` made absolute), and the file's SHA-256."""

    path: Path
    records: tuple[ManifestRecord, ...]
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name

    def split(self, name: str) -> list[ManifestRecord]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}: choose one of {', '.join(SPLITS)}")
        return [r for r in self.records if r.split == name]

    def counts(self) -> dict[str, int]:
        return {name: sum(r.split == name for r in self.records) for name in SPLITS}


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a manifest with :func:`engine.manifest.read_manifest`; DatasetError names the file
    (and the line of the first bad record, in the engine's words).

    Blank lines are skipped. A manifest with no records is an error. Image files are not opened
    here (see :func:`load_images`).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"{path}: no such manifest file")
    try:
        data = path.read_bytes()
        data.decode("utf-8")  # the engine's reader would raise UnicodeDecodeError, naming no file
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read as UTF-8 text: {exc}") from None
    try:
        records = manifest_format.read_manifest(path)
    except (ManifestError, OSError, UnicodeDecodeError) as exc:
        raise DatasetError(str(exc)) from None
    if not records:
        raise DatasetError(f"{path}: no records (an empty manifest)")
    root = path.resolve()
    absolute = tuple(replace(r, image=str(resolve_image(r, root))) for r in records)
    return Manifest(path=path, records=absolute, sha256=hashlib.sha256(data).hexdigest())


VAL_LIMIT = 2048  # at most this many validation images (evenly spaced) in a training run


def evenly_spaced(records: list[ManifestRecord], limit: int) -> list[ManifestRecord]:
    """At most ``limit`` records, evenly spaced through ``records`` (all of them when fewer)."""
    if len(records) <= limit:
        return list(records)
    return [records[i] for i in np.linspace(0, len(records) - 1, limit).round().astype(int)]


# --------------------------------------------------------------------------- images


def load_image(path: str | os.PathLike[str], size: int) -> np.ndarray:
    """One image file -> (1, size, size) float32 in [-1, 1].

    8-bit images are divided by 255, 16-bit by 65535 (no windowing: the file's full range), then
    centre-cropped to a square and resized (area averaging when shrinking, cubic when enlarging).
    """
    path = Path(path)
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        reason = "no such file" if not path.exists() else "not an image OpenCV can read"
        raise DatasetError(f"{path}: {reason}")
    # 1. gray, [0, 1]
    if data.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if data.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        data = cv2.cvtColor(data, code)
    if data.dtype == np.uint8:
        image = data.astype(np.float32) / 255.0
    elif data.dtype == np.uint16:
        image = data.astype(np.float32) / 65535.0
    else:
        raise DatasetError(f"{path}: pixel type {data.dtype} is not supported (8- or 16-bit gray or colour)")
    # 2. centre square, resize
    height, width = image.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image = image[top : top + side, left : left + side]
    if side != size:
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
        image = np.clip(cv2.resize(image, (size, size), interpolation=interpolation), 0.0, 1.0)
    return (image * 2.0 - 1.0)[None]


def load_images(
    records: Sequence[ManifestRecord], size: int, *, workers: int | None = None, progress: bool = False
) -> torch.Tensor:
    """Decode ``records``' images into one (N, 1, size, size) float16 CPU tensor in [-1, 1].

    Decoding runs on ``workers`` threads (OpenCV releases the GIL); the order is the records' order.
    """
    out = np.empty((len(records), 1, size, size), dtype=np.float16)
    workers = workers or min(8, os.cpu_count() or 1)

    def load(i: int) -> None:
        out[i] = load_image(records[i].image, size)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = pool.map(load, range(len(records)))
        if progress:
            from tqdm import tqdm

            jobs = tqdm(jobs, total=len(records), desc="loading images", unit="img", leave=False)
        for _ in jobs:
            pass
    return torch.from_numpy(out)


# --------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augmentation:
    """Light augmentation ranges; each batch item draws its own values uniformly.

    Geometry: shift by up to ``max_shift`` of the image size, zoom by up to ``max_zoom`` (x(1 +/- z)),
    rotate by up to ``max_rotation_deg``; borders are filled by reflection. Intensity, on [0, 1]:
    ``u ** gamma`` with ``log(gamma)`` in +/- ``log(1 + max_gamma)``, then contrast x(1 +/- c) about
    0.5 and brightness +/- b, clipped to [0, 1].
    """

    max_shift: float = 0.03
    max_zoom: float = 0.05
    max_rotation_deg: float = 3.0
    max_gamma: float = 0.15
    max_contrast: float = 0.1
    max_brightness: float = 0.05

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"augmentation {name} must be a number >= 0, got {value!r}")
        if self.max_zoom >= 1:
            raise ValueError("augmentation max_zoom must be below 1")

    @property
    def geometric(self) -> bool:
        return any((self.max_shift, self.max_zoom, self.max_rotation_deg))

    @property
    def photometric(self) -> bool:
        return any((self.max_gamma, self.max_contrast, self.max_brightness))


NO_AUGMENTATION = Augmentation(0, 0, 0, 0, 0, 0)


def _uniform(n: int, limit: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n,) float32 uniform in [-limit, limit]."""
    return (torch.rand(n, generator=generator, device=device) * 2 - 1) * limit


def augment(images: torch.Tensor, generator: torch.Generator, options: Augmentation) -> torch.Tensor:
    """Augment a batch (B, 1, H, W) float in [-1, 1] on its device; returns a new tensor, same shape.

    Draws from ``generator`` only (same generator state, same result); never flips.
    """
    batch, device = images.shape[0], images.device
    out = images.float()
    # 1. geometry: the affine grid maps output coordinates to input coordinates in [-1, 1]
    if options.geometric:
        zoom = 1 + _uniform(batch, options.max_zoom, generator, device)
        angle = _uniform(batch, math.radians(options.max_rotation_deg), generator, device)
        shift = _uniform(2 * batch, 2 * options.max_shift, generator, device).view(batch, 2)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # scale > 0: never a flip
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1
        )
        grid = F.affine_grid(theta, list(out.shape), align_corners=False)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # 2. intensity on [0, 1]
    if options.photometric:
        view = (batch, 1, 1, 1)
        gamma = torch.exp(_uniform(batch, math.log1p(options.max_gamma), generator, device)).view(view)
        contrast = (1 + _uniform(batch, options.max_contrast, generator, device)).view(view)
        brightness = _uniform(batch, options.max_brightness, generator, device).view(view)
        unit = ((out + 1) * 0.5).clamp(0, 1) ** gamma
        unit = ((unit - 0.5) * contrast + 0.5 + brightness).clamp(0, 1)
        out = unit * 2 - 1
    return out.to(images.dtype)


def random_crop(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A ``size`` x ``size`` window of each image of a batch (B, C, H, W), placed uniformly at
    random (drawn from ``generator`` only); ``size`` must not exceed H or W."""
    height, width = images.shape[-2:]
    if not 0 < size <= min(height, width):
        raise ValueError(f"crop size {size} does not fit images of {height}x{width}")
    if size == height == width:
        return images
    batch = images.shape[0]
    top = torch.randint(0, height - size + 1, (batch,), generator=generator, device=generator.device).tolist()
    left = torch.randint(0, width - size + 1, (batch,), generator=generator, device=generator.device).tolist()
    return torch.stack([img[..., y : y + size, x : x + size] for img, y, x in zip(images, top, left, strict=True)])


# --------------------------------------------------------------------------- caption augmentation


CAPTION_POOL = 8
"""Augmented captions per training image in one run (see :class:`AugmentedCaptions`)."""


class AugmentedCaptions:
    """Fresh captions for training samples (issue 16 item 3): with ``probability`` a sample's caption
    is one of its record's ``pool`` augmented captions (:func:`training.data.captions.augmented_caption`),
    drawn anew each time the sample is drawn (so once per epoch), else its own (always for a record
    that cannot be phrased).

    The text cache keeps the frozen encoder's states of the manifest captions; :meth:`grow` adds
    ``batch_size`` scratch rows to it, and :meth:`draw` writes a micro-batch's augmented captions
    into them and points those samples' text indices there. Which samples and which of the pool is
    drawn from ``augment_rng(seed, draw, index)``, ``draw`` one number taken per micro-batch from
    the run's seeded step generator; the pool's captions from (seed, index, slot) alone. So the same
    seed gives the same captions, and a resumed run (which restores that generator) draws what the
    uninterrupted run drew.

    Why a pool: the encoder costs about what the UNet step costs on a CPU (MiniLM, ~100 captions:
    several seconds on two cores). Each pool caption is encoded the first time it is drawn and kept
    (its own tokens only, float32 on the CPU), so the encoding cost stops after the first epochs;
    the memo holds at most ``pool`` captions per training image.
    """

    def __init__(
        self,
        records: Sequence[ManifestRecord],
        probability: float,
        seed: int,
        text: TextConditioner,
        device: torch.device,
        pool: int = CAPTION_POOL,
    ):
        from training.data.caption_augment import can_augment

        self.records, self.probability, self.seed, self.pool = list(records), float(probability), seed, pool
        self.phrased = [can_augment(r) for r in self.records]
        self.tokenizer, self.encoder = text.tokenizer, text.encoder.to(device).eval()
        self.memo: dict[tuple[int, int], torch.Tensor] = {}  # (index, slot) -> states (L, E), L its own tokens
        self.first_row = 0

    def caption(self, index: int, slot: int) -> str:
        """Augmented caption ``slot`` of record ``index``: a function of the seed, index and slot."""
        from training.data.caption_augment import augmented_caption
        from training.data.captions import caption_rng

        return augmented_caption(self.records[index], caption_rng(self.seed, f"pool\x00{index}\x00{slot}"))

    def grow(self, hidden: torch.Tensor, mask: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The cache (U, T, E), (U, T) with ``batch_size`` scratch rows after its own."""
        self.first_row = hidden.shape[0]
        return torch.cat([hidden, hidden.new_zeros((batch_size, *hidden.shape[1:]))]), torch.cat(
            [mask, mask.new_zeros((batch_size, mask.shape[1]))]
        )

    @torch.no_grad()
    def _encode(self, keys: list[tuple[int, int]], dtype: torch.dtype, device: torch.device) -> None:
        """Encode the pool captions ``keys`` into the memo (float32 encoder, as the cache was made)."""
        batch = self.tokenizer.encode_batch([self.caption(index, slot) for index, slot in keys])
        lengths = batch.attention_mask.sum(axis=1)
        longest = max(1, int(lengths.max()))
        ids = torch.from_numpy(batch.input_ids[:, :longest]).to(device)
        attention = torch.from_numpy(batch.attention_mask[:, :longest]).to(device)
        with torch.autocast(device.type, enabled=False):
            states = self.encoder(input_ids=ids, attention_mask=attention).last_hidden_state.to(dtype)
        for row, key in enumerate(keys):
            self.memo[key] = states[row, : int(lengths[row])].clone()

    def draw(
        self, indices: torch.Tensor, text: torch.Tensor, drop: torch.Tensor, generator: torch.Generator,
        hidden: torch.Tensor, mask: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """``text`` (B,) cache rows with the augmented samples' rows replaced (the dropped ones keep "")."""
        from training.data.caption_augment import augment_rng

        draw = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
        chosen: list[tuple[int, tuple[int, int]]] = []  # (position in the batch, (index, slot))
        for position, (index, dropped) in enumerate(zip(indices.tolist(), drop.tolist(), strict=True)):
            if dropped or not self.phrased[index]:
                continue
            rng = augment_rng(self.seed, draw, index)
            if rng.random() < self.probability:
                chosen.append((position, (index, rng.randrange(self.pool))))
        if not chosen:
            return text
        new = sorted({key for _, key in chosen if key not in self.memo})
        if new:
            self._encode(new, hidden.dtype, hidden.device)
        rows = torch.arange(self.first_row, self.first_row + len(chosen), device=hidden.device)
        for row, (_, key) in zip(rows.tolist(), chosen, strict=True):
            states = self.memo[key]
            hidden[row] = 0
            hidden[row, : states.shape[0]] = states
            mask[row] = False
            mask[row, : states.shape[0]] = True
        text = text.clone()
        text[torch.tensor([position for position, _ in chosen], device=text.device)] = rows.to(text.device)
        return text


__all__ = [
    "CAPTION_POOL",
    "NO_AUGMENTATION",
    "SPLITS",
    "Augmentation",
    "AugmentedCaptions",
    "DatasetError",
    "Manifest",
    "augment",
    "evenly_spaced",
    "load_image",
    "load_images",
    "random_crop",
    "read_manifest",
]
