"""Noise schedules in numpy: betas, alphas_cumprod, inference timesteps and sigmas.

Everything here reproduces what diffusers' schedulers compute for a ``ScheduleConfig`` (the
DDPMScheduler config of a pack), so that a model trained with diffusers samples the same here.

Notation (Ho et al. 2020; Song et al. 2021; Karras et al. 2022):

- ``betas`` ``β_t`` and ``alphas_cumprod`` ``ᾱ_t = ∏_{s<=t} (1 - β_s)`` for training timesteps
  ``t = 0 .. N-1`` (``N = num_train_timesteps``). ``x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε``.
- ``sigma`` ``σ_t = sqrt((1 - ᾱ_t) / ᾱ_t)``: the same noise level in variance-exploding form,
  ``x_t / sqrt(ᾱ_t) = x_0 + σ_t ε`` (Karras et al.'s ``σ``).
- In variance-preserving form (Lu et al. 2022) ``α_t = 1 / sqrt(1 + σ²)``, ``σ_t = σ α_t`` and
  ``λ_t = log(α_t / σ_t) = -log σ``.

Rectified flow (``prediction_type="flow_prediction"``; Liu et al. 2023, Esser et al. 2024 "SD3"):
``x_t = (1 - σ) x_0 + σ ε`` for ``σ`` in (0, 1], the model predicts the velocity ``v = ε - x_0``
and is called at timestep ``σ N``, as diffusers' flow schedulers do. ``shift`` ``s`` maps each
``σ`` to ``s σ / (1 + (s - 1) σ)`` (SD3 uses 3 at 1024 px: more steps at high noise); 1 is none.
The betas are not used. :func:`flow_sigmas` and :func:`flow_dpm_sigmas` give the two diffusers
flow grids (FlowMatchEulerDiscreteScheduler's, DPMSolverMultistepScheduler's ``use_flow_sigmas``);
``timestep_spacing`` does not apply to either.

Precision: diffusers holds the schedule in float32 (torch). :func:`betas` and
:func:`alphas_cumprod` return float64 arrays whose values are those float32 numbers (the same
float32 operations, the cumulative product accumulated in float64 as torch does; torch's
``linspace`` rounds some values a few float32 ulps away from numpy's: scaled_linear up to 3 in
``β``, 5 in ``ᾱ``), so the samplers can compute in float64 on diffusers' schedule. Sigmas are
rounded to float32 where diffusers stores them so.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from engine.pack import BETA_SCHEDULES, PREDICTION_TYPES, ScheduleConfig

FLOW: Final = "flow_prediction"
SPACINGS: Final = ("leading", "linspace", "trailing")
# How each diffusers scheduler turns (num_train_timesteps, num_steps, spacing) into timesteps.
TIMESTEP_CONVENTIONS: Final = {
    "ddim": "DDIMScheduler",
    "dpmsolver_multistep": "DPMSolverMultistepScheduler",
    "euler_discrete": "EulerDiscreteScheduler",
}
MAX_NUM_STEPS: Final = 1000
_MAX_BETA: Final = 0.999  # diffusers' cap in betas_for_alpha_bar


def check_schedule(schedule: ScheduleConfig) -> None:
    """Raise ValueError naming the first field of ``schedule`` that no diffusers scheduler accepts."""
    n = schedule.num_train_timesteps
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"num_train_timesteps must be a positive integer, got {n!r}")
    if schedule.beta_schedule not in BETA_SCHEDULES:
        raise ValueError(f"unknown beta_schedule {schedule.beta_schedule!r}: choose one of {', '.join(BETA_SCHEDULES)}")
    if schedule.prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"unknown prediction_type {schedule.prediction_type!r}: choose one of {', '.join(PREDICTION_TYPES)}"
        )
    shift = schedule.shift
    if isinstance(shift, bool) or not isinstance(shift, int | float) or not 0.0 < float(shift) < math.inf:
        raise ValueError(f"shift must be a number > 0, got {shift!r}")
    if schedule.prediction_type != FLOW and shift != 1.0:
        raise ValueError(f"shift applies to {FLOW} only: {schedule.prediction_type} needs shift 1, got {shift!r}")
    if schedule.beta_schedule != "squaredcos_cap_v2":
        for name in ("beta_start", "beta_end"):
            value = getattr(schedule, name)
            if not isinstance(value, int | float) or not 0.0 < float(value) < 1.0:
                raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")


def check_num_steps(num_steps: int, num_train_timesteps: int) -> None:
    """Raise ValueError unless ``1 <= num_steps <= min(1000, num_train_timesteps)``."""
    limit = min(MAX_NUM_STEPS, num_train_timesteps)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int | np.integer):
        raise ValueError(f"num_steps must be an integer, got {num_steps!r}")
    if not 1 <= num_steps <= limit:
        raise ValueError(
            f"num_steps must be between 1 and {limit} (at most {MAX_NUM_STEPS} and at most "
            f"num_train_timesteps={num_train_timesteps}), got {num_steps}"
        )


def betas(schedule: ScheduleConfig) -> np.ndarray:
    """``β_t`` for ``t = 0 .. N-1``: (N,) float64 holding diffusers' float32 values.

    - ``linear``: ``linspace(beta_start, beta_end, N)``
    - ``scaled_linear``: ``linspace(sqrt(beta_start), sqrt(beta_end), N) ** 2`` (Stable Diffusion)
    - ``squaredcos_cap_v2``: Nichol & Dhariwal 2021 cosine schedule,
      ``β_t = min(1 - ᾱ((t+1)/N) / ᾱ(t/N), 0.999)`` with ``ᾱ(s) = cos((s + 0.008) / 1.008 · π/2)²``
    """
    check_schedule(schedule)
    n = int(schedule.num_train_timesteps)
    if schedule.beta_schedule == "linear":
        values = np.linspace(schedule.beta_start, schedule.beta_end, n).astype(np.float32)
    elif schedule.beta_schedule == "scaled_linear":
        roots = np.linspace(schedule.beta_start**0.5, schedule.beta_end**0.5, n).astype(np.float32)
        values = roots * roots  # squared in float32, as torch does
    else:

        def alpha_bar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        values = np.array(
            [min(1.0 - alpha_bar((i + 1) / n) / alpha_bar(i / n), _MAX_BETA) for i in range(n)], dtype=np.float32
        )
    return values.astype(np.float64)


def alphas_cumprod(schedule: ScheduleConfig) -> np.ndarray:
    """``ᾱ_t = ∏_{s<=t} (1 - β_s)``: (N,) float64, decreasing from about 1 towards 0.

    As diffusers: ``1 - β`` in float32, the product accumulated in float64, rounded to float32.
    """
    alphas = np.float32(1.0) - betas(schedule).astype(np.float32)
    return np.cumprod(alphas.astype(np.float64)).astype(np.float32).astype(np.float64)


def discrete_timesteps(
    num_train_timesteps: int,
    num_steps: int,
    spacing: str,
    steps_offset: int = 0,
    *,
    scheduler: str = "ddim",
) -> np.ndarray:
    """The model timesteps of an inference run, first (noisiest) to last: (num_steps,).

    ``spacing`` as in diffusers (Lin et al. 2023, table 2), ``N = num_train_timesteps``,
    ``n = num_steps``; ``scheduler`` picks which diffusers scheduler's arithmetic to reproduce:

    - ``ddim`` (DDIMScheduler)
        - leading: ``arange(n) * (N // n)``, reversed, ``+ steps_offset``
        - linspace: ``round(linspace(0, N - 1, n))``, reversed
        - trailing: ``round(arange(N, 0, -N / n)) - 1``
    - ``dpmsolver_multistep`` (DPMSolverMultistepScheduler)
        - leading: ``arange(n + 1) * (N // (n + 1))``, reversed, last dropped, ``+ steps_offset``
        - linspace: ``round(linspace(0, N - 1, n + 1))``, reversed, last dropped
        - trailing: as ddim
    - ``euler_discrete`` (EulerDiscreteScheduler)
        - leading and trailing: as ddim, as float
        - linspace: ``linspace(0, N - 1, n)`` in float32, reversed: fractional timesteps, not rounded

    Returns int64 for ``ddim`` and ``dpmsolver_multistep``, float64 (float32 values) for
    ``euler_discrete``. For some ``n`` (61, 103, ... at N = 1000) diffusers' trailing ``arange``
    yields one extra timestep, -1; only the first ``n`` are returned. Raises ValueError for an
    unknown spacing or scheduler, a bad ``num_steps`` or ``steps_offset``, or a combination whose
    timesteps leave ``[0, N-1]`` or repeat (e.g. dpmsolver_multistep, linspace, n = N).
    """
    # 1. validate
    if scheduler not in TIMESTEP_CONVENTIONS:
        raise ValueError(f"unknown scheduler {scheduler!r}: choose one of {', '.join(TIMESTEP_CONVENTIONS)}")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r}: choose one of {', '.join(SPACINGS)}")
    if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int | np.integer):
        raise ValueError(f"num_train_timesteps must be a positive integer, got {num_train_timesteps!r}")
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be a positive integer, got {num_train_timesteps!r}")
    check_num_steps(num_steps, num_train_timesteps)
    if isinstance(steps_offset, bool) or not isinstance(steps_offset, int | np.integer) or steps_offset < 0:
        raise ValueError(f"steps_offset must be a non-negative integer, got {steps_offset!r}")
    total, n = int(num_train_timesteps), int(num_steps)

    # 2. the spacing, in the chosen scheduler's arithmetic
    timesteps: np.ndarray
    if spacing == "trailing":
        # numpy's arange can overshoot by one element (a spurious -1 after the "- 1"): keep n
        timesteps = np.round(np.arange(total, 0, -total / n))[:n] - 1
    elif spacing == "leading":
        if scheduler == "dpmsolver_multistep":
            timesteps = (np.arange(0, n + 1) * (total // (n + 1))).round()[::-1][:-1]
        else:
            timesteps = (np.arange(0, n) * (total // n)).round()[::-1]
        timesteps = timesteps + steps_offset
    elif scheduler == "dpmsolver_multistep":
        timesteps = np.linspace(0, total - 1, n + 1).round()[::-1][:-1]
    elif scheduler == "euler_discrete":
        timesteps = np.linspace(0, total - 1, n, dtype=np.float32)[::-1]
    else:
        timesteps = np.linspace(0, total - 1, n).round()[::-1]
    if scheduler == "euler_discrete":
        timesteps = timesteps.astype(np.float32).astype(np.float64)
    else:
        timesteps = timesteps.astype(np.int64)

    # 3. refuse what no sampler can run on
    if len(timesteps) != n:
        raise ValueError(f"{spacing} spacing gives {len(timesteps)} timesteps for num_steps={n}")
    if timesteps.min() < 0 or timesteps.max() > total - 1:
        raise ValueError(
            f"{spacing} spacing with steps_offset={steps_offset} gives timesteps outside [0, {total - 1}] "
            f"for num_steps={n}"
        )
    if n > 1 and np.any(np.diff(timesteps) >= 0):
        raise ValueError(
            f"{spacing} spacing repeats timesteps for num_steps={n} with {TIMESTEP_CONVENTIONS[scheduler]}'s "
            "arithmetic: choose fewer steps or another spacing"
        )
    return np.ascontiguousarray(timesteps)


def sigmas_from_alphas_cumprod(alphas_cumprod: np.ndarray) -> np.ndarray:
    """``σ_t = sqrt((1 - ᾱ_t) / ᾱ_t)`` for each training timestep: (N,) float64, increasing."""
    alphas_cumprod = np.asarray(alphas_cumprod, dtype=np.float64)
    return np.sqrt((1.0 - alphas_cumprod) / alphas_cumprod)


def sigmas_at(alphas_cumprod: np.ndarray, timesteps: np.ndarray) -> np.ndarray:
    """``σ`` at (possibly fractional) timesteps, linear in ``t`` between training timesteps.

    diffusers' ``interpolation_type="linear"``: ``np.interp`` over the float32 training sigmas;
    the result is rounded to float32 as diffusers stores it. (n,) float64.
    """
    train_sigmas = sigmas_from_alphas_cumprod(alphas_cumprod).astype(np.float32)
    timesteps = np.asarray(timesteps, dtype=np.float64)
    if timesteps.size and (timesteps.min() < 0 or timesteps.max() > len(train_sigmas) - 1):
        raise ValueError(f"timesteps must lie in [0, {len(train_sigmas) - 1}]")
    values = np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)
    return values.astype(np.float32).astype(np.float64)


def append_zero_sigma(sigmas: np.ndarray) -> np.ndarray:
    """Sigmas of the steps followed by ``σ = 0`` (diffusers' ``final_sigmas_type="zero"``): (n + 1,)."""
    return np.concatenate([np.asarray(sigmas, dtype=np.float64), [0.0]])


def flow_shift(sigmas: np.ndarray | float, shift: float) -> np.ndarray:
    """SD3's timestep shift ``s σ / (1 + (s - 1) σ)``: (n,) float64; 1 leaves ``σ`` as it is."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


def _check_flow_grid(num_train_timesteps: int, num_steps: int, shift: float) -> None:
    if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int | np.integer):
        raise ValueError(f"num_train_timesteps must be a positive integer, got {num_train_timesteps!r}")
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be a positive integer, got {num_train_timesteps!r}")
    check_num_steps(num_steps, num_train_timesteps)
    if isinstance(shift, bool) or not isinstance(shift, int | float) or not 0.0 < float(shift) < math.inf:
        raise ValueError(f"shift must be a number > 0, got {shift!r}")


def flow_sigmas(num_train_timesteps: int, num_steps: int, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """FlowMatchEulerDiscreteScheduler's grid: (timesteps (n,), sigmas (n + 1,) ending in 0), float64.

    ``σ_max = shift(1) = 1`` and ``σ_min = shift(1/N)`` from its float32 training table, then
    ``σ = shift(linspace(σ_max, σ_min, n))`` (so ``shift`` is applied twice to ``σ_min``, as
    diffusers does), rounded to float32; timesteps ``σ N`` in float32. Euler and DDIM use it.
    """
    _check_flow_grid(num_train_timesteps, num_steps, shift)
    total, n = int(num_train_timesteps), int(num_steps)
    # 1. the training table's ends, float32 as diffusers' __init__ holds them
    table = np.linspace(1, total, total, dtype=np.float32)[::-1] / np.float32(total)
    table = np.float32(shift) * table / (np.float32(1) + np.float32(shift - 1) * table)
    sigma_max, sigma_min = float(table[0]), float(table[-1])
    # 2. set_timesteps: float64 linspace and shift, then float32
    sigmas = flow_shift(np.linspace(sigma_max * total, sigma_min * total, n) / total, shift).astype(np.float32)
    timesteps = sigmas * np.float32(total)
    return timesteps.astype(np.float64), append_zero_sigma(sigmas.astype(np.float64))


def flow_dpm_sigmas(num_train_timesteps: int, num_steps: int, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """DPMSolverMultistepScheduler's ``use_flow_sigmas`` grid: (timesteps (n,) int64, sigmas (n + 1,)).

    ``σ = shift(1 - linspace(1, 1/N, n + 1))`` reversed, the last dropped (so ``σ_0 = shift(1 - 1/N)``);
    timesteps ``σ N`` truncated to integers as diffusers does; sigmas rounded to float32, then 0.
    """
    _check_flow_grid(num_train_timesteps, num_steps, shift)
    total, n = int(num_train_timesteps), int(num_steps)
    sigmas = flow_shift(1.0 - np.linspace(1, 1 / total, n + 1), shift)[::-1][:-1]
    timesteps = np.trunc(sigmas * total).astype(np.int64)
    return timesteps, append_zero_sigma(sigmas.astype(np.float32).astype(np.float64))


def flow_alpha_sigma(sigma: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Flow ``σ`` -> ``(α_t, σ_t) = (1 - σ, σ)``: ``x_t = α_t x_0 + σ_t ε``."""
    sigma = np.asarray(sigma, dtype=np.float64)
    return 1.0 - sigma, sigma


def vp_alpha_sigma(sigma: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Variance-exploding ``σ`` -> variance-preserving ``(α_t, σ_t) = (1, σ) / sqrt(1 + σ²)``."""
    sigma = np.asarray(sigma, dtype=np.float64)
    alpha_t = 1.0 / np.sqrt(sigma * sigma + 1.0)
    return alpha_t, sigma * alpha_t


__all__ = [
    "FLOW",
    "MAX_NUM_STEPS",
    "SPACINGS",
    "TIMESTEP_CONVENTIONS",
    "alphas_cumprod",
    "append_zero_sigma",
    "betas",
    "check_num_steps",
    "check_schedule",
    "discrete_timesteps",
    "flow_alpha_sigma",
    "flow_dpm_sigmas",
    "flow_shift",
    "flow_sigmas",
    "sigmas_at",
    "sigmas_from_alphas_cumprod",
    "vp_alpha_sigma",
]
