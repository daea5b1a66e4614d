"""The training recipe, compared at equal wall-clock (issue 16 item 2): epsilon (v1's), epsilon with
min-SNR-gamma weighting, v-prediction with min-SNR, and rectified flow with logit-normal noise levels
(SD3's recipe), each trained by ``cxr-studio train diffusion`` from the same start (the same seed: the
same UNet weights and batch order) for the same optimiser steps on the same data, then measured by
``cxr-studio evaluate`` on its export with one reduced, fixed protocol.

Every command runs through the CLI's own entry point in this one process (as ``cxr-studio`` would run it,
without importing torch again per command).

A step costs the same network work in every recipe (one UNet forward and backward on the same batch;
only the noising and the loss's target and weights differ), so equal steps should be equal minutes:
the table prints each recipe's training seconds (the optimiser steps alone, from its metrics log) and
the whole command's, and the spread between recipes, so that the claim is checked, not assumed.

Evaluation: the first recipe's evaluation trains the classifier, the others reuse it (``--classifier``),
so that every Fréchet distance is measured in one feature space. The final validation loss is printed
but is NOT comparable across prediction types (ε, v and the flow's ε - x_0 are different targets of
different scale); compare it only between recipes of one prediction type.

Two starts (``--init``): without it every recipe trains from scratch with ``--config`` (the clean
comparison, the default); with ``--init CHECKPOINT`` every recipe fine-tunes that diffusion checkpoint,
which for a recipe of another prediction type than the checkpoint's is a fine-tune of the prediction
type itself (the checkpoint's config with the recipe's schedule).

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_recipes.py --quick   # tiny model: ~1 min of CPU
    .venv/bin/python tests/benchmarks/bench_recipes.py --data MANIFEST --vae VAE_RUN --out /tmp/recipes \\
        --config cpu --steps 3000 --batch 48 --num-images 400
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

FIXTURES = ROOT / "tests/fixtures/pediatric-cxr"
EVAL_SKIP = "vae,utility,diversity,steps,memorisation,prompt_sets"


@dataclass(frozen=True)
class Recipe:
    name: str
    prediction_type: str
    min_snr_gamma: float = 0.0
    timestep_sampling: str = "auto"  # auto: U{0..N-1} for epsilon/v, logit-normal for flow

    def describe(self) -> str:
        weighting = f"min-SNR {self.min_snr_gamma:g}" if self.min_snr_gamma else "plain MSE"
        levels = "logit-normal σ" if self.prediction_type == "flow_prediction" else "uniform t"
        return f"{self.prediction_type}, {weighting}, {levels}"


def recipes(gamma: float) -> dict[str, Recipe]:
    return {
        "epsilon": Recipe("epsilon", "epsilon"),
        "epsilon-minsnr": Recipe("epsilon-minsnr", "epsilon", gamma),
        "v-minsnr": Recipe("v-minsnr", "v_prediction", gamma),
        "flow-lognorm": Recipe("flow-lognorm", "flow_prediction", 0.0, "logit-normal"),
    }


# --------------------------------------------------------------------------- inputs


def quick_inputs(work: Path) -> tuple[Path, Path]:
    """--quick: the 12 fixture radiographs imported and split per class (train, train, val, test), and a
    tiny random checkpoint as the VAE (and the config)."""
    from engine.manifest import read_manifest, write_manifest
    from training.data.importers.run import run_import
    from training.tiny import build_tiny_checkpoint

    manifest = work / "data" / "manifest.jsonl"
    manifest.parent.mkdir(parents=True)
    run_import("pediatric", [FIXTURES], manifest)
    records = read_manifest(manifest)
    order = ("train", "train", "val", "test")
    split = []
    for label in sorted({r.label for r in records}):
        members = sorted((r for r in records if r.label == label), key=lambda r: r.image)
        split += [replace(r, split=order[i % 4]) for i, r in enumerate(members)]
    write_manifest(manifest, split)
    return manifest, build_tiny_checkpoint(work / "tiny-vae", seed=0)


def recipe_config(base_spec: str, vae: Path, recipe: Recipe, shift: float, folder: Path) -> Path:
    """The clean start: ``base_spec``'s config (None: the VAE checkpoint's) with the recipe's schedule, as a
    config file for --config; checked against the VAE as ``train diffusion`` will check it."""
    from training.checkpoint import load_config
    from training.diffusion_setup import diffusion_config, resolve_vae_checkpoint
    from training.loop import absolute_encoder, resolve_config

    vae_dir = resolve_vae_checkpoint(str(vae))
    vae_config = absolute_encoder(load_config(vae_dir), vae_dir)
    base = resolve_config(base_spec) if base_spec else vae_config
    flow = recipe.prediction_type == "flow_prediction"
    schedule = replace(base.schedule, prediction_type=recipe.prediction_type, shift=shift if flow else 1.0)
    path = folder / f"{recipe.name}.json"
    path.write_text(replace(base, schedule=schedule).dumps(), encoding="utf-8")
    diffusion_config(vae_config, str(path))  # a geometry or VAE mismatch fails here, before any training
    return path


def recipe_init(init: str, recipe: Recipe, shift: float, folder: Path) -> Path:
    """The fine-tune start: the --init checkpoint's files linked into ``folder``/NAME, its config.json with
    the recipe's schedule (for another prediction type: a fine-tune of the prediction type)."""
    from training.diffusion_setup import resolve_vae_checkpoint

    source = resolve_vae_checkpoint(init, "--init")
    target = folder / recipe.name
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name != "config.json":
            (target / entry.name).symlink_to(entry.resolve())
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    flow = recipe.prediction_type == "flow_prediction"
    config["schedule"] = {
        **config["schedule"],
        "prediction_type": recipe.prediction_type,
        "shift": shift if flow else 1.0,
    }
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return target


