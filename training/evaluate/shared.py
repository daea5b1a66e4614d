"""What every section builds on: the real images, the evaluation classifier and its features, the
generated images, and the classification figures and Fréchet intervals several sections report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.pack import sha256_file
from engine.pipeline import GenerationRequest, Pipeline
from engine.runtime import BackendError, OrtBackend
from training.evaluate import metrics as M
from training.evaluate.classifier import (
    ClassifierConfig,
    TrainSettings,
    parameter_count,
    predict,
    prepare,
    save_classifier,
    steps_for,
    train_classifier,
)
from training.evaluate.context import Context, Generated, ImageSet
from training.evaluate.data import PromptPlan, load_real_images
from training.evaluate.options import EvaluationError


def load_real(ctx: Context) -> None:
    """Real train, val and test images at the pack's resolution."""
    size = ctx.pack.manifest.image.height
    records = {split: ctx.data.splits[split] for split in ("train", "val", "test")}
    total = sum(len(r) for r in records.values())
    with ctx.progress.phase("loading real images", total, "img") as bar:
        for split, items in records.items():
            images = load_real_images(items, size, on_image=lambda: bar.update(1))
            ctx.real[split] = ImageSet(images, ctx.data.labels(split))


def fit_classifier(ctx: Context) -> dict:
    """Train (or load) the evaluation classifier; features and probabilities of every real split.

    Real labels of shape (N, C) (0/1 per finding, :class:`~training.evaluate.sections.age_bands.BandData`)
    make it a multi-label classifier, reported per finding by :func:`finding_aurocs`."""
    options = ctx.options
    info: dict[str, Any] = {}
    if ctx.loaded_classifier is not None:
        model, saved = ctx.loaded_classifier
        info = {"loaded_from": str(options.classifier), "trained": saved.get("trained", {})}
        if saved.get("trained", {}).get("manifest_sha256") != sha256_file(ctx.data.manifest):
            info["note"] = "trained on a different manifest file than the one evaluated"
    else:
        multi_label = ctx.real["train"].labels.ndim == 2
        config = ClassifierConfig(classes=ctx.classes, input_size=options.classifier_size, multi_label=multi_label)
        inputs = prepare(ctx.real["train"].images, config.input_size)
        steps = steps_for(options.classifier_epochs, len(inputs), options.classifier_batch_size)
        settings = TrainSettings(steps=steps, batch_size=options.classifier_batch_size, seed=options.seed)
        with ctx.progress.phase("training the evaluation classifier", steps, "step") as bar:
            model = train_classifier(
                inputs,
                ctx.real["train"].labels,
                config,
                settings,
                ctx.device,
                on_step=lambda step, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")),
                init_body=ctx.init_body,
            )
        del inputs
        info = {
            "trained": {
                "manifest": str(ctx.data.manifest),
                "manifest_sha256": sha256_file(ctx.data.manifest),
                "split": "train",
                "images": len(ctx.real["train"].images),
                "epochs": options.classifier_epochs,
                "optimizer_steps": steps,
                "batch_size": options.classifier_batch_size,
                "seed": options.seed,
                "initialised_from": str(options.classifier_init) if options.classifier_init else None,
            }
        }
        info["saved_to"] = str(save_classifier(model, Path(options.out) / "classifier", {"trained": info["trained"]}))
    ctx.classifier = model
    with ctx.progress.phase(
        "classifier features of real images", sum(len(s.images) for s in ctx.real.values()), "img"
    ) as bar:
        for image_set in ctx.real.values():
            image_set.probabilities, image_set.features = _predict(ctx, image_set.images)
            bar.update(len(image_set.images))
    config = model.config
    # --classifier-init: the description said "from scratch" of a classifier that started from another one
    start = f"from the convolutional layers of {options.classifier_init}" if options.classifier_init else "from scratch"
    out = {
        "name": config.name,
        "description": (
            f"{config.name}: a CNN (stride-2 3x3 conv stem of {config.stem_width} channels, then 4 blocks of 3x3 "
            f"conv, BatchNorm, ReLU and 2x2 max-pool with {', '.join(map(str, config.widths))} channels), global "
            f"average pool -> {config.feature_dim}-d features -> linear"
            f"{' -> one sigmoid per finding (multi-label)' if config.multi_label else ''}; "
            f"{parameter_count(model):,} parameters; trained {start} on the manifest's train split at "
            f"{config.input_size} x {config.input_size} px; no weights downloaded"
        ),
        "feature_space": f"the {config.feature_dim}-d global-average-pool output (penultimate layer)",
        "input_size": config.input_size,
        "parameters": parameter_count(model),
        "classes": list(config.classes),
        **info,
    }
    for split in ("val", "test"):
        real = ctx.real[split]
        if len(real.images) and config.multi_label:
            figures = finding_aurocs(real.probabilities, real.labels, ctx.classes, ctx.resamples, ctx.rng(10))
            out[split] = {"n": len(real.labels), **figures}
        elif len(real.images):
            out[split] = classification_figures(
                real.probabilities, real.labels, ctx.classes, ctx.resamples, ctx.rng(10)
            )
    return out


