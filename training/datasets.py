"""Training data: a manifest -> grayscale images (N, 1, H, W) in [-1, 1] and captions.

The manifest is the one format every importer writes, read by the one reader every part of the
project uses (:func:`engine.manifest.parse_record`, line by line), so a line the engine or the dataset
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

import contextlib
import hashlib
import math
import os
import tempfile
from array import array
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, overload

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engine.manifest import SPLITS, ManifestError, ManifestRecord, parse_record, resolve_image

if TYPE_CHECKING:
    from training.models.text import TextConditioner


class DatasetError(ValueError):
    """A manifest or image that cannot be used; the message names the file (and line)."""


class ManifestRecords(Sequence[ManifestRecord]):
    """Records of one manifest file, read from the file when asked (issue 20 item 2): what is held
    per record is its line's byte offset (and, in :class:`Manifest`, a split code), about 9 bytes,
    where a :class:`ManifestRecord` with its caption, findings dict and strings costs a kilobyte or
    more. ``rows`` are line numbers among the file's records (a split, a subset, repeats for the
    augmented copies); an item is parsed again each time it is read (``image`` made absolute), and
    iterating reads the file once, in ``rows`` order, through one open file.

    The file must stay as it was read: a change of its size or modification time is a DatasetError.
    """

    def __init__(self, source: _ManifestFile, rows: np.ndarray):
        self.source, self.rows = source, np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> ManifestRecord: ...

    @overload
    def __getitem__(self, index: slice) -> ManifestRecords: ...

    def __getitem__(self, index: int | slice) -> ManifestRecord | ManifestRecords:
        if isinstance(index, slice):
            return ManifestRecords(self.source, self.rows[index])
        with self.source.open() as stream:
            return self.source.read(stream, int(self.rows[index]))

    def __iter__(self) -> Iterator[ManifestRecord]:
        with self.source.open() as stream:
            for row in self.rows:
                yield self.source.read(stream, int(row))

    def take(self, positions: Sequence[int] | np.ndarray) -> ManifestRecords:
        """The records at ``positions`` of this sequence (a subset, or repeats), still unread."""
        return ManifestRecords(self.source, self.rows[np.asarray(positions, dtype=np.int64)])


def pick_records(records: Sequence[ManifestRecord], positions: np.ndarray) -> Sequence[ManifestRecord]:
    """The records at ``positions`` of ``records``: still unread for :class:`ManifestRecords`, else a list."""
    if isinstance(records, ManifestRecords):
        return records.take(positions)
    return [records[int(i)] for i in positions]


def join_records(parts: Sequence[Sequence[ManifestRecord]]) -> Sequence[ManifestRecord]:
    """``parts`` one after the other: still unread when they are rows of one manifest file, else a list."""
    if parts and all(isinstance(p, ManifestRecords) and p.source is parts[0].source for p in parts):
        return ManifestRecords(parts[0].source, np.concatenate([p.rows for p in parts]))  # type: ignore[union-attr]
    return [record for part in parts for record in part]


class _ManifestFile:
    """A manifest file's records by line: byte offsets and the file's size and mtime when read."""

    def __init__(self, path: Path, offsets: np.ndarray, signature: tuple[int, int]):
        self.path, self.offsets, self.signature = path, offsets, signature
        self.root = path.resolve()
        self.folder = str(self.root.parent)

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        try:
            stream = open(self.path, "rb")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise DatasetError(f"{self.path}: cannot be read: {exc}") from None
        with stream:
            status = os.fstat(stream.fileno())
            if (status.st_size, status.st_mtime_ns) != self.signature:
                raise DatasetError(f"{self.path}: changed since training read it; restart (or --resume) the run")
            yield stream

    def read(self, stream: BinaryIO, row: int) -> ManifestRecord:
        offset = int(self.offsets[row])
        if stream.tell() != offset:  # rows in file order read on without a seek (which drops the buffer)
            stream.seek(offset)
        line = stream.readline().split(b"\r", 1)[0]  # a line ends at \n, \r\n or \r, as when it was read
        try:
            record = parse_record(line.decode("utf-8"))
        except (ManifestError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{self.path}: record {row + 1} no longer reads: {exc}") from None
        return replace(record, image=self.image_path(record))

    def image_path(self, record: ManifestRecord) -> str:
        """``str(resolve_image(record, root))``; a plain relative path (no ``.`` part, no doubled or
        trailing slash, which pathlib would normalise) is joined as a string, several times faster."""
        image = record.image
        if image.startswith(("/", "./")) or "//" in image or "/./" in image or image.endswith(("/", "/.")):
            return str(resolve_image(record, self.root))
        return f"{self.folder}/{image}" if image != "." else self.folder


def _lines(stream: BinaryIO) -> Iterator[tuple[int, bytes, bytes]]:
    """(offset, line, raw bytes) of a binary file split as Python's universal newlines split text
    (at \n, \r\n and \r), so that line numbers are those of :func:`engine.manifest.iter_manifest`;
    the raw bytes of the pieces make up the file (for its hash)."""
    offset = 0
    for raw in stream:
        body = raw[:-2] if raw.endswith(b"\r\n") else raw
        pieces = body.split(b"\r")
        position = offset
        for piece in pieces[:-1]:
            yield position, piece, b""
            position += len(piece) + 1
        yield position, pieces[-1], raw
        offset += len(raw)


@dataclass(frozen=True)
class Manifest:
    """The records of one manifest file, in file order (``image`` made absolute), and the file's SHA-256.

    ``records`` and :meth:`split` are :class:`ManifestRecords`: read from the file when used, so a
    manifest of 100k+ records holds its line offsets and split codes, not the records.
    """

    path: Path
    records: Sequence[ManifestRecord]
    sha256: str
    splits: np.ndarray | None = None  # (N,) uint8 index into SPLITS per record; None: read from the records

    @property
    def name(self) -> str:
        return self.path.name

    def _codes(self) -> np.ndarray:
        if self.splits is not None:
            return self.splits
        return np.fromiter((SPLITS.index(r.split) for r in self.records), dtype=np.uint8, count=len(self.records))

    def split(self, name: str) -> Sequence[ManifestRecord]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}: choose one of {', '.join(SPLITS)}")
        positions = np.flatnonzero(self._codes() == SPLITS.index(name))
        if isinstance(self.records, ManifestRecords):
            return self.records.take(positions)
        return [self.records[i] for i in positions]

    def counts(self) -> dict[str, int]:
        codes = np.bincount(self._codes(), minlength=len(SPLITS))
        return {name: int(codes[i]) for i, name in enumerate(SPLITS)}


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a manifest, one line at a time, with :func:`engine.manifest.parse_record` (the reader
    every part of the project uses); DatasetError names the file (and the line of the first bad
    record, in the engine's words).

    Blank lines are skipped. A manifest with no records is an error. What is kept per record is
    its line's offset and its split (:class:`ManifestRecords`); image files are not opened here
    (see :func:`load_images`).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"{path}: no such manifest file")
    digest, offsets, splits = hashlib.sha256(), array("q"), bytearray()
    try:
        with open(path, "rb") as stream:
            signature = os.fstat(stream.fileno())
            for number, (offset, piece, raw) in enumerate(_lines(stream), start=1):
                digest.update(raw)
                try:
                    line = piece.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DatasetError(f"{path}: cannot be read as UTF-8 text: line {number}: {exc}") from None
                if not line.strip():
                    continue
                try:
                    record = parse_record(line)
                except ManifestError as exc:
                    raise DatasetError(f"{path}, line {number}: {exc}") from None
                offsets.append(offset)
                splits.append(SPLITS.index(record.split))
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read: {exc}") from None
    if not offsets:
        raise DatasetError(f"{path}: no records (an empty manifest)")
    source = _ManifestFile(path, np.frombuffer(offsets, dtype=np.int64), (signature.st_size, signature.st_mtime_ns))
    records = ManifestRecords(source, np.arange(len(offsets), dtype=np.int64))
    codes = np.frombuffer(bytes(splits), dtype=np.uint8)
    return Manifest(path=path, records=records, sha256=digest.hexdigest(), splits=codes)


VAL_LIMIT = 2048  # at most this many validation images (evenly spaced) in a training run


def evenly_spaced(records: Sequence[ManifestRecord], limit: int) -> Sequence[ManifestRecord]:
    """At most ``limit`` records, evenly spaced through ``records`` (all of them when fewer);
    still unread when ``records`` are :class:`ManifestRecords`."""
    if len(records) <= limit:
        return records if isinstance(records, ManifestRecords) else list(records)
    positions = np.linspace(0, len(records) - 1, limit).round().astype(int)
    if isinstance(records, ManifestRecords):
        return records.take(positions)
    return [records[i] for i in positions]


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


class CaptionStates:
    """The pool captions' encoder states, (index, slot) -> (L, E) tensor, in an unnamed temporary file
    in ``folder`` (``tempfile.TemporaryFile``: O_TMPFILE on Linux, gone when the process ends, however
    it ends) instead of the heap: over 100k+ records the memo of :class:`AugmentedCaptions` reaches
    gigabytes (one MiniLM caption is some 20 KB of float32 states). What the heap keeps is an offset
    and a length per (index, slot), 12 bytes; a state reads back byte for byte as it was written.
    The file grows by each caption's bytes (at most ``pool`` per record)."""

    def __init__(self, folder: Path, count: int, pool: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (kept open for the run)
        self.pool, self.end = pool, 0
        self.offsets = np.full(count * pool, -1, dtype=np.int64)
        self.lengths = np.zeros(count * pool, dtype=np.int32)
        self.layout: tuple[int, torch.dtype, torch.device] | None = None  # (E, dtype, device) of every state

    def _slot(self, key: tuple[int, int]) -> int:
        index, slot = key
        return index * self.pool + slot

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and bool(self.offsets[self._slot(key)] >= 0)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return int((self.offsets >= 0).sum())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for where in np.flatnonzero(self.offsets >= 0).tolist():
            yield divmod(where, self.pool)

    def __setitem__(self, key: tuple[int, int], states: torch.Tensor) -> None:
        data = states.detach().to("cpu").contiguous()
        self.layout = (data.shape[1], data.dtype, states.device)
        raw = data.view(torch.uint8).numpy().tobytes()
        os.pwrite(self.file.fileno(), raw, self.end)
        where = self._slot(key)
        self.offsets[where], self.lengths[where] = self.end, data.shape[0]
        self.end += len(raw)

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        where = self._slot(key)
        if self.offsets[where] < 0 or self.layout is None:
            raise KeyError(key)
        width, dtype, device = self.layout
        length = int(self.lengths[where])
        size = length * width * torch.empty((), dtype=dtype).element_size()
        raw = bytearray(os.pread(self.file.fileno(), size, int(self.offsets[where])))
        return torch.frombuffer(raw, dtype=dtype).view(length, width).to(device)


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
    the memo holds at most ``pool`` captions per training image: in memory, or with ``memo_folder``
    (``train diffusion --latent-cache``) in a :class:`CaptionStates` file there, off the heap.
    ``records`` given as :class:`ManifestRecords` are read from the manifest when a caption is made.
    """

    def __init__(
        self,
        records: Sequence[ManifestRecord],
        probability: float,
        seed: int,
        text: TextConditioner,
        device: torch.device,
        pool: int = CAPTION_POOL,
        memo_folder: Path | None = None,
    ):
        from training.data.caption_augment import can_augment

        # unread records (ManifestRecords) stay unread: a record is read again when its pool caption is made
        self.records = records if isinstance(records, ManifestRecords) else list(records)
        self.probability, self.seed, self.pool = float(probability), seed, pool
        self.phrased = np.fromiter((can_augment(r) for r in self.records), dtype=bool, count=len(self.records))
        self.tokenizer, self.encoder = text.tokenizer, text.encoder.to(device).eval()
        # (index, slot) -> states (L, E), L its own tokens: in memory, or (memo_folder) in a file there
        self.memo: dict[tuple[int, int], torch.Tensor] | CaptionStates = (
            {} if memo_folder is None else CaptionStates(memo_folder, len(self.records), pool)
        )
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
    "CaptionStates",
    "DatasetError",
    "Manifest",
    "ManifestRecords",
    "augment",
    "evenly_spaced",
    "join_records",
    "load_image",
    "load_images",
    "pick_records",
    "random_crop",
    "read_manifest",
]
