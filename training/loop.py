"""The training loop and its shared pieces: run folder, atomic training state, RNG state, LR
schedule, EMA, data order, early stopping, metrics log, progress bar; :func:`fit` drives a task.

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

No pickle: tensors (weights, optimizer moments, torch RNG states) go to safetensors; everything
else (optimizer hyper-parameters, python/numpy RNG states, data position, early stopping) to JSON.

Exact resume: the data order is a seeded permutation per epoch (position saved as epoch and batch
index); all training randomness comes from one ``torch.Generator`` on the device whose state is
saved with the global torch/CUDA/numpy/python states, after everything a step does.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors_bytes
from torch import nn

from engine.pack import atomic_write_bytes, atomic_write_text
from training.models.config import ConfigError, ModelConfig, cpu_config, default_config, tiny_config
from training.models.text import ENCODER_ALIASES
from training.precision import PRECISIONS, PrecisionError, resolve_precision
from training.precision import autocast as precision_autocast

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
# Options a resumed run may change: they do not touch the training trajectory. (``data`` may move:
# the manifest's SHA-256 must match; ``vae`` is read from the run's own state on resume.)
# Options added after runs existed, with the value a run whose run.json lacks them was trained with
# (runs before --precision trained in float32 on the CPU, and with plain MSE), so that such a run resumes as it ran.
LEGACY_OPTIONS: dict[str, Any] = {"precision": "fp32", "min_snr_gamma": 0.0}

MUTABLE_OPTIONS = frozenset(
    {
        "data",
        "out",
        "vae",
        "device",
        "compile",
        "workers",
        "quiet",
        "checkpoint_every",
        "sample_every",
        "log_every",
        "export",
        "export_fp16",
        "export_text_int8",
        "sample_steps",
        "guidance_scale",
    }
)

Log = Callable[[str], None]


class TrainingError(RuntimeError):
    """A run that cannot start or go on (bad options, run folder, state); one line, names the file."""


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class TrainOptions:
    """Options shared by ``train vae`` and ``train diffusion`` (the CLI flags, in Python).

    ``warmup_steps`` None: 5% of ``steps`` (at most 1000). ``val_every`` None: ``checkpoint_every``.
    ``sample_every`` 0 and ``patience`` 0 switch sample grids and early stopping off. ``compile``
    None: on for CUDA, off for the CPU. ``workers``: threads that decode images (None: up to 8).
    """

    data: str = ""
    out: str = ""
    config: str | None = None
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-4
    grad_accum: int = 1
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    checkpoint_every: int = 500
    val_every: int | None = None
    sample_every: int = 0
    log_every: int = 10
    patience: int = 5
    min_delta: float = 0.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool | None = None
    workers: int | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        if not self.data:
            raise TrainingError("--data: a manifest is required")
        if not self.out:
            raise TrainingError("--out: a run folder is required")
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "log_every"):
            _check_int(self, name, minimum=1)
        for name in ("sample_every", "patience"):
            _check_int(self, name, minimum=0)
        for name in ("warmup_steps", "val_every"):
            if getattr(self, name) is not None:
                _check_int(self, name, minimum=0 if name == "warmup_steps" else 1)
        if self.workers is not None:
            _check_int(self, "workers", minimum=1)
        _check_int(self, "seed", minimum=0)
        for name in ("lr", "weight_decay", "grad_clip", "min_delta"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise TrainingError(f"--{_flag(name)} must be a number >= 0, got {value!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise TrainingError(f"--min-lr-ratio must be from 0 to 1, got {self.min_lr_ratio!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise TrainingError(f"--device must be auto, cpu or cuda, not {self.device!r}")
        if self.precision not in PRECISIONS:
            raise TrainingError(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else min(1000, self.steps // 20)

    @property
    def validate_every(self) -> int:
        return self.val_every if self.val_every is not None else self.checkpoint_every

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _check_int(options: Any, name: str, *, minimum: int) -> None:
    value = getattr(options, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TrainingError(f"--{_flag(name)} must be a whole number >= {minimum}, got {value!r}")


def option_names(cls: type[TrainOptions]) -> list[str]:
    return [f.name for f in fields(cls)]


# --------------------------------------------------------------------------- model config and data


def resolve_config(spec: str) -> ModelConfig:
    """``tiny``, ``cpu``, ``default`` or a JSON file (a ModelConfig, e.g. a checkpoint's config.json).

    A relative ``text.encoder`` folder in a file is taken relative to that file's folder and made
    absolute, so that the run's checkpoints find it.
    """
    if spec == "tiny":
        return tiny_config()
    if spec == "default":
        return default_config()
    if spec == "cpu":
        return cpu_config()
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"--config {spec!r}: not 'tiny', 'cpu', 'default' or an existing JSON file")
    try:
        config = ModelConfig.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return absolute_encoder(config, path.parent)


def absolute_encoder(config: ModelConfig, base_dir: Path) -> ModelConfig:
    """``config`` with a relative ``text.encoder`` folder resolved against ``base_dir``."""
    encoder = config.text.encoder
    if encoder in ENCODER_ALIASES or Path(encoder).expanduser().is_absolute():
        return config
    folder = (base_dir / Path(encoder).expanduser()).resolve()
    return replace(config, text=replace(config.text, encoder=str(folder)))


def manifest_info(manifest: Any) -> dict[str, Any]:
    """What run.json and the model card record of a ``training.datasets.Manifest``."""
    return {
        "path": str(manifest.path.resolve()),
        "name": manifest.name,
        "sha256": manifest.sha256,
        "records": len(manifest.records),
        "splits": manifest.counts(),
    }


# --------------------------------------------------------------------------- precision, compile, seeds


def pick_precision(name: str, device: torch.device) -> str:
    """``--precision`` for ``device``: ``bf16`` or ``fp32`` (see :mod:`training.precision`)."""
    try:
        return resolve_precision(name, device)
    except PrecisionError as exc:
        raise TrainingError(str(exc)) from None


def use_compile(options: TrainOptions, device: torch.device) -> bool:
    return options.compile if options.compile is not None else device.type == "cuda"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- schedule, data order, EMA


def lr_at(step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Learning rate of optimizer step ``step`` (1-based): linear warmup to ``base_lr`` over
    ``warmup_steps``, then a cosine down to ``min_lr_ratio * base_lr`` at ``total_steps``."""
    if warmup_steps > 0 and step <= warmup_steps:
        return base_lr * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    floor = base_lr * min_lr_ratio
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class BatchOrder:
    """Micro-batches of training indices: each epoch a permutation seeded by (seed, epoch); the
    last partial batch of an epoch is dropped (fixed shapes). ``epoch``/``batch`` name the next batch."""

    def __init__(self, num_items: int, batch_size: int, seed: int, device: torch.device):
        if num_items < batch_size:
            raise TrainingError(f"--batch-size {batch_size} is larger than the training split ({num_items} images)")
        self.num_items, self.batch_size, self.seed, self.device = num_items, batch_size, seed, device
        self.batches_per_epoch = num_items // batch_size
        self.epoch, self.batch = 0, 0
        self._perm: torch.Tensor | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)
        return torch.randperm(self.num_items, generator=torch.Generator().manual_seed(seed)).to(self.device)

    def next(self) -> torch.Tensor:
        """(batch_size,) int64 indices on the device."""
        if self.batch >= self.batches_per_epoch:
            self.epoch, self.batch, self._perm = self.epoch + 1, 0, None
        if self._perm is None:
            self._perm = self.permutation(self.epoch)
        start = self.batch * self.batch_size
        self.batch += 1
        return self._perm[start : start + self.batch_size]

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state(self, state: dict[str, Any]) -> None:
        self.epoch, self.batch, self._perm = int(state["epoch"]), int(state["batch"]), None


