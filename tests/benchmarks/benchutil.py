"""Shared by the benchmark scripts (run as scripts: their folder is on ``sys.path``)."""

from __future__ import annotations

import resource
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
