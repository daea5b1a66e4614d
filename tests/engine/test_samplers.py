"""Samplers and schedules against diffusers' schedulers on one deterministic nonlinear model.

The same model function is written in numpy (for engine.samplers) and in torch (for the
diffusers loop: ``set_timesteps``, ``scale_model_input``, model, ``step``); the final latents and
the per-step predicted ``x_0`` must agree to 1e-5 (for ``x_0`` at noise levels above σ = 15, a bound
that grows with σ: there diffusers' float32 arithmetic is the limit, see ``_compare``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from engine import schedules
from engine.pack import ScheduleConfig
from engine.samplers import (
    SAMPLERS,
    SamplerStep,
    init_noise_sigma,
    sample,
    sample_ddim,
    sample_dpmpp_2m,
    sample_euler,
)

# diffusers calls np.array() on torch tensors, which numpy 2 warns about on every set_timesteps
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

REPO = Path(__file__).resolve().parents[2]
BATCH, CHANNELS, HEIGHT, WIDTH = 2, 4, 8, 8
NUM_STEPS = 20
TOLERANCE = 1e-5
BETA_SCHEDULES = {
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "linear": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
    "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2"},
}


# --------------------------------------------------------------------------- one model, twice
# A toy denoiser: a bounded nonlinear guess of x_0 from (x, t), returned as the ε or v a UNet
# trained on the schedule would give for it, so that every latent stays O(1) as with a real model.
# ``alphas_cumprod`` is diffusers' table; fractional timesteps (Euler, linspace) interpolate it.


def _x0_guess_numpy(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    channel = np.arange(x.shape[1], dtype=np.float64)[None, :, None, None]
    guess = 0.9 * np.tanh(1.2 * x + 0.3 * np.sin(t / 53.0 + 0.7 * channel))
    return guess + 0.1 * np.roll(x, 1, axis=-1) * np.cos(t / 211.0)


def make_model_numpy(alphas_cumprod: np.ndarray, prediction_type: str) -> Callable:
    """model_fn((B, C, h, w) float32, (B,) float32) -> (B, C, h, w) float32 ε or v."""
    table = np.asarray(alphas_cumprod, dtype=np.float64)

    def model_fn(sample: np.ndarray, timestep: np.ndarray) -> np.ndarray:
        x = sample.astype(np.float64)
        t = timestep.astype(np.float64)[:, None, None, None]
        alpha_bar = np.interp(t, np.arange(len(table)), table)
        x0 = _x0_guess_numpy(x, t)
        eps = (x - np.sqrt(alpha_bar) * x0) / np.sqrt(1.0 - alpha_bar)
        out = eps if prediction_type == "epsilon" else np.sqrt(alpha_bar) * eps - np.sqrt(1.0 - alpha_bar) * x0
        return out.astype(np.float32)

    return model_fn


def make_model_torch(alphas_cumprod: torch.Tensor, prediction_type: str) -> Callable:
    """The same function as ``make_model_numpy``'s, in torch (float64 inside, float32 out)."""
    table = alphas_cumprod.to(torch.float64)

    def model_fn(sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        x = sample.to(torch.float64)
        t = timestep.to(torch.float64).reshape(-1, 1, 1, 1)
        low = t.floor().long().clamp(0, len(table) - 2)
        alpha_bar = table[low] + (t - low) * (table[low + 1] - table[low])
        channel = torch.arange(x.shape[1], dtype=torch.float64).reshape(1, -1, 1, 1)
        x0 = 0.9 * torch.tanh(1.2 * x + 0.3 * torch.sin(t / 53.0 + 0.7 * channel))
        x0 = x0 + 0.1 * torch.roll(x, 1, dims=-1) * torch.cos(t / 211.0)
        eps = (x - alpha_bar.sqrt() * x0) / (1.0 - alpha_bar).sqrt()
        out = eps if prediction_type == "epsilon" else alpha_bar.sqrt() * eps - (1.0 - alpha_bar).sqrt() * x0
        return out.to(torch.float32)

    return model_fn


def _reference_alphas_cumprod(schedule: ScheduleConfig) -> torch.Tensor:
    return DDIMScheduler(**_diffusers_config(schedule)).alphas_cumprod


def model_numpy_for(schedule: ScheduleConfig) -> Callable:
    return make_model_numpy(_reference_alphas_cumprod(schedule).numpy(), schedule.prediction_type)


def _noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, CHANNELS, HEIGHT, WIDTH), dtype=np.float32)


