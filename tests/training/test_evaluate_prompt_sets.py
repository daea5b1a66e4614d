"""Section 8 of ``cxr-studio evaluate``: the committed paraphrase and negation prompt sets, apart from
the caption grammar, and scored on the tiny pack beside the card prompts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from engine.pack import load_pack
from engine.pipeline import GenerationRequest, Pipeline
from engine.runtime import OrtBackend
from tests.training.test_evaluate import TINY_ARGS, _manifest, _run
from training.evaluate import metrics as M
from training.evaluate.options import EvaluationError
from training.evaluate.sections.prompt_sets import denied_classes, load_prompt_sets, prompts_dir, read_prompt_set

PAEDIATRIC = ("bacterial_pneumonia", "normal", "viral_pneumonia")
ADULT = ("pleural_effusion", "cardiomegaly", "atelectasis", "infiltration", "edema", "consolidation", "pneumothorax")
OTHER_SECTIONS = "vae,statistics,frechet,alignment,memorisation,utility,diversity,steps"


def normalise(text: str) -> str:
    """Case, whitespace and a trailing full stop do not make a prompt new."""
    return re.sub(r"\s+", " ", text).strip().rstrip(".").strip().casefold()


# --------------------------------------------------------------------------- the committed files


def test_committed_sets_cover_every_class_with_25_prompts() -> None:
    sets = load_prompt_sets(("paraphrases", "negations"))
    paraphrases, negations = sets["paraphrases"], sets["negations"]
    for name in (*PAEDIATRIC, *ADULT):
        members = [p for p in paraphrases if p.label == name]
        assert len(members) >= 25, name
        assert all(not p.denies for p in members)
    assert len({normalise(p.prompt) for p in paraphrases}) == len(paraphrases)  # no repeats
    # no header of the training captions: trainees do not type one
    headers = ("paediatric ap chest radiograph", "pa chest radiograph", "ap chest radiograph")
    assert not any(p.prompt.lower().startswith(headers) for p in paraphrases)
    assert {p.age_band for p in paraphrases} == {None, "child", "adult"}
    assert len(negations) >= 25 and all(p.label == "normal" and p.denies for p in negations)
    assert sum("pneumonia" in p.denies for p in negations) >= 15  # enough for the paediatric model's check
    readme = (prompts_dir() / "README.md").read_text(encoding="utf-8")
    assert "never used in training" in readme and "Licence" in readme


def test_prompt_sets_are_apart_from_the_caption_grammar() -> None:
    from training.data.captions import (
        NEGATIVE_PHRASES,
        NIH_LABELS,
        NORMAL_STATEMENTS,
        PAEDIATRIC_LABELS,
        PAEDIATRIC_PHRASES,
        POSITIVE_PHRASES,
        caption_rng,
        example_prompts,
        nih_caption,
        paediatric_caption,
    )

    # 1. what the grammar writes: whole captions and their bodies (the caption without its header),
    # for every paediatric label, every NIH label alone and in pairs, with ages, sexes and views
    label_sets = [("pediatric", (label,)) for label in PAEDIATRIC_LABELS]
    nih = sorted(NIH_LABELS)
    label_sets += [("nih", (label,)) for label in nih]
    label_sets += [("nih", (a, b)) for i, a in enumerate(nih) for b in nih[i + 1 :] if "No Finding" not in (a, b)]
    written: set[str] = set()
    for kind, labels in label_sets:
        for key in range(120 if len(labels) == 1 else 12):
            rng = caption_rng(0, f"{kind}/{'|'.join(labels)}/{key}")
            if kind == "pediatric":
                text = paediatric_caption(labels[0], rng).text
            else:
                age, sex, view = (3, 25, 47, 61, 80, None)[key % 6], ("M", "F", None)[key % 3], ("PA", "AP")[key % 2]
                text = nih_caption(list(labels), rng, age=age, sex=sex, view=view).text
            written |= {normalise(text), normalise(text.split(": ", 1)[-1])}
    # 2. every single phrase of the grammar, and the card's example prompts
    for table in (POSITIVE_PHRASES, PAEDIATRIC_PHRASES, NEGATIVE_PHRASES):
        written |= {normalise(phrase) for phrases in table.values() for phrase in phrases}
    written |= {normalise(s) for s in NORMAL_STATEMENTS} | {normalise(p) for p in example_prompts()}
    assert len(written) > 2000
    # the check finds a caption however it is cased or spaced (else it could never fail)
    caption = paediatric_caption("normal", caption_rng(0, "pediatric/normal/7")).text
    assert normalise("  " + caption.upper().replace(" ", "   ")) in written
    assert normalise(caption.split(": ", 1)[1].lower()) in written

    sets = load_prompt_sets(("paraphrases", "negations"))
    clashes = [p.prompt for prompts in sets.values() for p in prompts if normalise(p.prompt) in written]
    assert clashes == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", ":1: not a JSON object"),
        ('{"prompt": "big heart"}', "needs 'prompt' and 'class'"),
        ('{"prompt": "big heart", "class": "heart"}', "unknown class 'heart'"),
        ('{"prompt": "big heart", "class": "cardiomegaly", "age_band": "old"}', "'age_band' must be"),
        ('{"prompt": "no heart", "class": "normal", "denies": ["heart"]}', "'denies' must list"),
        ('{"prompt": "no PTX", "class": "pneumothorax", "denies": ["pneumothorax"]}', "is 'normal'"),
        ('{"prompt": "", "class": "normal"}', "'prompt' must be non-empty"),
    ],
)
def test_a_bad_set_line_is_named(line: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(EvaluationError, match=re.escape(message)):
        read_prompt_set(path)


def test_denied_classes_follow_the_data_and_the_parents() -> None:
    shown = {"bacterial_pneumonia": frozenset({"bacterial_pneumonia"}), "normal": frozenset({"no_finding"})}
    assert denied_classes(("pneumonia",), PAEDIATRIC, shown) == ("bacterial_pneumonia", "viral_pneumonia")
    assert denied_classes(("viral_pneumonia",), PAEDIATRIC, shown) == ("viral_pneumonia",)
    assert denied_classes(("consolidation",), PAEDIATRIC, shown) == ()  # the labels never say consolidation
    with_consolidation = shown | {"bacterial_pneumonia": frozenset({"bacterial_pneumonia", "consolidation"})}
    assert denied_classes(("consolidation",), PAEDIATRIC, with_consolidation) == ("bacterial_pneumonia",)
    assert denied_classes(("pleural_effusion", "pneumothorax"), ("normal", "pleural_effusion"), {}) == (
        "pleural_effusion",
    )


def test_wilson_and_newcombe_intervals_by_hand() -> None:
    from scipy.stats import binomtest

    for k, n in ((56, 70), (0, 12), (12, 12), (3, 40)):
        expected = binomtest(k, n).proportion_ci(method="wilson")
        assert M.wilson_interval(k, n) == pytest.approx((expected.low, expected.high), abs=1e-12)
    # Newcombe (1998), Statistics in Medicine 17:873, table II example (a): 56/70 - 48/80, method 10
    low, high = M.newcombe_difference(56, 70, 48, 80)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    assert all(np.isnan(M.wilson_interval(0, 0))) and all(np.isnan(M.newcombe_difference(1, 2, 0, 0)))


# --------------------------------------------------------------------------- the section on the tiny pack


@pytest.fixture(scope="module")
def prompt_run(tmp_path_factory: pytest.TempPathFactory, tiny_pack_dir: Path, pediatric_fixture_dir: Path) -> dict:
    folder = tmp_path_factory.mktemp("prompt-sets")
    manifest = _manifest(folder, pediatric_fixture_dir)
    out = folder / "report"
    code, _, stderr = _run(
        ["evaluate", "--model", str(tiny_pack_dir), "--data", str(manifest), "--out", str(out), *TINY_ARGS,
         "--skip", OTHER_SECTIONS, "--prompt-set-images", "2", "--seed", "3"]
    )  # fmt: skip
    assert code == 0, stderr
    return {"out": out, "stderr": stderr, "report": json.loads((out / "report.json").read_text(encoding="utf-8"))}


@pytest.mark.slow
def test_paraphrases_are_scored_beside_the_card_prompts(prompt_run: dict) -> None:
    report, out = prompt_run["report"], prompt_run["out"]
    section = report["prompt_sets"]
    sets = load_prompt_sets(("paraphrases", "negations"))
    para = section["paraphrases"]
    expected = {name: sum(p.label == name for p in sets["paraphrases"]) for name in PAEDIATRIC}
    assert {name: e["prompts"] for name, e in para["per_class"].items()} == expected
    assert section["not_scored"][f"class {ADULT[0]} is not one of this evaluation's"] == 25
    for name, entry in para["per_class"].items():
        # as many reference images as paraphrase images, per class; figures from the per-prompt rows
        assert entry["paraphrases"]["n"] == entry["reference"]["n"] == 2 * expected[name]
        rows = [r for r in para["per_prompt"] if r["class"] == name]
        assert entry["paraphrases"]["k"] == round(sum(r["accuracy"] * r["n"] for r in rows))
        low, high = M.wilson_interval(entry["paraphrases"]["k"], entry["paraphrases"]["n"])
        assert entry["paraphrases"]["ci95"] == pytest.approx([low, high])
        difference = entry["paraphrases"]["value"] - entry["reference"]["value"]
        assert entry["difference"]["value"] == pytest.approx(difference)
    assert para["reference_source"] == "test-split captions"  # the tiny pack's card has no example prompts
    assert report["summary"]["paraphrase_accuracy"] == para["overall"]["paraphrases"]["value"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "8. Paraphrases and negations" in page and "Negation check" in page
    assert (out / report["figures"]["prompt_sets"]).stat().st_size > 1000


@pytest.mark.slow
def test_a_judgement_is_reproduced_from_its_image(prompt_run: dict, tiny_pack_dir: Path) -> None:
    """Regenerate the first paraphrase prompt's images alone (seed 3, 4) and judge them again with
    the classifier the run saved: the report's counts come from those images."""
    import torch

    from training.evaluate.classifier import load_classifier, predict, prepare

    report = prompt_run["report"]
    row = report["prompt_sets"]["paraphrases"]["per_prompt"][0]
    pack = load_pack(tiny_pack_dir)
    pipeline = Pipeline(pack, backend=OrtBackend(pack, requested="cpu"))
    request = GenerationRequest(prompt=row["prompt"], seed=3, batch_size=2, sampler=report["prompt_sets"]["sampler"],
                                num_steps=report["prompt_sets"]["num_steps"],
                                guidance_scale=report["prompt_sets"]["guidance_scale"])  # fmt: skip
    images = pipeline.generate(request).images
    model, _ = load_classifier(prompt_run["out"] / "classifier", torch.device("cpu"))
    probabilities, _ = predict(model, prepare(images, model.config.input_size), torch.device("cpu"))
    judged = [model.config.classes[i] for i in probabilities.argmax(axis=1)]
    assert {name: judged.count(name) for name in set(judged)} == row["judged"]


