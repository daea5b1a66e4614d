"""The evaluation, start to end: check the inputs, load the real images, train the evaluation
classifier, generate, measure every section, write ``report.json``, the figures and ``report.html``.

Sections (report keys; ``--skip`` leaves any out, recorded as ``{"skipped": ...}``):

1. ``statistics`` contrast ratio, sharpness, entropy of real test and generated images;
   ``vae`` SSIM / PSNR of the pack's VAE reconstructions of validation images.
2. ``frechet`` Fréchet distance in the evaluation classifier's feature space: generated vs real
   test and vs real train, and real train vs real test (the floor, at the generated set's size);
   standard FID with Inception when ``--inception-weights`` is given.
3. ``alignment`` the classifier on generated images against their prompt's class, next to the
   same classifier on real test images: accuracy, per-class and macro AUROC.
4. ``memorisation`` per generated image the nearest training image by cosine similarity of
   classifier features, then the 4 x 4 patch distance; the count at or below the threshold and the
   closest pairs; real test images against train as the reference.
5. ``utility`` classifiers trained on N real, N/2 real, N/2 real + N/2 generated; macro AUROC on
   real test and paired bootstrap intervals of the differences.
6. ``diversity`` mean pairwise 1 - SSIM and feature distance among images of one prompt, next to
   random same-class groups of real test images.
7. ``steps`` Fréchet distance and alignment for every sampler at every step count.
8. ``prompt_sets`` the committed paraphrase and negation prompts (never used in training) judged by
   the same classifier, beside the card prompts (training/evaluate/prompt_sets.py).

Every random choice is seeded from ``--seed``: the same inputs give the same report (on one device).
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.pack import ModelPack, PackError
from engine.pipeline import GenerationRequest, Pipeline, RequestError
from engine.runtime import BackendError, OrtBackend
from training.evaluate import metrics as M
from training.evaluate.classifier import (
    ChestClassifier,
    ClassifierConfig,
    TrainSettings,
    load_classifier,
    parameter_count,
    predict,
    prepare,
    save_classifier,
    steps_for,
    train_classifier,
)
from training.evaluate.data import (
    ClassPrompts,
    PromptPlan,
    RealData,
    allocate,
    choose_prompts,
    load_real_images,
    plan_images,
    read_real_data,
)
from training.evaluate.options import MIN_MEMORISATION_IMAGES, EvaluationError, EvaluationOptions, dig

REPORT_FORMAT = "cxr-studio-evaluation"
REPORT_VERSION = 1
HISTOGRAM_BINS = 50  # memorisation distances over [0, 1]
DIVERSITY_GROUPS_PER_PROMPT = 4  # groups of --diversity-images images (different seeds) per prompt


# --------------------------------------------------------------------------- progress


class Progress:
    """tqdm bars on stderr, one per phase, and a line per finished phase (all off with ``quiet``)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.timings: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str, total: int | None = None, unit: str = "it") -> Iterator[Any]:
        from tqdm import tqdm

        start = time.perf_counter()
        bar = tqdm(total=total, desc=name, unit=unit, disable=self.quiet or None, file=sys.stderr, leave=False)
        try:
            yield bar
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        self.timings[name] = self.timings.get(name, 0.0) + seconds
        self.note(f"evaluate: {name}: {seconds:.1f} s")

    def note(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data holders


@dataclass
class ImageSet:
    """Images (N, H, W) in [0, 1] with class indices, classifier probabilities and features."""

    images: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray | None = None
    features: np.ndarray | None = None


@dataclass
class Generated(ImageSet):
    plan: PromptPlan | None = None
    sampler: str = ""
    num_steps: int = 0
    guidance_scale: float = 0.0
    seconds: float = 0.0


@dataclass
class Context:
    options: EvaluationOptions
    pack: ModelPack
    data: RealData
    classes: tuple[str, ...]
    prompts: dict[str, ClassPrompts]
    sampler: str
    num_steps: int
    guidance_scale: float
    device: torch.device
    progress: Progress
    rng_seed: int
    pipeline: Pipeline | None = None
    classifier: ChestClassifier | None = None
    loaded_classifier: tuple[ChestClassifier, dict] | None = None  # --classifier, checked before work starts
    init_body: dict[str, torch.Tensor] | None = None  # --classifier-init's conv layers, read before work starts
    prompt_sets: dict[str, list] = field(default_factory=dict)  # --prompt-sets, read before work starts
    real: dict[str, ImageSet] = field(default_factory=dict)
    generated: Generated | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)

    def rng(self, purpose: int) -> np.random.Generator:
        """A generator per purpose, so that skipping a section never changes another's draws."""
        return np.random.default_rng([self.rng_seed, purpose])

    @property
    def resamples(self) -> int:
        return self.options.bootstrap


