"""``cxr-studio pacs | send | outbox | make-studies``: PACS nodes, sending through the outbox, bulk studies."""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine.cli.common import UsageError, add_model_arg
from engine.dicom.dimse import echo
from engine.dicom.outbox import Outbox
from engine.dicom.pacs import (
    MAX_ASSOCIATIONS,
    MAX_TIMEOUT_S,
    TIMEOUT_RULE,
    PacsNode,
    SendEvent,
    SendReport,
    valid_timeout,
)

if TYPE_CHECKING:
    from engine.checker import Checker
    from engine.pipeline import GenerationRequest, GenerationResult, Pipeline

DICOM_IODS = ("sc", "dx")
TRANSFER_SYNTAXES = ("explicit", "rle", "jpeg-ls", "jpeg2000")


def add_dicom_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iod", choices=DICOM_IODS, default="sc", help="DICOM: Secondary Capture (SYN) or DX")
    parser.add_argument("--transfer-syntax", choices=TRANSFER_SYNTAXES, default="explicit", help="DICOM encoding")
    parser.add_argument("--burn-in", action="store_true", help='DICOM: draw "SYNTHETIC" into the pixels')


def add_associations_option(parser: argparse.ArgumentParser) -> None:
    # a string, checked by _associations_arg: argparse's own type errors print the usage too (not one line)
    parser.add_argument(
        "--associations", default="1", metavar="N",
        help=f"send over N associations (STOW-RS: N requests) at once, 1 to {MAX_ASSOCIATIONS} (default 1)",
    )  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    # pacs: configured nodes
    p = subparsers.add_parser("pacs", help="configure PACS nodes and test them with C-ECHO")
    sub = p.add_subparsers(dest="pacs_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add or replace a node")
    add.add_argument("name")
    add.add_argument("--host", required=True)
    add.add_argument("--port", type=int, required=True)
    add.add_argument("--aet", required=True, help="the PACS's (called) AE title")
    add.add_argument("--calling-aet", default="CXRSTUDIO")
    add.add_argument(
        "--dicomweb-url", default="", help="DICOMweb base URL for STOW-RS, e.g. http://host:8042/dicom-web"
    )
    add.add_argument("--user", default="", help="DICOMweb user (basic auth); without a password option, asked for")
    secret = add.add_mutually_exclusive_group()
    secret.add_argument(
        "--password", default=None, help="DICOMweb password (visible to ps and in the shell history: prefer the others)"
    )
    secret.add_argument("--password-stdin", action="store_true", help="read the DICOMweb password from stdin")
    secret.add_argument("--password-env", metavar="VAR", default=None, help="take the password from variable VAR")
    add.add_argument(
        "--timeout", default=None, metavar="SECONDS",
        help=f"limit for each step of an exchange: connect, association, each C-ECHO/C-STORE answer, each HTTP "
        f"request (0 < SECONDS <= {MAX_TIMEOUT_S:g}; default 10 s to connect, 30 s to associate, 60 s per answer)",
    )  # fmt: skip
    sub.add_parser("list", help="list the nodes")
    rm = sub.add_parser("remove", help="remove a node")
    rm.add_argument("name")
    ping = sub.add_parser("echo", help="C-ECHO a node")
    ping.add_argument("name")
    p.set_defaults(func=_run_pacs)

    # send: files -> outbox -> node
    p = subparsers.add_parser("send", help="send DICOM files to a PACS node (via the outbox: nothing is lost)")
    p.add_argument("files", nargs="*", type=Path, help="DICOM files or folders (none: resend the outbox)")
    p.add_argument("--node", required=True, help="a node from `cxr-studio pacs list`")
    p.add_argument("--stow", action="store_true", help="DICOMweb STOW-RS instead of C-STORE")
    p.add_argument("--retries", type=int, default=3)
    add_associations_option(p)
    p.add_argument("--outbox", type=Path, default=None, help="outbox folder (default: in the user data dir)")
    p.add_argument(
        "--include-unassigned", action="store_true",
        help="also send the outbox files that belong to no node (queued by an earlier version) to this node",
    )  # fmt: skip
    p.set_defaults(func=_run_send)

    # outbox: what is waiting
    p = subparsers.add_parser("outbox", help="list the files waiting in the outbox")
    p.add_argument("--outbox", type=Path, default=None)
    p.set_defaults(func=_run_outbox)

    # make-studies
    p = subparsers.add_parser("make-studies", help="N synthetic patients/studies as DICOM, for PACS testing")
    p.add_argument("--count", type=int, required=True, help="number of studies (one patient each)")
    p.add_argument("--prompts", type=Path, required=True, help="text file, one prompt per line, used in turn")
    p.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    p.add_argument("--images-per-study", type=int, default=1)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="makes demographics and images reproducible (UIDs stay fresh)")
    p.add_argument("--send", metavar="NODE", default=None, help="send everything to this node afterwards")
    p.add_argument("--stow", action="store_true", help="with --send: STOW-RS instead of C-STORE")
    add_associations_option(p)
    p.add_argument("--dicomdir", action="store_true", help="also write a DICOMDIR file-set under OUT/fileset")
    add_model_arg(p)
    p.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto")
    add_dicom_options(p)
    p.add_argument("--check-min", type=float, default=None, metavar="P",
                   help="score every image with the pack's finding checker and make it again with the next seed "
                        "(seed + k x 16, within the study's seeds) until what the prompt asks scores >= P "
                        "(0 < P < 1) or --check-tries images were made; then keep the best")  # fmt: skip
    p.add_argument("--check-tries", type=int, default=5, metavar="N",
                   help="with --check-min: at most N images per image kept (default 5)")  # fmt: skip
    p.set_defaults(func=_run_make_studies)


