"""Section ``utility``: classifiers trained on N real, N/2 real, N/2 real + N/2 generated; macro AUROC
on real test and paired bootstrap intervals of the differences."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.evaluate import metrics as M
from training.evaluate.classifier import ClassifierConfig, TrainSettings, predict, prepare, steps_for, train_classifier
from training.evaluate.data import allocate
from training.evaluate.report import error_bars, fmt, img, new_figure, save_figure, section_html, table, with_ci
from training.evaluate.shared import json_float

if TYPE_CHECKING:
    from training.evaluate.context import Context

NAME = "utility"


def _stratified(
    rng: np.random.Generator, labels: np.ndarray, pool: np.ndarray, total: int, classes: tuple[str, ...]
) -> np.ndarray:
    """``total`` indices from ``pool`` with the class mix of ``labels[pool]`` (no repeats)."""
    counts = {name: int((labels[pool] == i).sum()) for i, name in enumerate(classes)}
    want = allocate(total, counts, classes)
    chosen = []
    for i, name in enumerate(classes):
        members = pool[labels[pool] == i]
        chosen.append(rng.choice(members, size=min(want[name], len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


def compute(ctx: Context) -> dict:
    """The ``utility`` entry of report.json."""
    options, train, test, gen = ctx.options, ctx.real["train"], ctx.real["test"], ctx.generated
    n_train = len(train.images)
    n = options.utility_n or min(n_train, 2 * len(gen.images))
    notes = []
    if n > n_train:
        notes.append(f"--utility-n {n} is more than the {n_train} training images; N = {n_train}")
        n = n_train
    if n > 2 * len(gen.images):
        notes.append(f"N/2 = {n // 2} is more than the {len(gen.images)} generated images; N = {2 * len(gen.images)}")
        n = 2 * len(gen.images)
    n -= n % 2
    half = n // 2
    rng = ctx.rng(70)
    real_n = _stratified(rng, train.labels, np.arange(n_train), n, ctx.classes)
    real_half = _stratified(rng, train.labels, real_n, half, ctx.classes)
    # synthetic half: the training split's class mix, from the generated set
    want = allocate(
        half, {name: int((train.labels[real_n] == i).sum()) for i, name in enumerate(ctx.classes)}, ctx.classes
    )
    synthetic = []
    for i, name in enumerate(ctx.classes):
        members = np.flatnonzero(gen.labels == i)
        synthetic.append(rng.choice(members, size=min(want[name], len(members)), replace=False))
    synthetic_index = np.concatenate(synthetic)
    if len(synthetic_index) < half:
        rest = np.setdiff1d(np.arange(len(gen.images)), synthetic_index)
        synthetic_index = np.concatenate(
            [synthetic_index, rng.choice(rest, size=half - len(synthetic_index), replace=False)]
        )
        notes.append("too few generated images of some class: the synthetic half was topped up from other classes")
    arms = {
        "real_n": (train.images[real_n], train.labels[real_n]),
        "real_half": (train.images[real_half], train.labels[real_half]),
        "real_half_plus_synthetic_half": (
            np.concatenate([train.images[real_half].astype(np.float32), gen.images[synthetic_index]]),
            np.concatenate([train.labels[real_half], gen.labels[synthetic_index]]),
        ),
    }
    config = ClassifierConfig(classes=ctx.classes, input_size=ctx.classifier.config.input_size)
    steps = steps_for(options.classifier_epochs, n, options.classifier_batch_size)
    settings = TrainSettings(steps=steps, batch_size=options.classifier_batch_size, seed=options.seed + 1)
    probabilities = {}
    with ctx.progress.phase("utility classifiers", steps * len(arms), "step") as bar:
        for name, (images, labels) in arms.items():
            model = train_classifier(
                prepare(images, config.input_size),
                labels,
                config,
                settings,
                ctx.device,
                on_step=lambda step, loss: bar.update(1),
            )
            probabilities[name] = predict(model, prepare(test.images, config.input_size), ctx.device)[0]
    c = len(ctx.classes)
    names = list(arms)

    def statistic(index: np.ndarray) -> np.ndarray:
        auc = [M.macro_auroc(probabilities[a][index], test.labels[index], c) for a in names]
        return np.r_[auc, auc[1] - auc[0], auc[2] - auc[1], auc[2] - auc[0]]

    intervals = M.bootstrap_interval(statistic, len(test.labels), ctx.resamples, ctx.rng(71))
    values = statistic(np.arange(len(test.labels)))
    return {
        "n": n,
        "classifier": f"{config.name}, {steps} optimizer steps per arm ({options.classifier_epochs} epochs of N), "
        f"batch {options.classifier_batch_size}, seed {settings.seed}",
        "test_images": len(test.labels),
        "arms": {
            name: {
                "images": len(arms[name][1]),
                "real": len(real_n) if name == "real_n" else len(real_half),
                "synthetic": len(synthetic_index) if name == "real_half_plus_synthetic_half" else 0,
                "per_class": {cls: int((arms[name][1] == i).sum()) for i, cls in enumerate(ctx.classes)},
                "macro_auroc": {"value": json_float(values[k]), "ci95": intervals[k].to_json()},
            }
            for k, name in enumerate(names)
        },
        "differences": {
            key: {"value": json_float(values[3 + k]), "ci95": intervals[3 + k].to_json()}
            for k, key in enumerate(
                (
                    "real_half_minus_real_n",
                    "real_half_plus_synthetic_minus_real_half",
                    "real_half_plus_synthetic_minus_real_n",
                )
            )
        },
        "bootstrap": f"{ctx.resamples} paired resamples of the test set",
        "notes": notes,
    }


def make_figures(report: dict, ctx: Context, folder: Path) -> dict[str, str]:
    """Macro AUROC of the three arms."""
    figures: dict[str, str] = {}
    utility = report.get("utility", {})
    if "arms" in utility:
        names = list(utility["arms"])
        figure = new_figure(6, 3.2)
        ax = figure.subplots()
        entries = [utility["arms"][n]["macro_auroc"] for n in names]
        error_bars(ax, np.arange(3), entries, capsize=4, color=["C0", "C0", "C1"])
        ax.set_xticks(np.arange(3), ["N real", "N/2 real", "N/2 real +\nN/2 generated"], fontsize=8)
        ax.set_ylabel("macro AUROC on real test", fontsize=8)
        ax.set_ylim(0, 1.05)
        figures["utility"] = save_figure(figure, folder, "utility.png")
    return figures


def render_html(report: dict) -> str:
    """Section 5 of report.html."""
    return section_html(
        "<h2>5. Utility of generated images for training</h2>", report[NAME], _paragraphs(report, report[NAME])
    )


def _paragraphs(report: dict, ut: dict) -> Iterator[str]:
    yield (
        f"<p>N = {fmt(ut['n'])}; {html.escape(ut['classifier'])}; "
        f"tested on {fmt(ut['test_images'])} real test images; "
        f"{html.escape(ut['bootstrap'])}.</p>"
    )
    labels = {
        "real_n": "N real",
        "real_half": "N/2 real",
        "real_half_plus_synthetic_half": "N/2 real + N/2 generated",
    }
    yield table(
        ["training set", "real", "generated", "macro AUROC on real test"],
        [[labels[k], fmt(a["real"]), fmt(a["synthetic"]), with_ci(a["macro_auroc"])] for k, a in ut["arms"].items()],
    )
    diff_labels = {
        "real_half_minus_real_n": "N/2 real − N real",
        "real_half_plus_synthetic_minus_real_half": "(N/2 real + N/2 generated) − N/2 real",
        "real_half_plus_synthetic_minus_real_n": "(N/2 real + N/2 generated) − N real",
    }
    yield table(
        ["difference in macro AUROC", "value [95% CI]"],
        [[diff_labels[k], with_ci(v)] for k, v in ut["differences"].items()],
    )
    for note in ut.get("notes", []):
        yield f"<p class=note>{html.escape(note)}</p>"
    yield img(report, "utility", "utility")


__all__ = ["NAME", "compute", "make_figures", "render_html"]
