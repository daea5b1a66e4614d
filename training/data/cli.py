"""``cxr-studio import KIND PATHS... --out MANIFEST.jsonl``: data sets -> one training manifest.

Registered through the entry-point group ``cxr_studio.commands``
(``import = "training.data.cli:register_import"``). Registering is cheap (argparse only); the
importers (OpenCV, pydicom) load when the command runs. Also runnable alone:
``python -m training.data.cli import pediatric ../shared/data/pediatric-cxr --out train.jsonl``.

Exit codes: 0 written; 1 nothing could be imported (the summary says why); 2 bad arguments
(one line on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from training.cli import command_error

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
KINDS = ("pediatric", "iu-xray", "nih", "csv", "dicom", "hannover", "merge")

_EPILOG = """kinds and their paths:
  pediatric  FOLDER...          labels.csv + images/, or Kaggle chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}
  iu-xray    REPORTS IMAGES     NLMCXR_reports.tgz (or its XML folder) and the NLMCXR_png folder
  nih        TABLE... FOLDER... Data_Entry_2017*.csv(.gz) or images.csv, and image folder(s)
  csv        TABLE...           columns path,text[,findings,patient_id,view,age,sex,label]
  dicom      FOLDER|FILE...     DICOM files; PNGs are written to MANIFEST-STEM_images/ beside the manifest
  hannover   DATA.CSV FOLDER    Hannover Medical School COVID-19 films: data.csv and the images folder
                                (adults, age redacted; no per-image findings; CC BY 3.0, credit the authors)
  merge      MANIFEST...        manifests of several sources -> one (image paths re-pointed, splits kept;
                                --seed and the fractions do not apply), for one training run on all of them
"""


def register_import(subparsers: argparse._SubParsersAction) -> None:
    """Add ``import KIND PATHS... --out MANIFEST [--seed N] [--val-frac F] [--test-frac F] ...``."""
    parser = subparsers.add_parser(
        "import",
        help="import a data set into a training manifest (JSON Lines)",
        description="Import images and their labels or reports into one manifest, split by patient.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", metavar="KIND", help=f"one of {', '.join(KINDS)}")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files and folders of the data set")
    parser.add_argument("--out", type=Path, required=True, metavar="MANIFEST.jsonl", help="the manifest to write")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the patient split and caption phrasing (default 0)"
    )
    parser.add_argument(
        "--val-frac", type=float, default=0.1, metavar="F", help="fraction of patients for val (default 0.1)"
    )
    parser.add_argument(
        "--test-frac", type=float, default=0.1, metavar="F", help="fraction of patients for test (default 0.1)"
    )
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="stop after N images")
    parser.add_argument(
        "--no-verify", action="store_true", help="do not decode every image (faster; unreadable ones pass)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing manifest")
    group = parser.add_argument_group("iu-xray")
    group.add_argument("--include-lateral", action="store_true", help="keep lateral views too")
    group.add_argument(
        "--projections", type=Path, default=None, metavar="CSV",
        help="views per image (uid,filename,projection, as Kaggle's indiana_projections.csv); else guessed",
    )  # fmt: skip
    group = parser.add_argument_group("dicom")
    group.add_argument("--bits", type=int, default=16, help="PNG bit depth, 8 or 16 (default 16)")
    group.add_argument("--clahe", action="store_true", help="CLAHE, clip limit 2.0, 8x8 tiles")
    group.add_argument(
        "--clip-percentiles", type=float, nargs=2, default=(0.5, 99.5), metavar=("LOW", "HIGH"),
        help="percentiles mapped to black and white (default 0.5 99.5)",
    )  # fmt: skip
    parser.set_defaults(func=run)


SKIPPED_LISTED = 50  # named skipped items printed; the rest are counted


def skipped_by_name(imported: int, skipped: int, items: Sequence[tuple[str, str]]) -> str:
    """The closing lines: "imported N, skipped M" and each skipped item the importer named, with why."""
    lines = [f"imported {imported}, skipped {skipped}" + (":" if items else "")]
    lines += [f"  {name}: {reason}" for name, reason in items[:SKIPPED_LISTED]]
    if len(items) > SKIPPED_LISTED:
        lines.append(f"  ... and {len(items) - SKIPPED_LISTED} more")
    return "\n".join(lines)


def _error(message: str) -> int:
    return command_error("import", message)


def run(args: argparse.Namespace) -> int:
    """Import; see the module docstring for the exit codes."""
    # 1. arguments that need no reading
    if args.kind not in KINDS:
        return _error(f"unknown kind {args.kind!r}; one of {', '.join(KINDS)}")
    if args.out.exists() and not args.overwrite:
        return _error(f"{args.out} exists; pass --overwrite to replace it")
    if args.out.exists() and not args.out.is_file():
        return _error(f"{args.out} exists and is not a file")

    from engine.manifest import ManifestError
    from training.data.importers.common import ImporterError, ImportOptions
    from training.data.importers.run import run_import

    # 2. import; a bad path or file kind is a usage error, skipped items are not
    options = ImportOptions(
        seed=args.seed,
        limit=args.limit,
        verify_images=not args.no_verify,
        include_lateral=args.include_lateral,
        projections=args.projections,
        bits=args.bits,
        clahe=args.clahe,
        clip_percentiles=tuple(args.clip_percentiles),
    )
    try:
        summary, result = run_import(
            args.kind, args.paths, args.out, options, val_frac=args.val_frac, test_frac=args.test_frac
        )
    except (ImporterError, ManifestError, OSError) as exc:
        return _error(str(exc))
    print(summary.format())
    print(skipped_by_name(len(summary.records), sum(summary.skipped.values()), result.skipped_items))
    if not summary.records:
        print("cxr-studio import: no image could be imported; nothing written", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {args.out}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """The command alone, without the rest of ``cxr-studio``."""
    parser = argparse.ArgumentParser(prog="python -m training.data.cli")
    subparsers = parser.add_subparsers(dest="command", required=True)
    register_import(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
