"""engine.findings: negation and uncertainty cases, the normal rule, spans, and the IU X-ray evaluation."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from engine.findings.reader import Finding, clean_report, extract_findings, summarize
from engine.findings.vocabulary import ABSENT, FINDINGS, NO_FINDING, PRESENT, UNCERTAIN, VOCABULARY

REPO = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout, or ``$CXR_SHARED_DATA``."""
    return Path(os.environ.get("CXR_SHARED_DATA", REPO.parent / "shared" / "data"))


CASES = [
    # (text, finding, expected status)
    ("Right lower lobe consolidation.", "consolidation", PRESENT),
    # written off the way clinicians type it; "cannot be excluded" stays uncertain
    ("Pneumothorax excluded.", "pneumothorax", ABSENT),
    ("PTX ruled out", "pneumothorax", ABSENT),
    ("Pneumonia has been ruled out.", "pneumonia", ABSENT),
    ("Pneumothorax cannot be excluded.", "pneumothorax", UNCERTAIN),
    ("Pneumonia cannot be ruled out.", "pneumonia", UNCERTAIN),
    ("Effusion is not excluded.", "pleural_effusion", UNCERTAIN),
    ("No focal consolidation.", "consolidation", ABSENT),
    ("There is no pleural effusion or pneumothorax.", "pneumothorax", ABSENT),
    ("Lungs are clear without focal consolidation, pneumothorax, or pleural effusion.", "pleural_effusion", ABSENT),
    ("No focal area of consolidation, pleural effusion, pneumothorax.", "pneumothorax", ABSENT),
    ("No acute, displaced rib fractures.", "fracture", ABSENT),
    ("Negative for pneumothorax.", "pneumothorax", ABSENT),
    ("The lungs are free of focal airspace disease.", "opacity", ABSENT),
    ("Lungs are expanded and clear of airspace disease.", "opacity", ABSENT),
    ("Previously seen effusion has resolved.", "pleural_effusion", ABSENT),
    ("Resolved left lower lobe pneumonia.", "pneumonia", ABSENT),
    ("Pneumothorax is no longer seen.", "pneumothorax", ABSENT),
    ("The heart is not enlarged.", "cardiomegaly", ABSENT),
    ("Heart size normal.", "cardiomegaly", ABSENT),
    ("Heart size is at the upper limits of normal.", "cardiomegaly", ABSENT),
    ("Borderline cardiomegaly.", "cardiomegaly", PRESENT),
    ("The cardiac silhouette is mildly enlarged.", "cardiomegaly", PRESENT),
    ("No effusion, right lower lobe consolidation.", "consolidation", PRESENT),
    ("Right lower lobe consolidation, no effusion.", "pleural_effusion", ABSENT),
    ("No pneumothorax, mild cardiomegaly.", "cardiomegaly", PRESENT),
    ("No change in the small left pleural effusion.", "pleural_effusion", PRESENT),
    ("No focal air space opacity to suggest a pneumonia.", "pneumonia", ABSENT),
    ("Possible small left pleural effusion.", "pleural_effusion", UNCERTAIN),
    ("Pneumothorax cannot be excluded.", "pneumothorax", UNCERTAIN),
    ("Cannot exclude a small pneumothorax.", "pneumothorax", UNCERTAIN),
    ("Opacity which may represent atelectasis.", "atelectasis", UNCERTAIN),
    ("Opacity which may represent atelectasis.", "opacity", PRESENT),
    ("Findings suggestive of pulmonary edema.", "edema", UNCERTAIN),
    ("Basilar opacity concerning for pneumonia.", "pneumonia", UNCERTAIN),
    ("Atelectasis versus pneumonia in the left base.", "atelectasis", UNCERTAIN),
    ("Atelectasis versus pneumonia in the left base.", "pneumonia", UNCERTAIN),
    ("Questionable nodule in the right upper lobe.", "nodule", UNCERTAIN),
    ("Mild blunting of the right costophrenic angle.", "pleural_effusion", UNCERTAIN),
    ("Opacity consistent with pneumonia.", "pneumonia", PRESENT),
    ("Probable right lower lobe pneumonia.", "pneumonia", PRESENT),
    ("No pleural effusion. However, there is a small left apical pneumothorax.", "pneumothorax", PRESENT),
    ("No effusion but there is mild cardiomegaly.", "cardiomegaly", PRESENT),
    ("Calcified granuloma in the right upper lobe.", "granuloma", PRESENT),
    ("Calcified granuloma in the right upper lobe.", "calcification", None),
    ("Degenerative changes are present in the thoracic spine.", "degenerative_spine", PRESENT),
    ("Low lung volumes.", "hypoinflation", PRESENT),
    ("Lungs are hyperexpanded, consistent with COPD.", "hyperinflation", PRESENT),
    ("Lungs are hyperexpanded, consistent with COPD.", "emphysema", PRESENT),
    ("Tortuous thoracic aorta.", "tortuous_aorta", PRESENT),
    ("Left subclavian PICC line tip in the SVC.", "support_devices", PRESENT),
    ("Interval removal of the chest tube.", "support_devices", ABSENT),
    ("Large hiatal hernia.", "hernia", PRESENT),
    ("Mild pulmonary vascular congestion.", "edema", PRESENT),
    ("No typical findings of pulmonary edema.", "edema", ABSENT),
    ("Subcutaneous edema of the chest wall is not a lung finding.", "emphysema", None),
    # "suspected" before a finding is a doubt, as after it (it was read as present before: the
    # post-cue "suspected" took the word and the pre-cue never saw it)
    ("Suspected pneumothorax.", "pneumothorax", UNCERTAIN),
    ("suspected pneumonia, no effusion", "pneumonia", UNCERTAIN),
    ("suspected pneumonia, no effusion", "pleural_effusion", ABSENT),
    ("Pneumothorax suspected.", "pneumothorax", UNCERTAIN),
    ("Pneumonia suspected clinically.", "pneumonia", UNCERTAIN),
    ("Effusion questioned on the left.", "pleural_effusion", UNCERTAIN),
]


