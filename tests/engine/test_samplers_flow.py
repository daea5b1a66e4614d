"""Rectified flow (``prediction_type="flow_prediction"``) in every sampler, against diffusers.

The flow path ``x_t = (1 - σ) x_0 + σ ε`` with the model predicting ``v = ε - x_0`` at timestep
``σ N`` (SD3; Esser et al. 2024). Golden references, on one deterministic model function written in
numpy and in torch:

- ``euler``: ``FlowMatchEulerDiscreteScheduler(shift=...)``;
- ``dpmpp-2m``: ``DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction",
  flow_shift=...)``;
- ``ddim``: no diffusers scheduler runs DDIM on the flow path. With ``η = 0`` it is the Euler step
  (``x' = (1 - σ') x̂_0 + σ' ε̂ = x + (σ' - σ) v``), so it must equal FlowMatchEulerDiscreteScheduler;
  with ``η > 0`` it is checked against diffusers' ``DDIMScheduler.step`` run in variance-preserving
  space (``x / sqrt((1 - σ)² + σ²)``, ``ᾱ = (1 - σ)² / ((1 - σ)² + σ²)``, the model's flow ``v``
  turned into that space's v-prediction, which is defined at ``σ = 1``, ``ᾱ = 0``, where ε-prediction
  is not): an independent computation of the same update.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

from engine import schedules
from engine.pack import PackError, ScheduleConfig, manifest_from_json
from engine.samplers import SAMPLERS, init_noise_sigma, sample

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

FLOW = "flow_prediction"
BATCH, CHANNELS, HEIGHT, WIDTH = 2, 4, 8, 8
NUM_STEPS = 20
TOLERANCE = 1e-5
N = 1000


def _schedule(shift: float = 1.0) -> ScheduleConfig:
    return ScheduleConfig(num_train_timesteps=N, prediction_type=FLOW, shift=shift)


def _noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, CHANNELS, HEIGHT, WIDTH), dtype=np.float32)


# --------------------------------------------------------------------------- one model, twice
# a bounded nonlinear guess of x_0 from (x, t), returned as the v = ε - x_0 a flow model would give for it


def model_numpy(sample_: np.ndarray, timestep: np.ndarray) -> np.ndarray:
    x = sample_.astype(np.float64)
    t = timestep.astype(np.float64)[:, None, None, None]
    sigma = np.clip(t / N, 1e-3, 1.0)
    channel = np.arange(x.shape[1], dtype=np.float64)[None, :, None, None]
    x0 = 0.9 * np.tanh(1.2 * x + 0.3 * np.sin(t / 53.0 + 0.7 * channel)) + 0.1 * np.roll(x, 1, axis=-1) * np.cos(
        t / 211.0
    )
    eps = (x - (1.0 - sigma) * x0) / sigma
    return (eps - x0).astype(np.float32)


def model_torch(sample_: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    x = sample_.to(torch.float64)
    t = timestep.to(torch.float64).reshape(-1, 1, 1, 1)
    sigma = (t / N).clamp(1e-3, 1.0)
    channel = torch.arange(x.shape[1], dtype=torch.float64).reshape(1, -1, 1, 1)
    x0 = 0.9 * torch.tanh(1.2 * x + 0.3 * torch.sin(t / 53.0 + 0.7 * channel))
    x0 = x0 + 0.1 * torch.roll(x, 1, dims=-1) * torch.cos(t / 211.0)
    eps = (x - (1.0 - sigma) * x0) / sigma
    return (eps - x0).to(torch.float32)


def _diffusers(name: str, shift: float):
    if name == "dpmpp-2m":
        return DPMSolverMultistepScheduler(
            num_train_timesteps=N,
            prediction_type=FLOW,
            use_flow_sigmas=True,
            flow_shift=shift,
            algorithm_type="dpmsolver++",
            solver_order=2,
            solver_type="midpoint",
            lower_order_final=True,
            final_sigmas_type="zero",
            thresholding=False,
        )
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=N, shift=shift)


def _run_diffusers(name: str, noise: np.ndarray, shift: float, num_steps: int):
    """The standard diffusers loop -> (timesteps, per-step predicted x_0, final latent, init sigma)."""
    scheduler = _diffusers(name, shift)
    scheduler.set_timesteps(num_steps)
    init_sigma = float(getattr(scheduler, "init_noise_sigma", 1.0))  # FlowMatchEuler has none: 1
    latents = torch.from_numpy(noise) * init_sigma
    denoised = []
    for index, t in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(latents, t) if name == "dpmpp-2m" else latents
        output = model_torch(model_input, t.expand(latents.shape[0]).to(torch.float32))
        if name == "dpmpp-2m":
            latents = scheduler.step(output, t, latents).prev_sample
            denoised.append(scheduler.model_outputs[-1].numpy())
        else:
            sigma = scheduler.sigmas[index].to(torch.float64)
            denoised.append((latents.to(torch.float64) - sigma * output.to(torch.float64)).numpy())
            latents = scheduler.step(output, t, latents).prev_sample
    return scheduler.timesteps.tolist(), denoised, latents.numpy(), init_sigma


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _compare(name: str, reference: str, shift: float, num_steps: int) -> None:
    noise = _noise(1)
    steps = list(sample(name, model_numpy, noise, _schedule(shift), num_steps))
    timesteps, denoised, final, sigma0 = _run_diffusers(reference, noise, shift, num_steps)
    assert [step.timestep for step in steps] == timesteps
    assert init_noise_sigma(name, _schedule(shift), num_steps) == sigma0 == 1.0
    assert all(step.latent.dtype == np.float32 and step.denoised.dtype == np.float32 for step in steps)
    assert np.all(np.isfinite(final)) and np.abs(final).max() > 0.1  # a non-trivial result
    assert _max_diff(steps[-1].latent, final) <= TOLERANCE
    assert max(_max_diff(s.denoised, d) for s, d in zip(steps, denoised, strict=True)) <= TOLERANCE


# --------------------------------------------------------------------------- golden tests


@pytest.mark.parametrize("num_steps", [1, 2, 7, NUM_STEPS])
@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("name", ["euler", "dpmpp-2m"])
def test_flow_matches_diffusers(name: str, shift: float, num_steps: int) -> None:
    _compare(name, name, shift, num_steps)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_ddim_without_eta_is_the_flow_euler_step(shift: float) -> None:
    _compare("ddim", "euler", shift, NUM_STEPS)


def _ddim_in_vp_space(noise: np.ndarray, shift: float, eta: float, step_noise: list[np.ndarray]) -> np.ndarray:
    """DDIM on the flow path by diffusers' DDIMScheduler.step in variance-preserving space."""
    _, sigmas = schedules.flow_sigmas(N, NUM_STEPS, shift)
    timesteps = sigmas[:-1] * N
    alpha_bar = (1.0 - sigmas) ** 2 / ((1.0 - sigmas) ** 2 + sigmas**2)  # ᾱ at each σ; 1 at σ = 0
    # one training timestep per step, stride 1: index k is step n - 1 - k; the final ᾱ is 1 (σ = 0)
    scheduler = DDIMScheduler(
        num_train_timesteps=NUM_STEPS, set_alpha_to_one=True, clip_sample=False, prediction_type="v_prediction"
    )
    scheduler.set_timesteps(NUM_STEPS)
    scheduler.alphas_cumprod = torch.tensor(alpha_bar[:-1][::-1].copy(), dtype=torch.float64)
    x = torch.from_numpy(noise).to(torch.float64)  # σ_0 = 1: x_vp = x
    for index in range(NUM_STEPS):
        sigma, scale = sigmas[index], np.sqrt((1 - sigmas[index]) ** 2 + sigmas[index] ** 2)
        flow_x = x * scale
        v = model_torch(flow_x.to(torch.float32), torch.full((BATCH,), timesteps[index], dtype=torch.float32))
        x0 = flow_x - sigma * v.to(torch.float64)
        eps = flow_x + (1.0 - sigma) * v.to(torch.float64)
        v_vp = ((1.0 - sigma) * eps - sigma * x0) / scale  # sqrt(ᾱ) ε - sqrt(1 - ᾱ) x_0: defined at ᾱ = 0 too
        out = scheduler.step(
            v_vp, NUM_STEPS - 1 - index, x, eta=eta, variance_noise=torch.from_numpy(step_noise[index]).double()
        )
        x = out.prev_sample
    return x.numpy()  # the last ᾱ is 1: VP and flow coincide at σ = 0


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_ddim_with_eta_matches_ddim_in_variance_preserving_space(shift: float) -> None:
    noise, eta, seeds = _noise(2), 0.7, (11, 12)
    steps = list(
        sample("ddim", model_numpy, noise, _schedule(shift), NUM_STEPS, eta=eta,
               rngs=[np.random.default_rng(s) for s in seeds])
    )  # fmt: skip
    replay = [np.random.default_rng(s) for s in seeds]
    step_noise = [
        np.stack([rng.standard_normal((CHANNELS, HEIGHT, WIDTH), dtype=np.float32) for rng in replay])
        for _ in range(NUM_STEPS)
    ]
    reference = _ddim_in_vp_space(noise, shift, eta, step_noise)
    assert _max_diff(steps[-1].latent, reference) <= TOLERANCE
    deterministic = list(sample("ddim", model_numpy, noise, _schedule(shift), NUM_STEPS))
    assert _max_diff(deterministic[-1].latent, steps[-1].latent) > 1e-3  # eta really adds noise