# --------------------------------------------------------------------------- 1. checks


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EvaluationError("--device cuda: no CUDA GPU is available to torch")
    return torch.device(name)


def _load_pack(model: Path | None) -> ModelPack:
    """``--model``, else ``$CXR_STUDIO_MODEL`` (named in its errors), else the embedded default."""
    from engine.pack import load_model_pack

    try:
        return load_model_pack(model)
    except PackError as exc:
        raise EvaluationError(f"--model {exc}" if model is not None else str(exc)) from None


def _check_request(prompt: str, sampler: str, num_steps: int, guidance: float, batch: int) -> None:
    try:
        GenerationRequest(
            prompt=prompt, num_steps=num_steps, guidance_scale=guidance, sampler=sampler, batch_size=batch
        ).validated()
    except (RequestError, ValueError) as exc:
        raise EvaluationError(str(exc)) from None


def prepare_context(options: EvaluationOptions) -> Context:
    """Everything that can be checked before work starts; raises :class:`EvaluationError`."""
    options = options.validated()
    pack = _load_pack(options.model)
    data = read_real_data(options.data, options.classes)
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise EvaluationError(f"--out {out}: exists and is not a folder")
    defaults = pack.manifest.defaults
    sampler = options.sampler or defaults.sampler
    num_steps = options.num_steps or defaults.num_steps
    guidance = options.guidance_scale if options.guidance_scale is not None else defaults.guidance_scale
    if options.batch_size > 16:
        raise EvaluationError(f"--batch-size must be at most 16 (the engine's limit), not {options.batch_size}")
    prompts = choose_prompts(pack.card, data, options.prompt_source, options.prompts_per_class)
    some_prompt = next(iter(prompts.values())).prompts[0]
    _check_request(some_prompt, sampler, num_steps, guidance, options.batch_size)
    for name in options.samplers:
        for steps in options.steps_list:
            _check_request(some_prompt, name, steps, guidance, options.batch_size)
    prompt_sets = {}
    if options.runs("prompt_sets"):
        from training.evaluate.prompt_sets import load_prompt_sets

        prompt_sets = load_prompt_sets(options.prompt_sets)
    if options.inception_weights is not None and not Path(options.inception_weights).is_file():
        raise EvaluationError(f"--inception-weights {options.inception_weights}: no such file")
    if pack.manifest.image.height != pack.manifest.image.width:
        raise EvaluationError(f"--model {pack.root}: the evaluation needs square images, not {pack.manifest.image}")
    if options.threads:
        torch.set_num_threads(options.threads)
    device = _pick_device(options.device)
    loaded, init_body = None, None
    if options.classifier_init is not None:
        init_body = load_classifier(options.classifier_init, torch.device("cpu"))[0].body.state_dict()
    if options.classifier is not None:
        loaded = load_classifier(options.classifier, device)
        if tuple(loaded[0].config.classes) != data.classes:
            raise EvaluationError(
                f"--classifier {options.classifier}: its classes ({', '.join(loaded[0].config.classes)}) are not the "
                f"manifest's ({', '.join(data.classes)})"
            )
    return Context(
        options=options,
        pack=pack,
        data=data,
        classes=data.classes,
        prompts=prompts,
        sampler=sampler,
        num_steps=num_steps,
        guidance_scale=float(guidance),
        device=device,
        progress=Progress(options.quiet),
        rng_seed=options.seed,
        loaded_classifier=loaded,
        init_body=init_body,
        prompt_sets=prompt_sets,
    )


# --------------------------------------------------------------------------- 2. shared steps


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
    """Train (or load) the evaluation classifier; features and probabilities of every real split."""
    options = ctx.options
    info: dict[str, Any] = {}
    if ctx.loaded_classifier is not None:
        model, saved = ctx.loaded_classifier
        info = {"loaded_from": str(options.classifier), "trained": saved.get("trained", {})}
        if saved.get("trained", {}).get("manifest_sha256") != _sha256(ctx.data.manifest):
            info["note"] = "trained on a different manifest file than the one evaluated"
    else:
        config = ClassifierConfig(classes=ctx.classes, input_size=options.classifier_size)
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
                "manifest_sha256": _sha256(ctx.data.manifest),
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
    out = {
        "name": config.name,
        "description": (
            f"{config.name}: a CNN (stride-2 3x3 conv stem of {config.stem_width} channels, then 4 blocks of 3x3 "
            f"conv, BatchNorm, ReLU and 2x2 max-pool with {', '.join(map(str, config.widths))} channels), global "
            f"average pool -> {config.feature_dim}-d features -> linear; "
            f"{parameter_count(model):,} parameters; trained from scratch on the manifest's train split at "
            f"{config.input_size} x {config.input_size} px; no pretrained weights"
        ),
        "feature_space": f"the {config.feature_dim}-d global-average-pool output (penultimate layer)",
        "input_size": config.input_size,
        "parameters": parameter_count(model),
        "classes": list(config.classes),
        **info,
    }
    for split in ("val", "test"):
        real = ctx.real[split]
        if len(real.images):
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


