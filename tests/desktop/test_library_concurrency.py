"""The case library shared by processes: two real processes add cases while a third opens the library
again and again (each open tidies orphan images), and a fourth writer is killed in the middle of its
work. No row may lose its image and no image may be lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from desktop.library import CaseLibrary

REPO = Path(__file__).resolve().parents[2]
CASES_PER_WRITER = 60
TIME_LIMIT_S = 150.0

# Each writer adds CASES_PER_WRITER cases and prints "id image_file" for each one it was told is kept.
WRITER = """
import sys
import numpy as np
from desktop.library import CaseLibrary
from engine.pipeline import GenerationRequest, GenerationResult

root, first_seed, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with CaseLibrary(root, orphan_grace_s=0) as library:
    for seed in range(first_seed, first_seed + count):
        images = np.random.default_rng(seed).random((1, 16, 16), dtype=np.float32)
        request = GenerationRequest("Normal chest radiograph", seed=seed).validated()
        result = GenerationResult(request, images, [seed], "model-x", "f" * 64, "CPUExecutionProvider", False, 20,
                                  (), {"total_s": 0.1})
        case = library.add(result)
        print(case.id, case.image_path.name, flush=True)
"""

# The opener opens and closes the library (tidying orphans at once: no grace period) until told to stop.
OPENER = """
import sys, time
from pathlib import Path
from desktop.library import CaseLibrary

root, stop, deadline = sys.argv[1], Path(sys.argv[2]), time.monotonic() + float(sys.argv[3])
opened = 0
while not stop.exists() and time.monotonic() < deadline:
    CaseLibrary(root, orphan_grace_s=0).close()
    opened += 1
print(opened, flush=True)
"""


def _python(code: str, *args: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_two_writers_and_an_opener_never_lose_an_image(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    CaseLibrary(root).close()  # the schema exists before the race starts
    stop = tmp_path / "stop"
    start = time.monotonic()
    opener = _python(OPENER, root, stop, TIME_LIMIT_S)
    writers = [_python(WRITER, root, first, CASES_PER_WRITER) for first in (1, 10_001)]
    killed = _python(WRITER, root, 20_001, 100_000)
    try:
        # the killed writer dies after some cases, anywhere in add() (between image, row and commit)
        killed_lines = [killed.stdout.readline() for _ in range(10)]
        assert all(killed_lines), "the writer to be killed ended before its tenth case"
        killed.send_signal(signal.SIGKILL)
        killed_out, _ = killed.communicate(timeout=60)
        outputs = [writer.communicate(timeout=TIME_LIMIT_S) for writer in writers]
    finally:
        for process in (killed, *writers):
            if process.poll() is None:
                process.kill()
        stop.touch()
        opened_text, opener_errors = opener.communicate(timeout=60)
    elapsed = time.monotonic() - start

    # 1. every process ended cleanly, within the time bound, and the opener really raced the writers
    for writer, (_out, errors) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, errors
    assert opener.returncode == 0, opener_errors
    assert elapsed < TIME_LIMIT_S
    assert int(opened_text) >= 5

    assert killed.returncode == -signal.SIGKILL

    # 2. every case a writer was told is kept has its row and its image: the killed writer's too, and at
    #    most one more of its cases (committed, killed before it printed); every row has its image
    lines = [line for out, _ in outputs for line in out.splitlines()] + killed_lines + killed_out.splitlines()
    kept = {int(case_id): name for case_id, name in (line.split() for line in lines if line.strip())}
    assert len(kept) >= 2 * CASES_PER_WRITER + 10
    with CaseLibrary(root, orphan_grace_s=0) as library:  # the killed writer's orphan, if any, goes now
        rows = {case.id: case.image_path.name for case in library.search(limit=100_000)}
        files = {path.name for path in library.images_dir.iterdir()}
    assert kept.items() <= rows.items() and len(rows) - len(kept) <= 1
    missing = sorted(name for name in rows.values() if name not in files)
    assert not missing, f"{len(missing)} of {len(rows)} rows lost their image"
    assert files == set(rows.values())
