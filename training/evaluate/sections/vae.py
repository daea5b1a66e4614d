"""Section ``vae``: SSIM / PSNR of the pack's VAE reconstructions of validation images."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from engine.runtime import BackendError
from training.evaluate import metrics as M
from training.evaluate.options import EvaluationError
from training.evaluate.report import fmt, image_grid, img, section_html, with_ci
from training.evaluate.shared import make_pipeline

if TYPE_CHECKING:
    from training.evaluate.context import Context

NAME = "vae"


def compute(ctx: Context) -> dict:
    """The ``vae`` entry of report.json."""
    from training.train_vae import psnr, ssim

    if "vae_encoder.onnx" not in ctx.pack.manifest.files:
        return {"skipped": "the pack has no vae_encoder.onnx"}
    split = "val" if len(ctx.real["val"].images) else "test"
    images = ctx.real[split].images
    index = np.unique(np.linspace(0, len(images) - 1, min(ctx.options.vae_images, len(images))).round().astype(int))
    backend = make_pipeline(ctx).backend
    originals, reconstructions = [], []
    with ctx.progress.phase("VAE reconstructions", len(index), "img") as bar:
        for start in range(0, len(index), 16):
            x = images[index[start : start + 16]].astype(np.float32)
            try:
                latent = backend.encode_image(x[:, None] * 2.0 - 1.0)
                decoded = backend.decode(latent)[:, 0]
            except BackendError as exc:
                raise EvaluationError(str(exc)) from None
            originals.append(x)
            reconstructions.append(np.clip((decoded + 1.0) * 0.5, 0.0, 1.0))
            bar.update(len(x))
    a = torch.from_numpy(np.concatenate(originals))[:, None]
    b = torch.from_numpy(np.concatenate(reconstructions).astype(np.float32))[:, None]
    ssim_values = ssim(a, b, data_range=1.0, window_size=min(11, (min(a.shape[-2:]) // 2) * 2 - 1)).numpy()
    psnr_values = psnr(a, b, data_range=1.0).numpy()
    ctx.artifacts["vae"] = (a[:8, 0].numpy(), b[:8, 0].numpy())
    return {
        "split": split,
        "n": len(index),
        "ssim": M.describe(ssim_values, ctx.resamples, ctx.rng(30)),
        "psnr_db": M.describe(psnr_values, ctx.resamples, ctx.rng(31)),
        "definition": "pixel values in [0, 1] at the pack's resolution; SSIM with an 11-px Gaussian window (sigma 1.5)",
    }


def make_figures(report: dict, ctx: Context, folder: Path) -> dict[str, str]:
    """Originals above their reconstructions."""
    figures: dict[str, str] = {}
    if "vae" in ctx.artifacts:
        originals, reconstructions = ctx.artifacts["vae"]
        figures["vae"] = image_grid(
            folder, "vae.png", [("original", list(originals)), ("VAE reconstruction", list(reconstructions))]
        )
    return figures


def render_html(report: dict) -> str:
    """The VAE's part of section 1 of report.html."""
    return section_html(None, report[NAME], _paragraphs(report, report[NAME]))


def _paragraphs(report: dict, vae: dict) -> Iterator[str]:
    yield (
        f"<p>VAE reconstructions of {fmt(vae['n'])} {html.escape(vae['split'])} images: "
        f"SSIM {with_ci(vae['ssim'])}, "
        f"PSNR {with_ci(vae['psnr_db'])} dB. <span class=note>{html.escape(vae['definition'])}.</span></p>"
    )
    yield img(report, "vae", "VAE reconstructions")


__all__ = ["NAME", "compute", "make_figures", "render_html"]
