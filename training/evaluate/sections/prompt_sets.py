"""Section 8: committed prompt sets scored beside the card prompts (issue 16 item 6).

The sets live in ``resources/evaluation/prompts/`` (see its README): JSON Lines of
``{"prompt", "class", "age_band"}``, written apart from the caption grammar and never used in
training. A line with ``"denies": [finding, ...]`` is a negation prompt ("no pneumonia"), whose
class is ``normal``.

- **Paraphrases**: ``--prompt-set-images`` images per prompt of the evaluation's classes; the
  evaluation classifier judges each. Per class, the fraction judged the prompt's class (with a
  Wilson 95% interval), next to the same number of images of the reference prompts (the card's,
  or the test captions: the prompts of section 3) made with the same seeds, and the difference
  (Newcombe's interval).
- **Negations**: a prompt denies the classes that show a finding it denies (a class shows its own
  name, its most common findings in the data and their parents: ``bacterial_pneumonia`` shows
  ``pneumonia``). Its images are "judged not-X" when the classifier names none of those classes.
  The reference is the paraphrase set's normal-prompt images, judged against the same classes:
  "no X" prompts must be judged not-X as often as normal prompts are. Prompts that deny nothing
  the classifier can see are listed as not scored.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.findings.vocabulary import FINDINGS, NO_FINDING, PARENTS
from engine.paths import resources_dir
from training.evaluate import metrics as M
from training.evaluate.data import NORMAL, PromptPlan, class_findings
from training.evaluate.options import EvaluationError
from training.evaluate.report import error_bars, fmt, img, new_figure, save_figure, skipped_note, table, with_ci
from training.evaluate.shared import classification_figures, generate

if TYPE_CHECKING:
    from training.evaluate.context import Context

NAME = "prompt_sets"
AGE_BANDS = ("child", "adult")
KEYS = frozenset({"prompt", "class", "age_band", "denies"})


def prompts_dir() -> Path:
    """``resources/evaluation/prompts``: the committed sets."""
    return resources_dir() / "evaluation" / "prompts"


@dataclass(frozen=True)
class SetPrompt:
    """One line of a prompt set."""

    prompt: str
    label: str  # the class: "normal" or an engine.findings name
    age_band: str | None  # "child", "adult" or None (not stated)
    denies: tuple[str, ...] = ()  # a negation prompt's denied findings
    source: str = ""  # the set's name


def set_path(name: str) -> Path:
    """A committed set's file, or ``name`` itself when it names a .jsonl file."""
    return Path(name) if name.endswith(".jsonl") else prompts_dir() / f"{name}.jsonl"


def read_prompt_set(path: Path, name: str | None = None) -> list[SetPrompt]:
    """Every line of a set, checked; raises :class:`EvaluationError` naming the file and line."""
    name = name or path.stem
    classes = {NORMAL, *FINDINGS} - {NO_FINDING}
    where = f"--prompt-sets {path}"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{where}: cannot be read ({exc.__class__.__name__})") from None
    out: list[SetPrompt] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            raise EvaluationError(f"{where}:{number}: not a JSON object") from None
        if not isinstance(item, dict) or not set(item) <= KEYS or not {"prompt", "class"} <= set(item):
            raise EvaluationError(f"{where}:{number}: needs 'prompt' and 'class' (optional: 'age_band', 'denies')")
        prompt, label, band = item["prompt"], item["class"], item.get("age_band")
        denies = item.get("denies", [])
        if not isinstance(prompt, str) or not prompt.strip():
            raise EvaluationError(f"{where}:{number}: 'prompt' must be non-empty text")
        if label not in classes:
            raise EvaluationError(f"{where}:{number}: unknown class {label!r}")
        if band is not None and band not in AGE_BANDS:
            raise EvaluationError(f"{where}:{number}: 'age_band' must be child, adult or null, not {band!r}")
        if not isinstance(denies, list) or any(d not in FINDINGS or d == NO_FINDING for d in denies):
            raise EvaluationError(f"{where}:{number}: 'denies' must list engine.findings names")
        if "denies" in item and (not denies or label != NORMAL):
            raise EvaluationError(f"{where}:{number}: a negation prompt denies at least one finding and is 'normal'")
        out.append(SetPrompt(prompt.strip(), label, band, tuple(denies), name))
    if not out:
        raise EvaluationError(f"{where}: holds no prompts")
    return out


