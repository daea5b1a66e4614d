"""Prompt or caption -> :class:`~engine.findings.record.PromptRecord`: :func:`parse_prompt`.

Findings and their negation and uncertainty come from :mod:`engine.findings.reader`, which this
module does not change.

How a prompt is read
1. Clinical shorthand is written out in a working copy that remembers, for every character, the
   characters of the prompt it came from (so every span points into the prompt as typed):
   "RLL" -> "right lower lobe", "RLZ" -> "right lower zone", "PNX", "consol", "eff", "pna",
   "atx", "ETT", "NGT", "CVC", "PPM", "CXR", "b/l", "bilat", "L>R", "Rt"/"Lt", "w/o", "c/w",
   "NAD", "haziness", "?pneumonia" -> "possible pneumonia", "pneumonia?" -> "pneumonia suspected.",
   form answers ("PTX: no" -> "PTX absent", "effusion - yes"), a lone "L"/"R" before a place or
   a finding word, or after a finding word at the end of a clause ("effusion R"), and a clause
   that is just "normal" -> "normal study". "after", "following" and "post" start a new statement,
   so no negation or doubt reaches past them ("?PTX after CVC insertion": the line is there).
2. Typos: a word of at least seven letters that is one edit (insertion, deletion, substitution or
   transposition of neighbours) from exactly one common finding word (:data:`TYPO_TARGETS`) is
   read as that word ("pnemonia", "effusoin"), unless it is an ordinary word of that neighbourhood
   (:data:`TYPO_EXCEPTIONS`) or already a finding word itself. Short words are never corrected:
   their neighbourhoods are full of ordinary words ("nodule"/"module", "edema"/"enema").
3. :func:`engine.findings.summarize` gives ``findings``; :func:`engine.findings.extract_findings`
   gives each mention, its status and its cue.
4. Places ("right lower lobe", "left base", "bibasal", "lingula", "R lower zone") attach to the
   findings of the same clause. Clauses end at punctuation, at "and", "or", "with", "but", "plus",
   and before "no", "without", "possible" and the like, so "right effusion, no PTX" puts "right"
   on the effusion only. A clause with a place and no finding lends it to the next clause when
   "and" / "or" / "&" joins them ("right and left effusions"), else to the clause before it when
   one of those or a comma does ("pneumonia, likely RML"; "consolidation at the left base and
   right apex"). A lone side and a sideless zone in one clause are one place ("apical PTX R").
   Nothing is inferred beyond the words, with these anatomical exceptions: the middle lobe is
   right, the lingula left, plural lobes, bases, apices or zones without a side are bilateral, and
   a one-sided upper or lower zone, base or apex lies in that side's upper or lower lobe ("left
   base consolidation" -> LLL) for findings of the lung itself; for findings outside a lobe
   (:data:`NOT_IN_A_LOBE`: effusion, pneumothorax, ...) only the side and zone are kept. A mid
   zone names no lobe.
5. Age: "45-year-old", "45 yo", "45 y/o", "45yo", "45M", "aged 45", "6 month old" (0.5), weeks,
   days (months, weeks and days need "old" or a person word after them: "6 months infant"); a
   number after "for", "over", "since", "in" ... without "old" is a duration ("cough for 3 days").
   Age band from the age, else from words ("infant", "neonate", "toddler", "child", "paediatric",
   "adolescent", "adult", "elderly"; "boy"/"girl"/"man"/"woman" when nothing more
   specific is said). Sex from "female/woman/girl/lady", "male/man/boy/gentleman", and a single
   "M"/"F" only when it is attached to an age ("45M", "45 yo F", "M 45 yo"). Conflicting sexes give
   no sex.
6. View: "supine" -> supine AP; "AP", "portable", "mobile", "bedside" -> AP; "PA" -> PA;
   "lateral" -> lateral only when no frontal view is stated ("PA and lateral" -> PA). "Frontal",
   "erect" and "upright" are understood but name no single view.
7. Every other word is either a known filler or modifier (severity, distribution: understood, not
   held in the record) or is listed in ``ignored``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.findings.reader import extract_findings, summarize
from engine.findings.record import (
    MAX_AGE_YEARS,
    FindingEntry,
    PromptRecord,
    Span,
    band_of,
)
from engine.findings.vocabulary import ABSENT, NO_FINDING, PARENTS

# 2. shorthand and typos --------------------------------------------------------------------------

_ABBREVIATIONS: tuple[tuple[str, str], ...] = (
    (r"rul", "right upper lobe"),
    (r"rml", "right middle lobe"),
    (r"rll", "right lower lobe"),
    (r"lul", "left upper lobe"),
    (r"lll", "left lower lobe"),
    (r"ruz", "right upper zone"),
    (r"rmz", "right mid zone"),
    (r"rlz", "right lower zone"),
    (r"luz", "left upper zone"),
    (r"lmz", "left mid zone"),
    (r"llz", "left lower zone"),
    (r"[lr] ?[>=<] ?[lr]", "bilateral"),
    (r"b/l|bilat", "bilateral"),
    (r"rt", "right"),
    (r"lt", "left"),
    (r"haziness", "opacity"),  # not "hazy": that is as often said of an image or the weather
    (r"white[\s-]?out", "opacification"),
    (r"pnx", "pneumothorax"),
    (r"consol|consolid|consoln", "consolidation"),
    (r"effs?|effn", "effusion"),
    (r"pna", "pneumonia"),
    (r"atx", "atelectasis"),
    (r"apo", "acute pulmonary oedema"),
    (r"ccf", "cardiac failure"),
    (r"big heart", "enlarged heart"),
    (r"ett", "endotracheal tube"),
    (r"ngt?", "ng tube"),
    (r"ogt?", "og tube"),
    (r"cvc|cvl", "central venous line"),
    (r"ppm", "pacemaker"),
    (r"(?:chest|intercostal) drains?", "chest tube"),
    (r"tubes? and lines?", "lines and tubes"),
    (r"cxrs?", "chest radiograph"),
    (r"xray|xr", "x ray"),
    (r"w/o", "without"),
    (r"c/w", "consistent with"),
    (r"s/o", "suggestive of"),
    (r"-ve|neg", "negative"),
    (r"nad", "no acute abnormality"),
    (r"query|qu|poss", "possible"),
    (r"pulm", "pulmonary"),
    (r"odema|oedma|edma", "oedema"),  # common misspellings too short for the one-edit rule
)
_ABBREVIATION_RE = re.compile(
    r"(?<![\w/>=<-])(?:" + "|".join(f"(?P<a{i}>{p})" for i, (p, _) in enumerate(_ABBREVIATIONS)) + r")(?![\w/>=<])",
    re.IGNORECASE,
)

TYPO_TARGETS = (
    "pneumonia", "pneumonitis", "pneumothorax", "effusion", "effusions", "consolidation", "atelectasis",
    "atelectatic", "cardiomegaly", "opacity", "opacities", "opacification", "emphysema", "infiltrate",
    "infiltrates", "infiltration", "fibrosis", "bilateral", "lingula",
)  # fmt: skip
"""Words a typo one edit away is read as (at least seven letters: shorter ones have ordinary neighbours)."""
TYPO_EXCEPTIONS = frozenset({"lingual", "plural", "pneumatic", "bilaterally"})
"""Ordinary words one edit from a target, never corrected."""
_MIN_TYPO_LENGTH = 7

# a lone L or R is a side when a place or finding word follows it
_SIDE_LETTER_RE = re.compile(
    r"(?<![\w/>=<.-])(?P<letter>[lr])(?=[\s-]+(?:sided|side|upper|mid|middle|lower|base|bases|basal|apex|apical"
    r"|lung|hemithorax|pleural|hilum|hilar|lobe|zone|effusion|pneumothorax|ptx|consolidation|pneumonia"
    r"|collapse|opacity|opacities|atelectasis|infiltrates?|mass|nodule|pneumonia)\b)",
    re.IGNORECASE,
)
# ... or when it ends a clause right after a finding word ("effusion R", "PTX L")
_SIDE_LETTER_AFTER_RE = re.compile(
    r"(?P<word>(?<![\w-])(?:effusions?|pneumothorax|ptx|consolidation|pneumonia|collapse|opacity|opacities"
    r"|atelectasis|infiltrates?|mass|nodule)[\s-]+)(?P<letter>[lr])(?=\s*(?:$|[.,;:!?\n]))",
    re.IGNORECASE,
)
# form-style answers: "PTX: no", "effusion - yes", "cardiomegaly? no"
_NO_ANSWERS = ("no", "none", "absent", "negative", "neg", "nil")
_FORM_ANSWER_RE = re.compile(
    r"(?<=\w)\s*[:=?-]\s*(?P<answer>no|none|absent|negative|neg|nil|yes|present|positive)(?=\s*(?:$|[.,;\n]))",
    re.IGNORECASE,
)
_QUESTION_RE = re.compile(r"\?+")
# "after", "following", "post" start a statement of circumstance: no negation or doubt reaches past
# them ("?PTX after CVC insertion": the line is there)
_CIRCUMSTANCE_RE = re.compile(r"(?<=\w\s)(?:after|following|post)(?![\w-])", re.IGNORECASE)
_PERSON_WORDS = (
    r"paediatric|pediatric|child|infant|neonate|newborn|toddler|adolescent|teenager|adult|elderly|man|woman|boy|girl"
    r"|male|female|pa|ap|portable|supine|erect|frontal|lateral|patient|chest|film|study|radiograph|x ray|in|for|of"
)
_NORMAL_RE = re.compile(
    rf"(?:^|(?<=[.;:!?,\n])|(?<=\s-))(?P<pre>\s*)(?P<word>normal|unremarkable)(?=\s*(?:$|[.;:!?,\n]|(?:{_PERSON_WORDS})\b"
    r"|\d))",
    re.IGNORECASE,
)


@dataclass
class _Working:
    """A rewritten text and, per character, the (start, end) of the prompt characters it came from."""

    text: str
    origin: list[tuple[int, int]]

    def rewrite(self, pattern: re.Pattern[str], replace: Callable[[re.Match[str]], str | None]) -> _Working:
        pieces: list[str] = []
        origin: list[tuple[int, int]] = []
        position = 0
        for match in pattern.finditer(self.text):
            new = replace(match)
            if new is None or match.start() == match.end():
                continue
            pieces.append(self.text[position : match.start()])
            origin.extend(self.origin[position : match.start()])
            source = self.origin[match.start() : match.end()]
            whole = (min(s for s, _ in source), max(e for _, e in source))
            pieces.append(new)
            origin.extend([whole] * len(new))
            position = match.end()
        pieces.append(self.text[position:])
        origin.extend(self.origin[position:])
        return _Working("".join(pieces), origin)

    def source(self, start: int, end: int) -> tuple[int, int]:
        """The prompt's [start, end) that working characters [start, end) came from."""
        chars = self.origin[start:end]
        return min(s for s, _ in chars), max(e for _, e in chars)


