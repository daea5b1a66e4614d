"""Backends that run a pack's graphs: ONNX Runtime here (CUDA when it works, else CPU).

``Backend`` is the one interface the pipeline needs; a torch CUDA backend for machines without
onnxruntime-gpu can implement it outside ``engine`` so the packaged app stays free of torch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engine.pack import ModelPack

log = logging.getLogger(__name__)

PROVIDER_CHOICES = ("auto", "cpu", "cuda")
_ORT_FATAL = 4
_ORT_ERROR = 3


class BackendError(RuntimeError):
    """A graph could not be loaded or run; the message names the file."""


class Backend(Protocol):
    """Runs a pack's four graphs on numpy arrays (float32 in, float32 out)."""

    provider: str  # what actually runs: "CUDAExecutionProvider", "CPUExecutionProvider", "torch-cuda", ...

    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(B, T) int64 x2 -> context (B, T, D) float32, padded positions zero."""
        ...

    def unet(self, sample: np.ndarray, timestep: np.ndarray, context: np.ndarray) -> np.ndarray:
        """(B, C, h, w), (B,), (B, T, D) -> model output (B, C, h, w): epsilon or v. T is the text's
        tokens, plus K record tokens for a pack with record conditioning (``engine.conditioning``)."""
        ...

    def decode(self, latent: np.ndarray) -> np.ndarray:
        """Diffusion-space latent (B, C, h, w) -> image (B, 1, H, W), about [-1, 1]."""
        ...

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        """Image (B, 1, H, W) in [-1, 1] -> diffusion-space latent mean (B, C, h, w)."""
        ...


def cuda_runtime_available() -> bool:
    """True when onnxruntime lists CUDA; whether its libraries load is only known per session."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@dataclass
