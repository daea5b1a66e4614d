"""Caption augmentation (training.data.captions.augmented_caption): how many phrasings, and how many read back.

    python tests/benchmarks/bench_captions.py [--draws 1000] [--seed 0] [--examples 3]

For a handful of manifest records as the importers write them (paediatric and NIH labels), draws
``--draws`` augmented captions each (the rng of each draw as training makes it: run seed, draw,
index) and prints, per record: the distinct captions, the fraction that round-trip
(``round_trip_problems`` empty: ``engine.findings.parse.parse_prompt`` reads the record's findings,
age band, sex and view back, or less on purpose), the fractions with no study header, in lower case
and with a typo, the draws per second (parsing not counted), and a few examples.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.findings.parse import TYPO_TARGETS, correct_typo  # noqa: E402
from engine.manifest import ManifestRecord  # noqa: E402
from training.data.caption_augment import augment_rng, augmented_caption, round_trip_problems  # noqa: E402
from training.data.captions import caption_rng, nih_caption, paediatric_caption  # noqa: E402

HEADER = re.compile(r"radiograph|cxr|film|chest|x-ray", re.IGNORECASE)


def records() -> dict[str, ManifestRecord]:
    """A few records as the importers write them (their captions made with seed 0)."""

    def paediatric(label: str) -> ManifestRecord:
        caption = paediatric_caption(label, caption_rng(0, f"{label}.jpeg"))
        return ManifestRecord("x.png", caption.text, caption.findings, "p", "AP", "pediatric", label=label)

    def nih(labels: list[str], age: int | None, sex: str | None, view: str) -> ManifestRecord:
        caption = nih_caption(
            labels, caption_rng(0, "x.png"), age=age, sex=sex, view=None if view == "UNKNOWN" else view
        )
        return ManifestRecord("x.png", caption.text, caption.findings, "p", view, "nih", age=age, sex=sex)

    return {
        "paediatric normal": paediatric("normal"),
        "paediatric bacterial pneumonia": paediatric("bacterial_pneumonia"),
        "paediatric viral pneumonia": paediatric("viral_pneumonia"),
        "NIH cardiomegaly, 61 F, PA": nih(["Cardiomegaly"], 61, "F", "PA"),
        "NIH effusion + atelectasis, 72 M, AP": nih(["Effusion", "Atelectasis"], 72, "M", "AP"),
        "NIH no finding, 45 M, PA": nih(["No Finding"], 45, "M", "PA"),
        "NIH pneumothorax, 15 F, PA": nih(["Pneumothorax"], 15, "F", "PA"),
        "NIH mass + nodule, no age or sex": nih(["Mass", "Nodule"], None, None, "UNKNOWN"),
    }


def has_typo(text: str) -> bool:
    return any(correct_typo(word) in TYPO_TARGETS for word in re.findall(r"[A-Za-z]+", text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=1000, help="captions per record (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="run seed of the draws (default 0)")
    parser.add_argument("--examples", type=int, default=3, help="example captions printed per record (default 3)")
    args = parser.parse_args(argv)
    total = round_trips = 0
    columns = ("distinct", "round-trip", "no header", "lower", "typo", "draws/s")
    print(f"{'record':40s} " + " ".join(f"{c:>{max(6, len(c))}s}" for c in columns))
    examples = {}
    for index, (name, record) in enumerate(records().items()):
        started = time.perf_counter()
        texts = [augmented_caption(record, augment_rng(args.seed, draw, index)) for draw in range(args.draws)]
        speed = len(texts) / (time.perf_counter() - started)
        good = sum(not round_trip_problems(record, text) for text in texts)
        total, round_trips = total + len(texts), round_trips + good
        share = {
            "no header": sum(not HEADER.search(t) for t in texts) / len(texts),
            "lower": sum(t == t.lower() for t in texts) / len(texts),
            "typo": sum(has_typo(t) for t in texts) / len(texts),
        }
        print(
            f"{name:40s} {len(set(texts)):8d} {good / len(texts):10.3f} {share['no header']:9.2f} "
            f"{share['lower']:6.2f} {share['typo']:6.2f} {speed:8.0f}"
        )
        examples[name] = (record.text, texts[: args.examples])
    print(f"\nall: {round_trips}/{total} round-trip ({round_trips / total:.4f})\n")
    for name, (own, drawn) in examples.items():
        print(f"{name}\n  own:  {own}")
        for text in drawn:
            print(f"  drawn: {text}")
    return 0 if round_trips == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
