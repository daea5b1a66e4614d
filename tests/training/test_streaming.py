"""Training over manifests of 100k+ records (issue 20 item 2): what a run holds per record.

A manifest is read into line offsets and split codes (``training.datasets.ManifestRecords``), the
diffusion task keeps compact arrays (caption rows, record ids) and reads a record again only to
phrase a pool caption, whose encoder states go to a file in the latent cache folder. These tests
prove that no record object stays in memory and that the losses are those of record objects.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engine.findings.vocabulary import ABSENT, PRESENT
from engine.manifest import ManifestRecord
from engine.manifest import read_manifest as engine_read_manifest

CPU = torch.device("cpu")
FINDINGS = ({"cardiomegaly": PRESENT}, {"pleural_effusion": PRESENT, "atelectasis": PRESENT}, {"no_finding": PRESENT},
            {"pneumothorax": PRESENT, "cardiomegaly": ABSENT})  # fmt: skip
CAPTIONS = ("Cardiomegaly.", "Pleural effusion and atelectasis.", "Normal chest radiograph.", "Pneumothorax.")


def _manifest(folder: Path, count: int = 16) -> Path:
    """``count`` small images with labelled records of two sources (1 in 4 val), images relative."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        name = f"chest{i:02d}.png"
        assert cv2.imwrite(str(folder / name), rng.integers(0, 255, (36, 36), dtype=np.uint8))
        record = {"image": name, "text": CAPTIONS[i % 4], "findings": FINDINGS[i % 4], "patient_id": f"P{i}",
                  "view": "PA", "split": "val" if i % 4 == 3 else "train", "source": "nih" if i % 3 else "pediatric",
                  "age": 20 + 3 * i, "sex": "MF"[i % 2]}  # fmt: skip
        lines.append(json.dumps(record))
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _record_objects() -> int:
    gc.collect()
    return sum(type(o) is ManifestRecord for o in gc.get_objects())


def _model(checkpoint: Path):
    """The tiny model with record tokens, its UNet and table drawn from seed 0 (the same every call)."""
    from training.checkpoint import build_model, load_config
    from training.diffusion_setup import with_record_tokens

    torch.manual_seed(0)
    return build_model(with_record_tokens(load_config(checkpoint), True), base_dir=checkpoint)


def _task(checkpoint: Path, manifest, train, val, tmp_path: Path, cache: str | None, copies: int = 1):
    from training.train_diffusion import DiffusionOptions, DiffusionTask

    options = DiffusionOptions(data=str(manifest.path), out=str(tmp_path / "run"), vae=str(checkpoint), batch_size=4,
                               quiet=True, device="cpu", caption_augment=0.8, augment_copies=copies,
                               augment_sources="nih", latent_cache=cache, workers=1)  # fmt: skip
    return DiffusionTask(_model(checkpoint), manifest, train, val, options, CPU, log=lambda *_: None)


def _losses(task) -> list[float]:
    generator = torch.Generator().manual_seed(5)
    batches = ([0, 3, 5, 1], [6, 2, 11, 9], [10, 0, 4, 7], [3, 5, 11, 2])  # of 12 train images (+ copies)
    if task.num_train > 12:
        batches = (*batches, [12, 19, 3, 15])
    losses = [task.train_loss(torch.tensor(batch), generator).item() for batch in batches]
    return [*losses, task.validate()["val_loss"]]


def test_a_manifest_is_read_into_offsets_and_reads_its_records_again(tmp_path: Path) -> None:
    from training.datasets import DatasetError, read_manifest

    path = _manifest(tmp_path / "data")
    before = _record_objects()
    manifest = read_manifest(path)
    assert _record_objects() == before  # no record object held: offsets and split codes
    from training.datasets import ManifestRecords

    assert isinstance(manifest.records, ManifestRecords) and manifest.records.rows.dtype == np.int64
    expected = engine_read_manifest(path)
    assert [r.image for r in manifest.records] == [str((tmp_path / "data" / r.image).resolve()) for r in expected]
    assert [r.text for r in manifest.records] == [r.text for r in expected]
    assert [r.findings for r in manifest.split("val")] == [r.findings for r in expected if r.split == "val"]
    assert manifest.counts() == {"train": 12, "val": 4, "test": 0}
    assert manifest.records[5].patient_id == "P5" and manifest.split("train")[3].patient_id == "P4"
    # a manifest edited under a run is refused, not read as other records
    os.utime(path, ns=(0, 0))
    with pytest.raises(DatasetError, match="changed since training read it"):
        manifest.records[0]


