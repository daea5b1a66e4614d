"""``cxr-studio evaluate``: registered through the entry-point group ``cxr_studio.commands``.

Registering is cheap (argparse and the options dataclass only); torch, matplotlib and the
evaluation itself are imported when the command runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from training.cli import command_error
from training.evaluate.options import (
    PROMPT_AGE_BANDS,
    PROMPT_SOURCES,
    QUICK,
    SAMPLER_NAMES,
    SECTIONS,
    EvaluationOptions,
)

EXIT_OK = 0
EXIT_USAGE = 2
DEFAULTS = EvaluationOptions(model=None, data=Path("."), out=Path("."))


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, not {text!r}") from None


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    """Add ``evaluate``."""
    d = DEFAULTS

    def default(name: str) -> str:
        value = getattr(d, name)
        value = ",".join(map(str, value)) if isinstance(value, tuple) else value
        quick = QUICK.get(name)
        quick = ",".join(map(str, quick)) if isinstance(quick, tuple) else quick
        return f" (default {value}" + (f"; --quick {quick})" if quick is not None else ")")

    parser = subparsers.add_parser(
        "evaluate",
        help="measure a model pack against held-out real data; writes an HTML report and a JSON of every figure",
        description=(
            "Evaluate a model pack on a manifest's real data: image statistics and VAE reconstructions, Fréchet "
            "distance in the feature space of a classifier trained on the train split, prompt alignment, "
            "memorisation (nearest training image, 4x4 patch distance), utility of generated images for "
            "training a classifier, diversity, steps x samplers, and the committed paraphrase and negation prompt sets "
            "beside the card prompts. Writes OUT/report.html, OUT/report.json, "
            "OUT/figures/ and OUT/classifier/."
        ),
    )
    add = parser.add_argument
    add(
        "--model",
        type=Path,
        default=None,
        metavar="PACK",
        help="model pack folder (default: the embedded default model)",
    )
    add("--data", type=Path, required=True, metavar="MANIFEST", help="JSON Lines manifest with train and test splits")
    add(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="report folder (made if missing; its reports are replaced)",
    )
    add(
        "--classes",
        type=_name_list,
        default=None,
        metavar="NAMES",
        help="compare these findings as the classes (normal = no finding), e.g. normal,cardiomegaly,pleural_effusion; "
        "a record belongs to the one of them it has, records with none or several are left out "
        "(default: each record's label, else its single finding)",
    )
    add("--quick", action="store_true", default=None, help="small sizes for a smoke test; explicit options still win")
    g = parser.add_argument_group("generated images")
    g.add_argument(
        "--num-images",
        type=int,
        default=None,
        metavar="N",
        help="generated images for sections 1-6 (memorisation asks for >= 1000)" + default("num_images"),
    )
    g.add_argument(
        "--prompts-per-class",
        type=int,
        default=None,
        metavar="K",
        help="distinct prompts per class" + default("prompts_per_class"),
    )
    g.add_argument(
        "--prompt-source",
        choices=PROMPT_SOURCES,
        default=None,
        help="card: the pack's example prompts; test: the test split's captions; auto: card when it covers "
        "every class (default auto)",
    )
    g.add_argument("--steps", type=int, default=None, dest="num_steps", help="denoising steps (default: the pack's)")
    g.add_argument("--sampler", default=None, choices=SAMPLER_NAMES, help="sampler (default: the pack's)")
    g.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance (default: the pack's)")
    g.add_argument(
        "--batch-size", type=int, default=None, help="images per generation request, at most 16" + default("batch_size")
    )
    g = parser.add_argument_group("steps x samplers (section 7)")
    g.add_argument(
        "--steps-list", type=_int_list, default=None, metavar="10,20,50", help="step counts" + default("steps_list")
    )
    g.add_argument("--samplers", type=_name_list, default=None, metavar="NAMES", help="samplers" + default("samplers"))
    g.add_argument(
        "--sweep-images", type=int, default=None, metavar="N", help="images per setting" + default("sweep_images")
    )
    g = parser.add_argument_group("prompt sets (section 8)")
    g.add_argument(
        "--prompt-sets",
        type=_name_list,
        default=None,
        metavar="NAMES",
        help="committed prompt sets in resources/evaluation/prompts (never used in training) or .jsonl files, "
        "scored beside the card prompts; lines with 'denies' make the negation check" + default("prompt_sets"),
    )
    g.add_argument(
        "--prompt-set-images",
        type=int,
        default=None,
        metavar="K",
        help="images per prompt of the sets" + default("prompt_set_images"),
    )
    g.add_argument(
        "--prompt-age-band",
        choices=PROMPT_AGE_BANDS,
        default=None,
        help="child / adult: only the sets' prompts of that age band or of none stated (default any)",
    )
    g = parser.add_argument_group("classifier and the other sections")
    g.add_argument(
        "--classifier-epochs",
        type=int,
        default=None,
        metavar="E",
        help="training epochs of the evaluation and utility classifiers" + default("classifier_epochs"),
    )
    g.add_argument(
        "--classifier-size",
        type=int,
        default=None,
        metavar="PX",
        help="classifier input size" + default("classifier_size"),
    )
    g.add_argument(
        "--classifier-batch-size", type=int, default=None, help="classifier batch" + default("classifier_batch_size")
    )
    g.add_argument(
        "--classifier",
        type=Path,
        default=None,
        metavar="DIR",
        help="reuse the classifier an earlier evaluation saved in its OUT/classifier (same classes), so that "
        "Fréchet distances of several packs share one feature space",
    )
    g.add_argument(
        "--classifier-init",
        type=Path,
        default=None,
        metavar="DIR",
        help="train a new classifier starting from the convolutional layers of this saved one (e.g. "
        "resources/evaluation/default/classifier, trained on 4,183 radiographs): for small data sets",
    )
    g.add_argument(
        "--vae-images",
        type=int,
        default=None,
        metavar="N",
        help="validation images reconstructed" + default("vae_images"),
    )
    g.add_argument(
        "--utility-n",
        type=int,
        default=None,
        metavar="N",
        help="real training images of the utility test's first arm (default min(train images, 2 x --num-images))",
    )
    g.add_argument(
        "--diversity-images",
        type=int,
        default=None,
        metavar="K",
        help="images per prompt compared" + default("diversity_images"),
    )
    g.add_argument(
        "--memorisation-threshold",
        type=float,
        default=None,
        metavar="D",
        help="patch distance counted as a near copy" + default("memorisation_threshold"),
    )
    g.add_argument(
        "--closest-pairs", type=int, default=None, metavar="K", help="closest pairs shown" + default("closest_pairs")
    )
    g.add_argument(
        "--bootstrap", type=int, default=None, metavar="R", help="bootstrap resamples" + default("bootstrap")
    )
    g.add_argument(
        "--inception-weights",
        type=Path,
        default=None,
        metavar="PATH",
        help="also standard FID with these Inception weights on disk (pytorch-fid's pt_inception-2015-12-05 "
        ".pth, or .safetensors); nothing is downloaded",
    )
    g.add_argument(
        "--skip", type=_name_list, default=None, metavar="SECTIONS", help=f"leave out sections: {', '.join(SECTIONS)}"
    )
    g = parser.add_argument_group("running")
    g.add_argument("--seed", type=int, default=None, help="seed of every random choice" + default("seed"))
    g.add_argument(
        "--provider", choices=("auto", "cpu", "cuda"), default=None, help="ONNX Runtime device (default auto)"
    )
    g.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default=None, help="torch device of the classifiers (default auto)"
    )
    g.add_argument("--threads", type=int, default=None, help="CPU threads of torch and ONNX Runtime (default: theirs)")
    g.add_argument("--quiet", action="store_true", default=None, help="no progress bars or messages")
    parser.set_defaults(func=run)


OPTION_NAMES = (
    "model",
    "data",
    "out",
    "classes",
    "quick",
    "num_images",
    "prompts_per_class",
    "prompt_source",
    "num_steps",
    "sampler",
    "guidance_scale",
    "batch_size",
    "steps_list",
    "samplers",
    "sweep_images",
    "prompt_sets",
    "prompt_set_images",
    "prompt_age_band",
    "classifier_epochs",
    "classifier_size",
    "classifier_batch_size",
    "classifier",
    "classifier_init",
    "vae_images",
    "utility_n",
    "diversity_images",
    "memorisation_threshold",
    "closest_pairs",
    "bootstrap",
    "inception_weights",
    "skip",
    "seed",
    "provider",
    "device",
    "threads",
    "quiet",
)


def run(args: argparse.Namespace) -> int:
    """Evaluate; 0 when the report is written, 2 with a one-line error on stderr when an input cannot be used."""
    from training.evaluate.options import EvaluationError, build_options

    try:
        options = build_options({name: getattr(args, name, None) for name in OPTION_NAMES})
        from training.evaluate.run import evaluate

        # the command line as typed (None when called from Python with other arguments)
        typed = "evaluate" in sys.argv[1:]
        report = evaluate(options, command=shlex.join(["cxr-studio", *sys.argv[1:]]) if typed else None)
    except (EvaluationError, OSError) as exc:
        return command_error("evaluate", exc)
    out = Path(options.out)
    print(f"{out / 'report.html'}")
    print(f"{out / 'report.json'}")
    summary = report["summary"]
    fd, floor = (
        summary["frechet_distance_generated_vs_real_test"],
        summary["frechet_distance_floor_real_train_vs_real_test"],
    )
    if fd is not None and not options.quiet:
        print(
            f"Fréchet distance {fd:.4g} (floor {floor:.4g}); total {report['timings_s']['total']:.1f} s",
            file=sys.stderr,
        )
    return EXIT_OK
