"""What every ``cxr-studio`` command shares: exit codes, :class:`UsageError`, the ``--model`` option
(read by ``engine.pack.load_model_pack``), the request from ``--steps``/``--guidance-scale``/``--sampler``,
and output paths.

The command modules (generate, dicom, grid, dataset) import this module, and main imports them: nothing in
``engine.cli`` imports main, so there is no import circle.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.pipeline import GenerationRequest

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(ValueError):
    """Bad input from the command line: one line, exit code 2, nothing written."""


def add_model_arg(parser: argparse.ArgumentParser) -> None:
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


def check_out_folder(out: Path) -> None:
    """``--out FILE`` goes into a folder that exists: the commands never make one (a typo would)."""
    if not out.parent.resolve().is_dir():
        raise UsageError(f"--out: the folder {out.parent} does not exist")


def output_paths(out: Path, batch: int) -> list[Path]:
    """``--out`` for one image, else ``STEM_00.SUFFIX``, ``STEM_01.SUFFIX``, ... for a batch."""
    if batch == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i:02d}{out.suffix}") for i in range(batch)]
