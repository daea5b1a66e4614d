"""Finding maps (engine.attention, Pipeline(..., attention=True), generate --attention) on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.attention import AttentionCollector, AttentionError, resize_matrix, upsample
from engine.cli.main import main
from engine.pack import load_pack
from engine.pipeline import GenerationRequest, Pipeline

STEPS = 3


def _request(prompt: str, **fields) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, num_steps=STEPS, seed=7, **fields)


@pytest.fixture(scope="module")
def pipeline(tiny_attention_pack_dir: Path) -> Pipeline:
    return Pipeline(load_pack(tiny_attention_pack_dir), provider="cpu")


def _word(maps, label: str) -> np.ndarray:
    return next(m for m in maps.words if m.label.lower() == label).image


def _finding(maps, name: str) -> np.ndarray:
    return next(m for m in maps.findings if m.label == name).image


def test_upsampling_is_bilinear_with_half_pixel_centres_like_opencv() -> None:
    grid = np.random.default_rng(0).random((4, 6)).astype(np.float32)
    expected = cv2.resize(grid, (24, 16), interpolation=cv2.INTER_LINEAR)
    assert np.allclose(upsample(grid, 16, 24), expected, atol=1e-5)
    assert np.allclose(resize_matrix(7, 28).sum(axis=1), 1.0)


@pytest.mark.parametrize("guidance", [4.0, 1.0])
def test_maps_leave_the_pixels_bit_identical(pipeline: Pipeline, tiny_pack_dir: Path, guidance: float) -> None:
    request = _request("Left pleural effusion", guidance_scale=guidance, batch_size=2)
    without = pipeline.generate(request)
    with_maps = pipeline.generate(request, attention=True)
    today = Pipeline(load_pack(tiny_pack_dir), provider="cpu").generate(request)  # the same model without maps
    assert without.attention is None and with_maps.attention is not None
    assert np.array_equal(without.images, with_maps.images)
    assert np.array_equal(today.images, with_maps.images)


def test_maps_are_image_sized_finite_in_unit_range_per_word_and_finding(pipeline: Pipeline) -> None:
    # the tiny encoder's 16 tokens end after "no": "pneumothorax" is cut, so it has no map (punctuation none)
    prompt = "Left pleural effusion and cardiomegaly, no pneumothorax"
    maps = pipeline.generate(_request(prompt), attention=True).attention
    assert [m.label for m in maps.words] == ["Left", "pleural", "effusion", "and", "cardiomegaly", "no"]
    found = [(m.label, m.status) for m in maps.findings]
    assert found == [("pleural_effusion", "present"), ("cardiomegaly", "present")]
    assert maps.calls == STEPS and maps.layers == len(pipeline.manifest.attention.outputs)
    for m in (*maps.words, *maps.findings):
        assert m.image.shape == (1, 32, 32) and m.image.dtype == np.float32
        assert np.all(np.isfinite(m.image)) and m.image.min() == 0.0 and m.image.max() == 1.0
        assert 0.0 < m.peak[0] <= 1.0  # a mean attention probability
    # "pleural effusion" is the finding; its map is the sum of its words' token maps (3 + 3 WordPieces)
    effusion = next(m for m in maps.findings if m.label == "pleural_effusion")
    assert effusion.tokens == (*maps.words[1].tokens, *maps.words[2].tokens)


def test_token_maps_add_up_to_one_per_layer_and_step(pipeline: Pipeline) -> None:
    """Softmax rows sum to 1 over the tokens, and bilinear upsampling keeps constants: summed over all
    tokens, the aggregate is layers x steps at every pixel, so nothing was lost or counted twice."""
    config = pipeline.manifest.attention
    collector = AttentionCollector(config, (8, 8), pipeline.manifest.text.max_tokens)
    model_fn = pipeline.guided_model_fn(*[pipeline.encode(["Right effusion"])[0]] * 2, 4.0, attention=collector.add)
    noise, _ = pipeline.initial_noise([0])
    model_fn(noise, np.array([500.0], np.float32))
    model_fn(noise, np.array([100.0], np.float32))
    total = collector.token_maps(32, 32).sum(axis=1)
    assert np.allclose(total, 2 * len(config.outputs), atol=1e-4)


def test_a_words_map_changes_when_the_word_does(pipeline: Pipeline) -> None:
    left = pipeline.generate(_request("left pleural effusion"), attention=True).attention
    right = pipeline.generate(_request("right pleural effusion"), attention=True).attention
    assert not np.allclose(_word(left, "left"), _word(right, "right"), atol=1e-3)
    cardiomegaly = pipeline.generate(_request("left cardiomegaly"), attention=True).attention
    pneumothorax = pipeline.generate(_request("left pneumothorax"), attention=True).attention
    assert not np.allclose(_finding(cardiomegaly, "cardiomegaly"), _finding(pneumothorax, "pneumothorax"), atol=1e-3)
    again = pipeline.generate(_request("left cardiomegaly"), attention=True).attention
    assert np.array_equal(_finding(cardiomegaly, "cardiomegaly"), _finding(again, "cardiomegaly"))


def test_a_pack_without_maps_is_refused_before_any_step(tiny_pack_dir: Path) -> None:
    pipeline = Pipeline(load_pack(tiny_pack_dir), provider="cpu")
    with pytest.raises(AttentionError, match=r"without attention maps.*--attention-maps") as error:
        next(pipeline.iter_steps(_request("Left pleural effusion"), attention=True))
    assert str(tiny_pack_dir) in str(error.value)


# --------------------------------------------------------------------------- cxr-studio generate --attention


def test_generate_writes_a_16_bit_png_per_finding_and_word_and_a_json(
    tiny_attention_pack_dir: Path, tmp_path: Path, capsys
) -> None:
    maps_dir = tmp_path / "maps"
    code = main(["generate", "Right pleural effusion", "--model", str(tiny_attention_pack_dir), "--steps", "2",
                 "--quiet", "--out", str(tmp_path / "cxr.png"), "--attention", str(maps_dir)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    document = json.loads((maps_dir / "attention.json").read_text(encoding="utf-8"))
    assert document["prompt"] == "Right pleural effusion" and document["steps"] == 2
    entries = document["maps"]
    assert [(e["kind"], e["label"]) for e in entries] == [
        ("finding", "pleural_effusion"), ("word", "Right"), ("word", "pleural"), ("word", "effusion"),
    ]  # fmt: skip
    assert sorted(p.name for p in maps_dir.iterdir()) == sorted(["attention.json", *(e["file"] for e in entries)])
    for entry in entries:
        image = cv2.imread(str(maps_dir / entry["file"]), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint16 and image.shape == (32, 32) and image.min() == 0 and image.max() == 65535
        assert entry["image"] == "cxr.png" and entry["tokens"] and 0 < entry["max"] <= 1
    assert entries[0]["tokens"] == entries[2]["tokens"] + entries[3]["tokens"]


def test_generate_attention_on_a_pack_without_maps_is_one_line_exit_2_nothing_written(
    tiny_pack_dir: Path, tmp_path: Path, capsys
) -> None:
    code = main(["generate", "Right pleural effusion", "--model", str(tiny_pack_dir), "--steps", "2", "--quiet",
                 "--out", str(tmp_path / "cxr.png"), "--attention", str(tmp_path / "maps")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and str(tiny_pack_dir) in err and "--attention-maps" in err
    assert list(tmp_path.iterdir()) == [] or sorted(p.name for p in tmp_path.iterdir()) == ["pacs_nodes.json"]


def test_generate_attention_into_a_folder_in_use_is_refused(tiny_attention_pack_dir: Path, tmp_path: Path, capsys):
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "old.png").write_bytes(b"x")
    code = main(["generate", "Normal", "--model", str(tiny_attention_pack_dir), "--quiet",
                 "--out", str(tmp_path / "cxr.png"), "--attention", str(tmp_path / "maps")])  # fmt: skip
    assert code == 2 and "--attention" in capsys.readouterr().err
    assert not (tmp_path / "cxr.png").exists()
