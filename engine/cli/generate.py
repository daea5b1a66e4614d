"""``cxr-studio generate``: images from a text prompt, as PNG (8 or 16 bit) or synthetic DICOM."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine.attention import AttentionError, FindingMaps, require_attention
from engine.cli import dicom as cli_dicom
from engine.cli.common import EXIT_OK, UsageError, add_model_arg, check_out_folder, output_paths, request_from_args
from engine.fileio import atomic_write_bytes, atomic_write_text, folder_in_use, staged_folder
from engine.imaging import encode_png, to_uint16
from engine.pack import ModelPack, load_model_pack
from engine.pipeline import StepEvent, to_uint8
from engine.runtime import (
    DEFAULT_BACKEND,
    PROVIDER_CHOICES,
    BackendError,
    backend_names,
    make_backend,
    parse_backend_options,
)
from engine.samplers import SAMPLERS

if TYPE_CHECKING:
    from engine.checker import Checker


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="generate chest radiographs from a text prompt")
    p.add_argument("prompt", help='clinical text, e.g. "Right lower lobe consolidation, no effusion"')
    p.add_argument("--negative-prompt", default="", metavar="TEXT", help="what to steer away from")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="seed; image i of a batch uses seed + i")
    p.add_argument("--sampler", default=None, help=f"one of {', '.join(SAMPLERS)} (default: the model's)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity, 0 to 1")
    p.add_argument("--batch", type=int, default=1, help="number of images")
    add_model_arg(p)
    p.add_argument(
        "--out", type=Path, default=None, metavar="FILE",
        help="output image: .png (16-bit grayscale) or .dcm (synthetic DICOM); default cxr-SEED.png",
    )  # fmt: skip
    p.add_argument("--bits", type=int, choices=(8, 16), default=16, help="PNG bit depth (default 16)")
    cli_dicom.add_dicom_options(p)
    p.add_argument("--save-steps", type=Path, default=None, metavar="DIR", help="write every step's preview as PNG")
    p.add_argument(
        "--attention", type=Path, default=None, metavar="DIR",
        help="also write finding maps into the new folder DIR: a 16-bit PNG per finding and per prompt word "
             "(where its cross-attention acted, 0-1) and attention.json naming them; needs a pack exported "
             "with --attention-maps",
    )  # fmt: skip
    p.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto", help="ONNX Runtime device")
    p.add_argument("--backend", default=DEFAULT_BACKEND,
                   help="what runs the graphs: onnxruntime (default), or an installed plugin such as torch "
                        "(with the training extra)")  # fmt: skip
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the backend, e.g. checkpoint=RUN/best device=cuda dtype=float16")  # fmt: skip
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no understood/ignored lines (warnings stay)")  # fmt: skip
    p.add_argument("--check", action="store_true",
                   help="score each image with the pack's finding checker and print one line per image: what was "
                        "asked, what the checker sees, ok or LOW/HIGH (engine.checker)")  # fmt: skip
    p.set_defaults(func=_run_generate)


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


def _load_checker(pack: ModelPack) -> Checker:
    """The pack's finding checker for ``--check``; a pack without one is a usage error (exit 2)."""
    from engine.checker import Checker, CheckerError

    try:
        return Checker(pack)
    except CheckerError as exc:
        raise UsageError(f"--check: {exc}") from None


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
    check_out_folder(out)
    if args.save_steps is not None and args.save_steps.exists() and not args.save_steps.is_dir():
        raise UsageError(f"--save-steps: {args.save_steps} exists and is not a folder")
    if args.attention is not None:
        if folder_in_use(args.attention):
            raise UsageError(f"--attention: {args.attention} exists and is not an empty folder; name a new folder")
        check_out_folder(args.attention)
    pack = load_model_pack(args.model)
    checker = _load_checker(pack) if args.check else None
    if args.attention is not None:
        try:
            require_attention(pack)
        except AttentionError as exc:
            raise UsageError(f"--attention: {exc}") from None
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
    if args.attention is not None:
        try:
            require_attention(pack, backend)
        except AttentionError as exc:
            raise UsageError(f"--attention: {exc}") from None
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
    for event in pipeline.iter_steps(request, attention=args.attention is not None):
        if isinstance(event, StepEvent):
            bar.update(1)
            if args.save_steps is not None:
                for i, frame in enumerate(to_uint8(event.preview)):
                    suffix = f"_{i:02d}" if request.batch_size > 1 else ""
                    atomic_write_bytes(args.save_steps / f"step_{event.index:03d}{suffix}.png", encode_png(frame))
        else:
            result = event
    bar.close()

    # 3. write the images atomically (a batch in DICOM is one series of one synthetic study); when one
    # cannot be written (a full disk), those written before it are removed: a batch is whole or absent
    paths = output_paths(out, request.batch_size)
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
                atomic_write_bytes(path, encode_png(image))
                written.append(path)
        if result.attention is not None:
            write_attention_maps(args.attention, result.attention, paths)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    if result.attention is not None:
        print(f"{args.attention}  finding maps: {len(result.attention.findings)} findings, "
              f"{len(result.attention.words)} words")  # fmt: skip
    t = result.timings
    checks = checker.check(request.prompt, result.images) if checker is not None else [None] * len(paths)
    for path, seed, check in zip(paths, result.seeds, checks, strict=True):
        print(f"{path}  seed={seed}")
        if check is not None:
            print(check.line())
    print(
        f"{request.num_steps} steps ({request.sampler}, guidance {request.guidance_scale:g}) on "
        f"{result.provider}: {t['total_s']:.2f} s (text {t['text_s']:.2f}, denoise {t['denoise_s']:.2f}, "
        f"decode {t['decode_s']:.2f})",
        file=sys.stderr,
    )
    return EXIT_OK


