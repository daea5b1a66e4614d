"""Section ``alignment``: the classifier on generated images against their prompt's class, next to the
same classifier on real test images: accuracy, per-class and macro AUROC."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.evaluate.report import error_bars, fmt, img, new_figure, save_figure, section_html, table, with_ci
from training.evaluate.shared import classification_figures

if TYPE_CHECKING:
    from training.evaluate.context import Context

NAME = "alignment"


def compute(ctx: Context) -> dict:
    """The ``alignment`` entry of report.json."""
    gen, test = ctx.generated, ctx.real["test"]
    out = {
        "generated": classification_figures(gen.probabilities, gen.labels, ctx.classes, ctx.resamples, ctx.rng(50)),
        "real_test": classification_figures(test.probabilities, test.labels, ctx.classes, ctx.resamples, ctx.rng(51)),
        "per_prompt": [],
    }
    predicted = gen.probabilities.argmax(axis=1)
    for prompt in dict.fromkeys(gen.plan.prompts):
        index = np.array([i for i, p in enumerate(gen.plan.prompts) if p == prompt])
        out["per_prompt"].append(
            {
                "prompt": prompt,
                "class": ctx.classes[int(gen.labels[index[0]])],
                "n": len(index),
                "accuracy": float((predicted[index] == gen.labels[index]).mean()),
            }
        )
    return out


def make_figures(report: dict, ctx: Context, folder: Path) -> dict[str, str]:
    """Confusion matrices and per-class AUROC."""
    figures: dict[str, str] = {}
    classes = list(ctx.classes)
    alignment = report.get("alignment", {})
    if "generated" in alignment:
        figure = new_figure(12, 3.6)
        axes = figure.subplots(1, 3)
        for ax, key, title in (
            (axes[0], "generated", "generated (true = prompt's class)"),
            (axes[1], "real_test", "real test"),
        ):
            matrix = np.asarray(alignment[key]["confusion"], dtype=np.float64)
            rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
            ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
            for (r, c), count in np.ndenumerate(matrix):
                ax.text(
                    c,
                    r,
                    f"{int(count)}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if rates[r, c] < 0.6 else "white",
                )
            ax.set_xticks(range(len(classes)), classes, fontsize=7, rotation=20)
            ax.set_yticks(range(len(classes)), classes, fontsize=7)
            ax.set_xlabel("predicted", fontsize=8)
            ax.set_title(title, fontsize=9)
        width = 0.38
        x = np.arange(len(classes))
        for offset, key, label in ((-width / 2, "generated", "generated"), (width / 2, "real_test", "real test")):
            error_bars(axes[2], x + offset, [alignment[key]["auroc"][c] for c in classes], width, label=label)
        axes[2].set_xticks(x, classes, fontsize=7, rotation=20)
        axes[2].set_ylim(0, 1.05)
        axes[2].axhline(0.5, color="gray", linewidth=0.8, linestyle=":")
        axes[2].set_title("one-vs-rest AUROC", fontsize=9)
        axes[2].legend(fontsize=7)
        figures["alignment"] = save_figure(figure, folder, "alignment.png")
    return figures


def render_html(report: dict) -> str:
    """Section 3 of report.html."""
    return section_html("<h2>3. Prompt alignment</h2>", report[NAME], _paragraphs(report, report[NAME]))


def _paragraphs(report: dict, al: dict) -> Iterator[str]:
    classes = report["data"]["classes"]
    yield table(
        ["images", "n", "accuracy", "macro AUROC", *[f"AUROC {c}" for c in classes]],
        [
            [
                label,
                fmt(al[key]["n"]),
                with_ci(al[key]["accuracy"]),
                with_ci(al[key]["macro_auroc"]),
                *[with_ci(al[key]["auroc"][c]) for c in classes],
            ]
            for key, label in (("generated", "generated (label = prompt's class)"), ("real_test", "real test"))
        ],
    )
    yield img(report, "alignment", "confusion matrices and AUROC")
    yield table(
        ["prompt", "class", "images", "accuracy"],
        [
            [html.escape(r["prompt"]), html.escape(r["class"]), fmt(r["n"]), fmt(r["accuracy"])]
            for r in al["per_prompt"]
        ],
    )


__all__ = ["NAME", "compute", "make_figures", "render_html"]