def _sha256(path: Path) -> str:
    from engine.pack import sha256_file

    return sha256_file(path)


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


# --------------------------------------------------------------------------- 3. figures shared by sections


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
            name: {"value": _json_float(per_class[i]), "ci95": intervals[2 + i].to_json()}
            for i, name in enumerate(classes)
        },
        "confusion": M.confusion_matrix(probabilities.argmax(axis=1), labels, c).tolist(),
    }


def _json_float(value: float) -> float | None:
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


# --------------------------------------------------------------------------- 4. sections


def section_statistics(ctx: Context) -> dict:
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


def section_vae(ctx: Context) -> dict:
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


def section_frechet(ctx: Context) -> dict:
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


def section_alignment(ctx: Context) -> dict:
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


def section_memorisation(ctx: Context) -> dict:
    gen, train, test = ctx.generated, ctx.real["train"], ctx.real["test"]
    threshold = ctx.options.memorisation_threshold
    with ctx.progress.phase("memorisation search", len(gen.images) + len(test.images), "img") as bar:
        nearest, cosine = M.nearest_by_cosine(gen.features, train.features)
        distance = M.patch_distance(gen.images, train.images[nearest].astype(np.float32))
        bar.update(len(gen.images))
        ref_nearest, ref_cosine = M.nearest_by_cosine(test.features, train.features)
        ref_distance = M.patch_distance(test.images.astype(np.float32), train.images[ref_nearest].astype(np.float32))
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
    }


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


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


def section_utility(ctx: Context) -> dict:
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
                "macro_auroc": {"value": _json_float(values[k]), "ci95": intervals[k].to_json()},
            }
            for k, name in enumerate(names)
        },
        "differences": {
            key: {"value": _json_float(values[3 + k]), "ci95": intervals[3 + k].to_json()}
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


def section_diversity(ctx: Context) -> dict:
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


def section_steps(ctx: Context) -> dict:
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
                        "macro_auroc": _json_float(M.macro_auroc(gen.probabilities, gen.labels, len(ctx.classes))),
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


# --------------------------------------------------------------------------- 5. the whole run


def _environment(ctx: Context) -> dict:
    import onnxruntime

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": __import__("os").cpu_count(),
        "torch": torch.__version__,
        "torch_device": str(ctx.device),
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_provider": ctx.pipeline.provider if ctx.pipeline else None,
        "gpu": torch.cuda.get_device_name(0) if ctx.device.type == "cuda" else None,
    }


def _summary(report: dict) -> dict:
    """The key figures for the top of the report (and for a model card)."""

    def get(*keys: str) -> Any:
        return dig(report, *keys)

    return {
        "frechet_distance_generated_vs_real_test": get("frechet", "generated_vs_real_test", "value"),
        "frechet_distance_floor_real_train_vs_real_test": get("frechet", "real_train_vs_real_test", "value"),
        "alignment_accuracy_generated": get("alignment", "generated", "accuracy", "value"),
        "alignment_accuracy_real_test": get("alignment", "real_test", "accuracy", "value"),
        "alignment_macro_auroc_generated": get("alignment", "generated", "macro_auroc", "value"),
        "alignment_macro_auroc_real_test": get("alignment", "real_test", "macro_auroc", "value"),
        "memorisation_count_at_or_below_threshold": get("memorisation", "generated", "count_at_or_below_threshold"),
        "memorisation_generated_images": get("memorisation", "generated", "n"),
        "utility_macro_auroc_difference_half_plus_synthetic_minus_real_n": get(
            "utility", "differences", "real_half_plus_synthetic_minus_real_n"
        ),
        "diversity_ssim_distance_ratio_generated_to_real": get("diversity", "overall", "ssim_distance_ratio"),
        "vae_ssim_mean": get("vae", "ssim", "mean"),
        "vae_psnr_db_mean": get("vae", "psnr_db", "mean"),
        "steps_lowest_frechet_distance": get("steps", "lowest_frechet_distance"),
        "paraphrase_accuracy": get("prompt_sets", "paraphrases", "overall", "paraphrases", "value"),
        "paraphrase_reference_accuracy": get("prompt_sets", "paraphrases", "overall", "reference", "value"),
        "negation_judged_not_x": get("prompt_sets", "negations", "pooled", "negations_judged_not_x", "value"),
        "negation_normal_reference_judged_not_x": get(
            "prompt_sets", "negations", "pooled", "normal_prompts_judged_not_x", "value"
        ),
        "seconds_per_1000_generated_images": get("generation", "seconds_per_1000_images"),
    }


