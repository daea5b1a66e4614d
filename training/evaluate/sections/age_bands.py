"""Section ``age_bands``: per finding, in one age band, whether the pack draws what it is asked for
(issue 16 items 5-7). ``--findings`` and ``--age-band`` make it run, alone: the data may be
multi-label (an NIH film can show effusion, oedema and cardiomegaly at once), which the
single-label sections cannot compare.

1. **Records.** A record's band is its ``age_band`` (infant, child, adolescent -> child; adult,
   older adult -> adult), else its ``age`` (under 18 -> child, 18 and over -> adult). Records with
   neither, of the other band, or without finding labels (no finding present and no "no finding"
   stated, such as the Hannover COVID-19 films) are left out. The manifest's patient-level splits
   are kept. Held out: the test split, or val + test when the test split holds fewer than
   :data:`MIN_TEST_POSITIVES` positives of some finding (the report says which).
2. **The judge**: the evaluation classifier made multi-label (one sigmoid per finding; "normal" =
   no finding present), trained on the band's train split (by transfer with ``--classifier-init``),
   see :func:`training.evaluate.shared.fit_classifier`. Its AUROC per finding on the real held-out
   films, with bootstrap 95% intervals, says whether it can judge that finding at all.
3. **Generated**: ``--finding-images`` images per finding, seeds ``--seed``, ``--seed`` + 1, ...;
   prompts: the card's example prompts that state exactly that finding (of the requested ones) in
   that band, else prompts built by the training captions' grammar (:mod:`training.data.captions`).
4. **Per finding**: the AUROC of the judge's score for F on the images prompted with F against the
   images prompted for the other findings, with a bootstrap 95% interval. Verdict "aligned above
   chance" only when that interval's lower bound is above 0.5 *and* the judge is valid for F on
   real films (its interval's lower bound above 0.5, from at least :data:`MIN_REAL_POSITIVES`
   held-out positives); otherwise "not shown", with the reason.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.findings.parse import parse_prompt
from engine.findings.record import AGE_GROUPS
from engine.findings.vocabulary import NO_FINDING, PARENTS, PRESENT
from engine.manifest import ManifestRecord, resolve_image
from training.data.captions import ADULT_AGE, caption_from_findings, caption_rng
from training.evaluate.data import (
    NORMAL,
    ClassPrompts,
    RealData,
    RealImage,
    plan_images,
    present_findings,
    read_records,
)
from training.evaluate.options import EvaluationError
from training.evaluate.report import fmt, image_grid, img, section_html, table, with_ci
from training.evaluate.shared import finding_aurocs, generate

if TYPE_CHECKING:
    from training.evaluate.context import Context

NAME = "age_bands"
MIN_TEST_POSITIVES = 20  # fewer in the test split for some finding: val joins the held-out films
MIN_REAL_POSITIVES = 5  # fewer held-out positives: the judge's real AUROC is not trusted
ALIGNED = "aligned above chance"
NOT_SHOWN = "not shown"
RULE = (
    "band: the record's age_band (infant, child, adolescent -> child; adult, older_adult -> adult), else its age "
    f"(under {ADULT_AGE} -> child, {ADULT_AGE} and over -> adult); records with neither, or without finding labels, "
    "are left out"
)
# who the built adult prompts describe, in turn: view, age, sex
ADULT_PEOPLE = (("PA", 60, "M"), ("PA", 45, "F"), ("AP", 72, "M"), ("PA", 33, "F"), ("AP", 58, "F"), ("PA", 81, "M"))


def band_of(record: ManifestRecord) -> str | None:
    """ "child" or "adult" (see :data:`RULE`), or None when the record gives no age."""
    if record.age_band is not None:
        return AGE_GROUPS[record.age_band]
    if record.age is not None:
        return "adult" if record.age >= ADULT_AGE else "child"
    return None


def has(findings: frozenset[str], name: str) -> bool:
    """Whether present ``findings`` show ``name``: itself or a subtype of it ("pneumonia" for
    ``bacterial_pneumonia``); ``normal`` when no finding is present."""
    if name == NORMAL:
        return not findings - {NO_FINDING}
    for finding in findings:
        while finding is not None:
            if finding == name:
                return True
            finding = PARENTS.get(finding)
    return False


def targets(records: list[RealImage], names: tuple[str, ...]) -> np.ndarray:
    """(N, F) float32: 1 where record n shows finding f."""
    out = np.zeros((len(records), len(names)), dtype=np.float32)
    for n, record in enumerate(records):
        out[n] = [has(record.findings, name) for name in names]
    return out


@dataclass
class BandData(RealData):
    """One age band's labelled records; ``classes`` are the findings, each record may show several."""

    age_band: str = ""
    held_out: tuple[str, ...] = ("test",)
    held_out_reason: str = ""

    def labels(self, split: str) -> np.ndarray:
        """(N, F) 0/1 targets (multi-label), not class indices."""
        return targets(self.splits[split], self.classes)

    def counts(self) -> dict[str, dict[str, int]]:
        """Positives per split and finding (a record counts once for each finding it shows)."""
        return {
            split: {name: int(column.sum()) for name, column in zip(self.classes, self.labels(split).T, strict=True)}
            for split in self.splits
        }


