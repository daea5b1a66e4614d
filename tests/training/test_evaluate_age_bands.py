"""Section 9 of ``cxr-studio evaluate``: findings by age band (issue 16 item 6's adult evaluation).
Records may show several findings; the judge is multi-label; a finding is "aligned above chance"
only when the judge is valid for it on real films and scores its images above the others'."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.findings.parse import parse_prompt
from engine.manifest import read_manifest, write_manifest
from tests.training.test_evaluate import TINY_ARGS, _manifest, _run
from training.evaluate import metrics as M
from training.evaluate.classifier import (
    ClassifierConfig,
    TrainSettings,
    load_classifier,
    predict,
    prepare,
    save_classifier,
    train_classifier,
)
from training.evaluate.data import load_real_images
from training.evaluate.options import EvaluationError
from training.evaluate.sections.age_bands import (
    ALIGNED,
    NOT_SHOWN,
    band_prompts,
    has,
    read_band_data,
    verdict,
)

ADULT_FINDINGS = ("normal", "pleural_effusion", "cardiomegaly")
# 8 findings sets in turn: the first three adults show one finding each, then two at once, then an
# unlisted one (nodule: negative for every listed finding, normal included)
FINDING_SETS = (
    {"no_finding": "present", "pleural_effusion": "absent"},
    {"pleural_effusion": "present"},
    {"cardiomegaly": "present"},
    {"pleural_effusion": "present", "cardiomegaly": "present"},
    {"nodule": "present"},
    {"no_finding": "present"},
    {"cardiomegaly": "present", "edema": "present"},
    {"pleural_effusion": "present", "atelectasis": "present"},
)


def _split(i: int) -> str:
    """Blocks of 8 records (every findings set once): train, train, val, test, then 4 more train."""
    return ("train", "train", "val", "test", "train")[i // 8]


def _band_manifest(folder: Path, source: Path) -> Path:
    """The 12 fixture images as 36 adult records (multi-label NIH-like findings, ages 18-77; splits by
    :func:`_split`), plus children (age 4, age_band child), a film of an adolescent by
    age_band, a record without age, and an adult without finding labels (Hannover-like)."""
    images = read_manifest(_manifest(folder, source))
    records = []
    for i in range(36):
        base = images[i % len(images)]
        records.append(
            replace(base, findings=FINDING_SETS[i % len(FINDING_SETS)], label=None, age=18 + (i * 7) % 60,
                    age_band=None, sex="MF"[i % 2], patient_id=f"A{i}", split=_split(i))
        )  # fmt: skip
    kids = [next(r for r in images if r.label == "normal"), *[r for r in images if r.label != "normal"][:2]]
    for i, base in enumerate(kids):  # a normal film and two pneumonias, as imported
        records.append(replace(base, age=4, age_band="child", patient_id=f"C{i}", split="train"))
    records.append(replace(images[3], age=None, age_band="adolescent", patient_id="T1", split="test"))
    records.append(replace(images[4], age=None, age_band=None, patient_id="U1", split="train"))
    records.append(replace(images[5], findings={}, label="COVID-19", age=None, age_band="adult", patient_id="H1",
                           split="train"))  # fmt: skip
    path = folder / "bands.jsonl"
    write_manifest(path, records)
    return path


@pytest.fixture(scope="module")
def band_manifest(tmp_path_factory: pytest.TempPathFactory, pediatric_fixture_dir: Path) -> Path:
    return _band_manifest(tmp_path_factory.mktemp("bands"), pediatric_fixture_dir)


# --------------------------------------------------------------------------- the verdict


def _entry(low: float | None, n_positive: int = 40) -> dict:
    return {"value": 0.8, "ci95": [low, 0.99], "n_positive": n_positive, "n_negative": 100}


@pytest.mark.parametrize(
    ("real", "generated", "expected"),
    [
        (_entry(0.62), _entry(0.55), ALIGNED),
        (_entry(0.45), _entry(0.95), NOT_SHOWN),  # the judge cannot tell it on real films: never aligned
        (_entry(0.50), _entry(0.95), NOT_SHOWN),  # a lower bound of exactly 0.5 is not above chance
        (_entry(None), _entry(0.95), NOT_SHOWN),  # no interval (no positives or negatives)
        (_entry(0.90), _entry(0.50), NOT_SHOWN),
        (_entry(0.90), _entry(0.30), NOT_SHOWN),
        (_entry(0.90), _entry(None), NOT_SHOWN),
        (_entry(0.90, n_positive=4), _entry(0.95), NOT_SHOWN),  # too few real positives to check the judge
    ],
)
def test_aligned_needs_a_judge_valid_on_real_films_and_generated_above_chance(
    real: dict, generated: dict, expected: str
) -> None:
    assert verdict(real, generated)[0] == expected


# --------------------------------------------------------------------------- records and prompts


def test_the_band_and_findings_of_a_record(band_manifest: Path) -> None:
    assert has(frozenset({"bacterial_pneumonia"}), "pneumonia")  # a subtype shows its parent
    assert not has(frozenset({"pneumonia"}), "bacterial_pneumonia")
    assert has(frozenset({"no_finding"}), "normal") and has(frozenset(), "normal")
    assert not has(frozenset({"nodule"}), "normal")
    data = read_band_data(band_manifest, ADULT_FINDINGS, "adult")
    assert {split: len(r) for split, r in data.splits.items()} == {"train": 20, "val": 8, "test": 8}
    assert dict(data.left_out) == {"age band child": 4, "no age or age band": 1, "no finding labels": 1}
    # positives per split from FINDING_SETS and _split
    expected = {split: {name: 0 for name in ADULT_FINDINGS} for split in ("train", "val", "test")}
    for i in range(36):
        split = _split(i)
        present = {k for k, v in FINDING_SETS[i % 8].items() if v == "present"}
        for name in ADULT_FINDINGS:
            expected[split][name] += (not present - {"no_finding"}) if name == "normal" else name in present
    assert data.counts() == expected
    assert data.labels("train").shape == (20, 3)
    assert data.held_out == ("val", "test") and "fewer than 20 positives" in data.held_out_reason
    child = read_band_data(band_manifest, ("normal", "pneumonia"), "child")
    assert {split: len(r) for split, r in child.splits.items()} == {"train": 3, "val": 0, "test": 1}


def test_prompts_come_from_the_card_for_the_band_else_from_the_caption_grammar() -> None:
    card = {
        "example_prompts": [
            "Paediatric AP chest radiograph: no focal consolidation. Normal heart size. No pleural effusion.",
            "Paediatric AP chest radiograph: focal airspace consolidation consistent with bacterial pneumonia.",
            "PA chest radiograph of a 50-year-old woman: pleural effusion and cardiomegaly.",  # two listed: neither
        ]
    }
    child = band_prompts(card, ("normal", "pneumonia"), "child", 4, 0)
    assert child["normal"].prompts == (card["example_prompts"][0],)
    assert child["pneumonia"].prompts == (card["example_prompts"][1],)
    assert child["pneumonia"].source == "model card example_prompts"
    names = ("normal", "pneumonia", "pleural_effusion", "cardiomegaly")
    adult = band_prompts(card, names, "adult", 4, 0)
    assert adult["pleural_effusion"].prompts[0].startswith("PA chest radiograph of a 60-year-old man: ")
    assert adult["pleural_effusion"].prompts[1].startswith("PA chest radiograph of a 45-year-old woman: ")
    for name, prompts in adult.items():
        assert prompts.source == "built with the training captions' grammar"
        assert len(prompts.prompts) == 4
        for prompt in prompts.prompts:  # each says the band and exactly that finding
            record = parse_prompt(prompt)
            assert record.age_band in ("adult", "older_adult"), prompt
            present = frozenset(k for k, v in record.findings.items() if v == "present")
            assert [n for n in names if has(present, n)] == [name], prompt


# --------------------------------------------------------------------------- the multi-label judge


def test_a_multi_label_classifier_learns_coexisting_findings_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, (64, 2)).astype(np.float32)
    images = rng.random((64, 32, 32)).astype(np.float32) * 0.2
    images[:, :16][targets[:, 0] > 0] += 0.6  # finding 0: a bright upper half; 1: a bright lower half
    images[:, 16:][targets[:, 1] > 0] += 0.6
    config = ClassifierConfig(("a", "b"), 32, widths=(8, 8, 8, 8), stem_width=8, multi_label=True)
    inputs = prepare(images, 32)
    cpu = torch.device("cpu")
    model = train_classifier(inputs, targets, config, TrainSettings(steps=60, batch_size=16), cpu)
    probabilities, _ = predict(model, inputs, cpu)
    assert not np.allclose(probabilities.sum(axis=1), 1.0)  # sigmoids, not a softmax
    both = (targets[:, 0] > 0) & (targets[:, 1] > 0)
    assert both.any() and (probabilities[both] > 0.5).all(axis=1).mean() > 0.8  # both findings at once
    for f in range(2):
        assert M.roc_auc(probabilities[:, f], targets[:, f] > 0) > 0.95
    save_classifier(model, tmp_path / "judge", {})
    loaded, saved = load_classifier(tmp_path / "judge", cpu)
    assert loaded.config.multi_label and saved["config"]["multi_label"] is True
    np.testing.assert_allclose(predict(loaded, inputs, cpu)[0], probabilities, atol=1e-6)
    # a classifier saved before multi-label existed (no key) is single-label
    config_path = tmp_path / "judge" / "classifier.json"
    data = json.loads(config_path.read_text(encoding="utf-8"))
    del data["config"]["multi_label"]
    config_path.write_text(json.dumps(data), encoding="utf-8")
    assert not load_classifier(tmp_path / "judge", cpu)[0].config.multi_label


# --------------------------------------------------------------------------- the command


def _band_args(pack: Path, manifest: Path, out: Path, findings: tuple[str, ...], band: str) -> list[str]:
    return ["evaluate", "--model", str(pack), "--data", str(manifest), "--out", str(out), *TINY_ARGS,
            "--findings", ",".join(findings), "--age-band", band, "--finding-images", "3"]  # fmt: skip


@pytest.fixture(scope="module")
def adult_run(tmp_path_factory: pytest.TempPathFactory, tiny_pack_dir: Path, band_manifest: Path) -> dict:
    out = tmp_path_factory.mktemp("adult") / "report"
    code, _, stderr = _run(_band_args(tiny_pack_dir, band_manifest, out, ADULT_FINDINGS, "adult"))
    assert code == 0, stderr
    return {"out": out, "stderr": stderr, "report": json.loads((out / "report.json").read_text(encoding="utf-8"))}


@pytest.mark.slow
def test_the_adult_band_is_evaluated_per_finding_on_a_pack_without_record_tokens(
    adult_run: dict, band_manifest: Path
) -> None:
    report, out = adult_run["report"], adult_run["out"]
    section = report["age_bands"]["adult"]
    assert section["records"] == {"train": 20, "val": 8, "test": 8} and section["held_out"] == ["val", "test"]
    assert set(section["findings"]) == set(ADULT_FINDINGS)
    for name, entry in section["findings"].items():
        assert entry["verdict"] == verdict(entry["real_held_out"], entry["generated"])[0]
        if entry["real_held_out"]["ci95"][0] is None or entry["real_held_out"]["ci95"][0] <= 0.5:
            assert entry["verdict"] == NOT_SHOWN, name
        assert entry["generated"]["n_positive"] == 3 and entry["generated"]["n_negative"] == 6
        assert entry["prompt_source"] == "built with the training captions' grammar"  # the tiny card has none
    assert section["aligned"] == [n for n in ADULT_FINDINGS if section["findings"][n]["verdict"] == ALIGNED]
    # the other sections do not run on multi-label data, and say why
    for name in ("statistics", "frechet", "alignment", "prompt_sets"):
        assert "--findings" in report[name]["skipped"]
    assert report["data"]["classes"] == list(ADULT_FINDINGS)
    assert report["classifier"]["test"]["auroc"]["pleural_effusion"]["n_positive"] == 3
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "9. Findings by age band" in page and "aligned above chance" in adult_run["stderr"]
    assert (out / report["figures"]["age_bands"]).stat().st_size > 1000


@pytest.mark.slow
def test_the_judges_real_aurocs_are_reproduced_from_the_saved_judge(adult_run: dict, band_manifest: Path) -> None:
    """Reload the saved multi-label judge, score the held-out films again: the report's AUROCs."""
    cpu = torch.device("cpu")
    model, _ = load_classifier(adult_run["out"] / "classifier", cpu)
    assert model.config.multi_label and model.config.classes == ADULT_FINDINGS
    data = read_band_data(band_manifest, ADULT_FINDINGS, "adult")
    # each held-out split scored on its own, as the evaluation does: a batch of other shape may round a
    # near-tie of this tiny judge the other way
    probabilities = np.concatenate(
        [
            predict(model, prepare(load_real_images(data.splits[split], 32), model.config.input_size), cpu)[0]
            for split in ("val", "test")
        ]
    )
    labels = np.concatenate([data.labels("val"), data.labels("test")])
    section = adult_run["report"]["age_bands"]["adult"]["findings"]
    for f, name in enumerate(ADULT_FINDINGS):
        expected = M.roc_auc(probabilities[:, f], labels[:, f] > 0)
        assert section[name]["real_held_out"]["value"] == pytest.approx(expected, abs=1e-6)
        assert section[name]["real_held_out"]["n_positive"] == int(labels[:, f].sum())


