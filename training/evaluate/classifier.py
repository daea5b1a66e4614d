"""The evaluation classifier: a small CNN trained from scratch on the real training split.

It stands in for readers (prompt alignment), gives the feature space of the Fréchet distance, the
memorisation search and the diversity measure (its penultimate layer, no weights downloaded), and
is the model of the utility test. Architecture (``NAME``)::

    x (B, 1, S, S) in [-1, 1]
    stem: conv 3x3 stride 2 -> BatchNorm -> ReLU                 16 channels, S/2
    4 x [conv 3x3 -> BatchNorm -> ReLU -> max-pool 2x2]          32, 64, 128, 128 channels, S/32
    global average pool -> features (B, 128)                      <- the feature space
    dropout 0.2 -> linear -> logits (B, classes)
    probabilities: softmax over the classes, or one sigmoid per class when ``multi_label``

(about 67M multiply-adds per 128 px image: ten epochs over 4,000 images train in minutes on a CPU)

Training: AdamW (lr 1e-3, weight decay 1e-4), cosine decay to 0, class-weighted cross-entropy
(inverse frequency, so a rare class counts; multi-label: binary cross-entropy per class, each
positive weighted by negatives / positives of its class), the trainers' light augmentation (shift, zoom,
rotation, gamma/contrast/brightness; never a flip), a fixed number of optimizer steps, one seed.
Weights are saved as safetensors with a JSON config beside them; nothing is pickled.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.fileio import atomic_write_bytes, atomic_write_text
from training.datasets import Augmentation, augment
from training.evaluate.options import EvaluationError

NAME = "cxr-eval-cnn"
STEM_WIDTH = 16
WIDTHS = (32, 64, 128, 128)
FORMAT = "cxr-studio-eval-classifier"
WEIGHTS_FILE = "classifier.safetensors"
CONFIG_FILE = "classifier.json"


@dataclass(frozen=True)
class ClassifierConfig:
    classes: tuple[str, ...]
    input_size: int
    widths: tuple[int, ...] = WIDTHS
    stem_width: int = STEM_WIDTH
    dropout: float = 0.2
    name: str = NAME
    # one sigmoid per class (findings that may coexist; "normal" = none present) instead of a softmax
    multi_label: bool = False

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]


class ChestClassifier(nn.Module):
    """The CNN above; ``features`` is the penultimate layer, ``forward`` gives logits."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [
            nn.Conv2d(1, config.stem_width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(config.stem_width),
            nn.ReLU(inplace=True),
        ]
        channels = config.stem_width
        for width in config.widths:
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(channels, len(config.classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) in [-1, 1] -> (B, feature_dim), after ReLU and global average pooling."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def to_input(images: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W) in [0, 1] (numpy, any float type) -> (N, 1, size, size) float32 in [-1, 1];
    area averaging when shrinking, bilinear when enlarging."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))[:, None]
    if x.shape[-1] != size or x.shape[-2] != size:
        shrink = x.shape[-1] > size
        x = F.interpolate(
            x, size=(size, size), mode="area" if shrink else "bilinear", **({} if shrink else {"align_corners": False})
        )
    return x * 2.0 - 1.0


def prepare(images: np.ndarray, size: int, chunk: int = 512) -> torch.Tensor:
    """A whole set as classifier input, (N, 1, size, size) float16 in [-1, 1] (CPU)."""
    out = torch.empty((len(images), 1, size, size), dtype=torch.float16)
    for start in range(0, len(images), chunk):
        out[start : start + chunk] = to_input(images[start : start + chunk], size).half()
    return out


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0


def steps_for(epochs: int, images: int, batch_size: int) -> int:
    """Optimizer steps of ``epochs`` passes over ``images`` (at least one step)."""
    return max(1, math.ceil(epochs * images / batch_size))


def train_classifier(
    inputs: torch.Tensor,
    labels: np.ndarray,
    config: ClassifierConfig,
    settings: TrainSettings,
    device: torch.device,
    on_step: Callable[[int, float], None] | None = None,
    init_body: dict[str, torch.Tensor] | None = None,
) -> ChestClassifier:
    """Train a fresh classifier on ``inputs`` (N, 1, S, S) float16 in [-1, 1] with ``labels``: class
    indices (N,), or for a ``multi_label`` config 0/1 targets (N, classes).

    ``init_body``: the convolutional layers' weights of an earlier classifier (transfer learning for
    small data sets); the head is always fresh.

    Batches are drawn from seeded per-epoch permutations; all randomness comes from ``settings.seed``.
    ``on_step(step, loss)`` is called after every optimizer step (for a progress bar).
    """
    # 1. model, optimizer, class weights, all seeded
    num_classes = len(config.classes)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.float32 if config.multi_label else torch.long)
    with torch.random.fork_rng(devices=[]):  # weights are drawn on the CPU, then moved
        torch.manual_seed(settings.seed)
        model = ChestClassifier(config)
    if init_body is not None:
        try:
            model.body.load_state_dict(init_body, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise EvaluationError(f"--classifier-init: its layers do not match this classifier's: {first}") from None
    model = model.to(device)
    if config.multi_label:  # a rare finding's positives count as much as its negatives
        positives = labels_t.sum(dim=0)
        weights = (len(labels_t) - positives) / positives.clamp_min(1)
    else:
        counts = torch.bincount(labels_t, minlength=num_classes).float()
        weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp_min(1)), torch.zeros_like(counts))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, settings.steps) / settings.steps))
    )
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    order_rng = np.random.default_rng(settings.seed)
    augmentation = Augmentation()
    weights = weights.to(device)

    # 2. fixed number of steps over seeded permutations
    model.train()
    n = len(inputs)
    batch = min(settings.batch_size, n)
    order, position = order_rng.permutation(n), 0
    for step in range(settings.steps):
        if position + batch > n:
            order, position = order_rng.permutation(n), 0
        index = torch.from_numpy(order[position : position + batch])
        position += batch
        x = augment(inputs[index].to(device).float(), generator, augmentation)
        if config.multi_label:
            loss = F.binary_cross_entropy_with_logits(model(x), labels_t[index].to(device), pos_weight=weights)
        else:
            loss = F.cross_entropy(model(x), labels_t[index].to(device), weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if on_step is not None:
            on_step(step + 1, loss.item())
    model.eval()
    return model


def _probabilities(model: ChestClassifier, logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits) if model.config.multi_label else torch.softmax(logits, dim=1)


@torch.no_grad()
def predict(
    model: ChestClassifier, inputs: torch.Tensor, device: torch.device, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, S, S) inputs -> class probabilities (N, C) (a softmax, or per-class sigmoids for a
    ``multi_label`` classifier) and features (N, D), float32 numpy."""
    model.eval()
    probabilities, features = [], []
    for start in range(0, len(inputs), batch_size):
        x = inputs[start : start + batch_size].to(device).float()
        f = model.features(x)
        probabilities.append(_probabilities(model, model.head(f)).float().cpu().numpy())
        features.append(f.float().cpu().numpy())
    classes = len(model.config.classes)
    if not probabilities:
        return np.zeros((0, classes), np.float32), np.zeros((0, model.config.feature_dim), np.float32)
    return np.concatenate(probabilities), np.concatenate(features)


# --------------------------------------------------------------------------- saving and loading


def save_classifier(model: ChestClassifier, folder: Path, info: dict) -> Path:
    """``folder/classifier.safetensors`` and ``folder/classifier.json`` (config + ``info``)."""
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS_FILE, save(state))
    config = {**asdict(model.config), "classes": list(model.config.classes), "widths": list(model.config.widths)}
    atomic_write_text(folder / CONFIG_FILE, json.dumps({"format": FORMAT, "config": config, **info}, indent=2) + "\n")
    return folder / WEIGHTS_FILE


def load_classifier(path: str | os.PathLike[str], device: torch.device) -> tuple[ChestClassifier, dict]:
    """A classifier saved by :func:`save_classifier` (its folder or its .safetensors file) and its JSON."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise EvaluationError(f"--classifier {path}: needs {CONFIG_FILE} and {WEIGHTS_FILE} (saved by an evaluation)")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise EvaluationError(
                f"--classifier {config_path}: not an evaluation classifier (format {data.get('format')!r})"
            )
        raw = data["config"]
        config = ClassifierConfig(
            classes=tuple(raw["classes"]),
            input_size=int(raw["input_size"]),
            widths=tuple(int(w) for w in raw["widths"]),
            stem_width=int(raw["stem_width"]),
            dropout=float(raw["dropout"]),
            name=str(raw["name"]),
            multi_label=bool(raw.get("multi_label", False)),  # absent in classifiers saved before it existed
        )
        model = ChestClassifier(config)
        model.load_state_dict(load_file(str(weights_path)), strict=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        if isinstance(exc, EvaluationError):
            raise
        raise EvaluationError(f"--classifier {path}: cannot be loaded: {' '.join(str(exc).split())}") from None
    return model.to(device).eval(), data


class _ProbabilityGraph(nn.Module):
    """image (B, 1, S, S) in [-1, 1] -> probabilities (B, classes): the classifier and a softmax
    (per-class sigmoids for a multi-label one)."""

    def __init__(self, model: ChestClassifier):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return _probabilities(self.model, self.model(image))


def export_onnx(model: ChestClassifier, path: Path) -> Path:
    """The classifier as an ONNX graph at ``path`` (the pack's finding checker, ``engine.checker``):
    ``image`` (B, 1, S, S) float32 in [-1, 1] -> ``probabilities`` (B, classes) float32, batch axis
    dynamic; the export conventions of ``training.export_onnx`` (TorchScript exporter, opset 17,
    IR <= 10 for ONNX Runtime 1.31). Checked with onnx.checker and one ONNX Runtime run against torch."""
    from training.export_onnx import ExportError, check_graph, export_graph

    model = model.cpu().eval()
    size = model.config.input_size
    example = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    proto = export_graph(_ProbabilityGraph(model), (example,), ["image"], "probabilities")
    atomic_write_bytes(path, proto.SerializeToString())
    check_graph(path, {"image": example[:1].numpy()}, (1, len(model.config.classes)))
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": example.numpy()})[0]
    with torch.no_grad():
        want = _probabilities(model, model(example)).numpy()
    if not np.allclose(got, want, atol=1e-4):
        raise ExportError(f"{path.name}: ONNX Runtime and torch differ by {np.abs(got - want).max():.2g}")
    return path


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "NAME",
    "ChestClassifier",
    "ClassifierConfig",
    "TrainSettings",
    "export_onnx",
    "load_classifier",
    "parameter_count",
    "predict",
    "prepare",
    "save_classifier",
    "steps_for",
    "to_input",
    "train_classifier",
]
