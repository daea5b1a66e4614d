"""Section ``frechet``: Fréchet distance in the evaluation classifier's feature space (real train vs real
test is the floor), and standard FID with Inception when ``--inception-weights`` is given."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.evaluate import metrics as M
from training.evaluate.report import error_bars, fmt, img, new_figure, save_figure, section_html, table, with_ci
from training.evaluate.shared import fd_with_interval

if TYPE_CHECKING:
    from training.evaluate.context import Context

NAME = "frechet"


def compute(ctx: Context) -> dict:
    """The ``frechet`` entry of report.json."""
    gen, test, train = ctx.generated, ctx.real["test"], ctx.real["train"]
    rng = ctx.rng(40)
    floor_index = np.sort(rng.choice(len(train.images), size=min(len(train.images), len(gen.images)), replace=False))
    with ctx.progress.phase("Fréchet distances", 3) as bar:
        values = {}
        for key, (a, b) in {
            "generated_vs_real_test": (gen.features, test.features),
            "generated_vs_real_train": (gen.features, train.features[floor_index]),
            "real_train_vs_real_test": (train.features[floor_index], test.features),
        }.items():
            values[key] = fd_with_interval(a, b, ctx.resamples, ctx.rng(41))
            bar.update(1)
    out = {
        "feature_network": ctx.classifier.config.name,
        "feature_dim": ctx.classifier.config.feature_dim,
        **values,
        "floor_note": (
            f"real train vs real test is the floor: two real samples differ by this much; the train sample has "
            f"{len(floor_index)} images, as many as the generated set (Fréchet distances shrink with sample size)"
        ),
        "ratio_to_floor": _ratio(values["generated_vs_real_test"]["value"], values["real_train_vs_real_test"]["value"]),
        "inception": None,
    }
    if ctx.options.inception_weights is not None:
        out["inception"] = inception_fid(ctx, floor_index)
    return out


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 0 else None


def inception_fid(ctx: Context, floor_index: np.ndarray) -> dict:
    from training.evaluate.inception import NAME, inception_features, load_inception

    model = load_inception(ctx.options.inception_weights, ctx.device)
    sets = {
        "generated": ctx.generated.images,
        "real_test": ctx.real["test"].images,
        "real_train": ctx.real["train"].images[floor_index],
    }
    features = {}
    with ctx.progress.phase("Inception features", sum(len(v) for v in sets.values()), "img") as bar:
        for name, images in sets.items():
            parts = []
            for start in range(0, len(images), 64):
                parts.append(inception_features(model, images[start : start + 64], ctx.device))
                bar.update(len(parts[-1]))
            features[name] = np.concatenate(parts)
    return {
        "network": NAME,
        "weights": str(ctx.options.inception_weights),
        "generated_vs_real_test": M.frechet_distance_features(features["generated"], features["real_test"]),
        "generated_vs_real_train": M.frechet_distance_features(features["generated"], features["real_train"]),
        "real_train_vs_real_test": M.frechet_distance_features(features["real_train"], features["real_test"]),
        "note": "2048-d features; with fewer than about 10,000 images FID is biased upwards (compare within a report)",
    }


def make_figures(report: dict, ctx: Context, folder: Path) -> dict[str, str]:
    """The three distances with their intervals."""
    figures: dict[str, str] = {}
    frechet = report.get("frechet", {})
    if "generated_vs_real_test" in frechet:
        keys = ("generated_vs_real_test", "generated_vs_real_train", "real_train_vs_real_test")
        figure = new_figure(6, 3.2)
        ax = figure.subplots()
        error_bars(ax, np.arange(3), [frechet[k] for k in keys], capsize=4, color=["C1", "C1", "C0"])
        ax.set_xticks(
            np.arange(3),
            ["generated\nvs real test", "generated\nvs real train", "real train vs\nreal test (floor)"],
            fontsize=8,
        )
        ax.set_ylabel(f"Fréchet distance ({frechet['feature_network']})", fontsize=8)
        figures["frechet"] = save_figure(figure, folder, "frechet.png")
    return figures


def render_html(report: dict) -> str:
    """Section 2 of report.html."""
    return section_html("<h2>2. Distribution distance</h2>", report[NAME], _paragraphs(report, report[NAME]))


def _paragraphs(report: dict, fr: dict) -> Iterator[str]:
    keys = {
        "generated_vs_real_test": "generated vs real test",
        "generated_vs_real_train": "generated vs real train",
        "real_train_vs_real_test": "real train vs real test (floor)",
    }
    yield table(
        ["pair", "images", f"Fréchet distance ({fr['feature_network']}, {fr['feature_dim']}-d)"],
        [[label, " / ".join(fmt(n) for n in fr[key]["n"]), with_ci(fr[key])] for key, label in keys.items()],
    )
    yield f"<p class=note>{html.escape(fr['floor_note'])}. Ratio to the floor: {fmt(fr['ratio_to_floor'])}.</p>"
    if fr.get("inception"):
        inc = fr["inception"]
        yield table(["pair", f"FID ({inc['network']})"], [[label, fmt(inc[key])] for key, label in keys.items()])
        yield f"<p class=note>{html.escape(inc['note'])}.</p>"
    else:
        yield "<p class=note>Standard FID (Inception) not computed: pass <code>--inception-weights PATH</code>.</p>"
    yield img(report, "frechet", "Fréchet distances")


__all__ = ["NAME", "compute", "inception_fid", "make_figures", "render_html"]
