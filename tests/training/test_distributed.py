"""Distributed training under torchrun (gloo on the CPU): two processes, or two "nodes" on loopback,
train the tiny models to the same weights as one process with the same global batch and order;
only rank 0 writes; a two-process checkpoint resumes in one process. And the single-process run
is what it was before distributed training existed, bit for bit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tests.training.test_train import make_dataset
from training.run_folder import MetricsLog, RunFolder
from training.train_diffusion import DiffusionOptions, train_diffusion
from training.train_vae import VAEOptions, train_vae

TORCHRUN = Path(sys.executable).with_name("torchrun")
STEPS = 4
LR = 2e-4  # the options' default
# The global batch: 2 micro-batches of 4 images per optimizer step, whatever the number of processes.
BATCH = {"batch_size": 4, "grad_accum": 2, "steps": STEPS, "checkpoint_every": 2, "log_every": 1}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


def _vae_options(dataset: Path, config: Path, out: Path, **overrides: object) -> VAEOptions:
    values = {"data": str(dataset), "out": str(out), "config": str(config), "quiet": True, "workers": 1,
              "precision": "fp32", **BATCH}  # fmt: skip
    return VAEOptions(**{**values, **overrides})


def _diffusion_options(dataset: Path, vae: Path, out: Path, **overrides: object) -> DiffusionOptions:
    values = {"data": str(dataset), "out": str(out), "vae": str(vae), "quiet": True, "workers": 1,
              "precision": "fp32", "sample_every": 2, **BATCH}  # fmt: skip
    return DiffusionOptions(**{**values, **overrides})


def _flags(options: VAEOptions | DiffusionOptions, kind: str) -> list[str]:
    args = ["train", kind, "--data", options.data, "--out", options.out]
    args += ["--config", options.config] if kind == "vae" else ["--vae", options.vae]
    for name in ("batch_size", "grad_accum", "steps", "checkpoint_every", "log_every", "workers", "precision"):
        args += [f"--{name.replace('_', '-')}", str(getattr(options, name))]
    if kind == "diffusion":
        args += ["--sample-every", str(options.sample_every)]
    return [*args, "--quiet"]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _torchrun(launch: list[str], args: list[str], log: Path) -> subprocess.Popen:
    """``torchrun LAUNCH -m engine.cli ARGS`` (the ``cxr-studio`` command), output to ``log``."""
    command = [str(TORCHRUN), *launch, "-m", "engine.cli", *args]
    with log.open("w") as handle:
        return subprocess.Popen(command, cwd=REPO, env=_env(), stdout=handle, stderr=subprocess.STDOUT)


def _wait(process: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    assert process.wait(timeout=timeout) == 0, log.read_text()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    """The trained (not EMA) weights of the run's training state."""
    return RunFolder(run).load_state().parts["model"]


def _assert_same_weights(run: Path, reference: Path) -> None:
    """Equal within float tolerance: the whole weight vector within 1e-5 relative, and no weight off by
    a tenth of one step's learning rate. (Not 1e-5 per weight: AdamW moves a weight whose gradient is
    about 0, an attention key's bias for one, by its rounding noise over its own root mean square, so
    such weights differ by more than that with any other order of float sums.)"""
    ours, theirs = _weights(run), _weights(reference)
    assert ours.keys() == theirs.keys()
    difference = torch.cat([(ours[name] - theirs[name]).flatten() for name in ours])
    whole = torch.cat([theirs[name].flatten() for name in ours])
    assert difference.norm() <= 1e-5 * whole.norm(), (difference.norm() / whole.norm()).item()
    worst = max(ours, key=lambda name: (ours[name] - theirs[name]).abs().max().item())
    assert (ours[worst] - theirs[worst]).abs().max() < 0.1 * LR, worst
    assert RunFolder(run).load_state().step == STEPS


def _assert_rank_zero_wrote_once(run: Path) -> None:
    """One metrics line per step and per validation (two writers would append each twice)."""
    losses = [r["step"] for r in MetricsLog(run / "metrics.jsonl").read() if "loss" in r]
    assert losses == list(range(1, STEPS + 1))
    validations = [r["step"] for r in MetricsLog(run / "metrics.jsonl").read() if "val_loss" in r]
    assert validations == [2, 4]


