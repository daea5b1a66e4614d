"""``cxr-studio evaluate``: the metrics against hand-computed values, and the whole command on the tiny
pack and the 12 committed paediatric fixture images (a tiny configuration of every section)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.cli.main import main
from engine.manifest import ManifestRecord, read_manifest, write_manifest
from engine.pack import load_pack
from engine.pipeline import GenerationRequest, Pipeline
from engine.runtime import OrtBackend
from tests.conftest import REPO
from training.data.importers.run import run_import
from training.evaluate import metrics as M
from training.evaluate.data import (
    allocate,
    choose_prompts,
    class_of,
    load_real_images,
    plan_images,
    read_real_data,
)
from training.evaluate.inception import FIDInception, inception_features, load_inception
from training.evaluate.options import SECTIONS, EvaluationError, EvaluationOptions

THREADS_AT_IMPORT = torch.get_num_threads()  # before any evaluation run in this process

# every section, as small as it gets: a few seconds on the tiny pack
TINY_ARGS = [
    "--quick", "--num-images", "18", "--sweep-images", "6", "--steps", "4", "--steps-list", "2,4",
    "--bootstrap", "100", "--classifier-epochs", "4", "--classifier-size", "32", "--threads", "1",
    "--provider", "cpu", "--device", "cpu",
]  # fmt: skip


# --------------------------------------------------------------------------- metrics, by hand


def test_contrast_ratio_by_hand() -> None:
    constant = np.full((1, 10, 10), 0.4)
    two_levels = np.full((1, 10, 10), 0.2)
    two_levels[0, 5:] = 0.6  # p1 = 0.2, p99 = 0.6 -> 0.4 / 0.8
    black = np.zeros((1, 10, 10))
    np.testing.assert_allclose(M.contrast_ratio(np.concatenate([constant, two_levels, black])), [0.0, 0.5, 0.0])


def test_laplacian_variance_by_hand() -> None:
    checker = (np.indices((8, 8)).sum(axis=0) % 2).astype(np.float32)[None]  # Laplacian +-4 everywhere inside
    ramp = np.tile(np.linspace(0, 1, 8), (8, 1))[None]  # linear: Laplacian 0
    np.testing.assert_allclose(M.laplacian_variance(np.concatenate([checker, ramp])), [16.0, 0.0], atol=1e-6)


def test_entropy_by_hand() -> None:
    constant = np.full((1, 16, 16), 0.3)
    halves = np.zeros((1, 16, 16))
    halves[0, 8:] = 1.0  # two equally likely levels: 1 bit
    uniform = ((np.arange(256) + 0.5) / 256).reshape(1, 16, 16)  # every bin once: 8 bits
    np.testing.assert_allclose(M.entropy(np.concatenate([constant, halves, uniform])), [0.0, 1.0, 8.0], atol=1e-12)


def test_frechet_distance_by_hand() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 3.0])
    assert M.frechet_distance_features(a, a) == pytest.approx(0.0, abs=1e-9)
    # same covariance, shifted mean: the squared shift
    assert M.frechet_distance_features(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-9)
    # 1-D Gaussians: (m1 - m2)^2 + (s1 - s2)^2
    assert M.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == pytest.approx(
        4.0 + 1.0
    )
    # commuting covariances in a rotated basis: sum (sqrt(a_i) - sqrt(b_i))^2
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    s1, s2 = q @ np.diag([1.0, 4.0, 9.0]) @ q.T, q @ np.diag([4.0, 4.0, 1.0]) @ q.T
    assert M.frechet_distance(np.zeros(3), s1, np.zeros(3), s2) == pytest.approx(1.0 + 0.0 + 4.0, rel=1e-9)
    # fewer samples than dimensions: the sample-space route gives the covariance route's value
    few_a, few_b = rng.normal(size=(5, 20)), rng.normal(1.0, 2.0, size=(7, 20))
    by_covariance = M.frechet_distance(*M.gaussian_stats(few_a), *M.gaussian_stats(few_b))
    assert M.frechet_distance_features(few_a, few_b) == pytest.approx(by_covariance, rel=1e-6)
    assert M.frechet_distance_features(few_a, few_a) == pytest.approx(0.0, abs=1e-9)


def test_patch_distance_by_hand() -> None:
    a = np.random.default_rng(1).random((1, 16, 16))
    np.testing.assert_array_equal(M.patch_distance(a, a), [0.0])
    np.testing.assert_allclose(M.patch_distance(a * 0.5, a * 0.5 + 0.1), [0.1], rtol=1e-5)  # a uniform shift
    one_tile = np.zeros((1, 16, 16))
    one_tile[0, 4:8, 8:12] = 1.0  # one whole 4x4 tile changed: the maximum is that tile's RMS
    np.testing.assert_allclose(M.patch_distance(np.zeros((1, 16, 16)), one_tile), [1.0])
    one_pixel = np.zeros((1, 16, 16))
    one_pixel[0, 0, 0] = 1.0  # sqrt(1 / 16 pixels of the tile)
    np.testing.assert_allclose(M.patch_distance(np.zeros((1, 16, 16)), one_pixel), [0.25])
    odd = np.zeros((2, 18, 19))  # sizes that 4 does not divide
    assert M.patch_distance(odd, odd + 0.2).tolist() == pytest.approx([0.2, 0.2])


def test_the_calibrated_copy_ratio_tells_a_copy_from_a_washed_out_image() -> None:
    """A copy of one training film is far closer to it than to its neighbours (ratio near 0); a flat grey
    image among low-contrast films is "near" all of them by the raw patch distance (which flags it) but
    no closer to one than to the rest (ratio near 1)."""
    rng = np.random.default_rng(3)
    textured = rng.random((30, 16, 16))
    washed = 0.5 + 0.04 * rng.standard_normal((30, 16, 16))  # low-contrast films
    train = np.concatenate([textured, washed]).astype(np.float32)
    copy = train[7] + 0.01 * rng.standard_normal((16, 16))
    flat = np.full((16, 16), 0.5)
    queries = np.stack([copy, flat]).astype(np.float32)
    features = lambda images: images.reshape(len(images), -1) - 0.45  # noqa: E731
    ratio, index, closest = M.calibrated_copy_ratio(queries, features(queries), train, features(train), k=10)
    assert index[0] == 7 and ratio[0] < 0.1 and closest[0] < 0.05
    assert index[1] >= 30 and ratio[1] > 0.7  # among the washed-out films, none singled out
    assert closest[1] <= 0.15  # while the raw distance calls it a near copy
    whole, _, _ = M.calibrated_copy_ratio(queries, features(queries), train, features(train), k=500)  # k > N: all
    assert whole[0] < ratio[0] and whole.shape == (2,)


def test_auroc_and_bootstrap_by_hand() -> None:
    assert M.roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert M.roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), np.array([0, 1, 0, 1])) == pytest.approx(0.5)
    assert M.roc_auc(np.array([0.1, 0.2, 0.9]), np.array([0, 0, 1])) == 1.0
    assert np.isnan(M.roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    labels = np.array([0, 1, 1, 1])
    assert M.accuracy(probabilities, labels) == pytest.approx(0.75)
    assert M.confusion_matrix(probabilities.argmax(1), labels, 2).tolist() == [[1, 0], [1, 2]]
    rng = np.random.default_rng(0)
    interval = M.bootstrap_interval(lambda index: 3.0, 10, 200, rng)
    assert (interval.low, interval.high, interval.dropped) == (3.0, 3.0, 0)
    values = rng.normal(5.0, 1.0, 400)
    mean = M.mean_interval(values, 500, rng)
    assert mean.low < values.mean() < mean.high and mean.high - mean.low < 0.4


def test_nearest_and_diversity_by_hand() -> None:
    keys = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    index, similarity = M.nearest_by_cosine(np.array([[0.0, 5.0], [2.0, 2.1]]), keys)
    assert index.tolist() == [1, 2] and similarity[0] == pytest.approx(1.0)
    assert M.mean_pairwise_cosine_distance(np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(1.0)
    same = np.random.default_rng(2).random((3, 16, 16))
    assert M.mean_pairwise_ssim_distance(np.stack([same[0]] * 3)) == pytest.approx(0.0, abs=1e-5)
    assert M.mean_pairwise_ssim_distance(same) > 0.5


def test_allocation_and_plan() -> None:
    assert allocate(10, {"a": 1, "b": 1, "c": 2}, ("a", "b", "c")) == {"a": 3, "b": 3, "c": 4}
    assert allocate(2, {"a": 5, "b": 0, "c": 5}, ("a", "b", "c")) == {"a": 1, "b": 0, "c": 1}
    assert sum(allocate(1000, {"a": 234, "b": 390, "c": 148}, ("a", "b", "c")).values()) == 1000


# --------------------------------------------------------------------------- the whole command


def _manifest(folder: Path, source: Path, rotate: int = 0) -> Path:
    """The fixture images imported, then per class (sorted by file) train, train, val, test (rotated
    by ``rotate``), so that every split holds every class."""
    path = folder / "manifest.jsonl"
    run_import("pediatric", [source], path)
    records = read_manifest(path)
    order = ("train", "train", "val", "test")
    new = []
    for label in sorted({r.label for r in records}):
        members = sorted((r for r in records if r.label == label), key=lambda r: r.image)
        new += [replace(r, split=order[(i + rotate) % 4]) for i, r in enumerate(members)]
    write_manifest(path, new)
    return path


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory: pytest.TempPathFactory, tiny_pack_dir: Path, pediatric_fixture_dir: Path) -> dict:
    """One run of every section on the tiny pack; returns its paths, report and stderr."""
    folder = tmp_path_factory.mktemp("evaluate")
    manifest = _manifest(folder, pediatric_fixture_dir)
    out = folder / "report"
    code, stdout, stderr = _run(
        ["evaluate", "--model", str(tiny_pack_dir), "--data", str(manifest), "--out", str(out), *TINY_ARGS]
    )
    assert code == 0, stderr
    return {"manifest": manifest, "out": out, "stdout": stdout, "stderr": stderr,
            "report": json.loads((out / "report.json").read_text(encoding="utf-8"))}  # fmt: skip


@pytest.mark.slow
def test_report_has_every_section(evaluation: dict) -> None:
    report, out = evaluation["report"], evaluation["out"]
    assert evaluation["stdout"].split() == [str(out / "report.html"), str(out / "report.json")]
    assert "generating 18 images" in evaluation["stderr"]  # the progress messages
    for section in SECTIONS:
        assert section in report and "skipped" not in report[section], section
    assert report["classifier"]["name"] == "cxr-eval-cnn"
    assert report["frechet"]["feature_network"] == "cxr-eval-cnn"
    assert report["data"]["classes"] == ["bacterial_pneumonia", "normal", "viral_pneumonia"]
    assert report["generation"]["images"] == 18 and sum(report["generation"]["per_class"].values()) == 18
    assert report["memorisation"]["generated"]["n"] == 18 and not report["memorisation"]["meets_protocol"]
    assert len(report["memorisation"]["closest_pairs"]) == 4
    calibrated = report["memorisation"]["calibrated"]
    assert calibrated["generated"]["n"] == 18 and 0 <= calibrated["generated"]["quantiles"]["p0"] <= 1
    assert sum(report["memorisation"]["generated"]["histogram"]) == 18
    assert set(report["utility"]["arms"]) == {"real_n", "real_half", "real_half_plus_synthetic_half"}
    assert [(r["sampler"], r["steps"]) for r in report["steps"]["rows"]] == [
        (s, n) for s in ("ddim", "dpmpp-2m", "euler") for n in (2, 4)
    ]
    for key, value in report["summary"].items():
        assert value is not None, key
    # the figures exist and the page shows each of them
    page = (out / "report.html").read_text(encoding="utf-8")
    assert set(report["figures"]) >= {"samples", "statistics", "vae", "frechet", "alignment", "memorisation",
                                      "memorisation_pairs", "utility", "diversity", "steps"}  # fmt: skip
    for path in report["figures"].values():
        assert (out / path).stat().st_size > 1000 and f'src="{path}"' in page
    assert (out / "classifier" / "classifier.safetensors").is_file()


@pytest.mark.slow
def test_report_figures_are_computed_from_the_images(evaluation: dict, tiny_pack_dir: Path) -> None:
    report = evaluation["report"]
    # 1. real test statistics, recomputed from the files
    data = read_real_data(evaluation["manifest"])
    test_images = load_real_images(data.splits["test"], 32)
    stats = report["statistics"]["real_test"]
    assert stats["contrast_ratio"]["mean"] == pytest.approx(M.contrast_ratio(test_images).mean(), rel=1e-9)
    assert stats["entropy"]["mean"] == pytest.approx(M.entropy(test_images).mean(), rel=1e-9)
    assert stats["sharpness"]["mean"] == pytest.approx(M.laplacian_variance(test_images).mean(), rel=1e-9)
    # generated and real images differ in what is measured (a random tiny model makes noise)
    assert report["statistics"]["generated"]["sharpness"]["mean"] != pytest.approx(stats["sharpness"]["mean"], rel=0.05)
    # 2. the closest memorisation pair: regenerate it alone and measure it again
    pair = report["memorisation"]["closest_pairs"][0]
    generation = report["generation"]
    pipeline = Pipeline(load_pack(tiny_pack_dir), backend=OrtBackend(load_pack(tiny_pack_dir), requested="cpu"))
    image = pipeline.generate(GenerationRequest(prompt=pair["prompt"], seed=pair["seed"], sampler=generation["sampler"],
                                                num_steps=generation["num_steps"],
                                                guidance_scale=generation["guidance_scale"])).images  # fmt: skip
    train = [r for r in data.splits["train"] if r.path.name == Path(pair["training_image"]).name]
    nearest = load_real_images(train, 32).astype(np.float32)
    assert M.patch_distance(image, nearest)[0] == pytest.approx(pair["patch_distance"], abs=1e-3)
    distances = [p["patch_distance"] for p in report["memorisation"]["closest_pairs"]]
    assert distances == sorted(distances) and distances[0] == pytest.approx(
        report["memorisation"]["generated"]["quantiles"]["p0"]
    )
    # 3. the utility differences are the differences of the arms
    arms, differences = report["utility"]["arms"], report["utility"]["differences"]
    assert differences["real_half_plus_synthetic_minus_real_n"]["value"] == pytest.approx(
        arms["real_half_plus_synthetic_half"]["macro_auroc"]["value"] - arms["real_n"]["macro_auroc"]["value"]
    )


@pytest.mark.slow
def test_other_data_gives_other_figures_and_a_saved_classifier_is_reused(
    evaluation: dict, tiny_pack_dir: Path, pediatric_fixture_dir: Path, tmp_path: Path
) -> None:
    manifest = _manifest(tmp_path, pediatric_fixture_dir, rotate=1)  # other test images
    weights = tmp_path / "inception.safetensors"
    from safetensors.torch import save_file

    with torch.random.fork_rng():
        torch.manual_seed(0)
        save_file({k: v.contiguous() for k, v in FIDInception().state_dict().items()}, str(weights))
    out = tmp_path / "report"
    code, _, stderr = _run([
        "evaluate", "--model", str(tiny_pack_dir), "--data", str(manifest), "--out", str(out), *TINY_ARGS,
        "--num-images", "4", "--classifier", str(evaluation["out"] / "classifier"),
        "--skip", "utility,steps,diversity", "--inception-weights", str(weights), "--quiet",
    ])  # fmt: skip
    assert code == 0, stderr
    assert stderr == ""  # --quiet
    first, second = evaluation["report"], json.loads((out / "report.json").read_text(encoding="utf-8"))
    for section in ("utility", "steps", "diversity"):
        assert second[section] == {"skipped": "left out with --skip"}
    page = (out / "report.html").read_text(encoding="utf-8")
    for heading in ("5. Utility of generated images for training", "6. Diversity", "7. Steps and samplers"):
        assert f"<h2>{heading}</h2>\n<p class=note>Skipped: left out with --skip.</p>\n<h2>" in page
    assert not {"utility", "steps", "diversity", "diversity_samples"} & set(second["figures"])
    assert second["classifier"]["loaded_from"] == str(evaluation["out"] / "classifier")
    assert "different manifest" in second["classifier"]["note"]
    assert second["statistics"]["real_test"]["entropy"]["mean"] != first["statistics"]["real_test"]["entropy"]["mean"]
    assert second["frechet"]["real_train_vs_real_test"]["value"] != first["frechet"]["real_train_vs_real_test"]["value"]
    inception = second["frechet"]["inception"]
    assert inception["generated_vs_real_test"] >= 0 and "pytorch-fid" in inception["network"]
    assert "Standard FID (Inception) not computed" in (evaluation["out"] / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("no_pack", "not a folder"),
        ("no_test_split", "no usable records with split 'test'"),
        ("bad_steps", "--steps-list needs step counts from 1 to 250"),
        ("bad_section", "--skip: unknown section(s) everything"),
        ("bad_classifier", "--classifier"),
        ("bad_classifier_init", "needs classifier.json and classifier.safetensors"),
        ("both_classifiers", "--classifier reuses a trained classifier; --classifier-init trains one: not both"),
        ("bad_classes", "--classes needs two or more of: normal, "),
        ("model_variable", "CXR_STUDIO_MODEL="),
        ("no_cuda", "--device cuda: no CUDA GPU is available to torch"),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(
    change: str,
    message: str,
    tiny_pack_dir: Path,
    pediatric_fixture_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manifest = _manifest(tmp_path, pediatric_fixture_dir)
    out = tmp_path / "report"
    args = ["evaluate", "--model", str(tiny_pack_dir), "--data", str(manifest), "--out", str(out), *TINY_ARGS]
    if change == "no_pack":
        args[2] = str(tmp_path / "missing-pack")
    elif change == "no_test_split":
        write_manifest(
            manifest, [replace(r, split="train" if r.split == "test" else r.split) for r in read_manifest(manifest)]
        )
    elif change == "bad_steps":
        args += ["--steps-list", "0,20"]
    elif change == "bad_section":
        args += ["--skip", "everything"]
    elif change == "bad_classifier_init":
        args += ["--classifier-init", str(tmp_path)]
    elif change == "both_classifiers":
        args += ["--classifier", str(tmp_path), "--classifier-init", str(tmp_path)]
    elif change == "bad_classes":
        args += ["--classes", "normal"]
    elif change == "model_variable":  # no --model: the variable's pack, which is not there
        args = [a for a in args if a not in ("--model", str(tiny_pack_dir))]
        monkeypatch.setenv("CXR_STUDIO_MODEL", str(tmp_path / "missing-pack"))
    elif change == "no_cuda":  # the same answer on a machine with a GPU
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        args += ["--device", "cuda"]
    else:
        (tmp_path / "classifier").mkdir()
        args += ["--classifier", str(tmp_path / "classifier")]
    code, stdout, stderr = _run(args)
    assert code == 2
    assert stderr.startswith("cxr-studio evaluate: error: ") and stderr.count("\n") == 1
    assert message in stderr
    assert not out.exists() and stdout == ""


def test_prompts_come_from_the_card_when_it_covers_every_class(pediatric_fixture_dir: Path, tmp_path: Path) -> None:
    data = read_real_data(_manifest(tmp_path, pediatric_fixture_dir))
    card = {"example_prompts": [
        "Paediatric AP chest radiograph: findings consistent with bacterial pneumonia.",
        "Paediatric AP chest radiograph: patchy bilateral opacities consistent with viral pneumonia.",
        "Paediatric AP chest radiograph: no focal consolidation. Heart size normal.",
        "PA chest radiograph of a 61-year-old woman: cardiomegaly. No pneumothorax.",  # no class of this data
    ]}  # fmt: skip
    chosen = choose_prompts(card, data, "auto", 4)
    assert {name: p.prompts for name, p in chosen.items()} == {
        "bacterial_pneumonia": (card["example_prompts"][0],),
        "viral_pneumonia": (card["example_prompts"][1],),
        "normal": (card["example_prompts"][2],),
    }
    assert {p.source for p in chosen.values()} == {"model card example_prompts"}
    partial = {"example_prompts": card["example_prompts"][:1]}
    assert {p.source for p in choose_prompts(partial, data, "auto", 4).values()} == {"test-split captions"}
    with pytest.raises(EvaluationError, match="no prompt for normal, viral_pneumonia"):
        choose_prompts(partial, data, "card", 4)
    plan = plan_images(7, chosen, data.classes, data.counts()["test"], seed=5)
    assert plan.seeds.tolist() == list(range(5, 12)) and len(plan.prompts) == 7


def test_a_card_prompt_of_the_other_age_band_is_left_out_with_prompt_age_band(
    pediatric_fixture_dir: Path, tmp_path: Path
) -> None:
    """v2's card has an adult normal prompt: a paediatric evaluation's normal class took it beside the
    child one (with --prompt-age-band child it must not; with any, as before, it does)."""
    data = read_real_data(_manifest(tmp_path, pediatric_fixture_dir))
    child_normal = "Paediatric AP chest radiograph: no focal consolidation. Normal heart size."
    adult_normal = "PA chest radiograph of a 45-year-old man: no focal consolidation. Normal chest radiograph."
    unstated_normal = "Normal chest radiograph."
    card = {"example_prompts": [
        "Paediatric AP chest radiograph: findings consistent with bacterial pneumonia.",
        "Paediatric AP chest radiograph: patchy bilateral opacities consistent with viral pneumonia.",
        child_normal, adult_normal, unstated_normal,
        "AP chest radiograph of a 67-year-old woman: findings consistent with viral pneumonia.",
    ]}  # fmt: skip
    assert choose_prompts(card, data, "card", 4)["normal"].prompts == (child_normal, adult_normal, unstated_normal)
    child = choose_prompts(card, data, "card", 4, "child")
    assert child["normal"].prompts == (child_normal, unstated_normal)
    assert child["viral_pneumonia"].prompts == (card["example_prompts"][1],)
    adult = choose_prompts(card, data, "auto", 4, "adult")  # the adult prompts cover no bacterial class
    assert adult["normal"].source == "test-split captions"
    with pytest.raises(EvaluationError, match="no prompt for bacterial_pneumonia"):
        choose_prompts(card, data, "card", 4, "adult")


def test_classes_option_takes_the_one_listed_finding_and_ignores_labels(
    pediatric_fixture_dir: Path, tmp_path: Path
) -> None:
    classes = ("normal", "cardiomegaly", "pleural_effusion")

    def record(findings: dict[str, str], label: str | None = "Cardiomegaly|Nodule") -> ManifestRecord:
        return ManifestRecord("a.png", "text", findings, "p1", "PA", "nih", "train", label=label)

    assert class_of(record({"cardiomegaly": "present", "nodule": "present"}), classes) == "cardiomegaly"
    assert class_of(record({"cardiomegaly": "present", "nodule": "present"})) == "Cardiomegaly|Nodule"
    assert class_of(record({"no_finding": "present", "pneumothorax": "absent"}), classes) == "normal"
    assert class_of(record({"cardiomegaly": "present", "pleural_effusion": "present"}), classes) is None
    assert class_of(record({"nodule": "present", "cardiomegaly": "absent"}), classes) is None
    data = read_real_data(_manifest(tmp_path, pediatric_fixture_dir), ("normal", "bacterial_pneumonia"))
    assert data.classes == ("bacterial_pneumonia", "normal")
    assert data.left_out == {"not exactly one of --classes": 4}  # the viral pneumonias
    with pytest.raises(EvaluationError, match="--classes needs two or more"):
        EvaluationOptions(model=None, data=tmp_path, out=tmp_path, classes=("normal", "heart")).validated()


def test_compare_table_applies_the_shipping_rule(tmp_path: Path) -> None:
    from training.evaluate.compare import main as compare_main

    def report(memorised: int, n: int, cardio_ci: list[float]) -> dict:
        auroc = {"normal": {"value": 0.9, "ci95": [0.85, 0.95]}, "cardiomegaly": {"value": 0.7, "ci95": cardio_ci}}
        return {
            "summary": {"memorisation_count_at_or_below_threshold": memorised, "memorisation_generated_images": n,
                        "frechet_distance_generated_vs_real_test": 3.25, "alignment_accuracy_generated": 0.5},
            "alignment": {"generated": {"auroc": auroc}},
            "memorisation": {"generated": {"n": n, "count_at_or_below_threshold": memorised}},
        }  # fmt: skip

    cases = {"good": report(0, 1000, [0.6, 0.8]), "copies": report(2, 1000, [0.6, 0.8]),
             "few": report(0, 999, [0.6, 0.8]), "chance": report(0, 1000, [0.45, 0.8])}  # fmt: skip
    args = []
    for name, content in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(content))
        args.append(f"{name}={tmp_path / name}")
    out = tmp_path / "table.md"
    with contextlib.redirect_stdout(io.StringIO()):
        code = compare_main([*args, "--classes", "normal,cardiomegaly", "--out", str(out)])
    text = out.read_text()
    assert code == 0
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["good"].endswith("| yes |") and "3.25" in rows["good"] and "0.700 [0.60–0.80]" in rows["good"]
    assert all(rows[name].endswith("| no |") for name in ("copies", "few", "chance"))
    assert "- copies: 2 of 1000 generated images at or below" in text
    assert "- few: memorisation measured on 999 < 1000" in text
    assert "- chance: cardiomegaly: AUROC 95% CI 0.45–0.80 does not exclude chance" in text
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert compare_main([f"x={tmp_path}"]) == 2
    assert "not a readable evaluation report" in err.getvalue()


def test_classifier_init_starts_from_the_saved_layers_with_a_fresh_head(tmp_path: Path) -> None:
    from training.evaluate.classifier import (
        ClassifierConfig,
        TrainSettings,
        load_classifier,
        save_classifier,
        train_classifier,
    )

    rng = np.random.default_rng(0)
    inputs = torch.from_numpy(rng.uniform(-1, 1, (8, 1, 32, 32))).half()
    cpu = torch.device("cpu")
    first = train_classifier(inputs, np.arange(8) % 2, ClassifierConfig(("a", "b"), 32), TrainSettings(steps=2), cpu)
    save_classifier(first, tmp_path / "first", {})
    body = load_classifier(tmp_path / "first", cpu)[0].body.state_dict()
    config = ClassifierConfig(("x", "y", "z"), 32)  # other classes: only the head differs
    tuned = train_classifier(inputs, np.arange(8) % 3, config, TrainSettings(steps=1, lr=0.0), cpu, init_body=body)
    for name, tensor in body.items():
        if name.endswith("weight") or name.endswith("bias"):  # BatchNorm statistics move in training mode
            assert torch.equal(tensor, tuned.body.state_dict()[name]), name
    fresh = train_classifier(inputs, np.arange(8) % 3, config, TrainSettings(steps=1, lr=0.0, seed=5), cpu)
    assert not torch.equal(fresh.body[0].weight, tuned.body[0].weight)
    with pytest.raises(EvaluationError, match="--classifier-init: its layers do not match"):
        train_classifier(
            inputs, np.arange(8) % 3, ClassifierConfig(("x", "y"), 32, widths=(8, 8, 8, 8)),
            TrainSettings(steps=1), cpu, init_body=body,
        )  # fmt: skip


def test_inception_loader_checks_the_file(tmp_path: Path) -> None:
    model = FIDInception()
    features = inception_features(model.eval(), np.random.default_rng(0).random((2, 24, 24)), torch.device("cpu"))
    assert features.shape == (2, 2048) and np.isfinite(features).all()
    bad = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(EvaluationError, match="not the pytorch-fid FID Inception weights"):
        load_inception(bad, torch.device("cpu"))
    with pytest.raises(EvaluationError, match="no such file"):
        load_inception(tmp_path / "missing.pth", torch.device("cpu"))


def test_registering_the_command_imports_nothing_heavy() -> None:
    code = "import sys, training.evaluate.cli; print(sorted({'torch', 'matplotlib', 'numpy'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"


def test_without_model_the_embedded_default_is_evaluated(tmp_path: Path) -> None:
    from training.evaluate.options import build_options

    options = build_options({"model": None, "data": tmp_path / "m.jsonl", "out": tmp_path / "out"})
    assert options.model is None  # resolved to engine.paths.default_model_dir() when the run starts


def test_threads_option_does_not_outlive_the_run(evaluation: dict) -> None:
    assert evaluation["report"]["options"]["threads"] == 1  # the run used one thread ...
    assert torch.get_num_threads() == THREADS_AT_IMPORT  # ... and gave the process its own count back


def test_a_device_torch_cannot_use_is_an_evaluation_error(
    tiny_pack_dir: Path, pediatric_fixture_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Called from Python (not the command line), evaluate's bad inputs are all EvaluationError."""
    from training.evaluate.run import prepare_context

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    options = EvaluationOptions(
        model=tiny_pack_dir, data=_manifest(tmp_path, pediatric_fixture_dir), out=tmp_path / "out", device="cuda"
    )
    with pytest.raises(EvaluationError, match=r"^--device cuda: no CUDA GPU is available to torch$"):
        prepare_context(options)


def test_the_section_modules_are_the_sections_skip_names() -> None:
    """--skip checks names without importing torch (options.SECTIONS); the run uses the modules
    (and the age-band section, which --findings runs alone)."""
    from training.evaluate.options import AGE_BAND_SECTION
    from training.evaluate.run import SECTIONS as MODULES

    assert sorted(section.NAME for section in MODULES) == sorted((*SECTIONS, AGE_BAND_SECTION))
    for section in MODULES:
        assert callable(section.compute) and callable(section.make_figures) and callable(section.render_html)
