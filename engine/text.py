"""Tokenizer and text-encoder session: prompt -> (B, T, D) context for the UNet's cross-attention.

The tokenizer is a BERT WordPiece tokenizer built from a ``vocab.txt`` (the ``tokenizers``
library; no transformers), so that training and the engine tokenize identically. Every
sequence is padded to ``max_tokens``: the exported text encoder zeroes the padded positions,
and the UNet was trained on exactly that layout.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import BertWordPieceTokenizer, Encoding

MAX_PROMPT_CHARS = 4000


class PromptError(ValueError):
    """A prompt that cannot be used; the message says what is allowed."""


@dataclass(frozen=True)
class TokenBatch:
    """``input_ids`` and ``attention_mask``: (B, T) int64, T = max_tokens.

    ``dropped[i]`` lists the words of text i cut off by the token limit (empty if none).
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    dropped: tuple[tuple[str, ...], ...]


class WordPieceTokenizer:
    """BERT tokenisation with [CLS] ... [SEP], truncation that reports what it dropped."""

    def __init__(self, vocab_file: str | os.PathLike[str], *, lowercase: bool, max_tokens: int):
        if max_tokens < 3:
            raise ValueError("max_tokens must be at least 3 ([CLS], one token, [SEP])")
        self.max_tokens = max_tokens
        try:
            self._tok = BertWordPieceTokenizer(str(vocab_file), lowercase=lowercase)
        except Exception as exc:  # tokenizers raises TypeError ("sep_token not found") and its own types
            raise ValueError(f"{vocab_file}: not a usable WordPiece vocabulary: {exc}") from None
        self._tok.no_truncation()
        self._tok.no_padding()
        self.pad_id = self._tok.token_to_id("[PAD]")
        if self.pad_id is None:
            raise ValueError(f"{vocab_file}: the vocabulary has no [PAD] token")

    def encode_batch(self, texts: Sequence[str]) -> TokenBatch:
        ids = np.full((len(texts), self.max_tokens), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), self.max_tokens), dtype=np.int64)
        dropped: list[tuple[str, ...]] = []
        for row, text in enumerate(texts):
            enc = self._tok.encode(text)
            token_ids = enc.ids
            lost: tuple[str, ...] = ()
            if len(token_ids) > self.max_tokens:
                keep = self._kept(enc)
                lost = tuple(text[enc.offsets[keep][0] :].split())
                token_ids = [*token_ids[:keep], token_ids[-1]]
            ids[row, : len(token_ids)] = token_ids
            mask[row, : len(token_ids)] = 1
            dropped.append(lost)
        return TokenBatch(input_ids=ids, attention_mask=mask, dropped=tuple(dropped))

    def _kept(self, enc: Encoding) -> int:
        """How many leading tokens of an encoding fit: tokens [0, keep) then [SEP]. The cut is at a
        word boundary: a word whose pieces straddle the limit is dropped whole."""
        if len(enc.ids) <= self.max_tokens:
            return len(enc.ids) - 1
        keep = self.max_tokens - 1
        while keep > 1 and enc.word_ids[keep] is not None and enc.word_ids[keep] == enc.word_ids[keep - 1]:
            keep -= 1
        return keep

    def words(self, text: str) -> list[tuple[int, int, tuple[int, ...]]]:
        """The words of ``text`` that survive the token limit, as (start, end, token positions): characters
        [start, end) of ``text`` and the positions of its WordPiece tokens in the (T,) ``input_ids`` row
        that :meth:`encode_batch` makes of it. Words are the pre-tokenizer's: punctuation is a word."""
        enc = self._tok.encode(text)
        found: dict[int, tuple[int, int, list[int]]] = {}
        for position in range(1, self._kept(enc)):  # 0 is [CLS]
            word = enc.word_ids[position]
            if word is None:
                continue
            start, end = enc.offsets[position]
            first, last, positions = found.setdefault(word, (start, end, []))
            found[word] = (min(first, start), max(last, end), [*positions, position])
        return [(start, end, tuple(positions)) for start, end, positions in found.values()]


def check_prompt(prompt: str, *, allow_empty: bool = False, what: str = "prompt") -> str:
    """Validate a prompt at the boundary: no silent correction beyond stripping outer spaces."""
    if not isinstance(prompt, str):
        raise PromptError(f"the {what} must be text")
    stripped = prompt.strip()
    if not stripped and not allow_empty:
        raise PromptError(f"the {what} is empty: describe the radiograph, e.g. 'Normal chest radiograph'")
    if len(stripped) > MAX_PROMPT_CHARS:
        raise PromptError(f"the {what} has {len(stripped)} characters; at most {MAX_PROMPT_CHARS} are allowed")
    return stripped
