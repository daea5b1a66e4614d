"""The report shell: ``report.json`` (every figure), PNG plots in ``figures/`` (matplotlib, no
display needed) and ``report.html`` that shows both, beside each other in the output folder. The
page frame (key figures, data, classifier, environment) is drawn here; each section of
:mod:`training.evaluate.sections` adds its own figures and HTML with the helpers below.

The HTML is made only from the report dictionary and the plots, so it never shows a number that
the JSON does not hold. Plots use matplotlib's object-oriented API (``Figure``), never pyplot's
global state.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.fileio import atomic_write_text

if TYPE_CHECKING:
    from training.evaluate.context import Context

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


def write_report(report: dict, ctx: Context, out: Path, sections: Sequence[ModuleType]) -> None:
    """``out/report.json``, ``out/figures/*.png`` and ``out/report.html``; ``sections`` are the section
    modules in report order, each with ``make_figures(report, ctx, folder)`` and ``render_html(report)``."""
    (out / FIGURES).mkdir(parents=True, exist_ok=True)
    report["figures"] = make_figures(report, ctx, out / FIGURES, sections)
    data = clean(report)
    atomic_write_text(out / "report.json", json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    atomic_write_text(out / "report.html", render_html(data, sections))


# --------------------------------------------------------------------------- figures


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(figure, folder: Path, name: str) -> str:
    figure.savefig(folder / name)
    return f"{FIGURES}/{name}"


def image_grid(
    folder: Path, name: str, rows: list[tuple[str, list[np.ndarray]]], titles: list[list[str]] | None = None
) -> str:
    """Rows of gray images (each (H, W) in [0, 1]) with a label on the left."""
    columns = max(len(images) for _, images in rows)
    figure = new_figure(1.3 * columns + 1.2, 1.4 * len(rows) + 0.3)
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
    return save_figure(figure, folder, name)


def error_bars(
    ax, x: np.ndarray, entries: list[dict], width: float = 0.8, *, label: str | None = None, color=None, capsize=3
) -> None:
    """Bars of the entries' ``value`` at ``x`` with their ``ci95`` as whiskers (a report's ``{"value", "ci95"}``
    dicts); a missing value draws an empty bar without whiskers, a missing bound no whisker on its side."""
    values = [e["value"] for e in entries]
    intervals = [e.get("ci95") or [None, None] for e in entries]
    lower = [
        max(v - ci[0], 0) if v is not None and ci[0] is not None else 0 for v, ci in zip(values, intervals, strict=True)
    ]
    upper = [
        max(ci[1] - v, 0) if v is not None and ci[1] is not None else 0 for v, ci in zip(values, intervals, strict=True)
    ]
    heights = [v if v is not None else 0.0 for v in values]
    ax.bar(x, heights, width, yerr=[lower, upper], capsize=capsize, label=label, color=color)


def make_figures(report: dict, ctx: Context, folder: Path, sections: Sequence[ModuleType]) -> dict[str, str]:
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
        figures["samples"] = image_grid(folder, "samples.png", rows)

    for section in sections:
        figures |= section.make_figures(report, ctx, folder)
    return figures


# --------------------------------------------------------------------------- HTML


def fmt(value: Any, digits: int = 3) -> str:
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


def with_ci(entry: dict | None) -> str:
    if not entry:
        return "–"
    text = fmt(entry.get("value", entry.get("mean")))
    ci = entry.get("ci95")
    if ci and ci[0] is not None and ci[1] is not None:
        text += f" <span class=ci>[{fmt(ci[0])}, {fmt(ci[1])}]</span>"
    return text


def table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def img(report: dict, name: str, alt: str) -> str:
    path = report.get("figures", {}).get(name)
    return f'<p><img src="{html.escape(path)}" alt="{html.escape(alt)}"></p>' if path else ""


def skipped_note(section: dict) -> str | None:
    return f"<p class=note>Skipped: {html.escape(section['skipped'])}.</p>" if "skipped" in section else None


def section_html(heading: str | None, section: dict, body: Iterable[str]) -> str:
    """One section of report.html: its heading, then either the note that it was skipped or the
    paragraphs of ``body``, a generator, so that a skipped section's missing keys are never read."""
    note = skipped_note(section)
    parts = [heading, *([note] if note else body)]
    return "\n".join(p for p in parts if p)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } .ci { color: #666; font-size: .9em; } .note { color: #555; font-size: .92em; }
img { max-width: 100%; } code { background: #f4f4f4; padding: 0 .2em; }
"""


def render_html(report: dict, sections: Sequence[ModuleType]) -> str:
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
        table(
            ["figure", "value"],
            [
                [
                    "Fréchet distance, generated vs real test (floor: real train vs real test)",
                    f"{fmt(s['frechet_distance_generated_vs_real_test'])} "
                    f"(floor {fmt(s['frechet_distance_floor_real_train_vs_real_test'])})",
                ],
                [
                    "Alignment accuracy, generated (real test)",
                    f"{fmt(s['alignment_accuracy_generated'])} ({fmt(s['alignment_accuracy_real_test'])})",
                ],
                [
                    "Alignment macro AUROC, generated (real test)",
                    f"{fmt(s['alignment_macro_auroc_generated'])} ({fmt(s['alignment_macro_auroc_real_test'])})",
                ],
                [
                    "Memorisation: generated images at or below the threshold",
                    f"{fmt(s['memorisation_count_at_or_below_threshold'])} "
                    f"of {fmt(s['memorisation_generated_images'])}",
                ],
                ["Utility: macro AUROC, N/2 real + N/2 generated minus N real", with_ci(utility_diff)],
                [
                    "Diversity: 1 - SSIM within a prompt, generated / real",
                    fmt(s["diversity_ssim_distance_ratio_generated_to_real"]),
                ],
                [
                    "VAE reconstruction SSIM / PSNR (dB)",
                    f"{fmt(s['vae_ssim_mean'])} / {fmt(s['vae_psnr_db_mean'], 4)}",
                ],
                [
                    "Lowest Fréchet distance in the steps sweep",
                    f"{html.escape(steps_best['sampler'])}, {steps_best['steps']} steps" if steps_best else "–",
                ],
                [
                    "Paraphrase prompts: judged the prompt's class (reference prompts)",
                    f"{fmt(s.get('paraphrase_accuracy'))} ({fmt(s.get('paraphrase_reference_accuracy'))})",
                ],
                [
                    '"No X" prompts judged not-X (normal prompts)',
                    f"{fmt(s.get('negation_judged_not_x'))} ({fmt(s.get('negation_normal_reference_judged_not_x'))})",
                ],
                ["Generation time per 1,000 images (s)", fmt(s["seconds_per_1000_generated_images"], 4)],
            ],
        )
    )
    add("<p class=note>Brackets hold bootstrap 95% intervals.</p>")

    # data, prompts, classifier
    add("<h2>Data and prompts</h2>")
    counts = data["images_per_split_and_class"]
    add(
        table(
            ["split", *data["classes"]],
            [[split, *[fmt(counts[split][c]) for c in data["classes"]]] for split in counts],
        )
    )
    if data.get("left_out"):
        add(
            "<p class=note>Left out: "
            + html.escape(", ".join(f"{v} {k}" for k, v in data["left_out"].items()))
            + "</p>"
        )
    add(
        table(
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
            f"<p>Generated {fmt(gen['images'])} images ({html.escape(gen['sampler'])}, {gen['num_steps']} steps, "
            f"guidance {fmt(gen['guidance_scale'])}, seeds {gen['seeds'][0]}–{gen['seeds'][1]}, "
            f"on {html.escape(str(gen['provider']))}) "
            f"in {fmt(gen['seconds'], 4)} s: {fmt(gen['seconds_per_1000_images'], 4)} s per 1,000 images. Class mix "
            f"{html.escape(', '.join(f'{k} {v}' for k, v in gen['per_class'].items()))}, "
            f"{html.escape(gen['class_mix'])}.</p>"
        )
    add(img(report, "samples", "generated and real samples per class"))

    clf = report["classifier"]
    add("<h2>The evaluation classifier (feature network)</h2>")
    add(f"<p>{html.escape(clf['description'])}. Feature space: {html.escape(clf['feature_space'])}.</p>")
    if clf.get("note"):
        add(f"<p class=note>{html.escape(clf['note'])}</p>")
    rows = []
    for split in ("val", "test"):
        if split in clf:
            entry = clf[split]
            rows.append([split, fmt(entry["n"]), with_ci(entry.get("accuracy")), with_ci(entry["macro_auroc"])])
    add(table(["real split", "images", "accuracy", "macro AUROC"], rows))

    # 1-8. the sections
    for section in sections:
        add(section.render_html(report))

    # environment and timings
    add("<h2>Environment and timings</h2>")
    env = report["environment"]
    add(table(["", ""], [[html.escape(k), fmt(v)] for k, v in env.items()]))
    add(table(["phase", "seconds"], [[html.escape(k), fmt(v, 4)] for k, v in report["timings_s"].items()]))
    add(
        "<details><summary>Options</summary>"
        + table(["option", "value"], [[html.escape(k), html.escape(json.dumps(v))] for k, v in options.items()])
        + "</details>"
    )
    body = "\n".join(p for p in parts if p)
    title = html.escape(f"CXR Studio evaluation: {model['model_id']}")
    head = f"<meta charset=utf-8><title>{title}</title><style>{STYLE}</style>"
    return f"<!doctype html>\n<html lang=en><head>{head}</head>\n<body>\n{body}\n</body></html>\n"


__all__ = [
    "FIGURES",
    "clean",
    "error_bars",
    "fmt",
    "image_grid",
    "img",
    "make_figures",
    "new_figure",
    "render_html",
    "save_figure",
    "section_html",
    "skipped_note",
    "table",
    "with_ci",
    "write_report",
]
