"""The engine on a QThread: one model pack loaded once, generations streamed back as signals.

In the napari/superqt manner the engine knows nothing of Qt: :class:`GenerationWorker` is a
QObject moved to its own QThread that loops over ``Pipeline.iter_steps`` and emits one signal per
event. The GUI talks to it through :class:`WorkerHost`, which owns the thread:

    host = WorkerHost()
    host.worker.step.connect(show_preview)          # StepEvent, once per denoising step
    host.worker.finished.connect(show_result)       # GenerationResult
    host.load_model(path)                           # -> model_loaded(ModelInfo) / model_failed(str)
    host.generate(request)                          # -> started, step..., finished / cancelled / failed
    host.cancel()                                   # effective within one step
    host.shutdown()                                 # cancel, quit, wait: no thread left running

Cancel bumps a counter from the GUI thread that the pipeline checks between steps (it never waits
for the worker's event loop). Each request remembers the counter's value when it was submitted, so
a Cancel pressed while idle does not spoil the next run, and a request cancelled before the worker
picked it up still ends with ``cancelled`` (after its first step) rather than with silence.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from engine.attention import AttentionError, require_attention
from engine.checker import Checker, CheckerError
from engine.pack import ModelPack, PackError, load_pack
from engine.pipeline import GenerationRequest, GenerationResult, Pipeline, RequestError, StepEvent
from engine.runtime import BackendError
from engine.text import PromptError

log = logging.getLogger(__name__)

RELAYED_SIGNALS = (
    "model_loading",
    "model_loaded",
    "model_failed",
    "started",
    "step",
    "checked",
    "finished",
    "cancelled",
    "failed",
)
SHUTDOWN_WAIT_MS = 60_000  # model loading cannot be interrupted; a generation stops within one step


@dataclass(frozen=True)
class ModelInfo:
    """What the window shows about the loaded pack (plain data, safe to pass between threads)."""

    path: Path
    model_id: str
    fingerprint: str
    provider: str  # what ONNX Runtime actually runs on, e.g. "CPUExecutionProvider"
    precision: str
    image_size: tuple[int, int]  # (height, width)
    defaults: dict[str, Any]
    card: dict[str, Any] = field(default_factory=dict)
    card_text: str = ""
    load_s: float = 0.0
    has_checker: bool = False  # the pack ships a finding checker: every generation is checked
    has_attention: bool = False  # the pack's UNet returns attention maps: every generation gets finding maps

    @property
    def device(self) -> str:
        """CPU or CUDA, in the words of the status bar."""
        if "CUDA" in self.provider.upper():
            return "CUDA"
        if "CPU" in self.provider.upper():
            return "CPU"
        return self.provider

    @classmethod
    def from_pipeline(
        cls,
        pack: ModelPack,
        pipeline: Pipeline,
        load_s: float,
        *,
        has_checker: bool = False,
        has_attention: bool = False,
    ) -> ModelInfo:
        from engine.pack import card_text

        m = pack.manifest
        return cls(
            path=pack.root,
            model_id=pack.model_id,
            fingerprint=pack.fingerprint,
            provider=pipeline.provider,
            precision=m.precision,
            image_size=(m.image.height, m.image.width),
            defaults={
                "num_steps": m.defaults.num_steps,
                "guidance_scale": m.defaults.guidance_scale,
                "sampler": m.defaults.sampler,
            },
            card=dict(pack.card),
            card_text=card_text(m, pack.root, pack.fingerprint),
            load_s=load_s,
            has_checker=has_checker,
            has_attention=has_attention,
        )


def _attention_available(pack: ModelPack, pipeline: Pipeline) -> bool:
    """True when the pack has attention-map outputs and the backend can return them."""
    try:
        require_attention(pack, pipeline.backend)
    except AttentionError:
        return False
    return True


class GenerationWorker(QObject):
    """Loads a pack and runs generations; every public slot runs on the worker's thread.

    Signals carry engine objects (StepEvent, GenerationResult) unchanged; their arrays are not
    touched again by the worker once emitted, so the GUI may keep them.
    """

    model_loading = Signal(str)  # folder being loaded
    model_loaded = Signal(object)  # ModelInfo
    model_failed = Signal(str)  # what went wrong and what to do
    started = Signal(object)  # GenerationRequest (validated)
    step = Signal(object)  # StepEvent
    checked = Signal(object)  # list[ImageCheck] (one per image) or None (no checker); just before finished
    finished = Signal(object)  # GenerationResult, complete
    cancelled = Signal(object)  # GenerationResult, stopped early (images = last preview)
    failed = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self._cancel_epoch = 0  # bumped by cancel(); an int store is atomic under the GIL
        self._pipeline: Pipeline | None = None
        self._checker: Checker | None = None
        self._attention = False
        self.busy = threading.Event()  # set while a slot is loading or generating
        self.native_thread_id: int | None = None  # the OS thread the slots ran on (for tests, logs)

    # called from any thread
    def cancel(self) -> None:
        self._cancel_epoch += 1

    @property
    def cancel_epoch(self) -> int:
        return self._cancel_epoch

    @property
    def pipeline(self) -> Pipeline | None:
        return self._pipeline

    @Slot(str, str)
    def load_model(self, path: str, provider: str = "auto") -> None:
        self.busy.set()
        self.native_thread_id = threading.get_native_id()
        try:
            self.model_loading.emit(path)
            started = time.perf_counter()
            try:
                pack = load_pack(path)
                pipeline = Pipeline(pack, provider=provider)
                checker = Checker(pack) if pack.manifest.checker is not None else None
                attention = _attention_available(pack, pipeline)
            except CheckerError as exc:  # a pack naming a checker it cannot run is damaged: say so, load nothing
                self.model_failed.emit(f"{exc}\n\nOpen a different model pack folder (File > Open model pack).")
                return
            except PackError as exc:
                self.model_failed.emit(f"{exc}\n\nOpen a different model pack folder (File > Open model pack).")
                return
            except BackendError as exc:
                self.model_failed.emit(f"{exc}\n\nTry another provider or a different model pack.")
                return
            except Exception as exc:  # anything else from ORT or the tokenizer: say it, never die silently
                log.exception("loading %s failed", path)
                self.model_failed.emit(f"{path}: the model could not be loaded: {exc}")
                return
            self._pipeline = pipeline
            self._checker = checker
            self._attention = attention
            info = ModelInfo.from_pipeline(
                pack, pipeline, time.perf_counter() - started, has_checker=checker is not None, has_attention=attention
            )
            self.model_loaded.emit(info)
        finally:
            self.busy.clear()

    @Slot(object, int)
    def generate(self, request: GenerationRequest, epoch: int) -> None:
        """Run one request to the end (or to a cancel after ``epoch``), emitting a signal per event."""
        self.busy.set()
        try:
            self._generate(request, epoch)
        finally:
            self.busy.clear()

    def _generate(self, request: GenerationRequest, epoch: int) -> None:
        if self._pipeline is None:
            self.failed.emit("No model is loaded: open a model pack first (File > Open model pack).")
            return
        try:
            request = request.validated()
        except (RequestError, PromptError) as exc:
            self.failed.emit(str(exc))
            return
        self.started.emit(request)
        try:
            cancel = lambda: self._cancel_epoch != epoch  # noqa: E731
            for event in self._pipeline.iter_steps(request, cancel=cancel, attention=self._attention):
                if isinstance(event, StepEvent):
                    self.step.emit(event)
                elif isinstance(event, GenerationResult):
                    if not event.cancelled:
                        # scored here, off the GUI thread: the window gets the verdict before the result
                        checker = self._checker
                        self.checked.emit(checker.check(request.prompt, event.images) if checker else None)
                    (self.cancelled if event.cancelled else self.finished).emit(event)
        except (RequestError, PromptError) as exc:
            self.failed.emit(str(exc))
        except BackendError as exc:
            self.failed.emit(f"{exc}\n\nThe model pack may be damaged: reload it or open another.")
        except Exception as exc:
            log.exception("generation failed")
            self.failed.emit(f"Generation failed: {exc}")


class WorkerHost(QObject):
    """Owns the worker's QThread; the only object the GUI needs to drive generation.

    It repeats the worker's signals on the GUI thread (queued signal-to-signal connections), so
    slots connected here always run in the GUI thread, whatever their connection type.
    """

    model_loading = Signal(str)
    model_loaded = Signal(object)
    model_failed = Signal(str)
    started = Signal(object)
    step = Signal(object)
    checked = Signal(object)
    finished = Signal(object)
    cancelled = Signal(object)
    failed = Signal(str)

    _load_requested = Signal(str, str)
    _generate_requested = Signal(object, int)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName("cxr-generation")
        self.worker = GenerationWorker()
        self.worker.moveToThread(self.thread)
        self._load_requested.connect(self.worker.load_model)
        self._generate_requested.connect(self.worker.generate)
        for name in RELAYED_SIGNALS:
            getattr(self.worker, name).connect(getattr(self, name), Qt.ConnectionType.QueuedConnection)
        self.thread.finished.connect(self.worker.deleteLater)
        self.thread.start()
        self._shut_down = False

    def load_model(self, path: str | Path, provider: str = "auto") -> None:
        self._load_requested.emit(str(path), provider)

    def generate(self, request: GenerationRequest) -> None:
        self._generate_requested.emit(request, self.worker.cancel_epoch)

    def cancel(self) -> None:
        self.worker.cancel()

    @property
    def busy(self) -> bool:
        return self.worker.busy.is_set()

    def is_running(self) -> bool:
        return self.thread.isRunning()

    def shutdown(self, wait_ms: int = SHUTDOWN_WAIT_MS) -> bool:
        """Cancel any run, stop the thread's event loop and wait for it; True when it has ended."""
        if self._shut_down:
            return not self.thread.isRunning()
        self._shut_down = True
        self.worker.cancel()
        self.thread.quit()
        ended = self.thread.wait(wait_ms)
        if not ended:
            log.error("the generation thread did not stop within %d ms", wait_ms)
        return ended
