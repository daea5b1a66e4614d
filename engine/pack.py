"""Model packs: a folder with ``model.json`` (configs, model card, file hashes) and ONNX files.

A pack is what the engine runs and what ``training`` exports. Layout::

    PACK/
      model.json            format, configs, model card, sha256 + size of every other file
      text_encoder.onnx     input_ids, attention_mask (B, T) int64 -> context (B, T, D) float32
      unet.onnx             sample (B, C, h, w), timestep (B,) float32, context (B, T, D)
                            -> model_output (B, C, h, w): epsilon or v, as `schedule.prediction_type`
      vae_decoder.onnx      latent (B, C, h, w) in diffusion space (already x scaling_factor)
                            -> image (B, 1, H, W), about [-1, 1], not clamped
      vae_encoder.onnx      image (B, 1, H, W) in [-1, 1] -> latent (B, C, h, w), mean x scaling_factor
      vocab.txt             WordPiece vocabulary of the text encoder
      record_embeddings.npy optional: (V, D) float32 record-token table, named by model.json's
                            ``conditioning`` (engine.conditioning); then context is (B, T + K, D)
      checker.onnx          optional: the finding checker (engine.checker), named by model.json's
                            ``checker``: image (B, 1, S, S) -> probabilities (B, classes); not part
                            of the fingerprint (see :attr:`ModelPack.fingerprint`)

A pack exported with attention maps has, besides ``model_output``, one extra UNet output per
cross-attention layer (``attention`` section: names and the layer's spatial size h_l x w_l), each the
layer's attention probabilities averaged over heads, (B, h_l * w_l, T) (engine.attention).

Loading checks the format version, refuses unknown keys and values of the wrong type, and checks
every file's size and sha256, so a missing, truncated or altered file is refused with an error that
names it. A graph saved with external data (``location`` entries in its tensors) loads only when
model.json lists those files too, and no file may be a link out of the pack folder: the fingerprint
covers every byte the runtime reads. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.fileio import atomic_write_text
from engine.jsonfields import refuse_unknown_keys
from engine.paths import MODEL_VARIABLE, default_model_dir, model_override

FORMAT_NAME = "cxr-studio-pack"
FORMAT_VERSION = 1
MANIFEST = "model.json"
REQUIRED_FILES = ("text_encoder.onnx", "unet.onnx", "vae_decoder.onnx")
PREDICTION_TYPES = ("epsilon", "v_prediction", "flow_prediction")  # flow: rectified flow (engine.schedules)
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


class PackError(ValueError):
    """A folder that is not a usable model pack; the message says which file and why."""


@dataclass(frozen=True)
class ImageConfig:
    height: int
    width: int
    channels: int = 1


@dataclass(frozen=True)
class LatentConfig:
    channels: int
    height: int
    width: int
    scaling_factor: float
    downsample_factor: int


@dataclass(frozen=True)
class ScheduleConfig:
    """Noise schedule, in diffusers' DDPMScheduler terms; ``flow_prediction`` (rectified flow, the betas
    unused) shifts its σ by ``shift`` as FlowMatchEulerDiscreteScheduler's ``shift`` (1: none)."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction_type: str = "epsilon"
    shift: float = 1.0


@dataclass(frozen=True)
class TextConfig:
    """Tokenizer and text encoder: ``vocab_file`` is a file in the pack."""

    vocab_file: str = "vocab.txt"
    lowercase: bool = True
    max_tokens: int = 64
    context_dim: int = 256
    encoder_name: str = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class PreviewConfig:
    """A cheap latent -> pixel map fitted at export: ``pixel = sum_c weight[c] * z[c] + bias``.

    ``z`` is the predicted clean latent in diffusion space; the result is in [-1, 1] at latent
    resolution and is upsampled for display.
    """

    weight: tuple[float, ...]
    bias: float


