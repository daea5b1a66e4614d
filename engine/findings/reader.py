"""Report or prompt text -> findings, each present / absent / uncertain (rules in the spirit of NegEx
and the CheXpert labeler).

Used by the desktop app's prompt analyser, by the training importers (labels from reports) and to
check that generated captions say what their labels say. Pure standard library.

How a text is read
1. A working copy is lower-cased and de-identification tokens (``XXXX``) are blanked; it keeps
   the text's length, so every span points into the text as given.
2. The text is cut into sentences (``. ! ? ; :`` and blank lines) and each sentence into clauses
   before words that start another statement ("but", "however", "although", "except", "other
   than", "which", "there is", "is seen", ...).
3. Findings are found by their synonyms and variants (:data:`VOCABULARY`, matched over the whole
   sentence); a few phrases state a finding's absence directly ("heart size is normal",
   "heart size at the upper limit of normal" -> cardiomegaly absent) or never more than a
   possibility ("blunting of the costophrenic angle", "infectious process" -> uncertain), and
   statements of a normal study ("no acute cardiopulmonary abnormality") are ``no_finding`` mentions.
4. Each mention gets its status from the cues of the clause it starts in:
   - a cue within a few words *after* it decides first ("... is not seen", "... has resolved",
     "... cannot be excluded"), unless another finding stands between them other than as
     "A and B are not seen";
   - else the nearest cue *before* it: negation ("no", "not", "without", "negative for", "free
     of", "clear of", "resolved", "removal of", ...) -> absent; uncertainty ("may", "possible",
     "questionable", "cannot exclude", "suggestive of", "concerning for", "differential",
     "versus", ...) -> uncertain. A weak uncertainty cue under an earlier negation keeps the
     negation ("no opacity to suggest pneumonia": absent). "A versus B" makes both uncertain.
   - Hedges of high probability ("probable", "likely", "consistent with", "compatible with",
     "representing") count as present, as reporting lexicons (and the IU X-ray annotators) read
     them. Phrases that look like negations but are not ("no change in the effusion") are masked.
   - A cue reaches across commas through a list ("no consolidation, effusion, or pneumothorax";
     "no acute, displaced rib fractures") but not into an item that says where, how much or
     that it is there ("no effusion, right lower lobe consolidation": consolidation present).
5. :func:`summarize` merges mentions per finding: present beats uncertain beats absent (as the
   CheXpert labeler aggregates); a subtype that is present or uncertain makes its parent at
   least as much (bacterial pneumonia -> pneumonia).

The normal rule (``no_finding``): present when no finding of the vocabulary is present or
uncertain and the text either states a normal study or mentions at least one finding as absent;
uncertain when some finding is uncertain and none is present; absent when any finding is present
(an "otherwise normal" sentence does not make it normal; support devices and sternotomy count,
since they show on the image). A text that mentions no finding and makes no normal statement
(for example "PA chest radiograph") gets no ``no_finding`` entry.

Measured against the human MeSH annotations of the 3,955 IU X-ray reports by
``tests/benchmarks/bench_findings.py`` (the figures are in its output).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from engine.findings.vocabulary import (
    ABSENT,
    FINDINGS,
    NO_FINDING,
    PARENTS,
    PRESENT,
    UNCERTAIN,
    VOCABULARY,
    one_of,
)

_RANK = {ABSENT: 0, UNCERTAIN: 1, PRESENT: 2}


@dataclass(frozen=True)
class Finding:
    """A mention of ``name`` at ``span`` (start, end) of the text, with its ``status``.

    ``cue`` is the text of the word or phrase that made it absent or uncertain (None when present).
    """

    name: str
    status: str
    span: tuple[int, int]
    cue: str | None = None


# 2. cues -----------------------------------------------------------------------------------------

_SEEN = one_of(
    "seen", "identified", "present", "visualized", "visualised", "appreciated", "evident", "demonstrated", "noted",
    "detected", "visible", "apparent",
)  # fmt: skip
_PSEUDO = (
    r"no (?:significant |definite |substantial |appreciable )?(?:interval )?"
    r"(?:change|increase|decrease|progression|worsening)",
    r"not (?:significantly )?(?:changed|increased|decreased|only)",
    r"without (?:significant )?(?:interval )?(?:change|progression)",
    r"gram negative",
    r"no longer (?:increasing|enlarging)",
)
_PRE_NEGATION = (
    r"no",
    r"not",
    r"without",
    r"negative for",
    r"free of",
    r"clear of",
    r"absence of",
    r"resolution of",
    r"interval clearing of",
    r"removal of",
    r"no longer",
    r"none",
    r"neither",
    r"nor",
    r"never",
    r"lack of",
    r"rules? out for",
    r"ruled out",
)
_PRE_UNCERTAIN_STRONG = (
    r"may",
    r"might",
    r"could",
    r"can be",
    r"possible",
    r"possibly",
    r"questionable",
    r"question(?: of)?",
    r"questioned",
    r"suspected",
    r"equivocal",
    r"uncertain",
    r"cannot (?:be )?(?:entirely |completely |definitely )?(?:exclude|excluded|rule out|ruled out)",
    r"can ?not (?:be )?(?:entirely |completely |definitely )?(?:exclude|excluded|rule out|ruled out)",
    r"(?:difficult|unable) to (?:entirely |completely )?(?:exclude|rule out)",
    r"not (?:be )?(?:entirely |completely |definitely )?(?:excluded|ruled out)",
    r"rule out|r/o|to exclude",
    r"differential(?: diagnosis)?(?: (?:includes|considerations include|considerations|would include))?",
    r"consider(?:ed|ation)?",
    r"perhaps",
    r"raises? (?:the )?(?:possibility|question|concern)(?: of| for)?",
    r"(?:the )?possibility of",
    r"(?:clinical(?:ly)? )?correlat(?:e|ion) (?:clinically )?(?:for|with)",
    r"evaluat(?:e|ion) for",
    r"less likely|unlikely",
    r"in (?:the|an) (?:appropriate|right|proper) clinical (?:setting|context)",
)
# Hedges of high probability ("probable", "likely", "compatible with", "representing") are read as
# present, as the reporting lexicons (and the IU annotators) read them.
_PRE_UNCERTAIN_WEAK = (
    r"suggest(?:s|ed|ing|ive of|ive)?",
    r"suspicious (?:for|of)",
    r"suspicion (?:for|of)",
    r"concern(?:ing)? (?:for|of)",
    r"worrisome (?:for|of)",
    r"(?:to )?indicate",
)
_POST_NEGATION = (
    rf"(?:is|are|was|were|has been|have been) (?:not|no longer) (?:definitely |clearly |well |convincingly )?{_SEEN}",
    rf"not (?:definitely |clearly |well |convincingly )?{_SEEN}",
    r"no longer (?:seen|present|visualized|evident|identified|demonstrated|apparent|visible)",
    r"(?:has|have) (?:since )?(?:resolved|cleared|been removed|been resolved)",
    r"(?:has|have) (?:completely |nearly |almost |essentially )?(?:resolved|cleared)",
    r"(?:is|are) (?:now )?(?:absent|resolved|gone)",
    r"(?:is|are|appears?|remains?) (?:within (?:normal limits|limits of normal)|normal|unremarkable)",
    r"within (?:normal limits|limits of normal)",
    # "pneumothorax excluded", "PTX ruled out" (how clinicians write a finding off); "cannot be
    # excluded" and "not excluded" are uncertain cues, matched first
    r"(?:(?:is|are|was|were|has been|have been|now) )?(?:excluded|ruled out)",
)
# negations that work before or after the finding ("resolved pneumonia", "pneumonia, resolved")
_EITHER_NEGATION = (r"resolved", r"removed", r"absent", r"cleared")
# alternatives: both sides uncertain ("atelectasis versus pneumonia")
_EITHER_UNCERTAIN = (r"versus", r"vs\.?", r"or possibly", r"and/or")
_POST_UNCERTAIN = (
    r"(?:can ?not|could not|can't) (?:be )?(?:entirely |completely |definitely )?(?:excluded|ruled out)",
    r"(?:is|are) not (?:entirely |completely |definitely )?(?:excluded|ruled out)",
    r"not (?:entirely |completely )?excluded",
    r"(?:is|are) (?:not )?(?:possible|suspected|questioned|considered|suggested)",
    # bare "suspected" is a post cue only where the statement ends or goes on to say where or how
    # ("pneumothorax suspected.", "effusion questioned on the left"); before a finding ("suspected
    # pneumothorax") it is left to the pre cue of the same word
    r"(?:suspected|questioned)(?=[\s-]*(?:[.,;:!?)]|$|(?:on|in|at|of|with|and|but|by|clinically)(?!\w)))",
    r"(?:would be|is|are) (?:an?(?: other)? |another )?(?:consideration|possibility)",
    r"(?:is )?in the differential",
    r"(?:may|might|could) be (?:present|seen|developing)",
    r"(?:may|might|could) not be (?:seen|demonstrated|visible|visualized|apparent|evident|detected)",
    r"(?:is|are) (?:difficult|hard) to exclude",
)

# words that end the reach of a cue: the start of another statement
_TERMINATORS = (
    r"but",
    r"however",
    r"although",
    r"though",
    r"yet",
    r"except(?: for)?",
    r"aside from",
    r"apart from",
    r"other than",
    r"with the exception of",
    r"otherwise",
    r"whereas",
    r"which",
    r"while",
    r"there (?:is|are|has been|have been|was|were)",
    r"(?:is|are) (?:again |also )?(?:seen|noted|present|identified|demonstrated)",
    r"secondary to",
    r"due to",
)


_GAP = r"[\s-]+"
_OPTIONAL_GAP = r"[\s-]*"


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regex with word boundaries; a space in a pattern matches any run of spaces and hyphens."""
    alternatives = sorted(patterns, key=len, reverse=True)  # longer phrases first at the same start
    body = "|".join("(?:" + p.replace(" ?", _OPTIONAL_GAP).replace(" ", _GAP) + ")" for p in alternatives)
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)")