class EMA:
    """Exponential moving average of a module's parameters (buffers copied), in a frozen copy.

    The decay warms up as ``min(decay, (1 + step) / (10 + step))`` so early averages are not
    dominated by the random initial weights.
    """

    def __init__(self, module: nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise TrainingError(f"EMA decay must be from 0 to below 1, got {decay!r}")
        self.decay = decay
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self._params = list(self.module.parameters())
        self._buffers = list(self.module.buffers())

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self._params, [p.detach() for p in module.parameters()], 1.0 - decay)
        for mine, theirs in zip(self._buffers, module.buffers(), strict=True):
            mine.copy_(theirs)


@dataclass
class EarlyStopping:
    """Stop after ``patience`` validations without an improvement of more than ``min_delta``
    (``patience`` 0: never stop)."""

    patience: int
    min_delta: float = 0.0
    best: float = math.inf
    best_step: int = 0
    bad_evals: int = 0

    def update(self, value: float, step: int) -> bool:
        """Record a validation loss; True when it is the best so far."""
        if value < self.best - self.min_delta or not math.isfinite(self.best):
            self.best, self.best_step, self.bad_evals = value, step, 0
            return True
        self.bad_evals += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evals >= self.patience

    def to_json(self) -> dict[str, Any]:
        best = self.best if math.isfinite(self.best) else None
        return {"best": best, "best_step": self.best_step, "bad_evals": self.bad_evals}

    def load_json(self, data: dict[str, Any]) -> None:
        self.best = math.inf if data["best"] is None else float(data["best"])
        self.best_step, self.bad_evals = int(data["best_step"]), int(data["bad_evals"])