@dataclass(frozen=True)
class DefaultsConfig:
    num_steps: int = 20
    guidance_scale: float = 4.0
    sampler: str = "dpmpp-2m"


@dataclass(frozen=True)
class ConditioningConfig:
    """Extra context tokens beside the text's (``engine.conditioning``): ``kind`` "record_tokens",
    the token ``tokens`` (id = index), ``max_tokens`` K per prompt, ``embeddings`` the (V, D) .npy file."""

    kind: str
    tokens: tuple[str, ...]
    max_tokens: int
    embeddings: str


@dataclass(frozen=True)
class CheckerConfig:
    """The finding checker (``engine.checker``): a classifier graph ``file`` in the pack.

    ``classes``: its output columns (softmax probabilities). ``findings``: engine.findings names ->
    the classes whose probabilities add up to that finding's score (``no_finding`` -> ``normal``,
    ``pneumonia`` -> both pneumonia classes). Input: the image in [0, 1] resized to ``input_size``
    square (area averaging when shrinking, bilinear when enlarging) and mapped linearly to
    ``input_range``. ``threshold``: a present finding passes at a score >= it, an absent one at a
    score < it. ``accuracy`` on ``accuracy_n`` real held-out films (``accuracy_data`` says which),
    measured on ``accuracy_date`` (ISO date); ``accuracy_n`` 0: not measured.
    """

    file: str
    classes: tuple[str, ...]
    findings: dict[str, tuple[str, ...]]
    input_size: int
    accuracy: float
    accuracy_n: int
    accuracy_date: str
    accuracy_data: str
    input_range: tuple[float, ...] = (-1.0, 1.0)
    threshold: float = 0.5


@dataclass(frozen=True)
class AttentionConfig:
    """Extra UNet outputs for finding maps (``engine.attention``): ``outputs`` the graph output names,
    one per cross-attention layer, output i being (B, heights[i] * widths[i], T) softmax probabilities
    averaged over heads (row-major over the layer's h_l x w_l grid)."""

    outputs: tuple[str, ...]
    heights: tuple[int, ...]
    widths: tuple[int, ...]


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class PackManifest:
    model_id: str
    precision: str  # "fp32" or "fp16"
    image: ImageConfig
    latent: LatentConfig
    schedule: ScheduleConfig
    text: TextConfig
    preview: PreviewConfig
    defaults: DefaultsConfig = field(default_factory=DefaultsConfig)
    card: dict[str, Any] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    conditioning: ConditioningConfig | None = None  # None: the text context only
    checker: CheckerConfig | None = None  # None: no finding checker
    attention: AttentionConfig | None = None  # None: the UNet has no attention-map outputs

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["preview"]["weight"] = list(self.preview.weight)
        if self.schedule.prediction_type != "flow_prediction":
            del data["schedule"]["shift"]  # epsilon and v packs keep the model.json they always had
        if self.conditioning is None:
            del data["conditioning"]  # packs without it keep the model.json they always had
        else:
            data["conditioning"]["tokens"] = list(self.conditioning.tokens)
        if self.checker is None:
            del data["checker"]
        else:
            data["checker"]["classes"] = list(self.checker.classes)
            data["checker"]["findings"] = {k: list(v) for k, v in self.checker.findings.items()}
            data["checker"]["input_range"] = list(self.checker.input_range)
        if self.attention is None:
            del data["attention"]  # packs without maps keep the model.json they always had
        else:
            data["attention"] = {key: list(value) for key, value in data["attention"].items()}
        return data


