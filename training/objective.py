"""The diffusion training objective: the loss of a batch (MSE, min-SNR-gamma weighting for every
prediction type) and the draw of each sample's noise level (uniform or logit-normal, flow shift).
Used by :class:`training.train_diffusion.DiffusionTask`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine import schedules


def diffusion_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    noise_level: torch.Tensor,
    *,
    prediction_type: str,
    min_snr_gamma: float = 0.0,
) -> torch.Tensor:
    """Scalar training loss of a batch: MSE of ``prediction`` against ``target`` (B, C, h, w).

    ``noise_level`` (B,): each sample's ``ᾱ_t`` (epsilon, v_prediction) or flow ``σ`` (flow_prediction).
    ``min_snr_gamma`` > 0 weights each sample's MSE by min(SNR, gamma) / SNR for epsilon
    prediction and min(SNR, gamma) / (SNR + 1) for v prediction, SNR = ᾱ / (1 - ᾱ) at its
    timestep: Hang et al., "Efficient Diffusion Training via Min-SNR Weighting Strategy" (ICCV
    2023), as diffusers' training examples compute it. Each makes the loss min(SNR, gamma) times
    the clean-latent error |x̂_0 - x_0|², which is what the paper weights. For flow (x_t = (1 - σ) x_0
    + σ ε, target v = ε - x_0, x̂_0 = x_t - σ v̂, so |v̂ - v|² = |x̂_0 - x_0|² / σ²) the same
    weighting is min(SNR, gamma) σ² with SNR = ((1 - σ) / σ)². 0: plain MSE.
    """
    if min_snr_gamma <= 0:
        return F.mse_loss(prediction.float(), target)
    per_sample = (prediction.float() - target).square().mean(dim=tuple(range(1, target.ndim)))
    if prediction_type == schedules.FLOW:
        sigma = noise_level
        weight = ((1 - sigma) / sigma).square().clamp(max=min_snr_gamma) * sigma.square()  # σ = 0: weight 0
        return (per_sample * weight).mean()
    snr = noise_level / (1 - noise_level)
    clipped = snr.clamp(max=min_snr_gamma)
    weight = clipped / snr if prediction_type == "epsilon" else clipped / (snr + 1)
    return (per_sample * weight).mean()


def draw_timesteps(
    batch: int,
    generator: torch.Generator,
    device: torch.device,
    *,
    flow: bool,
    sampling: str,
    num_train_timesteps: int,
    shift: float = 1.0,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
) -> torch.Tensor:
    """A batch's noise levels, drawn from ``generator``: (B,).

    epsilon and v (``flow`` False): integer timesteps in [0, N-1]; ``uniform`` is U{0..N-1}
    (DDPM's, v1's draw), ``logit-normal`` is ``floor(u N)``. flow: ``σ = shift(u)`` float32 in
    [0, 1] (:func:`engine.schedules.flow_shift`), ``u`` ~ U(0, 1) for ``uniform``, and for
    ``logit-normal`` ``u = sigmoid(m + s n)``, ``n`` ~ N(0, 1) (Esser et al. 2024, "Scaling Rectified
    Flow Transformers", section 3.1: mid-range noise levels, where the flow is hardest, drawn most).
    """
    if sampling == "auto":
        sampling = "logit-normal" if flow else "uniform"
    if sampling == "uniform" and not flow:
        return torch.randint(0, num_train_timesteps, (batch,), generator=generator, device=device)
    if sampling == "uniform":
        u = torch.rand(batch, generator=generator, device=device)
    else:
        u = torch.sigmoid(logit_mean + logit_std * torch.randn(batch, generator=generator, device=device))
    if not flow:
        return (u * num_train_timesteps).long().clamp(max=num_train_timesteps - 1)
    return shift * u / (1 + (shift - 1) * u)


__all__ = ["diffusion_loss", "draw_timesteps"]
