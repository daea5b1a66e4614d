"""The finding check (issue 18 item 2): engine.checker on the tiny pack with tiny checkers, `generate --check`,
`make-studies --check-min`, and the evaluation classifier exported into a pack (training.checker_export)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pydicom
import pytest

from engine.checker import RETRY_STRIDE, Checker, generate_checked, resize, retry_seed
from engine.cli.main import main
from engine.pack import load_pack
from engine.pipeline import GenerationRequest, Pipeline

# bias over (bacterial_pneumonia, normal, viral_pneumonia): a checker that always sees ...
SEES_PNEUMONIA = (4.0, -4.0, 0.0)  # bacterial 0.98, viral 0.018, normal 0.0003
SEES_NORMAL = (-4.0, 4.0, -4.0)


def test_resize_averages_like_torch_area_interpolation() -> None:
    import torch
    import torch.nn.functional as F

    images = np.random.default_rng(0).random((2, 224, 224)).astype(np.float32)
    want = F.interpolate(torch.from_numpy(images)[:, None], size=(128, 128), mode="area")[:, 0].numpy()
    np.testing.assert_allclose(resize(images, 128), want, atol=1e-5)
    assert resize(images[:, :8, :8], 16).shape == (2, 16, 16)  # enlarging: bilinear


def test_scores_have_one_row_per_image_and_lie_in_zero_to_one(tiny_checker_pack) -> None:
    checker = Checker(load_pack(tiny_checker_pack((0.0, 0.0, 0.0), weight=(3.0, -3.0, 0.0))))
    images = np.stack([np.zeros((32, 32)), np.full((32, 32), 0.5), np.ones((32, 32))]).astype(np.float32)
    probabilities = checker.probabilities(images)
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    scores = checker.scores(images)
    assert [sorted(s) for s in scores] == [["bacterial_pneumonia", "no_finding", "pneumonia", "viral_pneumonia"]] * 3
    for row, s in zip(probabilities, scores, strict=True):
        assert all(0.0 <= v <= 1.0 for v in s.values())
        assert s["pneumonia"] == pytest.approx(row[0] + row[2], abs=1e-6)
        assert s["no_finding"] == pytest.approx(row[1], abs=1e-6)
    # the images differ, so do the scores: a dark image (input -1) more normal, a bright one more bacterial
    assert scores[0]["no_finding"] > scores[1]["no_finding"] > scores[2]["no_finding"]


def test_verdicts_for_present_absent_and_normal_prompts(tiny_checker_pack) -> None:
    pneumonia = Checker(load_pack(tiny_checker_pack(SEES_PNEUMONIA, name="p")))
    normal = Checker(load_pack(tiny_checker_pack(SEES_NORMAL, name="n")))
    image = np.full((1, 32, 32), 0.5, np.float32)
    assert pneumonia.check("pneumonia", image)[0].ok
    assert not normal.check("pneumonia", image)[0].ok
    assert normal.check("normal chest radiograph", image)[0].ok
    assert not pneumonia.check("normal chest radiograph", image)[0].ok
    assert normal.check("no pneumonia", image)[0].ok
    assert not pneumonia.check("no pneumonia", image)[0].ok
    check = pneumonia.check("possible pneumonia", image)[0]  # uncertain: shown, not judged
    assert check.ok and check.agreement is None and check.line().endswith("· not checked")
    assert pneumonia.check("chest radiograph", image)[0].line().startswith("asked: nothing the checker scores")
    line = normal.check("pneumonia", image)[0].line()
    assert line == (
        "asked: pneumonia · the checker sees: normal 1.00, pneumonia 0.00 · LOW: pneumonia 0.00; HIGH: normal 1.00"
    )  # 'pneumonia' reads as 'not normal' too: a normal-looking image is marked both ways
    assert pneumonia.check("no pneumonia", image)[0].line().endswith("HIGH: pneumonia 1.00")


def _generate(pack: Path, out: Path, *extra: str) -> int:
    return main(["generate", "pneumonia", "--model", str(pack), "--steps", "2", "--out", str(out), "--quiet", *extra])


def test_generate_check_prints_one_line_per_image(tiny_checker_pack, tmp_path: Path, capsys) -> None:
    assert _generate(tiny_checker_pack(SEES_PNEUMONIA, name="p"), tmp_path / "a.png", "--check", "--batch", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == lines[3] == "asked: pneumonia · the checker sees: pneumonia 1.00, normal 0.00 · ok"
    assert lines[0].endswith("seed=0") and lines[2].endswith("seed=1")
    assert _generate(tiny_checker_pack(SEES_NORMAL, name="n"), tmp_path / "b.png", "--check") == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("· LOW: pneumonia 0.00; HIGH: normal 1.00")


def test_a_pack_without_a_checker_is_one_line_and_exit_2(tiny_pack_dir: Path, tmp_path: Path, capsys) -> None:
    assert _generate(tiny_pack_dir, tmp_path / "a.png", "--check") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--check" in err and "no finding checker" in err
    assert not (tmp_path / "a.png").exists()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("pneumonia\n")
    args = ["make-studies", "--count", "1", "--prompts", str(prompts), "--out", str(tmp_path / "s"), "--steps", "1"]
    assert main([*args, "--model", str(tiny_pack_dir), "--check-min", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--check-min" in err and "no finding checker" in err
    assert not (tmp_path / "s").exists()
    assert main([*args, "--model", str(tiny_pack_dir), "--check-min", "1.5"]) == 2
    assert "--check-min must be between 0 and 1" in capsys.readouterr().err


def test_retries_use_the_documented_next_seeds_and_stop_at_the_limit(tiny_checker_pack) -> None:
    pack = load_pack(tiny_checker_pack(SEES_NORMAL))
    request = GenerationRequest("pneumonia", num_steps=1, seed=1000, batch_size=2).validated()
    tried: list[tuple[int, int]] = []
    result, outcomes = generate_checked(
        Pipeline(pack), Checker(pack), request, 0.5, 3, on_try=lambda i, s: tried.append((i, s))
    )
    assert [o.seeds for o in outcomes] == [(1000, 1016, 1032), (1001, 1017, 1033)]
    assert tried == [(0, 1016), (0, 1032), (1, 1017), (1, 1033)]
    assert retry_seed(1000, 2) == 1000 + 2 * RETRY_STRIDE
    assert not any(o.passed for o in outcomes) and result.seeds == [1000, 1001]  # all equal: the first kept
    assert "none of 3 tries reached 0.5; kept the best" in outcomes[0].line(0.5)


def test_make_studies_check_min_retries_to_the_limit_or_stops_at_one_try(
    tiny_checker_pack, tmp_path: Path, capsys
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("pneumonia\n")

    def run(pack: Path, out: str) -> list[str]:
        code = main(["make-studies", "--count", "2", "--prompts", str(prompts), "--out", str(tmp_path / out),
                     "--steps", "1", "--seed", "7", "--model", str(pack), "--check-min", "0.6",
                     "--check-tries", "4"])  # fmt: skip
        assert code == 0
        return [line for line in capsys.readouterr().out.splitlines() if line.startswith("study ")]

    low = run(tiny_checker_pack(SEES_NORMAL, name="n"), "low")
    assert low == [
        "study 1 image 1: seed 7: none of 4 tries reached 0.6; kept the best (0.00): asked: pneumonia · "
        "the checker sees: normal 1.00, pneumonia 0.00 · LOW: pneumonia 0.00; HIGH: normal 1.00",
        "study 2 image 1: seed 1007: none of 4 tries reached 0.6; kept the best (0.00): asked: pneumonia · "
        "the checker sees: normal 1.00, pneumonia 0.00 · LOW: pneumonia 0.00; HIGH: normal 1.00",
    ]
    high = run(tiny_checker_pack(SEES_PNEUMONIA, name="p"), "high")
    assert [line.split(":")[1] for line in high] == [" seed 7 (try 1 of 1)", " seed 1007 (try 1 of 1)"]
    seeds = sorted(int(ds.ImageComments.split("seed ")[1].split()[0].strip(",;"))
                   for ds in map(pydicom.dcmread, (tmp_path / "high").rglob("*.dcm")))  # fmt: skip
    assert seeds == [7, 1007]


def test_adding_a_checker_changes_neither_pixels_nor_fingerprint(tiny_pack_dir: Path, tiny_checker_pack) -> None:
    request = GenerationRequest("pneumonia", num_steps=2, seed=3).validated()
    plain, checked = load_pack(tiny_pack_dir), load_pack(tiny_checker_pack(SEES_PNEUMONIA))
    assert checked.fingerprint == plain.fingerprint and checked.checker_fingerprint is not None
    assert "checker.onnx" in checked.manifest.files  # still verified like every other file
    before, after = Pipeline(plain).generate(request), Pipeline(checked).generate(request)
    assert np.array_equal(before.images, after.images)
    assert after.model_fingerprint == before.model_fingerprint


def test_the_evaluation_classifier_exports_into_a_pack_and_scores_as_in_torch(tiny_pack_copy: Path, tmp_path) -> None:
    import torch

    from training.checker_export import register_add_checker
    from training.evaluate.classifier import ChestClassifier, ClassifierConfig, save_classifier, to_input

    config = ClassifierConfig(("bacterial_pneumonia", "normal", "viral_pneumonia"), 32, (4, 4, 4, 4), 4)
    torch.manual_seed(0)
    model = ChestClassifier(config).eval()
    save_classifier(model, tmp_path / "classifier", {"trained": "random (a test)"})
    fingerprint = load_pack(tiny_pack_copy).fingerprint
    parser = argparse.ArgumentParser()
    register_add_checker(parser.add_subparsers())
    args = parser.parse_args(["add-checker", str(tiny_pack_copy), "--classifier", str(tmp_path / "classifier")])
    assert args.func(args) == 0
    pack = load_pack(tiny_pack_copy)
    assert pack.fingerprint == fingerprint and pack.manifest.checker.classes == config.classes
    images = np.random.default_rng(1).random((2, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = torch.softmax(model(to_input(images, 32)), dim=1).numpy()
    np.testing.assert_allclose(Checker(pack).probabilities(images), want, atol=1e-5)
    bad = parser.parse_args(["add-checker", str(tiny_pack_copy), "--classifier", str(tmp_path / "nothing")])
    assert bad.func(bad) == 2


def test_the_card_states_the_checker_and_bad_tries_are_refused(tiny_checker_pack, tmp_path: Path, capsys) -> None:
    from engine.pack import card_text

    pack = load_pack(tiny_checker_pack(SEES_PNEUMONIA))
    assert "Finding checker: bacterial_pneumonia, normal, viral_pneumonia; accuracy not measured" in card_text(
        pack.manifest, pack.root
    )
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("pneumonia\n")
    code = main(["make-studies", "--count", "1", "--prompts", str(prompts), "--out", str(tmp_path / "s"),
                 "--model", str(pack.root), "--check-min", "0.5", "--check-tries", "0"])  # fmt: skip
    assert code == 2 and "--check-tries must be from 1 to 60, not 0" in capsys.readouterr().err


def test_the_default_pack_ships_a_checker_measured_on_real_held_out_films() -> None:
    from engine.pack import card_text
    from engine.paths import default_model_dir

    pack = load_pack(default_model_dir())
    checker = pack.manifest.checker
    assert checker is not None and checker.accuracy_n >= 500 and 0.5 < checker.accuracy <= 1
    assert "real held-out films" in card_text(pack.manifest, pack.root)
    assert (pack.root / checker.file).stat().st_size < 150 * 2**20
    scores = Checker(pack).scores(np.full((1, 224, 224), 0.5, np.float32))[0]
    assert set(scores) == {"no_finding", "pneumonia", "bacterial_pneumonia", "viral_pneumonia"}
