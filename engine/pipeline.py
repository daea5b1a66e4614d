"""Generation: a request -> step events (for a viewer) -> a result with 16-bit-ready images.

One call shape serves the CLI and the desktop worker::

    pipeline = Pipeline(load_pack(path))
    for event in pipeline.iter_steps(request, cancel=flag):
        if isinstance(event, StepEvent): show(event.preview)
        else: result = event            # the last item is always a GenerationResult

Classifier-free guidance runs the unconditional and conditional halves in one UNet call of
batch 2B and *uses* the guided prediction ``uncond + g * (cond - uncond)``; g = 1 skips the
unconditional half. The empty-text embedding is computed once per pipeline.

A pack with record conditioning (``engine.conditioning``) gets, after the T text tokens, K record
tokens from the parsed prompt: the context is (B, T + K, D) for both halves, the unconditional
half's record being the negative prompt's ("" gives K null tokens). Other packs run as before.
Such a pack can guide the record apart from the text (``record_guidance``; training drops text and
record independently for this): three halves in one UNet call, unconditional u (negative text and
record), text-only t (the prompt's text, the negative prompt's record) and full c, combined as
``u + g * (t - u) + r * (c - t)`` (compositional guidance, as InstructPix2Pix guides image and text).
r = g is the two-half formula; a CLIP-style text encoder that reads "no pneumonia" as pneumonia is
outweighed by a larger r, since the record says "pneumonia absent".

``iter_steps(request, attention=True)`` on a pack exported with attention maps also collects the
conditional half's cross-attention at every step (``engine.attention``) into the result's finding
maps; the UNet calls and arithmetic are the same, so the pixels are bit-identical to a run without.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from engine import samplers
from engine.attention import AttentionCollector, FindingMaps, require_attention
from engine.conditioning import load_record_conditioning
from engine.findings.parse import parse_prompt
from engine.imaging import to_uint8, to_uint16
from engine.pack import ModelPack
from engine.runtime import Backend, OrtBackend
from engine.text import PromptError, WordPieceTokenizer, check_prompt

MAX_STEPS = 250
MAX_BATCH = 16
MAX_GUIDANCE = 30.0
MAX_SEED = 2**63 - 1 - MAX_BATCH


class RequestError(ValueError):
    """A request outside what the engine allows; the message says what is allowed."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str = ""
    num_steps: int = 20
    guidance_scale: float = 4.0
    sampler: str = "dpmpp-2m"
    seed: int = 0
    batch_size: int = 1
    eta: float = 0.0  # DDIM only: 0 deterministic, 1 DDPM-like
    record_guidance: float | None = None  # the record tokens' own scale; None: guidance_scale (two halves)
    preview_decode_every: int = 0  # 0: cheap linear previews only; k: full VAE decode every k steps

    def validated(self) -> GenerationRequest:
        """Check every field; raises RequestError / PromptError. Strips outer spaces only."""
        prompt = check_prompt(self.prompt)
        negative = check_prompt(self.negative_prompt, allow_empty=True, what="negative prompt")
        if not isinstance(self.num_steps, int) or not 1 <= self.num_steps <= MAX_STEPS:
            raise RequestError(f"steps must be a whole number from 1 to {MAX_STEPS}, not {self.num_steps}")
        if not 0.0 <= float(self.guidance_scale) <= MAX_GUIDANCE:
            raise RequestError(f"guidance scale must be from 0 to {MAX_GUIDANCE:g}, not {self.guidance_scale}")
        if self.sampler not in samplers.SAMPLERS:
            raise RequestError(f"unknown sampler {self.sampler!r}: choose one of {', '.join(samplers.SAMPLERS)}")
        if not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise RequestError(f"seed must be a whole number from 0 to {MAX_SEED}, not {self.seed}")
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= MAX_BATCH:
            raise RequestError(f"batch must be from 1 to {MAX_BATCH}, not {self.batch_size}")
        if not 0.0 <= float(self.eta) <= 1.0:
            raise RequestError(f"eta must be from 0 to 1, not {self.eta}")
        if self.eta and self.sampler != "ddim":
            raise RequestError("eta applies to the ddim sampler only")
        if self.record_guidance is not None and not 0.0 <= float(self.record_guidance) <= MAX_GUIDANCE:
            raise RequestError(f"record guidance must be from 0 to {MAX_GUIDANCE:g}, not {self.record_guidance}")
        if self.preview_decode_every < 0:
            raise RequestError("preview_decode_every must be 0 (off) or a positive step interval")
        return replace(self, prompt=prompt, negative_prompt=negative)

    def seeds(self) -> list[int]:
        """Image i of a batch uses seed + i, so any image can be regenerated alone."""
        return [self.seed + i for i in range(self.batch_size)]