def load_prompt_sets(names: tuple[str, ...]) -> dict[str, list[SetPrompt]]:
    """The sets named (committed names, or .jsonl paths), before any work starts."""
    sets = {}
    for name in names:
        path = set_path(name)
        if not path.is_file():
            known = sorted(p.stem for p in prompts_dir().glob("*.jsonl"))
            raise EvaluationError(
                f"--prompt-sets {name}: no such prompt set (committed: {', '.join(known)}; or a .jsonl file)"
            )
        sets[name] = read_prompt_set(path, Path(name).stem)
    return sets


def denied_classes(
    denies: tuple[str, ...], classes: tuple[str, ...], shown: dict[str, frozenset[str]]
) -> tuple[str, ...]:
    """The classes that show a denied finding: the class itself, its findings in ``shown`` and their parents."""
    out = []
    for name in classes:
        findings = set(shown.get(name, frozenset())) | {name}
        findings |= {PARENTS[f] for f in findings if f in PARENTS}
        if findings & set(denies):
            out.append(name)
    return tuple(out)


def _proportion(k: int, n: int) -> dict:
    low, high = M.wilson_interval(k, n)
    return {"k": int(k), "n": int(n), "value": k / n if n else None, "ci95": [low, high]}


def _difference(k1: int, n1: int, k2: int, n2: int) -> dict:
    low, high = M.newcombe_difference(k1, n1, k2, n2)
    value = k1 / n1 - k2 / n2 if n1 and n2 else None
    return {"value": value, "ci95": [low, high], "interval": "Newcombe hybrid score (method 10), 95%"}


# --------------------------------------------------------------------------- the plans


def _paraphrase_plan(chosen: list[SetPrompt], classes: tuple[str, ...], k: int, seed: int) -> PromptPlan:
    """``k`` images per prompt, class by class; a class's images take seeds ``seed``, ``seed + 1``, ..."""
    labels, texts, seeds = [], [], []
    for index, name in enumerate(classes):
        members = [p for p in chosen if p.label == name]
        for j, p in enumerate(members):
            for r in range(k):
                labels.append(index)
                texts.append(p.prompt)
                seeds.append(seed + j * k + r)
    return PromptPlan(np.array(labels, dtype=np.int64), tuple(texts), np.array(seeds, dtype=np.int64))


def _reference_plan(counts: dict[str, int], prompts: dict, classes: tuple[str, ...], seed: int) -> PromptPlan:
    """Per class as many images as the paraphrases have, with the same seeds: the class's reference
    prompts in contiguous blocks (so that one request makes a batch of consecutive seeds)."""
    labels, texts, seeds = [], [], []
    for index, name in enumerate(classes):
        n = counts.get(name, 0)
        options = prompts[name].prompts
        edges = np.linspace(0, n, len(options) + 1).round().astype(int)
        for q, prompt in enumerate(options):
            for i in range(edges[q], edges[q + 1]):
                labels.append(index)
                texts.append(prompt)
                seeds.append(seed + i)
    return PromptPlan(np.array(labels, dtype=np.int64), tuple(texts), np.array(seeds, dtype=np.int64))


def _negation_plan(chosen: list[SetPrompt], k: int, seed: int, normal: int) -> PromptPlan:
    texts = [p.prompt for p in chosen for _ in range(k)]
    seeds = [seed + j * k + r for j in range(len(chosen)) for r in range(k)]
    return PromptPlan(np.full(len(texts), normal, dtype=np.int64), tuple(texts), np.array(seeds, dtype=np.int64))


def _band_ok(prompt: SetPrompt, band: str) -> bool:
    return band == "any" or prompt.age_band in (None, band)


# --------------------------------------------------------------------------- the section