def _skipped_in_folder(path: Path, folder: Path) -> bool:
    """Hidden files and folders, and ``*.tmp`` (what a killed atomic write leaves), are not for sending."""
    parts = path.relative_to(folder).parts
    return any(part.startswith(".") for part in parts) or path.name.lower().endswith(".tmp")


def _dicom_files(items: list[Path]) -> tuple[list[Path], int]:
    """The files named and those in the folders named (but no hidden, temporary or DICOMDIR file in a
    folder); and how many were skipped. A file named on its own is taken as it is."""
    files, skipped = [], 0
    for item in items:
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.is_file() and p.name != "DICOMDIR"):
                if _skipped_in_folder(path, item):
                    skipped += 1
                else:
                    files.append(path)
        elif item.is_file():
            files.append(item)
        else:
            raise UsageError(f"{item}: no such file or folder")
    return files, skipped


def _timeout_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not valid_timeout(value):
        raise UsageError(f"--timeout {TIMEOUT_RULE}, got {text}")
    return value


def _associations_arg(text: str) -> int:
    """--associations as a number of parallel associations, or one line saying what is allowed."""
    value = int(text) if text.strip().isdigit() else 0
    if not 1 <= value <= MAX_ASSOCIATIONS:
        raise UsageError(f"--associations must be a whole number from 1 to {MAX_ASSOCIATIONS}, got {text!r}")
    return value


def _password_arg(args: argparse.Namespace) -> str:
    """The DICOMweb password from --password, stdin, a variable, or a prompt (never needed in argv)."""
    if args.password is not None:
        return args.password
    if args.password_env is not None:
        if args.password_env not in os.environ:
            raise UsageError(f"--password-env: the environment variable {args.password_env} is not set")
        return os.environ[args.password_env]
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UsageError("--password-stdin: nothing to read on standard input")
        return line.rstrip("\r\n")
    if args.user and sys.stdin is not None and sys.stdin.isatty():
        return getpass.getpass(f"DICOMweb password for {args.user} at {args.dicomweb_url or args.host}: ")
    return ""


def _run_pacs(args: argparse.Namespace) -> int:
    from engine.dicom.nodes import get_node, load_nodes, save_nodes

    if args.pacs_command == "add":
        # --timeout bounds every step, not only the connect: a peer that accepts and then stalls is cut off too
        timeouts = {}
        if args.timeout is not None:
            seconds = _timeout_arg(args.timeout)
            timeouts = {name: seconds for name in ("connection", "acse", "dimse", "network")}
        node = PacsNode(
            name=args.name, host=args.host, port=args.port, called_ae_title=args.aet,
            calling_ae_title=args.calling_aet, dicomweb_url=args.dicomweb_url, dicomweb_user=args.user,
            dicomweb_password=_password_arg(args), **{f"{name}_timeout_s": value for name, value in timeouts.items()},
        )  # fmt: skip
        nodes = load_nodes()
        nodes[node.name] = node
        print(f"saved {node.label} in {save_nodes(nodes)}")
        if node.dicomweb_user and node.dicomweb_url.startswith("http:"):
            print(
                f"warning: the DICOMweb password for {node.dicomweb_user} will go to {node.dicomweb_url} "
                "unencrypted (plain http); use an https URL outside a test setup",
                file=sys.stderr,
            )
    elif args.pacs_command == "list":
        for node in load_nodes().values():
            web = f"  DICOMweb {node.dicomweb_url}" if node.dicomweb_url else ""
            print(f"{node.name}: {node.called_ae_title}@{node.host}:{node.port}{web}")
    elif args.pacs_command == "remove":
        nodes = load_nodes()
        if nodes.pop(args.name, None) is None:
            raise UsageError(f"no PACS node named {args.name!r}")
        save_nodes(nodes)
    elif args.pacs_command == "echo":
        result = echo(get_node(args.name))
        print(result.message)
        return 0 if result.ok else 1
    return 0


