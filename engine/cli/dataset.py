"""``cxr-studio make-dataset``: N generated images per prompt and one manifest, in one process or many.

``--shard K/N`` (or RANK / WORLD_SIZE, as torchrun sets them) runs one slice; the slices merge into
one manifest when the last one finishes (or with ``--merge-only``). See :mod:`engine.synthetic`
for the seed rule and the folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine import synthetic
from engine.cli.common import EXIT_OK, add_model_arg
from engine.pack import load_model_pack
from engine.pipeline import Pipeline
from engine.samplers import SAMPLERS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "make-dataset",
        help="generate N images per prompt and a manifest (sharded with --shard K/N or under torchrun)",
        description=(
            "Generate --count images for each prompt of --prompts into --out, with a manifest (engine.manifest "
            "format) that training and evaluation read. Item i uses prompt i // count and seed --seed + i, so "
            "any image can be made again alone. With --shard K/N, or RANK and WORLD_SIZE set (torchrun), this "
            "process makes its slice only; the slices merge into manifest.jsonl when all are there. A stopped "
            "run resumes where it stopped."
        ),
    )
    p.add_argument("--prompts", type=Path, required=True, help="text file, one prompt per line ('#' comments)")
    p.add_argument("--count", type=int, required=True, help="images per prompt")
    p.add_argument("--out", type=Path, required=True, help="data set folder (created; reused only for the same plan)")
    p.add_argument("--seed", type=int, default=0, help="seed of item 0; item i uses seed + i (default 0)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="dpmpp-2m")
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument("--batch", type=int, default=8, help="images per model call (part of the plan; default 8)")
    p.add_argument("--shard", help="K/N: make slice K of N (default: RANK/WORLD_SIZE from torchrun, else 0/1)")
    p.add_argument("--merge-only", action="store_true", help="only merge the slices already in --out")
    p.add_argument("--provider", default="auto", help="ONNX Runtime provider: auto, cpu or cuda")
    p.add_argument("--quiet", action="store_true")
    add_model_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.merge_only:
        merged = synthetic.merge(args.out)
        if merged is None:
            raise synthetic.DatasetError(f"{args.out}: some slices or images are missing; run the missing shards")
        print(merged)
        return EXIT_OK
    shard = synthetic.parse_shard(args.shard) if args.shard else synthetic.shard_from_environment() or (0, 1)
    prompts = synthetic.read_prompts(args.prompts)
    pipeline = Pipeline(load_model_pack(args.model), provider=args.provider)
    plan = synthetic.plan_for(
        pipeline,
        prompts,
        args.count,
        seed=args.seed,
        batch=args.batch,
        num_steps=args.steps,
        guidance_scale=args.guidance,
        sampler=args.sampler,
        negative_prompt=args.negative,
    )

    def progress(state: synthetic.ShardProgress) -> None:
        if not args.quiet:
            print(f"shard {shard[0]}/{shard[1]}: batch {state.done}/{state.total}", file=sys.stderr, flush=True)

    part = synthetic.make_shard(pipeline, args.out, plan, shard, on_batch=progress)
    merged = synthetic.merge(args.out, plan)
    print(merged if merged is not None else part)
    return EXIT_OK
