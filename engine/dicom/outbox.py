"""The outbox: a folder of DICOM files waiting to go, each queued for one PACS node.

A file is removed only once that node's PACS has answered with a success (or warning) status for it, one
by one, so an interrupted send loses nothing and a resend sends only what is left. A file that is not a
complete DICOM file (cut short, not DICOM at all) is refused when it is queued, and one damaged while it
waited is moved aside to ``failed/``: it never blocks the files behind it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
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
from engine.fileio import atomic_write_bytes

LOGGER = logging.getLogger(__name__)

Method = Literal["c-store", "stow"]


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


def _part10_bytes(dataset: Dataset) -> bytes:
    meta = getattr(dataset, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        raise ValueError("the dataset has no file meta Transfer Syntax UID: cannot write it as a DICOM file")
    if "SOPInstanceUID" not in dataset or "SOPClassUID" not in dataset:
        raise ValueError("the dataset has no SOP Class UID or SOP Instance UID")
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class Attempts:
    """How often the outbox has tried to send one file, and what went wrong last."""

    attempts: int
    last_error: str | None
    last_attempt: str  # ISO 8601, UTC


class Outbox:
    """A folder of DICOM files waiting for their PACS node, with a JSON log of the attempts (``attempts.json``).

    Each file is queued for one node: ``NAME.dcm`` has a tag ``NAME.node.json`` that names it, written
    before the file (a crash between the two leaves a tag without a file, which nothing reads). A send
    to a node takes only that node's files. A file without a tag was queued by an earlier version, for
    whichever node was used next: it is never sent until :meth:`assign` gives it a node.

    One process sends from a folder at a time (sends from one ``Outbox`` object are serialised). A file
    is deleted only after the PACS answered success or warning for it; a crash between that answer and
    the deletion can send that one file again, which a PACS stores once (same SOP Instance UID). A file
    that turns out unreadable or incomplete is moved to ``failed/`` with its reason: no retry can help it.
    """

    LOG_NAME = "attempts.json"
    FAILED_FOLDER = "failed"
    TAG_SUFFIX = ".node.json"

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else paths.user_data_dir() / "outbox"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def put(self, item: Dataset | str | Path, node: str) -> Path:
        """Check a dataset or DICOM file whole, and copy it into the outbox for ``node`` (a node name).

        Returns the queued file's path. Raises ValueError naming the file when it is not a complete DICOM
        Part 10 file (nothing is queued then). A file already waiting for the same node with the same SOP
        Instance UID is replaced, so it is not sent twice.
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
        # 2. its node's tag, then the file, each atomically, under a name that sorts in arrival order
        safe_uid = "".join(ch for ch in sop_instance_uid if ch.isdigit() or ch == ".")
        target = self.folder / f"{time.time_ns():020d}_{safe_uid}.dcm"
        tag = self._tag(target)
        _write_atomic(tag, json.dumps({"node": node}).encode("utf-8"))
        try:
            _write_atomic(target, data)
        except BaseException:
            tag.unlink(missing_ok=True)
            raise
        # 3. drop an older copy of the same instance for the same node
        for older in self.folder.glob(f"*_{safe_uid}.dcm"):
            if older != target and self.node_of(older) == node:
                self._remove(older)
        return target

    def node_of(self, path: Path) -> str | None:
        """The node a queued file waits for; None for a file from an earlier version (or a damaged tag)."""
        try:
            data = json.loads(self._tag(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        node = data.get("node") if isinstance(data, dict) else None
        return node if isinstance(node, str) and node else None

    def pending(self, node: str | None = None) -> list[Path]:
        """Files waiting to be sent, oldest first: all of them, or only those queued for ``node``."""
        files = sorted(self.folder.glob("*.dcm"))
        return files if node is None else [path for path in files if self.node_of(path) == node]

    def unassigned(self) -> list[Path]:
        """Waiting files that belong to no node (queued by an earlier version): never sent by themselves."""
        return [path for path in self.pending() if self.node_of(path) is None]

    def assign(self, node: str, files: Iterable[Path] | None = None) -> list[Path]:
        """Queue files that belong to no node (default: all of them) for ``node``; returns those files."""
        if not isinstance(node, str) or not node.strip():
            raise ValueError(f"a queued file needs the name of its PACS node, got {node!r}")
        chosen = self.unassigned() if files is None else [Path(f) for f in files if self.node_of(Path(f)) is None]
        for path in chosen:
            _write_atomic(self._tag(path), json.dumps({"node": node}).encode("utf-8"))
        return chosen

    def failed(self) -> list[Path]:
        """Files moved aside because they are unreadable or incomplete (see :meth:`failure_reason`)."""
        return sorted((self.folder / self.FAILED_FOLDER).glob("*.dcm"))

    def failure_reason(self, path: Path) -> str:
        try:
            data = json.loads(self._tag(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "no reason recorded"
        reason = data.get("error") if isinstance(data, dict) else None
        return reason if isinstance(reason, str) else "no reason recorded"

    def discard(self, path: Path) -> None:
        """Delete a waiting file, or one set aside in ``failed/``, with its tag and its attempts; for a user
        who decided it should never go. ValueError when ``path`` is not a file of this outbox, or while a send
        from this object runs (it holds the queue; the caller must not wait for it)."""
        path = Path(path)
        if path not in self.pending() and path not in self.failed():
            raise ValueError(f"{path.name} is not waiting in the outbox {self.folder}")
        if not self._lock.acquire(blocking=False):
            raise ValueError(f"{path.name}: a send is running; delete it when the send has ended")
        try:
            self._remove(path)
            log = self._read_log()
            if log.pop(path.name, None) is not None:
                self._write_log(log)
        finally:
            self._lock.release()

    def attempts(self) -> dict[str, Attempts]:
        """File name -> :class:`Attempts`, for files that have been tried and are still waiting."""
        attempts = {}
        for name, entry in self._read_log().items():
            with contextlib.suppress(TypeError):  # a hand-edited entry: ignore it
                attempts[name] = Attempts(**entry)
        return attempts

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
            files = self.pending(node.name)
            log = {name: entry for name, entry in self._read_log().items() if (self.folder / name).exists()}
            errors: dict[str, str] = {}

            def on_result(result: FileResult) -> None:  # called one at a time, also with parallel senders
                if result.outcome == "failed":
                    errors[result.path.name] = result.message
                    if result.bad_file:  # no retry can mend it: out of the queue, kept for a look
                        self._set_aside(result.path, result.message)
                        log.pop(result.path.name, None)
                    return
                try:
                    self._remove(result.path)
                except OSError:
                    LOGGER.warning("stored %s but could not remove it from the outbox", result.path, exc_info=True)
                log.pop(result.path.name, None)

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
                for path in files:
                    if not path.exists():
                        continue
                    previous = log.get(path.name)
                    count = previous.get("attempts", 0) if isinstance(previous, dict) else 0
                    log[path.name] = {
                        "attempts": (count if isinstance(count, int) else 0) + 1,
                        "last_error": errors.get(path.name) or stop_reason or fallback,
                        "last_attempt": now,
                    }
                self._write_log(log)
            return report

    def _tag(self, path: Path) -> Path:
        return path.with_name(path.stem + self.TAG_SUFFIX)

    def _remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._tag(path).unlink(missing_ok=True)

    def _set_aside(self, path: Path, reason: str) -> None:
        """Move a bad file (and its tag, now with the reason) to ``failed/``; on failure leave it be."""
        aside = self.folder / self.FAILED_FOLDER
        tag = {"node": self.node_of(path), "error": reason}
        try:
            aside.mkdir(exist_ok=True)
            os.replace(path, aside / path.name)  # first: out of the queue, whatever happens next
            _write_atomic(self._tag(aside / path.name), json.dumps(tag).encode("utf-8"), durable=False)
            self._tag(path).unlink(missing_ok=True)
        except OSError:
            LOGGER.warning("could not move the bad file %s aside", path, exc_info=True)

    def _read_log(self) -> dict[str, dict[str, Any]]:
        path = self.folder / self.LOG_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            LOGGER.warning("ignoring an unreadable outbox log %s", path, exc_info=True)
            return {}
        return data if isinstance(data, dict) else {}

    def _write_log(self, log: dict[str, dict[str, Any]]) -> None:
        try:
            _write_atomic(self.folder / self.LOG_NAME, json.dumps(log, indent=1).encode("utf-8"), durable=False)
        except OSError:  # the log is advice; the files themselves are what matters
            LOGGER.warning("could not write the outbox log in %s", self.folder, exc_info=True)