@pytest.mark.parametrize("shift", [1.0, 3.0, 2.5, 1.7])
def test_flow_sigmas_match_diffusers(shift: float) -> None:
    for num_steps in [1, 2, 7, 20, 50, 999, 1000]:
        timesteps, sigmas = schedules.flow_sigmas(N, num_steps, shift)
        reference = FlowMatchEulerDiscreteScheduler(num_train_timesteps=N, shift=shift)
        reference.set_timesteps(num_steps)
        np.testing.assert_array_equal(timesteps, reference.timesteps.numpy().astype(np.float64))
        np.testing.assert_array_equal(sigmas, reference.sigmas.numpy().astype(np.float64))
        timesteps, sigmas = schedules.flow_dpm_sigmas(N, num_steps, shift)
        reference = _diffusers("dpmpp-2m", shift)
        reference.set_timesteps(num_steps)
        np.testing.assert_array_equal(timesteps, reference.timesteps.numpy())
        np.testing.assert_array_equal(sigmas, reference.sigmas.numpy().astype(np.float64))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_flow_spacing_has_no_effect(name: str) -> None:
    """diffusers' flow schedulers have one grid (DPM-Solver ignores timestep_spacing with flow sigmas)."""
    noise = _noise(4)
    runs = [list(sample(name, model_numpy, noise, _schedule(), 5, spacing=s))[-1].latent for s in schedules.SPACINGS]
    assert all(np.array_equal(runs[0], run) for run in runs[1:])