def compute(ctx: Context) -> dict:
    """Generate and judge the paraphrase, reference and negation images; see the module docstring."""
    options, classes = ctx.options, ctx.classes
    k, band = options.prompt_set_images, options.prompt_age_band
    everything = [p for prompts in ctx.prompt_sets.values() for p in prompts]
    shown = class_findings(ctx.data)
    not_scored: Counter[str] = Counter()
    paraphrases, negations = [], []
    for p in everything:
        if not _band_ok(p, band):
            not_scored[f"age band {p.age_band} (--prompt-age-band {band})"] += 1
        elif p.denies:
            if NORMAL not in classes:
                not_scored["negation: the evaluation has no normal class"] += 1
            elif not denied_classes(p.denies, classes, shown):
                not_scored["negation: denies no class of this evaluation"] += 1
            else:
                negations.append(p)
        elif p.label not in classes:
            not_scored[f"class {p.label} is not one of this evaluation's"] += 1
        else:
            paraphrases.append(p)
    if not paraphrases:
        return {"skipped": f"no prompt of the sets ({', '.join(ctx.prompt_sets)}) is of this evaluation's classes"}
    if negations and not any(p.label == NORMAL for p in paraphrases):
        not_scored["negation: no normal paraphrase prompt to compare with"] += len(negations)
        negations = []

    # 1. generate: paraphrases, the reference prompts with the same seeds, negations
    para_plan = _paraphrase_plan(paraphrases, classes, k, options.seed)
    counts = {name: int((para_plan.labels == i).sum()) for i, name in enumerate(classes)}
    ref_plan = _reference_plan(counts, ctx.prompts, classes, options.seed)
    normal = classes.index(NORMAL) if NORMAL in classes else -1
    neg_plan = _negation_plan(negations, k, options.seed, normal)
    total = len(para_plan.prompts) + len(ref_plan.prompts) + len(neg_plan.prompts)
    with ctx.progress.phase(f"prompt sets: generating {total} images", total, "img") as bar:
        para = generate(ctx, para_plan, ctx.sampler, ctx.num_steps, bar)
        ref = generate(ctx, ref_plan, ctx.sampler, ctx.num_steps, bar)
        neg = generate(ctx, neg_plan, ctx.sampler, ctx.num_steps, bar) if negations else None
    ctx.artifacts[NAME] = {"paraphrases": para, "reference": ref, "negations": neg}

    # 2. paraphrases against the reference prompts
    para_pred, ref_pred = para.probabilities.argmax(axis=1), ref.probabilities.argmax(axis=1)
    per_class = {}
    for i, name in enumerate(classes):
        a, b = para.labels == i, ref.labels == i
        if not a.any():
            continue
        k1, n1, k2, n2 = int((para_pred[a] == i).sum()), int(a.sum()), int((ref_pred[b] == i).sum()), int(b.sum())
        per_class[name] = {
            "prompts": len({p for p, keep in zip(para_plan.prompts, a, strict=True) if keep}),
            "paraphrases": _proportion(k1, n1),
            "reference": _proportion(k2, n2),
            "difference": _difference(k1, n1, k2, n2),
        }
    k1, n1 = int((para_pred == para.labels).sum()), len(para.labels)
    k2, n2 = int((ref_pred == ref.labels).sum()), len(ref.labels)
    per_prompt = []
    for prompt in dict.fromkeys(para_plan.prompts):
        index = np.array([i for i, p in enumerate(para_plan.prompts) if p == prompt])
        label = int(para.labels[index[0]])
        per_prompt.append(
            {
                "prompt": prompt,
                "class": classes[label],
                "n": len(index),
                "accuracy": float((para_pred[index] == label).mean()),
                "judged": dict(Counter(classes[j] for j in para_pred[index])),
            }
        )
    paraphrase_out = {
        "definition": (
            "accuracy: the fraction of images the evaluation classifier judges to be the prompt's class; the "
            "reference images use the prompts of section 3 with the same seeds and as many images per class; "
            "Wilson 95% intervals, differences with Newcombe's interval"
        ),
        "prompts": len(paraphrases),
        "images": n1,
        "overall": {
            "paraphrases": _proportion(k1, n1),
            "reference": _proportion(k2, n2),
            "difference": _difference(k1, n1, k2, n2),
        },
        "per_class": per_class,
        "alignment": classification_figures(para.probabilities, para.labels, classes, ctx.resamples, ctx.rng(100)),
        "reference_alignment": classification_figures(
            ref.probabilities, ref.labels, classes, ctx.resamples, ctx.rng(101)
        ),
        "reference_prompts": {name: list(ctx.prompts[name].prompts) for name in per_class},
        "reference_source": next(iter(ctx.prompts.values())).source,
        "per_prompt": per_prompt,
    }

    out: dict[str, Any] = {
        "sets": {
            name: {"file": str(set_path(name)), "prompts": len(prompts)} for name, prompts in ctx.prompt_sets.items()
        },
        "images_per_prompt": k,
        "age_band": band,
        "sampler": ctx.sampler,
        "num_steps": ctx.num_steps,
        "guidance_scale": ctx.guidance_scale,
        "record_guidance": ctx.record_guidance,
        "seconds": para.seconds + ref.seconds + (neg.seconds if neg is not None else 0.0),
        "not_scored": dict(not_scored),
        "paraphrases": paraphrase_out,
        "negations": _negation_figures(ctx, negations, neg, para, shown) if neg is not None else None,
    }
    return out


