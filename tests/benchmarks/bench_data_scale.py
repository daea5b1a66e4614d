"""Data at scale (issue 20 item 2): time and peak memory per 1,000 records for 10k and 100k records.

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_data_scale.py [--counts 10000,100000]

Builds a few hundred small PNGs (40x36, 8-bit; records repeat them) and a seeded model shaped like
the tests' tiny one (32x32 images, a 4x8x8 latent, a tiny random BERT) with a VAE and UNet smaller
still (4-8 channels): the networks are tiny so that caching and an epoch of 100k records take
minutes on a CPU, which times the data path rather than the networks. The records carry findings,
age and sex, so record tokens and --caption-augment (the defaults) have something to read. For each
count, three phases, each in its own process so each has its own peak:

- import: a generator of records (splits by patient, as importers assign them) streamed by
  ``engine.manifest.write_manifest``, then ``training.datasets.read_manifest`` (what a run reads:
  line offsets and split codes);
- cache: ``train_diffusion`` (what ``cxr-studio train diffusion`` runs) with ``--latent-cache`` and
  ``--stop-after 1``: the run's start-up (manifest, text cache, record ids, the latent cache filled,
  one DataLoader worker decoding) and its first step;
- epoch: the same run resumed (``--resume``) to the end of its first epoch (batches of 128, every
  training row read once through the memory maps), then validation and the checkpoint, as ``fit``
  does. ``--caption-augment`` is off: it adds a text-encoder pass per drawn image, which would time the
  encoder, not the data path (the pool captions' states go to a file in the cache folder,
  ``training.datasets.CaptionStates``; tests/training/test_streaming.py).

Memory: ``peak heap`` is the highest anonymous resident memory (RssAnon, sampled every 2 ms from
/proc/self/status), ``peak RSS`` the process's ru_maxrss, which also counts pages of the mapped
shards that the epoch touched: those are the kernel's page cache (file-backed, dropped under
pressure), not the process's own memory. The check: the 100k peak heap within 15% (or 64 MiB) of the
10k one in every phase. Decoding workers' peak (RUSAGE_CHILDREN) is printed beside the cache phase.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGES = 300
WORKERS = 1  # DataLoader processes decoding PNGs while this one encodes (two cores)
CAPTIONS = (
    "Normal chest radiograph.",
    "Cardiomegaly.",
    "Small left pleural effusion.",
    "Right upper lobe consolidation.",
    "No acute cardiopulmonary abnormality.",
    "Cardiomegaly with small bilateral pleural effusions.",
)


class PeakMemory:
    """Highest RssAnon (bytes) of this process while running, sampled on a thread every 2 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def anonymous() -> int:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.anonymous())
            self._stop.wait(0.002)

    def __enter__(self) -> PeakMemory:
        self.peak = self.anonymous()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.anonymous())


# --------------------------------------------------------------------------- one phase (a child process)


FINDINGS = (
    {"cardiomegaly": "present"},
    {"pleural_effusion": "present", "atelectasis": "present"},
    {"no_finding": "present"},
    {"consolidation": "present", "cardiomegaly": "absent"},
    {"no_finding": "present", "pneumothorax": "absent"},
    {"cardiomegaly": "present", "pleural_effusion": "present"},
)
BATCH = 128


def _records(work: Path, count: int):
    """``count`` records over the PNGs of ``work``/images (one patient per 3 records)."""
    from engine.manifest import ManifestRecord, split_of

    for i in range(count):
        patient = f"P{i // 3:06d}"
        yield ManifestRecord(
            image=f"images/chest{i % IMAGES:03d}.png", text=CAPTIONS[i % len(CAPTIONS)],
            findings=FINDINGS[i % len(FINDINGS)], patient_id=patient, view="PA", source="synthetic",
            split=split_of(patient, seed=0, val_frac=0.05, test_frac=0.05), age=18 + i % 70, sex="MF"[i % 2],
        )  # fmt: skip


def phase_import(work: Path, count: int) -> dict:
    import training.datasets  # noqa: F401  (imported before the clock starts: it imports torch and OpenCV)
    from engine.manifest import write_manifest
    from training.datasets import read_manifest

    manifest = work / f"manifest-{count}.jsonl"
    started = time.perf_counter()
    write_manifest(manifest, _records(work, count))
    written = time.perf_counter()
    read = read_manifest(manifest)
    assert len(read.records) == count
    return {"write_s": written - started, "read_s": time.perf_counter() - written}


def _options(work: Path, count: int, **changes):
    """The run of one count: the real ``train diffusion`` options, one epoch of the train split."""
    from training.train_diffusion import DiffusionOptions

    with open(work / f"manifest-{count}.jsonl", encoding="utf-8") as stream:
        train = sum('"split": "train"' in line for line in stream)
    steps = train // BATCH
    options = DiffusionOptions(
        data=str(work / f"manifest-{count}.jsonl"), out=str(work / f"run-{count}"), vae=str(work / "checkpoint"),
        latent_cache=str(work / f"cache-{count}"), steps=steps, batch_size=BATCH, lr=1e-4, checkpoint_every=steps,
        log_every=50, sample_every=0, patience=0, device="cpu", workers=WORKERS, quiet=True, seed=0,
        caption_augment=0.0,  # on, the text encoder would run on ~0.8 pool captions per image and epoch
    )  # fmt: skip
    return DiffusionOptions(**{**options.to_json(), **changes})


def phase_cache(work: Path, count: int) -> dict:
    import shutil

    from training.train_diffusion import train_diffusion

    shutil.rmtree(work / f"run-{count}", ignore_errors=True)
    options = _options(work, count, stop_after=1)
    started = time.perf_counter()
    result = train_diffusion(options)
    assert result.step == 1 and not result.finished
    shards = len(list((work / f"cache-{count}" / "train").glob("shard-*.npy")))
    return {"cache_s": time.perf_counter() - started, "shards": shards}


