"""Rectified-flow training (``prediction_type="flow_prediction"``, SD3's recipe): the noising and
target, logit-normal noise levels, min-SNR weighting, and a tiny run that exports, generates with
every sampler and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine.pack import ScheduleConfig, load_pack
from engine.pipeline import GenerationRequest, Pipeline
from engine.samplers import SAMPLERS
from tests.training.test_train import make_dataset
from training.checkpoint import UNET_FILE
from training.objective import diffusion_loss, draw_timesteps
from training.options import TrainingError
from training.run_folder import FORMAT_VERSION, RUN_FORMAT, MetricsLog, open_run
from training.train_diffusion import DiffusionOptions, DiffusionTask, train_diffusion

FLOW = "flow_prediction"


# --------------------------------------------------------------------------- noise levels and loss


def test_logit_normal_levels_are_sigmoid_of_a_normal_and_shift_moves_them() -> None:
    def draw(**kw: object) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return draw_timesteps(20000, generator, torch.device("cpu"), num_train_timesteps=1000, **kw)

    sigma = draw(flow=True, sampling="auto")  # auto: logit-normal for flow
    logit = torch.log(sigma / (1 - sigma))
    assert abs(logit.mean().item()) < 0.03 and abs(logit.std().item() - 1) < 0.03
    moved = draw(flow=True, sampling="logit-normal", logit_mean=0.5, logit_std=0.5)
    assert abs(torch.log(moved / (1 - moved)).mean().item() - 0.5) < 0.02
    shifted = draw(flow=True, sampling="auto", shift=3.0)  # s u / (1 + (s - 1) u): the median 0.5 -> 0.75
    assert abs(shifted.median().item() - 0.75) < 0.01
    uniform = draw(flow=True, sampling="uniform")
    assert uniform.min() >= 0 and uniform.max() < 1 and abs(uniform.mean().item() - 0.5) < 0.01
    # epsilon / v: auto is v1's U{0..N-1}, the very same draw; logit-normal gives integer timesteps in range
    legacy = torch.randint(0, 1000, (20000,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(draw(flow=False, sampling="auto"), legacy)
    discrete = draw(flow=False, sampling="logit-normal")
    assert discrete.dtype == torch.int64 and discrete.min() >= 0 and discrete.max() <= 999
    assert abs(discrete.float().median().item() - 500) < 15


def test_flow_noising_and_target_are_the_rectified_flow_path() -> None:
    schedule = ScheduleConfig(prediction_type=FLOW, shift=3.0)
    task = SimpleNamespace(
        scaling_factor=0.5, flow=True, device=torch.device("cpu"), prediction_type=FLOW,
        config=SimpleNamespace(schedule=schedule),
        options=SimpleNamespace(timestep_sampling="auto", logit_mean=0.0, logit_std=1.0),
    )  # fmt: skip
    mean, std = torch.randn(3, 4, 8, 8), torch.rand(3, 4, 8, 8)
    noisy, t, target, level = DiffusionTask._noisy(task, mean, std, torch.Generator().manual_seed(7))
    # the same draws, in the documented order: posterior sample, level, noise
    generator = torch.Generator().manual_seed(7)
    z = (mean + std * torch.randn(mean.shape, generator=generator)) * 0.5
    u = torch.sigmoid(torch.randn(3, generator=generator))
    sigma = 3 * u / (1 + 2 * u)
    noise = torch.randn(z.shape, generator=generator)
    torch.testing.assert_close(level, sigma)
    torch.testing.assert_close(t, sigma * 1000)  # the UNet sees σ N, as the engine's samplers call it
    s = sigma.view(3, 1, 1, 1)
    torch.testing.assert_close(noisy, (1 - s) * z + s * noise)
    torch.testing.assert_close(target, noise - z)  # v = ε - x_0


@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_flow_min_snr_weights_the_clean_latent_error_by_min_snr_gamma(gamma: float) -> None:
    """min-SNR (Hang et al. 2023) weights |x̂_0 - x_0|² by min(SNR, γ); epsilon and v reach that through
    /SNR and /(SNR + 1); flow's weighting must give the same, computed here from x̂_0 directly."""
    generator = torch.Generator().manual_seed(0)
    sigma = torch.tensor([0.0, 1e-3, 0.1, 0.3, 0.5, 0.7, 0.95, 1.0])
    x0, eps = torch.randn(8, 4, 6, 6, generator=generator), torch.randn(8, 4, 6, 6, generator=generator)
    x0_hat = x0 + 0.3 * torch.randn(8, 4, 6, 6, generator=generator)
    s = sigma.view(-1, 1, 1, 1)
    x_t = (1 - s) * x0 + s * eps
    v = eps - x0
    v_hat = torch.where(s > 0, (x_t - x0_hat) / s.clamp(min=1e-12), v)  # the v whose x̂_0 = x_t - σ v̂ is x0_hat
    loss = diffusion_loss(v_hat, v, sigma, prediction_type=FLOW, min_snr_gamma=gamma)
    snr = ((1 - sigma) / sigma).square()
    per_sample = (x0_hat - x0).square().mean(dim=(1, 2, 3))
    weight = torch.where(sigma > 0, snr.clamp(max=gamma), torch.zeros(()))  # σ = 0: v̂ = v, no error anyway
    expected = (per_sample * weight).mean()
    assert torch.isfinite(loss) and torch.allclose(loss, expected, rtol=1e-4), (loss, expected)
    assert torch.allclose(diffusion_loss(v_hat, v, sigma, prediction_type=FLOW), torch.mean((v_hat - v) ** 2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timestep_sampling": "lognormal"}, "--timestep-sampling must be one of auto, uniform, logit-normal"),
        ({"logit_std": 0.0}, "--logit-std must be a number > 0"),
        ({"logit_mean": float("nan")}, "--logit-mean must be a finite number"),
    ],
)
def test_bad_timestep_options_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(TrainingError, match=match):
        DiffusionOptions(data="m.jsonl", out="run", vae="vae", **kwargs)


