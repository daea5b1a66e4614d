"""The training loop and its shared pieces: RNG and optimizer state, LR schedule, EMA, data order,
early stopping, progress bar; :func:`fit` drives a task. The run folder it writes to (layout,
``run.json``, training state, checkpoints, metrics, samples) is :mod:`training.run_folder`;
the options it reads are :mod:`training.options`.

No pickle: tensors (weights, optimizer moments, torch RNG states) go to safetensors; everything
else (optimizer hyper-parameters, python/numpy RNG states, data position, early stopping) to JSON.

Exact resume: the data order is a seeded permutation per epoch (position saved as epoch and batch
index); all training randomness comes from one ``torch.Generator`` on the device whose state is
saved with the global torch/CUDA/numpy/python states, after everything a step does.

Several processes (torchrun, :mod:`training.distributed`): each takes its share of every
micro-batch of the same order, DDP averages the gradients, rank 0 alone writes the run folder.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from training import distributed
from training.datasets import DatasetError, Manifest, read_manifest
from training.device import configure_torch, pick_device
from training.models.config import ConfigError, ModelConfig, cpu_config, default_config, tiny_config
from training.models.text import ENCODER_ALIASES
from training.options import Log, TrainingError, TrainOptions
from training.precision import PrecisionError, resolve_precision
from training.precision import autocast as precision_autocast
from training.run_folder import MetricsLog, RunFolder, TrainingState, write_png

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


def manifest_and_device(options: TrainOptions, log: Log) -> tuple[Manifest, torch.device]:
    """What every ``train`` command checks first, before its run folder is touched: the manifest
    (``--data``, with a ``train`` split) and the device (``--device``, set up by
    :func:`training.device.configure_torch`); the device and the precision it trains in are logged.
    Under torchrun the process joins the process group here (:func:`training.distributed.init`) and
    the device is its own GPU.
    """
    manifest = read_manifest(options.data)
    if not manifest.split("train"):
        raise DatasetError(f"{manifest.path}: no records with split 'train'")
    device = distributed.init(pick_device(options.device))
    distributed.shares(options.batch_size, options.max_process_batch)  # a batch the processes cannot share
    configure_torch(device)
    processes = f", {distributed.world_size()} processes" if distributed.world_size() > 1 else ""
    log(f"device {device}, precision {pick_precision(options.precision, device)}{processes}")
    return manifest, device


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


# --------------------------------------------------------------------------- log and progress


def make_log(quiet: bool) -> Log:
    """Messages between progress-bar updates (tqdm.write), or nothing when ``quiet`` (and in every
    process but rank 0 under torchrun)."""
    if quiet or not distributed.is_main():
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

    def train_loss(self, indices: torch.Tensor, generator: torch.Generator, share: slice | None = None) -> torch.Tensor:
        """Scalar loss of one micro-batch (called under the task's precision); draws only from ``generator``.

        ``share``: the loss of those positions of the micro-batch only, the randomness of the whole
        micro-batch drawn all the same (so that every share of it sees what one process would).
        """
        ...

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Put the module its training forward pass runs through in ``wrap(module)`` (DDP)."""
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
    shares: list[slice] | None = None,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> torch.Tensor:
    """One optimizer step (1-based ``step``): the LR of that step, ``grad_accum`` micro-batches under
    the task's precision (or ``context()``, for benchmarks), clipping, AdamW, ``task.after_step``.

    ``shares`` (:func:`training.distributed.shares`): the passes this process runs of each
    micro-batch; each pass replays the generator from the micro-batch's start, so every pass draws
    what the whole micro-batch draws, and its loss is scaled by its part of the global batch (DDP
    then averages over the processes: the gradient is the global-batch mean). ``no_sync``: the
    context of every pass but the step's last (DDP's, no gradient all-reduce there).

    Returns this process's mean loss of the step as a 0-d float32 tensor on the device (no host sync).
    """
    lr = lr_at(
        step, base_lr=options.lr, warmup_steps=options.warmup, total_steps=options.steps,
        min_lr_ratio=options.min_lr_ratio,
    )  # fmt: skip
    for group in optimizer.param_groups:
        group["lr"] = lr
    device = order.device
    step_loss = torch.zeros((), device=device)
    for micro in range(options.grad_accum):
        indices = order.next()
        if shares is None:  # one process, one pass: the micro-batch whole
            with context() if context is not None else precision_autocast(device, task.precision):
                loss = task.train_loss(indices, generator)
            (loss / options.grad_accum).backward()
            step_loss += loss.detach().float()
            continue
        start = generator.get_state()
        for number, share in enumerate(shares):
            if number:
                generator.set_state(start)
            last = micro == options.grad_accum - 1 and number == len(shares) - 1
            part = (share.stop - share.start) * distributed.world_size() / options.batch_size
            with contextlib.nullcontext() if last or no_sync is None else no_sync():
                with context() if context is not None else precision_autocast(device, task.precision):
                    loss = task.train_loss(indices, generator, share)
                (loss * (part / options.grad_accum)).backward()
            step_loss += loss.detach().float() * part
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

    Under torchrun (:mod:`training.distributed`) the task trains through DDP on this process's
    share of each micro-batch; rank 0 alone validates (its values are broadcast, so that every rank
    stops together) and writes metrics, samples, checkpoints and the state (which records the world
    size); the logged loss is the mean over the processes.
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
    main, world = distributed.is_main(), distributed.world_size()
    shares = distributed.shares(options.batch_size, options.max_process_batch)

    def record(entry: dict[str, Any]) -> None:
        if main:
            metrics.append(entry)

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
        if main:
            metrics.truncate_after(step)
        if stop_reason:
            log(f"{run.root}: already finished at step {step} ({stop_reason})")
        saved_world = int(state.meta.get("world_size", 1))
        if saved_world != world and not stop_reason:
            log(
                f"resuming a state saved by {saved_world} process(es) with {world}: the same global batches "
                "in the same order; only the order of float sums changes"
            )
    elif main:
        metrics.truncate_after(0)
    ddp: list[nn.Module] = []
    if world > 1:  # after the resume: DDP starts from the weights every rank loaded

        def wrap(module: nn.Module) -> nn.Module:
            ddp.append(distributed.wrap(module, device))
            return ddp[-1]

        task.distribute(wrap)

    def no_sync() -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        for module in ddp:
            stack.enter_context(module.no_sync())
        return stack

    def save(step: int, lr: float) -> None:
        if not main:
            return
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
            "world_size": world,
        }
        run.save_state(step, parts, meta)

    # 3. steps
    total = options.steps
    images_per_step = options.batch_size * options.grad_accum
    bar = progress_bar(total, step, task.name, options.quiet or bool(stop_reason) or not main)
    stop_after = options.stop_after or total
    loss_sum = torch.zeros((), device=device)
    interval_steps, interval_start, overhead = 0, time.perf_counter(), 0.0
    lr = 0.0
    try:
        while step < min(total, stop_after) and not stop_reason:
            step += 1
            step_loss = train_step(
                task, optimizer, params, order, generator, options, step,
                shares=shares, no_sync=no_sync if ddp else None,
            )  # fmt: skip
            lr = optimizer.param_groups[0]["lr"]
            loss_sum += step_loss
            interval_steps += 1
            bar.update(1)

            # 4. log (the only per-step host sync, every log_every steps)
            if step % options.log_every == 0 or step == total:
                value, average = distributed.mean(torch.stack([step_loss, loss_sum / interval_steps])).tolist()
                seconds = max(1e-9, time.perf_counter() - interval_start - overhead)
                speed = interval_steps * images_per_step / seconds
                record(
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
                values = distributed.broadcast(task.validate() if main else None)
                if values:
                    improved = early.update(values["val_loss"], step)
                    record({"step": step, **values, "best": improved})
                    if improved and main:
                        run.publish("best", lambda folder, step=step: task.write_checkpoint(folder, step))
                    shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
                    log(f"step {step}: {shown}{' (best)' if improved else ''}")
            if main and options.sample_every and step % options.sample_every == 0:
                grid = task.sample_grid()
                if grid is not None:
                    write_png(run.samples_dir / f"step-{step:08d}.png", grid)
            if early.should_stop:
                stop_reason = "early_stopping"
                record({"step": step, "early_stop": True, "best_step": early.best_step, "best_val_loss": early.best})
                log(
                    f"early stopping at step {step}: no validation improvement for {early.bad_evals} "
                    f"evaluations (best {early.best:.4g} at step {early.best_step})"
                )
            elif step == total:
                stop_reason = "steps"
            if step % options.checkpoint_every == 0 or stop_reason or step == stop_after:
                save(step, lr)
            overhead += time.perf_counter() - started
    finally:
        bar.close()

    def last_checkpoint() -> Path:
        checkpoint = run.best_or_last()
        if checkpoint is None:
            raise TrainingError(f"{run.root}: no checkpoint was written")
        return checkpoint

    checkpoint = distributed.on_main(last_checkpoint)
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
    "BatchOrder",
    "EarlyStopping",
    "FitResult",
    "TrainingTask",
    "absolute_encoder",
    "capture_rng",
    "fit",
    "lr_at",
    "make_log",
    "manifest_and_device",
    "manifest_info",
    "pick_precision",
    "resolve_config",
    "restore_rng",
    "seed_everything",
    "use_compile",
]
