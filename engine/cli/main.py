"""``cxr-studio``: generate, info, and the subcommands other packages register.

Subcommands outside ``engine`` (training, import, export-onnx, ...) register through the
entry-point group ``cxr_studio.commands``: each entry point is a function ``register(subparsers)``
that adds its parser with ``set_defaults(func=run)``. ``engine`` never imports them itself.
With no subcommand the desktop app opens (entry point group ``cxr_studio.gui``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

import cv2
import numpy as np

from engine import __version__
from engine.cli import dicom as cli_dicom
from engine.cli import grid as cli_grid
from engine.pack import PackError, atomic_write_bytes, load_pack
from engine.paths import MODEL_VARIABLE, default_model_dir, model_override
from engine.pipeline import GenerationRequest, RequestError, StepEvent, to_uint8
from engine.runtime import (
    DEFAULT_BACKEND,
    PROVIDER_CHOICES,
    BackendError,
    backend_names,
    make_backend,
    parse_backend_options,
)
from engine.samplers import SAMPLERS
from engine.text import PromptError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(ValueError):
    """Bad input from the command line: one line, exit code 2, nothing written."""


def _add_model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", type=Path, default=None, metavar="PACK",
        help="model pack folder (default: the embedded default model)",
    )  # fmt: skip


def request_from_args(args: argparse.Namespace, pack, **fields) -> GenerationRequest:
    """A request with ``--steps``, ``--guidance-scale`` and ``--sampler`` where given, else the
    pack's defaults, plus ``fields`` (not validated)."""
    d = pack.manifest.defaults
    return GenerationRequest(
        num_steps=args.steps if args.steps is not None else d.num_steps,
        guidance_scale=args.guidance_scale if args.guidance_scale is not None else d.guidance_scale,
        sampler=args.sampler if args.sampler is not None else d.sampler,
        **fields,
    )


def load_model_arg(model: Path | None):
    """``--model PACK``, else ``$CXR_STUDIO_MODEL``, else the embedded default pack, verified.
    An error about the variable's pack names the variable (the user may not know it is set)."""
    if model is not None:
        return load_pack(model)
    override = model_override()
    path = default_model_dir()
    if override is not None:
        if not path.exists():
            raise UsageError(
                f"{MODEL_VARIABLE}={override}: no model pack there "
                "(unset it for the embedded default model, or pass --model PACK)"
            )
        try:
            return load_pack(path)
        except PackError as exc:
            raise PackError(f"{MODEL_VARIABLE}={override}: {exc}") from None
    if not path.exists():
        raise UsageError(f"no default model is installed at {path}; pass --model PACK")
    return load_pack(path)


def _add_generate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="generate chest radiographs from a text prompt")
    p.add_argument("prompt", help='clinical text, e.g. "Right lower lobe consolidation, no effusion"')
    p.add_argument("--negative-prompt", default="", metavar="TEXT", help="what to steer away from")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="seed; image i of a batch uses seed + i")
    p.add_argument("--sampler", default=None, help=f"one of {', '.join(SAMPLERS)} (default: the model's)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity, 0 to 1")
    p.add_argument("--batch", type=int, default=1, help="number of images")
    _add_model_arg(p)
    p.add_argument(
        "--out", type=Path, default=None, metavar="FILE",
        help="output image: .png (16-bit grayscale) or .dcm (synthetic DICOM); default cxr-SEED.png",
    )  # fmt: skip
    p.add_argument("--bits", type=int, choices=(8, 16), default=16, help="PNG bit depth (default 16)")
    cli_dicom.add_dicom_options(p)
    p.add_argument("--save-steps", type=Path, default=None, metavar="DIR", help="write every step's preview as PNG")
    p.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto", help="ONNX Runtime device")
    p.add_argument("--backend", default=DEFAULT_BACKEND,
                   help="what runs the graphs: onnxruntime (default), or an installed plugin such as torch "
                        "(with the training extra)")  # fmt: skip
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the backend, e.g. checkpoint=RUN/best device=cuda dtype=float16")  # fmt: skip
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no understood/ignored lines (warnings stay)")  # fmt: skip
    p.set_defaults(func=_run_generate)