# --------------------------------------------------------------------------- the schedule's shift field


@pytest.mark.parametrize(
    ("schedule", "match"),
    [
        (ScheduleConfig(prediction_type=FLOW, shift=0.0), "shift must be a number > 0"),
        (ScheduleConfig(prediction_type=FLOW, shift=float("nan")), "shift must be a number > 0"),
        (ScheduleConfig(prediction_type="epsilon", shift=3.0), "shift applies to flow_prediction only"),
    ],
)
def test_bad_shift_is_refused(schedule: ScheduleConfig, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sample("euler", model_numpy, _noise(), schedule, 4)


def test_model_json_writes_shift_for_flow_packs_only(tiny_pack_dir: Path) -> None:
    data = json.loads((tiny_pack_dir / "model.json").read_text())
    assert "shift" not in data["schedule"]  # packs made before keep the model.json they had
    manifest = manifest_from_json(data)
    assert manifest.schedule.shift == 1.0
    assert "shift" not in manifest.to_json()["schedule"]
    flow = {**data, "schedule": {**data["schedule"], "prediction_type": FLOW, "shift": 3.0}}
    assert manifest_from_json(flow).to_json()["schedule"]["shift"] == 3.0
    with pytest.raises(PackError, match=r"schedule\.shift"):
        manifest_from_json({**data, "schedule": {**data["schedule"], "shift": 3.0}})


def test_flow_model_fn_is_called_with_sigma_times_n() -> None:
    seen: list[float] = []

    def model_fn(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        seen.append(float(t[0]))
        return model_numpy(x, t)

    list(sample("euler", model_fn, _noise(), _schedule(), 4))
    assert seen == pytest.approx([1000.0, 667.0, 334.0, 1.0])  # linspace(1, 1/N, 4) x N
