"""Finding maps: where in the image each prompt word and each finding acted (DAAM-style heat maps).

DAAM (Tang et al., ACL 2023) sums the UNet's cross-attention maps over heads, layers and steps,
each upsampled to the image. A pack exported with attention maps (model.json ``attention``,
``engine.pack.AttentionConfig``) gives, with every UNet call, one (B, h_l * w_l, T') array per
cross-attention layer: softmax(QK^T / sqrt(d)) already averaged over heads. Here, in numpy:

1. :class:`AttentionCollector` keeps the conditional half of each call, bilinearly upsamples each
   layer's (h_l, w_l) grid to the latent (h, w) and sums over layers and calls (= steps), per text
   token (the first T of T' tokens; record tokens, when the pack has them, are left out).
2. :meth:`AttentionCollector.finish` upsamples the sum to the image (H, W) once (bilinear
   upsampling is linear, so this equals upsampling every layer to the image before summing), then
   sums tokens into words (a word's WordPiece tokens, ``WordPieceTokenizer.words``) and words into
   findings (the words inside a finding's spans, ``engine.findings.parse.parse_prompt``, with the
   modifier words just before them: "pleural" of "pleural effusion").
3. Each map is stretched from its minimum to its maximum onto [0, 1] (as DAAM displays them: divided
   by the maximum alone, a map was mostly 0.6-1.0 grey). ``peak`` keeps the maximum before that,
   divided by the number of layers and calls: the mean attention probability at the hottest pixel.

Collecting changes nothing in generation: the maps are extra outputs of the same graph run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.findings.parse import parse_prompt
from engine.pack import AttentionConfig, ModelPack
from engine.text import WordPieceTokenizer


class AttentionError(ValueError):
    """Finding maps were asked of a pack (or backend) that cannot give them; the message says how to get them."""


def require_attention(pack: ModelPack, backend: object | None = None) -> AttentionConfig:
    """The pack's ``attention`` section; AttentionError naming the pack and how to re-export it when
    it has none, or when ``backend`` cannot return the maps."""
    config = pack.manifest.attention
    if config is None:
        raise AttentionError(
            f"{pack.root}: this model pack was exported without attention maps; re-export it with them: "
            f"cxr-studio checkpoint-from-pack {pack.root} --config NAME --out CKPT, then "
            "cxr-studio export-onnx --checkpoint CKPT --out NEW_PACK --attention-maps"
        )
    if backend is not None and not callable(getattr(backend, "unet_attention", None)):
        raise AttentionError(f"the {backend.provider} backend cannot return attention maps; use onnxruntime")
    return config


def resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) bilinear interpolation weights, half-pixel centres (as cv2.INTER_LINEAR and
    torch's ``align_corners=False``), edges clamped; rows sum to 1."""
    x = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0.0, size_in - 1)
    low = np.floor(x).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    weight = x - low
    matrix = np.zeros((size_out, size_in))
    np.add.at(matrix, (np.arange(size_out), low), 1.0 - weight)
    np.add.at(matrix, (np.arange(size_out), high), weight)
    return matrix


