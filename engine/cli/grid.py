"""``cxr-studio grid``: a contact sheet, one row per prompt and one column per seed.

The rows are labelled with the prompt (wrapped), the columns with the seed, and the footer
names the model, sampler, steps and guidance, so a sheet is reproducible from itself. Every
image carries the SYNTHETIC mark of the sheet's footer; a teaching file should still say so.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from engine.cli.common import add_model_arg
from engine.fileio import atomic_write_bytes
from engine.imaging import encode_png
from engine.pack import load_model_pack
from engine.pipeline import Pipeline
from engine.sheet import column_labels, contact_sheet


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "grid",
        help="contact sheet: one row per prompt, one column per seed (8-bit PNG)",
        description="Generate every prompt with every seed and tile the images into one labelled PNG.",
    )
    p.add_argument("prompts", nargs="*", help="prompts (default: the model card's example prompts)")
    p.add_argument("--seeds", type=int, default=4, help="number of seeds per prompt (default 4)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds are FIRST, FIRST+1, ... (default 0)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--guidance-scale", type=float, default=None, help="guidance (default: the model's)")
    p.add_argument("--sampler", default=None, help="sampler (default: the model's)")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    add_model_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.cli.common import UsageError, check_out_folder, request_from_args

    # 1. check everything before generating
    if args.out.suffix.lower() != ".png":
        raise UsageError("--out must name a .png file")
    check_out_folder(args.out)
    if not 1 <= args.seeds <= 16:
        raise UsageError(f"--seeds must be from 1 to 16, not {args.seeds}")
    pack = load_model_pack(args.model)
    prompts = list(args.prompts) or [str(p) for p in pack.card.get("example_prompts", [])]
    if not prompts:
        raise UsageError("no prompts given and the model card lists no example_prompts")
    template = request_from_args(args, pack, prompt=prompts[0], seed=args.first_seed, batch_size=args.seeds)
    requests = [replace(template, prompt=prompt).validated() for prompt in prompts]
    # 2. generate (a batch per prompt: image i has seed first + i) and tile
    pipeline = Pipeline(pack)
    rows = []
    for request in requests:
        result = pipeline.generate(request)
        rows.append((request.prompt, list(result.to_uint8())))
        print(f"{request.prompt!r}: {result.timings['total_s']:.2f} s", file=sys.stderr)
    seeds = [args.first_seed + i for i in range(args.seeds)]
    r = requests[0]
    footer = (
        f"SYNTHETIC - {pack.manifest.model_id} - {r.sampler}, {r.num_steps} steps, guidance {r.guidance_scale:g} "
        f"- {pipeline.backend.provider}"
    )
    atomic_write_bytes(args.out, encode_png(contact_sheet(rows, column_labels("seed", seeds), footer)))
    print(f"wrote {args.out}")
    return 0
