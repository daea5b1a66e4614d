"""Train the KL autoencoder (``cxr-studio train vae``) and measure it (PSNR, SSIM).

Loss on a batch x (B, 1, H, W) in [-1, 1], posterior N(μ, σ²) (B, C, h, w), z = μ + σ ε,
reconstruction x̂ = decode(z)::

    L = |x̂ - x|₁ + edge_weight |∇x̂ - ∇x|₁ + kl_weight KL(N(μ, σ²) || N(0, 1))

every term a mean per element; ∇ is the Sobel gradient (x and y), which sharpens edges that
L1 alone blurs. Validation decodes the posterior mean and reports the same loss, PSNR and SSIM
(Gaussian window 11, σ 1.5, on [0, 1]). Every checkpoint's ``config.json`` carries
``scaling_factor = 1 / std`` of posterior samples of (up to 256) training images, so that the
diffusion model sees latents of about unit variance.

The training images are decoded once into one tensor on the device; batches are drawn by index
and augmented there (small shift/zoom/rotation, gamma/contrast/brightness; never a flip).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import nn

from training import distributed
from training.checkpoint import LatentDiffusionModel, build_model, save_checkpoint
from training.datasets import (
    NO_AUGMENTATION,
    VAL_LIMIT,
    Augmentation,
    augment,
    evenly_spaced,
    load_images,
    random_crop,
)
from training.loop import (
    FitResult,
    fit,
    iter_chunks,
    make_log,
    manifest_and_device,
    manifest_info,
    pick_precision,
    resolve_config,
    seed_everything,
    use_compile,
)
from training.models.config import ModelConfig
from training.options import Log, TrainingError, TrainOptions
from training.precision import autocast
from training.run_folder import discard_on_failure, image_grid, open_run, resumes

SCALE_IMAGES = 256  # training images whose latents set the scaling factor
GRID_IMAGES = 8


# --------------------------------------------------------------------------- metrics


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image (B,) in dB of (B, C, H, W) images; capped at 100 dB."""
    mse = (a.float() - b.float()).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(data_range**2 * 1e-10))


def gaussian_window(size: int = 11, sigma: float = 1.5, device: torch.device | None = None) -> torch.Tensor:
    """(size,) float32 Gaussian weights summing to 1."""
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return (w / w.sum()).float()


def ssim(
    a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image (B,) of (B, C, H, W) images.

    Gaussian-weighted local statistics (population variances, K1 0.01, K2 0.03) over the
    positions where the whole window fits (no padding), averaged over positions and channels;
    as ``skimage.metrics.structural_similarity(gaussian_weights=True, use_sample_covariance=False)``.
    """
    a, b = a.float(), b.float()
    channels = a.shape[1]
    w = gaussian_window(window_size, sigma, a.device)
    wx = w.view(1, 1, 1, -1).expand(channels, 1, 1, window_size)
    wy = w.view(1, 1, -1, 1).expand(channels, 1, window_size, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, wx, groups=channels), wy, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return index.flatten(1).mean(dim=1)


def sobel(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> Sobel x and y gradients (B, 2, H-2, W-2)."""
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype)
    kernel = torch.stack([gx, gx.t()]).unsqueeze(1)  # (2, 1, 3, 3)
    return F.conv2d(x, kernel)


def vae_loss(
    recon: torch.Tensor,
    target: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    *,
    kl_weight: float,
    edge_weight: float,
) -> torch.Tensor:
    """The module docstring's L, a scalar (float32)."""
    recon, target, mean, logvar = recon.float(), target.float(), mean.float(), logvar.float()
    l1 = (recon - target).abs().mean()
    edge = (sobel(recon) - sobel(target)).abs().mean()
    kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()
    return l1 + edge_weight * edge + kl_weight * kl


class VAELoss(nn.Module):
    """(x (B, 1, H, W), ε (B, C, h, w)) -> loss: the part of a training step worth compiling."""

    def __init__(self, vae: AutoencoderKL, kl_weight: float, edge_weight: float):
        super().__init__()
        self.vae = vae
        self.kl_weight, self.edge_weight = kl_weight, edge_weight

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # return_dict=False: plain tuples, no output dataclasses inside a compiled graph
        posterior = self.vae.encode(x, return_dict=False)[0]
        recon = self.vae.decode(posterior.mean + posterior.std * noise, return_dict=False)[0]
        return vae_loss(
            recon, x, posterior.mean, posterior.logvar, kl_weight=self.kl_weight, edge_weight=self.edge_weight
        )


# --------------------------------------------------------------------------- options and task


