"""The outbox: a folder of DICOM files waiting to go, each queued for one PACS node.

A file is removed only once that node's PACS has answered with a success (or warning) status for it, one
by one, so an interrupted send loses nothing and a resend sends only what is left. A file that is not a
complete DICOM file (cut short, not DICOM at all) is refused when it is queued, and one damaged while it
waited is moved aside to ``failed/``: it never blocks the files behind it.

Layout: ``queue/NAME.dcm`` (the files), ``failed/NAME.dcm`` (set aside) and ``outbox.sqlite3``, an index
with one row per file (its node, SOP Instance UID, arrival order, attempts, last error, failure reason).
The row is the truth: a file is queued once its row is committed, and sent or deleted once its row is
gone. So every operation costs the same whatever waits (no folder scan, no tag file per file), a group of
files costs one folder fsync and one commit, and a kill at any point leaves either the old state or the
new one plus a file no row names, which the next opening removes. SQLite (standard library) rather than a
journal of our own: it already gives atomic commits, an index on (node, UID) for replacing a copy, an
order, and locking between the processes (the app, the CLI) that share a folder.

The previous layout (``NAME.dcm`` with a ``NAME.node.json`` tag at the top of the folder, untagged files
from the version before, ``failed/`` tags with the reason, ``attempts.json``) is taken into the index when
the folder is opened; its files stay where they are.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pydicom
from pydicom.dataset import Dataset

from engine import paths
from engine.dicom.dimse import send_files
from engine.dicom.pacs import (
    CancelCallback,
    FileResult,
    PacsNode,
    ProgressCallback,
    SendReport,
    check_associations,
    check_file,
)
from engine.dicom.stow import check_stow_settings, stow_rs
from engine.fileio import atomic_write_bytes, fsync_dir

LOGGER = logging.getLogger(__name__)

Method = Literal["c-store", "stow"]
Place = Literal["", "queue", "failed"]  # where a file lies: "" is the top of the folder (the previous layout)
_FSYNC_THREADS = 8

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order (a replacement is a new arrival)
    name TEXT NOT NULL UNIQUE,             -- the file's name, in the folder its place names
    place TEXT NOT NULL,                   -- '' (previous layout), 'queue' or 'failed'
    node TEXT,                             -- NULL: queued by an earlier version for no node
    uid TEXT NOT NULL,                     -- SOP Instance UID, as it appears in the name
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_attempt TEXT,
    reason TEXT                            -- why a failed file was set aside
);
CREATE INDEX IF NOT EXISTS files_by_node_uid ON files (node, uid);
"""


class OutboxError(OSError):
    """The outbox could not keep a file (full disk, no permission)."""


def _write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """:func:`engine.fileio.atomic_write_bytes`, with a full disk or missing permission as OutboxError."""
    try:
        atomic_write_bytes(path, data, durable=durable)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutboxError(
                exc.errno,
                f"the disk is full: could not write {path.name} ({len(data) / 1e6:.1f} MB) to {path.parent}; "
                "nothing was written",
            ) from exc
        if isinstance(exc, PermissionError):
            raise OutboxError(exc.errno, f"no permission to write {path.name} in {path.parent}") from exc
        raise


def _fsync_file(path: Path) -> None:
    """Flush a file written without fsync (its folder is synced once per group by the caller)."""
    fd = os.open(path, os.O_RDWR)  # read-write: Windows' _commit refuses a read-only descriptor
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_files(files: list[Path]) -> None:
    """Flush a group's files at once: concurrent fsyncs share the filesystem's journal commits (ext4 measured
    0.24 ms a file with 8 threads against 1.2 ms one after another), where each alone waits for its own."""
    if len(files) <= 1:
        for path in files:
            _fsync_file(path)
        return
    with ThreadPoolExecutor(max_workers=min(_FSYNC_THREADS, len(files)), thread_name_prefix="outbox-fsync") as pool:
        list(pool.map(_fsync_file, files))  # list(): the first error is raised here


