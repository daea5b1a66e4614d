"""min-SNR-gamma loss weighting against diffusers' own SNR and the weighting its training examples use."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from engine import schedules
from engine.pack import ScheduleConfig
from training.objective import diffusion_loss
from training.options import TrainingError
from training.train_diffusion import DiffusionOptions


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_min_snr_weighting_matches_diffusers_training_examples(prediction_type: str, gamma: float) -> None:
    config = ScheduleConfig(beta_schedule="scaled_linear", prediction_type=prediction_type)
    scheduler = DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps, beta_start=config.beta_start, beta_end=config.beta_end,
        beta_schedule=config.beta_schedule, prediction_type=prediction_type,
    )  # fmt: skip
    alphas_cumprod = torch.tensor(schedules.alphas_cumprod(config), dtype=torch.float32)
    assert torch.allclose(alphas_cumprod, scheduler.alphas_cumprod.float(), rtol=1e-5)
    generator = torch.Generator().manual_seed(0)
    timesteps = torch.tensor([0, 1, 10, 100, 400, 700, 999, 999])  # both ends, where the clip does and doesn't bite
    prediction = torch.randn(8, 4, 6, 6, generator=generator)
    target = torch.randn(8, 4, 6, 6, generator=generator)

    # diffusers/examples/text_to_image/train_text_to_image.py, --snr_gamma
    snr = compute_snr(scheduler, timesteps)
    weights = torch.stack([snr, gamma * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
    weights = weights / snr if prediction_type == "epsilon" else weights / (snr + 1)
    expected = (F.mse_loss(prediction, target, reduction="none").mean(dim=(1, 2, 3)) * weights).mean()

    loss = diffusion_loss(
        prediction, target, alphas_cumprod[timesteps], prediction_type=prediction_type, min_snr_gamma=gamma
    )
    assert torch.allclose(loss, expected, rtol=1e-4), (loss, expected)
    # the weighting changes the loss: the weighted and the plain loss differ
    plain = diffusion_loss(prediction, target, alphas_cumprod[timesteps], prediction_type=prediction_type)
    assert torch.allclose(plain, F.mse_loss(prediction, target)) and not torch.allclose(plain, loss)


@pytest.mark.parametrize("gamma", [-1.0, float("nan"), float("inf"), True])
def test_bad_min_snr_gamma_is_refused(gamma: float) -> None:
    with pytest.raises(TrainingError, match="--min-snr-gamma"):
        DiffusionOptions(data="m.jsonl", out="run", vae="vae", min_snr_gamma=gamma)
