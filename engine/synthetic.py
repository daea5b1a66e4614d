"""Synthetic data sets: many generated images and one manifest, made by one process or by many.

A data set is a plan, fixed by its settings alone (:class:`DatasetPlan`):

- ``prompts`` (one per line of a prompts file) and ``count`` images per prompt: item ``i`` (0-based,
  ``0 <= i < count * len(prompts)``) is prompt ``i // count`` with seed ``seed + i``;
- items are generated in batches of ``batch`` consecutive items of one prompt, and a batch is the
  unit of work: the same batches are run whether one process makes the set or many, so a sharded
  run writes exactly the images of an unsharded one (a batch's images do not depend on who runs it);
- shard ``k`` of ``n`` runs batches ``b`` with ``b % n == k`` (round robin, so every shard gets
  every prompt and about the same work).

The folder::

    DIR/dataset.json           the plan (settings, model id and fingerprint); every shard checks it
    DIR/images/0000042.png     item 42, 16-bit PNG, written atomically
    DIR/shard-3-of-8.jsonl     shard 3's records (its slice), written when the shard has finished
    DIR/manifest.jsonl         all records in item order (engine.manifest format), written once every
                               shard's slice is there and covers every item exactly once

A stopped shard resumes: batches whose images all exist are skipped (an image appears only whole).
Each record's ``findings`` are what :func:`engine.findings.reader.summarize` reads in its prompt,
its ``view`` what the prompt states (else UNKNOWN), ``patient_id`` ``synthetic-<item>``, ``split``
``train`` and ``source`` ``synthetic``; ``label`` holds the seed, so any image can be made again
alone with ``cxr-studio generate --seed``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.fileio import atomic_write_bytes, atomic_write_text, temporaries_of
from engine.findings.parse import parse_prompt
from engine.findings.reader import summarize
from engine.imaging import encode_png
from engine.manifest import ManifestRecord, read_manifest, write_manifest
from engine.pipeline import MAX_BATCH, MAX_SEED, GenerationRequest, Pipeline

PLAN_FILE = "dataset.json"
MANIFEST_FILE = "manifest.jsonl"
IMAGES_DIR = "images"
MAX_ITEMS = 10_000_000
PLAN_VERSION = 1
_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_VIEWS = {"PA": "PA", "AP": "AP", "supine AP": "AP", "lateral": "LATERAL"}


class DatasetError(ValueError):
    """A plan, a shard or a folder that cannot be used; the message names it."""


@dataclass(frozen=True)
class DatasetPlan:
    """Everything that decides which images a data set holds (see the module docstring)."""

    prompts: tuple[str, ...]
    count: int  # images per prompt
    seed: int = 0
    batch: int = 8
    num_steps: int = 20
    guidance_scale: float = 4.0
    sampler: str = "dpmpp-2m"
    negative_prompt: str = ""
    model_id: str = ""
    model_fingerprint: str = ""

    def validated(self) -> DatasetPlan:
        if not self.prompts or not all(isinstance(p, str) and p.strip() for p in self.prompts):
            raise DatasetError("a data set needs at least one prompt, none of them empty")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise DatasetError(f"count must be a whole number of images per prompt, at least 1, not {self.count!r}")
        if self.total > MAX_ITEMS:
            raise DatasetError(f"{self.total} images is more than {MAX_ITEMS:,} in one data set")
        if not isinstance(self.batch, int) or not 1 <= self.batch <= MAX_BATCH:
            raise DatasetError(f"batch must be from 1 to {MAX_BATCH}, not {self.batch!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED - self.total:
            raise DatasetError(f"seed must be a whole number from 0 to {MAX_SEED - self.total}, not {self.seed!r}")
        for prompt in self.prompts:  # steps, guidance, sampler and every prompt, before anything is written
            settings = (self.negative_prompt, self.num_steps, self.guidance_scale, self.sampler)
            GenerationRequest(prompt, *settings).validated()
        return self

    @property
    def total(self) -> int:
        return self.count * len(self.prompts)

    def request(self, batch_index: int) -> tuple[list[int], GenerationRequest]:
        """The items of batch ``batch_index`` and the request that makes them."""
        items = self.batches()[batch_index]
        request = GenerationRequest(
            prompt=self.prompts[items[0] // self.count],
            negative_prompt=self.negative_prompt,
            num_steps=self.num_steps,
            guidance_scale=self.guidance_scale,
            sampler=self.sampler,
            seed=self.seed + items[0],
            batch_size=len(items),
        )
        return items, request

    def batches(self) -> list[list[int]]:
        """Every batch as its item indices; a batch never spans two prompts."""
        out = []
        for p in range(len(self.prompts)):
            first, end = p * self.count, (p + 1) * self.count
            out.extend(list(range(start, min(start + self.batch, end))) for start in range(first, end, self.batch))
        return out

    def record(self, item: int) -> ManifestRecord:
        """The manifest record of ``item`` (its image need not exist yet)."""
        prompt = self.prompts[item // self.count]
        view = parse_prompt(prompt).view
        return ManifestRecord(
            image=image_name(item),
            text=prompt,
            findings=summarize(prompt),
            patient_id=f"synthetic-{item:07d}",
            view=_VIEWS.get(view or "", "UNKNOWN"),
            source="synthetic",
            split="train",
            label=f"seed {self.seed + item}",
        )

    def to_json(self) -> str:
        return json.dumps({"version": PLAN_VERSION, **asdict(self)}, indent=1) + "\n"


def image_name(item: int) -> str:
    return f"{IMAGES_DIR}/{item:07d}.png"


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), 0 <= K < N; a clear error otherwise."""
    match = _SHARD_RE.match(text or "")
    if not match:
        raise DatasetError(f"shard must be K/N with 0 <= K < N (e.g. 0/4), not {text!r}")
    k, n = int(match.group(1)), int(match.group(2))
    if not 0 <= k < n:
        raise DatasetError(f"shard must be K/N with 0 <= K < N (e.g. 0/4), not {text!r}")
    return k, n