def _one_edit(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` differ by exactly one insertion, deletion, substitution or adjacent swap."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        return (
            len(diffs) == 2 and diffs[1] == diffs[0] + 1 and a[diffs[0]] == b[diffs[1]] and a[diffs[1]] == b[diffs[0]]
        )
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long[i]:
        i += 1
    return short[i:] == long[i + 1 :]


def correct_typo(word: str) -> str | None:
    """The finding word ``word`` is a typo of (see the module docstring), or None."""
    lowered = word.lower()
    if len(lowered) < _MIN_TYPO_LENGTH or lowered in TYPO_TARGETS or lowered in TYPO_EXCEPTIONS:
        return None
    if extract_findings(lowered):
        return None
    matches = {target for target in TYPO_TARGETS if _one_edit(lowered, target)}
    return matches.pop() if len(matches) == 1 else None


def _question(match: re.Match[str]) -> str | None:
    text = match.string
    after = text[match.end() :].lstrip()
    before = text[: match.start()]
    if after[:1].isalpha() and not before[-1:].isalpha():
        return "possible "  # "?pneumonia", "? PTX"
    return " suspected." if before.rstrip()[-1:].isalpha() else None  # "pneumonia?", "PTX ?"


def _expand(prompt: str) -> _Working:
    working = _Working(prompt, [(i, i + 1) for i in range(len(prompt))])
    working = working.rewrite(
        _ABBREVIATION_RE, lambda m: _ABBREVIATIONS[int(next(k for k, v in m.groupdict().items() if v)[1:])][1]
    )
    working = working.rewrite(re.compile(r"[A-Za-z]+"), lambda m: correct_typo(m.group()))
    working = working.rewrite(
        _FORM_ANSWER_RE, lambda m: " absent" if m.group("answer").lower() in _NO_ANSWERS else " present"
    )
    working = working.rewrite(_QUESTION_RE, _question)
    working = working.rewrite(_CIRCUMSTANCE_RE, lambda m: "; " + m.group())
    working = working.rewrite(_SIDE_LETTER_RE, lambda m: "left" if m.group("letter").lower() == "l" else "right")
    working = working.rewrite(
        _SIDE_LETTER_AFTER_RE, lambda m: m.group("word") + ("left" if m.group("letter").lower() == "l" else "right")
    )
    return working.rewrite(_NORMAL_RE, lambda m: m.group("pre") + m.group("word") + " study")


# 3. places ---------------------------------------------------------------------------------------

_SITE_RE = re.compile(
    r"(?<![\w-])(?:"
    r"(?P<bi>bi[\s-]?bas(?:al|ilar|ally|es)|bi[\s-]?apical(?:ly)?)"
    r"|(?P<lingula>lingula(?:r)?)"
    r"|(?:(?P<side>right|left|bilateral(?:ly)?|both)(?:[\s-]+sided)?[\s-]+)?(?:(?P<level>upper|middle|mid|lower)[\s-]+)?"
    r"(?P<part>lobes?|zones?|lung (?:fields?|zones?)|lungs?|fields?|bases?|basal|basilar|apex|apices|apical"
    r"|hemithorax|hemithoraces)"
    r"|(?P<side_only>right|left|bilateral(?:ly)?)(?:[\s-]+sided)?"
    r")(?![\w-])"
)
_CLAUSE_END_RE = re.compile(
    r"[.;:!?,\n]|(?<!\w)(?:and|or|&|\+|with|but|plus|also|while|whereas|however|although)(?!\w)"
    r"|(?<!\w)(?=(?:no|not|without|possible|possibly|suspected|r/o|rule out|negative for|free of)(?!\w))"
)
NOT_IN_A_LOBE = frozenset(
    {
        "pneumothorax", "pleural_effusion", "pleural_thickening", "cardiomegaly", "support_devices", "hernia",
        "fracture", "scoliosis", "degenerative_spine", "sternotomy", "tortuous_aorta", "elevated_hemidiaphragm",
        "hyperinflation", "hypoinflation",
    }
)  # fmt: skip
"""Findings a zone ("left base", "right apex") gives a side and zone but no lobe: they are not in a lobe."""
_PLURAL_PARTS = {"lobes", "zones", "bases", "apices", "hemithoraces", "lung zones", "lung fields"}


@dataclass(frozen=True)
class _Site:
    side: str | None
    lobe: str | None
    zone: str | None
    span: tuple[int, int]
    named: bool = False  # the lobe was named ("right lower lobe"), not read from a zone ("right base")


def _lobe_for(side: str | None, zone: str | None) -> str | None:
    """The lobe a one-sided upper or lower zone lies in; None otherwise (a mid zone is not one lobe)."""
    if side in ("right", "left") and zone in ("upper", "lower"):
        return side[0].upper() + zone[0].upper() + "L"
    return None


def _site(match: re.Match[str]) -> _Site | None:
    group = match.groupdict()
    span = match.span()
    if group["bi"]:
        return _Site("bilateral", None, "upper" if "apic" in group["bi"] else "lower", span)
    if group["lingula"]:
        return _Site("left", "lingula", None, span, named=True)
    if group["side_only"]:
        side = group["side_only"]
        return _Site("bilateral" if side.startswith("bilateral") else side, None, None, span)
    side_word, level, part = group["side"], group["level"], re.sub(r"[\s-]+", " ", group["part"])
    side = (
        None if side_word is None else ("bilateral" if side_word in ("both", "bilateral", "bilaterally") else side_word)
    )
    zone = {"upper": "upper", "middle": "mid", "mid": "mid", "lower": "lower"}.get(level or "")
    if zone is None and part in ("base", "bases", "basal", "basilar"):
        zone = "lower"
    elif zone is None and part in ("apex", "apices", "apical"):
        zone = "upper"
    if side is None and part in _PLURAL_PARTS and zone is not None:
        side = "bilateral"
    named = part in ("lobe", "lobes")
    if named and level in ("middle", "mid"):
        lobe = "RML" if side in (None, "right") else None
        side = side or "right"
    else:
        lobe = _lobe_for(side, zone)
    if side is None and zone is None:
        return None  # "lung", "lobe": no place
    return _Site(side, lobe, zone, span, named=named and lobe is not None)


def _combine(sites: list[_Site]) -> list[_Site]:
    """A clause's lone side and its sideless zones are one place ("small apical PTX R": right, upper zone)."""
    sides = [s for s in sites if s.side in ("right", "left", "bilateral") and s.zone is None and s.lobe is None]
    zoned = [s for s in sites if s.side is None and s.zone is not None]
    if len(sides) != 1 or not zoned:
        return sites
    side = sides[0].side
    combined = [_Site(side, _lobe_for(side, s.zone), s.zone, s.span) for s in zoned]
    return [s for s in sites if s is not sides[0] and s not in zoned] + combined


def _clauses(work: str) -> list[tuple[int, int, str]]:
    """(start, end, the separator that ends it) of each clause of the lower-cased working text."""
    bounds = []
    start = 0
    for match in _CLAUSE_END_RE.finditer(work):
        bounds.append((start, match.start(), match.group()))
        start = match.end()
    bounds.append((start, len(work), ""))
    return [b for b in bounds if b[1] > b[0]]


# 4. people and views -----------------------------------------------------------------------------

_NUMBER = r"(?P<number>\d{1,3}(?:\.\d+)?)"
_AGE_RE = re.compile(
    rf"(?<![\w.]){_NUMBER}[\s-]*(?P<unit>years?|yrs?|yo|y/o|y\.o\.?|y|months?|mos?|mths?|weeks?|wks?|days?)"
    r"(?P<old>[\s-]*old)?(?![\w/])"
    rf"|(?<!\w)aged?\s*(?:of\s*)?:?\s*{_NUMBER.replace('number', 'aged')}(?![\w.])",
    re.IGNORECASE,
)
_DURATION_BEFORE_RE = re.compile(
    r"(?<!\w)(?:for|over|since|past|last|after|in|within|during|x)\s+(?:the\s+)?(?:last\s+|past\s+)?$",
    re.IGNORECASE,
)
_PERSON_AFTER_RE = re.compile(
    r"\s*(?:old\s+)?(?:infants?|baby|babies|boys?|girls?|child|neonates?|toddlers?|males?|females?|M|F)(?!\w)",
    re.IGNORECASE,
)
_AGE_SEX_RE = re.compile(
    r"(?<![\w.])(?P<number>\d{1,3})\s?(?P<sex>[MF])(?!\w)|(?<![\w.])(?P<n2>\d{1,3})(?P<s2>[mf])(?!\w)"
)
_UNIT_YEARS = {"y": 1.0, "m": 1 / 12, "w": 7 / 365.25, "d": 1 / 365.25}
_BAND_WORDS: tuple[tuple[str, str, bool], ...] = (
    # (pattern, band, strong): a strong word beats a weak one ("elderly woman", "paediatric infant")
    (r"neonates?|neonatal|newborns?|new[\s-]born|preterm|premature|infants?|babies|baby", "infant", True),
    (r"toddlers?|child|children|kids?|schoolchild", "child", True),
    (r"paediatric|pediatric|paeds?|peds", "child", False),
    (r"adolescents?|teenagers?|teens?|teenage", "adolescent", True),
    (r"older adults?|elderly|geriatric|older", "older_adult", True),
    (r"adults?", "adult", True),
    (r"boys?|girls?", "child", False),
    (r"men|man|women|woman|gentleman|gent|lady|ladies", "adult", False),
)
_BAND_RE = re.compile(
    r"(?<![\w-])(?:" + "|".join(f"(?P<b{i}>{p})" for i, (p, _, _) in enumerate(_BAND_WORDS)) + r")(?![\w-])",
    re.IGNORECASE,
)
_SEX_RE = re.compile(
    r"(?<![\w-])(?:(?P<female>females?|women|woman|girls?|lady|ladies)|(?P<male>males?|men|man|boys?|gentleman|gent))"
    r"(?![\w-])",
    re.IGNORECASE,
)
_VIEW_RE = re.compile(
    r"(?<![\w-])(?:(?P<supine>supine)|(?P<ap>ap|a\.p\.|antero[\s-]?posterior|portable|mobile|bedside)"
    r"|(?P<pa>pa|p\.a\.|postero[\s-]?anterior)|(?P<lateral>lateral|lat)|(?P<frontal>frontal|erect|upright|semi[\s-]?erect))"
    r"(?![\w-])",
    re.IGNORECASE,
)
_STUDY_RE = re.compile(
    r"(?<![\w-])(?:chest|radiographs?|radiography|x[\s-]?rays?|films?|images?|study|studies|exam|examination|views?"
    r"|projection|thorax)(?![\w-])",
    re.IGNORECASE,
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


MODIFIERS = _words(
    """small large tiny big massive moderate moderately mild mildly severe severely minimal trace subtle extensive
    focal patchy dense diffuse diffusely multifocal lobar segmental subsegmental plate like plate-like airspace air
    space interstitial perihilar peripheral central pulmonary lung lungs pleural tension loculated new worsening
    increasing acute chronic hiatus hiatal early late bacterial viral volume volumes markings marked significant
    obvious clear wet dense round rounded well defined ill cavitating spiculated apical basal lobe lobes zone zones
    heart cardiac silhouette size enlarged enlargement tip tips tube tubes line lines increased decreased reduced
    bulky prominent"""
)
"""Words understood but not held in the record (severity, distribution, anatomy without a side)."""
FILLERS = _words(
    """a an the of with without in on at to for from and or but by as is are was were be been being there this that
    these those it its his her their showing shows show showed demonstrating demonstrates seen noted present
    visible evident patient pt findings finding change changes evidence signs sign consistent keeping compatible
    likely probable probably representing suggestive suggesting suggest please generate draw make create give me
    picture example typical classic case of year years old month months week weeks day days yo aged age
    mm cm very some any also both side sided situ after before following since"""
)
"""Words that carry no record field and need no "ignored" note."""
_MEASURE_RE = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?(?:mm|cm)(?!\w)", re.IGNORECASE)
_WORD_RE = re.compile(r"[^\W_]+(?:[/'.-][^\W_]+)*")


def _age(working: _Working) -> tuple[float | None, str | None, list[Span]]:
    """(age in years, sex from an attached M/F, spans)."""
    text = working.text
    found: list[tuple[float, tuple[int, int], str | None]] = []
    for match in _AGE_RE.finditer(text):
        if match.group("old") is None and _DURATION_BEFORE_RE.search(text, 0, match.start()):
            continue  # "cough for 3 days", "over the last 2 years": a duration, not an age ("for a 3 week old": one)
        if match.group("number") is not None:
            unit = match.group("unit").lower()
            person_after = _PERSON_AFTER_RE.match(text, match.end())
            if not unit.startswith("y") and match.group("old") is None and person_after is None:
                continue  # "6 months" alone may be a duration; "6 month old", "6 months infant" are ages
            per = _UNIT_YEARS["m" if unit.startswith("m") else unit[0]]
            years = float(match.group("number")) * per
        else:
            years = float(match.group("aged"))
        found.append((years, match.span(), None))
    for match in _AGE_SEX_RE.finditer(text):
        number = match.group("number") or match.group("n2")
        sex = (match.group("sex") or match.group("s2")).upper()
        if not any(s[0] <= match.start() < s[1] for _, s, _ in found):
            found.append((float(number), match.span(), "female" if sex == "F" else "male"))
    found = [item for item in found if 0 < item[0] <= MAX_AGE_YEARS]
    if not found:
        return None, None, []
    found.sort(key=lambda item: item[1])
    years, (start, end), sex = found[0]
    spans = [Span(*working.source(start, end), "age", f"{years:g}")]
    if sex is None:  # "45 yo M", "M 45 yo"
        after = re.match(r"\s*,?\s*(?P<s>[MF])(?!\w)", text[end:])
        before = re.search(r"(?<![\w.])(?P<s>[MF])\s*,?\s*$", text[:start])
        attached = after or before
        if attached is not None:
            offset = end if attached is after else 0
            s_start, s_end = attached.start("s") + offset, attached.end("s") + offset
            sex = "female" if attached.group("s") == "F" else "male"
            spans.append(Span(*working.source(s_start, s_end), "sex", sex))
    elif sex is not None:
        spans.append(Span(*working.source(start, end), "sex", sex))
    return round(years, 2), sex, spans


def _band(working: _Working) -> tuple[str | None, list[Span]]:
    strong: list[str] = []
    weak: list[str] = []
    spans = []
    for match in _BAND_RE.finditer(working.text):
        index = int(next(k for k, v in match.groupdict().items() if v)[1:])
        _, band, is_strong = _BAND_WORDS[index]
        (strong if is_strong else weak).append(band)
        spans.append(Span(*working.source(*match.span()), "age_band", band))
    for bands in (strong, weak):
        if bands:
            return bands[0], spans  # the first stated when words disagree
    return None, spans


def _sex(working: _Working) -> tuple[set[str], list[Span]]:
    sexes = set()
    spans = []
    for match in _SEX_RE.finditer(working.text):
        sex = "female" if match.group("female") else "male"
        sexes.add(sex)
        spans.append(Span(*working.source(*match.span()), "sex", sex))
    return sexes, spans


def _view(working: _Working) -> tuple[str | None, list[Span]]:
    kinds: list[str] = []
    spans = []
    for match in _VIEW_RE.finditer(working.text):
        kind = next(k for k, v in match.groupdict().items() if v)
        kinds.append(kind)
        value = {"supine": "supine AP", "ap": "AP", "pa": "PA", "lateral": "lateral", "frontal": "frontal"}[kind]
        spans.append(Span(*working.source(*match.span()), "view", value))
    if "supine" in kinds:
        return "supine AP", spans
    frontal = [k for k in kinds if k in ("ap", "pa")]
    if frontal:
        return frontal[0].upper(), spans  # the first stated when PA and AP disagree
    return ("lateral" if "lateral" in kinds else None), spans


# 5. parsing --------------------------------------------------------------------------------------


def _cue_span(work: str, cue: str, mention: tuple[int, int]) -> tuple[int, int] | None:
    """Where the cue text of a mention is: the nearest occurrence before it, else the first after it."""
    needle = cue.lower()
    before = work.rfind(needle, 0, mention[0])
    if before >= 0:
        return before, before + len(needle)
    after = work.find(needle, mention[1])
    return (after, after + len(needle)) if after >= 0 else None


def _entries(work: str, working: _Working) -> tuple[list[FindingEntry], list[Span]]:
    """Finding entries with their places, and the spans of findings, cues and places."""
    mentions = [m for m in extract_findings(working.text) if m.name != NO_FINDING]
    spans: list[Span] = []
    for mention in extract_findings(working.text):
        spans.append(Span(*working.source(*mention.span), "finding", mention.name))
        if mention.cue is not None:
            cue = _cue_span(work, mention.cue, mention.span)
            if cue is not None:
                spans.append(Span(*working.source(*cue), "cue", mention.status))
    sites = [s for s in (_site(m) for m in _SITE_RE.finditer(work)) if s is not None]
    for site in sites:
        value = " ".join(v for v in (site.side, site.lobe, site.zone) if v)
        spans.append(Span(*working.source(*site.span), "place", value))
    # 1. each clause: its mentions, its own places, and whether "and" / "or" / "&" joins it to the next
    clauses = [
        (
            [m for m in mentions if start <= m.span[0] < end],
            [s for s in sites if start <= s.span[0] < end],
            separator.strip(),
        )
        for start, end, separator in _clauses(work)
    ]
    # 2. a clause with places and no finding lends them to the clause after it when "and" / "or" / "&"
    #    joins them ("right and left effusions"), else to the clause before it when one of those or a
    #    comma does ("consolidation at the left base and right apex", "pneumonia, likely RML")
    places: list[list[_Site]] = [list(own) for _, own, _ in clauses]
    for index, (here, own, separator) in enumerate(clauses):
        if here or not own:
            continue
        if separator in ("and", "or", "&") and index + 1 < len(clauses) and clauses[index + 1][0]:
            places[index + 1] = own + places[index + 1]
        elif index > 0 and clauses[index - 1][2] in ("and", "or", "&", ",") and clauses[index - 1][0]:
            places[index - 1] = places[index - 1] + own
    entries: list[FindingEntry] = []
    for (here, _, _), clause_sites in zip(clauses, places, strict=True):
        for mention in here:
            for site in _combine(clause_sites) or [None]:
                entry = FindingEntry(mention.name, mention.status)
                if site is not None:
                    # a zone names a lobe only for a finding of the lung itself ("left base effusion": no LLL)
                    lobe = site.lobe if site.named or mention.name not in NOT_IN_A_LOBE else None
                    entry = FindingEntry(mention.name, mention.status, site.side, lobe, site.zone)
                entries.append(entry)
    # a subtype present or uncertain makes its parent so at the same place (as summarize does)
    for entry in list(entries):
        parent = PARENTS.get(entry.finding)
        if parent is not None and entry.status != ABSENT:
            entries.append(FindingEntry(parent, entry.status, entry.side, entry.lobe, entry.zone))
    return _merge_entries(entries), spans


def _merge_entries(entries: Iterable[FindingEntry]) -> list[FindingEntry]:
    """Duplicates dropped; an entry without a place dropped where the same finding and status has one;
    a right and a left entry that differ in nothing else made one bilateral entry."""
    unique = list(dict.fromkeys(entries))
    placed = {(e.finding, e.status) for e in unique if e.side or e.lobe or e.zone}
    unique = [e for e in unique if e.side or e.lobe or e.zone or (e.finding, e.status) not in placed]
    merged: list[FindingEntry] = []
    for entry in unique:
        if entry.side in ("right", "left") and entry.lobe is None:
            other = FindingEntry(
                entry.finding, entry.status, "left" if entry.side == "right" else "right", None, entry.zone
            )
            if other in unique:
                both = FindingEntry(entry.finding, entry.status, "bilateral", None, entry.zone)
                if both not in merged:
                    merged.append(both)
                continue
        merged.append(entry)
    return list(dict.fromkeys(merged))


def _ignored(prompt: str, working: _Working, used: list[Span]) -> list[Span]:
    """Words of the prompt no span covers and that are neither fillers nor modifiers; neighbours joined.

    A word written out from shorthand ("c/w" -> "consistent with") is judged by what it became.
    """
    covered = sorted((s.start, s.end) for s in used)
    known = FILLERS | MODIFIERS
    written = [(working.source(*m.span()), m.group().lower()) for m in _WORD_RE.finditer(working.text)]
    words = []
    for match in _WORD_RE.finditer(prompt):
        start, end = match.span()
        if any(s < end and start < e for s, e in covered) or match.group().lower() in known:
            continue
        became = [word for (s, e), word in written if s < end and start < e]
        if became and all(word in known for word in became):
            continue
        words.append((start, end))
    phrases: list[list[int]] = []
    for start, end in words:
        if phrases and not prompt[phrases[-1][1] : start].strip():
            phrases[-1][1] = end
        else:
            phrases.append([start, end])
    return [Span(start, end, "ignored", prompt[start:end]) for start, end in phrases]


def parse_prompt(prompt: str) -> PromptRecord:
    """The structured record of a prompt or caption (see the module docstring for how it is read)."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    # 1. shorthand, typos, question marks, lone L/R
    working = _expand(prompt)
    # lower case without changing the length (a few characters lower-case to two: "İ")
    work = "".join(c.lower() if len(c.lower()) == 1 else c for c in working.text)
    # 2. findings, their statuses and places
    findings = summarize(working.text)
    entries, spans = _entries(work, working)
    # 3. age, band, sex, view
    age, age_sex, age_spans = _age(working)
    band, band_spans = _band(working)
    sexes, sex_spans = _sex(working)
    if age_sex is not None:
        sexes.add(age_sex)
    view, view_spans = _view(working)
    spans += age_spans + band_spans + sex_spans + view_spans
    for match in _STUDY_RE.finditer(working.text):
        spans.append(Span(*working.source(*match.span()), "study", match.group().lower()))
    for match in _MEASURE_RE.finditer(prompt):
        spans.append(Span(*match.span(), "modifier", match.group()))  # a size: understood, not held
    for match in _WORD_RE.finditer(prompt):
        if match.group().lower() in MODIFIERS:
            spans.append(Span(*match.span(), "modifier", match.group().lower()))
    # 4. a band from the age wins over words; the words still count as understood
    if age is not None:
        band = band_of(age)
    spans = sorted(set(spans), key=lambda s: (s.start, s.end, s.kind, s.value))
    return PromptRecord(
        text=prompt,
        findings=findings,
        entries=tuple(entries),
        age=age,
        age_band=band,
        sex=next(iter(sexes)) if len(sexes) == 1 else None,
        view=view,
        spans=tuple(spans),
        ignored=tuple(_ignored(prompt, working, spans)),
    )


__all__ = [
    "FILLERS",
    "MODIFIERS",
    "NOT_IN_A_LOBE",
    "TYPO_EXCEPTIONS",
    "TYPO_TARGETS",
    "correct_typo",
    "parse_prompt",
]