# --------------------------------------------------------------------------- one recipe


def cli(*argv: str) -> float:
    """Run ``cxr-studio ARGV`` through the CLI's own entry point, in this process (no fresh import of torch
    per command); its wall seconds. Exits with its output when it fails."""
    from engine.cli.main import main as cxr_studio

    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cxr_studio(list(argv))
    if code != 0:
        sys.exit(f"bench_recipes: cxr-studio {' '.join(argv[:2])} failed ({code}):\n{out.getvalue()[-3000:]}"
                 f"{err.getvalue()[-3000:]}")  # fmt: skip
    return time.perf_counter() - started


def train_seconds(run: Path, batch: int) -> tuple[float, int, float | None]:
    """(seconds of the optimiser steps alone, steps, final val loss) from the run's metrics log: each
    logged interval's steps x batch / its images_per_s (validation, samples and checkpoints excluded)."""
    seconds, last_step, val = 0.0, 0, None
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "images_per_s" in record:
            seconds += (record["step"] - last_step) * batch / record["images_per_s"]
            last_step = record["step"]
        if "val_loss" in record:
            val = record["val_loss"]
    return seconds, last_step, val


def pick(report: dict, *keys: str) -> dict | None:
    entry = report
    for key in keys:
        if not isinstance(entry, dict) or key not in entry:
            return None
        entry = entry[key]
    return entry


