"""The outbox's index: queueing costs the same with 10 or 10,000 files waiting, a kill at any point loses
nothing and duplicates nothing, and a folder in the previous layout (tags beside the files) still works.

Real files on disk, a real SQLite index, real forked processes killed with ``os._exit`` at every file
operation, and a real dcmtk storescp for the legacy folder's send.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from engine.dicom.outbox import Outbox
from engine.dicom.pacs import PacsNode, check_file
from tests.engine.test_pacs import make_sc
from tests.pacs_servers import LOOPBACK, StoreScp, storescp_server  # noqa: F401 (fixture)

KILLED = 137  # the child's exit status when the fault hook killed it


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


class _Counter:
    """Counts calls to the wrapped functions; refuses folder listings when ``no_listing`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fsync_calls: list[int] = []  # appended to from the fsync threads
        self.listings: list[str] = []
        self.no_listing = False
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            self.fsync_calls.append(fd)
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        for owner, name in ((os, "scandir"), (os, "listdir"), (pathlib.Path, "glob"), (pathlib.Path, "iterdir")):
            monkeypatch.setattr(owner, name, self._listing(getattr(owner, name), name))

    def _listing(self, real: Callable[..., Any], name: str) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self.no_listing:
                self.listings.append(f"{name}{args}")
            return real(*args, **kwargs)

        return wrapped


def test_queueing_lists_no_folder_and_syncs_once_per_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outbox = Outbox(tmp_path / "outbox")
    with outbox.batch():
        for index in range(40):
            outbox.put(make_sc(index, seed=60), "A")
    counter = _Counter(monkeypatch)
    counter.no_listing = True

    one = make_sc(100, seed=60)
    outbox.put(one, "A")
    assert counter.listings == [], "a put listed the outbox folder: its cost grows with the files waiting"
    assert len(counter.fsync_calls) <= 2, f"one put: the file and its folder, got {counter.fsync_calls}"

    counter.fsync_calls.clear()
    group = [make_sc(200 + index, seed=60) for index in range(30)]
    with outbox.batch():
        for ds in group:
            outbox.put(ds, "B")
    assert counter.listings == []
    assert len(counter.fsync_calls) == 30 + 1, f"a group: each file and its folder once, got {counter.fsync_calls}"

    again = outbox.put(one, "A")  # the same instance for the same node replaces its older copy
    counter.no_listing = False
    assert [_uid(path) for path in outbox.pending("B")] == [str(ds.SOPInstanceUID) for ds in group]
    waiting_a = outbox.pending("A")
    assert len(waiting_a) == 41 and waiting_a[-1] == again, "oldest first; the replacement goes last"
    assert [_uid(path) for path in waiting_a].count(str(one.SOPInstanceUID)) == 1


def test_a_group_is_queued_when_its_block_ends_and_kept_when_the_block_raises(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    with pytest.raises(KeyboardInterrupt), outbox.batch():
        first = outbox.put(make_sc(0, seed=61), "A")
        (tmp_path / "notes.txt").write_text("not DICOM")
        with pytest.raises(ValueError, match="not a readable DICOM Part 10 file"):
            outbox.put(tmp_path / "notes.txt", "A")
        raise KeyboardInterrupt  # the user stops a long queueing: what was written whole stays queued
    assert Outbox(tmp_path / "outbox").pending() == [first]


# ---------------------------------------------------------------------------------------------------------
# A kill at any point


def _script(outbox: Outbox, datasets: list[Dataset], say: Callable[[str, str], None]) -> None:
    """Every kind of state change once: a group, a single put, a replacement, done, fail, discard. Says
    "queued" once a put returned, "X-start" before a removal (its instance may then be either way)."""
    with outbox.batch():
        for ds in datasets[:4]:
            outbox.put(ds, "A")
    for ds in datasets[:4]:
        say("queued", ds.SOPInstanceUID)
    outbox.put(datasets[4], "A")
    say("queued", datasets[4].SOPInstanceUID)
    outbox.put(datasets[0], "A")  # a newer copy of a queued instance
    say("queued", datasets[0].SOPInstanceUID)
    by_uid = {_uid(path): path for path in outbox.pending("A")}
    say("done-start", datasets[1].SOPInstanceUID)
    outbox.done(by_uid[str(datasets[1].SOPInstanceUID)])
    say("done", datasets[1].SOPInstanceUID)
    say("fail-start", datasets[2].SOPInstanceUID)
    outbox.fail(by_uid[str(datasets[2].SOPInstanceUID)], "the pixel data is short")
    say("failed", datasets[2].SOPInstanceUID)
    say("discard-start", datasets[3].SOPInstanceUID)
    outbox.discard(by_uid[str(datasets[3].SOPInstanceUID)])
    say("discarded", datasets[3].SOPInstanceUID)


def _run_killed_at(folder: Path, datasets: list[Dataset], kill_at: int, log: Path) -> tuple[int, list[str]]:
    """Run :func:`_script` in a forked child that dies (``os._exit``, no clean-up) at file operation ``kill_at``."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            real_write, calls = os.write, [0]
            report = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)

            def say(what: str, uid: str) -> None:
                real_write(report, f"{what} {uid}\n".encode())

            def killing(real: Callable[..., Any]) -> Callable[..., Any]:
                def wrapped(*args: Any, **kwargs: Any) -> Any:
                    calls[0] += 1
                    if calls[0] == kill_at:
                        os._exit(KILLED)
                    return real(*args, **kwargs)

                return wrapped

            for name in ("write", "fsync", "replace", "rename", "unlink", "mkdir"):
                setattr(os, name, killing(getattr(os, name)))
            _script(Outbox(folder), datasets, say)
            say("calls", str(calls[0]))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), log.read_text().splitlines()


def _check_after_kill(folder: Path, datasets: list[Dataset], said: list[str], where: str) -> None:
    outbox = Outbox(folder)  # opening it recovers from whatever the kill left
    try:
        events = [line.split(" ", 1) for line in said]
        state: dict[str, str] = {}
        for what, uid in events:
            state[uid] = what
        waiting = [_uid(path) for path in outbox.pending("A")]
        assert len(waiting) == len(set(waiting)), f"{where}: an instance waits twice: {waiting}"
        assert set(waiting) <= {str(ds.SOPInstanceUID) for ds in datasets}
        for uid, what in state.items():
            if what == "queued":
                assert uid in waiting, f"{where}: a queued instance was lost"
            if what in ("done", "discarded", "failed"):
                assert uid not in waiting, f"{where}: an instance {what} is waiting again"
        failed = [_uid(path) for path in outbox.failed()]
        if state.get(str(datasets[2].SOPInstanceUID)) == "failed":
            assert failed == [str(datasets[2].SOPInstanceUID)], where
            assert outbox.failure_reason(outbox.failed()[0]) == "the pixel data is short", where
        for path in outbox.pending():  # each waiting file is whole
            check_file(path, path)
        queue = folder / Outbox.QUEUE_FOLDER
        assert sorted(queue.iterdir()) == sorted(p for p in outbox.pending() if p.parent == queue), (
            f"{where}: files left in the queue folder that nothing will send or remove"
        )
    finally:
        outbox.close()


def test_a_kill_at_any_file_operation_loses_nothing_and_queues_nothing_twice(tmp_path: Path) -> None:
    datasets = [make_sc(index, seed=62) for index in range(5)]
    code, said = _run_killed_at(tmp_path / "whole", datasets, 0, tmp_path / "whole.log")
    assert code == 0 and said[-1].startswith("calls "), said
    total = int(said[-1].split()[1])
    assert total > 20, said
    for kill_at in range(1, total + 1):
        folder = tmp_path / f"killed-{kill_at}"
        code, said = _run_killed_at(folder, datasets, kill_at, tmp_path / f"killed-{kill_at}.log")
        assert code == KILLED, (kill_at, code, said)
        _check_after_kill(folder, datasets, said, f"killed at operation {kill_at} of {total}")


# ---------------------------------------------------------------------------------------------------------
# The previous layout


def _previous_layout(folder: Path) -> dict[str, Path]:
    """An outbox as the previous version left it: ``NAME.dcm`` beside ``NAME.node.json``, an untagged file
    (older still), ``failed/`` with its reason in the tag, and ``attempts.json``."""
    folder.mkdir(parents=True)
    files: dict[str, Path] = {}
    for key, node, index in (("a1", "A", 0), ("none", None, 1), ("a2", "A", 2), ("b", "B", 3)):
        ds = make_sc(index, seed=63)
        path = folder / f"{time.time_ns():020d}_{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        if node is not None:
            path.with_name(path.stem + ".node.json").write_text(json.dumps({"node": node}))
        files[key] = path
    (folder / "failed").mkdir()
    bad = make_sc(4, seed=63)
    files["bad"] = folder / "failed" / f"{time.time_ns():020d}_{bad.SOPInstanceUID}.dcm"
    bad.save_as(files["bad"], enforce_file_format=True)
    files["bad"].with_name(files["bad"].stem + ".node.json").write_text(json.dumps({"node": "A", "error": "short"}))
    (folder / "attempts.json").write_text(json.dumps({files["a1"].name: {
        "attempts": 2, "last_error": "connection refused", "last_attempt": "2026-12-01T10:00:00+00:00"}}))  # fmt: skip
    return files


def test_a_folder_in_the_previous_layout_is_listed_retried_deleted_and_sent(
    storescp_server: StoreScp,  # noqa: F811
    tmp_path: Path,
) -> None:
    folder = tmp_path / "outbox"
    old = _previous_layout(folder)
    outbox = Outbox(folder)

    assert outbox.pending() == [old["a1"], old["none"], old["a2"], old["b"]], "oldest first, as before"
    assert outbox.pending("A") == [old["a1"], old["a2"]] and outbox.unassigned() == [old["none"]]
    assert outbox.node_of(old["b"]) == "B" and outbox.node_of(old["none"]) is None
    assert outbox.failed() == [old["bad"]] and outbox.failure_reason(old["bad"]) == "short"
    assert outbox.node_of(old["bad"]) == "A" and outbox.is_failed(old["bad"]) and not outbox.is_failed(old["a1"])
    tried = outbox.attempts()
    assert list(tried) == [old["a1"].name] and tried[old["a1"].name].attempts == 2
    assert not list(folder.rglob("*.node.json")) and not (folder / "attempts.json").exists(), "migrated once"
    assert Outbox(folder).pending() == outbox.pending(), "a second opening reads the same"

    outbox.discard(old["b"])
    assert not old["b"].exists() and outbox.pending("B") == []
    newer = outbox.put(old["a2"], "A")  # the same instance queued again replaces the old-layout copy
    assert not old["a2"].exists() and outbox.pending("A") == [old["a1"], newer]
    assert outbox.assign("A") == [old["none"]]

    expected = {_uid(old["a1"]), _uid(old["none"]), _uid(newer)}
    node = PacsNode("A", LOOPBACK, storescp_server.port, storescp_server.aet, connection_timeout_s=5)
    report = outbox.send(node, retries=0)
    assert report.ok and report.sent == 3, report.summary()
    assert expected <= {_uid(path) for path in storescp_server.files()}
    assert outbox.pending() == [] and outbox.attempts() == {}
    assert not old["a1"].exists() and not old["none"].exists() and not newer.exists()
    outbox.discard(old["bad"])
    assert outbox.failed() == [] and not old["bad"].exists()
