"""What an evaluation measures and how much: one frozen dataclass, plain Python (no torch), so the
command line can show the defaults without importing anything heavy.

The defaults are the full protocol (>= 1,000 generated images for the memorisation test, 10/20/50
steps for every sampler, 2,000 bootstrap resamples); :data:`QUICK` is a smoke-test preset that
finishes in seconds on a tiny pack. Explicit values always win over the preset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SAMPLER_NAMES = ("ddim", "dpmpp-2m", "euler")  # engine.samplers.SAMPLERS; checked against it at run time
SECTIONS = ("vae", "statistics", "frechet", "alignment", "memorisation", "utility", "diversity", "steps", "prompt_sets")
PROMPT_SETS = ("paraphrases", "negations")  # resources/evaluation/prompts/NAME.jsonl
PROMPT_AGE_BANDS = ("any", "child", "adult")
AGE_BANDS = ("child", "adult")  # --age-band: under 18 years / 18 and over
AGE_BAND_SECTION = "age_bands"  # runs alone, with --findings (not one of SECTIONS: --skip does not name it)
PROMPT_SOURCES = ("auto", "card", "test")
MIN_MEMORISATION_IMAGES = 1000  # the protocol (MediSyn 2.2) asks for at least this many generated images


def dig(node: Any, *keys: str) -> Any:
    """``node[k1][k2]...`` through nested dicts (a report.json), or None where a key is missing."""
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


class EvaluationError(ValueError):
    """An input or option the evaluation cannot use; one line, for the command line's exit code 2."""


