"""The evaluation report: ``report.json`` (every figure), PNG plots in ``figures/`` (matplotlib,
no display needed) and ``report.html`` that shows both, beside each other in the output folder.

The HTML is made only from the report dictionary and the plots, so it never shows a number that
the JSON does not hold. Plots use matplotlib's object-oriented API (``Figure``), never pyplot's
global state.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.fileio import atomic_write_text
from training.evaluate import prompt_sets

if TYPE_CHECKING:
    from training.evaluate.run import Context

FIGURES = "figures"


# --------------------------------------------------------------------------- JSON


def clean(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, NaN and infinities to None, paths to str."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_report(report: dict, ctx: Context, out: Path) -> None:
    """``out/report.json``, ``out/figures/*.png`` and ``out/report.html``."""
    (out / FIGURES).mkdir(parents=True, exist_ok=True)
    report["figures"] = make_figures(report, ctx, out / FIGURES)
    data = clean(report)
    atomic_write_text(out / "report.json", json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    atomic_write_text(out / "report.html", render_html(data))


# --------------------------------------------------------------------------- figures


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(figure, folder: Path, name: str) -> str:
    figure.savefig(folder / name)
    return f"{FIGURES}/{name}"


def _image_grid(
    folder: Path, name: str, rows: list[tuple[str, list[np.ndarray]]], titles: list[list[str]] | None = None
) -> str:
    """Rows of gray images (each (H, W) in [0, 1]) with a label on the left."""
    columns = max(len(images) for _, images in rows)
    figure = _figure(1.3 * columns + 1.2, 1.4 * len(rows) + 0.3)
    axes = np.atleast_2d(figure.subplots(len(rows), columns, squeeze=False))
    for r, (label, images) in enumerate(rows):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                ax.imshow(images[c], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
                if titles is not None:
                    ax.set_title(titles[r][c], fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=8)
    return _save(figure, folder, name)


def _bars(ax, labels: list[str], values: list[float | None], intervals: list[list[float | None] | None], color=None):
    x = np.arange(len(labels))
    heights = [v if v is not None else 0.0 for v in values]
    lower = [
        max(v - ci[0], 0) if ci and ci[0] is not None and v is not None else 0
        for v, ci in zip(values, intervals, strict=True)
    ]
    upper = [
        max(ci[1] - v, 0) if ci and ci[1] is not None and v is not None else 0
        for v, ci in zip(values, intervals, strict=True)
    ]
    ax.bar(x, heights, yerr=[lower, upper], capsize=4, color=color)
    ax.set_xticks(x, labels, fontsize=8)


def make_figures(report: dict, ctx: Context, folder: Path) -> dict[str, str]:
    """Every plot the sections allow; returns name -> path relative to the report."""
    figures: dict[str, str] = {}
    classes = list(ctx.classes)
    gen, test = ctx.generated, ctx.real.get("test")

    # samples: per class, generated | real test
    if gen is not None and test is not None:
        rows = []
        for i, name in enumerate(classes):
            g = [gen.images[j] for j in np.flatnonzero(gen.labels == i)[:6]]
            r = [test.images[j].astype(np.float32) for j in np.flatnonzero(test.labels == i)[:6]]
            rows.append((f"{name}\ngenerated | real", g + [np.ones_like(gen.images[0])] * (6 - len(g)) + r))
        figures["samples"] = _image_grid(folder, "samples.png", rows)

    if "statistics" in ctx.artifacts:
        values = ctx.artifacts["statistics"]
        figure = _figure(12, 3.2)
        axes = figure.subplots(1, 3)
        for ax, measure in zip(axes, ("contrast_ratio", "sharpness", "entropy"), strict=True):
            both = np.concatenate([values["real_test"][measure], values["generated"][measure]])
            bins = np.linspace(both.min(), both.max() + 1e-9, 30)
            ax.hist(values["real_test"][measure], bins=bins, alpha=0.6, density=True, label="real test")
            ax.hist(values["generated"][measure], bins=bins, alpha=0.6, density=True, label="generated")
            ax.set_title(measure.replace("_", " "))
        axes[0].legend(fontsize=8)
        figures["statistics"] = _save(figure, folder, "statistics.png")

    if "vae" in ctx.artifacts:
        originals, reconstructions = ctx.artifacts["vae"]
        figures["vae"] = _image_grid(
            folder, "vae.png", [("original", list(originals)), ("VAE reconstruction", list(reconstructions))]
        )

    frechet = report.get("frechet", {})
    if "generated_vs_real_test" in frechet:
        keys = ("generated_vs_real_test", "generated_vs_real_train", "real_train_vs_real_test")
        figure = _figure(6, 3.2)
        ax = figure.subplots()
        _bars(
            ax,
            ["generated\nvs real test", "generated\nvs real train", "real train vs\nreal test (floor)"],
            [frechet[k]["value"] for k in keys],
            [frechet[k]["ci95"] for k in keys],
            color=["C1", "C1", "C0"],
        )
        ax.set_ylabel(f"Fréchet distance ({frechet['feature_network']})", fontsize=8)
        figures["frechet"] = _save(figure, folder, "frechet.png")

    alignment = report.get("alignment", {})
    if "generated" in alignment:
        figure = _figure(12, 3.6)
        axes = figure.subplots(1, 3)
        for ax, key, title in (
            (axes[0], "generated", "generated (true = prompt's class)"),
            (axes[1], "real_test", "real test"),
        ):
            matrix = np.asarray(alignment[key]["confusion"], dtype=np.float64)
            rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
            ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
            for (r, c), count in np.ndenumerate(matrix):
                ax.text(
                    c,
                    r,
                    f"{int(count)}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if rates[r, c] < 0.6 else "white",
                )
            ax.set_xticks(range(len(classes)), classes, fontsize=7, rotation=20)
            ax.set_yticks(range(len(classes)), classes, fontsize=7)
            ax.set_xlabel("predicted", fontsize=8)
            ax.set_title(title, fontsize=9)
        width = 0.38
        x = np.arange(len(classes))
        for offset, key, label in ((-width / 2, "generated", "generated"), (width / 2, "real_test", "real test")):
            values = [alignment[key]["auroc"][c]["value"] or 0.0 for c in classes]
            cis = [alignment[key]["auroc"][c]["ci95"] for c in classes]
            lower = [max(v - (ci[0] if ci[0] is not None else v), 0) for v, ci in zip(values, cis, strict=True)]
            upper = [max((ci[1] if ci[1] is not None else v) - v, 0) for v, ci in zip(values, cis, strict=True)]
            axes[2].bar(x + offset, values, width, yerr=[lower, upper], capsize=3, label=label)
        axes[2].set_xticks(x, classes, fontsize=7, rotation=20)
        axes[2].set_ylim(0, 1.05)
        axes[2].axhline(0.5, color="gray", linewidth=0.8, linestyle=":")
        axes[2].set_title("one-vs-rest AUROC", fontsize=9)
        axes[2].legend(fontsize=7)
        figures["alignment"] = _save(figure, folder, "alignment.png")

    if "memorisation" in ctx.artifacts:
        art = ctx.artifacts["memorisation"]
        memo = report["memorisation"]
        figure = _figure(7, 3.2)
        ax = figure.subplots()
        edges = np.asarray(memo["histogram_edges"])
        ax.hist(art["reference"], bins=edges, alpha=0.6, density=True, label="real test -> nearest train")
        ax.hist(art["distance"], bins=edges, alpha=0.6, density=True, label="generated -> nearest train")
        ax.axvline(
            memo["threshold"], color="red", linestyle="--", linewidth=1, label=f"threshold {memo['threshold']:g}"
        )
        ax.set_xlabel("normalised 4x4 patch distance (0 = identical)", fontsize=8)
        ax.legend(fontsize=7)
        figures["memorisation"] = _save(figure, folder, "memorisation.png")
        generated, nearest, distance = art["pairs"]
        figures["memorisation_pairs"] = _image_grid(
            folder,
            "memorisation_pairs.png",
            [("generated", list(generated)), ("nearest training", list(nearest))],
            titles=[[f"d = {d:.3f}" for d in distance], ["" for _ in distance]],
        )

    utility = report.get("utility", {})
    if "arms" in utility:
        names = list(utility["arms"])
        figure = _figure(6, 3.2)
        ax = figure.subplots()
        _bars(
            ax,
            ["N real", "N/2 real", "N/2 real +\nN/2 generated"],
            [utility["arms"][n]["macro_auroc"]["value"] for n in names],
            [utility["arms"][n]["macro_auroc"]["ci95"] for n in names],
            color=["C0", "C0", "C1"],
        )
        ax.set_ylabel("macro AUROC on real test", fontsize=8)
        ax.set_ylim(0, 1.05)
        figures["utility"] = _save(figure, folder, "utility.png")

    diversity = report.get("diversity", {})
    if "per_class" in diversity:
        figure = _figure(10, 3.2)
        axes = figure.subplots(1, 2)
        width = 0.38
        x = np.arange(len(classes))
        for ax, key, title in (
            (axes[0], "ssim_distance", "mean pairwise 1 - SSIM"),
            (axes[1], "feature_distance", "mean pairwise feature distance"),
        ):
            for offset, source, label in (
                (-width / 2, "generated", "generated (one prompt)"),
                (width / 2, "real_test", "real test (one class)"),
            ):
                ax.bar(
                    x + offset, [diversity["per_class"][c][source].get(key, 0.0) for c in classes], width, label=label
                )
            ax.set_xticks(x, classes, fontsize=7, rotation=20)
            ax.set_title(title, fontsize=9)
        axes[0].legend(fontsize=7)
        figures["diversity"] = _save(figure, folder, "diversity.png")
    if ctx.artifacts.get("diversity"):
        seen, rows = set(), []
        for name, images in ctx.artifacts["diversity"]:
            if name not in seen:
                seen.add(name)
                rows.append((name, list(images[:8])))
        figures["diversity_samples"] = _image_grid(folder, "diversity_samples.png", rows)

    steps = report.get("steps", {})
    if "rows" in steps:
        figure = _figure(10, 3.2)
        axes = figure.subplots(1, 2)
        for sampler in dict.fromkeys(r["sampler"] for r in steps["rows"]):
            rows_ = [r for r in steps["rows"] if r["sampler"] == sampler]
            x = [r["steps"] for r in rows_]
            axes[0].errorbar(
                x,
                [r["frechet_distance"]["value"] for r in rows_],
                yerr=[
                    [max(r["frechet_distance"]["value"] - r["frechet_distance"]["ci95"][0], 0) for r in rows_],
                    [max(r["frechet_distance"]["ci95"][1] - r["frechet_distance"]["value"], 0) for r in rows_],
                ],
                marker="o",
                capsize=3,
                label=sampler,
            )
            axes[1].plot(x, [r["accuracy"] for r in rows_], marker="o", label=sampler)
        for ax in axes:
            ax.set_xticks(sorted({r["steps"] for r in steps["rows"]}))
        axes[0].set_xlabel("steps", fontsize=8)
        axes[0].set_ylabel("Fréchet distance to real test", fontsize=8)
        axes[1].set_xlabel("steps", fontsize=8)
        axes[1].set_ylabel("alignment accuracy", fontsize=8)
        axes[1].set_ylim(0, 1.05)
        axes[0].legend(fontsize=7)
        figures["steps"] = _save(figure, folder, "steps.png")
    figures |= prompt_sets.make_figure(report, folder)
    return figures


# --------------------------------------------------------------------------- HTML


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return html.escape(str(value))


def _ci(entry: dict | None) -> str:
    if not entry:
        return "–"
    text = _fmt(entry.get("value", entry.get("mean")))
    ci = entry.get("ci95")
    if ci and ci[0] is not None and ci[1] is not None:
        text += f" <span class=ci>[{_fmt(ci[0])}, {_fmt(ci[1])}]</span>"
    return text


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(report: dict, name: str, alt: str) -> str:
    path = report.get("figures", {}).get(name)
    return f'<p><img src="{html.escape(path)}" alt="{html.escape(alt)}"></p>' if path else ""


def _skipped(section: dict) -> str | None:
    return f"<p class=note>Skipped: {html.escape(section['skipped'])}.</p>" if "skipped" in section else None


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } .ci { color: #666; font-size: .9em; } .note { color: #555; font-size: .92em; }
img { max-width: 100%; } code { background: #f4f4f4; padding: 0 .2em; }
"""


def render_html(report: dict) -> str:
    """The whole report page from the cleaned report dictionary."""
    parts: list[str] = []
    add = parts.append
    model, data, options = report["model"], report["data"], report["options"]
    add(f"<h1>Evaluation of {html.escape(model['model_id'])}</h1>")
    add(
        f"<p class=note>Created {html.escape(report['created'])}; pack <code>{html.escape(model['folder'])}</code> "
        f"(fingerprint {html.escape(model['fingerprint'][:16])}…, {model['image_size'][0]} px); data "
        f"<code>{html.escape(data['manifest'])}</code>. Synthetic images are for education and testing, "
        "not diagnosis.</p>"
    )
    if report.get("command"):
        add(f"<p class=note>Command: <code>{html.escape(report['command'])}</code></p>")

    # key figures
    s = report["summary"]
    utility_diff = s.get("utility_macro_auroc_difference_half_plus_synthetic_minus_real_n")
    steps_best = s.get("steps_lowest_frechet_distance")
    add("<h2>Key figures</h2>")
    add(
        _table(
            ["figure", "value"],
            [
                [
                    "Fréchet distance, generated vs real test (floor: real train vs real test)",
                    f"{_fmt(s['frechet_distance_generated_vs_real_test'])} "
                    f"(floor {_fmt(s['frechet_distance_floor_real_train_vs_real_test'])})",
                ],
                [
                    "Alignment accuracy, generated (real test)",
                    f"{_fmt(s['alignment_accuracy_generated'])} ({_fmt(s['alignment_accuracy_real_test'])})",
                ],
                [
                    "Alignment macro AUROC, generated (real test)",
                    f"{_fmt(s['alignment_macro_auroc_generated'])} ({_fmt(s['alignment_macro_auroc_real_test'])})",
                ],
                [
                    "Memorisation: generated images at or below the threshold",
                    f"{_fmt(s['memorisation_count_at_or_below_threshold'])} "
                    f"of {_fmt(s['memorisation_generated_images'])}",
                ],
                ["Utility: macro AUROC, N/2 real + N/2 generated minus N real", _ci(utility_diff)],
                [
                    "Diversity: 1 - SSIM within a prompt, generated / real",
                    _fmt(s["diversity_ssim_distance_ratio_generated_to_real"]),
                ],
                [
                    "VAE reconstruction SSIM / PSNR (dB)",
                    f"{_fmt(s['vae_ssim_mean'])} / {_fmt(s['vae_psnr_db_mean'], 4)}",
                ],
                [
                    "Lowest Fréchet distance in the steps sweep",
                    f"{html.escape(steps_best['sampler'])}, {steps_best['steps']} steps" if steps_best else "–",
                ],
                [
                    "Paraphrase prompts: judged the prompt's class (reference prompts)",
                    f"{_fmt(s.get('paraphrase_accuracy'))} ({_fmt(s.get('paraphrase_reference_accuracy'))})",
                ],
                [
                    '"No X" prompts judged not-X (normal prompts)',
                    f"{_fmt(s.get('negation_judged_not_x'))} ({_fmt(s.get('negation_normal_reference_judged_not_x'))})",
                ],
                ["Generation time per 1,000 images (s)", _fmt(s["seconds_per_1000_generated_images"], 4)],
            ],
        )
    )
    add("<p class=note>Brackets hold bootstrap 95% intervals.</p>")

    # data, prompts, classifier
    add("<h2>Data and prompts</h2>")
    counts = data["images_per_split_and_class"]
    add(
        _table(
            ["split", *data["classes"]],
            [[split, *[_fmt(counts[split][c]) for c in data["classes"]]] for split in counts],
        )
    )
    if data.get("left_out"):
        add(
            "<p class=note>Left out: "
            + html.escape(", ".join(f"{v} {k}" for k, v in data["left_out"].items()))
            + "</p>"
        )
    add(
        _table(
            ["class", "source", "prompts"],
            [
                [html.escape(c), html.escape(p["source"]), "<br>".join(html.escape(t) for t in p["prompts"])]
                for c, p in report["prompts"].items()
            ],
        )
    )
    gen = report.get("generation")
    if gen:
        add(
            f"<p>Generated {_fmt(gen['images'])} images ({html.escape(gen['sampler'])}, {gen['num_steps']} steps, "
            f"guidance {_fmt(gen['guidance_scale'])}, seeds {gen['seeds'][0]}–{gen['seeds'][1]}, "
            f"on {html.escape(str(gen['provider']))}) "
            f"in {_fmt(gen['seconds'], 4)} s: {_fmt(gen['seconds_per_1000_images'], 4)} s per 1,000 images. Class mix "
            f"{html.escape(', '.join(f'{k} {v}' for k, v in gen['per_class'].items()))}, "
            f"{html.escape(gen['class_mix'])}.</p>"
        )
    add(_img(report, "samples", "generated and real samples per class"))

    clf = report["classifier"]
    add("<h2>The evaluation classifier (feature network)</h2>")
    add(f"<p>{html.escape(clf['description'])}. Feature space: {html.escape(clf['feature_space'])}.</p>")
    if clf.get("note"):
        add(f"<p class=note>{html.escape(clf['note'])}</p>")
    rows = []
    for split in ("val", "test"):
        if split in clf:
            rows.append([split, _fmt(clf[split]["n"]), _ci(clf[split]["accuracy"]), _ci(clf[split]["macro_auroc"])])
    add(_table(["real split", "images", "accuracy", "macro AUROC"], rows))

    # 1. statistics and VAE
    add("<h2>1. Image statistics and VAE reconstructions</h2>")
    st = report["statistics"]
    skipped = _skipped(st)
    if skipped:
        add(skipped)
    else:
        measures = ("contrast_ratio", "sharpness", "entropy")
        add(
            _table(
                ["set", *[m.replace("_", " ") for m in measures]],
                [
                    [
                        name.replace("_", " "),
                        *[_ci(st[name][m]) + f" <span class=ci>sd {_fmt(st[name][m]['std'])}</span>" for m in measures],
                    ]
                    for name in ("real_test", "generated")
                ],
            )
        )
        add(
            "<p class=note>"
            + html.escape("; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in st["definitions"].items()))
            + ".</p>"
        )
        add(_img(report, "statistics", "image statistics histograms"))
    vae = report["vae"]
    skipped = _skipped(vae)
    if skipped:
        add(skipped)
    else:
        add(
            f"<p>VAE reconstructions of {_fmt(vae['n'])} {html.escape(vae['split'])} images: SSIM {_ci(vae['ssim'])}, "
            f"PSNR {_ci(vae['psnr_db'])} dB. <span class=note>{html.escape(vae['definition'])}.</span></p>"
        )
        add(_img(report, "vae", "VAE reconstructions"))

    # 2. Fréchet distance
    add("<h2>2. Distribution distance</h2>")
    fr = report["frechet"]
    skipped = _skipped(fr)
    if skipped:
        add(skipped)
    else:
        keys = {
            "generated_vs_real_test": "generated vs real test",
            "generated_vs_real_train": "generated vs real train",
            "real_train_vs_real_test": "real train vs real test (floor)",
        }
        add(
            _table(
                ["pair", "images", f"Fréchet distance ({fr['feature_network']}, {fr['feature_dim']}-d)"],
                [[label, " / ".join(_fmt(n) for n in fr[key]["n"]), _ci(fr[key])] for key, label in keys.items()],
            )
        )
        add(f"<p class=note>{html.escape(fr['floor_note'])}. Ratio to the floor: {_fmt(fr['ratio_to_floor'])}.</p>")
        if fr.get("inception"):
            inc = fr["inception"]
            add(_table(["pair", f"FID ({inc['network']})"], [[label, _fmt(inc[key])] for key, label in keys.items()]))
            add(f"<p class=note>{html.escape(inc['note'])}.</p>")
        else:
            add("<p class=note>Standard FID (Inception) not computed: pass <code>--inception-weights PATH</code>.</p>")
        add(_img(report, "frechet", "Fréchet distances"))

    # 3. alignment
    add("<h2>3. Prompt alignment</h2>")
    al = report["alignment"]
    skipped = _skipped(al)
    if skipped:
        add(skipped)
    else:
        classes = data["classes"]
        add(
            _table(
                ["images", "n", "accuracy", "macro AUROC", *[f"AUROC {c}" for c in classes]],
                [
                    [
                        label,
                        _fmt(al[key]["n"]),
                        _ci(al[key]["accuracy"]),
                        _ci(al[key]["macro_auroc"]),
                        *[_ci(al[key]["auroc"][c]) for c in classes],
                    ]
                    for key, label in (("generated", "generated (label = prompt's class)"), ("real_test", "real test"))
                ],
            )
        )
        add(_img(report, "alignment", "confusion matrices and AUROC"))
        add(
            _table(
                ["prompt", "class", "images", "accuracy"],
                [
                    [html.escape(r["prompt"]), html.escape(r["class"]), _fmt(r["n"]), _fmt(r["accuracy"])]
                    for r in al["per_prompt"]
                ],
            )
        )

    # 4. memorisation
    add("<h2>4. Memorisation</h2>")
    me = report["memorisation"]
    skipped = _skipped(me)
    if skipped:
        add(skipped)
    else:
        add(
            f"<p class=note>{html.escape(me['definition'])}. "
            f"Searched {_fmt(me['training_images'])} training images.</p>"
        )
        if not me["meets_protocol"]:
            add(
                "<p class=note><b>Fewer generated images than the protocol asks</b>: "
                f"{html.escape(me['protocol_note'])}.</p>"
            )
        add(
            _table(
                ["images", "n", f"at or below {_fmt(me['threshold'])}", "min", "p1", "p5", "median", "mean cosine"],
                [
                    [
                        label,
                        _fmt(me[key]["n"]),
                        f"{_fmt(me[key]['count_at_or_below_threshold'])} "
                        f"({_fmt(100 * (me[key]['fraction_at_or_below_threshold'] or 0), 3)}%)",
                        _fmt(me[key]["quantiles"]["p0"]),
                        _fmt(me[key]["quantiles"]["p1"]),
                        _fmt(me[key]["quantiles"]["p5"]),
                        _fmt(me[key]["quantiles"]["p50"]),
                        _fmt(me[key]["cosine_similarity_mean"]),
                    ]
                    for key, label in (
                        ("generated", "generated -> nearest train"),
                        ("real_test_reference", "real test -> nearest train"),
                    )
                ],
            )
        )
        add(_img(report, "memorisation", "patch distance histogram"))
        add("<p>The closest generated-training pairs:</p>")
        add(_img(report, "memorisation_pairs", "closest pairs"))
        add(
            _table(
                ["prompt", "seed", "training image", "cosine", "patch distance"],
                [
                    [
                        html.escape(p["prompt"]),
                        _fmt(p["seed"]),
                        html.escape(p["training_image"]),
                        _fmt(p["cosine_similarity"]),
                        _fmt(p["patch_distance"]),
                    ]
                    for p in me["closest_pairs"]
                ],
            )
        )

    # 5. utility
    add("<h2>5. Utility of generated images for training</h2>")
    ut = report["utility"]
    skipped = _skipped(ut)
    if skipped:
        add(skipped)
    else:
        add(
            f"<p>N = {_fmt(ut['n'])}; {html.escape(ut['classifier'])}; "
            f"tested on {_fmt(ut['test_images'])} real test images; "
            f"{html.escape(ut['bootstrap'])}.</p>"
        )
        labels = {
            "real_n": "N real",
            "real_half": "N/2 real",
            "real_half_plus_synthetic_half": "N/2 real + N/2 generated",
        }
        add(
            _table(
                ["training set", "real", "generated", "macro AUROC on real test"],
                [
                    [labels[k], _fmt(a["real"]), _fmt(a["synthetic"]), _ci(a["macro_auroc"])]
                    for k, a in ut["arms"].items()
                ],
            )
        )
        diff_labels = {
            "real_half_minus_real_n": "N/2 real − N real",
            "real_half_plus_synthetic_minus_real_half": "(N/2 real + N/2 generated) − N/2 real",
            "real_half_plus_synthetic_minus_real_n": "(N/2 real + N/2 generated) − N real",
        }
        add(
            _table(
                ["difference in macro AUROC", "value [95% CI]"],
                [[diff_labels[k], _ci(v)] for k, v in ut["differences"].items()],
            )
        )
        for note in ut.get("notes", []):
            add(f"<p class=note>{html.escape(note)}</p>")
        add(_img(report, "utility", "utility"))

    # 6. diversity
    add("<h2>6. Diversity</h2>")
    dv = report["diversity"]
    skipped = _skipped(dv)
    if skipped:
        add(skipped)
    else:
        add(f"<p class=note>{html.escape(dv['definition'])}.</p>")
        add(
            _table(
                ["class", "1 − SSIM generated", "1 − SSIM real", "feature distance generated", "feature distance real"],
                [
                    [
                        html.escape(c),
                        _fmt(v["generated"].get("ssim_distance")),
                        _fmt(v["real_test"].get("ssim_distance")),
                        _fmt(v["generated"].get("feature_distance")),
                        _fmt(v["real_test"].get("feature_distance")),
                    ]
                    for c, v in dv["per_class"].items()
                ],
            )
        )
        ov = dv["overall"]
        add(
            f"<p>Overall ratio generated / real: 1 − SSIM {_fmt(ov.get('ssim_distance_ratio'))}, feature distance "
            f"{_fmt(ov.get('feature_distance_ratio'))}.</p>"
        )
        add(_img(report, "diversity", "diversity"))
        add(_img(report, "diversity_samples", "images of one prompt per class"))

    # 7. steps
    add("<h2>7. Steps and samplers</h2>")
    sp = report["steps"]
    skipped = _skipped(sp)
    if skipped:
        add(skipped)
    else:
        add(
            f"<p>{_fmt(sp['images_per_setting'])} images per setting, guidance {_fmt(sp['guidance_scale'])}; "
            f"{html.escape(sp['same_seeds'])}.</p>"
        )
        add(
            _table(
                [
                    "sampler",
                    "steps",
                    "Fréchet distance to real test",
                    "accuracy",
                    "macro AUROC",
                    "s / image",
                    "pack default",
                ],
                [
                    [
                        html.escape(r["sampler"]),
                        _fmt(r["steps"]),
                        _ci(r["frechet_distance"]),
                        _fmt(r["accuracy"]),
                        _fmt(r["macro_auroc"]),
                        _fmt(r["seconds_per_image"], 3),
                        "yes" if r["is_pack_default"] else "",
                    ]
                    for r in sp["rows"]
                ],
            )
        )
        add(_img(report, "steps", "steps vs quality"))

    # 8. prompt sets
    add(prompt_sets.render_html(report))

    # environment and timings
    add("<h2>Environment and timings</h2>")
    env = report["environment"]
    add(_table(["", ""], [[html.escape(k), _fmt(v)] for k, v in env.items()]))
    add(_table(["phase", "seconds"], [[html.escape(k), _fmt(v, 4)] for k, v in report["timings_s"].items()]))
    add(
        "<details><summary>Options</summary>"
        + _table(["option", "value"], [[html.escape(k), html.escape(json.dumps(v))] for k, v in options.items()])
        + "</details>"
    )
    body = "\n".join(p for p in parts if p)
    title = html.escape(f"CXR Studio evaluation: {model['model_id']}")
    head = f"<meta charset=utf-8><title>{title}</title><style>{STYLE}</style>"
    return f"<!doctype html>\n<html lang=en><head>{head}</head>\n<body>\n{body}\n</body></html>\n"


__all__ = ["clean", "make_figures", "render_html", "write_report"]
