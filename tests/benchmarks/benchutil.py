"""Shared by the benchmark scripts (run as scripts: their folder is on ``sys.path``)."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident set so far, in MB: VmHWM (a fresh ``exec``'s own peak;
    ``ru_maxrss`` would carry the forking parent's), or ru_maxrss where there is no /proc."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 3, block: int = 1
) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds per call of each function, timed in alternation (A B A B ...), so that a slower
    moment of a shared machine hits both sides of a ratio alike; and each one's last result.

    With ``block`` > 1 each turn makes one untimed call first, then times ``block`` calls: the
    other library's worker threads may still be spinning when a turn starts (ONNX Runtime's and
    OpenMP's both spin a while after a call), which would bill one side for the other's idle wait.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, object] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            if block > 1:
                fn()
            start = time.perf_counter()
            for _ in range(block):
                results[name] = fn()
            times[name].append((time.perf_counter() - start) / block)
    return {name: statistics.median(t) for name, t in times.items()}, results