def _schedule(prediction_type: str, beta: str = "scaled_linear") -> ScheduleConfig:
    return ScheduleConfig(num_train_timesteps=1000, prediction_type=prediction_type, **BETA_SCHEDULES[beta])


def _diffusers_config(schedule: ScheduleConfig) -> dict:
    return {
        "num_train_timesteps": schedule.num_train_timesteps,
        "beta_schedule": schedule.beta_schedule,
        "beta_start": schedule.beta_start,
        "beta_end": schedule.beta_end,
        "prediction_type": schedule.prediction_type,
    }


def _diffusers_scheduler(name: str, schedule: ScheduleConfig, spacing: str):
    config = {**_diffusers_config(schedule), "timestep_spacing": spacing, "steps_offset": 0}
    if name == "ddim":
        return DDIMScheduler(**config, clip_sample=False, set_alpha_to_one=False, thresholding=False)
    if name == "dpmpp-2m":
        return DPMSolverMultistepScheduler(
            **config,
            algorithm_type="dpmsolver++",
            solver_order=2,
            solver_type="midpoint",
            lower_order_final=True,
            final_sigmas_type="zero",
            use_karras_sigmas=False,
            thresholding=False,
        )
    return EulerDiscreteScheduler(
        **config, interpolation_type="linear", use_karras_sigmas=False, final_sigmas_type="zero"
    )


def _run_diffusers(
    name: str,
    noise: np.ndarray,
    schedule: ScheduleConfig,
    num_steps: int,
    spacing: str,
    *,
    eta: float = 0.0,
    step_noise: list[np.ndarray] | None = None,
) -> tuple[list[float], list[np.ndarray], np.ndarray, float]:
    """The standard diffusers loop -> (timesteps, per-step predicted x_0, final latent, init sigma)."""
    scheduler = _diffusers_scheduler(name, schedule, spacing)
    scheduler.set_timesteps(num_steps)
    model_fn = make_model_torch(_reference_alphas_cumprod(schedule), schedule.prediction_type)
    latents = torch.from_numpy(noise) * scheduler.init_noise_sigma
    denoised = []
    for index, t in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(latents, t)
        output = model_fn(model_input, t.expand(latents.shape[0]).to(torch.float32))
        if name == "ddim":
            extra = {"eta": eta}
            if step_noise is not None:
                extra["variance_noise"] = torch.from_numpy(step_noise[index])
            result = scheduler.step(output, t, latents, **extra)
            denoised.append(result.pred_original_sample.numpy())
        elif name == "dpmpp-2m":
            result = scheduler.step(output, t, latents)
            denoised.append(scheduler.model_outputs[-1].numpy())
        else:
            result = scheduler.step(output, t, latents)
            denoised.append(result.pred_original_sample.numpy())
        latents = result.prev_sample
    return scheduler.timesteps.tolist(), denoised, latents.numpy(), float(scheduler.init_noise_sigma)


def _run_engine(name: str, noise: np.ndarray, schedule: ScheduleConfig, num_steps: int, spacing: str, **kwargs):
    return list(sample(name, model_numpy_for(schedule), noise, schedule, num_steps, spacing=spacing, **kwargs))


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _compare(name: str, schedule: ScheduleConfig, spacing: str, num_steps: int = NUM_STEPS) -> dict[str, float]:
    """Run both loops; assert agreement; return the measured max differences."""
    noise = _noise(1)
    steps = _run_engine(name, noise, schedule, num_steps, spacing)
    timesteps, denoised, final, sigma0 = _run_diffusers(name, noise, schedule, num_steps, spacing)
    assert [step.timestep for step in steps] == timesteps
    # torch's float32 linspace rounds a few schedule values 1-5 ulp away from numpy's
    assert init_noise_sigma(name, schedule, num_steps, spacing) == pytest.approx(sigma0, rel=1e-6)
    assert all(step.latent.dtype == np.float32 and step.denoised.dtype == np.float32 for step in steps)
    assert np.all(np.isfinite(final)) and np.abs(final).max() > 0.1  # a non-trivial result
    final_diff = _max_diff(steps[-1].latent, final)
    assert final_diff <= TOLERANCE, f"final latent differs by {final_diff:.2e}"
    # x_0 = (x - sqrt(1 - ᾱ) ε) / sqrt(ᾱ) amplifies diffusers' float32 rounding by about σ = sqrt((1 - ᾱ) / ᾱ):
    # 1e-5 holds up to σ = 15 (scaled_linear's σ_max 14.6); beyond, the bound grows with σ (linear: 157).
    sigmas = schedules.sigmas_at(schedules.alphas_cumprod(schedule), np.array(timesteps, dtype=np.float64))
    denoised_ratio = 0.0
    for step, reference, sigma in zip(steps, denoised, sigmas, strict=True):
        bound = TOLERANCE * max(1.0, sigma / 15.0)
        denoised_ratio = max(denoised_ratio, _max_diff(step.denoised, reference) / bound)
    assert denoised_ratio <= 1.0, f"denoised differs by {denoised_ratio:.2f} x its bound"
    return {
        "final": final_diff,
        "denoised": max(_max_diff(a.denoised, b) for a, b in zip(steps, denoised, strict=True)),
    }