def _output_paths(out: Path, batch: int) -> list[Path]:
    if batch == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i:02d}{out.suffix}") for i in range(batch)]


def _encode_png(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise OSError("PNG encoding failed")
    return buffer.tobytes()


def _print_understood(prompt: str, card: dict, *, quiet: bool) -> None:
    """The record and what the model ignores, on stderr (stdout stays the written paths, for scripts);
    not with ``--quiet``, which keeps only warnings and errors. Printed once every option has been
    checked, so that a bad option is still one error line.

    A prompt in which nothing is recognised is a warning, not an error: the run goes on (exit 0), as
    for a prompt longer than the encoder, since an unconditioned image is a legitimate request.
    """
    from engine.findings.understood import understand

    understanding = understand(prompt, card)
    for line in [] if quiet else understanding.lines():
        print(line, file=sys.stderr)
    if understanding.nothing_recognised:
        print(
            f"warning: nothing in the prompt {prompt!r} was recognised (no finding, age, sex or view); "
            "generating anyway",
            file=sys.stderr,
        )


def _run_generate(args: argparse.Namespace) -> int:
    from engine.pipeline import Pipeline

    # 1. check everything before anything is written
    out = args.out if args.out is not None else Path(f"cxr-{args.seed}.png")
    kind = out.suffix.lower()
    if kind not in (".png", ".dcm"):
        raise UsageError(f"--out must name a .png or .dcm file, not {out.name!r}")
    if kind == ".dcm" and args.transfer_syntax != "explicit":
        from engine.dicom.dataset import codec_available

        if not codec_available(args.transfer_syntax):
            raise UsageError(f"--transfer-syntax {args.transfer_syntax}: its encoder plugin is not installed")
    if not out.parent.resolve().is_dir():
        raise UsageError(f"--out: the folder {out.parent} does not exist")
    if args.save_steps is not None and args.save_steps.exists() and not args.save_steps.is_dir():
        raise UsageError(f"--save-steps: {args.save_steps} exists and is not a folder")
    pack = load_model_arg(args.model)
    request = request_from_args(
        args, pack, prompt=args.prompt, negative_prompt=args.negative_prompt, seed=args.seed,
        batch_size=args.batch, eta=args.eta,
    ).validated()  # fmt: skip

    # 2. run, with a progress bar and optional step previews
    if args.backend not in backend_names():
        raise UsageError(f"--backend {args.backend}: not installed (installed: {', '.join(backend_names())})")
    try:
        backend_options = parse_backend_options(args.backend_option)
    except BackendError as exc:
        raise UsageError(str(exc)) from None
    backend = make_backend(pack, args.backend, backend_options, provider=args.provider)
    pipeline = Pipeline(pack, backend=backend)
    _print_understood(request.prompt, pack.manifest.card, quiet=args.quiet)
    dropped = pipeline.dropped_words(request.prompt)
    if dropped:
        limit = pack.manifest.text.max_tokens
        print(
            f"warning: the prompt is longer than the encoder's {limit} tokens; dropped: {' '.join(dropped)}",
            file=sys.stderr,
        )
    from tqdm import tqdm

    bar = tqdm(total=request.num_steps, unit="step", disable=args.quiet or None, file=sys.stderr, desc="denoising")
    if args.save_steps is not None:
        args.save_steps.mkdir(parents=True, exist_ok=True)
    result = None
    for event in pipeline.iter_steps(request):
        if isinstance(event, StepEvent):
            bar.update(1)
            if args.save_steps is not None:
                for i, frame in enumerate(to_uint8(event.preview)):
                    suffix = f"_{i:02d}" if request.batch_size > 1 else ""
                    atomic_write_bytes(args.save_steps / f"step_{event.index:03d}{suffix}.png", _encode_png(frame))
        else:
            result = event
    bar.close()

    # 3. write the images atomically (a batch in DICOM is one series of one synthetic study); when one
    # cannot be written (a full disk), those written before it are removed: a batch is whole or absent
    paths = _output_paths(out, request.batch_size)
    written: list[Path] = []
    try:
        if kind == ".dcm":
            from engine.dicom.dataset import StudyContext, datasets_from_result, write_dicom

            datasets = datasets_from_result(result, StudyContext.synthetic(), iod=args.iod, burn_in=args.burn_in)
            for path, ds in zip(paths, datasets, strict=True):
                written.append(write_dicom(ds, path, transfer_syntax=args.transfer_syntax))
        else:
            images = result.to_uint16() if args.bits == 16 else result.to_uint8()
            for path, image in zip(paths, images, strict=True):
                atomic_write_bytes(path, _encode_png(image))
                written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    t = result.timings
    for path, seed in zip(paths, result.seeds, strict=True):
        print(f"{path}  seed={seed}")
    print(
        f"{request.num_steps} steps ({request.sampler}, guidance {request.guidance_scale:g}) on "
        f"{result.provider}: {t['total_s']:.2f} s (text {t['text_s']:.2f}, denoise {t['denoise_s']:.2f}, "
        f"decode {t['decode_s']:.2f})",
        file=sys.stderr,
    )
    return EXIT_OK


def _add_info(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="print a model pack's model card")
    _add_model_arg(p)
    p.set_defaults(func=_run_info)


def format_card(pack) -> str:
    """The model card as plain text, for `info` and the desktop's model manager."""
    m = pack.manifest
    lines = [
        f"Model: {m.model_id}  ({m.precision}, pack format {m.format_version})",
        f"Folder: {pack.root}",
        f"Fingerprint: {pack.fingerprint}",
        f"Image: {m.image.width}x{m.image.height}, latent {m.latent.channels}x{m.latent.height}x{m.latent.width}",
        f"Schedule: {m.schedule.beta_schedule}, {m.schedule.num_train_timesteps} steps, {m.schedule.prediction_type}",
        f"Text encoder: {m.text.encoder_name}, max {m.text.max_tokens} tokens",
        f"Defaults: {m.defaults.sampler}, {m.defaults.num_steps} steps, guidance {m.defaults.guidance_scale:g}",
    ]
    return "\n".join([*lines, *card_lines(m.card)])


def card_lines(card: dict) -> list[str]:
    """A model card's entries as text lines: ``Title: value``, lists and objects indented below."""
    lines = []
    for key, value in card.items():
        title = key.replace("_", " ").capitalize()
        if isinstance(value, list):
            lines.append(f"{title}:")
            lines.extend(f"  - {item}" for item in value)
        elif isinstance(value, dict):
            lines.append(f"{title}:")
            lines.extend(f"  {k}: {v}" for k, v in value.items())
        else:
            lines.append(f"{title}: {value}")
    return lines


def _run_info(args: argparse.Namespace) -> int:
    print(format_card(load_model_arg(args.model)))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxr-studio",
        description="Synthetic chest radiographs from clinical text (for education and testing; not for diagnosis).",
    )
    parser.add_argument("--version", action="version", version=f"cxr-studio {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_generate(subparsers)
    _add_info(subparsers)
    cli_dicom.register(subparsers)
    cli_grid.register(subparsers)
    for entry in sorted(entry_points(group="cxr_studio.commands"), key=lambda e: e.name):
        try:
            register = entry.load()
        except ImportError as exc:  # e.g. training extras not installed
            logging.getLogger(__name__).debug("subcommand %s unavailable: %s", entry.name, exc)
            continue
        register(subparsers)
    return parser


def _open_gui(argv: Sequence[str]) -> int:
    for entry in entry_points(group="cxr_studio.gui"):
        return int(entry.load()(list(argv)) or 0)
    print("the desktop app is not installed; see `cxr-studio --help`", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("--") and argv[0] not in ("--help", "--version", "--verbose")):
        return _open_gui(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except (UsageError, RequestError, PromptError, PackError, ValueError) as exc:
        print(f"cxr-studio {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (BackendError, OSError) as exc:
        if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:  # "FILE: what happened"
            exc = f"{exc.filename}: {exc.strerror}"
        print(f"cxr-studio {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"cxr-studio {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
