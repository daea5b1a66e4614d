"""Section ``steps``: Fréchet distance and alignment for every sampler at every step count."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from training.evaluate import metrics as M
from training.evaluate.data import plan_images
from training.evaluate.report import fmt, img, new_figure, save_figure, section_html, table, with_ci
from training.evaluate.shared import class_mix_of_test, fd_with_interval, generate, json_float

if TYPE_CHECKING:
    from training.evaluate.context import Context

NAME = "steps"


def compute(ctx: Context) -> dict:
    """The ``steps`` entry of report.json."""
    options = ctx.options
    plan = plan_images(options.sweep_images, ctx.prompts, ctx.classes, class_mix_of_test(ctx), options.seed)
    test = ctx.real["test"]
    rows = []
    total = len(options.samplers) * len(options.steps_list) * len(plan.prompts)
    with ctx.progress.phase("steps x samplers", total, "img") as bar:
        for sampler in options.samplers:
            for steps in options.steps_list:
                gen = generate(ctx, plan, sampler, steps, bar)
                rows.append(
                    {
                        "sampler": sampler,
                        "steps": steps,
                        "frechet_distance": fd_with_interval(gen.features, test.features, ctx.resamples, ctx.rng(90)),
                        "accuracy": M.accuracy(gen.probabilities, gen.labels),
                        "macro_auroc": json_float(M.macro_auroc(gen.probabilities, gen.labels, len(ctx.classes))),
                        "seconds_per_image": gen.seconds / len(plan.prompts),
                        "is_pack_default": sampler == ctx.pack.manifest.defaults.sampler
                        and steps == ctx.pack.manifest.defaults.num_steps,
                    }
                )
    best = min(rows, key=lambda r: r["frechet_distance"]["value"])
    return {
        "images_per_setting": len(plan.prompts),
        "guidance_scale": ctx.guidance_scale,
        "same_seeds": "every setting uses the same prompts and seeds",
        "rows": rows,
        "lowest_frechet_distance": {"sampler": best["sampler"], "steps": best["steps"]},
    }


def make_figures(report: dict, ctx: Context, folder: Path) -> dict[str, str]:
    """Distance and accuracy against the step count, per sampler."""
    figures: dict[str, str] = {}
    steps = report.get("steps", {})
    if "rows" in steps:
        figure = new_figure(10, 3.2)
        axes = figure.subplots(1, 2)
        for sampler in dict.fromkeys(r["sampler"] for r in steps["rows"]):
            rows_ = [r for r in steps["rows"] if r["sampler"] == sampler]
            x = [r["steps"] for r in rows_]
            axes[0].errorbar(
                x,
                [r["frechet_distance"]["value"] for r in rows_],
                yerr=[
                    [max(r["frechet_distance"]["value"] - r["frechet_distance"]["ci95"][0], 0) for r in rows_],
                    [max(r["frechet_distance"]["ci95"][1] - r["frechet_distance"]["value"], 0) for r in rows_],
                ],
                marker="o",
                capsize=3,
                label=sampler,
            )
            axes[1].plot(x, [r["accuracy"] for r in rows_], marker="o", label=sampler)
        for ax in axes:
            ax.set_xticks(sorted({r["steps"] for r in steps["rows"]}))
        axes[0].set_xlabel("steps", fontsize=8)
        axes[0].set_ylabel("Fréchet distance to real test", fontsize=8)
        axes[1].set_xlabel("steps", fontsize=8)
        axes[1].set_ylabel("alignment accuracy", fontsize=8)
        axes[1].set_ylim(0, 1.05)
        axes[0].legend(fontsize=7)
        figures["steps"] = save_figure(figure, folder, "steps.png")
    return figures


def render_html(report: dict) -> str:
    """Section 7 of report.html."""
    return section_html("<h2>7. Steps and samplers</h2>", report[NAME], _paragraphs(report, report[NAME]))


def _paragraphs(report: dict, sp: dict) -> Iterator[str]:
    yield (
        f"<p>{fmt(sp['images_per_setting'])} images per setting, guidance {fmt(sp['guidance_scale'])}; "
        f"{html.escape(sp['same_seeds'])}.</p>"
    )
    yield table(
        [
            "sampler",
            "steps",
            "Fréchet distance to real test",
            "accuracy",
            "macro AUROC",
            "s / image",
            "pack default",
        ],
        [
            [
                html.escape(r["sampler"]),
                fmt(r["steps"]),
                with_ci(r["frechet_distance"]),
                fmt(r["accuracy"]),
                fmt(r["macro_auroc"]),
                fmt(r["seconds_per_image"], 3),
                "yes" if r["is_pack_default"] else "",
            ]
            for r in sp["rows"]
        ],
    )
    yield img(report, "steps", "steps vs quality")


__all__ = ["NAME", "compute", "make_figures", "render_html"]