@pytest.mark.slow
def test_the_child_band_runs_on_a_record_token_pack_with_a_judge_by_transfer(
    tiny_record_pack_dir: Path, band_manifest: Path, tmp_path: Path, adult_run: dict
) -> None:
    manifest = tmp_path / "children.jsonl"
    records = read_manifest(band_manifest)
    # children: the adult records again, aged 6 (the band's split and findings kept)
    write_manifest(manifest, [replace(r, age=6, age_band=None) if r.patient_id.startswith("A") else r for r in records])
    out = tmp_path / "report"
    args = _band_args(tiny_record_pack_dir, manifest, out, ("normal", "cardiomegaly"), "child")
    code, _, stderr = _run([*args, "--classifier-init", str(adult_run["out"] / "classifier")])
    assert code == 0, stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert (
        f"trained from the convolutional layers of {adult_run['out'] / 'classifier'}"
        in report["classifier"]["description"]
    )
    assert "trained from scratch" in adult_run["report"]["classifier"]["description"]
    section = report["age_bands"]["child"]
    assert section["records"]["train"] == 20 + 3
    for prompt in section["findings"]["cardiomegaly"]["prompts"]:
        assert prompt.startswith("Paediatric AP chest radiograph: ") and parse_prompt(prompt).age_band == "child"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--age-band", "adult"], "--age-band needs --findings"),
        (["--findings", "normal,cardiomegaly"], "--findings needs --age-band child or adult"),
        (["--findings", "normal,cardiomegaly", "--age-band", "adult", "--classes", "normal,cardiomegaly"], "not both"),
        (["--findings", "normal,heart", "--age-band", "adult"], "--findings needs two or more of: normal, "),
        (["--findings", "normal,cardiomegaly", "--age-band", "adult", "--finding-images", "1"], "at least 2"),
        (["--findings", "normal,pneumothorax", "--age-band", "adult"], "--findings pneumothorax: no adult training"),
        (["--findings", "normal,cardiomegaly", "--age-band", "adult", "--skip", "steps"], "--skip: with --findings"),
    ],
)
def test_bad_band_options_give_one_line_and_exit_2(
    extra: list[str], message: str, tiny_pack_dir: Path, band_manifest: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    code, _, stderr = _run(["evaluate", "--model", str(tiny_pack_dir), "--data", str(band_manifest),
                            "--out", str(out), *TINY_ARGS, *extra])  # fmt: skip
    assert code == 2
    assert message in stderr and stderr.count("\n") == 1
    assert not out.exists()


def test_a_single_label_classifier_is_refused_for_findings(
    tiny_pack_dir: Path, band_manifest: Path, tmp_path: Path
) -> None:
    config = ClassifierConfig(ADULT_FINDINGS, 32, widths=(4, 4, 4, 4), stem_width=4)
    save_classifier(train_classifier(prepare(np.zeros((2, 32, 32)), 32), np.array([0, 1]), config,
                                     TrainSettings(steps=1), torch.device("cpu")), tmp_path / "single", {})  # fmt: skip
    out = tmp_path / "report"
    args = _band_args(tiny_pack_dir, band_manifest, out, ADULT_FINDINGS, "adult")
    code, _, stderr = _run([*args, "--classifier", str(tmp_path / "single")])
    assert code == 2 and "a single-label classifier; --findings needs a multi-label one" in stderr
    assert stderr.count("\n") == 1 and not out.exists()
    with pytest.raises(EvaluationError, match="no adult training record"):
        read_band_data(band_manifest, ("normal", "pneumothorax"), "adult")
