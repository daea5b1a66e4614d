"""`cxr-studio` end to end on the tiny pack: outputs, determinism and one-line errors (exit 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.cli.main import main
from engine.pack import load_pack

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("cxr-studio", path=str(Path(sys.executable).parent))
    assert exe, "the cxr-studio command is not installed in this environment"
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_generate_twice_gives_byte_identical_16_bit_png(tiny_pack_dir: Path, tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        done = _cli("generate", "Normal chest radiograph", "--seed", "1", "--steps", "5",
                    "--model", str(tiny_pack_dir), "--out", name, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "seed=1" in done.stdout and "CPUExecutionProvider" in done.stderr
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    image = cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_UNCHANGED)
    assert image.dtype == np.uint16 and image.ndim == 2 and image.shape == (32, 32)
    assert image.std() > 0


def test_eight_bit_batch_and_step_frames(tiny_pack_dir: Path, tmp_path: Path, capsys) -> None:
    code = main(["generate", "Left pleural effusion", "--model", str(tiny_pack_dir), "--steps", "4",
                 "--batch", "2", "--bits", "8", "--sampler", "euler", "--out", str(tmp_path / "x.png"),
                 "--save-steps", str(tmp_path / "steps"), "--quiet"])  # fmt: skip
    assert code == 0
    for i in (0, 1):
        image = cv2.imread(str(tmp_path / f"x_{i:02d}.png"), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint8 and image.shape == (32, 32)
    frames = sorted(p.name for p in (tmp_path / "steps").iterdir())
    assert frames == [f"step_{s:03d}_{i:02d}.png" for s in range(4) for i in (0, 1)]
    assert "seed=0" in capsys.readouterr().out


def test_long_prompt_warns_with_dropped_words(tiny_pack_dir: Path, tmp_path: Path, capsys) -> None:
    prompt = "cardiomegaly " * 30 + "finalword"
    code = main(["generate", prompt, "--model", str(tiny_pack_dir), "--steps", "1", "--quiet",
                 "--out", str(tmp_path / "long.png")])  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: the prompt is longer than the encoder's 16 tokens; dropped:" in err
    assert err.split("dropped:")[1].split("\n")[0].strip().endswith("finalword")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", ""], "the prompt is empty"),
        (["generate", "x", "--steps", "0"], "steps must be a whole number from 1 to 250"),
        (["generate", "x", "--guidance-scale", "99"], "guidance scale must be from 0 to 30"),
        (["generate", "x", "--sampler", "plms"], "choose one of ddim, dpmpp-2m, euler"),
        (["generate", "x", "--batch", "100"], "batch must be from 1 to 16"),
        (["generate", "x", "--out", "x.jpg"], "--out must name a .png or .dcm file"),
        (["generate", "x", "--out", "no/such/dir/x.png"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
    tiny_pack_dir: Path, tmp_path: Path, capsys, monkeypatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main([*args, "--model", str(tiny_pack_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_not_a_pack_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "folder").mkdir()
    code = main(["generate", "Normal", "--model", str(tmp_path / "folder"), "--out", str(tmp_path / "o.png")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "not a model pack: model.json is missing" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


def test_info_prints_the_model_card(tiny_pack_dir: Path, capsys) -> None:
    assert main(["info", "--model", str(tiny_pack_dir)]) == 0
    out = capsys.readouterr().out
    assert "Model:" in out and "Fingerprint:" in out and "not for diagnosis" in out.lower()


def test_export_onnx_command_makes_a_pack_that_generates(tmp_path: Path, capsys) -> None:
    from training.tiny import build_tiny_checkpoint

    checkpoint = build_tiny_checkpoint(tmp_path / "ckpt", seed=3)
    card = tmp_path / "card.json"
    card.write_text('{"training_data": "twelve test images", "example_prompts": ["Normal chest radiograph"]}')
    argv = ["export-onnx", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "pack")]
    assert main([*argv, "--card", str(card)]) == 0
    written = load_pack(tmp_path / "pack").card
    assert written["training_data"] == "twelve test images"
    assert written["example_prompts"] == ["Normal chest radiograph"]
    assert "intended_use" in written and "architecture" in written  # the defaults stay under the given entries
    assert main(["generate", "Normal chest radiograph", "--model", str(tmp_path / "pack"), "--steps", "2",
                 "--quiet", "--out", str(tmp_path / "g.png")]) == 0  # fmt: skip
    assert (tmp_path / "g.png").is_file()
    assert main(["export-onnx", "--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path / "p2")]) == 2
    assert not (tmp_path / "p2").exists()
    card.write_text("[1, 2]")
    assert (
        main(["export-onnx", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "p3"), "--card", str(card)]) == 2
    )
    assert "must be a JSON object" in capsys.readouterr().err and not (tmp_path / "p3").exists()


def test_grid_tiles_prompts_by_seeds_and_each_tile_is_that_seeds_image(tiny_pack_dir: Path, tmp_path: Path) -> None:
    from engine.sheet import FOOTER, GAP, HEADER, LABEL_WIDTH

    prompts = ["Normal chest radiograph", "Left pleural effusion"]
    argv = ["grid", *prompts, "--seeds", "3", "--first-seed", "5", "--steps", "3", "--model", str(tiny_pack_dir)]
    assert main([*argv, "--out", str(tmp_path / "grid.png")]) == 0
    sheet = cv2.imread(str(tmp_path / "grid.png"), cv2.IMREAD_UNCHANGED)
    size = 32
    assert sheet.shape == (HEADER + 2 * (size + GAP) + FOOTER, LABEL_WIDTH + 3 * (size + GAP))
    # the tile in row 2, column 3 is the image `generate` makes for that prompt with seed 7
    assert main(["generate", prompts[1], "--seed", "7", "--steps", "3", "--bits", "8", "--quiet",
                 "--model", str(tiny_pack_dir), "--out", str(tmp_path / "one.png")]) == 0  # fmt: skip
    one = cv2.imread(str(tmp_path / "one.png"), cv2.IMREAD_UNCHANGED)
    top, left = HEADER + (size + GAP), LABEL_WIDTH + 2 * (size + GAP)
    assert np.array_equal(sheet[top : top + size, left : left + size], one)
    assert sheet[:, :LABEL_WIDTH].max() == 255  # the prompts are written beside their rows


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "0"], "--seeds must be from 1 to 16"),
        (["--out", "x.jpg"], "--out must name a .png file"),
        (["--steps", "0"], "steps must be a whole number from 1 to 250, not 0"),  # refused, not the default
        (["--guidance-scale", "nan"], "guidance scale must be from 0 to 30"),
        (["--first-seed", "-1"], "seed must be a whole number from 0"),
    ],
)
def test_grid_bad_input(tiny_pack_dir: Path, tmp_path: Path, capsys, monkeypatch, extra: list[str], message: str):
    monkeypatch.chdir(tmp_path)
    code = main(["grid", "Normal", "--model", str(tiny_pack_dir), "--out", "g.png", *extra])
    assert code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


DEFAULT_PACK = Path(__file__).resolve().parents[2] / "resources" / "models" / "default"


def test_generate_says_what_the_default_model_understood_and_ignores(tmp_path: Path, capsys) -> None:
    code = main(["generate", "RLL consol, no PTX, 45M", "--model", str(DEFAULT_PACK), "--steps", "1",
                 "--out", str(tmp_path / "a.png")])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0 and (tmp_path / "a.png").exists()
    assert "understood: consolidation present (right lower lobe) · pneumothorax absent · 45 years · adult · male" in err
    assert "ignored: lobe 'RLL': this model cannot place findings" in err
    assert "ignored: age '45M' (adult): this model was trained on children only" in err
    assert "understood" not in out  # stdout stays the written paths, for scripts


@pytest.mark.parametrize("prompt", ["4", "asdf"])
def test_generate_warns_when_nothing_is_recognised_and_still_generates(
    tiny_pack_dir: Path, tmp_path: Path, capsys, prompt: str
) -> None:
    code = main(["generate", prompt, "--model", str(tiny_pack_dir), "--steps", "1",
                 "--out", str(tmp_path / "a.png")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0 and (tmp_path / "a.png").exists()
    assert "understood: nothing recognised" in err
    assert f"warning: nothing in the prompt {prompt!r} was recognised" in err
    # --quiet keeps the warning, drops the information
    assert main(["generate", prompt, "--model", str(tiny_pack_dir), "--steps", "1", "--quiet",
                 "--out", str(tmp_path / "b.png")]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "understood:" not in err and f"warning: nothing in the prompt {prompt!r} was recognised" in err


def test_generate_names_a_finding_the_tiny_packs_card_lacks(tiny_pack_copy: Path, tmp_path: Path, capsys) -> None:
    manifest = json.loads((tiny_pack_copy / "model.json").read_text())
    manifest["card"]["supported_findings"] = ["no_finding", "pleural_effusion"]
    (tiny_pack_copy / "model.json").write_text(json.dumps(manifest))
    code = main(["generate", "Left pleural effusion and cardiomegaly", "--model", str(tiny_pack_copy), "--steps", "1",
                 "--out", str(tmp_path / "a.png")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0
    assert "understood: pleural effusion present (left) · cardiomegaly present" in err
    assert "ignored: finding 'cardiomegaly': not in this model" in err
    assert "warning: nothing" not in err


@pytest.mark.parametrize("command", ["generate", "info", "grid", "make-studies"])
def test_every_command_takes_the_one_model_option(command: str, capsys) -> None:
    """--model is defined once (engine.cli.common.add_model_arg), with one help text."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--model PACK model pack folder (default: the embedded default model)" in help_text