def _part10_bytes(dataset: Dataset) -> bytes:
    meta = getattr(dataset, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        raise ValueError("the dataset has no file meta Transfer Syntax UID: cannot write it as a DICOM file")
    if "SOPInstanceUID" not in dataset or "SOPClassUID" not in dataset:
        raise ValueError("the dataset has no SOP Class UID or SOP Instance UID")
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def _safe_uid(uid: str) -> str:
    return "".join(ch for ch in uid if ch.isdigit() or ch == ".")


@dataclass(frozen=True)
class Attempts:
    """How often the outbox has tried to send one file, and what went wrong last."""

    attempts: int
    last_error: str | None
    last_attempt: str  # ISO 8601, UTC


@dataclass
class _Group:
    """Puts written but not yet committed: one folder fsync and one commit for all of them."""

    written: list[Path] = field(default_factory=list)  # removed if the commit fails
    replaced: list[Path] = field(default_factory=list)  # older copies, removed once the commit is done


class Outbox:
    """A folder of DICOM files waiting for their PACS node, indexed by ``outbox.sqlite3`` (see the module).

    Each file is queued for one node; a send to a node takes only that node's files, oldest first. A file
    queued by an earlier version without a node is never sent until :meth:`assign` gives it one.

    One process sends from a folder at a time (sends from one ``Outbox`` object are serialised); others
    may queue, list and delete meanwhile. A file is deleted only after the PACS answered success or warning
    for it; a kill between that answer and the deletion can send that one file again, which a PACS stores
    once (same SOP Instance UID). A file that turns out unreadable or incomplete is moved to ``failed/``
    with its reason: no retry can help it.

    State changes: :meth:`put` (or many in :meth:`batch`), :meth:`done` (the PACS stored it), :meth:`fail`
    (set aside), :meth:`discard` (the user deleted it), :meth:`assign`; each costs the same whatever waits.
    """

    INDEX_NAME = "outbox.sqlite3"
    QUEUE_FOLDER = "queue"
    FAILED_FOLDER = "failed"
    GROUP_SIZE = 256  # puts per commit inside a batch: bounds how long other processes wait for the lock
    LOG_NAME = "attempts.json"  # the previous layout's attempts, migrated
    TAG_SUFFIX = ".node.json"  # the previous layout's node tags, migrated

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else paths.user_data_dir() / "outbox"
        self.queue_folder = self.folder / self.QUEUE_FOLDER
        try:
            self.queue_folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(exc.errno, f"cannot make the outbox folder {self.queue_folder}: {exc.strerror}") from exc
        self._lock = threading.Lock()  # one send at a time
        self._db_lock = threading.RLock()  # the connection: sender threads, the GUI thread
        self._group: _Group | None = None
        self._batch_depth = 0
        self._db = self._connect()
        self._recover()

    # --- the index ---------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        index = self.folder / self.INDEX_NAME
        try:
            db = sqlite3.connect(index, timeout=60, isolation_level=None, check_same_thread=False)
            # WAL: readers never wait for a send; falls back to a rollback journal where the filesystem has
            # no shared memory (a network drive). FULL: a committed put survives a power cut.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise OutboxError(errno.EIO, f"cannot open the outbox index {index}: {exc}") from exc
        return db

    def close(self) -> None:
        """Close the index (an open group is committed first); the object cannot be used afterwards."""
        with self._db_lock:
            if self._group is not None:
                self._commit_group()
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One committed change. ``durable=False`` for what may be redone after a power cut (a removal:
        the file is sent once more; attempts): the commit then skips its fsync."""
        with self._db_lock:
            if self._group is not None:
                self._commit_group()
            if not durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if not durable:
                    self._db.execute("PRAGMA synchronous=FULL")

    def _path(self, place: str, name: str) -> Path:
        return (self.folder / place / name) if place else self.folder / name

    def _place(self, path: Path) -> Place | None:
        parent = Path(path).parent
        if parent == self.folder:
            return ""
        if parent == self.queue_folder:
            return "queue"
        if parent == self.folder / self.FAILED_FOLDER:
            return "failed"
        return None

    def _row(self, path: Path) -> tuple[Any, ...] | None:
        """(id, node, reason) of the file at ``path``, or None when the outbox does not hold it."""
        place = self._place(path)
        if place is None:
            return None
        with self._db_lock:
            return self._db.execute(
                "SELECT id, node, reason FROM files WHERE name = ? AND place = ?", (Path(path).name, place)
            ).fetchone()

    def _paths(self, query: str, parameters: tuple[Any, ...] = ()) -> list[Path]:
        with self._db_lock:
            return [self._path(place, name) for place, name in self._db.execute(query, parameters)]

    # --- queueing ----------------------------------------------------------------------------------------

    def put(self, item: Dataset | str | Path, node: str) -> Path:
        """Check a dataset or DICOM file whole, and copy it into the outbox for ``node`` (a node name).

        Returns the queued file's path. Raises ValueError naming the file when it is not a complete DICOM
        Part 10 file (nothing is queued then). A file already waiting for the same node with the same SOP
        Instance UID is replaced, so it is not sent twice. Inside :meth:`batch` the file is queued when
        the block ends (or with the group of :attr:`GROUP_SIZE` it completes).
        """
        if not isinstance(node, str) or not node.strip():
            raise ValueError(f"a queued file needs the name of its PACS node, got {node!r}")
        # 1. the bytes, read and checked whole (a file cut short in its pixel data reads without error)
        if isinstance(item, Dataset):
            data, source = _part10_bytes(item), Path(str(item.get("SOPInstanceUID", "dataset")))
        else:
            source = Path(item)
            try:
                data = source.read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot read {source}: {exc.strerror or exc}") from exc
        try:
            sop_instance_uid = check_file(io.BytesIO(data), source).sop_instance_uid
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from exc
        # 2. the file and its row, in this group (a put alone is a group of one)
        with self._db_lock:
            alone = self._batch_depth == 0
            try:
                target = self._put_in_group(data, _safe_uid(sop_instance_uid), node)
            except BaseException:
                if alone and self._group is not None:
                    self._abort_group()
                raise
            if alone or len(self._group.written) >= self.GROUP_SIZE:  # type: ignore[union-attr]
                self._commit_group()
            return target

    @contextlib.contextmanager
    def batch(self) -> Iterator[Outbox]:
        """Queue many files with one folder fsync and one commit per :attr:`GROUP_SIZE` puts.

        The files put in the block are queued when it ends, also when it ends with an exception (each was
        written whole); other threads wait for the block, other processes for each group's commit.
        """
        with self._db_lock:
            self._batch_depth += 1
            try:
                yield self
            finally:
                self._batch_depth -= 1
                if self._batch_depth == 0 and self._group is not None:
                    self._commit_group()

    def _put_in_group(self, data: bytes, safe_uid: str, node: str) -> Path:
        if self._group is None:
            try:
                self._db.execute("BEGIN IMMEDIATE")  # held while writing: an opening never sweeps our file
            except sqlite3.Error as exc:
                raise OutboxError(errno.EIO, f"the outbox index in {self.folder} is unusable: {exc}") from exc
            self._group = _Group()
        group = self._group
        # a name that sorts in arrival order and is new (a put never overwrites a file another row names)
        stamp = time.time_ns()
        while (self.queue_folder / f"{stamp:020d}_{safe_uid}.dcm").exists():
            stamp += 1
        target = self.queue_folder / f"{stamp:020d}_{safe_uid}.dcm"
        _write_atomic(target, data, durable=False)  # flushed with its group, before the commit
        try:
            self._db.execute("SAVEPOINT put")  # this put's rows go together or not at all
            try:
                older = self._db.execute(
                    "SELECT id, place, name FROM files WHERE node = ? AND uid = ? AND place != 'failed'",
                    (node, safe_uid),
                ).fetchall()
                for row_id, _place, _name in older:
                    self._db.execute("DELETE FROM files WHERE id = ?", (row_id,))
                self._db.execute(
                    "INSERT INTO files (name, place, node, uid) VALUES (?, 'queue', ?, ?)",
                    (target.name, node, safe_uid),
                )
            except BaseException:
                self._db.execute("ROLLBACK TO put")
                raise
            finally:
                self._db.execute("RELEASE put")
        except BaseException as exc:
            target.unlink(missing_ok=True)
            if isinstance(exc, sqlite3.Error):
                raise OutboxError(errno.EIO, f"could not queue {target.name} in {self.folder}: {exc}") from exc
            raise
        group.written.append(target)
        group.replaced += [self._path(place, name) for _id, place, name in older]
        return target

    def _commit_group(self) -> None:
        group, self._group = self._group, None
        if group is None:
            return
        try:
            if group.written:  # the files and their names are on disk before any row names them
                _fsync_files(group.written)
                fsync_dir(self.queue_folder)
            self._db.execute("COMMIT")
        except BaseException as exc:
            self._group = group
            self._abort_group()
            if isinstance(exc, sqlite3.Error):
                full = "full" in str(exc)
                raise OutboxError(
                    errno.ENOSPC if full else errno.EIO,
                    f"{'the disk is full: ' if full else ''}could not queue {len(group.written)} file(s) in "
                    f"{self.folder} ({exc}); nothing of them was kept",
                ) from exc
            raise
        for path in group.replaced:
            with contextlib.suppress(OSError):  # a leftover is swept at the next opening
                path.unlink(missing_ok=True)

    def _abort_group(self) -> None:
        group, self._group = self._group, None
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")
        for path in group.written if group is not None else []:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    # --- state changes -----------------------------------------------------------------------------------

    def done(self, path: Path) -> None:
        """The PACS stored ``path``: out of the queue (the row first, then the file)."""
        path = Path(path)
        with self._transaction(durable=False) as db:
            db.execute("DELETE FROM files WHERE name = ? AND place != 'failed'", (path.name,))
        path.unlink(missing_ok=True)

    def fail(self, path: Path, reason: str) -> None:
        """Move a file no retry can help (unreadable, incomplete) to ``failed/`` with its reason. The file
        moves first: out of the queue whatever happens next; if it cannot move, it stays queued."""
        path = Path(path)
        aside = self.folder / self.FAILED_FOLDER / path.name
        try:
            aside.parent.mkdir(exist_ok=True)
            os.replace(path, aside)
        except FileNotFoundError:
            if not aside.exists():  # gone: nothing to keep, nothing to send
                with self._transaction(durable=False) as db:
                    db.execute("DELETE FROM files WHERE name = ? AND place != 'failed'", (path.name,))
                return
        except OSError:
            LOGGER.warning("could not move the bad file %s aside", path, exc_info=True)
            return
        try:
            with self._transaction() as db:
                db.execute("UPDATE files SET place = 'failed', reason = ? WHERE name = ?", (reason, path.name))
        except sqlite3.Error:  # the next opening finds it in failed/ and marks it so
            LOGGER.warning("moved %s aside but could not record why", path, exc_info=True)

    def assign(self, node: str, files: Iterable[Path] | None = None) -> list[Path]:
        """Queue files that belong to no node (default: all of them) for ``node``; returns those files."""
        if not isinstance(node, str) or not node.strip():
            raise ValueError(f"a queued file needs the name of its PACS node, got {node!r}")
        unassigned = self.unassigned()
        chosen = unassigned if files is None else [Path(f) for f in files if Path(f) in set(unassigned)]
        with self._transaction() as db:
            db.executemany(
                "UPDATE files SET node = ? WHERE name = ? AND node IS NULL", [(node, path.name) for path in chosen]
            )
        return chosen

    def discard(self, path: Path) -> None:
        """Delete a waiting file, or one set aside in ``failed/``, with its attempts; for a user who decided it
        should never go. ValueError when ``path`` is not a file of this outbox, or while a send from this
        object runs (it holds the queue; the caller must not wait for it)."""
        path = Path(path)
        row = self._row(path)
        if row is None:
            raise ValueError(f"{path.name} is not waiting in the outbox {self.folder}")
        if not self._lock.acquire(blocking=False):
            raise ValueError(f"{path.name}: a send is running; delete it when the send has ended")
        try:
            with self._transaction() as db:
                db.execute("DELETE FROM files WHERE id = ?", (row[0],))
            path.unlink(missing_ok=True)
        finally:
            self._lock.release()

    # --- reading -----------------------------------------------------------------------------------------

    def pending(self, node: str | None = None) -> list[Path]:
        """Files waiting to be sent, oldest first: all of them, or only those queued for ``node``."""
        if node is None:
            return self._paths("SELECT place, name FROM files WHERE place != 'failed' ORDER BY id")
        return self._paths("SELECT place, name FROM files WHERE place != 'failed' AND node = ? ORDER BY id", (node,))

    def unassigned(self) -> list[Path]:
        """Waiting files that belong to no node (queued by an earlier version): never sent by themselves."""
        return self._paths("SELECT place, name FROM files WHERE place != 'failed' AND node IS NULL ORDER BY id")

    def node_of(self, path: Path) -> str | None:
        """The node a queued (or failed) file is for; None for a file from an earlier version without one."""
        row = self._row(path)
        return row[1] if row is not None else None

    def failed(self) -> list[Path]:
        """Files moved aside because they are unreadable or incomplete (see :meth:`failure_reason`)."""
        return self._paths("SELECT place, name FROM files WHERE place = 'failed' ORDER BY name")

    def is_failed(self, path: Path) -> bool:
        """Whether ``path`` is a file set aside in ``failed/`` (no retry can send it)."""
        return self._place(path) == "failed" and self._row(path) is not None

    def failure_reason(self, path: Path) -> str:
        row = self._row(path)
        return row[2] if row is not None and isinstance(row[2], str) else "no reason recorded"

    def attempts(self) -> dict[str, Attempts]:
        """File name -> :class:`Attempts`, for files that have been tried and are still waiting."""
        with self._db_lock:
            rows = self._db.execute(
                "SELECT name, attempts, last_error, last_attempt FROM files "
                "WHERE place != 'failed' AND attempts > 0 ORDER BY id"
            ).fetchall()
        return {name: Attempts(count, error, last or "") for name, count, error, last in rows}

    # --- sending -----------------------------------------------------------------------------------------

    def send(
        self,
        node: PacsNode,
        method: Method = "c-store",
        *,
        retries: int = 3,
        backoff_s: float = 1.0,
        batch_size: int = 20,
        associations: int = 1,
        progress: ProgressCallback | None = None,
        cancel: CancelCallback | None = None,
    ) -> SendReport:
        """Send every file queued for ``node``; each is removed as soon as its success arrives.

        ``associations``: C-STORE associations (or STOW-RS requests) at once, 1 to MAX_ASSOCIATIONS; with
        more than one, ``progress`` is called from the senders' threads (one call at a time). A file found
        unreadable or incomplete is failed with its reason and moved to ``failed/``.
        """
        if method not in ("c-store", "stow"):
            raise ValueError(f"method must be 'c-store' or 'stow', got {method!r}")
        if method == "stow":
            check_stow_settings(node, batch_size)
        if retries < 0 or backoff_s < 0:
            raise ValueError("retries and backoff_s must not be negative")
        check_associations(associations)
        with self._lock:
            self._recover()  # what another process's kill left since this object opened the folder
            files = self.pending(node.name)
            errors: dict[str, str] = {}

            def on_result(result: FileResult) -> None:  # called one at a time, also with parallel senders
                if result.outcome == "failed":
                    errors[result.path.name] = result.message
                    if result.bad_file:  # no retry can mend it: out of the queue, kept for a look
                        self.fail(result.path, result.message)
                    return
                try:
                    self.done(result.path)
                except (OSError, sqlite3.Error):
                    LOGGER.warning("stored %s but could not remove it from the outbox", result.path, exc_info=True)

            report: SendReport | None = None
            send = send_files if method == "c-store" else functools.partial(stow_rs, batch_size=batch_size)
            try:
                report = send(
                    node, files, retries=retries, backoff_s=backoff_s, associations=associations,
                    progress=progress, cancel=cancel, on_result=on_result,
                )  # fmt: skip
            finally:
                now = datetime.now(UTC).isoformat(timespec="seconds")
                stop_reason = report.error if report is not None else None
                fallback = "cancelled" if cancel is not None and cancel() else "not sent"
                tried = [(errors.get(path.name) or stop_reason or fallback, now, path.name) for path in files]
                try:  # rows already gone (stored) or set aside match nothing
                    with self._transaction(durable=False) as db:
                        db.executemany(
                            "UPDATE files SET attempts = attempts + 1, last_error = ?, last_attempt = ? "
                            "WHERE name = ? AND place != 'failed'",
                            tried,
                        )
                except sqlite3.Error:  # the attempts are advice; the files themselves are what matters
                    LOGGER.warning("could not record the attempts in %s", self.folder, exc_info=True)
            return report

    # --- opening: recovery and the previous layout ---------------------------------------------------------

    def _recover(self) -> None:
        """Bring files and rows together after a kill, and take in files of the previous layout.

        Under the write lock, so no other process is between writing a file and committing its row.
        A row whose file is gone is dropped (sent, or deleted by hand); a queued row whose file is in
        ``failed/`` is marked failed (a kill inside :meth:`fail`); a file in ``queue/`` that no row names
        is a put or removal cut short and is deleted; a ``*.dcm`` at the top of the folder or in ``failed/``
        that no row names is the previous layout's and gets a row (its node and reason from its tag).
        """
        failed_folder = self.folder / self.FAILED_FOLDER
        with self._transaction() as db:
            on_disk: dict[str, set[str]] = {
                "": {p.name for p in self.folder.glob("*.dcm")},
                "queue": set(os.listdir(self.queue_folder)),
                "failed": {p.name for p in failed_folder.glob("*.dcm")} if failed_folder.is_dir() else set(),
            }
            known: dict[str, set[str]] = {"": set(), "queue": set(), "failed": set()}
            for row_id, place, name in db.execute("SELECT id, place, name FROM files").fetchall():
                if name in on_disk.get(place, set()):
                    known[place].add(name)
                elif place != "failed" and name in on_disk["failed"]:
                    db.execute("UPDATE files SET place = 'failed' WHERE id = ?", (row_id,))
                    known["failed"].add(name)
                else:
                    db.execute("DELETE FROM files WHERE id = ?", (row_id,))
            for name in on_disk["queue"] - known["queue"]:
                with contextlib.suppress(OSError):
                    (self.queue_folder / name).unlink()
            legacy = sorted(on_disk[""] - known[""]) + sorted(on_disk["failed"] - known["failed"])
            if not legacy:
                return
            log = self._previous_log()
            for name in sorted(on_disk[""] - known[""]):
                tag = self._previous_tag(self.folder / name)
                entry = log.get(name) if isinstance(log.get(name), dict) else {}
                count = entry.get("attempts", 0)
                db.execute(
                    "INSERT OR IGNORE INTO files (name, place, node, uid, attempts, last_error, last_attempt) "
                    "VALUES (?, '', ?, ?, ?, ?, ?)",
                    (name, tag.get("node"), self._uid_of_name(name), count if isinstance(count, int) else 0,
                     entry.get("last_error"), entry.get("last_attempt")),
                )  # fmt: skip
            for name in sorted(on_disk["failed"] - known["failed"]):
                tag = self._previous_tag(failed_folder / name)
                db.execute(
                    "INSERT OR IGNORE INTO files (name, place, node, uid, reason) VALUES (?, 'failed', ?, ?, ?)",
                    (name, tag.get("node"), self._uid_of_name(name), tag.get("error")),
                )
        # committed: the previous layout's tags and log are no longer read
        for folder in (self.folder, failed_folder):
            for tag_path in folder.glob(f"*{self.TAG_SUFFIX}"):
                with contextlib.suppress(OSError):
                    tag_path.unlink()
        with contextlib.suppress(OSError):
            (self.folder / self.LOG_NAME).unlink()

    @staticmethod
    def _uid_of_name(name: str) -> str:
        """The UID in a name ``{time_ns}_{uid}.dcm`` (any other name: the name itself, unique enough)."""
        stem = name.removesuffix(".dcm")
        return stem.split("_", 1)[1] if "_" in stem else stem

    def _previous_tag(self, path: Path) -> dict[str, str]:
        """A previous-layout tag's ``node`` and ``error`` (empty when untagged or unreadable)."""
        try:
            data = json.loads(path.with_name(path.stem + self.TAG_SUFFIX).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {key: value for key, value in data.items() if key in ("node", "error") and isinstance(value, str)}

    def _previous_log(self) -> dict[str, Any]:
        path = self.folder / self.LOG_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            LOGGER.warning("ignoring an unreadable outbox log %s", path, exc_info=True)
            return {}
        return data if isinstance(data, dict) else {}