def upsample(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """(..., h, w) -> (..., height, width), bilinear (:func:`resize_matrix`), float64."""
    rows = resize_matrix(maps.shape[-2], height)
    cols = resize_matrix(maps.shape[-1], width)
    return rows @ maps @ cols.T  # two small matrix products (a 3-operand einsum would loop over all six axes)


@dataclass(frozen=True)
class AttentionMap:
    """One word's or finding's map: ``image`` (B, H, W) float32 in [0, 1] (one map per image of the
    batch); ``kind`` "word" or "finding"; ``label`` the word as written or the finding's name;
    ``status`` the finding's (present / absent / uncertain), "" for a word; ``spans`` its characters
    [start, end) in the prompt; ``tokens`` its positions in the text tokens; ``peak`` (B,) the mean
    attention probability (over layers and steps) at the hottest pixel, before normalising."""

    kind: str
    label: str
    status: str
    spans: tuple[tuple[int, int], ...]
    tokens: tuple[int, ...]
    peak: tuple[float, ...]
    image: np.ndarray


@dataclass(frozen=True)
class FindingMaps:
    """Finding maps of one generation: ``words`` in prompt order, ``findings`` in first-mention order,
    aggregated over ``layers`` cross-attention layers and ``calls`` UNet calls (steps)."""

    prompt: str
    words: tuple[AttentionMap, ...]
    findings: tuple[AttentionMap, ...]
    layers: int
    calls: int


class AttentionCollector:
    """Sums a generation's cross-attention maps (conditional half) over layers and calls, per token."""

    def __init__(self, config: AttentionConfig, latent_size: tuple[int, int], text_tokens: int):
        self.config = config
        self.latent_size = latent_size
        self.text_tokens = text_tokens
        self.calls = 0
        self._sum: np.ndarray | None = None  # (B, T, h, w) float64

    def add(self, maps: Sequence[np.ndarray]) -> None:
        """One UNet call's maps: per layer (B, h_l * w_l, T') of the conditional images."""
        if len(maps) != len(self.config.outputs):
            raise ValueError(f"expected {len(self.config.outputs)} attention maps, got {len(maps)}")
        h, w = self.latent_size
        total = self._sum
        for layer, probs, height, width in zip(
            range(len(maps)), maps, self.config.heights, self.config.widths, strict=True
        ):
            batch = probs.shape[0]
            if probs.shape[1] != height * width or probs.shape[2] < self.text_tokens:
                raise ValueError(f"attention map {layer}: shape {probs.shape}, expected (B, {height * width}, >= T)")
            grid = probs[:, :, : self.text_tokens].astype(np.float64).reshape(batch, height, width, -1)
            layer_sum = upsample(grid.transpose(0, 3, 1, 2), h, w)  # (B, T, h, w)
            total = layer_sum if total is None else total + layer_sum
        self._sum = total
        self.calls += 1

    def token_maps(self, height: int, width: int) -> np.ndarray:
        """(B, T, height, width) float64: the sum so far, upsampled; zeros of batch 0 before any call."""
        if self._sum is None:
            return np.zeros((0, self.text_tokens, height, width))
        return upsample(self._sum, height, width)

    def finish(self, prompt: str, tokenizer: WordPieceTokenizer, image_size: tuple[int, int]) -> FindingMaps:
        """Word and finding maps of ``prompt`` (the text the conditional half was encoded from)."""
        tokens = self.token_maps(*image_size)
        scale = 1.0 / max(1, len(self.config.outputs) * self.calls)
        words = [
            _map("word", prompt[start:end], "", ((start, end),), positions, tokens, scale)
            for start, end, positions in tokenizer.words(prompt)
            if re.search(r"\w", prompt[start:end])  # punctuation is no word to show
        ]
        record = parse_prompt(prompt)
        spans: dict[str, list[tuple[int, int]]] = {}
        modifiers = sorted((s.start, s.end) for s in record.spans if s.kind == "modifier")
        for span in record.spans:
            if span.kind == "finding":
                start = span.start
                # "pleural effusion": the parser reads "effusion" as the finding and "pleural" as its
                # modifier; a finding's words include the modifiers just before it
                for m_start, m_end in reversed(modifiers):
                    if m_end <= start and not prompt[m_end:start].strip():
                        start = m_start
                spans.setdefault(span.value, []).append((start, span.end))
        findings = []
        for name, where in spans.items():
            inside = [w for w in words if any(s <= w.spans[0][0] and w.spans[0][1] <= e for s, e in where)]
            positions = tuple(p for w in inside for p in w.tokens)
            if positions:  # a finding whose words were all cut by the token limit has no map
                status = record.findings.get(name, "")
                findings.append(_map("finding", name, status, tuple(where), positions, tokens, scale))
        return FindingMaps(prompt, tuple(words), tuple(findings), len(self.config.outputs), self.calls)


def _map(
    kind: str,
    label: str,
    status: str,
    spans: tuple[tuple[int, int], ...],
    positions: tuple[int, ...],
    tokens: np.ndarray,
    scale: float,
) -> AttentionMap:
    """Sum the token maps at ``positions`` and stretch each image's map from its minimum to its maximum
    onto [0, 1] (a flat map: all 0)."""
    summed = tokens[:, list(positions)].sum(axis=1)  # (B, H, W)
    flat = summed.reshape(summed.shape[0], -1)
    peak = flat.max(axis=1) if summed.size else np.zeros(0)
    low = flat.min(axis=1) if summed.size else np.zeros(0)
    spread = np.where(peak > low, peak - low, 1.0)[:, None, None]
    image = np.clip((summed - low[:, None, None]) / spread, 0.0, 1.0).astype(np.float32)
    return AttentionMap(kind, label, status, spans, positions, tuple(float(p * scale) for p in peak), image)