_SECTIONS = {
    "image": ImageConfig,
    "latent": LatentConfig,
    "schedule": ScheduleConfig,
    "text": TextConfig,
    "preview": PreviewConfig,
    "defaults": DefaultsConfig,
    "conditioning": ConditioningConfig,
    "checker": CheckerConfig,
    "attention": AttentionConfig,
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _checked(value: Any, annotation: str, where: str) -> Any:
    """``value`` if it has the type a field's annotation names (as a string: this module postpones
    annotations), the list of a ``tuple[float, ...]`` as a tuple; else PackError naming the field."""
    if annotation == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
        raise PackError(f"{MANIFEST}: {where} must be a whole number, not {value!r}")
    if annotation == "float" and not _is_number(value):
        raise PackError(f"{MANIFEST}: {where} must be a number, not {value!r}")
    if annotation == "str" and not isinstance(value, str):
        raise PackError(f"{MANIFEST}: {where} must be text, not {value!r}")
    if annotation == "bool" and not isinstance(value, bool):
        raise PackError(f"{MANIFEST}: {where} must be true or false, not {value!r}")
    if annotation == "tuple[float, ...]":
        if not isinstance(value, list | tuple) or not all(_is_number(v) for v in value):
            raise PackError(f"{MANIFEST}: {where} must be a list of numbers, not {value!r}")
        return tuple(float(v) for v in value)
    if annotation == "tuple[int, ...]":
        if not isinstance(value, list | tuple) or not all(type(v) is int for v in value):  # bool is not a size
            raise PackError(f"{MANIFEST}: {where} must be a list of whole numbers, not {value!r}"[:300])
        return tuple(value)
    if annotation == "tuple[str, ...]":
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise PackError(f"{MANIFEST}: {where} must be a list of text, not {value!r}"[:300])
        return tuple(value)
    if annotation == "dict[str, tuple[str, ...]]":
        if not isinstance(value, dict) or not all(
            isinstance(v, list | tuple) and all(isinstance(x, str) for x in v) for v in value.values()
        ):
            raise PackError(f"{MANIFEST}: {where} must be an object of lists of text, not {value!r}"[:300])
        return {str(k): tuple(v) for k, v in value.items()}
    return value


# Card entries that code reads as lists of text (completion words, example prompts, findings).
CARD_TEXT_LISTS = ("example_prompts", "supported_findings", "vocabulary")


def _check_card(card: Any) -> None:
    """A card is shown as text: each entry is text, a number, or a list or object of those."""
    if not isinstance(card, dict):
        raise PackError(f"{MANIFEST}: 'card' must be an object (title -> text), not {type(card).__name__}")
    scalar = str | int | float | bool
    for key, value in card.items():
        if key in CARD_TEXT_LISTS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise PackError(f"{MANIFEST}: card.{key} must be a list of text, not {value!r}"[:300])
        elif isinstance(value, list):
            if not all(isinstance(v, scalar) for v in value):
                raise PackError(f"{MANIFEST}: card.{key}: a list's items must be text or numbers")
        elif isinstance(value, dict):
            if not all(isinstance(v, scalar) for v in value.values()):
                raise PackError(f"{MANIFEST}: card.{key}: an object's values must be text or numbers")
        elif value is not None and not isinstance(value, scalar):
            raise PackError(f"{MANIFEST}: card.{key} must be text, a number, a list or an object")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise PackError(f"{MANIFEST}: '{where}' must be an object")
    refuse_unknown_keys(data, {f.name for f in fields(cls)}, PackError, f"{MANIFEST}: {where}")
    types = {f.name: f.type for f in fields(cls)}
    data = {key: _checked(value, str(types[key]), f"{where}.{key}") for key, value in data.items()}
    try:
        obj = cls(**data)
    except TypeError as exc:
        raise PackError(f"{MANIFEST}: '{where}' is incomplete: {exc}") from None
    return obj


def manifest_from_json(data: Any) -> PackManifest:
    """Parse and check a decoded ``model.json``; raises PackError naming the bad key."""
    if not isinstance(data, dict):
        raise PackError(f"{MANIFEST}: not a JSON object")
    if data.get("format") != FORMAT_NAME:
        raise PackError(f"{MANIFEST}: format is {data.get('format')!r}, expected {FORMAT_NAME!r}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise PackError(
            f"{MANIFEST}: format_version {version!r} is not supported (this CXR Studio reads version {FORMAT_VERSION})"
        )
    refuse_unknown_keys(data, {f.name for f in fields(PackManifest)}, PackError, MANIFEST)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            kwargs[key] = _build(_SECTIONS[key], value, key)
        elif key == "files":
            if not isinstance(value, dict):
                raise PackError(f"{MANIFEST}: 'files' must be an object")
            kwargs[key] = {name: _build(FileEntry, entry, f"files.{name}") for name, entry in value.items()}
        elif key == "card":
            _check_card(value)
            kwargs[key] = value
        elif key in ("model_id", "precision"):
            kwargs[key] = _checked(value, "str", key)
        else:
            kwargs[key] = value
    if not str(kwargs.get("model_id", "?")).strip():
        raise PackError(f"{MANIFEST}: model_id must not be empty")
    try:
        manifest = PackManifest(**kwargs)
    except TypeError as exc:
        raise PackError(f"{MANIFEST}: incomplete: {exc}") from None
    _check_values(manifest)
    return manifest


def _check_values(m: PackManifest) -> None:
    if m.precision not in ("fp32", "fp16"):
        raise PackError(f"{MANIFEST}: precision must be fp32 or fp16, not {m.precision!r}")
    if m.schedule.prediction_type not in PREDICTION_TYPES:
        raise PackError(f"{MANIFEST}: schedule.prediction_type must be one of {', '.join(PREDICTION_TYPES)}")
    if m.schedule.beta_schedule not in BETA_SCHEDULES:
        raise PackError(f"{MANIFEST}: schedule.beta_schedule must be one of {', '.join(BETA_SCHEDULES)}")
    shift = m.schedule.shift
    if not (isinstance(shift, int | float) and 0 < shift < float("inf")) or (
        m.schedule.prediction_type != "flow_prediction" and shift != 1.0
    ):
        raise PackError(f"{MANIFEST}: schedule.shift must be a number > 0, and 1 unless prediction_type is flow")
    if len(m.preview.weight) != m.latent.channels:
        raise PackError(f"{MANIFEST}: preview.weight needs {m.latent.channels} values (latent channels)")
    if m.latent.height * m.latent.downsample_factor != m.image.height or (
        m.latent.width * m.latent.downsample_factor != m.image.width
    ):
        raise PackError(f"{MANIFEST}: latent size x downsample_factor does not match the image size")
    if m.text.max_tokens < 3:
        raise PackError(f"{MANIFEST}: text.max_tokens must be at least 3")
    extra = () if m.conditioning is None else (m.conditioning.embeddings,)
    if m.checker is not None:
        extra = (*extra, m.checker.file)
        unknown = sorted({c for names in m.checker.findings.values() for c in names} - set(m.checker.classes))
        if unknown:
            raise PackError(f"{MANIFEST}: checker.findings names classes it does not have: {', '.join(unknown)}")
        if len(m.checker.input_range) != 2 or m.checker.input_size < 1 or not 0 < m.checker.threshold < 1:
            raise PackError(f"{MANIFEST}: checker needs input_range [low, high], input_size >= 1, threshold in (0, 1)")
    if m.attention is not None:
        a = m.attention
        if not (len(a.outputs) == len(a.heights) == len(a.widths) >= 1) or len(set(a.outputs)) != len(a.outputs):
            raise PackError(f"{MANIFEST}: attention needs distinct outputs and one height and width per output")
        if any(n < 1 for n in (*a.heights, *a.widths)) or "model_output" in a.outputs:
            raise PackError(f"{MANIFEST}: attention heights and widths must be >= 1, outputs not 'model_output'")
    for name in (*REQUIRED_FILES, m.text.vocab_file, *extra):
        if name not in m.files:
            raise PackError(f"{MANIFEST}: required file {name} is not listed in 'files'")
    for name in m.files:
        if Path(name).name != name or name in (MANIFEST, "", ".", ".."):
            raise PackError(f"{MANIFEST}: file name {name!r} must be a plain name inside the pack")


def card_text(manifest: PackManifest, folder: Path, fingerprint: str | None = None) -> str:
    """The model card as plain text, the one text ``info`` prints and the app shows. ``fingerprint``
    is known once :func:`load_pack` has hashed the files; without it (a pack listed from model.json
    alone) its line is left out."""
    m = manifest
    lines = [
        f"Model: {m.model_id}  ({m.precision}, pack format {m.format_version})",
        f"Folder: {folder}",
        *([f"Fingerprint: {fingerprint}"] if fingerprint is not None else []),
        f"Image: {m.image.width}x{m.image.height}, latent {m.latent.channels}x{m.latent.height}x{m.latent.width}",
        f"Schedule: {m.schedule.beta_schedule}, {m.schedule.num_train_timesteps} steps, {m.schedule.prediction_type}",
        f"Text encoder: {m.text.encoder_name}, max {m.text.max_tokens} tokens",
        f"Defaults: {m.defaults.sampler}, {m.defaults.num_steps} steps, guidance {m.defaults.guidance_scale:g}",
    ]
    if m.checker is not None:
        c = m.checker
        measured = (
            f"accuracy {c.accuracy:.3f} on {c.accuracy_n} real held-out films ({c.accuracy_data}; {c.accuracy_date})"
            if c.accuracy_n
            else "accuracy not measured"
        )
        lines.append(f"Finding checker: {', '.join(c.classes)}; {measured}")
    return "\n".join([*lines, *_card_lines(m.card)])


def _card_lines(card: dict) -> list[str]:
    """A model card's entries as text lines: ``Title: value``, lists and objects indented below."""
    lines = []
    for key, value in card.items():
        title = key.replace("_", " ").capitalize()
        if isinstance(value, list):
            lines.append(f"{title}:")
            lines.extend(f"  - {item}" for item in value)
        elif isinstance(value, dict):
            lines.append(f"{title}:")
            lines.extend(f"  {k}: {v}" for k, v in value.items())
        else:
            lines.append(f"{title}: {value}")
    return lines


def card_supported_findings(card: Any) -> tuple[str, ...] | None:
    """A model card's ``supported_findings`` (engine.findings names), or None when it lists none."""
    supported = card.get("supported_findings") if isinstance(card, dict) else None
    return tuple(str(s) for s in supported) if isinstance(supported, list) else None


# The parts of onnx.proto that can hold a TensorProto, as {message: {field number: message}}: enough
# to find every tensor's ``external_data`` without importing onnx (the packaged app ships without it).
_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _TENSOR, _SPARSE, _FUNCTION, _TRAINING, _ENTRY = range(9)
_ONNX_SCHEMA: dict[int, dict[int, int]] = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},  # graph, training_info, functions
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},  # node, initializer, sparse_initializer
    _NODE: {5: _ATTRIBUTE},
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _TENSOR: {13: _ENTRY},  # external_data: key/value entries, "location" among them
    _SPARSE: {1: _TENSOR, 2: _TENSOR},  # values, indices
    _FUNCTION: {7: _NODE},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},  # initialization, algorithm
    _ENTRY: {},
}
_MAX_ONNX_NESTING = 64


