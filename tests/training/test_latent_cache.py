"""The sharded, memory-mapped latent cache (issue 20 item 2) on the tiny seeded VAE."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from training.checkpoint import load_checkpoint
from training.datasets import NO_AUGMENTATION, Augmentation
from training.diffusion_setup import encode_latents
from training.latent_cache import (
    CacheKey,
    LatentCache,
    LatentCacheError,
    PathTable,
    fill_latent_cache,
    prepare_latent_cache,
    vae_sha256,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """10 small images, 8-bit PNG and 16-bit PNG alternately, of different sizes."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(10):
        data = rng.integers(0, 255, (36 + i, 40), dtype=np.uint8)
        if i % 2:
            data = data.astype(np.uint16) * 257
        path = folder / f"chest{i}.png"
        assert cv2.imwrite(str(path), data)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def vae(tiny_checkpoint: Path) -> torch.nn.Module:
    return load_checkpoint(tiny_checkpoint).vae.eval().requires_grad_(False)


def _key(vae: torch.nn.Module, count: int, **changes) -> CacheKey:
    values = {"vae_sha256": vae_sha256(vae), "manifest_sha256": "m" * 64, "part": "train", "count": count,
              "image_size": 32} | changes  # fmt: skip
    return CacheKey(**values)


class _Record:
    def __init__(self, image: str):
        self.image = image


def _memory(vae: torch.nn.Module, paths: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    return encode_latents(vae, [_Record(p) for p in paths], 32, CPU, workers=1)  # type: ignore[list-item]


def test_the_cache_holds_what_the_in_memory_path_encodes_and_reads_through_memory_maps(
    vae: torch.nn.Module, images: list[str], tmp_path: Path
) -> None:
    mean, std = _memory(vae, images)
    written = fill_latent_cache(tmp_path / "c", vae, PathTable(images), _key(vae, 10), CPU)
    assert written == [0]
    cache = LatentCache(tmp_path / "c", _key(vae, 10))
    assert all(isinstance(shard, np.memmap) for shard in cache.shards)
    order = torch.tensor([7, 0, 9, 3])
    got_mean, got_std = cache.take(order, CPU)
    assert torch.equal(got_mean, mean[order]) and torch.equal(got_std, std[order])  # bit for bit


def test_small_shards_and_decoding_in_worker_processes_give_the_same_rows(
    vae: torch.nn.Module, images: list[str], tmp_path: Path
) -> None:
    mean, std = _memory(vae, images)
    written = fill_latent_cache(tmp_path / "c", vae, PathTable(images), _key(vae, 10), CPU, shard_rows=4, workers=2)
    assert written == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "cache.json", "shard-00000.npy", "shard-00001.npy", "shard-00002.npy",
    ]  # fmt: skip
    got_mean, got_std = LatentCache(tmp_path / "c", _key(vae, 10)).take(torch.arange(10), CPU)
    torch.testing.assert_close(got_mean, mean, rtol=1e-5, atol=1e-6)  # other batch boundaries
    torch.testing.assert_close(got_std, std, rtol=1e-5, atol=1e-6)


