"""export_pack(attention_maps=True): the UNet's extra head-mean cross-attention outputs and model.json's section."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from engine.pack import AttentionConfig, PackError, load_pack, manifest_from_json
from engine.pipeline import GenerationRequest, Pipeline
from training.export_onnx import ExportError, add_attention_maps


def _run(pack: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(pack / "unet.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def test_the_unet_gains_one_head_mean_map_per_cross_attention_layer_and_its_output_is_unchanged(
    tiny_pack_dir: Path, tiny_attention_pack_dir: Path
) -> None:
    plain, maps = load_pack(tiny_pack_dir).manifest, load_pack(tiny_attention_pack_dir).manifest
    assert plain.attention is None and "attention" not in json.loads((tiny_pack_dir / "model.json").read_text())
    # tiny UNet: cross-attention in both levels (8x8 and 4x4 of the 8x8 latent): 2 down, 1 mid, 4 up (3 + 1)
    assert maps.attention == AttentionConfig(
        outputs=tuple(f"attention_{i}" for i in range(7)), heights=(8, 4, 4, 4, 4, 8, 8), widths=(8, 4, 4, 4, 4, 8, 8)
    )
    rng = np.random.default_rng(0)
    feeds = {
        "sample": rng.standard_normal((3, 4, 8, 8), dtype=np.float32),
        "timestep": np.array([999.0, 500.0, 1.0], np.float32),
        "context": rng.standard_normal((3, 16, 32), dtype=np.float32),
    }
    before, after = _run(tiny_pack_dir, feeds), _run(tiny_attention_pack_dir, feeds)
    assert list(before) == ["model_output"] and list(after) == ["model_output", *maps.attention.outputs]
    assert np.array_equal(before["model_output"], after["model_output"])
    for name, h, w in zip(maps.attention.outputs, maps.attention.heights, maps.attention.widths, strict=True):
        probs = after[name]
        assert probs.shape == (3, h * w, 16) and probs.min() >= 0
        assert np.allclose(probs.sum(axis=-1), 1.0, atol=1e-5)  # a mean of softmax rows is a softmax row


@pytest.mark.parametrize(
    "attention",
    [
        {"outputs": ["a", "b"], "heights": [8], "widths": [8]},
        {"outputs": ["a", "a"], "heights": [8, 8], "widths": [8, 8]},
        {"outputs": ["a"], "heights": [0], "widths": [8]},
        {"outputs": ["a"], "heights": [8.5], "widths": [8]},
        {"outputs": ["a"], "heights": [8]},
    ],
)
def test_a_bad_attention_section_is_refused(tiny_attention_pack_dir: Path, attention: dict) -> None:
    data = json.loads((tiny_attention_pack_dir / "model.json").read_text(encoding="utf-8"))
    assert manifest_from_json(data).attention is not None
    with pytest.raises(PackError, match="attention"):
        manifest_from_json({**data, "attention": attention})


def test_the_attention_section_round_trips_through_model_json(tiny_attention_pack_dir: Path) -> None:
    manifest = load_pack(tiny_attention_pack_dir).manifest
    again = manifest_from_json(json.loads(json.dumps(manifest.to_json())))
    assert again == manifest and replace(manifest, attention=None).to_json().get("attention", "absent") == "absent"


def test_a_shipped_pack_gains_maps_without_torch_and_keeps_its_pixels(
    tiny_pack_dir: Path, tiny_attention_pack_dir: Path, tmp_path: Path
) -> None:
    """add_attention_maps taps the shipped UNet's own Softmax nodes: the same section as an export with
    maps, every other file byte-identical, the same pixels; a pack that has maps is refused."""
    out = add_attention_maps(tiny_pack_dir, tmp_path / "with-maps")
    before, after = load_pack(tiny_pack_dir), load_pack(out)
    assert after.manifest.attention == load_pack(tiny_attention_pack_dir).manifest.attention
    assert {n: e for n, e in after.manifest.files.items() if n != "unet.onnx"} == {
        n: e for n, e in before.manifest.files.items() if n != "unet.onnx"
    }
    request = GenerationRequest(prompt="Right pleural effusion", num_steps=3, seed=3)
    plain = Pipeline(before, provider="cpu").generate(request)
    mapped = Pipeline(after, provider="cpu").generate(request, attention=True)
    assert np.array_equal(plain.images, mapped.images) and mapped.attention.findings
    with pytest.raises(ExportError, match="already has attention maps"):
        add_attention_maps(out, tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_a_record_token_pack_maps_the_text_tokens_only(tiny_record_pack_dir: Path, tmp_path: Path) -> None:
    """The UNet of a pack with record tokens attends over T text + K record tokens: the maps keep the
    text's T (its words and findings), the pixels stay those of the pack without maps."""
    pack = load_pack(add_attention_maps(tiny_record_pack_dir, tmp_path / "record-maps"))
    pipeline = Pipeline(pack, provider="cpu")
    request = GenerationRequest(prompt="Left pleural effusion", num_steps=2, seed=1)
    result = pipeline.generate(request, attention=True)
    plain = Pipeline(load_pack(tiny_record_pack_dir), provider="cpu").generate(request)
    assert np.array_equal(result.images, plain.images)
    maps = result.attention
    assert [m.label for m in maps.words] == ["Left", "pleural", "effusion"]
    assert all(np.all(np.isfinite(m.image)) and m.image.shape == (1, 32, 32) for m in maps.words)
    assert [m.label for m in maps.findings] == ["pleural_effusion"]