@dataclass(frozen=True)
class StepEvent:
    index: int  # 0-based
    total: int
    timestep: float
    latent: np.ndarray  # (B, C, h, w) sampler state after this step
    preview: np.ndarray  # (B, H, W) float32 in [0, 1]: the predicted clean image at this step
    elapsed_s: float


@dataclass(frozen=True)
class GenerationResult:
    request: GenerationRequest
    images: np.ndarray  # (B, H, W) float32 in [0, 1]; the last preview if cancelled
    seeds: list[int]
    model_id: str
    model_fingerprint: str
    provider: str
    cancelled: bool
    steps_done: int
    dropped_words: tuple[str, ...]  # prompt words cut off by the encoder's token limit
    timings: dict[str, float] = field(default_factory=dict)
    attention: FindingMaps | None = None  # finding maps, when asked for (iter_steps(attention=True))

    def to_uint16(self) -> np.ndarray:
        return to_uint16(self.images)

    def to_uint8(self) -> np.ndarray:
        return to_uint8(self.images)


CancelFlag = threading.Event | Callable[[], bool] | None


def _is_cancelled(cancel: CancelFlag) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


class Pipeline:
    """Text-to-radiograph generation on a pack through a Backend (ONNX Runtime by default)."""

    def __init__(self, pack: ModelPack, backend: Backend | None = None, *, provider: str = "auto"):
        self.pack = pack
        self.manifest = pack.manifest
        self.backend: Backend = backend if backend is not None else OrtBackend(pack, requested=provider)
        text = self.manifest.text
        self.tokenizer = WordPieceTokenizer(
            pack.path(text.vocab_file), lowercase=text.lowercase, max_tokens=text.max_tokens
        )
        self.conditioning = load_record_conditioning(pack)  # None: the text context only
        self._context_cache: dict[str, np.ndarray] = {}
        self._preview_weight = np.asarray(self.manifest.preview.weight, dtype=np.float32)
        self._preview_bias = np.float32(self.manifest.preview.bias)

    @property
    def provider(self) -> str:
        return self.backend.provider

    # 1. text
    def encode(self, texts: list[str]) -> tuple[np.ndarray, tuple[tuple[str, ...], ...]]:
        """Texts -> context (B, T, D), or (B, T + K, D) with the record tokens of a pack that has
        them, and the words each lost to the token limit."""
        tokens = self.tokenizer.encode_batch(texts)
        context = self.backend.encode_text(tokens.input_ids, tokens.attention_mask)
        if self.conditioning is not None:
            records = self.conditioning.context([parse_prompt(text) for text in texts])
            context = np.concatenate([context, records.astype(context.dtype)], axis=1)
        return context, tokens.dropped

    def negative_context(self, negative_prompt: str) -> np.ndarray:
        """(1, T (+ K), D) context of the negative prompt ("" = unconditional), cached per text."""
        if negative_prompt not in self._context_cache:
            if len(self._context_cache) > 32:
                self._context_cache.pop(next(k for k in self._context_cache if k != ""))
            self._context_cache[negative_prompt] = self.encode([negative_prompt])[0]
        return self._context_cache[negative_prompt]

    def record_guided(self, request: GenerationRequest) -> bool:
        """Whether ``request`` guides the record apart from the text (three halves); RequestError for
        a record guidance on a pack without record tokens."""
        if request.record_guidance is None:
            return False
        if self.conditioning is None:
            raise RequestError(f"record guidance needs a model with record tokens; {self.pack.model_id} has none")
        return float(request.record_guidance) != float(request.guidance_scale)

    def dropped_words(self, prompt: str) -> tuple[str, ...]:
        return self.tokenizer.encode_batch([prompt]).dropped[0]

    # 2. the denoiser seen by the samplers
    def guided_model_fn(
        self,
        cond: np.ndarray,
        uncond: np.ndarray,
        guidance_scale: float,
        attention: Callable[[list[np.ndarray]], None] | None = None,
        record_guidance: float | None = None,
    ) -> samplers.ModelFn:
        """model_fn(sample (B,C,h,w), timestep (B,)) -> guided model output (B,C,h,w).

        ``cond`` (B, T', D) and ``uncond`` (1 or B, T', D), T' = T (+ K record tokens). Both halves go
        through one UNet call. ``attention``: called after every UNet call with the conditional half's
        attention maps (the backend's ``unet_attention``), each (B, h_l * w_l, T'). ``record_guidance``
        (a pack with record tokens): the third, text-only half and ``u + g (t - u) + r (c - t)``.
        """
        batch = cond.shape[0]

        def unet(sample: np.ndarray, timestep: np.ndarray, context: np.ndarray) -> np.ndarray:
            if attention is None:
                return self.backend.unet(sample, timestep, context)
            output, maps = self.backend.unet_attention(sample, timestep, context)
            attention([m[-batch:] for m in maps])  # the conditional half is the last B rows
            return output

        uncond_b = np.broadcast_to(uncond, cond.shape)
        scale = np.float32(guidance_scale)
        if record_guidance is not None:
            return self._record_guided_fn(unet, cond, uncond_b, scale, np.float32(record_guidance))
        if guidance_scale == 1.0:
            return lambda sample, timestep: unet(sample, timestep, cond)
        context = np.concatenate([uncond_b, cond], axis=0)

        def model_fn(sample: np.ndarray, timestep: np.ndarray) -> np.ndarray:
            both = unet(np.concatenate([sample, sample], axis=0), np.concatenate([timestep, timestep]), context)
            out_uncond, out_cond = both[:batch], both[batch:]
            return out_uncond + scale * (out_cond - out_uncond)

        return model_fn

    def _record_guided_fn(
        self,
        unet: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
        cond: np.ndarray,
        uncond: np.ndarray,
        scale: np.float32,
        record_scale: np.float32,
    ) -> samplers.ModelFn:
        """The three-half denoiser: u (negative text + record), t (prompt text + negative record), c."""
        batch = cond.shape[0]
        if self.conditioning is None:
            raise RequestError(f"record guidance needs a model with record tokens; {self.pack.model_id} has none")
        text_end = cond.shape[1] - self.conditioning.vocabulary.max_tokens
        text_only = np.concatenate([cond[:, :text_end], uncond[:, text_end:]], axis=1)
        context = np.concatenate([uncond, text_only, cond], axis=0)  # c last: the attention maps' half

        def model_fn(sample: np.ndarray, timestep: np.ndarray) -> np.ndarray:
            out = unet(np.concatenate([sample] * 3, axis=0), np.concatenate([timestep] * 3), context)
            out_uncond, out_text, out_cond = out[:batch], out[batch : 2 * batch], out[2 * batch :]
            return out_uncond + scale * (out_text - out_uncond) + record_scale * (out_cond - out_text)

        return model_fn

    # 3. previews and decoding
    def preview(self, denoised: np.ndarray) -> np.ndarray:
        """Clean-latent estimate (B, C, h, w) -> (B, H, W) in [0, 1] by the fitted linear map."""
        small = np.tensordot(self._preview_weight, denoised, axes=([0], [1])) + self._preview_bias
        height, width = self.manifest.image.height, self.manifest.image.width
        frames = [cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR) for frame in small]
        return np.clip((np.stack(frames) + 1.0) * 0.5, 0.0, 1.0).astype(np.float32)

    def decode(self, latent: np.ndarray) -> np.ndarray:
        """Diffusion-space latent (B, C, h, w) -> (B, H, W) float32 in [0, 1]."""
        image = self.backend.decode(latent)[:, 0]
        return np.clip((image + 1.0) * 0.5, 0.0, 1.0).astype(np.float32)

    def initial_noise(self, seeds: list[int]) -> tuple[np.ndarray, list[np.random.Generator]]:
        latent = self.manifest.latent
        rngs = [np.random.default_rng(seed) for seed in seeds]
        noise = np.stack(
            [rng.standard_normal((latent.channels, latent.height, latent.width), dtype=np.float32) for rng in rngs]
        )
        return noise, rngs

    # 4. the whole generation
    def iter_steps(
        self, request: GenerationRequest, cancel: CancelFlag = None, *, attention: bool = False
    ) -> Iterator[StepEvent | GenerationResult]:
        """Yield a StepEvent after every denoising step, then one GenerationResult.

        ``cancel`` is checked between steps; a cancelled run ends with the last preview.
        ``attention``: also make the result's finding maps (``engine.attention``); AttentionError
        (before any step) for a pack exported without them.
        """
        # 1. validate and encode the text (negative prompt cached)
        request = request.validated()
        record_guided = self.record_guided(request)
        collector = None
        if attention:
            latent_size = (self.manifest.latent.height, self.manifest.latent.width)
            config = require_attention(self.pack, self.backend)
            collector = AttentionCollector(config, latent_size, self.manifest.text.max_tokens)
        t_start = time.perf_counter()
        seeds = request.seeds()
        cond, dropped = self.encode([request.prompt] * request.batch_size)
        guided = request.guidance_scale != 1.0 or record_guided
        uncond = self.negative_context(request.negative_prompt) if guided else cond
        t_text = time.perf_counter()
        model_fn = self.guided_model_fn(
            cond,
            uncond,
            request.guidance_scale,
            attention=collector.add if collector is not None else None,
            record_guidance=request.record_guidance if record_guided else None,
        )

        # 2. denoise, yielding a preview per step
        noise, rngs = self.initial_noise(seeds)
        steps = samplers.sample(
            request.sampler, model_fn, noise, self.manifest.schedule, request.num_steps,
            eta=request.eta, rngs=rngs,
        )  # fmt: skip
        latent = noise
        preview = None
        steps_done = 0
        cancelled = False
        for step in steps:
            latent = step.latent
            steps_done = step.index + 1
            every = request.preview_decode_every
            full = every > 0 and (steps_done % every == 0) and steps_done < step.total
            preview = self.decode(step.denoised) if full else self.preview(step.denoised)
            yield StepEvent(step.index, step.total, step.timestep, latent, preview, time.perf_counter() - t_start)
            if steps_done < step.total and _is_cancelled(cancel):
                cancelled = True
                break
        t_steps = time.perf_counter()

        # 3. decode the final latent (a cancelled run keeps its last preview)
        if cancelled:
            images = preview if preview is not None else self.preview(noise)
        else:
            images = self.decode(latent)
        maps = None
        if collector is not None:
            size = (self.manifest.image.height, self.manifest.image.width)
            maps = collector.finish(request.prompt, self.tokenizer, size)
        t_end = time.perf_counter()
        yield GenerationResult(
            request=request,
            images=images,
            seeds=seeds,
            model_id=self.pack.model_id,
            model_fingerprint=self.pack.fingerprint,
            provider=self.provider,
            cancelled=cancelled,
            steps_done=steps_done,
            dropped_words=dropped[0],
            timings={
                "text_s": t_text - t_start,
                "denoise_s": t_steps - t_text,
                "decode_s": t_end - t_steps,
                "total_s": t_end - t_start,
            },
            attention=maps,
        )

    def generate(
        self,
        request: GenerationRequest,
        on_step: Callable[[StepEvent], None] | None = None,
        *,
        attention: bool = False,
    ) -> GenerationResult:
        """Run ``iter_steps`` to the end; ``on_step`` sees every StepEvent."""
        for event in self.iter_steps(request, attention=attention):
            if isinstance(event, GenerationResult):
                return event
            if on_step is not None:
                on_step(event)
        raise AssertionError("iter_steps ended without a result")


__all__ = [
    "GenerationRequest",
    "GenerationResult",
    "Pipeline",
    "PromptError",
    "RequestError",
    "StepEvent",
    "to_uint8",
    "to_uint16",
]