MAPS_JSON = "attention.json"


def _slug(text: str) -> str:
    """A file-name-safe form of a word or finding name: letters, digits, '-' and '_' only."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in text.lower())[:40] or "word"


def write_attention_maps(folder: Path, maps: FindingMaps, images: list[Path]) -> None:
    """Write ``maps`` into the new folder ``folder`` (staged: all of it or nothing): per image of the
    batch, ``finding_<name>.png`` and ``word_<NN>_<word>.png`` (16-bit grayscale, 0-65535 for 0-1, the
    image's size), and ``attention.json`` with one entry per map and image: kind, label, status, file,
    the image file it belongs to, token positions, character spans and ``max`` (the mean attention
    probability over layers and steps at the map's hottest pixel, before normalising)."""
    entries = []
    with staged_folder(folder) as tmp:
        for i, image_path in enumerate(images):
            suffix = f"_{i:02d}" if len(images) > 1 else ""
            named = [(f"finding_{_slug(m.label)}", m) for m in maps.findings]
            named += [(f"word_{k:02d}_{_slug(m.label)}", m) for k, m in enumerate(maps.words)]
            for stem, m in named:
                name = f"{stem}{suffix}.png"
                atomic_write_bytes(tmp / name, encode_png(to_uint16(m.image[i])))
                entries.append({
                    "kind": m.kind, "label": m.label, "status": m.status, "file": name, "image": image_path.name,
                    "tokens": list(m.tokens), "spans": [list(span) for span in m.spans], "max": m.peak[i],
                })  # fmt: skip
        document = {
            "prompt": maps.prompt,
            "aggregation": "cross-attention averaged over heads, summed over layers and steps (DAAM), "
            "bilinearly upsampled, each map stretched from its minimum (0) to its maximum (1)",
            "layers": maps.layers,
            "steps": maps.calls,
            "maps": entries,
        }
        atomic_write_text(tmp / MAPS_JSON, json.dumps(document, indent=2) + "\n")