# --------------------------------------------------------------------------- RNG and optimizer state


def capture_rng(generator: torch.Generator, device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, json): torch CPU / CUDA / training-generator states; python and numpy states."""
    tensors = {"torch_cpu": torch.get_rng_state(), "generator": generator.get_state()}
    if device.type == "cuda":
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda.{i}"] = state
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    data = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    return tensors, data


def restore_rng(
    tensors: dict[str, torch.Tensor], data: dict[str, Any], generator: torch.Generator, device: torch.device
) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    generator.set_state(tensors["generator"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda.")]
    if cuda and device.type == "cuda":
        for i, state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, i)
    version, internal, gauss = data["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = data["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors "PARAM.KEY", json {param_groups, scalars}) of ``optimizer.state_dict()``."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], data: dict[str, Any]
) -> None:
    """Inverse of :func:`optimizer_state`; moments get their parameter's memory format."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for index, entries in data["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    keep = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in data["param_groups"]]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise TrainingError(f"optimizer state does not match the model: {exc}") from None
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for group, kept in zip(optimizer.param_groups, keep, strict=True):
        group.update(kept)  # this device's kernels, not the saving device's
    for param in params:
        entries = optimizer.state.get(param, {})
        for key, value in entries.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.dtype == param.dtype:
                entries[key] = torch.empty_like(param).copy_(value)


