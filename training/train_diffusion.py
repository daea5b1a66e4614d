"""Train the text-conditioned latent UNet (``cxr-studio train diffusion``) on a frozen VAE.

Before the first step everything frozen is computed once and kept on the device:

- the VAE posterior (mean μ and std σ, (N, C, h, w) float32) of every training and validation
  image; a training step draws z = (μ + σ ε) x scaling_factor, exactly what encoding the image
  again would give; with ``--augment-copies K`` also of K seeded augmented versions of each
  training image (of the ``--augment-sources`` sources): shifts, zoom, small rotations and
  gamma/contrast/brightness (:data:`STRONG_AUGMENTATION`, never a flip: the heart is on the left),
  for small data sets where the model would otherwise learn the training images by heart;
- the text encoder's last hidden states (U, T, E) of every distinct caption and of "" (the
  unconditional text), with their attention masks; a step projects them with the trainable
  projection, as ``TextConditioner`` does.

A step (DDPM, Ho et al. 2020; ᾱ_t from ``engine.schedules``): t ~ U{0..N-1}, ε ~ N(0, I),
x_t = sqrt(ᾱ_t) z + sqrt(1 - ᾱ_t) ε, loss = |f(x_t, t, c) - target|² with target ε
(``epsilon``) or v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) z (``v_prediction``); with ``flow_prediction``
(rectified flow, SD3) σ = shift(u), u logit-normal (``--timestep-sampling``), x_t = (1 - σ) z + σ ε,
target ε - z, the UNet called at σ N (:func:`training.objective.draw_timesteps`); the caption is replaced by
"" with probability ``uncond_prob`` (classifier-free guidance). An EMA of the UNet and the
projection is what validation, the sample grids, the checkpoints and ``--export`` use.

With ``--record-tokens`` (the default for new runs) the UNet's context is the text's T tokens and
then K record tokens (``engine.conditioning``, ``training.models.record``): the structured record of
each training image built from its manifest labels (findings and status, age band from the age or
else the manifest's age_band, sex, view), not by re-reading its caption, through a learned table that
trains with the UNet (and has its EMA). The record is replaced by K null tokens with probability
``uncond_prob`` too, drawn apart from the caption's, so that text and record can each be guided. The
sample grids read their prompts' records with ``engine.findings.parse.parse_prompt``, as the engine does.

``--init-from`` starts the UNet and projection from an earlier diffusion checkpoint (fine-tuning,
e.g. the paediatric default model on adult radiographs) instead of from the seed; a checkpoint
without a record table (every model before v2) gets a new one, drawn from the seed
(``training.models.record``: small, so the model starts out nearly where the checkpoint was).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine import samplers, schedules
from engine.conditioning import record_of_manifest
from engine.fileio import atomic_write_text, folder_in_use
from engine.findings.parse import parse_prompt
from engine.findings.record import AGE_BANDS, VIEWS
from engine.manifest import ManifestRecord
from training import distributed
from training.checkpoint import (
    RECORD_FILE,
    TEXT_PROJECTION_FILE,
    UNET_FILE,
    VAE_FILE,
    CheckpointError,
    LatentDiffusionModel,
    build_model,
    load_config,
    load_weights,
    save_checkpoint,
)
from training.datasets import (
    VAL_LIMIT,
    Augmentation,
    AugmentedCaptions,
    Manifest,
    evenly_spaced,
    join_records,
    pick_records,
)
from training.diffusion_setup import (
    Denoiser,
    diffusion_config,
    encode_latents,
    encode_texts,
    load_vae_weights,
    read_vae_file,
    resolve_vae_checkpoint,
    sample_prompts,
    with_record_tokens,
)
from training.latent_cache import (
    CacheKey,
    LatentCache,
    MemoryLatents,
    PathTable,
    StackedLatents,
    cached_latents,
    vae_sha256,
)
from training.loop import (
    EMA,
    FitResult,
    absolute_encoder,
    fit,
    iter_chunks,
    make_log,
    manifest_and_device,
    manifest_info,
    pick_precision,
    seed_everything,
    use_compile,
)
from training.models.config import ModelConfig
from training.objective import diffusion_loss, draw_timesteps
from training.options import Log, TrainingError, TrainOptions
from training.precision import autocast
from training.run_folder import discard_on_failure, image_grid, open_run, resumes

SAMPLE_SEEDS = (0, 1)
SAMPLER = "dpmpp-2m"
# --augment-copies: stronger than the VAE's light default, still anatomically plausible (no flips)
STRONG_AUGMENTATION = Augmentation(
    max_shift=0.06, max_zoom=0.10, max_rotation_deg=5.0, max_gamma=0.3, max_contrast=0.2, max_brightness=0.06
)
MAX_AUGMENT_COPIES = 64
# how a step draws its noise level: auto is logit-normal for flow_prediction (SD3), uniform for epsilon and v
TIMESTEP_SAMPLINGS = ("auto", "uniform", "logit-normal")


@dataclass(frozen=True)
class DiffusionOptions(TrainOptions):
    """``train diffusion`` options: :class:`training.loop.TrainOptions` plus the VAE, EMA,
    guidance dropout, sample-grid settings and the optional export.

    ``vae``: a VAE run folder (its best checkpoint, else its last) or a checkpoint folder.
    ``config`` None: the VAE checkpoint's config; else its UNet, text and schedule sections are
    used with the VAE checkpoint's geometry, VAE and scaling factor (which must agree).
    """

    vae: str = ""
    init_from: str | None = None
    config: str | None = None
    steps: int = 10000
    batch_size: int = 128
    lr: float = 2e-4
    checkpoint_every: int = 1000
    ema_decay: float = 0.999
    uncond_prob: float = 0.1
    sample_steps: int = 20
    guidance_scale: float = 4.0
    export: str | None = None
    export_fp16: bool = False
    export_text_int8: bool = False
    augment_copies: int = 0
    augment_sources: str | None = None  # comma-separated manifest sources; None: every source
    caption_augment: float = 0.8  # chance of a fresh augmented caption per sample and draw (runs before: 0)
    min_snr_gamma: float = 0.0  # 0: plain MSE (v1's recipe); > 0: min-SNR-gamma weighting (Hang et al. 2023; 5 there)
    record_tokens: bool = True  # condition on the labels' record as K tokens beside the text (runs before v2: off)
    latent_cache: str | None = None  # a folder: latents in memory-mapped shards, kept for the next run; None: memory
    timestep_sampling: str = "auto"  # one of TIMESTEP_SAMPLINGS (runs before it: auto, i.e. uniform for epsilon/v)
    logit_mean: float = 0.0  # logit-normal: u = sigmoid(N(logit_mean, logit_std²)) (Esser et al. 2024: 0, 1)
    logit_std: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.vae and not self.init_from:
            raise TrainingError("--vae: a VAE run or checkpoint folder is required (or --init-from)")
        copies = self.augment_copies
        if isinstance(copies, bool) or not isinstance(copies, int) or not 0 <= copies <= MAX_AUGMENT_COPIES:
            raise TrainingError(
                f"--augment-copies must be a whole number from 0 to {MAX_AUGMENT_COPIES}, not {copies!r}"
            )
        if self.augment_sources is not None and not self.source_names():
            raise TrainingError("--augment-sources: give one or more source names separated by commas")
        if not 0 <= self.ema_decay < 1:
            raise TrainingError(f"--ema-decay must be from 0 to below 1, got {self.ema_decay!r}")
        if not 0 <= self.uncond_prob < 1:
            raise TrainingError(f"--uncond-prob must be from 0 to below 1, got {self.uncond_prob!r}")
        if isinstance(self.sample_steps, bool) or not isinstance(self.sample_steps, int) or self.sample_steps < 1:
            raise TrainingError(f"--sample-steps must be a whole number >= 1, got {self.sample_steps!r}")
        if not 0 <= self.guidance_scale <= 30:
            raise TrainingError(f"--guidance-scale must be from 0 to 30, got {self.guidance_scale!r}")
        chance = self.caption_augment
        if isinstance(chance, bool) or not isinstance(chance, int | float) or not 0 <= chance <= 1:
            raise TrainingError(f"--caption-augment must be a probability from 0 (off) to 1, got {chance!r}")
        gamma = self.min_snr_gamma
        if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0 <= gamma <= 1000:
            raise TrainingError(f"--min-snr-gamma must be a number from 0 (off) to 1000, got {gamma!r}")
        if not isinstance(self.record_tokens, bool):
            raise TrainingError(f"--record-tokens must be true or false, got {self.record_tokens!r}")
        if self.timestep_sampling not in TIMESTEP_SAMPLINGS:
            raise TrainingError(
                f"--timestep-sampling must be one of {', '.join(TIMESTEP_SAMPLINGS)}, got {self.timestep_sampling!r}"
            )
        for name, low in (("logit_mean", -np.inf), ("logit_std", 0.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not low < value < np.inf:
                what = "a number > 0" if low == 0 else "a finite number"
                raise TrainingError(f"--{name.replace('_', '-')} must be {what}, got {value!r}")

    def source_names(self) -> frozenset[str] | None:
        """The sources whose images get augmented copies (None: all)."""
        if self.augment_sources is None:
            return None
        return frozenset(name.strip() for name in self.augment_sources.split(",") if name.strip())


# --------------------------------------------------------------------------- the latent cache on disk


def disk_latents(
    vae: nn.Module,
    manifest: Manifest,
    train_records: Sequence[ManifestRecord],
    copies: list[Sequence[ManifestRecord]],
    val_records: Sequence[ManifestRecord],
    options: DiffusionOptions,
    image_size: int,
    device: torch.device,
) -> tuple[StackedLatents, LatentCache]:
    """The training (+ augmented copies) and validation latents in ``options.latent_cache``/{train,
    copy-K,val}: filled where missing (images decoded in DataLoader workers), then memory-mapped.
    Each part is keyed by the VAE's weights and the manifest's and part's records, so a cache made
    for another VAE or data set is rebuilt, never read."""
    root = Path(options.latent_cache or "").expanduser()
    vae_hash = vae_sha256(vae)
    workers = options.workers if options.workers is not None else min(4, os.cpu_count() or 1)

    def part(
        name: str, records: Sequence[ManifestRecord], augmentation: Augmentation | None = None, seed: int = 0
    ) -> LatentCache:
        digest = hashlib.sha256(manifest.sha256.encode())

        def images() -> Iterator[str]:  # one pass over the records: the key's digest and the paths
            for record in records:
                digest.update(b"\x00" + record.image.encode())
                yield record.image

        paths = PathTable(images())
        style = repr(augmentation) if augmentation else ""
        key = CacheKey(vae_hash, digest.hexdigest(), name, len(records), image_size, style, seed)
        return cached_latents(root / name, vae, paths, key, device, workers=workers,
                              augmentation=augmentation, progress=not options.quiet)  # fmt: skip

    train = [part("train", train_records)]
    for k, copy in enumerate(copies, start=1):
        train.append(part(f"copy-{k}", copy, STRONG_AUGMENTATION, options.seed * 1000 + k))
    return StackedLatents(train), part("val", val_records)


# --------------------------------------------------------------------------- task


class DiffusionTask:
    """The UNet + projection for :func:`training.loop.fit`, over cached latents and text states."""

    name = "diffusion"

    def __init__(
        self,
        model: LatentDiffusionModel,
        manifest: Manifest,
        train_records: Sequence[ManifestRecord],
        val_records: Sequence[ManifestRecord],
        options: DiffusionOptions,
        device: torch.device,
        log: Log,
    ):
        c = model.config
        self.model, self.config, self.options, self.device = model, c, options, device
        self.scaling_factor = float(c.scaling_factor)
        self.prediction_type = c.schedule.prediction_type
        self.flow = self.prediction_type == schedules.FLOW  # rectified flow: x_t = (1 - σ) x_0 + σ ε, v = ε - x_0
        self.precision = pick_precision(options.precision, device)
        # 1. networks: VAE frozen, UNet + projection trained, EMA of both
        self.vae = model.vae.to(device).eval().requires_grad_(False)
        self.unet = model.unet.to(device).train()
        self.projection = model.text.projection.to(device).train()
        self.record = model.record.to(device).train() if model.record is not None else None
        if device.type == "cuda":
            self.unet.to(memory_format=torch.channels_last)
        self.trained = nn.ModuleDict(self.trainable())
        self.ema = EMA(self.trained, options.ema_decay)
        self.denoiser = Denoiser(self.unet, self.projection, self.record)
        self.train_denoiser = torch.compile(self.denoiser) if use_compile(options, device) else self.denoiser
        ema = self.ema.module
        self.ema_denoiser = Denoiser(ema["unet"], ema["text_projection"], dict(ema.items()).get("record"))
        self.alphas_cumprod = torch.tensor(schedules.alphas_cumprod(c.schedule), dtype=torch.float32, device=device)

        # 2. text cache: distinct captions + "" + the sample prompts. Per training image only compact arrays
        #    are kept (its caption's row, its record ids), made in one streamed pass over the records
        #    (ManifestRecords: offsets into the manifest), which are read again only to phrase a pool caption
        started = time.perf_counter()
        self.prompts = sample_prompts(manifest)
        sources = options.source_names()
        vocabulary = self.record.vocabulary if self.record is not None else None
        seen: dict[str, int] = {}  # caption -> its row in order of first sight, until the cache's order is known
        # record ids held per image as int16 (a quarter of int64's 192 bytes per record at K = 24), made int64
        # per micro-batch for the embedding look-up
        id_type = np.int16 if vocabulary is not None and len(vocabulary) < 2**15 else np.int64

        def scan(records: Sequence[ManifestRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
            """(caption rows in ``seen``, whether the source gets augmented copies, record ids (N, K))."""
            rows, chosen, ids = np.empty(len(records), np.int64), np.empty(len(records), bool), []
            for chunk in iter_chunks(len(records), 4096):
                part = list(records[chunk])
                rows[chunk] = [seen.setdefault(r.text, len(seen)) for r in part]
                chosen[chunk] = [sources is None or r.source in sources for r in part]
                if vocabulary is not None:  # the age band too where no age is given; int16 (a vocabulary < 32k)
                    ids.append(vocabulary.batch_ids([record_of_manifest(r) for r in part]).astype(id_type))
            if vocabulary is None:
                return rows, chosen, None
            return rows, chosen, np.concatenate(ids) if ids else vocabulary.batch_ids([]).astype(id_type)

        train_rows, chosen, train_ids = scan(train_records)
        val_rows, _, val_ids = scan(val_records)
        texts = sorted(seen.keys() | {"", *self.prompts})
        position = {text: i for i, text in enumerate(texts)}
        self.hidden, self.mask = encode_texts(model.text, texts, device)
        self.empty_index = position[""]
        self.prompt_indices = [position[p] for p in self.prompts]
        cache_row = np.fromiter((position[text] for text in seen), dtype=np.int64, count=len(seen))
        # the training images, then K augmented copies of those of --augment-sources (positions among them)
        augmented = np.flatnonzero(chosen) if options.augment_copies else np.zeros(0, np.int64)
        order = np.concatenate([np.arange(len(train_records)), *[augmented] * options.augment_copies])
        copies = [pick_records(train_records, augmented)] * options.augment_copies
        self.train_text = torch.from_numpy(cache_row[train_rows][order]).to(device)
        self.captions = None  # --caption-augment: fresh phrasings, encoded per micro-batch into scratch rows
        if options.caption_augment > 0:
            memo = Path(options.latent_cache).expanduser() if options.latent_cache else None  # off the heap
            self.captions = AugmentedCaptions(
                join_records([train_records, *copies]), options.caption_augment, options.seed, model.text, device,
                memo_folder=memo,
            )  # fmt: skip
            self.hidden, self.mask = self.captions.grow(self.hidden, self.mask, options.batch_size)
        self.val_text = torch.from_numpy(cache_row[val_rows]).to(device)
        # record ids (N, K): the labels' record of each image (augmented copies share their image's)
        self.train_record = self.val_record = self.prompt_record = None
        if vocabulary is not None and train_ids is not None and val_ids is not None:
            self.train_record = torch.from_numpy(train_ids[order]).to(device)
            self.val_record = torch.from_numpy(val_ids).to(device)
            self.prompt_record = torch.from_numpy(vocabulary.batch_ids([parse_prompt(p) for p in self.prompts]))

        # 3. latent cache: tensors in memory, or (--latent-cache) shards on disk read through memory maps
        size, workers = c.image_size, options.workers
        progress = not options.quiet
        if options.latent_cache:
            self.train_latents, self.val_latents = disk_latents(
                self.vae, manifest, train_records, copies, val_records, options, size, device
            )
        else:
            self.train_mean, self.train_std = encode_latents(
                self.vae, train_records, size, device, workers=workers, progress=progress, what="training latents"
            )
            if copies:
                encoded = [
                    encode_latents(
                        self.vae,
                        copy,
                        size,
                        device,
                        workers=workers,
                        progress=progress,
                        what=f"augmented copy {k}",
                        augmentation=STRONG_AUGMENTATION,
                        seed=options.seed * 1000 + k,
                    )
                    for k, copy in enumerate(copies, start=1)
                ]
                self.train_mean = torch.cat([self.train_mean, *(mean for mean, _ in encoded)])
                self.train_std = torch.cat([self.train_std, *(std for _, std in encoded)])
            self.val_mean, self.val_std = encode_latents(
                self.vae, val_records, size, device, workers=workers, progress=progress, what="validation latents"
            )
            self.train_latents = MemoryLatents(self.train_mean, self.train_std)
            self.val_latents = MemoryLatents(self.val_mean, self.val_std)
        self.num_train = len(self.train_latents)
        mean, std = self.train_latents.take(torch.arange(min(self.num_train, 8192), device=device), device)
        sampled = mean + std * torch.randn(
            mean.shape, generator=torch.Generator(device=device).manual_seed(0), device=device
        )
        log(
            f"cached {len(train_records)} training (+ {self.num_train - len(train_records)} augmented) "
            f"and {len(val_records)} validation latents "
            f"{tuple(mean.shape[1:])} and {len(texts)} distinct texts "
            f"in {time.perf_counter() - started:.1f} s; "
            f"std of the training latents x scaling_factor = {sampled.std().item() * self.scaling_factor:.3f} "
            "(about 1 is right)"
        )

    def trainable(self) -> dict[str, nn.Module]:
        modules = {"unet": self.unet, "text_projection": self.projection}
        return modules if self.record is None else {**modules, "record": self.record}

    def _noisy(
        self, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t, model timestep t, target, noise level: ᾱ_t or flow σ) for posterior (mean, std)
        (B, C, h, w), drawing from ``generator``."""
        batch, device = mean.shape[0], mean.device
        z = (mean + std * torch.randn(mean.shape, generator=generator, device=device)) * self.scaling_factor
        options, schedule = self.options, self.config.schedule
        t = draw_timesteps(
            batch, generator, device, flow=self.flow, sampling=options.timestep_sampling,
            num_train_timesteps=schedule.num_train_timesteps, shift=schedule.shift,
            logit_mean=options.logit_mean, logit_std=options.logit_std,
        )  # fmt: skip
        noise = torch.randn(z.shape, generator=generator, device=device)
        if self.flow:  # the UNet sees σ N, as the engine's samplers call it
            level, sigma = t, t.view(batch, 1, 1, 1)
            t = t * schedule.num_train_timesteps
            noisy, target = (1 - sigma) * z + sigma * noise, noise - z
        else:
            level = self.alphas_cumprod[t]
            alpha = level.view(batch, 1, 1, 1)
            a, s = alpha.sqrt(), (1 - alpha).sqrt()
            noisy = a * z + s * noise
            target = noise if self.prediction_type == "epsilon" else a * noise - s * z
        if self.device.type == "cuda":
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        return noisy, t, target, level

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        wrapped = wrap(self.denoiser)
        self.train_denoiser = torch.compile(wrapped) if use_compile(self.options, self.device) else wrapped

    def train_loss(self, indices: torch.Tensor, generator: torch.Generator, share: slice | None = None) -> torch.Tensor:
        """The loss of the micro-batch ``indices``, or of its positions ``share`` only (every draw
        made for the whole micro-batch, so that a share sees what one process would)."""
        noisy, t, target, level = self._noisy(*self.train_latents.take(indices, self.device), generator)
        drop = torch.rand(indices.shape[0], generator=generator, device=self.device) < self.options.uncond_prob
        text = torch.where(drop, self.empty_index, self.train_text[indices])
        if self.captions is not None:
            text = self.captions.draw(indices, text, drop, generator, self.hidden, self.mask)
        record = None
        if self.train_record is not None:  # dropped apart from the text, so each can be guided
            drop = torch.rand(indices.shape[0], generator=generator, device=self.device) < self.options.uncond_prob
            record = self.train_record[indices].long().masked_fill(drop.unsqueeze(1), 0)
        if share is not None:
            noisy, t, target, level, text = noisy[share], t[share], target[share], level[share], text[share]
            record = record[share] if record is not None else None
        prediction = self.train_denoiser(noisy, t, self.hidden[text], self.mask[text], record)
        return diffusion_loss(
            prediction, target, level,
            prediction_type=self.prediction_type, min_snr_gamma=self.options.min_snr_gamma,
        )  # fmt: skip

    def after_step(self, step: int) -> None:
        self.ema.update(self.trained, step)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """EMA model, no caption dropout, the same noise and timesteps at every validation."""
        count = len(self.val_latents)
        if count == 0:
            return {}
        generator = torch.Generator(device=self.device).manual_seed(self.options.seed + 1)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for chunk in iter_chunks(count, self.options.batch_size):
            rows = torch.arange(count, device=self.device)[chunk]
            noisy, t, target, _ = self._noisy(*self.val_latents.take(rows, self.device), generator)
            text = self.val_text[chunk]
            record = self.val_record[chunk].long() if self.val_record is not None else None
            with autocast(self.device, self.precision):
                prediction = self.ema_denoiser(noisy, t, self.hidden[text], self.mask[text], record)
            total += F.mse_loss(prediction.float(), target, reduction="sum").double() / target[0].numel()
        return {"val_loss": (total / count).item()}

    @torch.no_grad()
    def sample_grid(self) -> np.ndarray | None:
        """One column per prompt, one row per seed: EMA model, ``engine.samplers``, guidance."""
        if not self.prompts:
            return None
        c, device = self.config, self.device
        prompts = len(self.prompts)
        cond = torch.tensor(self.prompt_indices * len(SAMPLE_SEEDS), device=device)
        uncond = torch.full_like(cond, self.empty_index)
        text = torch.cat([uncond, cond])
        hidden, mask = self.hidden[text], self.mask[text]
        record = None
        if self.prompt_record is not None:  # unconditional: K null tokens
            cond_record = self.prompt_record.repeat(len(SAMPLE_SEEDS), 1).to(device)
            record = torch.cat([torch.zeros_like(cond_record), cond_record])
        scale = float(self.options.guidance_scale)
        batch = cond.shape[0]

        def model_fn(sample: np.ndarray, timestep: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(sample).to(device)
            t = torch.from_numpy(timestep).to(device)
            with autocast(device, self.precision):
                out = self.ema_denoiser(torch.cat([x, x]), torch.cat([t, t]), hidden, mask, record).float()
            uncond_out, cond_out = out[:batch], out[batch:]
            return (uncond_out + scale * (cond_out - uncond_out)).cpu().numpy()

        shape = (c.latent_channels, c.latent_size, c.latent_size)
        noise = np.stack(
            [np.random.default_rng(seed).standard_normal(shape, dtype=np.float32) for seed in SAMPLE_SEEDS
             for _ in range(prompts)]
        )  # fmt: skip
        latent = noise
        for step in samplers.sample(SAMPLER, model_fn, noise, c.schedule, self.options.sample_steps):
            latent = step.latent
        z = torch.from_numpy(latent).to(device) / self.scaling_factor
        images = self.vae.decode(z).sample.float().clamp(-1, 1).add(1).div(2)[:, 0]
        return image_grid(images.cpu().numpy(), columns=prompts)

    def write_checkpoint(self, folder: Path, step: int) -> None:
        ema = self.ema.module
        record = ema["record"] if self.record is not None else None
        save_checkpoint(
            folder, self.config, self.vae, self.unet, ema["text_projection"], unet_ema=ema["unet"], record=record
        )

    def extra_state(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"ema": self.ema.module.state_dict(), "vae": self.vae.state_dict()}

    def load_extra_state(self, parts: dict[str, dict[str, torch.Tensor]]) -> None:
        try:
            self.ema.module.load_state_dict(parts["ema"], strict=True)
        except (KeyError, RuntimeError) as exc:
            raise TrainingError(f"training state: EMA weights do not match the model: {exc}") from None


def _check_export_target(path: str | None) -> None:
    if path is None:
        return
    out = Path(path)
    if folder_in_use(out):
        raise TrainingError(f"--export {path}: already exists and is not an empty folder; choose a new folder")


def model_card(
    manifest: Manifest, options: DiffusionOptions, result: FitResult, vae_source: str, init_source: str | None = None
) -> dict:
    counts = manifest.counts()
    training: dict = {
        "steps": result.step,
        "stopped": result.stop_reason,
        "batch_size": options.batch_size * options.grad_accum,
        "learning_rate": options.lr,
        "best_val_loss": result.best_val_loss,
        "vae": vae_source,
    }
    if init_source:
        training["fine_tuned_from"] = init_source  # its own training data also shaped this model
    if options.augment_copies:
        training["augmented_copies"] = (
            f"{options.augment_copies} of each image of {options.augment_sources or 'every source'}"
        )
    card: dict = {
        "training_data": (
            f"{manifest.name}: {len(manifest.records)} records (train {counts['train']}, val {counts['val']}, "
            f"test {counts['test']}); the UNet was trained on the 'train' split"
        ),
        "training": training,
    }
    if options.record_tokens:
        # what engine.findings.understood reads: the record's age band and sex reach the model (no "place":
        # no label gives a side, so side tokens never train), and the bands and views the train split has
        bands, views = set(), set()
        for record in manifest.split("train"):  # streamed: 100k+ records are never all in memory
            labels = record_of_manifest(record)
            bands.add(labels.age_band)
            views.add(labels.view)
        views |= {"supine AP"} if "AP" in views else set()
        card["conditioning"] = ["age", "sex"]
        card["age_bands"] = [band for band in AGE_BANDS if band in bands]
        card["views"] = [view for view in VIEWS if view in views]
    return card


# --------------------------------------------------------------------------- entry point


def train_diffusion(options: DiffusionOptions, *, resume: bool = False, log: Log | None = None) -> FitResult:
    """Train (or with ``resume`` continue) a diffusion run in ``options.out``; then export when asked.

    Raises DatasetError, ConfigError, CheckpointError, TrainingError or TextEncoderError before
    anything is written when an input cannot be used.
    """
    log = log or make_log(options.quiet)
    # 1. data, device, export target, VAE checkpoint and config: checked before the run folder
    manifest, device = manifest_and_device(options, log)
    train_records, val_records = manifest.split("train"), manifest.split("val")
    _check_export_target(options.export)
    resume = resumes(options.out, "diffusion", resume, log)
    vae_dir, init_dir, config = None, None, None
    if not resume:
        vae_dir = resolve_vae_checkpoint(options.vae or options.init_from or "")
        init_config = None
        if options.init_from:
            init_dir = resolve_vae_checkpoint(options.init_from, "--init-from")
            init_config = absolute_encoder(load_config(init_dir), init_dir)
            for name in (UNET_FILE, TEXT_PROJECTION_FILE):
                if not (init_dir / name).is_file():
                    raise CheckpointError(f"--init-from {options.init_from}: {init_dir / name} is missing")
        config = diffusion_config(absolute_encoder(load_config(vae_dir), vae_dir), options.config, init_config)
        config = with_record_tokens(config, options.record_tokens)
    info = {
        "config": config.to_json() if config else None,
        "vae_checkpoint": str(vae_dir.resolve()) if vae_dir else None,
        "init_checkpoint": str(init_dir.resolve()) if init_dir else None,
        "manifest": manifest_info(manifest),
    }
    # under torchrun rank 0 alone opens (and on resume reads) the run folder; the others get it by broadcast
    run, record = distributed.on_main(
        lambda: open_run(options.out, "diffusion", options.to_json(), info, resume=resume)
    )
    with discard_on_failure(run) if distributed.is_main() else contextlib.nullcontext():
        # a run that fails before its first checkpoint leaves nothing
        config = ModelConfig.from_json(record["config"])
        state = distributed.on_main(run.load_state) if resume else None

        # 2. model: UNet and projection fresh from the seed (or from --init-from), the frozen VAE's weights
        seed_everything(options.seed)
        model = build_model(config)
        if state is not None:
            load_vae_weights(model.vae, state.parts["vae"], str(run.state_dir))
        else:
            vae_file = Path(record["vae_checkpoint"]) / VAE_FILE
            load_vae_weights(model.vae, read_vae_file(vae_file), str(vae_file))
            if record.get("init_checkpoint"):  # fine-tuning: the earlier model's UNet and projection
                init = Path(record["init_checkpoint"])
                load_weights(model.unet, init / UNET_FILE)
                load_weights(model.text.projection, init / TEXT_PROJECTION_FILE)
                log(f"UNet and text projection from {init}")
                if model.record is not None:
                    if config.record == load_config(init).record:
                        load_weights(model.record, init / RECORD_FILE)
                        log(f"record-token table from {init}")
                    else:
                        log(f"record-token table new (N(0, 0.02²), from the seed): {init} has none like it")

        # 3. caches, then train
        val_records = evenly_spaced(val_records, VAL_LIMIT)
        task = DiffusionTask(model, manifest, train_records, val_records, options, device, log)
        if options.sample_every and distributed.is_main():
            run.samples_dir.mkdir(exist_ok=True)
            prompts = {"prompts (columns)": task.prompts, "seeds (rows)": list(SAMPLE_SEEDS), "sampler": SAMPLER}
            atomic_write_text(run.samples_dir / "prompts.json", json.dumps(prompts, indent=2) + "\n")
        result = fit(task, options, run, device, state=state, log=log)
    if not result.finished:
        return result
    best = f"; best val loss {result.best_val_loss:.4g} at step {result.best_step}" if result.best_step else ""
    log(f"diffusion run finished at step {result.step} ({result.stop_reason}){best}; checkpoint {result.checkpoint}")

    # 4. export (rank 0)
    if options.export and distributed.is_main():
        from training.export_onnx import export_pack

        card = model_card(manifest, options, result, record.get("vae_checkpoint") or "", record.get("init_checkpoint"))
        pack = export_pack(
            result.checkpoint,
            options.export,
            fp16=options.export_fp16,
            text_int8=options.export_text_int8,
            model_id=run.root.resolve().name,
            card=card,
        )
        log(f"exported {pack}")
    return result


__all__ = [
    "DiffusionOptions",
    "DiffusionTask",
    "train_diffusion",
]