def test_a_run_from_before_the_timestep_options_resumes(tmp_path: Path) -> None:
    options = DiffusionOptions(data="m.jsonl", out=str(tmp_path / "old"), vae="vae").to_json()
    old = {k: v for k, v in options.items() if k not in ("timestep_sampling", "logit_mean", "logit_std")}
    (tmp_path / "old").mkdir()
    run = {"format": RUN_FORMAT, "format_version": FORMAT_VERSION, "kind": "diffusion", "options": old}
    (tmp_path / "old" / "run.json").write_text(json.dumps(run), encoding="utf-8")
    open_run(tmp_path / "old", "diffusion", options, {}, resume=True)  # no "started with None"
    with pytest.raises(TrainingError, match="--timestep-sampling is 'uniform' but"):
        open_run(tmp_path / "old", "diffusion", {**options, "timestep_sampling": "uniform"}, {}, resume=True)


# --------------------------------------------------------------------------- a tiny flow run


@pytest.fixture(scope="module")
def flow_vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random checkpoint whose config says flow_prediction: the VAE (and config) of the runs."""
    from training.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("flow") / "checkpoint", seed=0, prediction_type=FLOW)


def _options(data: Path, vae: Path, out: Path, **kw: object) -> DiffusionOptions:
    values = {"data": str(data), "out": str(out), "vae": str(vae), "steps": 6, "batch_size": 4, "checkpoint_every": 3,
              "log_every": 1, "val_every": 3, "sample_every": 6, "sample_steps": 2, "quiet": True, "workers": 1,
              "lr": 1e-3}  # fmt: skip
    return DiffusionOptions(**{**values, **kw})


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in MetricsLog(run / "metrics.jsonl").read() if "loss" in r}


@pytest.mark.slow
def test_a_tiny_flow_run_exports_generates_with_every_sampler_and_resumes_exactly(
    flow_vae: Path, tmp_path: Path
) -> None:
    data = make_dataset(tmp_path / "data", count=16)
    # 1. uninterrupted, exported
    pack = tmp_path / "pack"
    result = train_diffusion(_options(data, flow_vae, tmp_path / "whole", export=str(pack)))
    assert result.finished and result.step == 6
    whole = _losses(tmp_path / "whole")
    assert sorted(whole) == list(range(1, 7)) and all(np.isfinite(list(whole.values())))
    # 2. stopped after step 3, then resumed: the same losses and the same weights
    split = _options(data, flow_vae, tmp_path / "split")
    assert train_diffusion(DiffusionOptions(**{**split.to_json(), "stop_after": 3})).step == 3
    assert train_diffusion(split, resume=True).step == 6
    assert _losses(tmp_path / "split") == whole
    a, b = (load_file(tmp_path / run / "checkpoint" / UNET_FILE) for run in ("whole", "split"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # 3. the pack says flow and generates finite pixels with every sampler
    loaded = load_pack(pack)
    assert loaded.manifest.schedule.prediction_type == FLOW and loaded.manifest.schedule.shift == 1.0
    assert json.loads((pack / "model.json").read_text())["schedule"]["shift"] == 1.0
    pipeline = Pipeline(loaded, provider="cpu")
    for sampler in SAMPLERS:
        images = pipeline.generate(GenerationRequest(prompt="Cardiomegaly", num_steps=3, sampler=sampler)).images
        assert images.shape == (1, 32, 32) and np.isfinite(images).all() and images.std() > 0, sampler
    # 4. and through the command line, as users run it
    from engine.cli.main import main

    out = tmp_path / "flow.png"
    assert main(["generate", "Cardiomegaly", "--model", str(pack), "--steps", "3", "--sampler", "euler",
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    assert out.is_file()


@pytest.mark.parametrize(
    ("prediction_type", "shift", "match"),
    [("epsilon", 3.0, "applies to flow_prediction only"), (FLOW, 0.0, "shift must be a number > 0")],
)
def test_a_config_with_a_bad_shift_is_refused(prediction_type: str, shift: float, match: str) -> None:
    from dataclasses import replace

    from training.models.config import ConfigError, check_config, tiny_config

    config = tiny_config(prediction_type=prediction_type)
    check_config(replace(config, schedule=replace(config.schedule, shift=1.0)))
    with pytest.raises(ConfigError, match=match):
        check_config(replace(config, schedule=replace(config.schedule, shift=shift)))