@dataclass(frozen=True)
class EvaluationOptions:
    """Every setting of an evaluation run (see ``cxr-studio evaluate --help`` for the meaning of each)."""

    model: Path | None  # None: the embedded default model
    data: Path
    out: Path
    # the classes: None = each record's label (else its one finding); else these findings ("normal":
    # no finding), a record belonging to the one of them it has (records with none or several left out)
    classes: tuple[str, ...] | None = None
    # generated images (sections 1-4 and 6 use one set)
    num_images: int = 1000
    prompts_per_class: int = 8
    prompt_source: str = "auto"
    num_steps: int | None = None  # None: the pack's default
    sampler: str | None = None
    guidance_scale: float | None = None
    record_guidance: float | None = None  # None: guidance_scale (the text and record guided together)
    batch_size: int = 8
    # section 7: steps x samplers
    steps_list: tuple[int, ...] = (10, 20, 50)
    samplers: tuple[str, ...] = SAMPLER_NAMES
    sweep_images: int = 100
    # section 8: the committed prompt sets (paraphrases, negations) beside the card prompts
    prompt_sets: tuple[str, ...] = PROMPT_SETS
    prompt_set_images: int = 4  # images per prompt
    prompt_age_band: str = "any"  # child / adult: prompts of that age band or none stated
    # the per-finding evaluation of one age band (multi-label data such as NIH): with --findings it
    # runs alone, since the other sections compare single-label classes
    findings: tuple[str, ...] | None = None  # "normal": no finding present
    age_band: str | None = None  # one of AGE_BANDS
    finding_images: int = 16  # generated images per finding
    # the evaluation classifier (feature space of sections 2-6)
    classifier_epochs: int = 10
    classifier_size: int = 128
    classifier_batch_size: int = 32
    classifier: Path | None = None  # a classifier saved by an earlier evaluation of the same manifest
    classifier_init: Path | None = None  # start a new classifier's conv layers from this saved one
    # sections 1, 4, 5, 6
    vae_images: int = 500
    utility_n: int | None = None  # None: min(train images, 2 x num_images)
    diversity_images: int = 8  # images per prompt compared pairwise
    memorisation_threshold: float = 0.15
    closest_pairs: int = 8
    bootstrap: int = 2000
    inception_weights: Path | None = None
    skip: tuple[str, ...] = ()
    seed: int = 0
    provider: str = "auto"  # ONNX Runtime (generation, VAE)
    device: str = "auto"  # torch (classifiers, Inception)
    threads: int = 0  # 0: the libraries' defaults
    quiet: bool = False
    quick: bool = False

    def validated(self) -> EvaluationOptions:
        """Check every value; raises :class:`EvaluationError` naming the option."""
        positive = {
            "--num-images": self.num_images,
            "--prompts-per-class": self.prompts_per_class,
            "--batch-size": self.batch_size,
            "--sweep-images": self.sweep_images,
            "--classifier-epochs": self.classifier_epochs,
            "--classifier-batch-size": self.classifier_batch_size,
            "--vae-images": self.vae_images,
            "--closest-pairs": self.closest_pairs,
            "--prompt-set-images": self.prompt_set_images,
            "--finding-images": self.finding_images,
        }
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EvaluationError(f"{name} must be a whole number of at least 1, not {value!r}")
        if self.num_images < 2:
            raise EvaluationError("--num-images must be at least 2 (a Fréchet distance needs two images)")
        if self.sweep_images < 2:
            raise EvaluationError("--sweep-images must be at least 2")
        if self.diversity_images < 2:
            raise EvaluationError(
                f"--diversity-images must be at least 2 (pairs are compared), not {self.diversity_images}"
            )
        if self.classifier_size < 32 or self.classifier_size % 32:
            raise EvaluationError(f"--classifier-size must be a multiple of 32 from 32 up, not {self.classifier_size}")
        if self.bootstrap < 100:
            raise EvaluationError(f"--bootstrap must be at least 100 resamples, not {self.bootstrap}")
        if self.utility_n is not None and self.utility_n < 4:
            raise EvaluationError(f"--utility-n must be at least 4, not {self.utility_n}")
        if not 0.0 < self.memorisation_threshold < 1.0:
            raise EvaluationError(
                f"--memorisation-threshold must be between 0 and 1, not {self.memorisation_threshold}"
            )
        if self.prompt_age_band not in PROMPT_AGE_BANDS:
            raise EvaluationError(f"--prompt-age-band must be one of {', '.join(PROMPT_AGE_BANDS)}")
        if not self.prompt_sets and self.runs("prompt_sets"):
            raise EvaluationError("--prompt-sets needs at least one set (or --skip prompt_sets)")
        if self.prompt_source not in PROMPT_SOURCES:
            raise EvaluationError(f"--prompt-source must be one of {', '.join(PROMPT_SOURCES)}")
        if not self.steps_list or any(not 1 <= s <= 250 for s in self.steps_list):
            raise EvaluationError(f"--steps-list needs step counts from 1 to 250, not {list(self.steps_list)}")
        if self.num_steps is not None and not 1 <= self.num_steps <= 250:
            raise EvaluationError(f"--steps must be from 1 to 250, not {self.num_steps}")
        unknown = [s for s in (*self.samplers, *([self.sampler] if self.sampler else [])) if s not in SAMPLER_NAMES]
        if unknown or not self.samplers:
            raise EvaluationError(
                f"unknown sampler(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(SAMPLER_NAMES)}"
            )
        for option, names in (("--classes", self.classes), ("--findings", self.findings)):
            if names is not None:
                from engine.findings.vocabulary import FINDINGS, NO_FINDING

                known = {"normal", *FINDINGS} - {NO_FINDING}
                wrong = [name for name in names if name not in known]
                if wrong or len(set(names)) < 2 or len(set(names)) < len(names):
                    raise EvaluationError(
                        f"{option} needs two or more of: normal, "
                        f"{', '.join(sorted(known - {'normal'}))}"
                        + (f" (unknown: {', '.join(wrong)})" if wrong else "")
                    )
        if self.findings is not None:
            if self.age_band not in AGE_BANDS:
                raise EvaluationError(f"--findings needs --age-band {' or '.join(AGE_BANDS)}")
            if self.classes is not None:
                raise EvaluationError(
                    "--findings evaluates findings that may coexist, --classes single-label ones: not both"
                )
            if self.skip:
                raise EvaluationError("--skip: with --findings only the per-finding age-band evaluation runs")
            if self.finding_images < 2:
                raise EvaluationError(f"--finding-images must be at least 2, not {self.finding_images}")
        elif self.age_band is not None:
            raise EvaluationError("--age-band needs --findings (the findings to evaluate in that age band)")
        if self.classifier is not None and self.classifier_init is not None:
            raise EvaluationError("--classifier reuses a trained classifier; --classifier-init trains one: not both")
        bad = [s for s in self.skip if s not in SECTIONS]
        if bad:
            raise EvaluationError(f"--skip: unknown section(s) {', '.join(bad)}; sections: {', '.join(SECTIONS)}")
        if self.threads < 0:
            raise EvaluationError(f"--threads must be 0 (default) or more, not {self.threads}")
        if self.provider not in ("auto", "cpu", "cuda") or self.device not in ("auto", "cpu", "cuda"):
            raise EvaluationError("--provider and --device must be auto, cpu or cuda")
        return self

    def runs(self, section: str) -> bool:
        if self.findings is not None:
            return section == AGE_BAND_SECTION
        return section != AGE_BAND_SECTION and section not in self.skip

    def skip_reason(self, section: str) -> str:
        """Why :meth:`runs` says no, for the report."""
        if self.findings is not None:
            return "--findings evaluates one age band per finding; this section compares single-label classes"
        if section == AGE_BAND_SECTION:
            return "run with --findings and --age-band"
        return "left out with --skip"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, Path):
                data[key] = str(value)
            elif isinstance(value, tuple):
                data[key] = list(value)
        return data


# A smoke test of every section: seconds on the tiny pack, minutes on a default-size one on a CPU.
QUICK: dict[str, Any] = {
    "num_images": 48,
    "prompts_per_class": 4,
    "steps_list": (5, 10),
    "sweep_images": 12,
    "classifier_epochs": 3,
    "classifier_size": 64,
    "vae_images": 32,
    "diversity_images": 4,
    "closest_pairs": 4,
    "bootstrap": 200,
    "prompt_set_images": 1,
    "finding_images": 4,
}


def build_options(given: dict[str, Any]) -> EvaluationOptions:
    """Options from the values the user gave (None = not given): defaults, then the quick preset
    when ``quick`` is set, then the given values; validated."""
    values = {key: value for key, value in given.items() if value is not None}
    values.setdefault("model", None)  # not given: the embedded default model
    if values.get("quick"):
        values = {**QUICK, **values}
    try:
        options = EvaluationOptions(**values)
    except TypeError as exc:
        raise EvaluationError(str(exc)) from None
    return options.validated()


__all__ = [
    "AGE_BANDS",
    "AGE_BAND_SECTION",
    "MIN_MEMORISATION_IMAGES",
    "PROMPT_AGE_BANDS",
    "PROMPT_SETS",
    "PROMPT_SOURCES",
    "QUICK",
    "SAMPLER_NAMES",
    "SECTIONS",
    "EvaluationError",
    "EvaluationOptions",
    "build_options",
]