# --------------------------------------------------------------------------- golden tests


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name", ["ddim", "dpmpp-2m", "euler"])
def test_matches_diffusers(name: str, prediction_type: str, spacing: str) -> None:
    _compare(name, _schedule(prediction_type), spacing)


@pytest.mark.parametrize(
    ("beta", "prediction_type", "spacing"),
    [
        ("linear", "epsilon", "trailing"),
        ("linear", "v_prediction", "linspace"),
        ("squaredcos_cap_v2", "epsilon", "leading"),
    ],
)
@pytest.mark.parametrize("name", ["ddim", "dpmpp-2m", "euler"])
def test_matches_diffusers_other_beta_schedules(name: str, beta: str, prediction_type: str, spacing: str) -> None:
    _compare(name, _schedule(prediction_type, beta), spacing)


@pytest.mark.parametrize("name", ["ddim", "dpmpp-2m", "euler"])
def test_cosine_schedule_from_its_last_timestep(name: str) -> None:
    # squaredcos_cap_v2 at t = 999 has ᾱ = 2.4e-9 (σ = 20291): diffusers' float32 x_0 there is only good to
    # a few 1e-3 and its Euler / DPM-Solver++ end about 6e-5 from ours (DDIM: 7e-7), so a looser bound here.
    schedule, noise = _schedule("epsilon", "squaredcos_cap_v2"), _noise(1)
    steps = _run_engine(name, noise, schedule, NUM_STEPS, "trailing")
    _, _, final, _ = _run_diffusers(name, noise, schedule, NUM_STEPS, "trailing")
    assert _max_diff(steps[-1].latent, final) <= 2e-4


@pytest.mark.parametrize("num_steps", [1, 2, 7])
@pytest.mark.parametrize("name", ["ddim", "dpmpp-2m", "euler"])
def test_matches_diffusers_few_steps(name: str, num_steps: int) -> None:
    _compare(name, _schedule("v_prediction"), "trailing", num_steps)


@pytest.mark.parametrize(("prediction_type", "spacing"), [("epsilon", "trailing"), ("v_prediction", "leading")])
def test_ddim_with_eta_matches_diffusers_given_the_same_noise(prediction_type: str, spacing: str) -> None:
    schedule, noise, eta, seeds = _schedule(prediction_type), _noise(2), 0.7, (11, 12)
    steps = _run_engine(
        "ddim", noise, schedule, NUM_STEPS, spacing, eta=eta, rngs=[np.random.default_rng(s) for s in seeds]
    )
    # the documented draw order: per step, item i from its own generator
    replay = [np.random.default_rng(s) for s in seeds]
    step_noise = [
        np.stack([rng.standard_normal((CHANNELS, HEIGHT, WIDTH), dtype=np.float32) for rng in replay])
        for _ in range(NUM_STEPS)
    ]
    _, denoised, final, _ = _run_diffusers("ddim", noise, schedule, NUM_STEPS, spacing, eta=eta, step_noise=step_noise)
    assert _max_diff(steps[-1].latent, final) <= TOLERANCE
    assert max(_max_diff(s.denoised, d) for s, d in zip(steps, denoised, strict=True)) <= TOLERANCE
    deterministic = _run_engine("ddim", noise, schedule, NUM_STEPS, spacing)
    assert _max_diff(deterministic[-1].latent, steps[-1].latent) > 1e-3  # eta really adds noise