_PATTERNS = {spec.name: _compile(spec.patterns) for spec in VOCABULARY}
_OVERRIDDEN_BY = {spec.name: spec.overridden_by for spec in VOCABULARY if spec.overridden_by}
_ABSENT_PATTERNS = {spec.name: _compile(spec.absent_patterns) for spec in VOCABULARY if spec.absent_patterns}
_UNCERTAIN_PATTERNS = {spec.name: _compile(spec.uncertain_patterns) for spec in VOCABULARY if spec.uncertain_patterns}
_CUE_KINDS = (
    ("pseudo", _compile(_PSEUDO)),
    ("post_uncertain", _compile(_POST_UNCERTAIN)),
    ("post_negation", _compile(_POST_NEGATION)),
    ("either_negation", _compile(_EITHER_NEGATION)),
    ("either_uncertain", _compile(_EITHER_UNCERTAIN)),
    ("uncertain", _compile(_PRE_UNCERTAIN_STRONG)),
    ("weak_uncertain", _compile(_PRE_UNCERTAIN_WEAK)),
    ("negation", _compile(_PRE_NEGATION)),
)
_TERMINATOR = _compile(_TERMINATORS)
_ASSERTIVE = re.compile(
    r"\b(?:right|left|bilateral(?:ly)?|bibasilar|basilar|bibasal|basal|upper|middle|lower|lobes?|lingula\w*|apical|biapical"
    r"|mild|mildly|moderate|moderately|severe|severely|marked|minimal|stable|unchanged|persistent|new|again"
    r"|is|are|was|were|has|have|seen|noted|present)\b"
)
_CONJUNCTION = re.compile(r"[\s/]*(?:and|or|nor|and/or)?[\s/]*(?:[a-z]+ ){0,2}")
_INTERNAL_NEGATION = re.compile(r"\b(?:not|no longer|no)\b")
_DEIDENTIFIED = re.compile(r"X{4,}(?:-X+)*")
_SENTENCE_END = re.compile(r"[.!?;]+(?=\s|$|[A-Z])|\n\s*\n|\n(?=\s*(?:\d+\.|[-*•]))|:")
_POST_CUE_WORDS = 8  # how far after a mention a post cue still applies


