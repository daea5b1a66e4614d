"""GenerationWorker on its QThread: load once, stream steps, cancel within one step, shut down cleanly."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from desktop.worker import ModelInfo, WorkerHost
from engine.pipeline import GenerationRequest, GenerationResult, StepEvent


def thread_alive(native_id: int) -> bool:
    """Whether the OS thread still exists in this process (Linux /proc; elsewhere assume it ended)."""
    task = Path("/proc/self/task")
    return task.is_dir() and (task / str(native_id)).exists()


@pytest.fixture
def host(qtbot, tiny_pack_dir: Path):
    host = WorkerHost()
    with qtbot.waitSignal(host.model_loaded, timeout=30_000) as loaded:
        host.load_model(tiny_pack_dir)
    host.info = loaded.args[0]
    yield host
    assert host.shutdown(10_000)
    assert not host.thread.isRunning()


def test_model_loads_once_in_the_worker_with_its_facts(host) -> None:
    info: ModelInfo = host.info
    assert info.model_id == "cxr-tiny-seed0" and len(info.fingerprint) == 64
    assert info.device == "CPU" and info.image_size == (32, 32)
    assert "Model: cxr-tiny-seed0" in info.card_text


def test_generate_streams_every_step_then_the_result(qtbot, host) -> None:
    steps: list[StepEvent] = []
    host.step.connect(steps.append)
    with qtbot.waitSignal(host.finished, timeout=30_000) as done:
        host.generate(GenerationRequest("Normal chest radiograph", num_steps=6, seed=3))
    result: GenerationResult = done.args[0]
    assert [s.index for s in steps] == list(range(6))
    assert steps[-1].preview.shape == (1, 32, 32)
    assert not result.cancelled and result.images.shape == (1, 32, 32)


def test_bad_request_fails_with_a_message(qtbot, host) -> None:
    with qtbot.waitSignal(host.failed, timeout=10_000) as failed:
        host.generate(GenerationRequest("   ", num_steps=3))
    assert "empty" in failed.args[0]


def test_missing_pack_fails_with_what_to_do(qtbot, tmp_path: Path) -> None:
    host = WorkerHost()
    try:
        with qtbot.waitSignal(host.model_failed, timeout=10_000) as failed:
            host.load_model(tmp_path / "nowhere")
        assert "nowhere" in failed.args[0] and "Open" in failed.args[0]
    finally:
        assert host.shutdown(10_000)


def test_cancel_takes_effect_within_one_step(qtbot, host) -> None:
    computed = [0]  # steps the worker has finished, counted on the worker's thread
    at_cancel: list[int] = []

    def count(_event: StepEvent) -> None:
        computed[0] += 1

    def on_step(event: StepEvent) -> None:  # on the GUI thread, possibly behind the worker
        if event.index == 2:
            at_cancel.append(computed[0])
            host.cancel()

    host.worker.step.connect(count, Qt.ConnectionType.DirectConnection)  # on the worker's thread
    host.step.connect(on_step)
    with qtbot.waitSignal(host.cancelled, timeout=30_000) as cancelled:
        host.generate(GenerationRequest("Left pleural effusion", num_steps=250, seed=1))
    result: GenerationResult = cancelled.args[0]
    assert result.cancelled and result.images.shape == (1, 32, 32)
    assert at_cancel[0] <= result.steps_done <= at_cancel[0] + 1 < 250


def test_stale_cancel_does_not_spoil_the_next_run(qtbot, host) -> None:
    host.cancel()  # pressed while idle
    with qtbot.waitSignal(host.finished, timeout=30_000) as done:
        host.generate(GenerationRequest("Normal chest radiograph", num_steps=3))
    assert done.args[0].steps_done == 3


def test_shutdown_during_a_run_leaves_no_thread(qtbot, tiny_pack_dir: Path) -> None:
    before = set(threading.enumerate())
    host = WorkerHost()
    with qtbot.waitSignal(host.model_loaded, timeout=30_000):
        host.load_model(tiny_pack_dir)
    with qtbot.waitSignal(host.step, timeout=30_000):
        host.generate(GenerationRequest("Cardiomegaly", num_steps=250))
    assert host.busy
    native = host.worker.native_thread_id
    assert native is not None and thread_alive(native)
    assert host.shutdown(10_000)
    assert not host.thread.isRunning()
    qtbot.waitUntil(lambda: not thread_alive(native), timeout=2_000)  # wait() returns just before the OS thread exits
    assert [t for t in set(threading.enumerate()) - before if not isinstance(t, threading._DummyThread)] == []


def test_same_request_same_pixels(qtbot, host) -> None:
    images = []
    for _ in range(2):
        with qtbot.waitSignal(host.finished, timeout=30_000) as done:
            host.generate(GenerationRequest("Right upper lobe mass", num_steps=4, seed=11))
        images.append(done.args[0].to_uint16())
    np.testing.assert_array_equal(images[0], images[1])