@pytest.mark.slow
def test_negation_check_compares_with_normal_prompts(prompt_run: dict) -> None:
    section = prompt_run["report"]["prompt_sets"]
    neg = section["negations"]
    sets = load_prompt_sets(("paraphrases", "negations"))
    pneumonias = {"pneumonia", "bacterial_pneumonia", "viral_pneumonia"}
    scored = [p for p in sets["negations"] if pneumonias & set(p.denies)]  # --prompt-age-band any
    assert neg["prompts"] == len(scored) and neg["images"] == 2 * len(scored)
    # the consolidation-, effusion-, pneumothorax-only denials are listed, not scored
    assert section["not_scored"]["negation: denies no class of this evaluation"] > 0
    rows = neg["per_prompt"]
    pooled = neg["pooled"]
    assert pooled["negations_judged_not_x"]["value"] == pytest.approx(np.mean([r["judged_not_x"] for r in rows]))
    pneumonia = next(g for g in neg["groups"] if g["denied_classes"] == ["bacterial_pneumonia", "viral_pneumonia"])
    # normal-prompt images judged not-pneumonia are those judged normal
    assert pneumonia["normal_prompts_judged_not_x"]["k"] == neg["judged_normal"]["normal_prompts"]["k"]
    assert pooled["difference"]["value"] == pytest.approx(
        pooled["negations_judged_not_x"]["value"] - pooled["normal_prompts_judged_not_x"]["value"]
    )
    low, high = pooled["difference"]["ci95"]
    assert low <= pooled["difference"]["value"] <= high
    assert neg["passes"] == (high >= 0)


