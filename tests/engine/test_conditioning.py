"""Record tokens (engine.conditioning): prompt -> ids, labels -> record, the pack's table and its checks."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engine.conditioning import (
    DEFAULT_MAX_TOKENS,
    EMBEDDINGS_FILE,
    NULL_TOKEN,
    RecordVocabulary,
    full_vocabulary,
    load_record_conditioning,
    record_of_labels,
    record_of_manifest,
)
from engine.findings.parse import parse_prompt
from engine.findings.vocabulary import NORMAL_IMPLIES_ABSENT
from engine.manifest import ManifestRecord
from engine.pack import MANIFEST, PackError, load_pack, write_manifest

FULL = RecordVocabulary(full_vocabulary(), max_tokens=6)


def _names(vocabulary: RecordVocabulary, prompt: str) -> list[str]:
    return [vocabulary.tokens[i] for i in vocabulary.record_token_ids(parse_prompt(prompt))]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("", []),
        ("no pneumothorax", ["finding:no_finding=present", "finding:pneumothorax=absent"]),
        ("pneumothorax", ["finding:pneumothorax=present", "finding:no_finding=absent"]),
        (
            "Large left pneumothorax in an adult",
            ["age_band:adult", "finding:pneumothorax=present", "side:left", "finding:no_finding=absent"],
        ),
        (
            "6 yo girl, AP: RLL consolidation, ?effusion, no PTX",
            [
                "age_band:child",
                "sex:female",
                "view:AP",
                "finding:consolidation=present",
                "side:right",
                "finding:pleural_effusion=uncertain",  # then no_finding and pneumothorax absent: cut at K = 6
            ],
        ),
    ],
)
def test_record_token_ids_of_prompts(prompt: str, expected: list[str]) -> None:
    ids = FULL.record_token_ids(parse_prompt(prompt))
    assert ids.dtype == np.int64 and ids.shape == (6,)
    assert _names(FULL, prompt) == [*expected, *[NULL_TOKEN] * (6 - len(expected))]


def test_facts_the_vocabulary_lacks_are_skipped() -> None:
    small = RecordVocabulary((NULL_TOKEN, "finding:pneumothorax=absent", "age_band:child"), max_tokens=3)
    assert _names(small, "no pneumothorax in a 4 year old, left effusion") == [
        "age_band:child", "finding:pneumothorax=absent", NULL_TOKEN,
    ]  # fmt: skip
    for tokens, message in [(("finding:x=present",), "first token"), ((NULL_TOKEN, "view:oblique"), "unknown")]:
        with pytest.raises(ValueError, match=message):
            RecordVocabulary(tokens)


def test_record_of_manifest_labels() -> None:
    record = record_of_labels({"pneumonia": "present", "no_finding": "absent"}, age=4, sex="F", view="AP")
    assert (record.age_band, record.sex, record.view) == ("child", "female", "AP")
    assert _names(RecordVocabulary(full_vocabulary(), 6), "") == [NULL_TOKEN] * 6
    ids = FULL.record_token_ids(record)
    assert [FULL.tokens[i] for i in ids[:5]] == [
        "age_band:child", "sex:female", "view:AP", "finding:pneumonia=present", "finding:no_finding=absent",
    ]  # fmt: skip
    bare = record_of_labels({}, view="FRONTAL")  # no single view named, no age, no sex
    assert not FULL.record_token_ids(bare).any()
    assert record_of_labels({}, age=70, sex="M", view="LATERAL").view == "lateral"


def test_a_normal_manifest_record_also_has_the_findings_its_label_rules_out() -> None:
    """A normal film trains the absent tokens "no pneumonia" gives (engine.findings.vocabulary's
    NORMAL_IMPLIES_ABSENT); a film with a finding keeps its labels alone."""
    def record(findings: dict[str, str]) -> ManifestRecord:
        return ManifestRecord(image="x.png", text="t", findings=findings, patient_id="p", view="AP", source="pediatric")

    normal = FULL.known_tokens(record_of_manifest(record({"no_finding": "present", "pneumothorax": "absent"})))
    assert normal[:2] == ["view:AP", "finding:no_finding=present"]
    assert {"finding:pneumonia=absent", "finding:viral_pneumonia=absent", "finding:pneumothorax=absent"} <= set(normal)
    assert len(normal) == 2 + len(NORMAL_IMPLIES_ABSENT)  # pneumothorax is listed and implied: once
    ill = FULL.known_tokens(record_of_manifest(record({"pneumonia": "present", "no_finding": "absent"})))
    assert ill == ["view:AP", "finding:pneumonia=present", "finding:no_finding=absent"]
    assert len(normal) + 2 <= DEFAULT_MAX_TOKENS  # with an age band and a sex, nothing is cut in a pack


def test_record_of_labels_takes_the_band_from_the_age_else_from_age_band() -> None:
    """A Kermany film (no age, band child) and a Hannover film (age redacted, band adult) get their
    age-band token; an age, when known, gives the band."""
    child = record_of_labels({"pneumonia": "present"}, age_band="child", view="AP")
    assert (child.age, child.age_band) == (None, "child")
    assert FULL.tokens[FULL.record_token_ids(child)[0]] == "age_band:child"
    assert record_of_labels({}, age_band="adult", sex="F").age_band == "adult"
    assert record_of_labels({}, age=70, age_band="older_adult").age_band == "older_adult"
    assert record_of_labels({}, age=4).age_band == "child"
    with pytest.raises(ValueError, match="age_band 'toddler'"):
        record_of_labels({}, age_band="toddler")
    # what training conditions a manifest line on: every field, the band included
    line = ManifestRecord("a.png", "x", {"pneumonia": "present"}, "P1", "AP", "pediatric", "train", age_band="child")
    record = record_of_manifest(line)
    assert (record.findings, record.age_band, record.view) == ({"pneumonia": "present"}, "child", "AP")
    adult = record_of_manifest(ManifestRecord("b.png", "x", {}, "H1", "PA", "hannover", sex="F", age_band="adult"))
    assert (adult.age_band, adult.sex, adult.view) == ("adult", "female", "PA")


def test_pack_table_is_looked_up(tiny_record_pack_dir: Path, tiny_pack_dir: Path) -> None:
    pack = load_pack(tiny_record_pack_dir)
    conditioning = load_record_conditioning(pack)
    assert conditioning is not None and EMBEDDINGS_FILE in pack.manifest.files
    table = np.load(tiny_record_pack_dir / EMBEDDINGS_FILE)
    assert table.shape == (len(full_vocabulary()), pack.manifest.text.context_dim) and table.dtype == np.float32
    assert not table[0].any()  # the null token is zero, like the text's padded positions
    records = [parse_prompt("pneumothorax"), parse_prompt("")]
    context = conditioning.context(records)
    assert context.shape == (2, conditioning.vocabulary.max_tokens, pack.manifest.text.context_dim)
    np.testing.assert_array_equal(context[0], table[conditioning.vocabulary.record_token_ids(records[0])])
    assert not context[1].any()
    # a pack without the section has none, and its model.json does not mention it
    assert load_record_conditioning(load_pack(tiny_pack_dir)) is None
    assert "conditioning" not in json.loads((tiny_pack_dir / MANIFEST).read_text())


def test_a_bad_table_or_section_is_refused(tiny_record_pack_dir: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(tiny_record_pack_dir, tmp_path / "pack"))
    manifest = load_pack(root).manifest
    # a table of the wrong shape, rehashed so that only the shape is wrong
    np.save(root / EMBEDDINGS_FILE, np.zeros((3, 32), np.float32), allow_pickle=False)
    write_manifest(root, manifest)
    with pytest.raises(PackError, match=rf"{EMBEDDINGS_FILE}: float32 \(3, 32\), the pack needs float32 \(105, 32\)"):
        load_record_conditioning(load_pack(root))
    # a vocabulary without the null token first
    spec = manifest.conditioning
    write_manifest(root, replace(manifest, conditioning=replace(spec, tokens=spec.tokens[1:])))
    with pytest.raises(PackError, match="conditioning: record vocabulary: the first token must be <null>"):
        load_record_conditioning(load_pack(root))
    # the table's file must be listed, and the tokens must be a list of text
    data = json.loads((root / MANIFEST).read_text())
    data["conditioning"]["tokens"] = "finding:pneumothorax=absent"
    (root / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(PackError, match=r"conditioning\.tokens must be a list of text"):
        load_pack(root)
    data["conditioning"]["tokens"] = list(spec.tokens)
    del data["files"][EMBEDDINGS_FILE]
    (root / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(PackError, match=f"required file {EMBEDDINGS_FILE} is not listed"):
        load_pack(root)
