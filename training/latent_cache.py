"""The latent cache on disk (issue 20 item 2): VAE posteriors of a data set too big for memory.

A cache folder holds one part of a training run's latents (the training images, the validation
images, or one augmented copy):

- ``cache.json``: the :class:`CacheKey` (the VAE weights' SHA-256, the manifest's SHA-256, the part,
  the record count, the image size, the augmentation and its seed) and ``shard_rows``;
- ``shard-00000.npy``, ...: float32 arrays (rows, 2, C, h, w), the posterior mean and std of records
  ``k * shard_rows`` to ``(k + 1) * shard_rows - 1`` in the part's order. So the index of a record
  is arithmetic: record ``i`` is row ``i % shard_rows`` of shard ``i // shard_rows``.

Filling (:func:`fill_latent_cache`) decodes images in DataLoader worker processes and encodes them
with the frozen VAE in batches of :data:`ENCODE_BATCH` in the calling process; each shard is written
whole to a temporary file and renamed (``engine.fileio.atomic_write_bytes``), so a stopped fill
leaves only complete shards and the next fill does the missing ones alone. Ranks (or separate
processes) fill shards ``rank, rank + world_size, ...``. A folder whose key differs (another VAE,
manifest, size or augmentation) is emptied of its shards and rebuilt, never mixed.

Reading (:class:`LatentCache`) maps each shard with ``np.load(mmap_mode="r")``: the rows a batch
needs are copied out of the page cache, so the Python heap holds one batch, not the data set.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.fileio import atomic_write_bytes, atomic_write_text
from training.datasets import Augmentation, augment, load_image

SHARD_ROWS = 1024  # a multiple of ENCODE_BATCH, so batches fall as in the in-memory path
ENCODE_BATCH = 64  # images per VAE call (the in-memory path's batch)
KEY_FILE = "cache.json"


class LatentCacheError(ValueError):
    """A cache folder that cannot be used as asked; the message names the folder."""


@dataclass(frozen=True)
class CacheKey:
    """What a cache was made from; a cache is used only under an equal key."""

    vae_sha256: str
    manifest_sha256: str
    part: str  # "train", "val", "copy-1", ...
    count: int
    image_size: int
    augmentation: str = ""  # repr of the Augmentation; "" for none
    seed: int = 0


def vae_sha256(vae: nn.Module) -> str:
    """SHA-256 of a VAE's weights (names, dtypes, shapes and bytes, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}\x00{data.dtype}\x00{tuple(data.shape)}\x00".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


