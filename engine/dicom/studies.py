"""Synthetic patients and studies in bulk, for filling and load-testing PACS test systems.

Every study gets a clearly fake patient (name ``SYNTHETIC^...``, ID ``SYN-...``), varied sex,
age and study date, its own accession number, and one or more generated radiographs written as
DICOM. Prompts come from a file (one per line) and are used in turn.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from engine.dicom.dataset import StudyContext, SyntheticImageInfo, build_dataset, write_dicom
from engine.pipeline import GenerationRequest, Pipeline

# Call signs of the NATO alphabet: plainly not real family names, easy to read aloud in tests.
FAKE_NAMES = (
    "ALFA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL", "INDIA", "JULIETT", "KILO", "LIMA",
    "MIKE", "NOVEMBER", "OSCAR", "PAPA", "QUEBEC", "ROMEO", "SIERRA", "TANGO", "UNIFORM", "VICTOR", "WHISKEY",
    "XRAY", "YANKEE", "ZULU",
)  # fmt: skip
MAX_STUDIES = 100_000
SEED_STRIDE = 1000  # study i uses seeds seed + i * SEED_STRIDE + image index


@dataclass(frozen=True)
class StudyPlan:
    index: int
    prompt: str
    seed: int
    study: StudyContext


def plan_studies(
    prompts: Sequence[str], count: int, *, seed: int = 0, uid_root: str | None = None, now: datetime | None = None
) -> list[StudyPlan]:
    """``count`` studies with reproducible fake demographics (UIDs are always fresh)."""
    if not 1 <= count <= MAX_STUDIES:
        raise ValueError(f"count must be from 1 to {MAX_STUDIES}, not {count}")
    if not prompts:
        raise ValueError("at least one prompt is needed")
    rng = np.random.default_rng(seed)
    now = now or datetime.now().replace(microsecond=0)
    plans = []
    for index in range(count):
        sex = str(rng.choice(["F", "M"]))
        age_years = int(rng.integers(1, 90))
        study_time = now - timedelta(days=int(rng.integers(0, 365)), minutes=int(rng.integers(0, 24 * 60)))
        birth = study_time - timedelta(days=365 * age_years + int(rng.integers(0, 365)))
        name = FAKE_NAMES[index % len(FAKE_NAMES)]
        study = StudyContext.synthetic(
            rng,
            uid_root=uid_root,
            patient_name=f"SYNTHETIC^{name} {index + 1:05d}",
            patient_sex=sex,
            patient_birth_date=birth.strftime("%Y%m%d"),
            study_datetime=study_time,
            study_description="Synthetic chest radiograph (CXR Studio)",
        )
        plans.append(
            StudyPlan(index=index, prompt=prompts[index % len(prompts)], seed=seed + index * SEED_STRIDE, study=study)
        )
    return plans


def make_studies(
    pipeline: Pipeline,
    plans: Sequence[StudyPlan],
    out_dir: str | os.PathLike[str],
    *,
    images_per_study: int = 1,
    num_steps: int | None = None,
    guidance_scale: float | None = None,
    sampler: str | None = None,
    iod: str = "sc",
    transfer_syntax: str = "explicit",
    burn_in: bool = False,
    uid_root: str | None = None,
    on_file: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Generate and write every planned study as ``OUT/<patient id>/<study>/IMnnnn.dcm``.

    Every request is checked before the first is generated (RequestError / PromptError); a value
    given is used as given (``num_steps=0`` is refused, not replaced by the model's default).
    """
    defaults = pipeline.manifest.defaults
    out = Path(out_dir)
    requests = [
        GenerationRequest(
            prompt=plan.prompt,
            num_steps=defaults.num_steps if num_steps is None else num_steps,
            guidance_scale=defaults.guidance_scale if guidance_scale is None else guidance_scale,
            sampler=defaults.sampler if sampler is None else sampler,
            seed=plan.seed,
            batch_size=images_per_study,
        ).validated()
        for plan in plans
    ]
    written = []
    for plan, request in zip(plans, requests, strict=True):
        result = pipeline.generate(request)
        folder = out / plan.study.patient_id / f"ST{plan.index + 1:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(result.images):
            ds = build_dataset(
                image,
                SyntheticImageInfo.from_result(result, i),
                plan.study,
                iod=iod,
                burn_in=burn_in,
                instance_number=i + 1,
                uid_root=uid_root,
            )
            path = write_dicom(ds, folder / f"IM{i + 1:04d}.dcm", transfer_syntax=transfer_syntax)
            written.append(path)
            if on_file is not None:
                on_file(path)
    return written


def write_dicomdir(root: str | os.PathLike[str], files: Sequence[Path]) -> Path:
    """A DICOMDIR (PS3.10 File-set) over ``files``, written with pydicom's FileSet under ``root``.

    pydicom copies the instances into its own File-set layout; the originals stay as they are.
    """
    from pydicom import dcmread
    from pydicom.fileset import FileSet

    fileset = FileSet()
    fileset.ID = "CXRSTUDIO"
    for path in files:
        fileset.add(dcmread(path))
    target = Path(root) / "fileset"
    target.mkdir(parents=True, exist_ok=True)
    fileset.write(target)
    return target / "DICOMDIR"