def read_band_data(manifest: Path, findings: tuple[str, ...], band: str) -> BandData:
    """The band's labelled records by split, checked: every finding has training images, and the
    held-out films exist. Raises :class:`EvaluationError` naming the option."""
    manifest = Path(manifest)
    splits: dict[str, list[RealImage]] = {"train": [], "val": [], "test": []}
    left_out: Counter[str] = Counter()
    for record in read_records(manifest):
        present = present_findings(record.findings)
        record_band = band_of(record)
        if record_band is None:
            left_out["no age or age band"] += 1
        elif record_band != band:
            left_out[f"age band {record_band}"] += 1
        elif not present and record.findings.get(NO_FINDING) != PRESENT:
            left_out["no finding labels"] += 1
        else:
            label = ",".join(name for name in findings if has(present, name)) or "other findings"
            image = RealImage(resolve_image(record, manifest), record.text, record.split, label, present)
            splits[record.split].append(image)
    data = BandData(manifest.resolve(), tuple(findings), splits, left_out, age_band=band)
    counts = data.counts()
    missing = [name for name in findings if counts["train"][name] == 0]
    if missing:
        raise EvaluationError(
            f"--findings {','.join(missing)}: no {band} training record of --data {manifest} shows it "
            f"({len(splits['train'])} {band} training records)"
        )
    short = [name for name in findings if counts["test"][name] < MIN_TEST_POSITIVES]
    if short and splits["val"]:
        data.held_out = ("val", "test")
        data.held_out_reason = (
            f"val + test: the test split holds fewer than {MIN_TEST_POSITIVES} positives of {', '.join(short)}"
        )
    else:
        data.held_out_reason = "the test split" + ("" if splits["val"] or not short else " (no val records to add)")
    if not sum(len(splits[s]) for s in data.held_out):
        raise EvaluationError(f"--data {manifest}: no {band} records in the val or test split to judge the judge on")
    return data


# --------------------------------------------------------------------------- prompts


def _states(prompt: str, names: tuple[str, ...], band: str) -> str | None:
    """The one requested finding a prompt states present for ``band``, or None."""
    record = parse_prompt(prompt)
    if record.age_band is None or AGE_GROUPS[record.age_band] != band:
        return None
    present = frozenset(name for name, status in record.findings.items() if status == PRESENT)
    if NO_FINDING not in present and not present:
        return None  # a header alone states nothing
    shown = [name for name in names if has(present, name)]
    return shown[0] if len(shown) == 1 else None


def built_prompts(name: str, band: str, count: int, seed: int) -> list[str]:
    """Up to ``count`` different prompts for finding ``name`` in ``band``, written by the training
    captions' grammar (adults: PA/AP, ages and sexes of :data:`ADULT_PEOPLE`; children: the
    paediatric AP header the paediatric captions have)."""
    out: list[str] = []
    positives = [] if name == NORMAL else [name]
    for j in range(count * 4):  # phrasings repeat: draw until ``count`` differ
        rng = caption_rng(seed, f"evaluate/{band}/{name}/{j}")
        if band == "adult":
            view, age, sex = ADULT_PEOPLE[j % len(ADULT_PEOPLE)]
            text = caption_from_findings(positives, rng, view=view, age=age, sex=sex, max_negatives=0).text
        else:
            text = caption_from_findings(positives, rng, view="AP", paediatric=True, max_negatives=0).text
        if text not in out:
            out.append(text)
        if len(out) == count:
            break
    return out