class OrtBackend:
    """ONNX Runtime sessions for one pack.

    ``provider``: "auto" tries CUDA and falls back to the CPU; "cuda" requires CUDA; "cpu".
    onnxruntime-gpu without CUDA 13/cuDNN 9 logs a loud error and silently runs on the CPU:
    the attempt is made with ORT's logger muted, and the provider actually used is read back
    from the session (``session.get_providers()``), never assumed.
    """

    pack: ModelPack
    requested: str = "auto"
    intra_op_threads: int = 0  # 0: ORT's default (one per physical core)

    def __post_init__(self) -> None:
        if self.requested not in PROVIDER_CHOICES:
            raise ValueError(f"provider must be one of {', '.join(PROVIDER_CHOICES)}, not {self.requested!r}")
        import onnxruntime as ort

        self._ort = ort
        self.provider = "CPUExecutionProvider"
        self._sessions: dict[str, object] = {}
        want_cuda = self.requested in ("auto", "cuda") and cuda_runtime_available()
        if self.requested == "cuda" and not want_cuda:
            raise BackendError("CUDA was requested but this onnxruntime has no CUDA provider")
        self._providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if want_cuda else ["CPUExecutionProvider"]
        # The UNet goes first: it decides the provider for the rest.
        for name in ("unet.onnx", "text_encoder.onnx", "vae_decoder.onnx"):
            self._session(name)
        if self.pack.manifest.precision == "fp16" and self.provider == "CPUExecutionProvider":
            log.warning("%s is an fp16 pack (made for CUDA); on the CPU an fp32 pack is faster", self.pack.root)
        if self.requested == "cuda" and self.provider != "CUDAExecutionProvider":
            raise BackendError(
                "CUDA was requested but its libraries did not load (onnxruntime-gpu 1.31 needs "
                "CUDA 13 and cuDNN 9); use --provider cpu or install them"
            )

    def _session_options(self) -> object:
        options = self._ort.SessionOptions()
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_mem_pattern = True
        options.log_severity_level = _ORT_ERROR
        if self.intra_op_threads:
            options.intra_op_num_threads = self.intra_op_threads
        return options

    def _session(self, name: str) -> object:
        if name in self._sessions:
            return self._sessions[name]
        path = self.pack.path(name)
        muted = "CUDAExecutionProvider" in self._providers
        if muted:
            self._ort.set_default_logger_severity(_ORT_FATAL)
        try:
            session = self._ort.InferenceSession(
                os.fspath(path), sess_options=self._session_options(), providers=self._providers
            )
        except Exception as exc:  # ORT raises its own exception types: name the file
            raise BackendError(f"{path}: onnxruntime cannot load it: {exc}") from None
        finally:
            if muted:
                self._ort.set_default_logger_severity(_ORT_ERROR)
        used = session.get_providers()[0]
        if used != "CUDAExecutionProvider" and "CUDAExecutionProvider" in self._providers:
            log.debug("CUDA libraries are not usable here; running on the CPU")  # the caller reports the provider
            self._providers = ["CPUExecutionProvider"]
        self.provider = used if name == "unet.onnx" else self.provider
        self._sessions[name] = session
        return session

    def _run(self, name: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        session = self._session(name)
        try:
            return session.run(None, feeds)[0]
        except Exception as exc:
            raise BackendError(f"{self.pack.path(name)}: run failed: {exc}") from None

    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._run("text_encoder.onnx", {"input_ids": input_ids, "attention_mask": attention_mask})

    def unet(self, sample: np.ndarray, timestep: np.ndarray, context: np.ndarray) -> np.ndarray:
        return self._run("unet.onnx", self._unet_feeds(sample, timestep, context))

    def unet_attention(
        self, sample: np.ndarray, timestep: np.ndarray, context: np.ndarray
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """:meth:`unet` and the pack's attention maps (model.json ``attention``): one (B, h_l * w_l, T)
        array per cross-attention layer. The same session runs the same nodes as :meth:`unet`, so the
        model output is bit-identical. BackendError for a pack exported without maps."""
        attention = self.pack.manifest.attention
        if attention is None:
            raise BackendError(f"{self.pack.root}: this pack has no attention-map outputs")
        session = self._session("unet.onnx")
        feeds = self._unet_feeds(sample, timestep, context)
        try:
            output, *maps = session.run(["model_output", *attention.outputs], feeds)
        except Exception as exc:
            raise BackendError(f"{self.pack.path('unet.onnx')}: run failed: {exc}") from None
        return output, maps

    @staticmethod
    def _unet_feeds(sample: np.ndarray, timestep: np.ndarray, context: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "sample": np.ascontiguousarray(sample, dtype=np.float32),
            "timestep": np.ascontiguousarray(timestep, dtype=np.float32),
            "context": np.ascontiguousarray(context, dtype=np.float32),
        }

    def decode(self, latent: np.ndarray) -> np.ndarray:
        return self._run("vae_decoder.onnx", {"latent": np.ascontiguousarray(latent, dtype=np.float32)})

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        return self._run("vae_encoder.onnx", {"image": np.ascontiguousarray(image, dtype=np.float32)})


# --------------------------------------------------------------------------- other backends

BACKEND_GROUP = "cxr_studio.backends"
DEFAULT_BACKEND = "onnxruntime"


def backend_names() -> list[str]:
    """``onnxruntime`` and every backend installed under the entry-point group ``cxr_studio.backends``
    (the torch backend comes with the ``training`` extra; the packaged app has none)."""
    from importlib.metadata import entry_points

    return [DEFAULT_BACKEND, *sorted(e.name for e in entry_points(group=BACKEND_GROUP))]


def parse_backend_options(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` -> dict; BackendError names an item without ``=`` or a repeated key."""
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BackendError(f"backend option {item!r}: expected KEY=VALUE")
        if key.strip() in options:
            raise BackendError(f"backend option {key.strip()!r} given twice")
        options[key.strip()] = value.strip()
    return options


def make_backend(pack: ModelPack, name: str = DEFAULT_BACKEND, options: dict[str, str] | None = None,
                 *, provider: str = "auto") -> Backend:  # fmt: skip
    """The backend ``name`` for ``pack``: ONNX Runtime on ``provider``, or an installed plugin
    (its factory ``(pack, options) -> Backend``). BackendError for an unknown name or bad options."""
    options = dict(options or {})
    if name == DEFAULT_BACKEND:
        if options:
            raise BackendError(f"the onnxruntime backend takes no backend options (got {', '.join(options)})")
        return OrtBackend(pack, requested=provider)
    from importlib.metadata import entry_points

    found = [e for e in entry_points(group=BACKEND_GROUP) if e.name == name]
    if not found:
        raise BackendError(f"unknown backend {name!r}: installed are {', '.join(backend_names())}")
    try:
        factory = found[0].load()
    except ImportError as exc:
        raise BackendError(f"backend {name!r} cannot be loaded: {exc}") from None
    return factory(pack, options)