def shard_from_environment(environ: dict[str, str] | None = None) -> tuple[int, int] | None:
    """(RANK, WORLD_SIZE) when torchrun (or any launcher that sets both) started this process."""
    env = os.environ if environ is None else environ
    if "RANK" not in env and "WORLD_SIZE" not in env:
        return None
    rank, world = env.get("RANK", ""), env.get("WORLD_SIZE", "")
    if not (rank.isdigit() and world.isdigit()):
        raise DatasetError(f"RANK and WORLD_SIZE must both be whole numbers, got RANK={rank!r} WORLD_SIZE={world!r}")
    return parse_shard(f"{rank}/{world}")


def shard_batches(plan: DatasetPlan, shard: tuple[int, int]) -> list[int]:
    k, n = shard
    return [b for b in range(len(plan.batches())) if b % n == k]


def _shard_file(out: Path, shard: tuple[int, int]) -> Path:
    return out / f"shard-{shard[0]}-of-{shard[1]}.jsonl"


def prepare(out: Path, plan: DatasetPlan) -> None:
    """Write ``dataset.json``, or check that the one there describes the same plan."""
    plan.validated()
    path = out / PLAN_FILE
    if path.exists():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path}: cannot read it ({exc})") from None
        if existing != json.loads(plan.to_json()):
            raise DatasetError(
                f"{out} holds another data set ({PLAN_FILE} differs: prompts, count, seed, settings or model); "
                "choose a new folder"
            )
        return
    if out.exists() and (not out.is_dir() or not _being_prepared(out)):
        if path.exists():  # another shard wrote the plan after the check above: compare with it
            return prepare(out, plan)
        raise DatasetError(f"{out} is not empty and holds no {PLAN_FILE}: choose a new or empty folder")
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, plan.to_json())


