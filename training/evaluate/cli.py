"""``cxr-studio evaluate``: registered through the entry-point group ``cxr_studio.commands``.

Registering is cheap (argparse and the options dataclass only); torch, matplotlib and the
evaluation itself are imported when the command runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields
from pathlib import Path

from training.cli import command_error
from training.evaluate.options import (
    AGE_BANDS,
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

    def defaulted(group: argparse._ArgumentGroup, flag: str, text: str, metavar: str | None = None, kind=int) -> None:
        """An option whose help ends with its default (and --quick's); its name is its field's."""
        dest = flag.removeprefix("--").replace("-", "_")
        group.add_argument(flag, type=kind, default=None, metavar=metavar, help=text + default(dest))

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
    defaulted(g, "--num-images", "generated images for sections 1-6 (memorisation asks for >= 1000)", "N")
    defaulted(g, "--prompts-per-class", "distinct prompts per class", "K")
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
        "--record-guidance",
        type=float,
        default=None,
        help="guide a pack's record tokens apart from the text at this scale (default: with the text)",
    )
    defaulted(g, "--batch-size", "images per generation request, at most 16")
    g = parser.add_argument_group("steps x samplers (section 7)")
    defaulted(g, "--steps-list", "step counts", "10,20,50", kind=_int_list)
    defaulted(g, "--samplers", "samplers", "NAMES", kind=_name_list)
    defaulted(g, "--sweep-images", "images per setting", "N")
    g = parser.add_argument_group("prompt sets (section 8)")
    defaulted(
        g,
        "--prompt-sets",
        "committed prompt sets in resources/evaluation/prompts (never used in training) or .jsonl files, "
        "scored beside the card prompts; lines with 'denies' make the negation check",
        "NAMES",
        kind=_name_list,
    )
    defaulted(g, "--prompt-set-images", "images per prompt of the sets", "K")
    g.add_argument(
        "--prompt-age-band",
        choices=PROMPT_AGE_BANDS,
        default=None,
        help="child / adult: only prompts of that age band or of none stated, the sets' and the card's "
        "(default any)",
    )
    g = parser.add_argument_group("findings by age band (section 9; runs alone)")
    g.add_argument(
        "--findings",
        type=_name_list,
        default=None,
        metavar="NAMES",
        help="evaluate these findings in one --age-band, records may show several (NIH), e.g. "
        "normal,pneumonia,pleural_effusion,cardiomegaly: the classifier becomes multi-label, its AUROC per finding "
        "on real held-out films and on images prompted per finding, and a verdict per finding",
    )
    g.add_argument(
        "--age-band", choices=AGE_BANDS, default=None, help="with --findings: child (under 18) or adult (18 and over)"
    )
    defaulted(g, "--finding-images", "generated images per finding", "K")
    g = parser.add_argument_group("classifier and the other sections")
    defaulted(g, "--classifier-epochs", "training epochs of the evaluation and utility classifiers", "E")
    defaulted(g, "--classifier-size", "classifier input size", "PX")
    defaulted(g, "--classifier-batch-size", "classifier batch")
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
    defaulted(g, "--vae-images", "validation images reconstructed", "N")
    g.add_argument(
        "--utility-n",
        type=int,
        default=None,
        metavar="N",
        help="real training images of the utility test's first arm (default min(train images, 2 x --num-images))",
    )
    defaulted(g, "--diversity-images", "images per prompt compared", "K")
    defaulted(g, "--memorisation-threshold", "patch distance counted as a near copy", "D", kind=float)
    defaulted(g, "--closest-pairs", "closest pairs shown", "K")
    defaulted(g, "--bootstrap", "bootstrap resamples", "R")
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
    defaulted(g, "--seed", "seed of every random choice")
    g.add_argument(
        "--provider", choices=("auto", "cpu", "cuda"), default=None, help="ONNX Runtime device (default auto)"
    )
    g.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default=None, help="torch device of the classifiers (default auto)"
    )
    g.add_argument("--threads", type=int, default=None, help="CPU threads of torch and ONNX Runtime (default: theirs)")
    g.add_argument("--quiet", action="store_true", default=None, help="no progress bars or messages")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate; 0 when the report is written, 2 with a one-line error on stderr when an input cannot be used."""
    from training.evaluate.options import EvaluationError, build_options

    try:
        options = build_options({field.name: getattr(args, field.name, None) for field in fields(EvaluationOptions)})
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
    for band, entry in (report.get("age_bands") or {}).items():
        if isinstance(entry, dict) and not options.quiet:  # not {"skipped": ...}
            print(f"{band}: aligned above chance: {', '.join(entry['aligned']) or 'none'}", file=sys.stderr)
    return EXIT_OK
