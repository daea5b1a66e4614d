"""``cxr-studio add-checker PACK --classifier DIR``: put the evaluation classifier into a pack as its finding checker.

The classifier (``training.evaluate.classifier``, trained on real films of the training split) is
exported to ``PACK/checker.onnx`` and model.json gains a ``checker`` section
(``engine.pack.CheckerConfig``): its classes, which findings they score, its input and, with
``--measure MANIFEST``, its accuracy on the real films of the manifest's held-out split (``test``:
the importers split by patient, so no child of the test split was seen in training), measured
through the engine exactly as ``generate --check`` runs it (the films at the pack's image size,
then the checker's own resize). The checker is not part of the pack's fingerprint (see
``engine.pack.ModelPack.fingerprint``), so cases made before keep matching the pack.

The pack is changed in place: checker.onnx is written first, then model.json atomically; a pack
whose model.json was not rewritten does not list the checker and still loads as it was.
"""

from __future__ import annotations

import argparse
import datetime
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine.pack import CheckerConfig, PackError, load_pack, write_manifest

CHECKER_FILE = "checker.onnx"
NORMAL_CLASS = "normal"


def default_findings(classes: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """engine.findings names -> classes: ``normal`` scores ``no_finding``, every other class itself,
    and ``pneumonia`` the sum of the ``*_pneumonia`` classes (a pneumonia of either kind)."""
    findings: dict[str, tuple[str, ...]] = {}
    for name in classes:
        findings["no_finding" if name == NORMAL_CLASS else name] = (name,)
    pneumonias = tuple(c for c in classes if c.endswith("_pneumonia"))
    if pneumonias and "pneumonia" not in findings:
        findings["pneumonia"] = pneumonias
    return findings


def measure(pack_dir: Path, manifest: Path, split: str = "test") -> tuple[float, int, dict[str, float]]:
    """Accuracy of the pack's checker on ``manifest``'s real ``split`` films (the label with the highest
    probability), their number, and per-class recall, with ``normal vs not`` (normal or not, the question
    a pneumonia or normal prompt asks) among them. Films are loaded at the pack's image size."""
    from engine.checker import Checker
    from training.evaluate.data import load_real_images, read_real_data

    pack = load_pack(pack_dir)
    checker = Checker(pack)
    data = read_real_data(manifest)
    records = data.splits.get(split) or []
    if not records:
        raise PackError(f"--measure {manifest}: no usable films in split {split!r}")
    column = {name: i for i, name in enumerate(checker.config.classes)}
    unknown = sorted({r.label for r in records} - set(column))
    if unknown:
        raise PackError(f"--measure {manifest}: classes the checker does not have: {', '.join(unknown)}")
    images = load_real_images(records, pack.manifest.image.height).astype(np.float32)
    predicted = np.concatenate(
        [checker.probabilities(images[i : i + 64]).argmax(axis=1) for i in range(0, len(images), 64)]
    )
    truth = np.array([column[r.label] for r in records])
    recall = {name: float((predicted[truth == i] == i).mean()) for name, i in column.items() if (truth == i).any()}
    if NORMAL_CLASS in column:
        normal = column[NORMAL_CLASS]
        recall["normal vs not"] = float(((predicted == normal) == (truth == normal)).mean())
    return float((predicted == truth).mean()), len(records), recall


def add_checker(
    pack_dir: str | os.PathLike[str],
    classifier: str | os.PathLike[str],
    *,
    findings: Mapping[str, Sequence[str]] | None = None,
    threshold: float = 0.5,
    accuracy: float = 0.0,
    accuracy_n: int = 0,
    accuracy_data: str = "not measured",
    accuracy_date: str | None = None,
) -> CheckerConfig:
    """Export ``classifier`` (a folder saved by the evaluation) into ``pack_dir`` as its checker."""
    import torch

    from training.evaluate.classifier import export_onnx, load_classifier

    root = Path(pack_dir)
    pack = load_pack(root)  # verified before anything is written
    model, _info = load_classifier(classifier, torch.device("cpu"))
    classes = tuple(model.config.classes)
    mapping = {k: tuple(v) for k, v in (findings or default_findings(classes)).items()}
    config = CheckerConfig(
        file=CHECKER_FILE,
        classes=classes,
        findings=mapping,
        input_size=model.config.input_size,
        accuracy=float(accuracy),
        accuracy_n=int(accuracy_n),
        accuracy_date=accuracy_date or datetime.date.today().isoformat(),
        accuracy_data=accuracy_data,
        input_range=(-1.0, 1.0),  # classifier.to_input: x * 2 - 1
        threshold=float(threshold),
    )
    existed = (root / CHECKER_FILE).exists()
    try:
        export_onnx(model, root / CHECKER_FILE)
        files = {**pack.manifest.files, CHECKER_FILE: None}
        return write_manifest(root, replace(pack.manifest, files=files, checker=config)).checker
    except BaseException:
        if not existed:  # a failed export leaves the pack as it was
            (root / CHECKER_FILE).unlink(missing_ok=True)
        raise


def set_accuracy(pack_dir: Path, accuracy: float, n: int, data: str) -> CheckerConfig:
    """Write a measured accuracy into the pack's checker section (today's date)."""
    pack = load_pack(pack_dir)
    if pack.manifest.checker is None:
        raise PackError(f"{pack_dir}: no checker to measure")
    checker = replace(
        pack.manifest.checker,
        accuracy=accuracy,
        accuracy_n=n,
        accuracy_data=data,
        accuracy_date=datetime.date.today().isoformat(),
    )
    return write_manifest(pack_dir, replace(pack.manifest, checker=checker)).checker


def _mapping_arg(items: list[str]) -> dict[str, tuple[str, ...]] | None:
    if not items:
        return None
    mapping = {}
    for item in items:
        finding, sep, classes = item.partition("=")
        if not sep or not finding.strip() or not classes.strip():
            raise argparse.ArgumentTypeError(f"--map {item!r}: write FINDING=CLASS[+CLASS...]")
        mapping[finding.strip()] = tuple(c.strip() for c in classes.split("+"))
    return mapping


def register_add_checker(subparsers: argparse._SubParsersAction) -> None:
    """Add ``add-checker PACK --classifier DIR [--measure MANIFEST] [--split test] [--map F=C+C]``."""
    parser = subparsers.add_parser(
        "add-checker",
        help="add the evaluation classifier to a pack as its finding checker (generate --check)",
        description="Export an evaluation classifier (saved by `cxr-studio evaluate`) into PACK as checker.onnx, "
        "add model.json's checker section and, with --measure, its accuracy on real held-out films. The pack's "
        "fingerprint does not change.",
    )
    parser.add_argument("pack", type=Path, metavar="PACK", help="model pack folder (changed in place)")
    parser.add_argument("--classifier", type=Path, required=True, metavar="DIR", help="evaluation classifier folder")
    parser.add_argument("--measure", type=Path, default=None, metavar="MANIFEST",
                        help="measure the accuracy on this manifest's real films of --split")  # fmt: skip
    parser.add_argument("--split", default="test", help="held-out split to measure on (default test)")
    parser.add_argument("--map", action="append", default=[], metavar="FINDING=CLASS[+CLASS]",
                        help="which classes score a finding (default: normal -> no_finding, each class itself, "
                        "pneumonia = the *_pneumonia classes)")  # fmt: skip
    parser.add_argument("--threshold", type=float, default=0.5, help="score a present finding must reach")
    parser.set_defaults(func=run_add_checker)


def run_add_checker(args: argparse.Namespace) -> int:
    """0 when the checker is added, 2 with one error line when it cannot be."""
    from training.cli import EXIT_OK, command_error
    from training.evaluate.options import EvaluationError
    from training.export_onnx import ExportError

    try:
        findings = _mapping_arg(args.map)
        if not 0 < args.threshold < 1:
            raise argparse.ArgumentTypeError(f"--threshold must be between 0 and 1, not {args.threshold}")
        config = add_checker(args.pack, args.classifier, findings=findings, threshold=args.threshold)
        if args.measure is not None:
            accuracy, n, recall = measure(args.pack, args.measure, args.split)
            data = f"{args.measure.name} split {args.split}, patient-level"
            config = set_accuracy(args.pack, accuracy, n, data)
            recalls = ", ".join(f"{name} {value:.3f}" for name, value in recall.items())
            print(f"accuracy {accuracy:.4f} on {n} films; recall per class, and normal-vs-not accuracy: {recalls}")
    except (PackError, EvaluationError, ExportError, argparse.ArgumentTypeError, OSError) as exc:
        return command_error("add-checker", exc)
    print(f"added {config.file} to {args.pack}: {', '.join(config.classes)}")
    return EXIT_OK


__all__ = ["CHECKER_FILE", "add_checker", "default_findings", "measure", "register_add_checker", "set_accuracy"]
