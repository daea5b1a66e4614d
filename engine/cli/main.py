"""``cxr-studio``: the parser, ``info``, and the subcommands of engine.cli and of other packages.

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

from engine import __version__
from engine.cli import dataset as cli_dataset
from engine.cli import dicom as cli_dicom
from engine.cli import generate as cli_generate
from engine.cli import grid as cli_grid
from engine.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, add_model_arg
from engine.pack import PackError, card_text, load_model_pack
from engine.pipeline import RequestError
from engine.runtime import BackendError
from engine.text import PromptError


def _add_info(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="print a model pack's model card")
    add_model_arg(p)
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    pack = load_model_pack(args.model)
    print(card_text(pack.manifest, pack.root, pack.fingerprint))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxr-studio",
        description="Synthetic chest radiographs from clinical text (for education and testing; not for diagnosis).",
    )
    parser.add_argument("--version", action="version", version=f"cxr-studio {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    cli_generate.register(subparsers)
    _add_info(subparsers)
    cli_dicom.register(subparsers)
    cli_grid.register(subparsers)
    cli_dataset.register(subparsers)
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