@dataclass(frozen=True)
class _Cue:
    kind: str
    start: int
    end: int


def _working_copy(text: str) -> str:
    """Lower-case, de-identification blanked, same length as ``text`` (spans stay valid)."""
    lowered = text.lower()
    if len(lowered) != len(text):  # a few characters lower-case to two ("İ"): keep those as they are
        lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    return _DEIDENTIFIED.sub(lambda m: " " * len(m.group()), lowered.replace("xxxx", "    "))


def clean_report(text: str) -> str:
    """A report without its de-identification tokens: "x-XXXX" -> "x-ray", other "XXXX" dropped."""
    text = re.sub(r"\b[xX]-XXXX\b", "x-ray", text)
    text = _DEIDENTIFIED.sub(" ", text)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" +([.,;:])", r"\1", text)
    return re.sub(r"([.,;:])\1+", r"\1", text).strip()


def _sentences(original: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence (a full stop between digits, as in "1.5 cm", does not end one)."""
    start = 0
    bounds = []
    for match in _SENTENCE_END.finditer(original):
        between_digits = (
            match.group() == "."
            and 0 < match.start() < match.end() < len(original)
            and original[match.start() - 1].isdigit()
            and original[match.end()].isdigit()
        )
        if between_digits:
            continue
        bounds.append((start, match.start()))
        start = match.end()
    bounds.append((start, len(original)))
    return [(s, e) for s, e in bounds if original[s:e].strip()]


def _clauses(work: str, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of each clause of a sentence: cut before each terminator."""
    bounds = []
    clause_start = start
    for match in _TERMINATOR.finditer(work, start, end):
        if match.start() > clause_start:
            bounds.append((clause_start, match.start()))
        clause_start = match.start()
    bounds.append((clause_start, end))
    return bounds


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _find_cues(work: str, start: int, end: int, masked: list[tuple[int, int]]) -> list[_Cue]:
    taken = list(masked)
    cues = []
    for kind, pattern in _CUE_KINDS:
        for match in pattern.finditer(work, start, end):
            span = match.span()
            if any(_overlaps(span, other) for other in taken):
                continue
            taken.append(span)
            if kind != "pseudo":
                cues.append(_Cue(kind, *span))
    return sorted(cues, key=lambda cue: cue.start)


def _reaches(work: str, cue: _Cue, span: tuple[int, int], others: list[tuple[int, int]]) -> bool:
    """Whether a cue before a mention reaches it across commas.

    A comma before the cue's first finding is inside one phrase ("no acute, displaced rib
    fractures"). After it, a list goes on ("no consolidation, pleural effusion, pneumothorax")
    unless the mention's own item says where, how much or what is ("no effusion, right lower
    lobe consolidation"; "no effusion, mild cardiomegaly").
    """
    last_comma = work.rfind(",", cue.end, span[0])
    if last_comma < 0 or not any(cue.end <= other[0] < last_comma for other in others):
        return True
    return _ASSERTIVE.search(work, last_comma, span[0]) is None


def _status(
    work: str, span: tuple[int, int], cues: list[_Cue], others: list[tuple[int, int]]
) -> tuple[str, _Cue | None]:
    # 1. a post cue a few words after the mention, within the comma-free stretch, unless another
    #    finding stands between them other than as "A and B are not seen"
    for cue in cues:
        if cue.start < span[1] or cue.kind in ("negation", "uncertain", "weak_uncertain"):
            continue
        between = work[span[1] : cue.start]
        if "," in between or len(between.split()) > _POST_CUE_WORDS:
            break
        nearest_other = min((o[0] for o in others if span[1] <= o[0] < cue.start), default=None)
        if nearest_other is not None and not _CONJUNCTION.fullmatch(work, span[1], nearest_other):
            break
        return (ABSENT if cue.kind.endswith("negation") else UNCERTAIN), cue
    # 2. the nearest cue before it whose reach gets there
    before = [cue for cue in cues if cue.end <= span[0] and cue.kind not in ("post_negation", "post_uncertain")]
    reaching = [cue for cue in before if _reaches(work, cue, span, others)]
    # an alternative ("A versus B") reaches only its next finding
    reaching = [
        cue
        for cue in reaching
        if cue.kind != "either_uncertain" or not any(cue.end <= other[0] < span[0] for other in others)
    ]
    if not reaching:
        return PRESENT, None
    nearest = reaching[-1]
    if nearest.kind == "weak_uncertain" and any(cue.kind.endswith("negation") for cue in reaching[:-1]):
        nearest = next(cue for cue in reversed(reaching) if cue.kind in ("negation", "either_negation"))
    if nearest.kind in ("negation", "either_negation"):
        return ABSENT, nearest
    return UNCERTAIN, nearest


def _mentions(work: str, start: int, end: int) -> list[tuple[str, tuple[int, int], str | None]]:
    """(name, span, fixed status or None) of every mention in the clause; fixed ones come from phrases."""
    found: list[tuple[str, tuple[int, int], str | None]] = []
    fixed_spans: list[tuple[int, int]] = []
    for name, pattern in _ABSENT_PATTERNS.items():
        for match in pattern.finditer(work, start, end):
            found.append((name, match.span(), ABSENT))
            fixed_spans.append(match.span())
    for name, pattern in _UNCERTAIN_PATTERNS.items():
        for match in pattern.finditer(work, start, end):
            if not any(_overlaps(match.span(), s) for s in fixed_spans):
                found.append((name, match.span(), UNCERTAIN))
                fixed_spans.append(match.span())
    for name, pattern in _PATTERNS.items():
        for match in pattern.finditer(work, start, end):
            if any(_overlaps(match.span(), s) and n == name for n, s, _ in found):
                continue
            found.append((name, match.span(), None))
    return [
        (name, span, fixed)
        for name, span, fixed in found
        if not any(n in _OVERRIDDEN_BY.get(name, ()) and _overlaps(span, s) for n, s, _ in found)
    ]


def extract_findings(text: str) -> list[Finding]:
    """Every mention of a vocabulary finding in ``text``, in order, with its status and cue.

    Works on reports and on prompts ("Right lower lobe consolidation, no effusion").
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    work = _working_copy(text)
    results: list[Finding] = []
    for sentence_start, sentence_end in _sentences(text):
        # 1. mentions over the whole sentence (a phrase may run past a terminator: "degenerative
        #    changes are present in the spine"); phrases with a fixed status and normal statements
        #    hold their own negations ("no acute ...")
        mentions = _mentions(work, sentence_start, sentence_end)
        masked = [span for name, span, fixed in mentions if fixed is not None or name == NO_FINDING]
        for start, end in _clauses(work, sentence_start, sentence_end):
            # 2. each mention takes the cues of the clause it starts in
            here = [(name, span, fixed) for name, span, fixed in mentions if start <= span[0] < end]
            if not here:
                continue
            cues = _find_cues(work, start, end, masked)
            for name, span, fixed in here:
                if fixed is not None:
                    results.append(Finding(name, fixed, span, text[span[0] : span[1]]))
                    continue
                inner = None if name == NO_FINDING else _INTERNAL_NEGATION.search(work, span[0], span[1])
                if inner is not None:
                    results.append(Finding(name, ABSENT, span, text[inner.start() : inner.end()]))
                    continue
                others = [other for _, other, _ in here if other != span]
                usable_cues = [c for c in cues if not _overlaps((c.start, c.end), span)]
                status, cue = _status(work, span, usable_cues, others)
                cue_text = text[cue.start : cue.end] if cue is not None else None
                results.append(Finding(name, status, span, cue_text))
    return sorted(results, key=lambda f: (f.span, f.name))


def _merge(statuses: dict[str, str], name: str, status: str) -> None:
    if name not in statuses or _RANK[status] > _RANK[statuses[name]]:
        statuses[name] = status


def summarize(text: str) -> dict[str, str]:
    """Finding name -> status for ``text`` (see the module docstring for the merge and normal rules)."""
    statuses: dict[str, str] = {}
    normal_statement = False
    for finding in extract_findings(text):
        if finding.name == NO_FINDING:
            normal_statement = normal_statement or finding.status == PRESENT
            continue
        _merge(statuses, finding.name, finding.status)
    for child, parent in PARENTS.items():
        if child in statuses and statuses[child] != ABSENT:
            _merge(statuses, parent, statuses[child])
    if PRESENT in statuses.values():
        normal = ABSENT
    elif UNCERTAIN in statuses.values():
        normal = UNCERTAIN
    elif normal_statement or statuses:
        normal = PRESENT
    else:
        normal = None
    ordered = {name: statuses[name] for name in FINDINGS if name in statuses}
    if normal is not None:
        ordered = {NO_FINDING: normal, **ordered}
    return ordered


__all__ = [
    "Finding",
    "clean_report",
    "extract_findings",
    "summarize",
]
