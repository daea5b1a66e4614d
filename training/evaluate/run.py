"""The evaluation, start to end: check the inputs, load the real images, train the evaluation
classifier, generate, run every section, write ``report.json``, the figures and ``report.html``.

Sections (report keys; ``--skip`` leaves any out, recorded as ``{"skipped": ...}``), one module each
in ``training/evaluate/sections/`` with its computation, figures and HTML:

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
   the same classifier, beside the card prompts.
9. ``age_bands`` with ``--findings`` and ``--age-band``, alone: one age band's records, findings that
   may coexist (multi-label), the classifier one sigmoid per finding, and per finding whether images
   prompted with it are judged so above chance.

Every random choice is seeded from ``--seed``: the same inputs give the same report (on one device).
"""

from __future__ import annotations

import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from engine.pack import ModelPack, PackError, sha256_file
from engine.pipeline import GenerationRequest, RequestError
from training.device import DeviceError, pick_device
from training.evaluate.classifier import load_classifier
from training.evaluate.context import Context, Progress
from training.evaluate.data import choose_prompts, plan_images, read_real_data
from training.evaluate.options import EvaluationError, EvaluationOptions, dig
from training.evaluate.report import write_report
from training.evaluate.sections import (
    age_bands,
    alignment,
    diversity,
    frechet,
    memorisation,
    prompt_sets,
    statistics,
    steps,
    utility,
    vae,
)
from training.evaluate.shared import class_mix_of_test, fit_classifier, generate, load_real

# report order: report.json's keys, the figures and report.html's sections follow it
SECTIONS = (statistics, vae, frechet, alignment, memorisation, utility, diversity, steps, prompt_sets, age_bands)

REPORT_FORMAT = "cxr-studio-evaluation"
REPORT_VERSION = 1


# --------------------------------------------------------------------------- 1. checks


def _load_pack(model: Path | None) -> ModelPack:
    """``--model``, else ``$CXR_STUDIO_MODEL`` (named in its errors), else the embedded default."""
    from engine.pack import load_model_pack

    try:
        return load_model_pack(model)
    except PackError as exc:
        raise EvaluationError(f"--model {exc}" if model is not None else str(exc)) from None


def _check_request(
    prompt: str, sampler: str, num_steps: int, guidance: float, batch: int, record_guidance: float | None = None
) -> None:
    try:
        GenerationRequest(
            prompt=prompt,
            num_steps=num_steps,
            guidance_scale=guidance,
            sampler=sampler,
            batch_size=batch,
            record_guidance=record_guidance,
        ).validated()
    except (RequestError, ValueError) as exc:
        raise EvaluationError(str(exc)) from None


def prepare_context(options: EvaluationOptions) -> Context:
    """Everything that can be checked before work starts; raises :class:`EvaluationError`."""
    options = options.validated()
    pack = _load_pack(options.model)
    if options.findings is not None:
        data = age_bands.read_band_data(options.data, options.findings, options.age_band)
    else:
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
    if options.findings is not None:
        prompts = age_bands.band_prompts(
            pack.card, options.findings, options.age_band, options.prompts_per_class, options.seed
        )
    else:
        prompts = choose_prompts(
            pack.card, data, options.prompt_source, options.prompts_per_class, options.prompt_age_band
        )
    some_prompt = next(iter(prompts.values())).prompts[0]
    _check_request(some_prompt, sampler, num_steps, guidance, options.batch_size, options.record_guidance)
    if options.record_guidance is not None and pack.manifest.conditioning is None:
        raise EvaluationError(f"--record-guidance: {pack.model_id} has no record tokens to guide")
    for name in options.samplers:
        for count in options.steps_list:
            _check_request(some_prompt, name, count, guidance, options.batch_size)
    sets = {}
    if options.runs("prompt_sets"):
        sets = prompt_sets.load_prompt_sets(options.prompt_sets)
    if options.inception_weights is not None and not Path(options.inception_weights).is_file():
        raise EvaluationError(f"--inception-weights {options.inception_weights}: no such file")
    if pack.manifest.image.height != pack.manifest.image.width:
        raise EvaluationError(f"--model {pack.root}: the evaluation needs square images, not {pack.manifest.image}")
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        device = pick_device(options.device)
    except DeviceError as exc:
        raise EvaluationError(str(exc)) from None
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
        if loaded[0].config.multi_label != (options.findings is not None):
            raise EvaluationError(
                f"--classifier {options.classifier}: a {'multi' if loaded[0].config.multi_label else 'single'}-label "
                f"classifier; {'--findings needs a multi' if options.findings else 'this evaluation needs a single'}"
                "-label one"
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
        record_guidance=options.record_guidance,
        device=device,
        progress=Progress(options.quiet),
        rng_seed=options.seed,
        loaded_classifier=loaded,
        init_body=init_body,
        prompt_sets=sets,
    )


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
            "manifest_sha256": sha256_file(ctx.data.manifest),
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
            "record_guidance": ctx.record_guidance,
            "batch_size": options.batch_size,
            "seeds": [int(g.plan.seeds[0]), int(g.plan.seeds[-1])],
            "per_class": {name: int((g.labels == i).sum()) for i, name in enumerate(ctx.classes)},
            "class_mix": "in proportion to the real test split",
            "seconds": g.seconds,
            "seconds_per_1000_images": g.seconds / len(g.images) * 1000.0,
            "provider": ctx.pipeline.provider,
        }

    # 4. the sections
    for section in SECTIONS:
        if options.runs(section.NAME):
            report[section.NAME] = section.compute(ctx)
        else:
            report[section.NAME] = {"skipped": options.skip_reason(section.NAME)}
    report["summary"] = _summary(report)
    report["environment"] = _environment(ctx)
    report["timings_s"] = {**ctx.progress.timings, "total": time.perf_counter() - started}

    # 5. write the report: JSON first (the figures and HTML are made from it)
    with ctx.progress.phase("writing the report"):
        write_report(report, ctx, out, SECTIONS)
    return report


__all__ = ["Context", "Progress", "evaluate", "prepare_context"]