class PathTable(Sequence[str]):
    """Image paths as one UTF-8 blob and an offset array: about the paths' bytes plus 8 per record,
    where a list of ``str`` costs some 50 bytes of object header each and copies into every worker
    that touches it (reference counts defeat copy-on-write)."""

    def __init__(self, paths: Iterable[str]):
        blob, offsets, position = bytearray(), [0], 0
        for path in paths:
            data = os.fsencode(path)
            blob += data
            position += len(data)
            offsets.append(position)
        self.blob = np.frombuffer(bytes(blob), dtype=np.uint8)
        self.offsets = np.asarray(offsets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return os.fsdecode(self.blob[self.offsets[index] : self.offsets[index + 1]].tobytes())


class ImageFiles(torch.utils.data.Dataset):
    """Image ``i`` of ``paths`` -> (1, size, size) float16 in [-1, 1] (:func:`training.datasets.load_image`,
    rounded to float16 as :func:`training.datasets.load_images` keeps images); runs in DataLoader workers."""

    def __init__(self, paths: Sequence[str], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(load_image(self.paths[index], self.size).astype(np.float16))


def shard_count(count: int, shard_rows: int) -> int:
    return math.ceil(count / shard_rows)


def shard_file(folder: Path, shard: int) -> Path:
    return folder / f"shard-{shard:05d}.npy"


def _shard_batches(shards: list[int], count: int, shard_rows: int) -> Iterator[list[int]]:
    """Record indices in batches of at most ENCODE_BATCH, each within one shard, shard by shard."""
    for shard in shards:
        stop = min(count, (shard + 1) * shard_rows)
        for start in range(shard * shard_rows, stop, ENCODE_BATCH):
            yield list(range(start, min(stop, start + ENCODE_BATCH)))


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding is OpenCV's; the workers must not fight the encoder for cores


def prepare_latent_cache(folder: Path, key: CacheKey, shard_rows: int = SHARD_ROWS) -> None:
    """Make ``folder`` a cache for ``key``: keep its shards when its key is this one, else remove them."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {"key": asdict(key), "shard_rows": shard_rows}
    path = folder / KEY_FILE
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        current = None
    if current == wanted:
        return
    for old in folder.glob("shard-*.npy"):  # another VAE, manifest or layout: its rows would mislead
        old.unlink()
    atomic_write_text(path, json.dumps(wanted, indent=2) + "\n")


@torch.no_grad()
def fill_latent_cache(
    folder: str | os.PathLike[str],
    vae: nn.Module,
    paths: Sequence[str],
    key: CacheKey,
    device: torch.device,
    *,
    shard_rows: int = SHARD_ROWS,
    workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    augmentation: Augmentation | None = None,
    progress: bool = False,
    on_shard: Callable[[int], None] | None = None,
    prepare: bool = True,
) -> list[int]:
    """Write the shards of ``folder`` that are missing and this rank's (``shard % world_size == rank``):
    posterior mean and std of ``paths``' images under the frozen ``vae`` (float32), each image first
    augmented when ``augmentation`` is given (shard ``k`` draws from ``key.seed`` and ``k`` alone, so a
    resumed or sharded fill draws what one whole fill draws). Returns the shards written;
    ``on_shard(k)`` runs after each. ``workers``: DataLoader processes that decode (0: this one).
    ``prepare`` False: the folder's key is not checked (ranks: rank 0 prepares, then a barrier, then all fill).
    """
    from tqdm import tqdm

    folder = Path(folder)
    if key.count != len(paths):
        raise LatentCacheError(f"{folder}: the key counts {key.count} records, the paths {len(paths)}")
    if shard_rows < 1 or (shard_rows > ENCODE_BATCH and shard_rows % ENCODE_BATCH):
        raise LatentCacheError(f"{folder}: shard_rows must be up to {ENCODE_BATCH} or a multiple of it")
    if prepare:
        prepare_latent_cache(folder, key, shard_rows)
    todo = [
        shard
        for shard in range(rank, shard_count(len(paths), shard_rows), world_size)
        if not shard_file(folder, shard).exists()
    ]
    if not todo:
        return []
    loader = torch.utils.data.DataLoader(
        ImageFiles(paths, key.image_size),
        batch_sampler=list(_shard_batches(todo, len(paths), shard_rows)),
        num_workers=workers,
        worker_init_fn=_worker_init if workers else None,
    )
    written: list[int] = []
    parts: list[np.ndarray] = []
    shard, generator = -1, None
    rows = sum(min(len(paths), (k + 1) * shard_rows) - k * shard_rows for k in todo)
    with tqdm(total=rows, desc=f"caching {key.part} latents", unit="img", disable=not progress, leave=False) as bar:
        for batch_indices, images in zip(_shard_batches(todo, len(paths), shard_rows), loader, strict=True):
            if batch_indices[0] // shard_rows != shard:
                shard = batch_indices[0] // shard_rows
                if augmentation is not None:
                    generator = torch.Generator(device=device).manual_seed(key.seed * 1_000_003 + shard)
            batch = images.to(device).float()
            if augmentation is not None:
                batch = augment(batch, generator, augmentation)
            posterior = vae.encode(batch).latent_dist
            parts.append(torch.stack([posterior.mean.float(), posterior.std.float()], dim=1).cpu().numpy())
            bar.update(len(batch_indices))
            if batch_indices[-1] + 1 == min(len(paths), (shard + 1) * shard_rows):  # the shard is whole
                buffer = io.BytesIO()
                np.save(buffer, np.concatenate(parts), allow_pickle=False)
                atomic_write_bytes(shard_file(folder, shard), buffer.getvalue())
                parts.clear()
                written.append(shard)
                if on_shard is not None:
                    on_shard(shard)
    return written


class LatentCache:
    """A complete cache folder, read through memory maps: :meth:`take` returns a batch's rows."""

    def __init__(self, folder: str | os.PathLike[str], key: CacheKey):
        self.folder = Path(folder)
        try:
            stored = json.loads((self.folder / KEY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LatentCacheError(f"{self.folder}: not a latent cache ({exc})") from None
        if stored.get("key") != asdict(key):
            raise LatentCacheError(
                f"{self.folder}: made for another VAE, manifest or setting; fill it again "
                f"(stored {stored.get('key')}, wanted {asdict(key)})"
            )
        self.key, self.shard_rows = key, int(stored["shard_rows"])
        missing = [k for k in range(shard_count(key.count, self.shard_rows)) if not shard_file(self.folder, k).exists()]
        if missing:
            raise LatentCacheError(f"{self.folder}: {len(missing)} shard(s) not filled yet, first shard {missing[0]}")
        self.shards = [
            np.load(shard_file(self.folder, k), mmap_mode="r") for k in range(shard_count(key.count, self.shard_rows))
        ]

    def __len__(self) -> int:
        return self.key.count

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.shards[0].shape[2:]) if self.shards else ()

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """(B, 2, C, h, w) float32: mean and std of records ``indices`` (B,), in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), 2, *self.latent_shape), dtype=np.float32)
        shard, row = np.divmod(indices, self.shard_rows)
        for k in np.unique(shard):
            where = shard == k
            out[where] = self.shards[k][row[where]]
        return out

    def take(self, indices: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and std (B, C, h, w) float32 on ``device`` of records ``indices`` (B,)."""
        both = torch.from_numpy(self.rows(indices.cpu().numpy())).to(device)
        return both[:, 0].contiguous(), both[:, 1].contiguous()  # strided views change float sums


class MemoryLatents:
    """Posterior mean and std (N, C, h, w) held as tensors (the cache without ``--latent-cache``)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return self.mean.shape[0]

    def take(self, indices: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean[indices], self.std[indices]


class StackedLatents:
    """Several caches as one index space (the training images, then each augmented copy)."""

    def __init__(self, parts: Sequence[LatentCache]):
        self.parts = list(parts)
        self.starts = np.cumsum([0, *(len(part) for part in self.parts)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def take(self, indices: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        wanted = indices.cpu().numpy().astype(np.int64)
        part = np.searchsorted(self.starts, wanted, side="right") - 1
        out = np.empty((len(wanted), 2, *self.parts[0].latent_shape), dtype=np.float32)
        for k in np.unique(part):
            where = part == k
            out[where] = self.parts[k].rows(wanted[where] - self.starts[k])
        both = torch.from_numpy(out).to(device)
        return both[:, 0].contiguous(), both[:, 1].contiguous()  # strided views change float sums


def cached_latents(
    folder: str | os.PathLike[str],
    vae: nn.Module,
    paths: Sequence[str],
    key: CacheKey,
    device: torch.device,
    *,
    workers: int = 0,
    augmentation: Augmentation | None = None,
    progress: bool = False,
) -> LatentCache:
    """The cache in ``folder`` for ``key``, filled first where shards are missing; under
    torch.distributed every rank fills its own shards (rank 0 checks the key first) and all wait
    for the whole cache before reading it."""
    import torch.distributed as dist

    ranked = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if ranked else (0, 1)
    if rank == 0:
        prepare_latent_cache(Path(folder), key)
    if ranked:
        dist.barrier()
    fill_latent_cache(folder, vae, paths, key, device, workers=workers, rank=rank, world_size=world,
                      augmentation=augmentation, progress=progress, prepare=False)  # fmt: skip
    if ranked:
        dist.barrier()
    return LatentCache(folder, key)


__all__ = [
    "ENCODE_BATCH",
    "SHARD_ROWS",
    "CacheKey",
    "ImageFiles",
    "LatentCache",
    "LatentCacheError",
    "MemoryLatents",
    "PathTable",
    "StackedLatents",
    "cached_latents",
    "fill_latent_cache",
    "prepare_latent_cache",
    "shard_count",
    "vae_sha256",
]