def test_unknown_set_and_bad_band_give_one_line_and_write_nothing(
    tiny_pack_dir: Path, pediatric_fixture_dir: Path, tmp_path: Path
) -> None:
    manifest = _manifest(tmp_path, pediatric_fixture_dir)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "class": "kidney"}\n', encoding="utf-8")
    for extra, message in (
        (["--prompt-sets", "paraphrases,nonsense"], "--prompt-sets nonsense: no such prompt set (committed: "),
        (["--prompt-sets", str(bad)], f"--prompt-sets {bad}:1: unknown class 'kidney'"),
        (["--prompt-set-images", "0"], "--prompt-set-images must be a whole number of at least 1"),
        (["--record-guidance", "6"], "has no record tokens to guide"),  # the tiny pack has none
        (["--record-guidance", "-1"], "record guidance must be from 0 to 30"),
    ):
        out = tmp_path / "report"
        code, stdout, stderr = _run(
            ["evaluate", "--model", str(tiny_pack_dir), "--data", str(manifest), "--out", str(out), *TINY_ARGS, *extra]
        )
        assert code == 2 and stdout == "" and not out.exists()
        assert stderr.startswith("cxr-studio evaluate: error: ") and stderr.count("\n") == 1
        assert message in stderr, stderr


def test_compare_table_shows_paraphrase_accuracy_and_the_negation_check(tmp_path: Path) -> None:
    from training.evaluate.compare import table

    summary = {"frechet_distance_generated_vs_real_test": 3.0, "alignment_accuracy_generated": 0.5}
    with_sets = {
        "summary": summary,
        "prompt_sets": {
            "paraphrases": {"overall": {"paraphrases": {"value": 0.7, "ci95": [0.62, 0.77]},
                                        "reference": {"value": 0.88, "ci95": [0.8, 0.9]}}},
            "negations": {"pooled": {"negations_judged_not_x": {"value": 0.1, "ci95": [0.0, 0.2]},
                                     "normal_prompts_judged_not_x": {"value": 0.95, "ci95": [0.9, 1.0]}}},
        },
    }  # fmt: skip
    text = table({"v2": with_sets, "old": {"summary": summary}}, classes=[])
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "paraphrase acc [95% CI] (ref.)" in rows["run"]
    assert "| 0.700 [0.62–0.77] (0.880) | 0.100 (0.950) |" in rows["v2"]
    assert "| – | – |" in rows["old"]  # a report from before section 8


