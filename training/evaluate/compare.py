"""Several evaluation reports side by side: one Markdown table of the figures that decide what ships.

``python -m training.evaluate.compare NAME=EVAL_DIR ... [--classes A,B,C] [--out TABLE.md]`` reads
each ``EVAL_DIR/report.json`` (written by ``cxr-studio evaluate``) and prints, per run: Fréchet
distance to the real test images (and the real train-vs-test floor), prompt alignment on generated
and on real test images, the per-class AUROC on generated images with its 95% bootstrap interval,
the memorisation count, the diversity ratio, the committed paraphrase set's accuracy (reference
prompts in brackets) and the negation check ("no X" images judged not-X, normal prompts in
brackets; section 8), and whether the run passes the shipping rule of a
new pack: no generated image at or below the memorisation threshold among at least 1,000, and
for every class in ``--classes`` an AUROC whose 95% interval lies above chance (0.5).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.evaluate.options import MIN_MEMORISATION_IMAGES, dig


class CompareError(ValueError):
    """A run that cannot be read; the message names it."""


def read_report(folder: Path) -> dict:
    path = Path(folder) / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompareError(f"{path}: not a readable evaluation report: {exc}") from None
    if not isinstance(report, dict) or "summary" not in report:
        raise CompareError(f"{path}: not a cxr-studio evaluation report (no summary)")
    return report


def _num(value: Any, digits: int = 3) -> str:
    return "–" if not isinstance(value, int | float) else f"{value:.{digits}f}"


def verdict(report: dict, classes: Sequence[str]) -> tuple[bool, list[str]]:
    """(passes, reasons it does not) under the shipping rule in the module docstring."""
    reasons = []
    memo = dig(report, "memorisation", "generated") or {}
    count, n = memo.get("count_at_or_below_threshold"), memo.get("n")
    if not isinstance(n, int) or n < MIN_MEMORISATION_IMAGES:
        reasons.append(f"memorisation measured on {n or 0} < {MIN_MEMORISATION_IMAGES} generated images")
    elif count != 0:
        reasons.append(f"{count} of {n} generated images at or below the memorisation threshold")
    auroc = dig(report, "alignment", "generated", "auroc") or {}
    for name in classes:
        ci = dig(auroc, name, "ci95")
        if not ci:
            reasons.append(f"no AUROC for {name}")
        elif ci[0] <= 0.5:
            reasons.append(f"{name}: AUROC 95% CI {ci[0]:.2f}–{ci[1]:.2f} does not exclude chance")
    return not reasons, reasons


def _prompt_set_cells(report: dict) -> list[str]:
    """Section 8's paraphrase accuracy and negation check, or dashes when the report has none."""
    overall = dig(report, "prompt_sets", "paraphrases", "overall") or {}
    para, ref = overall.get("paraphrases") or {}, overall.get("reference") or {}
    ci = para.get("ci95") or [None, None]
    paraphrase = (
        f"{_num(para.get('value'))} [{_num(ci[0], 2)}–{_num(ci[1], 2)}] ({_num(ref.get('value'))})" if para else "–"
    )
    pooled = dig(report, "prompt_sets", "negations", "pooled") or {}
    negation = (
        f"{_num(dig(pooled, 'negations_judged_not_x', 'value'))} "
        f"({_num(dig(pooled, 'normal_prompts_judged_not_x', 'value'))})"
        if pooled
        else "–"
    )
    return [paraphrase, negation]


def table(runs: dict[str, dict], classes: Sequence[str] | None = None) -> str:
    """The Markdown table (a header, one row per run, then each failing run's reasons)."""
    if not runs:
        raise CompareError("no runs to compare")
    if classes is None:
        first = next(iter(runs.values()))
        classes = sorted(dig(first, "alignment", "generated", "auroc") or {})
    head = [
        "run", "FD gen→test (floor)", "align. acc gen (real)", "macro AUROC gen (real)",
        *(f"AUROC {name} gen [95% CI]" for name in classes),
        "memorised ≤ thr / n", "diversity", "paraphrase acc [95% CI] (ref.)", "no-X judged not-X (normal)",
        "ships?",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for name, report in runs.items():
        s = report["summary"]
        auroc = dig(report, "alignment", "generated", "auroc") or {}
        cells = [
            name,
            f"{_num(s.get('frechet_distance_generated_vs_real_test'), 2)} "
            f"({_num(s.get('frechet_distance_floor_real_train_vs_real_test'), 2)})",
            f"{_num(s.get('alignment_accuracy_generated'))} ({_num(s.get('alignment_accuracy_real_test'))})",
            f"{_num(s.get('alignment_macro_auroc_generated'))} ({_num(s.get('alignment_macro_auroc_real_test'))})",
        ]
        for cls in classes:
            value, ci = dig(auroc, cls, "value"), dig(auroc, cls, "ci95")
            cells.append(f"{_num(value)} [{_num(ci[0], 2)}–{_num(ci[1], 2)}]" if ci else _num(value))
        cells.append(
            f"{s.get('memorisation_count_at_or_below_threshold', '–')} / {s.get('memorisation_generated_images', '–')}"
        )
        cells.append(_num(s.get("diversity_ssim_distance_ratio_generated_to_real"), 2))
        cells += _prompt_set_cells(report)
        passes, reasons = verdict(report, classes)
        cells.append("yes" if passes else "no")
        if reasons:
            notes.append(f"- {name}: " + "; ".join(reasons))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, *(["", *notes] if notes else [])]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=EVAL_DIR", help="a name and an evaluate --out folder")
    parser.add_argument("--classes", default=None, help="classes that must align above chance (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    try:
        runs = {}
        for item in args.runs:
            name, sep, folder = item.partition("=")
            if not sep or not name or not folder:
                raise CompareError(f"{item!r}: give NAME=EVAL_DIR")
            runs[name] = read_report(Path(folder))
        classes = [c for c in args.classes.split(",") if c] if args.classes else None
        text = table(runs, classes)
    except CompareError as exc:
        print(f"compare: error: {exc}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