@dataclass(frozen=True)
class VAEOptions(TrainOptions):
    """``train vae`` options: :class:`training.loop.TrainOptions` plus the loss weights and augmentation."""

    config: str | None = "default"
    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-4
    checkpoint_every: int = 500
    kl_weight: float = 1e-6
    edge_weight: float = 0.2
    augment: bool = True
    crop: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.config is None:
            raise TrainingError("--config is required for train vae (tiny, cpu, default or FILE.json)")
        if isinstance(self.crop, bool) or not isinstance(self.crop, int) or self.crop < 0:
            raise TrainingError(f"--crop must be 0 (whole images) or a size in pixels, got {self.crop!r}")
        for name in ("kl_weight", "edge_weight"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value >= 0:
                raise TrainingError(f"--{name.replace('_', '-')} must be a number >= 0, got {value!r}")


class VAETask:
    """The VAE for :func:`training.loop.fit`: images on the device, loss, validation, grids."""

    name = "vae"

    def __init__(
        self,
        model: LatentDiffusionModel,
        train_images: torch.Tensor,
        val_images: torch.Tensor,
        options: VAEOptions,
        device: torch.device,
    ):
        self.model, self.config, self.options, self.device = model, model.config, options, device
        self.precision = pick_precision(options.precision, device)
        self.vae = model.vae.to(device)
        if device.type == "cuda":
            self.vae.to(memory_format=torch.channels_last)
        self.vae.train()
        self.train_images, self.val_images = train_images, val_images  # (N, 1, H, W) float16 on device
        self.num_train = train_images.shape[0]
        self.augmentation = Augmentation() if options.augment else NO_AUGMENTATION
        self.loss = VAELoss(self.vae, options.kl_weight, options.edge_weight)
        self.loss_fn = torch.compile(self.loss) if use_compile(options, device) else self.loss
        self._scaling: dict[int, float] = {}

    def trainable(self) -> dict[str, nn.Module]:
        return {"vae": self.vae}

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        wrapped = wrap(self.loss)
        self.loss_fn = torch.compile(wrapped) if use_compile(self.options, self.device) else wrapped

    def train_loss(self, indices: torch.Tensor, generator: torch.Generator, share: slice | None = None) -> torch.Tensor:
        """The loss of the micro-batch ``indices`` (or of its positions ``share``: the crops,
        augmentation and noise drawn for all of it, so that a share sees what one process would)."""
        x = self.train_images[indices].float()
        if self.options.crop:
            x = random_crop(x, self.options.crop, generator)
        if self.augmentation != NO_AUGMENTATION:
            x = augment(x, generator, self.augmentation)
        c = self.config
        latent = x.shape[-1] // c.downsample_factor
        shape = (x.shape[0], c.latent_channels, latent, latent)
        noise = torch.randn(shape, generator=generator, device=self.device)
        if share is not None:
            x, noise = x[share], noise[share]
        return self.loss_fn(x, noise)

    def after_step(self, step: int) -> None:
        pass

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        count = self.val_images.shape[0]
        if count == 0:
            return {}
        self.vae.eval()
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)
        for chunk in iter_chunks(count, self.options.batch_size):
            x = self.val_images[chunk].float()
            with autocast(self.device, self.precision):
                posterior = self.vae.encode(x).latent_dist
                recon = self.vae.decode(posterior.mean).sample
            loss = vae_loss(
                recon,
                x,
                posterior.mean,
                posterior.logvar,
                kl_weight=self.options.kl_weight,
                edge_weight=self.options.edge_weight,
            )
            unit_recon, unit_x = ((recon.float() + 1) / 2).clamp(0, 1), ((x + 1) / 2).clamp(0, 1)
            totals[0] += loss.double() * x.shape[0]
            totals[1] += psnr(unit_recon, unit_x).double().sum()
            totals[2] += ssim(unit_recon, unit_x).double().sum()
        self.vae.train()
        loss, psnr_db, ssim_value = (totals / count).tolist()
        return {"val_loss": loss, "val_psnr": psnr_db, "val_ssim": ssim_value}

    @torch.no_grad()
    def sample_grid(self) -> np.ndarray:
        """Originals (top row) over reconstructions from the posterior mean (bottom row)."""
        images = self.val_images if self.val_images.shape[0] else self.train_images
        x = images[:GRID_IMAGES].float()
        self.vae.eval()
        with autocast(self.device, self.precision):
            recon = self.vae.decode(self.vae.encode(x).latent_dist.mean).sample
        self.vae.train()
        both = torch.cat([x, recon.float()]).clamp(-1, 1).add(1).div(2)[:, 0]
        return image_grid(both.cpu().numpy(), columns=x.shape[0])

    @torch.no_grad()
    def measure_scaling_factor(self, step: int) -> float:
        """1 / std of posterior samples of up to SCALE_IMAGES evenly spaced training images (float32
        encoder, a fixed noise seed: the same weights always give the same factor)."""
        if step not in self._scaling:
            count = min(SCALE_IMAGES, self.num_train)
            indices = torch.linspace(0, self.num_train - 1, count, device=self.device).round().long()
            generator = torch.Generator(device=self.device).manual_seed(self.options.seed)
            total, total_sq, n = 0.0, 0.0, 0
            self.vae.eval()
            for chunk in iter_chunks(count, self.options.batch_size):
                posterior = self.vae.encode(self.train_images[indices[chunk]].float()).latent_dist
                noise = torch.randn(posterior.mean.shape, generator=generator, device=self.device)
                z = (posterior.mean + posterior.std * noise).double()
                total, total_sq, n = total + z.sum().item(), total_sq + z.square().sum().item(), n + z.numel()
            self.vae.train()
            std = max(total_sq / n - (total / n) ** 2, 0.0) ** 0.5
            if not std > 0:
                raise TrainingError("the VAE's latents have zero variance; cannot set the scaling factor")
            self._scaling = {step: 1.0 / std}
        return self._scaling[step]

    def checkpoint_config(self, step: int) -> ModelConfig:
        return replace(self.config, scaling_factor=self.measure_scaling_factor(step))

    def write_checkpoint(self, folder: Path, step: int) -> None:
        m = self.model
        save_checkpoint(folder, self.checkpoint_config(step), self.vae, m.unet, m.text)

    def extra_state(self) -> dict[str, dict[str, torch.Tensor]]:
        return {}

    def load_extra_state(self, parts: dict[str, dict[str, torch.Tensor]]) -> None:
        pass


