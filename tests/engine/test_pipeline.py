"""The generation pipeline on the tiny pack: shapes, determinism, guidance, cancel, validation."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest

from engine.pack import load_pack
from engine.pipeline import GenerationRequest, GenerationResult, Pipeline, RequestError, StepEvent
from engine.runtime import OrtBackend
from engine.text import PromptError


@dataclass
class CountingBackend:
    """A Backend that forwards to ONNX Runtime and records every call (the plug-in interface)."""

    inner: OrtBackend
    calls: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)

    @property
    def provider(self) -> str:
        return self.inner.provider

    def encode_text(self, input_ids, attention_mask):
        self.calls.append(("text", input_ids.shape))
        return self.inner.encode_text(input_ids, attention_mask)

    def unet(self, sample, timestep, context):
        self.calls.append(("unet", sample.shape))
        return self.inner.unet(sample, timestep, context)

    def decode(self, latent):
        self.calls.append(("decode", latent.shape))
        return self.inner.decode(latent)

    def encode_image(self, image):
        return self.inner.encode_image(image)


@pytest.fixture(scope="module")
def pipeline(tiny_pack_dir: Path) -> Pipeline:
    return Pipeline(load_pack(tiny_pack_dir), provider="cpu")


@pytest.fixture
def counting(tiny_pack_dir: Path) -> tuple[Pipeline, CountingBackend]:
    pack = load_pack(tiny_pack_dir)
    backend = CountingBackend(OrtBackend(pack, requested="cpu"))
    return Pipeline(pack, backend=backend), backend


def _request(**kw) -> GenerationRequest:
    base = {"prompt": "Right lower lobe consolidation, no effusion", "num_steps": 6, "seed": 7}
    return GenerationRequest(**{**base, **kw})


def test_events_and_result_shapes(pipeline: Pipeline) -> None:
    events = list(pipeline.iter_steps(_request(batch_size=2)))
    steps, result = events[:-1], events[-1]
    assert all(isinstance(e, StepEvent) for e in steps) and isinstance(result, GenerationResult)
    image = pipeline.manifest.image
    latent = pipeline.manifest.latent
    assert [e.index for e in steps] == list(range(6)) and all(e.total == 6 for e in steps)
    for event in steps:
        assert event.preview.shape == (2, image.height, image.width) and event.preview.dtype == np.float32
        assert event.latent.shape == (2, latent.channels, latent.height, latent.width)
        assert event.preview.min() >= 0.0 and event.preview.max() <= 1.0
    assert result.images.shape == (2, image.height, image.width)
    assert result.seeds == [7, 8] and not result.cancelled and result.steps_done == 6
    assert result.provider == "CPUExecutionProvider"
    assert result.to_uint16().dtype == np.uint16 and result.to_uint16().max() > 0
    assert result.model_fingerprint == pipeline.pack.fingerprint
    assert result.timings["total_s"] >= result.timings["denoise_s"] > 0


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp-2m", "euler"])
def test_same_request_same_pixels(pipeline: Pipeline, sampler: str) -> None:
    a = pipeline.generate(_request(sampler=sampler))
    b = pipeline.generate(_request(sampler=sampler))
    np.testing.assert_array_equal(a.to_uint16(), b.to_uint16())
    c = pipeline.generate(_request(sampler=sampler, seed=8))
    assert not np.array_equal(a.to_uint16(), c.to_uint16())


def test_batch_image_equals_its_seed_alone(pipeline: Pipeline) -> None:
    batch = pipeline.generate(_request(batch_size=3, seed=20))
    alone = pipeline.generate(_request(batch_size=1, seed=21))
    np.testing.assert_allclose(batch.images[1], alone.images[0], atol=2e-5)


def test_ddim_eta_is_seeded_per_image(pipeline: Pipeline) -> None:
    a = pipeline.generate(_request(sampler="ddim", eta=1.0, batch_size=2))
    b = pipeline.generate(_request(sampler="ddim", eta=1.0, batch_size=2))
    np.testing.assert_array_equal(a.images, b.images)
    alone = pipeline.generate(_request(sampler="ddim", eta=1.0, seed=8))
    np.testing.assert_allclose(a.images[1], alone.images[0], atol=2e-5)
    deterministic = pipeline.generate(_request(sampler="ddim", eta=0.0, batch_size=2))
    assert not np.allclose(a.images, deterministic.images)


def test_guided_prediction_is_what_the_sampler_sees(counting) -> None:
    """The reference project computed the guided output and threw it away: pin the formula."""
    pipe, backend = counting
    cond, _ = pipe.encode(["Cardiomegaly", "Left pleural effusion"])
    uncond = pipe.negative_context("")
    rng = np.random.default_rng(0)
    lat = pipe.manifest.latent
    sample = rng.standard_normal((2, lat.channels, lat.height, lat.width)).astype(np.float32)
    timestep = np.array([500.0, 500.0], dtype=np.float32)
    backend.calls.clear()
    guided = pipe.guided_model_fn(cond, uncond, 5.0)(sample, timestep)
    assert backend.calls == [("unet", (4, lat.channels, lat.height, lat.width))]  # one batched call
    out_cond = backend.inner.unet(sample, timestep, cond)
    out_uncond = backend.inner.unet(sample, timestep, np.repeat(uncond, 2, axis=0))
    np.testing.assert_allclose(guided, out_uncond + 5.0 * (out_cond - out_uncond), atol=1e-4)
    assert not np.allclose(guided, out_cond, atol=1e-4)


def test_guidance_scale_and_negative_prompt_change_the_image(pipeline: Pipeline) -> None:
    base = pipeline.generate(_request(guidance_scale=4.0)).images
    assert not np.allclose(base, pipeline.generate(_request(guidance_scale=1.0)).images)
    assert not np.allclose(base, pipeline.generate(_request(guidance_scale=8.0)).images)
    assert not np.allclose(base, pipeline.generate(_request(negative_prompt="pleural effusion")).images)


def test_empty_text_embedding_is_encoded_once(counting) -> None:
    pipe, backend = counting
    pipe.generate(_request(num_steps=2))
    pipe.generate(_request(num_steps=2, prompt="Cardiomegaly"))
    text_calls = [c for c in backend.calls if c[0] == "text"]
    assert len(text_calls) == 3  # the empty text once, then one call per prompt
    unet_calls = [c for c in backend.calls if c[0] == "unet"]
    assert len(unet_calls) == 4 and all(c[1][0] == 2 for c in unet_calls)


def test_guidance_one_skips_the_unconditional_half(counting) -> None:
    pipe, backend = counting
    pipe.generate(_request(num_steps=3, guidance_scale=1.0))
    assert [c[1][0] for c in backend.calls if c[0] == "unet"] == [1, 1, 1]
    assert len([c for c in backend.calls if c[0] == "text"]) == 1


def test_previews_cost_no_decode_unless_asked(counting) -> None:
    pipe, backend = counting
    pipe.generate(_request(num_steps=6))
    assert len([c for c in backend.calls if c[0] == "decode"]) == 1  # the final image only
    backend.calls.clear()
    pipe.generate(_request(num_steps=6, preview_decode_every=2))
    assert len([c for c in backend.calls if c[0] == "decode"]) == 1 + 2  # steps 2 and 4, then final


def test_cancel_between_steps_ends_with_last_preview(pipeline: Pipeline) -> None:
    flag = threading.Event()
    events = []
    for event in pipeline.iter_steps(_request(num_steps=10), cancel=flag):
        events.append(event)
        if isinstance(event, StepEvent) and event.index == 2:
            flag.set()
    result = events[-1]
    assert isinstance(result, GenerationResult)
    assert result.cancelled and result.steps_done == 3 and len(events) == 4
    np.testing.assert_array_equal(result.images, events[-2].preview)


def test_long_prompt_reports_dropped_words(pipeline: Pipeline) -> None:
    words = " ".join(f"word{i}" for i in range(80))
    result = pipeline.generate(_request(prompt=words, num_steps=1))
    assert result.dropped_words and result.dropped_words[-1] == "word79"
    assert "word0" not in result.dropped_words
    assert pipeline.generate(_request(num_steps=1)).dropped_words == ()


@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        ({"prompt": "   "}, PromptError, "empty"),
        ({"prompt": "x" * 5000}, PromptError, "at most 4000"),
        ({"num_steps": 0}, RequestError, "steps must be"),
        ({"num_steps": 251}, RequestError, "steps must be"),
        ({"guidance_scale": -1.0}, RequestError, "guidance scale"),
        ({"guidance_scale": 31.0}, RequestError, "guidance scale"),
        ({"sampler": "plms"}, RequestError, "ddim, dpmpp-2m, euler"),
        ({"seed": -1}, RequestError, "seed"),
        ({"batch_size": 0}, RequestError, "batch"),
        ({"eta": 0.5, "sampler": "euler"}, RequestError, "ddim sampler only"),
        ({"record_guidance": -0.5}, RequestError, "record guidance must be"),
        ({"record_guidance": 6.0}, RequestError, "needs a model with record tokens"),  # the tiny pack has none
    ],
)
def test_bad_requests_are_refused_before_any_work(counting, kw, error, message) -> None:
    pipe, backend = counting
    with pytest.raises(error, match=message):
        next(pipe.iter_steps(_request(**kw)))
    assert backend.calls == []


def test_truncation_drops_whole_words_only(pipeline: Pipeline) -> None:
    """A word split into WordPiece pieces across the limit is dropped whole, and reported whole."""
    tokenizer = pipeline.tokenizer
    filler = " ".join(["chest"] * (tokenizer.max_tokens - 3))  # [CLS] + filler + one more token fits
    batch = tokenizer.encode_batch([f"{filler} pneumothorax effusion"])
    assert batch.dropped[0] == ("pneumothorax", "effusion")
    kept = batch.input_ids[0][batch.attention_mask[0] == 1]
    assert len(kept) <= tokenizer.max_tokens and kept[-1] == tokenizer.encode_batch([""]).input_ids[0][1]


# --------------------------------------------------------------------------- record tokens


@dataclass
class ContextBackend(CountingBackend):
    """Records the context of every UNet call too."""

    contexts: list[np.ndarray] = field(default_factory=list)

    def unet(self, sample, timestep, context):
        self.contexts.append(np.array(context))
        return super().unet(sample, timestep, context)


def test_a_pack_without_record_tokens_runs_the_text_context_alone(tiny_pack_dir: Path) -> None:
    """The text-only path, written out: the same pixels, bit for bit, and a (2B, T, D) context."""
    from engine import samplers

    pack = load_pack(tiny_pack_dir)
    backend = ContextBackend(OrtBackend(pack, requested="cpu"))
    pipe = Pipeline(pack, backend=backend)
    assert pipe.conditioning is None
    request = _request(batch_size=2, negative_prompt="pleural effusion").validated()
    images = pipe.generate(request).images
    # the reference: text contexts, guidance in one UNet call, the sampler, the decoder
    tokens = pipe.tokenizer.encode_batch([request.prompt] * 2)
    cond = backend.inner.encode_text(tokens.input_ids, tokens.attention_mask)
    negative = pipe.tokenizer.encode_batch([request.negative_prompt])
    uncond = np.broadcast_to(backend.inner.encode_text(negative.input_ids, negative.attention_mask), cond.shape)
    context = np.concatenate([uncond, cond])

    def model_fn(sample, timestep):
        both = backend.inner.unet(np.concatenate([sample, sample]), np.concatenate([timestep, timestep]), context)
        return both[:2] + np.float32(request.guidance_scale) * (both[2:] - both[:2])

    noise, rngs = pipe.initial_noise(request.seeds())
    schedule = pack.manifest.schedule
    steps = list(samplers.sample(request.sampler, model_fn, noise, schedule, request.num_steps, rngs=rngs))
    reference = np.clip((backend.inner.decode(steps[-1].latent)[:, 0] + 1.0) * 0.5, 0.0, 1.0)
    np.testing.assert_array_equal(images, reference)
    assert {c.shape for c in backend.contexts} == {(4, pack.manifest.text.max_tokens, pack.manifest.text.context_dim)}


def test_record_tokens_follow_the_prompt_record(tiny_record_pack_dir: Path) -> None:
    """A pack with record tokens: context (2B, T + K, D), the last K the table rows of the parsed
    prompt's record (the negative prompt's for the unconditional half); the record alone moves the image."""

    from engine.findings.parse import parse_prompt

    pack = load_pack(tiny_record_pack_dir)
    backend = ContextBackend(OrtBackend(pack, requested="cpu"))
    pipe = Pipeline(pack, backend=backend)
    conditioning = pipe.conditioning
    assert conditioning is not None
    t, k, d = pack.manifest.text.max_tokens, conditioning.vocabulary.max_tokens, pack.manifest.text.context_dim
    prompt = "child with left pneumothorax"
    request = _request(prompt=prompt, num_steps=3)
    first = pipe.generate(request).images
    context = backend.contexts[0]
    assert context.shape == (2, t + k, d)
    np.testing.assert_array_equal(context[1, t:], conditioning.context([parse_prompt(prompt)])[0])
    assert not context[0, t:].any()  # "" as the negative prompt: K null tokens
    tokens = pipe.tokenizer.encode_batch([prompt])
    np.testing.assert_array_equal(context[1, :t], backend.inner.encode_text(tokens.input_ids, tokens.attention_mask)[0])
    # the same text with another record: the child's token given the adult's embedding
    vocabulary = conditioning.vocabulary
    table = conditioning.table.copy()
    table[vocabulary.tokens.index("age_band:child")] = table[vocabulary.tokens.index("age_band:adult")]
    pipe.conditioning = replace(conditioning, table=table)
    backend.contexts.clear()
    second = pipe.generate(request).images
    assert not np.array_equal(backend.contexts[0][1, t:], context[1, t:])
    np.testing.assert_array_equal(backend.contexts[0][:, :t], context[:, :t])
    assert np.abs(first - second).max() > 1e-6
    # and "no pneumothorax" vs "pneumothorax": other record tokens
    ids = [vocabulary.record_token_ids(parse_prompt(p)) for p in ("pneumothorax", "no pneumothorax")]
    assert not np.array_equal(*ids)


def test_record_guidance_guides_the_record_apart_from_the_text(tiny_record_pack_dir: Path) -> None:
    """Three halves in one UNet call: u (negative text and record), t (the prompt's text, the negative
    prompt's record), c; the sampler sees u + g (t - u) + r (c - t). r = g is the two-half path, bit for bit."""
    pack = load_pack(tiny_record_pack_dir)
    backend = ContextBackend(OrtBackend(pack, requested="cpu"))
    pipe = Pipeline(pack, backend=backend)
    assert pipe.conditioning is not None
    t = pack.manifest.text.max_tokens
    cond, _ = pipe.encode(["no pneumonia in a child", "left pleural effusion"])
    uncond = pipe.negative_context("cardiomegaly")
    rng = np.random.default_rng(0)
    lat = pack.manifest.latent
    sample = rng.standard_normal((2, lat.channels, lat.height, lat.width)).astype(np.float32)
    timestep = np.array([400.0, 400.0], dtype=np.float32)
    backend.calls.clear()
    backend.contexts.clear()
    guided = pipe.guided_model_fn(cond, uncond, 3.0, record_guidance=7.0)(sample, timestep)
    assert backend.calls == [("unet", (6, lat.channels, lat.height, lat.width))]  # one batched call
    text_only = backend.contexts[0][2:4]
    np.testing.assert_array_equal(text_only[:, :t], cond[:, :t])
    np.testing.assert_array_equal(text_only[:, t:], np.broadcast_to(uncond[:, t:], text_only[:, t:].shape))
    inner = backend.inner
    out_u = inner.unet(sample, timestep, np.repeat(uncond, 2, axis=0))
    out_t = inner.unet(sample, timestep, text_only)
    out_c = inner.unet(sample, timestep, cond)
    np.testing.assert_allclose(guided, out_u + 3.0 * (out_t - out_u) + 7.0 * (out_c - out_t), atol=1e-4)
    assert not np.allclose(guided, out_u + 3.0 * (out_c - out_u), atol=1e-4)
    # through a whole generation: r = g is today's image and two halves; r != g moves it
    request = _request(prompt="no pneumonia in a child", num_steps=3, guidance_scale=4.0)
    plain = pipe.generate(request).images
    backend.calls.clear()
    same = pipe.generate(replace(request, record_guidance=4.0)).images
    np.testing.assert_array_equal(same, plain)
    assert {c[1][0] for c in backend.calls if c[0] == "unet"} == {2}
    backend.calls.clear()
    stronger = pipe.generate(replace(request, record_guidance=9.0))
    assert {c[1][0] for c in backend.calls if c[0] == "unet"} == {3}
    assert stronger.request.record_guidance == 9.0
    assert np.abs(stronger.images - plain).max() > 1e-6
    # guidance 1 with a record guidance still runs the text-only half (u drops out of the formula)
    backend.calls.clear()
    pipe.generate(replace(request, guidance_scale=1.0, record_guidance=3.0))
    assert {c[1][0] for c in backend.calls if c[0] == "unet"} == {3}