def band_prompts(card: dict, names: tuple[str, ...], band: str, per_finding: int, seed: int) -> dict[str, ClassPrompts]:
    """Per finding the card's example prompts that state it (alone of ``names``) in ``band``, else
    prompts built by the caption grammar; at most ``per_finding`` each."""
    examples = card.get("example_prompts") if isinstance(card, dict) else None
    from_card: dict[str, list[str]] = {name: [] for name in names}
    for prompt in examples if isinstance(examples, list) else []:
        if isinstance(prompt, str) and prompt.strip():
            name = _states(prompt.strip(), names, band)
            if name is not None:
                from_card[name].append(prompt.strip())
    out = {}
    for name in names:
        if from_card[name]:
            out[name] = ClassPrompts(name, tuple(from_card[name][:per_finding]), "model card example_prompts")
        else:
            prompts = tuple(built_prompts(name, band, per_finding, seed))
            out[name] = ClassPrompts(name, prompts, "built with the training captions' grammar")
    return out


# --------------------------------------------------------------------------- the verdict


def verdict(real: dict, generated: dict) -> tuple[str, str]:
    """(verdict, reason) of one finding from its real held-out and generated AUROC entries
    (``{"value", "ci95", "n_positive", ...}``): aligned only when both lower bounds exceed 0.5 and the
    real one rests on at least :data:`MIN_REAL_POSITIVES` positives."""
    real_low, generated_low = real["ci95"][0], generated["ci95"][0]
    if real.get("n_positive", 0) < MIN_REAL_POSITIVES:
        return NOT_SHOWN, f"only {real.get('n_positive', 0)} real held-out films show it (the judge is not checked)"
    if real_low is None or real_low <= 0.5:
        return NOT_SHOWN, "the judge does not tell it on real held-out films (interval reaches 0.5)"
    if generated_low is None or generated_low <= 0.5:
        return NOT_SHOWN, "its images are not scored above the other findings' (interval reaches 0.5)"
    return ALIGNED, "the judge tells it on real films, and scores its images above the other findings'"


# --------------------------------------------------------------------------- the section


def compute(ctx: Context) -> dict:
    """The ``age_bands`` entry of report.json: ``{band: {...}}``."""
    data: BandData = ctx.data  # type: ignore[assignment]  # --findings reads a BandData
    options, names = ctx.options, ctx.classes
    held = [ctx.real[split] for split in data.held_out]
    real = finding_aurocs(
        np.concatenate([h.probabilities for h in held]),
        np.concatenate([h.labels for h in held]),
        names,
        ctx.resamples,
        ctx.rng(110),
    )

    # 1. generate: --finding-images per finding, each cycling through its prompts
    total = options.finding_images * len(names)
    plan = plan_images(total, ctx.prompts, names, dict.fromkeys(names, 1), options.seed)
    with ctx.progress.phase(f"{data.age_band}: generating {total} images", total, "img") as bar:
        images = generate(ctx, plan, ctx.sampler, ctx.num_steps, bar)
    ctx.artifacts[NAME] = images
    prompted = plan.labels[:, None] == np.arange(len(names))[None, :]  # (N, F) image n was asked for f
    generated = finding_aurocs(images.probabilities, prompted, names, ctx.resamples, ctx.rng(111))

    # 2. per finding: the two AUROCs and the verdict
    per_finding = {}
    for f, name in enumerate(names):
        result, reason = verdict(real["auroc"][name], generated["auroc"][name])
        scores = images.probabilities[:, f]
        per_finding[name] = {
            "prompts": list(ctx.prompts[name].prompts),
            "prompt_source": ctx.prompts[name].source,
            "real_held_out": real["auroc"][name],
            "generated": generated["auroc"][name],
            "mean_score_prompted": float(scores[prompted[:, f]].mean()),
            "mean_score_other_prompts": float(scores[~prompted[:, f]].mean()),
            "verdict": result,
            "reason": reason,
        }
    held_records = sum(len(data.splits[s]) for s in data.held_out)
    out = {
        "definition": (
            "real_held_out: AUROC of the judge's score for the finding on the real held-out films of the band; "
            "generated: AUROC of the same score on the images prompted with the finding against the images "
            "prompted for the other findings; bootstrap 95% intervals (the items resampled, paired across findings); "
            f"'{ALIGNED}' when both lower bounds exceed 0.5 (and at least {MIN_REAL_POSITIVES} held-out films show "
            f"the finding), else '{NOT_SHOWN}'"
        ),
        "selection": RULE,
        "records": {split: len(records) for split, records in data.splits.items()},
        "left_out": dict(data.left_out),
        "held_out": list(data.held_out),
        "held_out_reason": data.held_out_reason,
        "held_out_records": held_records,
        "judge": "the evaluation classifier (report 'classifier'), multi-label, trained on the band's train split",
        "images_per_finding": options.finding_images,
        "sampler": ctx.sampler,
        "num_steps": ctx.num_steps,
        "guidance_scale": ctx.guidance_scale,
        "seeds": [int(plan.seeds[0]), int(plan.seeds[-1])],
        "seconds": images.seconds,
        "real_macro_auroc": real["macro_auroc"],
        "generated_macro_auroc": generated["macro_auroc"],
        "findings": per_finding,
        "aligned": [name for name in names if per_finding[name]["verdict"] == ALIGNED],
    }
    return {data.age_band: out}


