"""Record tokens in training: a tiny model fine-tuned a few steps with them (from a text-only
checkpoint), exported, rebuilt from its pack and run by the engine."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from safetensors.torch import load_file

from engine.conditioning import EMBEDDINGS_FILE, full_vocabulary
from engine.findings.record import AGE_BANDS
from engine.pack import MANIFEST, load_pack, sha256_file
from engine.pipeline import GenerationRequest, Pipeline
from training.checkpoint import RECORD_FILE, load_config
from training.options import TrainingError
from training.train_diffusion import DiffusionOptions, train_diffusion

LABELS = [
    ("Normal chest radiograph", {"no_finding": "present", "pneumothorax": "absent"}, 5, "F"),
    ("Left pneumothorax", {"pneumothorax": "present", "no_finding": "absent"}, 40, "M"),
    ("Right lower lobe pneumonia", {"pneumonia": "present", "no_finding": "absent"}, 3, None),
]


@pytest.fixture(scope="module")
def labelled_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 synthetic 32 px 'radiographs' with findings, ages and sexes in their manifest lines."""
    folder = tmp_path_factory.mktemp("labelled")
    (folder / "images").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(12):
        image = np.full((32, 32), 30, np.uint8)
        cv2.circle(image, (10 + i % 3 * 5, 16), 6, 200, -1)
        image = np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / "images" / f"{i:02d}.png"), image)
        text, findings, age, sex = LABELS[i % 3]
        line = {"image": f"images/{i:02d}.png", "text": text, "findings": findings, "patient_id": f"P{i}",
                "view": "AP" if i % 2 else "PA", "split": "val" if i % 4 == 0 else "train", "source": "csv",
                "age": age}  # fmt: skip
        lines.append(json.dumps({**line, **({"sex": sex} if sex else {})}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "manifest.jsonl"


@pytest.fixture(scope="module")
def record_run(labelled_data: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 steps from the text-only tiny checkpoint (--init-from: its table is new), exported."""
    out = tmp_path_factory.mktemp("runs")
    options = DiffusionOptions(
        data=str(labelled_data), out=str(out / "run"), init_from=str(tiny_checkpoint), steps=4, batch_size=4,
        checkpoint_every=2, log_every=1, sample_every=4, sample_steps=2, quiet=True, workers=1, lr=1e-3,
        export=str(out / "pack"),
    )  # fmt: skip
    assert options.record_tokens  # on by default for new runs
    result = train_diffusion(options)
    assert result.finished
    return out


def test_training_with_record_tokens_exports_a_pack_the_engine_runs(record_run: Path, tiny_checkpoint: Path) -> None:
    # the checkpoint: config.record and a trained table (null row still zero), the UNet fine-tuned
    checkpoint = record_run / "run" / "checkpoint"
    config = load_config(checkpoint)
    assert config.record is not None and config.record.tokens == full_vocabulary()
    assert load_config(tiny_checkpoint).record is None and not (tiny_checkpoint / RECORD_FILE).exists()
    table = load_file(checkpoint / RECORD_FILE)["table.weight"]
    assert table.shape == (len(full_vocabulary()), config.text.context_dim)
    assert not table[0].any() and 0 < float(table[1:].std()) < 0.1  # small init (0.02), a few steps
    # the pack: the table and its tokens, and the engine generates with them
    pack = load_pack(record_run / "pack")
    assert pack.manifest.conditioning is not None and pack.manifest.conditioning.tokens == full_vocabulary()
    np.testing.assert_array_equal(np.load(record_run / "pack" / EMBEDDINGS_FILE), table.numpy())
    pipe = Pipeline(pack, provider="cpu")
    t = pack.manifest.text.max_tokens
    # changing the record changes the record tokens of the context and the image
    contexts = {p: pipe.encode([p])[0] for p in ("pneumothorax", "no pneumothorax", "child", "adult")}
    assert contexts["pneumothorax"].shape == (1, t + config.record.max_tokens, config.text.context_dim)
    assert not np.allclose(contexts["pneumothorax"][:, t:], contexts["no pneumothorax"][:, t:])
    assert not np.allclose(contexts["child"][:, t:], contexts["adult"][:, t:])
    images = {
        p: pipe.generate(GenerationRequest(prompt=p, num_steps=3, seed=1)).images
        for p in ("pneumothorax", "no pneumothorax")
    }
    assert images["pneumothorax"].shape == (1, 32, 32) and np.isfinite(images["pneumothorax"]).all()
    assert not np.array_equal(images["pneumothorax"], images["no pneumothorax"])


def test_record_pack_round_trips_through_a_checkpoint(record_run: Path, tmp_path: Path) -> None:
    """export -> checkpoint-from-pack -> export: the same table, tokens and files."""
    from training.export_onnx import export_pack
    from training.from_pack import checkpoint_from_pack
    from training.loop import absolute_encoder

    checkpoint = record_run / "run" / "checkpoint"
    pack = record_run / "pack"
    rebuilt = checkpoint_from_pack(pack, tmp_path / "ckpt", absolute_encoder(load_config(checkpoint), checkpoint))
    assert load_config(rebuilt).record == load_config(checkpoint).record
    x, y = load_file(checkpoint / RECORD_FILE), load_file(rebuilt / RECORD_FILE)
    assert x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x)
    again = export_pack(rebuilt, tmp_path / "again", model_id=load_pack(pack).model_id,
                        card=load_pack(pack).card)  # fmt: skip
    for name in ("unet.onnx", EMBEDDINGS_FILE, "vocab.txt"):
        assert sha256_file(again / name) == sha256_file(pack / name), name
    first, second = (json.loads((p / MANIFEST).read_text()) for p in (pack, again))
    assert first["conditioning"] == second["conditioning"]


def test_no_record_tokens_keeps_a_text_only_model_and_refuses_to_drop_a_table(
    labelled_data: Path, record_run: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    common = {"data": str(labelled_data), "steps": 1, "batch_size": 4, "quiet": True, "workers": 1}
    train_diffusion(DiffusionOptions(**common, out=str(tmp_path / "a"), init_from=str(tiny_checkpoint),
                                     record_tokens=False))  # fmt: skip
    assert load_config(tmp_path / "a" / "checkpoint").record is None
    assert not (tmp_path / "a" / "checkpoint" / RECORD_FILE).exists()
    with pytest.raises(TrainingError, match="--no-record-tokens"):
        train_diffusion(DiffusionOptions(**common, out=str(tmp_path / "b"), init_from=str(record_run / "run"),
                                         record_tokens=False))  # fmt: skip
    assert not (tmp_path / "b").exists()


def test_new_runs_use_record_tokens_and_runs_from_before_resume_without(tmp_path: Path) -> None:
    import argparse

    from training import train_cli
    from training.run_folder import FORMAT_VERSION, RUN_FORMAT

    parser = argparse.ArgumentParser()
    train_cli.register_train(parser.add_subparsers(dest="command"))
    new = ["train", "diffusion", "--out", str(tmp_path / "new"), "--data", "m", "--vae", "v"]
    assert train_cli.options_from_args(parser.parse_args(new), DiffusionOptions).record_tokens is True
    off = parser.parse_args([*new, "--no-record-tokens"])
    assert train_cli.options_from_args(off, DiffusionOptions).record_tokens is False
    old = DiffusionOptions(data="m.jsonl", out=str(tmp_path / "old"), vae="vae").to_json()
    del old["record_tokens"]
    (tmp_path / "old").mkdir()
    run = {"format": RUN_FORMAT, "format_version": FORMAT_VERSION, "kind": "diffusion", "options": old}
    (tmp_path / "old" / "run.json").write_text(json.dumps(run), encoding="utf-8")
    args = parser.parse_args(["train", "diffusion", "--out", str(tmp_path / "old"), "--resume"])
    assert train_cli.options_from_args(args, DiffusionOptions).record_tokens is False


def test_a_record_token_pack_card_says_what_it_conditions_on(record_run: Path) -> None:
    """The card of a record-token pack names sex and age as conditioned, the age bands and views of its
    training split; before, `generate` said "this model does not condition on sex" for such a pack."""
    from engine.findings.understood import understand

    card = load_pack(record_run / "pack").card
    assert card["conditioning"] == ["age", "sex"]  # no "place": no label gives a side, so side tokens never train
    assert set(card["age_bands"]) <= set(AGE_BANDS) and card["age_bands"]
    assert set(card["views"]) == {"PA", "AP", "supine AP"}
    reasons = [item.reason for item in understand("45 yo woman, PA chest radiograph: pneumothorax", card).ignored]
    assert not any("sex" in why for why in reasons), reasons