def test_ddim_eta_item_is_reproducible_alone() -> None:
    schedule, noise = _schedule("epsilon"), _noise(3)
    both = _run_engine("ddim", noise, schedule, 8, "trailing", eta=1.0, rngs=[np.random.default_rng(s) for s in (5, 6)])
    alone = _run_engine("ddim", noise[1:], schedule, 8, "trailing", eta=1.0, rngs=[np.random.default_rng(6)])
    np.testing.assert_array_equal(both[-1].latent[1:], alone[-1].latent)


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("beta", list(BETA_SCHEDULES))
def test_alphas_cumprod_match_diffusers(beta: str) -> None:
    schedule = _schedule("epsilon", beta)
    reference = DDIMScheduler(**_diffusers_config(schedule))
    ours_betas, ours = schedules.betas(schedule), schedules.alphas_cumprod(schedule)
    assert ours.dtype == np.float64 and ours.shape == (1000,)
    # torch's float32 linspace rounds some values differently from numpy's (scaled_linear: <= 5 ulp)
    np.testing.assert_array_max_ulp(ours_betas.astype(np.float32), reference.betas.numpy(), maxulp=4)
    np.testing.assert_array_max_ulp(ours.astype(np.float32), reference.alphas_cumprod.numpy(), maxulp=8)
    np.testing.assert_array_equal(ours, ours.astype(np.float32))  # float32 values, held in float64


def _diffusers_timesteps(scheduler: str, num_steps: int, spacing: str) -> np.ndarray:
    cls = {"ddim": DDIMScheduler, "dpmsolver_multistep": DPMSolverMultistepScheduler}.get(
        scheduler, EulerDiscreteScheduler
    )
    reference = cls(timestep_spacing=spacing)
    reference.set_timesteps(num_steps)
    return reference.timesteps.numpy()


@pytest.mark.parametrize("scheduler", list(schedules.TIMESTEP_CONVENTIONS))
@pytest.mark.parametrize("spacing", schedules.SPACINGS)
def test_timesteps_match_diffusers(scheduler: str, spacing: str) -> None:
    for num_steps in [*range(1, 60), *range(60, 1000, 37), 999]:
        ours = schedules.discrete_timesteps(1000, num_steps, spacing, scheduler=scheduler)
        theirs = _diffusers_timesteps(scheduler, num_steps, spacing)
        if spacing == "trailing" and len(theirs) == num_steps + 1:  # see the next test
            assert theirs[-1] == -1
            theirs = theirs[:num_steps]
        assert ours.dtype == (np.float64 if scheduler == "euler_discrete" else np.int64)
        np.testing.assert_array_equal(ours, theirs.astype(ours.dtype), err_msg=f"{num_steps} steps")


def test_trailing_spacing_drops_diffusers_extra_timestep() -> None:
    # numpy's arange gives 62 values for 61 trailing steps; diffusers keeps a 62nd timestep, -1
    theirs = _diffusers_timesteps("ddim", 61, "trailing")
    ours = schedules.discrete_timesteps(1000, 61, "trailing")
    assert len(theirs) == 62 and theirs[-1] == -1
    np.testing.assert_array_equal(ours, theirs[:61])


def test_leading_steps_offset() -> None:
    np.testing.assert_array_equal(schedules.discrete_timesteps(1000, 4, "leading", 1), [751, 501, 251, 1])
    with pytest.raises(ValueError, match="outside"):
        schedules.discrete_timesteps(1000, 1000, "leading", 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spacing": "uniform"}, "leading, linspace, trailing"),
        ({"scheduler": "pndm"}, "ddim, dpmsolver_multistep, euler_discrete"),
        ({"num_steps": 0}, "between 1 and 1000"),
        ({"num_steps": 1001}, "between 1 and 1000"),
        ({"num_steps": 2.5}, "must be an integer"),
        ({"steps_offset": -1}, "steps_offset"),
        ({"num_steps": 1000, "spacing": "linspace", "scheduler": "dpmsolver_multistep"}, "repeats timesteps"),
    ],
)
def test_discrete_timesteps_refuses(kwargs: dict, match: str) -> None:
    arguments = {"num_train_timesteps": 1000, "num_steps": 20, "spacing": "trailing", **kwargs}
    with pytest.raises(ValueError, match=match):
        schedules.discrete_timesteps(**arguments)


def test_sigma_helpers() -> None:
    alphas_cumprod = schedules.alphas_cumprod(_schedule("epsilon"))
    sigmas = schedules.sigmas_from_alphas_cumprod(alphas_cumprod)
    assert np.all(np.diff(sigmas) > 0)
    np.testing.assert_allclose(schedules.sigmas_at(alphas_cumprod, [0.0, 999.0]), sigmas[[0, -1]], rtol=1e-7)
    halfway = schedules.sigmas_at(alphas_cumprod, [10.5])[0]
    assert sigmas[10] < halfway < sigmas[11]
    alpha_t, sigma_t = schedules.vp_alpha_sigma(sigmas)
    np.testing.assert_allclose(alpha_t**2, alphas_cumprod, rtol=1e-12)
    np.testing.assert_allclose(alpha_t**2 + sigma_t**2, 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="timesteps must lie"):
        schedules.sigmas_at(alphas_cumprod, [1000.0])


