"""training.data.captions.augmented_caption: many phrasings per record, each read back by
engine.findings.parse.parse_prompt as the record's own findings, age band, sex and view."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engine.findings.parse import TYPO_TARGETS, correct_typo, parse_prompt
from engine.findings.vocabulary import ABSENT, NO_FINDING, PRESENT, UNCERTAIN
from engine.manifest import ManifestRecord
from engine.paths import resources_dir
from training.data.caption_augment import (
    AUGMENT_NOUNS,
    AUGMENT_PRESENT,
    augment_rng,
    augmented_caption,
    can_augment,
    held_out_prompts,
    round_trip_problems,
    training_caption,
)
from training.data.captions import (
    NIH_LABELS,
    PAEDIATRIC_LABELS,
    CaptionError,
    caption_rng,
    nih_caption,
    paediatric_caption,
)

AGES = (0, 1, 4, 11, 12, 15, 17, 18, 30, 45, 64, 65, 80, 94, None)


def _record(findings: dict[str, str], *, source: str = "nih", view: str = "UNKNOWN", age=None, sex=None, text="t"):
    return ManifestRecord(
        image="x.png", text=text, findings=findings, patient_id="p", view=view, source=source, age=age, sex=sex
    )


def vocabulary_records() -> list[ManifestRecord]:
    """Records as the importers write them, over the manifests' label vocabulary: every paediatric
    label, every NIH label alone, every NIH pair and some triples, with ages, sexes and views."""
    records = []
    for label in PAEDIATRIC_LABELS:
        for seed in range(4):
            caption = paediatric_caption(label, caption_rng(seed, "person1_bacteria_1.jpeg"))
            records.append(_record(caption.findings, source="pediatric", view="AP", text=caption.text))
    labels = sorted(label for label in NIH_LABELS if label != "No Finding")
    rng = random.Random(0)
    combos = [["No Finding"]] * 6 + [[a] for a in labels] + [[a, b] for a in labels for b in labels if a < b]
    combos += [rng.sample(labels, 3) for _ in range(30)]
    for index, combo in enumerate(combos):
        age, sex, view = AGES[index % len(AGES)], (None, "M", "F")[index % 3], ("PA", "AP", "UNKNOWN")[index % 4 % 3]
        caption = nih_caption(
            combo, caption_rng(index, "n.png"), age=age, sex=sex, view=None if view == "UNKNOWN" else view
        )
        records.append(_record(caption.findings, view=view, age=age, sex=sex, text=caption.text))
    return records


def test_thousands_of_draws_round_trip_through_the_record_parser() -> None:
    records = vocabulary_records()
    failures = []
    draws = 0
    for index, record in enumerate(records):
        for draw in range(20):
            # a typo in every other caption: rarer in training, but each must survive
            text = augmented_caption(record, augment_rng(7, draw, index), typo_rate=0.5)
            draws += 1
            problems = round_trip_problems(record, text)
            if problems:
                failures.append((text, dict(record.findings), record.age, record.sex, record.view, problems))
    assert draws > 3000
    assert not failures, f"{len(failures)} of {draws} draws misread, e.g. {failures[:5]}"


def test_doubts_and_statuses_beyond_the_importers_round_trip() -> None:
    records = [
        _record({"pneumothorax": UNCERTAIN, NO_FINDING: UNCERTAIN}, view="PA", age=30, sex="M"),
        _record({"pneumonia": UNCERTAIN, "pleural_effusion": ABSENT, "pneumothorax": ABSENT}, age=70, sex="F"),
        _record({"cardiomegaly": PRESENT, "consolidation": UNCERTAIN, "edema": ABSENT}, view="AP"),
        _record({"opacity": PRESENT, "pneumothorax": ABSENT}, age=8, sex="F", view="AP"),
        _record({NO_FINDING: PRESENT}, view="PA"),
    ]
    for index, record in enumerate(records):
        for draw in range(200):
            text = augmented_caption(record, augment_rng(1, draw, index))
            assert not round_trip_problems(record, text), (text, round_trip_problems(record, text))


def test_a_normal_study_is_also_said_to_lack_what_its_label_rules_out() -> None:
    """Kermany's NORMAL is "no pneumonia" and NIH's No Finding none of its labels: a normal record's
    captions now and then deny pneumonia (its subtypes, effusion, ...) although the label table lists
    only a few negatives; a record with a finding never gets such implied negatives."""
    normal = _record({NO_FINDING: PRESENT, "consolidation": ABSENT}, source="pediatric", view="AP")
    bacterial = _record({"bacterial_pneumonia": PRESENT, "pneumonia": PRESENT, NO_FINDING: ABSENT}, source="pediatric")
    denied: dict[str, int] = {}
    for seed in range(300):
        text = augmented_caption(normal, random.Random(seed))
        assert round_trip_problems(normal, text) == [], text
        for name, status in parse_prompt(text).findings.items():
            if status == ABSENT:
                denied[name] = denied.get(name, 0) + 1
        ill = parse_prompt(augmented_caption(bacterial, random.Random(seed))).findings
        assert [name for name, status in ill.items() if status == ABSENT] == [NO_FINDING]
    assert 30 <= denied.get("pneumonia", 0) <= 150, denied  # one implied negative in five, not every caption
    assert denied.get("consolidation", 0) > denied["pneumonia"]  # a listed negative is said more often
    assert {"pleural_effusion", "pneumothorax", "viral_pneumonia", "cardiomegaly"} <= set(denied)


def test_the_round_trip_check_catches_a_wrong_caption() -> None:
    record = _record({"cardiomegaly": PRESENT, "pneumothorax": ABSENT}, view="PA", age=61, sex="F")
    assert round_trip_problems(record, "PA CXR, 61F: big heart. No PTX.") == []
    assert round_trip_problems(record, "61F: big heart") == []  # a negative left out: less, not wrong
    assert round_trip_problems(record, "61F: no PTX") == [
        "cardiomegaly: present read as None",
        "no_finding: absent read as present",
    ]
    assert "sex: female read as male" in round_trip_problems(record, "61M: big heart")
    assert "age_band: older_adult read as adult" in round_trip_problems(
        _record({"cardiomegaly": PRESENT}, age=80, sex="F"), "woman: big heart"
    )
    assert "view: PA read as AP" in round_trip_problems(record, "portable film: cardiomegaly")
    assert "pleural_effusion: not in the record, read as present" in round_trip_problems(record, "big heart, effusion")


def test_nothing_the_record_lacks_is_said() -> None:
    """No side, lobe or zone ever; no age band, sex or view for a record without them."""
    bare = _record({"pneumonia": PRESENT, "pleural_effusion": ABSENT})
    places = re.compile(
        r"\b(?:left|right|bilat\w*|lobe|lobar|zone|base|apex|apical|lingula|RLL|RUL|RML|LLL|LUL)\b", re.I
    )
    for record in [bare, *vocabulary_records()[::7]]:
        for draw in range(30):
            text = augmented_caption(record, augment_rng(3, draw, 0))
            assert not places.search(text), text
            parsed = parse_prompt(text)
            assert all(e.side is None and e.lobe is None and e.zone is None for e in parsed.entries), text
            if record is bare:
                assert (parsed.age, parsed.age_band, parsed.sex, parsed.view) == (None, None, None, None), text


def test_same_seed_same_captions_and_many_phrasings_per_record() -> None:
    record = _record({"cardiomegaly": PRESENT, "pneumothorax": ABSENT}, view="PA", age=61, sex="F")

    def draws(seed: int) -> list[str]:
        return [augmented_caption(record, augment_rng(seed, epoch, 5)) for epoch in range(300)]

    assert draws(0) == draws(0)
    assert draws(0) != draws(1)
    texts = draws(0)
    assert len(set(texts)) > 250
    lowered = [t for t in texts if t == t.lower()]
    headerless = [t for t in texts if not re.search(r"radiograph|cxr|film|chest|x-ray", t, re.I)]
    assert lowered and headerless
    assert any("PTX" in t or "PNX" in t or "ptx" in t for t in texts)
    assert any(re.search(r"\bno\b|not seen|without|negative for|none|nil|absent|w/o|-ve", t, re.I) for t in texts)


def test_typos_are_one_edit_that_the_parser_corrects() -> None:
    record = _record({"pneumothorax": PRESENT, "consolidation": PRESENT, "pleural_effusion": ABSENT}, view="AP")
    changed = 0
    for draw in range(300):
        clean = augmented_caption(record, augment_rng(2, draw, 0), typo_rate=0.0)
        typo = augmented_caption(record, augment_rng(2, draw, 0), typo_rate=1.0)
        if clean == typo:
            continue  # no word of TYPO_TARGETS in this phrasing ("PTX", "consol", "eff")
        changed += 1
        before, after = clean.split(), typo.split()
        assert len(before) == len(after)
        diffs = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        assert len(diffs) == 1, (clean, typo)
        original, misspelt = (re.sub(r"\W", "", w) for w in diffs[0])
        assert original.lower() in TYPO_TARGETS and correct_typo(misspelt) == original.lower()
        assert not round_trip_problems(record, typo), typo
    assert changed > 50


def _held_out() -> list[str]:
    folder = resources_dir() / "evaluation" / "prompts"
    lines = [
        line for name in ("paraphrases", "negations") for line in (folder / f"{name}.jsonl").open(encoding="utf-8")
    ]
    return [json.loads(line)["prompt"] for line in lines if line.strip()]


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w?]+", " ", text.lower()).split())


def test_no_augmented_caption_is_an_evaluation_prompt() -> None:
    """For each prompt of the paraphrase and negation sets, a record with what that prompt says:
    hundreds of its augmented captions, none of them the prompt (up to case and punctuation).
    Short clinician prompts ("no PTX", "viral pneumonia") are likely draws: they are drawn again."""
    prompts = _held_out()
    assert len(prompts) > 250 and held_out_prompts() >= {_norm(p) for p in prompts}
    banned = {_norm(p) for p in prompts}
    tried = 0
    for index, prompt in enumerate(prompts):
        parsed = parse_prompt(prompt)
        age = int(parsed.age) if parsed.age and parsed.age >= 1 else None
        source = "pediatric" if parsed.age_band == "child" and age is None else "nih"
        view = {"PA": "PA", "AP": "AP", "supine AP": "AP"}.get(parsed.view or "", "UNKNOWN")
        sex = {"male": "M", "female": "F"}.get(parsed.sex or "")
        record = _record(dict(parsed.findings), source=source, view=view, age=age, sex=sex)
        if not can_augment(record):
            continue
        tried += 1
        for draw in range(150):
            text = augmented_caption(record, augment_rng(0, draw, index))
            assert _norm(text) not in banned, (prompt, text)
    assert tried > 150
    # and no phrasing table holds one whole
    for phrase in [p for table in (AUGMENT_PRESENT, AUGMENT_NOUNS) for ps in table.values() for p in ps]:
        assert _norm(phrase) not in banned or _norm(phrase) in {"ptx", "viral pneumonia", "viral pneumonitis"}


def test_records_that_cannot_be_phrased_keep_their_own_caption() -> None:
    iu = _record({"granuloma": PRESENT, NO_FINDING: ABSENT}, text="Calcified granuloma in the right upper lobe.")
    assert not can_augment(iu)
    with pytest.raises(CaptionError, match="granuloma"):
        augmented_caption(iu, random.Random(0))
    assert training_caption(iu, 1.0, random.Random(0)) == iu.text
    contradictory = _record({NO_FINDING: PRESENT, "pneumothorax": PRESENT})
    assert not can_augment(contradictory)
    record = _record({"pneumothorax": PRESENT}, view="PA", text="PA chest radiograph: pneumothorax.")
    assert training_caption(record, 0.0, random.Random(0)) == record.text
    drawn = [training_caption(record, 0.8, augment_rng(0, epoch, 0)) for epoch in range(200)]
    own = drawn.count(record.text)
    assert 10 < own < 80  # about a fifth (and an augmented draw may happen to be the same text)
    assert all(not round_trip_problems(record, text) for text in drawn)


# --------------------------------------------------------------------------- in training


def _labelled_manifest(folder: Path, count: int = 12) -> Path:
    """``count`` small noisy images with NIH-style captions and findings (3 in 4 train, 1 in 4 val)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = (["Cardiomegaly"], ["Effusion", "Atelectasis"], ["No Finding"], ["Pneumothorax"])
    lines = []
    for i in range(count):
        name = f"chest{i:02d}.png"
        assert cv2.imwrite(str(folder / name), rng.integers(0, 255, (36, 36), dtype=np.uint8))
        age, sex = 20 + 7 * i, "MF"[i % 2]
        caption = nih_caption(labels[i % 4], caption_rng(0, name), age=age, sex=sex, view="PA")
        split = "val" if i % 4 == 0 else "train"
        record = {"image": name, "text": caption.text, "findings": caption.findings, "patient_id": f"P{i}",
                  "view": "PA", "source": "nih", "age": age, "sex": sex, "split": split}  # fmt: skip
        lines.append(json.dumps(record))
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def test_augmented_captions_are_encoded_into_scratch_rows(tiny_model) -> None:
    from training.datasets import AugmentedCaptions
    from training.diffusion_setup import encode_texts

    cpu = torch.device("cpu")
    records = [
        _record({"cardiomegaly": PRESENT, "pneumothorax": ABSENT}, view="PA", age=61, sex="F", text="own 0"),
        _record({"granuloma": PRESENT}, text="own 1"),  # cannot be phrased: keeps its caption
        _record({NO_FINDING: PRESENT, "pleural_effusion": ABSENT}, source="pediatric", view="AP", text="own 2"),
    ]
    texts = ["", *(r.text for r in records)]
    hidden, mask = encode_texts(tiny_model.text, texts, cpu)
    captions = AugmentedCaptions(records, 1.0, 0, tiny_model.text, cpu, pool=3)
    hidden, mask = captions.grow(hidden, mask, batch_size=4)
    assert hidden.shape[0] == len(texts) + 4 and not mask[len(texts) :].any()
    indices = torch.tensor([0, 1, 2, 0])
    own = torch.tensor([1, 2, 3, 1])
    drop = torch.tensor([False, False, False, True])

    def draw(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        text = captions.draw(indices, own, drop, torch.Generator().manual_seed(seed), hidden, mask)
        return text, hidden[text].clone()

    text, states = draw(5)
    assert text.tolist() == [4, 2, 5, 1]  # two augmented (scratch rows), the unphrased and the dropped keep theirs
    keys = sorted(captions.memo)
    assert [index for index, _ in keys] == [0, 2]
    # the rows hold the encoder's states of the drawn pool captions, as the cache encodes captions
    drawn = [captions.caption(*key) for key in keys]
    assert all(
        not round_trip_problems(records[index], caption) for (index, _), caption in zip(keys, drawn, strict=True)
    )
    reference, reference_mask = encode_texts(tiny_model.text, drawn, cpu)
    assert torch.equal(mask[[4, 5]], reference_mask)
    valid = reference_mask.unsqueeze(-1)
    torch.testing.assert_close(hidden[[4, 5]] * valid, reference * valid, atol=1e-5, rtol=1e-4)
    again, states_again = draw(5)
    assert again.tolist() == text.tolist() and torch.equal(states, states_again) and sorted(captions.memo) == keys
    # each record's captions come from its pool: every slot gets drawn, and no more are made
    for seed in range(40):
        draw(seed)
    assert sorted(captions.memo) == [(index, slot) for index in (0, 2) for slot in range(3)]
    assert len({captions.caption(0, slot) for slot in range(3)}) == 3


@pytest.mark.parametrize("chance", [-0.1, 1.5, True, "0.5"])
def test_bad_caption_augment_is_refused(chance: object) -> None:
    from training.options import TrainingError
    from training.train_diffusion import DiffusionOptions

    with pytest.raises(TrainingError, match="--caption-augment must be a probability from 0"):
        DiffusionOptions(data="m.jsonl", out="run", vae="vae", caption_augment=chance)


def test_new_runs_augment_and_runs_from_before_resume_without(tmp_path: Path) -> None:
    import argparse

    from training import train_cli
    from training.run_folder import FORMAT_VERSION, RUN_FORMAT
    from training.train_diffusion import DiffusionOptions

    assert DiffusionOptions(data="m.jsonl", out="run", vae="vae").caption_augment == 0.8
    parser = argparse.ArgumentParser()
    train_cli.register_train(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "diffusion", "--out", str(tmp_path / "new"), "--data", "m", "--vae", "v",
                              "--caption-augment", "0.5"])  # fmt: skip
    assert train_cli.options_from_args(args, DiffusionOptions).caption_augment == 0.5
    old = DiffusionOptions(data="m.jsonl", out=str(tmp_path / "old"), vae="vae").to_json()
    del old["caption_augment"]
    (tmp_path / "old").mkdir()
    run = {"format": RUN_FORMAT, "format_version": FORMAT_VERSION, "kind": "diffusion", "options": old}
    (tmp_path / "old" / "run.json").write_text(json.dumps(run), encoding="utf-8")
    args = parser.parse_args(["train", "diffusion", "--out", str(tmp_path / "old"), "--resume"])
    assert train_cli.options_from_args(args, DiffusionOptions).caption_augment == 0.0


def test_a_run_with_caption_augment_is_seeded(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Same seed, same losses; augmented captions change what the model sees (other losses than without)."""
    from training.train_diffusion import DiffusionOptions, train_diffusion

    manifest = _labelled_manifest(tmp_path / "data")

    def losses(name: str, chance: float) -> list[float]:
        out = tmp_path / name
        options = DiffusionOptions(
            data=str(manifest), out=str(out), vae=str(tiny_checkpoint), steps=3, batch_size=4, checkpoint_every=3,
            log_every=1, quiet=True, workers=1, caption_augment=chance, uncond_prob=0.0,
        )  # fmt: skip
        train_diffusion(options, log=lambda _: None)
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
        return [line["loss"] for line in lines if "loss" in line]

    first, second, plain = losses("a", 1.0), losses("b", 1.0), losses("c", 0.0)
    assert len(first) == 3 and first == second
    assert first != plain
