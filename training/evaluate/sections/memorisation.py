"""Section ``memorisation``: per generated image the nearest training image by cosine similarity of
classifier features, then the 4 x 4 patch distance; real test images against train as the reference.
Beside it the calibrated count (:func:`training.evaluate.metrics.calibrated_copy_ratio`): the raw distance
flags a washed-out image as "near" to every washed-out film, the ratio to its neighbourhood does not."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.evaluate import metrics as M
from training.evaluate.options import MIN_MEMORISATION_IMAGES
from training.evaluate.report import fmt, image_grid, img, new_figure, save_figure, section_html, table

if TYPE_CHECKING:
    from training.evaluate.context import Context

NAME = "memorisation"
HISTOGRAM_BINS = 50  # memorisation distances over [0, 1]
CALIBRATED_K = 50  # feature neighbours whose mean patch distance calibrates the closest one
CALIBRATED_THRESHOLD = 0.5  # a copy: its closest training image at most half as far as its neighbours on average


def compute(ctx: Context) -> dict:
    """The ``memorisation`` entry of report.json."""
    gen, train, test = ctx.generated, ctx.real["train"], ctx.real["test"]
    threshold = ctx.options.memorisation_threshold
    with ctx.progress.phase("memorisation search", len(gen.images) + len(test.images), "img") as bar:
        nearest, cosine = M.nearest_by_cosine(gen.features, train.features)
        distance = M.patch_distance(gen.images, train.images[nearest].astype(np.float32))
        bar.update(len(gen.images))
        ref_nearest, ref_cosine = M.nearest_by_cosine(test.features, train.features)
        ref_distance = M.patch_distance(test.images.astype(np.float32), train.images[ref_nearest].astype(np.float32))
        bar.update(len(test.images))
    with ctx.progress.phase("memorisation, calibrated", len(gen.images) + len(test.images), "img") as bar:
        gen_ratio, _, _ = M.calibrated_copy_ratio(gen.images, gen.features, train.images, train.features, CALIBRATED_K)
        bar.update(len(gen.images))
        ref_ratio, _, _ = M.calibrated_copy_ratio(
            test.images, test.features, train.images, train.features, CALIBRATED_K
        )
        bar.update(len(test.images))
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    order = np.argsort(distance, kind="stable")[: ctx.options.closest_pairs]
    train_records = ctx.data.splits["train"]
    root = ctx.data.manifest.parent
    pairs = [
        {
            "generated_index": int(i),
            "prompt": gen.plan.prompts[i],
            "seed": int(gen.plan.seeds[i]),
            "training_image": _relative(train_records[nearest[i]].path, root),
            "cosine_similarity": float(cosine[i]),
            "patch_distance": float(distance[i]),
        }
        for i in order
    ]
    ctx.artifacts["memorisation"] = {
        "distance": distance,
        "reference": ref_distance,
        "pairs": (gen.images[order], train.images[nearest[order]].astype(np.float32), distance[order]),
    }

    def summary(values: np.ndarray, sims: np.ndarray) -> dict:
        return {
            "n": len(values),
            "count_at_or_below_threshold": int((values <= threshold).sum()),
            "fraction_at_or_below_threshold": float((values <= threshold).mean()) if len(values) else None,
            "distance": M.describe(values, ctx.resamples, ctx.rng(60)),
            "quantiles": {f"p{q:g}": float(np.percentile(values, q)) for q in (0, 1, 5, 25, 50)},
            "histogram": np.histogram(np.clip(values, 0, 1), bins=edges)[0].tolist(),
            "cosine_similarity_mean": float(sims.mean()),
        }

    def calibrated(ratios: np.ndarray) -> dict:
        return {
            "n": len(ratios),
            "count_at_or_below_threshold": int((ratios <= CALIBRATED_THRESHOLD).sum()),
            "per_1000": float(1000 * (ratios <= CALIBRATED_THRESHOLD).mean()) if len(ratios) else None,
            "quantiles": {f"p{q:g}": float(np.percentile(ratios, q)) for q in (0, 1, 5, 25, 50)} if len(ratios) else {},
        }

    return {
        "definition": (
            "nearest training image by cosine similarity of the classifier's features; then the normalised "
            "patch distance: a 4 x 4 grid of tiles, per tile the RMS pixel difference (pixels in [0, 1]), the "
            "maximum over tiles (0 = identical)"
        ),
        "threshold": threshold,
        "training_images": len(train.images),
        "meets_protocol": len(gen.images) >= MIN_MEMORISATION_IMAGES,
        "protocol_note": f"the protocol asks for at least {MIN_MEMORISATION_IMAGES} generated images",
        "generated": summary(distance, cosine),
        "real_test_reference": summary(ref_distance, ref_cosine),
        "histogram_edges": edges.tolist(),
        "closest_pairs": pairs,
        "calibrated": {
            "definition": (
                f"per image its {CALIBRATED_K} nearest training images by feature cosine; the smallest patch "
                "distance to them divided by their mean (Carlini et al. 2023's calibration): near 0 for a copy "
                f"of one image, near 1 for an image merely close to many; a copy at or below {CALIBRATED_THRESHOLD:g}"
            ),
            "k": min(CALIBRATED_K, len(train.images)),
            "threshold": CALIBRATED_THRESHOLD,
            "generated": calibrated(gen_ratio),
            "real_test_reference": calibrated(ref_ratio),
        },
    }


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def make_figures(report: dict, ctx: Context, folder: Path) -> dict[str, str]:
    """The distance histograms and the closest pairs."""
    figures: dict[str, str] = {}
    if "memorisation" in ctx.artifacts:
        art = ctx.artifacts["memorisation"]
        memo = report["memorisation"]
        figure = new_figure(7, 3.2)
        ax = figure.subplots()
        edges = np.asarray(memo["histogram_edges"])
        ax.hist(art["reference"], bins=edges, alpha=0.6, density=True, label="real test -> nearest train")
        ax.hist(art["distance"], bins=edges, alpha=0.6, density=True, label="generated -> nearest train")
        ax.axvline(
            memo["threshold"], color="red", linestyle="--", linewidth=1, label=f"threshold {memo['threshold']:g}"
        )
        ax.set_xlabel("normalised 4x4 patch distance (0 = identical)", fontsize=8)
        ax.legend(fontsize=7)
        figures["memorisation"] = save_figure(figure, folder, "memorisation.png")
        generated, nearest, distance = art["pairs"]
        figures["memorisation_pairs"] = image_grid(
            folder,
            "memorisation_pairs.png",
            [("generated", list(generated)), ("nearest training", list(nearest))],
            titles=[[f"d = {d:.3f}" for d in distance], ["" for _ in distance]],
        )
    return figures


def render_html(report: dict) -> str:
    """Section 4 of report.html."""
    return section_html("<h2>4. Memorisation</h2>", report[NAME], _paragraphs(report, report[NAME]))


def _paragraphs(report: dict, me: dict) -> Iterator[str]:
    yield f"<p class=note>{html.escape(me['definition'])}. Searched {fmt(me['training_images'])} training images.</p>"
    if not me["meets_protocol"]:
        yield (
            "<p class=note><b>Fewer generated images than the protocol asks</b>: "
            f"{html.escape(me['protocol_note'])}.</p>"
        )
    yield table(
        ["images", "n", f"at or below {fmt(me['threshold'])}", "min", "p1", "p5", "median", "mean cosine"],
        [
            [
                label,
                fmt(me[key]["n"]),
                f"{fmt(me[key]['count_at_or_below_threshold'])} "
                f"({fmt(100 * (me[key]['fraction_at_or_below_threshold'] or 0), 3)}%)",
                fmt(me[key]["quantiles"]["p0"]),
                fmt(me[key]["quantiles"]["p1"]),
                fmt(me[key]["quantiles"]["p5"]),
                fmt(me[key]["quantiles"]["p50"]),
                fmt(me[key]["cosine_similarity_mean"]),
            ]
            for key, label in (
                ("generated", "generated -> nearest train"),
                ("real_test_reference", "real test -> nearest train"),
            )
        ],
    )
    cal = me.get("calibrated")
    if cal:
        yield f"<p class=note>Calibrated: {html.escape(cal['definition'])}.</p>"
        yield table(
            ["images", "n", f"ratio at or below {fmt(cal['threshold'])} (per 1,000)", "min", "p1", "p5", "median"],
            [
                [
                    label,
                    fmt(cal[key]["n"]),
                    f"{fmt(cal[key]['count_at_or_below_threshold'])} ({fmt(cal[key]['per_1000'] or 0, 3)})",
                    *(fmt(cal[key]["quantiles"].get(q, float("nan"))) for q in ("p0", "p1", "p5", "p50")),
                ]
                for key, label in (
                    ("generated", "generated -> its neighbourhood"),
                    ("real_test_reference", "real test -> its neighbourhood"),
                )
            ],
        )
    yield img(report, "memorisation", "patch distance histogram")
    yield "<p>The closest generated-training pairs:</p>"
    yield img(report, "memorisation_pairs", "closest pairs")
    yield table(
        ["prompt", "seed", "training image", "cosine", "patch distance"],
        [
            [
                html.escape(p["prompt"]),
                fmt(p["seed"]),
                html.escape(p["training_image"]),
                fmt(p["cosine_similarity"]),
                fmt(p["patch_distance"]),
            ]
            for p in me["closest_pairs"]
        ],
    )


__all__ = ["CALIBRATED_K", "CALIBRATED_THRESHOLD", "HISTOGRAM_BINS", "NAME", "compute", "make_figures", "render_html"]
