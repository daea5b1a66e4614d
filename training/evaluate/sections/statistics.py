"""Section ``statistics``: contrast ratio, sharpness and entropy of real test and generated images."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.evaluate import metrics as M
from training.evaluate.report import fmt, img, new_figure, save_figure, section_html, table, with_ci

if TYPE_CHECKING:
    from training.evaluate.context import Context

NAME = "statistics"


def compute(ctx: Context) -> dict:
    """The ``statistics`` entry of report.json."""
    measures = {"contrast_ratio": M.contrast_ratio, "sharpness": M.laplacian_variance, "entropy": M.entropy}
    sets = {"real_test": ctx.real["test"].images, "generated": ctx.generated.images}
    out: dict[str, Any] = {
        "definitions": {
            "contrast_ratio": "(p99 - p1) / (p99 + p1) of the pixel values in [0, 1]",
            "sharpness": "variance of the 4-neighbour Laplacian, pixel values in [0, 1], at the pack's resolution",
            "entropy": "Shannon entropy (bits) of the 256-bin histogram",
        },
        "resolution": ctx.pack.manifest.image.height,
    }
    values: dict[str, dict[str, np.ndarray]] = {}
    with ctx.progress.phase("image statistics", len(sets) * len(measures)) as bar:
        for set_name, images in sets.items():
            values[set_name] = {}
            for measure, function in measures.items():
                values[set_name][measure] = function(images)
                bar.update(1)
    for set_name in sets:
        out[set_name] = {m: M.describe(values[set_name][m], ctx.resamples, ctx.rng(20)) for m in measures}
    ctx.artifacts["statistics"] = values
    return out


def make_figures(report: dict, ctx: Context, folder: Path) -> dict[str, str]:
    """The three histograms, real test against generated."""
    figures: dict[str, str] = {}
    if "statistics" in ctx.artifacts:
        values = ctx.artifacts["statistics"]
        figure = new_figure(12, 3.2)
        axes = figure.subplots(1, 3)
        for ax, measure in zip(axes, ("contrast_ratio", "sharpness", "entropy"), strict=True):
            both = np.concatenate([values["real_test"][measure], values["generated"][measure]])
            bins = np.linspace(both.min(), both.max() + 1e-9, 30)
            ax.hist(values["real_test"][measure], bins=bins, alpha=0.6, density=True, label="real test")
            ax.hist(values["generated"][measure], bins=bins, alpha=0.6, density=True, label="generated")
            ax.set_title(measure.replace("_", " "))
        axes[0].legend(fontsize=8)
        figures["statistics"] = save_figure(figure, folder, "statistics.png")
    return figures


def render_html(report: dict) -> str:
    """Section 1 of report.html (the VAE's part follows it)."""
    return section_html(
        "<h2>1. Image statistics and VAE reconstructions</h2>", report[NAME], _paragraphs(report, report[NAME])
    )


def _paragraphs(report: dict, st: dict) -> Iterator[str]:
    measures = ("contrast_ratio", "sharpness", "entropy")
    yield table(
        ["set", *[m.replace("_", " ") for m in measures]],
        [
            [
                name.replace("_", " "),
                *[with_ci(st[name][m]) + f" <span class=ci>sd {fmt(st[name][m]['std'])}</span>" for m in measures],
            ]
            for name in ("real_test", "generated")
        ],
    )
    yield (
        "<p class=note>"
        + html.escape("; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in st["definitions"].items()))
        + ".</p>"
    )
    yield img(report, "statistics", "image statistics histograms")


__all__ = ["NAME", "compute", "make_figures", "render_html"]
