"""Data at scale (issue 20 item 2): time and peak memory per 1,000 records for 10k, 30k and 100k.

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_data_scale.py [--counts 10000,30000,100000]

Builds a few hundred small PNGs (40x36, 8-bit; records repeat them) and the tiny seeded model of the
tests (32x32 images, a 4x8x8 latent: the VAE and UNet are tiny so the run takes minutes on a CPU,
which times the data path rather than the networks). For each count, three phases, each in its own
process so each has its own peak:

- import: a generator of records (splits by patient, as importers assign them) streamed by
  ``engine.manifest.write_manifest``, then one pass of ``iter_manifest`` keeping what training keeps
  per record (a ``PathTable`` of image paths, split and caption codes);
- cache: ``fill_latent_cache`` of every record (one DataLoader worker decodes, the tiny VAE encodes
  in this process, shards of 1,024 rows);
- epoch: one shuffled pass over the cache's memory maps in batches of 64 (every row read once), with a
  tiny-UNet training step (forward, backward, AdamW) on one batch in 8.

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


def _records(work: Path, count: int):
    """``count`` records over the PNGs of ``work``/images (one patient per 3 records)."""
    from engine.manifest import ManifestRecord, split_of

    for i in range(count):
        patient = f"P{i // 3:06d}"
        yield ManifestRecord(
            image=f"images/chest{i % IMAGES:03d}.png", text=CAPTIONS[i % len(CAPTIONS)], findings={},
            patient_id=patient, view="PA", source="synthetic",
            split=split_of(patient, seed=0, val_frac=0.05, test_frac=0.05),
        )  # fmt: skip


def _compact(manifest: Path):
    """One streamed pass: image paths (absolute), split codes and caption codes, nothing else per record."""
    import numpy as np

    from engine.manifest import SPLITS, iter_manifest, resolve_image
    from training.latent_cache import PathTable

    splits = bytearray()
    captions: dict[str, int] = {}
    codes = bytearray()

    def paths():
        for record in iter_manifest(manifest):
            splits.append(SPLITS.index(record.split))
            codes.append(captions.setdefault(record.text, len(captions)))
            yield str(resolve_image(record, manifest))

    table = PathTable(paths())
    return table, np.frombuffer(bytes(splits), np.uint8), np.frombuffer(bytes(codes), np.uint8), list(captions)


def phase_import(work: Path, count: int) -> dict:
    import training.latent_cache  # noqa: F401  (imported before the clock starts: PathTable's module imports torch)
    from engine.manifest import write_manifest

    manifest = work / f"manifest-{count}.jsonl"
    started = time.perf_counter()
    write_manifest(manifest, _records(work, count))
    written = time.perf_counter()
    table, splits, _, _ = _compact(manifest)
    assert len(table) == count and len(splits) == count
    return {"write_s": written - started, "read_s": time.perf_counter() - written}


def _key(work: Path, count: int, vae):
    import hashlib

    from training.latent_cache import CacheKey, vae_sha256

    digest = hashlib.sha256()
    with open(work / f"manifest-{count}.jsonl", "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return CacheKey(vae_sha256(vae), digest.hexdigest(), "all", count, 32)


def phase_cache(work: Path, count: int) -> dict:
    import torch

    from training.checkpoint import load_checkpoint
    from training.latent_cache import fill_latent_cache

    vae = load_checkpoint(work / "checkpoint").vae.eval().requires_grad_(False)
    table, _, _, _ = _compact(work / f"manifest-{count}.jsonl")
    started = time.perf_counter()
    key = _key(work, count, vae)
    written = fill_latent_cache(work / f"cache-{count}", vae, table, key, torch.device("cpu"), workers=WORKERS)
    return {"cache_s": time.perf_counter() - started, "shards": len(written)}


def phase_epoch(work: Path, count: int) -> dict:
    import numpy as np
    import torch

    from engine import schedules
    from training.checkpoint import load_checkpoint
    from training.diffusion_setup import Denoiser, encode_texts
    from training.latent_cache import LatentCache
    from training.train_diffusion import diffusion_loss

    torch.manual_seed(0)
    model = load_checkpoint(work / "checkpoint")
    table, _, codes, captions = _compact(work / f"manifest-{count}.jsonl")
    del table  # the epoch needs the caption codes only
    cache = LatentCache(work / f"cache-{count}", _key(work, count, model.vae))
    hidden, mask = encode_texts(model.text, captions, torch.device("cpu"))
    denoiser = Denoiser(model.unet.train(), model.text.projection.train())
    optimizer = torch.optim.AdamW([*model.unet.parameters(), *model.text.projection.parameters()], lr=1e-4)
    alphas = torch.tensor(schedules.alphas_cumprod(model.config.schedule), dtype=torch.float32)
    text = torch.from_numpy(codes.astype(np.int64))
    order = torch.randperm(count, generator=torch.Generator().manual_seed(0))
    started, steps, read_s = time.perf_counter(), 0, 0.0
    for number, batch in enumerate(order.split(64)):
        before = time.perf_counter()
        mean, std = cache.take(batch, torch.device("cpu"))
        read_s += time.perf_counter() - before
        if number % 8:
            continue
        z = (mean + std * torch.randn_like(mean)) * float(model.config.scaling_factor)
        t = torch.randint(0, alphas.shape[0], (len(batch),))
        noise = torch.randn_like(z)
        a = alphas[t].view(-1, 1, 1, 1)
        prediction = denoiser(a.sqrt() * z + (1 - a).sqrt() * noise, t, hidden[text[batch]], mask[text[batch]])
        loss = diffusion_loss(prediction, noise, alphas[t], prediction_type="epsilon")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    return {"epoch_s": time.perf_counter() - started, "read_s": read_s, "steps": steps}


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
    import cv2
    import numpy as np

    from training.tiny import build_tiny_checkpoint

    (work / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        image = np.full((40, 36), 20, np.float32)
        cv2.ellipse(image, (11, 20), (6, 13), 0, 0, 360, 150 + i % 50, -1)
        cv2.circle(image, (22, 26), 5 + i % 4, 230, -1)
        noisy = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(work / "images" / f"chest{i:03d}.png"), noisy)
    build_tiny_checkpoint(work / "checkpoint", seed=0)


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
    parser.add_argument("--counts", default="10000,30000,100000")
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
        print(f"OMP_NUM_THREADS={threads}, {IMAGES} PNGs 40x36 repeated, tiny VAE/UNet (32x32, latent 4x8x8); "
              "per 1,000 records: seconds; peak heap / peak RSS (MiB)")  # fmt: skip
        print(f"{'records':>8} | {'write s':>7} {'read s':>7} {'heap':>6} {'RSS':>6} | {'cache s':>7} {'heap':>6} "
              f"{'RSS':>6} {'worker':>6} | {'epoch s':>7} {'mmap s':>7} {'steps':>5} {'heap':>6} "
              f"{'RSS':>6}")  # fmt: skip
        heaps: dict[str, dict[int, float]] = {phase: {} for phase in PHASES}
        for count in counts:
            got = {phase: run_phase(phase, work, count) for phase in PHASES}
            for phase in PHASES:
                heaps[phase][count] = got[phase]["peak_heap_mib"]
            per = 1000 / count
            i, c, e = got["import"], got["cache"], got["epoch"]
            print(f"{count:>8} | {i['write_s'] * per:>7.3f} {i['read_s'] * per:>7.3f} {i['peak_heap_mib']:>6.0f} "
                  f"{i['peak_rss_mib']:>6.0f} | {c['cache_s'] * per:>7.3f} {c['peak_heap_mib']:>6.0f} "
                  f"{c['peak_rss_mib']:>6.0f} {c['workers_peak_rss_mib']:>6.0f} | {e['epoch_s'] * per:>7.3f} "
                  f"{e['read_s'] * per:>7.3f} {e['steps']:>5} {e['peak_heap_mib']:>6.0f} {e['peak_rss_mib']:>6.0f}",
                  flush=True)  # fmt: skip
        low, high = min(counts), max(counts)
        failed = []
        for phase, peaks in heaps.items():
            growth = peaks[high] - peaks[low]
            ok = growth <= max(64.0, 0.15 * peaks[low])
            print(f"{phase}: peak heap {peaks[low]:.0f} MiB at {low} -> {peaks[high]:.0f} MiB at {high} "
                  f"({growth:+.0f} MiB): {'flat' if ok else 'GROWS'}")  # fmt: skip
            if not ok:
                failed.append(phase)
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