@pytest.mark.parametrize(("text", "name", "expected"), CASES)
def test_status_of_a_finding(text: str, name: str, expected: str | None) -> None:
    assert summarize(text).get(name) == expected, extract_findings(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Normal chest radiograph.", PRESENT),
        ("No acute cardiopulmonary abnormality.", PRESENT),
        ("No focal consolidation. Heart size normal. No pleural effusion.", PRESENT),
        ("Possible small effusion. Otherwise normal.", UNCERTAIN),
        ("Stable calcified granuloma. No acute cardiopulmonary process.", ABSENT),
        ("PA chest radiograph.", None),
        ("", None),
    ],
)
def test_normal_rule(text: str, expected: str | None) -> None:
    assert summarize(text).get(NO_FINDING) == expected


def test_a_subtype_makes_its_parent_present_but_not_absent() -> None:
    assert summarize("Findings consistent with viral pneumonia.") == {
        NO_FINDING: ABSENT,
        "pneumonia": PRESENT,
        "viral_pneumonia": PRESENT,
    }
    assert summarize("No bacterial pneumonia.").get("pneumonia") is None


def test_spans_point_into_the_text_as_given() -> None:
    text = "There are no XXXX of a pleural effusion. Mild CARDIOMEGALY."
    findings = extract_findings(text)
    by_name = {f.name: f for f in findings}
    start, end = by_name["cardiomegaly"].span
    assert text[start:end] == "CARDIOMEGALY"
    assert by_name["cardiomegaly"] == Finding("cardiomegaly", PRESENT, (start, end), None)
    assert by_name["pleural_effusion"].status == ABSENT
    assert by_name["pleural_effusion"].cue == "no"
    assert [f.span for f in findings] == sorted(f.span for f in findings)


def test_clean_report_drops_deidentification_tokens() -> None:
    assert clean_report("Normal chest x-XXXX. XXXX XXXX lung volumes.") == "Normal chest x-ray. lung volumes."


def test_vocabulary_names_and_labels() -> None:
    assert list(FINDINGS) == [spec.name for spec in VOCABULARY]
    required = {
        "no_finding", "cardiomegaly", "pleural_effusion", "atelectasis", "opacity", "consolidation", "pneumonia",
        "bacterial_pneumonia", "viral_pneumonia", "nodule", "mass", "edema", "pneumothorax", "emphysema",
        "infiltration", "fibrosis", "pleural_thickening", "hernia", "fracture", "granuloma", "scoliosis",
        "degenerative_spine", "calcification",
    }  # fmt: skip
    assert required <= set(FINDINGS)
    assert all(label and label[0].isupper() for label in FINDINGS.values())


def test_rejects_non_text() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        extract_findings(None)  # type: ignore[arg-type]


# the IU X-ray evaluation --------------------------------------------------------------------------


def _load_benchmark():
    path = REPO / "tests" / "benchmarks" / "bench_findings.py"
    spec = importlib.util.spec_from_file_location("bench_findings", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules.setdefault("bench_findings", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.needs_shared_data
def test_iu_xray_macro_f1_against_human_mesh_labels() -> None:
    tgz = shared_data_dir() / "iu-xray" / "NLMCXR_reports.tgz"
    if not tgz.is_file():
        pytest.skip("needs ../shared/data/iu-xray (not in a user's clone)")
    from training.data.importers.iu_xray import read_iu_reports

    bench = _load_benchmark()
    evaluation = bench.evaluate(read_iu_reports(tgz))
    assert evaluation.reports > 3800
    table = bench.format_table(evaluation)
    assert evaluation.macro_f1() >= 0.85, table
    # the findings the product leans on most, each well above chance
    for name in ("no_finding", "cardiomegaly", "pleural_effusion", "atelectasis", "opacity", "pneumonia"):
        assert evaluation.scores[name].f1 >= 0.8, table
