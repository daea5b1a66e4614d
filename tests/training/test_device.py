"""--device: one reader (training.device) for training and evaluation; a GPU asked for on a machine
without one is one line naming the option, exit 2, and no run folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training.test_train import _parse, make_dataset
from training import train_cli
from training.device import DeviceError, pick_device

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")


def test_auto_and_cpu_name_a_device_torch_has() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@NO_CUDA
def test_cuda_without_a_gpu_is_a_device_error() -> None:
    with pytest.raises(DeviceError, match=r"^--device cuda: no CUDA GPU is available to torch$"):
        pick_device("cuda")


@NO_CUDA
def test_train_with_cuda_and_no_gpu_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = make_dataset(tmp_path / "data", count=4)
    out = tmp_path / "run"
    args = _parse(["train", "vae", "--data", str(dataset), "--out", str(out), "--config", "tiny", "--device", "cuda"])
    assert train_cli.run(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "--device cuda: no CUDA GPU is available to torch" in err
    assert not out.exists()
