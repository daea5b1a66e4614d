"""Record conditioning in torch: the learned table of record-token embeddings (``engine.conditioning``).

``RecordEmbedding(ids (B, K) int64)`` returns the record context (B, K, D) float32 that goes after
the text context (B, T, D) on the token axis. Row 0 is the null token (padding, and the whole record
when it is dropped for classifier-free guidance): it stays exactly zero, like the text's padded
positions, and gets no gradient. The other rows start small, N(0, 0.02²) (BERT's and GPT-2's
embedding init): the text context leaves a LayerNorm at about unit scale per channel, so a model
fine-tuned from a text-only checkpoint (``--init-from``) starts out nearly where that model was.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engine.conditioning import RecordVocabulary
from engine.findings.record import PromptRecord
from training.models.config import ModelConfig, RecordConfig

INIT_STD = 0.02


class RecordEmbedding(nn.Module):
    """(B, K) token ids -> (B, K, D) context; see the module docstring."""

    def __init__(self, record: RecordConfig, context_dim: int):
        super().__init__()
        self.vocabulary = RecordVocabulary(record.tokens, record.max_tokens)
        self.table = nn.Embedding(len(self.vocabulary), context_dim, padding_idx=0)
        with torch.no_grad():  # drawn from the current torch RNG state (build_model's order)
            self.table.weight.normal_(0.0, INIT_STD)
            self.table.weight[0].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids)

    def ids(self, records: list[PromptRecord]) -> torch.Tensor:
        """(B, K) int64 ids of ``records`` (on the CPU)."""
        return torch.from_numpy(self.vocabulary.batch_ids(records))

    def numpy_table(self) -> np.ndarray:
        """The (V, D) float32 table, as the pack ships it."""
        return self.table.weight.detach().to("cpu", torch.float32).numpy().copy()


def build_record(config: ModelConfig) -> RecordEmbedding | None:
    """The record table of ``config`` (None for a text-only model)."""
    return None if config.record is None else RecordEmbedding(config.record, config.text.context_dim)


__all__ = ["INIT_STD", "RecordEmbedding", "build_record"]