def with_ci(entry: dict | None) -> str:
    """``value [low, high]`` to 4 significant digits (a Fréchet distance of the tiny model is about 0.003)."""
    if not entry or entry.get("value") is None:
        return "–"
    ci = entry.get("ci95") or [None, None]
    if ci[0] is None or ci[1] is None:
        return f"{entry['value']:.4g}"
    return f"{entry['value']:.4g} [{ci[0]:.4g}, {ci[1]:.4g}]"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add(
        "--quick",
        action="store_true",
        help="the tiny model on the 12 fixture films, 8 steps: a smoke run (about 1 CPU-minute)",
    )
    add("--data", type=Path, default=None, help="manifest with train, val and test splits (required unless --quick)")
    add(
        "--eval-data",
        type=Path,
        default=None,
        help="the evaluations' manifest when it is not --data's, e.g. the paediatric part of a mixed training set, "
        "so that every recipe is measured on v1's protocol (default: --data)",
    )
    add("--vae", default=None, help="VAE run or checkpoint (required unless --quick or --init)")
    add("--init", default=None, help="fine-tune this diffusion run or checkpoint instead of training from scratch")
    add(
        "--config",
        default="cpu",
        help="from scratch: tiny|cpu|default|FILE.json (default cpu; --quick: the tiny VAE's)",
    )
    add("--out", type=Path, default=None, help="work folder: runs, packs, reports, recipes.json (default: a temp one)")
    add(
        "--recipes", default=None, help="comma-separated, of epsilon,epsilon-minsnr,v-minsnr,flow-lognorm (default all)"
    )
    add("--gamma", type=float, default=5.0, help="min-SNR gamma of the min-SNR recipes (default 5, Hang et al.)")
    add("--shift", type=float, default=1.0, help="the flow recipe's schedule shift (default 1; SD3 at 1024 px: 3)")
    add("--steps", type=int, default=2000, help="optimiser steps of every recipe (default 2000; --quick 8)")
    add("--batch", type=int, default=32, help="batch size (default 32; --quick 4)")
    add("--lr", type=float, default=2e-4, help="learning rate (default 2e-4)")
    add("--seed", type=int, default=0, help="seed of every run (the same start for all; default 0)")
    add("--train-args", default="", help="more train diffusion flags for every recipe, e.g. '--latent-cache DIR'")
    add("--num-images", type=int, default=400, help="generated images per evaluation (default 400; --quick 18)")
    add("--eval-steps", type=int, default=None, help="sampler steps of the evaluation (default: the pack's)")
    add("--bootstrap", type=int, default=1000, help="bootstrap resamples of the CIs (default 1000; --quick 100)")
    add("--skip", default=EVAL_SKIP, help=f"evaluate sections left out (default {EVAL_SKIP})")
    add("--eval-args", default="", help="more evaluate flags for every recipe, e.g. '--classes normal,pneumonia'")
    add("--threads", type=int, default=None, help="torch / ONNX Runtime threads (default: theirs)")
    args = parser.parse_args(argv)

    chosen = recipes(args.gamma)
    names = [n.strip() for n in (args.recipes or ",".join(chosen)).split(",") if n.strip()]
    unknown = [n for n in names if n not in chosen]
    if unknown or not names:
        parser.error(f"--recipes: unknown {', '.join(unknown) or '(none given)'}; of {', '.join(chosen)}")
    explicit = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--")}
    if args.quick:
        args.steps = args.steps if "--steps" in explicit else 8
        args.batch = args.batch if "--batch" in explicit else 4
        args.num_images = args.num_images if "--num-images" in explicit else 18
        args.bootstrap = args.bootstrap if "--bootstrap" in explicit else 100
    elif args.data is None or (args.vae is None and args.init is None):
        parser.error("--data and --vae (or --init) are required unless --quick")
    work = args.out or Path(tempfile.mkdtemp(prefix="bench-recipes-"))
    if work.exists() and any(work.iterdir()):
        parser.error(f"--out {work}: not empty; choose a new folder")
    work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    # 1. inputs: data, VAE, and each recipe's start (a config file, or a linked checkpoint)
    data, vae, config = args.data, args.vae, args.config
    if args.quick:
        data, tiny = quick_inputs(work)
        vae, config = str(vae or tiny), None if "--config" not in explicit else config
    starts = work / "starts"
    starts.mkdir()
    start = f"fine-tuning {args.init}" if args.init else f"from scratch, config {config or 'the VAE checkpoint'}"
    print(f"recipe bench in {work}: {args.steps} steps x batch {args.batch}, seed {args.seed}, {start}", flush=True)

    rows, classifier = [], None
    for name in names:
        recipe = chosen[name]
        run, pack, report = work / "runs" / name, work / "packs" / name, work / "reports" / name
        train = ["train", "diffusion", "--data", str(data), "--out", str(run), "--export", str(pack),
                 "--steps", str(args.steps), "--batch-size", str(args.batch), "--lr", str(args.lr),
                 "--seed", str(args.seed), "--min-snr-gamma", str(recipe.min_snr_gamma),
                 "--timestep-sampling", recipe.timestep_sampling, "--log-every", "1", "--quiet"]  # fmt: skip
        if args.init:
            train += ["--init-from", str(recipe_init(args.init, recipe, args.shift, starts))]
            train += ["--vae", vae] if vae else []
        else:
            train += ["--vae", vae, "--config", str(recipe_config(config, Path(vae), recipe, args.shift, starts))]
        if args.quick:
            train += ["--checkpoint-every", str(args.steps), "--workers", "1", "--caption-augment", "0"]
        train += shlex.split(args.train_args)
        # 2. train and export
        print(f"{name}: training ({recipe.describe()}) ...", flush=True)
        wall = cli(*train)
        seconds, steps, val_loss = train_seconds(run, args.batch)
        # 3. evaluate (the first evaluation trains the classifier, the rest reuse it: one feature space)
        evaluate = ["evaluate", "--model", str(pack), "--data", str(args.eval_data or data), "--out", str(report),
                    "--num-images", str(args.num_images), "--bootstrap", str(args.bootstrap), "--skip", args.skip,
                    "--seed", str(args.seed), "--quiet"]  # fmt: skip
        evaluate += ["--steps", str(args.eval_steps)] if args.eval_steps else []
        evaluate += ["--threads", str(args.threads)] if args.threads else []
        evaluate += ["--quick", "--classifier-size", "32", "--classifier-epochs", "4"] if args.quick else []
        evaluate += ["--classifier", str(classifier)] if classifier else []
        evaluate += shlex.split(args.eval_args)
        print(f"{name}: trained {steps} steps in {seconds:.1f} s ({wall:.0f} s with caching and export); "
              "evaluating ...", flush=True)  # fmt: skip
        eval_wall = cli(*evaluate)
        classifier = classifier or report / "classifier"
        data_report = json.loads((report / "report.json").read_text(encoding="utf-8"))
        rows.append({
            "recipe": name, "describe": recipe.describe(), "steps": steps, "train_seconds": seconds,
            "train_command_seconds": wall, "evaluate_seconds": eval_wall, "final_val_loss": val_loss,
            "frechet_generated_vs_test": pick(data_report, "frechet", "generated_vs_real_test"),
            "frechet_floor": pick(data_report, "frechet", "real_train_vs_real_test"),
            "alignment_accuracy": pick(data_report, "alignment", "generated", "accuracy"),
            "alignment_macro_auroc": pick(data_report, "alignment", "generated", "macro_auroc"),
        })  # fmt: skip

    # 4. the table
    header = ("recipe", "train s", "s/step", "command s", "final val loss*", "Fréchet gen-test [95% CI]",
              "floor", "alignment acc [95% CI]", "macro AUROC [95% CI]")  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        val = "–" if r["final_val_loss"] is None else f"{r['final_val_loss']:.4f}"
        floor = r["frechet_floor"]["value"] if r["frechet_floor"] else math.nan
        lines.append(
            f"| {r['recipe']} | {r['train_seconds']:.1f} | {r['train_seconds'] / max(r['steps'], 1):.3f} | "
            f"{r['train_command_seconds']:.0f} | {val} | {with_ci(r['frechet_generated_vs_test'])} | {floor:.4g} | "
            f"{with_ci(r['alignment_accuracy'])} | {with_ci(r['alignment_macro_auroc'])} |"
        )
    spread = max(r["train_seconds"] for r in rows) / max(min(r["train_seconds"] for r in rows), 1e-9)
    first = "trained by the first recipe's evaluation"
    judge = "--eval-args' --classifier" if "--classifier" in args.eval_args else first
    notes = [
        f"{args.steps} steps x batch {args.batch} each, seed {args.seed}, trained on {data}; evaluate on "
        f"{args.eval_data or data}: {args.num_images} images, "
        f"--skip {args.skip}, one classifier ({judge}).",
        f"train s: the optimiser steps alone (metrics log); slowest / fastest = {spread:.2f}"
        + (" (equal steps ≈ equal minutes holds)" if spread <= 1.15 else
           " (NOT equal minutes: compare at equal seconds, or rerun on an idle machine)"),
        "* val loss: MSE against each recipe's own target (ε, v, or the flow's ε - x_0): not comparable across "
        "prediction types, only between recipes of one type.",
    ]  # fmt: skip
    print("\n".join(["", *lines, "", *notes]))
    (work / "recipes.json").write_text(json.dumps({"rows": rows, "notes": notes}, indent=2) + "\n", encoding="utf-8")
    (work / "recipes.md").write_text("\n".join([*lines, "", *notes]) + "\n", encoding="utf-8")
    print(f"\nwritten: {work / 'recipes.md'}, {work / 'recipes.json'}")
    if args.out is None and args.quick:
        shutil.rmtree(work / "runs", ignore_errors=True)  # the smoke run keeps its table only
    return 0


if __name__ == "__main__":
    sys.exit(main())