def make_figures(report: dict, ctx: Context, folder: Path) -> dict[str, str]:
    """Per finding up to 6 generated images, then up to 6 real held-out films that show it."""
    generated = ctx.artifacts.get(NAME)
    if generated is None:
        return {}
    data: BandData = ctx.data  # type: ignore[assignment]
    held_images = np.concatenate([ctx.real[s].images for s in data.held_out])
    held_labels = np.concatenate([ctx.real[s].labels for s in data.held_out])
    blank = np.ones_like(generated.images[0])
    rows = []
    for f, name in enumerate(ctx.classes):
        mine = [generated.images[j] for j in np.flatnonzero(generated.labels == f)[:6]]
        real = [held_images[j].astype(np.float32) for j in np.flatnonzero(held_labels[:, f] > 0)[:6]]
        rows.append((f"{name}\ngenerated | real", mine + [blank] * (6 - len(mine)) + real))
    return {NAME: image_grid(folder, "age_bands.png", rows)}


def render_html(report: dict) -> str:
    """Section 9 of report.html."""
    return section_html("<h2>9. Findings by age band</h2>", report[NAME], _paragraphs(report, report[NAME]))


def _paragraphs(report: dict, section: dict) -> Iterator[str]:
    for band, entry in section.items():
        yield (
            f"<h3>{html.escape(band)}</h3><p>Records: "
            + html.escape(", ".join(f"{split} {n}" for split, n in entry["records"].items()))
            + f"; held out: {html.escape(entry['held_out_reason'])} ({fmt(entry['held_out_records'])} films); "
            f"{fmt(entry['images_per_finding'])} generated images per finding ({html.escape(entry['sampler'])}, "
            f"{entry['num_steps']} steps, guidance {fmt(entry['guidance_scale'])}, seeds "
            f"{entry['seeds'][0]}–{entry['seeds'][1]}). Aligned above chance: "
            f"{html.escape(', '.join(entry['aligned']) or 'none')}.</p>"
        )
        rows = []
        for name, item in entry["findings"].items():
            real = item["real_held_out"]
            rows.append(
                [
                    html.escape(name),
                    f"{fmt(real['n_positive'])} / {fmt(real['n_positive'] + real['n_negative'])}",
                    with_ci(real),
                    with_ci(item["generated"]),
                    f"<b>{html.escape(item['verdict'])}</b><br><span class=ci>{html.escape(item['reason'])}</span>",
                    html.escape(item["prompt_source"]) + "<br>" + "<br>".join(html.escape(p) for p in item["prompts"]),
                ]
            )
        headers = ["finding", "real held-out films showing it", "judge AUROC, real", "AUROC, generated", "verdict"]
        yield table([*headers, "prompts"], rows)
        yield f"<p class=note>{html.escape(entry['selection'])}. {html.escape(entry['definition'])}.</p>"
    yield img(report, NAME, "generated and real held-out images per finding")


__all__ = [
    "ALIGNED",
    "NAME",
    "NOT_SHOWN",
    "BandData",
    "band_of",
    "band_prompts",
    "built_prompts",
    "compute",
    "has",
    "make_figures",
    "read_band_data",
    "render_html",
    "verdict",
]