def _print_progress(event: SendEvent) -> None:
    if event.message:
        print(f"  {event.message}", file=sys.stderr)


def _outbox_option(outbox_arg: Path | None) -> str:
    """`` --outbox DIR`` for a command line that must reach the same outbox (empty for the default one)."""
    return f" --outbox {shlex.quote(str(outbox_arg))}" if outbox_arg is not None else ""


def _send_outbox(
    outbox: Outbox, node: PacsNode, stow: bool, retries: int, outbox_arg: Path | None = None, associations: int = 1
) -> SendReport:
    """Send ``node``'s queue; print the summary, each failure, and how to resend what is left."""
    method = "stow" if stow else "c-store"
    report = outbox.send(node, method, retries=retries, associations=associations, progress=_print_progress)
    print(report.summary())
    for failure in report.failed:
        aside = " (moved to the outbox's failed/ folder)" if failure.bad_file else ""
        print(f"  failed: {failure.path.name}: {failure.message}{aside}", file=sys.stderr)
    left = len(outbox.pending(node.name))
    if left:
        resend = f"cxr-studio send --node {shlex.quote(node.name)}{_outbox_option(outbox_arg)}"
        print(f"{left} file(s) kept in the outbox {outbox.folder}; resend with `{resend}`")
    return report


def _run_send(args: argparse.Namespace) -> int:
    from engine.dicom.nodes import get_node

    node = get_node(args.node)
    if args.stow and not node.dicomweb_url:
        raise UsageError(
            f"node {node.name!r} has no DICOMweb URL; add one with `cxr-studio pacs add ... --dicomweb-url`"
        )
    if args.retries < 0:  # checked before anything is queued
        raise UsageError(f"--retries must be 0 or more, got {args.retries}")
    associations = _associations_arg(args.associations)
    files, skipped = _dicom_files(args.files)
    if skipped:
        print(f"skipped {skipped} hidden or temporary (*.tmp) file(s) in the folder(s)", file=sys.stderr)
    outbox = Outbox(args.outbox)
    # 1. queue everything first, each file checked whole: a bad one is named and the others still go
    refused = 0
    with outbox.batch():  # one fsync of the folder and one commit per group, not per file
        for path in files:
            try:
                outbox.put(path, node.name)
            except ValueError as exc:
                refused += 1
                print(f"  failed: {exc}", file=sys.stderr)
    if args.include_unassigned:
        outbox.assign(node.name)
    # 2. send this node's queue (and nothing queued for another node)
    report = _send_outbox(outbox, node, args.stow, args.retries, args.outbox, associations)
    others = len(outbox.pending()) - len(outbox.pending(node.name))
    if others:
        listing = f"cxr-studio outbox{_outbox_option(args.outbox)}"
        print(f"{others} other file(s) in the outbox are not for {node.name} (see `{listing}`)")
    if refused:
        print(f"{refused} file(s) not sent: not complete DICOM files (named above)")
    return 0 if report.ok and not refused and not outbox.pending(node.name) else 1


def _run_outbox(args: argparse.Namespace) -> int:
    outbox = Outbox(args.outbox)
    attempts = outbox.attempts()
    pending = outbox.pending()
    for path in pending:
        node = outbox.node_of(path)
        notes = [f"node {node}" if node is not None else "no node"]
        tried = attempts.get(path.name)
        if tried:
            notes.append(f"{tried.attempts} attempt(s); last error: {tried.last_error}")
        print(f"{path}  ({'; '.join(notes)})")
    for path in outbox.failed():
        print(f"{path}  (failed for good, not sent: {outbox.failure_reason(path)})")
    print(f"{len(pending)} file(s) waiting in {outbox.folder}")
    unassigned = len(outbox.unassigned())
    if unassigned:
        print(
            f"{unassigned} file(s) belong to no node (queued by an earlier version) and are never sent by "
            f"themselves; send them with `cxr-studio send --node NAME --include-unassigned"
            f"{_outbox_option(args.outbox)}`"
        )
    return 0


