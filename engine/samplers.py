"""Samplers: DDIM, DPM-Solver++(2M) and Euler as small generator functions over one model function.

Each sampler is a function ``(model_fn, noise, schedule, num_steps, ...) -> Iterator[SamplerStep]``
(k-diffusion style, yielding every step as guided-diffusion does, so a viewer can show progress
and a caller can stop between steps). They reproduce diffusers' schedulers, configured as below,
to about 1e-5 on the same model function (tests/engine/test_samplers.py compares them):

- ``ddim``: ``DDIMScheduler(clip_sample=False, set_alpha_to_one=False, steps_offset=0,
  thresholding=False)``, ``step(..., eta=eta)``; with ``eta > 0`` the step noise is drawn here
  from one ``np.random.Generator`` per batch item (diffusers' ``variance_noise``).
- ``dpmpp-2m``: ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
  solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero",
  use_karras_sigmas=False, thresholding=False)``.
- ``euler``: ``EulerDiscreteScheduler(interpolation_type="linear", use_karras_sigmas=False,
  final_sigmas_type="zero", timestep_type="discrete")``, ``step`` with ``s_churn=0``.

All take ``timestep_spacing`` = ``spacing`` (default ``"trailing"``) and the pack's
``ScheduleConfig`` (``num_train_timesteps``, ``beta_schedule``, ``beta_start``, ``beta_end``,
``prediction_type`` in ``{"epsilon", "v_prediction", "flow_prediction"}``, ``shift``). The
arithmetic is float64 on diffusers' float32 schedule; ``model_fn`` sees float32 and the yielded
latents are float32.

Rectified flow (``flow_prediction``, ``x_t = (1 - σ) x_0 + σ ε``, the model predicts ``v = ε - x_0``
at timestep ``σ N``; :mod:`engine.schedules`), as diffusers runs it (tests/engine/test_samplers_flow.py):

- ``euler``: ``FlowMatchEulerDiscreteScheduler(shift=shift)``: ``x' = x + (σ' - σ) v``;
- ``dpmpp-2m``: ``DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=shift,
  prediction_type="flow_prediction")`` configured as above (``α_t = 1 - σ``, ``σ_t = σ``);
- ``ddim``: DDIM on the flow path over the Euler grid (no diffusers scheduler does it); with
  ``η = 0`` it is the Euler step. The spacing does not apply (diffusers' flow grids have none).

``model_fn(sample, timestep)``: ``sample`` (B, C, h, w) float32 and ``timestep`` (B,) float32 ->
model output (B, C, h, w), ``ε`` or ``v`` as ``schedule.prediction_type``: exactly what a
diffusers UNet returns when called with what the diffusers scheduler hands it (for Euler the
input is already divided by ``sqrt(σ² + 1)``; the timestep is fractional with linspace spacing; for
flow ``v`` at the unscaled input and timestep ``σ N``, fractional except with dpmpp-2m).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from engine import schedules
from engine.pack import ScheduleConfig

ModelFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SamplerStep:
    """One finished denoising step.

    ``latent`` is the sampler's state after this step (B, C, h, w) float32, in its own
    parameterisation (DDIM, DPM-Solver++: ``sqrt(ᾱ) x_0 + sqrt(1 - ᾱ) ε``; Euler:
    ``x_0 + σ ε``; every sampler on the flow path: ``(1 - σ) x_0 + σ ε``); after the last step
    it is the final clean latent. ``denoised`` is the model's estimate of the clean latent ``x_0``
    at this step (B, C, h, w) float32, for previews.
    """

    index: int  # 0-based step index
    total: int  # number of steps
    timestep: float  # the model timestep used at this step
    latent: np.ndarray  # x after this step (B, C, h, w)
    denoised: np.ndarray  # predicted x_0 at this step (B, C, h, w)


# --------------------------------------------------------------------------- shared checks


def _check_inputs(model_fn: ModelFn, noise: np.ndarray, schedule: ScheduleConfig, num_steps: int) -> None:
    if not callable(model_fn):
        raise ValueError("model_fn must be callable: model_fn(sample (B,C,h,w), timestep (B,)) -> (B,C,h,w)")
    if not isinstance(noise, np.ndarray) or noise.ndim != 4 or not np.issubdtype(noise.dtype, np.floating):
        shape = getattr(noise, "shape", None)
        raise ValueError(f"noise must be a floating-point numpy array of shape (B, C, h, w), got shape {shape}")
    if 0 in noise.shape:
        raise ValueError(f"noise must not be empty, got shape {noise.shape}")
    if not np.all(np.isfinite(noise)):
        raise ValueError("noise contains NaN or infinite values")
    schedules.check_schedule(schedule)
    schedules.check_num_steps(num_steps, schedule.num_train_timesteps)


def _check_spacing(spacing: str) -> None:
    if spacing not in schedules.SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r}: choose one of {', '.join(schedules.SPACINGS)}")


def _call_model(model_fn: ModelFn, sample: np.ndarray, timestep: float) -> np.ndarray:
    """Call ``model_fn`` with float32 inputs; return its output (B, C, h, w) as float64."""
    batch = sample.shape[0]
    output = np.asarray(
        model_fn(sample.astype(np.float32), np.full((batch,), timestep, dtype=np.float32)), dtype=np.float64
    )
    if output.shape != sample.shape:
        raise ValueError(f"model_fn returned shape {output.shape}, expected {sample.shape} (the sample's shape)")
    return output


def _step(index: int, total: int, timestep: float, latent: np.ndarray, denoised: np.ndarray) -> SamplerStep:
    return SamplerStep(
        index=index,
        total=total,
        timestep=float(timestep),
        latent=latent.astype(np.float32),
        denoised=denoised.astype(np.float32),
    )


# --------------------------------------------------------------------------- DDIM


def sample_ddim(
    model_fn: ModelFn,
    noise: np.ndarray,
    schedule: ScheduleConfig,
    num_steps: int,
    *,
    eta: float = 0.0,
    rngs: Sequence[np.random.Generator] | None = None,
    spacing: str = "trailing",
) -> Iterator[SamplerStep]:
    """DDIM (Song et al. 2021, eq. 12), as diffusers' DDIMScheduler.

    With ``α`` the paper's (cumulative) alpha, ``ᾱ`` here, each step from ``t`` to ``t' = t - N // n``
    (diffusers' previous timestep whatever the spacing, so with linspace spacing not always the run's
    next timestep; ``ᾱ_{t'} = ᾱ_0`` when ``t' < 0``, ``set_alpha_to_one=False``)::

        x_0 = (x_t - sqrt(1 - ᾱ_t) ε_θ) / sqrt(ᾱ_t)                  "predicted x_0"
        σ_t = η sqrt((1 - ᾱ_{t'}) / (1 - ᾱ_t)) sqrt(1 - ᾱ_t / ᾱ_{t'})  eq. 16
        x_{t'} = sqrt(ᾱ_{t'}) x_0 + sqrt(1 - ᾱ_{t'} - σ_t²) ε_θ + σ_t z

    For ``v_prediction``: ``x_0 = sqrt(ᾱ_t) x_t - sqrt(1 - ᾱ_t) v``, ``ε_θ = sqrt(ᾱ_t) v + sqrt(1 - ᾱ_t) x_t``.

    For ``flow_prediction`` (``x_t = α_t x_0 + σ_t ε`` with ``α_t = 1 - σ``, ``σ_t = σ`` on the
    :func:`schedules.flow_sigmas` grid, ``σ`` to ``σ'``), the same update written for any
    ``(α_t, σ_t)`` (eq. 12 with the DDPM posterior's variance)::

        x_0 = x_t - σ v,  ε_θ = x_t + (1 - σ) v
        s = η σ' sqrt(1 - (α_t σ')² / (α_{t'} σ)²)
        x' = α_{t'} x_0 + sqrt(σ'² - s²) ε_θ + s z          (η = 0: x' = x_t + (σ' - σ) v, Euler)

    It is DDIM in variance-preserving form on ``x / sqrt(α_t² + σ_t²)``, scaled back.

    Args:
        model_fn: see the module docstring; called with the discrete timestep ``t``.
        noise: (B, C, h, w) unit Gaussian noise; ``x_T = noise`` (init_noise_sigma 1).
        eta: ``η`` in [0, 1]; 0 is deterministic DDIM, 1 is DDPM-like.
        rngs: one generator per batch item, required when ``eta > 0``: at every step item ``i``'s
            ``z`` is ``rngs[i].standard_normal((C, h, w), dtype=np.float32)``, so an item is
            reproducible alone from its own generator. Not used when ``eta == 0``.
        spacing: timestep spacing, as DDIMScheduler's ``timestep_spacing``.
    """
    # 1. validate before anything runs (a generator body would only run at the first next())
    _check_inputs(model_fn, noise, schedule, num_steps)
    if isinstance(eta, bool) or not isinstance(eta, int | float | np.integer | np.floating):
        raise ValueError(f"eta must be a number from 0 to 1, got {eta!r}")
    if not 0.0 <= eta <= 1.0:  # also refuses NaN; above 1 the DDIM direction term can turn imaginary
        raise ValueError(f"eta must be a number from 0 to 1, got {eta!r}")
    if eta > 0:
        if rngs is None:
            raise ValueError("eta > 0 needs rngs: one np.random.Generator per batch item")
        rngs = list(rngs)
        if len(rngs) != noise.shape[0]:
            raise ValueError(f"rngs has {len(rngs)} generators for a batch of {noise.shape[0]}")
        if not all(isinstance(rng, np.random.Generator) for rng in rngs):
            raise ValueError("rngs must hold np.random.Generator objects")
    if schedule.prediction_type == schedules.FLOW:
        _check_spacing(spacing)
        timesteps, sigmas = schedules.flow_sigmas(schedule.num_train_timesteps, num_steps, schedule.shift)
        return _ddim_flow_steps(model_fn, noise, timesteps, sigmas, float(eta), rngs)
    timesteps = schedules.discrete_timesteps(schedule.num_train_timesteps, num_steps, spacing, scheduler="ddim")
    alphas_cumprod = schedules.alphas_cumprod(schedule)
    return _ddim_steps(model_fn, noise, schedule, timesteps, alphas_cumprod, float(eta), rngs)


def _ddim_steps(
    model_fn: ModelFn,
    noise: np.ndarray,
    schedule: ScheduleConfig,
    timesteps: np.ndarray,
    alphas_cumprod: np.ndarray,
    eta: float,
    rngs: Sequence[np.random.Generator] | None,
) -> Iterator[SamplerStep]:
    total = len(timesteps)
    stride = schedule.num_train_timesteps // total  # diffusers' t -> t - N // n, whatever the spacing
    x = noise.astype(np.float64)
    for index, t in enumerate(timesteps):
        # 1. ᾱ_t and ᾱ_{t'}
        t_prev = int(t) - stride
        alpha_bar = alphas_cumprod[t]
        alpha_bar_prev = alphas_cumprod[t_prev] if t_prev >= 0 else alphas_cumprod[0]

        # 2. model output -> predicted x_0 and ε
        output = _call_model(model_fn, x, float(t))
        if schedule.prediction_type == "epsilon":
            denoised = (x - math.sqrt(1.0 - alpha_bar) * output) / math.sqrt(alpha_bar)
            eps = output
        else:
            denoised = math.sqrt(alpha_bar) * x - math.sqrt(1.0 - alpha_bar) * output
            eps = math.sqrt(alpha_bar) * output + math.sqrt(1.0 - alpha_bar) * x

        # 3. σ_t(η), eq. 16
        variance = (1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * (1.0 - alpha_bar / alpha_bar_prev)
        std_dev = eta * math.sqrt(variance)

        # 4. x_{t'} = sqrt(ᾱ_{t'}) x_0 + direction to x_t (+ σ_t z)
        x = math.sqrt(alpha_bar_prev) * denoised + math.sqrt(1.0 - alpha_bar_prev - std_dev**2) * eps
        if eta > 0:
            assert rngs is not None
            z = np.stack([rng.standard_normal(x.shape[1:], dtype=np.float32) for rng in rngs])
            x = x + std_dev * z.astype(np.float64)
        yield _step(index, total, t, x, denoised)


def _ddim_flow_steps(
    model_fn: ModelFn,
    noise: np.ndarray,
    timesteps: np.ndarray,
    sigmas: np.ndarray,
    eta: float,
    rngs: Sequence[np.random.Generator] | None,
) -> Iterator[SamplerStep]:
    total = len(timesteps)
    x = noise.astype(np.float64)
    for index, t in enumerate(timesteps):
        # 1. model output v -> predicted x_0 and ε
        sigma, sigma_next = float(sigmas[index]), float(sigmas[index + 1])
        output = _call_model(model_fn, x, float(t))
        denoised = x - sigma * output
        eps = x + (1.0 - sigma) * output

        # 2. the step's noise s (0 at the last step, σ' = 0)
        ratio = ((1.0 - sigma) * sigma_next) / ((1.0 - sigma_next) * sigma)
        std_dev = eta * sigma_next * math.sqrt(max(0.0, 1.0 - ratio * ratio))

        # 3. x' = α' x_0 + direction to x_t (+ s z)
        x = (1.0 - sigma_next) * denoised + math.sqrt(max(0.0, sigma_next**2 - std_dev**2)) * eps
        if eta > 0:
            assert rngs is not None
            z = np.stack([rng.standard_normal(x.shape[1:], dtype=np.float32) for rng in rngs])
            x = x + std_dev * z.astype(np.float64)
        yield _step(index, total, t, x, denoised)


# --------------------------------------------------------------------------- DPM-Solver++(2M)


def sample_dpmpp_2m(
    model_fn: ModelFn,
    noise: np.ndarray,
    schedule: ScheduleConfig,
    num_steps: int,
    *,
    spacing: str = "trailing",
) -> Iterator[SamplerStep]:
    """DPM-Solver++(2M) (Lu et al. 2022, algorithm 2), as diffusers' DPMSolverMultistepScheduler.

    Notation: ``σ_i`` the sigma of step ``i`` (:func:`schedules.sigmas_at` at the discrete
    timesteps, then 0), ``α_{t_i} = 1 / sqrt(1 + σ_i²)``, ``σ_{t_i} = σ_i α_{t_i}``,
    ``λ_{t_i} = log(α_{t_i} / σ_{t_i})``, ``x_θ`` the data prediction (``denoised``)::

        h_i = λ_{t_{i+1}} - λ_{t_i}
        first step, and the last (lower_order_final / final sigma 0):  D_i = x_θ(x_i, t_i)
        otherwise:  r_i = h_{i-1} / h_i,  D_i = (1 + 1/(2 r_i)) x_θ(x_i, t_i) - 1/(2 r_i) x_θ(x_{i-1}, t_{i-1})
        x_{i+1} = (σ_{t_{i+1}} / σ_{t_i}) x_i - α_{t_{i+1}} (e^{-h_i} - 1) D_i

    ``x_θ = (x - σ_t ε) / α_t`` for epsilon, ``x_θ = α_t x - σ_t v`` for v_prediction. The last
    step goes to ``σ = 0`` (``λ = ∞``), where the update is exactly ``x = D``. For flow_prediction
    ``σ_i`` is :func:`schedules.flow_dpm_sigmas`'s, ``α_{t_i} = 1 - σ_i``, ``σ_{t_i} = σ_i`` and
    ``x_θ = x - σ_i v``; the model is called at the integer timestep ``int(σ_i N)``.

    Args:
        model_fn: see the module docstring; called with the discrete timestep ``t_i``.
        noise: (B, C, h, w) unit Gaussian noise; ``x_0 = noise`` (init_noise_sigma 1).
        spacing: timestep spacing, as DPMSolverMultistepScheduler's ``timestep_spacing``.
    """
    # 1. validate and build the schedule
    _check_inputs(model_fn, noise, schedule, num_steps)
    if schedule.prediction_type == schedules.FLOW:
        _check_spacing(spacing)
        timesteps, sigmas = schedules.flow_dpm_sigmas(schedule.num_train_timesteps, num_steps, schedule.shift)
        alpha_ts, sigma_ts = schedules.flow_alpha_sigma(sigmas)
    else:
        timesteps = schedules.discrete_timesteps(
            schedule.num_train_timesteps, num_steps, spacing, scheduler="dpmsolver_multistep"
        )
        sigmas = schedules.append_zero_sigma(schedules.sigmas_at(schedules.alphas_cumprod(schedule), timesteps))
        alpha_ts, sigma_ts = schedules.vp_alpha_sigma(sigmas)
    return _dpmpp_2m_steps(model_fn, noise, schedule, timesteps, sigmas, alpha_ts, sigma_ts)


def _dpmpp_2m_steps(
    model_fn: ModelFn,
    noise: np.ndarray,
    schedule: ScheduleConfig,
    timesteps: np.ndarray,
    sigmas: np.ndarray,
    alpha_ts: np.ndarray,
    sigma_ts: np.ndarray,
) -> Iterator[SamplerStep]:
    total = len(timesteps)
    with np.errstate(divide="ignore"):  # λ = +inf at the final σ = 0, never used in arithmetic
        lambdas = np.log(alpha_ts) - np.log(sigma_ts)
    x = noise.astype(np.float64)
    denoised_prev: np.ndarray | None = None
    for index, t in enumerate(timesteps):
        # 1. data prediction x_θ(x_i, t_i)
        alpha_t, sigma_t = alpha_ts[index], sigma_ts[index]
        output = _call_model(model_fn, x, float(t))
        if schedule.prediction_type == "epsilon":
            denoised = (x - sigma_t * output) / alpha_t
        elif schedule.prediction_type == schedules.FLOW:
            denoised = x - sigma_t * output
        else:
            denoised = alpha_t * x - sigma_t * output

        # 2. step to σ_{i+1}: first order at the first and the last step, else the 2M correction
        if sigmas[index + 1] == 0.0:
            x = denoised
        else:
            h = lambdas[index + 1] - lambdas[index]
            if denoised_prev is None:
                d = denoised
            else:
                r = (lambdas[index] - lambdas[index - 1]) / h
                d = denoised + (0.5 / r) * (denoised - denoised_prev)
            x = (sigma_ts[index + 1] / sigma_t) * x - (alpha_ts[index + 1] * math.expm1(-h)) * d
        denoised_prev = denoised
        yield _step(index, total, t, x, denoised)


# --------------------------------------------------------------------------- Euler


def _euler_sigmas(schedule: ScheduleConfig, num_steps: int, spacing: str) -> tuple[np.ndarray, np.ndarray]:
    """EulerDiscreteScheduler's (timesteps (n,), sigmas (n + 1,) ending in 0); FlowMatchEulerDiscreteScheduler's
    for flow."""
    if schedule.prediction_type == schedules.FLOW:
        _check_spacing(spacing)
        return schedules.flow_sigmas(schedule.num_train_timesteps, num_steps, schedule.shift)
    timesteps = schedules.discrete_timesteps(
        schedule.num_train_timesteps, num_steps, spacing, scheduler="euler_discrete"
    )
    sigmas = schedules.append_zero_sigma(schedules.sigmas_at(schedules.alphas_cumprod(schedule), timesteps))
    return timesteps, sigmas


def _euler_init_noise_sigma(sigmas: np.ndarray, spacing: str, prediction_type: str) -> float:
    if prediction_type == schedules.FLOW:
        return 1.0  # x at σ = 1 is pure noise
    # diffusers: σ_max for linspace and trailing, sqrt(σ_max² + 1) for leading (computed in float32)
    sigma_max = float(np.max(sigmas))
    if spacing in ("linspace", "trailing"):
        return sigma_max
    return float(np.float32(math.sqrt(sigma_max**2 + 1.0)))


def sample_euler(
    model_fn: ModelFn,
    noise: np.ndarray,
    schedule: ScheduleConfig,
    num_steps: int,
    *,
    spacing: str = "trailing",
) -> Iterator[SamplerStep]:
    """Euler (Karras et al. 2022, algorithm 2 with ``S_churn = 0``: no Heun correction), as
    diffusers' EulerDiscreteScheduler.

    Notation: ``t_i`` in Karras et al. is the noise level ``σ_i`` here (:func:`schedules.sigmas_at`
    at the model timesteps, linearly interpolated, then 0); ``D_θ(x; σ)`` is ``denoised``::

        x_0 = noise · init_noise_sigma
        D_θ(x_i; σ_i) = x_i - σ_i ε(x_i / sqrt(σ_i² + 1), t_i)                    epsilon
                      = x_i / (σ_i² + 1) - σ_i / sqrt(σ_i² + 1) · v(x_i / sqrt(σ_i² + 1), t_i)   v
        d_i = (x_i - D_θ(x_i; σ_i)) / σ_i
        x_{i+1} = x_i + (σ_{i+1} - σ_i) d_i

    For flow_prediction (FlowMatchEulerDiscreteScheduler, :func:`schedules.flow_sigmas`): ``x_0 = noise``,
    the model sees ``x_i`` unscaled at timestep ``σ_i N``, ``D = x_i - σ_i v`` and
    ``x_{i+1} = x_i + (σ_{i+1} - σ_i) v``.

    Args:
        model_fn: see the module docstring; called with ``x_i / sqrt(σ_i² + 1)`` and ``t_i``.
        noise: (B, C, h, w) unit Gaussian noise, scaled here by :func:`init_noise_sigma`.
        spacing: timestep spacing, as EulerDiscreteScheduler's ``timestep_spacing``.
    """
    # 1. validate and build the schedule
    _check_inputs(model_fn, noise, schedule, num_steps)
    timesteps, sigmas = _euler_sigmas(schedule, num_steps, spacing)
    noise_sigma = _euler_init_noise_sigma(sigmas, spacing, schedule.prediction_type)
    return _euler_steps(model_fn, noise, schedule, timesteps, sigmas, noise_sigma)


def _euler_steps(
    model_fn: ModelFn,
    noise: np.ndarray,
    schedule: ScheduleConfig,
    timesteps: np.ndarray,
    sigmas: np.ndarray,
    noise_sigma: float,
) -> Iterator[SamplerStep]:
    total = len(timesteps)
    x = noise.astype(np.float64) * noise_sigma
    for index, t in enumerate(timesteps):
        sigma = sigmas[index]
        if schedule.prediction_type == schedules.FLOW:  # the velocity is the step's direction
            output = _call_model(model_fn, x, float(t))
            denoised = x - sigma * output
            x = x + output * (sigmas[index + 1] - sigma)
            yield _step(index, total, t, x, denoised)
            continue
        # 1. D_θ(x_i; σ_i) from the model on the scaled input
        c_in = 1.0 / math.sqrt(sigma**2 + 1.0)
        output = _call_model(model_fn, x * c_in, float(t))
        if schedule.prediction_type == "epsilon":
            denoised = x - sigma * output
        else:
            denoised = output * (-sigma * c_in) + x / (sigma**2 + 1.0)

        # 2. Euler step along d_i
        derivative = (x - denoised) / sigma
        x = x + derivative * (sigmas[index + 1] - sigma)
        yield _step(index, total, t, x, denoised)


# --------------------------------------------------------------------------- by name

SAMPLERS: Final[dict[str, Callable[..., Iterator[SamplerStep]]]] = {
    "ddim": sample_ddim,
    "dpmpp-2m": sample_dpmpp_2m,
    "euler": sample_euler,
}


def _check_name(name: str) -> None:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)}")


def sample(
    name: str,
    model_fn: ModelFn,
    noise: np.ndarray,
    schedule: ScheduleConfig,
    num_steps: int,
    *,
    eta: float = 0.0,
    rngs: Sequence[np.random.Generator] | None = None,
    spacing: str = "trailing",
) -> Iterator[SamplerStep]:
    """Run the sampler called ``name`` (a key of :data:`SAMPLERS`); yields ``num_steps`` SamplerStep.

    ``eta`` applies to ``ddim`` only (a non-zero ``eta`` with another sampler is an error);
    ``rngs`` is used by ``ddim`` with ``eta > 0`` and ignored otherwise. Arguments are checked
    at the call, before the first step.
    """
    _check_name(name)
    if name == "ddim":
        return sample_ddim(model_fn, noise, schedule, num_steps, eta=eta, rngs=rngs, spacing=spacing)
    if eta != 0:
        raise ValueError(f"eta applies to the ddim sampler only, not {name!r}")
    return SAMPLERS[name](model_fn, noise, schedule, num_steps, spacing=spacing)


def init_noise_sigma(name: str, schedule: ScheduleConfig, num_steps: int, spacing: str = "trailing") -> float:
    """Standard deviation of the sampler's starting latent, as diffusers' ``init_noise_sigma``.

    1 for ``ddim`` and ``dpmpp-2m``; for ``euler`` the largest ``σ`` (linspace, trailing) or
    ``sqrt(σ_max² + 1)`` (leading); 1 for every sampler on the flow path. The samplers apply it
    themselves to unit ``noise``.
    """
    _check_name(name)
    schedules.check_schedule(schedule)
    schedules.check_num_steps(num_steps, schedule.num_train_timesteps)
    if name != "euler":
        if spacing not in schedules.SPACINGS:
            raise ValueError(f"unknown timestep spacing {spacing!r}: choose one of {', '.join(schedules.SPACINGS)}")
        return 1.0
    _, sigmas = _euler_sigmas(schedule, num_steps, spacing)
    return _euler_init_noise_sigma(sigmas, spacing, schedule.prediction_type)


__all__ = [
    "SAMPLERS",
    "ModelFn",
    "SamplerStep",
    "init_noise_sigma",
    "sample",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample_euler",
]