def _negation_figures(ctx: Context, chosen: list[SetPrompt], neg, para, shown: dict[str, frozenset[str]]) -> dict:
    """Negation images judged not-X against the normal paraphrase images judged against the same X."""
    classes, k = ctx.classes, ctx.options.prompt_set_images
    normal = classes.index(NORMAL)
    neg_pred = neg.probabilities.argmax(axis=1)
    normal_pred = para.probabilities.argmax(axis=1)[para.labels == normal]
    denied = [denied_classes(p.denies, classes, shown) for p in chosen]
    image_denied = [d for d in denied for _ in range(k)]
    index = {name: i for i, name in enumerate(classes)}
    neg_not_x = np.array([neg_pred[i] not in {index[c] for c in d} for i, d in enumerate(image_denied)])
    groups, per_prompt = [], []
    for d in dict.fromkeys(denied):
        members = np.array([i for i, x in enumerate(image_denied) if x == d])
        ids = {index[c] for c in d}
        ref_not_x = np.array([p not in ids for p in normal_pred])
        k1, n1, k2, n2 = int(neg_not_x[members].sum()), len(members), int(ref_not_x.sum()), len(ref_not_x)
        groups.append(
            {
                "denied_classes": list(d),
                "prompts": sum(1 for x in denied if x == d),
                "negations_judged_not_x": _proportion(k1, n1),
                "normal_prompts_judged_not_x": _proportion(k2, n2),
                "difference": _difference(k1, n1, k2, n2),
            }
        )
    for j, p in enumerate(chosen):
        rows = slice(j * k, (j + 1) * k)
        per_prompt.append(
            {
                "prompt": p.prompt,
                "denies": list(p.denies),
                "denied_classes": list(denied[j]),
                "n": k,
                "judged_not_x": float(neg_not_x[rows].mean()),
                "judged": dict(Counter(classes[c] for c in neg_pred[rows])),
            }
        )

    # 3. pooled over prompts: the normal reference weighted by how many negation images deny each class set
    group_of = [list(dict.fromkeys(denied)).index(d) for d in image_denied]
    ref_tables = [
        np.array([p not in {index[c] for c in d} for p in normal_pred]) for d in dict.fromkeys(denied)
    ]  # (groups, normal images)
    ref_matrix = np.stack(ref_tables) if ref_tables else np.zeros((0, len(normal_pred)), dtype=bool)
    group_of = np.array(group_of)

    def statistic(neg_index: np.ndarray, ref_index: np.ndarray) -> np.ndarray:
        weights = np.bincount(group_of[neg_index], minlength=len(ref_matrix)) / len(neg_index)
        reference = float(weights @ ref_matrix[:, ref_index].mean(axis=1))
        negation = float(neg_not_x[neg_index].mean())
        return np.array([negation, reference, negation - reference])

    rng = ctx.rng(102)
    n_neg, n_ref = len(neg_not_x), len(normal_pred)
    draws = np.array(
        [statistic(rng.integers(0, n_neg, n_neg), rng.integers(0, n_ref, n_ref)) for _ in range(ctx.resamples)]
    )
    value = statistic(np.arange(n_neg), np.arange(n_ref))
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    pooled = {
        key: {"value": float(value[i]), "ci95": [float(low[i]), float(high[i])]}
        for i, key in enumerate(("negations_judged_not_x", "normal_prompts_judged_not_x", "difference"))
    }
    judged_normal_neg = int((neg_pred == normal).sum())
    judged_normal_ref = int((normal_pred == normal).sum())
    return {
        "definition": (
            "a negation prompt's images are judged not-X when the classifier names none of the classes that show a "
            "finding it denies; the reference is the paraphrase set's normal-prompt images judged against the same "
            "classes; pooled: bootstrap 95% intervals (negation and normal images resampled independently, the "
            "reference weighted by the negation images per denied class set); per group: Wilson and Newcombe"
        ),
        "prompts": len(chosen),
        "images": n_neg,
        "pooled": pooled | {"bootstrap": f"{ctx.resamples} resamples"},
        "passes": bool(high[2] >= 0.0),
        "passes_rule": "the 95% interval of (negations judged not-X) - (normal prompts judged not-X) reaches 0",
        "judged_normal": {
            "negations": _proportion(judged_normal_neg, n_neg),
            "normal_prompts": _proportion(judged_normal_ref, n_ref),
        },
        "groups": groups,
        "per_prompt": per_prompt,
    }