def _predict(ctx: Context, images: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    size = ctx.classifier.config.input_size
    parts = [
        predict(ctx.classifier, prepare(images[i : i + chunk], size), ctx.device) for i in range(0, len(images), chunk)
    ]
    if not parts:
        return predict(ctx.classifier, prepare(images[:0], size), ctx.device)
    return np.concatenate([p for p, _ in parts]), np.concatenate([f for _, f in parts])


def make_pipeline(ctx: Context) -> Pipeline:
    if ctx.pipeline is None:
        try:
            backend = OrtBackend(ctx.pack, requested=ctx.options.provider, intra_op_threads=ctx.options.threads)
        except BackendError as exc:
            raise EvaluationError(str(exc)) from None
        ctx.pipeline = Pipeline(ctx.pack, backend=backend)
    return ctx.pipeline


def generate(ctx: Context, plan: PromptPlan, sampler: str, num_steps: int, bar) -> Generated:
    """Generate the plan's images (one request per run of equal prompts, up to --batch-size)."""
    pipeline = make_pipeline(ctx)
    height, width = ctx.pack.manifest.image.height, ctx.pack.manifest.image.width
    images = np.empty((len(plan.prompts), height, width), dtype=np.float32)
    start, i = time.perf_counter(), 0
    while i < len(plan.prompts):
        j = i + 1
        while j < len(plan.prompts) and j - i < ctx.options.batch_size and plan.prompts[j] == plan.prompts[i]:
            j += 1
        request = GenerationRequest(
            prompt=plan.prompts[i],
            num_steps=num_steps,
            guidance_scale=ctx.guidance_scale,
            record_guidance=ctx.record_guidance,
            sampler=sampler,
            seed=int(plan.seeds[i]),
            batch_size=j - i,
        )
        images[i:j] = pipeline.generate(request).images
        bar.update(j - i)
        i = j
    generated = Generated(
        images,
        plan.labels,
        plan=plan,
        sampler=sampler,
        num_steps=num_steps,
        guidance_scale=ctx.guidance_scale,
        seconds=time.perf_counter() - start,
    )
    generated.probabilities, generated.features = _predict(ctx, images)
    return generated


def class_mix_of_test(ctx: Context) -> dict[str, int]:
    return ctx.data.counts()["test"]


def classification_figures(
    probabilities: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], resamples: int, rng: np.random.Generator
) -> dict:
    """Accuracy, per-class and macro AUROC with bootstrap 95% intervals, and the confusion matrix."""
    c = len(classes)

    def statistic(index: np.ndarray) -> np.ndarray:
        p, y = probabilities[index], labels[index]
        per_class = M.one_vs_rest_auroc(p, y, c)
        finite = per_class[np.isfinite(per_class)]
        return np.r_[M.accuracy(p, y), finite.mean() if len(finite) else np.nan, per_class]

    intervals = M.bootstrap_interval(statistic, len(labels), resamples, rng)
    per_class = M.one_vs_rest_auroc(probabilities, labels, c)
    return {
        "n": len(labels),
        "n_per_class": {name: int((labels == i).sum()) for i, name in enumerate(classes)},
        "accuracy": {"value": M.accuracy(probabilities, labels), "ci95": intervals[0].to_json()},
        "macro_auroc": {"value": M.macro_auroc(probabilities, labels, c), "ci95": intervals[1].to_json()},
        "auroc": {
            name: {"value": json_float(per_class[i]), "ci95": intervals[2 + i].to_json()}
            for i, name in enumerate(classes)
        },
        "confusion": M.confusion_matrix(probabilities.argmax(axis=1), labels, c).tolist(),
    }


def finding_aurocs(
    scores: np.ndarray, positive: np.ndarray, names: tuple[str, ...], resamples: int, rng: np.random.Generator
) -> dict:
    """Per finding the AUROC of its score column against its 0/1 column of ``positive``, both (N, F),
    with paired bootstrap 95% intervals (the same resamples of the N items for every finding), the
    positives and negatives counted, and the macro mean of the defined AUROCs."""
    positive = np.asarray(positive).astype(bool)

    def aurocs(index: np.ndarray) -> np.ndarray:
        return np.array([M.roc_auc(scores[index, f], positive[index, f]) for f in range(len(names))])

    def statistic(index: np.ndarray) -> np.ndarray:
        values = aurocs(index)
        finite = values[np.isfinite(values)]
        return np.r_[finite.mean() if len(finite) else np.nan, values]

    intervals = M.bootstrap_interval(statistic, len(positive), resamples, rng)
    values = statistic(np.arange(len(positive)))
    return {
        "macro_auroc": {"value": json_float(values[0]), "ci95": intervals[0].to_json()},
        "auroc": {
            name: {
                "value": json_float(values[1 + f]),
                "ci95": intervals[1 + f].to_json(),
                "n_positive": int(positive[:, f].sum()),
                "n_negative": int((~positive[:, f]).sum()),
            }
            for f, name in enumerate(names)
        },
    }


def json_float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def fd_with_interval(a: np.ndarray, b: np.ndarray, resamples: int, rng: np.random.Generator) -> dict:
    """Fréchet distance of two feature sets and a percentile interval over resamples of both."""
    value = M.frechet_distance_features(a, b)
    draws = np.array(
        [
            M.frechet_distance_features(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))])
            for _ in range(resamples)
        ]
    )
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"value": value, "ci95": [float(low), float(high)], "n": [len(a), len(b)]}


__all__ = [
    "class_mix_of_test",
    "classification_figures",
    "fd_with_interval",
    "finding_aurocs",
    "fit_classifier",
    "generate",
    "load_real",
    "make_pipeline",
]