class _NotProtobuf(ValueError):
    pass


def _varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _NotProtobuf("bad varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _onnx_locations(buf: Any, start: int, end: int, kind: int, depth: int, found: set[str]) -> str | None:
    """Walk one message of type ``kind``; add every tensor's external-data location to ``found``.
    Returns the string value of an ``_ENTRY`` whose key is ``location`` (else None)."""
    if depth > _MAX_ONNX_NESTING:
        raise _NotProtobuf("nested too deeply")
    children = _ONNX_SCHEMA[kind]
    key = value = None
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _NotProtobuf("truncated field")
            if kind == _ENTRY and number in (1, 2):
                text = bytes(buf[pos : pos + length]).decode("utf-8", "replace")
                key, value = (text, value) if number == 1 else (key, text)
            elif number in children:
                location = _onnx_locations(buf, pos, pos + length, children[number], depth + 1, found)
                if location is not None:
                    found.add(location)
            pos += length
        else:  # groups (3, 4) are not used by onnx.proto; 6, 7 do not exist
            raise _NotProtobuf(f"wire type {wire}")
        if pos > end:
            raise _NotProtobuf("truncated field")
    return value if kind == _ENTRY and key == "location" else None


def onnx_external_files(path: Path) -> set[str]:
    """The external-data locations (as written, relative to the graph's folder) that ONNX Runtime
    would read for the graph at ``path``. A file that is not protobuf gives an empty set: ONNX
    Runtime then refuses it, with the file named, when it is loaded."""
    import mmap

    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return set()
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            found: set[str] = set()
            try:
                _onnx_locations(buf, 0, len(buf), _MODEL, 0, found)
            except _NotProtobuf:
                return set()
            return found


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def _check_vocab(path: Path) -> None:
    """The WordPiece vocabulary has one token a line and the four tokens every sequence uses."""
    try:
        tokens = set(path.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as exc:
        raise PackError(f"{path} (text.vocab_file): cannot be read as UTF-8 text: {exc}") from None
    missing = [token for token in SPECIAL_TOKENS if token not in tokens]
    if missing:
        raise PackError(f"{path} (text.vocab_file): the vocabulary lacks {', '.join(missing)} (one token a line)")


def _inside(root: Path, path: Path) -> bool:
    """True when ``path``, with every symlink followed, is inside the (resolved) folder ``root``."""
    return path.resolve().is_relative_to(root)


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelPack:
    """A verified pack on disk."""

    root: Path
    manifest: PackManifest

    def path(self, name: str) -> Path:
        if name not in self.manifest.files:
            raise PackError(f"{self.root}: the pack has no file {name}")
        return self.root / name

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    @property
    def fingerprint(self) -> str:
        """sha256 over model.json's file hashes: one id for exactly the weights that make the images.

        The finding checker's file is left out (it is still hashed and verified in ``files``). The
        fingerprint says what generated an image, and the case library and every DICOM file store
        it to find "the same model" again; the checker only reads finished images and changes no
        pixel. Counting it would make a checker added to (or updated in) a pack later turn every
        earlier case into one "from another model", though that pack draws them bit for bit the
        same. Which checker scored an image is a separate fact: :attr:`checker_fingerprint`.
        """
        digest = hashlib.sha256()
        skip = {self.manifest.checker.file} if self.manifest.checker is not None else set()
        for name in sorted(set(self.manifest.files) - skip):
            digest.update(f"{name}:{self.manifest.files[name].sha256}\n".encode())
        return digest.hexdigest()

    @property
    def checker_fingerprint(self) -> str | None:
        """The checker file's sha256 (None without a checker): which checker gave a score."""
        checker = self.manifest.checker
        return None if checker is None else self.manifest.files[checker.file].sha256

    @property
    def card(self) -> dict[str, Any]:
        return self.manifest.card


def read_manifest(root: str | os.PathLike[str]) -> PackManifest:
    root = Path(root)
    if not root.is_dir():
        raise PackError(f"{root}: not a folder (a model pack is a folder with {MANIFEST})")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise PackError(f"{root}: not a model pack: {MANIFEST} is missing")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackError(f"{manifest_path}: cannot be read as JSON: {exc}") from None
    except RecursionError:  # json recurses once per [ or {
        raise PackError(f"{manifest_path}: cannot be read as JSON: nested too deeply") from None
    return manifest_from_json(data)


def load_pack(root: str | os.PathLike[str], *, verify: bool = True) -> ModelPack:
    """Read ``model.json`` and check every listed file's size and sha256.

    Raises PackError that names the first missing, truncated or altered file, a file (or model.json)
    that is a link out of the pack folder, a vocabulary without the special tokens, and a graph whose
    external-data file is not listed (so every byte ONNX Runtime reads is in the fingerprint).
    """
    root = Path(root).resolve()
    if (root / MANIFEST).exists() and not _inside(root, root / MANIFEST):
        raise PackError(f"{root / MANIFEST}: a link to {(root / MANIFEST).resolve()}, outside the pack folder")
    manifest = read_manifest(root)
    for name in sorted(manifest.files):
        path = root / name
        # A symlink (vocab.txt -> /etc/passwd) would make the pack read a file it does not contain.
        if (path.exists() or path.is_symlink()) and not _inside(root, path):
            raise PackError(f"{path}: a link to {path.resolve()}, outside the pack folder: a pack holds its own files")
    if verify:
        for name, entry in sorted(manifest.files.items()):
            path = root / name
            if not path.is_file():
                raise PackError(f"{path}: missing (listed in {MANIFEST})")
            size = path.stat().st_size
            if size != entry.size:
                raise PackError(f"{path}: size {size} bytes, {MANIFEST} says {entry.size}: truncated or replaced")
            if sha256_file(path) != entry.sha256:
                raise PackError(f"{path}: sha256 does not match {MANIFEST}: the file was altered")
        _check_vocab(root / manifest.text.vocab_file)
        # ONNX Runtime also reads each graph's external-data files: every one must be hashed above.
        for name in sorted(n for n in manifest.files if n.endswith(".onnx")):
            for location in sorted(onnx_external_files(root / name)):
                if location not in manifest.files:
                    raise PackError(
                        f"{root / name}: its weights are in {location!r}, which is not listed in {MANIFEST} "
                        f"'files' (every file a graph loads must be a plain name in the pack, with its sha256)"
                    )
    return ModelPack(root=root, manifest=manifest)


def load_model_pack(model: str | os.PathLike[str] | None) -> ModelPack:
    """The pack a user chose, verified: ``model`` (``--model PACK``), else ``$CXR_STUDIO_MODEL``'s, else
    the embedded default. An error about the variable's pack names the variable (the user may not know
    it is set). The command line and training's evaluation choose through here."""
    if model is not None:
        return load_pack(model)
    override = model_override()
    path = default_model_dir()
    if override is not None:
        if not path.exists():
            raise PackError(
                f"{MODEL_VARIABLE}={override}: no model pack there "
                "(unset it for the embedded default model, or pass --model PACK)"
            )
        try:
            return load_pack(path)
        except PackError as exc:
            raise PackError(f"{MODEL_VARIABLE}={override}: {exc}") from None
    if not path.exists():
        raise PackError(f"no default model is installed at {path}; pass --model PACK")
    return load_pack(path)


def write_manifest(root: str | os.PathLike[str], manifest: PackManifest) -> PackManifest:
    """Hash every file the manifest lists (or every file in ``root`` if it lists none) and
    write ``model.json`` atomically. Returns the manifest with its ``files`` filled in."""
    root = Path(root)
    names = sorted(manifest.files) or sorted(p.name for p in root.iterdir() if p.is_file() and p.name != MANIFEST)
    # Graphs saved with external data: their weight files are part of the pack too.
    names = sorted({*names, *(loc for n in names if n.endswith(".onnx") for loc in onnx_external_files(root / n))})
    files = {}
    for name in names:
        path = root / name
        files[name] = FileEntry(sha256=sha256_file(path), size=path.stat().st_size)
    manifest = PackManifest(**{**{f.name: getattr(manifest, f.name) for f in fields(manifest)}, "files": files})
    _check_values(manifest)
    atomic_write_text(root / MANIFEST, json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n")
    return manifest
