"""A training run's folder: its layout, ``run.json``, the atomic training state, checkpoint
swaps, the metrics log and the sample grids.

Run folder::

    RUN/
      run.json        kind, options, the resolved model config, the manifest (path, SHA-256, counts)
      checkpoint/     the latest model checkpoint (training.checkpoint layout)
      best/           the checkpoint with the lowest validation loss so far (when there is a val split)
      state/          index.json + PART-STEP.safetensors: everything ``--resume`` needs
      samples/        step-STEP.png sample grids
      metrics.jsonl   one JSON object per line: training ("loss"), validation ("val_loss"), stop records

Crash safety (SIGKILL at any moment leaves the last complete checkpoint loadable):

- a checkpoint folder is written whole under ``RUN/.NAME.tmp`` and swapped in by two renames;
  :meth:`RunFolder.recover` finishes an interrupted swap;
- state files carry their step in their names; ``state/index.json``, written last and atomically,
  names the complete set; files of older steps are deleted only after the new index is in place.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors_bytes

from engine.fileio import atomic_write_bytes, atomic_write_text
from engine.imaging import encode_png
from training.options import LEGACY_OPTIONS, MUTABLE_OPTIONS, Log, TrainingError, option_flag

RUN_FORMAT = "cxr-studio-run"
STATE_FORMAT = "cxr-studio-training-state"
FORMAT_VERSION = 1
RUN_FILE = "run.json"
INDEX_FILE = "index.json"
# Everything a run writes in its folder: a folder holding only these and no training state is a
# run that stopped (failed or was killed) before its first checkpoint, with nothing to keep.
RUN_ENTRIES = frozenset(
    {
        RUN_FILE,
        "metrics.jsonl",
        "state",
        "samples",
        *("checkpoint", ".checkpoint.tmp", ".checkpoint.old"),
        *("best", ".best.tmp", ".best.old"),
    }
)


# --------------------------------------------------------------------------- run folder and state


@dataclass
class TrainingState:
    """A saved resume point: ``parts[name]`` are the tensors of ``state/NAME-STEP.safetensors``."""

    step: int
    parts: dict[str, dict[str, torch.Tensor]]
    meta: dict[str, Any]


class RunFolder:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.state_dir = self.root / "state"
        self.samples_dir = self.root / "samples"
        self.metrics_path = self.root / "metrics.jsonl"
        self.run_path = self.root / RUN_FILE
        self.created = False  # True when open_run made the folder (a failed run then removes it)

    def checkpoint(self, name: str = "checkpoint") -> Path:
        return self.root / name

    # 1. checkpoints: build in a temporary folder, swap in with two renames
    def publish(self, name: str, write: Callable[[Path], Any]) -> Path:
        final, tmp, old = self.root / name, self.root / f".{name}.tmp", self.root / f".{name}.old"
        shutil.rmtree(tmp, ignore_errors=True)
        write(tmp)
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return final

    def recover(self) -> None:
        """Finish a swap a kill interrupted; drop half-written temporary folders."""
        for name in ("checkpoint", "best"):
            final, tmp, old = self.root / name, self.root / f".{name}.tmp", self.root / f".{name}.old"
            if not final.exists():
                if (tmp / "config.json").is_file():  # config.json is written last
                    os.rename(tmp, final)
                elif old.exists():
                    os.rename(old, final)
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)

    def best_or_last(self) -> Path | None:
        for name in ("best", "checkpoint"):
            if (self.root / name / "config.json").is_file():
                return self.root / name
        return None

    # 2. training state
    def has_state(self) -> bool:
        return (self.state_dir / INDEX_FILE).is_file()

    def unstarted(self) -> bool:
        """A run that stopped before its first training state (failed or killed): run.json, no
        state, and nothing in the folder but what a run writes. Nothing in it is worth keeping."""
        return (
            self.run_path.is_file()
            and not self.has_state()
            and all(path.name in RUN_ENTRIES for path in self.root.iterdir())
        )

    def discard(self) -> None:
        """Remove what the run wrote (the folder too, when open_run made it and it is left empty)."""
        for name in RUN_ENTRIES:
            path = self.root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if self.created:
            with contextlib.suppress(OSError):
                self.root.rmdir()

    def save_state(self, step: int, parts: dict[str, dict[str, torch.Tensor]], meta: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        files = {}
        for part, tensors in parts.items():
            name = f"{part}-{step:08d}.safetensors"
            cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
            atomic_write_bytes(self.state_dir / name, save_tensors_bytes(cpu, metadata={"format": "pt"}))
            files[part] = name
        index = {"format": STATE_FORMAT, "format_version": FORMAT_VERSION, "step": step, "files": files, **meta}
        atomic_write_text(self.state_dir / INDEX_FILE, json.dumps(index, indent=1) + "\n")
        for path in self.state_dir.iterdir():  # older steps, temporary files of a killed write
            if path.name != INDEX_FILE and path.name not in files.values():
                path.unlink(missing_ok=True)

    def load_state(self) -> TrainingState:
        index_path = self.state_dir / INDEX_FILE
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TrainingError(f"{index_path}: cannot be read: {exc}") from None
        if index.get("format") != STATE_FORMAT or index.get("format_version") != FORMAT_VERSION:
            raise TrainingError(f"{index_path}: not a version-{FORMAT_VERSION} training state")
        parts = {}
        for part, name in index["files"].items():
            try:
                parts[part] = load_file(self.state_dir / name)
            except (OSError, SafetensorError) as exc:
                raise TrainingError(f"{self.state_dir / name}: cannot be read: {exc}") from None
        meta = {k: v for k, v in index.items() if k not in ("format", "format_version", "step", "files")}
        return TrainingState(step=int(index["step"]), parts=parts, meta=meta)

    def read_run(self) -> dict[str, Any]:
        try:
            data = json.loads(self.run_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TrainingError(f"{self.root}: not a training run (no {RUN_FILE}); nothing to resume") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise TrainingError(f"{self.run_path}: cannot be read: {exc}") from None
        if data.get("format") != RUN_FORMAT:
            raise TrainingError(f"{self.run_path}: not a CXR Studio training run")
        return data


def read_run_options(out: str | os.PathLike[str]) -> dict[str, Any]:
    """The options a run was started with (for ``--resume`` to fill in flags not given)."""
    return RunFolder(out).read_run()["options"]


def resumes(out: str | os.PathLike[str], kind: str, resume: bool, log: Log) -> bool:
    """Whether ``--resume`` has something to continue: a ``kind`` run in ``out`` with a saved
    training state. A run that stopped before its first state (failed or killed) has trained
    nothing, so it starts again from step 0 with the options given now (False); a folder that is
    no run at all is an error."""
    if not resume:
        return False
    run = RunFolder(out)
    record = run.read_run()
    if record.get("kind") != kind:
        raise TrainingError(f"{run.root}: is a {record.get('kind')!r} run, not {kind!r}")
    if run.has_state():
        return True
    log(f"{run.root}: stopped before its first checkpoint; starting again from step 0")
    return False


def open_run(
    out: str | os.PathLike[str], kind: str, options: dict[str, Any], info: dict[str, Any], *, resume: bool
) -> tuple[RunFolder, dict[str, Any]]:
    """Create a new run folder (``resume`` False) or check a run's settings (``resume`` True).

    Returns the folder and the run record (``run.json``): on resume the stored one, whose
    ``config`` is authoritative. A resumed run keeps every option except :data:`MUTABLE_OPTIONS`,
    and its manifest must not have changed. A new run may take the folder of a run that stopped
    before its first checkpoint (:meth:`RunFolder.unstarted`): what that run wrote is removed.
    """
    run = RunFolder(out)
    if not resume:
        if run.root.is_dir() and run.unstarted():
            run.discard()
        if run.root.exists() and (not run.root.is_dir() or any(run.root.iterdir())):
            raise TrainingError(
                f"{run.root}: already exists and is not empty; pass --resume to continue it or choose a new folder"
            )
        run.created = not run.root.exists()
        run.root.mkdir(parents=True, exist_ok=True)
        record = {"format": RUN_FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "options": options, **info}
        atomic_write_text(run.run_path, json.dumps(record, indent=2) + "\n")
        return run, record
    record = run.read_run()
    if record.get("kind") != kind:
        raise TrainingError(f"{run.root}: is a {record.get('kind')!r} run, not {kind!r}")
    for key, value in options.items():
        old = record["options"].get(key, LEGACY_OPTIONS.get(key))
        if key not in MUTABLE_OPTIONS and old != value:
            raise TrainingError(
                f"--{option_flag(key)} is {value!r} but {run.root} was started with {old!r}; "
                "a resumed run keeps its settings"
            )
    old_manifest, new_manifest = record.get("manifest", {}), info.get("manifest", {})
    if old_manifest.get("sha256") != new_manifest.get("sha256"):
        raise TrainingError(f"{new_manifest.get('path')}: the manifest changed since the run started; cannot resume")
    run.recover()
    record["options"] = options
    atomic_write_text(run.run_path, json.dumps(record, indent=2) + "\n")
    return run, record


@contextlib.contextmanager
def discard_on_failure(run: RunFolder) -> Iterator[None]:
    """Remove what ``run`` wrote when the block fails (an image that cannot be read, Ctrl+C, ...)
    before the run saved its first training state, so that nothing half-made blocks a rerun."""
    try:
        yield
    except BaseException:
        if not run.has_state():
            run.discard()
        raise


# --------------------------------------------------------------------------- metrics and sample grids


class MetricsLog:
    """JSON Lines, one record per line, appended and flushed as they come."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
        return records

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (written after the checkpoint a resumed run starts from)."""
        kept = [r for r in self.read() if isinstance(r, dict) and int(r.get("step", 0)) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def image_grid(images: np.ndarray, columns: int, gap: int = 2) -> np.ndarray:
    """(N, H, W) float in [0, 1] -> one (rows*H + gaps, columns*W + gaps) uint8 image."""
    count, height, width = images.shape
    rows = math.ceil(count / columns)
    grid = np.zeros((rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        top, left = r * (height + gap), c * (width + gap)
        grid[top : top + height, left : left + width] = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return grid


def write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, encode_png(image))


__all__ = [
    "FORMAT_VERSION",
    "INDEX_FILE",
    "RUN_ENTRIES",
    "RUN_FILE",
    "RUN_FORMAT",
    "STATE_FORMAT",
    "MetricsLog",
    "RunFolder",
    "TrainingState",
    "discard_on_failure",
    "image_grid",
    "open_run",
    "read_run_options",
    "resumes",
    "write_png",
]