def test_a_manifest_with_other_line_ends_reads_as_the_engine_reads_it(tmp_path: Path) -> None:
    from training.datasets import DatasetError, read_manifest

    path = _manifest(tmp_path / "data", count=4)
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_bytes(("\r\n".join(lines[:2]) + "\r\n\r" + "\r".join(lines[2:]) + "\n").encode())
    assert [r.text for r in read_manifest(path).records] == [r.text for r in engine_read_manifest(path)]
    path.write_bytes(("\n".join(lines[:2]) + "\n\n{broken\n").encode())
    with pytest.raises(DatasetError, match=r"manifest.jsonl, line 4: not JSON"):
        read_manifest(path)


def test_the_diffusion_task_holds_no_record_objects(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from training.datasets import read_manifest

    before = _record_objects()
    manifest = read_manifest(_manifest(tmp_path / "data"))
    task = _task(tiny_checkpoint, manifest, manifest.split("train"), manifest.split("val"), tmp_path,
                 str(tmp_path / "cache"))  # fmt: skip
    _losses(task)
    assert _record_objects() == before  # records were read in passes and to phrase captions, none kept
    from training.datasets import CaptionStates

    memo = task.captions.memo
    assert isinstance(memo, CaptionStates) and len(memo) > 0  # the pool captions' states are in a file
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["copy-1", "train", "val"]  # the file has no name
    assert task.train_text.dtype == torch.int64 and task.train_record.shape[0] == 12 + 8
    assert task.train_record.dtype == torch.int16 and task.val_record.dtype == torch.int16  # 48 bytes per record


def test_compact_records_give_the_losses_of_record_objects(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The old representation (lists of record objects, pool captions' states in a dict) and the new
    one (rows of the manifest, states in a file) give the same captions and losses, equal, not close."""
    from training.datasets import read_manifest

    manifest = read_manifest(_manifest(tmp_path / "data"))
    objects = list(manifest.records)
    train = [r for r in objects if r.split == "train"]
    val = [r for r in objects if r.split == "val"]
    views = manifest.split("train"), manifest.split("val")
    old = _task(tiny_checkpoint, manifest, train, val, tmp_path, None, copies=0)
    new = _task(tiny_checkpoint, manifest, *views, tmp_path, str(tmp_path / "cache"), copies=0)
    assert isinstance(old.captions.memo, dict)
    assert _losses(new) == _losses(old)
    assert sorted(new.captions.memo) == sorted(old.captions.memo) and len(old.captions.memo) > 0
    for key in old.captions.memo:  # the states read back byte for byte
        assert torch.equal(new.captions.memo[key], old.captions.memo[key])
    assert torch.equal(new.train_text, old.train_text) and torch.equal(new.train_record, old.train_record)
    # with augmented copies of one source: the same rows (the disk cache on both sides: its copies draw
    # their augmentation per shard, the in-memory path's per copy, so only disk compares with disk)
    old = _task(tiny_checkpoint, manifest, train, val, tmp_path, str(tmp_path / "cache-old"))
    new = _task(tiny_checkpoint, manifest, *views, tmp_path, str(tmp_path / "cache"))
    assert new.num_train == old.num_train == 12 + 8  # 8 of the 12 are nih
    assert _losses(new) == _losses(old)
    assert torch.equal(new.train_text, old.train_text) and torch.equal(new.train_record, old.train_record)


def test_a_resume_from_another_folder_finds_the_latent_cache(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from training import train_cli
    from training.run_folder import read_run_options

    manifest = _manifest(tmp_path / "data", count=8)
    first, second, run = tmp_path / "first", tmp_path / "second", tmp_path / "run"
    first.mkdir()
    second.mkdir()

    def cli(argv: list[str]) -> int:
        parser = argparse.ArgumentParser(prog="cxr-studio")
        train_cli.register_train(parser.add_subparsers(dest="command"))
        return train_cli.run(parser.parse_args(argv))

    monkeypatch.chdir(first)
    assert cli(["train", "diffusion", "--data", str(manifest), "--out", str(run), "--vae", str(tiny_checkpoint),
                "--latent-cache", "cache", "--steps", "2", "--stop-after", "1", "--batch-size", "2", "--device", "cpu",
                "--workers", "1", "--caption-augment", "0", "--quiet"]) == 0  # fmt: skip
    shard = first / "cache" / "train" / "shard-00000.npy"
    written = shard.stat().st_mtime_ns
    assert read_run_options(run)["latent_cache"] == str(first / "cache")
    monkeypatch.chdir(second)
    assert cli(["train", "diffusion", "--out", str(run), "--resume", "--quiet"]) == 0
    assert not (second / "cache").exists() and shard.stat().st_mtime_ns == written  # found, not filled again
    # named again on the command line from elsewhere (relative to there), the same folder is no change
    monkeypatch.chdir(tmp_path)
    assert cli(["train", "diffusion", "--out", str(run), "--resume", "--latent-cache", "first/cache", "--quiet"]) == 0