class _CheckedPipeline:
    """A Pipeline for make_studies whose ``generate`` checks each image and makes it again with the
    next seeds (engine.checker.generate_checked) until it passes ``minimum`` or ``tries`` were made;
    prints one line per image kept (study number, image, seeds tried, the check)."""

    def __init__(self, pipeline: Pipeline, checker: Checker, minimum: float, tries: int):
        self.pipeline, self.checker, self.minimum, self.tries = pipeline, checker, minimum, tries
        self.manifest = pipeline.manifest
        self.studies = 0

    def generate(self, request: GenerationRequest) -> GenerationResult:
        from engine.checker import generate_checked

        self.studies += 1
        result, outcomes = generate_checked(self.pipeline, self.checker, request, self.minimum, self.tries)
        for index, outcome in enumerate(outcomes):
            print(f"study {self.studies} image {index + 1}: {outcome.line(self.minimum)}")
        return result


def _run_make_studies(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.checker import MAX_TRIES, Checker, CheckerError
    from engine.dicom.nodes import get_node
    from engine.dicom.studies import MAX_STUDIES, SEED_STRIDE, make_studies, plan_studies, write_dicomdir
    from engine.fileio import folder_in_use, staged_folder, temporaries_of
    from engine.pack import load_model_pack
    from engine.pipeline import MAX_SEED, MAX_STEPS, Pipeline
    from engine.synthetic import read_prompts

    # 1. check before writing anything: a bad number is refused, never replaced by a default
    if folder_in_use(args.out):
        raise UsageError(f"--out {args.out} must be a new or empty folder")
    associations = _associations_arg(args.associations)
    if not 1 <= args.count <= MAX_STUDIES:
        raise UsageError(f"--count must be from 1 to {MAX_STUDIES}, not {args.count}")
    if not 1 <= args.images_per_study <= 16:
        raise UsageError(f"--images-per-study must be from 1 to 16, not {args.images_per_study}")
    if args.steps is not None and not 1 <= args.steps <= MAX_STEPS:
        raise UsageError(f"--steps must be from 1 to {MAX_STEPS}, not {args.steps}")
    max_seed = MAX_SEED - (args.count - 1) * SEED_STRIDE  # study i uses seed + i * SEED_STRIDE
    if not 0 <= args.seed <= max_seed:
        raise UsageError(f"--seed must be from 0 to {max_seed} for {args.count} studies, not {args.seed}")
    node = get_node(args.send) if args.send else None
    if node is not None and args.stow and not node.dicomweb_url:
        raise UsageError(f"node {node.name!r} has no DICOMweb URL")
    if args.check_min is not None and not 0 < args.check_min < 1:
        raise UsageError(f"--check-min must be between 0 and 1 (a checker score), not {args.check_min}")
    if args.check_min is not None and not 1 <= args.check_tries <= MAX_TRIES:
        raise UsageError(f"--check-tries must be from 1 to {MAX_TRIES}, not {args.check_tries}")
    prompts = read_prompts(args.prompts)
    plans = plan_studies(prompts, args.count, seed=args.seed)
    pack = load_model_pack(args.model)
    pipeline = Pipeline(pack, provider=args.provider)
    if args.check_min is not None:
        try:
            pipeline = _CheckedPipeline(pipeline, Checker(pack), args.check_min, args.check_tries)
        except CheckerError as exc:
            raise UsageError(f"--check-min: {exc}") from None

    # 2. generate and write into a hidden folder beside --out, renamed to --out at the end: a run that
    # is killed leaves no half-filled --out (an interrupted or failed one removes its folder)
    left = temporaries_of(args.out.absolute())
    if left:
        print(f"note: {', '.join(p.name for p in left)} beside --out may be left by a killed run; delete it",
              file=sys.stderr)  # fmt: skip
    with staged_folder(args.out) as staging:
        bar = tqdm(total=args.count * args.images_per_study, unit="image", file=sys.stderr, desc="studies")
        files = make_studies(
            pipeline, plans, staging, images_per_study=args.images_per_study, num_steps=args.steps,
            iod=args.iod, transfer_syntax=args.transfer_syntax, burn_in=args.burn_in,
            on_file=lambda _path: bar.update(1),
        )  # fmt: skip
        bar.close()
        dicomdir = write_dicomdir(staging, files) if args.dicomdir else None
    files = [args.out / path.relative_to(staging) for path in files]
    print(f"wrote {len(files)} instance(s) in {args.count} stud(ies) under {args.out}")
    if dicomdir is not None:
        print(f"DICOMDIR: {args.out / dicomdir.relative_to(staging)}")

    # 3. send through the outbox
    if node is not None:
        outbox = Outbox()
        with outbox.batch():
            for path in files:
                outbox.put(path, node.name)
        report = _send_outbox(outbox, node, args.stow, retries=3, associations=associations)
        return 0 if report.ok else 1
    return 0
