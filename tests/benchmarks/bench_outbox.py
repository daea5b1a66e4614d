"""Queueing into the outbox and listing it: the previous layout (a tag file per file, a folder scan per put)
against the SQLite index, in the same run.

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_outbox.py [--sizes 1000,10000]
        [--previous-sizes 1000,10000] [--previous-rev REV] [--size 64] [--work DIR]

For each size N and each method, a fresh outbox on this disk is filled with N instances (one generated
Secondary Capture written again with fresh SOP Instance UIDs, as ``bench_pacs_associations`` does) and
prints: seconds per 1,000 files over the whole fill, seconds per 1,000 for the last 1,000 (what one more
file costs with N waiting), opening the folder, and listing it as ``cxr-studio outbox`` and the PACS
dialog do (pending, node and attempts of each, failed). Methods:

- ``previous``: ``engine/dicom/outbox.py`` as it was at ``--previous-rev`` (read with ``git show`` and
  imported from a temporary file: the old code path lives only here), one ``put`` per file;
- ``index, one put each``: the current outbox, each ``put`` its own commit;
- ``index, batch()``: the current outbox, ``put`` inside ``Outbox.batch()`` as ``send`` and
  ``make-studies --send`` queue (one folder fsync and one commit per group).

Both sides write the same bytes through the same checks; what differs is the bookkeeping. Give ``--work``
on the disk an outbox lives on when the temporary folder is a tmpfs (there an fsync costs nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine.dicom.dataset import StudyContext, SyntheticImageInfo, build_dataset, write_dicom  # noqa: E402
from engine.dicom.outbox import Outbox, _part10_bytes  # noqa: E402
from engine.dicom.pacs import check_file  # noqa: E402

PREVIOUS_REV = "7f90dbaff86bfe3bfb9b6aeed80fb2a1e4b3f9e5"  # the last outbox.py with tag files and a scan per put
NODE = "bench"


def previous_module(rev: str, folder: Path) -> ModuleType:
    """``engine/dicom/outbox.py`` at ``rev``, imported under another name (it imports today's engine)."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:engine/dicom/outbox.py"], check=True, capture_output=True, text=True
    ).stdout
    path = folder / "outbox_previous.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("outbox_previous", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def template(size: int, folder: Path) -> Dataset:
    """One generated Secondary Capture file (``size`` x ``size``), read back."""
    rng = np.random.default_rng(0)
    image = np.clip(0.5 + rng.normal(0, 0.1, (size, size)).astype(np.float32), 0, 1)
    ds = build_dataset(image, SyntheticImageInfo(prompt="Normal chest radiograph", seed=0), StudyContext.synthetic(0))
    return pydicom.dcmread(write_dicom(ds, folder / "template.dcm"))


def fresh(ds: Dataset, index: int) -> Dataset:
    if index % 100 == 0:
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = index % 100 + 1
    return ds


class ChecksOnly:
    """What every put does before the outbox keeps anything (write the dataset, read it back whole): the
    baseline both layouts share, so the rest of a put's time is the outbox's own bookkeeping."""

    def put(self, ds: Dataset, node: str) -> None:
        data = _part10_bytes(ds)
        check_file(io.BytesIO(data), Path("x"))


def race(outboxes: dict[str, tuple[Any, bool]], ds: Dataset, count: int, block: int = 100) -> dict[str, list[float]]:
    """Queue ``count`` instances into each outbox, ``block`` at a time in turn (A B C A B C ...), so that a
    busier moment of the shared machine hits every method alike; each method's seconds per block."""
    times: dict[str, list[float]] = {label: [] for label in outboxes}
    with contextlib.ExitStack() as stack:
        for outbox, grouped in outboxes.values():
            if grouped:
                stack.enter_context(outbox.batch())  # committed every GROUP_SIZE puts, and when the race ends
        for first in range(0, count, block):
            for label, (outbox, grouped) in outboxes.items():
                start = time.perf_counter()
                for index in range(first, min(first + block, count)):
                    outbox.put(fresh(ds, index), NODE)
                if grouped and first + block >= count:
                    stack.close()  # the last group's commit belongs to the last block
                times[label].append(time.perf_counter() - start)
    return times


def listing(outbox: Any) -> int:
    """What ``cxr-studio outbox`` and the dialog's list read: each waiting file's node and attempts, failed."""
    attempts = outbox.attempts()
    rows = [(path, outbox.node_of(path), attempts.get(path.name)) for path in outbox.pending()]
    rows += [(path, outbox.node_of(path), outbox.failure_reason(path)) for path in outbox.failed()]
    return len(rows)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@contextlib.contextmanager
def work_folder(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    folder = Path(tempfile.mkdtemp(prefix="cxr-outbox-bench-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="files to queue with the index, comma-separated")
    parser.add_argument("--previous-sizes", default="1000,10000", help="the same for the previous layout ('' skips)")
    parser.add_argument("--previous-rev", default=PREVIOUS_REV, help="git revision of the previous outbox.py")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--work", type=Path, default=None, help="folder for the outboxes (default: a temporary one)")
    args = parser.parse_args()
    sizes = [int(text) for text in args.sizes.split(",") if text]
    previous_sizes = [int(text) for text in args.previous_sizes.split(",") if text]

    with work_folder(args.work) as work:
        previous = previous_module(args.previous_rev, work)
        ds = template(args.size, work)
        print(f"outbox on {work} ({len(ds.PixelData) / 1e3:.0f} kB pixel data per file); seconds per 1,000 files")
        print(f"{'method':<24} {'files':>6} {'all':>8} {'last 1k':>8} {'open s':>7} {'list s':>7}")
        for count in sorted(set(sizes) | set(previous_sizes)):
            makers: dict[str, tuple[Callable[[Path], Any], bool]] = {
                "checks only (no outbox)": (lambda _f: ChecksOnly(), False)
            }
            if count in previous_sizes:
                makers[f"previous ({args.previous_rev[:7]})"] = (previous.Outbox, False)
            if count in sizes:
                makers["index, one put each"] = (Outbox, False)
                makers["index, batch()"] = (Outbox, True)
            folders = {label: work / f"outbox-{number}-{count}" for number, label in enumerate(makers)}
            outboxes = {label: (make(folders[label]), grouped) for label, (make, grouped) in makers.items()}
            times = race(outboxes, ds, count)
            for label, (make, _grouped) in makers.items():
                all_s, last_s = sum(times[label]), sum(times[label][-10:])
                open_s = list_s = float("nan")
                if label != "checks only (no outbox)":
                    open_s, outbox = timed(lambda folder=folders[label], make=make: make(folder))
                    list_s, rows = timed(lambda outbox=outbox: listing(outbox))
                    assert rows == count, (label, rows, count)
                    if hasattr(outbox, "close"):
                        outbox.close()
                print(
                    f"{label:<24} {count:>6} {all_s / count * 1000:>8.2f} {last_s / min(count, 1000) * 1000:>8.2f} "
                    f"{open_s:>7.3f} {list_s:>7.3f}",
                    flush=True,
                )
            for folder in folders.values():
                shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
