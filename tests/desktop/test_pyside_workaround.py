"""The guard against PySide6 6.12 dropping references to None/True on Python 3.11 (desktop/_none_refcount.py)."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal

import desktop
from desktop._none_refcount import HEADROOM


class Emitter(QObject):
    ping = Signal(object)


def test_singletons_survive_many_signals_and_void_calls() -> None:
    if desktop.SINGLETONS_PROTECTED:
        assert sys.getrefcount(None) > HEADROOM // 2 and sys.getrefcount(True) > HEADROOM // 2
    emitter = Emitter()
    emitter.ping.connect(lambda _value: None)
    for _ in range(20_000):  # more than True's own reference count on a fresh Python 3.11
        emitter.ping.emit(1)
        emitter.setObjectName("x")
    assert sys.getrefcount(True) > 100 and sys.getrefcount(None) > 100