# --------------------------------------------------------------------------- figure and HTML


def make_figures(report: dict, ctx: Context, folder: Path) -> dict[str, str]:
    """Paraphrase vs reference accuracy per class, and the negation check, with their intervals."""
    section = report.get(NAME) or {}
    if "paraphrases" not in section:
        return {}
    per_class = section["paraphrases"]["per_class"]
    negations = section.get("negations")
    figure = new_figure(11 if negations else 7, 3.4)
    axes = figure.subplots(1, 2 if negations else 1, squeeze=False)[0]
    names = list(per_class)
    x = np.arange(len(names) + 1)
    width = 0.38
    for offset, key, label in (
        (-width / 2, "paraphrases", "paraphrase prompts"),
        (width / 2, "reference", "reference"),
    ):
        entries = [per_class[n][key] for n in names] + [section["paraphrases"]["overall"][key]]
        error_bars(axes[0], x + offset, entries, width, label=label)
    axes[0].set_xticks(x, [*names, "all"], fontsize=7, rotation=20)
    axes[0].set_ylim(0, 1.05)
    axes[0].set_ylabel("judged the prompt's class", fontsize=8)
    axes[0].legend(fontsize=7)
    if negations:
        pooled = negations["pooled"]
        entries = [pooled["negations_judged_not_x"], pooled["normal_prompts_judged_not_x"]]
        error_bars(axes[1], np.arange(2), entries, 0.6, color=["C3", "C0"])
        axes[1].set_xticks(np.arange(2), ['"no X" prompts', "normal prompts"], fontsize=8)
        axes[1].set_ylim(0, 1.05)
        axes[1].set_ylabel("judged not-X", fontsize=8)
        axes[1].set_title("negation check", fontsize=9)
    return {"prompt_sets": save_figure(figure, folder, "prompt_sets.png")}


def _record_guidance_words(scale: float | None) -> str:
    """", record guidance R" when the record was guided apart from the text, else nothing."""
    return "" if scale is None else f", record guidance {fmt(scale)}"


def _fraction(entry: dict) -> str:
    counts = f" <span class=ci>({fmt(entry['k'])} / {fmt(entry['n'])})</span>" if "k" in entry else ""
    return with_ci(entry) + counts