@pytest.fixture(scope="module")
def vae_reference(dataset: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("one") / "vae"
    assert train_vae(_vae_options(dataset, tiny_checkpoint / "config.json", out)).step == STEPS
    return out


# --------------------------------------------------------------------------- torchrun


@pytest.mark.slow
def test_two_processes_train_the_vae_to_the_weights_of_one(
    vae_reference: Path, dataset: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    options = _vae_options(dataset, tiny_checkpoint / "config.json", tmp_path / "two")
    launch = ["--standalone", "--nproc_per_node", "2"]
    _wait(_torchrun(launch, _flags(options, "vae"), tmp_path / "log.txt"), tmp_path / "log.txt")
    _assert_same_weights(tmp_path / "two", vae_reference)
    _assert_rank_zero_wrote_once(tmp_path / "two")
    assert RunFolder(tmp_path / "two").load_state().meta["world_size"] == 2


@pytest.mark.slow
def test_two_nodes_on_loopback_train_the_vae_to_the_weights_of_one(
    vae_reference: Path, dataset: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """Two launches of one process each meet at a c10d rendezvous; each is given its own --out, and
    only rank 0's is written (the other does not even exist)."""
    port = _free_port()
    processes = []
    for node in (0, 1):
        options = _vae_options(dataset, tiny_checkpoint / "config.json", tmp_path / f"node{node}")
        launch = ["--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "1", "--rdzv_backend", "c10d",
                  "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "test"]  # fmt: skip
        processes.append((_torchrun(launch, _flags(options, "vae"), tmp_path / f"log{node}.txt"), node))
    for process, node in processes:
        _wait(process, tmp_path / f"log{node}.txt")
    written = [node for node in (0, 1) if (tmp_path / f"node{node}").exists()]
    assert len(written) == 1, written
    _assert_same_weights(tmp_path / f"node{written[0]}", vae_reference)
    _assert_rank_zero_wrote_once(tmp_path / f"node{written[0]}")


@pytest.mark.slow
def test_a_two_process_diffusion_checkpoint_resumes_in_one_process(
    dataset: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """Two processes train steps 1-2 (and stop, --stop-after 2), one process trains steps 3-4: the
    losses of every step and the final weights are those of one process from the start."""
    reference = _diffusion_options(dataset, tiny_checkpoint, tmp_path / "one")
    assert train_diffusion(reference).step == STEPS
    options = _diffusion_options(dataset, tiny_checkpoint, tmp_path / "two")
    args = [*_flags(options, "diffusion"), "--stop-after", "2"]
    _wait(_torchrun(["--standalone", "--nproc_per_node", "2"], args, tmp_path / "log.txt"), tmp_path / "log.txt")
    state = RunFolder(tmp_path / "two").load_state()
    assert (state.step, state.meta["world_size"], state.meta["stop_reason"]) == (2, 2, "")
    assert sorted(p.name for p in (tmp_path / "two" / "samples").glob("*.png")) == ["step-00000002.png"]
    result = train_diffusion(options, resume=True)
    assert result.finished and result.step == STEPS
    _assert_same_weights(tmp_path / "two", tmp_path / "one")
    _assert_rank_zero_wrote_once(tmp_path / "two")

    def losses(run: Path) -> list[float]:
        return [r["loss"] for r in MetricsLog(run / "metrics.jsonl").read() if "loss" in r]

    torch.testing.assert_close(losses(tmp_path / "two"), losses(tmp_path / "one"), rtol=1e-5, atol=1e-7)


def test_a_process_limit_splits_each_share_into_passes_with_the_same_gradient(
    vae_reference: Path, dataset: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """--max-process-batch 1: each micro-batch of 4 goes through in four passes of 1 image (the same
    draws, the gradient scaled to the global mean), in one process."""
    options = _vae_options(dataset, tiny_checkpoint / "config.json", tmp_path / "passes", max_process_batch=1)
    assert train_vae(options).step == STEPS
    _assert_same_weights(tmp_path / "passes", vae_reference)


@pytest.mark.slow
def test_a_batch_that_does_not_split_over_the_processes_is_refused(
    dataset: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    options = _vae_options(dataset, tiny_checkpoint / "config.json", tmp_path / "odd", batch_size=3)
    log = tmp_path / "log.txt"
    process = _torchrun(["--standalone", "--nproc_per_node", "2"], _flags(options, "vae"), log)
    assert process.wait(timeout=300) != 0
    assert "--batch-size 3 does not split evenly over 2 processes" in log.read_text()
    assert not (tmp_path / "odd").exists()