# --------------------------------------------------------------------------- generator contract


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_yields_num_steps_steps_in_order(name: str) -> None:
    steps = _run_engine(name, _noise(), _schedule("epsilon"), 5, "trailing")
    assert [step.index for step in steps] == list(range(5))
    assert all(isinstance(step, SamplerStep) and step.total == 5 for step in steps)
    assert all(step.latent.shape == (BATCH, CHANNELS, HEIGHT, WIDTH) for step in steps)
    timesteps = [step.timestep for step in steps]
    assert timesteps == sorted(timesteps, reverse=True) and len(set(timesteps)) == 5


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_same_inputs_same_arrays(name: str) -> None:
    def run() -> list[SamplerStep]:
        kwargs = {"eta": 0.5, "rngs": [np.random.default_rng(1), np.random.default_rng(2)]} if name == "ddim" else {}
        return _run_engine(name, _noise(4), _schedule("v_prediction"), 6, "trailing", **kwargs)

    first, second = run(), run()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.latent, b.latent)
        np.testing.assert_array_equal(a.denoised, b.denoised)


def test_the_named_functions_are_the_registry() -> None:
    assert list(SAMPLERS) == ["ddim", "dpmpp-2m", "euler"]
    assert (SAMPLERS["ddim"], SAMPLERS["dpmpp-2m"], SAMPLERS["euler"]) == (sample_ddim, sample_dpmpp_2m, sample_euler)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("plms", {}, "choose one of ddim, dpmpp-2m, euler"),
        ("ddim", {"num_steps": 0}, "between 1 and 1000"),
        ("euler", {"num_steps": 1001}, "between 1 and 1000"),
        ("dpmpp-2m", {"num_steps": 20.0}, "must be an integer"),
        ("ddim", {"num_steps": 60, "schedule": ScheduleConfig(num_train_timesteps=50)}, "between 1 and 50"),
        ("euler", {"eta": 0.5}, "ddim sampler only"),
        ("ddim", {"eta": 0.5}, "needs rngs"),
        ("ddim", {"eta": 0.5, "rngs": [np.random.default_rng(0)]}, "1 generators for a batch of 2"),
        ("ddim", {"eta": -1.0}, "eta must be"),
        ("ddim", {"eta": 1.5, "rngs": [np.random.default_rng(0)] * 2}, "eta must be a number from 0 to 1"),
        ("ddim", {"eta": float("nan")}, "eta must be"),
        ("ddim", {"spacing": "uniform"}, "leading, linspace, trailing"),
        ("euler", {"noise": np.zeros((4, 8, 8), np.float32)}, r"shape \(B, C, h, w\)"),
        ("ddim", {"schedule": ScheduleConfig(prediction_type="sample")}, "epsilon, v_prediction"),
        ("ddim", {"schedule": ScheduleConfig(beta_schedule="cosine")}, "squaredcos_cap_v2"),
    ],
)
def test_bad_arguments_fail_at_the_call(name: str, kwargs: dict, match: str) -> None:
    arguments = {
        "model_fn": model_numpy_for(_schedule("epsilon")),
        "noise": _noise(),
        "schedule": _schedule("epsilon"),
        "num_steps": 20,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sample(name, **arguments)  # no next(): the call itself refuses


def test_init_noise_sigma() -> None:
    schedule = _schedule("epsilon")
    assert init_noise_sigma("ddim", schedule, 20) == init_noise_sigma("dpmpp-2m", schedule, 20) == 1.0
    sigma_max = schedules.sigmas_from_alphas_cumprod(schedules.alphas_cumprod(schedule))[-1]
    assert init_noise_sigma("euler", schedule, 20) == pytest.approx(sigma_max, rel=1e-7)
    with pytest.raises(ValueError, match="choose one of ddim, dpmpp-2m, euler"):
        init_noise_sigma("heun", schedule, 20)
    with pytest.raises(ValueError, match="between 1 and 1000"):
        init_noise_sigma("euler", schedule, 0)


def test_wrong_model_output_shape_is_named() -> None:
    steps = sample("euler", lambda x, t: x[:, :1], _noise(), _schedule("epsilon"), 4)
    with pytest.raises(ValueError, match="model_fn returned shape"):
        next(steps)


def test_engine_samplers_does_not_import_torch() -> None:
    code = (
        "import sys, engine.samplers, engine.schedules; "
        "bad = sorted(m for m in ('torch', 'diffusers', 'PySide6') if m in sys.modules); print(bad)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