def module_tensors(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": value for name, module in modules.items() for key, value in module.state_dict().items()}


def load_module_tensors(modules: dict[str, nn.Module], tensors: dict[str, torch.Tensor], where: str) -> None:
    for name, module in modules.items():
        prefix = f"{name}."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(own, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise TrainingError(f"{where}: {name} weights do not match the model: {first}") from None


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
                f"--{_flag(key)} is {value!r} but {run.root} was started with {old!r}; a resumed run keeps its settings"
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


# --------------------------------------------------------------------------- metrics, progress, images


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
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buffer.tobytes())


def make_log(quiet: bool) -> Log:
    """Messages between progress-bar updates (tqdm.write), or nothing when ``quiet``."""
    if quiet:
        return lambda message: None
    from tqdm import tqdm

    return tqdm.write


def progress_bar(total: int, initial: int, desc: str, disable: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, unit="step", disable=disable, dynamic_ncols=True, smoothing=0.05
    )


# --------------------------------------------------------------------------- the loop


class TrainingTask(Protocol):
    """What :func:`fit` needs from a model: its trainable modules, a loss on a batch of training
    indices, and what to validate, sample, checkpoint and save beside the weights."""

    name: str
    num_train: int
    precision: str  # "bf16" or "fp32" (training.precision.resolve_precision), for training and validation

    def trainable(self) -> dict[str, nn.Module]: ...

    def train_loss(self, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Scalar loss of one micro-batch (called under the task's precision); draws only from ``generator``."""
        ...

    def after_step(self, step: int) -> None: ...

    def validate(self) -> dict[str, float]:
        """{"val_loss": ..., ...}; {} when there is no validation split."""
        ...

    def sample_grid(self) -> np.ndarray | None:
        """A uint8 (H, W) image of samples or reconstructions."""
        ...

    def write_checkpoint(self, folder: Path, step: int) -> None: ...

    def extra_state(self) -> dict[str, dict[str, torch.Tensor]]: ...

    def load_extra_state(self, parts: dict[str, dict[str, torch.Tensor]]) -> None: ...


@dataclass(frozen=True)
class FitResult:
    step: int
    finished: bool
    stop_reason: str  # "steps", "early_stopping", or "" when not finished
    best_val_loss: float | None
    best_step: int | None
    checkpoint: Path  # best when validated, else the last


def train_step(
    task: TrainingTask,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    order: BatchOrder,
    generator: torch.Generator,
    options: TrainOptions,
    step: int,
    *,
    context: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> torch.Tensor:
    """One optimizer step (1-based ``step``): the LR of that step, ``grad_accum`` micro-batches under
    the task's precision (or ``context()``, for benchmarks), clipping, AdamW, ``task.after_step``.

    Returns the step's mean loss as a 0-d float32 tensor on the device (no host sync here).
    """
    lr = lr_at(
        step, base_lr=options.lr, warmup_steps=options.warmup, total_steps=options.steps,
        min_lr_ratio=options.min_lr_ratio,
    )  # fmt: skip
    for group in optimizer.param_groups:
        group["lr"] = lr
    device = order.device
    step_loss = torch.zeros((), device=device)
    for _ in range(options.grad_accum):
        indices = order.next()
        with context() if context is not None else precision_autocast(device, task.precision):
            loss = task.train_loss(indices, generator)
        (loss / options.grad_accum).backward()
        step_loss += loss.detach().float()
    step_loss /= options.grad_accum
    if options.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, options.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    task.after_step(step)
    return step_loss


def fit(
    task: TrainingTask,
    options: TrainOptions,
    run: RunFolder,
    device: torch.device,
    *,
    state: TrainingState | None = None,
    log: Log = print,
) -> FitResult:
    """Train ``task`` to ``options.steps`` optimizer steps (or early stopping), from ``state`` when given.

    Each step: ``grad_accum`` micro-batches under autocast, gradient clipping, AdamW with the
    warmup + cosine LR, ``task.after_step`` (EMA). Then logging, validation (+ best checkpoint),
    sample grids, and every ``checkpoint_every`` steps the checkpoint and the training state.
    """
    # 1. optimizer, data order, generator, early stopping
    modules = task.trainable()
    params = [p for module in modules.values() for p in module.parameters() if p.requires_grad]
    fused = True if device.type == "cuda" else None
    optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay, fused=fused)
    order = BatchOrder(task.num_train, options.batch_size, options.seed, device)
    generator = torch.Generator(device=device)
    generator.manual_seed(options.seed)
    early = EarlyStopping(options.patience, options.min_delta)
    metrics = MetricsLog(run.metrics_path)
    step, stop_reason = 0, ""

    # 2. resume
    if state is not None:
        where = str(run.state_dir)
        load_module_tensors(modules, state.parts["model"], where)
        load_optimizer_state(optimizer, state.parts["optimizer"], state.meta["optimizer"])
        task.load_extra_state({k: v for k, v in state.parts.items() if k not in ("model", "optimizer", "rng")})
        restore_rng(state.parts["rng"], state.meta["rng"], generator, device)
        order.load_state(state.meta["data"])
        early.load_json(state.meta["early_stopping"])
        step, stop_reason = state.step, state.meta.get("stop_reason", "")
        metrics.truncate_after(step)
        if stop_reason:
            log(f"{run.root}: already finished at step {step} ({stop_reason})")
    else:
        metrics.truncate_after(0)

    def save(step: int, lr: float) -> None:
        run.publish("checkpoint", lambda folder: task.write_checkpoint(folder, step))
        opt_tensors, opt_meta = optimizer_state(optimizer)
        rng_tensors, rng_meta = capture_rng(generator, device)
        parts = {"model": module_tensors(modules), "optimizer": opt_tensors, "rng": rng_tensors, **task.extra_state()}
        meta = {
            "stop_reason": stop_reason,
            "lr": lr,
            "data": order.state(),
            "optimizer": opt_meta,
            "rng": rng_meta,
            "early_stopping": early.to_json(),
        }
        run.save_state(step, parts, meta)

    # 3. steps
    total = options.steps
    images_per_step = options.batch_size * options.grad_accum
    bar = progress_bar(total, step, task.name, options.quiet or bool(stop_reason))
    loss_sum = torch.zeros((), device=device)
    interval_steps, interval_start, overhead = 0, time.perf_counter(), 0.0
    lr = 0.0
    try:
        while step < total and not stop_reason:
            step += 1
            step_loss = train_step(task, optimizer, params, order, generator, options, step)
            lr = optimizer.param_groups[0]["lr"]
            loss_sum += step_loss
            interval_steps += 1
            bar.update(1)

            # 4. log (the only per-step host sync, every log_every steps)
            if step % options.log_every == 0 or step == total:
                value, average = step_loss.item(), (loss_sum / interval_steps).item()
                seconds = max(1e-9, time.perf_counter() - interval_start - overhead)
                speed = interval_steps * images_per_step / seconds
                metrics.append(
                    {"step": step, "epoch": order.epoch, "loss": value, "loss_avg": average, "lr": lr,
                     "images_per_s": speed}
                )  # fmt: skip
                bar.set_postfix(loss=f"{average:.4f}", img_s=f"{speed:.0f}", refresh=False)
                if not math.isfinite(value):
                    raise TrainingError(f"the loss is {value} at step {step}; lower --lr or check the data")
                loss_sum.zero_()
                interval_steps, interval_start, overhead = 0, time.perf_counter(), 0.0

            # 5. validate, sample, checkpoint (timed apart from the training speed)
            started = time.perf_counter()
            if step % options.validate_every == 0 or step == total:
                values = task.validate()
                if values:
                    improved = early.update(values["val_loss"], step)
                    metrics.append({"step": step, **values, "best": improved})
                    if improved:
                        run.publish("best", lambda folder, step=step: task.write_checkpoint(folder, step))
                    shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
                    log(f"step {step}: {shown}{' (best)' if improved else ''}")
            if options.sample_every and step % options.sample_every == 0:
                grid = task.sample_grid()
                if grid is not None:
                    write_png(run.samples_dir / f"step-{step:08d}.png", grid)
            if early.should_stop:
                stop_reason = "early_stopping"
                metrics.append(
                    {"step": step, "early_stop": True, "best_step": early.best_step, "best_val_loss": early.best}
                )
                log(
                    f"early stopping at step {step}: no validation improvement for {early.bad_evals} "
                    f"evaluations (best {early.best:.4g} at step {early.best_step})"
                )
            elif step == total:
                stop_reason = "steps"
            if step % options.checkpoint_every == 0 or stop_reason:
                save(step, lr)
            overhead += time.perf_counter() - started
    finally:
        bar.close()
    checkpoint = run.best_or_last()
    if checkpoint is None:
        raise TrainingError(f"{run.root}: no checkpoint was written")
    best = early.best if math.isfinite(early.best) else None
    return FitResult(
        step=step,
        finished=bool(stop_reason),
        stop_reason=stop_reason,
        best_val_loss=best,
        best_step=early.best_step if best is not None else None,
        checkpoint=checkpoint,
    )


def iter_chunks(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(count, start + size))


__all__ = [
    "EMA",
    "LEGACY_OPTIONS",
    "MUTABLE_OPTIONS",
    "BatchOrder",
    "EarlyStopping",
    "FitResult",
    "MetricsLog",
    "RunFolder",
    "TrainOptions",
    "TrainingError",
    "TrainingState",
    "TrainingTask",
    "absolute_encoder",
    "capture_rng",
    "discard_on_failure",
    "fit",
    "image_grid",
    "lr_at",
    "make_log",
    "manifest_info",
    "open_run",
    "pick_precision",
    "read_run_options",
    "resolve_config",
    "restore_rng",
    "resumes",
    "seed_everything",
    "use_compile",
    "write_png",
]
