"""Work around PySide6 6.12 dropping references to None and True on Python 3.11.

PySide6-Essentials 6.12.0 (wheel tag cp310-abi3) returns ``None`` from methods that return void
(``QWidget.update()``, ``QLabel.setText()``, ...) and ``True`` from ``Signal.emit()`` without taking a
reference. From Python 3.12 these objects are immortal and that is harmless; on 3.11 every call
lowers their reference count by one, and after some thousands of signals or tens of thousands of
calls (a long generation, a few minutes of dragging window/level) CPython aborts with "Fatal
Python error: none_dealloc" / "bool_dealloc". The fix belongs in PySide6 (or in requiring Python
>= 3.12); until then, when the leak is measured here, the counts of None, True and False are
raised far out of reach. These objects are never freed anyway, which is exactly what Python 3.12
does for every interpreter.
"""

from __future__ import annotations

import sys

PROBE_CALLS = 64
HEADROOM = 1 << 40  # ~10**12 leaked references before it could matter


def leaked_singletons() -> list[object]:
    """The singletons (None, True) that PySide6 calls drop references to in this interpreter."""
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return []
    from PySide6.QtCore import QObject, Signal

    class Probe(QObject):
        ping = Signal()

    probe = Probe()
    leaked = []
    before = sys.getrefcount(None)
    for _ in range(PROBE_CALLS):
        probe.setObjectName("probe")  # returns void
    if sys.getrefcount(None) <= before - PROBE_CALLS // 2:
        leaked.append(None)
    before = sys.getrefcount(True)
    for _ in range(PROBE_CALLS):
        probe.ping.emit()  # returns a bool
    if sys.getrefcount(True) <= before - PROBE_CALLS // 2:
        leaked.append(True)
    return leaked


def protect_singletons() -> bool:
    """Raise the reference counts of None, True and False (CPython < 3.12) when PySide6 leaks them."""
    if not leaked_singletons():
        return False
    import ctypes

    for singleton in (None, True, False):
        # CPython's PyObject starts with ob_refcnt (Py_ssize_t); id() is the object's address.
        ctypes.c_ssize_t.from_address(id(singleton)).value += HEADROOM
    return True