def evaluate(options: EvaluationOptions, command: str | None = None) -> dict:
    """Run the evaluation; writes OUT/report.json, OUT/report.html, OUT/figures/ and OUT/classifier/.

    Returns the report (the JSON's content). Raises :class:`EvaluationError` for unusable inputs,
    before anything is written. ``--threads`` applies to this run only: torch's thread count is
    restored afterwards (a caller's later training must not silently change its arithmetic).
    """
    threads = torch.get_num_threads()
    try:
        return _evaluate(options, command)
    finally:
        torch.set_num_threads(threads)


def _evaluate(options: EvaluationOptions, command: str | None) -> dict:
    # 1. check every input, then make the output folder
    started = time.perf_counter()
    ctx = prepare_context(options)
    options = ctx.options
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "options": options.to_json(),
        "model": {
            "model_id": ctx.pack.model_id,
            "fingerprint": ctx.pack.fingerprint,
            "folder": str(ctx.pack.root),
            "image_size": [ctx.pack.manifest.image.height, ctx.pack.manifest.image.width],
            "precision": ctx.pack.manifest.precision,
            "defaults": {
                "sampler": ctx.pack.manifest.defaults.sampler,
                "num_steps": ctx.pack.manifest.defaults.num_steps,
                "guidance_scale": ctx.pack.manifest.defaults.guidance_scale,
            },
        },
        "data": {
            "manifest": str(ctx.data.manifest),
            "manifest_sha256": _sha256(ctx.data.manifest),
            "classes": list(ctx.classes),
            "images_per_split_and_class": ctx.data.counts(),
            "left_out": dict(ctx.data.left_out),
        },
        "prompts": {name: {"source": p.source, "prompts": list(p.prompts)} for name, p in ctx.prompts.items()},
    }

    # 2. real images and the evaluation classifier
    load_real(ctx)
    report["classifier"] = fit_classifier(ctx)

    # 3. the generated set (sections 1-6 share it)
    needs_generated = any(
        options.runs(s) for s in ("statistics", "frechet", "alignment", "memorisation", "utility", "diversity")
    )
    if needs_generated:
        plan = plan_images(options.num_images, ctx.prompts, ctx.classes, class_mix_of_test(ctx), options.seed)
        with ctx.progress.phase(f"generating {len(plan.prompts)} images", len(plan.prompts), "img") as bar:
            ctx.generated = generate(ctx, plan, ctx.sampler, ctx.num_steps, bar)
        g = ctx.generated
        report["generation"] = {
            "images": len(g.images),
            "sampler": g.sampler,
            "num_steps": g.num_steps,
            "guidance_scale": g.guidance_scale,
            "batch_size": options.batch_size,
            "seeds": [int(g.plan.seeds[0]), int(g.plan.seeds[-1])],
            "per_class": {name: int((g.labels == i).sum()) for i, name in enumerate(ctx.classes)},
            "class_mix": "in proportion to the real test split",
            "seconds": g.seconds,
            "seconds_per_1000_images": g.seconds / len(g.images) * 1000.0,
            "provider": ctx.pipeline.provider,
        }

    # 4. the sections
    from training.evaluate.prompt_sets import section_prompt_sets

    sections = {
        "statistics": section_statistics,
        "vae": section_vae,
        "frechet": section_frechet,
        "alignment": section_alignment,
        "memorisation": section_memorisation,
        "utility": section_utility,
        "diversity": section_diversity,
        "steps": section_steps,
        "prompt_sets": section_prompt_sets,
    }
    for name, function in sections.items():
        report[name] = function(ctx) if options.runs(name) else {"skipped": "left out with --skip"}
    report["summary"] = _summary(report)
    report["environment"] = _environment(ctx)
    report["timings_s"] = {**ctx.progress.timings, "total": time.perf_counter() - started}

    # 5. write the report: JSON first (the figures and HTML are made from it)
    from training.evaluate.report import write_report

    with ctx.progress.phase("writing the report"):
        write_report(report, ctx, out)
    return report


__all__ = ["Context", "Progress", "evaluate", "prepare_context"]
