"""training.loop's shared start of every ``train`` command: the manifest and the device, checked
before a run folder is touched (one helper for train vae and train diffusion)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.training.test_train import _common, make_dataset
from training.datasets import DatasetError
from training.device import DeviceError
from training.loop import manifest_and_device
from training.train_diffusion import DiffusionOptions, train_diffusion
from training.train_vae import VAEOptions, train_vae


def test_manifest_and_device_reads_the_manifest_and_logs_the_device(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path / "data", count=4)
    logged: list[str] = []
    found, device = manifest_and_device(VAEOptions(**_common(manifest, tmp_path / "run"), device="cpu"), logged.append)
    assert found.path == manifest and len(found.split("train")) == 3
    assert device == torch.device("cpu")
    assert logged in (["device cpu, precision bf16"], ["device cpu, precision fp32"])


@pytest.mark.parametrize("train", [train_vae, train_diffusion])
def test_a_manifest_without_a_train_split_stops_both_commands_before_the_run_folder(train, tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path / "data", count=4)
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps({**line, "split": "val"}) + "\n" for line in lines))
    out = tmp_path / "run"
    cls = VAEOptions if train is train_vae else DiffusionOptions
    with pytest.raises(DatasetError, match=r"manifest.jsonl: no records with split 'train'$"):
        train(cls(**_common(manifest, out), **({} if train is train_vae else {"vae": str(tmp_path / "vae")})))
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_stops_before_the_run_folder(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path / "data", count=4)
    with pytest.raises(DeviceError, match="--device cuda"):
        manifest_and_device(VAEOptions(**_common(manifest, tmp_path / "run"), device="cuda"), print)
    assert not (tmp_path / "run").exists()