def test_a_stopped_fill_resumes_with_the_shards_not_yet_written(
    vae: torch.nn.Module, images: list[str], tmp_path: Path
) -> None:
    key, paths = _key(vae, 10), PathTable(images)
    whole = tmp_path / "whole"
    fill_latent_cache(whole, vae, paths, key, CPU, shard_rows=4)

    def stop(shard: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fill_latent_cache(tmp_path / "c", vae, paths, key, CPU, shard_rows=4, on_shard=stop)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["cache.json", "shard-00000.npy"]  # no part-shard
    with pytest.raises(LatentCacheError, match="2 shard\\(s\\) not filled yet, first shard 1"):
        LatentCache(tmp_path / "c", key)
    before = (tmp_path / "c" / "shard-00000.npy").stat().st_mtime_ns
    assert fill_latent_cache(tmp_path / "c", vae, paths, key, CPU, shard_rows=4) == [1, 2]
    assert (tmp_path / "c" / "shard-00000.npy").stat().st_mtime_ns == before  # kept, not redone
    assert fill_latent_cache(tmp_path / "c", vae, paths, key, CPU, shard_rows=4) == []
    _same(LatentCache(whole, key), LatentCache(tmp_path / "c", key))


def test_ranks_fill_their_own_shards_and_augmentation_draws_per_shard(
    vae: torch.nn.Module, images: list[str], tmp_path: Path
) -> None:
    strong = Augmentation(max_shift=0.1, max_rotation_deg=10.0, max_gamma=0.3)
    key, paths = _key(vae, 10, part="copy-1", augmentation=repr(strong), seed=3), PathTable(images)
    fill_latent_cache(tmp_path / "whole", vae, paths, key, CPU, shard_rows=4, augmentation=strong)
    prepare_latent_cache(tmp_path / "c", key, 4)
    assert fill_latent_cache(tmp_path / "c", vae, paths, key, CPU, shard_rows=4, rank=1, world_size=2,
                             augmentation=strong, prepare=False) == [1]  # fmt: skip
    assert fill_latent_cache(tmp_path / "c", vae, paths, key, CPU, shard_rows=4, rank=0, world_size=2,
                             augmentation=strong, prepare=False) == [0, 2]  # fmt: skip
    _same(LatentCache(tmp_path / "whole", key), LatentCache(tmp_path / "c", key))
    plain, _ = _memory(vae, images)
    assert not torch.allclose(LatentCache(tmp_path / "c", key).take(torch.arange(10), CPU)[0], plain)  # augmented
    assert repr(NO_AUGMENTATION) != key.augmentation


def _same(one: LatentCache, other: LatentCache) -> None:
    rows = torch.arange(len(one))
    for a, b in zip(one.take(rows, CPU), other.take(rows, CPU), strict=True):
        assert torch.equal(a, b)


def test_a_cache_of_another_vae_or_manifest_is_refused_and_refilled(
    vae: torch.nn.Module, images: list[str], tmp_path: Path
) -> None:
    paths = PathTable(images)
    fill_latent_cache(tmp_path / "c", vae, paths, _key(vae, 10), CPU, shard_rows=4)
    other = _key(vae, 10, manifest_sha256="n" * 64)
    with pytest.raises(LatentCacheError, match="made for another VAE, manifest or setting"):
        LatentCache(tmp_path / "c", other)
    changed = load_checkpoint_vae_changed(vae)
    with pytest.raises(LatentCacheError, match="made for another VAE"):
        LatentCache(tmp_path / "c", _key(changed, 10))
    assert fill_latent_cache(tmp_path / "c", changed, paths, _key(changed, 10), CPU, shard_rows=4) == [0, 1, 2]
    mean, _ = _memory(changed, images)
    assert torch.equal(LatentCache(tmp_path / "c", _key(changed, 10)).take(torch.arange(10), CPU)[0], mean)


def load_checkpoint_vae_changed(vae: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``vae`` with one weight changed: another checkpoint, another hash."""
    import copy

    changed = copy.deepcopy(vae)
    with torch.no_grad():
        next(changed.parameters()).add_(0.01)
    assert vae_sha256(changed) != vae_sha256(vae)
    return changed


def test_the_path_table_gives_back_each_path() -> None:
    paths = ["a.png", "/data/ü/b.png", ""]
    table = PathTable(paths)
    assert list(table) == paths and table[-1] == "" and len(table) == 3
    with pytest.raises(IndexError):
        table[3]


def _manifest(folder: Path, images: list[str]) -> Path:
    import json

    captions = ("Normal chest radiograph.", "Cardiomegaly.", "Small left pleural effusion.")
    lines = [
        json.dumps(
            {
                "image": path,
                "text": captions[i % 3],
                "findings": {},
                "patient_id": f"P{i}",
                "view": "PA",
                "split": "val" if i % 4 == 0 else "train",
                "source": "csv",
            }
        )
        for i, path in enumerate(images)
    ]
    (folder / "m.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "m.jsonl"


def test_diffusion_training_on_the_disk_cache_has_the_losses_of_the_in_memory_cache(
    tiny_checkpoint: Path, images: list[str], tmp_path: Path
) -> None:
    from training.datasets import read_manifest
    from training.train_diffusion import DiffusionOptions, DiffusionTask

    manifest = read_manifest(_manifest(tmp_path, images))
    train, val = manifest.split("train"), manifest.split("val")
    losses = {}
    for name, cache in (("memory", None), ("disk", str(tmp_path / "cache")), ("disk again", str(tmp_path / "cache"))):
        options = DiffusionOptions(data=str(manifest.path), out=str(tmp_path / "run"), vae=str(tiny_checkpoint),
                                   batch_size=4, quiet=True, device="cpu", caption_augment=0.0,
                                   latent_cache=cache, workers=1)  # fmt: skip
        task = DiffusionTask(load_checkpoint(tiny_checkpoint), manifest, train, val, options, CPU, log=lambda *_: None)
        generator = torch.Generator().manual_seed(5)
        losses[name] = [task.train_loss(torch.tensor(batch), generator).item() for batch in ([0, 3, 5, 1], [6, 2])]
        losses[name].append(task.validate()["val_loss"])
    assert losses["disk"] == losses["memory"] == losses["disk again"]  # equal, not close
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["train", "val"]
    assert (tmp_path / "cache" / "train" / "shard-00000.npy").is_file()


def test_train_diffusion_takes_latent_cache_from_the_command_line(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import argparse

    from training.train_cli import options_from_args, register_train
    from training.train_diffusion import DiffusionOptions

    parser = argparse.ArgumentParser()
    register_train(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "diffusion", "--data", "m.jsonl", "--out", str(tmp_path / "run"),
                              "--vae", str(tiny_checkpoint), "--latent-cache", str(tmp_path / "cache")])  # fmt: skip
    assert options_from_args(args, DiffusionOptions).latent_cache == str(tmp_path / "cache")