def render_html(report: dict) -> str:
    """Section 8 of report.html."""
    parts = ["<h2>8. Paraphrases and negations (committed prompt sets)</h2>"]
    section = report.get(NAME)
    if section is None:
        return parts[0] + "<p class=note>Not in this report.</p>"
    skipped = skipped_note(section)
    if skipped:
        return parts[0] + skipped
    sets = ", ".join(f"{html.escape(name)} ({fmt(s['prompts'])} prompts)" for name, s in section["sets"].items())
    parts.append(
        f"<p>Sets: {sets}, written apart from the caption grammar and never used in training. "
        f"{fmt(section['images_per_prompt'])} images per prompt ({html.escape(section['sampler'])}, "
        f"{section['num_steps']} steps, guidance {fmt(section['guidance_scale'])}"
        f"{_record_guidance_words(section.get('record_guidance'))}); age band "
        f"{html.escape(section['age_band'])}; {fmt(section['seconds'], 4)} s.</p>"
    )
    if section["not_scored"]:
        parts.append(
            "<p class=note>Not scored: "
            + html.escape("; ".join(f"{v} ({k})" for k, v in section["not_scored"].items()))
            + ".</p>"
        )
    para = section["paraphrases"]
    parts.append(
        f"<p class=note>{html.escape(para['definition'])}. Reference: {html.escape(para['reference_source'])}.</p>"
    )
    rows = [
        [
            html.escape(name),
            fmt(entry["prompts"]),
            _fraction(entry["paraphrases"]),
            _fraction(entry["reference"]),
            with_ci(entry["difference"]),
        ]
        for name, entry in para["per_class"].items()
    ]
    overall = para["overall"]
    rows.append(
        [
            "<b>all</b>",
            fmt(para["prompts"]),
            _fraction(overall["paraphrases"]),
            _fraction(overall["reference"]),
            with_ci(overall["difference"]),
        ]
    )
    parts.append(table(["class", "prompts", "paraphrase accuracy", "reference accuracy", "difference"], rows))
    parts.append(
        f"<p>Macro AUROC: paraphrases {with_ci(para['alignment']['macro_auroc'])}, reference "
        f"{with_ci(para['reference_alignment']['macro_auroc'])} (bootstrap).</p>"
    )
    parts.append(img(report, "prompt_sets", "paraphrase and negation figures"))
    neg = section.get("negations")
    if neg:
        pooled = neg["pooled"]
        verdict = "passes" if neg["passes"] else "fails"
        parts.append(
            f"<h3>Negation check: {verdict}</h3><p class=note>{html.escape(neg['definition'])}. "
            f"Rule: {html.escape(neg['passes_rule'])}.</p>"
        )
        parts.append(
            table(
                ["images", "n", "judged not-X", "judged normal"],
                [
                    [
                        '"no X" prompts',
                        fmt(neg["images"]),
                        with_ci(pooled["negations_judged_not_x"]),
                        _fraction(neg["judged_normal"]["negations"]),
                    ],
                    [
                        "normal prompts (reference)",
                        fmt(neg["judged_normal"]["normal_prompts"]["n"]),
                        with_ci(pooled["normal_prompts_judged_not_x"]),
                        _fraction(neg["judged_normal"]["normal_prompts"]),
                    ],
                    ["difference", "", with_ci(pooled["difference"]), ""],
                ],
            )
        )
        parts.append(
            table(
                ["denied classes", "prompts", '"no X" judged not-X', "normal judged not-X", "difference"],
                [
                    [
                        html.escape(", ".join(g["denied_classes"])),
                        fmt(g["prompts"]),
                        _fraction(g["negations_judged_not_x"]),
                        _fraction(g["normal_prompts_judged_not_x"]),
                        with_ci(g["difference"]),
                    ]
                    for g in neg["groups"]
                ],
            )
        )
        parts.append(
            "<details><summary>Per negation prompt</summary>"
            + table(
                ["prompt", "denies", "images", "judged not-X", "judged"],
                [
                    [
                        html.escape(r["prompt"]),
                        html.escape(", ".join(r["denies"])),
                        fmt(r["n"]),
                        fmt(r["judged_not_x"]),
                        html.escape(", ".join(f"{k} {v}" for k, v in r["judged"].items())),
                    ]
                    for r in neg["per_prompt"]
                ],
            )
            + "</details>"
        )
    parts.append(
        "<details><summary>Per paraphrase prompt</summary>"
        + table(
            ["prompt", "class", "images", "accuracy", "judged"],
            [
                [
                    html.escape(r["prompt"]),
                    html.escape(r["class"]),
                    fmt(r["n"]),
                    fmt(r["accuracy"]),
                    html.escape(", ".join(f"{k} {v}" for k, v in r["judged"].items())),
                ]
                for r in para["per_prompt"]
            ],
        )
        + "</details>"
    )
    return "\n".join(p for p in parts if p)


__all__ = [
    "AGE_BANDS",
    "NAME",
    "SetPrompt",
    "compute",
    "denied_classes",
    "load_prompt_sets",
    "make_figures",
    "prompts_dir",
    "read_prompt_set",
    "render_html",
    "set_path",
]