def phase_epoch(work: Path, count: int) -> dict:
    from training.train_diffusion import train_diffusion

    options = _options(work, count)
    started = time.perf_counter()
    result = train_diffusion(options, resume=True)
    assert result.finished and result.step == options.steps
    return {"epoch_s": time.perf_counter() - started, "steps": result.step}


PHASES = {"import": phase_import, "cache": phase_cache, "epoch": phase_epoch}


def child(phase: str, work: Path, count: int) -> None:
    with PeakMemory() as peak:
        figures = PHASES[phase](work, count)
    figures |= {
        "peak_heap_mib": peak.peak / 2**20,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "workers_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    print(json.dumps(figures))


# --------------------------------------------------------------------------- the driver


def prepare(work: Path) -> None:
    from dataclasses import replace

    import cv2
    import numpy as np
    import torch

    from training.checkpoint import build_model, save_checkpoint
    from training.models.config import UNetConfig, VAEConfig
    from training.tiny import TINY_ENCODER_DIR, TINY_SHAPE, save_random_bert, tiny_config

    (work / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        image = np.full((40, 36), 20, np.float32)
        cv2.ellipse(image, (11, 20), (6, 13), 0, 0, 360, 150 + i % 50, -1)
        cv2.circle(image, (22, 26), 5 + i % 4, 230, -1)
        noisy = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(work / "images" / f"chest{i:03d}.png"), noisy)
    # the tests' tiny model with a VAE and a UNet smaller still (4-8 channels, attention only in the
    # UNet's middle block): a step is mostly the data path's work, so that caching and an epoch of 100k
    # records take minutes on two shared cores
    config = replace(
        tiny_config(encoder=TINY_ENCODER_DIR),
        vae=VAEConfig(block_out_channels=(4, 8, 8), layers_per_block=1, norm_num_groups=4, mid_block_attention=False),
        unet=UNetConfig(block_out_channels=(8, 8), cross_attention=(False, False), layers_per_block=1, head_dim=8,
                        norm_num_groups=4),
    )  # fmt: skip
    checkpoint = work / "checkpoint"
    checkpoint.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_random_bert(checkpoint / TINY_ENCODER_DIR, TINY_SHAPE)
    model = build_model(config, base_dir=checkpoint)
    save_checkpoint(checkpoint, config, model.vae, model.unet, model.text, record=model.record)


def run_phase(phase: str, work: Path, count: int) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", phase, "--work", str(work), "--counts", str(count)],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    if result.returncode:
        raise SystemExit(f"{phase} {count}: failed\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10000,100000")
    parser.add_argument("--work", help="a folder for the images, manifests and caches (default: a temporary one)")
    parser.add_argument("--child", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    if args.child:
        child(args.child, Path(args.work), counts[0])
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-data-scale-") as scratch:
        work = Path(args.work or scratch)
        prepare(work)
        threads = os.environ.get("OMP_NUM_THREADS", "unset")
        print(f"OMP_NUM_THREADS={threads}, {IMAGES} PNGs 40x36 repeated, micro VAE/UNet (32x32, latent 4x8x8), "
              f"train diffusion --latent-cache, batch {BATCH}; per 1,000 records: seconds; peak heap / peak RSS (MiB)")
        print(f"{'records':>8} | {'write s':>7} {'read s':>7} {'heap':>6} {'RSS':>6} | {'cache s':>7} {'heap':>6} "
              f"{'RSS':>6} {'worker':>6} | {'epoch s':>7} {'steps':>5} {'heap':>6} {'RSS':>6}")  # fmt: skip
        heaps: dict[str, dict[int, float]] = {phase: {} for phase in PHASES}
        seconds: dict[str, dict[int, float]] = {phase: {} for phase in ("write", "read", "cache", "epoch")}
        for count in counts:
            got = {phase: run_phase(phase, work, count) for phase in PHASES}
            for phase in PHASES:
                heaps[phase][count] = got[phase]["peak_heap_mib"]
            per = 1000 / count
            i, c, e = got["import"], got["cache"], got["epoch"]
            for name, value in (("write", i["write_s"]), ("read", i["read_s"]), ("cache", c["cache_s"]),
                                ("epoch", e["epoch_s"])):  # fmt: skip
                seconds[name][count] = value * per
            print(f"{count:>8} | {i['write_s'] * per:>7.3f} {i['read_s'] * per:>7.3f} {i['peak_heap_mib']:>6.0f} "
                  f"{i['peak_rss_mib']:>6.0f} | {c['cache_s'] * per:>7.3f} {c['peak_heap_mib']:>6.0f} "
                  f"{c['peak_rss_mib']:>6.0f} {c['workers_peak_rss_mib']:>6.0f} | {e['epoch_s'] * per:>7.3f} "
                  f"{e['steps']:>5} {e['peak_heap_mib']:>6.0f} {e['peak_rss_mib']:>6.0f}", flush=True)  # fmt: skip
        low, high = min(counts), max(counts)
        failed = []
        for phase, peaks in heaps.items():
            growth = peaks[high] - peaks[low]
            ok = growth <= max(64.0, 0.15 * peaks[low])
            print(f"{phase}: peak heap {peaks[low]:.0f} MiB at {low} -> {peaks[high]:.0f} MiB at {high} "
                  f"({growth:+.0f} MiB): {'flat' if ok else 'GROWS'}")  # fmt: skip
            if not ok:
                failed.append(phase)
        ratios = ", ".join(f"{name} x{values[high] / values[low]:.2f}" for name, values in seconds.items())
        print(f"time per 1,000 records, {high} / {low}: {ratios}")
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