@pytest.mark.slow
def test_a_set_file_and_an_age_band_choose_what_is_scored(
    tiny_pack_dir: Path, pediatric_fixture_dir: Path, tmp_path: Path
) -> None:
    """A .jsonl set of one's own; --prompt-age-band adult leaves out the prompts that state a child;
    a negation without normal paraphrases to compare with is listed, not scored."""
    manifest = _manifest(tmp_path, pediatric_fixture_dir)
    mine = tmp_path / "mine.jsonl"
    lines = [
        {"prompt": "lobar pneumonia kid", "class": "bacterial_pneumonia", "age_band": "child"},
        {"prompt": "RLL consolidation", "class": "bacterial_pneumonia"},
        {"prompt": "viral LRTI", "class": "viral_pneumonia", "age_band": "adult"},
        {"prompt": "no pneumonia", "class": "normal", "denies": ["pneumonia"]},
    ]
    mine.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    out = tmp_path / "report"
    code, _, stderr = _run(
        ["evaluate", "--model", str(tiny_pack_dir), "--data", str(manifest), "--out", str(out), *TINY_ARGS,
         "--skip", OTHER_SECTIONS, "--prompt-sets", str(mine), "--prompt-age-band", "adult",
         "--prompt-set-images", "3"]
    )  # fmt: skip
    assert code == 0, stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    section = report["prompt_sets"]
    assert section["sets"] == {str(mine): {"file": str(mine), "prompts": 4}}
    assert section["not_scored"] == {
        "age band child (--prompt-age-band adult)": 1,
        "negation: no normal paraphrase prompt to compare with": 1,
    }
    per_class = section["paraphrases"]["per_class"]
    assert {name: (e["prompts"], e["paraphrases"]["n"], e["reference"]["n"]) for name, e in per_class.items()} == {
        "bacterial_pneumonia": (1, 3, 3),
        "viral_pneumonia": (1, 3, 3),
    }
    assert section["negations"] is None and report["summary"]["negation_judged_not_x"] is None
    assert "Negation check" not in (out / "report.html").read_text(encoding="utf-8")