def _being_prepared(out: Path) -> bool:
    """True when ``out`` holds nothing or only what another shard's :func:`prepare` makes before its
    plan lands (an empty images folder, the plan's temporary file): under torchrun every rank
    prepares the same folder at once."""
    plan_in_progress = set(temporaries_of(out / PLAN_FILE))
    for entry in out.iterdir():
        if entry.name == IMAGES_DIR and entry.is_dir() and not any(entry.iterdir()):
            continue
        if entry in plan_in_progress:
            continue
        return False
    return True


@dataclass(frozen=True)
class ShardProgress:
    done: int  # batches finished by this shard so far (skipped ones included)
    total: int  # batches of this shard
    images: int  # images written by this call


def make_shard(
    pipeline: Pipeline,
    out: Path,
    plan: DatasetPlan,
    shard: tuple[int, int] = (0, 1),
    on_batch: Callable[[ShardProgress], None] | None = None,
) -> Path:
    """Generate shard ``shard`` of ``plan`` into ``out``; returns its slice file. Resumes a stopped shard."""
    prepare(out, plan)
    mine = shard_batches(plan, shard)
    written = 0
    for done, batch_index in enumerate(mine, start=1):
        items, request = plan.request(batch_index)
        if not all((out / image_name(i)).is_file() for i in items):
            result = pipeline.generate(request)
            for item, image in zip(items, result.to_uint16(), strict=True):
                atomic_write_bytes(out / image_name(item), encode_png(image))
                written += 1
        if on_batch is not None:
            on_batch(ShardProgress(done, len(mine), written))
    records = [plan.record(i) for b in mine for i in plan.batches()[b]]
    return write_manifest(_shard_file(out, shard), records)


def _slices(out: Path) -> Iterator[Path]:
    return iter(sorted(out.glob("shard-*-of-*.jsonl")))


def merge(out: Path, plan: DatasetPlan | None = None) -> Path | None:
    """Write ``manifest.jsonl`` from the shard slices once they cover every item exactly once and
    every image exists; None while some are missing. The slices must all come from one plan."""
    plan = plan or load_plan(out)
    seen: dict[str, ManifestRecord] = {}
    for path in _slices(out):
        for record in read_manifest(path):
            if record.image in seen:
                raise DatasetError(f"{path}: {record.image} is also in another shard's slice (shards of two sizes?)")
            seen[record.image] = record
    expected = [image_name(i) for i in range(plan.total)]
    if set(seen) != set(expected) or not all((out / name).is_file() for name in expected):
        return None
    return write_manifest(out / MANIFEST_FILE, [seen[name] for name in expected])


def load_plan(out: Path) -> DatasetPlan:
    path = out / PLAN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.pop("version", None) != PLAN_VERSION:
            raise DatasetError(f"{path}: not a version-{PLAN_VERSION} data set plan")
        data["prompts"] = tuple(data["prompts"])
        return DatasetPlan(**data).validated()
    except FileNotFoundError:
        raise DatasetError(f"{out} is not a data set folder (no {PLAN_FILE})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as exc:
        raise DatasetError(f"{path}: cannot read it ({exc})") from None


def read_prompts(path: str | os.PathLike[str]) -> list[str]:
    """One prompt per line; blank lines and lines starting with '#' are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read prompts from {path}: {exc}") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise DatasetError(f"{path} holds no prompts (one per line)")
    return prompts


def plan_for(pipeline: Pipeline, prompts: Sequence[str], count: int, **settings: object) -> DatasetPlan:
    """A plan for ``pipeline``'s model (its id and fingerprint become part of the plan)."""
    pack = pipeline.pack
    return DatasetPlan(
        prompts=tuple(prompts),
        count=count,
        model_id=pack.model_id,
        model_fingerprint=pack.fingerprint,
        **settings,  # type: ignore[arg-type]
    ).validated()
