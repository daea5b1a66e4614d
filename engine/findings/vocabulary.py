"""The finding vocabulary: every finding the project knows, with its synonyms and variants, its
display label, and the phrases that state its absence or never more than a possibility; the three
statuses a finding can have. Data, read by :mod:`engine.findings.reader` (report or prompt text ->
findings) and named by everything that stores findings (manifests, records, cards). Pure standard
library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PRESENT = "present"
ABSENT = "absent"
UNCERTAIN = "uncertain"
STATUSES = (PRESENT, UNCERTAIN, ABSENT)

NO_FINDING = "no_finding"


@dataclass(frozen=True)
class FindingSpec:
    """One finding of the vocabulary.

    ``patterns``: regular expressions (a space matches any run of spaces and hyphens) for a
    mention; ``absent_patterns``: phrases that state the finding is absent; ``uncertain_patterns``:
    phrases that never say more than "possibly"; ``parent``: the broader finding a subtype implies;
    ``overridden_by``: findings whose overlapping mention takes the words ("calcified granuloma"
    is a granuloma, not a calcification).
    """

    name: str
    label: str
    patterns: tuple[str, ...]
    absent_patterns: tuple[str, ...] = ()
    uncertain_patterns: tuple[str, ...] = ()
    parent: str | None = None
    overridden_by: tuple[str, ...] = ()


def one_of(*alternatives: str) -> str:
    """A regular-expression group of alternatives: ``(?:a|b|c)``."""
    return "(?:" + "|".join(alternatives) + ")"


# 1. vocabulary -----------------------------------------------------------------------------------

_HEART = (
    r"(?:heart|cardiac silhouette|cardiac shadow|cardiac size|cardiac contours?|cardiomediastinal silhouettes?"
    r"|cardiomediastinal contours?|cardiopericardial silhouette|cardio mediastinal silhouette|cardiac)"
)
_QUALIFIERS = one_of(
    "mild", "mildly", "moderate", "moderately", "marked", "markedly", "severe", "severely", "slight", "slightly",
    "minimal", "minimally", "significantly", "stably", "again", "still", "now", "likely", "probably", "at least",
    "top", "borderline", "globally",
)  # fmt: skip
_SPINE = one_of(
    "spine", "spinal", "vertebra", "vertebrae", "vertebral", "t spine", "l spine", "c spine", "thoracolumbar",
    "thoracic", "lumbar", "cervical", r"endplates?", r"discs?", r"spondyl\w*",
)  # fmt: skip
_CARDIAC_OUTLINE = one_of(
    "heart", "cardiac silhouette", "cardiac shadow", "cardiomediastinal silhouette", "cardiopericardial silhouette"
)
_STUDY = one_of("chest", "study", "exam", "examination", "radiograph", "x ray", "film")

VOCABULARY: tuple[FindingSpec, ...] = (
    FindingSpec(
        NO_FINDING,
        "No finding (normal study)",
        (
            r"no (?:radiographic )?(?:evidence of )?(?:an? )?(?:acute|active|significant|focal)(?: or chronic)?"
            r"(?: (?:cardiopulmonary|cardiac|pulmonary|intrathoracic|thoracic|chest|cardiothoracic|lung|disease"
            r"|cardiopulmonary or osseous))?"
            r" (?:abnormalit(?:y|ies)|disease|process(?:es)?|findings?|pathology|changes?|illness|abnormal findings?)",
            r"no (?:radiographic |significant )?(?:evidence of )?(?:cardiopulmonary |pulmonary |intrathoracic )?"
            r"(?:abnormalit(?:y|ies)|disease)",
            r"negative for (?:an? )?(?:acute|active) (?:cardiopulmonary |pulmonary |intrathoracic )?"
            r"(?:abnormalit(?:y|ies)|disease|process|findings?)",
            rf"negative (?:acute )?(?:cardiopulmonary |chest )?(?:abnormality|{_STUDY})(?: {_STUDY})?",
            rf"normal {_STUDY}(?: {_STUDY})?",
            rf"{_STUDY} (?:is |appears )?(?:normal|unremarkable|within normal limits)",
            r"unremarkable (?:chest|study|exam|examination|radiograph)(?: x ray| radiograph| film| study)?",
            r"no finding",
        ),
    ),
    FindingSpec(
        "cardiomegaly",
        "Cardiomegaly",
        (
            r"cardiomegaly",
            r"(?:heart|cardiac|cardiomediastinal) (?:silhouette )?enlargement",
            rf"enlargement of the {_CARDIAC_OUTLINE}",
            rf"(?:enlarged|large) (?:{_CARDIAC_OUTLINE}|cardiac size)",
            rf"{_HEART}(?: size)?(?: (?:is|are|appears?|remains?|has|have|been|not|no longer|{_QUALIFIERS})){{0,5}}"
            r" (?:enlarged|large)",
            r"borderline (?:heart|cardiac) size|(?:heart|cardiac) size (?:is )?borderline",
        ),
        absent_patterns=(
            rf"{_HEART}(?: size)?(?: and (?:the )?[a-z]+(?: [a-z]+)?(?: silhouettes?| contours?)?)?"
            r"(?: (?:is|are|appears?|remains?))?(?: (?:stable|again|otherwise|grossly))?(?: and)?"
            r" (?:normal|within normal limits|unremarkable|normal in size|of normal size|not enlarged)",
            r"normal(?: sized?)? (?:heart|cardiac silhouette|cardiac size|heart size|cardiomediastinal silhouette)",
            r"(?:heart|cardiac) size (?:is )?normal",
            # the upper limit of normal is still normal
            rf"{_HEART}(?: size)?(?: (?:is|are|appears?|remains?|at|near|towards?|the|top|of|stable))*"
            r" (?:upper limits? (?:of )?normal|upper normal|top normal)",
            r"upper limits? of normal (?:heart|cardiac) size",
        ),
    ),
    FindingSpec(
        "pleural_effusion",
        "Pleural effusion",
        (r"(?<!pericardial\s)effusions?", r"pleural fluid", r"hydrothorax", r"hydropneumothora(?:x|ces)"),
        uncertain_patterns=(
            r"blunt(?:ing|ed) of (?:the )?(?:right |left |bilateral |both |posterior )*costophrenic",
            r"costophrenic (?:angles?|sulcus|sulci|recess(?:es)?)(?: (?:is|are|remains?|mildly|minimally|slightly))*"
            r" blunt(?:ed|ing)",
            r"(?:right|left|bilateral|posterior) (?:costophrenic )?blunting",
        ),
    ),
    FindingSpec(
        "atelectasis",
        "Atelectasis",
        (
            r"atelecta(?:sis|ses|tic)",
            r"(?:lobar|lobe|segmental|lung) collapse",
            r"collapsed? (?:of )?(?:the )?(?:right |left )?(?:upper |middle |lower )?(?:lobe|lung)",
        ),
    ),
    FindingSpec(
        "opacity",
        "Lung opacity / airspace disease",
        (
            r"opaci(?:ty|ties|fication|fications|fied)",
            r"air ?space (?:disease|process|opacit(?:y|ies)|filling)",
            r"(?<!bone\s)(?<!soft\stissue\s)densit(?:y|ies)",
            r"ground glass",
        ),
    ),
    FindingSpec("consolidation", "Consolidation", (r"consolidat(?:ion|ions|ive|ed)",)),
    FindingSpec(
        "pneumonia",
        "Pneumonia",
        (r"(?:broncho)?pneumonias?", r"pneumonitis"),
        # an infectious process on a radiograph is a possible pneumonia
        uncertain_patterns=(
            r"infectious (?:process|etiology|infiltrates?)",
            r"(?:chest|lung|pulmonary|respiratory|atypical|acute) infections?",
        ),
        overridden_by=("bacterial_pneumonia", "viral_pneumonia"),
    ),
    FindingSpec(
        "bacterial_pneumonia",
        "Bacterial pneumonia",
        (r"bacterial (?:pneumonias?|infections?|process|etiology)",),
        parent="pneumonia",
    ),
    FindingSpec(
        "viral_pneumonia",
        "Viral pneumonia",
        (r"viral (?:pneumonias?|pneumonitis|infections?|process|etiology|bronchiolitis)",),
        parent="pneumonia",
    ),
    # "nodular opacity" describes an opacity, not a nodule
    FindingSpec("nodule", "Nodule", (r"nodules?", r"(?:fibro|reticulo|micro) ?nodul(?:e|es|ar)")),
    FindingSpec("mass", "Mass", (r"masses", r"mass(?! effect)(?:es|like)?")),
    FindingSpec(
        "edema",
        "Pulmonary edema / congestion",
        (
            r"(?<!soft\stissue\s)o?edema(?:tous)?",
            r"(?:pulmonary |vascular |interstitial |pulmonary vascular |venous )?congesti(?:on|ve changes)",
            r"vascular (?:prominence|redistribution|engorgement|indistinctness|congestive)",
            r"(?:prominent|engorged|indistinct|increased) (?:central )?(?:pulmonary |lung )?"
            r"vascula(?:rity|ture|r markings|r margination)",
            r"(?:prominence|engorgement|indistinctness) of (?:the )?(?:central )?(?:pulmonary )?vascula(?:rity|ture)",
            r"(?:pulmonary )?vascula(?:rity|ture) (?:is |are |appears? )?(?:mildly |slightly )?"
            r"(?:prominent|engorged|indistinct|congested)",
            r"pulmonary venous hypertension",
            r"congestive (?:heart )?failure",
            r"\bchf\b",
            r"(?:heart|cardiac) failure",
            r"fluid overload",
            r"cephalization",
            r"vascular engorgement",
        ),
    ),
    FindingSpec("pneumothorax", "Pneumothorax", (r"pneumothora(?:x|ces)", r"\bptx\b")),
    FindingSpec(
        "emphysema",
        "Emphysema / COPD",
        (
            r"emphysema(?:tous)?",
            r"\bcopd\b",
            r"chronic obstructive (?:pulmonary |lung |airways? )?disease",
            r"bull(?:a|ae|ous)",
        ),
    ),
    FindingSpec("infiltration", "Infiltration", (r"infiltrat(?:e|es|ion|ions|ive)",)),
    FindingSpec("fibrosis", "Fibrosis", (r"fibros(?:is|es)", r"fibrotic", r"honeycomb(?:ing)?")),
    FindingSpec(
        "pleural_thickening",
        "Pleural thickening",
        (
            r"pleural (?:and parenchymal |parenchymal )?(?:[a-z]+ ?/ ?)?thickening",
            r"thickening of (?:the )?(?:right |left |bilateral |apical )*pleura",
            r"(?:bi)?apical (?:[a-z]+ )?(?:pleural )?(?:thickening|capping|caps?)",
            r"fissur(?:al|e) thickening|thickening (?:of|in|along) (?:the )?(?:[a-z]+ )?fissures?",
            r"pleural plaques?",
        ),
    ),
    FindingSpec("hernia", "Hiatal hernia", (r"hernia(?:s|tion)?",)),
    FindingSpec("fracture", "Fracture", (r"fractur(?:e|es|ed)", r"\bfx\b")),
    FindingSpec(
        "granuloma",
        "Granuloma",
        (r"granulom(?:a|as|ata|atous)", r"calcified (?:[a-z]+ ){0,3}granulom(?:a|as|ata)"),
    ),
    FindingSpec(
        "scoliosis",
        "Scoliosis",
        (
            r"(?:levo|dextro)?scolio(?:sis|tic)",
            r"(?:levo|dextro)(?:convex|curvature)",
            r"curvature of the (?:thoracic |lumbar |thoracolumbar )?spine",
        ),
    ),
    FindingSpec(
        "degenerative_spine",
        "Degenerative spine disease",
        (
            r"spondylo(?:sis|tic|sis deformans)",
            r"osteophyt(?:e|es|osis|ic)|syndesmophytes?",
            rf"(?:degenerat|arthrit|arthropath|spur|sclero)\w*[^.;:]{{0,50}}?\b{_SPINE}",
            rf"{_SPINE}\b[^.;:]{{0,40}}?\b(?:degenerat|arthrit|arthropath|spurring|spurs)\w*",
            r"\bddd\b|\bdjd\b",
            r"disc space narrowing",
            r"endplate (?:changes?|sclerosis|spurring|spurs|osteophytes?)",
        ),
    ),
    FindingSpec(
        "calcification",
        "Calcification",
        (
            r"calcifi(?:cation|cations|ed)",
            r"atherosclero(?:sis|tic)",
        ),
        overridden_by=("granuloma",),
    ),
    FindingSpec("scarring", "Scarring", (r"scar(?:s|ring|red)?", r"cicatri\w*")),
    FindingSpec(
        "hyperinflation",
        "Hyperinflation",
        (r"hyper ?(?:inflat|expan|aerat)\w*", r"over ?(?:inflat|expan|aerat)\w*"),
    ),
    FindingSpec(
        "hypoinflation",
        "Low lung volumes",
        (
            r"(?:low|lower|decreased|decreasing|diminished|reduced|small) (?:lung )?volumes?",
            r"hypo ?(?:inflat|aerat|ventilat|expan)\w*",
            r"under ?(?:inflat|expan)\w*",
            r"(?:lung )?volumes (?:are |remain )?(?:[a-z]+ ){0,2}(?:low|diminished|decreased|reduced|small)",
            r"(?:poor|shallow|suboptimal|limited|low) (?:inspiration|inspiratory (?:effort|volumes?)|inflation)",
        ),
    ),
    FindingSpec(
        "tortuous_aorta",
        "Tortuous aorta",
        (
            r"tortu(?:ous|osity)",
            r"ectatic (?:thoracic )?aort\w*|aort\w*(?: \w+){0,3} ectatic|aortic ectasia",
            r"unfold(?:ed|ing)(?: of)?(?: the)? (?:thoracic )?aort\w*",
        ),
    ),
    FindingSpec(
        "elevated_hemidiaphragm",
        "Elevated hemidiaphragm",
        (
            r"elevat(?:ed|ion)[^.;:]{0,25}?(?:hemi ?)?diaphragm\w*",
            r"(?:hemi ?)?diaphragm\w*[^.;:]{0,25}?elevat(?:ed|ion)",
            r"eventration",
        ),
    ),
    FindingSpec(
        "support_devices",
        "Support devices / surgical material",
        (
            r"pacemakers?|pacers?|defibrillators?|\baicd\b|\bicd\b|(?:cardiac |pulse )?generator",
            r"(?:pacing|pacemaker|pacer|cardiac|monitor|monitoring|ecg|ekg|telemetry|external) (?:[a-z]+ )?leads?",
            r"catheters?|\bpicc\b|port ?a ?cath|portacath|\bport\b",
            r"central (?:venous )?line|(?:jugular|subclavian) (?:line|catheter)",
            r"lines and tubes",
            r"(?:chest|endotracheal|tracheostomy|feeding|nasogastric|enteric|gastric|dobhoff|drainage|shunt"
            r"|\bng\b|\bet\b|\bog\b) tub(?:es?|ing)",
            r"tracheostomy|shunt",
            r"(?:closure|cardiac|electronic|monitoring|medical|surgical) devices?|(?:neuro|nerve |spinal )?stimulator",
            r"(?:surgical|vascular|cholecystectomy|axillary) clips|\bclips\b",
            r"stents?|sutures?|suture material",
            r"(?:orthopedic |spinal |surgical |fixation )?hardware|(?:internal )?fixation|bone anchors?",
            r"(?<!breast\s)prosthe(?:sis|ses|tic)",
            r"(?:valve|joint|shoulder) replacement|ivc filter",
            r"(?:with |whose |distal )?tips? (?:[a-z]+ ){0,2}"
            r"(?:projects|projecting|overlies|overlying|terminat\w*|at|in|approximat\w*)",
        ),
    ),
    FindingSpec(
        "sternotomy",
        "Sternotomy / CABG changes",
        (
            r"sternotom(?:y|ies)",
            r"sternal (?:wires?|sutures?)",
            r"\bcabg\b",
            r"(?:coronary )?bypass graft(?:ing)?",
            r"cerclage",
        ),
    ),
)

FINDINGS: dict[str, str] = {spec.name: spec.label for spec in VOCABULARY}
"""Finding name -> display label, in vocabulary order."""

PARENTS: dict[str, str] = {spec.name: spec.parent for spec in VOCABULARY if spec.parent}

NORMAL_IMPLIES_ABSENT: tuple[str, ...] = (
    "pneumonia", "bacterial_pneumonia", "viral_pneumonia", "consolidation", "pleural_effusion", "pneumothorax",
    "cardiomegaly", "edema", "atelectasis", "infiltration",
)  # fmt: skip
"""Findings that a study labelled normal (``no_finding`` present) rules out, and that a training caption
or record may therefore state as absent although the label table does not list them: Kermany's NORMAL
class is "no pneumonia", NIH's "No Finding" none of its fourteen labels. Without them a normal film was
never "no pneumonia" in training, and "no pneumonia" prompts drew pneumonia (issue 16's negation check).
The findings users deny and the models draw; not every finding (a caption would become a list)."""


def with_implied_absent(findings: Mapping[str, str]) -> dict[str, str]:
    """``findings`` (name -> status) and, when ``no_finding`` is present, each :data:`NORMAL_IMPLIES_ABSENT`
    finding it does not state, as absent (after the stated ones, in that order)."""
    out = dict(findings)
    if out.get(NO_FINDING) == PRESENT:
        out.update({name: ABSENT for name in NORMAL_IMPLIES_ABSENT if name not in out})
    return out


__all__ = [
    "ABSENT",
    "FINDINGS",
    "NORMAL_IMPLIES_ABSENT",
    "NO_FINDING",
    "PARENTS",
    "PRESENT",
    "STATUSES",
    "UNCERTAIN",
    "VOCABULARY",
    "FindingSpec",
    "one_of",
    "with_implied_absent",
]
