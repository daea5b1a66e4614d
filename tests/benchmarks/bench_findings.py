"""Findings extraction (engine.findings) against the human MeSH annotations of the IU X-ray reports.

    python tests/benchmarks/bench_findings.py [--tgz NLMCXR_reports.tgz] [--errors NAME] [--uncertain-positive]

Each report's FINDINGS + IMPRESSION text ("XXXX" de-identification cleaned) goes through
``engine.findings.summarize``; a finding counts as predicted when its status is ``present`` (with
``--uncertain-positive`` also ``uncertain``). The reference is the set of findings that the report's
MeSH "major" terms name (``training.data.importers.iu_xray.iu_mesh_findings``). Reports indexed "No Indexing"
(no human annotation) and reports with no findings or impression text are left out. Prints
precision, recall and F1 per finding and the macro-F1 over findings with at least ``MIN_POSITIVES``
reference positives.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.findings.reader import summarize  # noqa: E402
from engine.findings.vocabulary import FINDINGS, PRESENT, UNCERTAIN  # noqa: E402
from training.data.importers.iu_xray import IU_MESH_NAMES, IUReport, iu_mesh_findings, read_iu_reports  # noqa: E402

MIN_POSITIVES = 40


def shared_data_dir() -> Path:
    return Path(os.environ.get("CXR_SHARED_DATA", REPO.parent / "shared" / "data"))


def default_tgz() -> Path:
    return shared_data_dir() / "iu-xray" / "NLMCXR_reports.tgz"


@dataclass
class FindingScore:
    """Counts for one finding; precision / recall / F1 are 0 where undefined."""

    name: str
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    @property
    def positives(self) -> int:
        return self.true_positives + self.false_negatives

    @property
    def precision(self) -> float:
        predicted = self.true_positives + self.false_positives
        return self.true_positives / predicted if predicted else 0.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.positives if self.positives else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class Evaluation:
    scores: dict[str, FindingScore]
    reports: int
    left_out: dict[str, int]
    errors: dict[str, list[tuple[str, str, IUReport]]]

    def macro_f1(self, min_positives: int = MIN_POSITIVES) -> float:
        counted = [s.f1 for s in self.scores.values() if s.positives >= min_positives]
        return sum(counted) / len(counted) if counted else 0.0


def usable(report: IUReport) -> str | None:
    """Why a report is left out of the evaluation, or None."""
    if any(term.strip().lower() == "no indexing" for term in report.mesh_major):
        return "MeSH 'No Indexing'"
    if not report.text.strip():
        return "no findings or impression text"
    return None


def evaluate(reports: list[IUReport], *, uncertain_positive: bool = False) -> Evaluation:
    # 1. reference and prediction per report
    positive = {PRESENT, UNCERTAIN} if uncertain_positive else {PRESENT}
    evaluated = [name for name in FINDINGS if name in IU_MESH_NAMES]
    scores = {name: FindingScore(name) for name in evaluated}
    errors: dict[str, list[tuple[str, str, IUReport]]] = {name: [] for name in evaluated}
    left_out: dict[str, int] = {}
    count = 0
    for report in reports:
        reason = usable(report)
        if reason is not None:
            left_out[reason] = left_out.get(reason, 0) + 1
            continue
        count += 1
        truth = iu_mesh_findings(report.mesh_major)
        summary = summarize(report.text)
        predicted = {name for name, status in summary.items() if status in positive}
        # 2. count
        for name in evaluated:
            score = scores[name]
            if name in truth and name in predicted:
                score.true_positives += 1
            elif name in predicted:
                score.false_positives += 1
                errors[name].append(("FP", summary.get(name, "-"), report))
            elif name in truth:
                score.false_negatives += 1
                errors[name].append(("FN", summary.get(name, "-"), report))
    return Evaluation(scores, count, left_out, errors)


def format_table(evaluation: Evaluation, min_positives: int = MIN_POSITIVES) -> str:
    lines = [f"{'finding':<24} {'pos':>5} {'TP':>5} {'FP':>5} {'FN':>5} {'prec':>6} {'recall':>6} {'F1':>6}"]
    for name, score in evaluation.scores.items():
        if score.positives == 0 and score.false_positives == 0:
            continue
        mark = "" if score.positives >= min_positives else f"  (< {min_positives} positives, not in macro)"
        lines.append(
            f"{name:<24} {score.positives:>5} {score.true_positives:>5} {score.false_positives:>5} "
            f"{score.false_negatives:>5} {score.precision:>6.3f} {score.recall:>6.3f} {score.f1:>6.3f}{mark}"
        )
    counted = sum(1 for s in evaluation.scores.values() if s.positives >= min_positives)
    lines.append(
        f"macro-F1 over {counted} findings with >= {min_positives} positives: {evaluation.macro_f1(min_positives):.4f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tgz", type=Path, default=default_tgz(), help="NLMCXR_reports.tgz")
    parser.add_argument("--errors", default=None, metavar="NAME", help="print the false positives/negatives of NAME")
    parser.add_argument("--limit", type=int, default=40, help="how many errors to print")
    parser.add_argument("--uncertain-positive", action="store_true", help="count uncertain as positive too")
    args = parser.parse_args(argv)
    if not args.tgz.is_file():
        print(f"error: {args.tgz} not found (set CXR_SHARED_DATA or pass --tgz)", file=sys.stderr)
        return 2
    if args.errors is not None and args.errors not in IU_MESH_NAMES:
        print(f"error: {args.errors!r} is not scored; one of {', '.join(sorted(IU_MESH_NAMES))}", file=sys.stderr)
        return 2

    started = time.perf_counter()
    reports = read_iu_reports(args.tgz)
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    evaluation = evaluate(reports, uncertain_positive=args.uncertain_positive)
    extract_s = time.perf_counter() - started
    left = ", ".join(f"{n} {reason}" for reason, n in evaluation.left_out.items())
    print(f"IU X-ray: {len(reports)} reports, {evaluation.reports} evaluated (left out: {left})")
    print(f"positive = {'present or uncertain' if args.uncertain_positive else 'present'}")
    print(format_table(evaluation))
    per_report_ms = 1000 * extract_s / max(evaluation.reports, 1)
    print(f"read {read_s:.2f} s, extraction {extract_s:.2f} s ({per_report_ms:.2f} ms/report)")
    if args.errors is not None:
        for kind, status, report in evaluation.errors[args.errors][: args.limit]:
            print(f"\n{kind} [{status}] {report.uid}: MeSH {'; '.join(report.mesh_major)}\n  {report.text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
