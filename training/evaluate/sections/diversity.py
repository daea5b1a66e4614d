"""Section ``diversity``: mean pairwise 1 - SSIM and feature distance among images of one prompt, next
to random same-class groups of real test images."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.evaluate import metrics as M
from training.evaluate.report import fmt, image_grid, img, new_figure, save_figure, section_html, table

if TYPE_CHECKING:
    from training.evaluate.context import Context

NAME = "diversity"
DIVERSITY_GROUPS_PER_PROMPT = 4  # groups of --diversity-images images (different seeds) per prompt


def compute(ctx: Context) -> dict:
    """The ``diversity`` entry of report.json."""
    gen, test = ctx.generated, ctx.real["test"]
    k = ctx.options.diversity_images
    groups = []
    for prompt in dict.fromkeys(gen.plan.prompts):
        members = np.array([i for i, p in enumerate(gen.plan.prompts) if p == prompt])
        for start in range(0, min(len(members), k * DIVERSITY_GROUPS_PER_PROMPT), k):
            index = members[start : start + k]
            if len(index) >= 2:
                groups.append((prompt, int(gen.labels[index[0]]), index))
    rng = ctx.rng(80)
    rows, reference = [], []
    with ctx.progress.phase("diversity", 2 * len(groups)) as bar:
        for prompt, label, index in groups:
            rows.append(
                {
                    "prompt": prompt,
                    "class": ctx.classes[label],
                    "n": len(index),
                    "ssim_distance": M.mean_pairwise_ssim_distance(gen.images[index]),
                    "feature_distance": M.mean_pairwise_cosine_distance(gen.features[index]),
                }
            )
            bar.update(1)
            # real reference: test images of the class, or training images when test has fewer than two
            pool = test if (test.labels == label).sum() >= 2 else ctx.real["train"]
            members = np.flatnonzero(pool.labels == label)
            if len(members) >= 2:
                pick = rng.choice(members, size=min(len(index), len(members)), replace=False)
                reference.append(
                    {
                        "class": ctx.classes[label],
                        "split": "test" if pool is test else "train",
                        "n": len(pick),
                        "ssim_distance": M.mean_pairwise_ssim_distance(pool.images[pick].astype(np.float32)),
                        "feature_distance": M.mean_pairwise_cosine_distance(pool.features[pick]),
                    }
                )
            bar.update(1)
    per_class = {}
    for name in ctx.classes:
        g = [r for r in rows if r["class"] == name]
        r_ = [r for r in reference if r["class"] == name]
        per_class[name] = {
            "generated": _mean_rows(g),
            "real_test": _mean_rows(r_),
        }
    overall = {"generated": _mean_rows(rows), "real_test": _mean_rows(reference)}
    for key in ("ssim_distance", "feature_distance"):
        g, r = overall["generated"].get(key), overall["real_test"].get(key)
        overall[f"{key}_ratio"] = float(g / r) if g is not None and r else None
    ctx.artifacts["diversity"] = [(ctx.classes[label], gen.images[index]) for _, label, index in groups]
    return {
        "definition": (
            f"per prompt, up to {DIVERSITY_GROUPS_PER_PROMPT} groups of up to {k} images of different seeds: mean "
            "pairwise 1 - SSIM and mean pairwise cosine "
            "distance of classifier features; the reference draws groups of the same size from real test images "
            "of the prompt's class (training images when test has fewer than two); a ratio well below 1 means "
            "less variety than real images: mode collapse"
        ),
        "groups": rows,
        "per_class": per_class,
        "overall": overall,
    }


def _mean_rows(rows: list[dict]) -> dict:
    if not rows:
        return {}
    return {key: float(np.mean([r[key] for r in rows])) for key in ("ssim_distance", "feature_distance")} | {
        "groups": len(rows)
    }


def make_figures(report: dict, ctx: Context, folder: Path) -> dict[str, str]:
    """Per-class distances and one prompt's images per class."""
    figures: dict[str, str] = {}
    classes = list(ctx.classes)
    diversity = report.get("diversity", {})
    if "per_class" in diversity:
        figure = new_figure(10, 3.2)
        axes = figure.subplots(1, 2)
        width = 0.38
        x = np.arange(len(classes))
        for ax, key, title in (
            (axes[0], "ssim_distance", "mean pairwise 1 - SSIM"),
            (axes[1], "feature_distance", "mean pairwise feature distance"),
        ):
            for offset, source, label in (
                (-width / 2, "generated", "generated (one prompt)"),
                (width / 2, "real_test", "real test (one class)"),
            ):
                ax.bar(
                    x + offset, [diversity["per_class"][c][source].get(key, 0.0) for c in classes], width, label=label
                )
            ax.set_xticks(x, classes, fontsize=7, rotation=20)
            ax.set_title(title, fontsize=9)
        axes[0].legend(fontsize=7)
        figures["diversity"] = save_figure(figure, folder, "diversity.png")
    if ctx.artifacts.get("diversity"):
        seen, rows = set(), []
        for name, images in ctx.artifacts["diversity"]:
            if name not in seen:
                seen.add(name)
                rows.append((name, list(images[:8])))
        figures["diversity_samples"] = image_grid(folder, "diversity_samples.png", rows)
    return figures


def render_html(report: dict) -> str:
    """Section 6 of report.html."""
    return section_html("<h2>6. Diversity</h2>", report[NAME], _paragraphs(report, report[NAME]))


def _paragraphs(report: dict, dv: dict) -> Iterator[str]:
    yield f"<p class=note>{html.escape(dv['definition'])}.</p>"
    yield table(
        ["class", "1 − SSIM generated", "1 − SSIM real", "feature distance generated", "feature distance real"],
        [
            [
                html.escape(c),
                fmt(v["generated"].get("ssim_distance")),
                fmt(v["real_test"].get("ssim_distance")),
                fmt(v["generated"].get("feature_distance")),
                fmt(v["real_test"].get("feature_distance")),
            ]
            for c, v in dv["per_class"].items()
        ],
    )
    ov = dv["overall"]
    yield (
        f"<p>Overall ratio generated / real: 1 − SSIM {fmt(ov.get('ssim_distance_ratio'))}, feature distance "
        f"{fmt(ov.get('feature_distance_ratio'))}.</p>"
    )
    yield img(report, "diversity", "diversity")
    yield img(report, "diversity_samples", "images of one prompt per class")


__all__ = ["DIVERSITY_GROUPS_PER_PROMPT", "NAME", "compute", "make_figures", "render_html"]