# --------------------------------------------------------------------------- entry point


def check_crop(crop: int, config: ModelConfig) -> None:
    """``--crop`` 0, or a size up to the image size and a multiple of the downsample factor."""
    if crop and (crop > config.image_size or crop % config.downsample_factor):
        raise TrainingError(
            f"--crop {crop}: must be at most the image size {config.image_size} "
            f"and a multiple of the downsample factor {config.downsample_factor}"
        )


def train_vae(options: VAEOptions, *, resume: bool = False, log: Log | None = None) -> FitResult:
    """Train (or with ``resume`` continue) a VAE run in ``options.out``; returns the fit result.

    Raises DatasetError, ConfigError, TrainingError or TextEncoderError before anything is
    written when the manifest, config or run folder cannot be used.
    """
    log = log or make_log(options.quiet)
    # 1. data, device, config: all checked before the run folder is touched
    manifest, device = manifest_and_device(options, log)
    train_records, val_records = manifest.split("train"), manifest.split("val")
    resume = resumes(options.out, "vae", resume, log)
    config = None if resume else resolve_config(options.config or "")
    if config is not None:
        check_crop(options.crop, config)
    info = {"config": config.to_json() if config else None, "manifest": manifest_info(manifest)}
    # under torchrun rank 0 alone opens (and on resume reads) the run folder; the others get it by broadcast
    run, record = distributed.on_main(lambda: open_run(options.out, "vae", options.to_json(), info, resume=resume))
    with discard_on_failure(run) if distributed.is_main() else contextlib.nullcontext():
        # a run that fails before its first checkpoint leaves nothing
        if config is None:
            config = ModelConfig.from_json(record["config"])
        state = distributed.on_main(run.load_state) if resume else None

        # 2. model (seeded), images on the device
        seed_everything(options.seed)
        model = build_model(config)
        started = time.perf_counter()
        progress = not options.quiet
        train_images = load_images(train_records, config.image_size, workers=options.workers, progress=progress)
        val_records = evenly_spaced(val_records, VAL_LIMIT)
        val_images = load_images(val_records, config.image_size, workers=options.workers, progress=progress)
        train_images, val_images = train_images.to(device), val_images.to(device)
        log(
            f"loaded {len(train_records)} training and {len(val_records)} validation images "
            f"({config.image_size}x{config.image_size}) in {time.perf_counter() - started:.1f} s; device {device}"
        )

        # 3. train
        task = VAETask(model, train_images, val_images, options, device)
        result = fit(task, options, run, device, state=state, log=log)
    if result.finished:
        best = f"; best val loss {result.best_val_loss:.4g} at step {result.best_step}" if result.best_step else ""
        log(f"VAE run finished at step {result.step} ({result.stop_reason}){best}; checkpoint {result.checkpoint}")
    return result


__all__ = ["VAEOptions", "VAETask", "gaussian_window", "psnr", "sobel", "ssim", "train_vae", "vae_loss"]
